//! Model directories and candle encoders for lightretriever.
//!
//! Nothing here touches PostgreSQL: the extension (and the worker, later) call into this crate,
//! and everything is tested with plain `cargo test`.

pub mod bert;
pub mod decoder;
pub mod device;
pub mod encoders;
pub mod error;
pub mod llm;
pub mod lora;
pub mod model_dir;
pub mod pooling;
pub mod sparse;

pub use bert::BertEncoder;
pub use candle_core::Device;
pub use decoder::{Decoder, DecoderConfig, DecoderKind, KvCache, PaddingSide};
pub use device::parse_device;
pub use encoders::{table_input, DocumentEncoder, SparseDocumentEncoder};
pub use error::ModelError;
pub use llm::LlmEncoder;
pub use lora::{AdapterConfig, LoraAdapter};
pub use model_dir::{ModelFamily, ModelInfo, ModelOptions};
pub use pooling::Pooling;
pub use sparse::SparseEncoder;
