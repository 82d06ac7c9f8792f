//! Issue 15, items 1 and 2: query tables travel with the database. A streaming replica made by
//! `pg_basebackup -R` from the e2e cluster (loopback sockets only) and a `pg_dump` restored into
//! another database answer lookups, searches and reranks exactly as the primary does, with no
//! rebuild: each writes its own table file from the stored bytes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lr_e2e::*;
use postgres::{Client, NoTls};

fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::env::var("LR_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    Path::new(&dir).join(tool)
}

/// Runs a server program as the postgres user (the tests run as root in CI).
fn as_postgres(program: &Path, args: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    let mut cmd = if root {
        let mut c = Command::new("sudo");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(out.status.success(), "{} {args:?}: {}{}", program.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn primary() -> (String, String) {
    (std::env::var("LR_TEST_PGHOST").expect("LR_TEST_PGHOST"), std::env::var("LR_TEST_PGPORT").unwrap_or_else(|_| "28815".into()))
}

/// A hot standby of the e2e cluster, on the next port up; stopped and removed when dropped.
struct Standby {
    dir: PathBuf,
    port: u16,
}

impl Standby {
    fn start() -> Standby {
        let (host, port) = primary();
        let port_number: u16 = port.parse::<u16>().unwrap() + 1;
        let dir = PathBuf::from(format!("/tmp/lightretriever-standby-{port_number}"));
        if dir.join("data/postmaster.pid").exists() {
            let _ = Command::new("sudo").args(["-u", "postgres", "--"]).arg(pg_bin("pg_ctl")).args(["-D"]).arg(dir.join("data")).args(["stop", "-m", "immediate"]).output();
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        let _ = Command::new("chown").args(["-R", "postgres:"]).arg(&dir).status();
        let data = dir.join("data");
        as_postgres(&pg_bin("pg_basebackup"), &["-h", &host, "-p", &port, "-U", "postgres", "-D", data.to_str().unwrap(), "-R", "-X", "stream", "-c", "fast"]);
        // The primary's table files (and worker state) came with the copy: gone, as on a replica
        // made before the tables were built, so the standby must write its own from the database.
        as_postgres(Path::new("/bin/rm"), &["-rf", data.join("lightretriever").to_str().unwrap()]);
        let options = format!(
            "-p {port_number} -k {} -c listen_addresses='' -c fsync=off -c shared_preload_libraries=lightretriever -c max_worker_processes=40",
            dir.join("sock").display()
        );
        as_postgres(&pg_bin("pg_ctl"), &["-D", data.to_str().unwrap(), "-l", dir.join("server.log").to_str().unwrap(), "-w", "-o", &options, "start"]);
        Standby { dir, port: port_number }
    }

    fn connect(&self, db: &str) -> Client {
        let started = Instant::now();
        loop {
            match Client::connect(&format!("host={} port={} user=postgres dbname={db}", self.dir.join("sock").display(), self.port), NoTls) {
                Ok(c) => return c,
                Err(e) if started.elapsed() > Duration::from_secs(60) => panic!("cannot connect to the standby: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    fn catch_up(&self, primary: &mut Client, standby: &mut Client) {
        let lsn: String = primary.query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get(0);
        let started = Instant::now();
        while !standby.query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn]).unwrap().get::<_, bool>(0) {
            assert!(started.elapsed() < Duration::from_secs(120), "the standby did not replay up to {lsn}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn table_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("data/lightretriever/tables"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".lrt")).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = Command::new("sudo").args(["-u", "postgres", "--"]).arg(pg_bin("pg_ctl")).arg("-D").arg(self.dir.join("data")).args(["stop", "-m", "fast"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const DB: &str = "lr_e2e_replica";
/// The search set-up of `lr_e2e::search_corpus` in a new database.
fn set_up() -> Client {
    let mut c = fresh_database(DB);
    search_corpus(&mut c, "docs");
    c
}

#[test]
fn a_streaming_replica_answers_as_the_primary_and_follows_new_tables() {
    let mut p = set_up();
    let on_primary = search_answers("docs", &mut p);
    let document: String = p.query_one("SELECT lightretriever.lr_encode_document('a river in paris', 'tl')::text", &[]).unwrap().get(0);

    let standby = Standby::start();
    let mut s = standby.connect(DB);
    standby.catch_up(&mut p, &mut s);
    assert!(s.query_one("SELECT pg_is_in_recovery()", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(standby.table_files(), Vec::<String>::new(), "the standby starts without table files");
    assert_eq!(search_answers("docs", &mut s), on_primary, "the standby answers otherwise");
    let files = standby.table_files();
    assert_eq!(files.len(), 1, "the standby wrote its table file from the database: {files:?}");
    // Full-model encoding on the standby: its own encoder workers.
    let on_standby: String = s.query_one("SELECT lightretriever.lr_encode_document('a river in paris', 'tl')::text", &[]).unwrap().get(0);
    assert_eq!(on_standby, document);

    // A new version built on the primary is served by the standby once replayed, in the same
    // session (the catalog decides per statement).
    p.batch_execute("SELECT lightretriever.lr_build_query_table('tl', dtype => 'f16')").unwrap();
    let rebuilt = search_answers("docs", &mut p);
    assert_ne!(rebuilt[0], on_primary[0], "an f16 table gives other vectors: the check below would prove nothing");
    standby.catch_up(&mut p, &mut s);
    assert_eq!(search_answers("docs", &mut s), rebuilt, "the standby does not serve the new version");

    // What writes is refused, before it starts; no drain worker or launcher runs on a standby.
    let (msg, hint) = error_of(&mut s, "SELECT lightretriever.lr_build_query_table('tl')");
    assert_eq!(msg, "lightretriever: a standby cannot build query tables");
    assert!(hint.unwrap().contains("primary"));
    let workers: Vec<String> = s
        .query("SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'lightretriever%' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!workers.is_empty() && workers.iter().all(|w| w == "lightretriever encoder"), "{workers:?}");

    // Auto-encoding: the primary's workers encode, the standby replays the vectors.
    p.batch_execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT i, 'note ' || i || ' about rivers' FROM generate_series(1, 20) i;
         SELECT lightretriever.lr_enable_auto_encoding('notes', 'body', 'minilm');",
    )
    .unwrap();
    wait_for_encoding(&mut p, "notes", 180);
    standby.catch_up(&mut p, &mut s);
    let encoded: i64 = s.query_one("SELECT count(body_embedding) FROM notes", &[]).unwrap().get(0);
    assert_eq!(encoded, 20);
    let workers: i64 = s.query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type <> 'lightretriever encoder' AND backend_type LIKE 'lightretriever%'", &[]).unwrap().get(0);
    assert_eq!(workers, 0, "a drain worker or launcher runs on the standby");
}

#[test]
fn a_restored_dump_answers_as_the_original_without_a_rebuild() {
    let mut p = set_up();
    let original = search_answers("docs", &mut p);
    let (host, port) = primary();
    let dump = std::env::temp_dir().join("lr_e2e_replica.dump");
    let status = Command::new(pg_bin("pg_dump"))
        .args(["-h", &host, "-p", &port, "-U", "postgres", "-Fc", "-f"])
        .arg(&dump)
        .arg(DB)
        .status()
        .unwrap();
    assert!(status.success());
    let mut admin = fresh_connection("postgres");
    admin.batch_execute("DROP DATABASE IF EXISTS lr_e2e_restored WITH (FORCE)").unwrap();
    admin.batch_execute("CREATE DATABASE lr_e2e_restored").unwrap();
    let out = Command::new(pg_bin("pg_restore")).args(["-h", &host, "-p", &port, "-U", "postgres", "-d", "lr_e2e_restored"]).arg(&dump).output().unwrap();
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&dump);
    let mut r = fresh_connection("lr_e2e_restored");
    let counts: (i64, i64, i64) = {
        let row = r
            .query_one(
                "SELECT (SELECT count(*) FROM lightretriever.lr_query_tables), (SELECT count(*) FROM lightretriever.lr_query_table_chunks),
                        (SELECT count(*) FROM lightretriever.lr_sparse_query_weights)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert!(counts.0 == 1 && counts.1 > 0 && counts.2 == 1, "the dump lost tables or weights: {counts:?}");
    assert_eq!(search_answers("docs", &mut r), original, "the restored database answers otherwise");
    let database: u32 = r.query_one("SELECT oid::int8 FROM pg_database WHERE datname = current_database()", &[]).unwrap().get::<_, i64>(0) as u32;
    let written: i64 = r
        .query_one("SELECT count(*) FROM pg_ls_dir('lightretriever/tables') f WHERE f LIKE $1", &[&format!("db{database}-tl-%.lrt")])
        .unwrap()
        .get(0);
    assert_eq!(written, 1, "the restored database wrote its own table file");
}
