//! The background workers: each holds the models once (lr-service's inference thread), serves
//! backends on `$PGDATA/lightretriever/encoder-N.sock`, and drains the auto-encoding queues of
//! one database (`lightretriever.database`) through SPI.
//!
//! One batch = one transaction: claim queue rows (`FOR UPDATE SKIP LOCKED`), read their texts,
//! encode, write the vectors of rows whose text is still the encoded one, delete the queue rows.
//! A crash anywhere before the commit leaves the batch queued. Source rows are read and written
//! as the table's owner in a restricted security context (the owner's triggers never run as
//! superuser), and a source row locked by a user transaction is skipped, never waited for.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use lr_model::ModelInfo;
use lr_service::{Failure, Output, Reply, Request, Service, Task};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::auto_encoding::{encodings, AutoEncoding};
use crate::pgvector::{SparseVec, Vector};
use crate::search::quote_ident;

static REGISTERED: AtomicBool = AtomicBool::new(false);

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
    REGISTERED.store(workers > 0, Ordering::Relaxed);
}

/// True in backends of a server that started encoder workers (the flag is inherited from the
/// postmaster, which ran `register`).
pub fn workers_registered() -> bool {
    REGISTERED.load(Ordering::Relaxed)
}

/// True when a worker drains auto-encoding queues in the current database.
pub fn worker_serves_this_database() -> bool {
    workers_registered()
        && Spi::get_one::<String>("SELECT current_database()::text").ok().flatten() == Some(crate::guc::database())
}

fn report_activity(what: &str) {
    let c = std::ffi::CString::new(what).unwrap_or_default();
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, c.as_ptr()) };
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn lr_encoder_worker_main(arg: pg_sys::Datum) {
    let index = arg.value() as i32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let service = Service::start(&crate::guc::device_spec(), crate::guc::max_batch());
    // The socket first: backends of every database can encode even before the queue side runs.
    let path = crate::inference::socket_path(index);
    let _ = std::fs::create_dir_all("lightretriever");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .unwrap_or_else(|e| pgrx::error!("lightretriever encoder {index}: cannot listen on {}: {e}", path.display()));
    // Only the server's own OS user may connect (backends run as that user).
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    service.serve(listener);
    let database = crate::guc::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    pgrx::log!("lightretriever encoder {index}: serving {}, draining the queues of database \"{database}\"", path.display());

    let mut last_prune = Instant::now();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            service.set_device(&crate::guc::device_spec());
        }
        if BackgroundWorker::sigterm_received() {
            break;
        }
        let worked = drain_once(&service);
        if last_prune.elapsed() > Duration::from_secs(60) {
            BackgroundWorker::transaction(|| {
                let _ = in_subtransaction(|| {
                    Spi::run("DELETE FROM lightretriever.lr_encoding_batches WHERE at < now() - interval '10 minutes'")
                });
            });
            last_prune = Instant::now();
        }
        report_activity("");
        if worked == 0 && !BackgroundWorker::wait_latch(Some(crate::guc::poll_interval())) {
            break;
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// One batch of every active auto-encoding; returns the rows handled.
fn drain_once(service: &Service) -> usize {
    let active = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>(
            "SELECT to_regclass('lightretriever.lr_auto_encodings') IS NOT NULL
                AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'lightretriever')",
        );
        if installed != Ok(Some(true)) {
            return Vec::new();
        }
        encodings("AND status = 'active'", &[])
    });
    let mut handled = 0;
    for enc in active {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        let service = AssertUnwindSafe(service);
        let enc = AssertUnwindSafe(&enc);
        handled += BackgroundWorker::transaction(move || process_batch(&service, &enc));
    }
    handled
}

/// Runs `f` in a subtransaction: an error inside rolls back only its work and comes back as
/// its message (the worker records it and goes on with other tables).
fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let result = PgTryBuilder::new(AssertUnwindSafe(|| Ok(f())))
            .catch_others(|e| {
                Err(match e {
                    CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_owned(),
                    CaughtError::RustPanic { ereport, .. } => ereport.message().to_owned(),
                })
            })
            .execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        result
    }
}

/// Runs `f` as `role` in a restricted security context (as autovacuum runs index expressions):
/// triggers and defaults of the user's table run with its owner's rights, never the worker's.
fn as_role<T>(role: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32,
        );
    }
    // An error unwinds to the enclosing (sub)transaction, whose abort restores the user.
    let out = f();
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    out
}

/// Queue rows claimed for one source row (several when it changed repeatedly).
struct Claim {
    queue_ids: Vec<i64>,
    /// The primary key, one text per key column.
    key: Vec<String>,
}

