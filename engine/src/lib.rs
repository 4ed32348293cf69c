//! ferrovs engine.
pub mod port;
