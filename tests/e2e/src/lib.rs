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
