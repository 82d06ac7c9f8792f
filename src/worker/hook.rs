//! The utility hook (every backend; the library is preloaded): commands that need a database
//! with no other session first stop that database's drain workers, as TimescaleDB's loader
//! stops its schedulers — otherwise `DROP DATABASE` would fail with "being accessed by other
//! users" while a drain worker is connected. `DROP EXTENSION lightretriever` and
//! `ALTER EXTENSION lightretriever` stop the drain workers of their own database while they run:
//! a batch holds locks on the queues and tables the command drops or rewrites, and a drain
//! taking them in another order deadlocked with it. It also marks the databases that may have the
//! extension (`CREATE EXTENSION lightretriever`, `CREATE DATABASE`) for the launcher.

use std::ffi::CStr;
use std::time::Duration;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

use crate::databases::{mark_at_commit, Pause};

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

pub(super) fn install() {
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

unsafe fn text(s: *const std::ffi::c_char) -> Option<String> {
    (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

/// Whether a DROP or ALTER names this extension.
unsafe fn names_this_extension(stmt: *mut pg_sys::Node) -> bool {
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let s = stmt as *mut pg_sys::DropStmt;
                (*s).removeType == pg_sys::ObjectType::OBJECT_EXTENSION
                    && PgList::<pg_sys::Node>::from_pg((*s).objects).iter_ptr().any(|n| {
                        (*n).type_ == pg_sys::NodeTag::T_String
                            && text((*(n as *mut pg_sys::String)).sval).as_deref() == Some("lightretriever")
                    })
            }
            pg_sys::NodeTag::T_AlterExtensionStmt => {
                text((*(stmt as *mut pg_sys::AlterExtensionStmt)).extname).as_deref() == Some("lightretriever")
            }
            pg_sys::NodeTag::T_AlterExtensionContentsStmt => {
                text((*(stmt as *mut pg_sys::AlterExtensionContentsStmt)).extname).as_deref() == Some("lightretriever")
            }
            _ => false,
        }
    }
}

/// The value of option `name` in a DefElem list, as text.
unsafe fn option(options: *mut pg_sys::List, name: &str) -> Option<String> {
    let list = unsafe { PgList::<pg_sys::DefElem>::from_pg(options) };
    let found = list.iter_ptr().find_map(|d| unsafe {
        (text((*d).defname).as_deref() == Some(name) && !(*d).arg.is_null()).then(|| text(pg_sys::defGetString(d))).flatten()
    });
    found
}

fn database_oid(name: &str) -> Option<pg_sys::Oid> {
    let name = std::ffi::CString::new(name).ok()?;
    let oid = unsafe { pg_sys::get_database_oid(name.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// A database whose owner's rights the current user has: only such a user's command may stop
/// its drain workers (anyone else's fails anyway, and must not pause the pipeline on the way).
fn owned_database(name: &str) -> Option<pg_sys::Oid> {
    let oid = database_oid(name)?;
    let owner = Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.pg_has_role(d.datdba, 'USAGE') FROM pg_catalog.pg_database d WHERE d.oid OPERATOR(pg_catalog.=) $1",
        &[oid.into()],
    );
    (owner == Ok(Some(true))).then_some(oid)
}

/// How long a command waits for the drain workers to end: a batch stuck in a table owner's code
/// ends by the worker's hard deadline (twice `lightretriever.statement_timeout`, plus a second).
fn patience() -> Duration {
    Duration::from_secs(30).max(Duration::from_millis(2 * crate::guc::statement_timeout_ms() as u64 + 5000))
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let stmt = unsafe { (*pstmt).utilityStmt };
    // The database that must have no other session while the command runs, and the one it creates.
    let (exclusive, created, extension): (Option<String>, Option<String>, bool) = unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_DropdbStmt => (text((*(stmt as *mut pg_sys::DropdbStmt)).dbname), None, false),
            pg_sys::NodeTag::T_RenameStmt if (*(stmt as *mut pg_sys::RenameStmt)).renameType == pg_sys::ObjectType::OBJECT_DATABASE => {
                (text((*(stmt as *mut pg_sys::RenameStmt)).subname), None, false)
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let s = stmt as *mut pg_sys::AlterDatabaseStmt;
                (option((*s).options, "tablespace").and(text((*s).dbname)), None, false)
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                let s = stmt as *mut pg_sys::CreatedbStmt;
                (Some(option((*s).options, "template").unwrap_or_else(|| "template1".into())), text((*s).dbname), false)
            }
            pg_sys::NodeTag::T_CreateExtensionStmt => {
                (None, None, text((*(stmt as *mut pg_sys::CreateExtensionStmt)).extname).as_deref() == Some("lightretriever"))
            }
            _ => (None, None, false),
        }
    };
    // Only where the command can succeed: at top level, outside a transaction block (PostgreSQL
    // refuses these commands elsewhere), by the database's owner.
    let top_level = context == pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL && !unsafe { pg_sys::IsTransactionBlock() };
    let _pause = exclusive
        .as_deref()
        .filter(|_| top_level)
        .and_then(owned_database)
        .map(|oid| Pause::stop_drains(oid, patience()));
    // Only the extension's owner (a superuser: the extension is not trusted) may drop or alter it.
    // The pause lasts until the transaction ends: its locks are held until then. An error in
    // the command (below, through the other hooks) ends the transaction, and the pause with it.
    if unsafe { names_this_extension(stmt) } && unsafe { pg_sys::superuser() } {
        Pause::stop_drains(unsafe { pg_sys::MyDatabaseId }, patience()).until_transaction_end();
    }
    unsafe {
        match PREVIOUS {
            // Another extension's hook: its ERROR must unwind through this frame (dropping the
            // pause), not jump over it.
            Some(previous) => pg_sys::ffi::pg_guard_ffi_boundary(|| {
                previous(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }),
            None => pg_sys::standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
        }
    }
    if let Some(oid) = created.as_deref().and_then(database_oid) {
        mark_at_commit(oid);
    }
    if extension {
        mark_at_commit(unsafe { pg_sys::MyDatabaseId });
    }
}
