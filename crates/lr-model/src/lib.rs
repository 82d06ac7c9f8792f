//! Model directories and candle encoders for lightretriever.
//!
//! Nothing here touches PostgreSQL: the extension (and the worker, later) call into this crate,
//! and everything is tested with plain `cargo test`.

pub mod bert;
pub mod error;
pub mod model_dir;
pub mod pooling;
pub mod sparse;

pub use bert::BertEncoder;
pub use candle_core::Device;
pub use error::ModelError;
pub use model_dir::{ModelFamily, ModelInfo, ModelOptions};
pub use pooling::Pooling;
pub use sparse::SparseEncoder;
