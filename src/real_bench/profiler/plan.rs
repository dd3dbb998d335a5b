//! The profiling grid, planned without touching a model: which batch shapes to run
//! ([`ForwardShape`]), validated against the model's context and the KV pool
//! ([`ComputeGrid`], [`ComputePlan`]). [`super::compute`] executes the plan.

use serde::Serialize;

use crate::{Error, Result};

/// The compute grid, validated and sorted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputeGrid {
    /// Token counts of the token-level ops (decode batch sizes and prefill chunk sizes are
    /// measured as well; these are extra points).
    pub num_tokens: Vec<u32>,
    pub decode_batch_sizes: Vec<u32>,
    /// Cached tokens per decoding sequence.
    pub decode_kv_sizes: Vec<u32>,
    pub prefill_chunk_sizes: Vec<u32>,
    /// Cached tokens before a prefill chunk.
    pub prefill_kv_sizes: Vec<u32>,
    /// Discarded forwards per grid point.
    pub warmup: u32,
    /// Timed forwards per grid point (each gives one sample per layer).
    pub repeats: u32,
    /// More timed forwards when `repeats × layers` gives fewer samples per op than this
    /// (a 2-layer model needs many cheap forwards for a stable median).
    pub min_samples: u32,
    /// Timed forwards per single-token grid point (a decode step of one sequence), when more
    /// than the others': the memory-state response is fitted per size of forward
    /// (`io::speed_response`) from at least 4 forwards in each state, single-token steps
    /// answer it most, and with 3 each of 4 shapes two profiles in six saw fewer than 4 of
    /// them in the fast state. They are the cheapest forwards (~60–80 ms on the 2-core VM).
    pub single_token_repeats: u32,
    /// Longest sequence served (`kv + chunk` above it is not profiled, as in Vidur).
    pub max_model_len: u32,
}

impl ComputeGrid {
    /// Sorts and de-duplicates the grids; empty grids and zero sizes are errors.
    pub fn new(mut grid: ComputeGrid) -> Result<ComputeGrid> {
        for (name, g) in [
            ("num_tokens", &mut grid.num_tokens),
            ("decode_batch_sizes", &mut grid.decode_batch_sizes),
            ("decode_kv_sizes", &mut grid.decode_kv_sizes),
            ("prefill_chunk_sizes", &mut grid.prefill_chunk_sizes),
            ("prefill_kv_sizes", &mut grid.prefill_kv_sizes),
        ] {
            g.sort_unstable();
            g.dedup();
            if g.is_empty() {
                return Err(Error::config(
                    format!("profile.{name}"),
                    "the grid is empty",
                ));
            }
        }
        for (name, g) in [
            ("num_tokens", &grid.num_tokens),
            ("decode_batch_sizes", &grid.decode_batch_sizes),
            ("prefill_chunk_sizes", &grid.prefill_chunk_sizes),
        ] {
            if g[0] == 0 {
                return Err(Error::config(
                    format!("profile.{name}"),
                    "grid points must be positive",
                ));
            }
        }
        if grid.prefill_chunk_sizes[0] < 2 {
            return Err(Error::config(
                "profile.prefill_chunk_sizes",
                "a prefill chunk has at least 2 tokens (a 1-token chunk is a decode)",
            ));
        }
        if grid.repeats == 0 {
            return Err(Error::config("profile.repeats", "must be positive"));
        }
        if grid.single_token_repeats == 0 {
            return Err(Error::config(
                "profile.single_token_repeats",
                "must be positive",
            ));
        }
        Ok(grid)
    }

    /// Timed passes over the grid for a model of `num_layers` layers: timed forwards per
    /// grid point but the single-token ones.
    pub fn timed_passes(&self, num_layers: u32) -> u32 {
        self.repeats
            .max(self.min_samples.div_ceil(num_layers.max(1)))
    }

    /// Timed forwards of `shape` for a model of `num_layers` layers.
    pub fn timed_forwards(&self, shape: ForwardShape, num_layers: u32) -> u32 {
        let passes = self.timed_passes(num_layers);
        if shape.num_tokens() == 1 {
            passes.max(self.single_token_repeats)
        } else {
            passes
        }
    }

