//! What users see of auto-encoding: visibility (`lr_may_see`, `lr_may_read`), the status and
//! failed-rows views' rows, `lr_wait_for_encoding`.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::search_path;

use crate::error::{raise, required, row_or_none, Code, OrRaise};
use crate::security::{caller, elevated, may_read, may_see, read_as_owner_for, with_settings};
use crate::spi::{flatten, in_subtransaction_cancellable, table_name};

use super::*;

/// True when the current role may see the keys and errors of `source`'s auto-encoding: it owns
/// the table (row-level security of lr_encoding_errors, lr_failed_items).
#[pg_extern(stable, parallel_safe, strict)]
fn lr_may_see(source: pg_sys::Oid) -> bool {
    may_see(caller(), source)
}

/// True when the current role may see that `source` is auto-encoded and how far: it owns the
/// table or may read it (row-level security of lr_auto_encodings, lr_encoding_batches;
/// lr_encoding_status, lr_wait_for_encoding).
#[pg_extern(stable, parallel_safe, strict)]
fn lr_may_read(source: pg_sys::Oid) -> bool {
    may_read(caller(), source)
}

/// Waits until the queue of `source` has no pending row (true) or `timeout` passes (false).
/// Failed rows do not count: they have left the queue's pending set. A paused table with pending
/// rows gives false at once (with a NOTICE). Like any statement on the table, it first waits for
/// a lock someone holds on it (`source` is opened, in ACCESS SHARE mode, as `pg_relation_size`
/// opens its table): the caller's `lock_timeout` or `statement_timeout` bounds that wait. Holding
/// that lock, it keeps out what would lock the queue or the table for longer.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn lr_wait_for_encoding(source: Option<pgrx::PgRelation>, timeout: default!(Option<pgrx::datum::Interval>, "'5 minutes'")) -> bool {
    let source = required(source, "source").oid();
    let timeout = required(timeout, "timeout");
    let micros = timeout.as_micros().max(0) as u64;
    let table = table_name(source);
    let enc = encoding_of(source).filter(|_| may_read(caller(), source));
    let Some(enc) = enc else {
        raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("lightretriever: {table} is not auto-encoded"),
            Some("Enable it with lightretriever.lr_enable_auto_encoding."),
        )
    };
    let deadline = Instant::now() + Duration::from_micros(micros);
    let pending = enc.statements().pending_exists();
    let waiting = |enc: &super::AutoEncoding| -> Option<bool> {
        if enc.distributed {
            // The rows with a text and no vector, but those that failed for good.
            let failed = elevated(|| Spi::get_two::<i64, i64>(&enc.statements().queue_counts())).ok().and_then(|c| c.1).unwrap_or(0);
            return Some(super::enable::pending_rows_for(caller(), enc, &table) > failed);
        }
        elevated(|| Spi::get_one::<bool>(&pending)).or_raise(Code::ERRCODE_INTERNAL_ERROR)
    };
    let paused = "SELECT status OPERATOR(pg_catalog.=) 'paused' FROM lightretriever.lr_auto_encodings WHERE id OPERATOR(pg_catalog.=) $1";
    loop {
        // A fresh snapshot each time (a volatile function's SPI statements take new ones).
        if waiting(&enc) != Some(true) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Nothing drains a paused queue: waiting could only time out.
        if elevated(|| Spi::get_one_with_args::<bool>(paused, &[enc.id.into()])).ok().flatten() == Some(true) {
            pgrx::notice!("lightretriever: the auto-encoding of {table} is paused; resume it with lightretriever.lr_resume_auto_encoding");
            return false;
        }
        Spi::run("SELECT pg_catalog.pg_sleep(0.05)").or_raise(Code::ERRCODE_INTERNAL_ERROR);
    }
}

/// Per auto-encoded table the caller may see: queue depth, rows in flight (the batch a worker is
/// encoding now, as it reports in pg_stat_activity), failed rows, rows with a vector (counted
/// for the table's owner, its members and superusers only: [`owner_count`]), recent rate, last
/// error. A table whose state cannot be read shows `status` 'broken' and the reason
/// as `last_error`, rather than breaking the view for everyone.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn lr_encoding_status_rows() -> TableIterator<
    'static,
    (
        name!(source, pg_sys::Oid),
        name!(model, String),
        name!(sparse_model, Option<String>),
        name!(status, String),
        name!(pending, Option<i64>),
        name!(in_flight, i64),
        name!(failed, Option<i64>),
        name!(done, Option<i64>),
        name!(rows_per_second, f64),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(worker_pid, Option<i32>),
    ),
