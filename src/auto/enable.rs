//! `lr_enable_auto_encoding` / `lr_disable_auto_encoding`, the backfill, `lr_enqueue_missing`,
//! `lr_retry_failed`.

use pgrx::prelude::*;
use pgrx::search_path;

use crate::error::{raise, required, row_or_none, Code, OrRaise};
use crate::security::{as_owner, elevated, pin_name, read_as_owner_for, require_user_table, with_key_text_settings, IfLocked};
use crate::spi::{quote_ident, run, set_local};

use super::*;


/// Keeps `text_column` of `source` encoded: adds `<text_column>_embedding vector(d)` (and
/// `<text_column>_sparse sparsevec(vocab)` with a sparse model), a queue, and triggers, and
/// enqueues every row with a non-NULL text. The background worker does the encoding.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_enable_auto_encoding(
    source: Option<pgrx::PgRelation>,
    text_column: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    sparse_model: default!(Option<&str>, "NULL"),
    batch_size: default!(Option<i32>, 32),
) {
    let text_column = required(text_column, "text_column");
    let batch_size = required(batch_size, "batch_size");
    let (source, table) = owned_table(source);
    let kind = require_user_table(source, &table, &['r', 'p'], "auto-encoding", false, false);
    let distributed = citus_distributed(source, &table);
    // Citus runs the DDL below on every shard; the function commands after it must then go
    // over the same connections (its own hint), for the rest of this call.
    let modify_mode = distributed.then(|| set_local("citus.multi_shard_modify_mode", "sequential"));
    if !(1..=1024).contains(&batch_size) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: batch_size must be between 1 and 1024", None);
    }
    // Two enables of one table, or an enable racing a writer's DDL, wait for each other here;
    // the name that the DDL below goes by keeps meaning this table.
    elevated(|| pin_source_name(source, &table, pg_sys::ShareRowExclusiveLock));
    run(&format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"));
    if encoding_of(source).is_some() {
        raise(
            Code::ERRCODE_DUPLICATE_OBJECT,
            format!("lightretriever: {table} is already auto-encoded"),
            Some("Disable it first with lightretriever.lr_disable_auto_encoding."),
        );
    }
    let Some(text_attnum) = attnum_of(source, text_column) else {
        raise(Code::ERRCODE_UNDEFINED_COLUMN, format!("lightretriever: {table} has no column \"{text_column}\""), None)
    };
    let text = column(source, text_attnum).expect("the column exists");
    if !TEXT_TYPES.contains(&text.type_oid) {
        raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("lightretriever: column \"{text_column}\" of {table} is {}, not text", text.type_name()),
            None,
        );
    }
    // A BEFORE trigger sees a generated column as NULL (PostgreSQL computes it afterwards), and
    // PostgreSQL 15 fires `UPDATE OF` a generated column on every update: the stale-vector
    // trigger would clear vectors that nothing re-encodes.
    if text.generated {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("lightretriever: column \"{text_column}\" of {table} is a generated column"),
            Some("Generated columns are computed after BEFORE triggers, so a changed text could not clear its stale vector. Auto-encode a plain text column (filled by the application, or by your own BEFORE trigger named to sort before lr_auto_encoding_clear)."),
        );
    }
    let (key_columns, key_attnums) = primary_key(source);
    if key_columns.is_empty() {
        raise(
            Code::ERRCODE_INVALID_TABLE_DEFINITION,
            format!("lightretriever: {table} has no primary key"),
            Some("The queue names rows by primary key; add one (ALTER TABLE ... ADD PRIMARY KEY)."),
        );
    }
    let model = crate::guc::resolve_model(model);
    // The models stay registered until this transaction ends (a concurrent drop waits).
    let info = elevated(|| crate::catalog::use_model(&model));
    let sparse_info = sparse_model.map(|m| {
        let i = elevated(|| crate::catalog::use_model(m));
        crate::catalog::require_lm_head(m, &i);
        i
    });
    let vector_column = format!("{text_column}_embedding");
    let sparse_column = sparse_model.map(|_| format!("{text_column}_sparse"));
    for col in std::iter::once(&vector_column).chain(sparse_column.iter()) {
        if attnum_of(source, col).is_some() || col.len() > 63 {
            raise(
                Code::ERRCODE_DUPLICATE_COLUMN,
                format!("lightretriever: {table} already has a column \"{col}\" (or the name is over 63 bytes)"),
                Some("Rename or drop it; lr_enable_auto_encoding adds <text_column>_embedding and <text_column>_sparse."),
            );
        }
    }
    run(&format!("ALTER TABLE {table} ADD COLUMN {} {}({})", quote_ident(&vector_column), crate::pgvector::pgvector_type("vector"), info.hidden_size));
    if let (Some(col), Some(si)) = (&sparse_column, &sparse_info) {
        run(&format!("ALTER TABLE {table} ADD COLUMN {} {}({})", quote_ident(col), crate::pgvector::pgvector_type("sparsevec"), si.vocab_size));
    }
    if !distributed {
        // Vectors inline: pgvector's types default to out-of-line (TOAST) storage once a row
        // passes 2 kB (384 dimensions and a SPLADE vector do), and every search then reads each
        // candidate's vectors through the TOAST index (half of lr_search's time, docs/bench).
        // MAIN keeps them in the row unless it would not fit a page. Partitions follow. (Citus
        // does not propagate SET STORAGE.)
        let columns: Vec<String> = std::iter::once(&vector_column).chain(sparse_column.iter()).map(|c| format!("ALTER COLUMN {} SET STORAGE MAIN", quote_ident(c))).collect();
        run(&format!("ALTER TABLE {table} {}", columns.join(", ")));
    }
    let vector_attnum = attnum_of(source, &vector_column).expect("just added");
    let sparse_attnum = sparse_column.as_deref().map(|c| attnum_of(source, c).expect("just added"));
    // The owner's own DDL is done: from here on, the extension's catalog, queue and triggers.
    elevated(|| record_auto_encoding(source, text_column, &key_columns, key_attnums, text_attnum, vector_attnum, sparse_attnum, &model, sparse_model, &vector_column, sparse_column.as_deref(), batch_size));
    let enc = encoding_of(source).expect("just recorded");
    debug_assert_eq!(enc.plain, kind == 'r');
    if enc.distributed {
        // The owner's index of the rows waiting for their vectors, on every shard.
        run(&enc.statements().create_pending_index());
        let waiting = pending_rows(&enc);
        pgrx::notice!("lightretriever: {waiting} rows of {table} wait for encoding by \"{}\" (a Citus table: the coordinator's workers encode them)", enc.model);
    } else {
        let enqueued = backfill(&enc, false);
        pgrx::notice!("lightretriever: enqueued {enqueued} rows of {table} for encoding by \"{}\"", enc.model);
    }
    if let Some(old) = modify_mode {
        set_local("citus.multi_shard_modify_mode", &old);
    }
    // The launcher keeps a drain worker in this database once this commits.
    crate::databases::mark_at_commit(unsafe { pg_sys::MyDatabaseId });
    if !crate::guc::workers_registered() {
        pgrx::warning!(
            "lightretriever: no encoder workers run on this server (lightretriever not in shared_preload_libraries, or lightretriever.workers = 0); rows stay queued until they do"
        );
    }
}

