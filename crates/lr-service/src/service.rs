//! The encoder service: one inference thread that owns every loaded model, a queue of tasks
//! that it drains in micro-batches, and (optionally) a Unix-socket front end for backends.
//!
//! Tasks that arrive while a batch runs wait in the queue; the next batch takes every waiting
//! task for the same model and task kind (up to `max_batch` inputs), so concurrent callers share
//! forward passes without any added delay. Nothing here calls PostgreSQL.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

use lr_model::ModelInfo;
use lr_encoders::{DocumentEncoder, SparseDocumentEncoder};
use lr_rerank::{Reranker, RerankerCheckpoint, Window};

use crate::protocol::{self, Failure, Output, Reply, Request, Task};

/// Sequences per forward pass for spans (same as lr-fit's measured best on 2 cores).
pub const SPAN_BATCH: usize = 64;

struct Job {
    request: Request,
    reply: Sender<Reply>,
}

/// Counters for tests, the status view and benches.
#[derive(Debug, Default)]
pub struct Stats {
    /// Model runs (each may serve several tasks).
    pub batches: AtomicU64,
    /// Tasks answered.
    pub tasks: AtomicU64,
    /// Inputs encoded.
    pub inputs: AtomicU64,
    /// Model loads (a failed load counts too).
    pub loads: AtomicU64,
}

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    device: Mutex<String>,
    max_batch: usize,
    stats: Stats,
}

/// A handle on the running service; clones share it.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

/// A loaded model: what it was loaded from, so that a re-registered model is reloaded.
struct Loaded<T> {
    info: ModelInfo,
    device: String,
    model: T,
}

/// Loaded models by registered name: the inference thread's, or a backend's own when
/// `lightretriever.allow_backend_models` lets it run models itself.
#[derive(Default)]
pub struct Models {
    dense: HashMap<String, Loaded<DocumentEncoder>>,
    sparse: HashMap<String, Loaded<SparseDocumentEncoder>>,
    rerankers: HashMap<String, Loaded<Reranker>>,
    loads: u64,
}

fn load_reranker(info: &ModelInfo, device: &lr_model::Device) -> Result<Reranker, lr_model::ModelError> {
    let mut checkpoint = RerankerCheckpoint::inspect(&info.path)?;
    // The registered max_length option bounds the prompt and the decoded candidates.
    checkpoint.max_length = checkpoint.max_length.min(info.max_length);
    Reranker::load(&checkpoint, device)
}

impl Service {
    /// Starts the inference thread. `device` is a `lightretriever.device` value (`cpu`, `cuda:0`);
    /// `max_batch` bounds the inputs of one micro-batch of documents.
    pub fn start(device: &str, max_batch: usize) -> Service {
        // The CPU GEMM library (and its OpenMP runtime) loads now, while this process has no
        // thread but this one, not later on whichever pool thread first multiplies.
        let _ = lr_model::dnnl::backend();
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            device: Mutex::new(device.to_owned()),
            max_batch: max_batch.max(1),
            stats: Stats::default(),
        });
        let s = shared.clone();
        crate::spawn_quiet("lr-inference", move || inference_loop(&s));
        Service { shared }
    }

    /// Where models load from now on (models already loaded are reloaded on their next use).
    pub fn set_device(&self, device: &str) {
        *self.shared.device.lock().unwrap() = device.to_owned();
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Tasks waiting for the inference thread.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().unwrap().len()
    }

    /// Queues `request`; its reply arrives on the receiver.
    pub fn submit(&self, request: Request) -> Receiver<Reply> {
        let (tx, rx) = channel();
        if request.task.is_empty() {
            let _ = tx.send(Ok(empty_output(&request.task)));
            return rx;
        }
        self.shared.queue.lock().unwrap().push_back(Job { request, reply: tx });
        self.shared.ready.notify_one();
        rx
    }

    /// Runs `request` and waits for it.
    pub fn run(&self, request: Request) -> Reply {
        self.submit(request).recv().unwrap_or_else(|_| Err(Failure::Encode("the inference thread stopped".into())))
    }

    /// Serves backends on `listener`: one thread per connection, each connection a sequence of
    /// request/reply frames. Returns at once.
    pub fn serve(&self, listener: UnixListener) {
        let service = self.clone();
        crate::spawn_quiet("lr-accept", move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let service = service.clone();
                crate::spawn_quiet("lr-connection", move || service.connection(stream));
            }
        });
    }

    fn connection(&self, stream: UnixStream) {
        let Ok(read_half) = stream.try_clone() else { return };
        let mut reader = BufReader::new(read_half);
        let mut writer = BufWriter::new(stream);
        // A read error is the backend going away (its statement was cancelled, or it exited).
        while let Ok(body) = protocol::read_frame(&mut reader) {
            let reply = match protocol::decode_request(&body) {
                Ok(request) => self.run(request),
                Err(e) => Err(Failure::Encode(e)),
            };
            if protocol::write_frame(&mut writer, &protocol::encode_reply(&reply)).is_err() {
                return;
            }
        }
    }
}

