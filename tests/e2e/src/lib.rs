//! Connecting to the throwaway cluster started by scripts/e2e.sh (LR_TEST_PGHOST, LR_TEST_PGPORT).

pub use lr_testkit::*;
use postgres::{Client, NoTls};

pub const DENSE_MODEL: &str = "minilm";

/// A new connection (a new backend) to an existing database.
pub fn fresh_connection(db: &str) -> Client {
    connect_to(db)
}

fn connect_to(db: &str) -> Client {
    let host = std::env::var("LR_TEST_PGHOST").expect("LR_TEST_PGHOST is set by scripts/e2e.sh (run `make test-e2e`)");
    let port = std::env::var("LR_TEST_PGPORT").unwrap_or_else(|_| "28815".into());
    Client::connect(&format!("host={host} port={port} user=postgres dbname={db}"), NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster at {host}:{port}: {e}"))
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
