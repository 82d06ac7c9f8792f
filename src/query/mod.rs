//! The query path, inside the backend with no model: dense lookup (`lr_encode_query`), sparse
//! token counts (`lr_encode_query_sparse`), and one-call search over a table (`lr_search`).

pub mod dense;
mod search;
pub mod sparse;
#[cfg(any(test, feature = "pg_test"))]
mod sparse_tests;
