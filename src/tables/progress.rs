//! Progress of the long superuser calls (table builds, fits), for every session to see:
//! `lr_progress` (a view, as `pg_stat_progress_*`) and `lr_build_progress()` (builds only, as
//! before 0.5.0). The running transaction's rows are invisible to other sessions, so each call
//! publishes a small file per backend and operation instead, removed when the call ends.

use std::time::{Duration, Instant};

use pgrx::prelude::*;

use crate::error::{Code, OrRaise};

/// One JSON file per (backend, operation), under the data directory.
const PROGRESS_DIR: &str = "lightretriever/progress";

/// Rewrites of a file at most this often (a build reports every batch).
const WRITE_EVERY: Duration = Duration::from_millis(250);

/// This backend's progress file for one operation; removed when dropped (also on error, as the
/// error unwinds through the call).
pub struct Progress {
    file: String,
    head: serde_json::Value,
    stage: String,
    stage_started_at: Option<String>,
    written: Option<Instant>,
}

fn now_text() -> Option<String> {
    // The clock, not the transaction's start: a stage starts within the call.
    Spi::get_one::<String>("SELECT pg_catalog.clock_timestamp()::pg_catalog.text").ok().flatten()
}

impl Progress {
    /// `operation`: "build" or "fit".
    pub fn start(operation: &str, model: &str, instruction: Option<&str>) -> Self {
        let _ = std::fs::create_dir_all(PROGRESS_DIR);
        let pid = unsafe { pgrx::pg_sys::MyProcPid };
        let database = unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32();
        let head = serde_json::json!({"pid": pid, "database": database, "operation": operation, "model": model,
                                      "instruction": instruction.unwrap_or(""), "started_at": now_text()});
        let mut p = Progress { file: format!("{PROGRESS_DIR}/{pid}-{operation}.json"), head, stage: String::new(), stage_started_at: None, written: None };
        p.update("starting", 0.0, None);
        p
    }

    /// `fraction` (0..=1) of `stage` is done (`done` of `total` items when counted).
    pub fn update(&mut self, stage: &str, fraction: f64, counted: Option<(usize, usize)>) {
        let new_stage = stage != self.stage;
        if new_stage {
            self.stage = stage.to_owned();
            self.stage_started_at = now_text();
        }
        if !new_stage && fraction < 1.0 && self.written.is_some_and(|w| w.elapsed() < WRITE_EVERY) {
            return;
        }
        let mut v = self.head.clone();
        v["stage"] = stage.into();
        v["stage_started_at"] = self.stage_started_at.clone().into();
        v["fraction"] = fraction.clamp(0.0, 1.0).into();
        if let Some((done, total)) = counted {
            v["done"] = done.into();
            v["total"] = total.into();
        }
        // Written beside and renamed, so that a reader never sees half a file.
        let tmp = format!("{}.tmp", self.file);
        if std::fs::write(&tmp, v.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
        }
        self.written = Some(Instant::now());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The progress files of this database's live backends (a backend that crashed mid-call leaves
/// its file). Builds and fits in other databases are not shown: their model names and
/// instruction texts are those databases' business.
fn live_progress() -> Vec<serde_json::Value> {
    let live: Vec<i32> = Spi::connect(|c| {
        c.select(
            "SELECT pid FROM pg_catalog.pg_stat_activity WHERE datid OPERATOR(pg_catalog.=) $1",
            None,
            &[unsafe { pg_sys::MyDatabaseId }.into()],
        )?
            .map(|r| r.get::<i32>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(PROGRESS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        // This database's: a file a crashed backend of another database left may carry a pid
        // that a backend of this one has now.
        .filter(|v| v["database"].as_u64() == Some(unsafe { pg_sys::MyDatabaseId }.to_u32() as u64))
        .filter(|v| live.contains(&(v["pid"].as_i64().unwrap_or(0) as i32)))
        .collect();
    out.sort_by_key(|v| (v["pid"].as_i64(), v["operation"].as_str().map(str::to_owned)));
    out
}

fn text(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}

/// Builds and fits running now in this database, in any session: one row per backend and operation (a fit that
/// builds its untrained table first shows both). Read through the view `lr_progress`.
#[pg_extern(volatile, parallel_restricted)]
fn lr_progress_rows() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(operation, String),
        name!(model, String),
        name!(instruction, String),
        name!(stage, String),
        name!(fraction, f64),
        name!(done, Option<i64>),
        name!(total, Option<i64>),
        name!(started_at, Option<String>),
        name!(stage_started_at, Option<String>),
    ),
> {
    let rows: Vec<_> = live_progress()
        .iter()
        .map(|v| {
            (
                v["pid"].as_i64().unwrap_or(0) as i32,
                text(v, "operation"),
                text(v, "model"),
                text(v, "instruction"),
                text(v, "stage"),
                v["fraction"].as_f64().unwrap_or(0.0),
                v["done"].as_i64(),
                v["total"].as_i64(),
                v["started_at"].as_str().map(str::to_owned),
                v["stage_started_at"].as_str().map(str::to_owned),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Table builds running now in this database, in any session: one row per building backend.
#[pg_extern(volatile, parallel_restricted)]
fn lr_build_progress() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(model, String),
        name!(instruction, String),
        name!(done, i64),
        name!(total, i64),
        name!(started_at, Option<String>),
    ),
> {
    let rows: Vec<_> = live_progress()
        .iter()
        .filter(|v| v["operation"] == "build")
        .map(|v| {
            (
                v["pid"].as_i64().unwrap_or(0) as i32,
                text(v, "model"),
                text(v, "instruction"),
                v["done"].as_i64().unwrap_or(0),
                v["total"].as_i64().unwrap_or(0),
                v["started_at"].as_str().map(str::to_owned),
            )
        })
        .collect();
    TableIterator::new(rows)
}
