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

use crate::error::{raise, Code, OrRaise};

/// The owner of relation `relid` (InvalidOid when it is gone).
pub fn owner_of(relid: pg_sys::Oid) -> pg_sys::Oid {
    crate::spi::read_one::<pg_sys::Oid>("SELECT relowner FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1", &[relid.into()])
        .ok()
        .flatten()
        .unwrap_or(pg_sys::InvalidOid)
}

/// The server's default `search_path`, kept by the worker before it pins its own session's
/// (which also becomes that session's reset value): what the owner's code sees in the worker
/// when neither the owner nor the database sets one ([`owner_search_path`]).
pub static SERVER_SEARCH_PATH: std::sync::OnceLock<CString> = std::sync::OnceLock::new();

/// The `search_path` the owner's code sees: the one a session of the owner's own starts with —
/// its `ALTER ROLE … [IN DATABASE …] SET search_path`, else the database's, else the server's
/// default (in the worker, which kept it before pinning its own; in a backend, PostgreSQL's
/// default `"$user", public`) — with `pg_temp` put last unless it names it. Never the caller's
/// own: a caller who reads an auto-encoded table (and so its status) could set a path through a
/// schema of theirs (`PGOPTIONS`, `ALTER ROLE … SET`) and shadow a name in the owner's code (an
/// operator, a function, a relation) with code of theirs, which would then run as the owner.
/// `pg_temp`, the caller's temporary schema in a backend, is searched first unless named; last,
/// it is reached only by a name the owner's own path does not resolve.
fn owner_search_path(role: pg_sys::Oid) -> CString {
    let configured = crate::spi::read_one::<String>(
        "SELECT pg_catalog.substr(c, 13) FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c
          WHERE pg_catalog.starts_with(c, 'search_path=')
            AND s.setrole OPERATOR(pg_catalog.=) ANY (ARRAY[$1, 0::pg_catalog.oid])
            AND s.setdatabase OPERATOR(pg_catalog.=) ANY (ARRAY[$2, 0::pg_catalog.oid])
            AND (s.setrole OPERATOR(pg_catalog.<>) 0 OR s.setdatabase OPERATOR(pg_catalog.<>) 0)
          ORDER BY s.setrole OPERATOR(pg_catalog.<>) 0 AND s.setdatabase OPERATOR(pg_catalog.<>) 0 DESC,
                   s.setrole OPERATOR(pg_catalog.<>) 0 DESC
          LIMIT 1",
        &[role.into(), unsafe { pg_sys::MyDatabaseId }.into()],
    )
    .ok()
    .flatten();
    let path = configured.unwrap_or_else(|| match SERVER_SEARCH_PATH.get() {
        Some(server) => server.to_string_lossy().into_owned(),
        None => "\"$user\", public".to_owned(),
    });
    let names_temp = path.split(',').any(|s| s.trim().trim_matches('"') == "pg_temp");
    let path = if names_temp { path } else { format!("{path}, pg_temp") };
    CString::new(path).unwrap_or_else(|_| c"\"$user\", public, pg_temp".to_owned())
}

/// Runs `f` as `role` in a security-restricted context, with every setting `f`'s code changes
/// (even session-wide ones) reverted when it returns. The user's code sees the owner's own
/// `search_path` ([`owner_search_path`]: as in a session of its own), never the worker's pinned
/// one nor the caller's. An error inside unwinds to the enclosing (sub)transaction, whose abort
/// restores user, context and settings.
pub fn as_role<T>(role: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    if role == pg_sys::InvalidOid {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, "lightretriever: the table is gone", None);
    }
    // Read as the caller, before the switch (the catalog is readable by every role).
    let path = owner_search_path(role);
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32,
        );
        let nest = pg_sys::NewGUCNestLevel();
        set(c"search_path", path.as_ptr());
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

/// Runs `read` (a read of `relid`'s rows) as the table's owner ([`as_owner`]) on behalf of
/// `reader` when the reader owns the table (or is a member of its owner, or a superuser); None
/// for any other reader, whose session must never run code of the owner's as the owner. Any
/// statement on the table would: a forced row-level security policy runs, and planning alone
/// runs the owner's functions that it folds (immutable ones with constant arguments) in index
/// expressions and predicates, extended statistics expressions, CHECK constraints and partition
/// keys. There that code could delay the reader's statement as long as it likes, read its
/// session's settings and uncommitted rows, and reach its temporary schema through a name the
/// owner's own path leaves open (a temporary view of the reader's would then run the reader's
/// functions as the owner).
pub fn read_as_owner_for<T>(reader: pg_sys::Oid, relid: pg_sys::Oid, read: impl FnOnce() -> T) -> Option<T> {
    owns(reader, relid).then(|| as_owner(relid, read))
}