> {
    let who = caller();
    let mut rows = Vec::new();
    let lock_wait = LockWait::start();
    for enc in encodings(Encodings::All) {
        if !may_read(who, enc.source) {
            continue;
        }
        let statements = enc.statements();
        let status = flatten(in_subtransaction_cancellable(|| {
            // The queue is locked while a transaction disables or drops the table: its counts
            // are unknown (NULL) after a second then.
            let counts = lock_wait.bounded(|| elevated(|| Spi::get_two::<i64, i64>(&statements.queue_counts())).map(Some))?;
            let failed = counts.map(|c| c.1.unwrap_or(0));
            let (in_flight, worker) = Spi::get_two_with_args::<i64, i32>(
                "SELECT COALESCE(pg_catalog.sum(pg_catalog.substring(a.query, 'encoding (\\d+) rows')::pg_catalog.int8), 0)::pg_catalog.int8,
                        pg_catalog.max(a.pid)
                   FROM pg_catalog.pg_stat_activity a
                  WHERE a.backend_type OPERATOR(pg_catalog.=) 'lightretriever drain'
                    AND a.query OPERATOR(pg_catalog.~~) pg_catalog.format('lightretriever: encoding %% rows of auto-encoding %s', $1)",
                &[enc.id.into()],
            )?;
            let done = owner_count(who, &enc, |s| s.count_vectors(), &lock_wait)?;
            let (rate, last_batch_pid) = Spi::get_two_with_args::<f64, i32>(
                // Rows of the last minute's batches over the time they span (from the first one's
                // start, `at` being its transaction's start): a backlog that began 10 s ago is not
                // averaged over a minute, which would put its ETA six times too far.
                "SELECT (COALESCE(pg_catalog.sum(b.rows) FILTER (WHERE b.at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 minute'::pg_catalog.interval)), 0)
                         OPERATOR(pg_catalog./) GREATEST(1.0, LEAST(60.0, COALESCE(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-)
                             pg_catalog.min(b.at) FILTER (WHERE b.at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 minute'::pg_catalog.interval))), 60.0))))::pg_catalog.float8,
                        (pg_catalog.array_agg(b.worker_pid ORDER BY b.at DESC))[1]
                   FROM lightretriever.lr_encoding_batches b WHERE b.encoding_id OPERATOR(pg_catalog.=) $1",
                &[enc.id.into()],
            )?;
            // Error messages can quote the table's data: its owner's only (row-level security).
            let (error, error_at) = row_or_none(Spi::get_two_with_args::<String, pgrx::datum::TimestampWithTimeZone>(
                "SELECT r.error, r.at FROM lightretriever.lr_encoding_errors r WHERE r.encoding_id OPERATOR(pg_catalog.=) $1 ORDER BY r.id DESC LIMIT 1",
                &[enc.id.into()],
            ))
            .unwrap_or((None, None));
            // A Citus table's pending rows are in the table (its queue holds only attempts), but
            // those that failed for good.
            let queued = if enc.distributed {
                owner_count(who, &enc, |s| s.pending_count(), &lock_wait)?.zip(failed).map(|(p, f)| (p - f).max(0))
            } else {
                counts.map(|c| c.0.unwrap_or(0))
            };
            let in_flight = in_flight.unwrap_or(0);
            Ok::<_, pgrx::spi::SpiError>((
                enc.status.clone(),
                queued.map(|q| (q - in_flight).max(0)),
                in_flight,
                failed,
                done,
                rate.unwrap_or(0.0),
                error,
                error_at,
                worker.or(last_batch_pid),
            ))
        }).map_err(|(_, message)| message));
        let row = status.unwrap_or_else(|e| ("broken".to_owned(), None, 0, None, None, 0.0, Some(e), None, None));
        rows.push((enc.source, enc.model, enc.sparse_model, row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8));
    }
    TableIterator::new(rows)
}

/// The longest the status view, or `lr_failed_items`, waits in all for locks it does not get:
/// N tables locked by others take a second, not N seconds. Once it is spent, a locked table is
/// passed over at once (an unlocked one is still read).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// One call's [`LOCK_WAIT`]: only waits that end without the lock spend it, so reading slow
/// tables (a large count, the owner's row-level security) does not make a later, briefly
/// locked table unknown.
struct LockWait {
    spent: std::cell::Cell<Duration>,
}

impl LockWait {
    fn start() -> LockWait {
        LockWait { spent: std::cell::Cell::new(Duration::ZERO) }
    }

    /// [`lock_bounded`] with what is left of the budget.
    fn bounded<T>(&self, read: impl FnOnce() -> Result<Option<T>, pgrx::spi::SpiError>) -> Result<Option<T>, pgrx::spi::SpiError> {
        let started = Instant::now();
        let got = lock_bounded(LOCK_WAIT.saturating_sub(self.spent.get()), read);
        if matches!(got, Ok(None)) {
            self.spent.set(self.spent.get() + started.elapsed());
        }
        got
    }
}

/// `read` with its lock waits bounded by `wait`: None when a lock was not granted in time,
/// rather than stalling every caller for as long as someone holds it (an owner's `LOCK TABLE
/// … IN ACCESS EXCLUSIVE MODE`, a queue being dropped in a transaction left open). A cancel
/// ends the statement; other errors are raised (the status row shows as broken).
fn lock_bounded<T>(wait: Duration, read: impl FnOnce() -> Result<Option<T>, pgrx::spi::SpiError>) -> Result<Option<T>, pgrx::spi::SpiError> {
    // The caller's own lock_timeout if it is shorter; 0 would mean no bound at all.
    let callers = unsafe { pg_sys::LockTimeout } as u128;
    let millis = wait.as_millis().max(1);
    let millis = if callers > 0 { millis.min(callers) } else { millis };
    let millis = CString::new(format!("{millis}ms")).expect("no NUL");
    let lock_timeout = [(c"lock_timeout".to_owned(), millis)];
    match in_subtransaction_cancellable(|| with_settings(&lock_timeout, read)) {
        Ok(read) => read,
        Err((PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE, _)) => Ok(None),
        Err((_, message)) => raise(Code::ERRCODE_INTERNAL_ERROR, message, None),
    }
}

/// A count of `enc`'s rows (`count_sql`: rows with vectors, or a Citus table's rows waiting
/// for them), counted as its owner, by the name the table has at the count
/// ([`AutoEncoding::named_now`]: the view's list was read before any of its lock waits); None
/// while a lock keeps it from being counted within what is left of `wait`, and for a `reader`
/// who does not own the table: counting runs code of the owner's ([`read_as_owner_for`]).
fn owner_count(
    reader: pg_sys::Oid,
    enc: &AutoEncoding,
    count_sql: impl Fn(&Encoding) -> String,
    wait: &LockWait,
) -> Result<Option<i64>, pgrx::spi::SpiError> {
    read_as_owner_for(reader, enc.source, || {
        wait.bounded(|| match enc.named_now() {
            Some(enc) => Spi::get_one::<i64>(&count_sql(&enc.statements())),
            None => Ok(None),
        })
    })
    .unwrap_or(Ok(None))
}

/// Rows whose encoding failed `lightretriever.max_retries` times, of the tables the caller may
/// see: the primary key as jsonb (integer keys as numbers, others as their text), last error,
/// attempts. `lr_retry_failed` puts them back in the queue.
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
fn lr_failed_items_rows() -> TableIterator<
    'static,
    (
        name!(encoding_id, i32),
        name!(source, pg_sys::Oid),
        name!(row_key, Option<pgrx::JsonB>),
        name!(error, Option<String>),
        name!(attempts, Option<i32>),
        name!(failed_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    let who = caller();
    let mut rows = Vec::new();
    let lock_wait = LockWait::start();
    for enc in encodings(Encodings::All) {
        if !may_see(who, enc.source) {
            continue;
        }
        // Integer keys are shown as JSON numbers.
        let numeric: Vec<bool> = enc
            .key_attnums
            .iter()
            .map(|&attnum| [pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID].contains(&unsafe { pg_sys::get_atttype(enc.source, attnum) }))
            .collect();
        // A table whose queue cannot be read, or is locked past what is left of LOCK_WAIT (a queue
        // being dropped in a transaction left open), does not break or stall the view for every
        // table: it gets one row with no key that says why, and a WARNING. Not nothing: a program
        // counting its failed rows would read 0 and never see the warning. A cancel ends the view.
        let failed = flatten(in_subtransaction_cancellable(|| {
            lock_wait.bounded(|| elevated(|| Spi::connect(|c| {
                c.select(&enc.statements().failed_rows(), None, &[])?
                    .map(|r| {
                        Ok((
                            r.get::<Vec<String>>(1)?.unwrap_or_default(),
                            r.get::<String>(2)?,
                            r.get::<i32>(3)?.unwrap_or(0),
                            r.get::<pgrx::datum::TimestampWithTimeZone>(4)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })).map(Some))
        }).map_err(|(_, message)| message));
        let unknown = |why: String| {
            pgrx::warning!("lightretriever: the failed rows of {} {why}", enc.source_name);
            (enc.id, enc.source, None, Some(format!("lightretriever: failed rows {why}")), None, None)
        };
        let failed = match failed {
            Ok(Some(failed)) => failed,
            Ok(None) => {
                rows.push(unknown("are not shown: its queue is locked by another transaction".into()));
                continue;
            }
            Err(e) => {
                rows.push(unknown(format!("cannot be read: {e}")));
                continue;
            }
        };
        for (key, error, attempts, at) in failed {
            let mut object = serde_json::Map::new();
            for ((name, value), number) in enc.key_columns.iter().zip(key).zip(&numeric) {
                let v = match value.parse::<i64>() {
                    Ok(n) if *number => serde_json::Value::from(n),
                    _ => serde_json::Value::from(value),
                };
                object.insert(name.clone(), v);
            }
            rows.push((enc.id, enc.source, Some(pgrx::JsonB(serde_json::Value::Object(object))), error, Some(attempts), at));
        }
    }
    TableIterator::new(rows)
}

