//! Issue 2 end to end: the real default model through SQL on a real cluster, compared with the
//! independent reference; query tables built, looked up, rolled back; errors as users see them.

use lr_e2e::*;
use pgvector::Vector;

#[test]
fn reference_vectors_through_sql() {
    let mut c = fresh_database("lr_e2e_foundation");
    let r = reference();

    for s in r["sentences"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        let v: Vector = c.query_one("SELECT lightretriever.lr_encode_document($1, 'minilm')", &[&text]).unwrap().get(0);
        assert_matches(v.as_slice(), &floats(&s["embedding"]), text);
    }

    // Missing table: the hint names the builder.
    let (msg, hint) = error_of(&mut c, "SELECT lightretriever.lr_encode_query('x', 'minilm')");
    assert_eq!(msg, "lightretriever: model \"minilm\" has no query table");
    assert_eq!(hint.as_deref(), Some("Build it once (as a superuser) with SELECT lightretriever.lr_build_query_table('minilm')."));

    // A build rolled back leaves neither a row nor a file (the directory is the cluster's:
    // other tests' databases have files there too).
    let files = |c: &mut postgres::Client| -> Vec<String> {
        c.query("SELECT f FROM pg_ls_dir('lightretriever/tables') f WHERE f LIKE '%.lrt%' ORDER BY f", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let before = files(&mut c);
    c.batch_execute("BEGIN; SELECT lightretriever.lr_build_query_table('minilm'); ROLLBACK").unwrap();
    assert_eq!(files(&mut c), before, "rolled-back build left a file");
    let rows: i64 = c.query_one("SELECT count(*) FROM lightretriever.lr_query_tables", &[]).unwrap().get(0);
    assert_eq!(rows, 0);

    let rows: i64 = c.query_one("SELECT lightretriever.lr_build_query_table('minilm')", &[]).unwrap().get(0);
    assert_eq!(rows, 30522);
    for q in r["lookup_queries"].as_array().unwrap() {
        let text = q["text"].as_str().unwrap();
        if q["embedding"].is_null() {
            continue; // the reference's query without tokens: the blank-query error below
        }
        let v: Vector = c.query_one("SELECT lightretriever.lr_encode_query($1, 'minilm')", &[&text]).unwrap().get(0);
        assert_matches(v.as_slice(), &floats(&q["embedding"]), text);
    }

    // A second connection maps the same file; the default model comes from the GUC.
    let mut c2 = fresh_connection("lr_e2e_foundation");
    c2.batch_execute("SET lightretriever.default_model = 'minilm'").unwrap();
    let q = &r["lookup_queries"][0];
    let v: Vector = c2.query_one("SELECT lightretriever.lr_encode_query($1)", &[&q["text"].as_str().unwrap()]).unwrap().get(0);
    assert_matches(v.as_slice(), &floats(&q["embedding"]), "second backend");

    let (msg, hint) = error_of(&mut c, "SELECT lightretriever.lr_encode_query('   ', 'minilm')");
    assert_eq!(msg, "lightretriever: cannot encode the query: the query has no tokens to look up");
    assert!(hint.unwrap().contains("at least one token"));
    let null: Option<Vector> = c.query_one("SELECT lightretriever.lr_encode_query(NULL, 'minilm')", &[]).unwrap().get(0);
    assert!(null.is_none());

    // A rebuild makes version 2 and drops nothing; dropping the model removes the files on commit.
    c.query_one("SELECT lightretriever.lr_build_query_table('minilm')", &[]).unwrap();
    let versions: i64 = c.query_one("SELECT count(*) FROM lightretriever.lr_query_tables", &[]).unwrap().get(0);
    assert_eq!(versions, 2);
    // The catalog names the files (`lightretriever/tables/db<oid>-minilm-…-v<version>-<checksum>.lrt`);
    // both exist now.
    let exists = "SELECT count(*) FROM pg_ls_dir('lightretriever/tables') f
                   WHERE 'lightretriever/tables/' || f = ANY ($1)";
    let files: Vec<String> = c
        .query("SELECT file FROM lightretriever.lr_query_tables ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.starts_with("lightretriever/tables/db") && f.contains("-minilm-")), "{files:?}");
    let present: i64 = c.query_one(exists, &[&files]).unwrap().get(0);
    assert_eq!(present, 2, "the built tables' files are missing: {files:?}");
    // A drop rolled back keeps them (removal waits for the commit).
    c.batch_execute("BEGIN; SELECT lightretriever.lr_drop_model('minilm'); ROLLBACK").unwrap();
    let present: i64 = c.query_one(exists, &[&files]).unwrap().get(0);
    assert_eq!(present, 2, "a rolled-back drop removed table files");
    c.batch_execute("SELECT lightretriever.lr_drop_model('minilm')").unwrap();
    let present: i64 = c.query_one(exists, &[&files]).unwrap().get(0);
    assert_eq!(present, 0, "dropped model's table files remain: {files:?}");
}

/// The file is a cache of the table the database stores: damaged, a new backend writes it again
/// from the stored bytes and gives the reference vectors.
#[test]
fn damaged_table_file_is_written_again_never_wrong_vectors() {
    let mut c = fresh_database("lr_e2e_damage");
    c.query_one("SELECT lightretriever.lr_build_query_table('minilm')", &[]).unwrap();
    let file: String = c.query_one("SELECT file FROM lightretriever.lr_query_tables", &[]).unwrap().get(0);
    let data_dir: String = c.query_one("SHOW data_directory", &[]).unwrap().get(0);
    let path = std::path::Path::new(&data_dir).join(&file);
    let pristine = std::fs::read(&path).unwrap();
    let mut bytes = pristine.clone();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    // A new backend opens the file afresh.
    let mut c2 = fresh_connection("lr_e2e_damage");
    let q = &reference()["lookup_queries"][0];
    let v: Vector = c2.query_one("SELECT lightretriever.lr_encode_query($1, 'minilm')", &[&q["text"].as_str().unwrap()]).unwrap().get(0);
    assert_matches(v.as_slice(), &floats(&q["embedding"]), "after the damage");
    assert!(std::fs::read(&path).unwrap() == pristine, "the file was not written again as it was");
}

/// Query-table files live in one directory for the whole cluster: the same model name and
/// version in two databases must be two files, and dropping the model in one database must
/// leave the other's table alone.
#[test]
fn two_databases_keep_their_own_query_tables() {
    let tiny = tiny_models_dir().join("tiny-qwen2").to_string_lossy().into_owned();
    let setup = |db: &str| {
        let mut c = fresh_database(db);
        c.execute("SELECT lightretriever.lr_register_model('tq', $1)", &[&tiny.as_str()]).unwrap();
        c.query_one("SELECT lightretriever.lr_build_query_table('tq')", &[]).unwrap();
        c
    };
    let query = "SELECT lightretriever.lr_encode_query('paris water', 'tq')::text";
    let mut a = setup("lr_e2e_db_a");
    let mut b = setup("lr_e2e_db_b");
    let file_of = |c: &mut postgres::Client| -> String { c.query_one("SELECT file FROM lightretriever.lr_query_tables", &[]).unwrap().get(0) };
    assert_ne!(file_of(&mut a), file_of(&mut b));
    let before: String = a.query_one(query, &[]).unwrap().get(0);
    b.query_one("SELECT lightretriever.lr_drop_model('tq')", &[]).unwrap();
    // A new backend of database a maps its file afresh.
    let mut a2 = fresh_connection("lr_e2e_db_a");
    let after: String = a2.query_one(query, &[]).unwrap().get(0);
    assert_eq!(after, before);
}

/// pgvector defines its settings (`hnsw.ef_search`, `hnsw.iterative_scan`) only when its library
/// loads, on a backend's first vector operation. `lr_search` as a new connection's first
/// statement must still widen its index scans: 200 rows behind an HNSW index, 100 asked for,
/// where pgvector's default scan stops at 40.
#[test]
fn a_new_connections_first_search_gets_every_candidate() {
    let db = "lr_e2e_fresh_scan";
    let mut c = fresh_database(db);
    let tiny = tiny_models_dir().join("tiny-qwen2").to_string_lossy().into_owned();
    c.execute("SELECT lightretriever.lr_register_model('tq', $1)", &[&tiny.as_str()]).unwrap();
    c.query_one("SELECT lightretriever.lr_build_query_table('tq')", &[]).unwrap();
    let dims: i32 = c.query_one("SELECT vector_dims(lightretriever.lr_encode_query('x', 'tq'))", &[]).unwrap().get(0);
    // No primary key: the planner would read its index for `id IS NOT NULL` instead of HNSW's.
    c.batch_execute(&format!(
        "SELECT setseed(0.25);
         CREATE TABLE scanned (id int, emb vector({dims}));
         INSERT INTO scanned SELECT i, (SELECT array_agg(random() - 0.5) FROM generate_series(1, {dims}) WHERE i > 0)::real[]::vector
           FROM generate_series(1, 200) i;
         CREATE INDEX ON scanned USING hnsw (emb vector_ip_ops);"
    ))
    .unwrap();
    let search = "SELECT count(*) FROM lightretriever.lr_search('scanned', 'paris water', k => 100, mode => 'dense', model => 'tq', id_column => 'id')";
    let mut fresh = fresh_connection(db);
    fresh.batch_execute("SET enable_seqscan = off").unwrap();
    let unset: Option<String> = fresh.query_one("SELECT current_setting('hnsw.ef_search', true)", &[]).unwrap().get(0);
    assert_eq!(unset, None, "pgvector is not loaded in this backend yet");
    let got: i64 = fresh.query_one(search, &[]).unwrap().get(0);
    assert_eq!(got, 100);
    let plain: i64 = fresh
        .query_one("SELECT count(*) FROM (SELECT id FROM scanned ORDER BY emb <#> lightretriever.lr_encode_query('paris water', 'tq') LIMIT 100) t", &[])
        .unwrap()
        .get(0);
    assert_eq!(plain, 40, "pgvector's own scan, for comparison, stops at hnsw.ef_search");
}
