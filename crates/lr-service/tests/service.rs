//! The service on the real default models: answers through the socket equal the encoders called
//! directly, concurrent tasks share model runs, failures are answers (not a dead service).

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::{DocumentEncoder, SparseDocumentEncoder};
use lr_service::{Client, Failure, Output, Request, Service, Task};
use lr_testkit::{dense_model_dir, sparse_model_dir};

fn info(dir: PathBuf) -> ModelInfo {
    ModelInfo::inspect(&dir, &ModelOptions::default()).unwrap()
}

fn socket(name: &str) -> (PathBuf, UnixListener) {
    let dir = std::env::temp_dir().join(format!("lr-service-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    (path, listener)
}

fn dense(o: Output) -> Vec<Vec<f32>> {
    match o {
        Output::Dense(v) => v,
        other => panic!("expected dense, got {other:?}"),
    }
}

/// Batched and alone differ only by padding arithmetic: allow float noise, nothing more.
fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 2e-6)
}

const TEXTS: [&str; 8] = [
    "the library catalogue",
    "How do scientists meet their information needs?",
    "indexing",
    "a much longer sentence about retrieval of documents in a card catalogue with subject headings",
    "",
    "Ünïcode têxt and punctuation!?",
    "cats",
    "information retrieval evaluation",
];

#[test]
fn concurrent_socket_calls_match_direct_encoding_and_share_batches() {
    let minilm = info(dense_model_dir());
    let direct = DocumentEncoder::load(&minilm, &Device::Cpu).unwrap();
    let service = Service::start("cpu", 32);
    let (path, listener) = socket("dense.sock");
    service.serve(listener);

    // Warm the model, then hold the inference thread with a large task while 8 clients queue.
    let big: Vec<String> = (0..64).map(|i| format!("warm up text number {i} about libraries")).collect();
    let warm = Request { model: "minilm".into(), info: minilm.clone(), task: Task::Dense { texts: vec!["x".into()] } };
    service.run(warm).unwrap();
    let before = service.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    let held = service.submit(Request { model: "minilm".into(), info: minilm.clone(), task: Task::Dense { texts: big } });
    let handles: Vec<_> = TEXTS
        .iter()
        .map(|t| {
            let (path, info, text) = (path.clone(), minilm.clone(), t.to_string());
            std::thread::spawn(move || {
                let mut c = Client::connect(&path).unwrap();
                let mut waits = 0;
                let req = Request { model: "minilm".into(), info, task: Task::Dense { texts: vec![text] } };
                let reply = c.call(&req, || { waits += 1; true }).unwrap().unwrap();
                (dense(reply).pop().unwrap(), waits)
            })
        })
        .collect();
    let results: Vec<(Vec<f32>, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(dense(held.recv().unwrap().unwrap()).len(), 64);
    for (text, (got, _)) in TEXTS.iter().zip(&results) {
        let want = direct.encode(&[text]).unwrap().pop().unwrap();
        assert!(close(got, &want), "{text:?}");
    }
    assert!(results.iter().any(|(_, waits)| *waits > 0), "callers wait in slices");
    let batches = service.stats().batches.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(batches < 1 + TEXTS.len() as u64, "8 queued single-text tasks ran in {} batches", batches - 1);
    assert_eq!(service.stats().loads.load(std::sync::atomic::Ordering::Relaxed), 1, "loaded once");
}

#[test]
fn sparse_and_table_rows_match_direct_and_failures_are_replies() {
    let splade = info(sparse_model_dir());
    let minilm = info(dense_model_dir());
    let service = Service::start("cpu", 32);
    let (path, listener) = socket("mixed.sock");
    service.serve(listener);
    let mut c = Client::connect(&path).unwrap();

    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let req = Request { model: "splade".into(), info: splade.clone(), task: Task::Sparse { texts: texts.clone() } };
    let got = match c.call(&req, || true).unwrap().unwrap() {
        Output::Sparse(v) => v,
        other => panic!("{other:?}"),
    };
    let direct = SparseDocumentEncoder::load(&splade, &Device::Cpu).unwrap();
    let refs: Vec<&str> = TEXTS.to_vec();
    let want = direct.encode(&refs).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.iter().map(|p| p.0).collect::<Vec<_>>(), w.iter().map(|p| p.0).collect::<Vec<_>>());
        assert!(g.iter().zip(w).all(|(a, b)| (a.1 - b.1).abs() <= 1e-5));
    }

    let ids: Vec<u32> = vec![0, 101, 2000, 30521];
    let req = Request { model: "minilm".into(), info: minilm.clone(), task: Task::TableRows { instruction: None, ids: ids.clone() } };
    let rows = dense(c.call(&req, || true).unwrap().unwrap());
    let want = DocumentEncoder::load(&minilm, &Device::Cpu).unwrap().table_rows(None, &ids).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().zip(&want).all(|(a, b)| close(a, b)));

    // An unreadable model is a Load failure; the same connection keeps working afterwards.
    let mut broken = minilm.clone();
    broken.path = PathBuf::from("/nonexistent/model");
    let req = Request { model: "broken".into(), info: broken, task: Task::Dense { texts: vec!["x".into()] } };
    match c.call(&req, || true).unwrap() {
        Err(Failure::Load(m)) => assert!(m.contains("cannot load model \"broken\""), "{m}"),
        other => panic!("expected a load failure, got {other:?}"),
    }
    // A BERT model asked for an instruction table is an Encode failure.
    let req = Request { model: "minilm".into(), info: minilm.clone(), task: Task::TableRows { instruction: Some("x".into()), ids: vec![1] } };
    assert!(matches!(c.call(&req, || true).unwrap(), Err(Failure::Encode(_))));
    // Empty tasks answer at once.
    let req = Request { model: "minilm".into(), info: minilm.clone(), task: Task::Dense { texts: vec![] } };
    assert_eq!(c.call(&req, || true).unwrap().unwrap(), Output::Dense(vec![]));
    // A malformed frame is answered with an error, not a dropped service.
    let mut raw = Client::connect(&path).unwrap();
    raw.write_raw(&[2, 0, 0, 0, b'{', b'x']).unwrap();
    let req = Request { model: "minilm".into(), info: minilm, task: Task::Dense { texts: vec!["after".into()] } };
    assert_eq!(dense(c.call(&req, || true).unwrap().unwrap()).len(), 1);
}

