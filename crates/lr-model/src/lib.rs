//! Models for lightretriever, below every use of them: model directories (`ModelInfo`), the
//! BERT-family encoder stacks (classic BERT, JinaBERT), decoder LLMs (Llama/Mistral/Qwen2/Qwen3
//! with KV cache), PEFT LoRA merge, devices, the pooling a model directory configures, and length-sorted batching. The LightRetriever encoders
//! (lr-encoders) and the reranker sit on this crate.
//!
//! Nothing here touches PostgreSQL; everything is tested with plain `cargo test`.

pub mod batching;
pub mod bert;
pub mod cpu_bert;
mod cpu_decoder;
pub mod decoder;
pub mod device;
pub mod dnnl;
pub mod error;
pub mod jina_bert;
pub mod kernels;
pub mod lora;
pub mod model_dir;
pub mod pooling;
mod skinny;

pub use batching::{in_length_batches, sequences_in_length_batches, DOCUMENT_BATCH};
pub use bert::{BertBackbone, BertStack, BertVariant};
pub use kernels::Kernels;
pub use cpu_bert::{CpuBert, Packed};
pub use candle_core::Device;
pub use decoder::{Decoder, DecoderConfig, DecoderKind, KvCache, PaddingSide};
pub use device::parse_device;
pub use error::{ModelError, Result};
pub use jina_bert::{JinaBert, JinaBertConfig};
pub use lora::{AdapterConfig, LoraAdapter};
pub use model_dir::{ModelFamily, ModelInfo, ModelOptions};
pub use pooling::Pooling;
