//! The background workers, three kinds:
//! - **encoder** (`lightretriever.workers` of them, static): binds
//!   `$PGDATA/lightretriever/encoder-N.sock` and forks an **inference process** that holds the
//!   models and serves the socket (lr-service) to backends and drain workers. It restarts the
//!   inference process when it dies — a crash in model code (segfault, OOM kill, CUDA fault,
//!   SIGKILL) costs a retried batch, never a reset of the cluster, because the postmaster does not
//!   watch the child. It connects to no database.
//! - **launcher** (one, static, `launcher.rs`): keeps a drain worker running in every database
//!   where lightretriever is installed.
//! - **drain** (dynamic, `drain.rs`): drains the auto-encoding queues of one database through SPI,
//!   sending the texts to an encoder's inference process.
//!
//! One batch = one transaction: claim queue entries (`FOR UPDATE SKIP LOCKED`), read their texts,
//! encode, write the vectors of rows whose text is still the encoded one, delete the entries. A
//! crash anywhere before the commit leaves the batch queued. Source rows are read and written
//! as the table's owner in a security-restricted context (`security::as_owner`), each statement
//! on a user's table is bounded by `lightretriever.statement_timeout`, and a source row locked
//! by a user transaction is skipped, never waited for.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::auto::{encodings, Encodings};
use crate::databases;
use crate::spi::in_subtransaction;

/// Registers `lightretriever.workers` encoder workers and the launcher, and installs the utility
/// hook; only while the postmaster preloads the library.
pub fn register() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    hook::install();
    let workers = crate::guc::workers();
    for i in 0..workers {
        BackgroundWorkerBuilder::new(&format!("lightretriever encoder {i}"))
            .set_type("lightretriever encoder")
            .set_library("lightretriever")
            .set_function("lr_encoder_worker_main")
            .set_argument(i.into_datum())
            .enable_spi_access()
            // Connected to no database, so a hot standby can run them too: its lr_encode_document
            // and lr_rerank go to its own encoders. The launcher (and with it every drain
            // worker) starts once recovery ends: a standby never drains queues.
            .set_start_time(pgrx::bgworkers::BgWorkerStartTime::ConsistentState)
            .set_restart_time(Some(Duration::from_secs(1)))
            .load();
    }
    if workers > 0 {
        BackgroundWorkerBuilder::new("lightretriever launcher")
            .set_type("lightretriever launcher")
            .set_library("lightretriever")
            .set_function("lr_launcher_main")
            .enable_spi_access()
            .set_restart_time(Some(Duration::from_secs(1)))
            .load();
    }
    crate::guc::set_workers_registered(workers > 0);
}

fn report_activity(what: &str) {
    let c = std::ffi::CString::new(what).unwrap_or_default();
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, c.as_ptr()) };
}

/// Where worker `index` tells who its inference process is (`lr_encoder_processes`).
fn status_path(index: i32) -> PathBuf {
    PathBuf::from(format!("lightretriever/encoder-{index}.json"))
}

/// What encoder `index` last wrote there (`None` before it started).
fn encoder_status(index: i32) -> Option<serde_json::Value> {
    std::fs::read_to_string(status_path(index)).ok().and_then(|t| serde_json::from_str(&t).ok())
}

mod drain;
mod hook;
mod launcher;
mod limits;
mod link;
mod process;

use drain::{drain_once, record_error};
use limits::{past_hard_deadline, stopping, RegisterTimeout, Stalls, HARD_DEADLINE, USER_TIMEOUT};
use link::EncoderLink;
use process::{on_sigchld, Inference};

#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn lr_encoder_worker_main(arg: pg_sys::Datum) {
    let index = arg.value() as i32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let path = crate::inference::socket_path(index);
    let _ = std::fs::create_dir_all("lightretriever");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .unwrap_or_else(|e| pgrx::error!("lightretriever encoder {index}: cannot listen on {}: {e}", path.display()));
    // Only the server's own OS user may connect (backends run as that user).
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let mut inference = Inference::start(index, listener);
    // pqsignal is a macro over pqsignal_be from PostgreSQL 18.
    #[cfg(not(feature = "pg18"))]
    unsafe { pg_sys::pqsignal(libc::SIGCHLD, Some(on_sigchld)) };
    #[cfg(feature = "pg18")]
    unsafe { pg_sys::pqsignal_be(libc::SIGCHLD, Some(on_sigchld)) };
    // No database: connected only to be seen in pg_stat_activity (lr_encoder_processes).
    BackgroundWorker::connect_worker_to_spi(None, None);
    pgrx::log!("lightretriever encoder {index}: serving {}", path.display());
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            inference.set_device(crate::guc::device_spec());
        }
        if stopping() {
            break;
        }
        inference.ensure_running();
        // SIGCHLD sets the latch: a dead inference process is restarted at once.
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
    inference.stop();
    let _ = std::fs::remove_file(&path);
}

/// How long a database's first drain worker stays with no active auto-encoding before it ends
/// (an enabling or resuming marks the database again, and the launcher starts one).
const IDLE_GRACE: Duration = Duration::from_secs(30);

/// Whether the database has an active auto-encoding, for the first drain worker (slot 0): its
/// marker is removed before the look and put back if there is one (see databases.rs).
fn still_wanted(database: u32, slot: i32) -> bool {
    if slot == 0 {
        databases::unmark(database);
    }
    let wanted = BackgroundWorker::transaction(|| drain::active_encodings().is_some_and(|a| !a.is_empty()));
    if wanted && slot == 0 {
        databases::mark(database);
    }
    wanted
}

