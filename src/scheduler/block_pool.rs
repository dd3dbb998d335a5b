//! The KV block pool: a LIFO free list of physical block ids.
//!
//! Vidur only counts blocks; the real engine needs to know *which* blocks hold a request's
//! KV, so ids come from a free list. Allocation and release are O(1) per block and fully
//! deterministic: a fresh pool hands out 0, 1, 2, …, and freed blocks are reused first.

/// Physical KV blocks of one replica.
#[derive(Debug, Clone)]
pub(super) struct BlockPool {
    /// Free ids; the next block handed out is the last element.
    free: Vec<u32>,
    num_blocks: u32,
}

impl BlockPool {
    pub fn new(num_blocks: u32) -> Self {
        BlockPool {
            free: (0..num_blocks).rev().collect(),
            num_blocks,
        }
    }

    pub fn num_blocks(&self) -> u32 {
        self.num_blocks
    }

    pub fn num_free(&self) -> u32 {
        // `free` never holds more than `num_blocks` (a u32) entries.
        self.free.len() as u32
    }

    pub fn num_allocated(&self) -> u32 {
        self.num_blocks - self.num_free()
    }

    /// Moves `count` free blocks to the end of `table`.
    ///
    /// Callers check `num_free()` first (the schedulers' admission rules); asking for more
    /// than is free is a scheduler bug and panics.
    pub fn allocate(&mut self, count: u32, table: &mut Vec<u32>) {
        let keep = self.free.len() - count as usize;
        table.extend(self.free.drain(keep..).rev());
    }

    /// Returns every block of `table` to the pool and empties it (keeping its capacity for a
    /// re-admission). Pushed in reverse so that the same ids come back in the same order.
    pub fn release(&mut self, table: &mut Vec<u32>) {
        self.free.extend(table.drain(..).rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_ascending_ids_and_reuses_freed_blocks_first() {
        let mut pool = BlockPool::new(6);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pool.allocate(2, &mut a);
        pool.allocate(3, &mut b);
        assert_eq!(a, [0, 1]);
        assert_eq!(b, [2, 3, 4]);
        assert_eq!((pool.num_free(), pool.num_allocated()), (1, 5));
        pool.release(&mut a);
        assert!(a.is_empty());
        pool.allocate(1, &mut b);
        assert_eq!(b, [2, 3, 4, 0]);
        pool.allocate(2, &mut a);
        assert_eq!(a, [1, 5]);
        assert_eq!(pool.num_free(), 0);
    }

    #[test]
    fn ids_stay_below_the_most_blocks_ever_held_at_once() {
        // The real engine maps only that many leading blocks before serving.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut pool = BlockPool::new(1000);
        let mut tables: Vec<Vec<u32>> = vec![Vec::new(); 6];
        let (mut peak_held, mut max_id) = (0, 0);
        for _ in 0..2000 {
            let t = rng.random_range(0..tables.len());
            if rng.random_bool(0.4) {
                pool.release(&mut tables[t]);
            } else if pool.num_free() > 0 {
                let n = rng.random_range(1..=pool.num_free().min(4));
                pool.allocate(n, &mut tables[t]);
            }
            peak_held = peak_held.max(pool.num_allocated());
            max_id = max_id.max(tables.iter().flatten().copied().max().unwrap_or(0));
        }
        assert!(
            peak_held < 1000,
            "the pool filled up; the check needs headroom"
        );
        assert!(
            max_id < peak_held,
            "id {max_id} handed out with at most {peak_held} held"
        );
    }

    #[test]
    #[should_panic]
    fn over_allocation_is_a_bug() {
        let mut pool = BlockPool::new(1);
        pool.allocate(2, &mut Vec::new());
    }
}
