//! How the device's memory state moves forwards of each size, as a profile measured it
//! (`profiling_meta.json`: `details.device_speed_response`).
//!
//! A shared host's memory bandwidth switches between states within seconds (33–40 against
//! 50–72 GB/s on the 2-core VM), and forwards of different sizes answer differently: in the
//! fast state single-sequence decode steps ran 21–32 % faster, decode batches of 8–15
//! sequences 5–8 % *slower* and prefills 8–11 % slower (`cargo bench --bench paired_replay`,
//! section "By memory state"), where a roofline that scales each op by its memory share moved
//! them all the same way. The profiler interleaves its forwards with quick memory probes, so
//! it sees both states too; per size of forward it fits the *elasticity* `e` of forward time
//! to the probed bandwidth — time ∝ (bandwidth ÷ reference)^−e — and the drift correction
//! scales a prediction by it. Measured in the profile, never from the run it corrects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::io::ops::Op;
use crate::quantile;

/// Lower bounds of the size buckets, tokens per forward: 1, 2–3, 4–7, 8–15, 16–63, 64+.
pub const BUCKET_MIN_TOKENS: [u32; 6] = [1, 2, 4, 8, 16, 64];
/// A forward ran in the reference state when the probed bandwidth was within this factor
/// (×/÷) of the profile's median, off it when at least [`OFF_REFERENCE`] away.
pub const NEAR_REFERENCE: f64 = 1.1;
pub const OFF_REFERENCE: f64 = 1.2;
/// A bucket's elasticity is fitted only from at least this many forwards in the reference
/// state and this many off it: fewer say more about the forwards' own scatter (5–10 %)
/// than about the state. The default grid times 12 single-token forwards (4 shapes × 3
/// passes), a third of them in the fast state on a typical profile.
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
    /// Of them, in the reference state and off it (at least [`OFF_REFERENCE`] away).
    pub forwards_near_reference: usize,
    pub forwards_off_reference: usize,
    /// d ln(time) ÷ d ln(1 ÷ bandwidth): 1 = time follows the bandwidth fully, 0 = not at
    /// all, < 0 = the forward slows down when memory speeds up. `None` when the profile did
    /// not see enough forwards in both states.
    pub elasticity: Option<f64>,
    /// The same of each op's time in these forwards, by op name, for the ops that ran in
    /// enough of them in both states. Ops answer differently: in the fast state decode
    /// attention slows down while the projections and `lm_head` speed up
    /// (`docs/ground_truth.md`, section 3), so one elasticity per forward misplaces time
    /// between them. Absent in bundles before 2026-12-05.
    #[serde(default)]
    pub op_elasticity: BTreeMap<String, f64>,
}

/// The elasticities of a profile, per size bucket, against its quick probes' median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedResponse {
    /// Median bandwidth of the profile's quick probes, GB/s: the reference state.
    pub reference_gb_per_s: f64,
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
        // Per forward: its bucket and ln bandwidth ratio at its start (forwards without
        // readings around them have no state to go by).
        let states: Vec<Option<(usize, f64)>> = forwards
            .iter()
            .map(|f| {
                let rate = bandwidth_at(&quick, f.start_ns)?;
                Some((bucket_of(f.num_tokens), (rate / reference).ln()))
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
                forwards_off_reference: fit.off,
                elasticity: fit.elasticity,
                op_elasticity: op_fits
                    .iter()
                    .filter_map(|(op, fits)| Some((op.name().to_owned(), fits[b].elasticity?)))
                    .collect(),
            })
            .collect();
        Some(SpeedResponse {
            reference_gb_per_s: reference,
            buckets,
        })
    }

    /// The elasticity for a forward (an iteration) of `num_tokens` tokens: its bucket's where
    /// the profile measured it, else the line between the nearest measured buckets below and
    /// above it (in bucket order, i.e. about log₂ of the size: the elasticity falls steadily
    /// with size, +0.60, +0.37, +0.20, −0.10 for 1, 2–3, 4–7, 8–15 tokens in a profile of
    /// 2026-12-05), and `None` beyond the last measured one at either end. Not extrapolated:
    /// the ends are where it changes fastest, and the line through two noisy neighbours put
    /// a profile's single-token elasticity at +0.26 where the others measured +0.50–0.60
    /// (section 3 of docs/ground_truth.md).
    pub fn elasticity(&self, num_tokens: u32) -> Option<f64> {
        interpolate_buckets(&self.buckets, num_tokens, |k| k.elasticity)
    }

    /// The elasticity of `op`'s time in a forward of `num_tokens` tokens, by the same rule
    /// over the buckets where the profile measured that op; `None` where it did not (the
    /// forward's elasticity then stands for it).
    pub fn op_elasticity(&self, op: Op, num_tokens: u32) -> Option<f64> {
        interpolate_buckets(&self.buckets, num_tokens, |k| {
            k.op_elasticity.get(op.name()).copied()
        })
    }
}

