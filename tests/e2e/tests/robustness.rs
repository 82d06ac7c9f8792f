//! Issue 11's correctness and crash defects, end to end on a real cluster: partitioned and
//! inherited tables get their own rows' vectors; a killed inference process costs a retried
//! batch, never a reset of the cluster; a cancelled call's array does not keep the encoder busy; a sleeping trigger stalls only its own table; plain
//! DROP EXTENSION is refused while tables are auto-encoded and CASCADE removes everything; the
//! lookup memo does not outlive a COMMIT, nor the catalog's answer a statement; a table file truncated, modified or replaced under a
//! session is an error, never a crash or a wrong vector; concurrent builds of one model wait
//! for each other; builds and fits show their progress to other sessions.

use std::time::{Duration, Instant};

use lr_e2e::*;
use pgvector::Vector;
use postgres::Client;

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn fresh_schema(c: &mut Client, schema: &str) {
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
}

/// Rows of `table` (its own rows only with `only`) whose vector is not a fresh encoding of
/// their text (L2 > 1e-5), or that have none.
fn wrong_own_vectors(c: &mut Client, table: &str, only: bool) -> i64 {
    let from = if only { format!("ONLY {table}") } else { table.to_owned() };
    c.query_one(
        &format!(
            "WITH x AS (SELECT array_agg(tableoid::text || '/' || id ORDER BY tableoid, id) AS ids,
                               array_agg(body ORDER BY tableoid, id) AS texts FROM {from} WHERE body IS NOT NULL),
                  fresh AS (SELECT i.id, e.v FROM x, unnest(x.ids) WITH ORDINALITY AS i(id, n)
                              JOIN lightretriever.lr_encode_documents(x.texts, 'minilm') WITH ORDINALITY AS e(v, n) USING (n))
             SELECT count(*) FROM {from} t JOIN fresh f ON f.id = t.tableoid::text || '/' || t.id
              WHERE t.body_embedding IS NULL OR (t.body_embedding <-> f.v) > 1e-5"
        ),
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn partitioned_and_inherited_tables_get_their_own_rows_vectors() {
    let mut c = pipeline_database();
    fresh_schema(&mut c, "lr_part");
    // Rows 2, 102 and 202 sit at the same ctid (0,2) of three partitions.
    c.batch_execute(
        "CREATE TABLE lr_part.docs (id int PRIMARY KEY, body text) PARTITION BY RANGE (id);
         CREATE TABLE lr_part.p0 PARTITION OF lr_part.docs FOR VALUES FROM (0) TO (100);
         CREATE TABLE lr_part.p1 PARTITION OF lr_part.docs FOR VALUES FROM (100) TO (200);
         CREATE TABLE lr_part.p2 PARTITION OF lr_part.docs FOR VALUES FROM (200) TO (300);
         INSERT INTO lr_part.docs SELECT i, 'partitioned document ' || i || ' on ' || (ARRAY['indexing', 'catalogues', 'abstracts'])[i % 3 + 1]
           FROM generate_series(1, 299) i;
         SELECT lightretriever.lr_enable_auto_encoding('lr_part.docs', 'body', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_part.docs", 300);
    assert_eq!(wrong_own_vectors(&mut c, "lr_part.docs", false), 0);
    // A partition made later gets the triggers; a row moved across partitions is encoded again.
    c.batch_execute(
        "CREATE TABLE lr_part.p3 PARTITION OF lr_part.docs FOR VALUES FROM (300) TO (400);
         INSERT INTO lr_part.docs SELECT i, 'late partition row ' || i FROM generate_series(300, 310) i;
         UPDATE lr_part.docs SET id = 350, body = 'moved to the last partition' WHERE id = 2;
         UPDATE lr_part.docs SET id = 351 WHERE id = 102;",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_part.docs", 120);
    assert_eq!(wrong_own_vectors(&mut c, "lr_part.docs", false), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_part.docs WHERE body_embedding IS NULL"), 0);
    // A table attached as a partition brings rows nobody enqueued: lr_enqueue_missing does.
    c.batch_execute(
        "CREATE TABLE lr_part.p4 (LIKE lr_part.docs);
         INSERT INTO lr_part.p4 (id, body) SELECT i, 'attached row ' || i FROM generate_series(400, 420) i;
         ALTER TABLE lr_part.docs ATTACH PARTITION lr_part.p4 FOR VALUES FROM (400) TO (500);",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_part.docs WHERE body_embedding IS NULL"), 21);
    assert_eq!(count(&mut c, "SELECT lightretriever.lr_enqueue_missing('lr_part.docs')"), 21);
    wait_for_encoding(&mut c, "lr_part.docs", 120);
    assert_eq!(wrong_own_vectors(&mut c, "lr_part.docs", false), 0);
    let status: (i64, i64) = {
        let r = c.query_one("SELECT failed, done FROM lightretriever.lr_encoding_status WHERE source = 'lr_part.docs'::regclass", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, (0, count(&mut c, "SELECT count(*) FROM lr_part.docs")));

    // Inheritance: a table's own rows are its rows; a child is another table.
    fresh_schema(&mut c, "lr_inh");
    c.batch_execute(
        "CREATE TABLE lr_inh.parent (id int PRIMARY KEY, body text);
         CREATE TABLE lr_inh.child (PRIMARY KEY (id)) INHERITS (lr_inh.parent);
         INSERT INTO lr_inh.parent SELECT i, 'parent text ' || i FROM generate_series(1, 40) i;
         INSERT INTO lr_inh.child SELECT i, 'child text about something else ' || i FROM generate_series(1, 40) i;
         SELECT lightretriever.lr_enable_auto_encoding('lr_inh.parent', 'body', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_inh.parent", 120);
    assert_eq!(wrong_own_vectors(&mut c, "lr_inh.parent", true), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_inh.child WHERE body_embedding IS NOT NULL"), 0, "not the parent's rows");
    c.batch_execute("SELECT lightretriever.lr_enable_auto_encoding('lr_inh.child', 'body', 'minilm')").unwrap_err();
    // The child inherited the parent's vector column: enabling it adds none, so it is refused
    // by name; a child with its own text column works.
    c.batch_execute(
        "ALTER TABLE lr_inh.child ADD COLUMN note text;
         UPDATE lr_inh.child SET note = 'child note ' || id;
         SELECT lightretriever.lr_enable_auto_encoding('lr_inh.child', 'note', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_inh.child", 120);
    assert_eq!(wrong_vectors(&mut c, "lr_inh.child", "id", "note", "note_embedding"), 0);
    assert_eq!(wrong_own_vectors(&mut c, "lr_inh.parent", true), 0);
    c.batch_execute("DROP SCHEMA lr_part CASCADE; DROP SCHEMA lr_inh CASCADE").unwrap();
}

fn inference_pid(c: &mut Client) -> i32 {
    for _ in 0..200 {
        if let Some(r) = c.query_opt("SELECT inference_pid FROM lightretriever.lr_encoder_processes() WHERE inference_pid IS NOT NULL LIMIT 1", &[]).unwrap() {
            return r.get(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no inference process");
}

fn kill(pid: i32) {
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn a_killed_inference_process_costs_a_retried_batch_not_the_cluster() {
    let mut c = pipeline_database();
    let started_at: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    let mut bystander = fresh_connection("postgres");
    let bystander_pid: i32 = bystander.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    bystander.batch_execute("BEGIN; CREATE TEMP TABLE held (x int); INSERT INTO held VALUES (1)").unwrap();
    fresh_schema(&mut c, "lr_crash");
    c.batch_execute(
        "CREATE TABLE lr_crash.docs (id int PRIMARY KEY, body text);
         INSERT INTO lr_crash.docs SELECT i, 'crash test document ' || i || ' on the retrieval of catalogue records' FROM generate_series(1, 500) i;
         SELECT lightretriever.lr_enable_auto_encoding('lr_crash.docs', 'body', 'minilm');",
    )
    .unwrap();
    // SIGKILL the inference process while the backfill is under way.
    let t = Instant::now();
    while count(&mut c, "SELECT count(*) FROM lr_crash.docs WHERE body_embedding IS NOT NULL") == 0 {
        assert!(t.elapsed() < Duration::from_secs(120), "the backfill did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = inference_pid(&mut c);
    kill(first);
    wait_for_encoding(&mut c, "lr_crash.docs", 600);
    assert_eq!(wrong_vectors(&mut c, "lr_crash.docs", "id", "body", "body_embedding"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_failed_items WHERE source = 'lr_crash.docs'::regclass"), 0);
    let (second, restarts, last_exit): (i32, i32, String) = {
        let r = c.query_one("SELECT inference_pid, restarts, last_exit FROM lightretriever.lr_encoder_processes()", &[]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_ne!(second, first);
    assert!(restarts >= 1 && last_exit.contains("SIGKILL"), "{restarts} {last_exit}");

    // 8 concurrent lr_encode_document calls while it is killed again: each gets its vector or
    // a clear error, and every connection lives on.
    let r = reference();
    let texts: Vec<String> = r["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_owned()).collect();
    let wants: Vec<Vec<f32>> = r["sentences"].as_array().unwrap().iter().map(|s| floats(&s["embedding"])).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes: Vec<(usize, usize)> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..8)
            .map(|w| {
                let (texts, wants, stop) = (&texts, &wants, &stop);
                s.spawn(move || {
                    let mut conn = fresh_connection("postgres");
                    let (mut ok, mut failed) = (0, 0);
                    let mut i = w;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let k = i % texts.len();
                        match conn.query_one("SELECT lightretriever.lr_encode_document($1, 'minilm')", &[&texts[k]]) {
                            Ok(row) => {
                                let v: Vector = row.get(0);
                                assert_matches(v.as_slice(), &wants[k], "through a restarted inference process");
                                ok += 1;
                            }
                            Err(e) => {
                                let db = e.as_db_error().unwrap_or_else(|| panic!("connection lost: {e}"));
                                assert!(db.message().contains("lightretriever"), "{}", db.message());
                                failed += 1;
                            }
                        }
                        i += 8;
                    }
                    conn.query_one("SELECT 1", &[]).unwrap();
                    (ok, failed)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        kill(inference_pid(&mut c));
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        callers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outcomes.iter().all(|(ok, _)| *ok > 0), "{outcomes:?}");
    // Nobody was disconnected: the same backend, its open transaction, the same postmaster start.
    assert_eq!(bystander.query_one("SELECT pg_backend_pid()", &[]).unwrap().get::<_, i32>(0), bystander_pid);
    assert_eq!(count(&mut bystander, "SELECT count(*) FROM held"), 1);
    bystander.batch_execute("COMMIT").unwrap();
    let now: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    assert_eq!(now, started_at, "the cluster was reset");
    c.batch_execute("DROP SCHEMA lr_crash CASCADE").unwrap();
}

/// The encoder worker runs each request to its end, for every database, even when its caller
/// has gone: a cancelled call's array must not hold it. Any role can call lr_encode_documents
/// with a long array and a short statement_timeout; the texts go in chunks of max_batch, so the
/// worker is free again one chunk after the cancel. The chunks' vectors keep the array's order.
#[test]
fn a_cancelled_call_does_not_keep_the_encoder_busy() {
    let mut c = pipeline_database();
    // 100 texts of three lengths: four chunks of the default max_batch (32), sent shortest
    // first; each vector comes back where its text was.
    let wrong: i64 = c
        .query_one(
            "WITH t AS (SELECT array_agg('chunked text number ' || g ORDER BY g) AS texts FROM generate_series(1, 100) g)
             SELECT count(*) FROM t, unnest(t.texts) WITH ORDINALITY AS x(text, n)
               JOIN lightretriever.lr_encode_documents(t.texts, 'minilm') WITH ORDINALITY AS e(v, n) USING (n)
              WHERE (e.v <-> lightretriever.lr_encode_document(x.text, 'minilm')) > 1e-5",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "a chunked array's vectors are its texts' own, in order");

    // 60,000 short texts take this worker over a minute (about 750 a second on two cores).
    c.batch_execute("SET statement_timeout = '1s'").unwrap();
    let e = c
        .query("SELECT count(*) FROM lightretriever.lr_encode_documents(ARRAY(SELECT 'a text to keep the encoder busy ' || g FROM generate_series(1, 60000) g), 'minilm')", &[])
        .expect_err("the caller's statement timeout ends the call");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{e}");
    let mut bystander = fresh_connection("postgres");
    // A few seconds: the chunk in flight, and at most one drain batch queued before it.
    bystander.batch_execute("SET statement_timeout = '5s'").unwrap();
    let started = Instant::now();
    let encoded: bool = bystander
        .query_one("SELECT lightretriever.lr_encode_document('a bystander''s text', 'minilm') IS NOT NULL", &[])
        .unwrap_or_else(|e| panic!("the bystander's call waited behind the cancelled array ({:?}): {e}", started.elapsed()))
        .get(0);
    assert!(encoded);
    c.batch_execute("RESET statement_timeout").unwrap();
}

#[test]
fn a_sleeping_trigger_stalls_only_its_own_table() {
    let mut c = pipeline_database();
    fresh_schema(&mut c, "lr_dos");
    c.batch_execute("ALTER SYSTEM SET lightretriever.statement_timeout = '500ms'").unwrap();
    c.batch_execute("ALTER SYSTEM SET lightretriever.max_retries = 2").unwrap();
    c.batch_execute(
        "SELECT pg_reload_conf();
         CREATE TABLE lr_dos.slow (id int PRIMARY KEY, body text);
         CREATE TABLE lr_dos.fast (id int PRIMARY KEY, body text);
         CREATE FUNCTION lr_dos.nap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;
         CREATE TRIGGER nap BEFORE UPDATE ON lr_dos.slow FOR EACH ROW EXECUTE FUNCTION lr_dos.nap();
         INSERT INTO lr_dos.slow SELECT i, 'slow row ' || i FROM generate_series(1, 20) i;
         INSERT INTO lr_dos.fast SELECT i, 'fast row ' || i FROM generate_series(1, 200) i;
         SELECT lightretriever.lr_enable_auto_encoding('lr_dos.slow', 'body', 'minilm');
         SELECT lightretriever.lr_enable_auto_encoding('lr_dos.fast', 'body', 'minilm');",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let settings reach the worker
    let t = Instant::now();
    wait_for_encoding(&mut c, "lr_dos.fast", 120);
    let fast = t.elapsed();
    assert_eq!(wrong_vectors(&mut c, "lr_dos.fast", "id", "body", "body_embedding"), 0);
    assert!(fast < Duration::from_secs(60), "the fast table waited {fast:?} behind the slow one");
    wait_for_encoding(&mut c, "lr_dos.slow", 120);
    let errors: Vec<String> = c
        .query("SELECT DISTINCT error FROM lightretriever.lr_failed_items WHERE source = 'lr_dos.slow'::regclass", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_failed_items WHERE source = 'lr_dos.slow'::regclass"), 20);
    assert!(errors.iter().all(|e| e.contains("canceling statement due to statement timeout")), "{errors:?}");
    c.batch_execute("ALTER SYSTEM RESET lightretriever.statement_timeout").unwrap();
    c.batch_execute("ALTER SYSTEM RESET lightretriever.max_retries").unwrap();
    c.batch_execute("SELECT pg_reload_conf(); DROP SCHEMA lr_dos CASCADE").unwrap();
}

#[test]
fn drop_extension_is_refused_while_tables_are_auto_encoded_and_cascade_removes_everything() {
    let mut c = fresh_database("lr_e2e_drop_ext");
    c.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text);
         INSERT INTO docs VALUES (1, 'one');
         SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm');",
    )
    .unwrap();
    let (msg, hint) = error_of(&mut c, "DROP EXTENSION lightretriever");
    assert_eq!(msg, "cannot drop extension lightretriever because other objects depend on it");
    assert_eq!(hint.as_deref(), Some("Use DROP ... CASCADE to drop the dependent objects too."));
    c.batch_execute("DROP EXTENSION lightretriever CASCADE").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_class WHERE relname LIKE 'lr_queue_%'"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'lr_auto_encoding_%'"), 0);
    c.batch_execute("INSERT INTO docs VALUES (2, 'two')").unwrap();
    // The vectors were the user's data: they stay. A new CREATE EXTENSION starts clean.
    c.batch_execute("CREATE EXTENSION lightretriever").unwrap();
    c.execute("SELECT lightretriever.lr_register_model('minilm', $1)", &[&dense_model_dir().to_string_lossy().as_ref()]).unwrap();
    c.batch_execute("ALTER TABLE docs DROP COLUMN body_embedding; SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_auto_encodings"), 1);
}

/// A tiny decoder (500 tokens) registered as `name`: its table builds in a second.
fn tiny(c: &mut Client, name: &str) {
    let dir = tiny_models_dir().join("tiny-qwen2");
    c.execute("SELECT lightretriever.lr_register_model($1, $2)", &[&name, &dir.to_string_lossy().as_ref()]).unwrap();
}

#[test]
fn the_lookup_memo_does_not_outlive_a_commit() {
    let mut c = fresh_database("lr_e2e_memo");
    tiny(&mut c, "tiny");
    c.batch_execute("SELECT lightretriever.lr_build_query_table('tiny')").unwrap();
    let (msg, _) = error_of(
        &mut c,
        "DO $$ BEGIN
           PERFORM lightretriever.lr_encode_query('a query', 'tiny');
           PERFORM lightretriever.lr_drop_model('tiny');
           COMMIT;
           PERFORM lightretriever.lr_encode_query('a query', 'tiny');
         END $$",
    );
    assert_eq!(msg, "lightretriever: model \"tiny\" is not registered");
}

/// Issue 14: each statement reads the catalog once for the table it uses (not once per call),
/// and that answer never outlives the statement: a rebuild committed in another session is
/// used by this session's next statement, an uncommitted or rolled-back one never (in the
/// session that rolled it back too), and a REPEATABLE READ transaction keeps its snapshot's
/// table until it ends. Versions are told apart by their vectors: an f16 build rounds the rows.
#[test]
fn each_statement_uses_the_newest_table_its_snapshot_sees() {
    let mut a = fresh_database("lr_e2e_resolution");
    tiny(&mut a, "tiny");
    let mut b = fresh_connection("lr_e2e_resolution");
    let q = "SELECT lightretriever.lr_encode_query('what the table says', 'tiny')";
    let encode = |c: &mut Client| -> Vec<f32> { c.query_one(q, &[]).unwrap().get::<_, Vector>(0).to_vec() };
    a.batch_execute("SELECT lightretriever.lr_build_query_table('tiny')").unwrap();
    let f32_rows = encode(&mut a);
    // One statement calling once per row reads one table throughout.
    let distinct: i64 = a
        .query_one("SELECT count(DISTINCT lightretriever.lr_encode_query('what the table says', 'tiny')::text) FROM generate_series(1, 500)", &[])
        .unwrap()
        .get(0);
    assert_eq!(distinct, 1);

    // Uncommitted, then rolled back: never seen elsewhere; after the rollback, not in b either.
    b.batch_execute("BEGIN; SELECT lightretriever.lr_build_query_table('tiny', dtype => 'f16')").unwrap();
    let f16_rows = encode(&mut b);
    assert_ne!(f16_rows, f32_rows, "an f16 table rounds the rows, so the two versions differ");
    assert_eq!(encode(&mut a), f32_rows, "another session's uncommitted build");
    b.batch_execute("ROLLBACK").unwrap();
    assert_eq!(encode(&mut b), f32_rows, "the session that rolled its build back");
    assert_eq!(encode(&mut a), f32_rows);

    // Committed: the next statement of every session uses it.
    b.batch_execute("SELECT lightretriever.lr_build_query_table('tiny', dtype => 'f16')").unwrap();
    assert_eq!(encode(&mut a), f16_rows, "a build committed by another session");
    assert_eq!(encode(&mut b), f16_rows);

    // REPEATABLE READ keeps its snapshot's table; its next transaction sees the new one.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").unwrap();
    assert_eq!(encode(&mut a), f16_rows);
    b.batch_execute("SELECT lightretriever.lr_build_query_table('tiny')").unwrap();
    assert_eq!(encode(&mut b), f32_rows);
    assert_eq!(encode(&mut a), f16_rows, "a REPEATABLE READ snapshot taken before the build");
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(encode(&mut a), f32_rows, "the transaction after it");

    // Dropped by another session: the next statement says so.
    b.batch_execute("SELECT lightretriever.lr_drop_model('tiny')").unwrap();
    let (msg, _) = error_of(&mut a, q);
    assert_eq!(msg, "lightretriever: model \"tiny\" is not registered");
}

/// Issue 14: long calls show their progress to every other session (`lr_progress`, as
/// pg_stat_progress_* do, and `lr_build_progress` for builds): a table build's stage, fraction,
/// counts and remaining time, then a fit's stages; nothing once they have ended. Sessions of
/// another database see none of it.
#[test]
fn builds_and_fits_show_their_progress_to_other_sessions() {
    use std::sync::atomic::{AtomicBool, Ordering};
    drop(fresh_database("lr_e2e_progress_elsewhere"));
    let mut a = fresh_database("lr_e2e_progress");
    a.batch_execute(
        "CREATE TABLE corpus (id int PRIMARY KEY, body text);
         INSERT INTO corpus SELECT i, 'document ' || i || ' on rivers, libraries and the classification of books' FROM generate_series(1, 40) i",
    )
    .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (watching, elsewhere_watching) = (stop.clone(), stop.clone());
    let elsewhere = std::thread::spawn(move || {
        let mut c = fresh_connection("lr_e2e_progress_elsewhere");
        let mut seen = 0;
        while !elsewhere_watching.load(Ordering::Relaxed) {
            seen += count(&mut c, "SELECT count(*) FROM lightretriever.lr_progress")
                + count(&mut c, "SELECT count(*) FROM lightretriever.lr_build_progress()");
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    });
    let watcher = std::thread::spawn(move || {
        let mut b = fresh_connection("lr_e2e_progress");
        let mut seen: Vec<(String, String)> = Vec::new();
        let (mut build_mid, mut build_listed) = (false, false);
        while !watching.load(Ordering::Relaxed) {
            for r in b.query("SELECT operation, stage, fraction, done, total, stage_eta IS NOT NULL, model FROM lightretriever.lr_progress", &[]).unwrap() {
                let (op, stage, fraction): (String, String, f64) = (r.get(0), r.get(1), r.get(2));
                assert!((0.0..=1.0).contains(&fraction), "{op} {stage}: fraction {fraction}");
                assert_eq!(r.get::<_, String>(6), "minilm");
                if op == "build" && stage == "encoding vocabulary ids" && fraction > 0.0 && fraction < 1.0 {
                    let (done, total): (Option<i64>, Option<i64>) = (r.get(3), r.get(4));
                    assert_eq!(total, Some(30522));
                    assert!(done.unwrap() > 0 && (done.unwrap() as f64 / 30522.0 - fraction).abs() < 1e-9);
                    assert!(r.get::<_, bool>(5), "a moving stage has a remaining time");
                    build_mid = true;
                }
                if !seen.contains(&(op.clone(), stage.clone())) {
                    seen.push((op, stage));
                }
            }
            if b.query("SELECT 1 FROM lightretriever.lr_build_progress() WHERE model = 'minilm' AND total = 30522", &[]).unwrap().len() == 1 {
                build_listed = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (seen, build_mid, build_listed)
    });
    a.batch_execute("SELECT lightretriever.lr_build_query_table('minilm')").unwrap();
    a.batch_execute("SELECT lightretriever.lr_fit_query_table('minilm', 'corpus', 'body', options => '{\"refine\": \"none\"}')").unwrap();
    stop.store(true, Ordering::Relaxed);
    let (seen, build_mid, build_listed) = watcher.join().unwrap();
    assert_eq!(elsewhere.join().unwrap(), 0, "another database's sessions saw the build or the fit");
    assert!(build_mid && build_listed, "the build was seen mid-way: {seen:?}");
    assert!(seen.iter().any(|(op, _)| op == "fit"), "the fit was seen: {seen:?}");
    assert_eq!(count(&mut a, "SELECT count(*) FROM lightretriever.lr_progress"), 0, "nothing once they ended");
}

fn table_file(c: &mut Client, model: &str) -> std::path::PathBuf {
    let data: String = c.query_one("SHOW data_directory", &[]).unwrap().get(0);
    let file: String = c
        .query_one("SELECT file FROM lightretriever.lr_query_tables WHERE model = $1 ORDER BY version DESC LIMIT 1", &[&model])
        .unwrap()
        .get(0);
    std::path::Path::new(&data).join(file)
}

/// Table files are caches of the stored tables: whatever happens to one under a session that
/// has it mapped, the next statement writes it again and gives the same vectors — never a crash
/// (a read fault on a truncated mapping would otherwise kill the backend and reset the cluster)
/// and never another table's vectors.
#[test]
fn table_files_changed_under_a_session_are_written_again_never_crashes_or_wrong_vectors() {
    let mut c = fresh_database("lr_e2e_files");
    tiny(&mut c, "tiny");
    tiny(&mut c, "tiny-twin");
    c.batch_execute("SELECT lightretriever.lr_build_query_table('tiny'); SELECT lightretriever.lr_build_query_table('tiny-twin')").unwrap();
    let started_at: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    let query = "SELECT lightretriever.lr_encode_query('a query about tables', 'tiny')";
    let good: Vector = c.query_one(query, &[]).unwrap().get(0);
    let file = table_file(&mut c, "tiny");
    let twin = table_file(&mut c, "tiny-twin");
    let pristine = std::fs::read(&file).unwrap();
    // The twin (the same model files) has the same rows under another name: the file check
    // below is what tells the copy was replaced.
    assert_ne!(std::fs::read(&twin).unwrap(), pristine);

    let flip_in_place = |file: &std::path::Path| {
        use std::io::{Seek, SeekFrom, Write};
        let at = pristine.len() - 3;
        let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&[pristine[at] ^ 0x40]).unwrap();
    };
    let damages: [(&str, Box<dyn Fn()>); 4] = [
        ("truncated", Box::new(|| std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(4096).unwrap())),
        ("one byte flipped in place (same size)", Box::new(|| flip_in_place(&file))),
        ("another model's table (same tokenizer, same shape) copied over it", Box::new(|| {
            std::fs::copy(&twin, &file).unwrap();
        })),
        ("removed", Box::new(|| std::fs::remove_file(&file).unwrap())),
    ];
    for (damage, apply) in damages {
        std::thread::sleep(Duration::from_millis(50)); // past the coarse clock's tick
        apply();
        let again: Vector = c.query_one(query, &[]).unwrap_or_else(|e| panic!("{damage}: {e}")).get(0);
        assert_eq!(again.as_slice(), good.as_slice(), "{damage}: another vector");
        assert!(std::fs::read(&file).unwrap() == pristine, "{damage}: the file was not written again as it was");
        let mut fresh = fresh_connection("lr_e2e_files");
        let fresh_vector: Vector = fresh.query_one(query, &[]).unwrap().get(0);
        assert_eq!(fresh_vector.as_slice(), good.as_slice(), "{damage}: a new session");
    }
    let now: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    assert_eq!(now, started_at, "the cluster was reset");
}

/// The file sweep that follows a session's write of a table file reads the catalog in a fresh
/// snapshot: a session holding an old one (REPEATABLE READ) used to take the files of versions
/// committed since for orphans and remove them, for every other backend to write again (a
/// review's N2), and so did one whose transaction had written something after a first fix (its
/// reads took the transaction's snapshot whatever was pushed).
#[test]
fn a_session_with_an_old_snapshot_keeps_newer_versions_files() {
    let mut c = fresh_database("lr_e2e_sweep");
    tiny(&mut c, "tiny");
    c.batch_execute("SELECT lightretriever.lr_build_query_table('tiny')").unwrap();
    for (case, begin) in [
        ("a read-only transaction", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1"),
        ("a transaction that wrote", "BEGIN ISOLATION LEVEL REPEATABLE READ; CREATE TEMP TABLE wrote (x int); INSERT INTO wrote VALUES (1)"),
    ] {
        let served = table_file(&mut c, "tiny");
        let mut old = fresh_connection("lr_e2e_sweep");
        old.batch_execute(begin).unwrap();
        c.batch_execute("SELECT lightretriever.lr_build_query_table('tiny')").unwrap();
        let newer = table_file(&mut c, "tiny");
        assert_ne!(served, newer);
        // The newer version's file older than the sweep's minimum age, the served one's gone:
        // the old session, which serves the version before, writes its file from the database,
        // then sweeps.
        let aged = std::time::SystemTime::now() - Duration::from_secs(1200);
        std::fs::File::options().append(true).open(&newer).unwrap().set_modified(aged).unwrap();
        std::fs::remove_file(&served).unwrap();
        old.query_one("SELECT lightretriever.lr_encode_query('a query about tables', 'tiny')", &[]).unwrap();
        assert!(served.exists(), "{case}: the old session did not write its version's file");
        assert!(newer.exists(), "{case}: the old session's sweep removed the newer version's file");
        old.batch_execute("COMMIT").unwrap();
    }
}

#[test]
fn concurrent_builds_of_one_model_wait_for_each_other() {
    let mut c = fresh_database("lr_e2e_builds");
    tiny(&mut c, "tiny");
    let versions: Vec<i64> = std::thread::scope(|s| {
        let builders: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut b = fresh_connection("lr_e2e_builds");
                    b.query_one("SELECT lightretriever.lr_build_query_table('tiny')", &[]).unwrap().get::<_, i64>(0)
                })
            })
            .collect();
        builders.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(versions, vec![500, 500, 500]);
    let built: Vec<i32> =
        c.query("SELECT version FROM lightretriever.lr_query_tables WHERE model = 'tiny' ORDER BY 1", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(built, vec![1, 2, 3]);
    // A drop during a build waits for it, then drops.
    let mut b = fresh_connection("lr_e2e_builds");
    b.batch_execute("BEGIN; SELECT lightretriever.lr_build_query_table('tiny')").unwrap();
    let dropper = std::thread::spawn(|| {
        let mut d = fresh_connection("lr_e2e_builds");
        d.query_one("SELECT lightretriever.lr_drop_model('tiny')", &[]).unwrap().get::<_, bool>(0)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!dropper.is_finished(), "the drop waits for the build's transaction");
    b.batch_execute("COMMIT").unwrap();
    assert!(dropper.join().unwrap());
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_query_tables"), 0);
}
