//! Issue 15, item 3: Citus. A coordinator and two worker nodes on this machine
//! (scripts/citus_cluster.sh, started by scripts/e2e.sh: LR_CITUS_PGHOST, LR_CITUS_PGPORT), with
//! lightretriever on all three. A distributed table answers as the same rows in a local table:
//! lr_search (its query encoded once, on the coordinator), hand-written HNSW queries (encoded on
//! every worker, from the catalog lr_sync_nodes copied there), lr_rerank.

use lr_e2e::*;
use postgres::{Client, NoTls};

/// Node 0 is the coordinator, 1 and 2 the workers (ports one and two up, sockets beside).
fn node(i: u16) -> Client {
    let host = std::env::var("LR_CITUS_PGHOST").expect("LR_CITUS_PGHOST is set by scripts/e2e.sh (run `make test-e2e`)");
    let port: u16 = std::env::var("LR_CITUS_PGPORT").expect("LR_CITUS_PGPORT").parse().unwrap();
    let host = host.replace(&port.to_string(), &(port + i).to_string());
    Client::connect(&format!("host={host} port={} user=postgres dbname=postgres", port + i), NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to Citus node {i} at {host}:{}: {e}", port + i))
}

fn coordinator() -> Client {
    node(0)
}

/// The lookup vector of `q` on node `i`.
fn lookup_on(i: u16, q: &str) -> String {
    node(i).query_one("SELECT lightretriever.lr_encode_query($1, 'tl')::text", &[&q]).unwrap().get(0)
}

/// The hand-written search on the dense column: answered on every shard's node.
fn hand_written(c: &mut Client, table: &str) -> Result<Vec<String>, String> {
    SEARCH_QUERIES
        .iter()
        .map(|q| {
            c.query_one(
                &format!("SELECT string_agg(id::text, ' ') FROM (SELECT id FROM {table} ORDER BY emb <#> lightretriever.lr_encode_query($1, 'tl') LIMIT 5) t"),
                &[q],
            )
            .map(|r| r.get(0))
            .map_err(|e| e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string()))
        })
        .collect()
}

