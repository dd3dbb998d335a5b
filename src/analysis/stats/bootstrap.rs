//! Bootstrap confidence intervals for samples whose values come in groups.
//!
//! A comparison's latencies are not independent draws. The real runs replay the same
//! requests, so a request's TTFT in one run and in the next are correlated, and the
//! simulator's TTFT of that request is correlated with both (same length, same arrival, the
//! same queue ahead of it); a request's token gaps are correlated with each other. The
//! bootstrap therefore resamples *groups* — requests — with replacement, and a drawn request
//! brings every value it has along: each run's, and for token metrics each token's. This is
//! the cluster bootstrap (Davison & Hinkley 1997, §3.8); with one value per group it is the
//! ordinary one. Resampling the simulated and the real values of a request *together* is
//! what makes the interval of the simulator's error a paired one.
//!
//! Intervals use the percentile method: the (1 − c)/2 and (1 + c)/2 percentiles of the
//! replicates. It needs no variance formula for percentiles and respects monotone
//! transformations; its known weakness, extreme percentiles from few samples, is what
//! [`Stat::min_samples`](super::Stat::min_samples) rules out.
//!
//! A resample in which group g is drawn c_g times is the original sample with each value of
//! g repeated c_g times, so [`GroupedSample::resampled`] finds its statistics in one pass
//! over values sorted once, instead of sorting every resample.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{compensated_sum, interpolate, percentile_of_valid, sorted_copy, validate, Stat};
use crate::{ensure, Result};

/// One value of every [`Stat`], indexed by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatValues([f64; 5]);

impl StatValues {
    /// The value of `stat`.
    pub fn get(&self, stat: Stat) -> f64 {
        self.0[stat as usize]
    }
}

/// The percentiles [`Stat`] has, in `Stat::ALL` order after the mean.
const PERCENTILE_STATS: [Stat; 4] = [Stat::P50, Stat::P90, Stat::P95, Stat::P99];

/// A sample whose values belong to groups `0..num_groups` (each group has at least one
/// value), sorted once for any number of resamples.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedSample {
    /// Ascending.
    values: Vec<f64>,
    /// `groups[i]` is the group of `values[i]`.
    groups: Vec<u32>,
    num_groups: usize,
    /// Sum and number of each group's values, for the mean of a resample.
    group_sums: Vec<f64>,
    group_sizes: Vec<u64>,
}

impl GroupedSample {
    /// `values[i]` belongs to group `groups[i]`. Errors on an empty or non-finite sample,
    /// lengths that differ, a group outside `0..num_groups` or a group without values.
    pub fn new(values: &[f64], groups: &[usize], num_groups: usize) -> Result<Self> {
        validate("GroupedSample", values)?;
        ensure!(
            values.len() == groups.len(),
            InvalidInput: "GroupedSample: {} values but {} group indices", values.len(), groups.len()
        );
        ensure!(
            u32::try_from(num_groups).is_ok(),
            InvalidInput: "GroupedSample: {num_groups} groups are too many"
        );
        let mut seen = vec![false; num_groups];
        for (i, &g) in groups.iter().enumerate() {
            ensure!(
                g < num_groups,
                InvalidInput: "GroupedSample: value #{i} is in group {g}, but there are {num_groups} groups"
            );
            seen[g] = true;
        }
        if let Some(g) = seen.iter().position(|s| !s) {
            crate::bail!(InvalidInput: "GroupedSample: group {g} has no values");
        }
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
        let mut members: Vec<Vec<f64>> = vec![Vec::new(); num_groups];
        for (&v, &g) in values.iter().zip(groups) {
            members[g].push(v);
        }
        Ok(Self {
            values: order.iter().map(|&i| values[i]).collect(),
            groups: order.iter().map(|&i| groups[i] as u32).collect(),
            num_groups,
            group_sums: members
                .iter()
                .map(|m| compensated_sum(m.iter().copied()))
                .collect(),
            group_sizes: members.iter().map(|m| m.len() as u64).collect(),
        })
    }

    /// Every statistic of the sample itself; equal to [`Summary`](super::Summary)'s.
    pub fn stats(&self) -> StatValues {
        let mut out = self.percentiles(|_| 1);
        // Summed in sorted order, as `Summary` does, so that the two agree to the bit.
        out.0[Stat::Mean as usize] =
            compensated_sum(self.values.iter().copied()) / self.values.len() as f64;
        out
    }

