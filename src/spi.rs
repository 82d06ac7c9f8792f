//! SPI helpers shared by every path: quoting, relation names, subtransactions.

use std::panic::AssertUnwindSafe;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::spi::SpiError;

use crate::error::{Code, OrRaise};

pub use lr_queue::quote_ident;

/// The first row's first value of a query that only reads. pgrx's `Spi::get_one*` mark the
/// transaction as writing (they assign it a transaction id): a hot standby refuses that, and on a
/// primary every lookup would spend an XID. This runs read-only, in the calling statement's
/// snapshot, as a STABLE function's reads should.
pub fn read_one<A: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Result<Option<A>, SpiError> {
    Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_one::<A>())
}

/// [`read_one`] for two values.
pub fn read_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
) -> Result<(Option<A>, Option<B>), SpiError> {
    Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_two::<A, B>())
}

/// [`read_one`] for three values.
pub fn read_three<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum, C: FromDatum + IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
) -> Result<(Option<A>, Option<B>, Option<C>), SpiError> {
    Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_three::<A, B, C>())
}

/// The first row's first value, a `bytea` or `text`, as bytes (None: no row, or NULL). Copied
/// out while SPI's own memory holds the detoasted value, which goes with it: pgrx's `get` copies
/// a value into the parent of SPI's context (the statement's), where a loop over large values —
/// the chunks of a 1 GB table — would pile them all up until the statement ends.
pub fn read_bytes(sql: &str, args: &[DatumWithOid]) -> Result<Option<Vec<u8>>, SpiError> {
    Spi::connect(|c| {
        let table = c.select(sql, Some(1), args)?.first();
        if table.is_empty() {
            return Ok(None);
        }
        let datum = table.get_datum_by_ordinal(1)?;
        // SAFETY: a varlena of the row just read, detoasted into SPI's context and copied at once.
        Ok(datum.map(|d| unsafe { <&[u8] as FromDatum>::from_polymorphic_datum(d, false, pg_sys::BYTEAOID) }.unwrap_or_default().to_vec()))
    })
}

/// [`read_bytes`] of a `text` value.
pub fn read_text(sql: &str, args: &[DatumWithOid]) -> Result<Option<String>, SpiError> {
    read_bytes(sql, args).map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Sets `name` for the rest of this transaction (as `SET LOCAL`); returns its value before ('' if
/// it had none).
pub fn set_local(name: &str, value: &str) -> String {
    read_one::<String>(
        "SELECT COALESCE(pg_catalog.current_setting($1, true), ''), pg_catalog.set_config($1, $2, true)",
        &[name.into(), value.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or_default()
}

/// `relid` as SQL names it (`regclass::text`: schema-qualified and quoted as needed).
pub fn table_name(relid: pg_sys::Oid) -> String {
    read_one::<String>("SELECT $1::pg_catalog.regclass::pg_catalog.text", &[relid.into()])
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .unwrap_or_default()
}

/// Runs `f` in a subtransaction: an error inside rolls back only its work and comes back as its
/// message (the caller records it and goes on).
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    subtransaction(f, false).map_err(|(_, message)| message)
}

/// [`in_subtransaction`] for work done on a caller's behalf, inside the caller's statement: a
/// cancel (the caller's `statement_timeout`, `pg_cancel_backend`) is not caught but ends the
/// statement, as it would anywhere else; other errors come back with their SQLSTATE.
pub fn in_subtransaction_cancellable<T>(f: impl FnOnce() -> T) -> Result<T, (PgSqlErrorCode, String)> {
    subtransaction(f, true)
}

fn subtransaction<T>(f: impl FnOnce() -> T, cancellable: bool) -> Result<T, (PgSqlErrorCode, String)> {
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let result = PgTryBuilder::new(AssertUnwindSafe(|| Ok(f()))).catch_others(Err).execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result.map_err(|e| {
            let (code, message) = match &e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => (r.sql_error_code(), r.message().to_owned()),
                CaughtError::RustPanic { ereport, .. } => (ereport.sql_error_code(), ereport.message().to_owned()),
            };
            if cancellable && code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                // Raised again once the subtransaction is gone (left open, the statement's
                // abort would leave the session in an aborted transaction block).
                e.rethrow()
            }
            (code, message)
        })
    }
}

/// Flattens a subtransaction around an SPI result.
pub fn flatten<T>(r: Result<Result<T, pgrx::spi::SpiError>, String>) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e),
    }
}

/// Runs `sql` (no arguments), raising its error with the statement.
pub fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| crate::error::raise(Code::ERRCODE_INTERNAL_ERROR, format!("lightretriever: {e} in {sql}"), None));
}