/// The value `of` a bucket for a forward of `num_tokens` tokens: its bucket's where measured,
/// else the line between the nearest measured buckets below and above, else `None`.
fn interpolate_buckets(
    buckets: &[ResponseBucket],
    num_tokens: u32,
    of: impl Fn(&ResponseBucket) -> Option<f64>,
) -> Option<f64> {
    let b = bucket_of(num_tokens);
    // (bucket index, value) of the measured buckets, in order.
    let measured: Vec<(usize, f64)> = buckets
        .iter()
        .filter_map(|k| {
            let i = BUCKET_MIN_TOKENS.iter().position(|m| *m == k.min_tokens)?;
            Some((i, of(k)?))
        })
        .collect();
    if let Some((_, e)) = measured.iter().find(|(i, _)| *i == b) {
        return Some(*e);
    }
    let below = measured.iter().rev().find(|(i, _)| *i < b);
    let above = measured.iter().find(|(i, _)| *i > b);
    let (p, q) = below.zip(above)?;
    let at = |i: usize| i as f64;
    Some(p.1 + (q.1 - p.1) * (at(b) - at(p.0)) / (at(q.0) - at(p.0)))
}

/// What one bucket's forwards say of one quantity (the forward's time or an op's).
struct BucketFit {
    forwards: usize,
    near: usize,
    off: usize,
    elasticity: Option<f64>,
}