/// Runs `f` with the settings pinned under which keys are written as text and read back
/// (`lr_queue::KEY_TEXT_SETTINGS`); they are restored afterwards.
pub fn with_key_text_settings<T>(f: impl FnOnce() -> T) -> T {
    let settings: Vec<(CString, CString)> =
        lr_queue::KEY_TEXT_SETTINGS.iter().map(|(n, v)| (CString::new(*n).unwrap(), CString::new(*v).unwrap())).collect();
    with_settings(&settings, f)
}

/// Runs `f` with `settings` (name, value) in force; they are restored afterwards, whatever `f`
/// set meanwhile.
pub fn with_settings<T>(settings: &[(CString, CString)], f: impl FnOnce() -> T) -> T {
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    for (name, value) in settings {
        unsafe { set(name, value.as_ptr()) };
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

/// The role that called us: the current user. The extension's functions are SECURITY INVOKER
/// and take the extension owner's rights only inside [`elevated`], so this is the role
/// PostgreSQL's own checks would use: a SECURITY DEFINER function of a user's calls us as that
/// user, and a user's trigger that the worker fires (or a policy the status view evaluates)
/// calls us as the table's owner — never with the identity of whoever started the session.
pub fn caller() -> pg_sys::Oid {
    unsafe { pg_sys::GetUserId() }
}

/// Runs `f` as the extension's owner (a superuser): the catalog, queue and trigger work that no
/// ordinary role may do itself. `f` must not evaluate anything of a user's (see [`as_owner`]).
/// Names in `f` resolve through `pg_catalog, pg_temp` only, whatever path the caller set (every
/// entry point pins that path too; this holds where one forgets), as a function's SET clause
/// would: the caller's path is back afterwards, other settings `f` makes stay.
pub fn elevated<T>(f: impl FnOnce() -> T) -> T {
    let owner = crate::spi::read_one::<pg_sys::Oid>("SELECT extowner FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'lightretriever'",
        &[],
    )
    .ok()
    .flatten()
    .unwrap_or(pg_sys::BOOTSTRAP_SUPERUSERID.into());
    require_superuser_owner(owner, "the extension lightretriever");
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let nest = unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        set(c"search_path", c"pg_catalog, pg_temp".as_ptr());
        nest
    };
    let out = f();
    unsafe {
        pg_sys::AtEOXact_GUC(true, nest);
        pg_sys::SetUserIdAndSecContext(user, context);
    }
    out
}

/// Raises unless `owner` (of the extension, or of the model catalog) is a superuser. Elevated
/// work runs with the extension owner's rights, and the encoder worker loads whatever paths the
/// model catalog's rows name: once an administrator takes superuser away from that role, the
/// role could write those rows itself, so neither is done for it any more.
pub fn require_superuser_owner(owner: pg_sys::Oid, what: &str) {
    if !unsafe { pg_sys::superuser_arg(owner) } {
        let name = unsafe { pg_sys::GetUserNameFromId(owner, true) };
        let name = if name.is_null() { format!("{}", owner.to_u32()) } else { unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned() };
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("lightretriever: {what} is owned by role \"{name}\", which is not a superuser"),
            Some("The model catalog names files the encoder worker loads, so only a superuser may own it: make the role a superuser again, or reinstall the extension as one."),
        );
    }
}

/// The table's name as SQL names it, schema-qualified and quoted (None when it is gone). From
/// the catalog caches, which a statement's name lookup uses too: an SPI query would read the
/// catalog as of the calling statement's snapshot in a stable function (the status view), and
/// miss a rename committed since.
fn qualified_name(relid: pg_sys::Oid) -> Option<String> {
    unsafe {
        let relation = pg_sys::get_rel_name(relid);
        let schema = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if relation.is_null() || schema.is_null() {
            return None;
        }
        let quoted = pg_sys::quote_qualified_identifier(schema, relation);
        Some(std::ffi::CStr::from_ptr(quoted).to_string_lossy().into_owned())
    }
}

/// How [`pin_name`] takes its locks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IfLocked {
    /// Waits for the locks.
    Wait,
    /// Gives up at once (None) when another transaction holds the table; errors (55P03) when
    /// one holds its schema's catalog row.
    GiveUp,
}

