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
        #[cfg(not(any(feature = "pg17", feature = "pg18")))]
        let lxid = (*pg_sys::MyProc).lxid;
        #[cfg(any(feature = "pg17", feature = "pg18"))]
        let lxid = (*pg_sys::MyProc).vxid.lxid;
        (pg_sys::GetCurrentStatementStartTimestamp(), pg_sys::GetCurrentCommandId(false), lxid)
    }
}

/// One function's last answer, kept for the statement that computed it (STABLE functions give
/// the same answer within a statement): a scan that evaluates `f('constant')` once per row, or
/// an index scan rechecking its ORDER BY expression, computes it once. One entry, so the memory
/// it holds stays bounded whatever the arguments.
pub struct LastAnswer<K, V>(std::cell::RefCell<Option<(StatementKey, K, V)>>);

impl<K, V: Clone> LastAnswer<K, V> {
    pub const fn new() -> Self {
        LastAnswer(std::cell::RefCell::new(None))
    }

    /// The answer kept for `statement`, if its arguments are the ones `matches` accepts.
    pub fn get(&self, statement: StatementKey, matches: impl FnOnce(&K) -> bool) -> Option<V> {
        self.0.borrow().as_ref().and_then(|(at, k, v)| (*at == statement && matches(k)).then(|| v.clone()))
    }

    pub fn set(&self, statement: StatementKey, key: K, value: V) {
        *self.0.borrow_mut() = Some((statement, key, value));
    }
}

/// Answers per key, each valid for the statement that computed it: what a statement read from
/// the catalog, read once however many rows call for it, and read again by the next statement
/// (whose snapshot may see a rebuild, a drop or a rollback).
pub struct PerStatement<K, V>(std::cell::RefCell<std::collections::HashMap<K, (StatementKey, V)>>);

impl<K: std::hash::Hash + Eq, V: Clone> PerStatement<K, V> {
    pub fn new() -> Self {
        PerStatement(std::cell::RefCell::new(std::collections::HashMap::new()))
    }

    /// The answer for `key` in `statement`, computed by `compute` the first time this statement
    /// asks (no borrow is held while it runs: it may raise).
    pub fn get_or_compute(&self, key: K, statement: StatementKey, compute: impl FnOnce() -> V) -> V {
        if let Some(v) = self.0.borrow().get(&key).filter(|(at, _)| *at == statement).map(|(_, v)| v.clone()) {
            return v;
        }
        let v = compute();
        self.0.borrow_mut().insert(key, (statement, v.clone()));
        v
    }
}
