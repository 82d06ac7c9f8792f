//! PE-Rank reranking speed at a real decoder shape, on random weights (no PE-Rank weights are
//! reachable offline): `make bench-rerank` (or `cargo bench -p lr-benches --profile dev --bench
//! rerank`). One run prints, side by side:
//!
//! - top-20 (one window) and top-100 (9 windows, window 20 step 10, back to front) in embedding
//!   mode (one token per passage) vs text mode (the placeholder followed by the passage text,
//!   the paper's "embeddings + text" prompt, with the same PE-Rank decoding), same candidates:
//!   100-word CISI abstracts and one short CISI query;
//! - prefill vs decode for one window, timed on the decoder API (the prompt's forward, then the
//!   19 single-position forwards through the KV cache that `rank` runs for the picks);
//! - windows/s of 8 concurrent callers (8 different CISI queries) vs 1 through
//!   `lr_service::Service` (embedding mode);
//! - FLOPs and bytes per top-20 window at this shape and, on paper, for the released checkpoint
//!   (Mistral-7B, bf16), with a roofline projection on one GPU.
//!
//! The model is Qwen2.5-0.5B's shape as `embed_qwen2` with a 768 → 896 projector, written once
//! under target/lr-bench by scripts/make_test_models.py (`--real pe-rank-qwen2.5-0.5b`). Passage
//! embeddings are random unit vectors: encoding passages is not part of reranking (lightretriever
//! stores them with the documents), and the weights are random, so only the speed means anything.
//! On 2 cores one text-mode window takes minutes, so by default text-mode top-100 is 9 × the
//! measured text window and the text-mode prefill is derived (both stated in the output);
//! LR_BENCH_RERANK_FULL=1 runs them (about 9 text windows more). The embedding top-20 is the
//! fastest of 3 runs, the text top-20 of LR_BENCH_RERANK_REPS (default 1; more raises both);
//! everything else runs once. LR_BENCH_RERANK_CALLS (default 1) is the requests each of the 8
//! service callers makes. About 7.5 minutes on 2 idle cores.

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::Instant;

use candle_core::Tensor;
use lr_model::{Decoder, Device, ModelInfo, ModelOptions};
use lr_rerank::{windows, Reranker, RerankerCheckpoint, Window};
use lr_service::protocol::{Output, RerankWindow, Request, Task};
use lr_service::Service;
use lr_testkit::Rng;

const MODEL: &str = "pe-rank-qwen2.5-0.5b";
/// CISI query 14, as short as a TREC DL query.
const QUERY_ID: &str = "14";
const PASSAGE_WORDS: usize = 100;
const CANDIDATES: usize = 100;
const WINDOW: usize = 20;
const STEP: usize = 10;
const CALLERS: usize = 8;
/// One query a caller in the service measurement (CISI queries of 6–9 words, as short as query
/// 14): concurrent callers rarely ask the same thing, and windows of one query share more of
/// their prompt (its keys and values are computed once per batch) than windows of different ones.
const CALLER_QUERY_IDS: [&str; CALLERS] = ["14", "3", "21", "25", "27", "28", "29", "30"];

fn model_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lr-bench");
    let dir = root.join(format!("real-{MODEL}"));
    if !dir.join("config.json").is_file() {
        eprintln!("writing a random-weight {MODEL} to {} (once)...", dir.display());
        let status = std::process::Command::new("python3")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["scripts/make_test_models.py", "--out"])
            .arg(&root)
            .args(["--real", MODEL])
            .status()
            .expect("python3 with numpy is needed (scripts/setup.sh)");
        assert!(status.success());
    }
    dir
}