fn sync(c: &mut Client) -> Vec<(String, i32, i64, i64, i64)> {
    c.query("SELECT node, port, versions_removed, versions_added, chunks_sent FROM lightretriever.lr_sync_nodes() ORDER BY port", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[test]
fn a_distributed_table_answers_as_the_same_rows_in_a_local_table() {
    let mut c = coordinator();
    c.batch_execute(
        "DROP SCHEMA IF EXISTS lr_citus CASCADE;
         DROP EXTENSION IF EXISTS lightretriever CASCADE;
         CREATE EXTENSION lightretriever CASCADE;
         CREATE SCHEMA lr_citus;
         CREATE TABLE lr_citus.docs (id bigint PRIMARY KEY, body text, emb vector(64), sparse sparsevec(30522), pe vector(32));
         SELECT create_distributed_table('lr_citus.docs', 'id');",
    )
    .unwrap();
    let shards: i64 = c.query_one("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'lr_citus.docs'::regclass", &[]).unwrap().get(0);
    assert!(shards >= 2, "{shards} shards");
    search_corpus(&mut c, "lr_citus.docs");
    search_corpus(&mut c, "lr_citus.local_docs");
    let local = search_answers("lr_citus.local_docs", &mut c);

    // Before any copy the workers have no model: lr_search works all the same (the query is
    // encoded once, on the coordinator, and sent to the shards as a constant), a hand-written
    // query that calls lr_encode_query on the shards does not.
    let (msg, hint) = error_of(&mut c, "SELECT id FROM lr_citus.docs ORDER BY emb <#> lightretriever.lr_encode_query('river', 'tl') LIMIT 3");
    assert_eq!(msg, "lightretriever: model \"tl\" is not registered");
    assert!(hint.unwrap_or_default().contains("lr_sync_nodes"), "the worker's hint names the copy");
    for mode in ["dense", "sparse", "hybrid"] {
        let search = |c: &mut Client, table: &str| -> String {
            c.query_one(
                &format!(
                    "SELECT string_agg(id || ':' || score, ' ' ORDER BY score DESC, id) FROM lightretriever.lr_search('{table}', 'the river library', k => 8,
                            mode => '{mode}', model => 'tl', sparse_model => 'splade', dense_column => 'emb', sparse_column => 'sparse')"
                ),
                &[],
            )
            .unwrap()
            .get(0)
        };
        assert_eq!(search(&mut c, "lr_citus.docs"), search(&mut c, "lr_citus.local_docs"), "{mode}");
    }

    // The catalog copied to both workers: everything answers as the local table does.
    let copied = sync(&mut c);
    assert_eq!(copied.len(), 2, "{copied:?}");
    assert!(copied.iter().all(|n| n.2 == 0 && n.3 == 1 && n.4 >= 1), "each worker got the one table version: {copied:?}");
    assert_eq!(search_answers("lr_citus.docs", &mut c), local);
    let again = sync(&mut c);
    assert!(again.iter().all(|n| n.2 == 0 && n.3 == 0 && n.4 == 0), "a second copy sends nothing: {again:?}");

    // A new version on the coordinator: workers keep the previous one until the next copy.
    let q = SEARCH_QUERIES[0];
    let before = lookup_on(0, q);
    assert_eq!((lookup_on(1, q), lookup_on(2, q)), (before.clone(), before.clone()));
    c.batch_execute("SELECT lightretriever.lr_build_query_table('tl', dtype => 'f16')").unwrap();
    let rebuilt = lookup_on(0, q);
    assert_ne!(rebuilt, before, "an f16 table gives other vectors: the checks below would prove nothing");
    assert_eq!(lookup_on(1, q), before, "a worker serves the version it has until the next copy");
    let copied = sync(&mut c);
    assert!(copied.iter().all(|n| n.2 == 0 && n.3 == 1), "{copied:?}");
    assert_eq!((lookup_on(1, q), lookup_on(2, q)), (rebuilt.clone(), rebuilt));
    assert_eq!(search_answers("lr_citus.docs", &mut c), search_answers("lr_citus.local_docs", &mut c));

    // Auto-encoding a reference table is refused before it changes anything (README, "Citus").
    c.batch_execute("CREATE TABLE lr_citus.kinds (id int PRIMARY KEY, body text); SELECT create_reference_table('lr_citus.kinds')").unwrap();
    let (msg, hint) = error_of(&mut c, "SELECT lightretriever.lr_enable_auto_encoding('lr_citus.kinds', 'body', 'tl')");
    assert_eq!(msg, "lightretriever: lr_citus.kinds is a Citus reference or local table, which lr_enable_auto_encoding does not support");
    assert!(hint.unwrap().contains("create_distributed_table"));
    let columns: i64 = c.query_one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'lr_citus.kinds'::regclass AND attnum > 0", &[]).unwrap().get(0);
    assert_eq!(columns, 2);

    // A model dropped on the coordinator is dropped on the workers by the next copy.
    c.batch_execute("SELECT lightretriever.lr_drop_model('tl')").unwrap();
    sync(&mut c);
    let err = hand_written(&mut c, "lr_citus.docs").unwrap_err();
    assert_eq!(err, "lightretriever: model \"tl\" is not registered");
    c.batch_execute("DROP SCHEMA lr_citus CASCADE").unwrap();
}

/// Rows of `table` whose dense or sparse vector is missing or differs from the coordinator's
/// `lr_encode_documents` / `lr_encode_documents_sparse` of the same text (encoded here: a
/// STABLE function of a column would run on the shards).
fn wrong_rows(c: &mut Client, table: &str) -> Vec<i32> {
    let rows = c.query(&format!("SELECT id, body, body_embedding::text, body_sparse::text FROM {table} ORDER BY id"), &[]).unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let texts: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    let dense: Vec<String> = c
        .query("SELECT e::text FROM lightretriever.lr_encode_documents($1, 'minilm') WITH ORDINALITY AS x(e, n) ORDER BY n", &[&texts])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sparse: Vec<String> = c
        .query("SELECT e::text FROM lightretriever.lr_encode_documents_sparse($1, 'splade') WITH ORDINALITY AS x(e, n) ORDER BY n", &[&texts])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut close = |stored: Option<String>, want: &str, kind: &str| -> bool {
        let Some(stored) = stored else { return false };
        c_distance(c, &stored, want, kind) <= 1e-5
    };
    let mut wrong = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if !close(r.get(2), &dense[i], "vector") || !close(r.get(3), &sparse[i], "sparsevec") {
            wrong.push(ids[i]);
        }
    }
    wrong
}

