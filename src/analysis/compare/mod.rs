//! The `compare` stage: how close is a simulated run to a real one, and where does the gap
//! come from?
//!
//! The stage is a pipeline of small, separately tested steps:
//!
//! 1. [`runs`] loads each side into one in-memory shape ([`runs::RunData`]) — our own
//!    schema-v1 run dirs, or through [`interop`] a Vidur output directory or a vLLM
//!    `benchmark_serving` result JSON — and refuses pairs that cannot be compared
//!    (different workload, model or KV pool);
//! 2. [`join`] aligns the two runs request by request and token by token on what both
//!    produced, counting every row it drops and why;
//! 3. [`statistics`] summarises each metric on both sides (percentiles, paired errors,
//!    Kolmogorov–Smirnov, Wasserstein-1, throughput), and [`verdict`] sets the simulator
//!    against every real run: pooled values, the real runs' band, bootstrap intervals, the
//!    noise ratio and a verdict per statistic (with one real run, the noise is unmeasured);
//! 4. [`attribution`] splits the gap into execution-time prediction error (by op class),
//!    CPU-overhead error and scheduling divergence;
//! 5. [`figures`] and [`report`] turn all of it into PNG/SVG figures, `summary.json`,
//!    `report.md` and a self-contained `report.html` that opens with a verdict;
//! 6. [`crate::stages::compare`] wires it to the config and the run directories.
//!
//! Metric definitions (DESIGN.md; printed in every report): TTFT = first token − arrival;
//! TPOT = (completion − first token) / (output tokens − 1), undefined for one token; ITL =
//! each gap between consecutive tokens of a request, token 0 excluded; E2E = completion −
//! arrival; queue delay = first scheduled − arrival. Percentiles interpolate linearly.

pub mod attribution;
pub mod figures;
pub mod interop;
pub mod join;
pub mod report;
pub mod runs;
pub mod statistics;
pub mod verdict;

/// The metric definitions every report prints, `(metric, definition)`.
pub const DEFINITIONS: [(&str, &str); 6] = [
    ("TTFT", "time to first token = first token time − arrival time"),
    (
        "TPOT",
        "time per output token = (completion − first token) / (output tokens − 1); undefined for a one-token request (vLLM's definition; Vidur divides by all output tokens)",
    ),
    (
        "ITL",
        "inter-token latency = each gap between consecutive tokens of a request; token 0 is excluded (its latency is the TTFT)",
    ),
    ("E2E", "end-to-end latency = completion time − arrival time"),
    (
        "queue delay",
        "first time the request was scheduled into a batch − arrival time",
    ),
    (
        "percentiles",
        "linear interpolation between order statistics (numpy/pandas default); relative error = 100 · (sim − real) / real, undefined (and left out) where real = 0",
    ),
];
