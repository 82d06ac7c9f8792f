//! The corpus of a fit (`lr_fit_query_table`, `lr_fit_sparse_query_weights`): a user's texts
//! (and stored vectors), read as the table's owner.

use pgrx::prelude::*;

use crate::error::{raise, Code, OrRaise};
use crate::pgvector::Vector;
use crate::spi::{quote_ident, table_name};

/// The corpus of a fit: the non-NULL values of `text_column` (a text, varchar or char column),
/// and with them the values of `vector_column` (pgvector `vector`: the documents' full-model
/// vectors already stored, so the fit need not encode the corpus again) — rows where either
/// is NULL are skipped. Each text is read up to what `tokenizer` looks at of it
/// (`PrefixCutter::bounded_reads`, as characters), and the whole corpus up to
/// `lightretriever.max_fit_corpus_size`, else an ERROR. The relation is read **as its owner** in a security-restricted context:
/// a fit is a superuser's call, and the table's code (views, policies, casts) is the owner's.
pub fn corpus_rows(
    relid: pg_sys::Oid,
    text_column: &str,
    vector_column: Option<&str>,
    tokenizer: &lr_tokenizer::Tokenizer,
    computed_bytes_per_row: usize,
) -> (Vec<String>, Option<Vec<Vec<f32>>>) {
    let table = table_name(relid);
    crate::security::require_user_table(relid, &table, &['r', 'p', 'm', 'v', 'f'], "a fit", true, true);
    let columns = std::iter::once((text_column, "text")).chain(vector_column.map(|v| (v, "vector")));
    for (column, kind) in columns {
        // By type oid, not by printed name (`type_name_for_message`).
        let found = crate::error::row_or_none(crate::spi::read_one::<pg_sys::Oid>(
            "SELECT atttypid FROM pg_catalog.pg_attribute
              WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2
                AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
            &[relid.into(), column.into()],
        ));
        let fits = |t: pg_sys::Oid| match kind {
            "text" => crate::columns::TEXT_TYPES.contains(&t),
            _ => t == crate::pgvector::pgvector_type_oid("vector"),
        };
        match found.flatten() {
            Some(oid) if !fits(oid) => raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!("lightretriever: column \"{column}\" of {table} is {}, not {kind}", crate::spi::type_name_for_message(oid)),
                None,
            ),
            Some(_) => {}
            None => raise(Code::ERRCODE_UNDEFINED_COLUMN, format!("lightretriever: {table} has no column \"{column}\""), None),
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
    let limit = crate::guc::max_fit_corpus_bytes();
    let read_chars = i32::try_from(lr_tokenizer::PrefixCutter::new(tokenizer).bounded_reads()).unwrap_or(i32::MAX);
    crate::security::as_owner(relid, || {
        // By the name it has now: `table`, read before the checks above, could mean another.
        let Some(table) = crate::security::current_name(relid) else {
            raise(Code::ERRCODE_UNDEFINED_TABLE, format!("lightretriever: {table} is gone"), None)
        };
        // Only the part of each text a fit reads leaves the table (`left` detoasts no more of
        // a compressed value), a few rows at a time, and the whole is bounded: the owner
        // decides how many and how large the texts are, and a failed allocation in Rust would
        // abort this backend and restart the server.
        let sql = format!(
            "SELECT pg_catalog.left({text}::pg_catalog.text, {read_chars}), {vector_select} FROM {table}
              WHERE {text} IS NOT NULL {vector_filter} ORDER BY {order}"
        );
        let (mut texts, mut vectors, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        Spi::connect(|c| {
            // Parsed under the guard: a schema swap committed since `current_name` would make the
            // name mean another relation, whose code would run as this table's owner.
            let mut cursor = crate::foreign_guard::reading(relid, &table, "a fit", || c.try_open_cursor(sql.as_str(), &[]))
                .or_raise(Code::ERRCODE_INTERNAL_ERROR);
            loop {
                let batch = cursor.fetch(FETCH_ROWS).or_raise(Code::ERRCODE_INTERNAL_ERROR);
                if batch.is_empty() {
                    break;
                }
                for row in batch {
                    // A stored vector kept out of line is detoasted and the copy freed
                    // (`pgvector::with_payload`); the text is copied out by pgrx.
                    let read = || {
                        let text = row.get::<String>(1).ok().flatten()?;
                        let vector = match vector_column {
                            Some(_) => row.get::<Vector>(2).ok().flatten()?.0,
                            None => Vec::new(),
                        };
                        Some((text, vector))
                    };
                    let Some((text, vector)) = read() else { continue };
                    // What the fit holds per document: the text, the stored or computed vector,
                    // and the bookkeeping around them.
                    bytes = bytes.saturating_add(text.len() + STORED_VECTOR_COPIES * 4 * vector.len() + computed_bytes_per_row + ROW_OVERHEAD_BYTES);
                    if bytes > limit {
                        raise(
                            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                            format!(
                                "lightretriever: the corpus in {table} is larger than lightretriever.max_fit_corpus_size ({} MB) after {} rows",
                                limit >> 20,
                                texts.len()
                            ),
                            Some("A fit holds its whole corpus in this backend. Raise the setting for this session if the server has the memory, or fit on a sample (a view of the table with TABLESAMPLE)."),
                        );
                    }
                    texts.push(text);
                    vectors.push(vector);
                }
                // Each batch's rows are copied out; free them now rather than at the end.
                unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
                pgrx::check_for_interrupts!();
            }
        });
        (texts, vector_column.map(|_| vectors))
    })
}

/// Rows fetched from the corpus at a time: few, since each may hold megabytes of text.
const FETCH_ROWS: i64 = 32;

/// What a fit holds per document besides its text and vector (the strings' and vectors'
/// headers, the document list): an empty text is not free.
const ROW_OVERHEAD_BYTES: usize = 64;

/// Copies of a stored vector a fit holds at once: the rows read, the checked list it passes on,
/// the document matrix.
const STORED_VECTOR_COPIES: usize = 3;
