//! `vidur_compat`: Vidur's batch formula over interpolants of the profiled medians.
//!
//! Vidur fits a random forest per op and tabulates it over its prediction grid; we fit a
//! piecewise-linear interpolant instead (see [`super::interp`]), which reproduces every
//! profiled median exactly and needs no training. Everything else — key rounding, the
//! sum-of-squares prefill aggregation, the GQA batching overheads, TP/PP communication,
//! layer sum, CPU overheads — is Vidur's formula ([`super::vidur_formula`]).

use super::curves::BundleCurves;
use super::interp::Lookup;
use super::vidur_formula::{self, VidurLookups};
use super::{
    BatchPrediction, ExecutionTimePredictor, IterationContext, PredictorConfig, RequestShape,
};
use crate::io::bundle::{Bundle, CpuOverheadTerm, Op, OpStatistic};
use crate::vidur_ext::simulator::ClockKind;
use crate::Result;

/// Vidur's formula with interpolated op times.
#[derive(Clone, Debug)]
pub struct VidurCompatPredictor {
    config: PredictorConfig,
    curves: BundleCurves,
}

impl VidurCompatPredictor {
    /// Fits the bundle's ops. Fails when the bundle is for another model or TP degree, or
    /// lacks what the configuration needs (collectives for TP/PP > 1, CPU overheads when
    /// any term is charged).
    pub fn new(bundle: &Bundle, config: PredictorConfig) -> Result<VidurCompatPredictor> {
        config.validate()?;
        config.check_bundle(&bundle.spec)?;
        // Vidur fits medians.
        let curves = BundleCurves::fit(bundle, OpStatistic::Median)?;
        curves.check_covers(&config, bundle)?;
        Ok(VidurCompatPredictor { config, curves })
    }

    /// The fitted interpolants.
    pub fn curves(&self) -> &BundleCurves {
        &self.curves
    }

    /// The configuration.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }
}

impl VidurLookups for BundleCurves {
    fn token_op(&self, op: Op, num_tokens: u64) -> Lookup {
        BundleCurves::token_op(self, op, num_tokens as f64)
    }

    fn attn_decode(&self, batch_size: u64, kv_cache_size: u64) -> Lookup {
        BundleCurves::attn_decode(self, batch_size as f64, kv_cache_size as f64)
    }

    fn attn_prefill(&self, kv_cache_size: u64, chunk: u64) -> Lookup {
        BundleCurves::attn_prefill(self, chunk as f64, kv_cache_size as f64)
    }

    fn cpu(&self, term: CpuOverheadTerm, batch_size: u64) -> Lookup {
        self.cpu_term(term, batch_size as f64)
    }
}

impl ExecutionTimePredictor for VidurCompatPredictor {
    fn name(&self) -> &'static str {
        "vidur_compat"
    }

    fn predict_with(&self, batch: &[RequestShape], ctx: &IterationContext) -> BatchPrediction {
        vidur_formula::predict(&self.curves, &self.config, batch, ctx.pipeline_stage)
    }

    fn clock(&self) -> ClockKind {
        ClockKind::VidurSeconds
    }
}
