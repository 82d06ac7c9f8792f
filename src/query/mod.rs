//! The query path, inside the backend with no model: dense lookup (`lr_encode_query`), sparse
//! token counts (`lr_encode_query_sparse`), and one-call search over a table (`lr_search`).

use pgrx::pg_sys;

pub mod dense;
mod search;
pub mod sparse;
#[cfg(any(test, feature = "pg_test"))]
mod sparse_tests;

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
