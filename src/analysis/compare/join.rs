//! Aligning two runs request by request and token by token, on what both produced.
//!
//! A request is compared when both runs served it without error. Its TTFT and queue delay
//! are then compared as they are; its E2E and TPOT only if both sides produced every
//! requested token (a request that stopped early on one side has no comparable completion).
//! Tokens are compared at the (request, token index) pairs both sides emitted. Everything
//! left out is counted by reason, so the report can say how many rows were dropped and why.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::stats::{abs_rel_error_pct, signed_rel_error_pct};
use crate::io::records::{RequestMetricsRow, RequestStatus};
use crate::{Error, Result};

use super::runs::TokenTime;

/// The request-level metrics of one side, ns (`None` where undefined or not comparable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestMetrics {
    pub ttft_ns: Option<u64>,
    pub tpot_ns: Option<u64>,
    pub e2e_ns: Option<u64>,
    pub queue_delay_ns: Option<u64>,
}

/// One request both runs served.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPair {
    pub request_id: u64,
    /// Arrival in the real run.
    pub arrival_time_ns: u64,
    pub num_prefill_tokens: u32,
    pub num_decode_tokens: u32,
    pub real: RequestMetrics,
    pub sim: RequestMetrics,
}

/// Requests left out of the comparison, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct RequestDrops {
    /// In the real run only.
    pub only_in_real: usize,
    /// In the simulated run only.
    pub only_in_sim: usize,
    /// `status = error` in the real run (and not in the simulated one).
    pub error_in_real: usize,
    /// `status = error` in the simulated run (and not in the real one).
    pub error_in_sim: usize,
    /// `status = error` on both sides.
    pub error_in_both: usize,
    /// Compared for TTFT and queue delay, but one side produced fewer tokens than
    /// requested, so E2E and TPOT are not compared.
    pub incomplete: usize,
}

impl RequestDrops {
    /// Requests not compared at all.
    pub fn total_dropped(&self) -> usize {
        self.only_in_real
            + self.only_in_sim
            + self.error_in_real
            + self.error_in_sim
            + self.error_in_both
    }

    /// One sentence per non-zero reason.
    pub fn explanations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |n: usize, what: &str| {
            if n > 0 {
                out.push(format!("{n} request(s) {what}"));
            }
        };
        say(
            self.only_in_real,
            "appear only in the real run and are not compared.",
        );
        say(
            self.only_in_sim,
            "appear only in the simulated run and are not compared.",
        );
        say(
            self.error_in_real,
            "failed in the real run (status = error) and are not compared.",
        );
        say(
            self.error_in_sim,
            "failed or did not finish in the simulated run and are not compared.",
        );
        say(
            self.error_in_both,
            "failed on both sides and are not compared.",
        );
        say(
            self.incomplete,
            "stopped early on at least one side: TTFT and queue delay are compared, E2E and TPOT are not.",
        );
        out
    }
}

/// The result of [`join_requests`].
#[derive(Debug, Clone, PartialEq)]
pub struct RequestJoin {
    /// Ascending `request_id`.
    pub pairs: Vec<RequestPair>,
    pub drops: RequestDrops,
}

fn index_by_id<'a>(
    side: &str,
    rows: &'a [RequestMetricsRow],
) -> Result<BTreeMap<u64, &'a RequestMetricsRow>> {
    let mut map = BTreeMap::new();
    for r in rows {
        if map.insert(r.request_id, r).is_some() {
            return Err(Error::InvalidInput(format!(
                "the {side} run has request_id {} twice",
                r.request_id
            )));
        }
    }
    Ok(map)
}

fn complete(r: &RequestMetricsRow) -> bool {
    r.num_decode_tokens_actual == r.num_decode_tokens
}

fn metrics(r: &RequestMetricsRow, comparable_completion: bool) -> RequestMetrics {
    RequestMetrics {
        ttft_ns: r.ttft_ns,
        tpot_ns: r.tpot_ns.filter(|_| comparable_completion),
        e2e_ns: r.e2e_ns.filter(|_| comparable_completion),
        queue_delay_ns: r.queue_delay_ns,
    }
}

