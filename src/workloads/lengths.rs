//! Request length generators: how many prompt (prefill) and output (decode) tokens each
//! request has.
//!
//! Semantics follow Vidur's `vidur/request_generator/*_request_length_generator.py`
//! (formulas, rounding and clipping), with our own seeded RNG streams, so a workload
//! described with Vidur's parameters has the same length distribution here. Where Vidur's
//! behaviour is accidental (an approximate Zipf sampler, a per-process string hash) we keep
//! the intended distribution and say so on the variant.

use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use super::rng::{derive_rng, LENGTHS_STREAM, ZIPF_SCRAMBLE_STREAM};
use super::trace::read_length_trace;
use super::{ensure_positive_finite, RequestLengths};
use crate::{Error, Result};

/// Key path under which the workload config embeds a [`LengthsConfig`].
pub const LENGTHS_KEY: &str = "workload.lengths";

/// How request lengths are generated. Internally tagged by `generator`, e.g.
/// `{generator: uniform, min_tokens: 1024, prefill_to_decode_ratio: 20.0}`.
///
/// `max_tokens`, where present, caps prefill + decode; when absent (`null`) the cap is the
/// model context passed to [`generate_lengths`], which is what Vidur's `max_tokens` stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "generator", rename_all = "snake_case", deny_unknown_fields)]
pub enum LengthsConfig {
    /// Every request has the same lengths, which must fit the context together (Vidur
    /// does not check; here it is a config error).
    Fixed {
        /// Prompt tokens of every request, >= 1.
        prefill_tokens: u32,
        /// Output tokens of every request, >= 1.
        decode_tokens: u32,
    },
    /// Total tokens `T ~ U(min_tokens, max_tokens)` (continuous), then
    /// `decode = ceil(T / (1 + r))`, `prefill = floor(T - decode)` with
    /// `r = prefill_to_decode_ratio` — Vidur's uniform generator.
    Uniform {
        /// Smallest total (prefill + decode).
        min_tokens: u32,
        /// Largest total; `null` (default) means the model context.
        #[serde(default)]
        max_tokens: Option<u32>,
        /// Prefill tokens per decode token, > 0.
        prefill_to_decode_ratio: f64,
    },
    /// Total tokens `T = min_tokens + k - 1` with rank `k` Zipf-distributed over the
    /// `max_tokens - min_tokens + 1` possible totals (`P(k) ∝ k^-theta`; `theta = 0` is
    /// uniform), then `decode = floor(T / (1 + r))`, `prefill = floor(T - T / (1 + r))` —
    /// Vidur's zipf generator.
    ///
    /// Two deliberate differences from Vidur: ranks are drawn with an exact sampler
    /// (`rand_distr::Zipf`) where Vidur uses Gray et al.'s approximation, and `scramble`
    /// maps ranks through a seeded permutation, where Vidur uses Python's `hash()`, which is
    /// salted per process and thus not reproducible.
    Zipf {
        /// Zipf exponent, >= 0 (Vidur's default is 0.6).
        theta: f64,
        /// Map ranks to totals through a seeded permutation, so that the most frequent
        /// totals are not the shortest ones; default false.
        #[serde(default)]
        scramble: bool,
        /// Smallest total (prefill + decode), the most frequent one unless scrambled.
        min_tokens: u32,
        /// Largest total; `null` (default) means the model context.
        #[serde(default)]
        max_tokens: Option<u32>,
        /// Prefill tokens per decode token, > 0.
        prefill_to_decode_ratio: f64,
    },
    /// Lengths sampled from a trace CSV with columns `num_prefill_tokens`,
    /// `num_decode_tokens`. As Vidur's trace generator: counts are scaled, truncated to
    /// integers, rows whose total exceeds the context lose the excess proportionally from
    /// both counts (each share rounded up), counts are clipped to at least 1, and the rows
    /// are shuffled with the seed. Each row is used at most once, so the trace must have at
    /// least as many rows as requests.
    Trace {
        /// CSV with `num_prefill_tokens` and `num_decode_tokens` columns.
        trace_file: PathBuf,
        /// Multiplies prompt lengths before truncation; default 1.
        #[serde(default = "one")]
        prefill_scale_factor: f64,
        /// Multiplies output lengths before truncation; default 1.
        #[serde(default = "one")]
        decode_scale_factor: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl LengthsConfig {
    /// Checks the parameters on their own (no context, no files), reporting key paths under
    /// [`LENGTHS_KEY`].
    pub fn validate(&self) -> Result<()> {
        self.validate_at(LENGTHS_KEY)
    }

    /// As [`validate`](Self::validate), with key paths under `prefix`.
    pub fn validate_at(&self, prefix: &str) -> Result<()> {
        let key = |field: &str| format!("{prefix}.{field}");
        match self {
            LengthsConfig::Fixed {
                prefill_tokens,
                decode_tokens,
            } => {
                ensure_at_least_one(&key("prefill_tokens"), *prefill_tokens)?;
                ensure_at_least_one(&key("decode_tokens"), *decode_tokens)?;
            }
            LengthsConfig::Uniform {
                min_tokens,
                max_tokens,
                prefill_to_decode_ratio,
            } => {
                let ratio = *prefill_to_decode_ratio;
                ensure_positive_finite(&key("prefill_to_decode_ratio"), ratio)?;
                ensure_min_below_max(&key("max_tokens"), *min_tokens, *max_tokens)?;
                // prefill = floor(T - ceil(T/(1+r))) >= floor(T*r/(1+r) - 1), so T*r/(1+r) >= 2
                // at T = min_tokens guarantees every request at least one prompt token.
                let min_total = f64::from(*min_tokens);
                if min_total * ratio / (1.0 + ratio) < 2.0 {
                    return Err(Error::config(
                        key("min_tokens"),
                        format!(
                            "{min_tokens} is too small for prefill_to_decode_ratio {ratio}: \
                             some requests would get no prompt token; need min_tokens >= {}",
                            (2.0 * (1.0 + ratio) / ratio).ceil()
                        ),
                    ));
                }
            }
            LengthsConfig::Zipf {
                theta,
                scramble: _,
                min_tokens,
                max_tokens,
                prefill_to_decode_ratio,
            } => {
                if !theta.is_finite() || *theta < 0.0 {
                    return Err(Error::config(
                        key("theta"),
                        format!("must be finite and >= 0, got {theta}"),
                    ));
                }
                let ratio = *prefill_to_decode_ratio;
                ensure_positive_finite(&key("prefill_to_decode_ratio"), ratio)?;
                ensure_min_below_max(&key("max_tokens"), *min_tokens, *max_tokens)?;
                // Both floors grow with T, so checking the smallest total suffices.
                let shortest = split_truncating(*min_tokens, ratio);
                if shortest.num_prefill_tokens == 0 || shortest.num_decode_tokens == 0 {
                    return Err(Error::config(
                        key("min_tokens"),
                        format!(
                            "{min_tokens} is too small for prefill_to_decode_ratio {ratio}: \
                             the shortest request would be split into {} prefill + {} decode \
                             tokens; both must be >= 1",
                            shortest.num_prefill_tokens, shortest.num_decode_tokens
                        ),
                    ));
                }
            }
            LengthsConfig::Trace {
                trace_file,
                prefill_scale_factor,
                decode_scale_factor,
            } => {
                if trace_file.as_os_str().is_empty() {
                    return Err(Error::config(key("trace_file"), "must not be empty"));
                }
                ensure_positive_finite(&key("prefill_scale_factor"), *prefill_scale_factor)?;
                ensure_positive_finite(&key("decode_scale_factor"), *decode_scale_factor)?;
            }
        }
        Ok(())
    }
}

impl LengthsConfig {
    /// Checks the parameters against the model context before any work: a fixed request
    /// longer than the context, or a cap above it, is a config error naming the key.
    pub fn validate_for_context(&self, max_context_tokens: u32) -> Result<()> {
        self.validate()?;
        match self {
            LengthsConfig::Fixed {
                prefill_tokens,
                decode_tokens,
            } => {
                let total = u64::from(*prefill_tokens) + u64::from(*decode_tokens);
                if total > u64::from(max_context_tokens) {
                    return Err(Error::config(
                        LENGTHS_KEY,
                        format!(
                            "prefill_tokens + decode_tokens = {total} is above the model's context of {max_context_tokens} tokens"
                        ),
                    ));
                }
                Ok(())
            }
            LengthsConfig::Uniform {
                min_tokens,
                max_tokens,
                ..
            }
            | LengthsConfig::Zipf {
                min_tokens,
                max_tokens,
                ..
            } => resolve_max_tokens(LENGTHS_KEY, *min_tokens, *max_tokens, max_context_tokens)
                .map(drop),
            LengthsConfig::Trace { .. } => Ok(()),
        }
    }

    /// The trace file this generator reads, if any.
    pub fn trace_file(&self) -> Option<&std::path::Path> {
        match self {
            LengthsConfig::Trace { trace_file, .. } => Some(trace_file),
            _ => None,
        }
    }

    /// Expected prompt + output tokens per request where it follows from the parameters
    /// alone (fixed: exact; uniform: the midpoint of the total's range).
    pub fn mean_total_tokens(&self, max_context_tokens: u32) -> Option<f64> {
        match self {
            LengthsConfig::Fixed {
                prefill_tokens,
                decode_tokens,
            } => Some(f64::from(*prefill_tokens) + f64::from(*decode_tokens)),
            LengthsConfig::Uniform {
                min_tokens,
                max_tokens,
                ..
            } => {
                let max = max_tokens.unwrap_or(max_context_tokens);
                Some((f64::from(*min_tokens) + f64::from(max)) / 2.0)
            }
            LengthsConfig::Zipf { .. } | LengthsConfig::Trace { .. } => None,
        }
    }
}

fn ensure_at_least_one(key: &str, value: u32) -> Result<()> {
    if value == 0 {
        return Err(Error::config(key, "must be >= 1, got 0"));
    }
    Ok(())
}

fn ensure_min_below_max(max_key: &str, min_tokens: u32, max_tokens: Option<u32>) -> Result<()> {
    if let Some(max_tokens) = max_tokens {
        if max_tokens < min_tokens {
            return Err(Error::config(
                max_key,
                format!("{max_tokens} is below min_tokens {min_tokens}"),
            ));
        }
    }
    Ok(())
}

/// Resolves the effective `max_tokens` cap against the model context.
fn resolve_max_tokens(
    prefix: &str,
    min_tokens: u32,
    max_tokens: Option<u32>,
    max_context_tokens: u32,
) -> Result<u32> {
    let max_tokens = match max_tokens {
        Some(max_tokens) if max_tokens > max_context_tokens => {
            return Err(Error::config(
                format!("{prefix}.max_tokens"),
                format!("{max_tokens} exceeds the model context of {max_context_tokens} tokens"),
            ))
        }
        Some(max_tokens) => max_tokens,
        None => max_context_tokens,
    };
    if min_tokens > max_tokens {
        return Err(Error::config(
            format!("{prefix}.min_tokens"),
            format!("{min_tokens} exceeds the maximum of {max_tokens} tokens"),
        ));
    }
    Ok(max_tokens)
}

/// Vidur's zipf split: `decode = T/(1+r)`, `prefill = T - decode`, both truncated.
fn split_truncating(total_tokens: u32, ratio: f64) -> RequestLengths {
    let total = f64::from(total_tokens);
    let decode = total / (1.0 + ratio);
    RequestLengths {
        // Truncation of finite values in [0, total], so the casts cannot overflow.
        num_prefill_tokens: (total - decode) as u32,
        num_decode_tokens: decode as u32,
    }
}

/// Vidur's uniform split of a continuous total: `decode = ceil(T/(1+r))`,
/// `prefill = floor(T - decode)`.
fn split_ceil_decode(total: f64, ratio: f64) -> RequestLengths {
    let decode = (total / (1.0 + ratio)).ceil();
    RequestLengths {
        num_prefill_tokens: (total - decode) as u32,
        num_decode_tokens: decode as u32,
    }
}

/// Generates `n` request lengths.
///
/// `max_context_tokens` is the model's context: no request's prefill + decode exceeds it.
/// Draws come from the [`LENGTHS_STREAM`] of `seed`, independent of arrival times.
pub fn generate_lengths(
    config: &LengthsConfig,
    n: usize,
    seed: u64,
    max_context_tokens: u32,
) -> Result<Vec<RequestLengths>> {
    config.validate()?;
    if max_context_tokens == 0 {
        return Err(Error::InvalidInput(
            "max_context_tokens must be >= 1".to_string(),
        ));
    }
    let mut rng = derive_rng(seed, LENGTHS_STREAM, 0);
    match config {
        LengthsConfig::Fixed {
            prefill_tokens,
            decode_tokens,
        } => {
            let total = u64::from(*prefill_tokens) + u64::from(*decode_tokens);
            if total > u64::from(max_context_tokens) {
                return Err(Error::config(
                    format!("{LENGTHS_KEY}.prefill_tokens"),
                    format!(
                        "prefill_tokens + decode_tokens = {total} exceeds the model context \
                         of {max_context_tokens} tokens"
                    ),
                ));
            }
            Ok(vec![
                RequestLengths {
                    num_prefill_tokens: *prefill_tokens,
                    num_decode_tokens: *decode_tokens,
                };
                n
            ])
        }
        LengthsConfig::Uniform {
            min_tokens,
            max_tokens,
            prefill_to_decode_ratio,
        } => {
            let max_tokens =
                resolve_max_tokens(LENGTHS_KEY, *min_tokens, *max_tokens, max_context_tokens)?;
            let (low, high) = (f64::from(*min_tokens), f64::from(max_tokens));
            Ok((0..n)
                .map(|_| {
                    let total = low + (high - low) * rng.random::<f64>();
                    split_ceil_decode(total, *prefill_to_decode_ratio)
                })
                .collect())
        }
        LengthsConfig::Zipf {
            theta,
            scramble,
            min_tokens,
            max_tokens,
            prefill_to_decode_ratio,
        } => {
            let max_tokens =
                resolve_max_tokens(LENGTHS_KEY, *min_tokens, *max_tokens, max_context_tokens)?;
            let num_totals = max_tokens - min_tokens + 1;
            let zipf = Zipf::new(f64::from(num_totals), *theta)
                .map_err(|e| Error::config(format!("{LENGTHS_KEY}.theta"), format!("zipf: {e}")))?;
            // rank_to_offset[k - 1] is the offset from min_tokens that rank k stands for.
            let mut rank_to_offset: Vec<u32> = (0..num_totals).collect();
            if *scramble {
                rank_to_offset.shuffle(&mut derive_rng(seed, ZIPF_SCRAMBLE_STREAM, 0));
            }
            Ok((0..n)
                .map(|_| {
                    // Samples are integral floats in [1, num_totals]; clamp guards the index
                    // against any rounding at the upper end.
                    let rank = (zipf.sample(&mut rng) as usize).clamp(1, rank_to_offset.len());
                    let total = min_tokens + rank_to_offset[rank - 1];
                    split_truncating(total, *prefill_to_decode_ratio)
                })
                .collect())
        }
        LengthsConfig::Trace {
            trace_file,
            prefill_scale_factor,
            decode_scale_factor,
        } => {
            let rows = read_length_trace(trace_file)?;
            if rows.len() < n {
                return Err(Error::OutOfRange(format!(
                    "{}: the length trace has {} rows but {n} requests were asked for; each \
                     row is used at most once",
                    trace_file.display(),
                    rows.len()
                )));
            }
            let mut lengths = rows
                .iter()
                .map(|row| {
                    clip_trace_lengths_proportionally(
                        row.num_prefill_tokens * prefill_scale_factor,
                        row.num_decode_tokens * decode_scale_factor,
                        max_context_tokens,
                    )
                    .ok_or_else(|| Error::InvalidValue {
                        path: trace_file.clone(),
                        row: row.row,
                        column: "num_prefill_tokens".to_string(),
                        msg: format!(
                            "after scaling and clipping as Vidur does, this request still \
                             exceeds the {max_context_tokens}-token context (one of its \
                             counts is zero)"
                        ),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            lengths.shuffle(&mut rng);
            lengths.truncate(n);
            Ok(lengths)
        }
    }
}

/// Vidur's trace length clipping for already-scaled counts: truncate to integers; if the
/// total exceeds the context, subtract `ceil(excess * share)` from each count, where the
/// shares are each count's fraction of the total; clip both to >= 1. `None` if the result
/// still exceeds the context (only possible when a count was 0).
fn clip_trace_lengths_proportionally(
    prefill: f64,
    decode: f64,
    max_context_tokens: u32,
) -> Option<RequestLengths> {
    // The reader guarantees finite, non-negative counts; `as` saturates huge ones.
    let (prefill, decode) = (prefill as i64, decode as i64);
    let total = prefill + decode;
    let excess = (total - i64::from(max_context_tokens)).max(0);
    let (mut prefill_out, mut decode_out) = (prefill, decode);
    if excess > 0 {
        // Same operation order as Vidur (ratio first, then product) so ceilings agree.
        let prefill_share = prefill as f64 / total as f64;
        let decode_share = decode as f64 / total as f64;
        prefill_out -= (excess as f64 * prefill_share).ceil() as i64;
        decode_out -= (excess as f64 * decode_share).ceil() as i64;
    }
    let (prefill_out, decode_out) = (prefill_out.max(1), decode_out.max(1));
    if prefill_out + decode_out > i64::from(max_context_tokens) {
        return None;
    }
    Some(RequestLengths {
        num_prefill_tokens: u32::try_from(prefill_out).ok()?,
        num_decode_tokens: u32::try_from(decode_out).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniform(min_tokens: u32, max_tokens: Option<u32>, ratio: f64) -> LengthsConfig {
        LengthsConfig::Uniform {
            min_tokens,
            max_tokens,
            prefill_to_decode_ratio: ratio,
        }
    }

    fn zipf(theta: f64, scramble: bool, min_tokens: u32, max_tokens: Option<u32>) -> LengthsConfig {
        LengthsConfig::Zipf {
            theta,
            scramble,
            min_tokens,
            max_tokens,
            prefill_to_decode_ratio: 20.0,
        }
    }

    fn config_key(err: Error) -> String {
        match err {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn fixed_is_exact() {
        let config = LengthsConfig::Fixed {
            prefill_tokens: 2048,
            decode_tokens: 512,
        };
        let lengths = generate_lengths(&config, 3, 7, 4096).unwrap();
        assert_eq!(
            lengths,
            vec![
                RequestLengths {
                    num_prefill_tokens: 2048,
                    num_decode_tokens: 512
                };
                3
            ]
        );
        let err = generate_lengths(&config, 3, 7, 2559).unwrap_err();
        assert_eq!(config_key(err), "workload.lengths.prefill_tokens");
    }

    #[test]
    fn splits_match_vidur_rounding() {
        // zipf: 1024/21 = 48.76 -> 48 decode; 1024 - 48.76 = 975.24 -> 975 prefill (sum 1023).
        assert_eq!(
            split_truncating(1024, 20.0),
            RequestLengths {
                num_prefill_tokens: 975,
                num_decode_tokens: 48
            }
        );
        // uniform: T = 1500.5, decode = ceil(71.45) = 72, prefill = floor(1428.5) = 1428.
        assert_eq!(
            split_ceil_decode(1500.5, 20.0),
            RequestLengths {
                num_prefill_tokens: 1428,
                num_decode_tokens: 72
            }
        );
    }

    #[test]
    fn uniform_stays_in_bounds_with_the_requested_ratio() {
        let lengths = generate_lengths(&uniform(1024, None, 20.0), 20_000, 1, 4096).unwrap();
        let totals: Vec<u32> = lengths.iter().map(RequestLengths::total_tokens).collect();
        // prefill + decode = floor(T - ceil(T/21)) + ceil(T/21), i.e. floor(T) or T.
        assert!(totals.iter().all(|&t| (1024..=4096).contains(&t)));
        let mean = totals.iter().map(|&t| f64::from(t)).sum::<f64>() / totals.len() as f64;
        // U(1024, 4096) has mean 2560 and sd 887; the sample mean's sd is 6.3.
        assert!((mean - 2560.0).abs() < 30.0, "mean total {mean}");
        for l in &lengths {
            let ratio = f64::from(l.num_prefill_tokens) / f64::from(l.num_decode_tokens);
            // decode = ceil(T/21) makes the ratio slightly below 20, by at most 21/decode.
            assert!(ratio <= 20.0 && ratio > 19.0, "ratio {ratio} for {l:?}");
        }
        // An explicit cap below the context is honoured.
        let capped = generate_lengths(&uniform(100, Some(200), 1.0), 1000, 1, 4096).unwrap();
        assert!(capped
            .iter()
            .all(|l| (100..=200).contains(&l.total_tokens())));
    }

    #[test]
    fn zipf_stays_in_bounds_and_favours_short_totals() {
        let lengths = generate_lengths(&zipf(0.6, false, 1024, None), 20_000, 3, 4096).unwrap();
        let totals: Vec<u32> = lengths.iter().map(RequestLengths::total_tokens).collect();
        // Truncating both parts loses at most one token of T in [1024, 4096].
        assert!(totals.iter().all(|&t| (1023..=4096).contains(&t)));
        // Rank 1 (T = 1024) has probability 1/H where H = sum_{k=1}^{3073} k^-0.6 = 60.13,
        // i.e. 1.66 % (333 of 20 000); its split gives 975 + 48.
        let at_min = lengths
            .iter()
            .filter(|l| l.num_prefill_tokens == 975 && l.num_decode_tokens == 48)
            .count();
        let h: f64 = (1..=3073).map(|k| (k as f64).powf(-0.6)).sum();
        let expected = 20_000.0 / h;
        assert!(
            (at_min as f64 - expected).abs() < 4.0 * expected.sqrt(),
            "{at_min} at the minimum, expected {expected:.0}"
        );
        // Median of a theta=0.6 Zipf over 3073 ranks is well below the midpoint 2560.
        let mut sorted = totals.clone();
        sorted.sort_unstable();
        assert!(sorted[sorted.len() / 2] < 2300);
    }

    #[test]
    fn zipf_scramble_moves_the_mode_but_keeps_bounds() {
        let plain = generate_lengths(&zipf(1.2, false, 100, Some(199)), 5000, 9, 4096).unwrap();
        let scrambled = generate_lengths(&zipf(1.2, true, 100, Some(199)), 5000, 9, 4096).unwrap();
        let mode = |v: &[RequestLengths]| {
            let mut counts = std::collections::HashMap::new();
            for l in v {
                *counts.entry(l.total_tokens()).or_insert(0usize) += 1;
            }
            counts.into_iter().max_by_key(|&(t, c)| (c, t)).unwrap().0
        };
        // Unscrambled, rank 1 (T = 100 -> 95 + 4 = 99 after truncation) is the mode.
        assert_eq!(mode(&plain), 99);
        assert_ne!(mode(&scrambled), 99);
        assert!(scrambled
            .iter()
            .all(|l| (99..=199).contains(&l.total_tokens())));
    }

    #[test]
    fn determinism_per_seed() {
        let config = zipf(0.6, true, 1024, None);
        let a = generate_lengths(&config, 500, 11, 4096).unwrap();
        let b = generate_lengths(&config, 500, 11, 4096).unwrap();
        let c = generate_lengths(&config, 500, 12, 4096).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (
                LengthsConfig::Fixed {
                    prefill_tokens: 0,
                    decode_tokens: 1,
                },
                "workload.lengths.prefill_tokens",
            ),
            (
                uniform(1024, None, f64::NAN),
                "workload.lengths.prefill_to_decode_ratio",
            ),
            (
                uniform(1024, None, -1.0),
                "workload.lengths.prefill_to_decode_ratio",
            ),
            (
                uniform(1024, Some(1000), 20.0),
                "workload.lengths.max_tokens",
            ),
            (uniform(2, None, 20.0), "workload.lengths.min_tokens"),
            (zipf(-0.1, false, 1024, None), "workload.lengths.theta"),
            (
                zipf(f64::INFINITY, false, 1024, None),
                "workload.lengths.theta",
            ),
            (zipf(0.6, false, 20, None), "workload.lengths.min_tokens"),
            (
                LengthsConfig::Trace {
                    trace_file: "t.csv".into(),
                    prefill_scale_factor: 0.0,
                    decode_scale_factor: 1.0,
                },
                "workload.lengths.prefill_scale_factor",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(
                config_key(config.validate().unwrap_err()),
                key,
                "{config:?}"
            );
        }
        // The smallest valid zipf minimum for r = 20 is 21 (decode = floor(21/21) = 1).
        zipf(0.6, false, 21, None).validate().unwrap();
        // Context-dependent checks happen at generation.
        let err = generate_lengths(&uniform(1024, Some(8192), 20.0), 1, 0, 4096).unwrap_err();
        assert_eq!(config_key(err), "workload.lengths.max_tokens");
        let err = generate_lengths(&uniform(5000, None, 20.0), 1, 0, 4096).unwrap_err();
        assert_eq!(config_key(err), "workload.lengths.min_tokens");
        assert_eq!(
            config_key(uniform(3, None, 1.0).validate_at("w.l").unwrap_err()),
            "w.l.min_tokens"
        );
    }

    #[test]
    fn trace_clipping_matches_vidur_on_hand_made_rows() {
        // Under the context: only truncation.
        assert_eq!(
            clip_trace_lengths_proportionally(100.9, 20.2, 4096),
            Some(RequestLengths {
                num_prefill_tokens: 100,
                num_decode_tokens: 20
            })
        );
        // 5000 + 1000 in 4096: excess 1904; prefill share 5/6 -> ceil(1586.67) = 1587,
        // decode share 1/6 -> ceil(317.33) = 318: 3413 + 682 = 4095.
        assert_eq!(
            clip_trace_lengths_proportionally(5000.0, 1000.0, 4096),
            Some(RequestLengths {
                num_prefill_tokens: 3413,
                num_decode_tokens: 682
            })
        );
        // Zero counts are clipped to 1 after the proportional cut.
        assert_eq!(
            clip_trace_lengths_proportionally(0.4, 7.0, 4096),
            Some(RequestLengths {
                num_prefill_tokens: 1,
                num_decode_tokens: 7
            })
        );
        // A zero prompt with an over-long output cannot be fixed by Vidur's rule.
        assert_eq!(clip_trace_lengths_proportionally(0.0, 5000.0, 4096), None);
    }

    #[test]
    fn config_yaml_round_trip_and_unknown_fields() {
        let yaml = "generator: zipf\ntheta: 0.6\nmin_tokens: 1024\nprefill_to_decode_ratio: 20.0\n";
        let config: LengthsConfig = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(config, zipf(0.6, false, 1024, None));
        let back: LengthsConfig =
            serde_saphyr::from_str(&serde_saphyr::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        let typo = "generator: fixed\nprefill_tokens: 1\ndecode_tokens: 1\ndecode_token: 2\n";
        assert!(serde_saphyr::from_str::<LengthsConfig>(typo).is_err());
        let trace: LengthsConfig =
            serde_saphyr::from_str("generator: trace\ntrace_file: a.csv\n").unwrap();
        assert_eq!(
            trace,
            LengthsConfig::Trace {
                trace_file: "a.csv".into(),
                prefill_scale_factor: 1.0,
                decode_scale_factor: 1.0
            }
        );
    }
}
