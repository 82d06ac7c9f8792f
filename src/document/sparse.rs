//! Sparse document encoding by a masked-LM head (`lr_encode_document_sparse`), run by the
//! encoder worker.


use pgrx::prelude::*;

use crate::error::{raise, Code};
use crate::guc::resolve_sparse_model;
use crate::catalog::require_lm_head;
use crate::pgvector::{to_sparsevec, SparseVec};

/// Encodes one document with a masked-LM model's head: a weight per vocabulary id.
/// NULL text gives NULL; NULL model means `lightretriever.default_sparse_model`.
#[pg_extern(stable, parallel_safe)]
fn lr_encode_document_sparse(doc: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<SparseVec> {
    let doc = doc?;
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    require_lm_head(&name, &info);
    let pairs = crate::inference::sparse(&name, &info, vec![doc.to_owned()]).pop().unwrap_or_default();
    if lr_vector::check_non_zeros(pairs.len()).is_err() {
        raise(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "lightretriever: the sparse vector of this document has {} non-zero weights; pgvector's sparsevec holds at most {}",
                pairs.len(),
                lr_vector::SPARSEVEC_MAX_NNZ
            ),
            Some(&format!(
                "Re-register model \"{name}\" with options {{\"sparse_top_k\": N}} (N <= {}) to keep each document's N largest weights.",
                lr_vector::SPARSEVEC_MAX_NNZ
            )),
        );
    }
    Some(to_sparsevec(info.vocab_size, pairs))
}