/// Joins two runs' request rows on `request_id`.
///
/// Errors (`Mismatch`) if a request has different prompt or output lengths on the two
/// sides — the runs then come from different workloads — and (`InvalidInput`) if a run
/// repeats a request id.
pub fn join_requests(real: &[RequestMetricsRow], sim: &[RequestMetricsRow]) -> Result<RequestJoin> {
    let real_by_id = index_by_id("real", real)?;
    let sim_by_id = index_by_id("simulated", sim)?;
    let mut drops = RequestDrops::default();
    let mut pairs = Vec::new();
    let mut mismatched = Vec::new();
    for (&id, r) in &real_by_id {
        let Some(s) = sim_by_id.get(&id) else {
            drops.only_in_real += 1;
            continue;
        };
        if (r.num_prefill_tokens, r.num_decode_tokens)
            != (s.num_prefill_tokens, s.num_decode_tokens)
        {
            mismatched.push(format!(
                "request {id}: {}+{} tokens (real) vs {}+{} (sim)",
                r.num_prefill_tokens,
                r.num_decode_tokens,
                s.num_prefill_tokens,
                s.num_decode_tokens
            ));
            continue;
        }
        match (r.status, s.status) {
            (RequestStatus::Error, RequestStatus::Error) => drops.error_in_both += 1,
            (RequestStatus::Error, _) => drops.error_in_real += 1,
            (_, RequestStatus::Error) => drops.error_in_sim += 1,
            _ => {
                let both_complete = complete(r) && complete(s);
                if !both_complete {
                    drops.incomplete += 1;
                }
                pairs.push(RequestPair {
                    request_id: id,
                    arrival_time_ns: r.arrival_time_ns,
                    num_prefill_tokens: r.num_prefill_tokens,
                    num_decode_tokens: r.num_decode_tokens,
                    real: metrics(r, both_complete),
                    sim: metrics(s, both_complete),
                });
            }
        }
    }
    if !mismatched.is_empty() {
        return Err(Error::Mismatch(format!(
            "{} request(s) have different prompt/output lengths in the two runs, so they come from different workloads (first: {})",
            mismatched.len(),
            mismatched[0]
        )));
    }
    drops.only_in_sim = sim_by_id
        .keys()
        .filter(|id| !real_by_id.contains_key(id))
        .count();
    if pairs.is_empty() {
        return Err(Error::Mismatch(format!(
            "no request was served by both runs ({} real, {} simulated rows): nothing to compare",
            real.len(),
            sim.len()
        )));
    }
    Ok(RequestJoin { pairs, drops })
}

/// One token both runs emitted (a row of `token_comparison.csv`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenPair {
    pub request_id: u64,
    pub token_index: u64,
    pub real_token_time_ns: u64,
    pub sim_token_time_ns: u64,
    pub token_time_diff_ns: i64,
    pub real_token_latency_ns: u64,
    pub sim_token_latency_ns: u64,
    pub token_latency_err_pct: Option<f64>,
}

/// Tokens left out of the token comparison, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TokenDrops {
    /// Tokens of requests that are not compared at all (see [`RequestDrops`]).
    pub of_dropped_requests: usize,
    /// Tokens only the real run emitted for a compared request (it produced more).
    pub only_in_real: usize,
    /// Tokens only the simulated run emitted for a compared request.
    pub only_in_sim: usize,
}

impl TokenDrops {
    /// One sentence per non-zero reason.
    pub fn explanations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.of_dropped_requests > 0 {
            out.push(format!(
                "{} token(s) belong to requests that are not compared.",
                self.of_dropped_requests
            ));
        }
        if self.only_in_real + self.only_in_sim > 0 {
            out.push(format!(
                "{} token(s) were emitted by only one side of a compared request ({} real only, {} simulated only).",
                self.only_in_real + self.only_in_sim,
                self.only_in_real,
                self.only_in_sim
            ));
        }
        out
    }
}

/// The result of [`join_tokens`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenJoin {
    /// Ordered by request, then token index.
    pub pairs: Vec<TokenPair>,
    pub drops: TokenDrops,
}

