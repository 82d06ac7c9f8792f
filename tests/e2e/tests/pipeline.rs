//! Issue 5 end to end, on a cluster with lightretriever in shared_preload_libraries: triggers,
//! queues, the drain worker and the encoder worker keep live tables encoded under concurrent writers, a killed
//! worker, a broken model, and users who do not own the table.

use std::time::Duration;

use lr_e2e::*;
use pgvector::Vector;
use postgres::Client;

const WORDS: [&str; 24] = [
    "library", "catalogue", "index", "retrieval", "science", "journal", "citation", "abstract", "query", "document",
    "information", "system", "user", "search", "subject", "heading", "classification", "thesaurus", "evaluation",
    "relevance", "archive", "record", "periodical", "bibliography",
];

/// A short deterministic text for row `i` (version `v` when it is updated).
fn text_of(i: usize, v: usize) -> String {
    let w = |k: usize| WORDS[(i * 7 + v * 13 + k * 5) % WORDS.len()];
    format!("{} {} of the {} {} number {i}", w(0), w(1), w(2), w(3))
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn fresh_schema(c: &mut Client, schema: &str) {
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).unwrap();
    c.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
}

/// Failed items of one table (other tests leave their own).
fn failed_of(table: &str) -> String {
    format!(
        "SELECT count(*) FROM lightretriever.lr_failed_items f JOIN lightretriever.lr_auto_encodings a ON a.id = f.encoding_id
          WHERE a.source = '{}'::regclass",
        table.replace('\'', "''")
    )
}

