//! The sparse side of LightRetriever: documents by a masked-LM head (SPLADE-style
//! `max_pos log(1 + relu(logits))`), queries by raw token counts — no model on the query path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use lr_table::MAX_QUERY_TOKENS;
use lr_vector::SparseVector;
use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::guc::resolve_sparse_model;
use crate::pgvector::SparseVec;

thread_local! {
    /// Query tokenizers by model path: the query side needs only the vocabulary.
    static TOKENIZERS: RefCell<HashMap<String, Rc<lr_tokenizer::QueryTokenizer>>> = RefCell::new(HashMap::new());
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
    let pairs = crate::inference::sparse(&name, &info, vec![doc.to_owned()]).pop().unwrap_or_default();
    if pairs.len() > lr_vector::SPARSEVEC_MAX_NNZ {
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

/// The sparse query side: raw counts of the query's token ids (no special tokens, at most
/// 512 tokens, as on the dense lookup path). No model weights are read.
#[pg_extern(stable, parallel_safe)]
fn lr_encode_query_sparse(query: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<SparseVec> {
    Some(encode_query_sparse(query?, model))
}

/// The sparse query encoding (shared by `lr_encode_query_sparse` and `lr_search`).
pub fn encode_query_sparse(query: &str, model: Option<&str>) -> SparseVec {
    let name = resolve_sparse_model(model);
    let info = crate::catalog::load_model(&name);
    // The adapter's tokenizer wins when a LoRA adapter ships one.
    let key = info.tokenizer_path().to_string_lossy().into_owned();
    let tokenizer = match TOKENIZERS.with(|m| m.borrow().get(&key).cloned()) {
        Some(t) => t,
        None => {
            let t = Rc::new(lr_tokenizer::QueryTokenizer::new(
                lr_tokenizer::load_tokenizer(Path::new(&key), None).or_raise(Code::ERRCODE_IO_ERROR),
            ));
            TOKENIZERS.with(|m| m.borrow_mut().insert(key, t.clone()));
            t
        }
    };
    let mut ids = tokenizer.ids(query).or_raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
    ids.truncate(MAX_QUERY_TOKENS);
    if ids.is_empty() {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: the query has no tokens",
            Some("Pass a query with at least one word."),
        );
    }
    to_sparsevec(info.vocab_size, lr_tokenizer::counts_of(&ids))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgvector::SparseVec;
    use crate::test_support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn documents_match_the_independent_sparse_reference() {
        register_sparse_model();
        let r = lr_testkit::sparse_reference();
        for t in r["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            let got = Spi::get_one_with_args::<SparseVec>(
                "SELECT lightretriever.lr_encode_document_sparse($1, 'splade')",
                &[text.into()],
            )
            .unwrap()
            .unwrap()
            .0;
            assert_eq!(got.dim, 30522);
            let want = lr_testkit::id_weights(&t["weights"]);
            let got_pairs: Vec<(u32, f32)> = got.indices.iter().copied().zip(got.values.iter().copied()).collect();
            let significant = |p: &[(u32, f32)]| p.iter().filter(|x| x.1 > 1e-3).map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(significant(&got_pairs), significant(&want), "{text:?}");
            for (id, w) in &want {
                let g = got_pairs.iter().find(|p| p.0 == *id).map_or(0.0, |p| p.1);
                assert!((g - w).abs() <= 1e-4, "{text:?} id {id}: {g} vs {w}");
            }
        }
    }

    #[pg_test]
    fn query_counts_and_pgvector_inner_product() {
        register_sparse_model();
        Spi::run("SET LOCAL lightretriever.default_sparse_model = 'splade'").unwrap();
        let q = Spi::get_one::<SparseVec>("SELECT lightretriever.lr_encode_query_sparse('wing wing flutter')")
            .unwrap()
            .unwrap()
            .0;
        // "wing" = 3358, "flutter" = 23638 in the uncased BERT vocabulary.
        assert_eq!(q.indices, vec![3358, 23638]);
        assert_eq!(q.values, vec![2.0, 1.0]);
        // pgvector's own <#> agrees with the Rust inner product of the two sides.
        let doc = "Wing flutter of aircraft at transonic speeds.";
        let (ip, d) = Spi::get_two_with_args::<f32, SparseVec>(
            "SELECT -(lightretriever.lr_encode_query_sparse('wing wing flutter') <#> d)::real, d
               FROM lightretriever.lr_encode_document_sparse($1) AS d",
            &[doc.into()],
        )
        .unwrap();
        let (ip, d) = (ip.unwrap(), d.unwrap().0);
        assert!(ip > 0.0);
        assert!((ip - q.dot(&d)).abs() < 1e-4, "{ip} vs {}", q.dot(&d));
    }

    #[pg_test(error = "lightretriever: model \"minilm\" has no masked-LM head, so it cannot encode sparse vectors")]
    fn dense_models_cannot_encode_sparse() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_encode_document_sparse('text', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: the query has no tokens")]
    fn blank_sparse_query_is_an_error() {
        register_sparse_model();
        Spi::run("SELECT lightretriever.lr_encode_query_sparse('   ', 'splade')").unwrap();
    }
}
