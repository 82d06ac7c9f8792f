//! The rerank path: backend → worker → LLM. PE-Rank (`crates/lr-rerank`): each candidate
//! passage enters the LLM as one token, its embedding through the checkpoint's projector, and
//! greedy decoding constrained to the candidates gives the order. The backend finds the
//! candidates' passage embeddings (`passages.rs`), runs the window loop and sends each window to
//! the encoder worker, which holds the reranker once per server and runs the windows of
//! concurrent callers together.

pub mod passages;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

use lr_model::{ModelFamily, ModelInfo};
use lr_rerank::{windows, Mode};
use lr_service::RerankWindow;
use pgrx::datum::Array;
use pgrx::prelude::*;
use pgrx::{search_path, PgRelation};

use crate::error::{raise, required, Code};
use crate::pgvector::Vector;

/// The registered reranker `model` (else `lightretriever.default_reranker`); any other model
/// is refused by name. Read, not locked: locking a catalog row needs UPDATE on it, which
/// callers (any role that may read the rows) do not have, and a lock would let them stall a
/// superuser's lr_drop_model. A drop meanwhile does not touch the model's directory.
pub fn reranker(model: Option<&str>) -> (String, ModelInfo) {
    let name = crate::guc::resolve_reranker(model);
    let info = crate::catalog::load_model(&name);
    if info.family != ModelFamily::Reranker {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("lightretriever: model \"{name}\" is not a reranker (its family is {})", info.family.name()),
            Some("Register a PE-Rank checkpoint (config.json model_type embed_mistral) and pass its name as model, or SET lightretriever.default_reranker."),
        );
    }
    (name, info)
}

pub fn parse_mode(mode: &str) -> Mode {
    Mode::parse(mode).unwrap_or_else(|| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: unknown rerank mode \"{mode}\" (expected embedding or text)"),
            None,
        )
    })
}

/// `window_size` and `step` as the window rule takes them.
pub fn window_rule(window_size: i32, step: i32) -> (usize, usize) {
    windows::check(window_size.into(), step.into())
        .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("lightretriever: {e}"), None))
}

/// Refuses embeddings whose dimension is not the reranker's `embedding_size`; `what(i)` names
/// the i-th (0-based) in the message.
pub fn check_dimensions(name: &str, info: &ModelInfo, embeddings: &[Vec<f32>], what: impl Fn(usize) -> String) {
    let want = info.embedding_size.unwrap_or(0);
    if let Some(i) = embeddings.iter().position(|e| e.len() != want) {
        raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!(
                "lightretriever: {} has {} dimensions; reranker \"{name}\" takes passage embeddings of {want}",
                what(i),
                embeddings[i].len()
            ),
            Some("Use the embeddings of the reranker's passage encoder (its encoder option)."),
        );
    }
}

/// The candidates reranked: (index into `embeddings`, score of its pick in the last window that
/// placed it), best first. `passages` (text mode) are the candidates' texts.
pub fn rerank(name: &str, info: &ModelInfo, query: &str, embeddings: &[Vec<f32>], passages: Option<&[String]>, window: usize, step: usize) -> Vec<(usize, f32)> {
    // Refused here, before the texts travel to the worker (which checks again per window).
    if let Err(e) = lr_rerank::prompt::check_text_size(query, passages, info.max_length) {
        raise(Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED, format!("lightretriever: {e}"), Some("Shorten the query, or rerank in embedding mode."));
    }
    let ranked = windows::rerank(embeddings.len(), window, step, |current| {
        pgrx::check_for_interrupts!();
        let request = RerankWindow {
            query: query.to_owned(),
            embeddings: current.iter().map(|&i| embeddings[i].clone()).collect(),
            passages: passages.map(|p| current.iter().map(|&i| p[i].clone()).collect()),
        };
        let mut rankings = crate::inference::rankings(name, info, vec![request]);
        if rankings.len() != 1 {
            return Err(format!("the worker answered {} rankings for one window", rankings.len()));
        }
        let ranking = rankings.pop().unwrap_or_default();
        if ranking.iter().any(|(_, s)| !s.is_finite()) {
            return Err("the worker's scores are not finite".to_owned());
        }
        let mut seen = vec![false; current.len()];
        for &(i, _) in &ranking {
            if (i as usize) >= current.len() || std::mem::replace(&mut seen[i as usize], true) {
                return Err(format!("the worker's ranking of {} candidates is not a permutation", current.len()));
            }
        }
        if ranking.len() != current.len() {
            return Err(format!("the worker ranked {} of {} candidates", ranking.len(), current.len()));
        }
        Ok((ranking.iter().map(|&(i, _)| i as usize).collect(), ranking.iter().map(|&(_, s)| s).collect()))
    });
    ranked.unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, format!("lightretriever: {e}"), None))
}