/// The query, the callers' queries and the first `CANDIDATES` CISI abstracts of at least 100
/// words, cut to 100 words.
fn cisi() -> (String, Vec<String>, Vec<String>) {
    let data = lr_testkit::shared_dir().join("data/cisi");
    let queries = lr_testkit::read_jsonl(&data.join("queries.jsonl"));
    let text = |id: &str| queries.iter().find(|q| q["_id"] == id).unwrap_or_else(|| panic!("CISI query {id}"))["text"].as_str().unwrap().to_owned();
    let query = text(QUERY_ID);
    let caller_queries = CALLER_QUERY_IDS.iter().map(|id| text(id)).collect();
    let passages: Vec<String> = lr_testkit::read_jsonl(&data.join("corpus.jsonl"))
        .iter()
        .map(|d| d["text"].as_str().unwrap().split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() >= PASSAGE_WORDS)
        .take(CANDIDATES)
        .map(|w| w[..PASSAGE_WORDS].join(" "))
        .collect();
    assert_eq!(passages.len(), CANDIDATES);
    (query, caller_queries, passages)
}

/// Deterministic random unit vectors (jina-embeddings-v2 outputs are L2-normalised).
fn embeddings(n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng(0x5eed_7e57);
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn secs(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The fastest of `reps` runs, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps.max(1)).map(|_| secs(&mut f)).fold(f64::INFINITY, f64::min)
}

/// Top-`CANDIDATES` by sliding windows, one `rank` call per window as the public loop runs them
/// (each window depends on the previous one). Returns seconds in all and per window.
fn top100(reranker: &Reranker, query: &str, emb: &[Vec<f32>], texts: Option<&[String]>) -> (f64, Vec<f64>) {
    let mut per_window = Vec::new();
    let t = Instant::now();
    windows::rerank(CANDIDATES, WINDOW, STEP, |idx: &[usize]| {
        let e: Vec<Vec<f32>> = idx.iter().map(|&i| emb[i].clone()).collect();
        let p: Option<Vec<String>> = texts.map(|t| idx.iter().map(|&i| t[i].clone()).collect());
        let w = Window { query, embeddings: &e, passages: p.as_deref() };
        let t = Instant::now();
        let r = reranker.rank(&[w]).map(|mut r| r.remove(0));
        per_window.push(t.elapsed().as_secs_f64());
        r.map(|r| (r.order, r.scores))
    })
    .unwrap();
    (t.elapsed().as_secs_f64(), per_window)
}

/// A decoder's shape, for counting.
struct Shape {
    name: &'static str,
    hidden: f64,
    layers: f64,
    heads: f64,
    kv_heads: f64,
    head_dim: f64,
    intermediate: f64,
    embedding_size: f64,
    bytes_per_weight: f64,
}

/// FLOPs and bytes moved for `batch` windows ranked together: one prefill of `prompt` tokens
/// each, then `n - 1` decode steps (PE-Rank scores candidates only: no LM head over the
/// vocabulary is ever computed). The weights are read once per forward whatever the batch.
struct Cost {
    prefill_flops: f64,
    prefill_bytes: f64,
    decode_flops: f64,
    decode_bytes: f64,
    steps: f64,
}

impl Shape {
    /// Weights used per token (the matmuls of every layer; the token embeddings are only looked up).
    fn weights(&self) -> f64 {
        let q = self.heads * self.head_dim;
        let kv = self.kv_heads * self.head_dim;
        self.layers * (self.hidden * q + 2.0 * self.hidden * kv + q * self.hidden + 3.0 * self.hidden * self.intermediate)
    }

