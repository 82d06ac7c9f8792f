//! Sparse document encoding by a masked-LM head (`lr_encode_document_sparse`, and
//! `lr_encode_documents_sparse` for arrays), run by the encoder worker.


use pgrx::datum::Array;
use pgrx::prelude::*;

use crate::error::{raise, Code};
use crate::guc::resolve_sparse_model;
use crate::catalog::require_lm_head;
use crate::pgvector::{to_sparsevec, SparseVec};

/// Encodes one document with a masked-LM model's head: a weight per vocabulary id.
/// NULL text gives NULL; NULL model means `lightretriever.default_sparse_model`.
#[pg_extern(stable, parallel_safe, cost = 400000)]
fn lr_encode_document_sparse(doc: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<SparseVec> {
    let doc = doc?;
    encode(&[doc], model, false).pop()
}

/// Encodes many documents in batches (as `lr_encode_documents` does): one row per input, in
/// input order (use `WITH ORDINALITY` to pair them), NULL for a NULL element.
#[pg_extern(stable, parallel_safe, cost = 400000)]
fn lr_encode_documents_sparse<'a>(
    docs: Option<Array<'a, &'a str>>,
    model: default!(Option<&'a str>, "NULL"),
) -> SetOfIterator<'a, Option<SparseVec>> {
    let Some(docs) = docs else {
        return SetOfIterator::empty();
    };
    SetOfIterator::new(super::per_element(docs, |texts| encode(texts, model, true)))
}

/// The sparse vectors of `texts` through the worker, every one checked against sparsevec's
/// limit (an error, never a silent cut); `numbered` names the offending element in the message.
fn encode(texts: &[&str], model: Option<&str>, numbered: bool) -> Vec<SparseVec> {
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    require_lm_head(&name, &info);
    let all = crate::inference::sparse(&name, &info, texts.iter().map(|t| t.to_string()).collect());
    all.into_iter()
        .enumerate()
        .map(|(i, pairs)| {
            if lr_vector::check_non_zeros(pairs.len()).is_err() {
                let which = if numbered { format!("document {} of the array", i + 1) } else { "this document".into() };
                raise(
                    Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                    format!(
                        "lightretriever: the sparse vector of {which} has {} non-zero weights; pgvector's sparsevec holds at most {}",
                        pairs.len(),
                        lr_vector::SPARSEVEC_MAX_NNZ
                    ),
                    Some(&format!(
                        "Re-register model \"{name}\" with options {{\"sparse_top_k\": N}} (N <= {}) to keep each document's N largest weights.",
                        lr_vector::SPARSEVEC_MAX_NNZ
                    )),
                );
            }
            to_sparsevec(info.vocab_size, pairs)
        })
        .collect()
}
