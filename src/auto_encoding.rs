//! Enabling a table for auto-encoding: `lr_enable_auto_encoding` adds the vector column(s),
//! the queue and the triggers and enqueues every row; `lr_disable_auto_encoding` undoes it.
//! The worker (`worker.rs`) drains the queues.
//!
//! Queue semantics (documented in the README): insert → enqueue; update → enqueue only if the
//! text changed, and the stale vector is cleared at once (NULL until re-encoded); NULL text →
//! NULL vector, nothing queued; delete → its queue entry and failed record go; TRUNCATE → the
//! queue and failed records of the table go.

use pgrx::prelude::*;
use pgrx::search_path;

use crate::error::{raise, row_or_none, Code, OrRaise};
use crate::search::quote_ident;

/// The catalog row of one auto-encoded table, as the worker and the functions here use it.
#[derive(Debug, Clone)]
pub struct AutoEncoding {
    pub id: i32,
    pub source: pg_sys::Oid,
    /// `source::regclass::text`: quoted and schema-qualified as needed.
    pub source_name: String,
    pub text_column: String,
    pub key_columns: Vec<String>,
    pub key_types: Vec<String>,
    pub model: String,
    pub sparse_model: Option<String>,
    pub vector_column: String,
    pub sparse_column: Option<String>,
    pub batch_size: i32,
    pub queue_table: String,
}

impl AutoEncoding {
    /// `lightretriever."lr_queue_N"`.
    pub fn queue(&self) -> String {
        format!("lightretriever.{}", quote_ident(&self.queue_table))
    }

    /// Queue key columns: `key_1, key_2, ...` (never clash with the queue's own columns).
    pub fn queue_keys(&self) -> Vec<String> {
        (1..=self.key_columns.len()).map(|i| format!("key_{i}")).collect()
    }

    fn function(&self, role: &str) -> String {
        format!("lightretriever.{}", quote_ident(&format!("lr_auto_encoding_{}_{role}", self.id)))
    }
}

const SELECT_ENCODINGS: &str = "SELECT id, source::oid, source::text, text_column::text, key_columns::text[], key_types,
        model, sparse_model, vector_column::text, sparse_column::text, batch_size, queue_table::text
   FROM lightretriever.lr_auto_encodings";