fn worker_pids(c: &mut Client) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'lightretriever drain' AND datname = current_database() ORDER BY pid",
        &[],
    )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn concurrent_writers_drain_to_the_vectors_of_the_final_texts() {
    let mut c = pipeline_database();
    fresh_schema(&mut c, "\"lr pipe\"");
    let table = "\"lr pipe\".\"Docs\"";
    c.batch_execute(&format!("CREATE TABLE {table} (id bigint PRIMARY KEY, body text, tag int DEFAULT 0)")).unwrap();
    // 1,000 rows before enabling: the backfill.
    c.batch_execute(&format!(
        "INSERT INTO {table} (id, body) SELECT i, 'backfilled text ' || i || ' about the library catalogue' FROM generate_series(1, 1000) i"
    ))
    .unwrap();
    let (mut with_notices, notices) = notice_connection("postgres");
    with_notices
        .execute("SELECT lightretriever.lr_enable_auto_encoding($1::text::regclass, 'body', 'minilm', batch_size => 32)", &[&table])
        .unwrap();
    assert!(
        notices.lock().unwrap().iter().any(|n| n == "lightretriever: enqueued 1000 rows of \"lr pipe\".\"Docs\" for encoding by \"minilm\""),
        "{:?}",
        notices.lock().unwrap()
    );

    // 8 writers, 9,000 more rows in transactions of 50, with updates (text and non-text),
    // deletes, NULL and empty texts; one 1 MB text.
    let events: i64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|w| {
                s.spawn(move || {
                    let mut c = fresh_connection("postgres");
                    let mut events = 0i64;
                    for batch in 0..(9000 / 8 / 50) + 1 {
                        let mut tx = c.transaction().unwrap();
                        for k in 0..50 {
                            let i = 1001 + w + 8 * (batch * 50 + k);
                            if i > 10_000 {
                                break;
                            }
                            let body: Option<String> = match i % 97 {
                                0 => None,
                                1 => Some(String::new()),
                                _ if i == 5000 => Some("huge ".repeat(200_000) + "end"),
                                _ => Some(text_of(i, 0)),
                            };
                            tx.execute(&format!("INSERT INTO {table} (id, body) VALUES ($1, $2)"), &[&(i as i64), &body]).unwrap();
                            events += body.is_some() as i64;
                            if i % 10 == 3 {
                                tx.execute(&format!("UPDATE {table} SET body = $2 WHERE id = $1"), &[&(i as i64), &text_of(i, 1)]).unwrap();
                                events += 1;
                            }
                            if i % 10 == 4 {
                                tx.execute(&format!("UPDATE {table} SET tag = 1 WHERE id = $1"), &[&(i as i64)]).unwrap();
                            }
                        }
                        tx.commit().unwrap();
                        // Later updates and deletes of rows that may be encoded or queued already.
                        let i = (1001 + w + 8 * batch * 50) as i64;
                        c.execute(&format!("UPDATE {table} SET body = body || ' revised' WHERE id = $1 AND body IS NOT NULL"), &[&i]).unwrap();
                        events += 1;
                        c.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&(i + 8)]).unwrap();
                    }
                    events
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    // While the backlog drains at a measured rate, the status has an ETA: the backlog at that rate.
    let started = std::time::Instant::now();
    let eta_seen = loop {
        let row = c
            .query_one(
                "SELECT pending + in_flight, rows_per_second, extract(epoch FROM eta)::float8 FROM lightretriever.lr_encoding_status WHERE source = $1::text::regclass",
                &[&table],
            )
            .unwrap();
        let (backlog, rate, eta): (i64, Option<f64>, Option<f64>) = (row.get(0), row.get(1), row.get(2));
        match (rate, eta) {
            (Some(r), Some(e)) if backlog > 0 && r > 0.0 => break Some((backlog, r, e)),
            _ if backlog == 0 || started.elapsed() > std::time::Duration::from_secs(120) => break None,
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    };
    let (backlog, rate, eta) = eta_seen.expect("a backlog draining at a measured rate (10,000 rows take longer than a batch)");
    assert_eq!(eta, (backlog as f64 / rate).ceil(), "ETA of {backlog} rows at {rate} rows/s");
    wait_for_encoding(&mut c, table, 900);

    let rows = count(&mut c, &format!("SELECT count(*) FROM {table}"));
    assert!(rows > 9_000, "{rows} rows");
    assert_eq!(wrong_vectors(&mut c, table, "id", "body", "body_embedding"), 0, "rows whose vector is not that of their text");
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM {table} WHERE body IS NULL AND body_embedding IS NULL")), count(&mut c, &format!("SELECT count(*) FROM {table} WHERE body IS NULL")));
    let huge: Vector = c.query_one(&format!("SELECT body_embedding FROM {table} WHERE id = 5000"), &[]).unwrap().get(0);
    assert_eq!(huge.as_slice().len(), 384);
    // Nothing left behind, nothing failed, no more encodings than enqueue events.
    assert_eq!(count(&mut c, &failed_of(table)), 0);
    let queue: String = c.query_one("SELECT queue_table::text FROM lightretriever.lr_auto_encodings WHERE source = $1::text::regclass", &[&table]).unwrap().get(0);
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")), 0);
    let handled = count(&mut c, "SELECT coalesce(sum(rows), 0)::bigint FROM lightretriever.lr_encoding_batches b JOIN lightretriever.lr_auto_encodings a ON a.id = b.encoding_id WHERE a.source = '\"lr pipe\".\"Docs\"'::regclass");
    assert!(handled >= rows - count(&mut c, &format!("SELECT count(*) FROM {table} WHERE body IS NULL")), "every row was encoded by a batch");
    assert!(handled <= 1000 + events, "{handled} rows handled for {} enqueue events", 1000 + events);

    let status = c
        .query_one(
            "SELECT pending, in_flight, failed, done, model, worker_pid IS NOT NULL FROM lightretriever.lr_encoding_status WHERE source = $1::text::regclass",
            &[&table],
        )
        .unwrap();
    assert_eq!((status.get::<_, i64>(0), status.get::<_, i64>(1), status.get::<_, i64>(2)), (0, 0, 0));
    assert_eq!(status.get::<_, i64>(3), count(&mut c, &format!("SELECT count(*) FROM {table} WHERE body IS NOT NULL")));
    assert_eq!(status.get::<_, String>(4), "minilm");
    assert!(status.get::<_, bool>(5));
    let eta: String = c.query_one("SELECT eta::text FROM lightretriever.lr_encoding_status WHERE source = $1::text::regclass", &[&table]).unwrap().get(0);
    assert_eq!(eta, "00:00:00", "no backlog");

    // Non-text updates do not enqueue; text updates clear the stale vector at once.
    c.batch_execute(&format!("UPDATE {table} SET tag = tag + 1 WHERE id <= 100")).unwrap();
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")), 0);
    c.batch_execute(&format!("UPDATE {table} SET body = 'a new text' WHERE id = 2")).unwrap();
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM {table} WHERE id = 2 AND body_embedding IS NULL")), 1);
    wait_for_encoding(&mut c, table, 60);
    assert_eq!(wrong_vectors(&mut c, table, "id", "body", "body_embedding"), 0);
    // An UPDATE that writes NULL over vectors and leaves the text alone (an ORM saving a whole
    // row it read before the worker wrote the vector) re-enqueues the rows: nothing is lost.
    // Writing a vector (as the worker does) enqueues nothing.
    c.batch_execute(&format!("UPDATE {table} SET body_embedding = NULL, tag = tag + 1 WHERE id BETWEEN 3 AND 7 AND body IS NOT NULL")).unwrap();
    let erased = count(&mut c, &format!("SELECT count(*) FROM {table} WHERE id BETWEEN 3 AND 7 AND body IS NOT NULL"));
    assert!(erased >= 1);
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")), erased);
    wait_for_encoding(&mut c, table, 60);
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM {table} WHERE body IS NOT NULL AND body_embedding IS NULL")), 0);
    assert_eq!(wrong_vectors(&mut c, table, "id", "body", "body_embedding"), 0);
    c.batch_execute(&format!("UPDATE {table} SET body_embedding = (SELECT body_embedding FROM {table} WHERE id = 2) WHERE id = 3")).unwrap();
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")), 0);
    c.batch_execute(&format!("UPDATE {table} SET body = body WHERE id = 3")).unwrap();
    wait_for_encoding(&mut c, table, 60);
    // TRUNCATE leaves no queue behind.
    c.batch_execute(&format!("INSERT INTO {table} (id, body) SELECT i, 'late ' || i FROM generate_series(20001, 20100) i; TRUNCATE {table}")).unwrap();
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM lightretriever_queues.\"{queue}\"")), 0);
}