impl TokenJoin {
    /// The ITL pairs `(real_ms, sim_ms)`: every compared token but token 0.
    pub fn itl_pairs_ms(&self) -> (Vec<f64>, Vec<f64>) {
        self.pairs
            .iter()
            .filter(|p| p.token_index > 0)
            .map(|p| {
                (
                    p.real_token_latency_ns as f64 / 1e6,
                    p.sim_token_latency_ns as f64 / 1e6,
                )
            })
            .unzip()
    }
}

/// Joins token rows of the compared requests on (request, token index).
pub fn join_tokens(
    requests: &RequestJoin,
    real: &BTreeMap<u64, Vec<TokenTime>>,
    sim: &BTreeMap<u64, Vec<TokenTime>>,
) -> Result<TokenJoin> {
    let compared: std::collections::BTreeSet<u64> =
        requests.pairs.iter().map(|p| p.request_id).collect();
    let mut drops = TokenDrops::default();
    for side in [real, sim] {
        drops.of_dropped_requests += side
            .iter()
            .filter(|(id, _)| !compared.contains(id))
            .map(|(_, tokens)| tokens.len())
            .sum::<usize>();
    }
    let empty = Vec::new();
    let mut pairs = Vec::new();
    for &id in &compared {
        let r = real.get(&id).unwrap_or(&empty);
        let s = sim.get(&id).unwrap_or(&empty);
        for (side, tokens) in [("real", r), ("simulated", s)] {
            if let Some((k, t)) = tokens
                .iter()
                .enumerate()
                .find(|(k, t)| t.token_index as usize != *k)
            {
                return Err(Error::InvalidInput(format!(
                    "the {side} run's tokens of request {id} are not contiguous from 0 (position {k} has token_index {})",
                    t.token_index
                )));
            }
        }
        let common = r.len().min(s.len());
        drops.only_in_real += r.len() - common;
        drops.only_in_sim += s.len() - common;
        for (a, b) in r.iter().zip(s).take(common) {
            let err = if a.token_index == 0 {
                None
            } else {
                signed_rel_error_pct(b.token_latency_ns as f64, a.token_latency_ns as f64)?
            };
            pairs.push(TokenPair {
                request_id: id,
                token_index: u64::from(a.token_index),
                real_token_time_ns: a.token_time_ns,
                sim_token_time_ns: b.token_time_ns,
                token_time_diff_ns: b.token_time_ns as i64 - a.token_time_ns as i64,
                real_token_latency_ns: a.token_latency_ns,
                sim_token_latency_ns: b.token_latency_ns,
                token_latency_err_pct: err,
            });
        }
    }
    Ok(TokenJoin { pairs, drops })
}

/// A row of `request_comparison.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestComparisonRow {
    pub request_id: u64,
    pub arrival_time_ns: u64,
    pub num_prefill_tokens: u32,
    pub num_decode_tokens: u32,
    pub real_ttft_ns: Option<u64>,
    pub sim_ttft_ns: Option<u64>,
    pub ttft_err_pct: Option<f64>,
    pub ttft_abs_err_pct: Option<f64>,
    pub real_tpot_ns: Option<u64>,
    pub sim_tpot_ns: Option<u64>,
    pub tpot_err_pct: Option<f64>,
    pub tpot_abs_err_pct: Option<f64>,
    pub real_e2e_ns: Option<u64>,
    pub sim_e2e_ns: Option<u64>,
    pub e2e_err_pct: Option<f64>,
    pub e2e_abs_err_pct: Option<f64>,
    pub real_queue_delay_ns: Option<u64>,
    pub sim_queue_delay_ns: Option<u64>,
    pub queue_delay_err_pct: Option<f64>,
    pub queue_delay_abs_err_pct: Option<f64>,
}

/// `(signed, absolute)` relative error of a simulated value, where both exist and real ≠ 0.
fn errors(real: Option<u64>, sim: Option<u64>) -> Result<(Option<f64>, Option<f64>)> {
    match (real, sim) {
        (Some(r), Some(s)) => Ok((
            signed_rel_error_pct(s as f64, r as f64)?,
            abs_rel_error_pct(s as f64, r as f64)?,
        )),
        _ => Ok((None, None)),
    }
}

