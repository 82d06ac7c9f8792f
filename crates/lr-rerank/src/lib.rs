//! PE-Rank (arXiv 2406.14848) listwise reranking on lightretriever's decoder: each candidate
//! passage enters the LLM as ONE token, its embedding through the `mlp2x_gelu` projector, and
//! greedy decoding constrained to the candidates yields the ranking.
//!
//! - [`checkpoint`]: recognising and validating a PE-Rank checkpoint directory;
//! - [`projector`]: Linear → exact-erf GELU → Linear;
//! - [`prompt`]: the public code's ranking message through the checkpoint's chat template;
//! - [`decode`]: constrained greedy decoding with the KV cache, batched across windows, and the
//!   same by full recomputation for checking;
//! - [`windows`]: the sliding-window rule over a first-stage list.
//!
//! Nothing here touches PostgreSQL; everything is tested with plain `cargo test`.

pub mod checkpoint;
pub mod decode;
pub mod projector;
pub mod prompt;
pub mod windows;

pub use checkpoint::{is_reranker_config, RerankerCheckpoint, PLACEHOLDER};
pub use decode::{Reranker, Window, WindowRanking};
pub use projector::Projector;
pub use prompt::{Mode, Prompt, PromptBuilder};