/// Active auto-encodings (`where` filters further, e.g. `AND source = $1`).
pub fn encodings(filter: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<AutoEncoding> {
    Spi::connect(|c| {
        let rows = c.select(&format!("{SELECT_ENCODINGS} WHERE true {filter} ORDER BY id"), None, args)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(AutoEncoding {
                id: r.get(1)?.unwrap_or_default(),
                source: r.get(2)?.unwrap_or(pg_sys::InvalidOid),
                source_name: r.get(3)?.unwrap_or_default(),
                text_column: r.get(4)?.unwrap_or_default(),
                key_columns: r.get(5)?.unwrap_or_default(),
                key_types: r.get(6)?.unwrap_or_default(),
                model: r.get(7)?.unwrap_or_default(),
                sparse_model: r.get(8)?,
                vector_column: r.get(9)?.unwrap_or_default(),
                sparse_column: r.get(10)?,
                batch_size: r.get(11)?.unwrap_or(32),
                queue_table: r.get(12)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
}

/// The caller (as SET ROLE made it; not the SECURITY DEFINER owner) must own `relid`.
fn require_owner(relid: pg_sys::Oid, table: &str) {
    let caller = unsafe { pg_sys::GetOuterUserId() };
    if !unsafe { pg_sys::pg_class_ownercheck(relid, caller) } {
        raise(
            Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("lightretriever: must be the owner of table {table} to change its auto-encoding"),
            None,
        );
    }
}

/// The relation's oid; the relation is closed again (its lock stays until the transaction ends).
fn relid(rel: pgrx::PgRelation) -> pg_sys::Oid {
    rel.oid()
}

/// `source`'s oid and qualified name, for its owner only.
fn owned_table(source: pgrx::PgRelation) -> (pg_sys::Oid, String) {
    let source = relid(source);
    let table = Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[source.into()])
        .or_raise(Code::ERRCODE_UNDEFINED_TABLE)
        .unwrap_or_default();
    require_owner(source, &table);
    (source, table)
}

/// The auto-encoding of `source` as (qualified table name, record), for its owner only; an
/// error when the caller does not own it or it is not auto-encoded.
fn owned_auto_encoding(source: pgrx::PgRelation) -> (String, AutoEncoding) {
    let (source, table) = owned_table(source);
    let Some(enc) = encodings("AND source = $1", &[source.into()]).pop() else {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("lightretriever: {table} is not auto-encoded"), None)
    };
    (table, enc)
}

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| raise(Code::ERRCODE_INTERNAL_ERROR, format!("lightretriever: {e} in {sql}"), None));
}

/// Keeps `text_column` of `source` encoded: adds `<text_column>_embedding vector(d)` (and
/// `<text_column>_sparse sparsevec(vocab)` with a sparse model), a queue, and triggers, and
/// enqueues every row with a non-NULL text. The background worker does the encoding.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)] // SECURITY DEFINER: nothing resolves through the caller's path
fn lr_enable_auto_encoding(
    source: pgrx::PgRelation,
    text_column: &str,
    model: default!(Option<&str>, "NULL"),
    sparse_model: default!(Option<&str>, "NULL"),
    batch_size: default!(i32, 32),
) {
    let (source, table) = owned_table(source);
    let kind = Spi::get_one_with_args::<String>("SELECT relkind::text FROM pg_class WHERE oid = $1", &[source.into()])
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    if !matches!(kind.as_deref(), Some("r") | Some("p")) {
        raise(Code::ERRCODE_WRONG_OBJECT_TYPE, format!("lightretriever: {table} is not a table"), None);
    }
    if !(1..=1024).contains(&batch_size) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "lightretriever: batch_size must be between 1 and 1024", None);
    }
    let already = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM lightretriever.lr_auto_encodings WHERE source = $1)",
        &[source.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    if already == Some(true) {
        raise(
            Code::ERRCODE_DUPLICATE_OBJECT,
            format!("lightretriever: {table} is already auto-encoded"),
            Some("Disable it first with lightretriever.lr_disable_auto_encoding."),
        );
    }
    // One catalog read for the column's existence, type and generatedness.
    let column = row_or_none(Spi::get_two_with_args::<String, bool>(
        "SELECT format_type(atttypid, NULL), attgenerated <> '' FROM pg_attribute
          WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
        &[source.into(), text_column.into()],
    ));
    let Some((text_type, generated)) = column else {
        raise(Code::ERRCODE_UNDEFINED_COLUMN, format!("lightretriever: {table} has no column \"{text_column}\""), None)
    };
    match text_type.as_deref() {
        Some("text" | "character varying" | "character") => {}
        other => raise(
            Code::ERRCODE_DATATYPE_MISMATCH,
            format!("lightretriever: column \"{text_column}\" of {table} is {}, not text", other.unwrap_or("untyped")),
            None,
        ),
    }
    // A BEFORE trigger sees a generated column as NULL (PostgreSQL computes it afterwards), and
    // PostgreSQL 15 fires `UPDATE OF` a generated column on every update: the stale-vector
    // trigger would clear vectors that nothing re-encodes.
    if generated == Some(true) {
        raise(
            Code::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("lightretriever: column \"{text_column}\" of {table} is a generated column"),
            Some("Generated columns are computed after BEFORE triggers, so a changed text could not clear its stale vector. Auto-encode a plain text column (filled by the application, or by your own BEFORE trigger named to sort before lr_auto_encoding_clear)."),
        );
    }
    let (key_columns, key_types): (Vec<String>, Vec<String>) = Spi::connect(|c| {
        c.select(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attnum = k.attnum
              WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = $1
              ORDER BY k.n",
            None,
            &[source.into()],
        )?
        .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .into_iter()
    .unzip();
    if key_columns.is_empty() {
        raise(
            Code::ERRCODE_INVALID_TABLE_DEFINITION,
            format!("lightretriever: {table} has no primary key"),
            Some("The queue names rows by primary key; add one (ALTER TABLE ... ADD PRIMARY KEY)."),
        );
    }
    let model = crate::guc::resolve_model(model);
    let info = crate::catalog::load_model(&model);
    let sparse_info = sparse_model.map(|m| {
        let i = crate::catalog::load_model(m);
        if !i.has_lm_head {
            raise(
                Code::ERRCODE_WRONG_OBJECT_TYPE,
                format!("lightretriever: model \"{m}\" has no masked-LM head, so it cannot encode sparse vectors"),
                None,
            );
        }
        i
    });
    let vector_column = format!("{text_column}_embedding");
    let sparse_column = sparse_model.map(|_| format!("{text_column}_sparse"));
    for col in std::iter::once(&vector_column).chain(sparse_column.iter()) {
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped)",
            &[source.into(), col.as_str().into()],
        )
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
        if exists == Some(true) || col.len() > 63 {
            raise(
                Code::ERRCODE_DUPLICATE_COLUMN,
                format!("lightretriever: {table} already has a column \"{col}\" (or the name is over 63 bytes)"),
                Some("Rename or drop it; lr_enable_auto_encoding adds <text_column>_embedding and <text_column>_sparse."),
            );
        }
    }
    let id = Spi::get_one::<i64>("SELECT nextval(pg_get_serial_sequence('lightretriever.lr_auto_encodings', 'id'))")
        .or_raise(Code::ERRCODE_INTERNAL_ERROR)
        .expect("nextval gives a value") as i32;
    Spi::run_with_args(
        "INSERT INTO lightretriever.lr_auto_encodings
           (id, source, text_column, key_columns, key_types, model, sparse_model, vector_column, sparse_column, batch_size, queue_table)
         VALUES ($10, $1, $2, $3, $4, $5, $6, $7, $8, $9, 'lr_queue_' || $10)",
        &[
            source.into(),
            text_column.into(),
            key_columns.clone().into(),
            key_types.clone().into(),
            model.as_str().into(),
            sparse_model.into(),
            vector_column.as_str().into(),
            sparse_column.as_deref().into(),
            batch_size.into(),
            id.into(),
        ],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let enc = AutoEncoding {
        id,
        source,
        source_name: table.clone(),
        text_column: text_column.to_owned(),
        key_columns,
        key_types,
        model,
        sparse_model: sparse_model.map(str::to_owned),
        vector_column,
        sparse_column,
        batch_size,
        queue_table: format!("lr_queue_{id}"),
    };

    run(&format!("ALTER TABLE {table} ADD COLUMN {} {}({})", quote_ident(&enc.vector_column), pgvector_type("vector"), info.hidden_size));
    if let (Some(col), Some(si)) = (&enc.sparse_column, &sparse_info) {
        run(&format!("ALTER TABLE {table} ADD COLUMN {} {}({})", quote_ident(col), pgvector_type("sparsevec"), si.vocab_size));
    }
    create_queue_and_triggers(&enc);

    let keys = enc.key_columns.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    let enqueued = Spi::get_one::<i64>(&format!(
        "WITH q AS (INSERT INTO {} ({}) SELECT {keys} FROM {table} WHERE {} IS NOT NULL ORDER BY {keys} RETURNING 1)
         SELECT count(*) FROM q",
        enc.queue(),
        enc.queue_keys().join(", "),
        quote_ident(&enc.text_column),
    ))
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or(0);
    pgrx::notice!("lightretriever: enqueued {enqueued} rows of {table} for encoding by \"{}\"", enc.model);
    if !crate::worker::worker_serves_this_database() {
        pgrx::warning!(
            "lightretriever: no encoder worker drains queues in this database; rows stay queued until one does"
        );
    }
}

/// pgvector's type `name`, schema-qualified (the search_path here is pg_catalog only).
fn pgvector_type(name: &str) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT format('%I.%I', n.nspname, t.typname) FROM pg_type t
           JOIN pg_namespace n ON n.oid = t.typnamespace
           JOIN pg_extension e ON e.extnamespace = n.oid AND e.extname = 'vector'
          WHERE t.typname = $1",
        &[name.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or_else(|| raise(Code::ERRCODE_UNDEFINED_OBJECT, "lightretriever: pgvector is not installed", None))
}

/// The queue table and the triggers of `enc` (see the module comment for their semantics).
fn create_queue_and_triggers(enc: &AutoEncoding) {
    let table = &enc.source_name;
    let text = quote_ident(&enc.text_column);
    let queue = enc.queue();
    let qkeys = enc.queue_keys();
    let key_defs: Vec<String> = qkeys.iter().zip(&enc.key_types).map(|(k, t)| format!("{k} {t} NOT NULL")).collect();
    run(&format!(
        "CREATE TABLE {queue} (
            id bigserial PRIMARY KEY,
            {},
            attempts integer NOT NULL DEFAULT 0,
            retry_at timestamptz NOT NULL DEFAULT '-infinity',
            last_error text,
            enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        key_defs.join(",\n            ")
    ));
    run(&format!("CREATE INDEX ON {queue} ({})", qkeys.join(", ")));
    run(&format!("GRANT SELECT ON {queue} TO PUBLIC"));

    let new_keys: Vec<String> = enc.key_columns.iter().map(|k| format!("NEW.{}", quote_ident(k))).collect();
    let old_match: Vec<String> =
        enc.key_columns.iter().zip(&qkeys).map(|(k, q)| format!("{q} = OLD.{}", quote_ident(k))).collect();
    let keys_changed: Vec<String> =
        enc.key_columns.iter().map(|k| format!("NEW.{0} IS DISTINCT FROM OLD.{0}", quote_ident(k))).collect();
    let mut clear = format!("NEW.{} := NULL;", quote_ident(&enc.vector_column));
    if let Some(s) = &enc.sparse_column {
        clear.push_str(&format!(" NEW.{} := NULL;", quote_ident(s)));
    }
    let vector = quote_ident(&enc.vector_column);
    let definer = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp";
    let f_clear = enc.function("clear");
    let f_enqueue = enc.function("enqueue");
    let f_forget = enc.function("forget");
    let f_truncate = enc.function("truncate");
    run(&format!(
        "CREATE FUNCTION {f_clear}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $lr$
         BEGIN
           IF TG_OP = 'INSERT' OR NEW.{text} IS DISTINCT FROM OLD.{text} THEN {clear} END IF;
           RETURN NEW;
         END $lr$"
    ));
    // A changed key moves the row: re-enqueue it under the new key when it still needs a vector.
    run(&format!(
        "CREATE FUNCTION {f_enqueue}() RETURNS trigger {definer} AS $lr$
         BEGIN
           IF NEW.{text} IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.{text} IS DISTINCT FROM OLD.{text}
                                          OR (({}) AND NEW.{vector} IS NULL)) THEN
             INSERT INTO {queue} ({}) VALUES ({});
           END IF;
           RETURN NULL;
         END $lr$",
        keys_changed.join(" OR "),
        qkeys.join(", "),
        new_keys.join(", ")
    ));
    // Entries a worker holds right now are skipped (no waiting on it): it finds the row gone.
    run(&format!(
        "CREATE FUNCTION {f_forget}() RETURNS trigger {definer} AS $lr$
         BEGIN
           DELETE FROM {queue} WHERE id IN (SELECT id FROM {queue} WHERE {} FOR UPDATE SKIP LOCKED);
           DELETE FROM lightretriever.lr_failed_items WHERE encoding_id = {} AND row_key = jsonb_build_object({});
           RETURN NULL;
         END $lr$",
        old_match.join(" AND "),
        enc.id,
        enc.key_columns
            .iter()
            .map(|k| format!("{}, OLD.{}", pgrx::spi::quote_literal(k), quote_ident(k)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    run(&format!(
        "CREATE FUNCTION {f_truncate}() RETURNS trigger {definer} AS $lr$
         BEGIN
           DELETE FROM {queue} WHERE id IN (SELECT id FROM {queue} FOR UPDATE SKIP LOCKED);
           DELETE FROM lightretriever.lr_failed_items WHERE encoding_id = {};
           RETURN NULL;
         END $lr$",
        enc.id
    ));
    let key_list = enc.key_columns.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
    for f in [&f_clear, &f_enqueue, &f_forget, &f_truncate] {
        run(&format!("REVOKE ALL ON FUNCTION {f}() FROM PUBLIC"));
    }
    run(&format!(
        "CREATE TRIGGER lr_auto_encoding_clear BEFORE INSERT OR UPDATE OF {text} ON {table}
           FOR EACH ROW EXECUTE FUNCTION {f_clear}()"
    ));
    run(&format!(
        "CREATE TRIGGER lr_auto_encoding_enqueue AFTER INSERT OR UPDATE OF {text}, {key_list} ON {table}
           FOR EACH ROW EXECUTE FUNCTION {f_enqueue}()"
    ));
    run(&format!("CREATE TRIGGER lr_auto_encoding_forget AFTER DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {f_forget}()"));
    run(&format!(
        "CREATE TRIGGER lr_auto_encoding_truncate AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {f_truncate}()"
    ));
}

/// Stops auto-encoding `source`: drops its triggers, queue and failed records; with
/// `drop_columns` also the vector column(s) it added (otherwise the vectors stay).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)] // SECURITY DEFINER: nothing resolves through the caller's path
fn lr_disable_auto_encoding(source: pgrx::PgRelation, drop_columns: default!(bool, false)) {
    let (table, enc) = owned_auto_encoding(source);
    for trigger in ["lr_auto_encoding_clear", "lr_auto_encoding_enqueue", "lr_auto_encoding_forget", "lr_auto_encoding_truncate"] {
        run(&format!("DROP TRIGGER IF EXISTS {trigger} ON {table}"));
    }
    Spi::run_with_args("SELECT lightretriever.lr_drop_auto_encoding_objects($1)", &[enc.id.into()])
        .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    if drop_columns {
        run(&format!("ALTER TABLE {table} DROP COLUMN IF EXISTS {}", quote_ident(&enc.vector_column)));
        if let Some(s) = &enc.sparse_column {
            run(&format!("ALTER TABLE {table} DROP COLUMN IF EXISTS {}", quote_ident(s)));
        }
    }
}

/// Puts the failed rows of `source` back in its queue (attempts start again). Returns how many.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)] // SECURITY DEFINER: nothing resolves through the caller's path
fn lr_retry_failed(source: pgrx::PgRelation) -> i64 {
    let (_, enc) = owned_auto_encoding(source);
    let from_key: Vec<String> = enc
        .key_columns
        .iter()
        .zip(&enc.key_types)
        .map(|(k, t)| format!("(f.row_key->>{})::{t}", pgrx::spi::quote_literal(k)))
        .collect();
    Spi::get_one_with_args::<i64>(
        &format!(
            "WITH moved AS (DELETE FROM lightretriever.lr_failed_items f WHERE f.encoding_id = $1 RETURNING f.*),
                  queued AS (INSERT INTO {} ({}) SELECT {} FROM moved f RETURNING 1)
             SELECT count(*) FROM queued",
            enc.queue(),
            enc.queue_keys().join(", "),
            from_key.join(", ")
        ),
        &[enc.id.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR)
    .unwrap_or(0)
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
        assert_eq!(count(&format!("SELECT count(*) FROM lightretriever.\"{queue}\" WHERE key_1 = 1")), 0);
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
}