/// Reranks passage embeddings the caller holds: `idx` is the 1-based position in `embeddings`,
/// `rank` 1 is the best, `score` the decoding score h · P(e) of that pick in the window that
/// placed it last. Text mode needs the passages' texts: use `lr_rerank` on a table. VOLATILE:
/// it holds the model registered (a row lock) and runs the worker's LLM.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // every name below is qualified; nothing resolves through the caller's path
fn lr_rerank_embeddings<'a>(
    query: Option<&'a str>,
    embeddings: Option<Array<'a, Vector>>,
    model: default!(Option<&'a str>, "NULL"),
    window_size: default!(Option<i32>, 20),
    step: default!(Option<i32>, 10),
    mode: default!(Option<&'a str>, "'embedding'"),
) -> TableIterator<'static, (name!(rank, i32), name!(idx, i32), name!(score, f32))> {
    let query = required(query, "query");
    let embeddings = required(embeddings, "embeddings");
    let (window, step) = window_rule(required(window_size, "window_size"), required(step, "step"));
    if parse_mode(required(mode, "mode")) == Mode::Text {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: text mode needs the passages' texts, which lr_rerank_embeddings does not have",
            Some("Use lightretriever.lr_rerank(query, ids, source, text_column => '<column>', mode => 'text')."),
        );
    }
    let vectors: Vec<Vec<f32>> = embeddings
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(v) => v.0,
            None => raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("lightretriever: embeddings[{}] is NULL", i + 1), None),
        })
        .collect();
    if vectors.is_empty() {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: embeddings is empty: nothing to rerank", None);
    }
    let (name, info) = reranker(model);
    check_dimensions(&name, &info, &vectors, |i| format!("embeddings[{}]", i + 1));
    let ranked = rerank(&name, &info, query, &vectors, None, window, step);
    TableIterator::new(ranked.into_iter().enumerate().map(|(r, (i, score))| ((r + 1) as i32, (i + 1) as i32, score)))
}

/// Reranks rows of `source` by id: the ids' order is the first-stage order. Passage embeddings
/// come from `embedding_column`; else the auto-encoded column whose model is the reranker's
/// encoder; else, for a reranker without an encoder, the table's only vector column of its
/// embedding size; else the passages' text (`text_column` or the auto-encoded one) is encoded
/// by the reranker's encoder in the worker. `source` NULL is the one auto-encoded table.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // every name below is qualified; nothing resolves through the caller's path
fn lr_rerank<'a>(
    query: Option<&'a str>,
    ids: Option<Array<'a, i64>>,
    source: default!(Option<PgRelation>, "NULL"),
    model: default!(Option<&'a str>, "NULL"),
    window_size: default!(Option<i32>, 20),
    step: default!(Option<i32>, 10),
    embedding_column: default!(Option<&'a str>, "NULL"),
    text_column: default!(Option<&'a str>, "NULL"),
    id_column: default!(Option<&'a str>, "NULL"),
    mode: default!(Option<&'a str>, "'embedding'"),
) -> TableIterator<'static, (name!(rank, i32), name!(id, i64), name!(score, f32))> {
    let query = required(query, "query");
    let ids = required(ids, "ids");
    let (window, step) = window_rule(required(window_size, "window_size"), required(step, "step"));
    let mode = parse_mode(required(mode, "mode"));
    let ids: Vec<i64> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| id.unwrap_or_else(|| raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("lightretriever: ids[{}] is NULL", i + 1), None)))
        .collect();
    let relid = source.map(|s| s.oid());
    let (name, info) = reranker(model);
    let columns = passages::Columns { embedding: embedding_column, text: text_column, id: id_column };
    let ranked = passages::rerank_rows(&name, &info, relid, query, &ids, &columns, mode, window, step);
    TableIterator::new(ranked.into_iter().enumerate().map(|(r, (id, score))| ((r + 1) as i32, id, score)))
}
