//! The launcher: one background worker, connected to no database, that keeps a drain worker
//! running in every database with an active auto-encoding (TimescaleDB's scheduler launcher, in
//! small). It tries every database at its start and once a minute after (a drain worker that
//! finds nothing to do ends at once: this catches what no marker announced, e.g. a restored
//! dump's auto-encodings); in between it follows the markers of `databases.rs`. With
//! `lightretriever.workers` = W, a database gets W drain workers (one per encoder, so that W
//! inference processes can work on it at once); `lightretriever.max_drain_workers` caps them all.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use super::databases;

/// A database that accepts connections: (oid, name).
fn connectable_databases() -> BTreeMap<u32, String> {
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
            if (*db).datallowconn && !(*db).datistemplate && (*db).datconnlimit != -2 {
                let name = std::ffi::CStr::from_ptr((*db).datname.data.as_ptr()).to_string_lossy().into_owned();
                out.insert((*db).oid.to_u32(), name);
            }
        }
        pg_sys::heap_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    out
}

/// How often databases without a drain worker are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(60);

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
        // A worker that exits with an error (FATAL past the hard deadline) is started again by
        // the postmaster; one that ends normally (no extension there, SIGTERM) is not.
        .set_restart_time(Some(Duration::from_secs(1)))
        .load_dynamic()
        .ok()
}

#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn lr_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    databases::clear_pauses();
    let mut running: BTreeMap<(u32, i32), DynamicBackgroundWorker> = BTreeMap::new();
    // Databases to try once (all, at the start): their drain worker says whether lightretriever is there.
    let mut untried: BTreeSet<u32> = BackgroundWorker::transaction(connectable_databases).into_keys().collect();
    let mut last_try = Instant::now();
    let mut warned_cap = false;
    let mut warned_slots = false;
    pgrx::log!("lightretriever launcher: started");
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if super::limits::stopping() {
            break;
        }
        let databases = BackgroundWorker::transaction(connectable_databases);
        let marked = databases::marked();
        for gone in marked.iter().filter(|d| !databases.contains_key(d)) {
            databases::unmark(*gone);
        }
        if last_try.elapsed() >= RETRY_EVERY {
            untried.extend(databases.keys().filter(|d| !running.contains_key(&(**d, 0))));
            last_try = Instant::now();
        }
        untried.retain(|d| databases.contains_key(d));
        // Workers of databases that are gone are stopped; ended workers are forgotten (their
        // database is tried again only if marked).
        let stale: Vec<(u32, i32)> = running.keys().filter(|(db, _)| !databases.contains_key(db)).copied().collect();
        for key in stale {
            if let Some(w) = running.remove(&key) {
                let _ = w.terminate();
            }
        }
        running.retain(|_, w| matches!(w.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)));
        let per_database = crate::guc::workers().max(1);
        let mut wanted: Vec<(u32, i32)> = Vec::new();
        for &db in databases.keys() {
            if databases::paused(db) {
                continue;
            }
            if untried.contains(&db) || marked.contains(&db) {
                wanted.push((db, 0));
            }
            // More drain workers once the first one found the extension (it keeps the marker).
            let first_running = running.get(&(db, 0)).is_some_and(|w| w.pid().is_ok());
            if marked.contains(&db) && first_running {
                wanted.extend((1..per_database).map(|slot| (db, slot)));
            }
        }
        // Extra slots of a database that no longer wants them (its first worker ended).
        let unwanted: Vec<(u32, i32)> = running.keys().filter(|k| k.1 > 0 && !wanted.contains(k)).copied().collect();
        for key in unwanted {
            if let Some(w) = running.remove(&key) {
                let _ = w.terminate();
            }
        }
        let cap = crate::guc::max_drain_workers();
        let missing: Vec<(u32, i32)> = wanted.into_iter().filter(|k| !running.contains_key(k)).collect();
        for key in &missing {
            if running.len() >= cap {
                if !warned_cap {
                    pgrx::warning!(
                        "lightretriever launcher: lightretriever.max_drain_workers ({cap}) reached; the queues of some databases wait (raise it, and max_worker_processes)"
                    );
                    warned_cap = true;
                }
                break;
            }
            match start_drain(key.0, &databases[&key.0], key.1) {
                Some(w) => {
                    running.insert(*key, w);
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
    for (_, w) in running {
        let _ = w.terminate();
    }
}