/// Whether `source` is a hash-distributed Citus table (auto-encoded from the coordinator: the
/// BEFORE trigger that clears a changed row's vectors runs on its shard, and the coordinator's
/// drain worker finds the rows with a text and no vector — lr-queue, "Citus"). Other Citus
/// tables (reference tables, local tables in Citus's metadata) are refused.
fn citus_distributed(source: pg_sys::Oid, table: &str) -> bool {
    match super::citus_kinds().into_iter().find(|(oid, _)| *oid == source).map(|(_, kind)| kind) {
        None => false,
        Some(kind) if kind == "h" => true,
        Some(_) => raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("lightretriever: {table} is a Citus reference or local table, which lr_enable_auto_encoding does not support"),
            Some("Auto-encode a distributed table (create_distributed_table), or a table Citus does not manage."),
        ),
    }
}

/// The rows of `enc` (distributed) that wait for their vectors, counted as the table's owner.
pub(super) fn pending_rows(enc: &AutoEncoding) -> i64 {
    as_owner(enc.source, || count_pending(enc))
}

/// [`pending_rows`] counted for `reader` (`lr_wait_for_encoding`): refused to a reader who does
/// not own the table, in whose session counting would run code of the owner's as the owner
/// ([`read_as_owner_for`]).
pub(super) fn pending_rows_for(reader: pg_sys::Oid, enc: &AutoEncoding, table: &str) -> i64 {
    read_as_owner_for(reader, enc.source, || count_pending(enc)).unwrap_or_else(|| {
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("lightretriever: only the owner of {table} may wait for its rows"),
            Some("A Citus table's waiting rows are counted in the table, as its owner, which would run the owner's code in your session."),
        )
    })
}

