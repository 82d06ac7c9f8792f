//! Every database is drained, with no setting (issue 14, item 5): the launcher starts a drain
//! worker in each database with an active auto-encoding — databases made before or after the
//! server started, copies of a template — and commands that need a database to themselves
//! (DROP, RENAME, CREATE DATABASE … TEMPLATE) stop its drain worker first instead of failing
//! with "being accessed by other users".

use std::time::{Duration, Instant};

use lr_e2e::*;
use postgres::Client;

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The drain workers connected to `db`.
fn drain_pids(c: &mut Client, db: &str) -> Vec<i32> {
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'lightretriever drain' AND datname = $1 ORDER BY pid",
        &[&db],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A database with the extension and `docs(id, body)` auto-encoded, `rows` rows in it.
fn database_with_docs(name: &str, rows: i32) -> Client {
    let mut c = fresh_database(name);
    c.batch_execute(&format!(
        "CREATE TABLE docs (id int PRIMARY KEY, body text);
         INSERT INTO docs SELECT i, 'document ' || i || ' of {name} about library catalogues' FROM generate_series(1, {rows}) i;
         SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm', batch_size => 16)"
    ))
    .unwrap();
    c
}

fn drop_database(name: &str) {
    fresh_connection("postgres").batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
}

#[test]
fn two_databases_are_drained_at_once_with_no_setting() {
    let mut one = database_with_docs("lr_db_one", 120);
    let mut two = database_with_docs("lr_db_two", 80);
    // Rows written after the enabling, in both.
    one.batch_execute("INSERT INTO docs VALUES (1001, 'a later row of the first database')").unwrap();
    two.batch_execute("UPDATE docs SET body = 'changed text of a row in the second database' WHERE id = 1").unwrap();
    wait_for_encoding(&mut one, "docs", 300);
    wait_for_encoding(&mut two, "docs", 300);
    for c in [&mut one, &mut two] {
        assert_eq!(count(c, "SELECT count(*) FROM docs WHERE body_embedding IS NULL"), 0);
        assert_eq!(wrong_vectors(c, "docs", "id", "body", "body_embedding"), 0);
    }
    // One drain worker in each (lightretriever.workers = 1), none in a database without the extension.
    let mut admin = fresh_connection("postgres");
    assert_eq!(drain_pids(&mut admin, "lr_db_one").len(), 1);
    assert_eq!(drain_pids(&mut admin, "lr_db_two").len(), 1);
    assert_eq!(drain_pids(&mut admin, "template1").len(), 0);
    drop(one);
    drop(two);
    drop_database("lr_db_one");
    drop_database("lr_db_two");
}

#[test]
fn rename_template_copy_and_drop_stop_the_drain_worker_instead_of_failing() {
    let mut c = database_with_docs("lr_db_src", 40);
    wait_for_encoding(&mut c, "docs", 300);
    drop(c);
    let mut admin = fresh_connection("postgres");
    eventually(30, "no drain worker in lr_db_src", || drain_pids(&mut admin, "lr_db_src").len() == 1);
    admin.batch_execute("DROP DATABASE IF EXISTS lr_db_copy").unwrap();
    admin.batch_execute("DROP DATABASE IF EXISTS lr_db_renamed").unwrap();
    // CREATE DATABASE … TEMPLATE needs the template without other sessions: its drain worker
    // steps aside, and comes back afterwards.
    admin.batch_execute("CREATE DATABASE lr_db_copy TEMPLATE lr_db_src").unwrap();
    eventually(30, "the template's drain worker is back", || drain_pids(&mut admin, "lr_db_src").len() == 1);
    // The copy carries the extension and the auto-encoding: it gets a drain worker of its own.
    let mut copy = fresh_connection("lr_db_copy");
    copy.batch_execute("INSERT INTO docs VALUES (500, 'a row written into the copy of the template')").unwrap();
    wait_for_encoding(&mut copy, "docs", 120);
    assert_eq!(count(&mut copy, "SELECT count(*) FROM docs WHERE body_embedding IS NULL"), 0);
    assert_eq!(wrong_vectors(&mut copy, "docs", "id", "body", "body_embedding"), 0);
    drop(copy);
    // RENAME needs the database without other sessions too.
    admin.batch_execute("ALTER DATABASE lr_db_src RENAME TO lr_db_renamed").unwrap();
    eventually(30, "the renamed database's drain worker", || drain_pids(&mut admin, "lr_db_renamed").len() == 1);
    let mut renamed = fresh_connection("lr_db_renamed");
    renamed.batch_execute("UPDATE docs SET body = 'text changed after the rename' WHERE id = 2").unwrap();
    wait_for_encoding(&mut renamed, "docs", 120);
    assert_eq!(wrong_vectors(&mut renamed, "docs", "id", "body", "body_embedding"), 0);
    drop(renamed);
    // A plain DROP DATABASE (no FORCE) succeeds while the drain worker runs.
    let started = Instant::now();
    admin.batch_execute("DROP DATABASE lr_db_renamed").unwrap();
    admin.batch_execute("DROP DATABASE lr_db_copy").unwrap();
    // Not a speed check: a hang guard (the drain worker stops within its poll interval; the
    // hook would give up waiting after 30 s and PostgreSQL's own wait is 5 s).
    assert!(started.elapsed() < Duration::from_secs(90), "the drops hung: {:?}", started.elapsed());
    eventually(10, "drain workers of dropped databases", || {
        count(&mut admin, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'lightretriever drain' AND datid IS NOT NULL AND datname IS NULL") == 0
    });
}

#[test]
fn only_the_owner_of_a_database_can_make_its_drain_worker_step_aside() {
    let mut c = database_with_docs("lr_db_guarded", 10);
    wait_for_encoding(&mut c, "docs", 120);
    drop(c);
    let mut admin = fresh_connection("postgres");
    eventually(30, "a drain worker in lr_db_guarded", || drain_pids(&mut admin, "lr_db_guarded").len() == 1);
    let before = drain_pids(&mut admin, "lr_db_guarded");
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS lr_db_stranger;
             CREATE ROLE lr_db_stranger LOGIN CREATEDB;
             SET ROLE lr_db_stranger",
        )
        .unwrap();
    // Commands that fail for want of ownership leave the drain worker where it is.
    for sql in [
        "DROP DATABASE lr_db_guarded",
        "ALTER DATABASE lr_db_guarded RENAME TO lr_db_taken",
        "CREATE DATABASE lr_db_stolen TEMPLATE lr_db_guarded",
    ] {
        let (message, _) = error_of(&mut admin, sql);
        assert!(message.contains("must be owner") || message.contains("permission denied"), "{sql}: {message}");
    }
    admin.batch_execute("RESET ROLE").unwrap();
    assert_eq!(drain_pids(&mut admin, "lr_db_guarded"), before, "a stranger's command stopped the drain worker");
    drop_database("lr_db_guarded");
    admin.batch_execute("DROP ROLE lr_db_stranger").unwrap();
}

#[test]
fn drop_extension_ends_the_drain_worker_and_a_new_enabling_brings_one_back() {
    let mut c = database_with_docs("lr_db_cycle", 20);
    wait_for_encoding(&mut c, "docs", 120);
    let mut admin = fresh_connection("postgres");
    assert_eq!(drain_pids(&mut admin, "lr_db_cycle").len(), 1);
    c.batch_execute("DROP EXTENSION lightretriever CASCADE").unwrap();
    eventually(15, "the drain worker ends with the extension", || drain_pids(&mut admin, "lr_db_cycle").is_empty());
    // Back, in one transaction with the enabling (the marker is written at commit).
    let dir = dense_model_dir().to_string_lossy().into_owned();
    c.batch_execute(&format!(
        "BEGIN;
         CREATE EXTENSION lightretriever;
         SELECT lightretriever.lr_register_model('minilm', '{dir}');
         ALTER TABLE docs DROP COLUMN body_embedding;
         SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm');
         COMMIT"
    ))
    .unwrap();
    wait_for_encoding(&mut c, "docs", 120);
    assert_eq!(count(&mut c, "SELECT count(*) FROM docs WHERE body_embedding IS NULL"), 0);
    assert_eq!(drain_pids(&mut admin, "lr_db_cycle").len(), 1);
    drop(c);
    drop_database("lr_db_cycle");
}

#[test]
fn a_database_idle_for_a_while_lets_its_drain_worker_go_and_resuming_brings_it_back() {
    let mut c = database_with_docs("lr_db_idle", 10);
    wait_for_encoding(&mut c, "docs", 120);
    let mut admin = fresh_connection("postgres");
    assert_eq!(drain_pids(&mut admin, "lr_db_idle").len(), 1);
    // Its only auto-encoding paused: after the idle grace (30 s) the slot is given back.
    c.batch_execute("SELECT lightretriever.lr_pause_auto_encoding('docs')").unwrap();
    eventually(60, "the idle database's drain worker ends", || drain_pids(&mut admin, "lr_db_idle").is_empty());
    c.batch_execute("INSERT INTO docs VALUES (100, 'queued while the table was paused')").unwrap();
    c.batch_execute("SELECT lightretriever.lr_resume_auto_encoding('docs')").unwrap();
    wait_for_encoding(&mut c, "docs", 120);
    assert_eq!(count(&mut c, "SELECT count(*) FROM docs WHERE body_embedding IS NULL"), 0);
    drop(c);
    drop_database("lr_db_idle");
}

#[test]
fn a_database_owners_settings_neither_stop_nor_multiply_its_drain_workers() {
    let mut c = database_with_docs("lr_db_settings", 10);
    wait_for_encoding(&mut c, "docs", 120);
    drop(c);
    // Settings every new session of the database gets, the drain worker's included: with
    // read-only transactions no batch could be claimed, with exit_on_error an error would end
    // the worker (and a restarted one too, again and again).
    let mut admin = fresh_connection("postgres");
    admin
        .batch_execute(
            "ALTER DATABASE lr_db_settings SET default_transaction_read_only = on;
             ALTER DATABASE lr_db_settings SET exit_on_error = on;
             ALTER DATABASE lr_db_settings SET statement_timeout = '1ms'",
        )
        .unwrap();
    // A new drain worker (the settings apply from its start): pause it out and back.
    admin.batch_execute("ALTER DATABASE lr_db_settings RENAME TO lr_db_settings2").unwrap();
    admin.batch_execute("ALTER DATABASE lr_db_settings2 RENAME TO lr_db_settings").unwrap();
    let mut c = fresh_connection("lr_db_settings");
    c.batch_execute("SET default_transaction_read_only = off; SET statement_timeout = 0").unwrap();
    c.batch_execute("INSERT INTO docs SELECT i, 'row ' || i || ' written after the settings' FROM generate_series(100, 140) i").unwrap();
    wait_for_encoding(&mut c, "docs", 120);
    assert_eq!(count(&mut c, "SELECT count(*) FROM docs WHERE body_embedding IS NULL"), 0);
    assert_eq!(drain_pids(&mut admin, "lr_db_settings").len(), 1, "drain workers multiplied");
    drop(c);
    drop_database("lr_db_settings");
}

#[test]
fn a_command_ended_by_fatal_leaves_no_pause_behind() {
    let mut c = database_with_docs("lr_db_fatal", 5);
    wait_for_encoding(&mut c, "docs", 120);
    // c stays connected: a DROP DATABASE of lr_db_fatal waits for it (5 s), and is terminated
    // meanwhile, with FATAL (no unwinding in the dropping backend).
    let mut dropper = fresh_connection("postgres");
    let pid: i32 = dropper.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let drop_thread = std::thread::spawn(move || dropper.batch_execute("DROP DATABASE lr_db_fatal").is_err());
    let mut admin = fresh_connection("postgres");
    eventually(10, "the DROP is waiting", || {
        count(&mut admin, &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND query LIKE 'DROP DATABASE%'")) == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    assert!(drop_thread.join().unwrap(), "the terminated DROP failed");
    // The database lives on, and its rows are encoded again.
    c.batch_execute("INSERT INTO docs VALUES (50, 'written after the terminated drop')").unwrap();
    wait_for_encoding(&mut c, "docs", 60);
    assert_eq!(count(&mut c, "SELECT count(*) FROM docs WHERE body_embedding IS NULL"), 0);
    drop(c);
    drop_database("lr_db_fatal");
}
