//! The background workers. Each one binds `$PGDATA/lightretriever/encoder-N.sock` and forks an
//! **inference process** that holds the models and serves the socket (lr-service): backends
//! and the worker itself are its clients. The worker drains the auto-encoding queues of one
//! database (`lightretriever.database`) through SPI and restarts the inference process when it
//! dies — a crash in model code (segfault, OOM kill, CUDA fault, SIGKILL) costs a retried
//! batch, never a reset of the cluster, because the postmaster does not watch the child.
//!
//! One batch = one transaction: claim queue entries (`FOR UPDATE SKIP LOCKED`), read their texts,
//! encode, write the vectors of rows whose text is still the encoded one, delete the entries. A
//! crash anywhere before the commit leaves the batch queued. Source rows are read and written
//! as the table's owner in a security-restricted context (`security::as_owner`), each statement
//! on a user's table is bounded by `lightretriever.statement_timeout`, and a source row locked
//! by a user transaction is skipped, never waited for.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lr_model::ModelInfo;
use lr_service::{CallError, Client, Exit, Failure, InferenceProcess, Output, Request, Task};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::auto_encoding::{encodings, AutoEncoding};
use crate::pgvector::{SparseVec, Vector};
use crate::security::{as_owner, with_key_text_settings};
use crate::spi::{flatten, in_subtransaction};

