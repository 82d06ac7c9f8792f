//! lightretriever: the PostgreSQL shell. Everything model-, table- and layout-related lives in
//! the pgrx-free crates under `crates/`; this crate holds only what must touch PostgreSQL.
//!
//! One file per concern:
//! - `pgvector.rs`    pgvector's `vector` / `sparsevec` as Rust values
//! - `catalog.rs`     model registry (`lr_register_model`, `lr_drop_model`)
//! - `documents.rs`   full-model document encoding (`lr_encode_document(s)`)
//! - `query_table.rs` query tables: build (`lr_build_query_table`) and lookup (`lr_encode_query`)
//! - `search.rs`      one-call dense / sparse / hybrid search (`lr_search`)
//! - `sparse.rs`      sparse side (`lr_encode_document_sparse`, `lr_encode_query_sparse`)
//! - `guc.rs`         `lightretriever.*` settings
//! - `error.rs`       SQL errors with SQLSTATE and hints

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod catalog;
mod documents;
mod error;
mod guc;
#[cfg(any(test, feature = "pg_test"))]
mod llm_tests;
mod pgvector;
mod query_table;
mod search;
mod sparse;

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
}

#[cfg(any(test, feature = "pg_test"))]
mod test_support;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
