//! Auto-encoding pipeline speed (`make bench-pipeline`, against the throwaway cluster that
//! scripts/bench_pipeline.sh starts with the encoder worker):
//!   1. rows/s of the pipeline (enable → queue drained) against the same model encoding the same
//!      texts in this process, batch 32 (target: pipeline ≥ 0.85×);
//!   2. p50/p99 latency of `lr_encode_document` through the worker, 1 caller vs 8 concurrent.

use std::time::{Duration, Instant};

use lr_e2e::*;
use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::DocumentEncoder;

const ROWS: usize = 2000;

fn text(i: usize) -> String {
    const W: [&str; 12] = ["library", "catalogue", "index", "retrieval", "journal", "citation", "query", "subject", "heading", "thesaurus", "archive", "record"];
    format!("{} and {} in the {} of {} documents, number {i}", W[i % 12], W[(i / 12) % 12], W[(i * 5) % 12], W[(i * 7) % 12])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn latencies(callers: usize, calls: usize) -> (Vec<Duration>, f64) {
    let started = Instant::now();
    let mut all: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..callers)
            .map(|k| {
                s.spawn(move || {
                    let mut c = fresh_connection("postgres");
                    let mut out = Vec::with_capacity(calls);
                    for i in 0..calls {
                        let t = text(k * 10_000 + i);
                        let at = Instant::now();
                        c.execute("SELECT lightretriever.lr_encode_document($1, 'minilm')", &[&t]).unwrap();
                        out.push(at.elapsed());
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    all.sort();
    let n = all.len() as f64;
    (all, n / wall)
}

fn main() {
    let texts: Vec<String> = (0..ROWS).map(text).collect();

    // 1. In process: the model alone, batch 32.
    let info = ModelInfo::inspect(&dense_model_dir(), &ModelOptions::default()).unwrap();
    let enc = DocumentEncoder::load(&info, &Device::Cpu).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    enc.encode(&refs[..32]).unwrap();
    let t = Instant::now();
    for chunk in refs.chunks(32) {
        enc.encode(chunk).unwrap();
    }
    let in_process = ROWS as f64 / t.elapsed().as_secs_f64();
    drop(enc);

    // The pipeline: the same texts, inserted, enabled, drained by the worker.
    let mut c = pipeline_database();
    c.batch_execute("DROP SCHEMA IF EXISTS lr_bench CASCADE; CREATE SCHEMA lr_bench; CREATE TABLE lr_bench.docs (id int PRIMARY KEY, body text)").unwrap();
    let mut tx = c.transaction().unwrap();
    for (i, t) in texts.iter().enumerate() {
        tx.execute("INSERT INTO lr_bench.docs VALUES ($1, $2)", &[&(i as i32), t]).unwrap();
    }
    tx.commit().unwrap();
    c.execute("SELECT lightretriever.lr_encode_document('warm the worker', 'minilm')", &[]).unwrap();
    let t = Instant::now();
    c.execute("SELECT lightretriever.lr_enable_auto_encoding('lr_bench.docs', 'body', 'minilm', batch_size => 32)", &[]).unwrap();
    wait_for_encoding(&mut c, "lr_bench.docs", 1800);
    let pipeline = ROWS as f64 / t.elapsed().as_secs_f64();
    c.batch_execute("DROP SCHEMA lr_bench CASCADE").unwrap();

    // 2. Latency through the service.
    let (one, one_rate) = latencies(1, 200);
    let (eight, eight_rate) = latencies(8, 100);

    println!("\n== auto-encoding pipeline (all-MiniLM-L6-v2, {ROWS} rows, batch 32) ==");
    println!("in-process encoder     {in_process:8.1} rows/s");
    println!("pipeline (worker)      {pipeline:8.1} rows/s   ratio {:.2}x (target >= 0.85x)", pipeline / in_process);
    println!("\n== lr_encode_document through the worker (one short text per call) ==");
    println!("1 caller    p50 {:7.2} ms  p99 {:7.2} ms  {one_rate:7.1} calls/s", ms(percentile(&one, 0.5)), ms(percentile(&one, 0.99)));
    println!("8 callers   p50 {:7.2} ms  p99 {:7.2} ms  {eight_rate:7.1} calls/s ({:.2}x the throughput of 1)", ms(percentile(&eight, 0.5)), ms(percentile(&eight, 0.99)), eight_rate / one_rate);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
