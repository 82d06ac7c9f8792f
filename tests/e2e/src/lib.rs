//! Connecting to the throwaway cluster started by scripts/e2e.sh (LR_TEST_PGHOST, LR_TEST_PGPORT).

pub use lr_testkit::*;
use postgres::{Client, NoTls};

pub const DENSE_MODEL: &str = "minilm";

/// Waits until `cond` holds (panics with `what` after `seconds`).
pub fn eventually(seconds: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < std::time::Duration::from_secs(seconds), "{what} (after {seconds} s)");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A new connection (a new backend) to an existing database.
pub fn fresh_connection(db: &str) -> Client {
    connect_to(db)
}

fn connect_to(db: &str) -> Client {
    connection_with_options(db, "")
}

/// A new connection to `db` with server settings given at connection time (`PGOPTIONS`, e.g.
/// `-c search_path=x`): they become the session's reset values, unlike a `SET`.
pub fn connection_with_options(db: &str, options: &str) -> Client {
    let mut config = config_for(db);
    if !options.is_empty() {
        config.options(options);
    }
    connect_with(config)
}

/// The NOTICE and WARNING messages a connection has received, in order.
pub type Notices = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A new connection to `db`, and the messages it receives.
pub fn notice_connection(db: &str) -> (Client, Notices) {
    let notices = Notices::default();
    let sink = notices.clone();
    let mut config = config_for(db);
    config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_owned()));
    (connect_with(config), notices)
}

fn config_for(db: &str) -> postgres::Config {
    let host = std::env::var("LR_TEST_PGHOST").expect("LR_TEST_PGHOST is set by scripts/e2e.sh (run `make test-e2e`)");
    let port = std::env::var("LR_TEST_PGPORT").unwrap_or_else(|_| "28815".into());
    format!("host={host} port={port} user=postgres dbname={db}").parse().unwrap()
}

fn connect_with(config: postgres::Config) -> Client {
    let at = format!("{:?}:{:?}", config.get_hosts(), config.get_ports());
    config.connect(NoTls).unwrap_or_else(|e| panic!("cannot connect to the test cluster at {at}: {e}"))
}

/// A new database with the extension created and the default model registered as `minilm`.
pub fn fresh_database(name: &str) -> Client {
    let mut admin = connect_to("postgres");
    // Separate statements: a multi-statement string runs as one transaction, which DROP DATABASE refuses.
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let mut c = connect_to(name);
    c.batch_execute("CREATE EXTENSION lightretriever CASCADE").unwrap();
    c.execute(
        "SELECT lightretriever.lr_register_model($1, $2)",
        &[&DENSE_MODEL, &dense_model_dir().to_string_lossy().as_ref()],
    )
    .unwrap();
    c
}

/// The message and hint of the error a statement raises.
pub fn error_of(c: &mut Client, sql: &str) -> (String, Option<String>) {
    let e = c.batch_execute(sql).expect_err(&format!("expected an error from {sql}"));
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.message().to_owned(), db.hint().map(str::to_owned))
}

/// The `postgres` database with the extension and the default model; pipeline tests work in
/// their own schemas.
pub fn pipeline_database() -> Client {
    let mut c = connect_to("postgres");
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS lightretriever CASCADE").unwrap();
    c.execute(
        "SELECT lightretriever.lr_register_model($1, $2) WHERE NOT EXISTS
           (SELECT 1 FROM lightretriever.lr_models WHERE name = $1)",
        &[&DENSE_MODEL, &dense_model_dir().to_string_lossy().as_ref()],
    )
    .unwrap();
    c
}

