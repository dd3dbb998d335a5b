//! The real serving engine: Qwen3 on candle, its KV cache, and (later) the engine loop,
//! arrival driver and recorders.

pub mod model;