fn count_pending(enc: &AutoEncoding) -> i64 {
    let Some(enc) = enc.named_now() else {
        return 0;
    };
    Spi::connect(|c| c.select(&enc.statements().pending_count(), Some(1), &[])?.first().get_one::<i64>())
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .unwrap_or(0)
}

/// The triggers of `enc`: all four on an ordinary table; on a Citus distributed table only the
/// BEFORE trigger that clears a changed row's vectors, which touches nothing but its own row on
/// its own shard — the one kind of trigger that is safe there. Citus refuses triggers on
/// distributed tables unless citus.enable_unsafe_triggers is on: it is, for these statements.
/// The statements name the table: callers pin that name first ([`pin_source_name`]).
fn with_trigger_statements(enc: &AutoEncoding, statements: Vec<String>) {
    let unsafe_triggers = enc.distributed.then(|| set_local("citus.enable_unsafe_triggers", "on"));
    for sql in &statements {
        run(sql);
    }
    if let Some(old) = unsafe_triggers {
        set_local("citus.enable_unsafe_triggers", if old.is_empty() { "off" } else { &old });
    }
}

/// Makes `name` mean the table `source` until the transaction ends, or raises; run as the
/// extension's owner. DDL on the table goes by its name (Citus propagates DDL by its text), some
/// of it as superuser: on a name that had come to mean another table, it would build that
/// table's partition key, folding its owner's immutable functions, as superuser. The table and
/// its schema's name are locked ([`pin_name`]); then `name` must resolve to `source`.
pub(super) fn pin_source_name(source: pg_sys::Oid, name: &str, lockmode: u32) {
    let pinned = pin_name(source, lockmode, IfLocked::Wait);
    let resolved = Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid", &[name.into()]).ok().flatten();
    if pinned.is_none() || resolved != Some(source) {
        raise(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("lightretriever: the name {name} no longer means the auto-encoded table (oid {})", source.to_u32()),
            Some("A schema or the table was renamed meanwhile; try again."),
        )
    }
}

fn create_triggers(enc: &AutoEncoding) -> Vec<String> {
    let all = enc.statements().create_triggers();
    if enc.distributed {
        all.into_iter().take(1).collect()
    } else {
        all
    }
}

/// The catalog row, queue, trigger functions, triggers and dependencies of a new auto-encoding
/// (as the extension's owner).
#[allow(clippy::too_many_arguments)]
fn record_auto_encoding(
    source: pg_sys::Oid,
    text_column: &str,
    key_columns: &[String],
    key_attnums: Vec<i16>,
    text_attnum: i16,
    vector_attnum: i16,
    sparse_attnum: Option<i16>,
    model: &str,
    sparse_model: Option<&str>,
    vector_column: &str,
    sparse_column: Option<&str>,
    batch_size: i32,
) {
    let id = Spi::get_one::<i64>("SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('lightretriever.lr_auto_encodings', 'id'))")
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .expect("nextval gives a value") as i32;
    Spi::run_with_args(
        "INSERT INTO lightretriever.lr_auto_encodings
           (id, source, text_column, key_columns, text_attnum, key_attnums, vector_attnum, sparse_attnum,
            model, sparse_model, vector_column, sparse_column, batch_size, queue_table)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'lr_queue_' OPERATOR(pg_catalog.||) $1)",
        &[
            id.into(),
            source.into(),
            text_column.into(),
            key_columns.to_vec().into(),
            text_attnum.into(),
            key_attnums.into(),
            vector_attnum.into(),
            sparse_attnum.into(),
            model.into(),
            sparse_model.into(),
            vector_column.into(),
            sparse_column.into(),
            batch_size.into(),
        ],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let enc = encoding_of(source).expect("just recorded");
    let statements = enc.statements();
    for sql in statements.create_queue().iter().chain(&statements.trigger_functions()) {
        run(sql);
    }
    with_trigger_statements(&enc, create_triggers(&enc));
    record_extension_dependencies(&enc, true);
}

