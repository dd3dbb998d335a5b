//! The real serving engine: Qwen3 on candle with a paged KV cache ([`model`]), the
//! continuous-batching engine loop under open-loop arrivals ([`engine`]), and the `real`
//! stage that runs it on a workload and records every token ([`stage`]).

pub mod engine;
pub mod model;
pub mod stage;
pub mod threads;
