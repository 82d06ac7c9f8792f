//! Which statement is running: the key under which per-statement answers (the catalog's
//! table, a STABLE function's last result) are kept in a backend.

use pgrx::pg_sys;

/// Identifies one statement's view of the catalog: its start time, the command counter (a
/// table built earlier in the same top-level statement bumps it) and the local transaction id
/// (a `DO` block that COMMITs runs one statement over several transactions, whose command
/// counters start again at 0).
pub type StatementKey = (i64, u32, u32);

pub fn statement_key() -> StatementKey {
    // SAFETY: MyProc is this backend's own PGPROC, valid for the backend's life.
    unsafe {
        #[cfg(not(feature = "pg17"))]
        let lxid = (*pg_sys::MyProc).lxid;
        #[cfg(feature = "pg17")]
        let lxid = (*pg_sys::MyProc).vxid.lxid;
        (pg_sys::GetCurrentStatementStartTimestamp(), pg_sys::GetCurrentCommandId(false), lxid)
    }
}
