//! Fitting the sparse query side's per-id weights on a user corpus (`lr_fit_sparse_query_weights`).


use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::catalog::require_lm_head;

/// Fits per-id query weights for sparse model `model` on the non-NULL values of
/// `source.text_column` — no labels: the idf of each token id over those documents (docs/quality.md
/// chose it on held-out pseudo-queries). From then on `lr_encode_query_sparse` (and
/// `lr_search`) weight each raw query token count by its id's idf. Replaces earlier weights of
/// the model; returns what was done.
#[pg_extern(volatile, parallel_unsafe)]
#[pgrx::search_path(pg_catalog, pg_temp)]
fn lr_fit_sparse_query_weights(model: Option<&str>, source: Option<pgrx::PgRelation>, text_column: Option<&str>) -> pgrx::JsonB {
    crate::error::require_superuser("fit sparse query weights");
    crate::error::require_primary("fit sparse query weights");
    let model = crate::error::required(model, "model");
    let (source, text_column) = (crate::error::required(source, "source"), crate::error::required(text_column, "text_column"));
    crate::catalog::lock_model(model);
    let info = crate::catalog::load_model(model);
    require_lm_head(model, &info);
    let relid = source.oid();
    drop(source);
    let started = std::time::Instant::now();
    let tokenizer_path = info.tokenizer_path();
    let tokenizer = lr_tokenizer::load_tokenizer(&tokenizer_path, None).or_raise(Code::ERRCODE_IO_ERROR);
    let (texts, _) = super::corpus::corpus_rows(relid, text_column, None, &tokenizer, 0);
    let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let table = crate::spi::table_name(relid);
    if docs.is_empty() {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("lightretriever: {table} has no text in column \"{text_column}\" to fit on"),
            None,
        );
    }
    let weights = lr_fit::sparse_query_weights(&docs, &tokenizer, info.vocab_size, &mut |_, _| {
        pgrx::check_for_interrupts!();
    })
        .or_raise(Code::ERRCODE_DATA_EXCEPTION);
    let fingerprint = lr_table::fingerprint_file(&tokenizer_path).or_raise(Code::ERRCODE_IO_ERROR);
    let absent = lr_fit::idf_of(&[0], docs.len(), 1.0)[0];
    let ids_in_corpus = weights.iter().filter(|&&w| w < absent).count();
    let build = serde_json::json!({
        "source": table,
        "text_column": text_column,
        "documents": docs.len(),
    });
    let version = Spi::get_one_with_args::<i32>(
        "INSERT INTO lightretriever.lr_sparse_query_weights AS w (model, version, method, weights, tokenizer_fingerprint, build)
         VALUES ($1, 1, 'idf', $2, $3, $4)
         ON CONFLICT (model) DO UPDATE
            SET version = w.version OPERATOR(pg_catalog.+) 1, method = excluded.method, weights = excluded.weights,
                tokenizer_fingerprint = excluded.tokenizer_fingerprint, build = excluded.build, built_at = pg_catalog.now()
         RETURNING version",
        &[model.into(), weights.into(), fingerprint.into(), pgrx::JsonB(build).into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or_default();
    crate::catalog::nodes::remind_to_sync();
    pgrx::JsonB(serde_json::json!({
        "model": model,
        "version": version,
        "method": "idf",
        "documents": docs.len(),
        "vocab": info.vocab_size,
        "ids_in_corpus": ids_in_corpus,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
