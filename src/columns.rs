//! Columns of a user's table that a call reads: found by type, named by the caller, checked.

use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::spi::quote_ident;

/// The types a text column may have: text, varchar and char (PostgreSQL's own, by oid: a
/// domain or a user's type of that name is not one).
pub const TEXT_TYPES: [pg_sys::Oid; 3] = [pg_sys::TEXTOID, pg_sys::VARCHAROID, pg_sys::BPCHAROID];

/// The columns of `relid` whose type is pgvector's `type_name` (the type itself, a member of the
/// vector extension), optionally only the one `named` or those of dimension
/// `dims` (pgvector's typmod), in column order.
pub fn pgvector_columns(relid: pg_sys::Oid, type_name: &str, named: Option<&str>, dims: Option<i32>) -> Vec<String> {
    Spi::connect(|c| {
        crate::spi::select_kept(
            &c,
            "SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
                AND a.atttypid OPERATOR(pg_catalog.=) $2 AND ($3::pg_catalog.text IS NULL OR a.attname OPERATOR(pg_catalog.=) $3)
                AND ($4::pg_catalog.int4 IS NULL OR a.atttypmod OPERATOR(pg_catalog.=) $4)
              ORDER BY a.attnum",
            None,
            &[relid.into(), crate::pgvector::pgvector_type_oid(type_name).into(), named.into(), dims.into()],
        )
        .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// A column of `relid` to use: the one named, checked to have pgvector's type `type_name` (the
/// type itself: a user's type of that name, with a cast to pgvector's, would run the user's
/// cast as the caller), or else the only column of that type. Returns the quoted identifier.
pub fn pick_column(relid: pg_sys::Oid, table: &str, named: Option<&str>, type_name: &str, argument: &str) -> String {
    let found = pgvector_columns(relid, type_name, named, None);
    match (found.len(), named) {
        (1, _) => quote_ident(&found[0]),
        (0, Some(name)) => raise(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!("lightretriever: {table} has no {type_name} column \"{name}\""),
            None,
        ),
        (0, None) => raise(
            Code::ERRCODE_UNDEFINED_COLUMN,
            format!("lightretriever: {table} has no {type_name} column"),
            Some(&format!("Add one, or choose another mode; pass {argument} => '<column>' to name it.")),
        ),
        (_, _) => raise(
            Code::ERRCODE_AMBIGUOUS_COLUMN,
            format!("lightretriever: {table} has several {type_name} columns ({})", found.join(", ")),
            Some(&format!("Pass {argument} => '<column>' to choose one.")),
        ),
    }
}

/// Whether `relid` has a valid, non-partial btree or hash index whose first column is its
/// column number `attnum` (the id column, as `pick_id_column` gives it): lookups of rows by id
/// use it; without one each lookup scans the table.
pub fn id_is_indexed(relid: pg_sys::Oid, attnum: i16) -> bool {
    crate::error::row_or_none(crate::spi::read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_index i
                          JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
                          JOIN pg_catalog.pg_am m ON m.oid OPERATOR(pg_catalog.=) c.relam
                         WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indkey[0] OPERATOR(pg_catalog.=) $2
                           AND i.indisvalid AND i.indpred IS NULL AND m.amname OPERATOR(pg_catalog.=) ANY ('{btree,hash}'))",
        &[relid.into(), attnum.into()],
    ))
    .flatten()
    .unwrap_or(false)
}

/// The id column: the one named, else the single-column primary key. Either must be an
/// integer type (smallint, integer, bigint). Returns the quoted identifier and the column's
/// number.
pub fn pick_id_column(relid: pg_sys::Oid, table: &str, named: Option<&str>) -> (String, i16) {
    // The built-in integer types by oid (int2, int4, int8): a domain or a user's type of that
    // name prints otherwise and is refused. The column's number where its type is one of
    // those, NULL where it is not.
    let found = crate::error::row_or_none(crate::spi::read_three::<String, String, i16>(
        "SELECT a.attname::pg_catalog.text, pg_catalog.format_type(a.atttypid, NULL),
                CASE WHEN a.atttypid OPERATOR(pg_catalog.=) ANY ('{21,23,20}'::pg_catalog.oid[]) THEN a.attnum END
           FROM pg_catalog.pg_attribute a
          WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
            AND CASE WHEN $2::pg_catalog.text IS NOT NULL THEN a.attname OPERATOR(pg_catalog.=) $2
                     ELSE a.attnum OPERATOR(pg_catalog.=) (SELECT i.indkey[0] FROM pg_catalog.pg_index i
                                       WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary
                                         AND i.indnatts OPERATOR(pg_catalog.=) 1) END",
        &[relid.into(), named.into()],
    ));
    match found {
        Some((Some(name), Some(_), Some(attnum))) => (quote_ident(&name), attnum),
        Some((Some(name), Some(ty), None)) => raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("lightretriever: id column \"{name}\" of {table} is {ty}; lr_search returns bigint ids"),
            Some("Pass id_column => '<an integer column>'."),
        ),
        _ => match named {
            Some(name) => raise(
                Code::ERRCODE_UNDEFINED_COLUMN,
                format!("lightretriever: {table} has no column \"{name}\""),
                None,
            ),
            None => raise(
                Code::ERRCODE_UNDEFINED_COLUMN,
                format!("lightretriever: {table} has no single-column primary key to use as id"),
                Some("Pass id_column => '<an integer column>'."),
            ),
        },
    }
}
