//! The launcher: one background worker, connected to no database, that keeps a drain worker
//! running in every database with an active auto-encoding (TimescaleDB's scheduler launcher, in
//! small). It tries every database at its start and once a minute after (a drain worker that
//! finds nothing to do ends at once: this catches what no marker announced, e.g. a restored
//! dump's auto-encodings); in between it follows the markers of `databases.rs`. With
//! `lightretriever.workers` = W, a database gets W drain workers (one per encoder, so that W
//! inference processes can work on it at once); `lightretriever.max_drain_workers` caps them all.
//!
//! Drain workers are never restarted by the postmaster: the launcher starts them again while
//! their database is marked, backing off (1 s doubling to 1 min) when they keep ending soon
//! after they start (a database whose settings make every transaction fail, a table whose code
//! stalls the worker past its hard deadline). First workers of every database come before
//! anyone's extra ones, and when databases wait for a slot the longest-idle database's worker
//! gives its slot up (its database takes a turn later).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use crate::databases;
use super::limits::unix_now;

/// How often databases without a drain worker are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(60);
/// A worker that ends sooner than this after its start doubles its database's back-off.
const SHORT_LIFE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A database's worker gives its slot to a waiting database once it has encoded nothing this long.
const IDLE_FOR_TURN: u64 = 30;

/// Every database: oid → (name, accepts connections and is not a template).
fn databases() -> BTreeMap<u32, (String, bool)> {
    // pg_database is a shared catalog, scanned directly: with no database there is no SQL.
    let mut out = BTreeMap::new();
    unsafe {
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let db = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            // -2: a database whose DROP was interrupted (DATCONNLIMIT_INVALID_DB).
            let connectable = (*db).datallowconn && !(*db).datistemplate && (*db).datconnlimit != -2;
            let name = std::ffi::CStr::from_ptr((*db).datname.data.as_ptr()).to_string_lossy().into_owned();
            out.insert((*db).oid.to_u32(), (name, connectable));
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    out
}

fn start_drain(database: u32, name: &str, slot: i32) -> Option<DynamicBackgroundWorker> {
    let title: String = format!("lightretriever drain {slot} for database {name}").chars().take(90).collect();
    BackgroundWorkerBuilder::new(&title)
        .set_type("lightretriever drain")
        .set_library("lightretriever")
        .set_function("lr_drain_worker_main")
        .set_argument(Some(pg_sys::Datum::from(database as usize)))
        .set_extra(&format!("{slot} {}", unsafe { pg_sys::MyProcPid }))
        .enable_spi_access()
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .set_restart_time(None)
        .load_dynamic()
        .ok()
}

struct Running {
    worker: DynamicBackgroundWorker,
    started: Instant,
}

/// When a database's next drain worker may start.
#[derive(Default)]
struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
}

