//! A hostile table owner (issue 11): an ordinary role that owns tables whose keys are of its own
//! types, with casts, operators, domain checks, triggers, index expressions, row-level security
//! and functions planted in `public` that shadow built-ins — every one of them a trap that logs
//! who runs it and tries to make the role a superuser. Everything lightretriever does with
//! those tables (enable, backfill, triggers, the worker's batches, failures and retries, the
//! status views, a superuser's fit and search) runs; afterwards the role is still no superuser
//! and no trap ever ran as anyone but the owner.

use std::time::Duration;

use lr_e2e::*;
use postgres::Client;

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The role, its schema and its traps. `public` is writable for it, as in databases created
/// before PostgreSQL 15.
const SETUP: &str = r#"
DO $$ BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mallory') THEN
    DROP SCHEMA IF EXISTS mallory CASCADE;
    DROP OWNED BY mallory;
    DROP ROLE mallory;
  END IF;
END $$;
DROP ROLE IF EXISTS eve;
CREATE ROLE mallory LOGIN;
CREATE ROLE eve LOGIN;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE SCHEMA mallory AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA mallory TO PUBLIC;
SET ROLE mallory;
CREATE TABLE mallory.log (trap text, who name, super boolean, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT, SELECT ON mallory.log TO PUBLIC;
-- Logs who runs it, then tries to take over.
CREATE FUNCTION mallory.trap(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO mallory.log (trap, who, super)
       VALUES (what, current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user));
  BEGIN
    EXECUTE 'ALTER ROLE mallory SUPERUSER';
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  RETURN true;
END $$;
CREATE FUNCTION mallory.itrap(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM mallory.trap('index expression'); RETURN t; END $$;

-- An enum key with casts to text and json, and an = in its schema and in public.
CREATE TYPE mallory.color AS ENUM ('red', 'green', 'blue', 'cyan', 'magenta', 'yellow', 'black', 'white');
CREATE FUNCTION mallory.color_text(mallory.color) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('cast color to text'); RETURN pg_catalog.format('%s', $1); END $$;
CREATE CAST (mallory.color AS text) WITH FUNCTION mallory.color_text(mallory.color);
CREATE FUNCTION mallory.color_json(mallory.color) RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('cast color to json'); RETURN pg_catalog.to_json(pg_catalog.format('%s', $1)); END $$;
CREATE CAST (mallory.color AS json) WITH FUNCTION mallory.color_json(mallory.color);
CREATE FUNCTION mallory.color_jsonb(mallory.color) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('cast color to jsonb'); RETURN pg_catalog.to_jsonb(pg_catalog.format('%s', $1)); END $$;
CREATE CAST (mallory.color AS jsonb) WITH FUNCTION mallory.color_jsonb(mallory.color);
CREATE FUNCTION mallory.text_color(text) RETURNS mallory.color LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('cast text to color'); RETURN pg_catalog.enum_in(pg_catalog.textout($1), 'mallory.color'::regtype); END $$;
CREATE FUNCTION mallory.color_eq(mallory.color, mallory.color) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('operator ='); RETURN pg_catalog.enum_eq($1, $2); END $$;
CREATE OPERATOR mallory.= (LEFTARG = mallory.color, RIGHTARG = mallory.color, FUNCTION = mallory.color_eq);
CREATE OPERATOR public.= (LEFTARG = mallory.color, RIGHTARG = mallory.color, FUNCTION = mallory.color_eq);

-- A domain key whose CHECK is a trap.
CREATE DOMAIN mallory.code AS text CHECK (mallory.trap('domain check'));

-- A composite key with casts.
CREATE TYPE mallory.pair AS (a integer, b text);
CREATE FUNCTION mallory.pair_text(mallory.pair) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('cast pair to text'); RETURN pg_catalog.format('%s', $1); END $$;
CREATE CAST (mallory.pair AS text) WITH FUNCTION mallory.pair_text(mallory.pair);
CREATE FUNCTION mallory.pair_json(mallory.pair) RETURNS json LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('cast pair to json'); RETURN '{}'::json; END $$;
CREATE CAST (mallory.pair AS json) WITH FUNCTION mallory.pair_json(mallory.pair);

-- Built-ins shadowed in public by better-matching signatures.
CREATE FUNCTION public.quote_ident(name) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('public.quote_ident'); RETURN pg_catalog.quote_ident($1::text); END $$;
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('public.unnest'); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.format(text, mallory.color) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('public.format'); RETURN 'x'; END $$;
CREATE FUNCTION public.array_agg_step(bigint[], bigint) RETURNS bigint[] LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('public.array_agg'); RETURN pg_catalog.array_append($1, $2); END $$;
CREATE AGGREGATE public.array_agg(bigint) (SFUNC = public.array_agg_step, STYPE = bigint[]);

-- The tables: each key kind, with a trap trigger, a trap index expression and forced
-- row-level security whose policy is a trap.
CREATE TABLE mallory.colors (k mallory.color PRIMARY KEY, n integer UNIQUE, body text);
CREATE TABLE mallory.codes (k mallory.code PRIMARY KEY, body text);
CREATE TABLE mallory.pairs (k mallory.pair PRIMARY KEY, body text);
CREATE FUNCTION mallory.on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.trap('trigger ' || TG_TABLE_NAME); RETURN NEW; END $$;
CREATE TRIGGER a_trap BEFORE UPDATE ON mallory.colors FOR EACH ROW EXECUTE FUNCTION mallory.on_update();
CREATE TRIGGER a_trap BEFORE UPDATE ON mallory.codes FOR EACH ROW EXECUTE FUNCTION mallory.on_update();
CREATE TRIGGER a_trap BEFORE UPDATE ON mallory.pairs FOR EACH ROW EXECUTE FUNCTION mallory.on_update();
CREATE INDEX ON mallory.colors (mallory.itrap(body));
ALTER TABLE mallory.colors ENABLE ROW LEVEL SECURITY;
ALTER TABLE mallory.colors FORCE ROW LEVEL SECURITY;
CREATE POLICY trap ON mallory.colors USING (mallory.trap('row-level security'));
INSERT INTO mallory.colors (k, n, body) SELECT c, i, 'the ' || c || ' document about library catalogues'
  FROM pg_catalog.unnest(pg_catalog.enum_range(NULL::mallory.color)) WITH ORDINALITY AS e(c, i);
INSERT INTO mallory.codes SELECT 'code-' || i, 'coded text ' || i FROM generate_series(1, 12) i;
INSERT INTO mallory.pairs SELECT ROW(i, 'b' || i)::mallory.pair, 'pair text ' || i FROM generate_series(1, 12) i;
RESET ROLE;
"#;

/// Rows whose vector is not a fresh encoding of their text, compared here rather than in SQL
/// (the role's aggregates in `public` make the shared helper's `array_agg` ambiguous).
fn wrong_rows(c: &mut Client, table: &str) -> usize {
    let rows = c.query(&format!("SELECT body, body_embedding FROM {table}"), &[]).unwrap();
    rows.iter()
        .filter(|r| {
            let body: String = r.get(0);
            let Some(v) = r.get::<_, Option<pgvector::Vector>>(1) else { return true };
            let fresh: pgvector::Vector = c.query_one("SELECT lightretriever.lr_encode_document($1, 'minilm')", &[&body]).unwrap().get(0);
            v.as_slice().iter().zip(fresh.as_slice()).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt() > 1e-5
        })
        .count()
}

/// Traps that ran with other rights than the owner's: must stay empty.
const ESCALATIONS: &str = "SELECT count(*) FROM mallory.log WHERE who <> 'mallory' OR super";

#[test]
fn a_hostile_owner_never_runs_code_with_other_rights() {
    let mut c = pipeline_database();
    c.batch_execute(SETUP).unwrap();
    // A model whose weights are damaged, so that rows fail and are retried.
    let broken = std::env::temp_dir().join("lr-e2e-hostile-broken-model");
    let _ = std::fs::remove_dir_all(&broken);
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(dense_model_dir()).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
        }
    }
    c.batch_execute("SELECT lightretriever.lr_drop_model(name) FROM lightretriever.lr_models WHERE name = 'hostile-broken'").unwrap();
    c.execute("SELECT lightretriever.lr_register_model('hostile-broken', $1)", &[&broken.to_string_lossy().as_ref()]).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not weights").unwrap();
    c.batch_execute("ALTER SYSTEM SET lightretriever.max_retries = 1").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();

    // The owner enables its tables (with public first in its path) and keeps writing.
    let mut m = fresh_connection("postgres");
    m.batch_execute("SET ROLE mallory; SET search_path = public, mallory, lightretriever").unwrap();
    m.batch_execute(
        "SELECT lr_enable_auto_encoding('mallory.colors', 'body', 'minilm');
         SELECT lr_enable_auto_encoding('mallory.pairs', 'body', 'minilm');
         SELECT lr_enable_auto_encoding('mallory.codes', 'body', 'hostile-broken');",
    )
    .unwrap();
    m.batch_execute(
        "UPDATE mallory.colors SET body = body || ' revised' WHERE k = 'red';
         INSERT INTO mallory.pairs VALUES (ROW(99, 'x'), 'late pair');
         DELETE FROM mallory.pairs WHERE (k).a = 1;
         DELETE FROM mallory.colors WHERE k = 'white';
         UPDATE mallory.codes SET body = 'new code text' WHERE k = 'code-3';
         DELETE FROM mallory.codes WHERE k = 'code-12';",
    )
    .unwrap();
    for t in ["mallory.colors", "mallory.pairs", "mallory.codes"] {
        wait_for_encoding(&mut c, t, 180);
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM mallory.colors WHERE body_embedding IS NULL"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mallory.pairs WHERE body_embedding IS NULL"), 0);
    assert_eq!(wrong_rows(&mut c, "mallory.colors"), 0);
    assert_eq!(wrong_rows(&mut c, "mallory.pairs"), 0);

    // The broken table's rows failed; the owner sees them (keys as text) and retries them.
    let failed: Vec<(String, String)> = m
        .query(
            "SELECT row_key->>'k', error FROM lr_failed_items WHERE source = 'mallory.codes'::regclass ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(failed.len(), 11, "{failed:?}");
    assert!(failed.iter().all(|(k, e)| k.starts_with("code-") && e.contains("hostile-broken")), "{failed:?}");
    let retried: i64 = m.query_one("SELECT lr_retry_failed('mallory.codes')", &[]).unwrap().get(0);
    assert_eq!(retried, 11);
    wait_for_encoding(&mut c, "mallory.codes", 120);
    let status: Vec<(String, String, i64)> = m
        .query("SELECT source::text, status, failed FROM lr_encoding_status ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        status,
        vec![
            ("codes".into(), "active".into(), 11),
            ("colors".into(), "active".into(), 0),
            ("pairs".into(), "active".into(), 0)
        ],
        "the owner sees its own tables (its search path names them)"
    );
    assert!(count(&mut m, "SELECT count(*) FROM lr_encoding_errors") > 0, "the owner sees its tables' errors");

    // Another role sees none of it, and cannot read the queues.
    let mut e = fresh_connection("postgres");
    e.batch_execute("SET ROLE eve").unwrap();
    assert_eq!(count(&mut e, "SELECT count(*) FROM lightretriever.lr_encoding_status WHERE source::text LIKE 'mallory.%'"), 0);
    assert_eq!(count(&mut e, "SELECT count(*) FROM lightretriever.lr_failed_items"), 0);
    assert_eq!(count(&mut e, "SELECT count(*) FROM lightretriever.lr_encoding_errors"), 0);
    let queue: String =
        c.query_one("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = 'mallory.codes'::regclass", &[]).unwrap().get(0);
    let (msg, _) = error_of(&mut e, &format!("SELECT * FROM lightretriever_queues.\"{queue}\""));
    assert!(msg.contains("permission denied"), "{msg}");
    let (msg, _) = error_of(&mut e, "SELECT lightretriever.lr_wait_for_encoding('mallory.codes', '1 s')");
    assert_eq!(msg, "lightretriever: mallory.codes is not auto-encoded");

    // A superuser's own calls on the owner's tables: views, fit, search, with public first.
    c.batch_execute(
        "SET search_path = public, mallory, lightretriever;
         SELECT count(*) FROM lr_encoding_status;
         SELECT count(*) FROM lr_failed_items;
         SELECT lightretriever.lr_drop_model(name) FROM lightretriever.lr_models WHERE name = 'splade';",
    )
    .unwrap();
    c.execute("SELECT lightretriever.lr_register_model('splade', $1)", &[&sparse_model_dir().to_string_lossy().as_ref()]).unwrap();
    c.batch_execute(
        "SELECT lr_build_query_table('minilm') WHERE NOT EXISTS (SELECT FROM lr_query_tables WHERE model = 'minilm');
         SELECT lr_fit_sparse_query_weights('splade', 'mallory.colors', 'body');
         SELECT * FROM lr_search('mallory.colors', 'library catalogue', mode => 'dense', id_column => 'n', model => 'minilm');
         RESET search_path;",
    )
    .unwrap();
    // The owner disables, drops its own things: still nothing escalated.
    m.batch_execute("SELECT lr_disable_auto_encoding('mallory.pairs', drop_columns => true); TRUNCATE mallory.colors").unwrap();

    let traps: Vec<(String, String)> = c
        .query("SELECT DISTINCT trap, who::text FROM mallory.log ORDER BY 1, 2", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(count(&mut c, ESCALATIONS), 0, "traps ran as someone else: {traps:?}");
    let rolsuper: bool = c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'", &[]).unwrap().get(0);
    assert!(!rolsuper, "mallory became a superuser");
    // The traps did run — as the owner, where the owner's code belongs.
    for expected in ["domain check", "row-level security", "trigger colors", "index expression"] {
        assert!(traps.iter().any(|(t, _)| t == expected), "{expected} never ran: {traps:?}");
    }

    c.batch_execute("ALTER SYSTEM RESET lightretriever.max_retries").unwrap();
    c.batch_execute(
        "SELECT pg_reload_conf();
         SELECT lightretriever.lr_disable_auto_encoding(source) FROM lightretriever.lr_auto_encodings
          WHERE source::text LIKE 'mallory.%';
         DROP SCHEMA mallory CASCADE;
         DROP FUNCTION public.quote_ident(name), public.unnest(text[]);
         DROP AGGREGATE public.array_agg(bigint); DROP FUNCTION public.array_agg_step(bigint[], bigint);
         REVOKE CREATE ON SCHEMA public FROM mallory;
         DROP OWNED BY mallory; DROP ROLE mallory; DROP ROLE eve;
         SELECT lightretriever.lr_drop_model('hostile-broken');",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(10));
}

/// The attacks a hostile review found in an earlier version of the defences above: a column
/// name that ends a generated function's body, a rename that bypasses the ALTER TABLE event
/// trigger, the owner's trigger (fired by the worker) acting with the worker's identity, a
/// trigger that catches the statement timeout's cancel to hold the worker, and a user type
/// named like pgvector's with an implicit cast, searched by a superuser.
#[test]
fn the_reviewed_attacks_fail() {
    let mut c = pipeline_database();
    c.batch_execute(SETUP).unwrap();
    c.batch_execute("ALTER SYSTEM SET lightretriever.statement_timeout = '500ms'").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let started_at: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    // A victim: another role's auto-encoded table, with a failed key it would rather keep private.
    c.batch_execute(
        "DROP SCHEMA IF EXISTS victim CASCADE; DROP ROLE IF EXISTS lr_victim;
         CREATE ROLE lr_victim; CREATE SCHEMA victim AUTHORIZATION lr_victim;
         SET ROLE lr_victim;
         CREATE TABLE victim.docs (k text PRIMARY KEY, body text);
         INSERT INTO victim.docs SELECT 'secret-' || i, 'victim text ' || i FROM generate_series(1, 30) i;
         SELECT lightretriever.lr_enable_auto_encoding('victim.docs', 'body', 'minilm');
         RESET ROLE;",
    )
    .unwrap();
    let victim: i64 = c.query_one("SELECT 'victim.docs'::regclass::oid::bigint", &[]).unwrap().get(0);
    c.batch_execute(&format!(
        r#"SET ROLE mallory;
        -- A key column whose name would close a "$lr$" body.
        CREATE TABLE mallory.inj ("$lr$;SELECT mallory.trap('injected');SELECT $lr$" int PRIMARY KEY, body text);
        INSERT INTO mallory.inj VALUES (1, 'injected text');
        SELECT lightretriever.lr_enable_auto_encoding('mallory.inj', 'body', 'minilm');
        -- Renames through ALTER VIEW, then an enum column with a trap cast named like the text.
        CREATE TABLE mallory.av (id int PRIMARY KEY, body text, c mallory.color DEFAULT 'red');
        INSERT INTO mallory.av VALUES (1, 'one');
        SELECT lightretriever.lr_enable_auto_encoding('mallory.av', 'body', 'minilm');
        ALTER VIEW mallory.av RENAME COLUMN body TO b2;
        ALTER VIEW mallory.av RENAME COLUMN c TO body;
        UPDATE mallory.av SET b2 = 'changed';
        -- The worker's write of this table fires a trigger that acts against the victim.
        CREATE TABLE mallory.borrow (id int PRIMARY KEY, body text);
        CREATE FUNCTION mallory.borrow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          BEGIN PERFORM lightretriever.lr_disable_auto_encoding({victim}::oid::regclass, true);
                INSERT INTO mallory.log VALUES ('disabled the victim', current_user, false);
          EXCEPTION WHEN OTHERS THEN INSERT INTO mallory.log VALUES ('refused: ' || SQLERRM, current_user, false); END;
          INSERT INTO mallory.log SELECT 'saw ' || row_key::text, current_user, false FROM lightretriever.lr_failed_items;
          INSERT INTO mallory.log SELECT 'saw status of ' || source::text, current_user, false FROM lightretriever.lr_encoding_status;
          RETURN NEW;
        END $$;
        CREATE TRIGGER a_borrow BEFORE UPDATE ON mallory.borrow FOR EACH ROW EXECUTE FUNCTION mallory.borrow();
        INSERT INTO mallory.borrow VALUES (1, 'borrowed identity');
        SELECT lightretriever.lr_enable_auto_encoding('mallory.borrow', 'body', 'minilm');
        -- A trigger that swallows cancels, for at most a minute.
        CREATE TABLE mallory.stall (id int PRIMARY KEY, body text);
        CREATE FUNCTION mallory.stall() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE t0 timestamptz := clock_timestamp();
        BEGIN
          LOOP
            EXIT WHEN clock_timestamp() > t0 + interval '60 seconds';
            BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN NULL; END;
          END LOOP;
          RETURN NEW;
        END $$;
        CREATE TRIGGER a_stall BEFORE UPDATE ON mallory.stall FOR EACH ROW EXECUTE FUNCTION mallory.stall();
        INSERT INTO mallory.stall VALUES (1, 'stalling text');
        SELECT lightretriever.lr_enable_auto_encoding('mallory.stall', 'body', 'minilm');
        -- Not pgvector's vector, with an implicit cast to it.
        CREATE TYPE mallory.vector AS (x int);
        CREATE FUNCTION mallory.to_vec(mallory.vector) RETURNS public.vector LANGUAGE plpgsql AS $$
        BEGIN PERFORM mallory.trap('cast to vector'); RETURN array_fill(0.1::real, ARRAY[384])::public.vector; END $$;
        CREATE CAST (mallory.vector AS public.vector) WITH FUNCTION mallory.to_vec(mallory.vector) AS IMPLICIT;
        CREATE TABLE mallory.s (id int PRIMARY KEY, emb mallory.vector);
        INSERT INTO mallory.s VALUES (1, ROW(1));
        RESET ROLE;"#
    ))
    .unwrap();
    let names: (String, String) = {
        let r = c.query_one("SELECT text_column::text, vector_column::text FROM lightretriever.lr_auto_encodings WHERE source = 'mallory.av'::regclass", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(names, ("b2".to_string(), "body_embedding".to_string()), "ALTER VIEW … RENAME COLUMN is followed");
    // The victim drains although the stalling table holds the worker past the hard deadline.
    wait_for_encoding(&mut c, "victim.docs", 120);
    for t in ["mallory.inj", "mallory.av", "mallory.borrow"] {
        wait_for_encoding(&mut c, t, 120);
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM victim.docs WHERE body_embedding IS NULL"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mallory.av WHERE body_embedding IS NULL"), 0);
    // The superuser's search refuses the look-alike type.
    let (msg, _) = error_of(&mut c, "SELECT * FROM lightretriever.lr_search('mallory.s', 'hello', mode => 'dense', model => 'minilm')");
    assert_eq!(msg, "lightretriever: mallory.s has no vector column");
    // The stalling table was backed off with its reason; the cluster never reset.
    let t = std::time::Instant::now();
    let stall_error = loop {
        let e: Option<String> = c
            .query_opt(
                "SELECT error FROM lightretriever.lr_encoding_errors r JOIN lightretriever.lr_auto_encodings a ON a.id = r.encoding_id
                  WHERE a.source = 'mallory.stall'::regclass AND error LIKE '%would not stop%' LIMIT 1",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0));
        if let Some(e) = e {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the stall was never recorded");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(stall_error.contains("skips this table for 30 s"), "{stall_error}");
    let now: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    assert_eq!(now, started_at, "the cluster was reset");

    let log: Vec<(String, String)> =
        c.query("SELECT trap, who::text FROM mallory.log ORDER BY at", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(count(&mut c, ESCALATIONS), 0, "{log:?}");
    assert!(!log.iter().any(|(t, _)| t == "injected" || t == "cast to vector" || t == "disabled the victim"), "{log:?}");
    assert!(log.iter().any(|(t, _)| t.starts_with("refused: lightretriever: must be the owner")), "{log:?}");
    let seen: Vec<&String> = log.iter().map(|(t, _)| t).filter(|t| t.starts_with("saw")).collect();
    assert!(!seen.iter().any(|t| t.contains("secret") || t.contains("victim")), "the victim's state leaked: {seen:?}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_auto_encodings WHERE source = 'victim.docs'::regclass"), 1);
    let rolsuper: bool = c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'", &[]).unwrap().get(0);
    assert!(!rolsuper);

    c.batch_execute("ALTER SYSTEM RESET lightretriever.statement_timeout").unwrap();
    c.batch_execute(
        "SELECT pg_reload_conf();
         SELECT lightretriever.lr_disable_auto_encoding(source) FROM lightretriever.lr_auto_encodings
          WHERE source::text LIKE 'mallory.%' OR source::text LIKE 'victim.%';
         DROP SCHEMA mallory CASCADE; DROP SCHEMA victim CASCADE;
         DROP FUNCTION public.quote_ident(name), public.unnest(text[]);
         DROP AGGREGATE public.array_agg(bigint); DROP FUNCTION public.array_agg_step(bigint[], bigint);
         REVOKE CREATE ON SCHEMA public FROM mallory;
         DROP OWNED BY mallory; DROP ROLE mallory; DROP ROLE eve; DROP ROLE lr_victim;",
    )
    .unwrap();
}

/// A role that may only read an auto-encoded table must not run code as its owner. The status
/// view counts the table's vectors as the owner, and counting runs the owner's code: a policy
/// the owner forces on the table, and while the count is planned, the owner's immutable
/// functions folded in an index expression (or statistics, constraints, partition keys). Run in
/// the reader's session, the policy once saw the reader's `search_path`, set at connection time,
/// which put the reader's operator `=` in front of the owner's policy function (a hostile review
/// found it: the operator ran as the owner, copied a secret table and granted it to the reader);
/// with the owner's own path it could still reach the reader's temporary schema through a name
/// that path leaves open, and delay the reader's view. So for a reader the table is not counted
/// (`done` is NULL) and none of that code runs. A superuser's view still counts as the owner,
/// and there the owner's code sees the owner's own path (`ALTER ROLE … SET search_path`): not
/// the caller's, nor a temporary view of the caller's first (a second review: granted to the
/// owner, it would run the caller's function as the owner).
#[test]
fn a_reader_never_runs_code_as_the_owner_through_its_search_path() {
    let mut c = pipeline_database();
    let cleanup = "DO $$ BEGIN
           IF to_regclass('sp_owner.docs') IS NOT NULL THEN PERFORM lightretriever.lr_disable_auto_encoding('sp_owner.docs'); END IF;
           IF to_regclass('sp_owner.plain_docs') IS NOT NULL THEN PERFORM lightretriever.lr_disable_auto_encoding('sp_owner.plain_docs'); END IF;
         END $$;
         DROP SCHEMA IF EXISTS sp_owner CASCADE; DROP SCHEMA IF EXISTS sp_reader CASCADE; DROP SCHEMA IF EXISTS sp_app CASCADE;
         DROP ROLE IF EXISTS sp_owner; DROP ROLE IF EXISTS sp_reader;";
    c.batch_execute(cleanup).unwrap();
    c.batch_execute(
        "CREATE ROLE sp_owner; CREATE ROLE sp_reader;
         CREATE SCHEMA sp_owner AUTHORIZATION sp_owner; CREATE SCHEMA sp_reader AUTHORIZATION sp_reader;
         CREATE SCHEMA sp_app AUTHORIZATION sp_owner;
         ALTER ROLE sp_owner SET search_path = sp_app;
         SET ROLE sp_owner;
         SET search_path = sp_app; -- as in a session of the owner's own
         CREATE TABLE sp_app.tenants (id int);
         INSERT INTO sp_app.tenants VALUES (1);
         CREATE TABLE sp_owner.docs (id int PRIMARY KEY, tenant int, body text);
         CREATE TABLE sp_owner.secret (s text);
         CREATE SEQUENCE sp_owner.policy_calls;
         INSERT INTO sp_owner.secret VALUES ('owner-secret');
         -- No SET search_path: the policy's `=` and `tenants` resolve at run time.
         CREATE FUNCTION sp_owner.tenant_ok(t int) RETURNS bool LANGUAGE plpgsql AS $f$
           BEGIN PERFORM pg_catalog.nextval('sp_owner.policy_calls'); RETURN t = 1 AND EXISTS (SELECT 1 FROM tenants WHERE tenants.id OPERATOR(pg_catalog.=) t); END $f$;
         ALTER TABLE sp_owner.docs ENABLE ROW LEVEL SECURITY; ALTER TABLE sp_owner.docs FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON sp_owner.docs USING (sp_owner.tenant_ok(tenant));
         -- Folded (immutable, no arguments) wherever a statement on the table is planned.
         CREATE FUNCTION sp_owner.planned() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
           BEGIN PERFORM pg_catalog.nextval('sp_owner.policy_calls'); RETURN 0; END $f$;
         CREATE INDEX ON sp_owner.docs ((id OPERATOR(pg_catalog.+) sp_owner.planned()));
         -- And a table without row-level security, whose only code is that index's.
         CREATE TABLE sp_owner.plain_docs (id int PRIMARY KEY, body text);
         CREATE INDEX ON sp_owner.plain_docs ((id OPERATOR(pg_catalog.+) sp_owner.planned()));
         INSERT INTO sp_owner.plain_docs VALUES (1, 'a green pear');
         SELECT lightretriever.lr_enable_auto_encoding('sp_owner.plain_docs', 'body', 'minilm');
         GRANT SELECT ON sp_owner.plain_docs TO sp_reader;
         INSERT INTO sp_owner.docs VALUES (1, 1, 'a red apple');
         SELECT lightretriever.lr_enable_auto_encoding('sp_owner.docs', 'body', 'minilm');
         GRANT USAGE ON SCHEMA sp_owner TO sp_reader; GRANT SELECT ON sp_owner.docs TO sp_reader;
         RESET ROLE;
         SET ROLE sp_reader;
         CREATE TABLE sp_reader.loot (who name, what text);
         GRANT USAGE ON SCHEMA sp_reader TO PUBLIC; GRANT INSERT ON sp_reader.loot TO PUBLIC;
         CREATE FUNCTION sp_reader.evil_eq(a int, b int) RETURNS bool LANGUAGE plpgsql AS $f$
           BEGIN
             INSERT INTO sp_reader.loot SELECT current_user, (SELECT string_agg(s, ',') FROM sp_owner.secret);
             RETURN a OPERATOR(pg_catalog.=) b;
           END $f$;
         CREATE OPERATOR sp_reader.= (LEFTARG = int, RIGHTARG = int, FUNCTION = sp_reader.evil_eq);
         CREATE FUNCTION sp_reader.evil_id() RETURNS int LANGUAGE plpgsql AS $f$
           BEGIN
             INSERT INTO sp_reader.loot SELECT current_user, (SELECT string_agg(s, ',') FROM sp_owner.secret);
             RETURN 1;
           END $f$;
         RESET ROLE; RESET search_path;",
    )
    .unwrap();
    wait_for_encoding(&mut c, "sp_owner.docs", 120);
    wait_for_encoding(&mut c, "sp_owner.plain_docs", 120);
    let policy_calls = |c: &mut postgres::Client| c.query_one("SELECT last_value FROM sp_owner.policy_calls", &[]).unwrap().get::<_, i64>(0);
    let calls_before = policy_calls(&mut c);
    let status_of = |session: &mut postgres::Client, table: &str| -> (String, Option<i64>) {
        let rows = session.query("SELECT status, done FROM lightretriever.lr_encoding_status WHERE source = $1::text::regclass", &[&table]).unwrap();
        assert_eq!(rows.len(), 1, "the caller sees the table's status");
        (rows[0].get(0), rows[0].get(1))
    };

    let mut reader = connection_with_options("postgres", "-c search_path=sp_reader,pg_catalog");
    reader
        .batch_execute(
            "SET ROLE sp_reader;
             CREATE TEMP VIEW tenants AS SELECT sp_reader.evil_id() AS id;
             GRANT SELECT ON pg_temp.tenants TO sp_owner;",
        )
        .unwrap();
    // No code of the owner's ran in the reader's session: the count is unknown.
    assert_eq!(status_of(&mut reader, "sp_owner.docs"), ("active".to_owned(), None));
    assert_eq!(status_of(&mut reader, "sp_owner.plain_docs"), ("active".to_owned(), None));
    assert_eq!(policy_calls(&mut c), calls_before, "the owner's code ran in the reader's session");

    // A superuser's view runs it, as the owner, under the owner's own path, and counts the row.
    let mut superuser = connection_with_options("postgres", "-c search_path=sp_reader,pg_catalog");
    superuser
        .batch_execute(
            "CREATE TEMP VIEW tenants AS SELECT sp_reader.evil_id() AS id;
             GRANT SELECT ON pg_temp.tenants TO sp_owner;",
        )
        .unwrap();
    assert_eq!(status_of(&mut superuser, "sp_owner.docs"), ("active".to_owned(), Some(1)));
    assert_eq!(status_of(&mut superuser, "sp_owner.plain_docs"), ("active".to_owned(), Some(1)));
    assert!(policy_calls(&mut c) > calls_before, "the owner's code counted the rows for the superuser");
    let loot: Vec<(String, Option<String>)> =
        c.query("SELECT who::text, what FROM sp_reader.loot", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(loot.is_empty(), "the caller's operator or view ran inside the owner's code: {loot:?}");
    c.batch_execute(cleanup).unwrap();
}

/// The trigger DDL runs as the extension's owner on the table's name, and renaming a schema
/// locks none of its tables: a schema owner swapping two schema names meanwhile could make that
/// name mean a table of theirs, whose partition key the DDL would build (folding their
/// functions) as superuser. From enabling until its transaction ends, the table's schema
/// cannot be renamed.
#[test]
fn the_tables_schema_keeps_its_name_while_its_triggers_are_made() {
    let mut c = pipeline_database();
    let cleanup = "DO $$ BEGIN
           IF EXISTS (SELECT FROM lightretriever.lr_auto_encodings WHERE source::text = 'pin_s.docs') THEN
             PERFORM lightretriever.lr_disable_auto_encoding('pin_s.docs');
           END IF;
         END $$;
         DROP SCHEMA IF EXISTS pin_s CASCADE; DROP SCHEMA IF EXISTS pin_renamed CASCADE;";
    c.batch_execute(cleanup).unwrap();
    c.batch_execute("CREATE SCHEMA pin_s; CREATE TABLE pin_s.docs (id int PRIMARY KEY, body text); INSERT INTO pin_s.docs VALUES (1, 'one')")
        .unwrap();
    c.batch_execute("BEGIN; SELECT lightretriever.lr_enable_auto_encoding('pin_s.docs', 'body', 'minilm')").unwrap();
    let mut other = connection_with_options("postgres", "");
    let renamed = other.batch_execute("SET lock_timeout = '500ms'; ALTER SCHEMA pin_s RENAME TO pin_renamed");
    let e = renamed.expect_err("the schema was renamed while its table's triggers were being made");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{e}");
    c.batch_execute("ROLLBACK").unwrap();
    other.batch_execute("RESET lock_timeout; ALTER SCHEMA pin_s RENAME TO pin_renamed; ALTER SCHEMA pin_renamed RENAME TO pin_s").unwrap();
    c.batch_execute(cleanup).unwrap();
}

/// No other role can make an object depend on a table's queue by its name: the queues' schema
/// grants it nothing. Before 0.11.0 a view (a temporary one too), a view of the queue's
/// sequence or a column of the queue's row type needed no right on the queue, and kept its
/// owner from dropping the table (0.10.0 dropped them with the queue, but their role could
/// still make the drop wait on its locks). Such objects left from then, and a view naming the
/// queue by oid (`'<oid>'::regclass` checks nothing, as for any table in PostgreSQL), still go
/// with the queue.
#[test]
fn objects_of_another_role_on_a_queue_do_not_stop_its_owner() {
    let mut c = pipeline_database();
    c.batch_execute(
        "DROP SCHEMA IF EXISTS qpin_a CASCADE; DROP SCHEMA IF EXISTS qpin_m CASCADE;
         DROP ROLE IF EXISTS qpin_alice; DROP ROLE IF EXISTS qpin_mallory;
         CREATE ROLE qpin_alice; CREATE ROLE qpin_mallory;
         CREATE SCHEMA qpin_a AUTHORIZATION qpin_alice; CREATE SCHEMA qpin_m AUTHORIZATION qpin_mallory;
         SET ROLE qpin_alice;
         CREATE TABLE qpin_a.docs (id int PRIMARY KEY, body text);
         INSERT INTO qpin_a.docs VALUES (1, 'a pinned queue');
         SELECT lightretriever.lr_enable_auto_encoding('qpin_a.docs', 'body', 'minilm');
         RESET ROLE;",
    )
    .unwrap();
    let queue = |c: &mut Client| -> String {
        c.query_one("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = 'qpin_a.docs'::regclass", &[])
            .unwrap()
            .get(0)
    };
    let pins = |queue: &str| -> [String; 4] {
        [
            format!("CREATE VIEW qpin_m.pin AS SELECT 1 AS x FROM lightretriever_queues.{queue}"),
            format!("CREATE TEMP VIEW pin AS SELECT 1 AS x FROM lightretriever_queues.{queue}"),
            format!("CREATE VIEW qpin_m.pin_seq AS SELECT last_value FROM lightretriever_queues.{queue}_id_seq"),
            format!("CREATE TABLE qpin_m.typed (x lightretriever_queues.{queue})"),
        ]
    };
    let first = queue(&mut c);
    let mut mallory = fresh_connection("postgres");
    mallory.batch_execute("SET ROLE qpin_mallory").unwrap();
    for pin in pins(&first) {
        let (msg, _) = error_of(&mut mallory, &pin);
        assert_eq!(msg, "permission denied for schema lightretriever_queues", "{pin}");
    }
    let by_oid = |m: &mut Client, c: &mut Client, queue: &str| {
        let oid: u32 = c.query_one(&format!("SELECT 'lightretriever_queues.{queue}'::regclass::oid"), &[]).unwrap().get(0);
        m.batch_execute(&format!("CREATE VIEW qpin_m.by_oid AS SELECT '{oid}'::pg_catalog.regclass AS r"))
            .unwrap_or_else(|e| panic!("a view naming the queue by oid (the test's premise): {e}"));
    };
    by_oid(&mut mallory, &mut c, &first);
    // Objects left from before 0.11.0, made here by a superuser and given to Mallory (the
    // temporary view stays a superuser's, in a session kept open).
    let mut leftovers = fresh_connection("postgres");
    let leave = |l: &mut Client, queue: &str| {
        for pin in pins(queue) {
            l.batch_execute(&pin).unwrap();
        }
        l.batch_execute("ALTER VIEW qpin_m.pin OWNER TO qpin_mallory; ALTER VIEW qpin_m.pin_seq OWNER TO qpin_mallory;
                         ALTER TABLE qpin_m.typed OWNER TO qpin_mallory")
            .unwrap();
    };
    leave(&mut leftovers, &first);
    c.batch_execute("SET ROLE qpin_alice; SELECT lightretriever.lr_disable_auto_encoding('qpin_a.docs', drop_columns => true); RESET ROLE")
        .unwrap_or_else(|e| panic!("an object on the queue kept the owner from disabling: {e}"));
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_class WHERE relnamespace = 'qpin_m'::regnamespace AND (relname LIKE 'pin%' OR relname = 'by_oid')"),
        0
    );

    c.batch_execute("SET ROLE qpin_alice; SELECT lightretriever.lr_enable_auto_encoding('qpin_a.docs', 'body', 'minilm'); RESET ROLE").unwrap();
    leftovers.batch_execute("DROP TABLE qpin_m.typed").unwrap();
    let second = queue(&mut c);
    leave(&mut leftovers, &second);
    by_oid(&mut mallory, &mut c, &second);
    c.batch_execute("SET ROLE qpin_alice; DROP TABLE qpin_a.docs; RESET ROLE")
        .unwrap_or_else(|e| panic!("an object on the queue kept the owner from dropping the table: {e}"));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_auto_encodings WHERE source::text = 'qpin_a.docs'"), 0);
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM pg_class WHERE relname = '{second}'")), 0);
    drop((mallory, leftovers));
    c.batch_execute(
        "DROP SCHEMA qpin_a CASCADE; DROP SCHEMA qpin_m CASCADE; DROP ROLE qpin_alice; DROP ROLE qpin_mallory",
    )
    .unwrap();
}

/// lr_search (and lr_rerank, the same way) read the table's name at the start of the call and
/// then look up models and weights, which can wait for locks. The owner of the table's schema
/// (not of the table) swaps that schema's name with one of its own while the call waits: the
/// scan must still read the table the caller passed, never the decoy of the same name.
#[test]
fn a_schema_swap_during_a_search_never_redirects_its_scan() {
    let mut c = pipeline_database();
    let cleanup = "DROP SCHEMA IF EXISTS sswap CASCADE; DROP SCHEMA IF EXISTS sswap_real CASCADE;
                   DROP SCHEMA IF EXISTS sswap_decoy CASCADE;
                   DO $$ BEGIN
                     IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'sswap_m') THEN
                       REVOKE CREATE ON DATABASE postgres FROM sswap_m; DROP ROLE sswap_m;
                     END IF;
                   END $$;";
    c.batch_execute(cleanup).unwrap();
    register_model_once(&mut c, "splade", &sparse_model_dir());
    c.batch_execute(
        "CREATE ROLE sswap_m;
         GRANT CREATE ON DATABASE postgres TO sswap_m; -- renaming a schema needs it
         CREATE SCHEMA sswap AUTHORIZATION sswap_m; CREATE SCHEMA sswap_decoy AUTHORIZATION sswap_m;
         CREATE TABLE sswap.docs (id bigint PRIMARY KEY, sp sparsevec);
         INSERT INTO sswap.docs VALUES (1, lightretriever.lr_encode_query_sparse('river', 'splade'));
         SET ROLE sswap_m;
         CREATE TABLE sswap_decoy.docs (id bigint PRIMARY KEY, sp sparsevec);
         INSERT INTO sswap_decoy.docs VALUES (666, lightretriever.lr_encode_query_sparse('river', 'splade'));
         RESET ROLE;",
    )
    .unwrap();
    let search = "SELECT id FROM lightretriever.lr_search('sswap.docs', 'river', mode => 'sparse', sparse_column => 'sp', sparse_model => 'splade')";
    let ids = |c: &mut Client| -> Vec<i64> { c.query(search, &[]).unwrap().iter().map(|r| r.get(0)).collect() };
    assert_eq!(ids(&mut c), [1]);

    // The search waits for the sparse model's weights, held here, after it read the table's name.
    let mut holder = fresh_connection("postgres");
    holder.batch_execute("BEGIN; LOCK TABLE lightretriever.lr_sparse_query_weights IN ACCESS EXCLUSIVE MODE").unwrap();
    let mut caller = fresh_connection("postgres");
    let pid: i32 = caller.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let searching = std::thread::spawn(move || ids(&mut caller));
    eventually(60, "the search never waited for the weights", || {
        c.query_one("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND relation = 'lightretriever.lr_sparse_query_weights'::regclass AND NOT granted)", &[&pid])
            .unwrap()
            .get(0)
    });
    let mut attacker = fresh_connection("postgres");
    attacker
        .batch_execute("SET ROLE sswap_m; ALTER SCHEMA sswap RENAME TO sswap_real; ALTER SCHEMA sswap_decoy RENAME TO sswap")
        .unwrap();
    holder.batch_execute("COMMIT").unwrap();
    assert_eq!(searching.join().unwrap(), [1], "the scan read the decoy the schema's owner put in the table's place");
    c.batch_execute(cleanup).unwrap();
}

/// A second review's steps against the pinned name: the owner of two schemas swaps their names
/// in a transaction left open while a call on its table waits for the schema's catalog row, and
/// commits. The table's name then means a decoy partitioned by a function of the owner's, which
/// DDL run as superuser would fold; the check once read the stale catalog cache and passed, and
/// a later statement's lookup found the decoy. Enabling (the owner's call) and disabling with
/// its columns dropped (a superuser's call, whose ALTER TABLE goes by the name as superuser) must
/// fail before any DDL reaches the decoy, and the function never runs as another role.
#[test]
fn a_schema_swap_committed_while_enabling_or_disabling_waits_is_refused() {
    let mut c = pipeline_database();
    let cleanup = "DO $$ DECLARE t regclass; BEGIN
           FOR t IN SELECT source FROM lightretriever.lr_auto_encodings WHERE source::text LIKE 'swap\\_%' LOOP
             PERFORM lightretriever.lr_disable_auto_encoding(t);
           END LOOP;
         END $$;
         DROP SCHEMA IF EXISTS swap_b, swap_c, swap_x CASCADE; DROP TABLE IF EXISTS public.swap_log;
         DO $$ BEGIN
           IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'swap_m') THEN DROP OWNED BY swap_m; DROP ROLE swap_m; END IF;
         END $$;";
    c.batch_execute(cleanup).unwrap();
    c.batch_execute(
        "CREATE ROLE swap_m;
         GRANT CREATE ON DATABASE postgres TO swap_m;
         CREATE TABLE public.swap_log (who name, super boolean);
         GRANT INSERT ON public.swap_log TO PUBLIC;
         SET ROLE swap_m;
         CREATE SCHEMA swap_b; CREATE SCHEMA swap_c;
         CREATE FUNCTION swap_c.log_it() RETURNS void LANGUAGE plpgsql AS $f$
           BEGIN INSERT INTO public.swap_log SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user; END $f$;
         CREATE FUNCTION swap_c.trap() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$ BEGIN PERFORM swap_c.log_it(); RETURN 0; END $f$;
         CREATE TABLE swap_b.t (id int PRIMARY KEY, body text);
         INSERT INTO swap_b.t VALUES (1, 'one');
         CREATE TABLE swap_c.t (id int, body text, body_embedding text) PARTITION BY RANGE ((id OPERATOR(pg_catalog.+) swap_c.trap()));
         CREATE TABLE swap_c.t_all PARTITION OF swap_c.t DEFAULT;
         RESET ROLE;",
    )
    .unwrap();
    // Runs `call` on swap_b.t in its own session while the owner swaps swap_b and swap_c in a
    // transaction it commits once the call waits for it; the call must be refused. The swap is
    // undone afterwards.
    let refused_across_a_swap = |c: &mut Client, call: &'static str| {
        let mut attacker = connection_with_options("postgres", "");
        attacker.batch_execute("SET ROLE swap_m; BEGIN; ALTER SCHEMA swap_b RENAME TO swap_x; ALTER SCHEMA swap_c RENAME TO swap_b;").unwrap();
        let mut caller = connection_with_options("postgres", "");
        let pid: i32 = caller.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let calling = std::thread::spawn(move || caller.batch_execute(call));
        eventually(60, &format!("{call} never waited for the swapping transaction"), || {
            c.query_one("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND locktype = 'transactionid' AND NOT granted)", &[&pid]).unwrap().get(0)
        });
        attacker.batch_execute("COMMIT").unwrap();
        let e = calling.join().unwrap().expect_err(&format!("{call} went on after the swap"));
        assert_eq!(e.code(), Some(&postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE), "{e}");
        let message = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
        assert!(message.contains("no longer means the auto-encoded table"), "{message}");
        let decoy_triggers: i64 = c.query_one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'swap_b.t'::regclass", &[]).unwrap().get(0);
        assert_eq!(decoy_triggers, 0);
        let super_calls: i64 = c.query_one("SELECT count(*) FROM public.swap_log WHERE super OR who <> 'swap_m'", &[]).unwrap().get(0);
        assert_eq!(super_calls, 0, "the decoy's partition key was folded by another role");
        attacker.batch_execute("ALTER SCHEMA swap_b RENAME TO swap_c; ALTER SCHEMA swap_x RENAME TO swap_b;").unwrap();
    };
    refused_across_a_swap(&mut c, "SET ROLE swap_m; SELECT lightretriever.lr_enable_auto_encoding('swap_b.t', 'body', 'minilm')");
    c.batch_execute("SET ROLE swap_m; SELECT lightretriever.lr_enable_auto_encoding('swap_b.t', 'body', 'minilm'); RESET ROLE").unwrap();
    refused_across_a_swap(&mut c, "SELECT lightretriever.lr_disable_auto_encoding('swap_b.t', drop_columns => true)");
    let columns: i64 = c.query_one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'swap_b.t'::regclass AND attname = 'body_embedding' AND NOT attisdropped", &[]).unwrap().get(0);
    assert_eq!(columns, 1, "the real table keeps its auto-encoding");
    c.batch_execute(cleanup).unwrap();
}

/// The worker's statements on a table go by names, as the table's owner: the table's and its key
/// type's. A role that owns the table's schema but not the table (here `wswap_m`, owning the
/// schema `wswap_s` in which `wswap_owner` keeps its table and the table's key domain) swaps that
/// schema's name with a schema of its own holding a decoy table and a decoy domain, whose index
/// expression and CHECK count every call by another role. Three times, each while something
/// waits for a queue this test holds:
/// 1. during the table's batch (the worker waits to claim, after it pinned the names): the swap
///    must wait for the batch; likewise a swap of the schema of the key's other column's type
///    (`wswap_t.k2`, a domain of the owner's in another schema of `wswap_m`'s);
/// 2. between the worker's reading the tables and this table's batch (it waits to claim an
///    earlier table's rows): the batch must name the table and its key type as they are now
///    (a hostile review had the decoy domain's CHECK run as the owner with the table's name
///    pinned but not the type's);
/// 3. while the status view, which read its table list, waits for the queue's counts: the count
///    of vectors must go by the name the table has then.
/// Before the fixes the decoy's code ran as the table's owner and the real row got no vector.
#[test]
fn a_schema_swap_never_redirects_the_workers_batch_or_the_status_views_count() {
    let mut c = pipeline_database();
    let cleanup = "DO $$ DECLARE t regclass; BEGIN
           FOR t IN SELECT source FROM lightretriever.lr_auto_encodings a JOIN pg_class r ON r.oid = a.source
                     JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname LIKE 'wswap\\_%' OR r.relname = 'wswap_first' LOOP
             PERFORM lightretriever.lr_disable_auto_encoding(t);
           END LOOP;
         END $$;
         DROP TABLE IF EXISTS public.wswap_first;
         DROP SCHEMA IF EXISTS wswap_s, wswap_d, wswap_x, wswap_t, wswap_u, wswap_y, wswap_f CASCADE;
         DO $$ BEGIN
           IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'wswap_m') THEN DROP OWNED BY wswap_m; DROP ROLE wswap_m; END IF;
           IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'wswap_owner') THEN DROP OWNED BY wswap_owner; DROP ROLE wswap_owner; END IF;
         END $$;";
    c.batch_execute(cleanup).unwrap();
    c.batch_execute(
        "CREATE ROLE wswap_m; CREATE ROLE wswap_owner;
         GRANT CREATE ON DATABASE postgres TO wswap_m;
         -- An earlier table (a lower id: its batch comes first in a round).
         CREATE TABLE public.wswap_first (id int PRIMARY KEY, body text);
         SELECT lightretriever.lr_enable_auto_encoding('public.wswap_first', 'body', 'minilm');
         SET ROLE wswap_m;
         CREATE SCHEMA wswap_f; GRANT USAGE ON SCHEMA wswap_f TO PUBLIC;
         -- Calls by anyone but their owner, counted where no rollback undoes them.
         CREATE SEQUENCE wswap_f.foreign_calls; GRANT USAGE, UPDATE ON SEQUENCE wswap_f.foreign_calls TO PUBLIC;
         CREATE FUNCTION wswap_f.trap(v int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $f$
           BEGIN
             IF current_user <> 'wswap_m' THEN PERFORM pg_catalog.nextval('wswap_f.foreign_calls'); END IF;
             RETURN 0;
           END $f$;
         CREATE SCHEMA wswap_s; GRANT USAGE, CREATE ON SCHEMA wswap_s TO wswap_owner;
         CREATE SCHEMA wswap_t; GRANT USAGE, CREATE ON SCHEMA wswap_t TO wswap_owner;
         CREATE SCHEMA wswap_u; GRANT USAGE ON SCHEMA wswap_u TO PUBLIC;
         CREATE DOMAIN wswap_u.k2 AS int CHECK (wswap_f.trap(VALUE) = 0);
         CREATE SCHEMA wswap_d; GRANT USAGE ON SCHEMA wswap_d TO PUBLIC;
         CREATE DOMAIN wswap_d.k AS int CHECK (wswap_f.trap(VALUE) = 0);
         CREATE TABLE wswap_d.t (id int PRIMARY KEY, body text, body_embedding public.vector(384));
         CREATE INDEX ON wswap_d.t ((id OPERATOR(pg_catalog.+) wswap_f.trap(0)));
         INSERT INTO wswap_d.t VALUES (1, 'the decoy'), (2, 'the decoy'), (3, 'the decoy');
         GRANT SELECT, UPDATE ON wswap_d.t TO PUBLIC;
         SET ROLE wswap_owner;
         CREATE DOMAIN wswap_s.k AS int;
         CREATE DOMAIN wswap_t.k2 AS int;
         CREATE TABLE wswap_s.t (id wswap_s.k, tag wswap_t.k2, body text, PRIMARY KEY (id, tag));
         SELECT lightretriever.lr_enable_auto_encoding('wswap_s.t', 'body', 'minilm');
         RESET ROLE;",
    )
    .unwrap();
    let real: u32 = c.query_one("SELECT 'wswap_s.t'::regclass::oid", &[]).unwrap().get(0);
    let decoy: u32 = c.query_one("SELECT 'wswap_d.t'::regclass::oid", &[]).unwrap().get(0);
    let queue_of = |c: &mut Client, table: &str| -> String {
        c.query_one(&format!("SELECT 'lightretriever_queues.' || queue_table FROM lightretriever.lr_auto_encodings WHERE source = '{table}'::regclass"), &[])
            .unwrap()
            .get(0)
    };
    let (queue, first_queue) = (queue_of(&mut c, "wswap_s.t"), queue_of(&mut c, "public.wswap_first"));
    let swap = "SET ROLE wswap_m;
         BEGIN; ALTER SCHEMA wswap_s RENAME TO wswap_x; ALTER SCHEMA wswap_d RENAME TO wswap_s; ALTER SCHEMA wswap_x RENAME TO wswap_d; COMMIT;
         RESET ROLE;";
    let real_name = |c: &mut Client| -> String { c.query_one("SELECT $1::oid::regclass::text", &[&real]).unwrap().get(0) };
    // `queue`'s rows, queued while the table is paused, then held (EXCLUSIVE: a drain worker
    // sees they are due, pins the table, and waits to claim them) until `release`.
    let hold = |c: &mut Client, table: &str, queue: &str, insert: &str| -> Client {
        c.batch_execute(&format!("SELECT lightretriever.lr_pause_auto_encoding('{table}'); {insert}")).unwrap();
        let mut holder = fresh_connection("postgres");
        holder.batch_execute(&format!("BEGIN; LOCK TABLE {queue} IN EXCLUSIVE MODE")).unwrap();
        c.batch_execute(&format!("SELECT lightretriever.lr_resume_auto_encoding('{table}')")).unwrap();
        let waits = format!(
            "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                             WHERE l.relation = '{queue}'::regclass AND NOT l.granted AND a.backend_type = 'lightretriever drain')"
        );
        eventually(120, "no drain worker waited for the queue", || c.query_one(waits.as_str(), &[]).unwrap().get::<_, bool>(0));
        holder
    };
    // After a batch: nothing of the decoy's ran as another role (checked before anything here
    // reads the decoy, whose planning would fold the trap as superuser), the real row `id` has
    // its vector, the decoy's none (read as its owner, whose calls are not counted).
    let encoded_where_it_belongs = |c: &mut Client, id: i32| {
        eventually(120, "the batch never ended", || count(c, &format!("SELECT count(*) FROM {queue}")) == 0);
        let foreign_calls: bool = c.query_one("SELECT is_called FROM wswap_f.foreign_calls", &[]).unwrap().get(0);
        assert!(!foreign_calls, "the decoy's code ran as another role (batch of row {id})");
        let table = real_name(c);
        let real_vector: bool = c.query_one(&format!("SELECT body_embedding IS NOT NULL FROM {table} WHERE id = {id}"), &[]).unwrap().get(0);
        assert!(real_vector, "the real row {id} got no vector");
        let decoy_table: String = c.query_one("SELECT $1::oid::regclass::text", &[&decoy]).unwrap().get(0);
        c.batch_execute("SET ROLE wswap_m").unwrap();
        let decoy_vectors = count(c, &format!("SELECT count(*) FROM {decoy_table} WHERE body_embedding IS NOT NULL"));
        c.batch_execute("RESET ROLE").unwrap();
        assert_eq!(decoy_vectors, 0, "the decoy got a vector");
    };

    // `swap_sql` run by the schema owner while `holder` keeps a batch waiting, then the batch let
    // go: the swap either ended at once or (the fix: the names are pinned) waits for the batch.
    let swap_during_the_batch = |c: &mut Client, mut holder: Client, swap_sql: &'static str| {
        let mut attacker = fresh_connection("postgres");
        let attacker_pid: i32 = attacker.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let swapping = std::thread::spawn(move || attacker.batch_execute(swap_sql));
        eventually(60, "the swap neither ended nor waited", || {
            swapping.is_finished()
                || c.query_one("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted)", &[&attacker_pid]).unwrap().get::<_, bool>(0)
        });
        holder.batch_execute("COMMIT").unwrap();
        swapping.join().unwrap().unwrap();
    };

    // 1. During the batch.
    let holder = hold(&mut c, "wswap_s.t", &queue, "INSERT INTO wswap_s.t VALUES (1, 1, 'the real row')");
    swap_during_the_batch(&mut c, holder, swap);
    assert_eq!(real_name(&mut c), "wswap_d.t", "the swap happened");
    encoded_where_it_belongs(&mut c, 1);

    // 1b. During the batch, the schema of the key's other type, another of the schema owner's:
    // the swap must wait too. (An array of it fails closed: no `=` between two array types.)
    let holder = hold(&mut c, "wswap_d.t", &queue, "INSERT INTO wswap_d.t (id, tag, body) VALUES (4, 4, 'the real row')");
    swap_during_the_batch(
        &mut c,
        holder,
        "SET ROLE wswap_m;
         BEGIN; ALTER SCHEMA wswap_t RENAME TO wswap_y; ALTER SCHEMA wswap_u RENAME TO wswap_t; ALTER SCHEMA wswap_y RENAME TO wswap_u; COMMIT;",
    );
    encoded_where_it_belongs(&mut c, 4);

    // 2. Between the worker's reading the tables and this table's batch.
    let mut holder = hold(&mut c, "public.wswap_first", &first_queue, "INSERT INTO public.wswap_first VALUES (1, 'first')");
    c.batch_execute("INSERT INTO wswap_d.t (id, tag, body) VALUES (2, 2, 'the real row')").unwrap();
    c.batch_execute(swap).unwrap();
    assert_eq!(real_name(&mut c), "wswap_s.t", "the swap happened");
    holder.batch_execute("COMMIT").unwrap();
    encoded_where_it_belongs(&mut c, 2);

    // 3. While the status view waits (the worker paused: it holds nothing).
    c.batch_execute("SELECT lightretriever.lr_pause_auto_encoding('wswap_s.t')").unwrap();
    holder.batch_execute(&format!("BEGIN; LOCK TABLE {queue} IN ACCESS EXCLUSIVE MODE")).unwrap();
    let mut viewer = fresh_connection("postgres");
    let viewer_pid: i32 = viewer.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let viewing = std::thread::spawn(move || {
        viewer.query_one("SELECT done FROM lightretriever.lr_encoding_status WHERE source = $1::oid", &[&real]).map(|r| r.get::<_, Option<i64>>(0))
    });
    eventually(60, "the status view never waited for the queue", || {
        c.query_one(&format!("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND relation = '{queue}'::regclass AND NOT granted)"), &[&viewer_pid])
            .unwrap()
            .get::<_, bool>(0)
    });
    c.batch_execute(swap).unwrap();
    let done = viewing.join().unwrap().unwrap();
    holder.batch_execute("COMMIT").unwrap();
    let foreign_calls: bool = c.query_one("SELECT is_called FROM wswap_f.foreign_calls", &[]).unwrap().get(0);
    assert!(!foreign_calls, "the status view ran the decoy's code as the table's owner");
    assert_eq!(done, Some(3), "the status view counted the real table");
    c.batch_execute(cleanup).unwrap();
}

/// A batch pins the table's schema (and its key types'): while another transaction holds the
/// schema's catalog row (a GRANT left open), the table's rows wait. That wait is said, as the
/// table's last error, rather than leaving only a queue that does not move; the rows are
/// encoded once the transaction ends.
#[test]
fn rows_held_up_by_a_schema_change_say_so_and_go_on_after_it() {
    let mut c = pipeline_database();
    let cleanup = "DO $$ BEGIN
           IF to_regclass('held_s.t') IS NOT NULL THEN PERFORM lightretriever.lr_disable_auto_encoding('held_s.t'); END IF;
         END $$;
         DROP SCHEMA IF EXISTS held_s CASCADE;";
    c.batch_execute(cleanup).unwrap();
    c.batch_execute(
        "CREATE SCHEMA held_s; CREATE TABLE held_s.t (id int PRIMARY KEY, body text);
         SELECT lightretriever.lr_enable_auto_encoding('held_s.t', 'body', 'minilm');",
    )
    .unwrap();
    let mut holder = fresh_connection("postgres");
    holder.batch_execute("BEGIN; GRANT USAGE ON SCHEMA held_s TO PUBLIC").unwrap();
    c.batch_execute("INSERT INTO held_s.t VALUES (1, 'held up')").unwrap();
    let last_error = "SELECT COALESCE(last_error, '') FROM lightretriever.lr_encoding_status WHERE source = 'held_s.t'::regclass";
    eventually(60, "the wait was never said", || {
        c.query_one(last_error, &[]).unwrap().get::<_, String>(0).contains("waiting for another transaction")
    });
    let error: String = c.query_one(last_error, &[]).unwrap().get(0);
    assert!(error.contains("its schema or a key type"), "{error}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM held_s.t WHERE body_embedding IS NOT NULL"), 0);
    holder.batch_execute("COMMIT").unwrap();
    eventually(60, "the row was never encoded after the wait", || count(&mut c, "SELECT count(*) FROM held_s.t WHERE body_embedding IS NOT NULL") == 1);
    c.batch_execute(cleanup).unwrap();
}

/// The status view counts each table's vectors as its owner. An owner holding a lock on the
/// table must not stall the view for everyone who may read it (a hostile review found a
/// superuser's view blocked until the lock went): after a second the count is unknown (NULL).
/// And a caller's own statement timeout ends the view, as it ends any statement (it was caught
/// and the table shown as broken).
#[test]
fn an_owner_lock_does_not_stall_the_status_view() {
    let mut c = pipeline_database();
    c.batch_execute(
        "DO $$ BEGIN
           IF to_regclass('public.status_locked') IS NOT NULL THEN PERFORM lightretriever.lr_disable_auto_encoding('public.status_locked'); END IF;
         END $$;
         DO $$ BEGIN
           IF to_regclass('public.status_other') IS NOT NULL THEN PERFORM lightretriever.lr_disable_auto_encoding('public.status_other'); END IF;
         END $$;
         DO $$ BEGIN
           IF to_regclass('public.status_slow') IS NOT NULL THEN PERFORM lightretriever.lr_disable_auto_encoding('public.status_slow'); END IF;
         END $$;
         DROP TABLE IF EXISTS public.status_locked, public.status_other, public.status_slow;
         DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'status_slow_owner') THEN CREATE ROLE status_slow_owner; END IF;
         END $$;
         GRANT CREATE ON SCHEMA public TO status_slow_owner;
         SET ROLE status_slow_owner;
         CREATE TABLE public.status_slow (id int PRIMARY KEY, body text);
         SELECT lightretriever.lr_enable_auto_encoding('public.status_slow', 'body', 'minilm');
         RESET ROLE;
         CREATE TABLE public.status_locked (id int PRIMARY KEY, body text);
         INSERT INTO public.status_locked VALUES (1, 'a locked table');
         SELECT lightretriever.lr_enable_auto_encoding('public.status_locked', 'body', 'minilm');
         CREATE TABLE public.status_other (id int PRIMARY KEY, body text);
         SELECT lightretriever.lr_enable_auto_encoding('public.status_other', 'body', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "public.status_locked", 120);
    let status = "SELECT status, done FROM lightretriever.lr_encoding_status WHERE source = 'public.status_locked'::regclass";
    let read = |c: &mut Client| -> (String, Option<i64>) {
        let r = c.query_one(status, &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(read(&mut c), ("active".to_owned(), Some(1)));

    let mut owner = fresh_connection("postgres");
    owner.batch_execute("BEGIN; LOCK TABLE public.status_locked IN ACCESS EXCLUSIVE MODE").unwrap();
    // (A bound of its own, so that a stalled view fails this test instead of hanging it.)
    c.batch_execute("SET statement_timeout = '5s'").unwrap();
    let started = std::time::Instant::now();
    assert_eq!(read(&mut c), ("active".to_owned(), None), "the count is unknown while the owner holds the lock");
    assert!(started.elapsed() < Duration::from_secs(4), "the view waited {:?}", started.elapsed());

    c.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let e = c.query(status, &[]).expect_err("the caller's statement timeout ends the view");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{e}");
    c.batch_execute("RESET statement_timeout").unwrap();

    owner.batch_execute("COMMIT").unwrap();
    assert_eq!(read(&mut c), ("active".to_owned(), Some(1)));

    // Two tables locked: a second in all, not a second each.
    owner.batch_execute("BEGIN; LOCK TABLE public.status_locked, public.status_other IN ACCESS EXCLUSIVE MODE").unwrap();
    let started = std::time::Instant::now();
    let done: Vec<Option<i64>> = c
        .query("SELECT done FROM lightretriever.lr_encoding_status WHERE source IN ('public.status_locked'::regclass, 'public.status_other'::regclass)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(1700), "two locked tables took {waited:?}");
    assert_eq!(done, [None, None]);
    owner.batch_execute("COMMIT").unwrap();

    // Only waits that end without the lock spend that second: a table counted first that takes
    // 1.2 s (its owner's slow policy, which the owner, not a superuser, is subject to) does not
    // make a table locked for a moment unknown.
    // (Encoded first: the count's `IS NOT NULL` runs before the policy, so a row without a
    // vector would not reach it.)
    c.batch_execute("INSERT INTO public.status_slow VALUES (1, 'slow')").unwrap();
    wait_for_encoding(&mut c, "public.status_slow", 120);
    c.batch_execute(
        "ALTER TABLE public.status_slow ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY slow ON public.status_slow USING (pg_catalog.pg_sleep(1.2) IS NOT NULL)",
    )
    .unwrap();
    owner.batch_execute("BEGIN; LOCK TABLE public.status_locked IN ACCESS EXCLUSIVE MODE").unwrap();
    let release = std::thread::spawn(move || {
        // Still held when the view reaches it (after the slow count), released well within a second.
        std::thread::sleep(Duration::from_millis(1600));
        owner.batch_execute("COMMIT").unwrap();
        owner
    });
    let started = std::time::Instant::now();
    assert_eq!(read(&mut c), ("active".to_owned(), Some(1)), "counted once the lock was released (after {:?})", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(1500), "the view waited for the lock ({:?})", started.elapsed());
    let mut owner = release.join().unwrap();
    c.batch_execute("DROP POLICY slow ON public.status_slow; ALTER TABLE public.status_slow NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY")
        .unwrap();

    // lr_failed_items: a cancel while a table's queue is locked ends the view; it is not caught
    // and that table's failed rows silently left out.
    let queue: String = c
        .query_one("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = 'public.status_locked'::regclass", &[])
        .unwrap()
        .get(0);
    owner.batch_execute(&format!("BEGIN; LOCK TABLE lightretriever_queues.{queue} IN ACCESS EXCLUSIVE MODE")).unwrap();
    c.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let e = c.query("SELECT * FROM lightretriever.lr_failed_items", &[]).expect_err("the caller's statement timeout ends the view");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{e}");
    c.batch_execute("RESET statement_timeout").unwrap();

    // Without a cancel, the locked queue is given up after a second: its table gets one row with
    // no key that says why (a count must not read 0) and a WARNING naming it; another table's
    // failed row is still shown.
    let other_queue: String = c
        .query_one("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = 'public.status_other'::regclass", &[])
        .unwrap()
        .get(0);
    c.batch_execute(&format!(
        "INSERT INTO lightretriever_queues.{other_queue} (key, attempts, last_error, failed_at) VALUES ('{{7}}', 3, 'made to fail', now())"
    ))
    .unwrap();
    let (mut watcher, notices) = notice_connection("postgres");
    watcher.batch_execute("SET statement_timeout = '5s'").unwrap();
    let started = std::time::Instant::now();
    let shown: Vec<(String, Option<String>, String, Option<i32>)> = watcher
        .query(
            "SELECT source::regclass::text, row_key::text, error, attempts FROM lightretriever.lr_failed_items \
              WHERE source IN ('public.status_locked'::regclass, 'public.status_other'::regclass) ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(started.elapsed() < Duration::from_secs(4), "the view waited {:?}", started.elapsed());
    let locked = |t: &str| {
        (t.to_owned(), None, "lightretriever: failed rows are not shown: its queue is locked by another transaction".to_owned(), None)
    };
    assert_eq!(
        shown,
        vec![locked("status_locked"), ("status_other".to_owned(), Some(r#"{"id": 7}"#.to_owned()), "made to fail".to_owned(), Some(3))]
    );
    assert_eq!(
        *notices.lock().unwrap(),
        vec!["lightretriever: the failed rows of public.status_locked are not shown: its queue is locked by another transaction".to_owned()]
    );
    // Two locked queues: the view waits a second in all, not a second each.
    let mut other_owner = fresh_connection("postgres");
    other_owner.batch_execute(&format!("BEGIN; LOCK TABLE lightretriever_queues.{other_queue} IN ACCESS EXCLUSIVE MODE")).unwrap();
    notices.lock().unwrap().clear();
    let started = std::time::Instant::now();
    let unknown: i64 = watcher
        .query_one(
            "SELECT count(*) FILTER (WHERE row_key IS NULL) FROM lightretriever.lr_failed_items \
              WHERE source IN ('public.status_locked'::regclass, 'public.status_other'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(1700), "two locked queues took {waited:?}");
    assert_eq!(unknown, 2, "each locked table has its row that says so");
    let mut warned = notices.lock().unwrap().clone();
    warned.sort();
    assert_eq!(
        warned,
        ["public.status_locked", "public.status_other"]
            .map(|t| format!("lightretriever: the failed rows of {t} are not shown: its queue is locked by another transaction"))
    );
    other_owner.batch_execute("COMMIT").unwrap();
    owner.batch_execute("COMMIT").unwrap();

    // A transaction that disables the table and stays open holds its queue: the view shows the
    // queue's counts as unknown after a second.
    owner.batch_execute("BEGIN; SELECT lightretriever.lr_disable_auto_encoding('public.status_locked')").unwrap();
    c.batch_execute("SET statement_timeout = '8s'").unwrap();
    let queue_counts = |c: &mut Client| -> (String, Option<i64>, Option<i64>) {
        let r = c.query_one("SELECT status, pending, failed FROM lightretriever.lr_encoding_status WHERE source = 'public.status_locked'::regclass", &[]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let started = std::time::Instant::now();
    assert_eq!(queue_counts(&mut c), ("active".to_owned(), None, None));
    assert!(started.elapsed() < Duration::from_secs(5), "the view waited {:?}", started.elapsed());
    c.batch_execute("RESET statement_timeout").unwrap();
    owner.batch_execute("ROLLBACK").unwrap();
    assert_eq!(queue_counts(&mut c), ("active".to_owned(), Some(0), Some(0)));
    c.batch_execute(
        "SELECT lightretriever.lr_disable_auto_encoding('public.status_locked'); DROP TABLE public.status_locked;
         SELECT lightretriever.lr_disable_auto_encoding('public.status_other'); DROP TABLE public.status_other;
         SELECT lightretriever.lr_disable_auto_encoding('public.status_slow'); DROP TABLE public.status_slow",
    )
    .unwrap();
}
