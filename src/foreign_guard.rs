//! No foreign table is planned while the extension scans a user's table for a caller.
//! `require_user_table` refuses a table with a foreign partition or child before the scan, but a
//! partition attached after that check (`ATTACH PARTITION` and `INHERIT` take only a
//! SHARE UPDATE EXCLUSIVE lock on the parent, which a reader's ACCESS SHARE does not block)
//! would be planned into the scan, and its wrapper's code would run for the caller. The
//! planner's `get_relation_info_hook` sees every relation the scan plans, its partitions and
//! children included, before the wrapper's planning callbacks run (its handler has been looked
//! up by then, and a table's index expressions folded: the guard is about wrappers, not a
//! table's own code); while a guarded scan is planned (and while code it calls plans statements
//! of its own), a foreign table is an error.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{raise, Code};

static mut PREVIOUS: pg_sys::get_relation_info_hook_type = None;

thread_local! {
    /// The guarded scans under way, innermost last: (table, what reads it), for the error.
    static GUARDED: RefCell<Vec<(String, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// Installs the hook; once per backend, when the library loads.
pub fn install() {
    unsafe {
        PREVIOUS = pg_sys::get_relation_info_hook;
        pg_sys::get_relation_info_hook = Some(relation_info);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_info(root: *mut pg_sys::PlannerInfo, relid: pg_sys::Oid, inhparent: bool, rel: *mut pg_sys::RelOptInfo) {
    unsafe {
        if let Some(previous) = PREVIOUS {
            previous(root, relid, inhparent, rel);
        }
    }
    let Some((table, what)) = GUARDED.with_borrow(|g| g.last().cloned()) else {
        return;
    };
    if unsafe { pg_sys::get_rel_relkind(relid) } as u8 == pg_sys::RELKIND_FOREIGN_TABLE {
        // Named as regclass names it under lr_search's path: schema-qualified, quoted as needed.
        let quoted = |s: *mut std::ffi::c_char| {
            (!s.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(pg_sys::quote_identifier(s)) }.to_string_lossy().into_owned())
        };
        let schema = quoted(unsafe { pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid)) });
        let name = match (schema, quoted(unsafe { pg_sys::get_rel_name(relid) })) {
            (Some(schema), Some(name)) => format!("{schema}.{name}"),
            _ => relid.to_u32().to_string(),
        };
        // A partition or child is an "other member" of its parent; anything else was reached
        // through code the scan runs (a row-level security policy, say).
        if unsafe { (*rel).reloptkind } == pg_sys::RelOptKind::RELOPT_OTHER_MEMBER_REL {
            crate::security::refuse_child(&table, &name, "a foreign table", what);
        }
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("lightretriever: {what}'s scan of {table} reaches the foreign table {name}"),
            Some("The table's own code (a row-level security policy, say) reads it; a foreign table's wrapper would run for the caller."),
        );
    }
}

/// Runs `f`, a scan of `table` for the caller, with foreign tables refused wherever it plans.
pub fn scanning<T>(table: &str, what: &'static str, f: impl FnOnce() -> T) -> T {
    struct Popped;
    impl Drop for Popped {
        // Also when `f` raises: the next statement of the backend is not guarded.
        fn drop(&mut self) {
            GUARDED.with_borrow_mut(|g| g.pop());
        }
    }
    GUARDED.with_borrow_mut(|g| g.push((table.to_owned(), what)));
    let _popped = Popped;
    f()
}