/// A name of `relid` that keeps meaning it until the transaction ends; None when the table is
/// gone, or with [`IfLocked::GiveUp`] when another transaction holds it. Run as a superuser (it
/// locks a catalog row).
///
/// Statements on a user's table go by its name (SQL has no other way; Citus propagates them by
/// their text), and a name read earlier may have come to mean another table: renaming a schema
/// locks none of the tables in it, so a role that owns the table's schema but not the table can
/// swap two schema names between the moment the name was read and the statement. Run as the
/// table's owner or as superuser, the statement would then plan the other table, folding its
/// owner's immutable functions (partition keys, index expressions) with those rights, and the
/// worker would write the vectors there (two hostile reviews, then the worker's own test). So:
/// the table is locked by oid in `lockmode` (its renames and moves wait); its schema's catalog
/// row is locked FOR SHARE (renaming or dropping the schema waits); the catalog cache is
/// brought up to date, so that a rename committed while we waited is seen; the name is read then.
pub fn pin_name(relid: pg_sys::Oid, lockmode: u32, wait: IfLocked) -> Option<String> {
    let lockmode = lockmode as pg_sys::LOCKMODE;
    match wait {
        IfLocked::Wait => unsafe { pg_sys::LockRelationOid(relid, lockmode) },
        IfLocked::GiveUp => {
            if !unsafe { pg_sys::ConditionalLockRelationOid(relid, lockmode) } {
                return None;
            }
        }
    }
    let schema = unsafe { pg_sys::get_rel_namespace(relid) };
    if schema == pg_sys::InvalidOid {
        return None;
    }
    let sql = match wait {
        IfLocked::Wait => "SELECT FROM pg_catalog.pg_namespace WHERE oid OPERATOR(pg_catalog.=) $1 FOR SHARE",
        IfLocked::GiveUp => "SELECT FROM pg_catalog.pg_namespace WHERE oid OPERATOR(pg_catalog.=) $1 FOR SHARE NOWAIT",
    };
    let locked = pgrx::Spi::connect_mut(|c| c.update(sql, None, &[schema.into()]).map(|t| t.len())).or_raise(Code::ERRCODE_INTERNAL_ERROR);
    // No rename of the schema can commit from here on: a cache refreshed now stays true.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    if locked != 1 || unsafe { pg_sys::get_rel_namespace(relid) } != schema {
        return None;
    }
    qualified_name(relid)
}