/// Enqueues every row of `enc` with a text (or, `missing_only`, with a text but no vector): the
/// keys are read as the table's owner, written to the queue as the extension's owner. Returns
/// how many.
fn backfill(enc: &AutoEncoding, missing_only: bool) -> i64 {
    let statements = enc.statements();
    let select = if missing_only { statements.missing_keys() } else { statements.backfill_keys() };
    let keys: Vec<Vec<String>> = as_owner(enc.source, || {
        with_key_text_settings(|| {
            Spi::connect(|c| {
                c.select(&select, None, &[])?
                    .map(|r| r.get::<Vec<String>>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let insert = statements.enqueue_keys();
    elevated(|| {
        for chunk in keys.chunks(10_000) {
            let columns: Vec<pgrx::datum::DatumWithOid> = (0..enc.key_columns.len())
                .map(|c| chunk.iter().map(|k| k[c].clone()).collect::<Vec<String>>().into())
                .collect();
            Spi::run_with_args(&insert, &columns).or_raise(Code::ERRCODE_INTERNAL_ERROR);
        }
    });
    keys.len() as i64
}

/// The queue and the generated functions depend on the extension: a plain `DROP EXTENSION`
/// is refused while tables are auto-encoded (with PostgreSQL's hint to use CASCADE), and
/// `DROP EXTENSION … CASCADE` drops them, and with them the triggers on the users' tables.
pub(super) fn record_extension_dependencies(enc: &AutoEncoding, with_queue: bool) {
    let statements = enc.statements();
    let mut objects = Vec::new();
    if with_queue {
        let queue = Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::pg_catalog.regclass::pg_catalog.oid", &[statements.queue().into()])
            .or_raise(Code::ERRCODE_INTERNAL_ERROR)
            .expect("the queue exists");
        objects.push((pg_sys::RelationRelationId, queue));
    }
    for role in lr_queue::TRIGGER_ROLES {
        let f = Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT ($1 OPERATOR(pg_catalog.||) '()')::pg_catalog.regprocedure::pg_catalog.oid",
            &[statements.function(role).into()],
        )
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .expect("the function exists");
        objects.push((pg_sys::ProcedureRelationId, f));
    }
    unsafe {
        let extension = pg_sys::get_extension_oid(c"lightretriever".as_ptr(), false);
        let referenced = pg_sys::ObjectAddress { classId: pg_sys::ExtensionRelationId, objectId: extension, objectSubId: 0 };
        for (class, oid) in objects {
            let depender = pg_sys::ObjectAddress { classId: class, objectId: oid, objectSubId: 0 };
            pg_sys::recordDependencyOn(&depender, &referenced, pg_sys::DependencyType::DEPENDENCY_NORMAL);
        }
    }
}

/// Stops auto-encoding `source`: drops its triggers, queue and failed records; with
/// `drop_columns` also the vector column(s) it added (otherwise the vectors stay).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_disable_auto_encoding(source: Option<pgrx::PgRelation>, drop_columns: default!(Option<bool>, false)) {
    let drop_columns = required(drop_columns, "drop_columns");
    let (table, enc) = owned_auto_encoding(source);
    // The DDL below goes by the table's name, some of it as the caller (a superuser, maybe).
    elevated(|| pin_source_name(enc.source, &table, pg_sys::AccessExclusiveLock));
    // As in lr_enable_auto_encoding: DDL on every shard, then function commands.
    let modify_mode = enc.distributed.then(|| set_local("citus.multi_shard_modify_mode", "sequential"));
    if enc.distributed {
        let index = crate::spi::read_one::<String>(
            "SELECT pg_catalog.format('%I.%I', n.nspname, $2) FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE c.oid OPERATOR(pg_catalog.=) $1",
            &[enc.source.into(), enc.statements().pending_index_name().into()],
        )
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .unwrap_or_default();
        run(&format!("DROP INDEX IF EXISTS {index}"));
    }
    elevated(|| {
        with_trigger_statements(&enc, enc.statements().drop_triggers());
        // The catalog row goes first: the ALTER TABLE below is then no longer ours to follow.
        Spi::run_with_args("SELECT lightretriever.lr_drop_auto_encoding_objects($1)", &[enc.id.into()])
            .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    });
    if drop_columns {
        run(&format!("ALTER TABLE {table} DROP COLUMN IF EXISTS {}", quote_ident(&enc.vector_column)));
        if let Some(s) = &enc.sparse_column {
            run(&format!("ALTER TABLE {table} DROP COLUMN IF EXISTS {}", quote_ident(s)));
        }
    }
    if let Some(old) = modify_mode {
        set_local("citus.multi_shard_modify_mode", &old);
    }
}

/// Re-creates the trigger functions and triggers of every auto-encoded table from the catalog,
/// as this release generates them: an upgrade whose triggers changed calls it (0.4.0 → 0.5.0:
/// an UPDATE that erases a vector re-enqueues the row). Superuser only; returns how many tables.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_regenerate_auto_encoding_triggers() -> i64 {
    regenerate("regenerate auto-encoding triggers", true)
}

/// Re-creates the trigger functions of every auto-encoded table, not the triggers: an upgrade
/// whose functions' bodies changed and whose triggers did not calls it (0.10.0 → 0.11.0 moved
/// the queues, which the bodies name). It takes no lock on the tables beyond what its caller
/// took. Superuser only; returns how many tables.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_regenerate_auto_encoding_trigger_functions() -> i64 {
    regenerate("regenerate auto-encoding trigger functions", false)
}

fn regenerate(what: &str, with_triggers: bool) -> i64 {
    crate::error::require_superuser(what);
    let all = encodings(Encodings::All);
    // As the extension's owner, as lr_enable_auto_encoding created them.
    elevated(|| {
        outside_extension_script(|| {
            for enc in &all {
                let statements = enc.statements();
                if with_triggers {
                    // The DDL below goes by the table's name (enable and disable pin it likewise).
                    pin_source_name(enc.source, &enc.source_name, pg_sys::AccessExclusiveLock);
                    with_trigger_statements(enc, statements.drop_triggers());
                }
                for sql in statements.trigger_functions() {
                    run(&sql);
                }
                if with_triggers {
                    with_trigger_statements(enc, create_triggers(enc));
                }
                // CREATE OR REPLACE dropped the functions' dependencies on the extension.
                record_extension_dependencies(enc, false);
            }
        })
    });
    all.len() as i64
}

/// Runs `f`, which replaces a table's trigger functions, as outside an extension script. Called
/// from an upgrade script, what is created would become a member of the extension, and
/// PostgreSQL refuses to replace the tables' existing functions there: they are the tables'
/// objects, as lr_enable_auto_encoding makes them. The flag is restored however `f` ends: an
/// error that a handler catches (the 0.8.0 update's, or a user's around an ALTER in another
/// extension's script) lets the script go on.
pub(super) fn outside_extension_script<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            unsafe { pg_sys::creating_extension = self.0 };
        }
    }
    let _restore = Restore(unsafe { pg_sys::creating_extension });
    unsafe { pg_sys::creating_extension = false };
    f()
}

