//! Where full-model work runs: in the background worker's encoder service (the normal path,
//! models loaded once per worker), or — only when `lightretriever.allow_backend_models = on` and
//! no worker is running — in this backend.
//!
//! The backend sends the model's catalog record with each task, so the worker never reads the
//! catalog for it; it waits for the reply in 20 ms slices, checking for cancel and
//! statement_timeout between them. Many texts go in requests of `max_batch` texts each.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lr_model::ModelInfo;
use lr_service::{CallError, Client, Failure, Models, Output, Request, Task};
use pgrx::prelude::*;

use crate::error::{raise, Code};

/// The socket of worker `index`, relative to the data directory (every backend's working
/// directory), which also keeps it under the 108-byte socket path limit.
pub fn socket_path(index: i32) -> PathBuf {
    PathBuf::from(format!("lightretriever/encoder-{index}.sock"))
}

/// How long a backend waits for a worker that is starting or restarting.
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);

thread_local! {
    /// This backend's connection to a worker, kept between calls.
    static CONNECTION: RefCell<Option<Client>> = const { RefCell::new(None) };
    /// Models this backend runs itself (allow_backend_models only).
    static LOCAL_MODELS: RefCell<Models> = RefCell::new(Models::default());
}

/// Runs `task` on the registered model `name` and returns its vectors, one per input.
pub fn run(name: &str, info: &ModelInfo, task: Task) -> Output {
    let request = Request { model: name.to_owned(), info: info.clone(), task };
    let reply = if crate::guc::workers_registered() {
        in_chunks(&request, crate::guc::max_batch(), remote)
    } else if crate::guc::allow_backend_models() {
        in_chunks(&request, LOCAL_CHUNK, run_locally)
    } else {
        raise(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "lightretriever: no encoder worker is running, and models do not run in backends",
            Some(
                "Add lightretriever to shared_preload_libraries and restart the server (the worker holds each \
                 model once for all connections), or SET lightretriever.allow_backend_models = on to load models \
                 in this backend.",
            ),
        )
    };
    match reply {
        Ok(out) => out,
        Err(Failure::Load(m)) => raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, format!("lightretriever: {m}"), None),
        Err(Failure::Encode(m)) => raise(Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, format!("lightretriever: {m}"), None),
    }
}

/// Inputs per model run in this backend: cancel and statement_timeout are checked between runs.
const LOCAL_CHUNK: usize = 32;

/// Runs a text task `chunk` texts at a time, checking for cancel and statement_timeout between
/// the chunks. The worker runs a request to its end even when its caller has gone (cancelled,
/// timed out, disconnected), one request at a time for all databases: a whole array in one
/// request would hold it, and its memory, for as long as the array takes. A chunk of the
/// worker's `max_batch` costs no batching (no model run takes more from concurrent requests),
/// and chunks of similar lengths keep the padding the service's length sort kept. Each chunk's
/// answer must be as many vectors of the task's kind.
fn in_chunks(request: &Request, chunk: usize, run_one: fn(&Request) -> lr_service::Reply) -> lr_service::Reply {
    // A fit's spans (a superuser's) keep the forward passes the service runs them in.
    let chunk = if matches!(request.task, Task::Spans { .. }) { chunk.max(lr_service::SPAN_BATCH) } else { chunk };
    let texts = match &request.task {
        Task::Dense { texts } | Task::Sparse { texts } | Task::Spans { texts } if texts.len() > chunk => texts,
        _ => return run_one(request),
    };
    // Chunks of similar lengths, as the service would have batched the whole array (it sorts
    // each request by length): shortest first, the vectors put back in the array's order.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let sparse_task = matches!(request.task, Task::Sparse { .. });
    let mut dense: Vec<Vec<f32>> = if sparse_task { Vec::new() } else { vec![Vec::new(); texts.len()] };
    let mut sparse: Vec<Vec<(u32, f32)>> = if sparse_task { vec![Vec::new(); texts.len()] } else { Vec::new() };
    for chunk in order.chunks(chunk) {
        pgrx::check_for_interrupts!();
        let part: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
        let task = match &request.task {
            Task::Dense { .. } => Task::Dense { texts: part },
            Task::Sparse { .. } => Task::Sparse { texts: part },
            _ => Task::Spans { texts: part },
        };
        let wrong = || Failure::Encode(format!("the encoder answered a chunk of {} texts with other than as many vectors", chunk.len()));
        match run_one(&Request { model: request.model.clone(), info: request.info.clone(), task })? {
            Output::Dense(v) if !sparse_task && v.len() == chunk.len() => chunk.iter().zip(v).for_each(|(&i, x)| dense[i] = x),
            Output::Sparse(v) if sparse_task && v.len() == chunk.len() => chunk.iter().zip(v).for_each(|(&i, x)| sparse[i] = x),
            _ => return Err(wrong()),
        }
    }
    Ok(if sparse_task { Output::Sparse(sparse) } else { Output::Dense(dense) })
}