    fn cost(&self, prompt: usize, n: usize, batch: usize) -> Cost {
        let (l, n, b) = (prompt as f64, n as f64, batch as f64);
        let w = self.weights();
        let q = self.heads * self.head_dim;
        let kv_per_position = 2.0 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_weight;
        // Attention: QK^T and AV, 2 FLOPs a multiply-add each, causal (context 1..l for the prompt;
        // lr-model's CPU attention computes the whole l × l product and masks half of it).
        let attention = |context: f64| 4.0 * self.layers * q * context;
        let projector = n * 2.0 * (self.embedding_size * self.hidden + self.hidden * self.hidden);
        let prefill_flops = b * (2.0 * w * l + 4.0 * self.layers * q * l * (l + 1.0) / 2.0 + projector);
        let prefill_bytes = w * self.bytes_per_weight + b * kv_per_position * l;
        let steps = n - 1.0;
        let (mut decode_flops, mut decode_bytes) = (0.0, 0.0);
        for k in 1..=steps as usize {
            let context = l + k as f64;
            // One position through the layers, and n · hidden for scoring the candidates.
            decode_flops += b * (2.0 * w + attention(context) + 2.0 * n * self.hidden);
            decode_bytes += w * self.bytes_per_weight + b * kv_per_position * context;
        }
        Cost { prefill_flops, prefill_bytes, decode_flops, decode_bytes, steps }
    }
}

/// Roofline seconds: each forward takes the longer of its compute and its memory traffic.
fn roofline(c: &Cost, flops_per_s: f64, bytes_per_s: f64) -> (f64, f64) {
    let prefill = (c.prefill_flops / flops_per_s).max(c.prefill_bytes / bytes_per_s);
    let per_step_f = c.decode_flops / c.steps.max(1.0);
    let per_step_b = c.decode_bytes / c.steps.max(1.0);
    (prefill, c.steps * (per_step_f / flops_per_s).max(per_step_b / bytes_per_s))
}