/// Registers `lightretriever.workers` workers; only while the postmaster preloads the library.
pub fn register() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    let workers = crate::guc::workers();
    for i in 0..workers {
        BackgroundWorkerBuilder::new(&format!("lightretriever encoder {i}"))
            .set_type("lightretriever encoder")
            .set_library("lightretriever")
            .set_function("lr_encoder_worker_main")
            .set_argument(i.into_datum())
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

/// The worker's inference process: started, watched, restarted.
struct Inference {
    index: i32,
    listener: UnixListener,
    device: String,
    process: Option<InferenceProcess>,
    restarts: u32,
    last_exit: Option<String>,
    /// Not before this instant (a process that keeps dying at start is restarted at most every
    /// few seconds).
    next_start: Instant,
    client: Option<Client>,
}

extern "C-unwind" fn on_sigchld(_: i32) {
    // Async-signal-safe: wakes the main loop, which reaps and restarts.
    unsafe { pg_sys::SetLatch(pg_sys::MyLatch) };
}

impl Inference {
    fn start(index: i32, listener: UnixListener) -> Inference {
        let mut inference = Inference {
            index,
            listener,
            device: crate::guc::device_spec(),
            process: None,
            restarts: 0,
            last_exit: None,
            next_start: Instant::now(),
            client: None,
        };
        inference.ensure_running();
        inference
    }

    /// Forks the inference process if none runs (the worker has no threads of its own, so
    /// forking is safe).
    fn spawn(&mut self) {
        let title = c"inference process";
        match InferenceProcess::spawn(&self.listener, &self.device, crate::guc::max_batch(), || unsafe {
            pg_sys::set_ps_display(title.as_ptr())
        }) {
            Ok(p) => {
                pgrx::log!("lightretriever encoder {}: inference process {} started (device {})", self.index, p.pid(), self.device);
                self.process = Some(p);
            }
            Err(e) => pgrx::warning!("lightretriever encoder {}: cannot start the inference process: {e}", self.index),
        }
        self.write_status();
    }

    /// Reaps a dead inference process (saying how it ended) and starts a new one.
    fn ensure_running(&mut self) -> Option<Exit> {
        let exit = self.process.as_ref().and_then(InferenceProcess::try_wait);
        if let Some(e) = exit {
            let pid = self.process.take().map(|p| p.pid()).unwrap_or_default();
            pgrx::log!("lightretriever encoder {}: inference process {pid} {e}; starting another", self.index);
            self.last_exit = Some(format!("{pid} {e}"));
            self.restarts += 1;
            self.client = None;
        }
        if self.process.is_none() && Instant::now() >= self.next_start {
            self.next_start = Instant::now() + Duration::from_secs(1);
            self.spawn();
        }
        exit
    }

    /// After the connection broke: waits (briefly) for the process to be gone, restarts it.
    fn recover(&mut self) -> String {
        self.client = None;
        for _ in 0..200 {
            if let Some(e) = self.ensure_running() {
                return format!("the inference process {e} while encoding");
            }
            if self.process.as_ref().is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        "the connection to the inference process broke while encoding".to_owned()
    }

    /// A new device (SIGHUP): the process is restarted on it (models move on next use).
    fn set_device(&mut self, device: String) {
        if device != self.device {
            self.device = device;
            if let Some(p) = self.process.take() {
                p.stop(Duration::from_secs(5));
            }
            self.client = None;
            self.spawn();
        }
    }

    fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(status_path(self.index));
    }

    fn write_status(&self) {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let status = serde_json::json!({
            "worker": self.index,
            "worker_pid": unsafe { pg_sys::MyProcPid },
            "inference_pid": self.process.as_ref().map(InferenceProcess::pid),
            "restarts": self.restarts,
            "started_at": started,
            "last_exit": self.last_exit,
            "device": self.device,
        });
        let path = status_path(self.index);
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, status.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    /// One request to the inference process; `Err(None)` = the worker is stopping.
    fn call(&mut self, request: &Request) -> Result<lr_service::Reply, Option<String>> {
        if self.client.is_none() {
            self.ensure_running();
            self.client = Client::connect(&crate::inference::socket_path(self.index)).ok();
        }
        let Some(client) = self.client.as_mut() else {
            return Err(Some("the inference process is not running".to_owned()));
        };
        match client.call(request, || !stopping()) {
            Ok(reply) => Ok(reply),
            Err(CallError::Abandoned) => {
                self.client = None;
                Err(None)
            }
            Err(CallError::Io(_)) => Err(Some(self.recover())),
            Err(e @ CallError::Protocol(_)) => {
                self.client = None;
                Err(Some(e.to_string()))
            }
        }
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn lr_encoder_worker_main(arg: pg_sys::Datum) {
    let index = arg.value() as i32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // The socket and the inference process first: backends of every database can encode even
    // before the queue side runs.
    let path = crate::inference::socket_path(index);
    let _ = std::fs::create_dir_all("lightretriever");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .unwrap_or_else(|e| pgrx::error!("lightretriever encoder {index}: cannot listen on {}: {e}", path.display()));
    // Only the server's own OS user may connect (backends run as that user).
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let mut inference = Inference::start(index, listener);
    unsafe { pg_sys::pqsignal(libc::SIGCHLD, Some(on_sigchld)) };
    let database = crate::guc::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let id = unsafe { RegisterTimeout(USER_TIMEOUT, Some(past_hard_deadline)) };
    HARD_DEADLINE.store(id, Ordering::Relaxed);
    // The owner's code sees the server's default path, not the pinned one below.
    let default_path = unsafe { std::ffi::CStr::from_ptr(pg_sys::GetConfigOptionResetString(c"search_path".as_ptr())) };
    let _ = crate::security::SERVER_SEARCH_PATH.set(default_path.to_owned());
    // Our own statements resolve nothing through a schema a user can write (they are also
    // schema-qualified throughout).
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };
    pgrx::log!("lightretriever encoder {index}: serving {}, draining the queues of database \"{database}\"", path.display());

    let (mut stalls, stalled) = Stalls::load(index);
    if let Some((encoding, pause)) = stalled {
        let message = format!(
            "the table's own code ran past lightretriever.statement_timeout and would not stop (e.g. a trigger that catches the cancel): the worker was restarted, and skips this table for {pause} s"
        );
        BackgroundWorker::transaction(|| {
            if let Some(enc) = encodings("AND a.id OPERATOR(pg_catalog.=) $1", &[encoding.into()]).pop() {
                record_error(&enc, 0, &message);
            }
        });
    }
    let mut last_prune = Instant::now();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            inference.set_device(crate::guc::device_spec());
        }
        if stopping() {
            break;
        }
        inference.ensure_running();
        let worked = drain_once(&mut inference, &mut stalls);
        if last_prune.elapsed() > Duration::from_secs(60) {
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
    inference.stop();
    let _ = std::fs::remove_file(&path);
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
        let Some(v) = std::fs::read_to_string(status_path(index)).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
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

/// One batch of every active auto-encoding (but those backed off after a stall); returns the
/// rows handled.
fn drain_once(inference: &mut Inference, stalls: &mut Stalls) -> usize {
    let active = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regclass('lightretriever.lr_auto_encodings') IS NOT NULL
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'lightretriever')",
        );
        if installed != Ok(Some(true)) {
            return Vec::new();
        }
        encodings("AND a.status OPERATOR(pg_catalog.=) 'active'", &[])
    });
    let mut handled = 0;
    for enc in active {
        if stopping() {
            break;
        }
        if stalls.skipped(enc.id) {
            continue;
        }
        let inference = AssertUnwindSafe(&mut *inference);
        let encoding = AssertUnwindSafe(&enc);
        handled += BackgroundWorker::transaction(move || {
            let wrapped = inference; // the whole wrapper moves in, not its field
            process_batch(wrapped.0, &encoding)
        });
        stalls.cleared(enc.id);
    }
    handled
}