fn c_distance(c: &mut Client, a: &str, b: &str, kind: &str) -> f64 {
    c.query_one(&format!("SELECT ($1::text::{kind} <-> $2::text::{kind})::float8"), &[&a, &b]).unwrap().get(0)
}

fn status_now(c: &mut Client) -> (Option<i64>, Option<i64>) {
    let r = c.query_one("SELECT pending, done FROM lightretriever.lr_encoding_status WHERE source = 'lr_citus_auto.notes'::regclass", &[]).unwrap();
    (r.get(0), r.get(1))
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Auto-encoding of a distributed table: the coordinator's workers find the rows with a text and
/// no vector on every shard (a partial index) and write each by its key; the BEFORE trigger on
/// the shards clears a changed row's vectors. Nothing is lost when the inference process or the
/// worker nodes' sessions are killed mid-way.
#[test]
fn a_distributed_table_is_auto_encoded_from_the_coordinator() {
    let mut c = coordinator();
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE;
         DROP SCHEMA IF EXISTS lr_citus_auto CASCADE;
         CREATE SCHEMA lr_citus_auto;
         CREATE TABLE lr_citus_auto.notes (id int PRIMARY KEY, body text);
         SELECT create_distributed_table('lr_citus_auto.notes', 'id');
         INSERT INTO lr_citus_auto.notes
           SELECT i, 'note ' || i || ' about ' || (ARRAY['rivers','libraries','engines','music'])[1 + i % 4] FROM generate_series(1, 40) i;",
    )
    .unwrap();
    for (name, dir) in [("minilm", dense_model_dir()), ("splade", sparse_model_dir())] {
        register_model_once(&mut c, name, &dir);
    }
    let t = "lr_citus_auto.notes";
    // The owner's constraint (added while the encoding is paused) refuses any vector for row 13:
    // it fails alone, for good.
    c.batch_execute(
        "BEGIN;
         SELECT lightretriever.lr_enable_auto_encoding('lr_citus_auto.notes', 'body', 'minilm', 'splade');
         SELECT lightretriever.lr_pause_auto_encoding('lr_citus_auto.notes');
         COMMIT;",
    )
    .unwrap();
    // One statement per call: Citus sends a DDL statement's whole query string to the shards.
    c.batch_execute("ALTER TABLE lr_citus_auto.notes ADD CONSTRAINT no_vector_for_13 CHECK (id <> 13 OR body_embedding IS NULL)").unwrap();
    c.batch_execute("SELECT lightretriever.lr_resume_auto_encoding('lr_citus_auto.notes')").unwrap();
    let triggers = count(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'lr_citus_auto.notes'::regclass AND NOT tgisinternal");
    assert_eq!(triggers, 1, "only the BEFORE trigger that clears a row's own vectors");
    wait_for_encoding(&mut c, t, 180);
    let failed: Vec<String> = c
        .query("SELECT row_key::text || ' ' || error FROM lightretriever.lr_failed_items WHERE source = 'lr_citus_auto.notes'::regclass", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(failed.len() == 1 && failed[0].starts_with("{\"id\": 13}") && failed[0].contains("no_vector_for_13"), "{failed:?}");
    let status = |c: &mut Client| -> (i64, i64) {
        let r = c.query_one("SELECT pending, failed FROM lightretriever.lr_encoding_status WHERE source = 'lr_citus_auto.notes'::regclass", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status(&mut c), (0, 1));
    // A role that may only read the table: its waiting rows and vectors are counted in the
    // table, as the owner, which would run the owner's code in the reader's session. Neither
    // count is made for it, and waiting is refused.
    c.batch_execute(
        "DROP ROLE IF EXISTS lr_citus_reader; CREATE ROLE lr_citus_reader;
         GRANT USAGE ON SCHEMA lr_citus_auto TO lr_citus_reader; GRANT SELECT ON lr_citus_auto.notes TO lr_citus_reader;
         SET ROLE lr_citus_reader;",
    )
    .unwrap();
    let reader_sees = status_now(&mut c);
    let wait = c.query_one("SELECT lightretriever.lr_wait_for_encoding('lr_citus_auto.notes', '1 second')", &[]).unwrap_err();
    c.batch_execute("RESET ROLE").unwrap();
    assert_eq!(reader_sees, (None, None));
    assert_eq!(wait.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{wait}");
    assert_eq!(status_now(&mut c), (Some(0), Some(39)), "the owner's view counts");
    // Its row deleted, the failure is over (at the next batch).
    c.batch_execute("DELETE FROM lr_citus_auto.notes WHERE id = 13").unwrap();
    c.batch_execute("ALTER TABLE lr_citus_auto.notes DROP CONSTRAINT no_vector_for_13").unwrap();
    let started = std::time::Instant::now();
    while status(&mut c) != (0, 0) {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the failure of a deleted row stays: {:?}", status(&mut c));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(wrong_rows(&mut c, t), Vec::<i32>::new());

    // A changed text clears its vectors at once, on its shard; they are written again.
    c.batch_execute("BEGIN; UPDATE lr_citus_auto.notes SET body = body || ' revised' WHERE id <= 5").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_citus_auto.notes WHERE id <= 5 AND body_embedding IS NULL AND body_sparse IS NULL"), 5);
    c.batch_execute("COMMIT").unwrap();
    // Inserts (with a vector of the application's: cleared, encoded from the text), deletes,
    // NULL texts.
    c.batch_execute(
        "INSERT INTO lr_citus_auto.notes (id, body, body_embedding) SELECT i, 'late note ' || i, NULL FROM generate_series(41, 50) i;
         DELETE FROM lr_citus_auto.notes WHERE id IN (6, 7, 8);
         UPDATE lr_citus_auto.notes SET body = NULL WHERE id = 9;",
    )
    .unwrap();
    wait_for_encoding(&mut c, t, 180);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lr_citus_auto.notes WHERE id = 9 AND body_embedding IS NULL"), 1, "NULL text, NULL vector");
    c.batch_execute("DELETE FROM lr_citus_auto.notes WHERE id = 9").unwrap();
    assert_eq!(wrong_rows(&mut c, t), Vec::<i32>::new());

    // 60 more rows while the inference process is killed and worker node 1's sessions are
    // terminated: nothing is lost.
    c.batch_execute("INSERT INTO lr_citus_auto.notes SELECT i, 'bulk note ' || i || ' on engines and rivers' FROM generate_series(100, 159) i").unwrap();
    let pid: i32 = {
        let mut found = None;
        for _ in 0..200 {
            if let Some(r) = c.query_opt("SELECT inference_pid FROM lightretriever.lr_encoder_processes() WHERE inference_pid IS NOT NULL LIMIT 1", &[]).unwrap() {
                found = Some(r.get(0));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        found.expect("an inference process")
    };
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    node(1)
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        .unwrap();
    // This session's own connections to node 1 went too: a new session.
    let mut c = coordinator();
    wait_for_encoding(&mut c, t, 180);
    assert_eq!(wrong_rows(&mut c, t), Vec::<i32>::new());
    let status: (i64, i64, Option<i64>) = {
        let r = c.query_one("SELECT pending, failed, done FROM lightretriever.lr_encoding_status WHERE source = 'lr_citus_auto.notes'::regclass", &[]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(status, (0, 0, Some(105)));

    // The owner's lock on the table (taken on the coordinator) leaves the counts made as the
    // owner unknown after a second, instead of stalling the view for every reader.
    let mut owner = coordinator();
    owner.batch_execute("BEGIN; LOCK TABLE lr_citus_auto.notes IN ACCESS EXCLUSIVE MODE").unwrap();
    c.batch_execute("SET statement_timeout = '20s'").unwrap();
    let started = std::time::Instant::now();
    assert_eq!(status_now(&mut c), (None, None), "unknown while the owner holds the lock");
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "the view waited {:?}", started.elapsed());
    c.batch_execute("RESET statement_timeout").unwrap();
    owner.batch_execute("COMMIT").unwrap();
    assert_eq!(status_now(&mut c), (Some(0), Some(105)));

    // Disabled: the trigger and the partial index go (on every shard), the vectors stay.
    c.batch_execute("SELECT lightretriever.lr_disable_auto_encoding('lr_citus_auto.notes')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'lr_citus_auto.notes'::regclass AND NOT tgisinternal"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'lr_citus_auto' AND indexname LIKE 'lr_auto_encoding_%'"), 0);
    c.batch_execute("UPDATE lr_citus_auto.notes SET body = body || ' again' WHERE id = 1").unwrap();
    assert_eq!(count(&mut c, "SELECT count(body_embedding) FROM lr_citus_auto.notes WHERE id = 1"), 1, "no trigger left on the shards");
    c.batch_execute("DROP SCHEMA lr_citus_auto CASCADE").unwrap();
}