impl Backoff {
    fn ready(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    fn ended(&mut self, lived: Duration) {
        self.delay = if lived < SHORT_LIFE { (self.delay * 2).clamp(Duration::from_secs(1), MAX_BACKOFF) } else { Duration::ZERO };
        self.not_before = Some(Instant::now() + self.delay);
    }
}

#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn lr_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut running: BTreeMap<(u32, i32), Running> = BTreeMap::new();
    let mut backoff: BTreeMap<u32, Backoff> = BTreeMap::new();
    let mut last_started: BTreeMap<u32, Instant> = BTreeMap::new();
    // Databases to try once (all, at the start): their drain worker says whether there is work.
    let mut untried: BTreeSet<u32> = BackgroundWorker::transaction(databases).into_keys().collect();
    let mut last_try = Instant::now();
    let (mut warned_cap, mut warned_slots) = (false, false);
    pgrx::log!("lightretriever launcher: started");
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if super::limits::stopping() {
            break;
        }
        // Markers first: one written after a CREATE DATABASE committed is then read with a
        // catalog that has the database.
        let marked = databases::marked();
        let all = BackgroundWorker::transaction(databases);
        for gone in marked.iter().filter(|d| !all.contains_key(d)) {
            databases::forget(*gone);
        }
        let connectable = |db: &u32| all.get(db).is_some_and(|(_, c)| *c);
        if last_try.elapsed() >= RETRY_EVERY {
            untried.extend(all.keys().filter(|d| !running.contains_key(&(**d, 0))));
            last_try = Instant::now();
        }
        untried.retain(|d| connectable(d));
        // Workers of databases gone (or closed to connections) are stopped; ended ones forgotten.
        let closed: Vec<(u32, i32)> = running.keys().filter(|(db, _)| !connectable(db)).copied().collect();
        stop(&mut running, closed);
        running.retain(|&(db, _), r| {
            let alive = matches!(r.worker.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted));
            if !alive {
                backoff.entry(db).or_default().ended(r.started.elapsed());
            }
            alive
        });
        let per_database = crate::guc::workers().max(1);
        let startable = |db: &u32| connectable(db) && !databases::paused(*db) && backoff.get(db).is_none_or(Backoff::ready);
        // First workers of every database, the one that waited longest first (a database whose
        // worker just gave its slot up goes last), then the extra ones.
        let mut wanted: Vec<(u32, i32)> =
            all.keys().filter(|db| (untried.contains(db) || marked.contains(db)) && startable(db)).map(|&db| (db, 0)).collect();
        wanted.sort_by_key(|(db, _)| last_started.get(db).copied());
        for &db in all.keys() {
            let first_running = running.get(&(db, 0)).is_some_and(|r| r.worker.pid().is_ok());
            if marked.contains(&db) && first_running {
                wanted.extend((1..per_database).map(|slot| (db, slot)));
            }
        }
        // Extra slots of a database that no longer wants them (its first worker ended).
        let unwanted: Vec<(u32, i32)> = running.keys().filter(|k| k.1 > 0 && !wanted.contains(k)).copied().collect();
        stop(&mut running, unwanted);
        let cap = crate::guc::max_drain_workers();
        let missing: Vec<(u32, i32)> = wanted.into_iter().filter(|k| !running.contains_key(k)).collect();
        for key in &missing {
            if running.len() >= cap {
                if !warned_cap {
                    pgrx::warning!(
                        "lightretriever launcher: lightretriever.max_drain_workers ({cap}) reached; databases take turns (raise it, and max_worker_processes)"
                    );
                    warned_cap = true;
                }
                // A marked database waits: the longest-idle database's first worker steps aside.
                if key.1 == 0 && marked.contains(&key.0) {
                    give_a_turn(&mut running);
                }
                break;
            }
            match start_drain(key.0, &all[&key.0].0, key.1) {
                Some(worker) => {
                    running.insert(*key, Running { worker, started: Instant::now() });
                    last_started.insert(key.0, Instant::now());
                    untried.remove(&key.0);
                }
                None => {
                    if !warned_slots {
                        pgrx::warning!(
                            "lightretriever launcher: no background worker slot for a drain worker (max_worker_processes); retrying"
                        );
                        warned_slots = true;
                    }
                    break;
                }
            }
        }
        // Woken early when a drain worker starts or ends (bgw_notify_pid).
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
    for (_, r) in running {
        let _ = r.worker.terminate();
    }
    // Exit code 1: a launcher stopped by pg_terminate_backend is started again (at shutdown the
    // postmaster starts nothing).
    unsafe { pg_sys::proc_exit(1) };
}

/// Stops the first worker of the database that has encoded nothing for longest (at least
/// `IDLE_FOR_TURN` seconds, and running that long), so that a waiting database gets its slot.
fn give_a_turn(running: &mut BTreeMap<(u32, i32), Running>) {
    let last = databases::last_work();
    let now = unix_now();
    let idle = running
        .iter()
        .filter(|((_, slot), r)| *slot == 0 && r.started.elapsed() >= Duration::from_secs(IDLE_FOR_TURN))
        .map(|(key, _)| (*key, last.get(&key.0).copied().unwrap_or(0)))
        .filter(|(_, at)| now.saturating_sub(*at) >= IDLE_FOR_TURN)
        .min_by_key(|(_, at)| *at);
    stop(running, idle.map(|(key, _)| key));
}

/// Stops the workers `keys` (SIGTERM from the postmaster) and forgets them.
fn stop(running: &mut BTreeMap<(u32, i32), Running>, keys: impl IntoIterator<Item = (u32, i32)>) {
    for key in keys {
        if let Some(r) = running.remove(&key) {
            let _ = r.worker.terminate();
        }
    }
}