// utils/timeout.h, which pgrx does not bind: `TimeoutId` STATEMENT_TIMEOUT is 3 in PostgreSQL
// 15 to 17 (after STARTUP_PACKET_TIMEOUT, DEADLOCK_TIMEOUT, LOCK_TIMEOUT); USER_TIMEOUT, the
// first free one, is 12 (13 from 17, which added TRANSACTION_TIMEOUT).
const STATEMENT_TIMEOUT: i32 = 3;
#[cfg(not(feature = "pg17"))]
const USER_TIMEOUT: i32 = 12;
#[cfg(feature = "pg17")]
const USER_TIMEOUT: i32 = 13;
extern "C-unwind" {
    fn enable_timeout_after(id: i32, delay_ms: i32);
    fn disable_timeout(id: i32, keep_indicator: bool);
    fn RegisterTimeout(id: i32, handler: Option<unsafe extern "C-unwind" fn()>) -> i32;
}

/// The worker's own timeout for the hard deadline (-1 until registered).
static HARD_DEADLINE: AtomicI32 = AtomicI32::new(-1);

/// Past the hard deadline the owner's code has caught the statement timeout's cancel (plpgsql
/// can): a die request cannot be caught — the worker exits with FATAL (no reset of the cluster;
/// the postmaster starts it again), and at its next start it backs off that table.
unsafe extern "C-unwind" fn past_hard_deadline() {
    unsafe {
        pg_sys::ProcDiePending = 1;
        pg_sys::InterruptPending = 1;
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// True once the worker was asked to stop (sticky: pgrx's `sigterm_received` forgets).
fn stopping() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

/// Runs `f` (statements on a user's table) as the table's owner in a subtransaction, bounded by
/// `lightretriever.statement_timeout` (SPI in a background worker arms no statement timeout of
/// its own) and with lock waits bounded the same.
fn on_user_table<T>(enc: &AutoEncoding, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
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

/// While a batch of a table runs, a marker names it (`lightretriever/encoder-N.batch`): a worker
/// that died inside the table's code (past the hard deadline) finds it at its next start and
/// backs off that table (`Stalls`). Removed when the batch ends, however it ends in Rust.
struct BatchMarker(PathBuf);

impl BatchMarker {
    fn set(index: i32, encoding: i32) -> BatchMarker {
        let path = PathBuf::from(format!("lightretriever/encoder-{index}.batch"));
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
/// (30 s, 1 min, … ≤ 1 h); kept in `lightretriever/encoder-N.stalls.json` across restarts.
struct Stalls {
    path: PathBuf,
    /// encoding id → (stalls, skipped until, unix seconds)
    tables: std::collections::HashMap<i32, (u32, u64)>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Stalls {
    /// Reads the record, and counts a stall when the previous worker died inside a batch.
    fn load(index: i32) -> (Stalls, Option<(i32, u64)>) {
        let path = PathBuf::from(format!("lightretriever/encoder-{index}.stalls.json"));
        let tables = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let mut stalls = Stalls { path, tables };
        let marker = PathBuf::from(format!("lightretriever/encoder-{index}.batch"));
        let stalled = std::fs::read_to_string(&marker).ok().and_then(|t| t.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&marker);
        let counted = stalled.map(|id| {
            let entry = stalls.tables.entry(id).or_insert((0, 0));
            entry.0 += 1;
            let pause = (30u64 << (entry.0 - 1).min(7)).min(3600);
            entry.1 = unix_now() + pause;
            (id, pause)
        });
        stalls.save();
        (stalls, counted)
    }

    fn save(&self) {
        let _ = std::fs::write(&self.path, serde_json::to_string(&self.tables).unwrap_or_default());
    }

    fn skipped(&self, encoding: i32) -> bool {
        self.tables.get(&encoding).is_some_and(|(_, until)| *until > unix_now())
    }

    /// A batch of the table ended normally: its record is cleared.
    fn cleared(&mut self, encoding: i32) {
        if self.tables.remove(&encoding).is_some() {
            self.save();
        }
    }
}

/// Queue entries claimed for one source row (several when it changed repeatedly).
struct Claim {
    queue_ids: Vec<i64>,
    /// The primary key, one text per key column (the key types' output).
    key: Vec<String>,
}

fn key_args(claims: &[&Claim], columns: usize) -> Vec<DatumWithOid<'static>> {
    (0..columns).map(|c| claims.iter().map(|cl| cl.key[c].clone()).collect::<Vec<String>>().into()).collect()
}

/// One batch of `enc` inside the current transaction; returns the rows handled.
fn process_batch(inference: &mut Inference, enc: &AutoEncoding) -> usize {
    let started = Instant::now();
    let statements = enc.statements();
    // The source first, then its queue: DROP TABLE and ALTER TABLE lock in that order too (the
    // drop event trigger drops the queue). A source being changed is skipped this round.
    let source_locked = in_subtransaction(|| {
        Spi::run(&format!("LOCK TABLE ONLY {} IN ACCESS SHARE MODE NOWAIT", enc.source_name))
    });
    if !matches!(source_locked, Ok(Ok(()))) {
        return 0;
    }
    let claimed = flatten(in_subtransaction(|| {
        Spi::connect_mut(|c| {
            c.update(&statements.claim(), None, &[enc.batch_size.into()])?
                .map(|r| Ok(Claim { queue_ids: r.get::<Vec<i64>>(1)?.unwrap_or_default(), key: r.get::<Vec<String>>(2)?.unwrap_or_default() }))
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    }));
    let claims = match claimed {
        Ok(c) => c,
        Err(e) => {
            record_error(enc, 0, &format!("cannot claim from the queue: {e}"));
            return 0;
        }
    };
    if claims.is_empty() {
        return 0;
    }
    // From here the table's own code may run (casts, checks, policies, triggers).
    let _marker = BatchMarker::set(inference.index, enc.id);
    let all: Vec<&Claim> = claims.iter().collect();
    // Texts as of now; `found` false = the row is gone.
    let read = on_user_table(enc, || {
        with_key_text_settings(|| {
            Spi::connect(|c| {
                c.select(&statements.read_texts(), None, &key_args(&all, enc.key_columns.len()))?
                    .map(|r| Ok((r.get::<bool>(2)?.unwrap_or(false), r.get::<String>(3)?)))
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
        })
        .map_err(|e| e.to_string())
    });
    let texts: Vec<(bool, Option<String>)> = match read {
        Ok(t) => t,
        Err(e) => {
            fail(enc, &all, &format!("cannot read {}: {e}", enc.source_name));
            return claims.len();
        }
    };
    let mut finished: Vec<i64> = Vec::new();
    let mut work: Vec<(&Claim, String)> = Vec::new();
    for (claim, (found, text)) in claims.iter().zip(texts) {
        match (found, text) {
            (true, Some(t)) => work.push((claim, t)),
            // Gone, or its text is NULL now (its vector was cleared by the trigger).
            _ => finished.extend(&claim.queue_ids),
        }
    }
    if !work.is_empty() {
        report_activity(&format!("lightretriever: encoding {} rows of auto-encoding {}", work.len(), enc.id));
        let Some(results) = encode_all(inference, enc, &work) else {
            return 0; // SIGTERM: leave everything queued
        };
        let (ok, failed): (Vec<_>, Vec<_>) = work.iter().zip(results).partition(|(_, r)| r.is_ok());
        if !failed.is_empty() {
            // Rows that failed alike share one error record.
            let first_error = failed[0].1.as_ref().err().cloned().unwrap_or_default();
            fail(enc, &failed.iter().map(|((c, _), _)| *c).collect::<Vec<_>>(), &first_error);
        }
        let done: Vec<(&Claim, &String, Encoded)> =
            ok.into_iter().map(|((c, t), r)| (*c, t, r.expect("partitioned on Ok"))).collect();
        match write_vectors(enc, &done) {
            Ok((written, busy)) => {
                finished.extend(written);
                if !busy.is_empty() {
                    let _ = Spi::run_with_args(&statements.retry_soon(), &[busy.into()]);
                }
            }
            Err(e) => {
                let claims: Vec<&Claim> = done.iter().map(|(c, _, _)| *c).collect();
                fail(enc, &claims, &format!("cannot write the vectors to {}: {e}", enc.source_name));
            }
        }
    }
    let pid = unsafe { pg_sys::MyProcPid };
    let seconds = started.elapsed().as_secs_f32();
    let booked = flatten(in_subtransaction(|| {
        if !finished.is_empty() {
            Spi::run_with_args(&statements.finish(), &[finished.into()])?;
        }
        Spi::run_with_args(
            "INSERT INTO lightretriever.lr_encoding_batches (encoding_id, rows, seconds, worker_pid)
             SELECT id, $2, $3, $4 FROM lightretriever.lr_auto_encodings WHERE id OPERATOR(pg_catalog.=) $1",
            &[enc.id.into(), (claims.len() as i32).into(), seconds.into(), pid.into()],
        )
    }));
    if let Err(e) = booked {
        record_error(enc, claims.len(), &format!("cannot finish the batch: {e}"));
    }
    report_activity("");
    claims.len()
}

/// A row's vectors: dense, and sparse when the table has a sparse model.
type Encoded = (Vec<f32>, Option<Vec<(u32, f32)>>);

/// Why texts could not be encoded.
enum EncodeError {
    /// The model answered with a failure.
    Model(Failure),
    /// The inference process died (or its connection broke) during the call.
    Crashed(String),
}

/// Encodes the texts of `work` (dense, and sparse if asked) through the inference process, so
/// that queue batches and backend requests share model runs. When a batch of several rows
/// fails on its inputs or kills the inference process, each row is tried alone, so that one
/// bad row fails alone. `None` = the worker is stopping.
fn encode_all(inference: &mut Inference, enc: &AutoEncoding, work: &[(&Claim, String)]) -> Option<Vec<Result<Encoded, String>>> {
    let infos = in_subtransaction(|| {
        let dense = crate::catalog::load_model(&enc.model);
        let sparse = enc.sparse_model.as_deref().map(crate::catalog::load_model);
        (dense, sparse)
    });
    let (dense_info, sparse_info) = match infos {
        Ok(i) => i,
        Err(e) => return Some(work.iter().map(|_| Err(e.clone())).collect()),
    };
    let texts: Vec<String> = work.iter().map(|(_, t)| t.clone()).collect();
    match encode_texts(inference, enc, &dense_info, sparse_info.as_ref(), texts)? {
        Ok(rows) => Some(rows.into_iter().map(Ok).collect()),
        Err(EncodeError::Model(Failure::Encode(_)) | EncodeError::Crashed(_)) if work.len() > 1 => {
            let mut out = Vec::with_capacity(work.len());
            for (_, t) in work {
                out.push(match encode_texts(inference, enc, &dense_info, sparse_info.as_ref(), vec![t.clone()])? {
                    Ok(mut rows) => Ok(rows.remove(0)),
                    Err(EncodeError::Model(f)) => Err(f.message().to_owned()),
                    Err(EncodeError::Crashed(m)) => Err(m),
                });
            }
            Some(out)
        }
        Err(EncodeError::Model(f)) => Some(work.iter().map(|_| Err(f.message().to_owned())).collect()),
        Err(EncodeError::Crashed(m)) => Some(work.iter().map(|_| Err(m.clone())).collect()),
    }
}

fn encode_texts(
    inference: &mut Inference,
    enc: &AutoEncoding,
    dense_info: &ModelInfo,
    sparse_info: Option<&ModelInfo>,
    texts: Vec<String>,
) -> Option<Result<Vec<Encoded>, EncodeError>> {
    let mut ask = |model: &str, info: &ModelInfo, task: Task| -> Option<Result<Output, EncodeError>> {
        match inference.call(&Request { model: model.to_owned(), info: info.clone(), task }) {
            Ok(Ok(out)) => Some(Ok(out)),
            Ok(Err(f)) => Some(Err(EncodeError::Model(f))),
            Err(None) => None,
            Err(Some(crash)) => Some(Err(EncodeError::Crashed(crash))),
        }
    };
    let dense = match ask(&enc.model, dense_info, Task::Dense { texts: texts.clone() })? {
        Ok(Output::Dense(v)) => v,
        Ok(_) => return Some(Err(EncodeError::Model(Failure::Encode("dense task answered sparse".into())))),
        Err(e) => return Some(Err(e)),
    };
    let sparse = match sparse_info {
        None => None,
        Some(info) => match ask(enc.sparse_model.as_deref().unwrap_or_default(), info, Task::Sparse { texts })? {
            Ok(Output::Sparse(v)) => {
                if let Some(v) = v.iter().find(|v| v.len() > lr_vector::SPARSEVEC_MAX_NNZ) {
                    return Some(Err(EncodeError::Model(Failure::Encode(format!(
                        "a sparse vector has {} non-zero weights; sparsevec holds at most {} (register the model with sparse_top_k)",
                        v.len(),
                        lr_vector::SPARSEVEC_MAX_NNZ
                    )))));
                }
                Some(v)
            }
            Ok(_) => return Some(Err(EncodeError::Model(Failure::Encode("sparse task answered dense".into())))),
            Err(e) => return Some(Err(e)),
        },
    };
    Some(Ok(match sparse {
        Some(s) => dense.into_iter().zip(s).map(|(d, s)| (d, Some(s))).collect(),
        None => dense.into_iter().map(|d| (d, None)).collect(),
    }))
}

/// Writes the vectors of rows whose text is still the one encoded; returns the queue ids now
/// finished and those of rows locked by another transaction or changed meanwhile (retried
/// shortly).
fn write_vectors(enc: &AutoEncoding, done: &[(&Claim, &String, Encoded)]) -> Result<(Vec<i64>, Vec<i64>), String> {
    if done.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let statements = enc.statements();
    let claims: Vec<&Claim> = done.iter().map(|(c, _, _)| *c).collect();
    let sparse_dim = enc.sparse_column.as_ref().map(|_| sparse_dim(enc));
    let update = statements.write_vectors();
    on_user_table(enc, || {
        // Lock the rows we can without waiting; a row a user transaction holds is skipped.
        let locked: Vec<(i64, String, pg_sys::Oid, Option<String>)> = with_key_text_settings(|| {
            Spi::connect_mut(|c| {
                c.update(&statements.lock_rows(), None, &key_args(&claims, enc.key_columns.len()))?
                    .map(|r| {
                        Ok((
                            r.get::<i64>(1)?.unwrap_or(0),
                            r.get::<String>(2)?.unwrap_or_default(),
                            r.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::InvalidOid),
                            r.get::<String>(4)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
        })
        .map_err(|e| e.to_string())?;
        let mut written = Vec::new();
        let mut busy: Vec<i64> = Vec::new();
        let mut seen = vec![false; done.len()];
        for (n, ctid, tableoid, text) in locked {
            let i = (n - 1) as usize;
            seen[i] = true;
            let (claim, encoded_text, (dense, sparse)) = &done[i];
            // Changed since it was read: leave it queued (its newer entry is encoded later).
            if text.as_deref() != Some(encoded_text.as_str()) {
                busy.extend(&claim.queue_ids);
                continue;
            }
            let sparse = match (sparse, sparse_dim) {
                (Some(pairs), Some(dim)) => {
                    Some(SparseVec(lr_vector::SparseVector::from_pairs(dim, pairs.clone()).map_err(|e| e.to_string())?))
                }
                _ => None,
            };
            let updated = Spi::connect_mut(|c| {
                c.update(&update, None, &[Vector(dense.clone()).into(), sparse.into(), ctid.clone().into(), tableoid.into()]).map(|t| t.len())
            })
            .map_err(|e| e.to_string())?;
            if updated != 1 {
                // Never a silent miss: the locked row is the one to write, exactly once.
                return Err(format!("{updated} rows matched the locked row {ctid} of table {}", tableoid.to_u32()));
            }
            written.extend(&claim.queue_ids);
        }
        for (i, (claim, _, _)) in done.iter().enumerate() {
            if !seen[i] {
                busy.extend(&claim.queue_ids); // locked by someone else, or deleted meanwhile
            }
        }
        Ok((written, busy))
    })
}

fn sparse_dim(enc: &AutoEncoding) -> usize {
    Spi::get_one_with_args::<i32>(
        "SELECT vocab_size FROM lightretriever.lr_models WHERE name OPERATOR(pg_catalog.=) $1",
        &[enc.sparse_model.clone().unwrap_or_default().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0) as usize
}

/// Counts a failed attempt for `claims`; at `lightretriever.max_retries` their entries are
/// marked failed (`lr_failed_items`). Also records the error.
fn fail(enc: &AutoEncoding, claims: &[&Claim], error: &str) {
    let ids: Vec<i64> = claims.iter().flat_map(|c| c.queue_ids.iter().copied()).collect();
    record_error(enc, claims.len(), error);
    let statements = enc.statements();
    let counted = flatten(in_subtransaction(|| {
        Spi::run_with_args(&statements.count_attempt(), &[ids.clone().into(), error.into()])?;
        Spi::run_with_args(&statements.mark_failed(), &[ids.into(), crate::guc::max_retries().into()])
    }));
    if let Err(e) = counted {
        pgrx::log!("lightretriever: cannot count the failure of rows of {}: {e}", enc.source_name);
    }
}

fn record_error(enc: &AutoEncoding, rows: usize, error: &str) {
    pgrx::log!("lightretriever: auto-encoding of {}: {error}", enc.source_name);
    // The table may have been dropped meanwhile (its catalog row with it): never fail here.
    let _ = in_subtransaction(|| {
        Spi::run_with_args(
            "INSERT INTO lightretriever.lr_encoding_errors (encoding_id, worker_pid, rows, error)
             SELECT id, $2, $3, $4 FROM lightretriever.lr_auto_encodings WHERE id OPERATOR(pg_catalog.=) $1",
            &[enc.id.into(), unsafe { pg_sys::MyProcPid }.into(), (rows as i32).into(), error.into()],
        )
    });
}
