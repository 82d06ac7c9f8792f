//! The SQL of auto-encoding, as pure string builders: the per-table queue, the generated
//! trigger functions, and the statements the background worker runs. No PostgreSQL here; the
//! extension executes what these return, and the golden tests pin every statement.
//!
//! Security model (the table owner is untrusted; see README "Security"):
//! - Keys travel as **text**, written by each key type's *output function*
//!   (`pg_catalog.format('%s', …)`), never by a cast: a cast, comparison or domain check on a
//!   user's type may be the user's own function. Output functions are C code installed by a
//!   superuser. The queue therefore holds no user type at all (`key text[]`), so the
//!   superuser-owned triggers and the worker's queue statements never evaluate user code.
//! - Text goes back to the key types (input functions, domain checks, user casts, the type's
//!   `=`) only in statements the worker runs **as the table owner** in a security-restricted
//!   context ([`Encoding::read_texts`], [`Encoding::lock_rows`], [`Encoding::write_vectors`],
//!   [`Encoding::backfill_keys`], [`Encoding::count_vectors`]).
//! - Output depends on session settings (DateStyle, extra_float_digits, …): the writers and
//!   the reader pin [`KEY_TEXT_SETTINGS`], so that a key written by one session reads back as
//!   the same value in the worker.
//! - Every function and operator is schema-qualified (`pg_catalog.`, `OPERATOR(pg_catalog.=)`),
//!   and every generated function pins `search_path = pg_catalog, pg_temp`.
//! - A plain table is read and written `ONLY` (rows of inheritance children are not its rows);
//!   a partitioned table through its root, with rows addressed by `(tableoid, ctid)` — a ctid
//!   alone names one row in *every* partition.

pub mod retry;

/// Settings under which key values are turned into text and back: every session that writes a
/// key (triggers, backfill) and the worker that reads it pins these, so the text round-trips
/// (timestamptz output carries its offset, so TimeZone need not be pinned). The generated
/// functions also pin `search_path` (see [`Encoding::trigger_functions`]).
pub const KEY_TEXT_SETTINGS: &[(&str, &str)] = &[
    ("datestyle", "ISO, YMD"),
    ("intervalstyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
];

/// `name` as an SQL identifier, always quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `s` as an SQL string literal (standard_conforming_strings, as PostgreSQL ≥ 9.1 has by default;
/// a backslash forces the E'' form so that it is right either way).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The `SET` clauses of a generated function that turns keys into text.
fn key_text_set_clauses() -> String {
    let mut clauses = vec!["SET search_path = pg_catalog, pg_temp".to_owned()];
    clauses.extend(KEY_TEXT_SETTINGS.iter().map(|(name, value)| format!("SET {name} = {}", quote_literal(value))));
    clauses.join(" ")
}

/// `body` dollar-quoted with a tag that does not occur in it: column names are the owner's
/// and may contain `$lr$` (a fixed tag would let a name end the body and append statements
/// that run as the extension's owner).
pub fn dollar_quote(body: &str) -> String {
    let mut tag = "$lr$".to_owned();
    let mut n = 0u32;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$lr{n}$");
    }
    format!("{tag}{body}{tag}")
}

/// The trigger roles, in creation order; also the suffixes of the generated functions.
pub const TRIGGER_ROLES: [&str; 4] = ["clear", "enqueue", "forget", "truncate"];

/// `ROWS FROM (pg_catalog.unnest($1::text[]), …)`: one row per key from one text array per key
/// column (a qualified `unnest` takes one array; only the unqualified name expands to several).
fn unnest_keys(columns: usize) -> String {
    let calls: Vec<String> = (1..=columns).map(|i| format!("pg_catalog.unnest(${i}::pg_catalog.text[])")).collect();
    format!("ROWS FROM ({})", calls.join(", "))
}

/// The schema of the queues from 0.11.0: the extension owner's, and no other role may use it.
/// In the extension's own schema, which every role may use, any role could create a view on a
/// queue or a column of its row type, and so make its owner's drop wait on that role's locks.
pub const QUEUE_SCHEMA: &str = "lightretriever_queues";

/// Where the queues were before 0.11.0 (the library serves the older SQL until the update).
pub const QUEUE_SCHEMA_BEFORE_0_11: &str = "lightretriever";