#[test]
fn a_worker_killed_mid_batch_is_restarted_and_the_result_is_the_same() {
    let mut c = pipeline_database();
    fresh_schema(&mut c, "lr_kill");
    c.batch_execute(
        "CREATE TABLE lr_kill.docs (id int PRIMARY KEY, body text);
         INSERT INTO lr_kill.docs SELECT i, 'kill test document ' || i || ' on information retrieval and catalogues' FROM generate_series(1, 3000) i",
    )
    .unwrap();
    c.execute("SELECT lightretriever.lr_enable_auto_encoding('lr_kill.docs', 'body', 'minilm', batch_size => 64)", &[]).unwrap();
    // Wait until a worker is inside a batch, then SIGKILL it.
    let started = std::time::Instant::now();
    let pid: i32 = loop {
        let busy: Option<i32> = c
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'lightretriever drain' AND query LIKE 'lightretriever: encoding %' LIMIT 1",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0));
        if let Some(pid) = busy {
            if count(&mut c, "SELECT count(*) FROM lr_kill.docs WHERE body_embedding IS NOT NULL") > 0 {
                break pid;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no worker picked up the queue");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(c);
    let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    // The postmaster treats the killed worker as a crash: every backend restarts, and so does
    // the worker. Reconnect and let it finish.
    std::thread::sleep(Duration::from_secs(1));
    let mut c = connect_retrying("postgres", Duration::from_secs(120));
    let mut pids = Vec::new();
    for _ in 0..200 {
        pids = worker_pids(&mut c);
        if !pids.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!pids.is_empty() && !pids.contains(&pid), "restarted worker: {pids:?}, killed {pid}");
    wait_for_encoding(&mut c, "lr_kill.docs", 600);
    // The same final state as a run without the kill: every row has its text's vector.
    assert_eq!(wrong_vectors(&mut c, "lr_kill.docs", "id", "body", "body_embedding"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_kill.docs WHERE body_embedding IS NULL"), 0);
    assert_eq!(count(&mut c, &failed_of("lr_kill.docs")), 0);
}

#[test]
fn a_broken_model_fails_its_rows_and_other_tables_keep_flowing() {
    let mut c = pipeline_database();
    fresh_schema(&mut c, "lr_fail");
    // A copy of the default model whose weights are then damaged.
    let broken = std::env::temp_dir().join("lr-e2e-broken-model");
    let _ = std::fs::remove_dir_all(&broken);
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(dense_model_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
        }
    }
    c.batch_execute("SELECT lightretriever.lr_drop_model(name) FROM lightretriever.lr_models WHERE name = 'broken'").unwrap();
    c.execute("SELECT lightretriever.lr_register_model('broken', $1)", &[&broken.to_string_lossy().as_ref()]).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"this is not a safetensors file").unwrap();
    c.batch_execute("ALTER SYSTEM SET lightretriever.max_retries = 2").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    c.batch_execute(
        "CREATE TABLE lr_fail.bad (id int PRIMARY KEY, body text);
         CREATE TABLE lr_fail.good (id int PRIMARY KEY, body text);
         INSERT INTO lr_fail.bad SELECT i, 'row ' || i FROM generate_series(1, 20) i;
         INSERT INTO lr_fail.good SELECT i, 'row ' || i FROM generate_series(1, 20) i;
         SELECT lightretriever.lr_enable_auto_encoding('lr_fail.bad', 'body', 'broken');
         SELECT lightretriever.lr_enable_auto_encoding('lr_fail.good', 'body', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_fail.good", 120);
    assert_eq!(wrong_vectors(&mut c, "lr_fail.good", "id", "body", "body_embedding"), 0);
    // Two attempts, backing off 1 s then 2 s, and the rows move to the failed table.
    wait_for_encoding(&mut c, "lr_fail.bad", 120);
    let failed = c
        .query(
            "SELECT f.row_key->>'id', f.error, f.attempts FROM lightretriever.lr_failed_items f
               JOIN lightretriever.lr_auto_encodings a ON a.id = f.encoding_id WHERE a.source = 'lr_fail.bad'::regclass
              ORDER BY (f.row_key->>'id')::int",
            &[],
        )
        .unwrap();
    assert_eq!(failed.len(), 20);
    assert_eq!(failed[0].get::<_, String>(0), "1");
    assert!(failed[0].get::<_, String>(1).contains("cannot load model \"broken\""), "{}", failed[0].get::<_, String>(1));
    assert_eq!(failed[0].get::<_, i32>(2), 2);
    let status = c
        .query_one("SELECT failed, last_error FROM lightretriever.lr_encoding_status WHERE source = 'lr_fail.bad'::regclass", &[])
        .unwrap();
    assert_eq!(status.get::<_, i64>(0), 20);
    assert!(status.get::<_, Option<String>>(1).unwrap().contains("broken"));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_fail.bad WHERE body_embedding IS NOT NULL"), 0);
    // Deleting a failed row removes its record; retry puts the rest back in the queue.
    c.batch_execute("DELETE FROM lr_fail.bad WHERE id = 1").unwrap();
    let retried: i64 = c.query_one("SELECT lightretriever.lr_retry_failed('lr_fail.bad')", &[]).unwrap().get(0);
    assert_eq!(retried, 19);
    c.batch_execute("ALTER SYSTEM RESET lightretriever.max_retries").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    c.batch_execute("DROP SCHEMA lr_fail CASCADE").unwrap();
    // Dropping the tables (event trigger) took their auto-encodings, queues and records along.
    assert_eq!(count(&mut c, "SELECT count(*) FROM lightretriever.lr_auto_encodings a WHERE a.model = 'broken'"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'lightretriever_queues' AND tablename LIKE 'lr_queue_%' AND tablename NOT IN (SELECT queue_table FROM lightretriever.lr_auto_encodings)"), 0);
}

#[test]
fn only_owners_enable_and_quoted_names_work_with_owner_rights() {
    let mut c = pipeline_database();
    c.batch_execute(
        "DROP SCHEMA IF EXISTS \"Odd Schema\" CASCADE;
         DROP ROLE IF EXISTS lr_alice; DROP ROLE IF EXISTS lr_bob;
         CREATE ROLE lr_alice; CREATE ROLE lr_bob;
         CREATE SCHEMA \"Odd Schema\" AUTHORIZATION lr_alice;
         GRANT USAGE ON SCHEMA \"Odd Schema\" TO lr_bob;",
    )
    .unwrap();
    let table = "\"Odd Schema\".\"My \"\"Table\"\"\"";
    c.batch_execute(&format!(
        "SET ROLE lr_alice;
         CREATE TABLE {table} (\"Key\" int, \"Second Key\" text, \"Body Text\" text, PRIMARY KEY (\"Key\", \"Second Key\"));
         -- Records who runs updates of the table: the worker must act as the owner.
         CREATE TABLE \"Odd Schema\".audit (who name, sec boolean);
         CREATE FUNCTION \"Odd Schema\".who() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO \"Odd Schema\".audit VALUES (current_user, true); RETURN NEW; END $$;
         CREATE TRIGGER audit AFTER UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION \"Odd Schema\".who();
         INSERT INTO {table} VALUES (1, 'a b', 'first text'), (2, 'c''d', 'second text');
         RESET ROLE"
    ))
    .unwrap();
    c.batch_execute("SET ROLE lr_bob").unwrap();
    let (msg, _) = error_of(&mut c, &format!("SELECT lightretriever.lr_enable_auto_encoding('{}', 'Body Text', 'minilm')", table.replace('\'', "''")));
    assert_eq!(msg, format!("lightretriever: must be the owner of table {table} to change its auto-encoding"));
    c.batch_execute("RESET ROLE; SET ROLE lr_alice").unwrap();
    c.execute("SELECT lightretriever.lr_enable_auto_encoding($1::text::regclass, 'Body Text', 'minilm')", &[&table]).unwrap();
    c.batch_execute(&format!("INSERT INTO {table} VALUES (3, 'e\"f', 'third text')")).unwrap();
    wait_for_encoding(&mut c, table, 120);
    assert_eq!(wrong_vectors(&mut c, table, "\"Key\"", "\"Body Text\"", "\"Body Text_embedding\""), 0);
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM {table} WHERE \"Body Text_embedding\" IS NOT NULL")), 3);
    let who: Vec<String> = c.query("SELECT DISTINCT who::text FROM \"Odd Schema\".audit", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(who, vec!["lr_alice".to_string()], "the worker wrote the vectors as the table owner");
    // Bob cannot disable it either; Alice can, keeping or dropping the column.
    c.batch_execute("RESET ROLE; SET ROLE lr_bob").unwrap();
    let (msg, _) = error_of(&mut c, &format!("SELECT lightretriever.lr_disable_auto_encoding('{}')", table.replace('\'', "''")));
    assert!(msg.starts_with("lightretriever: must be the owner"), "{msg}");
    c.batch_execute("RESET ROLE; SET ROLE lr_alice").unwrap();
    c.execute("SELECT lightretriever.lr_disable_auto_encoding($1::text::regclass, drop_columns => true)", &[&table]).unwrap();
    assert_eq!(
        count(&mut c, &format!("SELECT count(*) FROM pg_attribute WHERE attrelid = '{}'::regclass AND attname = 'Body Text_embedding' AND NOT attisdropped", table.replace('\'', "''"))),
        0
    );
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{}'::regclass AND tgname LIKE 'lr_auto_encoding%'", table.replace('\'', "''"))), 0);
    c.batch_execute("RESET ROLE; DROP SCHEMA \"Odd Schema\" CASCADE; DROP ROLE lr_alice; DROP ROLE lr_bob").unwrap();
}

#[test]
fn backend_calls_go_through_the_worker_and_honour_statement_timeout() {
    let mut c = pipeline_database();
    let r = reference();
    let s = &r["sentences"][0];
    let v: Vector = c.query_one("SELECT lightretriever.lr_encode_document($1, 'minilm')", &[&s["text"].as_str().unwrap()]).unwrap().get(0);
    assert_matches(v.as_slice(), &floats(&s["embedding"]), "through the worker");
    // A long call is cancelled by statement_timeout; the connection works afterwards.
    let (msg, _) = error_of(
        &mut c,
        "SET statement_timeout = '200ms';
         SELECT count(*) FROM lightretriever.lr_encode_documents(ARRAY(SELECT 'a fairly long text about catalogues number ' || i FROM generate_series(1, 3000) i), 'minilm')",
    );
    assert_eq!(msg, "canceling statement due to statement timeout");
    c.batch_execute("RESET statement_timeout").unwrap();
    let v: Vector = c.query_one("SELECT lightretriever.lr_encode_document($1, 'minilm')", &[&s["text"].as_str().unwrap()]).unwrap().get(0);
    assert_matches(v.as_slice(), &floats(&s["embedding"]), "after a cancel");
    // Backends may not run models here: the vectors above came from the worker.
    let allowed: String = c.query_one("SHOW lightretriever.allow_backend_models", &[]).unwrap().get(0);
    assert_eq!(allowed, "off");
}

#[test]
fn a_paused_table_keeps_its_queue_until_resumed() {
    let mut c = pipeline_database();
    fresh_schema(&mut c, "lr_pause");
    c.batch_execute(
        "CREATE TABLE lr_pause.docs (id int PRIMARY KEY, body text);
         INSERT INTO lr_pause.docs SELECT i, 'first text ' || i FROM generate_series(1, 20) i;
         SELECT lightretriever.lr_enable_auto_encoding('lr_pause.docs', 'body', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut c, "lr_pause.docs", 120);
    let paused: bool = c.query_one("SELECT lightretriever.lr_pause_auto_encoding('lr_pause.docs')", &[]).unwrap().get(0);
    assert!(paused);
    let again: bool = c.query_one("SELECT lightretriever.lr_pause_auto_encoding('lr_pause.docs')", &[]).unwrap().get(0);
    assert!(!again, "pausing a paused table changes nothing");
    // The triggers keep queueing; the workers leave the queue alone.
    c.batch_execute(
        "UPDATE lr_pause.docs SET body = 'second text ' || id WHERE id <= 10;
         INSERT INTO lr_pause.docs SELECT i, 'late text ' || i FROM generate_series(21, 30) i;",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3)); // many poll intervals
    let status: (String, i64) = {
        let r = c.query_one("SELECT status, pending FROM lightretriever.lr_encoding_status WHERE source = 'lr_pause.docs'::regclass", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, ("paused".to_owned(), 20));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_pause.docs WHERE body_embedding IS NULL"), 20);
    let waited: bool = c.query_one("SELECT lightretriever.lr_wait_for_encoding('lr_pause.docs', '1 minute')", &[]).unwrap().get(0);
    assert!(!waited, "a paused table's wait gives false at once");
    // Non-owners cannot pause or resume.
    c.batch_execute("DROP ROLE IF EXISTS lr_pause_other; CREATE ROLE lr_pause_other; GRANT USAGE ON SCHEMA lr_pause TO lr_pause_other").unwrap();
    let (msg, _) = error_of(&mut c, "SET ROLE lr_pause_other; SELECT lightretriever.lr_resume_auto_encoding('lr_pause.docs')");
    c.batch_execute("RESET ROLE").unwrap();
    assert!(msg.contains("must be the owner"), "{msg}");
    let resumed: bool = c.query_one("SELECT lightretriever.lr_resume_auto_encoding('lr_pause.docs')", &[]).unwrap().get(0);
    assert!(resumed);
    wait_for_encoding(&mut c, "lr_pause.docs", 120);
    assert_eq!(wrong_vectors(&mut c, "lr_pause.docs", "id", "body", "body_embedding"), 0);
    let status: String =
        c.query_one("SELECT status FROM lightretriever.lr_encoding_status WHERE source = 'lr_pause.docs'::regclass", &[]).unwrap().get(0);
    assert_eq!(status, "active");
    c.batch_execute("DROP SCHEMA lr_pause CASCADE; DROP ROLE lr_pause_other").unwrap();
}