/// The names of `relid`'s columns `attnums`' types, schema-qualified (`pg_catalog` ones too, so
/// that no path resolves them), that keep meaning those types until the transaction ends; None
/// when a column is gone. Errors (55P03) when another transaction holds a type's catalog row or
/// its schema's.
/// Run as a superuser after [`pin_name`] pinned the table (whose lock keeps the columns' types).
///
/// The statements the worker runs as the table's owner turn key text back into the key types by
/// name (`k1::s.k`), and a name read before the batch may mean another type by now: a schema
/// swap would make it a decoy domain whose CHECK then runs as the owner (a hostile review ran
/// this). So: the types' rows (and their element types', whose names an array type's name
/// shows) and their schemas' rows are locked FOR SHARE NOWAIT, the caches brought up to date,
/// and the names read then. Types in `pg_catalog` are only a superuser's to rename.
pub fn pin_key_types(relid: pg_sys::Oid, attnums: &[i16]) -> Option<Vec<String>> {
    let types: Vec<(pg_sys::Oid, i32)> = attnums
        .iter()
        .map(|&attnum| {
            let (mut typid, mut typmod, mut collation) = (pg_sys::InvalidOid, -1, pg_sys::InvalidOid);
            unsafe { pg_sys::get_atttypetypmodcoll(relid, attnum, &mut typid, &mut typmod, &mut collation) };
            (typid, typmod)
        })
        .collect();
    let oids: Vec<pg_sys::Oid> = types.iter().map(|(t, _)| *t).collect();
    pgrx::Spi::connect_mut(|c| {
        let named = "SELECT t.oid FROM pg_catalog.pg_type t WHERE t.oid OPERATOR(pg_catalog.=) ANY ($1)
                      UNION SELECT t.typelem FROM pg_catalog.pg_type t
                       WHERE t.oid OPERATOR(pg_catalog.=) ANY ($1) AND t.typelem OPERATOR(pg_catalog.<>) 0";
        c.update(
            &format!(
                "SELECT FROM pg_catalog.pg_type t WHERE t.oid IN ({named}) AND t.typnamespace OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace
                  FOR SHARE NOWAIT"
            ),
            None,
            &[oids.clone().into()],
        )?;
        c.update(
            &format!(
                "SELECT FROM pg_catalog.pg_namespace n
                  WHERE n.oid IN (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid IN ({named}))
                    AND n.oid OPERATOR(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace
                  FOR SHARE NOWAIT"
            ),
            None,
            &[oids.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(())
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    // No rename of a type or its schema can commit from here on: names read now stay true.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    types
        .into_iter()
        .map(|(typid, typmod)| {
            if typid == pg_sys::InvalidOid {
                return None;
            }
            let flags = (pg_sys::FORMAT_TYPE_TYPEMOD_GIVEN | pg_sys::FORMAT_TYPE_FORCE_QUALIFY) as pg_sys::bits16;
            let name = unsafe { pg_sys::format_type_extended(typid, typmod, flags) };
            Some(unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// A name of `relid` read after locking the table by oid (AccessShareLock, as a read takes it;
/// the caller's `lock_timeout` bounds the wait), for a read that follows at once and may run
/// where no catalog row can be locked ([`pin_name`]): a read-only transaction, a standby. A
/// schema swap could then redirect the read only by committing between this lookup and the
/// read's own, where nothing of a user's runs; a name read earlier, before a wait, could mean
/// another table by now.
pub fn current_name(relid: pg_sys::Oid) -> Option<String> {
    unsafe {
        pg_sys::LockRelationOid(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        // The lock call skips this when the transaction held the lock already.
        pg_sys::AcceptInvalidationMessages();
    }
    qualified_name(relid)
}

/// [`current_name`] for a scan of a user's table by a caller's call (`lr_search`, `lr_rerank`),
/// read just before the scan's statement: a name read at the start of the call, before its
/// catalog reads and lookups (which can wait for locks), could mean another relation by then
/// if the table's schema was renamed meanwhile. An error when the table is gone.
pub fn name_for_scan(relid: pg_sys::Oid) -> String {
    current_name(relid).unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_TABLE, "lightretriever: the table to scan is gone", None))
}

/// True when `role` owns `relid` (or is a member of its owner, superusers included).
pub fn owns(role: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
    let owner = owner_of(relid);
    owner != pg_sys::InvalidOid && unsafe { pg_sys::has_privs_of_role(role, owner) }
}

/// True when `role` may see the keys and errors of `relid`'s auto-encoding (failed rows, error
/// messages): it owns the table. Readers' row-level security cannot be applied to a key list.
pub fn may_see(role: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
    owns(role, relid)
}

/// True when `role` may see that `relid` is auto-encoded and how far (catalog row, counts,
/// waiting for the queue): it owns the table or may read it.
pub fn may_read(role: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
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

/// Whether `relid` may be auto-encoded or read by a fit: refuses what must not be touched —
/// system catalogs and the extension's own tables — and temporary tables unless `temporary_ok`
/// (a fit reads in the caller's own session; the worker cannot see another session's).
/// A partitioned table's partitions, and with `reads_children` an inherited table's children,
/// must be of `kinds` too. Returns the relkind.
pub fn require_user_table(relid: pg_sys::Oid, table: &str, kinds: &[char], what: &str, temporary_ok: bool, reads_children: bool) -> char {
    let row = crate::error::row_or_none(crate::spi::read_three::<String, String, bool>(
        "SELECT c.relkind::pg_catalog.text, c.relpersistence::pg_catalog.text,
                n.nspname OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog', 'information_schema', 'pg_toast', 'lightretriever', 'lightretriever_queues']::pg_catalog.name[])
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
    if persistence == "t" && !temporary_ok {
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
    if kind != 'p' && !reads_children {
        return kind;
    }
    // A scan of the table reads its partitions and inheritance children too: each must be of a
    // kind allowed here (a foreign partition would run its wrapper for the caller).
    let kinds_text: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let child = crate::error::row_or_none(crate::spi::read_two::<String, String>(
        "WITH RECURSIVE tree(relid) AS (
             SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) $1
             UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent OPERATOR(pg_catalog.=) t.relid)
         SELECT c.oid::pg_catalog.regclass::pg_catalog.text, c.relkind::pg_catalog.text
           FROM tree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.relid
          WHERE NOT c.relkind::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2)
          ORDER BY 1 LIMIT 1",
        &[relid.into(), kinds_text.into()],
    ));
    if let Some((Some(child), child_kind)) = child {
        refuse_child(table, &child, if child_kind.as_deref() == Some("f") { "a foreign table" } else { "not a table" }, what);
    }
    kind
}

/// The error for a partition or child of `table` that is `which` ("a foreign table", "not a
/// table"): raised by the check before a scan, and by the planner's guard during it.
pub fn refuse_child(table: &str, child: &str, which: &str, what: &str) -> ! {
    raise(
        Code::ERRCODE_WRONG_OBJECT_TYPE,
        format!("lightretriever: {table} has a partition or child {child} that is {which}"),
        Some(&format!("{what} reads the table with its partitions and children, which must be tables too.")),
    )
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::*;
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    /// Work as the extension's owner resolves names through pg_catalog and pg_temp only, whatever
    /// path the caller set; the caller's path is back afterwards, and a setting made inside stays
    /// (as with a function's SET clause).
    #[pg_test]
    fn elevated_work_resolves_names_through_pg_catalog_only() {
        Spi::run("SET LOCAL search_path = public, \"$user\"").unwrap();
        let inside = crate::security::elevated(|| {
            Spi::run("SET LOCAL extra_float_digits = 2").unwrap();
            Spi::get_one::<String>("SELECT pg_catalog.current_setting('search_path')").unwrap().unwrap()
        });
        assert_eq!(inside, "pg_catalog, pg_temp");
        assert_eq!(Spi::get_one::<String>("SELECT current_setting('search_path')").unwrap().unwrap(), "public, \"$user\"");
        assert_eq!(Spi::get_one::<String>("SELECT current_setting('extra_float_digits')").unwrap().unwrap(), "2");
    }

    /// The backend half of issue 11's escalations: a key of the owner's enum type with a cast
    /// to json and a domain key with a trap CHECK. The delete trigger (SECURITY DEFINER) once
    /// built `jsonb_build_object('k', OLD.k)`, running the cast as the superuser; the retry
    /// cast `(row_key->>'k')::domain`, running the check as the superuser. Neither may happen.
    #[pg_test]
    fn the_owners_casts_and_checks_never_run_as_superuser() {
        register_dense_model();
        Spi::run(
            "CREATE ROLE lr_mallory;
             CREATE SCHEMA mallory AUTHORIZATION lr_mallory;
             SET LOCAL ROLE lr_mallory;
             CREATE TABLE mallory.log (who name, super boolean);
             GRANT INSERT ON mallory.log TO PUBLIC;
             CREATE FUNCTION mallory.trap() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO mallory.log VALUES (current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user));
               BEGIN EXECUTE 'ALTER ROLE lr_mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
               RETURN true;
             END $$;
             CREATE TYPE mallory.color AS ENUM ('red', 'green');
             CREATE FUNCTION mallory.to_json(mallory.color) RETURNS json LANGUAGE plpgsql AS $$
             BEGIN PERFORM mallory.trap(); RETURN '1'::json; END $$;
             CREATE CAST (mallory.color AS json) WITH FUNCTION mallory.to_json(mallory.color);
             CREATE FUNCTION mallory.to_jsonb(mallory.color) RETURNS jsonb LANGUAGE plpgsql AS $$
             BEGIN PERFORM mallory.trap(); RETURN '1'::jsonb; END $$;
             CREATE CAST (mallory.color AS jsonb) WITH FUNCTION mallory.to_jsonb(mallory.color);
             CREATE FUNCTION mallory.to_text(mallory.color) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN PERFORM mallory.trap(); RETURN 'red'; END $$;
             CREATE CAST (mallory.color AS text) WITH FUNCTION mallory.to_text(mallory.color);
             CREATE DOMAIN mallory.code AS text CHECK (mallory.trap());
             CREATE TABLE mallory.colors (k mallory.color PRIMARY KEY, body text);
             CREATE TABLE mallory.codes (k mallory.code PRIMARY KEY, body text);
             INSERT INTO mallory.colors VALUES ('red', 'a red text'), ('green', 'a green text');
             INSERT INTO mallory.codes VALUES ('c1', 'code one'), ('c2', 'code two');
             SELECT lightretriever.lr_enable_auto_encoding('mallory.colors', 'body', 'minilm');
             SELECT lightretriever.lr_enable_auto_encoding('mallory.codes', 'body', 'minilm');
             UPDATE mallory.colors SET body = 'changed' WHERE k = 'red';
             DELETE FROM mallory.colors WHERE k = 'green';
             DELETE FROM mallory.codes WHERE k = 'c1';
             RESET ROLE;",
        )
        .unwrap();
        // As the worker would after max_retries failures (no worker runs in this cluster).
        let queue = Spi::get_one::<String>(
            "SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = 'mallory.codes'::regclass",
        )
        .unwrap()
        .unwrap();
        Spi::run(&format!("UPDATE lightretriever_queues.\"{queue}\" SET failed_at = now(), attempts = 3, last_error = 'boom'")).unwrap();
        Spi::run("SET LOCAL ROLE lr_mallory").unwrap();
        let failed = Spi::get_one::<pgrx::JsonB>("SELECT row_key FROM lightretriever.lr_failed_items").unwrap().unwrap().0;
        assert_eq!(failed, serde_json::json!({"k": "c2"}));
        assert_eq!(Spi::get_one::<i64>("SELECT lightretriever.lr_retry_failed('mallory.codes')").unwrap(), Some(1));
        Spi::run("TRUNCATE mallory.colors; RESET ROLE").unwrap();
        // Superusers' reads of the views run nothing of the owner's as superuser either.
        count("SELECT count(*) FROM lightretriever.lr_encoding_status");
        count("SELECT count(*) FROM lightretriever.lr_failed_items");
        assert_eq!(count("SELECT count(*) FROM mallory.log WHERE who <> 'lr_mallory' OR super"), 0);
        assert_eq!(Spi::get_one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = 'lr_mallory'").unwrap(), Some(false));
        assert!(count("SELECT count(*) FROM mallory.log") > 0, "the owner's own inserts ran its checks");
    }

    /// The queue holds keys as text, readable by superusers only; the views show a role the
    /// tables it owns or may read.
    #[pg_test]
    fn queues_are_private_and_views_show_only_visible_tables() {
        register_dense_model();
        Spi::run(
            "CREATE ROLE lr_owner; CREATE ROLE lr_other;
             GRANT CREATE ON SCHEMA public TO lr_owner;
             SET LOCAL ROLE lr_owner;
             CREATE TABLE owned (id int PRIMARY KEY, body text);
             INSERT INTO owned VALUES (1, 'x');
             SELECT lightretriever.lr_enable_auto_encoding('owned', 'body', 'minilm');
             RESET ROLE;",
        )
        .unwrap();
        let queue = Spi::get_one::<String>("SELECT queue_table::text FROM lightretriever.lr_auto_encodings").unwrap().unwrap();
        assert_eq!(count(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\" WHERE key = ARRAY['1']")), 1);
        Spi::run("SET LOCAL ROLE lr_other").unwrap();
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_encoding_status"), 0);
        let denied = error_of(&format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\""));
        assert!(denied.contains("permission denied"), "{denied}");
        Spi::run("RESET ROLE; GRANT SELECT ON owned TO lr_other; SET LOCAL ROLE lr_other").unwrap();
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_encoding_status"), 1, "readers of the table see it");
        Spi::run("RESET ROLE; SET LOCAL ROLE lr_owner").unwrap();
        assert_eq!(count("SELECT pending FROM lightretriever.lr_encoding_status"), 1);
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn temporary_tables_and_catalogs_are_refused() {
        register_dense_model();
        Spi::run("CREATE TEMP TABLE scratch (id int PRIMARY KEY, body text)").unwrap();
        assert_eq!(
            error_of("SELECT lightretriever.lr_enable_auto_encoding('scratch', 'body', 'minilm')"),
            "lightretriever: scratch is a temporary table"
        );
        assert_eq!(
            error_of("SELECT lightretriever.lr_enable_auto_encoding('lightretriever.lr_models', 'path', 'minilm')"),
            "lightretriever: lightretriever.lr_models is a system or extension catalog"
        );
        assert_eq!(
            error_of("SELECT lightretriever.lr_enable_auto_encoding('pg_catalog.pg_description', 'description', 'minilm')"),
            "lightretriever: pg_description is a system or extension catalog"
        );
        // A queue (no member of the extension, in its own schema) is the extension's too.
        Spi::run(
            "CREATE TABLE owned (id int PRIMARY KEY, body text);
             SELECT lightretriever.lr_enable_auto_encoding('owned', 'body', 'minilm')",
        )
        .unwrap();
        let queue = Spi::get_one::<String>("SELECT 'lightretriever_queues.' || queue_table FROM lightretriever.lr_auto_encodings").unwrap().unwrap();
        assert_eq!(
            error_of(&format!("SELECT lightretriever.lr_fit_query_table('minilm', '{queue}', 'last_error')")),
            format!("lightretriever: {queue} is a system or extension catalog")
        );
    }
}