/// Enqueues the rows of `source` that have a text but no vector — rows of a partition attached
/// after enabling, or of a restored dump (a row queued already is encoded once either way: the
/// worker takes a row's entries together). Owner only; returns how many.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_enqueue_missing(source: Option<pgrx::PgRelation>) -> i64 {
    let (_, enc) = owned_auto_encoding(source);
    if enc.distributed {
        return pending_rows(&enc); // no queue to fill: the drain worker finds them in the table
    }
    backfill(&enc, true)
}

/// Pauses the auto-encoding of `source`: the triggers keep queueing (nothing is lost), the
/// workers leave the queue alone until `lr_resume_auto_encoding`. A batch a worker holds at that
/// moment is finished. Owner only; false when it was paused already.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_pause_auto_encoding(source: Option<pgrx::PgRelation>) -> bool {
    let (_, enc) = owned_auto_encoding(source);
    set_status(&enc, "paused")
}

/// Resumes a paused auto-encoding: the workers drain its queue again. Owner only; false when it
/// was not paused.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_resume_auto_encoding(source: Option<pgrx::PgRelation>) -> bool {
    let (_, enc) = owned_auto_encoding(source);
    // A database whose only auto-encoding was paused has no drain worker any more.
    crate::databases::mark_at_commit(unsafe { pg_sys::MyDatabaseId });
    set_status(&enc, "active")
}

/// Sets the catalog status of `enc`; true when it changed.
fn set_status(enc: &AutoEncoding, status: &str) -> bool {
    let changed = elevated(|| {
        Spi::get_one_with_args::<bool>(
            "UPDATE lightretriever.lr_auto_encodings SET status = $2
              WHERE id OPERATOR(pg_catalog.=) $1 AND status OPERATOR(pg_catalog.<>) $2 RETURNING true",
            &[enc.id.into(), status.into()],
        )
    });
    row_or_none(changed).flatten().unwrap_or(false)
}

/// Puts the failed rows of `source` back in its queue (attempts start again). Returns how many.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_retry_failed(source: Option<pgrx::PgRelation>) -> i64 {
    let (_, enc) = owned_auto_encoding(source);
    elevated(|| Spi::get_one::<i64>(&enc.statements().retry_failed()).or_raise(Code::ERRCODE_INTERNAL_ERROR).unwrap_or(0))
}