fn empty_output(task: &Task) -> Output {
    match task {
        Task::Sparse { .. } => Output::Sparse(Vec::new()),
        Task::Rerank { .. } => Output::Rankings(Vec::new()),
        _ => Output::Dense(Vec::new()),
    }
}

/// Tasks that may share one model run: same model (and record), same task kind and instruction.
fn same_batch(a: &Request, b: &Request) -> bool {
    a.model == b.model
        && a.info == b.info
        && match (&a.task, &b.task) {
            (Task::Dense { .. }, Task::Dense { .. })
            | (Task::Sparse { .. }, Task::Sparse { .. })
            | (Task::Spans { .. }, Task::Spans { .. }) => true,
            // Windows of one mode only: a batch is padded to its longest prompt, and a text-mode
            // prompt is about ten times an embedding-mode one.
            (Task::Rerank { windows: x }, Task::Rerank { windows: y }) => {
                x.first().map(|w| w.passages.is_some()) == y.first().map(|w| w.passages.is_some())
            }
            (Task::TableRows { instruction: x, .. }, Task::TableRows { instruction: y, .. }) => x == y,
            _ => false,
        }
}

/// The first waiting job and every later one that can join its batch, up to `max_batch` inputs
/// (a single job larger than that runs alone; the encoders split it into forward passes).
fn take_batch(queue: &mut VecDeque<Job>, max_batch: usize) -> Vec<Job> {
    let first = queue.pop_front().expect("called with a non-empty queue");
    let mut inputs = first.request.task.len();
    let mut batch = vec![first];
    let mut i = 0;
    while i < queue.len() && inputs < max_batch {
        if same_batch(&batch[0].request, &queue[i].request) && inputs + queue[i].request.task.len() <= max_batch {
            let job = queue.remove(i).unwrap();
            inputs += job.request.task.len();
            batch.push(job);
        } else {
            i += 1;
        }
    }
    batch
}

fn inference_loop(shared: &Shared) {
    let mut models = Models::default();
    loop {
        let batch = {
            let mut queue = shared.queue.lock().unwrap();
            while queue.is_empty() {
                queue = shared.ready.wait(queue).unwrap();
            }
            take_batch(&mut queue, shared.max_batch)
        };
        let device = shared.device.lock().unwrap().clone();
        let counts: Vec<usize> = batch.iter().map(|j| j.request.task.len()).collect();
        let loads_before = models.loads();
        let result = guarded(|| run_batch(&mut models, &device, &batch));
        shared.stats.loads.fetch_add(models.loads() - loads_before, Ordering::Relaxed);
        shared.stats.batches.fetch_add(1, Ordering::Relaxed);
        shared.stats.tasks.fetch_add(batch.len() as u64, Ordering::Relaxed);
        shared.stats.inputs.fetch_add(counts.iter().sum::<usize>() as u64, Ordering::Relaxed);
        match result {
            Ok(output) => {
                for (job, part) in batch.into_iter().zip(split_output(output, &counts)) {
                    let _ = job.reply.send(Ok(part));
                }
            }
            // One caller's bad input must not fail the others it was batched with: each runs
            // alone again, and gets its own answer (a model that cannot load fails them all).
            Err(Failure::Encode(_)) if batch.len() > 1 => {
                for job in batch {
                    let alone = guarded(|| run_batch(&mut models, &device, std::slice::from_ref(&job)));
                    let _ = job.reply.send(alone);
                }
            }
            Err(failure) => {
                for job in batch {
                    let _ = job.reply.send(Err(failure.clone()));
                }
            }
        }
    }
}