    /// Every statistic of the resample in which group `g` appears `counts[g]` times (at
    /// least one group drawn). Percentiles interpolate linearly in the resample, exactly as
    /// [`percentile`](super::percentile) would on it.
    pub fn resampled(&self, counts: &[u32]) -> Result<StatValues> {
        ensure!(
            counts.len() == self.num_groups,
            InvalidInput: "GroupedSample::resampled: {} counts for {} groups", counts.len(), self.num_groups
        );
        ensure!(
            counts.iter().any(|&c| c > 0),
            InvalidInput: "GroupedSample::resampled: no group drawn"
        );
        let mut out = self.percentiles(|i| u64::from(counts[self.groups[i] as usize]));
        let drawn = |g: usize| f64::from(counts[g]);
        let total = compensated_sum((0..self.num_groups).map(|g| drawn(g) * self.group_sums[g]));
        let size: u64 = (0..self.num_groups)
            .map(|g| u64::from(counts[g]) * self.group_sizes[g])
            .sum();
        out.0[Stat::Mean as usize] = total / size as f64;
        Ok(out)
    }

    /// The percentiles of the sample with value `i` repeated `weight(i)` times (total > 0);
    /// the mean is left 0 for the caller.
    fn percentiles(&self, weight: impl Fn(usize) -> u64) -> StatValues {
        let total: u64 = (0..self.values.len()).map(&weight).sum();
        // Each percentile needs the values at two ranks of the expanded, sorted sample:
        // ⌊h⌋ and ⌊h⌋ + 1 with h = (total − 1)·q/100, as numpy's linear method.
        let last = total - 1;
        let mut fractions = [0.0; 4];
        let mut wanted: Vec<(u64, usize)> = Vec::with_capacity(8);
        for (k, stat) in PERCENTILE_STATS.iter().enumerate() {
            let q = stat.percentile().unwrap_or(50.0);
            let h = last as f64 * (q / 100.0);
            let below = h.floor();
            let rank = (below as u64).min(last);
            fractions[k] = if rank >= last { 0.0 } else { h - below };
            wanted.push((rank, 2 * k));
            wanted.push(((rank + 1).min(last), 2 * k + 1));
        }
        wanted.sort_unstable();
        let mut at = [0.0f64; 8];
        let mut next = 0;
        let mut end = 0u64;
        for (i, &v) in self.values.iter().enumerate() {
            end += weight(i);
            while next < wanted.len() && wanted[next].0 < end {
                at[wanted[next].1] = v;
                next += 1;
            }
            if next == wanted.len() {
                break;
            }
        }
        let mut out = [0.0; 5];
        for (k, stat) in PERCENTILE_STATS.iter().enumerate() {
            out[*stat as usize] = interpolate(at[2 * k], at[2 * k + 1], fractions[k]);
        }
        StatValues(out)
    }
}

/// How confidence intervals are bootstrapped: `resamples` resamples of the groups with
/// replacement from a ChaCha8 stream seeded with `seed`, percentile intervals at
/// `confidence` (e.g. 0.95).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub resamples: usize,
    pub confidence: f64,
    pub seed: u64,
}

impl Bootstrap {
    /// Calls `each` with the group counts of every resample of `num_groups` groups. The
    /// draws come from stream `stream` of the seeded generator, so separate analyses (one
    /// per metric) get independent, reproducible resamples.
    pub fn for_each_resample(
        &self,
        stream: u64,
        num_groups: usize,
        mut each: impl FnMut(&[u32]) -> Result<()>,
    ) -> Result<()> {
        ensure!(num_groups > 0, InvalidInput: "bootstrap: no groups to resample");
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        let mut counts = vec![0u32; num_groups];
        for _ in 0..self.resamples {
            counts.fill(0);
            for _ in 0..num_groups {
                counts[rng.random_range(0..num_groups)] += 1;
            }
            each(&counts)?;
        }
        Ok(())
    }

    /// The percentile interval of `replicates` at this confidence.
    pub fn interval(&self, replicates: &[f64]) -> Result<[f64; 2]> {
        percentile_interval(replicates, self.confidence)
    }
}

