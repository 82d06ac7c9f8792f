//! Enabling a table for auto-encoding: `lr_enable_auto_encoding` adds the vector column(s),
//! the queue and the triggers and enqueues every row; `lr_disable_auto_encoding` undoes it.
//! The worker (`worker.rs`) drains the queues. The SQL itself is built by `lr-queue`.
//!
//! Queue semantics (documented in the README): insert → enqueue; update → enqueue only if the
//! text changed, and the stale vector is cleared at once (NULL until re-encoded); NULL text →
//! NULL vector, nothing queued; delete → its queue entries (failed ones too) go; TRUNCATE → the
//! table's entries go.
//!
//! Security (README "Security"): these functions run as the extension's owner but never touch
//! the user's table with those rights: its rows are read as the owner (`security::as_owner`),
//! keys are text written by output functions, the queue holds no user type. The status and
//! failed-rows views show a caller only the tables it owns or may read.

use lr_queue::Encoding;
use pgrx::prelude::*;
use pgrx::search_path;

use crate::error::{raise, required, row_or_none, Code, OrRaise};
use crate::security::{as_owner, caller, elevated, may_read, may_see, require_owner, require_user_table, with_key_text_settings};
use crate::spi::{flatten, in_subtransaction, quote_ident, run, table_name};

/// The catalog row of one auto-encoded table, as the worker and the functions here use it.
#[derive(Debug, Clone)]
pub struct AutoEncoding {
    pub id: i32,
    pub source: pg_sys::Oid,
    /// `source::regclass::text`: quoted and schema-qualified as needed.
    pub source_name: String,
    /// A plain table (its own rows, `ONLY`); false for a partitioned one.
    pub plain: bool,
    pub text_column: String,
    pub key_columns: Vec<String>,
    /// The key columns' types now (`format_type`), as SQL names them.
    pub key_types: Vec<String>,
    pub model: String,
    pub sparse_model: Option<String>,
    pub vector_column: String,
    pub sparse_column: Option<String>,
    pub batch_size: i32,
}

impl AutoEncoding {
    /// The statements of this table (lr-queue).
    pub fn statements(&self) -> Encoding<'_> {
        Encoding {
            id: self.id,
            source: &self.source_name,
            plain: self.plain,
            text_column: &self.text_column,
            key_columns: &self.key_columns,
            key_types: &self.key_types,
            vector_column: &self.vector_column,
            sparse_column: self.sparse_column.as_deref(),
        }
    }
}

const SELECT_ENCODINGS: &str = "SELECT a.id, a.source::pg_catalog.oid, a.source::pg_catalog.text,
        c.relkind OPERATOR(pg_catalog.=) 'r', a.text_column::pg_catalog.text, a.key_columns::pg_catalog.text[],
        ARRAY(SELECT pg_catalog.format_type(t.atttypid, t.atttypmod)
                FROM pg_catalog.unnest(a.key_attnums) WITH ORDINALITY AS k(attnum, n)
                JOIN pg_catalog.pg_attribute t ON t.attrelid OPERATOR(pg_catalog.=) a.source AND t.attnum OPERATOR(pg_catalog.=) k.attnum
               ORDER BY k.n),
        a.model, a.sparse_model, a.vector_column::pg_catalog.text, a.sparse_column::pg_catalog.text, a.batch_size
   FROM lightretriever.lr_auto_encodings a JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.source";

