//! SPI helpers shared by every path: quoting, relation names, subtransactions.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiError, SpiResult, SpiTupleTable};

use crate::error::{Code, OrRaise};

pub use lr_queue::quote_ident;

/// The most statements [`select_kept`] keeps plans of; past it, statements are planned each time.
/// Its texts are this code's constants (a few dozen); the bound is a second guard of the memory.
const MAX_KEPT: usize = 256;

thread_local! {
    /// Plans kept for the backend's life, by statement text and argument types. Leaked, not
    /// dropped: freeing a plan at process exit, after PostgreSQL's own shutdown, is not safe.
    static KEPT: RefCell<HashMap<(&'static str, Vec<pg_sys::Oid>), &'static OwnedPreparedStatement>> = RefCell::new(HashMap::new());
    /// How many statements [`select_kept`] has prepared in this backend (the tests' witness that
    /// a plan is reused, not prepared again).
    static PREPARED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs a read-only statement whose text is fixed (`&'static`: names and values only as `$n`
/// arguments) through a plan kept for the backend's life: parsed and analysed once instead of
/// on every call. PostgreSQL's plan cache still analyses it again whenever the result could
/// differ: a table or function it uses changed, or the search path or the role (row-level
/// security) is not the one it was analysed under. Privileges on the relations, columns and
/// functions it uses are checked on every execution; USAGE on a schema only when it is
/// analysed (the catalogs read here are readable by every role). In `lr_search` these
/// lookups cost more to plan than to run.
pub fn select_kept<'conn>(c: &SpiClient<'conn>, sql: &'static str, limit: Option<i64>, args: &[DatumWithOid]) -> SpiResult<SpiTupleTable<'conn>> {
    let key = (sql, args.iter().map(DatumWithOid::oid).collect::<Vec<_>>());
    // Copied out of the map before running: the statement may call back into this function
    // (a nested lookup), which must find the map free.
    let kept = KEPT.with_borrow(|kept| kept.get(&key).copied());
    let plan = match kept {
        Some(plan) => plan,
        None if KEPT.with_borrow(HashMap::len) >= MAX_KEPT => return c.select(sql, limit, args),
        None => {
            let types: Vec<PgOid> = key.1.iter().map(|&oid| PgOid::from(oid)).collect();
            let plan: &'static OwnedPreparedStatement = Box::leak(Box::new(c.prepare(sql, &types)?.keep()));
            PREPARED.set(PREPARED.get() + 1);
            KEPT.with_borrow_mut(|kept| kept.insert(key, plan));
            plan
        }
    };
    c.select(plan, limit, args)
}

/// The first row's first value of a query that only reads, its plan kept ([`select_kept`]: the
/// text must be fixed). pgrx's `Spi::get_one*` mark the transaction as writing (they assign it a
/// transaction id): a hot standby refuses that, and on a primary every lookup would spend an
/// XID. This runs read-only, in the calling statement's snapshot, as a STABLE function's reads
/// should.
pub fn read_one<A: FromDatum + IntoDatum>(sql: &'static str, args: &[DatumWithOid]) -> Result<Option<A>, SpiError> {
    Spi::connect(|c| select_kept(&c, sql, Some(1), args)?.first().get_one::<A>())
}

/// A type's name for a message: as `format_type` prints PostgreSQL's own types ("integer"), and
/// schema-qualified for any other. Unqualified, a type in the caller's `pg_temp` named like
/// pgvector's `vector` would print as `vector`.
pub fn type_name_for_message(typid: pg_sys::Oid) -> String {
    read_one::<String>(
        "SELECT CASE WHEN t.typnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
                     THEN pg_catalog.format_type(t.oid, NULL)
                     ELSE pg_catalog.format('%I.%I', n.nspname, t.typname) END
           FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace
          WHERE t.oid OPERATOR(pg_catalog.=) $1",
        &[typid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| format!("type {}", typid.to_u32()))
}

/// [`read_one`] for two values.
pub fn read_two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &'static str,
    args: &[DatumWithOid],
) -> Result<(Option<A>, Option<B>), SpiError> {
    Spi::connect(|c| select_kept(&c, sql, Some(1), args)?.first().get_two::<A, B>())
}

/// [`read_one`] for three values.
pub fn read_three<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum, C: FromDatum + IntoDatum>(
    sql: &'static str,
    args: &[DatumWithOid],
) -> Result<(Option<A>, Option<B>, Option<C>), SpiError> {
    Spi::connect(|c| select_kept(&c, sql, Some(1), args)?.first().get_three::<A, B, C>())
}

/// The first row's first value, a `bytea` or `text`, as bytes (None: no row, or NULL). Copied
/// out while SPI's own memory holds the detoasted value, which goes with it: pgrx's `get` copies
/// a value into the parent of SPI's context (the statement's), where a loop over large values —
/// the chunks of a 1 GB table — would pile them all up until the statement ends.
pub fn read_bytes(sql: &'static str, args: &[DatumWithOid]) -> Result<Option<Vec<u8>>, SpiError> {
    Spi::connect(|c| {
        let table = select_kept(&c, sql, Some(1), args)?.first();
        if table.is_empty() {
            return Ok(None);
        }
        let datum = table.get_datum_by_ordinal(1)?;
        // SAFETY: a varlena of the row just read, detoasted into SPI's context and copied at once.
        Ok(datum.map(|d| unsafe { <&[u8] as FromDatum>::from_polymorphic_datum(d, false, pg_sys::BYTEAOID) }.unwrap_or_default().to_vec()))
    })
}

/// [`read_bytes`] of a `text` value.
pub fn read_text(sql: &'static str, args: &[DatumWithOid]) -> Result<Option<String>, SpiError> {
    read_bytes(sql, args).map(|b| b.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Sets `name` for the rest of this transaction (as `SET LOCAL`); returns its value before ('' if
/// it had none).
pub fn set_local(name: &str, value: &str) -> String {
    read_one::<String>(
        "SELECT COALESCE(pg_catalog.current_setting($1, true), ''), pg_catalog.set_config($1, $2, true)",
        &[name.into(), value.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or_default()
}

/// `relid` as SQL names it (`regclass::text`: schema-qualified and quoted as needed).
pub fn table_name(relid: pg_sys::Oid) -> String {
    read_one::<String>("SELECT $1::pg_catalog.regclass::pg_catalog.text", &[relid.into()])
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .unwrap_or_default()
}

/// Runs `f` in a subtransaction: an error inside rolls back only its work and comes back as its
/// message (the caller records it and goes on).
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    subtransaction(f, false).map_err(|(_, message)| message)
}

/// [`in_subtransaction`] for work done on a caller's behalf, inside the caller's statement: a
/// cancel (the caller's `statement_timeout`, `pg_cancel_backend`) is not caught but ends the
/// statement, as it would anywhere else; other errors come back with their SQLSTATE.
pub fn in_subtransaction_cancellable<T>(f: impl FnOnce() -> T) -> Result<T, (PgSqlErrorCode, String)> {
    subtransaction(f, true)
}

fn subtransaction<T>(f: impl FnOnce() -> T, cancellable: bool) -> Result<T, (PgSqlErrorCode, String)> {
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let result = PgTryBuilder::new(AssertUnwindSafe(|| Ok(f()))).catch_others(Err).execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result.map_err(|e| {
            let (code, message) = match &e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => (r.sql_error_code(), r.message().to_owned()),
                CaughtError::RustPanic { ereport, .. } => (ereport.sql_error_code(), ereport.message().to_owned()),
            };
            if cancellable && code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                // Raised again once the subtransaction is gone (left open, the statement's
                // abort would leave the session in an aborted transaction block).
                e.rethrow()
            }
            (code, message)
        })
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

/// How many statements [`select_kept`] keeps plans of in this backend, and how many it has
/// prepared.
#[cfg(any(test, feature = "pg_test"))]
pub fn kept_statements() -> (usize, usize) {
    (KEPT.with_borrow(HashMap::len), PREPARED.get())
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::{kept_statements, select_kept, MAX_KEPT};
    use crate::test_support::*;
    use pgrx::prelude::*;

    fn texts_of(sql: &'static str, args: &[pgrx::datum::DatumWithOid]) -> Vec<String> {
        Spi::connect(|c| select_kept(&c, sql, None, args)?.map(|r| r.get::<String>(1).map(Option::unwrap_or_default)).collect::<Result<Vec<_>, _>>())
            .unwrap()
    }

    /// The second `lr_search` plans none of its catalog lookups again: every one is kept.
    #[pg_test]
    fn lr_search_keeps_the_plans_of_its_lookups() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        Spi::run("SET LOCAL lightretriever.default_model = 'minilm'").unwrap();
        Spi::run("CREATE TABLE kept (id int PRIMARY KEY, emb vector(384))").unwrap();
        Spi::run("INSERT INTO kept SELECT i, pg_catalog.array_fill(i::real, ARRAY[384])::vector FROM generate_series(1, 3) i").unwrap();
        let search = "SELECT count(*) FROM lightretriever.lr_search('kept', 'wing flutter', mode => 'dense')";
        let (kept_before, _) = kept_statements();
        assert_eq!(Spi::get_one::<i64>(search), Ok(Some(3)));
        let (kept, prepared) = kept_statements();
        assert!(kept >= kept_before + 5, "lr_search's lookups are kept: {kept_before} → {kept}");
        assert_eq!(Spi::get_one::<i64>(search), Ok(Some(3)));
        assert_eq!(kept_statements(), (kept, prepared), "the second call prepares nothing");
    }

    /// A kept plan answers as a fresh one would after the table it reads is dropped and made
    /// again with another type, and follows the search path for a name it does not qualify.
    #[pg_test]
    fn kept_plans_follow_the_catalog_and_the_search_path() {
        Spi::run("CREATE SCHEMA kept_a; CREATE SCHEMA kept_b").unwrap();
        Spi::run("CREATE TABLE kept_a.t (v int); INSERT INTO kept_a.t VALUES (1)").unwrap();
        Spi::run("CREATE TABLE kept_b.t (v text); INSERT INTO kept_b.t VALUES ('b')").unwrap();
        let sql = "SELECT v::pg_catalog.text FROM t ORDER BY 1";
        Spi::run("SET LOCAL search_path = kept_a").unwrap();
        assert_eq!(texts_of(sql, &[]), ["1"]);
        Spi::run("SET LOCAL search_path = kept_b").unwrap();
        assert_eq!(texts_of(sql, &[]), ["b"]);
        Spi::run("DROP TABLE kept_b.t; CREATE TABLE kept_b.t (v date); INSERT INTO kept_b.t VALUES ('2026-12-07')").unwrap();
        assert_eq!(texts_of(sql, &[]), ["2026-12-07"]);
    }

    /// The auto-encodings' lookup, kept as a superuser, answers a reader with the rows its
    /// row-level security lets that reader see, and the superuser again with all of them.
    #[pg_test]
    fn kept_plans_follow_the_role() {
        use crate::auto::{encodings, Encodings};
        register_dense_model();
        Spi::run("CREATE TABLE ka (id int PRIMARY KEY, body text); CREATE TABLE kb (id int PRIMARY KEY, body text)").unwrap();
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('ka', 'body', 'minilm'), lightretriever.lr_enable_auto_encoding('kb', 'body', 'minilm')")
            .unwrap();
        Spi::run("CREATE ROLE lr_kept_reader; GRANT SELECT ON ka TO lr_kept_reader").unwrap();
        let names = || encodings(Encodings::All).into_iter().map(|e| e.source_name).collect::<Vec<_>>();
        assert_eq!(names(), ["ka", "kb"]);
        Spi::run("SET LOCAL ROLE lr_kept_reader").unwrap();
        assert_eq!(names(), ["ka"]);
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(names(), ["ka", "kb"]);
    }

    /// A kept statement whose execution runs another kept statement (`lr_encode_query` reads
    /// the catalog through one) works: the cache is not held while a statement runs.
    #[pg_test]
    fn a_kept_statement_may_run_another() {
        register_dense_model();
        Spi::run("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
        let sql = "SELECT vector_dims(lightretriever.lr_encode_query($1, 'minilm'))::pg_catalog.text";
        assert_eq!(texts_of(sql, &["wing flutter".into()]), ["384"]);
        assert_eq!(texts_of(sql, &["boundary layer".into()]), ["384"]);
    }

    /// Past the bound, statements still answer, planned each time, and the cache stops growing.
    #[pg_test]
    fn the_cache_is_bounded() {
        for i in 0..MAX_KEPT + 10 {
            let sql = Box::leak(format!("SELECT ({i} OPERATOR(pg_catalog.+) $1)::pg_catalog.text").into_boxed_str());
            assert_eq!(texts_of(sql, &[1i32.into()]), [(i + 1).to_string()]);
        }
        assert_eq!(kept_statements().0, MAX_KEPT);
    }
}