/// Settings a database's owner can give every session of the database (`ALTER DATABASE … SET`)
/// are overridden in its drain workers: with `default_transaction_read_only` every batch
/// would fail, with `exit_on_error` every error would end the worker, and so on. `search_path`
/// is pinned before the first statement: the owner's code sees the server's default path, our
/// own statements resolve nothing through a schema a user can write (they are also
/// schema-qualified throughout).
fn pin_settings() {
    let default_path = unsafe { std::ffi::CStr::from_ptr(pg_sys::GetConfigOptionResetString(c"search_path".as_ptr())) };
    let _ = crate::security::SERVER_SEARCH_PATH.set(default_path.to_owned());
    let mut pinned: Vec<(&std::ffi::CStr, &std::ffi::CStr)> = vec![
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"exit_on_error", c"off"),
        (c"default_transaction_read_only", c"off"),
        (c"default_transaction_isolation", c"read committed"),
        (c"default_transaction_deferrable", c"off"),
        (c"statement_timeout", c"0"),
        (c"lock_timeout", c"0"),
        (c"idle_in_transaction_session_timeout", c"0"),
        (c"row_security", c"on"),
        (c"standard_conforming_strings", c"on"),
    ];
    if cfg!(any(feature = "pg17", feature = "pg18")) {
        pinned.push((c"transaction_timeout", c"0"));
    }
    for (name, value) in pinned {
        unsafe {
            pg_sys::SetConfigOption(name.as_ptr(), value.as_ptr(), pg_sys::GucContext::PGC_SUSET, pg_sys::GucSource::PGC_S_OVERRIDE)
        };
    }
}

#[no_mangle]
#[pg_guard]
pub extern "C-unwind" fn lr_drain_worker_main(arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    let extra = BackgroundWorker::get_extra().to_owned();
    let mut fields = extra.split_whitespace().map(|f| f.parse::<i32>().unwrap_or(0));
    let (slot, launcher) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    if databases::paused(database) {
        return;
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    pin_settings();
    let mut pid_file = databases::PidFile::write(database, slot);
    if !still_wanted(database, slot) {
        return;
    }
    let id = unsafe { RegisterTimeout(USER_TIMEOUT, Some(past_hard_deadline)) };
    HARD_DEADLINE.store(id, Ordering::Relaxed);
    let name = format!("{database}-{slot}");
    let mut link = EncoderLink::new(slot % crate::guc::workers().max(1));
    let (mut stalls, stalled) = Stalls::load(&name);
    if let Some((encoding, pause)) = stalled {
        let message = format!(
            "the table's own code ran past lightretriever.statement_timeout and would not stop (e.g. a trigger that catches the cancel): the worker was restarted, and skips this table for {pause} s"
        );
        BackgroundWorker::transaction(|| {
            if let Some(enc) = encodings(Encodings::WithId(encoding)).pop() {
                record_error(&enc, 0, &message);
            }
        });
    }
    let mut held = drain::Held::default();
    let mut last_prune = Instant::now();
    let mut idle_since: Option<Instant> = None;
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // The launcher that started this worker is gone: a new one starts its own.
        if stopping() || !databases::live(launcher) || databases::paused(database) {
            break;
        }
        let worked = match BackgroundWorker::transaction(drain::active_encodings) {
            Some(active) if !active.is_empty() => {
                idle_since = None;
                let rows = drain_once(&mut link, &mut stalls, &mut held, &name, active);
                if rows > 0 {
                    pid_file.worked();
                }
                rows
            }
            // Not installed (any more), or nothing active for a while: end, unless an enabling
            // came in meanwhile. Other slots end when the launcher stops them.
            found => {
                let idle = idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_GRACE;
                if (found.is_none() || (slot == 0 && idle)) && !still_wanted(database, slot) {
                    break;
                }
                0
            }
        };
        if slot == 0 && last_prune.elapsed() > Duration::from_secs(60) {
            BackgroundWorker::transaction(|| {
                let _ = in_subtransaction(|| {
                    Spi::run(
                        "DELETE FROM lightretriever.lr_encoding_batches
                          WHERE at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) '10 minutes'::pg_catalog.interval)",
                    )
                });
            });
            last_prune = Instant::now();
        }
        report_activity("");
        if worked == 0 && !BackgroundWorker::wait_latch(Some(crate::guc::poll_interval())) {
            break;
        }
    }
}

/// The inference processes of this server's workers, as the workers last reported them.
#[pg_extern(volatile, parallel_restricted)]
fn lr_encoder_processes() -> TableIterator<
    'static,
    (
        name!(worker, i32),
        name!(worker_pid, i32),
        name!(inference_pid, Option<i32>),
        name!(restarts, i32),
        name!(device, String),
        name!(last_exit, Option<String>),
    ),
> {
    let live: Vec<i32> = Spi::connect(|c| {
        c.select(
            "SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type OPERATOR(pg_catalog.=) 'lightretriever encoder'",
            None,
            &[],
        )?
        .map(|r| r.get::<i32>(1).map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_default();
    let mut rows = Vec::new();
    for index in 0..crate::guc::workers() {
        let Some(v) = encoder_status(index) else {
            continue;
        };
        let pid = v["worker_pid"].as_i64().unwrap_or(0) as i32;
        if !live.contains(&pid) {
            continue;
        }
        rows.push((
            index,
            pid,
            v["inference_pid"].as_i64().map(|p| p as i32),
            v["restarts"].as_i64().unwrap_or(0) as i32,
            v["device"].as_str().unwrap_or_default().to_owned(),
            v["last_exit"].as_str().map(str::to_owned),
        ));
    }
    TableIterator::new(rows)
}
