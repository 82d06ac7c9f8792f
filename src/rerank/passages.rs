//! The candidates of `lr_rerank(query, ids, source, …)`: their rows read as the caller (the
//! function is SECURITY INVOKER: the caller's rights and row-level security apply), and their
//! passage embeddings found by one rule, in this order of precedence:
//! 1. `embedding_column` when given;
//! 2. the auto-encoded vector column whose model is the reranker's encoder (nothing re-encoded);
//! 3. for a reranker registered without an encoder, the table's only `vector` column of its
//!    `embedding_size`;
//! 4. the passages' text (`text_column`, or the auto-encoded text column) encoded by the
//!    reranker's encoder in the worker.
//!
//! Rows whose stored embedding is NULL are encoded from their text too when an encoder and a
//! text column are known; otherwise they are an error, as are ids not in the table.

use std::collections::HashMap;

use lr_model::ModelInfo;
use lr_rerank::Mode;
use lr_service::Task;
use pgrx::prelude::*;

use crate::auto::AutoEncoding;
use crate::error::{raise, Code, OrRaise};
use crate::pgvector::Vector;
use crate::columns::{pgvector_columns, pick_column, pick_id_column};
use crate::spi::{quote_ident, table_name};

/// Columns the caller named (`NULL` = found by the rule above).
pub struct Columns<'a> {
    pub embedding: Option<&'a str>,
    pub text: Option<&'a str>,
    pub id: Option<&'a str>,
}

/// The table to read: the one given, else the one auto-encoded table the caller can see.
fn source_table(relid: Option<pg_sys::Oid>) -> pg_sys::Oid {
    if let Some(relid) = relid {
        return relid;
    }
    let visible = crate::auto::encodings(crate::auto::Encodings::All);
    match visible.as_slice() {
        [one] => one.source,
        [] => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "lightretriever: no source given, and no auto-encoded table to take as the source",
            Some("Pass source => '<table>'."),
        ),
        several => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "lightretriever: no source given, and there are {} auto-encoded tables ({})",
                several.len(),
                several.iter().map(|a| a.source_name.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some("Pass source => '<table>'."),
        ),
    }
}

/// The only `vector` column of `relid` whose dimension is `dims` (pgvector's typmod).
fn vector_column_of_size(relid: pg_sys::Oid, table: &str, dims: usize, reranker: &str) -> String {
    let found = pgvector_columns(relid, "vector", None, Some(dims as i32));
    match found.as_slice() {
        [one] => quote_ident(one),
        [] => raise(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!("lightretriever: {table} has no vector({dims}) column for reranker \"{reranker}\", which has no encoder"),
            Some("Pass embedding_column => '<column>', or register the reranker with {\"encoder\": \"<model>\"} so that passages are encoded."),
        ),
        several => raise(
            Code::ERRCODE_AMBIGUOUS_COLUMN,
            format!("lightretriever: {table} has several vector({dims}) columns ({})", several.join(", ")),
            Some("Pass embedding_column => '<column>' to choose one."),
        ),
    }
}

/// A text column of `relid` the caller named: text, varchar or char by type oid (a domain or a
/// user's type of that name, or an array of them, is refused).
fn text_column(relid: pg_sys::Oid, table: &str, name: &str) -> String {
    let found = crate::error::row_or_none(crate::spi::read_two::<String, bool>(
        "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod),
                a.atttypid OPERATOR(pg_catalog.=) ANY ('{25,1043,1042}'::pg_catalog.oid[])
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2
            AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped",
        &[relid.into(), name.into()],
    ));
    match found {
        Some((_, Some(true))) => quote_ident(name),
        Some((Some(t), _)) => raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("lightretriever: column \"{name}\" of {table} is {t}, not text"),
            None,
        ),
        _ => raise(Code::ERRCODE_UNDEFINED_COLUMN, format!("lightretriever: {table} has no column \"{name}\""), None),
    }
}

/// Where each candidate's embedding comes from.
enum EmbeddingSource {
    Column(String),
    Encoder(String),
}

fn embedding_source(relid: pg_sys::Oid, table: &str, reranker: &str, info: &ModelInfo, auto: Option<&AutoEncoding>, named: Option<&str>) -> EmbeddingSource {
    if let Some(column) = named {
        return EmbeddingSource::Column(pick_column(relid, table, Some(column), "vector", "embedding_column"));
    }
    match (&info.encoder, auto) {
        (Some(encoder), Some(a)) if &a.model == encoder => EmbeddingSource::Column(quote_ident(&a.vector_column)),
        (Some(encoder), _) => EmbeddingSource::Encoder(encoder.clone()),
        (None, _) => EmbeddingSource::Column(vector_column_of_size(relid, table, info.embedding_size.unwrap_or(0), reranker)),
    }
}

