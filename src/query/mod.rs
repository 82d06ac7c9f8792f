//! The query path, inside the backend with no model: dense lookup (`lr_encode_query`), sparse
//! token counts (`lr_encode_query_sparse`), and one-call search over a table (`lr_search`).

pub mod dense;
mod search;
pub mod sparse;
#[cfg(any(test, feature = "pg_test"))]
mod sparse_tests;

use std::path::Path;

use crate::error::{Code, OrRaise};

/// The query tokenizer of `tokenizer.json` at `path`, holding as little of this backend's memory
/// as it can: the Hugging Face tokenizer is parsed (to check the fast path against it) and let go
/// when the fast path covers the model (`QueryTokenizer::from_file`), and the heap it used is
/// given back to the system at once — 32 backends then share the query table's pages and keep
/// only the fast path's vocabulary each.
pub(crate) fn query_tokenizer(path: &Path) -> lr_tokenizer::QueryTokenizer {
    let tokenizer = lr_tokenizer::QueryTokenizer::from_file(path).or_raise(Code::ERRCODE_IO_ERROR);
    // SAFETY: glibc's malloc_trim only returns free pages of malloc's arenas to the system.
    unsafe { libc::malloc_trim(0) };
    tokenizer
}