/// Connects to `db`, retrying for up to `patience` (the server may be restarting after a crash).
pub fn connect_retrying(db: &str, patience: std::time::Duration) -> Client {
    let host = std::env::var("LR_TEST_PGHOST").unwrap();
    let port = std::env::var("LR_TEST_PGPORT").unwrap_or_else(|_| "28815".into());
    let started = std::time::Instant::now();
    loop {
        let error = match Client::connect(&format!("host={host} port={port} user=postgres dbname={db}"), NoTls) {
            Ok(mut c) => match c.simple_query("SELECT 1") {
                Ok(_) => return c,
                Err(e) => e,
            },
            Err(e) => e,
        };
        if started.elapsed() >= patience {
            panic!("cannot connect within {patience:?}: {error}");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Waits for the queue of `table` to drain (panics after `seconds`).
pub fn wait_for_encoding(c: &mut Client, table: &str, seconds: u32) {
    let drained: bool = c
        .query_one(
            "SELECT lightretriever.lr_wait_for_encoding($1::text::regclass, make_interval(secs => $2))",
            &[&table, &(seconds as f64)],
        )
        .unwrap()
        .get(0);
    assert!(drained, "the queue of {table} did not drain within {seconds} s");
}

/// Rows of `table` whose auto-encoded vector is missing or differs from a fresh
/// `lr_encode_documents` of the same text (batched: the comparison allows float noise from
/// padding in differently composed batches, 1e-5 in L2).
pub fn wrong_vectors(c: &mut Client, table: &str, key: &str, text: &str, vector: &str) -> i64 {
    c.query_one(
        &format!(
            "WITH x AS (SELECT array_agg({key} ORDER BY {key}) AS ids, array_agg({text} ORDER BY {key}) AS texts
                          FROM {table} WHERE {text} IS NOT NULL),
                  fresh AS (SELECT i.id, e.v FROM x,
                                   unnest(x.ids) WITH ORDINALITY AS i(id, n)
                              JOIN lightretriever.lr_encode_documents(x.texts, 'minilm') WITH ORDINALITY AS e(v, n) USING (n))
             SELECT (SELECT count(*) FROM {table} t JOIN fresh f ON f.id = t.{key}
                      WHERE t.{vector} IS NULL OR (t.{vector} <-> f.v) > 1e-5)
                  + (SELECT count(*) FROM {table} WHERE {text} IS NULL AND {vector} IS NOT NULL)"
        ),
        &[],
    )
    .unwrap()
    .get(0)
}

/// Registers `name` for the model directory `path`.
pub fn register_model(c: &mut Client, name: &str, path: &std::path::Path) {
    c.execute("SELECT lightretriever.lr_register_model($1, $2)", &[&name, &path.to_string_lossy().as_ref()]).unwrap();
}

/// [`register_model`] unless a model of that name is registered already (by an earlier test
/// on the same cluster).
pub fn register_model_once(c: &mut Client, name: &str, path: &std::path::Path) {
    let known: bool = c.query_one("SELECT EXISTS (SELECT FROM lightretriever.lr_models WHERE name = $1)", &[&name]).unwrap().get(0);
    if !known {
        register_model(c, name, path);
    }
}

/// Queries of [`search_answers`].
pub const SEARCH_QUERIES: [&str; 3] = ["the river library", "music of paris", "old engines and books"];

/// A dense (tiny LLM `tl`, its query table), sparse (SPLADE-tiny `splade`, fitted query weights)
/// and reranker (PE-Rank tiny `perank`) set-up, and `table` (bigint id, body, emb vector(64),
/// sparse sparsevec, pe vector(32): the reranker's passage embeddings) of 30 documents with all
/// three vectors and an HNSW index. `table` may already exist, empty (a distributed table).
pub fn search_corpus(c: &mut Client, table: &str) {
    for (name, path) in [
        ("tl", tiny_models_dir().join("tiny-llama")),
        ("splade", sparse_model_dir()),
        ("perank", tiny_models_dir().join("pe-rank-tiny")),
    ] {
        register_model_once(c, name, &path);
    }
    let r = tiny_reference("pe-rank-tiny");
    let s30 = r["windows"].as_array().unwrap().iter().find(|s| s["embeddings"].as_array().unwrap().len() == 30).unwrap();
    let embeddings = matrix(&s30["embeddings"]);
    c.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, body text, emb vector(64), sparse sparsevec(30522), pe vector(32))"
    ))
    .unwrap();
    let words = ["the river", "a city of music", "engines and rivers", "the library", "paris in france", "old books"];
    let (mut ids, mut bodies, mut pes) = (Vec::new(), Vec::new(), Vec::new());
    for (i, e) in embeddings.iter().enumerate() {
        ids.push(i as i64 + 1);
        bodies.push(format!("{} {}", words[i % words.len()], words[(i / words.len()) % words.len()]));
        pes.push(format!("[{}]", e.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")));
    }
    // Encoded here (the coordinator, on Citus), then inserted.
    c.execute(
        &format!(
            "INSERT INTO {table}
             SELECT i.id, i.body, lightretriever.lr_encode_document(i.body, 'tl'), lightretriever.lr_encode_document_sparse(i.body, 'splade'), i.pe::vector
               FROM unnest($1::bigint[], $2::text[], $3::text[]) AS i(id, body, pe)"
        ),
        &[&ids, &bodies, &pes],
    )
    .unwrap();
    c.batch_execute(&format!("CREATE INDEX ON {table} USING hnsw (emb vector_ip_ops)")).unwrap();
    let built: bool = c.query_one("SELECT EXISTS (SELECT FROM lightretriever.lr_query_tables WHERE model = 'tl')", &[]).unwrap().get(0);
    if !built {
        c.batch_execute("SELECT lightretriever.lr_build_query_table('tl')").unwrap();
    }
    c.execute("SELECT lightretriever.lr_fit_sparse_query_weights('splade', $1::text::regclass, 'body')", &[&table]).unwrap();
}

/// Everything a search client asks of `table` (made by [`search_corpus`]), as text: lookups
/// (dense and sparse), lr_search in its three modes, a hand-written HNSW query, and a rerank of
/// the dense top 8.
pub fn search_answers(table: &str, c: &mut Client) -> Vec<String> {
    let mut out = Vec::new();
    for q in SEARCH_QUERIES {
        let one = |c: &mut Client, sql: &str| -> String { c.query_one(sql, &[&q]).unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error())).get(0) };
        out.push(one(c, "SELECT lightretriever.lr_encode_query($1, 'tl')::text"));
        out.push(one(c, "SELECT lightretriever.lr_encode_query_sparse($1, 'splade')::text"));
        for mode in ["dense", "sparse", "hybrid"] {
            out.push(one(
                c,
                &format!(
                    "SELECT string_agg(id || ':' || score, ' ' ORDER BY score DESC, id) FROM lightretriever.lr_search('{table}', $1, k => 8,
                            mode => '{mode}', model => 'tl', sparse_model => 'splade', dense_column => 'emb', sparse_column => 'sparse')"
                ),
            ));
        }
        out.push(one(c, &format!("SELECT string_agg(id::text, ' ') FROM (SELECT id FROM {table} ORDER BY emb <#> lightretriever.lr_encode_query($1, 'tl') LIMIT 5) t")));
        out.push(one(
            c,
            &format!(
                "SELECT string_agg(id || ':' || score, ' ' ORDER BY rank) FROM lightretriever.lr_rerank($1,
                        (SELECT array_agg(id ORDER BY score DESC, id) FROM lightretriever.lr_search('{table}', $1, k => 8, mode => 'dense', model => 'tl', dense_column => 'emb')),
                        '{table}', 'perank')"
            ),
        ));
    }
    out
}