/// Reranks the rows of `ids` (first-stage order) and returns (id, score) best first.
#[allow(clippy::too_many_arguments)]
pub fn rerank_rows(
    reranker: &str,
    info: &ModelInfo,
    relid: Option<pg_sys::Oid>,
    query: &str,
    ids: &[i64],
    columns: &Columns,
    mode: Mode,
    window: usize,
    step: usize,
) -> Vec<(i64, f32)> {
    if ids.is_empty() {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: ids is empty: nothing to rerank", None);
    }
    let mut position = HashMap::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        if let Some(first) = position.insert(id, i) {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("lightretriever: id {id} is given twice (ids[{}] and ids[{}])", first + 1, i + 1),
                Some("Each candidate is reranked once: remove the duplicates."),
            );
        }
    }
    let relid = source_table(relid);
    // Held to the end of the transaction, taken before the checks (as lr_search does): without
    // it the table's owner could drop or replace it between the check and the fetch (which
    // reads the table's name again, for a schema renamed meanwhile).
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
    let table = table_name(relid);
    // Tables only: a view's or foreign table's code would run as the caller.
    crate::security::require_user_table(relid, &table, &['r', 'p', 'm'], "lr_rerank", true, true);
    let (id, _) = pick_id_column(relid, &table, columns.id);
    let auto = crate::auto::encoding_of(relid);
    let source = embedding_source(relid, &table, reranker, info, auto.as_ref(), columns.embedding);
    let needs_text = mode == Mode::Text || matches!(source, EmbeddingSource::Encoder(_));
    let named_text = columns.text.map(|named| text_column(relid, &table, named));
    // The text is read when it is needed, or may be (a stored NULL encoded by the encoder).
    let text = if needs_text || info.encoder.is_some() {
        named_text.or_else(|| auto.as_ref().map(|a| quote_ident(&a.text_column)))
    } else {
        None
    };
    if needs_text && text.is_none() {
        raise(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "lightretriever: {} needs the passages' text, and {table} is not auto-encoded",
                if mode == Mode::Text { "text mode" } else { "encoding the passages" }
            ),
            Some("Pass text_column => '<column>'."),
        );
    }
    // The id, then the stored embedding and the text when there are such columns.
    let mut select = vec![format!("{id}::pg_catalog.int8")];
    let vector_at = match &source {
        EmbeddingSource::Column(c) => {
            select.push(c.clone());
            Some(select.len())
        }
        EmbeddingSource::Encoder(_) => None,
    };
    let text_at = text.as_deref().map(|t| {
        // A text column of a user's type with a cast of the user's runs as the caller, in the
        // caller's own query (this function is SECURITY INVOKER).
        select.push(format!("{t}::pg_catalog.text"));
        select.len()
    });
    // By the name the table has now (see name_for_scan): the lookups above may have waited.
    let scanned = crate::security::name_for_scan(relid);
    let sql = format!(
        "SELECT {} FROM {scanned} WHERE {id} OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.int8[])",
        select.join(", ")
    );
    let mut embeddings: Vec<Option<Vec<f32>>> = vec![None; ids.len()];
    let mut texts: Vec<Option<String>> = vec![None; ids.len()];
    let mut found = vec![false; ids.len()];
    Spi::connect(|c| {
        let rows = crate::foreign_guard::scanning(relid, &table, "lr_rerank", || c.select(&sql, None, &[ids.to_vec().into()]))?;
        for r in rows {
            let row_id: i64 = r.get(1)?.unwrap_or_default();
            let Some(&i) = position.get(&row_id) else { continue };
            if std::mem::replace(&mut found[i], true) {
                raise(
                    Code::ERRCODE_CARDINALITY_VIOLATION,
                    format!("lightretriever: id {row_id} matches several rows of {table}"),
                    Some("Pass id_column => '<a unique integer column>'."),
                );
            }
            if let Some(at) = vector_at {
                embeddings[i] = r.get::<Vector>(at)?.map(|v| v.0);
            }
            if let Some(at) = text_at {
                texts[i] = r.get::<String>(at)?;
            }
        }
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let missing: Vec<String> = ids.iter().zip(&found).filter(|(_, f)| !**f).map(|(id, _)| id.to_string()).collect();
    if !missing.is_empty() {
        let shown = missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        raise(
            Code::ERRCODE_NO_DATA_FOUND,
            format!(
                "lightretriever: {} of the ids {} not in {table} (or not visible): {shown}{}",
                missing.len(),
                if missing.len() == 1 { "is" } else { "are" },
                if missing.len() > 10 { ", …" } else { "" }
            ),
            None,
        );
    }
    if needs_text {
        if let Some(i) = texts.iter().position(Option::is_none) {
            raise(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("lightretriever: the passage text of id {} is NULL", ids[i]),
                None,
            );
        }
    }
    // Embeddings to compute: every one (no stored column), or the stored NULLs when possible.
    let to_encode: Vec<usize> = (0..ids.len()).filter(|&i| embeddings[i].is_none()).collect();
    if !to_encode.is_empty() {
        let encoder = match (&source, &info.encoder, &text) {
            (EmbeddingSource::Encoder(e), _, _) => e.clone(),
            (EmbeddingSource::Column(_), Some(e), Some(_)) => e.clone(),
            (EmbeddingSource::Column(c), _, _) => raise(
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("lightretriever: the embedding of id {} ({c}) is NULL", ids[to_encode[0]]),
                Some("Encode it first (auto-encoding may still be under way), or register the reranker with an encoder and pass text_column."),
            ),
        };
        let passages: Vec<String> = to_encode
            .iter()
            .map(|&i| {
                texts[i].clone().unwrap_or_else(|| {
                    raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("lightretriever: the passage text of id {} is NULL", ids[i]), None)
                })
            })
            .collect();
        let encoder_info = crate::catalog::load_model(&encoder);
        let vectors = crate::inference::dense(&encoder, &encoder_info, Task::Dense { texts: passages });
        for (&i, v) in to_encode.iter().zip(vectors) {
            embeddings[i] = Some(v);
        }
    }
    let embeddings: Vec<Vec<f32>> = embeddings.into_iter().map(Option::unwrap_or_default).collect();
    super::check_dimensions(reranker, info, &embeddings, |i| format!("the embedding of id {}", ids[i]));
    let passages: Option<Vec<String>> =
        (mode == Mode::Text).then(|| texts.into_iter().map(Option::unwrap_or_default).collect());
    super::rerank(reranker, info, query, &embeddings, passages.as_deref(), window, step)
        .into_iter()
        .map(|(i, score)| (ids[i], score))
        .collect()
}
