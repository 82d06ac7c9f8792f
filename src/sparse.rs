//! The sparse side of LightRetriever: documents by a masked-LM head (SPLADE-style
//! `max_pos log(1 + relu(logits))`), queries by raw token counts — no model on the query path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use lr_model::{ModelInfo, SparseEncoder};
use lr_table::MAX_QUERY_TOKENS;
use lr_vector::SparseVector;
use pgrx::prelude::*;

use crate::documents::cached_model;
use crate::error::{raise, Code, OrRaise};
use crate::guc::resolve_sparse_model;
use crate::pgvector::SparseVec;

thread_local! {
    static SPARSE_ENCODERS: RefCell<HashMap<String, Rc<SparseEncoder>>> = RefCell::new(HashMap::new());
    /// Query tokenizers by model path: the query side needs only the vocabulary.
    static TOKENIZERS: RefCell<HashMap<String, Rc<lr_tokenizer::Tokenizer>>> = RefCell::new(HashMap::new());
}

pub fn forget_sparse_encoder(name: &str) {
    SPARSE_ENCODERS.with(|m| m.borrow_mut().remove(name));
}

fn sparse_encoder(name: &str, info: &ModelInfo) -> Rc<SparseEncoder> {
    cached_model(&SPARSE_ENCODERS, name, info, SparseEncoder::info, SparseEncoder::load)
}

/// A sparse vector over the model's vocabulary, or an error naming the cause (pgvector's
/// 16,000 non-zero limit included: never a silent cut).
fn to_sparsevec(dim: usize, pairs: Vec<(u32, f32)>) -> SparseVec {
    SparseVec(SparseVector::from_pairs(dim, pairs).or_raise(Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED))
}

/// Encodes one document with a masked-LM model's head: a weight per vocabulary id.
/// NULL text gives NULL; NULL model means `lightretriever.default_sparse_model`.
#[pg_extern(stable, parallel_safe)]
fn lr_encode_document_sparse(doc: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<SparseVec> {
    let doc = doc?;
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    if !info.has_lm_head {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("lightretriever: model \"{name}\" has no masked-LM head, so it cannot encode sparse vectors"),
            Some("Register a SPLADE-style BertForMaskedLM model (the default is splade-tiny) and pass it as model."),
        );
    }
    let encoder = sparse_encoder(&name, &info);
    let pairs = encoder.encode(&[doc]).or_raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION).pop().unwrap_or_default();
    Some(to_sparsevec(info.vocab_size, pairs))
}

/// The sparse query side: raw counts of the query's token ids (no special tokens, at most
/// 512 tokens, as on the dense lookup path). No model weights are read.
#[pg_extern(stable, parallel_safe)]
fn lr_encode_query_sparse(query: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<SparseVec> {
    let query = query?;
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    let key = info.path.to_string_lossy().into_owned();
    let tokenizer = match TOKENIZERS.with(|m| m.borrow().get(&key).cloned()) {
        Some(t) => t,
        None => {
            let t = Rc::new(
                lr_tokenizer::load_tokenizer(&Path::new(&key).join("tokenizer.json"), None)
                    .or_raise(Code::ERRCODE_IO_ERROR),
            );
            TOKENIZERS.with(|m| m.borrow_mut().insert(key, t.clone()));
            t
        }
    };
    let mut ids = lr_tokenizer::plain_ids(&tokenizer, query).or_raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
    ids.truncate(MAX_QUERY_TOKENS);
    if ids.is_empty() {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: the query has no tokens",
            Some("Pass a query with at least one word."),
        );
    }
    Some(to_sparsevec(info.vocab_size, lr_tokenizer::counts_of(&ids)))
}
