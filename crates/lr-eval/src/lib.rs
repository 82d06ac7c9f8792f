//! Retrieval quality measurement, no Python: BEIR-layout collections, BM25, exact in-memory
//! dot-product search, min-max hybrid fusion, nDCG@10 and Recall@100. The `lr-eval` binary runs
//! every query encoder of the extension over one collection and prints the comparison.

pub mod beir;
pub mod bm25;
pub mod metrics;
pub mod search;
pub mod svg;
pub mod systems;

pub use beir::{Collection, Document};
pub use bm25::Bm25;
pub use metrics::{min_max_fuse, ndcg_at_k, recall_at_k, Qrels, Run, evaluate, Scores};