    /// How often `shape` runs in timed pass `pass` (from 0): its timed forwards spread over
    /// the passes as evenly as they divide, so that each pass's shuffled order interleaves
    /// them with every other shape's.
    pub fn runs_in_pass(&self, shape: ForwardShape, pass: u32, num_layers: u32) -> u32 {
        let passes = self.timed_passes(num_layers);
        let total = self.timed_forwards(shape, num_layers);
        total / passes + u32::from(pass < total % passes)
    }
}

/// One profiled batch shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardShape {
    /// `batch_size` sequences decoding one token each after `kv_cache_size` cached tokens.
    Decode { batch_size: u32, kv_cache_size: u32 },
    /// One sequence's chunk of `chunk` tokens after `kv_cache_size` cached tokens.
    Prefill { chunk: u32, kv_cache_size: u32 },
}

impl ForwardShape {
    /// Tokens in the forward.
    pub fn num_tokens(self) -> u32 {
        match self {
            ForwardShape::Decode { batch_size, .. } => batch_size,
            ForwardShape::Prefill { chunk, .. } => chunk,
        }
    }

    /// Sequences and tokens per sequence.
    pub(super) fn layout(self) -> (u32, u32, u32) {
        match self {
            ForwardShape::Decode {
                batch_size,
                kv_cache_size,
            } => (batch_size, 1, kv_cache_size),
            ForwardShape::Prefill {
                chunk,
                kv_cache_size,
            } => (1, chunk, kv_cache_size),
        }
    }

    /// KV blocks the shape occupies.
    pub fn blocks_needed(self, block_size: u32) -> u64 {
        let (seqs, tokens, kv) = self.layout();
        u64::from(seqs) * u64::from((kv + tokens).div_ceil(block_size))
    }

    /// Longest sequence in the shape.
    fn max_len(self) -> u32 {
        let (_, tokens, kv) = self.layout();
        kv + tokens
    }

    /// Rough relative cost, for the progress bar: dense work in tokens plus attention work.
    pub(super) fn cost(self) -> f64 {
        let (seqs, tokens, kv) = self.layout();
        let (s, t, k) = (f64::from(seqs), f64::from(tokens), f64::from(kv));
        s * t + 8.0 + s * t * (k + t / 2.0) / 2048.0
    }

    pub(super) fn label(self) -> String {
        match self {
            ForwardShape::Decode {
                batch_size,
                kv_cache_size,
            } => format!("decode batch={batch_size} kv={kv_cache_size}"),
            ForwardShape::Prefill {
                chunk,
                kv_cache_size,
            } => format!("prefill chunk={chunk} kv={kv_cache_size}"),
        }
    }
}

/// What will be run: attention grid points (their attention becomes an `attention.csv`
/// row) and token points (one-token sequences at an empty cache, for the token-level and
/// logits ops of token counts no decode point has).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComputePlan {
    pub attention_points: Vec<ForwardShape>,
    pub token_points: Vec<ForwardShape>,
    /// Grid points left out, with the reason.
    pub skipped: Vec<String>,
    /// KV blocks the largest shape needs (the profiler's cache size).
    pub cache_blocks: u64,
}

