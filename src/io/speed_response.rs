//! How the device's memory state moves forwards of each size, as a profile measured it
//! (`profiling_meta.json`: `details.device_speed_response`).
//!
//! A shared host's memory bandwidth switches between two states within seconds (33–40
//! against 50–72 GB/s on the 2-core VM), and forwards of different sizes answer differently:
//! in the fast state single-sequence decode steps ran 21–32 % faster, decode batches of 8–15
//! sequences 5–8 % *slower* and prefills 8–11 % slower (`cargo bench --bench paired_replay`,
//! section "By memory state"), and within a forward decode attention slowed down while the
//! projections and `lm_head` sped up — where a roofline that scales each op by its memory
//! share moved them all the same way. The profiler interleaves its forwards with quick memory
//! probes, so it sees both states too; per size of forward, and per op, it measures the
//! *fast-state time ratio*: the median time of the forwards (ops) it ran in the fast state
//! against those in the reference state. The drift correction multiplies an iteration the
//! run's probes place in the fast state by it. A ratio, not a slope through the readings:
//! the probes' level moves with their context by several percent (one window's profiles read
//! 3–10 % below the runs' reference state while the engine ran at the profile's speed), so
//! only which state a reading is in carries over from profile to run. Measured in the
//! profile, never from the run it corrects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::io::ops::Op;
use crate::quantile;

/// Lower bounds of the size buckets, tokens per forward: 1, 2–3, 4–7, 8–15, 16–63, 64+.
pub const BUCKET_MIN_TOKENS: [u32; 6] = [1, 2, 4, 8, 16, 64];
/// A forward ran in the reference state when the probed bandwidth was within this factor
/// (×/÷) of the profile's median, in the fast state when at least [`FAST_STATE`] times it.
pub const NEAR_REFERENCE: f64 = 1.1;
/// The fast state: at least this many times the reference bandwidth. The states are ~1.5×
/// apart, so the threshold leaves room for the probes' context offset.
pub const FAST_STATE: f64 = 1.2;
/// A bucket's ratio is measured only from at least this many forwards in each state: fewer
/// say more about the forwards' own scatter (5–10 %) than about the state.
pub const MIN_FORWARDS_PER_STATE: usize = 4;

/// One forward the profiler timed: its size, which shape of the grid it was (forwards of one
/// shape are compared with each other), when it started on the timeline's clock, its time
/// and each op's time in it (summed over layers; 0 for ops it did not run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedForward {
    pub num_tokens: u32,
    pub shape: usize,
    pub start_ns: i64,
    pub wall_ms: f64,
    pub op_ms: [f64; Op::COUNT],
}

/// One bucket of forward sizes and what the profile measured of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseBucket {
    pub min_tokens: u32,
    /// Inclusive; `None` for the last bucket.
    pub max_tokens: Option<u32>,
    /// Forwards in the bucket with a probe reading around them.
    pub forwards: usize,
    /// Of them, in the reference state and in the fast state.
    pub forwards_near_reference: usize,
    /// (Absent, as every ratio, in bundles of 2026-12-05 before 04:30 UTC, which fitted
    /// elasticities instead: they read as having measured none.)
    #[serde(default)]
    pub forwards_fast: usize,
    /// Median time of a forward (against its shape's median) in the fast state ÷ in the
    /// reference state: < 1 = faster when memory is fast. `None` when the profile did not
    /// see enough forwards in both states.
    pub fast_time_ratio: Option<f64>,
    /// The same of each op's time in these forwards, by op name, for the ops that ran in
    /// enough of them in both states.
    #[serde(default)]
    pub op_fast_time_ratio: BTreeMap<String, f64>,
}

/// The fast-state time ratios of a profile, per size bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedResponse {
    /// Median bandwidth of the profile's quick probes, GB/s: the reference state.
    pub reference_gb_per_s: f64,
    /// Median of its readings in the fast state, GB/s; `None` when it saw none.
    pub fast_state_gb_per_s: Option<f64>,
    pub buckets: Vec<ResponseBucket>,
}

