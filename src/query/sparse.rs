//! The sparse side of LightRetriever: documents by a masked-LM head (SPLADE-style
//! `max_pos log(1 + relu(logits))`), queries by raw token counts — no model on the query path —
//! times per-id weights once `lr_fit_sparse_query_weights` has fitted them on the user's corpus.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use lr_table::{LookupError, SparseQueryEncoder};
use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::guc::resolve_sparse_model;
use crate::catalog::require_lm_head;
use crate::pgvector::{to_sparsevec, SparseVec};
use crate::statement::{statement_key, PerStatement};

thread_local! {
    /// Query encoders by tokenizer path: the query side needs only the vocabulary.
    static ENCODERS: RefCell<HashMap<String, Rc<SparseQueryEncoder>>> = RefCell::new(HashMap::new());
    /// Fitted query weights by model, with the catalog row version (xmin/ctid) they were read at (a refit,
    /// or a model dropped and fitted again, writes a new row version).
    static WEIGHTS: RefCell<HashMap<String, (String, Rc<[f32]>)>> = RefCell::new(HashMap::new());
    /// Per sparse model, the statement that last read the catalog and what it read.
    static RESOLVED: PerStatement<String, (Rc<lr_model::ModelInfo>, Option<String>)> = PerStatement::new();
}

/// How a sparse query's token counts are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryWeighting {
    /// The fitted weights when the model has some, else raw counts.
    Auto,
    /// Raw counts (LightRetriever's query side), fitted weights or not.
    Counts,
    /// The fitted weights; an error when there are none.
    Fitted,
}

impl QueryWeighting {
    fn parse(s: &str) -> QueryWeighting {
        match s {
            "auto" => QueryWeighting::Auto,
            "counts" => QueryWeighting::Counts,
            "fitted" => QueryWeighting::Fitted,
            other => raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("lightretriever: unknown sparse query weighting \"{other}\""),
                Some("Use 'auto' (fitted weights when there are some), 'counts' or 'fitted'."),
            ),
        }
    }
}

/// Sparse model `name` as this statement's catalog has it: its description, and the row
/// version (xmin/ctid) of its fitted query weights if it has some. Read once per statement (a
/// query that encodes once per row reads the catalog once); the statement's snapshot decides,
/// so a refit, drop or rollback elsewhere is seen by the next statement.
fn resolve(name: &str) -> (Rc<lr_model::ModelInfo>, Option<String>) {
    RESOLVED.with(|r| {
        r.get_or_compute(name.to_owned(), statement_key(), || {
            let info = Rc::new(crate::catalog::load_model(name));
            let version = crate::error::row_or_none(crate::spi::read_one::<String>(
                "SELECT xmin::pg_catalog.text OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) ctid::pg_catalog.text
                   FROM lightretriever.lr_sparse_query_weights WHERE model OPERATOR(pg_catalog.=) $1",
                &[name.into()],
            ))
            .flatten();
            (info, version)
        })
    })
}

/// The fitted query weights of sparse model `name` at row version `version` (read once per
/// row version per backend). The tokenizer must be the one they were fitted with.
fn fitted_weights(name: &str, info: &lr_model::ModelInfo, version: Option<&str>) -> Option<Rc<[f32]>> {
    let version = version?;
    if let Some(w) = WEIGHTS.with(|m| m.borrow().get(name).filter(|c| c.0 == version).map(|c| c.1.clone())) {
        return Some(w);
    }
    let (weights, fingerprint) = crate::spi::read_two::<Vec<Option<f32>>, String>(
        "SELECT weights, tokenizer_fingerprint FROM lightretriever.lr_sparse_query_weights WHERE model OPERATOR(pg_catalog.=) $1",
        &[name.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let refit = format!("Refit them: SELECT lightretriever.lr_fit_sparse_query_weights('{name}', source, text_column).");
    let current = lr_table::fingerprint_file(&info.tokenizer_path()).or_raise(Code::ERRCODE_IO_ERROR);
    if fingerprint.as_deref() != Some(current.as_str()) {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: the tokenizer of model \"{name}\" has changed since its sparse query weights were fitted"),
            Some(&refit),
        );
    }
    let weights: Vec<f32> = weights.unwrap_or_default().into_iter().map(|w| w.unwrap_or(f32::NAN)).collect();
    if weights.len() != info.vocab_size || weights.iter().any(|w| !w.is_finite()) {
        raise(
            Code::ERRCODE_DATA_CORRUPTED,
            format!("lightretriever: the sparse query weights of model \"{name}\" are not {} finite values", info.vocab_size),
            Some(&refit),
        );
    }
    let weights: Rc<[f32]> = Rc::from(weights);
    WEIGHTS.with(|m| m.borrow_mut().insert(name.to_owned(), (version.to_owned(), weights.clone())));
    Some(weights)
}

/// The sparse query side: raw counts of the query's token ids (no special tokens, at most
/// 512 tokens, as on the dense lookup path), each times its id's fitted weight when the model
/// has some (`weighting` 'auto'; 'counts' never weights, 'fitted' insists). No model weights
/// are read.
#[pg_extern(stable, parallel_safe, cost = 200)]
fn lr_encode_query_sparse(
    query: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    weighting: default!(Option<&str>, "'auto'"),
) -> Option<SparseVec> {
    let weighting = QueryWeighting::parse(crate::error::required(weighting, "weighting"));
    Some(encode_query_sparse(query?, model, weighting))
}

/// The sparse query encoding (shared by `lr_encode_query_sparse` and `lr_search`).
pub fn encode_query_sparse(query: &str, model: Option<&str>, weighting: QueryWeighting) -> SparseVec {
    let name = resolve_sparse_model(model);
    let (info, version) = resolve(&name);
    // Counts over a dense model's vocabulary would match nothing meaningful: say so.
    require_lm_head(&name, &info);
    // The adapter's tokenizer wins when a LoRA adapter ships one.
    let key = info.tokenizer_path().to_string_lossy().into_owned();
    let encoder = match ENCODERS.with(|m| m.borrow().get(&key).cloned()) {
        Some(e) => e,
        None => {
            let e = Rc::new(SparseQueryEncoder::new(super::query_tokenizer(Path::new(&key))));
            ENCODERS.with(|m| m.borrow_mut().insert(key, e.clone()));
            e
        }
    };
    let weights = || match weighting {
        QueryWeighting::Counts => None,
        QueryWeighting::Auto => fitted_weights(&name, &info, version.as_deref()),
        QueryWeighting::Fitted => Some(fitted_weights(&name, &info, version.as_deref()).unwrap_or_else(|| {
            raise(
                Code::ERRCODE_UNDEFINED_OBJECT,
                format!("lightretriever: sparse model \"{name}\" has no fitted query weights"),
                Some(&format!("Fit them (as a superuser): SELECT lightretriever.lr_fit_sparse_query_weights('{name}', source, text_column).")),
            )
        })),
    };
    // Ids past the model's vocabulary cannot be in a document vector; to_sparsevec names them.
    let pairs = encoder.encode(query, weights).unwrap_or_else(|e| match e {
        LookupError::NoTokens => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: the query has no tokens",
            Some("Pass a query with at least one word."),
        ),
        other => raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, format!("lightretriever: {other}"), None),
    });
    to_sparsevec(info.vocab_size, pairs)
}
