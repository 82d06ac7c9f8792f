//! Which databases want a drain worker, as files under `$PGDATA/lightretriever/databases/` that
//! the launcher, the drain workers and every backend read (the launcher is connected to no
//! database, so it cannot read any database's catalog):
//! - `<oid>`: the database has (or may have) lightretriever installed. Written after the commit
//!   of `CREATE EXTENSION lightretriever`, of an auto-encoding's enabling and of `CREATE
//!   DATABASE` (a template may carry the extension); removed by the database's first drain worker
//!   when it finds no extension there, and by the launcher when the database is gone.
//! - `<oid>.pause`: a command that needs the database without other sessions (`DROP`, `ALTER
//!   DATABASE … RENAME / SET TABLESPACE`, `CREATE DATABASE … TEMPLATE`) is running; no drain
//!   worker starts there until it ends.
//! - `<oid>-<slot>.pid`: a drain worker's process id, for that command to stop it.
//!
//! Why files and not shared memory: they outlive a launcher restart, and a database's
//! marker must be written by a backend connected to another database (`CREATE DATABASE`).
//!
//! The marker is removed *before* a drain worker checks for the extension and written *after*
//! a commit, so a marker written by a concurrent `CREATE EXTENSION` is never lost: either the
//! check sees the commit, or the marker comes after the removal and the launcher starts the
//! worker again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgrx::prelude::*;

fn dir() -> PathBuf {
    PathBuf::from("lightretriever/databases")
}

fn marker(database: u32) -> PathBuf {
    dir().join(database.to_string())
}

fn pause_file(database: u32) -> PathBuf {
    dir().join(format!("{database}.pause"))
}

fn pid_file(database: u32, slot: i32) -> PathBuf {
    dir().join(format!("{database}-{slot}.pid"))
}

pub(super) fn mark(database: u32) {
    let _ = std::fs::create_dir_all(dir());
    let _ = std::fs::write(marker(database), b"");
}

pub(super) fn unmark(database: u32) {
    let _ = std::fs::remove_file(marker(database));
}

/// The databases with a marker.
pub(super) fn marked() -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(dir()) else { return BTreeSet::new() };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).collect()
}

/// Marks the current transaction's database (or `database`) once the transaction commits.
pub fn mark_at_commit(database: pg_sys::Oid) {
    let database = database.to_u32();
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || mark(database));
}

pub(super) fn paused(database: u32) -> bool {
    pause_file(database).exists()
}

/// Every pause left by a backend that died mid-command (the launcher's start).
pub(super) fn clear_pauses() {
    let Ok(entries) = std::fs::read_dir(dir()) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with(".pause") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A drain worker's process id file, removed when it ends.
pub(super) struct PidFile(PathBuf);

impl PidFile {
    pub(super) fn write(database: u32, slot: i32) -> PidFile {
        let path = pid_file(database, slot);
        let _ = std::fs::create_dir_all(dir());
        let _ = std::fs::write(&path, unsafe { pg_sys::MyProcPid }.to_string());
        PidFile(path)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// While alive, no drain worker runs in a database: written before a command that needs the
/// database to itself, removed when the command ends, however it ends.
pub struct Pause(PathBuf);

/// How long a command waits for a database's drain workers to end (a batch inside the table
/// owner's code ends within `lightretriever.statement_timeout`).
const STOP_PATIENCE: Duration = Duration::from_secs(30);

impl Pause {
    /// Pauses `database` and stops its drain workers (SIGTERM: they leave their batch queued),
    /// waiting until they are gone.
    pub fn stop_drains(database: pg_sys::Oid) -> Pause {
        let oid = database.to_u32();
        let _ = std::fs::create_dir_all(dir());
        let path = pause_file(oid);
        let _ = std::fs::write(&path, unsafe { pg_sys::MyProcPid }.to_string());
        let pause = Pause(path); // removed even if the wait below is cancelled
        let prefix = format!("{oid}-");
        let pids: Vec<i32> = std::fs::read_dir(dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // Only a live process of this server connected to that database (a pid file left by a
        // crash may name a reused pid).
        let is_drain_of = |pid: i32| unsafe {
            let proc_ = pg_sys::BackendPidGetProc(pid);
            !proc_.is_null() && (*proc_).databaseId == database
        };
        let live: Vec<i32> = pids.into_iter().filter(|&p| is_drain_of(p)).collect();
        for &pid in &live {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let started = Instant::now();
        while live.iter().any(|&p| is_drain_of(p)) && started.elapsed() < STOP_PATIENCE {
            pgrx::check_for_interrupts!();
            std::thread::sleep(Duration::from_millis(10));
        }
        pause
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
