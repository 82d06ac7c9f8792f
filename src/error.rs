//! Raising PostgreSQL errors with an SQLSTATE, a message naming the cause, and a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub use pgrx::PgSqlErrorCode as Code;

/// Raises `ERROR` (the transaction aborts; the backend lives on).
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "lightretriever");
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Errors from the pgrx-free crates become SQL errors with a suitable SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self, code: PgSqlErrorCode) -> T;
}

impl<T, E: std::fmt::Display> OrRaise<T> for Result<T, E> {
    fn or_raise(self, code: PgSqlErrorCode) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(code, format!("lightretriever: {e}"), None),
        }
    }
}

pub fn require_superuser(what: &str) {
    if !unsafe { pgrx::pg_sys::superuser() } {
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("lightretriever: only superusers may {what}"),
            Some("Models are files read by the server process; registering and building them is an administrator's task."),
        );
    }
}

/// Refuses work that writes the catalog on a hot standby, before it starts (a build would encode
/// the whole vocabulary, then fail on its first INSERT).
pub fn require_primary(what: &str) {
    if unsafe { pgrx::pg_sys::RecoveryInProgress() } {
        raise(
            Code::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("lightretriever: a standby cannot {what}"),
            Some("Do it on the primary: the standby serves the result once it has replayed it."),
        );
    }
}

/// SPI's single-row getters report "no row" as an error; here it is `None`. Other SPI errors
/// are raised.
pub fn row_or_none<T>(result: Result<T, pgrx::spi::SpiError>) -> Option<T> {
    match result {
        Ok(row) => Some(row),
        Err(pgrx::spi::SpiError::InvalidPosition) => None,
        Err(e) => raise(Code::ERRCODE_INTERNAL_ERROR, format!("lightretriever: {e}"), None),
    }
}

/// The value of a non-STRICT function's argument that must not be NULL: 22004 naming it
/// (pgrx would otherwise answer XX000 with a Rust backtrace).
pub fn required<T>(value: Option<T>, argument: &str) -> T {
    value.unwrap_or_else(|| {
        raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("lightretriever: argument \"{argument}\" must not be NULL"), None)
    })
}
