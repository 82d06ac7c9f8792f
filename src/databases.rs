//! Which databases want a drain worker, as files under `$PGDATA/lightretriever/databases/` that
//! the launcher, the drain workers and every backend read (the launcher is connected to no
//! database, so it cannot read any database's catalog):
//! - `<oid>`: the database has (or may have) an active auto-encoding. Written after the commit of
//!   `CREATE EXTENSION lightretriever`, of an enabling or resuming, and of `CREATE DATABASE` (a
//!   template may carry the extension); removed by the database's first drain worker when it
//!   finds nothing active there, and by the launcher when the database is gone.
//! - `<oid>.<pid>.pause`: backend `pid` runs a command that needs the database without other
//!   sessions (`DROP`, `ALTER DATABASE … RENAME / SET TABLESPACE`, `CREATE DATABASE … TEMPLATE`);
//!   no drain worker runs there while that backend lives and the file is there (a backend that
//!   ends with FATAL leaves the file, which then counts for nothing).
//! - `<oid>-<slot>-<pid>.pid`: a drain worker, for that command to stop it; its content is when
//!   it last encoded rows (unix seconds), for the launcher to pick an idle one when databases
//!   wait for a slot.
//!
//! Why files and not shared memory: they outlive a launcher restart, and a database's marker
//! must be written by a backend connected to another database (`CREATE DATABASE`).
//!
//! The marker is removed *before* a drain worker looks for active auto-encodings and written
//! *after* a commit, so a marker written by a concurrent enabling is never lost: either the look
//! sees the commit, or the marker comes after the removal and the launcher starts a worker again.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgrx::prelude::*;


fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn dir() -> PathBuf {
    PathBuf::from("lightretriever/databases")
}

fn marker(database: u32) -> PathBuf {
    dir().join(database.to_string())
}

/// The files of the directory whose names `parse` accepts, with what it made of them.
fn entries<T>(parse: impl Fn(&str) -> Option<T>) -> Vec<(PathBuf, T)> {
    let Ok(read) = std::fs::read_dir(dir()) else { return Vec::new() };
    read.flatten().filter_map(|e| Some((e.path(), parse(e.file_name().to_str()?)?))).collect()
}

pub fn mark(database: u32) {
    let _ = std::fs::create_dir_all(dir());
    let _ = std::fs::write(marker(database), b"");
}

pub fn unmark(database: u32) {
    let _ = std::fs::remove_file(marker(database));
}

/// The databases with a marker.
pub fn marked() -> BTreeSet<u32> {
    entries(|name| name.parse::<u32>().ok()).into_iter().map(|(_, db)| db).collect()
}

/// Marks `database` once the current transaction commits.
pub fn mark_at_commit(database: pg_sys::Oid) {
    let database = database.to_u32();
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || mark(database));
}

/// True when `pid` is a live backend or background worker of this server.
pub fn live(pid: i32) -> bool {
    pid > 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}

/// Whether a live backend holds a pause on `database` (pauses of ended backends are removed).
pub fn paused(database: u32) -> bool {
    let mut held = false;
    for (path, (db, pid)) in entries(parse_pause) {
        if db != database {
            continue;
        }
        if live(pid) {
            held = true;
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
    held
}

fn parse_pause(name: &str) -> Option<(u32, i32)> {
    let (db, rest) = name.strip_suffix(".pause")?.split_once('.')?;
    Some((db.parse().ok()?, rest.parse().ok()?))
}

/// `<oid>-<slot>-<pid>.pid` → (oid, slot, pid).
fn parse_pid_file(name: &str) -> Option<(u32, i32, i32)> {
    let mut parts = name.strip_suffix(".pid")?.splitn(3, '-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A drain worker's file (see the module comment), removed when it ends normally; one left by
/// a worker that died is removed by the launcher once that pid is gone.
pub struct PidFile {
    path: PathBuf,
    written: Instant,
}

impl PidFile {
    pub fn write(database: u32, slot: i32) -> PidFile {
        let path = dir().join(format!("{database}-{slot}-{}.pid", unsafe { pg_sys::MyProcPid }));
        let _ = std::fs::create_dir_all(dir());
        let _ = std::fs::write(&path, "0");
        PidFile { path, written: Instant::now() }
    }

    /// Rows were encoded just now (written at most every few seconds).
    pub fn worked(&mut self) {
        if self.written.elapsed() >= Duration::from_secs(5) {
            let _ = std::fs::write(&self.path, unix_now().to_string());
            self.written = Instant::now();
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// When each database's drain workers last encoded rows (unix seconds; 0 = not yet), from the
/// files of live workers; files of ended ones are removed.
pub fn last_work() -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for (path, (db, _, pid)) in entries(parse_pid_file) {
        if !live(pid) {
            let _ = std::fs::remove_file(path);
            continue;
        }
        let at = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(0);
        let e = out.entry(db).or_insert(0);
        *e = (*e).max(at);
    }
    out
}

/// Everything kept for a database that is gone: its marker, pauses and the drain workers'
/// stall records (`lightretriever/drain-<oid>-<slot>.*`).
pub fn forget(database: u32) {
    unmark(database);
    for (path, (db, _)) in entries(parse_pause) {
        if db == database {
            let _ = std::fs::remove_file(path);
        }
    }
    let prefix = format!("drain-{database}-");
    if let Ok(read) = std::fs::read_dir("lightretriever") {
        for e in read.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// While alive, no drain worker runs in a database: written before a command that needs the
/// database to itself, removed when the command ends (or worthless once this backend is gone).
pub struct Pause(PathBuf);

impl Pause {
    /// Pauses `database` and stops its drain workers (SIGTERM: they leave their batch queued),
    /// waiting until they are gone, at most `patience`.
    pub fn stop_drains(database: pg_sys::Oid, patience: Duration) -> Pause {
        let oid = database.to_u32();
        let _ = std::fs::create_dir_all(dir());
        let path = dir().join(format!("{oid}.{}.pause", unsafe { pg_sys::MyProcPid }));
        let _ = std::fs::write(&path, b"");
        let pause = Pause(path); // removed even if the wait below is cancelled
        // Only a drain worker of this server connected to that database: a file left by a
        // crash may name a pid now used by someone else's session.
        let is_drain_of = |pid: i32| unsafe {
            let proc_ = pg_sys::BackendPidGetProc(pid);
            let kind = pg_sys::GetBackgroundWorkerTypeByPid(pid);
            !proc_.is_null()
                && (*proc_).databaseId == database
                && !kind.is_null()
                && CStr::from_ptr(kind).to_bytes() == b"lightretriever drain"
        };
        let drains: Vec<i32> = entries(parse_pid_file)
            .into_iter()
            .filter(|(_, (db, _, pid))| *db == oid && is_drain_of(*pid))
            .map(|(_, (_, _, pid))| pid)
            .collect();
        for &pid in &drains {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let started = Instant::now();
        while drains.iter().any(|&p| is_drain_of(p)) && started.elapsed() < patience {
            pgrx::check_for_interrupts!();
            std::thread::sleep(Duration::from_millis(10));
        }
        pause
    }
}

impl Pause {
    /// Keeps the pause until the current transaction ends (commit or abort) rather than until
    /// this value is dropped: the locks a command took are held until then.
    pub fn until_transaction_end(self) {
        let path = self.0.clone();
        std::mem::forget(self);
        for event in [pgrx::PgXactCallbackEvent::Commit, pgrx::PgXactCallbackEvent::Abort] {
            let path = path.clone();
            pgrx::register_xact_callback(event, move || {
                let _ = std::fs::remove_file(&path);
            });
        }
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
