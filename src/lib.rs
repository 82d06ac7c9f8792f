//! lightretriever: the PostgreSQL shell. Everything model-, table- and layout-related lives in
//! the pgrx-free crates under `crates/`; this crate holds only what must touch PostgreSQL.
//!
//! One folder per path, over the shared support at the top:
//! - `query/`     the query path, in the backend, no model: dense lookup (`lr_encode_query`),
//!                sparse counts (`lr_encode_query_sparse`), one-call search (`lr_search`)
//! - `document/`  full-model document encoding through the worker (`lr_encode_document(s)`,
//!                `lr_encode_document_sparse`)
//! - `auto/`      the document pipeline's SQL side: enable/disable, triggers, status views,
//!                following ALTER TABLE
//! - `worker/`    background workers: encoders (the inference process), the launcher, drain
//!                workers (the queues of one database each), bounds, the utility hook
//! - `rerank/`    the rerank path: backend → worker → LLM (PE-Rank: `lr_rerank`,
//!                `lr_rerank_embeddings`), passage embeddings found by one rule
//! - `tables/`    query tables built and fitted (`lr_build_query_table`, `lr_fit_query_table`,
//!                `lr_fit_sparse_query_weights`)
//! - `catalog/`   the model registry, the query-table catalog, files kept with their rows
//! - `inference.rs` where full models run: the worker's service, or this backend if allowed
//! - `security.rs`  running users' code with users' rights (table owners are untrusted)
//! - `pgvector.rs`  pgvector's `vector` / `sparsevec` as Rust values
//! - `columns.rs`   the columns of users' tables that calls read
//! - `databases.rs` which databases want a drain worker (files the launcher, the drain workers
//!                and every backend share)
//! - `spi.rs`, `guc.rs` (`lightretriever.*` settings), `error.rs` (SQLSTATEs and hints)

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod auto;
mod catalog;
mod columns;
mod databases;
mod document;
mod error;
mod foreign_guard;
mod guc;
mod inference;
#[cfg(any(test, feature = "pg_test"))]
mod llm_tests;
mod pgvector;
mod query;
mod rerank;
mod security;
mod spi;
mod statement;
mod tables;
mod worker;

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!(
    "../sql/auto_encoding.sql",
    name = "auto_encoding",
    requires = [
        "catalog",
        auto::status::lr_may_see,
        auto::status::lr_may_read,
        auto::status::lr_encoding_status_rows,
        auto::status::lr_failed_items_rows,
        auto::follow::lr_auto_encoding_follow
    ]
);
extension_sql_file!("../sql/progress.sql", name = "progress", requires = ["catalog", tables::progress::lr_progress_rows]);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    foreign_guard::install();
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
