//! Bounds on a user's table: statement timeout, hard deadline, the batch marker that survives
//! a die, and the per-table back-off after a stall.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pgrx::prelude::*;

use crate::auto::AutoEncoding;
use crate::security::as_owner;
use crate::spi::in_subtransaction;

// utils/timeout.h, which pgrx does not bind: `TimeoutId` STATEMENT_TIMEOUT is 3 in PostgreSQL
// 15 to 18 (after STARTUP_PACKET_TIMEOUT, DEADLOCK_TIMEOUT, LOCK_TIMEOUT); USER_TIMEOUT, the
// first free one, is 12 (13 from 17, which added TRANSACTION_TIMEOUT; 18 is as 17).
pub(super) const STATEMENT_TIMEOUT: i32 = 3;
#[cfg(not(any(feature = "pg17", feature = "pg18")))]
pub(super) const USER_TIMEOUT: i32 = 12;
#[cfg(any(feature = "pg17", feature = "pg18"))]
pub(super) const USER_TIMEOUT: i32 = 13;
extern "C-unwind" {
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
    pub(super) fn RegisterTimeout(id: i32, handler: Option<unsafe extern "C-unwind" fn()>) -> i32;
}

/// The worker's own timeout for the hard deadline (-1 until registered).
pub(super) static HARD_DEADLINE: AtomicI32 = AtomicI32::new(-1);

/// Past the hard deadline the owner's code has caught the statement timeout's cancel (plpgsql
/// can): a die request cannot be caught — the worker exits with FATAL (no reset of the cluster;
/// the postmaster starts it again), and at its next start it backs off that table.
pub(super) unsafe extern "C-unwind" fn past_hard_deadline() {
    unsafe {
        pg_sys::ProcDiePending = 1;
        pg_sys::InterruptPending = 1;
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// True once the worker was asked to stop (sticky: pgrx's `sigterm_received` forgets).
pub(super) fn stopping() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

/// Runs `f` (statements on a user's table) as the table's owner in a subtransaction, bounded by
/// `lightretriever.statement_timeout` (SPI in a background worker arms no statement timeout of
/// its own) and with lock waits bounded the same.
pub(super) fn on_user_table<T>(enc: &AutoEncoding, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let ms = crate::guc::statement_timeout_ms();
    let result = in_subtransaction(|| {
        Spi::run_with_args("SELECT pg_catalog.set_config('lock_timeout', $1, true)", &[format!("{ms}ms").into()])
            .map_err(|e| e.to_string())?;
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, ms) };
        let hard = HARD_DEADLINE.load(Ordering::Relaxed);
        if hard >= 0 {
            unsafe { enable_timeout_after(hard, ms.saturating_mul(2).saturating_add(1000)) };
        }
        as_owner(enc.source, f)
    })
    .and_then(|r| r);
    unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
    let hard = HARD_DEADLINE.load(Ordering::Relaxed);
    if hard >= 0 {
        unsafe { disable_timeout(hard, false) };
    }
    result
}

/// While a batch of a table runs, a marker names it (`lightretriever/drain-<db>-<slot>.batch`): a worker
/// that died inside the table's code (past the hard deadline) finds it at its next start and
/// backs off that table (`Stalls`). Removed when the batch ends, however it ends in Rust.
pub(super) struct BatchMarker(PathBuf);

impl BatchMarker {
    pub(super) fn set(worker: &str, encoding: i32) -> BatchMarker {
        let path = PathBuf::from(format!("lightretriever/drain-{worker}.batch"));
        let _ = std::fs::write(&path, encoding.to_string());
        BatchMarker(path)
    }
}

impl Drop for BatchMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Tables whose code stalled the worker, skipped until a time that doubles with every stall
/// (`lr_queue::retry::Stalls`: 30 s, 1 min, … ≤ 1 h); kept in
/// `lightretriever/drain-<db>-<slot>.stalls.json` across restarts.
pub(super) struct Stalls {
    path: PathBuf,
    record: lr_queue::retry::Stalls,
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Stalls {
    /// Reads the record, and counts a stall when the previous worker died inside a batch.
    pub(super) fn load(worker: &str) -> (Stalls, Option<(i32, u64)>) {
        let path = PathBuf::from(format!("lightretriever/drain-{worker}.stalls.json"));
        let tables = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let mut stalls = Stalls { path, record: lr_queue::retry::Stalls { tables } };
        let marker = PathBuf::from(format!("lightretriever/drain-{worker}.batch"));
        let stalled = std::fs::read_to_string(&marker).ok().and_then(|t| t.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&marker);
        let counted = stalled.map(|id| (id, stalls.record.count(id, unix_now())));
        stalls.save();
        (stalls, counted)
    }

    pub(super) fn save(&self) {
        let _ = std::fs::write(&self.path, serde_json::to_string(&self.record.tables).unwrap_or_default());
    }

    pub(super) fn skipped(&self, encoding: i32) -> bool {
        self.record.skipped(encoding, unix_now())
    }

    /// A batch of the table ended normally: its record is cleared.
    pub(super) fn cleared(&mut self, encoding: i32) {
        if self.record.clear(encoding) {
            self.save();
        }
    }
}
