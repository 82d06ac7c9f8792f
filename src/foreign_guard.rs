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
//!
//! The same guard checks what a scan's name means when the scan is parsed. The name is read
//! just before (`security::name_for_scan`), but a schema swap committed between that lookup and
//! the statement's own would make the name mean another relation (a decoy of the schema's
//! owner). `post_parse_analyze_hook` sees the statement's relations as they were resolved: the
//! first statement parsed in a guarded scan must read the table the scan is for, else it is an
//! error before anything of the other relation's is planned or run.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{raise, Code};

static mut PREVIOUS: pg_sys::get_relation_info_hook_type = None;
static mut PREVIOUS_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;

/// A guarded scan under way.
struct Guard {
    /// The table the scan is for.
    relid: pg_sys::Oid,
    /// Its name, for errors.
    table: String,
    /// What reads it, for errors.
    what: &'static str,
    /// Whether the scan's own statement has been parsed (the statements parsed after it are
    /// those of code it calls).
    parsed: bool,
    /// Whether a foreign table planned for it is an error (not for a fit, which may read one).
    refuse_foreign: bool,
}

thread_local! {
    /// The guarded scans under way, innermost last.
    static GUARDED: RefCell<Vec<Guard>> = const { RefCell::new(Vec::new()) };
}

/// Installs the hooks; once per backend, when the library loads.
pub fn install() {
    unsafe {
        PREVIOUS = pg_sys::get_relation_info_hook;
        pg_sys::get_relation_info_hook = Some(relation_info);
        PREVIOUS_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(parsed);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn parsed(pstate: *mut pg_sys::ParseState, query: *mut pg_sys::Query, jstate: *mut pg_sys::JumbleState) {
    // Claimed before the previous hook runs: a statement that hook runs itself is not the scan's.
    let first = GUARDED.with_borrow_mut(|g| {
        g.last_mut().filter(|g| !g.parsed).map(|g| {
            g.parsed = true;
            (g.relid, g.table.clone(), g.what)
        })
    });
    unsafe {
        if let Some(previous) = PREVIOUS_ANALYZE {
            previous(pstate, query, jstate);
        }
    }
    let Some((relid, table, what)) = first else { return };
    // The scan's FROM names one relation, the first of the range table until rewriting adds
    // policies' and views' relations.
    let read = unsafe {
        let rtable = (*query).rtable;
        if rtable.is_null() || (*rtable).length < 1 {
            None
        } else {
            let rte = (*(*rtable).elements).ptr_value as *mut pg_sys::RangeTblEntry;
            ((*rte).rtekind == pg_sys::RTEKind::RTE_RELATION).then(|| (*rte).relid)
        }
    };
    if read != Some(relid) {
        raise(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("lightretriever: {what}'s scan of {table} would read another relation: the name was changed during the call"),
            Some("A schema or table was renamed while the call ran; call it again."),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_info(root: *mut pg_sys::PlannerInfo, relid: pg_sys::Oid, inhparent: bool, rel: *mut pg_sys::RelOptInfo) {
    unsafe {
        if let Some(previous) = PREVIOUS {
            previous(root, relid, inhparent, rel);
        }
    }
    let Some((table, what)) = GUARDED.with_borrow(|g| g.last().filter(|g| g.refuse_foreign).map(|g| (g.table.clone(), g.what))) else {
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

/// Runs `f`, a scan of `relid` (named `table`) for the caller, with foreign tables refused
/// wherever it plans, and its statement (the first `f` runs) refused unless it reads `relid`.
pub fn scanning<T>(relid: pg_sys::Oid, table: &str, what: &'static str, f: impl FnOnce() -> T) -> T {
    guarded(Guard { relid, table: table.to_owned(), what, parsed: false, refuse_foreign: true }, f)
}

/// Runs `f`, a read of `relid` (named `table`) that may be a foreign table or a view (a fit's),
/// with its statement (the first `f` runs) refused unless it reads `relid`.
pub fn reading<T>(relid: pg_sys::Oid, table: &str, what: &'static str, f: impl FnOnce() -> T) -> T {
    guarded(Guard { relid, table: table.to_owned(), what, parsed: false, refuse_foreign: false }, f)
}

fn guarded<T>(guard: Guard, f: impl FnOnce() -> T) -> T {
    struct Popped;
    impl Drop for Popped {
        // Also when `f` raises: the next statement of the backend is not guarded.
        fn drop(&mut self) {
            GUARDED.with_borrow_mut(|g| g.pop());
        }
    }
    GUARDED.with_borrow_mut(|g| g.push(guard));
    let _popped = Popped;
    f()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// A guarded scan whose name has come to mean another relation (a schema swap committed
    /// between `name_for_scan` and the statement) is refused when the statement is parsed; the
    /// statements the scan's own code runs afterwards are not held to the scan's table.
    #[pg_test]
    fn a_scan_whose_name_means_another_relation_is_refused() {
        Spi::run(
            "CREATE TABLE real_t (id int); CREATE TABLE decoy_t (id int); INSERT INTO decoy_t VALUES (666);
             CREATE VIEW decoy_v AS SELECT id FROM real_t",
        )
        .unwrap();
        let real = Spi::get_one::<pg_sys::Oid>("SELECT 'real_t'::regclass::oid").unwrap().unwrap();
        for decoy in ["decoy_t", "decoy_v"] {
            let refused = crate::spi::in_subtransaction(|| {
                super::scanning(real, "public.real_t", "lr_search", || Spi::get_one::<i32>(&format!("SELECT id FROM {decoy}")))
            })
            .unwrap_err();
            assert!(refused.contains("lr_search's scan of public.real_t would read another relation"), "{decoy}: {refused}");
        }
        let read = super::scanning(real, "public.real_t", "lr_search", || {
            Spi::run("SELECT id FROM real_t").unwrap();
            Spi::get_one::<i32>("SELECT id FROM decoy_t").unwrap()
        });
        assert_eq!(read, Some(666));
        // A fit's read (a view of its own is its table here) is held to it the same way.
        let refused = crate::spi::in_subtransaction(|| super::reading(real, "public.real_t", "a fit", || Spi::run("SELECT id FROM decoy_t")))
            .unwrap_err();
        assert!(refused.contains("a fit's scan of public.real_t would read another relation"), "{refused}");
        let view = Spi::get_one::<pg_sys::Oid>("SELECT 'decoy_v'::regclass::oid").unwrap().unwrap();
        super::reading(view, "public.decoy_v", "a fit", || Spi::run("SELECT id FROM decoy_v")).unwrap();
    }
}
