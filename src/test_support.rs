//! Helpers for the `#[pg_test]`s (the shared ones come from `lr-testkit`).

pub use lr_testkit::{assert_matches, floats, reference};
use pgrx::prelude::*;

pub const DENSE_MODEL: &str = "minilm";

pub fn dense_model_dir() -> String {
    lr_testkit::dense_model_dir().to_string_lossy().into_owned()
}

/// Registers the real all-MiniLM-L6-v2 as `minilm` (inside the test's transaction).
pub fn register_dense_model() {
    Spi::run_with_args(
        "SELECT lightretriever.lr_register_model($1, $2)",
        &[DENSE_MODEL.into(), dense_model_dir().into()],
    )
    .unwrap();
}

pub const SPARSE_MODEL: &str = "splade";

/// Registers the real SPLADE-tiny (BertForMaskedLM) as `splade`.
pub fn register_sparse_model() {
    Spi::run_with_args(
        "SELECT lightretriever.lr_register_model($1, $2)",
        &[SPARSE_MODEL.into(), lr_testkit::sparse_model_dir().to_string_lossy().into_owned().into()],
    )
    .unwrap();
}

/// The message of the error `sql` raises (run in a subtransaction, so the test goes on).
pub fn error_of(sql: &str) -> String {
    match crate::spi::in_subtransaction(|| Spi::run(sql)) {
        Ok(Ok(())) => panic!("expected an error from {sql}"),
        Ok(Err(e)) => e.to_string(),
        Err(message) => message,
    }
}
