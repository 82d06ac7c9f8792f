//! LightRetriever's encoders on lr-model's models: dense document vectors (BERT pooling, decoder
//! last-token), query-table rows (each id alone, behind the instruction prompt for decoders),
//! sparse document vectors (a BERT masked-LM head, SPLADE; a decoder's LM head), and one
//! dispatch over the families (`DocumentEncoder`, `SparseDocumentEncoder`).
//!
//! Nothing here touches PostgreSQL; everything is tested with plain `cargo test`.

pub mod bert;
pub mod encoders;
pub mod llm;
pub mod sparse;

pub use bert::BertEncoder;
pub use encoders::{table_input, DocumentEncoder, SparseDocumentEncoder};
pub use llm::LlmEncoder;
pub use sparse::SparseEncoder;