impl SpeedResponse {
    /// Fits the response from the profile's timed forwards and its usable quick probe
    /// readings (`(time_ns, GB/s)`, any order); `None` without readings. Each forward's time
    /// is taken against the median of its shape's forwards, the bandwidth at its start
    /// (interpolated between the readings around it) against the readings' median.
    pub fn fit(forwards: &[TimedForward], quick: &[(i64, f64)]) -> Option<SpeedResponse> {
        let mut quick: Vec<(i64, f64)> = quick
            .iter()
            .copied()
            .filter(|(_, rate)| rate.is_finite() && *rate > 0.0)
            .collect();
        quick.sort_by_key(|(t, _)| *t);
        let rates: Vec<f64> = quick.iter().map(|(_, rate)| *rate).collect();
        let reference = quantile::median(&rates).ok()?;
        let fast_rates: Vec<f64> = rates
            .iter()
            .copied()
            .filter(|r| *r >= FAST_STATE * reference)
            .collect();
        // Per forward: its bucket and bandwidth ratio at its start (forwards without
        // readings around them have no state to go by).
        let states: Vec<Option<(usize, f64)>> = forwards
            .iter()
            .map(|f| {
                let rate = bandwidth_at(&quick, f.start_ns)?;
                Some((bucket_of(f.num_tokens), rate / reference))
            })
            .collect();
        let forward_fits = fit_buckets(forwards, &states, |f| f.wall_ms);
        let op_fits: Vec<(Op, Vec<BucketFit>)> = Op::ALL
            .iter()
            .map(|&op| (op, fit_buckets(forwards, &states, |f| f.op_ms[op.index()])))
            .collect();
        let buckets = forward_fits
            .into_iter()
            .enumerate()
            .map(|(b, fit)| ResponseBucket {
                min_tokens: BUCKET_MIN_TOKENS[b],
                max_tokens: BUCKET_MIN_TOKENS.get(b + 1).map(|next| next - 1),
                forwards: fit.forwards,
                forwards_near_reference: fit.near,
                forwards_fast: fit.fast,
                fast_time_ratio: fit.ratio,
                op_fast_time_ratio: op_fits
                    .iter()
                    .filter_map(|(op, fits)| Some((op.name().to_owned(), fits[b].ratio?)))
                    .collect(),
            })
            .collect();
        Some(SpeedResponse {
            reference_gb_per_s: reference,
            fast_state_gb_per_s: quantile::median(&fast_rates).ok(),
            buckets,
        })
    }

    /// The fast-state time ratio of a forward (an iteration) of `num_tokens` tokens: its
    /// bucket's where the profile measured it, else between the nearest measured buckets
    /// below and above it (geometrically, in bucket order, i.e. about log₂ of the size: the
    /// ratio rises steadily with size), and `None` beyond the last measured one at either
    /// end. Not extrapolated: the ends are where it changes fastest, and the line through
    /// two noisy neighbours put one profile's single-token response at half the others'
    /// (section 3 of docs/ground_truth.md).
    pub fn fast_time_ratio(&self, num_tokens: u32) -> Option<f64> {
        interpolate_buckets(&self.buckets, num_tokens, |k| k.fast_time_ratio)
    }

    /// Whether the profile measured the fast state's ratio for any size.
    pub fn measured_any(&self) -> bool {
        self.buckets.iter().any(|b| b.fast_time_ratio.is_some())
    }

    /// The fast-state time ratio of `op` in a forward of `num_tokens` tokens, by the same
    /// rule over the buckets where the profile measured that op; `None` where it did not
    /// (the forward's ratio then stands for it).
    pub fn op_fast_time_ratio(&self, op: Op, num_tokens: u32) -> Option<f64> {
        interpolate_buckets(&self.buckets, num_tokens, |k| {
            k.op_fast_time_ratio.get(op.name()).copied()
        })
    }
}

/// The value `of` a bucket for a forward of `num_tokens` tokens: its bucket's where measured,
/// else geometrically between the nearest measured buckets below and above, else `None`.
fn interpolate_buckets(
    buckets: &[ResponseBucket],
    num_tokens: u32,
    of: impl Fn(&ResponseBucket) -> Option<f64>,
) -> Option<f64> {
    let b = bucket_of(num_tokens);
    // (bucket index, ln value) of the measured buckets, in order.
    let measured: Vec<(usize, f64)> = buckets
        .iter()
        .filter_map(|k| {
            let i = BUCKET_MIN_TOKENS.iter().position(|m| *m == k.min_tokens)?;
            Some((i, of(k).filter(|v| *v > 0.0)?.ln()))
        })
        .collect();
    if let Some((_, v)) = measured.iter().find(|(i, _)| *i == b) {
        return Some(v.exp());
    }
    let below = measured.iter().rev().find(|(i, _)| *i < b);
    let above = measured.iter().find(|(i, _)| *i > b);
    let (p, q) = below.zip(above)?;
    let at = |i: usize| i as f64;
    Some((p.1 + (q.1 - p.1) * (at(b) - at(p.0)) / (at(q.0) - at(p.0))).exp())
}

/// What one bucket's forwards say of one quantity (the forward's time or an op's).
struct BucketFit {
    forwards: usize,
    near: usize,
    fast: usize,
    ratio: Option<f64>,
}

