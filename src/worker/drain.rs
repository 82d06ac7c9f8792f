//! Draining the queues: claim a batch, read its texts as the owner, encode, write the vectors
//! where the text is still the encoded one; failures retried row by row.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use lr_model::ModelInfo;
use lr_queue::retry;
use lr_service::{Failure, Output, Request, Task};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::auto::{encodings, AutoEncoding, Encodings};
use crate::pgvector::{SparseVec, Vector};
use crate::security::{pin_key_types, pin_name, with_key_text_settings, IfLocked};
use crate::spi::{flatten, in_subtransaction};

use super::limits::{on_user_table, stopping, BatchMarker, Stalls};
use super::link::EncoderLink;
use super::report_activity;

/// The active auto-encodings of this database; `None` when lightretriever is not installed
/// here (a failed look reads as installed with none active: only a sure answer ends a worker).
pub(super) fn active_encodings() -> Option<Vec<AutoEncoding>> {
    // Read-only SPI throughout an idle round: pgrx's `Spi::get_one` assigns a transaction id.
    let installed = crate::spi::read_one::<bool>(
        "SELECT pg_catalog.to_regclass('lightretriever.lr_auto_encodings') IS NOT NULL
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'lightretriever')",
        &[],
    );
    if installed == Ok(Some(false)) {
        return None;
    }
    Some(in_subtransaction(|| encodings(Encodings::Active)).unwrap_or_default())
}

/// One batch of each of `active` (but those backed off after a stall); returns the rows
/// handled. Nothing is claimed while no encoder can be reached (a worker starting with the server).
pub(super) fn drain_once(link: &mut EncoderLink, stalls: &mut Stalls, held: &mut Held, name: &str, active: Vec<AutoEncoding>) -> usize {
    if !link.ready() {
        return 0;
    }
    let mut handled = 0;
    for enc in active {
        if stopping() {
            break;
        }
        if stalls.skipped(enc.id) {
            continue;
        }
        let link = AssertUnwindSafe(&mut *link);
        let encoding = AssertUnwindSafe(&enc);
        let held_tables = AssertUnwindSafe(&mut *held);
        handled += BackgroundWorker::transaction(move || {
            let (wrapped, held_tables) = (link, held_tables); // the whole wrappers move in, not their fields
            process_batch(wrapped.0, held_tables.0, &encoding, name)
        });
        stalls.cleared(enc.id);
    }
    handled
}

/// How long a table's due rows may wait for another transaction that holds the table, its
/// schema or a key type (DDL, a GRANT left open) before the wait is recorded as the table's
/// error: its owner would otherwise see only a queue that does not move.
const HELD_REPORT_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Tables whose batches are skipped because another transaction holds what they pin: since
/// when, and whether that was recorded yet.
#[derive(Default)]
pub(super) struct Held(std::collections::HashMap<i32, (Instant, bool)>);

impl Held {
    /// Counts a skipped batch of `enc`; records `why` once it has waited [`HELD_REPORT_AFTER`].
    fn skipped(&mut self, enc: &AutoEncoding, why: &str) {
        let (since, recorded) = self.0.entry(enc.id).or_insert((Instant::now(), false));
        if !*recorded && since.elapsed() >= HELD_REPORT_AFTER {
            *recorded = true;
            let seconds = since.elapsed().as_secs();
            record_error(enc, 0, &format!("waiting for another transaction for {seconds} s, which holds {why}; its rows are encoded once it ends"));
        }
    }

