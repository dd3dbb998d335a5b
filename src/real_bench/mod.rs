//! The real serving engine: Qwen3 on candle with a paged KV cache ([`model`]), the
//! continuous-batching engine loop under open-loop arrivals ([`engine`]), and the operator
//! profiler that times the same model into a Vidur bundle ([`profiler`]). With the `cuda`
//! feature the engine runs on an NVIDIA GPU, timed with CUDA events (`cuda`, docs/gpu.md).

#[cfg(any(feature = "cuda", feature = "cuda-check"))]
pub mod cuda;
pub mod device_probe;
pub mod engine;
pub mod huge_pages;
pub mod model;
pub mod profiler;
pub mod speed_timeline;
pub mod threads;