/// Per bucket, the fast-state time ratio of `value` (ms; forwards where it is 0 did not run
/// it): each forward's value against the median of its shape's, its state from `states`
/// (bucket, bandwidth ÷ reference; `None` = no readings around it).
fn fit_buckets(
    forwards: &[TimedForward],
    states: &[Option<(usize, f64)>],
    value: impl Fn(&TimedForward) -> f64,
) -> Vec<BucketFit> {
    let mut by_shape: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for f in forwards.iter().filter(|f| value(f) > 0.0) {
        by_shape.entry(f.shape).or_default().push(value(f));
    }
    let shape_median: BTreeMap<usize, f64> = by_shape
        .into_iter()
        .filter_map(|(shape, values)| Some((shape, quantile::median(&values).ok()?)))
        .collect();
    // (bucket, bandwidth ratio, ln value ratio) of every forward with a state.
    let points: Vec<(usize, f64, f64)> = forwards
        .iter()
        .zip(states)
        .filter_map(|(f, state)| {
            let (bucket, rate_ratio) = (*state)?;
            let typical = shape_median.get(&f.shape)?;
            (value(f) > 0.0).then(|| (bucket, rate_ratio, (value(f) / typical).ln()))
        })
        .collect();
    (0..BUCKET_MIN_TOKENS.len())
        .map(|b| {
            let in_bucket = || points.iter().filter(move |(pb, _, _)| *pb == b);
            let near: Vec<f64> = in_bucket()
                .filter(|(_, r, _)| *r <= NEAR_REFERENCE && *r >= 1.0 / NEAR_REFERENCE)
                .map(|(_, _, y)| *y)
                .collect();
            let fast: Vec<f64> = in_bucket()
                .filter(|(_, r, _)| *r >= FAST_STATE)
                .map(|(_, _, y)| *y)
                .collect();
            let enough =
                near.len() >= MIN_FORWARDS_PER_STATE && fast.len() >= MIN_FORWARDS_PER_STATE;
            let ratio = || {
                let (near, fast) = (quantile::median(&near).ok()?, quantile::median(&fast).ok()?);
                Some((fast - near).exp())
            };
            BucketFit {
                forwards: in_bucket().count(),
                near: near.len(),
                fast: fast.len(),
                ratio: if enough { ratio() } else { None },
            }
        })
        .collect()
}

/// The bucket of a forward of `num_tokens` tokens (0 counts as 1).
fn bucket_of(num_tokens: u32) -> usize {
    BUCKET_MIN_TOKENS
        .iter()
        .rposition(|min| num_tokens.max(1) >= *min)
        .unwrap_or(0)
}

