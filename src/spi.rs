//! SPI helpers shared by every path: quoting, relation names, subtransactions.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::error::{Code, OrRaise};

pub use lr_queue::quote_ident;

/// `relid` as SQL names it (`regclass::text`: schema-qualified and quoted as needed).
pub fn table_name(relid: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::pg_catalog.regclass::pg_catalog.text", &[relid.into()])
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .unwrap_or_default()
}

/// Runs `f` in a subtransaction: an error inside rolls back only its work and comes back as its
/// message (the caller records it and goes on).
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let result = PgTryBuilder::new(AssertUnwindSafe(|| Ok(f())))
            .catch_others(|e| {
                Err(match e {
                    CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_owned(),
                    CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
                })
            })
            .execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result
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