    fn cleared(&mut self, enc: &AutoEncoding) {
        self.0.remove(&enc.id);
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
fn process_batch(inference: &mut EncoderLink, held: &mut Held, enc: &AutoEncoding, name: &str) -> usize {
    if enc.distributed {
        // One drain worker per database takes Citus tables: their pending rows are not claimed
        // from a queue, so two would encode the same rows.
        return if name.ends_with("-0") { process_distributed_batch(inference, held, enc, name) } else { 0 };
    }
    let started = Instant::now();
    // Only a table with work is pinned: the pin locks catalog rows, which takes a transaction id
    // and writes WAL, and an idle round must do neither. The look is read-only SPI (pgrx's
    // `Spi::get_one` would take an id too: 34 a second for two idle tables, before this).
    let due = || Spi::connect(|c| c.select(&enc.statements().due_exists(), Some(1), &[])?.first().get_one::<bool>());
    if flatten(in_subtransaction(due)) != Ok(Some(true)) {
        return 0;
    }
    // The source, then its queue: DROP TABLE and ALTER TABLE lock in that order too (the drop
    // event trigger drops the queue); the look above waited for no lock on the source. A
    // source being changed is skipped this round.
    let Some(enc) = &lock_source(enc, held) else {
        return 0;
    };
    let statements = enc.statements();
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
    let _marker = BatchMarker::set(name, enc.id);
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
    let seconds = started.elapsed().as_secs_f32();
    let booked = flatten(in_subtransaction(|| {
        if !finished.is_empty() {
            Spi::run_with_args(&statements.finish(), &[finished.into()])?;
        }
        record_batch(enc, claims.len(), seconds)
    }));
    if let Err(e) = booked {
        record_error(enc, claims.len(), &format!("cannot finish the batch: {e}"));
    }
    report_activity("");
    claims.len()
}

/// One batch of a Citus distributed table (lr-queue, "Citus"): up to `batch_size` rows with a
/// text and no vector, found on every shard through the partial index; encoded; each written by
/// its key (a statement to its own shard) if its text is still the one encoded and it still has
/// no vector. A row that fails gets a queue entry that counts its attempts; failed keys are left
/// out until `lr_retry_failed`. Killing anything loses nothing: the rows stay without a vector
/// until a batch writes them.
fn process_distributed_batch(inference: &mut EncoderLink, held: &mut Held, enc: &AutoEncoding, name: &str) -> usize {
    let started = Instant::now();
    // The table first, on the coordinator, as DDL takes it (Citus then locks the shards): a
    // batch that held shard locks while DDL waited for them was a distributed deadlock. A table
    // being changed is skipped this round.
    let Some(enc) = &lock_source(enc, held) else {
        return 0;
    };
    let statements = enc.statements();
    // Keys with entries (attempts counted; failed for good or not), as text.
    let entries = flatten(in_subtransaction(|| {
        Spi::connect(|c| {
            c.select(&statements.entry_keys(), None, &[])?
                .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<bool>(2)?.unwrap_or(false))))
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    }));
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            record_error(enc, 0, &format!("cannot read the queue: {e}"));
            return 0;
        }
    };
    // From here the table's own code may run (policies, the key types' functions).
    let _marker = BatchMarker::set(name, enc.id);
    if !entries.is_empty() {
        // Entries of rows that wait no longer (deleted, or given their vectors) are over.
        let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
        let waiting = on_user_table(enc, || {
            with_key_text_settings(|| {
                Spi::connect(|c| {
                    c.select(&statements.still_pending(), None, &[keys.clone().into()])?
                        .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
                        .collect::<Result<std::collections::HashSet<_>, pgrx::spi::SpiError>>()
                })
            })
            .map_err(|e| e.to_string())
        });
        match waiting {
            Ok(waiting) => {
                let over: Vec<String> = keys.into_iter().filter(|k| !waiting.contains(k)).collect();
                if !over.is_empty() {
                    let _ = in_subtransaction(|| Spi::run_with_args(&statements.forget_keys(), &[over.into()]));
                }
            }
            Err(e) => record_error(enc, 0, &format!("cannot read which failed rows of {} still wait: {e}", enc.source_name)),
        }
    }
    // Keys that failed for good stay out (until lr_retry_failed): left out in the query itself.
    let failed: Vec<String> = entries.into_iter().filter(|(_, failed)| *failed).map(|(k, _)| k).collect();
    let pending = on_user_table(enc, || {
        with_key_text_settings(|| {
            Spi::connect(|c| {
                c.select(&statements.pending_rows(), None, &[(enc.batch_size as i64).into(), failed.into()])?
                    .map(|r| Ok((r.get::<Vec<String>>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
        })
        .map_err(|e| e.to_string())
    });
    let rows: Vec<(Vec<String>, String)> = match pending {
        Ok(rows) => rows,
        Err(e) => {
            record_error(enc, 0, &format!("cannot read the rows waiting in {}: {e}", enc.source_name));
            return 0;
        }
    };
    if rows.is_empty() {
        return 0;
    }
    let claims: Vec<Claim> = rows.iter().map(|(key, _)| Claim { queue_ids: Vec::new(), key: key.clone() }).collect();
    let work: Vec<(&Claim, String)> = claims.iter().zip(rows).map(|(claim, (_, text))| (claim, text)).collect();
    report_activity(&format!("lightretriever: encoding {} rows of auto-encoding {}", work.len(), enc.id));
    let Some(results) = encode_all(inference, enc, &work) else {
        return 0; // SIGTERM: the rows still wait
    };
    let sparse_dim = enc.sparse_column.as_ref().map(|_| sparse_dim(enc));
    let write = statements.write_vectors_by_key();
    let mut failures: Vec<(&Claim, String)> = Vec::new();
    for ((claim, text), result) in work.iter().zip(results) {
        let written = result.and_then(|(dense, sparse)| {
            let sparse = sparse_vector(sparse, sparse_dim)?;
            let mut args: Vec<DatumWithOid> = vec![Vector(dense).into(), sparse.into()];
            args.extend(claim.key.iter().map(|k| k.clone().into()));
            args.push(text.clone().into());
            // 0 rows: changed or deleted meanwhile (a changed row is found again, still waiting).
            on_user_table(enc, || {
                with_key_text_settings(|| Spi::connect_mut(|c| c.update(&write, None, &args).map(|t| t.len()))).map_err(|e| e.to_string())
            })
        });
        // A written row's entries go at the next batch (it waits no longer).
        if let Err(e) = written {
            failures.push((*claim, e));
        }
    }
    for (claim, error) in &failures {
        let entry = flatten(in_subtransaction(|| Spi::get_one_with_args::<i64>(&statements.failure_entry(), &[claim.key.clone().into()])));
        match entry {
            Ok(Some(id)) => fail(enc, &[&Claim { queue_ids: vec![id], key: claim.key.clone() }], error),
            _ => record_error(enc, 1, error),
        }
    }
    let booked = flatten(in_subtransaction(|| record_batch(enc, work.len(), started.elapsed().as_secs_f32())));
    if let Err(e) = booked {
        record_error(enc, work.len(), &format!("cannot finish the batch: {e}"));
    }
    report_activity("");
    work.len()
}

/// Locks the source without waiting (its own rows; a Citus table's shards too), and pins its name and its key types' names until the transaction ends ([`pin_name`],
/// [`pin_key_types`]): the encoding as this batch must name them, or None when another
/// transaction holds the table, its schema or a key type (the batch is skipped this round). The
/// names read with the encodings, before this transaction, could mean other objects by now.
/// `held` counts the skipped rounds (and says so after a while).
fn lock_source(enc: &AutoEncoding, held: &mut Held) -> Option<AutoEncoding> {
    match pin_source(enc) {
        Ok(pinned) => {
            held.cleared(enc);
            Some(pinned)
        }
        Err(why) => {
            held.skipped(enc, &why);
            None
        }
    }
}

/// [`lock_source`]'s locks and names, or what another transaction holds.
fn pin_source(enc: &AutoEncoding) -> Result<AutoEncoding, String> {
    let pinned = in_subtransaction(|| {
        let Some(name) = pin_name(enc.source, pg_sys::AccessShareLock, IfLocked::GiveUp) else {
            return Err("a lock on the table".to_owned());
        };
        let Some(key_types) = pin_key_types(enc.source, &enc.key_attnums) else {
            return Err("a key column (it is gone)".to_owned());
        };
        // The pin locked the table itself (as LOCK TABLE ONLY would); Citus locks a distributed
        // table's shards when the table is locked by name.
        if enc.distributed {
            Spi::run(&format!("LOCK TABLE {name} IN ACCESS SHARE MODE NOWAIT")).map_err(|e| e.to_string())?;
        }
        Ok((name, key_types))
    });
    match pinned {
        Ok(Ok((source_name, key_types))) => Ok(AutoEncoding { source_name, key_types, ..enc.clone() }),
        Ok(Err(why)) => Err(why),
        // A NOWAIT lock: on the catalog row of its schema or of a key type (or theirs), or on
        // the table by name (Citus: its shards).
        Err(message) => Err(format!("the table, its schema or a key type ({message})")),
    }
}

/// Books a batch of `rows` that took `seconds` (the rates of `lr_encoding_status`).
fn record_batch(enc: &AutoEncoding, rows: usize, seconds: f32) -> Result<(), pgrx::spi::SpiError> {
    Spi::run_with_args(
        "INSERT INTO lightretriever.lr_encoding_batches (encoding_id, rows, seconds, worker_pid)
         SELECT id, $2, $3, $4 FROM lightretriever.lr_auto_encodings WHERE id OPERATOR(pg_catalog.=) $1",
        &[enc.id.into(), (rows as i32).into(), seconds.into(), unsafe { pg_sys::MyProcPid }.into()],
    )
}

/// The sparsevec of a row's sparse pairs, when the table has a sparse column (`dim` its size).
fn sparse_vector(pairs: Option<Vec<(u32, f32)>>, dim: Option<usize>) -> Result<Option<SparseVec>, String> {
    match (pairs, dim) {
        (Some(pairs), Some(dim)) => Ok(Some(SparseVec(lr_vector::SparseVector::from_pairs(dim, pairs).map_err(|e| e.to_string())?))),
        _ => Ok(None),
    }
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
/// that queue batches and backend requests share model runs. A batch of several rows that
/// fails on its inputs or kills the inference process is tried row by row (`lr_queue::retry`),
/// so that one bad row fails alone. `None` = the worker is stopping.
fn encode_all(inference: &mut EncoderLink, enc: &AutoEncoding, work: &[(&Claim, String)]) -> Option<Vec<Result<Encoded, String>>> {
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
    lr_queue::retry::encode_rows(&texts, |rows| {
        Some(encode_texts(inference, enc, &dense_info, sparse_info.as_ref(), rows.to_vec())?.map_err(|e| match e {
            EncodeError::Model(Failure::Encode(m)) | EncodeError::Crashed(m) => retry::Failure::Inputs(m),
            EncodeError::Model(f) => retry::Failure::Model(f.message().to_owned()),
        }))
    })
}

fn encode_texts(
    inference: &mut EncoderLink,
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
                if let Some(v) = v.iter().find(|v| lr_vector::check_non_zeros(v.len()).is_err()) {
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
            let sparse = sparse_vector(sparse.clone(), sparse_dim)?;
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

pub(super) fn record_error(enc: &AutoEncoding, rows: usize, error: &str) {
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
