//! The interpolants of one bundle, fitted once and shared by `vidur_compat`, `native` and
//! cross-validation, so all three see the same function behind each op.

use super::interp::{Grid2d, Lookup, Series1d};
use super::PredictorConfig;
use crate::io::bundle::{Bundle, CpuOverheadTerm, Op, OpStatistic};
use crate::{Error, Result};

/// A bundle's op times — one statistic of each grid point, the median unless asked
/// otherwise — as interpolants (see the [module docs](super) for the rule).
///
/// Keys: token ops by `num_tokens` (`lm_head`/`sampler` by logits rows, `attn_kv_cache_save`
/// by tokens written = `max(prefill_chunk_size, batch_size)`, collectives by
/// `size / hidden / 2`); decode attention by (`batch_size`, `kv_cache_size`); prefill
/// attention by (`prefill_chunk_size²`, `kv_cache_size`); CPU terms by `batch_size`.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleCurves {
    token: [Option<Series1d>; Op::COUNT],
    decode: Grid2d,
    prefill: Grid2d,
    cpu: [Option<Series1d>; CpuOverheadTerm::COUNT],
}

impl BundleCurves {
    /// Fits `statistic` of every op the bundle has (CPU overhead terms: always the median).
    pub fn fit(bundle: &Bundle, statistic: OpStatistic) -> Result<BundleCurves> {
        let mut token: [Option<Series1d>; Op::COUNT] = Default::default();
        for op in bundle.mlp.ops() {
            token[op.index()] = bundle.mlp.points(op, statistic).and_then(Series1d::fit);
        }
        token[Op::AttnKvCacheSave.index()] =
            Series1d::fit(bundle.attention.kv_save_points(statistic));
        let n_embd = bundle.spec.n_embd;
        if let Some(t) = &bundle.all_reduce {
            token[Op::AllReduce.index()] = Series1d::fit(t.token_points(n_embd, statistic));
        }
        if let Some(t) = &bundle.send_recv {
            token[Op::SendRecv.index()] = Series1d::fit(t.token_points(n_embd, statistic));
        }
        let attention_path = bundle.location.attention_csv();
        let empty = |what: &str| Error::MissingInput {
            path: attention_path.clone(),
            msg: format!("empty grid: no {what} rows"),
            hint: None,
        };
        let decode = Grid2d::fit(bundle.attention.decode_points(statistic))
            .ok_or_else(|| empty("decode"))?;
        let prefill = Grid2d::fit(
            bundle
                .attention
                .prefill_points(statistic)
                .into_iter()
                .map(|(chunk, kv, y)| (chunk * chunk, kv, y)),
        )
        .ok_or_else(|| empty("prefill"))?;
        let mut cpu: [Option<Series1d>; CpuOverheadTerm::COUNT] = Default::default();
        if let Some(t) = &bundle.cpu_overheads {
            for term in CpuOverheadTerm::ALL {
                cpu[term.index()] = Series1d::fit(t.term_points(term));
            }
        }
        Ok(BundleCurves {
            token,
            decode,
            prefill,
            cpu,
        })
    }

    /// The 1-D interpolant of a token-keyed op, if the bundle has the op.
    pub fn series(&self, op: Op) -> Option<&Series1d> {
        self.token[op.index()].as_ref()
    }

    /// Decode attention: outer key `batch_size`, inner `kv_cache_size`.
    pub fn decode(&self) -> &Grid2d {
        &self.decode
    }

    /// Prefill attention: outer key `prefill_chunk_size²`, inner `kv_cache_size`.
    pub fn prefill(&self) -> &Grid2d {
        &self.prefill
    }

    /// A CPU-overhead term's interpolant over batch size, if the bundle has CPU overheads.
    pub fn cpu_series(&self, term: CpuOverheadTerm) -> Option<&Series1d> {
        self.cpu[term.index()].as_ref()
    }

    /// A token-keyed op at `x`; 0 (not extrapolated) when the bundle lacks the op, which is
    /// what Vidur does for a missing norm, add or kv-cache-save column.
    pub(crate) fn token_op(&self, op: Op, x: f64) -> Lookup {
        self.series(op).map_or(Lookup::ZERO, |s| s.eval(x))
    }

    pub(crate) fn attn_decode(&self, batch_size: f64, kv_cache_size: f64) -> Lookup {
        self.decode.eval(batch_size, kv_cache_size)
    }

    pub(crate) fn attn_prefill(&self, chunk: f64, kv_cache_size: f64) -> Lookup {
        self.prefill.eval(chunk * chunk, kv_cache_size)
    }

    /// A CPU term at `batch_size`; 0 when absent (callers check presence at construction).
    pub(crate) fn cpu_term(&self, term: CpuOverheadTerm, batch_size: f64) -> Lookup {
        self.cpu_series(term)
            .map_or(Lookup::ZERO, |s| s.eval(batch_size))
    }

    /// Checks the ops a configuration needs beyond the always-present compute ops.
    pub(crate) fn check_covers(&self, config: &PredictorConfig, bundle: &Bundle) -> Result<()> {
        let missing = |what: String| Error::MissingInput {
            path: bundle.location.root.clone(),
            msg: what,
            hint: None,
        };
        if config.tensor_parallel_size > 1 && self.series(Op::AllReduce).is_none() {
            return Err(missing(format!(
                "TP = {} needs all_reduce timings; the bundle has none",
                config.tensor_parallel_size
            )));
        }
        if config.pipeline_parallel_size > 1 && self.series(Op::SendRecv).is_none() {
            return Err(missing(format!(
                "PP = {} needs send_recv timings; load the bundle with LoadOptions::pipeline_stages = {}",
                config.pipeline_parallel_size, config.pipeline_parallel_size
            )));
        }
        if let Some(term) = CpuOverheadTerm::ALL
            .into_iter()
            .find(|t| config.cpu_overheads.contains(*t) && self.cpu_series(*t).is_none())
        {
            return Err(missing(format!(
                "CPU overhead `{term}` is charged but the bundle has no cpu_overheads.csv"
            )));
        }
        Ok(())
    }
}