fn spi_err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// `unnest($1::text[], ...) AS k(k1, ..., n)` joined to the source on its primary key.
fn key_join(enc: &AutoEncoding) -> (String, String) {
    let n = enc.key_columns.len();
    let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
    let on: Vec<String> = enc
        .key_columns
        .iter()
        .zip(&enc.key_types)
        .enumerate()
        .map(|(i, (c, t))| format!("s.{} = k.k{}::{t}", quote_ident(c), i + 1))
        .collect();
    (format!("unnest({}) WITH ORDINALITY AS k({}, n)", arrays.join(", "), names.join(", ")), on.join(" AND "))
}

fn key_args(claims: &[Claim], columns: usize) -> Vec<DatumWithOid<'static>> {
    (0..columns).map(|c| claims.iter().map(|cl| cl.key[c].clone()).collect::<Vec<String>>().into()).collect()
}

/// One batch of `enc` inside the current transaction; returns the rows handled.
fn process_batch(service: &Service, enc: &AutoEncoding) -> usize {
    let started = Instant::now();
    // The source first, then its queue: DROP TABLE and ALTER TABLE lock in that order too (the
    // drop event trigger drops the queue). A source being changed is skipped this round.
    let source_locked = in_subtransaction(|| {
        Spi::run(&format!("LOCK TABLE ONLY {} IN ACCESS SHARE MODE NOWAIT", enc.source_name))
    });
    if !matches!(source_locked, Ok(Ok(()))) {
        return 0;
    }
    let claimed = in_subtransaction(|| claim(enc));
    let claims = match claimed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) | Err(e) => {
            record_error(enc, 0, &format!("cannot claim from the queue: {e}"));
            return 0;
        }
    };
    if claims.is_empty() {
        return 0;
    }
    let owner = Spi::get_one_with_args::<pg_sys::Oid>("SELECT relowner FROM pg_class WHERE oid = $1", &[enc.source.into()])
        .ok()
        .flatten()
        .unwrap_or(pg_sys::InvalidOid);
    let text_col = quote_ident(&enc.text_column);
    let (join, on) = key_join(enc);
    // Texts as of now; `found` false = the row is gone.
    let read = in_subtransaction(|| {
        as_role(owner, || {
            Spi::connect_mut(|c| {
                c.update(
                    &format!(
                        "SELECT k.n, s.ctid IS NOT NULL, s.{text_col}::text FROM {join} LEFT JOIN {} s ON {on} ORDER BY k.n",
                        enc.source_name
                    ),
                    None,
                    &key_args(&claims, enc.key_columns.len()),
                )?
                .map(|r| Ok((r.get::<bool>(2)?.unwrap_or(false), r.get::<String>(3)?)))
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
            .map_err(spi_err)
        })
    });
    let texts: Vec<(bool, Option<String>)> = match read {
        Ok(Ok(t)) => t,
        Ok(Err(e)) | Err(e) => {
            fail(enc, &claims.iter().collect::<Vec<_>>(), &format!("cannot read {}: {e}", enc.source_name));
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
        let Some(results) = encode_all(service, enc, &work) else {
            return 0; // SIGTERM: leave everything queued
        };
        let (ok, failed): (Vec<_>, Vec<_>) = work.iter().zip(results).partition(|(_, r)| r.is_ok());
        if !failed.is_empty() {
            let first_error = failed[0].1.as_ref().err().cloned().unwrap_or_default();
            fail(enc, &failed.iter().map(|((c, _), _)| *c).collect::<Vec<_>>(), &first_error);
        }
        let done: Vec<(&Claim, &String, Encoded)> =
            ok.into_iter().map(|((c, t), r)| (*c, t, r.expect("partitioned on Ok"))).collect();
        match in_subtransaction(|| write_vectors(enc, owner, &done)) {
            Ok(Ok((written, busy))) => {
                finished.extend(written);
                if !busy.is_empty() {
                    let _ = Spi::run_with_args(
                        &format!("UPDATE {} SET retry_at = now() + interval '1 second' WHERE id = ANY($1)", enc.queue()),
                        &[busy.into()],
                    );
                }
            }
            Ok(Err(e)) | Err(e) => {
                let claims: Vec<&Claim> = done.iter().map(|(c, _, _)| *c).collect();
                fail(enc, &claims, &format!("cannot write the vectors to {}: {e}", enc.source_name));
            }
        }
    }
    let pid = unsafe { pg_sys::MyProcPid };
    let seconds = started.elapsed().as_secs_f32();
    let booked = in_subtransaction(|| {
        if !finished.is_empty() {
            Spi::run_with_args(&format!("DELETE FROM {} WHERE id = ANY($1)", enc.queue()), &[finished.into()])?;
        }
        Spi::run_with_args(
            "INSERT INTO lightretriever.lr_encoding_batches (encoding_id, rows, seconds, worker_pid)
             SELECT id, $2, $3, $4 FROM lightretriever.lr_auto_encodings WHERE id = $1",
            &[enc.id.into(), (claims.len() as i32).into(), seconds.into(), pid.into()],
        )
    });
    if let Ok(Err(e)) | Err(e) = booked.map(|r| r.map_err(|e| e.to_string())) {
        record_error(enc, claims.len(), &format!("cannot finish the batch: {e}"));
    }
    report_activity("");
    claims.len()
}

fn claim(enc: &AutoEncoding) -> Result<Vec<Claim>, String> {
    let keys = enc.queue_keys();
    let key_texts: Vec<String> = keys.iter().map(|k| format!("{k}::text")).collect();
    let sql = format!(
        "SELECT array_agg(id ORDER BY id), {}
           FROM (SELECT id, {} FROM {} WHERE retry_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c
          GROUP BY {} ORDER BY min(id)",
        key_texts.join(", "),
        keys.join(", "),
        enc.queue(),
        keys.join(", ")
    );
    Spi::connect_mut(|c| {
        c.update(&sql, None, &[enc.batch_size.into()])?
            .map(|r| {
                let queue_ids = r.get::<Vec<i64>>(1)?.unwrap_or_default();
                let key = (0..keys.len()).map(|i| r.get::<String>(i + 2).map(Option::unwrap_or_default)).collect::<Result<_, _>>()?;
                Ok(Claim { queue_ids, key })
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .map_err(spi_err)
}

/// A row's vectors: dense, and sparse when the table has a sparse model.
type Encoded = (Vec<f32>, Option<Vec<(u32, f32)>>);

fn wait_for(rx: std::sync::mpsc::Receiver<Reply>) -> Option<Reply> {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return Some(r),
            Err(RecvTimeoutError::Disconnected) => return Some(Err(Failure::Encode("the inference thread stopped".into()))),
            Err(RecvTimeoutError::Timeout) if BackgroundWorker::sigterm_received() => return None,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Encodes the texts of `work` (dense, and sparse if asked) through the worker's own service,
/// so that queue batches and backend requests share model runs. On a model failure for a
/// batch of several rows, each row is tried alone so that one bad row fails alone.
fn encode_all(service: &Service, enc: &AutoEncoding, work: &[(&Claim, String)]) -> Option<Vec<Result<Encoded, String>>> {
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
    match encode_texts(service, enc, &dense_info, sparse_info.as_ref(), texts)? {
        Ok(rows) => Some(rows.into_iter().map(Ok).collect()),
        Err(Failure::Encode(_)) if work.len() > 1 => {
            let mut out = Vec::with_capacity(work.len());
            for (_, t) in work {
                out.push(match encode_texts(service, enc, &dense_info, sparse_info.as_ref(), vec![t.clone()])? {
                    Ok(mut rows) => Ok(rows.remove(0)),
                    Err(f) => Err(f.message().to_owned()),
                });
            }
            Some(out)
        }
        Err(f) => Some(work.iter().map(|_| Err(f.message().to_owned())).collect()),
    }
}

fn encode_texts(
    service: &Service,
    enc: &AutoEncoding,
    dense_info: &ModelInfo,
    sparse_info: Option<&ModelInfo>,
    texts: Vec<String>,
) -> Option<Result<Vec<Encoded>, Failure>> {
    let dense_rx = service.submit(Request { model: enc.model.clone(), info: dense_info.clone(), task: Task::Dense { texts: texts.clone() } });
    let sparse_rx = sparse_info.map(|info| {
        service.submit(Request {
            model: enc.sparse_model.clone().unwrap_or_default(),
            info: info.clone(),
            task: Task::Sparse { texts },
        })
    });
    let dense = match wait_for(dense_rx)? {
        Ok(Output::Dense(v)) => v,
        Ok(_) => return Some(Err(Failure::Encode("dense task answered sparse".into()))),
        Err(f) => return Some(Err(f)),
    };
    let sparse = match sparse_rx {
        None => None,
        Some(rx) => match wait_for(rx)? {
            Ok(Output::Sparse(v)) => {
                if let Some(v) = v.iter().find(|v| v.len() > lr_vector::SPARSEVEC_MAX_NNZ) {
                    return Some(Err(Failure::Encode(format!(
                        "a sparse vector has {} non-zero weights; sparsevec holds at most {} (register the model with sparse_top_k)",
                        v.len(),
                        lr_vector::SPARSEVEC_MAX_NNZ
                    ))));
                }
                Some(v)
            }
            Ok(_) => return Some(Err(Failure::Encode("sparse task answered dense".into()))),
            Err(f) => return Some(Err(f)),
        },
    };
    Some(Ok(match sparse {
        Some(s) => dense.into_iter().zip(s).map(|(d, s)| (d, Some(s))).collect(),
        None => dense.into_iter().map(|d| (d, None)).collect(),
    }))
}

/// Writes the vectors of rows whose text is still the one encoded; returns the queue ids now
/// finished and those of rows locked by another transaction (retried shortly).
fn write_vectors(enc: &AutoEncoding, owner: pg_sys::Oid, done: &[(&Claim, &String, Encoded)]) -> Result<(Vec<i64>, Vec<i64>), String> {
    if done.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let claims: Vec<Claim> = done.iter().map(|(c, _, _)| Claim { queue_ids: c.queue_ids.clone(), key: c.key.clone() }).collect();
    let text_col = quote_ident(&enc.text_column);
    let (join, on) = key_join(enc);
    let sparse_dim = enc.sparse_column.as_ref().map(|_| sparse_dim(enc));
    as_role(owner, || {
        // Lock the rows we can without waiting; a row a user transaction holds is skipped.
        let locked: Vec<(i64, String, Option<String>)> = Spi::connect_mut(|c| {
            c.update(
                &format!(
                    "SELECT k.n, s.ctid::text, s.{text_col}::text FROM {join} JOIN {} s ON {on} FOR NO KEY UPDATE OF s SKIP LOCKED",
                    enc.source_name
                ),
                None,
                &key_args(&claims, enc.key_columns.len()),
            )?
            .map(|r| Ok((r.get::<i64>(1)?.unwrap_or(0), r.get::<String>(2)?.unwrap_or_default(), r.get::<String>(3)?)))
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .map_err(spi_err)?;
        let mut written = Vec::new();
        let mut busy: Vec<i64> = Vec::new();
        let mut seen = vec![false; done.len()];
        let mut set = format!("{} = $1", quote_ident(&enc.vector_column));
        if let Some(s) = &enc.sparse_column {
            set.push_str(&format!(", {} = $2", quote_ident(s)));
        }
        let update = format!("UPDATE {} SET {set} WHERE ctid = $3::tid", enc.source_name);
        for (n, ctid, text) in locked {
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
            Spi::run_with_args(&update, &[Vector(dense.clone()).into(), sparse.into(), ctid.into()]).map_err(spi_err)?;
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
        "SELECT vocab_size FROM lightretriever.lr_models WHERE name = $1",
        &[enc.sparse_model.clone().unwrap_or_default().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0) as usize
}

/// Counts a failed attempt for `claims`; past `lightretriever.max_retries` they move to
/// lr_failed_items. Also records the error.
fn fail(enc: &AutoEncoding, claims: &[&Claim], error: &str) {
    let ids: Vec<i64> = claims.iter().flat_map(|c| c.queue_ids.iter().copied()).collect();
    record_error(enc, claims.len(), error);
    let queue = enc.queue();
    let counted = in_subtransaction(|| {
        Spi::run_with_args(
            &format!(
                "UPDATE {queue} SET attempts = attempts + 1, last_error = $2,
                        retry_at = now() + make_interval(secs => least(60, 2 ^ attempts))
                  WHERE id = ANY($1)"
            ),
            &[ids.clone().into(), error.into()],
        )?;
        let row_key: Vec<String> = enc
            .key_columns
            .iter()
            .zip(enc.queue_keys())
            .map(|(c, k)| format!("{}, {k}", pgrx::spi::quote_literal(c)))
            .collect();
        Spi::run_with_args(
            &format!(
                "WITH moved AS (DELETE FROM {queue} WHERE id = ANY($1) AND attempts >= $2 RETURNING *)
                 INSERT INTO lightretriever.lr_failed_items (encoding_id, row_key, error, attempts)
                 SELECT DISTINCT ON (row_key) $3, row_key, error, attempts
                   FROM (SELECT jsonb_build_object({}) AS row_key, last_error AS error, attempts FROM moved) m",
                row_key.join(", ")
            ),
            &[ids.into(), crate::guc::max_retries().into(), enc.id.into()],
        )
    });
    if let Ok(Err(e)) | Err(e) = counted.map(|r| r.map_err(|e| e.to_string())) {
        pgrx::log!("lightretriever: cannot count the failure of rows of {}: {e}", enc.source_name);
    }
}

fn record_error(enc: &AutoEncoding, rows: usize, error: &str) {
    pgrx::log!("lightretriever: auto-encoding of {}: {error}", enc.source_name);
    // The table may have been dropped meanwhile (its catalog row with it): never fail here.
    let _ = in_subtransaction(|| {
        Spi::run_with_args(
            "INSERT INTO lightretriever.lr_encoding_errors (encoding_id, worker_pid, rows, error)
             SELECT id, $2, $3, $4 FROM lightretriever.lr_auto_encodings WHERE id = $1",
            &[enc.id.into(), unsafe { pg_sys::MyProcPid }.into(), (rows as i32).into(), error.into()],
        )
    });
}