/// A model run whose panic is its failure, not the inference thread's end.
fn guarded(run: impl FnOnce() -> Reply) -> Reply {
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Failure::Encode(format!("the model panicked: {msg}")))
    })
}

fn split_output(output: Output, counts: &[usize]) -> Vec<Output> {
    fn split<T>(mut rows: Vec<T>, counts: &[usize]) -> Vec<Vec<T>> {
        let mut parts = Vec::with_capacity(counts.len());
        for &n in counts.iter().rev() {
            let at = rows.len() - n;
            parts.push(rows.split_off(at));
        }
        parts.reverse();
        parts
    }
    match output {
        Output::Dense(rows) => split(rows, counts).into_iter().map(Output::Dense).collect(),
        Output::Sparse(rows) => split(rows, counts).into_iter().map(Output::Sparse).collect(),
        Output::Rankings(rows) => split(rows, counts).into_iter().map(Output::Rankings).collect(),
    }
}

/// A model from `cache`, loaded on first use and again when its record or the device changed;
/// `shared` (a decoder already loaded for the other task kind) is taken instead of a load.
fn cached<'a, T>(
    cache: &'a mut HashMap<String, Loaded<T>>,
    name: &str,
    info: &ModelInfo,
    device: &str,
    loads: &mut u64,
    shared: Option<T>,
    load: fn(&ModelInfo, &lr_model::Device) -> Result<T, lr_model::ModelError>,
) -> Result<&'a T, Failure> {
    if fresh(cache, name, info, device).is_none() {
        cache.remove(name);
        let model = match shared {
            Some(model) => model,
            None => {
                *loads += 1;
                let dev = lr_model::parse_device(device).map_err(|e| Failure::Load(e.to_string()))?;
                load(info, &dev).map_err(|e| Failure::Load(format!("cannot load model \"{name}\": {e}")))?
            }
        };
        cache.insert(name.to_owned(), Loaded { info: info.clone(), device: device.to_owned(), model });
    }
    Ok(&cache[name].model)
}

/// `name`'s entry in `cache` when it was loaded from `info` on `device`.
fn fresh<'a, T>(cache: &'a HashMap<String, Loaded<T>>, name: &str, info: &ModelInfo, device: &str) -> Option<&'a T> {
    cache.get(name).filter(|l| &l.info == info && l.device == device).map(|l| &l.model)
}

impl Models {
    /// Runs `task` on model `name` (loading it first if needed) on `device`.
    pub fn run(&mut self, name: &str, info: &ModelInfo, device: &str, task: &Task) -> Reply {
        let failed = |e: lr_model::ModelError| Failure::Encode(e.to_string());
        let mut loads = 0;
        let out = match task {
            Task::Rerank { windows } => {
                let reranker = cached(&mut self.rerankers, name, info, device, &mut loads, None, load_reranker)?;
                let windows: Vec<Window> = windows
                    .iter()
                    .map(|w| Window { query: &w.query, embeddings: &w.embeddings, passages: w.passages.as_deref() })
                    .collect();
                let rankings = reranker.rank(&windows).map_err(failed)?;
                Output::Rankings(
                    rankings
                        .into_iter()
                        .map(|r| r.order.into_iter().map(|i| i as u32).zip(r.scores).collect())
                        .collect(),
                )
            }
            Task::Sparse { texts } => {
                let shared = fresh(&self.dense, name, info, device)
                    .and_then(DocumentEncoder::decoder_llm)
                    .map(|d| SparseDocumentEncoder::Llm(d.clone()));
                let enc = cached(&mut self.sparse, name, info, device, &mut loads, shared, SparseDocumentEncoder::load)?;
                Output::Sparse(enc.encode(&strs(texts)).map_err(failed)?)
            }
            _ => {
                let shared = fresh(&self.sparse, name, info, device)
                    .and_then(SparseDocumentEncoder::decoder_llm)
                    .map(|d| DocumentEncoder::Llm(d.clone()));
                let enc = cached(&mut self.dense, name, info, device, &mut loads, shared, DocumentEncoder::load)?;
                Output::Dense(match task {
                    Task::Dense { texts } => enc.encode(&strs(texts)).map_err(failed)?,
                    Task::Spans { texts } => enc.encode_document_ids(&strs(texts), SPAN_BATCH).map_err(failed)?,
                    Task::TableRows { instruction, ids } => enc.table_rows(instruction.as_deref(), ids).map_err(failed)?,
                    Task::Sparse { .. } | Task::Rerank { .. } => unreachable!(),
                })
            }
        };
        self.loads += loads;
        Ok(out)
    }