/// One auto-encoded table as the statements need it.
#[derive(Debug, Clone)]
pub struct Encoding<'a> {
    pub id: i32,
    /// The queue's schema: [`QUEUE_SCHEMA`], or [`QUEUE_SCHEMA_BEFORE_0_11`] before the update.
    pub queue_schema: &'a str,
    /// The source as `regclass::text` (schema-qualified and quoted as needed).
    pub source: &'a str,
    /// A plain table (`relkind` r): its own rows only, `ONLY`. False for a partitioned table.
    pub plain: bool,
    pub text_column: &'a str,
    /// The primary key's columns, in key order.
    pub key_columns: &'a [String],
    /// Their types as SQL names them, schema-qualified; needed only by the statements that turn
    /// key text back into the key types, which panic without them (the extension fills them in
    /// only where it has pinned them for the transaction: a name read earlier could mean a
    /// decoy type by now).
    pub key_types: &'a [String],
    pub vector_column: &'a str,
    pub sparse_column: Option<&'a str>,
}

/// A queue entry `q` that is due now: not failed for good, its back-off over.
const DUE: &str = "q.failed_at IS NULL AND q.retry_at OPERATOR(pg_catalog.<=) pg_catalog.now()";

impl Encoding<'_> {
    /// The queue table's name (in schema `queue_schema`).
    pub fn queue_name(&self) -> String {
        format!("lr_queue_{}", self.id)
    }

    /// `lightretriever_queues."lr_queue_N"`.
    pub fn queue(&self) -> String {
        format!("{}.{}", quote_ident(self.queue_schema), quote_ident(&self.queue_name()))
    }

    /// The generated function of `role` (one of [`TRIGGER_ROLES`]).
    pub fn function(&self, role: &str) -> String {
        format!("lightretriever.{}", quote_ident(&format!("lr_auto_encoding_{}_{role}", self.id)))
    }

    /// The table's own rows: `ONLY source` for a plain table.
    fn rows(&self) -> String {
        if self.plain {
            format!("ONLY {}", self.source)
        } else {
            self.source.to_owned()
        }
    }

    /// The key of `record` (NEW, OLD, or a table alias) as text: `ARRAY[format('%s', r."k"), …]`.
    pub fn key_text(&self, record: &str) -> String {
        let parts: Vec<String> =
            self.key_columns.iter().map(|k| format!("pg_catalog.format('%s', {record}.{})", quote_ident(k))).collect();
        format!("ARRAY[{}]", parts.join(", "))
    }

    fn key_changed(&self) -> String {
        format!("{} COLLATE pg_catalog.\"C\" OPERATOR(pg_catalog.<>) {}", self.key_text("NEW"), self.key_text("OLD"))
    }

    /// True when the text differs from the old one byte for byte (NULLs included): the model
    /// sees bytes, so a change that a non-deterministic collation calls equal still counts. The
    /// column is read through its type's output function, never a cast (were it ever not text,
    /// a cast could be the owner's function, and these triggers run as the extension's owner).
    fn text_changed(&self) -> String {
        let t = quote_ident(self.text_column);
        format!(
            "((NEW.{t} IS NULL) OPERATOR(pg_catalog.<>) (OLD.{t} IS NULL) \
             OR pg_catalog.format('%s', NEW.{t}) COLLATE pg_catalog.\"C\" OPERATOR(pg_catalog.<>) pg_catalog.format('%s', OLD.{t}))"
        )
    }

    /// True when an UPDATE wrote NULL over the row's vector (or sparse vector) and left the text
    /// alone: an ORM saving a whole row it read before the worker wrote the vector does this,
    /// and nothing else would ever encode the row again.
    fn vectors_erased(&self) -> String {
        let mut erased = vec![format!("(NEW.{v} IS NULL AND OLD.{v} IS NOT NULL)", v = quote_ident(self.vector_column))];
        if let Some(s) = self.sparse_column {
            erased.push(format!("(NEW.{s} IS NULL AND OLD.{s} IS NOT NULL)", s = quote_ident(s)));
        }
        erased.join(" OR ")
    }

    /// `NEW."vector" := NULL;` (and the sparse column).
    fn clear_vectors(&self) -> String {
        let mut clear = format!("NEW.{} := NULL;", quote_ident(self.vector_column));
        if let Some(s) = self.sparse_column {
            clear.push_str(&format!(" NEW.{} := NULL;", quote_ident(s)));
        }
        clear
    }

    /// The queue table: keys as text (no user type), attempts and back-off, failed entries kept
    /// (`failed_at`) until retried or their row goes. Readable by nobody but superusers.
    pub fn create_queue(&self) -> Vec<String> {
        let queue = self.queue();
        vec![
            format!(
                "CREATE TABLE {queue} (
    id bigserial PRIMARY KEY,
    key pg_catalog.text[] COLLATE pg_catalog.\"C\" NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    retry_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error pg_catalog.text,
    failed_at timestamptz,
    enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp())"
            ),
            format!("CREATE INDEX ON {queue} (key)"),
            format!("REVOKE ALL ON {queue} FROM PUBLIC"),
        ]
    }

    /// `CREATE OR REPLACE FUNCTION` of the four trigger functions (their bodies name the
    /// columns: regenerated when a column is renamed).
    pub fn trigger_functions(&self) -> Vec<String> {
        let queue = self.queue();
        let text = quote_ident(self.text_column);
        let vector = quote_ident(self.vector_column);
        // The BEFORE trigger runs as whoever writes the row: it only clears the row's own vectors.
        let clear = format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS {}",
            self.function("clear"),
            dollar_quote(&format!(
                "
BEGIN
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' OR {} THEN {} END IF;
  RETURN NEW;
END ",
                self.text_changed(),
                self.clear_vectors()
            ))
        );
        // The others write the queue (superuser's): SECURITY DEFINER, touching user types only
        // through their output functions. A changed key re-enqueues a row still lacking its
        // vector; a vector erased by an UPDATE (the text unchanged) re-enqueues the row.
        let definer = format!("LANGUAGE plpgsql SECURITY DEFINER {}", key_text_set_clauses());
        let enqueue = format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger {definer} AS {}",
            self.function("enqueue"),
            dollar_quote(&format!(
                "
BEGIN
  IF NEW.{text} IS NOT NULL AND (TG_OP OPERATOR(pg_catalog.=) 'INSERT' OR {} OR (({}) AND NEW.{vector} IS NULL) OR {}) THEN
    INSERT INTO {queue} (key) VALUES ({});
  END IF;
  RETURN NULL;
END ",
                self.text_changed(),
                self.key_changed(),
                self.vectors_erased(),
                self.key_text("NEW")
            ))
        );
        // Entries a worker holds right now are skipped (no waiting on it): it finds the row gone.
        let forget = format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger {definer} AS {}",
            self.function("forget"),
            dollar_quote(&format!(
                "
BEGIN
  DELETE FROM {queue} WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY(
    SELECT q.id FROM {queue} q WHERE q.key OPERATOR(pg_catalog.=) {} FOR UPDATE SKIP LOCKED));
  RETURN NULL;
END ",
                self.key_text("OLD")
            ))
        );
        let truncate = format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger {definer} AS {}",
            self.function("truncate"),
            dollar_quote(&format!(
                "
BEGIN
  DELETE FROM {queue} WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT q.id FROM {queue} q FOR UPDATE SKIP LOCKED));
  RETURN NULL;