/// Auto-encodings (`filter` narrows them, e.g. `AND a.source = $1`), by id.
pub fn encodings(filter: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<AutoEncoding> {
    Spi::connect(|c| {
        let rows = c.select(&format!("{SELECT_ENCODINGS} WHERE true {filter} ORDER BY a.id"), None, args)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(AutoEncoding {
                id: r.get(1)?.unwrap_or_default(),
                source: r.get(2)?.unwrap_or(pg_sys::InvalidOid),
                source_name: r.get(3)?.unwrap_or_default(),
                plain: r.get(4)?.unwrap_or(true),
                text_column: r.get(5)?.unwrap_or_default(),
                key_columns: r.get(6)?.unwrap_or_default(),
                key_types: r.get(7)?.unwrap_or_default(),
                model: r.get(8)?.unwrap_or_default(),
                sparse_model: r.get(9)?,
                vector_column: r.get(10)?.unwrap_or_default(),
                sparse_column: r.get(11)?,
                batch_size: r.get(12)?.unwrap_or(32),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The auto-encoding of `relid`, if it has one.
pub fn encoding_of(relid: pg_sys::Oid) -> Option<AutoEncoding> {
    encodings("AND a.source OPERATOR(pg_catalog.=) $1::pg_catalog.oid", &[relid.into()]).pop()
}

/// `source`'s oid and qualified name, for its owner only.
fn owned_table(source: Option<pgrx::PgRelation>) -> (pg_sys::Oid, String) {
    let source = required(source, "source").oid();
    let table = table_name(source);
    require_owner(source, &table);
    (source, table)
}

/// The auto-encoding of `source` as (qualified table name, record), for its owner only; an
/// error when the caller does not own it or it is not auto-encoded.
fn owned_auto_encoding(source: Option<pgrx::PgRelation>) -> (String, AutoEncoding) {
    let (source, table) = owned_table(source);
    let Some(enc) = encoding_of(source) else {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("lightretriever: {table} is not auto-encoded"), None)
    };
    (table, enc)
}

/// The column `attnum` of `relid` now: (name, type as format_type without typmod, generated,
/// typmod).
fn column(relid: pg_sys::Oid, attnum: i16) -> Option<(String, String, bool, i32)> {
    Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT attname::pg_catalog.text, pg_catalog.format_type(atttypid, NULL), attgenerated OPERATOR(pg_catalog.<>) '', atttypmod
               FROM pg_catalog.pg_attribute
              WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attnum OPERATOR(pg_catalog.=) $2 AND NOT attisdropped",
            None,
            &[relid.into(), attnum.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
                r.get::<i32>(4)?.unwrap_or(-1),
            )),
            None => None,
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The attnum of column `name` of `relid`, if it has one.
fn attnum_of(relid: pg_sys::Oid, name: &str) -> Option<i16> {
    row_or_none(Spi::get_one_with_args::<i16>(
        "SELECT attnum FROM pg_catalog.pg_attribute
          WHERE attrelid OPERATOR(pg_catalog.=) $1 AND attname OPERATOR(pg_catalog.=) $2 AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
        &[relid.into(), name.into()],
    ))
    .flatten()
}

/// The primary key of `relid`: (column names, attnums), in key order.
fn primary_key(relid: pg_sys::Oid) -> (Vec<String>, Vec<i16>) {
    Spi::connect(|c| {
        c.select(
            "SELECT a.attname::pg_catalog.text, a.attnum
               FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_catalog.pg_attribute a ON a.attnum OPERATOR(pg_catalog.=) k.attnum
              WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary AND a.attrelid OPERATOR(pg_catalog.=) $1
              ORDER BY k.n",
            None,
            &[relid.into()],
        )?
        .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i16>(2)?.unwrap_or_default())))
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .into_iter()
    .unzip()
}

const TEXT_TYPES: [&str; 3] = ["text", "character varying", "character"];

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
    let kind = require_user_table(source, &table, &['r', 'p'], "auto-encoding", false);
    if !(1..=1024).contains(&batch_size) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: batch_size must be between 1 and 1024", None);
    }
    // Two enables of one table, or an enable racing a writer's DDL, wait for each other here.
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
    let (_, text_type, generated, _) = column(source, text_attnum).expect("the column exists");
    if !TEXT_TYPES.contains(&text_type.as_str()) {
        raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("lightretriever: column \"{text_column}\" of {table} is {text_type}, not text"),
            None,
        );
    }
    // A BEFORE trigger sees a generated column as NULL (PostgreSQL computes it afterwards), and
    // PostgreSQL 15 fires `UPDATE OF` a generated column on every update: the stale-vector
    // trigger would clear vectors that nothing re-encodes.
    if generated {
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
        crate::sparse::require_lm_head(m, &i);
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
    let vector_attnum = attnum_of(source, &vector_column).expect("just added");
    let sparse_attnum = sparse_column.as_deref().map(|c| attnum_of(source, c).expect("just added"));
    // The owner's own DDL is done: from here on, the extension's catalog, queue and triggers.
    elevated(|| record_auto_encoding(source, text_column, &key_columns, key_attnums, text_attnum, vector_attnum, sparse_attnum, &model, sparse_model, &vector_column, sparse_column.as_deref(), batch_size));
    let enc = encoding_of(source).expect("just recorded");
    debug_assert_eq!(enc.plain, kind == 'r');
    let enqueued = backfill(&enc, false);
    pgrx::notice!("lightretriever: enqueued {enqueued} rows of {table} for encoding by \"{}\"", enc.model);
    if !crate::guc::worker_serves_this_database() {
        pgrx::warning!("lightretriever: no encoder worker drains queues in this database; rows stay queued until one does");
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
    for sql in statements.create_queue().iter().chain(&statements.trigger_functions()).chain(&statements.create_triggers()) {
        run(sql);
    }
    record_extension_dependencies(&enc);
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
fn record_extension_dependencies(enc: &AutoEncoding) {
    let statements = enc.statements();
    let queue = Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::pg_catalog.regclass::pg_catalog.oid", &[statements.queue().into()])
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .expect("the queue exists");
    let mut objects = vec![(pg_sys::RelationRelationId, queue)];
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
    elevated(|| {
        for sql in enc.statements().drop_triggers() {
            run(&sql);
        }
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
}

/// Enqueues the rows of `source` that have a text but no vector — rows of a partition attached
/// after enabling, or of a restored dump (a row queued already is encoded once either way: the
/// worker takes a row's entries together). Owner only; returns how many.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_enqueue_missing(source: Option<pgrx::PgRelation>) -> i64 {
    let (_, enc) = owned_auto_encoding(source);
    backfill(&enc, true)
}

/// Puts the failed rows of `source` back in its queue (attempts start again). Returns how many.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)] // nothing resolves through the caller's path
fn lr_retry_failed(source: Option<pgrx::PgRelation>) -> i64 {
    let (_, enc) = owned_auto_encoding(source);
    elevated(|| Spi::get_one::<i64>(&enc.statements().retry_failed()).or_raise(Code::ERRCODE_INTERNAL_ERROR).unwrap_or(0))
}

/// Called by the `ALTER TABLE` event trigger for an auto-encoded table: follows renames of its
/// columns (catalog names and trigger bodies), and refuses — rolling the ALTER back — what
/// would leave rows that never get vectors or vectors of the wrong shape: a dropped or retyped
/// text or vector column, a dropped or changed primary key.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_auto_encoding_follow(source: pg_sys::Oid) {
    elevated(|| follow(source))
}

fn follow(source: pg_sys::Oid) {
    let Some(enc) = encoding_of(source) else { return };
    let attnums = Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT text_attnum, key_attnums, vector_attnum, sparse_attnum FROM lightretriever.lr_auto_encodings WHERE id OPERATOR(pg_catalog.=) $1",
            None,
            &[enc.id.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(match rows.next() {
            Some(r) => Some((r.get::<i16>(1)?, r.get::<Vec<i16>>(2)?, r.get::<i16>(3)?, r.get::<i16>(4)?)),
            None => None,
        })
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let Some((Some(text_attnum), Some(key_attnums), Some(vector_attnum), sparse_attnum)) = attnums else { return };
    let refuse = |what: String| -> ! {
        raise(
            Code::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("lightretriever: {} is auto-encoded: {what}", enc.source_name),
            Some(&format!(
                "Disable auto-encoding first: SELECT lightretriever.lr_disable_auto_encoding('{}');",
                enc.source_name.replace('\'', "''")
            )),
        )
    };
    let text = match column(source, text_attnum) {
        Some((name, ty, false, _)) if TEXT_TYPES.contains(&ty.as_str()) => name,
        Some((name, ty, ..)) => refuse(format!("its text column \"{name}\" cannot become {ty} (or generated)")),
        None => refuse(format!("its text column \"{}\" cannot be dropped", enc.text_column)),
    };
    let vector_type = |column: Option<(String, String, bool, i32)>, kind: &str, old: &str, model: &str| -> String {
        let dims = crate::catalog::load_model(model);
        let want = if kind == "vector" { dims.hidden_size } else { dims.vocab_size } as i32;
        match column {
            // format_type qualifies pgvector's types here (the search path is pg_catalog's).
            Some((name, ty, _, typmod)) if (ty == kind || ty == crate::pgvector::pgvector_type(kind)) && typmod == want => name,
            Some((name, ty, _, typmod)) => refuse(format!("its {kind} column \"{name}\" must stay {kind}({want}), not {ty}({typmod})")),
            None => refuse(format!("its {kind} column \"{old}\" cannot be dropped")),
        }
    };
    let vector = vector_type(column(source, vector_attnum), "vector", &enc.vector_column, &enc.model);
    let sparse = match (sparse_attnum, &enc.sparse_column, &enc.sparse_model) {
        (Some(a), Some(old), Some(m)) => Some(vector_type(column(source, a), "sparsevec", old, m)),
        _ => None,
    };
    let (key_columns, now_attnums) = primary_key(source);
    if now_attnums != key_attnums {
        refuse(format!("its primary key ({}) cannot be dropped or changed", enc.key_columns.join(", ")));
    }
    if text == enc.text_column && vector == enc.vector_column && sparse == enc.sparse_column && key_columns == enc.key_columns {
        return;
    }
    Spi::run_with_args(
        "UPDATE lightretriever.lr_auto_encodings SET text_column = $2, key_columns = $3, vector_column = $4, sparse_column = $5
          WHERE id OPERATOR(pg_catalog.=) $1",
        &[enc.id.into(), text.as_str().into(), key_columns.into(), vector.as_str().into(), sparse.as_deref().into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let renamed = encoding_of(source).expect("still recorded");
    for sql in renamed.statements().trigger_functions() {
        run(&sql);
    }
}

/// True when the current role may see the keys and errors of `source`'s auto-encoding: it owns
/// the table (row-level security of lr_encoding_errors, lr_failed_items).
#[pg_extern(stable, parallel_safe, strict)]
fn lr_may_see(source: pg_sys::Oid) -> bool {
    may_see(caller(), source)
}

/// True when the current role may see that `source` is auto-encoded and how far: it owns the
/// table or may read it (row-level security of lr_auto_encodings, lr_encoding_batches;
/// lr_encoding_status, lr_wait_for_encoding).
#[pg_extern(stable, parallel_safe, strict)]
fn lr_may_read(source: pg_sys::Oid) -> bool {
    may_read(caller(), source)
}

/// Waits until the queue of `source` has no pending row (true) or `timeout` passes (false).
/// Failed rows do not count: they have left the queue's pending set.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_wait_for_encoding(source: Option<pgrx::PgRelation>, timeout: default!(Option<pgrx::datum::Interval>, "'5 minutes'")) -> bool {
    let source = required(source, "source").oid();
    let timeout = required(timeout, "timeout");
    let micros = timeout.as_micros().max(0) as u64;
    let table = table_name(source);
    let enc = encoding_of(source).filter(|_| may_read(caller(), source));
    let Some(enc) = enc else {
        raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("lightretriever: {table} is not auto-encoded"),
            Some("Enable it with lightretriever.lr_enable_auto_encoding."),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_micros(micros);
    let pending = enc.statements().pending_exists();
    loop {
        // A fresh snapshot each time (a volatile function's SPI statements take new ones).
        if elevated(|| Spi::get_one::<bool>(&pending)).or_raise(Code::ERRCODE_INTERNAL_ERROR) != Some(true) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        Spi::run("SELECT pg_catalog.pg_sleep(0.05)").or_raise(Code::ERRCODE_INTERNAL_ERROR);
    }
}

/// Per auto-encoded table the caller may see: queue depth, rows in flight (the batch a worker is
/// encoding now, as it reports in pg_stat_activity), failed rows, rows with a vector, recent
/// rate, last error. A table whose state cannot be read shows `status` 'broken' and the reason
/// as `last_error`, rather than breaking the view for everyone.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn lr_encoding_status_rows() -> TableIterator<
    'static,
    (
        name!(source, pg_sys::Oid),
        name!(model, String),
        name!(sparse_model, Option<String>),
        name!(status, String),
        name!(pending, i64),
        name!(in_flight, i64),
        name!(failed, i64),
        name!(done, Option<i64>),
        name!(rows_per_second, f64),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(worker_pid, Option<i32>),
    ),
> {
    let who = caller();
    let mut rows = Vec::new();
    for enc in encodings("", &[]) {
        if !may_read(who, enc.source) {
            continue;
        }
        let statements = enc.statements();
        let status = flatten(in_subtransaction(|| {
            let (queued, failed) = elevated(|| Spi::get_two::<i64, i64>(&statements.queue_counts()))?;
            let (in_flight, worker) = Spi::get_two_with_args::<i64, i32>(
                "SELECT COALESCE(pg_catalog.sum(pg_catalog.substring(a.query, 'encoding (\\d+) rows')::pg_catalog.int8), 0)::pg_catalog.int8,
                        pg_catalog.max(a.pid)
                   FROM pg_catalog.pg_stat_activity a
                  WHERE a.backend_type OPERATOR(pg_catalog.=) 'lightretriever encoder'
                    AND a.query OPERATOR(pg_catalog.~~) pg_catalog.format('lightretriever: encoding %% rows of auto-encoding %s', $1)",
                &[enc.id.into()],
            )?;
            let done = as_owner(enc.source, || Spi::get_one::<i64>(&statements.count_vectors()))?;
            let (rate, last_batch_pid) = Spi::get_two_with_args::<f64, i32>(
                "SELECT (COALESCE(pg_catalog.sum(b.rows) FILTER (WHERE b.at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 minute'::pg_catalog.interval)), 0) OPERATOR(pg_catalog./) 60.0)::pg_catalog.float8,
                        (pg_catalog.array_agg(b.worker_pid ORDER BY b.at DESC))[1]
                   FROM lightretriever.lr_encoding_batches b WHERE b.encoding_id OPERATOR(pg_catalog.=) $1",
                &[enc.id.into()],
            )?;
            // Error messages can quote the table's data: its owner's only (row-level security).
            let (error, error_at) = row_or_none(Spi::get_two_with_args::<String, pgrx::datum::TimestampWithTimeZone>(
                "SELECT r.error, r.at FROM lightretriever.lr_encoding_errors r WHERE r.encoding_id OPERATOR(pg_catalog.=) $1 ORDER BY r.id DESC LIMIT 1",
                &[enc.id.into()],
            ))
            .unwrap_or((None, None));
            let queued = queued.unwrap_or(0);
            let in_flight = in_flight.unwrap_or(0);
            Ok::<_, pgrx::spi::SpiError>((
                "active".to_owned(),
                (queued - in_flight).max(0),
                in_flight,
                failed.unwrap_or(0),
                done,
                rate.unwrap_or(0.0),
                error,
                error_at,
                worker.or(last_batch_pid),
            ))
        }));
        let row = status.unwrap_or_else(|e| ("broken".to_owned(), 0, 0, 0, None, 0.0, Some(e), None, None));
        rows.push((enc.source, enc.model, enc.sparse_model, row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8));
    }
    TableIterator::new(rows)
}

/// Rows whose encoding failed `lightretriever.max_retries` times, of the tables the caller may
/// see: the primary key as jsonb (integer keys as numbers, others as their text), last error,
/// attempts. `lr_retry_failed` puts them back in the queue.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
fn lr_failed_items_rows() -> TableIterator<
    'static,
    (
        name!(encoding_id, i32),
        name!(source, pg_sys::Oid),
        name!(row_key, pgrx::JsonB),
        name!(error, Option<String>),
        name!(attempts, i32),
        name!(failed_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    let who = caller();
    let mut rows = Vec::new();
    for enc in encodings("", &[]) {
        if !may_see(who, enc.source) {
            continue;
        }
        let numeric: Vec<bool> = enc.key_types.iter().map(|t| ["smallint", "integer", "bigint"].contains(&t.as_str())).collect();
        let failed = flatten(in_subtransaction(|| {
            elevated(|| Spi::connect(|c| {
                c.select(&enc.statements().failed_rows(), None, &[])?
                    .map(|r| {
                        Ok((
                            r.get::<Vec<String>>(1)?.unwrap_or_default(),
                            r.get::<String>(2)?,
                            r.get::<i32>(3)?.unwrap_or(0),
                            r.get::<pgrx::datum::TimestampWithTimeZone>(4)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            }))
        }));
        for (key, error, attempts, at) in failed.unwrap_or_default() {
            let mut object = serde_json::Map::new();
            for ((name, value), number) in enc.key_columns.iter().zip(key).zip(&numeric) {
                let v = match value.parse::<i64>() {
                    Ok(n) if *number => serde_json::Value::from(n),
                    _ => serde_json::Value::from(value),
                };
                object.insert(name.clone(), v);
            }
            rows.push((enc.id, enc.source, pgrx::JsonB(serde_json::Value::Object(object)), error, attempts, at));
        }
    }
    TableIterator::new(rows)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::*;
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn queued(queue: &str) -> i64 {
        count(&format!("SELECT count(*) FROM lightretriever.\"{queue}\""))
    }

    /// The #[pg_test] server starts no worker: the triggers and the queue are observable as they
    /// are left, row by row.
    #[pg_test]
    fn triggers_queue_exactly_the_rows_that_need_encoding() {
        register_dense_model();
        Spi::run(
            "CREATE SCHEMA \"Q s\";
             CREATE TABLE \"Q s\".\"Docs\" (id int PRIMARY KEY, body text, tag int DEFAULT 0);
             INSERT INTO \"Q s\".\"Docs\" VALUES (1, 'one', 0), (2, NULL, 0), (3, 'three', 0);
             SELECT lightretriever.lr_enable_auto_encoding('\"Q s\".\"Docs\"', 'body', 'minilm');",
        )
        .unwrap();
        let queue = Spi::get_one::<String>(
            "SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = '\"Q s\".\"Docs\"'::regclass",
        )
        .unwrap()
        .unwrap();
        // Backfill: the two rows with text; the column is vector(384).
        assert_eq!(queued(&queue), 2);
        let typ = Spi::get_one::<String>(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '\"Q s\".\"Docs\"'::regclass AND attname = 'body_embedding'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(typ, "vector(384)");
        // Insert with text: queued; with NULL text: not queued.
        Spi::run("INSERT INTO \"Q s\".\"Docs\" VALUES (4, 'four', 0), (5, NULL, 0)").unwrap();
        assert_eq!(queued(&queue), 3);
        // A vector written by the worker survives non-text updates, which queue nothing.
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body_embedding = lightretriever.lr_encode_document('one', 'minilm') WHERE id = 1").unwrap();
        Spi::run("UPDATE \"Q s\".\"Docs\" SET tag = 7 WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 3);
        assert_eq!(count("SELECT count(*) FROM \"Q s\".\"Docs\" WHERE id = 1 AND body_embedding IS NOT NULL"), 1);
        // Same text again: nothing; new text: the stale vector is cleared and the row queued.
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body = 'one' WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 3);
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body = 'uno' WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 4);
        assert_eq!(count("SELECT count(*) FROM \"Q s\".\"Docs\" WHERE id = 1 AND body_embedding IS NULL"), 1);
        // Text set to NULL: vector cleared, nothing queued.
        Spi::run("UPDATE \"Q s\".\"Docs\" SET body = NULL WHERE id = 3").unwrap();
        assert_eq!(queued(&queue), 4);
        // Delete: its queue entries go.
        Spi::run("DELETE FROM \"Q s\".\"Docs\" WHERE id = 1").unwrap();
        assert_eq!(queued(&queue), 2);
        assert_eq!(count(&format!("SELECT count(*) FROM lightretriever.\"{queue}\" WHERE key = ARRAY['1']")), 0);
        // TRUNCATE empties the queue.
        Spi::run("TRUNCATE \"Q s\".\"Docs\"").unwrap();
        assert_eq!(queued(&queue), 0);
        // The status view sees the table; DROP TABLE removes everything made for it.
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_encoding_status WHERE source = '\"Q s\".\"Docs\"'::regclass"), 1);
        Spi::run("DROP TABLE \"Q s\".\"Docs\"").unwrap();
        assert_eq!(count("SELECT count(*) FROM lightretriever.lr_auto_encodings"), 0);
        assert_eq!(count(&format!("SELECT count(*) FROM pg_class WHERE relname = '{queue}'")), 0);
        assert_eq!(count("SELECT count(*) FROM pg_proc WHERE proname ~ '^lr_auto_encoding_[0-9]+_'"), 0);
    }

    /// Runs `setup`, then enables `table.column` on the default test model.
    fn enable(setup: &str, table: &str, column: &str) {
        register_dense_model();
        Spi::run(setup).unwrap();
        Spi::run_with_args("SELECT lightretriever.lr_enable_auto_encoding($1::regclass, $2, 'minilm')", &[table.into(), column.into()])
            .unwrap();
    }

    #[pg_test(error = "lightretriever: \"Q s\".nokey has no primary key")]
    fn a_table_without_primary_key_is_refused() {
        enable("CREATE SCHEMA \"Q s\"; CREATE TABLE \"Q s\".nokey (body text)", "\"Q s\".nokey", "body");
    }

    #[pg_test(error = "lightretriever: column \"n\" of public.t_int is integer, not text")]
    fn a_non_text_column_is_refused() {
        enable("CREATE TABLE t_int (id int PRIMARY KEY, n int)", "t_int", "n");
    }

    #[pg_test(error = "lightretriever: public.t_nocol has no column \"nope\"")]
    fn a_missing_column_is_refused() {
        enable("CREATE TABLE t_nocol (id int PRIMARY KEY, body text)", "t_nocol", "nope");
    }

    #[pg_test(error = "lightretriever: column \"full_text\" of public.t_gen is a generated column")]
    fn a_generated_column_is_refused() {
        enable(
            "CREATE TABLE t_gen (id int PRIMARY KEY, title text, body text, full_text text GENERATED ALWAYS AS (title || ' ' || body) STORED)",
            "t_gen",
            "full_text",
        );
    }

    #[pg_test(error = "lightretriever: public.t_twice is already auto-encoded")]
    fn enabling_twice_is_refused() {
        enable("CREATE TABLE t_twice (id int PRIMARY KEY, body text)", "t_twice", "body");
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('t_twice', 'body', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: no encoder worker is running, and models do not run in backends")]
    fn without_a_worker_models_do_not_run_in_backends() {
        register_dense_model();
        Spi::run("SET LOCAL lightretriever.allow_backend_models = off").unwrap();
        Spi::run("SELECT lightretriever.lr_encode_document('x', 'minilm')").unwrap();
    }

    #[pg_test]
    fn renamed_columns_are_followed_and_breaking_changes_refused() {
        enable("CREATE TABLE t_ren (id int PRIMARY KEY, body text); INSERT INTO t_ren VALUES (1, 'x')", "t_ren", "body");
        Spi::run("ALTER TABLE t_ren RENAME COLUMN body TO content; ALTER TABLE t_ren RENAME COLUMN body_embedding TO emb").unwrap();
        let names = Spi::get_two::<String, String>("SELECT text_column::text, vector_column::text FROM lightretriever.lr_auto_encodings").unwrap();
        assert_eq!(names, (Some("content".into()), Some("emb".into())));
        // The regenerated triggers use the new names: writes work and queue as before.
        Spi::run("INSERT INTO t_ren VALUES (2, 'two'); UPDATE t_ren SET content = 'uno' WHERE id = 1").unwrap();
        let queue = Spi::get_one::<String>("SELECT queue_table::text FROM lightretriever.lr_auto_encodings").unwrap().unwrap();
        assert_eq!(Spi::get_one::<i64>(&format!("SELECT count(*) FROM lightretriever.\"{queue}\"")).unwrap(), Some(3));
        assert_eq!(
            error_of("ALTER TABLE t_ren DROP CONSTRAINT t_ren_pkey"),
            "lightretriever: public.t_ren is auto-encoded: its primary key (id) cannot be dropped or changed"
        );
        assert_eq!(
            error_of("ALTER TABLE t_ren DROP COLUMN emb"),
            "lightretriever: public.t_ren is auto-encoded: its vector column \"emb\" cannot be dropped"
        );
        assert_eq!(
            error_of("ALTER TABLE t_ren ALTER COLUMN emb TYPE vector(3) USING NULL"),
            "lightretriever: public.t_ren is auto-encoded: its vector column \"emb\" must stay vector(384), not public.vector(3)"
        );
        assert_eq!(
            error_of("ALTER TABLE t_ren DROP COLUMN content CASCADE"),
            "lightretriever: public.t_ren is auto-encoded: its text column \"content\" cannot be dropped"
        );
        // Unrelated changes pass; the status view keeps working.
        Spi::run("ALTER TABLE t_ren ADD COLUMN tag int").unwrap();
        assert_eq!(Spi::get_one::<String>("SELECT status FROM lightretriever.lr_encoding_status").unwrap().as_deref(), Some("active"));
    }

    #[pg_test]
    fn null_arguments_are_named_errors() {
        register_dense_model();
        for (sql, argument) in [
            ("SELECT lightretriever.lr_enable_auto_encoding(NULL, 'body')", "source"),
            ("SELECT lightretriever.lr_enable_auto_encoding('pg_class', NULL)", "text_column"),
            ("SELECT lightretriever.lr_disable_auto_encoding(NULL)", "source"),
            ("SELECT lightretriever.lr_retry_failed(NULL)", "source"),
            ("SELECT * FROM lightretriever.lr_search(NULL, 'q')", "source"),
            ("SELECT * FROM lightretriever.lr_search('pg_class', NULL)", "query"),
            ("SELECT lightretriever.lr_register_model(NULL, '/x')", "name"),
            ("SELECT lightretriever.lr_drop_model(NULL)", "name"),
            ("SELECT lightretriever.lr_build_query_table('minilm', dtype => NULL)", "dtype"),
            ("SELECT lightretriever.lr_fit_query_table('minilm', 'pg_class', NULL)", "text_column"),
            ("SELECT lightretriever.lr_fit_sparse_query_weights(NULL, 'pg_class', 'relname')", "model"),
            ("SELECT lightretriever.lr_encode_query_sparse('q', 'minilm', NULL)", "weighting"),
            ("SELECT lightretriever.lr_wait_for_encoding(NULL)", "source"),
        ] {
            assert_eq!(error_of(sql), format!("lightretriever: argument \"{argument}\" must not be NULL"), "{sql}");
        }
    }
}
