//! LightRetriever query tables: the on-disk format, memory mapping, and the lookup encoder.
//!
//! A query table holds one row per vocabulary id: the vector the full model gives that token
//! encoded alone behind an instruction (or a row fitted to it). A query vector is the
//! L2-normalised mean of its tokens' rows, weighted by optional per-row weights such as idf —
//! no model weights, no inference. Tables are written once (streamed, so that a 128k × 4096
//! table never sits in memory) and mapped read-only by every backend, so all
//! connections share one copy in the page cache.
//!
//! Mappings are guarded against SIGBUS (a file truncated while mapped), which would otherwise
//! kill a PostgreSQL backend and with it restart every connection of the cluster: see
//! `guard.rs`, [`QueryTable::is_damaged`] and [`QueryTable::check_unchanged`].

pub mod cache;
mod files;
mod format;
mod guard;
mod lookup;
mod sparse;

pub use format::{
    fingerprint_file, fnv1a64_words, Dtype, Expected, QueryTable, TableError, TableMeta, TableWriter, FLAG_WEIGHTS,
    FORMAT_VERSION, HEADER_ALIGN, MAGIC,
};
pub use guard::MAX_MAPPED_TABLES;
pub use lookup::{LookupEncoder, LookupError, MAX_QUERY_TOKENS};
pub use files::{build_stamp, table_file, TABLE_DIR};
pub use sparse::SparseQueryEncoder;