impl RequestComparisonRow {
    /// The CSV row of a compared request.
    pub fn of(p: &RequestPair) -> Result<Self> {
        let (ttft_err_pct, ttft_abs_err_pct) = errors(p.real.ttft_ns, p.sim.ttft_ns)?;
        let (tpot_err_pct, tpot_abs_err_pct) = errors(p.real.tpot_ns, p.sim.tpot_ns)?;
        let (e2e_err_pct, e2e_abs_err_pct) = errors(p.real.e2e_ns, p.sim.e2e_ns)?;
        let (queue_delay_err_pct, queue_delay_abs_err_pct) =
            errors(p.real.queue_delay_ns, p.sim.queue_delay_ns)?;
        Ok(RequestComparisonRow {
            request_id: p.request_id,
            arrival_time_ns: p.arrival_time_ns,
            num_prefill_tokens: p.num_prefill_tokens,
            num_decode_tokens: p.num_decode_tokens,
            real_ttft_ns: p.real.ttft_ns,
            sim_ttft_ns: p.sim.ttft_ns,
            ttft_err_pct,
            ttft_abs_err_pct,
            real_tpot_ns: p.real.tpot_ns,
            sim_tpot_ns: p.sim.tpot_ns,
            tpot_err_pct,
            tpot_abs_err_pct,
            real_e2e_ns: p.real.e2e_ns,
            sim_e2e_ns: p.sim.e2e_ns,
            e2e_err_pct,
            e2e_abs_err_pct,
            real_queue_delay_ns: p.real.queue_delay_ns,
            sim_queue_delay_ns: p.sim.queue_delay_ns,
            queue_delay_err_pct,
            queue_delay_abs_err_pct,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::records::RequestTimes;

    fn row(id: u64, arrival: u64, tokens: &[u64], wanted: u32) -> RequestMetricsRow {
        RequestMetricsRow::from_times(
            id,
            &RequestTimes {
                arrival_time_ns: arrival,
                scheduled_time_ns: Some(arrival + 5),
                token_times_ns: tokens.to_vec(),
            },
            8,
            wanted,
            0,
            0,
            "t",
            None,
        )
    }

    fn failed(id: u64) -> RequestMetricsRow {
        RequestMetricsRow::from_times(
            id,
            &RequestTimes::default(),
            8,
            3,
            0,
            0,
            "t",
            Some(("boom", "failed")),
        )
    }

    #[test]
    fn drops_are_counted_by_reason_and_early_stops_keep_ttft_only() {
        let real = vec![
            row(0, 0, &[100, 150, 200], 3),
            row(1, 10, &[110, 160, 210], 3),
            failed(2),
            row(3, 30, &[130, 180, 230], 3),
            failed(4),
            row(5, 50, &[150, 200], 3), // stopped early
            row(6, 60, &[160, 170, 180], 3),
        ];
        let sim = vec![
            row(0, 0, &[120, 160, 240], 3),
            row(1, 10, &[110, 160, 210], 3),
            row(2, 20, &[120, 170, 220], 3),
            failed(3),
            failed(4),
            row(5, 50, &[140, 190, 240], 3),
            row(7, 70, &[170, 180, 190], 3),
        ];
        let join = join_requests(&real, &sim).unwrap();
        assert_eq!(
            join.drops,
            RequestDrops {
                only_in_real: 1, // 6
                only_in_sim: 1,  // 7
                error_in_real: 1,
                error_in_sim: 1,
                error_in_both: 1,
                incomplete: 1,
            }
        );
        assert_eq!(join.drops.total_dropped(), 5);
        assert_eq!(join.drops.explanations().len(), 6);
        let ids: Vec<u64> = join.pairs.iter().map(|p| p.request_id).collect();
        assert_eq!(ids, [0, 1, 5]);

        // Request 0: TTFT 100 vs 120 (+20 %), TPOT 50 vs 60 (+20 %), E2E 200 vs 240 (+20 %).
        let r0 = RequestComparisonRow::of(&join.pairs[0]).unwrap();
        assert_eq!((r0.real_ttft_ns, r0.sim_ttft_ns), (Some(100), Some(120)));
        assert!((r0.ttft_err_pct.unwrap() - 20.0).abs() < 1e-12);
        assert_eq!((r0.real_tpot_ns, r0.sim_tpot_ns), (Some(50), Some(60)));
        assert_eq!((r0.real_e2e_ns, r0.sim_e2e_ns), (Some(200), Some(240)));
        assert!((r0.e2e_abs_err_pct.unwrap() - 20.0).abs() < 1e-12);
        assert_eq!(r0.queue_delay_err_pct, Some(0.0));

        // Request 5 stopped early in the real run: TTFT compared (100 vs 90, −10 %), no E2E/TPOT.
        let r5 = RequestComparisonRow::of(&join.pairs[2]).unwrap();
        assert!((r5.ttft_err_pct.unwrap() + 10.0).abs() < 1e-12);
        assert!((r5.ttft_abs_err_pct.unwrap() - 10.0).abs() < 1e-12);
        assert_eq!(
            (r5.real_e2e_ns, r5.sim_e2e_ns, r5.e2e_err_pct),
            (None, None, None)
        );
        assert_eq!((r5.real_tpot_ns, r5.sim_tpot_ns), (None, None));
    }

    #[test]
    fn different_lengths_mean_different_workloads() {
        let real = vec![row(0, 0, &[10, 20], 2)];
        let mut other = row(0, 0, &[10, 20, 30], 3);
        other.num_decode_tokens_actual = 3;
        let err = join_requests(&real, &[other]).unwrap_err();
        assert!(matches!(err, Error::Mismatch(_)), "{err}");
        assert!(err.to_string().contains("different workloads"), "{err}");

        let err = join_requests(&real, &[row(9, 0, &[10, 20], 2)]).unwrap_err();
        assert!(
            err.to_string().contains("no request was served by both"),
            "{err}"
        );
        let err = join_requests(&[row(0, 0, &[1], 1), row(0, 0, &[1], 1)], &real).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    fn tokens(id: u64, times: &[u64]) -> Vec<TokenTime> {
        let mut prev = None;
        times
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let tok = TokenTime {
                    request_id: id,
                    token_index: k as u32,
                    token_time_ns: t,
                    token_latency_ns: prev.map_or(0, |p| t - p),
                };
                prev = Some(t);
                tok
            })
            .collect()
    }

    #[test]
    fn tokens_align_on_what_both_sides_emitted() {
        let real_rows = vec![
            row(0, 0, &[100, 150, 200], 3),
            row(1, 0, &[100, 150], 3),
            failed(2),
        ];
        let sim_rows = vec![
            row(0, 0, &[120, 160, 240], 3),
            row(1, 0, &[90, 130, 170], 3),
            row(2, 0, &[5], 1),
        ];
        let mut sim_rows = sim_rows;
        sim_rows[2].num_decode_tokens = 3;
        let join = join_requests(&real_rows, &sim_rows).unwrap();
        let real: BTreeMap<u64, Vec<TokenTime>> = [
            (0, tokens(0, &[100, 150, 200])),
            (1, tokens(1, &[100, 150])),
        ]
        .into();
        let sim: BTreeMap<u64, Vec<TokenTime>> = [
            (0, tokens(0, &[120, 160, 240])),
            (1, tokens(1, &[90, 130, 170])),
            (2, tokens(2, &[5])),
        ]
        .into();
        let tj = join_tokens(&join, &real, &sim).unwrap();
        assert_eq!(tj.pairs.len(), 5);
        assert_eq!(
            tj.drops,
            TokenDrops {
                of_dropped_requests: 1,
                only_in_real: 0,
                only_in_sim: 1,
            }
        );
        let t = &tj.pairs[2]; // request 0, token 2: gap 50 real vs 80 sim
        assert_eq!((t.request_id, t.token_index), (0, 2));
        assert_eq!(t.token_time_diff_ns, 40);
        assert!((t.token_latency_err_pct.unwrap() - 60.0).abs() < 1e-12);
        assert_eq!(tj.pairs[0].token_latency_err_pct, None);
        assert_eq!(tj.pairs[3].token_time_diff_ns, -10);
        let (real_itl, sim_itl) = tj.itl_pairs_ms();
        assert_eq!(real_itl.len(), 3);
        assert!((sim_itl[1] - 80e-6).abs() < 1e-15);
    }
}