/// Per bucket, the elasticity of `value` (ms; forwards where it is 0 did not run it) to the
/// bandwidth: each forward's value against the median of its shape's, its state from
/// `states` (bucket, ln bandwidth ratio; `None` = no readings around it).
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
    // (bucket, ln bandwidth ratio, ln value ratio) of every forward with a state.
    let points: Vec<(usize, f64, f64)> = forwards
        .iter()
        .zip(states)
        .filter_map(|(f, state)| {
            let (bucket, x) = (*state)?;
            let typical = shape_median.get(&f.shape)?;
            (value(f) > 0.0).then(|| (bucket, x, (value(f) / typical).ln()))
        })
        .collect();
    (0..BUCKET_MIN_TOKENS.len())
        .map(|b| {
            let xy: Vec<(f64, f64)> = points
                .iter()
                .filter(|(pb, _, _)| *pb == b)
                .map(|(_, x, y)| (*x, *y))
                .collect();
            let near = xy
                .iter()
                .filter(|(x, _)| x.abs() <= NEAR_REFERENCE.ln())
                .count();
            let off = xy
                .iter()
                .filter(|(x, _)| x.abs() >= OFF_REFERENCE.ln())
                .count();
            let enough = near >= MIN_FORWARDS_PER_STATE && off >= MIN_FORWARDS_PER_STATE;
            BucketFit {
                forwards: xy.len(),
                near,
                off,
                // Value ∝ bandwidth^−e: the negated slope of ln value on ln bandwidth.
                elasticity: enough.then(|| -slope(&xy)).filter(|e| e.is_finite()),
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

/// Least-squares slope of y on x; NaN when x does not vary.
fn slope(xy: &[(f64, f64)]) -> f64 {
    let n = xy.len() as f64;
    let (mx, my) = (
        xy.iter().map(|p| p.0).sum::<f64>() / n,
        xy.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = xy.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xy.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    cov / var
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
    fn fits_each_size_its_own_elasticity() {
        let (forwards, quick) = profile([0.7, -0.1, -0.25]);
        let r = SpeedResponse::fit(&forwards, &quick).unwrap();
        assert_eq!(r.reference_gb_per_s, 36.0);
        for (tokens, want) in [(1, 0.7), (8, -0.1), (256, -0.25)] {
            let e = r.elasticity(tokens).unwrap();
            assert!((e - want).abs() < 0.05, "{tokens} tokens: {e} vs {want}");
        }
        // 12 tokens share the 8–15 bucket.
        assert_eq!(r.elasticity(12), r.elasticity(8));
        // Sizes the profile did not time: on the line through the nearest measured ones.
        let (e1, e8, e256) = (
            r.elasticity(1).unwrap(),
            r.elasticity(8).unwrap(),
            r.elasticity(256).unwrap(),
        );
        assert!((r.elasticity(2).unwrap() - (e1 + (e8 - e1) / 3.0)).abs() < 1e-12);
        assert!((r.elasticity(32).unwrap() - (e8 + (e256 - e8) / 2.0)).abs() < 1e-12);
        let b = &r.buckets[3];
        assert_eq!((b.min_tokens, b.max_tokens), (8, Some(15)));
        // Each op its own: attention slows down in the fast state while the forward speeds
        // up; beyond the sizes that ran it (decode attention in a 256-token prefill) none.
        for tokens in [1, 8] {
            let e = r.op_elasticity(Op::AttnDecode, tokens).unwrap();
            assert!(
                (e - ATTENTION_ELASTICITY).abs() < 0.05,
                "{tokens} tokens: {e}"
            );
        }
        assert_eq!(r.op_elasticity(Op::AttnDecode, 256), None);
        assert!(r.op_elasticity(Op::MlpUpProj, 1).unwrap() > 0.7);
        assert_eq!(r.op_elasticity(Op::LmHead, 1), None, "never ran");
        assert_eq!(b.op_elasticity.len(), 2);
        assert!(b.forwards_off_reference >= MIN_FORWARDS_PER_STATE);
        assert_eq!(r.buckets[5].max_tokens, None);
    }

    #[test]
    fn sizes_between_measured_ones_interpolate_and_the_ends_do_not_extrapolate() {
        let r = SpeedResponse {
            reference_gb_per_s: 36.0,
            buckets: [None, Some(0.38), Some(0.10), Some(-0.11), None, Some(-0.07)]
                .iter()
                .enumerate()
                .map(|(i, e)| ResponseBucket {
                    min_tokens: BUCKET_MIN_TOKENS[i],
                    max_tokens: BUCKET_MIN_TOKENS.get(i + 1).map(|n| n - 1),
                    forwards: 12,
                    forwards_near_reference: 8,
                    forwards_off_reference: 4,
                    elasticity: *e,
                    op_elasticity: BTreeMap::new(),
                })
                .collect(),
        };
        assert!((r.elasticity(20).unwrap() - -0.09).abs() < 1e-12);
        assert_eq!(r.elasticity(3), Some(0.38));
        assert_eq!(r.elasticity(1), None);
    }

    #[test]
    fn without_a_state_change_there_is_nothing_to_fit() {
        let (forwards, _) = profile([0.7, -0.1, -0.25]);
        let flat: Vec<(i64, f64)> = (0..=160).map(|i| (i * 250_000_000, 36.0)).collect();
        let r = SpeedResponse::fit(&forwards, &flat).unwrap();
        assert!(r.buckets.iter().all(|b| b.elasticity.is_none()));
        assert!(r.buckets[0].forwards > 0 && r.buckets[0].forwards_off_reference == 0);
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