/// The bandwidth at `t_ns`, linear between the readings around it; `None` outside them (a
/// forward before the first reading or after the last has no state to go by).
fn bandwidth_at(quick: &[(i64, f64)], t_ns: i64) -> Option<f64> {
    let i = quick.partition_point(|(t, _)| *t <= t_ns);
    let (t0, a) = *quick.get(i.checked_sub(1)?)?;
    let (t1, b) = *quick.get(i)?;
    let w = if t1 > t0 {
        (t_ns - t0) as f64 / (t1 - t0) as f64
    } else {
        0.0
    };
    Some(a + w * (b - a))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTENTION_ELASTICITY: f64 = -0.6;

    /// Forwards of three shapes (1, 8 and 256 tokens) every 100 ms for 40 s, the bandwidth
    /// switching between 36 and 54 GB/s every 4 s, each forward's time following it with the
    /// given elasticity, a deterministic ±3 % scatter on top. Of each forward, decode
    /// attention (in the 1- and 8-token shapes only) takes a tenth and answers with
    /// [`ATTENTION_ELASTICITY`], the rest of the time is `mlp_up_proj`'s.
    fn profile(elasticities: [f64; 3]) -> (Vec<TimedForward>, Vec<(i64, f64)>) {
        let rate_at = |t_ns: i64| {
            if (t_ns / 4_000_000_000) % 3 == 2 {
                54.0
            } else {
                36.0
            }
        };
        let quick: Vec<(i64, f64)> = (0..=160)
            .map(|i| {
                let t = i * 250_000_000;
                (t, rate_at(t))
            })
            .collect();
        let forwards = (0..400)
            .map(|i| {
                let shape = i % 3;
                let start_ns = i as i64 * 100_000_000;
                let base = [70.0, 120.0, 1500.0][shape];
                let scatter = 1.0 + 0.03 * (((i * 7919) % 13) as f64 / 6.0 - 1.0);
                let state = rate_at(start_ns) / 36.0;
                let attention_ms = if shape < 2 {
                    0.1 * base * state.powf(-ATTENTION_ELASTICITY) * scatter
                } else {
                    0.0
                };
                let wall_ms = base * state.powf(-elasticities[shape]) * scatter;
                let mut op_ms = [0.0; Op::COUNT];
                op_ms[Op::AttnDecode.index()] = attention_ms;
                op_ms[Op::MlpUpProj.index()] = wall_ms - attention_ms;
                TimedForward {
                    num_tokens: [1, 8, 256][shape],
                    shape,
                    start_ns,
                    wall_ms,
                    op_ms,
                }
            })
            .collect();
        (forwards, quick)
    }

    #[test]
    fn measures_each_size_its_own_fast_state_ratio() {
        let (forwards, quick) = profile([0.7, -0.1, -0.25]);
        let r = SpeedResponse::fit(&forwards, &quick).unwrap();
        assert_eq!(r.reference_gb_per_s, 36.0);
        assert_eq!(r.fast_state_gb_per_s, Some(54.0));
        // Memory 1.5× faster: time × 1.5^−e.
        for (tokens, e) in [(1, 0.7), (8, -0.1), (256, -0.25)] {
            let (got, want) = (r.fast_time_ratio(tokens).unwrap(), 1.5f64.powf(-e));
            assert!(
                (got / want - 1.0).abs() < 0.03,
                "{tokens} tokens: {got} vs {want}"
            );
        }
        // 12 tokens share the 8–15 bucket.
        assert_eq!(r.fast_time_ratio(12), r.fast_time_ratio(8));
        // Sizes the profile did not time: geometrically between the nearest measured ones.
        let ln = |n: u32| r.fast_time_ratio(n).unwrap().ln();
        assert!((ln(2) - (ln(1) + (ln(8) - ln(1)) / 3.0)).abs() < 1e-12);
        assert!((ln(32) - (ln(8) + (ln(256) - ln(8)) / 2.0)).abs() < 1e-12);
        let b = &r.buckets[3];
        assert_eq!((b.min_tokens, b.max_tokens), (8, Some(15)));
        assert!(b.forwards_fast >= MIN_FORWARDS_PER_STATE);
        assert_eq!(r.buckets[5].max_tokens, None);
        // Each op its own: attention slows down in the fast state while the forward speeds
        // up; beyond the sizes that ran it (decode attention in a 256-token prefill) none.
        for tokens in [1, 8] {
            let got = r.op_fast_time_ratio(Op::AttnDecode, tokens).unwrap();
            let want = 1.5f64.powf(-ATTENTION_ELASTICITY);
            assert!((got / want - 1.0).abs() < 0.03, "{tokens} tokens: {got}");
        }
        assert_eq!(r.op_fast_time_ratio(Op::AttnDecode, 256), None);
        assert!(r.op_fast_time_ratio(Op::MlpUpProj, 1).unwrap() < r.fast_time_ratio(1).unwrap());
        assert_eq!(r.op_fast_time_ratio(Op::LmHead, 1), None, "never ran");
        assert_eq!(b.op_fast_time_ratio.len(), 2);
    }

    #[test]
    fn sizes_between_measured_ones_interpolate_and_the_ends_do_not_extrapolate() {
        let r = SpeedResponse {
            reference_gb_per_s: 36.0,
            fast_state_gb_per_s: Some(54.0),
            buckets: [None, Some(0.8), Some(0.9), Some(1.1), None, Some(1.05)]
                .iter()
                .enumerate()
                .map(|(i, ratio)| ResponseBucket {
                    min_tokens: BUCKET_MIN_TOKENS[i],
                    max_tokens: BUCKET_MIN_TOKENS.get(i + 1).map(|n| n - 1),
                    forwards: 12,
                    forwards_near_reference: 8,
                    forwards_fast: 4,
                    fast_time_ratio: *ratio,
                    op_fast_time_ratio: BTreeMap::new(),
                })
                .collect(),
        };
        let between = (1.1f64 * 1.05).sqrt();
        assert!((r.fast_time_ratio(20).unwrap() - between).abs() < 1e-12);
        assert_eq!(r.fast_time_ratio(3), Some(0.8));
        assert_eq!(r.fast_time_ratio(1), None);
    }

    #[test]
    fn without_a_state_change_there_is_nothing_to_fit() {
        let (forwards, _) = profile([0.7, -0.1, -0.25]);
        let flat: Vec<(i64, f64)> = (0..=160).map(|i| (i * 250_000_000, 36.0)).collect();
        let r = SpeedResponse::fit(&forwards, &flat).unwrap();
        assert!(r.buckets.iter().all(|b| b.fast_time_ratio.is_none()));
        assert!(r.buckets[0].forwards > 0 && r.buckets[0].forwards_fast == 0);
        assert_eq!(r.fast_state_gb_per_s, None);
        assert_eq!(SpeedResponse::fit(&forwards, &[]), None);
    }

    #[test]
    fn buckets_and_interpolation() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(63), 4);
        assert_eq!(bucket_of(64), 5);
        assert_eq!(bucket_of(u32::MAX), 5);
        let q = [(0, 10.0), (10, 20.0)];
        assert_eq!(bandwidth_at(&q, 5), Some(15.0));
        assert_eq!(bandwidth_at(&q, -1), None);
        assert_eq!(bandwidth_at(&q, 10), None);
    }
}
