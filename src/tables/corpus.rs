//! The corpus of a fit (`lr_fit_query_table`, `lr_fit_sparse_query_weights`): a user's texts
//! (and stored vectors), read as the table's owner.

use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::pgvector::Vector;
use crate::spi::{quote_ident, table_name};

/// The corpus of a fit: the non-NULL values of `text_column` (a text, varchar or char column),
/// and with them the values of `vector_column` (pgvector `vector`: the documents' full-model
/// vectors already stored, so the fit need not encode the corpus again) — rows where either
/// is NULL are skipped. The relation is read **as its owner** in a security-restricted context:
/// a fit is a superuser's call, and the table's code (views, policies, casts) is the owner's.
pub fn corpus_rows(relid: pg_sys::Oid, text_column: &str, vector_column: Option<&str>) -> (Vec<String>, Option<Vec<Vec<f32>>>) {
    let table = table_name(relid);
    crate::security::require_user_table(relid, &table, &['r', 'p', 'm', 'v', 'f'], "a fit", true, true);
    let vector_type = crate::pgvector::pgvector_type("vector");
    let columns = std::iter::once((text_column, "text")).chain(vector_column.map(|v| (v, "vector")));
    for (column, kind) in columns {
        let ty = crate::error::row_or_none(Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.format_type(atttypid, NULL) FROM pg_catalog.pg_attribute
              WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2
                AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
            &[relid.into(), column.into()],
        ))
        .flatten();
        let fits = |t: &str| match kind {
            "text" => ["text", "character varying", "character"].contains(&t),
            _ => t == "vector" || t == vector_type,
        };
        match ty {
            None => raise(Code::ERRCODE_UNDEFINED_COLUMN, format!("lightretriever: {table} has no column \"{column}\""), None),
            Some(t) if !fits(&t) => raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!("lightretriever: column \"{column}\" of {table} is {t}, not {kind}"),
                None,
            ),
            Some(_) => {}
        }
    }
    // A stable order (primary key, else physical) so that a seeded fit is reproducible and
    // matches the evaluation harness, which reads the corpus in file order.
    let order = crate::error::row_or_none(Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.n)
           FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), pg_catalog.pg_attribute a
          WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attrelid OPERATOR(pg_catalog.=) $1
            AND a.attnum OPERATOR(pg_catalog.=) k.attnum",
        &[relid.into()],
    ))
    .flatten()
    .unwrap_or_else(|| "ctid".to_owned());
    let text = quote_ident(text_column);
    let (vector_select, vector_filter) = match vector_column {
        Some(v) => (quote_ident(v), format!("AND {} IS NOT NULL", quote_ident(v))),
        // Not read. No type name: one read before the wait for the table could mean a decoy.
        None => ("NULL".to_owned(), String::new()),
    };
    let rows: Vec<(String, Option<Vector>)> = crate::security::as_owner(relid, || {
        // By the name it has now: `table`, read before the checks above, could mean another.
        let Some(table) = crate::security::current_name(relid) else {
            raise(Code::ERRCODE_UNDEFINED_TABLE, format!("lightretriever: {table} is gone"), None)
        };
        let sql = format!(
            "SELECT {text}::pg_catalog.text, {vector_select} FROM {table} WHERE {text} IS NOT NULL {vector_filter} ORDER BY {order}"
        );
        Spi::connect(|c| {
            c.select(&sql, None, &[]).map(|rows| {
                rows.filter_map(|r| {
                    let vector = if vector_column.is_some() { r.get::<Vector>(2).ok()? } else { None };
                    Some((r.get::<String>(1).ok()??, vector))
                })
                .collect()
            })
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let (texts, vectors): (Vec<String>, Vec<Option<Vector>>) = rows.into_iter().unzip();
    let vectors = vector_column.map(|_| vectors.into_iter().map(|v| v.map(|v| v.0).unwrap_or_default()).collect());
    (texts, vectors)
}
