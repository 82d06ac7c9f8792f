//! lightretriever: the PostgreSQL shell. Everything model-, table- and layout-related lives in
//! the pgrx-free crates under `crates/`; this crate holds only what must touch PostgreSQL.
//!
//! One file per concern:
//! - `pgvector.rs`    pgvector's `vector` / `sparsevec` as Rust values
//! - `catalog.rs`     model registry (`lr_register_model`, `lr_drop_model`)
//! - `documents.rs`   full-model document encoding (`lr_encode_document(s)`)
//! - `query_table.rs` query tables: build (`lr_build_query_table`) and lookup (`lr_encode_query`)
//! - `search.rs`      one-call dense / sparse / hybrid search (`lr_search`)
//! - `corpus.rs`      a fit's corpus, read as the table's owner
//! - `sparse.rs`      sparse side (`lr_encode_document_sparse`, `lr_encode_query_sparse`)
//! - `inference.rs`   where full models run: the worker's service, or this backend if allowed
//! - `worker.rs`      background workers: inference process + auto-encoding queue drain
//! - `auto_encoding.rs` `lr_enable_auto_encoding` / `lr_disable_auto_encoding`, status views
//! - `security.rs`    running users' code with users' rights (table owners are untrusted)
//! - `spi.rs`         SPI helpers: quoting, names, subtransactions
//! - `guc.rs`         `lightretriever.*` settings
//! - `error.rs`       SQL errors with SQLSTATE and hints

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod auto_encoding;
mod catalog;
mod corpus;
mod documents;
mod error;
mod guc;
mod inference;
#[cfg(any(test, feature = "pg_test"))]
mod llm_tests;
mod pgvector;
mod query_table;
mod search;
mod security;
mod sparse;
mod spi;
mod worker;

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!(
    "../sql/auto_encoding.sql",
    name = "auto_encoding",
    requires = [
        "catalog",
        auto_encoding::lr_may_see,
        auto_encoding::lr_may_read,
        auto_encoding::lr_encoding_status_rows,
        auto_encoding::lr_failed_items_rows,
        auto_encoding::lr_auto_encoding_follow
    ]
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    worker::register();
}

#[cfg(any(test, feature = "pg_test"))]
mod test_support;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The #[pg_test] cluster preloads nothing: models run in the test backend.
        vec!["lightretriever.allow_backend_models = on"]
    }
}