/// Runs `request` with this backend's own models (allow_backend_models).
fn run_locally(request: &Request) -> lr_service::Reply {
    let device = crate::guc::device_spec();
    LOCAL_MODELS.with(|m| m.borrow_mut().run(&request.model, &request.info, &device, &request.task))
}

/// Dense vectors (`Task::Dense`, `Spans`, `TableRows`).
pub fn dense(name: &str, info: &ModelInfo, task: Task) -> Vec<Vec<f32>> {
    match run(name, info, task) {
        Output::Dense(v) => v,
        _ => raise(Code::ERRCODE_INTERNAL_ERROR, "lightretriever: the worker answered other than dense vectors", None),
    }
}

/// Sparse vectors (`Task::Sparse`).
pub fn sparse(name: &str, info: &ModelInfo, texts: Vec<String>) -> Vec<Vec<(u32, f32)>> {
    match run(name, info, Task::Sparse { texts }) {
        Output::Sparse(v) => v,
        _ => raise(Code::ERRCODE_INTERNAL_ERROR, "lightretriever: the worker answered other than sparse vectors", None),
    }
}

/// Rankings of PE-Rank windows (`Task::Rerank`): per window, (candidate, score) best first.
pub fn rankings(name: &str, info: &ModelInfo, windows: Vec<lr_service::RerankWindow>) -> Vec<Vec<(u32, f32)>> {
    match run(name, info, Task::Rerank { windows }) {
        Output::Rankings(v) => v,
        _ => raise(Code::ERRCODE_INTERNAL_ERROR, "lightretriever: the worker answered other than rankings", None),
    }
}

/// Models loaded in this backend are dropped (the model was dropped or re-registered).
pub fn forget_local(name: &str) {
    LOCAL_MODELS.with(|m| m.borrow_mut().forget(name));
}

fn remote(request: &Request) -> lr_service::Reply {
    // A broken kept connection (the worker restarted) is retried once on a fresh one.
    for attempt in 0..2 {
        let mut client = match CONNECTION.with(|c| c.borrow_mut().take()) {
            Some(c) if attempt == 0 => c,
            _ => connect(),
        };
        // The connection is out of the slot while the call runs: if a cancel unwinds through
        // `check_for_interrupts`, it is dropped with its unread reply rather than reused.
        match client.call(request, || {
            pgrx::check_for_interrupts!();
            true
        }) {
            Ok(reply) => {
                CONNECTION.with(|c| *c.borrow_mut() = Some(client));
                return reply;
            }
            Err(CallError::Io(_)) if attempt == 0 => continue,
            Err(e) => raise(
                Code::ERRCODE_CONNECTION_FAILURE,
                format!("lightretriever: {e}"),
                Some("The encoder's inference process ended twice during this call (it is restarted each time: see the server log and lightretriever.lr_encoder_processes()); retry."),
            ),
        }
    }
    unreachable!("the second attempt returns or raises")
}

/// A connection to the first of the workers that answers, trying worker `first` (modulo their
/// number) first, then the next ones: (its index, the connection), or the last error.
pub fn connect_any(first: i32) -> std::io::Result<(i32, Client)> {
    let workers = crate::guc::workers().max(1);
    let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "no encoder worker");
    for k in 0..workers {
        let index = (first.rem_euclid(workers) + k) % workers;
        match Client::connect(&socket_path(index)) {
            Ok(c) => return Ok((index, c)),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// A connection to one of the workers (chosen by this backend's pid, so that backends spread
/// over them), waiting for a worker that is (re)starting.
fn connect() -> Client {
    let first = unsafe { pg_sys::MyProcPid };
    let started = Instant::now();
    loop {
        let last_error = match connect_any(first) {
            Ok((_, c)) => return c,
            Err(e) => e,
        };
        if started.elapsed() >= CONNECT_PATIENCE {
            raise(
                Code::ERRCODE_CONNECTION_FAILURE,
                format!("lightretriever: cannot reach the encoder worker: {last_error}"),
                Some("The worker starts with the server (lightretriever in shared_preload_libraries); see the server log for why it is not running."),
            );
        }
        pgrx::check_for_interrupts!();
        std::thread::sleep(Duration::from_millis(50));
    }
}