impl ComputePlan {
    /// Plans `grid` for a cache of at most `max_cache_blocks` blocks of `block_size` tokens.
    pub fn new(grid: &ComputeGrid, block_size: u32, max_cache_blocks: u64) -> Result<ComputePlan> {
        let mut skipped = Vec::new();
        let mut fits = |shape: ForwardShape| -> bool {
            if shape.max_len() > grid.max_model_len {
                skipped.push(format!(
                    "{}: {} tokens exceed max_model_len {}",
                    shape.label(),
                    shape.max_len(),
                    grid.max_model_len
                ));
                return false;
            }
            if shape.blocks_needed(block_size) > max_cache_blocks {
                skipped.push(format!(
                    "{}: needs {} KV blocks, the pool has {max_cache_blocks}",
                    shape.label(),
                    shape.blocks_needed(block_size)
                ));
                return false;
            }
            true
        };
        let mut attention_points = Vec::new();
        for &batch_size in &grid.decode_batch_sizes {
            for &kv_cache_size in &grid.decode_kv_sizes {
                let s = ForwardShape::Decode {
                    batch_size,
                    kv_cache_size,
                };
                if fits(s) {
                    attention_points.push(s);
                }
            }
        }
        for &chunk in &grid.prefill_chunk_sizes {
            for &kv_cache_size in &grid.prefill_kv_sizes {
                let s = ForwardShape::Prefill {
                    chunk,
                    kv_cache_size,
                };
                if fits(s) {
                    attention_points.push(s);
                }
            }
        }
        // Token counts whose logits rows no decode point gives: extra points and chunks.
        let covered: Vec<u32> = attention_points
            .iter()
            .filter(|s| matches!(s, ForwardShape::Decode { .. }))
            .map(|s| s.num_tokens())
            .collect();
        let mut wanted: Vec<u32> = grid
            .num_tokens
            .iter()
            .chain(&grid.prefill_chunk_sizes)
            .copied()
            .filter(|n| !covered.contains(n))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut token_points = Vec::new();
        for n in wanted {
            let s = ForwardShape::Decode {
                batch_size: n,
                kv_cache_size: 0,
            };
            if fits(s) {
                token_points.push(s);
            }
        }
        let has_decode = attention_points
            .iter()
            .any(|s| matches!(s, ForwardShape::Decode { .. }));
        let has_prefill = attention_points
            .iter()
            .any(|s| matches!(s, ForwardShape::Prefill { .. }));
        if !has_decode || !has_prefill {
            return Err(Error::config(
                "profile",
                format!(
                    "no {} attention grid point fits (max_model_len {}, KV pool {max_cache_blocks} blocks): {}",
                    if has_decode { "prefill" } else { "decode" },
                    grid.max_model_len,
                    skipped.join("; ")
                ),
            ));
        }
        let cache_blocks = attention_points
            .iter()
            .chain(&token_points)
            .map(|s| s.blocks_needed(block_size))
            .max()
            .unwrap_or(1);
        Ok(ComputePlan {
            attention_points,
            token_points,
            skipped,
            cache_blocks,
        })
    }

    /// Estimated cost of running the plan on a `num_layers`-layer model (progress units).
    pub fn cost(&self, grid: &ComputeGrid, num_layers: u32) -> f64 {
        self.attention_points
            .iter()
            .chain(&self.token_points)
            .map(|s| s.cost() * f64::from(grid.warmup + grid.timed_forwards(*s, num_layers)))
            .sum()
    }