END "
            ))
        );
        let mut out = vec![clear, enqueue, forget, truncate];
        out.extend(TRIGGER_ROLES.iter().map(|r| format!("REVOKE ALL ON FUNCTION {}() FROM PUBLIC", self.function(r))));
        out
    }

    /// The triggers on the source (row triggers of a partitioned table are cloned to every
    /// partition, present and future).
    pub fn create_triggers(&self) -> Vec<String> {
        let (table, text) = (self.source, quote_ident(self.text_column));
        let keys: Vec<String> = self.key_columns.iter().map(|k| quote_ident(k)).collect();
        vec![
            format!(
                "CREATE TRIGGER lr_auto_encoding_clear BEFORE INSERT OR UPDATE OF {text} ON {table} FOR EACH ROW EXECUTE FUNCTION {}()",
                self.function("clear")
            ),
            format!(
                "CREATE TRIGGER lr_auto_encoding_enqueue AFTER INSERT OR UPDATE OF {text}, {} ON {table} FOR EACH ROW EXECUTE FUNCTION {}()",
                keys.iter().chain(self.vector_columns().iter()).cloned().collect::<Vec<_>>().join(", "),
                self.function("enqueue")
            ),
            format!("CREATE TRIGGER lr_auto_encoding_forget AFTER DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {}()", self.function("forget")),
            format!(
                "CREATE TRIGGER lr_auto_encoding_truncate AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                self.function("truncate")
            ),
        ]
    }

    /// The vector column and the sparse one, quoted.
    fn vector_columns(&self) -> Vec<String> {
        std::iter::once(self.vector_column).chain(self.sparse_column).map(quote_ident).collect()
    }

    pub fn drop_triggers(&self) -> Vec<String> {
        TRIGGER_ROLES.iter().map(|r| format!("DROP TRIGGER IF EXISTS lr_auto_encoding_{r} ON {}", self.source)).collect()
    }

    /// As the owner: the key text of every row with a text (the backfill). No parameters.
    pub fn backfill_keys(&self) -> String {
        self.keys_where("")
    }

    /// As the owner: the key text of every row with a text but no vector (rows of a partition
    /// attached later, a restored dump). No parameters.
    pub fn missing_keys(&self) -> String {
        self.keys_where(&format!(" AND s.{} IS NULL", quote_ident(self.vector_column)))
    }

    fn keys_where(&self, and: &str) -> String {
        let keys: Vec<String> = self.key_columns.iter().map(|k| format!("s.{}", quote_ident(k))).collect();
        format!(
            "SELECT {} FROM {} s WHERE s.{} IS NOT NULL{and} ORDER BY {}",
            self.key_text("s"),
            self.rows(),
            quote_ident(self.text_column),
            keys.join(", ")
        )
    }

    /// Enqueues keys given as one `text[]` per key column ($1 … $n, equal lengths).
    pub fn enqueue_keys(&self) -> String {
        let n = self.key_columns.len();
        let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
        let cols: Vec<String> = names.iter().map(|k| format!("k.{k}")).collect();
        format!("INSERT INTO {} (key) SELECT ARRAY[{}] FROM {} AS k({})", self.queue(), cols.join(", "), unnest_keys(n), names.join(", "))
    }

    /// True while an entry is due now (one [`Encoding::claim`] would take, unless another worker
    /// holds it): a read that takes no transaction id, before the worker pins the table for a
    /// batch.
    pub fn due_exists(&self) -> String {
        format!("SELECT EXISTS (SELECT 1 FROM {} q WHERE {DUE})", self.queue())
    }

    /// Up to $1 entries due now, locked without waiting, grouped by key (a row changed several
    /// times has several entries): `(ids bigint[], key text[])`, oldest first.
    pub fn claim(&self) -> String {
        format!(
            "SELECT pg_catalog.array_agg(c.id ORDER BY c.id), c.key
  FROM (SELECT q.id, q.key FROM {} q
         WHERE {DUE}
         ORDER BY q.id LIMIT $1 FOR UPDATE SKIP LOCKED) c
 GROUP BY c.key ORDER BY pg_catalog.min(c.id)",
            self.queue()
        )
    }

    /// `s."k1" = <value(0)>::<type 1> AND …`, one per key column: text turned back into the key
    /// types (as the owner: input functions, domain checks).
    fn key_equalities(&self, value: impl Fn(usize) -> String) -> Vec<String> {
        assert_eq!(self.key_types.len(), self.key_columns.len(), "the key types are named (pinned) before key text is cast");
        self.key_columns
            .iter()
            .zip(self.key_types)
            .enumerate()
            .map(|(i, (c, t))| format!("s.{} OPERATOR(pg_catalog.=) {}::{t}", quote_ident(c), value(i)))
            .collect()
    }

    /// `unnest($1::text[], …) WITH ORDINALITY AS k(k1, …, n)` joined to the source on its key,
    /// text turned back into the key types (as the owner: input functions, domain checks).
    fn key_join(&self, join: &str) -> String {
        let n = self.key_columns.len();
        let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
        let on = self.key_equalities(|i| format!("k.k{}", i + 1));
        format!("{} WITH ORDINALITY AS k({}, n) {join} {} s ON {}", unnest_keys(n), names.join(", "), self.rows(), on.join(" AND "))
    }

    /// As the owner: `(n, found, text)` for each key given ($1 … $n text[]), in order.
    pub fn read_texts(&self) -> String {
        format!(
            "SELECT k.n, s.ctid IS NOT NULL, s.{}::pg_catalog.text FROM {} ORDER BY k.n",
            quote_ident(self.text_column),
            self.key_join("LEFT JOIN")
        )
    }

    /// As the owner: locks the rows of the keys given that nobody else holds (`SKIP LOCKED`,
    /// never waits): `(n, ctid, tableoid, text)`.
    pub fn lock_rows(&self) -> String {
        format!(
            "SELECT k.n, s.ctid::pg_catalog.text, s.tableoid, s.{}::pg_catalog.text FROM {} FOR NO KEY UPDATE OF s SKIP LOCKED",
            quote_ident(self.text_column),
            self.key_join("JOIN")
        )
    }

    /// As the owner: writes one row's vectors ($1 vector, $2 sparsevec or NULL) at (tableoid $4,
    /// ctid $3) — locked by [`Encoding::lock_rows`] in the same transaction.
    pub fn write_vectors(&self) -> String {
        let mut set = format!("{} = $1", quote_ident(self.vector_column));
        if let Some(s) = self.sparse_column {
            set.push_str(&format!(", {} = $2", quote_ident(s)));
        }
        format!(
            "UPDATE {} SET {set} WHERE ctid OPERATOR(pg_catalog.=) $3::pg_catalog.tid AND tableoid OPERATOR(pg_catalog.=) $4::pg_catalog.oid",
            self.rows()
        )
    }

    /// As the owner: rows that have a vector.
    pub fn count_vectors(&self) -> String {
        format!("SELECT pg_catalog.count(*) FROM {} WHERE {} IS NOT NULL", self.rows(), quote_ident(self.vector_column))
    }

    /// Entries $1 (bigint[]) failed once more with error $2: back off 1, 2, 4 … ≤ 60 s.
    pub fn count_attempt(&self) -> String {
        format!(
            "UPDATE {} SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $2,
       retry_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => LEAST(60, 2 OPERATOR(pg_catalog.^) attempts))
 WHERE id OPERATOR(pg_catalog.=) ANY ($1)",
            self.queue()
        )
    }

    /// Entries $1 that reached $2 attempts are failed (kept, not retried).
    pub fn mark_failed(&self) -> String {
        format!(
            "UPDATE {} SET failed_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) ANY ($1) AND attempts OPERATOR(pg_catalog.>=) $2",
            self.queue()
        )
    }

    /// Entries $1 are done.
    pub fn finish(&self) -> String {
        format!("DELETE FROM {} WHERE id OPERATOR(pg_catalog.=) ANY ($1)", self.queue())
    }

    /// Entries $1 are retried in a second (their row was locked by someone else, or changed).
    pub fn retry_soon(&self) -> String {
        format!(
            "UPDATE {} SET retry_at = pg_catalog.now() OPERATOR(pg_catalog.+) '1 second'::pg_catalog.interval WHERE id OPERATOR(pg_catalog.=) ANY ($1)",
            self.queue()
        )
    }

    /// Failed entries go back to the queue; returns how many rows (keys).
    pub fn retry_failed(&self) -> String {
        format!(
            "WITH r AS (UPDATE {} SET failed_at = NULL, attempts = 0, retry_at = '-infinity' WHERE failed_at IS NOT NULL RETURNING key)
SELECT pg_catalog.count(DISTINCT key) FROM r",
            self.queue()
        )
    }

    /// `(pending entries, failed rows)`.
    pub fn queue_counts(&self) -> String {
        format!(
            "SELECT pg_catalog.count(*) FILTER (WHERE failed_at IS NULL), pg_catalog.count(DISTINCT key) FILTER (WHERE failed_at IS NOT NULL) FROM {}",
            self.queue()
        )
    }

    /// True while entries wait (failed ones do not).
    pub fn pending_exists(&self) -> String {
        format!("SELECT EXISTS (SELECT 1 FROM {} WHERE failed_at IS NULL)", self.queue())
    }

    /// One row per failed key: `(key text[], last_error, attempts, failed_at)`.
    pub fn failed_rows(&self) -> String {
        format!(
            "SELECT DISTINCT ON (key) key, last_error, attempts, failed_at FROM {} WHERE failed_at IS NOT NULL ORDER BY key, id DESC",
            self.queue()
        )
    }

    // Citus distributed tables: their rows live on the worker nodes, where no trigger can reach
    // the coordinator's queue. Pending work is the rows themselves — a text and no vector (the
    // BEFORE trigger clears a changed row's vectors on its shard) — found through a partial
    // index; the queue keeps only the keys that failed, with their attempts.

    /// The partial index of the rows waiting for their vectors (on every shard).
    pub fn pending_index_name(&self) -> String {
        format!("lr_auto_encoding_{}_pending", self.id)
    }

    /// As the owner: creates [`Encoding::pending_index_name`] on the source.
    pub fn create_pending_index(&self) -> String {
        let keys: Vec<String> = self.key_columns.iter().map(|k| quote_ident(k)).collect();
        format!(
            "CREATE INDEX {} ON {} ({}) WHERE {}",
            quote_ident(&self.pending_index_name()),
            self.source,
            keys.join(", "),
            self.pending_condition("")
        )
    }

    /// `text IS NOT NULL AND vector IS NULL` (of alias `s.`, or of no alias: "").
    fn pending_condition(&self, alias: &str) -> String {
        format!("{alias}{} IS NOT NULL AND {alias}{} IS NULL", quote_ident(self.text_column), quote_ident(self.vector_column))
    }

    /// As the owner: up to $1 rows waiting for their vectors, `(key text[], text)`, by key, but
    /// those whose key (`text[]` as text) is in $2 (`text[]`: the keys that failed).
    pub fn pending_rows(&self) -> String {
        let keys: Vec<String> = self.key_columns.iter().map(|k| format!("s.{}", quote_ident(k))).collect();
        format!(
            "SELECT {key}, s.{}::pg_catalog.text FROM {} s WHERE {}
                AND NOT ({key}::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]))
              ORDER BY {} LIMIT $1",
            quote_ident(self.text_column),
            self.source,
            self.pending_condition("s."),
            keys.join(", "),
            key = self.key_text("s"),
        )
    }

    /// As the owner: which of the keys $1 (`text[]`: keys as text) still wait (a filter, not a
    /// join: Citus runs it on every shard as it is). The others' failures are over.
    pub fn still_pending(&self) -> String {
        format!(
            "SELECT {key}::pg_catalog.text FROM {} s WHERE {} AND {key}::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])",
            self.source,
            self.pending_condition("s."),
            key = self.key_text("s")
        )
    }

    /// As the owner: the number of rows waiting for their vectors.
    pub fn pending_count(&self) -> String {
        format!("SELECT pg_catalog.count(*) FROM {} s WHERE {}", self.source, self.pending_condition("s."))
    }

    /// As the owner: writes one row's vectors ($1 vector, $2 sparsevec or NULL) by its key ($3 …
    /// as text, turned back into the key types: the statement goes to the row's shard alone) if
    /// its text is still $(n+3), the text encoded, and it still has no vector. 0 rows: changed.
    pub fn write_vectors_by_key(&self) -> String {
        let n = self.key_columns.len();
        let mut set = format!("{} = $1", quote_ident(self.vector_column));
        if let Some(s) = self.sparse_column {
            set.push_str(&format!(", {} = $2", quote_ident(s)));
        }
        let keys = self.key_equalities(|i| format!("${}::pg_catalog.text", i + 3));
        // Bytes, not the column's collation (a nondeterministic one finds "Paris" = "paris").
        format!(
            "UPDATE {} s SET {set} WHERE {} AND s.{}::pg_catalog.text COLLATE pg_catalog.\"C\" OPERATOR(pg_catalog.=) ${} AND {}",
            self.source,
            keys.join(" AND "),
            quote_ident(self.text_column),
            n + 3,
            self.pending_condition("s.")
        )
    }

    /// The queue entry of key $1 (text[]), made if it has none: its id (failures are counted on it).
    pub fn failure_entry(&self) -> String {
        format!(
            "WITH found AS (SELECT pg_catalog.min(id) AS id FROM {q} WHERE key OPERATOR(pg_catalog.=) $1),
                  made AS (INSERT INTO {q} (key) SELECT $1 WHERE (SELECT id FROM found) IS NULL RETURNING id)
             SELECT COALESCE((SELECT id FROM found), (SELECT id FROM made))",
            q = self.queue()
        )
    }

    /// The entries of the keys $1 (`text[]`: keys as text): their rows were written, or wait no
    /// longer.
    pub fn forget_keys(&self) -> String {
        format!("DELETE FROM {} WHERE key::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])", self.queue())
    }

    /// Keys (`text[]` as text) with entries: `(key, failed for good)` — failed ones are not
    /// retried until `lr_retry_failed`.
    pub fn entry_keys(&self) -> String {
        format!("SELECT key::pg_catalog.text, pg_catalog.bool_or(failed_at IS NOT NULL) FROM {} GROUP BY key", self.queue())
    }
}
