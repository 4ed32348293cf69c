//! ferrovs configuration: TOML text -> validated, immutable [`Config`].
pub mod model;
pub use model::*;
