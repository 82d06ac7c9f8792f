//! Query tables, built and fitted (superuser calls that run the full model through the worker):
//! the untrained table, the fit to the document encoder on a user corpus, and the sparse query
//! side's fitted weights. Served by `query/`.

mod build;
mod corpus;
mod fit;
mod progress;
mod sparse_weights;
#[cfg(any(test, feature = "pg_test"))]
mod tests;