    /// Forgets every loaded copy of `name` (the model was dropped or re-registered).
    pub fn forget(&mut self, name: &str) {
        self.dense.remove(name);
        self.sparse.remove(name);
        self.rerankers.remove(name);
    }

    /// Model loads so far (failed ones included).
    pub fn loads(&self) -> u64 {
        self.loads
    }
}

/// The tasks of a batch as one task (they share model, kind and instruction).
fn merged(batch: &[Job]) -> Task {
    let texts = || batch.iter().flat_map(|j| match &j.request.task {
        Task::Dense { texts } | Task::Sparse { texts } | Task::Spans { texts } => texts.clone(),
        Task::TableRows { .. } | Task::Rerank { .. } => unreachable!("batched by kind"),
    }).collect();
    match &batch[0].request.task {
        Task::Dense { .. } => Task::Dense { texts: texts() },
        Task::Sparse { .. } => Task::Sparse { texts: texts() },
        Task::Spans { .. } => Task::Spans { texts: texts() },
        Task::Rerank { .. } => Task::Rerank {
            windows: batch.iter().flat_map(|j| match &j.request.task {
                Task::Rerank { windows } => windows.clone(),
                _ => unreachable!("batched by kind"),
            }).collect(),
        },
        Task::TableRows { instruction, .. } => Task::TableRows {
            instruction: instruction.clone(),
            ids: batch.iter().flat_map(|j| match &j.request.task {
                Task::TableRows { ids, .. } => ids.clone(),
                _ => unreachable!("batched by kind"),
            }).collect(),
        },
    }
}

fn run_batch(models: &mut Models, device: &str, batch: &[Job]) -> Reply {
    let first = &batch[0].request;
    if batch.len() == 1 {
        return models.run(&first.model, &first.info, device, &first.task);
    }
    models.run(&first.model, &first.info, device, &merged(batch))
}

fn strs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(model: &str, task: Task) -> (Job, Receiver<Reply>) {
        let info: ModelInfo = serde_json::from_value(serde_json::json!({
            "path": "/nowhere", "family": "bert", "architecture": "BertModel", "hidden_size": 4,
            "vocab_size": 10, "max_length": 8, "pooling": "mean", "has_lm_head": false, "weight_files": [],
        }))
        .unwrap_or_else(|_| panic!("ModelInfo fields changed; update this test"));
        let (tx, rx) = channel();
        (Job { request: Request { model: model.into(), info, task }, reply: tx }, rx)
    }

    fn dense(n: usize) -> Task {
        Task::Dense { texts: (0..n).map(|i| i.to_string()).collect() }
    }

    #[test]
    fn batches_join_same_model_and_kind_up_to_the_limit() {
        let mut q: VecDeque<Job> = VecDeque::new();
        q.push_back(job("a", dense(3)).0);
        q.push_back(job("b", dense(1)).0);
        q.push_back(job("a", Task::Sparse { texts: vec!["x".into()] }).0);
        q.push_back(job("a", dense(4)).0);
        q.push_back(job("a", dense(2)).0);
        let batch = take_batch(&mut q, 8);
        let sizes: Vec<(String, usize)> = batch.iter().map(|j| (j.request.model.clone(), j.request.task.len())).collect();
        assert_eq!(sizes, vec![("a".into(), 3), ("a".into(), 4)]);
        assert_eq!(q.len(), 3, "b, the sparse task and the one that would overflow stay queued in order");
        assert_eq!(q[0].request.model, "b");
        let big = take_batch(&mut VecDeque::from([job("a", dense(100)).0]), 8);
        assert_eq!(big.len(), 1);
    }

    #[test]
    fn outputs_split_back_in_order() {
        let out = Output::Dense((0..6).map(|i| vec![i as f32]).collect());
        let parts = split_output(out, &[2, 0, 4]);
        assert_eq!(
            parts,
            vec![
                Output::Dense(vec![vec![0.0], vec![1.0]]),
                Output::Dense(vec![]),
                Output::Dense(vec![vec![2.0], vec![3.0], vec![4.0], vec![5.0]]),
            ]
        );
    }
}