#[test]
fn a_decoder_used_dense_and_sparse_is_loaded_once() {
    let qwen = info(lr_testkit::tiny_models_dir().join("tiny-qwen2"));
    let mut models = lr_service::Models::default();
    let texts = vec!["the library catalogue".to_string(), "indexing of documents".to_string()];
    let dense_reply = models.run("qwen", &qwen, "cpu", &Task::Dense { texts: texts.clone() }).unwrap();
    let sparse_reply = models.run("qwen", &qwen, "cpu", &Task::Sparse { texts: texts.clone() }).unwrap();
    assert_eq!(models.loads(), 1, "the sparse task reuses the decoder the dense task loaded");
    let strs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(dense(dense_reply), DocumentEncoder::load(&qwen, &Device::Cpu).unwrap().encode(&strs).unwrap());
    let Output::Sparse(got) = sparse_reply else { panic!("expected sparse") };
    assert_eq!(got, SparseDocumentEncoder::load(&qwen, &Device::Cpu).unwrap().encode(&strs).unwrap());

    // The other order, and a changed record reloads both kinds.
    let mut models = lr_service::Models::default();
    models.run("qwen", &qwen, "cpu", &Task::Sparse { texts: texts.clone() }).unwrap();
    models.run("qwen", &qwen, "cpu", &Task::Dense { texts: texts.clone() }).unwrap();
    assert_eq!(models.loads(), 1);
    let mut changed = qwen.clone();
    changed.sparse_top_k = Some(5);
    let Output::Sparse(pruned) = models.run("qwen", &changed, "cpu", &Task::Sparse { texts: texts.clone() }).unwrap() else {
        panic!("expected sparse")
    };
    assert_eq!(models.loads(), 2, "a changed record is a new load");
    assert!(pruned.iter().all(|v| v.len() <= 5));
    models.run("qwen", &changed, "cpu", &Task::Dense { texts }).unwrap();
    assert_eq!(models.loads(), 2, "…which the dense side then shares");
}

/// A window of `n` reference embeddings (the tiny PE-Rank's first case with n candidates).
fn window(query: &str, n: usize) -> lr_service::RerankWindow {
    let r = lr_testkit::tiny_reference("pe-rank-tiny");
    let case = r["cases"].as_array().unwrap().iter().find(|c| c["embeddings"].as_array().unwrap().len() == n).unwrap();
    lr_service::RerankWindow { query: query.into(), embeddings: lr_testkit::matrix(&case["embeddings"]), passages: None }
}

#[test]
fn a_bad_window_fails_alone_not_the_windows_batched_with_it() {
    let service = Service::start("cpu", 32);
    let reranker = info(lr_testkit::tiny_models_dir().join("pe-rank-tiny"));
    let request = |w: lr_service::RerankWindow| Request { model: "perank".into(), info: reranker.clone(), task: Task::Rerank { windows: vec![w] } };
    let good = window("which river is the longest", 5);
    let alone = service.run(request(good.clone())).unwrap();
    // While a long window runs, a bad one (the placeholder token in its query) and a good one
    // queue up and share the next batch.
    let busy = service.submit(request(window("a long one", 20)));
    let bad = service.submit(request(window("what is <PLACEHOLDER>?", 5)));
    let fine = service.submit(request(good));
    assert!(busy.recv().unwrap().is_ok());
    let e = bad.recv().unwrap().unwrap_err();
    assert!(e.message().contains("<PLACEHOLDER>"), "{e}");
    assert_eq!(fine.recv().unwrap().unwrap(), alone, "the good window's answer is its own");
}
