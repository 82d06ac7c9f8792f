//! Running a user's code with the user's rights, never ours.
//!
//! A table owner is untrusted: the table's triggers, defaults, index expressions, RLS policies,
//! the key types' casts, comparisons and domain checks are the owner's code. Everything that
//! reads or writes a user's table therefore runs through [`as_owner`]: as the table's owner, in
//! a security-restricted context (no SET ROLE, no temp objects — as autovacuum runs index
//! expressions), with the setting changes that code makes undone afterwards, and with the
//! settings pinned under which key text round-trips (`lr_queue::KEY_TEXT_SETTINGS`).

use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::{raise, Code};

/// The owner of relation `relid` (InvalidOid when it is gone).
pub fn owner_of(relid: pg_sys::Oid) -> pg_sys::Oid {
    Spi::get_one_with_args::<pg_sys::Oid>("SELECT relowner FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1", &[relid.into()])
        .ok()
        .flatten()
        .unwrap_or(pg_sys::InvalidOid)
}

/// Runs `f` as `role` in a security-restricted context, with every setting `f`'s code changes
/// (even session-wide ones) reverted when it returns. The user's code sees the server's default
/// `search_path` (as in a session of its own), not the worker's pinned one. An error inside
/// unwinds to the enclosing (sub)transaction, whose abort restores user, context and settings.
pub fn as_role<T>(role: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    if role == pg_sys::InvalidOid {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, "lightretriever: the table is gone", None);
    }
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32,
        );
        let nest = pg_sys::NewGUCNestLevel();
        let default_path = pg_sys::GetConfigOptionResetString(c"search_path".as_ptr());
        set(c"search_path", default_path);
        nest
    };
    let out = f();
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::SetUserIdAndSecContext(user, context);
    }
    out
}

/// Runs `f` as the owner of `relid` (see [`as_role`]).
pub fn as_owner<T>(relid: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    as_role(owner_of(relid), f)
}

/// Runs `f` with the settings pinned under which keys are written as text and read back
/// (`lr_queue::KEY_TEXT_SETTINGS`); they are restored afterwards.
pub fn with_key_text_settings<T>(f: impl FnOnce() -> T) -> T {
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    for (name, value) in lr_queue::KEY_TEXT_SETTINGS {
        let (name, value) = (CString::new(*name).unwrap(), CString::new(*value).unwrap());
        unsafe { set(&name, value.as_ptr()) };
    }
    let out = f();
    unsafe { pg_sys::AtEOXact_GUC(false, nest) };
    out
}

/// Sets `name` for the current GUC nest level (undone with it, as a function's SET clause is).
unsafe fn set(name: &std::ffi::CStr, value: *const std::ffi::c_char) {
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value,
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
    }
}

/// The role the caller acts as: `SET ROLE` counts, a SECURITY DEFINER function of ours does not.
pub fn caller() -> pg_sys::Oid {
    unsafe { pg_sys::GetOuterUserId() }
}

/// True when `role` owns `relid` (or is a member of its owner, superusers included).
pub fn owns(role: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
    let owner = owner_of(relid);
    owner != pg_sys::InvalidOid && unsafe { pg_sys::has_privs_of_role(role, owner) }
}

/// True when `role` may see the auto-encoding state of `relid` (queue depth, failed keys,
/// errors): it owns the table or may read it.
pub fn may_see(role: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
    owns(role, relid) || unsafe { pg_sys::pg_class_aclcheck(relid, role, pg_sys::ACL_SELECT as pg_sys::AclMode) } == pg_sys::AclResult::ACLCHECK_OK
}

/// The caller must own `relid` (named `table` in the error).
pub fn require_owner(relid: pg_sys::Oid, table: &str) {
    if !owns(caller(), relid) {
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("lightretriever: must be the owner of table {table} to change its auto-encoding"),
            None,
        );
    }
}

/// Whether `relid` may be auto-encoded or read by a fit: refuses what the worker cannot or
/// must not touch — temporary tables (other sessions cannot see them), system catalogs, and
/// the extension's own tables. Returns the relkind.
pub fn require_user_table(relid: pg_sys::Oid, table: &str, kinds: &[char], what: &str) -> char {
    let row = crate::error::row_or_none(Spi::get_three_with_args::<String, String, bool>(
        "SELECT c.relkind::pg_catalog.text, c.relpersistence::pg_catalog.text,
                n.nspname OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog', 'information_schema', 'pg_toast', 'lightretriever']::pg_catalog.name[])
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                            WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                              AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
          WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[relid.into()],
    ));
    let Some((Some(kind), Some(persistence), Some(system))) = row else {
        raise(Code::ERRCODE_UNDEFINED_TABLE, format!("lightretriever: relation {table} does not exist"), None)
    };
    let kind = kind.chars().next().unwrap_or('?');
    if persistence == "t" {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("lightretriever: {table} is a temporary table"),
            Some(&format!("Temporary tables are visible to their own session only; {what} needs a permanent (or unlogged) table.")),
        );
    }
    if system {
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("lightretriever: {table} is a system or extension catalog"),
            Some(&format!("{what} works on user tables only.")),
        );
    }
    if !kinds.contains(&kind) {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("lightretriever: {table} is not a table"),
            Some(&format!("{what} needs a table (or partitioned table).")),
        );
    }
    kind
}