fn main() {
    let reps: usize = std::env::var("LR_BENCH_RERANK_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let full = std::env::var("LR_BENCH_RERANK_FULL").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let dir = model_dir();
    let checkpoint = RerankerCheckpoint::inspect(&dir).unwrap();
    let c = &checkpoint.decoder;
    let t = Instant::now();
    let reranker = Reranker::load(&checkpoint, &Device::Cpu).unwrap();
    println!(
        "{MODEL}: hidden {}, {} layers, {}/{} heads, intermediate {}, vocab {}, projector {} -> {}; f32 on CPU, loaded in {:.1} s",
        c.hidden_size,
        c.num_layers,
        c.num_heads,
        c.num_kv_heads,
        c.intermediate_size,
        c.vocab_size,
        checkpoint.embedding_size,
        c.hidden_size,
        t.elapsed().as_secs_f64()
    );
    let (query, caller_queries, passages) = cisi();
    let emb = embeddings(CANDIDATES, checkpoint.embedding_size);
    let top20_emb = Window { query: &query, embeddings: &emb[..WINDOW], passages: None };
    let top20_txt = Window { query: &query, embeddings: &emb[..WINDOW], passages: Some(&passages[..WINDOW]) };
    let len_emb = reranker.prompt(&top20_emb).unwrap().ids.len();
    let len_txt = reranker.prompt(&top20_txt).unwrap().ids.len();
    let words: usize = passages[..WINDOW].iter().map(|p| p.split_whitespace().count()).sum();
    println!(
        "query (CISI {QUERY_ID}): {query:?}; passages: CISI abstracts cut to {PASSAGE_WORDS} words; top-20 timings: fastest of {} run(s) in embedding mode, {reps} in text mode",
        reps.max(3)
    );
    println!(
        "prompt of one 20-candidate window: {len_emb} tokens in embedding mode, {len_txt} in text mode ({:.2} tokens a passage word)",
        (len_txt - len_emb) as f64 / words as f64
    );
    let caller_prompts: Vec<Vec<u32>> = caller_queries
        .iter()
        .map(|q| reranker.prompt(&Window { query: q, embeddings: &emb[..WINDOW], passages: None }).unwrap().ids)
        .collect();
    let shared = (0..caller_prompts[0].len()).take_while(|&i| caller_prompts.iter().all(|p| p.get(i) == caller_prompts[0].get(i))).count();
    println!(
        "the {CALLERS} service callers' queries (CISI {}): prompts of {}-{} tokens, of which the first {shared} are the same (computed once per batch)",
        CALLER_QUERY_IDS.join(", "),
        caller_prompts.iter().map(Vec::len).min().unwrap(),
        caller_prompts.iter().map(Vec::len).max().unwrap()
    );
    let windows_100 = windows::plan(CANDIDATES, WINDOW, STEP).len();
    reranker.rank(&[Window { embeddings: &emb[..2], ..top20_emb }]).unwrap(); // warm-up

    // Top-20 and top-100, embedding vs text mode.
    let emb20 = best(reps.max(3), || drop(reranker.rank(&[top20_emb]).unwrap()));
    let txt20 = best(reps, || drop(reranker.rank(&[top20_txt]).unwrap()));
    println!();
    println!("                         embedding mode   text mode   text / embedding");
    println!("top-20  (1 window)       {:>10.0} ms {:>9.0} ms {:>12.2}x", emb20 * 1e3, txt20 * 1e3, txt20 / emb20);
    let (emb100, emb100_w) = top100(&reranker, &query, &emb, None);
    let (txt100, txt100_w) = if full {
        top100(&reranker, &query, &emb, Some(&passages))
    } else {
        (windows_100 as f64 * txt20, vec![txt20; windows_100])
    };
    println!(
        "top-100 ({windows_100} windows)      {:>10.0} ms {:>9.0} ms{} {:>11.2}x",
        emb100 * 1e3,
        txt100 * 1e3,
        if full { " " } else { "*" },
        txt100 / emb100
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64 * 1e3;
    println!("  per window (top-100)   {:>10.0} ms {:>9.0} ms{}", mean(&emb100_w), mean(&txt100_w), if full { "" } else { "*" });
    if !full {
        // Every window of the loop has 20 passages of 100 words: the same prompt length within a few tokens.
        let lens: Vec<usize> = windows::plan(CANDIDATES, WINDOW, STEP)
            .into_iter()
            .map(|w| {
                let win = Window { query: &query, embeddings: &emb[w.clone()], passages: Some(&passages[w]) };
                reranker.prompt(&win).unwrap().ids.len()
            })
            .collect();
        println!(
            "  * {windows_100} x the top-20 text window, not run (its windows' prompts are {}-{} tokens); LR_BENCH_RERANK_FULL=1 runs them (about {:.0} s more)",
            lens.iter().min().unwrap(),
            lens.iter().max().unwrap(),
            txt100
        );
    }

    // Prefill vs decode, timed on the decoder itself: what `rank` runs for one window is one
    // forward over the prompt's input embeddings, then one single-position forward per pick
    // through the KV cache (the picks themselves are an n × hidden product each).
    println!();
    let decoder = Decoder::load(c.clone(), &checkpoint.weight_files, None, &Device::Cpu).unwrap();
    let mut split = Vec::new();
    for (mode, window, total) in [("embedding", top20_emb, emb20), ("text", top20_txt, txt20)] {
        let prompt = reranker.prompt(&window).unwrap();
        let len = prompt.ids.len();
        let (prefill, decode, how) = if mode == "embedding" || full {
            let ids = Tensor::from_slice(&prompt.ids, (1, len), &Device::Cpu).unwrap();
            let x = decoder.embed(&ids).unwrap();
            let step = x.narrow(1, len - 1, 1).unwrap();
            let mut cache = decoder.new_cache(1);
            let prefill = secs(|| drop(decoder.forward(&x, &[vec![true; len]], &mut cache).unwrap()));
            let decode = secs(|| {
                for _ in 1..WINDOW {
                    decoder.forward(&step, &[vec![true]], &mut cache).unwrap();
                }
            });
            (prefill, decode, "measured".to_owned())
        } else {
            // The decode steps read the same weights in both modes; the longer KV cache adds
            // attention over 10 times the positions, small beside the weights on this shape.
            let decode = split.first().map_or(0.0, |s: &(f64, f64)| s.1);
            (total - decode, decode, format!("derived: {:.0} ms window less the embedding decode; LR_BENCH_RERANK_FULL=1 measures it", total * 1e3))
        };
        println!(
            "{mode:>9} mode, one window: prefill {:>7.0} ms ({len} tokens, {:.0} tokens/s) + decode {:>6.0} ms ({} steps, {:.0} ms a step) ({how})",
            prefill * 1e3,
            len as f64 / prefill,
            decode * 1e3,
            WINDOW - 1,
            decode * 1e3 / (WINDOW - 1) as f64
        );
        split.push((prefill, decode));
    }
    drop(decoder);
    drop(reranker);

    // The encoder service: 1 caller vs 8 concurrent callers, one-window embedding-mode requests.
    let info = ModelInfo::inspect(&dir, &ModelOptions::default()).unwrap();
    assert_eq!(info.family.name(), "reranker");
    let service = Service::start("cpu", CALLERS);
    let request = |caller: usize, k: usize, n: usize| {
        let start = (caller * 7 + k * 3) % (CANDIDATES - WINDOW);
        Request {
            model: "pe-rank".into(),
            info: info.clone(),
            task: Task::Rerank {
                windows: vec![RerankWindow { query: caller_queries[caller].clone(), embeddings: emb[start..start + n].to_vec(), passages: None }],
            },
        }
    };
    let check = |reply: lr_service::protocol::Reply, n: usize| match reply {
        Ok(Output::Rankings(r)) => assert!(r.len() == 1 && r[0].len() == n),
        other => panic!("unexpected reply {other:?}"),
    };
    let t = Instant::now();
    check(service.run(request(0, 0, 2)), 2); // loads the model
    println!();
    println!("service: model loaded in {:.1} s", t.elapsed().as_secs_f64());
    let single_n = reps.max(2);
    let single = secs(|| (0..single_n).for_each(|k| check(service.run(request(0, k + 1, WINDOW)), WINDOW)));
    // 8 callers, each looping over `per_caller` one-window requests. A short request keeps the
    // inference thread busy while they queue their first window, so that the first batch holds
    // all 8 as every later one does (callers in a loop); the clock starts when it is answered.
    let per_caller: usize = std::env::var("LR_BENCH_RERANK_CALLS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let busy = service.submit(request(0, 0, 2));
    while service.queued() > 0 {
        std::thread::yield_now();
    }
    let stat = |s: &std::sync::atomic::AtomicU64| s.load(std::sync::atomic::Ordering::Relaxed);
    let barrier = Barrier::new(CALLERS + 1);
    let mut counted = (0, 0);
    let mut many = 0.0;
    std::thread::scope(|s| {
        for caller in 0..CALLERS {
            let (service, barrier, request, check) = (service.clone(), &barrier, &request, &check);
            s.spawn(move || {
                barrier.wait();
                for k in 0..per_caller {
                    check(service.run(request(caller, k, WINDOW)), WINDOW);
                }
            });
        }
        barrier.wait();
        check(busy.recv().unwrap(), 2);
        counted = (stat(&service.stats().batches), stat(&service.stats().inputs));
        let t = Instant::now();
        while stat(&service.stats().inputs) < counted.1 + (CALLERS * per_caller) as u64 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        many = t.elapsed().as_secs_f64();
    });
    let batches = stat(&service.stats().batches) - counted.0;
    let inputs = stat(&service.stats().inputs) - counted.1;
    let (rate1, rate8) = (single_n as f64 / single, (CALLERS * per_caller) as f64 / many);
    println!(
        "service, embedding-mode top-20 windows: 1 caller {rate1:.3} windows/s ({single_n} windows), {CALLERS} callers {rate8:.3} windows/s ({inputs} windows in {batches} batch(es)): {:.2}x",
        rate8 / rate1
    );

    // FLOPs and bytes per top-20 window, here and on paper for the released checkpoint.
    let here = Shape {
        name: "Qwen2.5-0.5B shape, f32 (this run)",
        hidden: c.hidden_size as f64,
        layers: c.num_layers as f64,
        heads: c.num_heads as f64,
        kv_heads: c.num_kv_heads as f64,
        head_dim: c.head_dim as f64,
        intermediate: c.intermediate_size as f64,
        embedding_size: checkpoint.embedding_size as f64,
        bytes_per_weight: 4.0,
    };
    let mistral = Shape {
        name: "Mistral-7B (pe-rank-mistral-jina), bf16",
        hidden: 4096.0,
        layers: 32.0,
        heads: 32.0,
        kv_heads: 8.0,
        head_dim: 128.0,
        intermediate: 14336.0,
        embedding_size: 768.0,
        bytes_per_weight: 2.0,
    };
    println!();
    println!("per top-20 window (prefill of the prompt + {} decode steps; the LM head over the vocabulary is never computed):", WINDOW - 1);
    for (mode, len, measured) in [("embedding", len_emb, split[0]), ("text", len_txt, split[1])] {
        let ch = here.cost(len, WINDOW, 1);
        let derived = if mode == "text" && !full { " (derived)" } else { "" };
        println!(
            "  {:<42} {mode:>9}: prefill {:>7.1} GFLOP {:>6.2} GB, decode {:>6.1} GFLOP {:>6.2} GB; achieved {:.1} GFLOP/s in prefill, {:.1} GB/s in decode{derived}",
            here.name,
            ch.prefill_flops / 1e9,
            ch.prefill_bytes / 1e9,
            ch.decode_flops / 1e9,
            ch.decode_bytes / 1e9,
            ch.prefill_flops / measured.0 / 1e9,
            ch.decode_bytes / measured.1.max(1e-9) / 1e9
        );
    }
    // A100 SXM: 312 TFLOP/s dense bf16, 2.0 TB/s HBM2e. Peak figures: real kernels get perhaps
    // 50-70% of the compute and 80% of the bandwidth, so these are lower bounds.
    let (gpu_flops, gpu_bytes) = (312e12, 2.0e12);
    let mut projected = Vec::new();
    for (mode, len) in [("embedding", len_emb), ("text", len_txt)] {
        let cm = mistral.cost(len, WINDOW, 1);
        let (p, d) = roofline(&cm, gpu_flops, gpu_bytes);
        projected.push(p + d);
        println!(
            "  {:<42} {mode:>9}: prefill {:>7.1} TFLOP {:>6.1} GB, decode {:>6.2} TFLOP {:>6.1} GB; one A100 (312 TFLOP/s bf16, 2.0 TB/s), roofline: prefill {:.1} ms + decode {:.1} ms = {:.0} ms",
            mistral.name,
            cm.prefill_flops / 1e12,
            cm.prefill_bytes / 1e9,
            cm.decode_flops / 1e12,
            cm.decode_bytes / 1e9,
            p * 1e3,
            d * 1e3,
            (p + d) * 1e3
        );
    }
    println!(
        "  Mistral-7B on one A100: top-20 {:.0} ms vs {:.0} ms ({:.2}x), top-100 (9 windows) {:.2} s vs {:.2} s; prompt lengths as measured here",
        projected[0] * 1e3,
        projected[1] * 1e3,
        projected[1] / projected[0],
        9.0 * projected[0],
        9.0 * projected[1]
    );
    let batched = |b: usize| {
        let (p, d) = roofline(&mistral.cost(len_emb, WINDOW, b), gpu_flops, gpu_bytes);
        b as f64 / (p + d)
    };
    println!(
        "  Mistral-7B on one A100, embedding-mode top-20 windows through the service: 1 caller {:.1} windows/s, {CALLERS} callers batched {:.1} windows/s ({:.1}x; the decode steps read the weights once for all {CALLERS})",
        batched(1),
        batched(CALLERS),
        batched(CALLERS) / batched(1)
    );
    println!();
    println!("bench run: {:.0} s", started.elapsed().as_secs_f64());
}