    /// Every token count measured (the `mlp.csv` rows, each with its logits ops), ascending.
    pub fn token_counts(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .attention_points
            .iter()
            .chain(&self.token_points)
            .map(|s| s.num_tokens())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> ComputeGrid {
        ComputeGrid {
            num_tokens: vec![1, 3, 8],
            decode_batch_sizes: vec![2, 1],
            decode_kv_sizes: vec![16, 100],
            prefill_chunk_sizes: vec![8, 64],
            prefill_kv_sizes: vec![0, 32],
            warmup: 1,
            repeats: 2,
            min_samples: 8,
            single_token_repeats: 5,
            max_model_len: 128,
        }
    }

    #[test]
    fn plan_covers_the_grid_within_limits() {
        let g = ComputeGrid::new(grid()).unwrap();
        assert_eq!(g.decode_batch_sizes, vec![1, 2]);
        // Pool of 12 blocks of 16: decode batch 2 at kv 100 needs 2 × 7 = 14 blocks.
        let plan = ComputePlan::new(&g, 16, 12).unwrap();
        let decode = |b, k| ForwardShape::Decode {
            batch_size: b,
            kv_cache_size: k,
        };
        let prefill = |c, k| ForwardShape::Prefill {
            chunk: c,
            kv_cache_size: k,
        };
        assert_eq!(
            plan.attention_points,
            vec![
                decode(1, 16),
                decode(1, 100),
                decode(2, 16),
                prefill(8, 0),
                prefill(8, 32),
                prefill(64, 0),
                prefill(64, 32),
            ]
        );
        assert!(plan
            .skipped
            .iter()
            .any(|s| s.contains("decode batch=2 kv=100")));
        // 1 and 2 have decode points; 3 and 8 run as one-token sequences at kv 0, while
        // 64 one-token sequences would need 64 blocks of the pool's 12.
        assert_eq!(plan.token_points, vec![decode(3, 0), decode(8, 0)]);
        assert!(plan
            .skipped
            .iter()
            .any(|s| s.contains("decode batch=64 kv=0") && s.contains("64 KV blocks")));
        // The prefill chunks still time the token ops at 8 and 64 rows.
        assert_eq!(plan.token_counts(), vec![1, 2, 3, 8, 64]);
        // Largest kept: 8 one-token sequences = 8 blocks (decode(1, 100) needs 7).
        assert_eq!(plan.cache_blocks, 8);
    }

    #[test]
    fn empty_or_unfittable_grids_are_config_errors() {
        let mut g = grid();
        g.prefill_kv_sizes.clear();
        let e = ComputeGrid::new(g).unwrap_err().to_string();
        assert!(
            e.contains("profile.prefill_kv_sizes") && e.contains("empty"),
            "{e}"
        );
        let mut g = grid();
        g.prefill_chunk_sizes = vec![1];
        assert!(ComputeGrid::new(g).is_err());
        let g = ComputeGrid::new(grid()).unwrap();
        let e = ComputePlan::new(&g, 16, 1).unwrap_err().to_string();
        assert!(e.contains("attention grid point fits"), "{e}");
        let mut g = grid();
        g.single_token_repeats = 0;
        let e = ComputeGrid::new(g).unwrap_err().to_string();
        assert!(e.contains("profile.single_token_repeats"), "{e}");
    }

    #[test]
    fn single_token_shapes_run_more_spread_over_the_passes() {
        let g = ComputeGrid::new(grid()).unwrap();
        let one = ForwardShape::Decode {
            batch_size: 1,
            kv_cache_size: 16,
        };
        let two = ForwardShape::Decode {
            batch_size: 2,
            kv_cache_size: 16,
        };
        // 28 layers: `repeats` (2) passes; 2 layers: 8 samples need 4.
        assert_eq!(g.timed_passes(28), 2);
        assert_eq!(g.timed_passes(2), 4);
        assert_eq!(g.timed_forwards(two, 28), 2);
        assert_eq!(g.timed_forwards(one, 28), 5);
        assert_eq!(g.timed_forwards(one, 2), 5);
        let runs = |shape, layers| {
            (0..g.timed_passes(layers))
                .map(|p| g.runs_in_pass(shape, p, layers))
                .collect::<Vec<_>>()
        };
        assert_eq!(runs(one, 28), [3, 2]);
        assert_eq!(runs(one, 2), [2, 1, 1, 1]);
        assert_eq!(runs(two, 28), [1, 1]);
        // Fewer single-token repeats than passes: the passes win.
        let mut few = grid();
        few.single_token_repeats = 1;
        let few = ComputeGrid::new(few).unwrap();
        assert_eq!(few.timed_forwards(one, 28), 2);
        let plan = ComputePlan::new(&g, 16, 64).unwrap();
        let per_pass = |shape: ForwardShape| shape.cost() * f64::from(g.warmup + 2);
        // Decode batch 1 at kv 16 and 100: 3 forwards more each.
        let extra: f64 = [16, 100]
            .map(|kv_cache_size| {
                let shape = ForwardShape::Decode {
                    batch_size: 1,
                    kv_cache_size,
                };
                shape.cost() * 3.0
            })
            .iter()
            .sum();
        let all: f64 = plan
            .attention_points
            .iter()
            .chain(&plan.token_points)
            .map(|s| per_pass(*s))
            .sum();
        assert!((plan.cost(&g, 28) - (all + extra)).abs() < 1e-9);
    }

    #[test]
    fn shapes_count_blocks_and_tokens() {
        let d = ForwardShape::Decode {
            batch_size: 4,
            kv_cache_size: 16,
        };
        assert_eq!((d.num_tokens(), d.blocks_needed(16)), (4, 8));
        let p = ForwardShape::Prefill {
            chunk: 17,
            kv_cache_size: 15,
        };
        assert_eq!((p.num_tokens(), p.blocks_needed(16)), (17, 2));
    }
}