/// The percentile-method interval of bootstrap replicates: their (1 − c)/2 and (1 + c)/2
/// percentiles (linear interpolation). Errors on no or non-finite replicates, or a
/// confidence outside (0, 1).
pub fn percentile_interval(replicates: &[f64], confidence: f64) -> Result<[f64; 2]> {
    validate("percentile_interval", replicates)?;
    ensure!(
        confidence > 0.0 && confidence < 1.0,
        InvalidInput: "percentile_interval: confidence {confidence} is outside (0, 1)"
    );
    let sorted = sorted_copy(replicates);
    let half = 50.0 * confidence;
    Ok([
        percentile_of_valid(&sorted, 50.0 - half),
        percentile_of_valid(&sorted, 50.0 + half),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::{percentile, Summary};

    fn sample() -> (Vec<f64>, Vec<usize>) {
        // Three groups of different sizes, values out of order, with a tie across groups.
        (
            vec![5.0, 1.0, 9.0, 3.0, 7.0, 3.0, 2.0, 8.5],
            vec![0, 0, 1, 1, 1, 2, 2, 2],
        )
    }

    #[test]
    fn stats_equal_the_summary_of_the_sample() {
        let (values, groups) = sample();
        let g = GroupedSample::new(&values, &groups, 3).unwrap();
        let s = Summary::from_samples(&values).unwrap();
        for stat in Stat::ALL {
            assert_eq!(g.stats().get(stat), stat.of(&s), "{stat:?}");
        }
    }

    #[test]
    fn a_resample_is_the_sample_with_each_group_repeated() {
        let (values, groups) = sample();
        let g = GroupedSample::new(&values, &groups, 3).unwrap();
        for counts in [[2u32, 0, 1], [0, 3, 0], [1, 1, 1], [0, 0, 5], [4, 1, 2]] {
            let mut expanded = Vec::new();
            for (v, &grp) in values.iter().zip(&groups) {
                for _ in 0..counts[grp] {
                    expanded.push(*v);
                }
            }
            let s = Summary::from_samples(&expanded).unwrap();
            let r = g.resampled(&counts).unwrap();
            for stat in Stat::ALL {
                let want = stat.of(&s);
                assert!(
                    (r.get(stat) - want).abs() <= 1e-12 * want.abs(),
                    "{counts:?} {stat:?}: {} vs {want}",
                    r.get(stat)
                );
            }
        }
    }

    #[test]
    fn construction_and_resampling_reject_bad_input() {
        assert!(GroupedSample::new(&[], &[], 0).is_err());
        assert!(GroupedSample::new(&[1.0, 2.0], &[0], 1).is_err());
        assert!(GroupedSample::new(&[1.0], &[1], 1).is_err());
        let err = GroupedSample::new(&[1.0, 2.0], &[0, 0], 2).unwrap_err();
        assert!(err.to_string().contains("group 1 has no values"), "{err}");
        assert!(GroupedSample::new(&[f64::NAN], &[0], 1).is_err());
        let g = GroupedSample::new(&[1.0, 2.0], &[0, 1], 2).unwrap();
        assert!(g.resampled(&[1]).is_err());
        assert!(g.resampled(&[0, 0]).is_err());
    }

    #[test]
    fn resamples_are_seeded_and_draw_every_group_count() {
        let b = Bootstrap {
            resamples: 50,
            confidence: 0.95,
            seed: 7,
        };
        let collect = |stream| {
            let mut all = Vec::new();
            b.for_each_resample(stream, 10, |c| {
                assert_eq!(c.iter().sum::<u32>(), 10);
                all.push(c.to_vec());
                Ok(())
            })
            .unwrap();
            all
        };
        assert_eq!(collect(0), collect(0));
        assert_ne!(collect(0), collect(1));
        assert_eq!(collect(0).len(), 50);
    }

    #[test]
    fn percentile_interval_by_hand() {
        let replicates: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile_interval(&replicates, 0.95).unwrap(), [2.5, 97.5]);
        assert_eq!(
            percentile_interval(&replicates, 0.9).unwrap(),
            [
                percentile(&replicates, 5.0).unwrap(),
                percentile(&replicates, 95.0).unwrap()
            ]
        );
        assert!(percentile_interval(&replicates, 1.0).is_err());
        assert!(percentile_interval(&[], 0.95).is_err());
    }
}
