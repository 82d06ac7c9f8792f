//! Lookup query encoding vs full-model encoding on the embedded default (all-MiniLM-L6-v2).
//! `make bench` (or `cargo bench -p lr-benches`). Targets: lookup ≤ 20 µs for a 10-token query;
//! ratio to the full encoder at batch 1 ≥ 300×. Prints the ratios after criterion's report.

use std::path::PathBuf;
use std::time::Instant;

use criterion::{black_box, Criterion, Throughput};
use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::BertEncoder;
use lr_table::{Dtype, LookupEncoder, QueryTable, TableMeta, TableWriter};

const QUERY: &str = "how do scientists search for information in library catalogues";

fn encoder() -> BertEncoder {
    let info = ModelInfo::inspect(&lr_testkit::dense_model_dir(), &ModelOptions::default()).unwrap();
    BertEncoder::load(&info, &Device::Cpu).unwrap()
}

/// The full query table, built once and kept under target/ (≈30 s to build).
fn lookup(enc: &BertEncoder) -> LookupEncoder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lr-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("minilm.lrt");
    if QueryTable::open(&path).is_err() {
        eprintln!("building the query table once ({})...", path.display());
        let vocab = enc.info().vocab_size;
        let meta = TableMeta {
            model: "all-minilm-l6-v2".into(),
            instruction: None,
            tokenizer_fingerprint: String::new(),
            build: serde_json::Value::Null,
        };
        let mut w = TableWriter::create(&path, &meta, vocab as u64, enc.dim() as u32, Dtype::F32).unwrap();
        let ids: Vec<u32> = (0..vocab as u32).collect();
        for chunk in ids.chunks(256) {
            let rows: Vec<f32> = enc.token_table_rows(chunk).unwrap().into_iter().flatten().collect();
            w.write_rows(&rows).unwrap();
        }
        w.finish().unwrap();
    }
    let tok = lr_tokenizer::load_tokenizer(&enc.info().tokenizer_path(), None).unwrap();
    LookupEncoder::new(QueryTable::open(&path).unwrap(), tok)
}

fn time_per_call(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let enc = encoder();
    let lookup = lookup(&enc);
    let ids = lookup.token_ids(QUERY).unwrap();
    eprintln!("query: {QUERY:?} = {} tokens", ids.len());
    // The lookup encoder must tokenize through the fast path, with the tokenizers crate's answer.
    let qt = lookup.query_tokenizer();
    assert_eq!(qt.fast_ids(QUERY).as_deref(), Some(&ids[..]), "{:?}", qt.why_no_fast_path());
    assert_eq!(lr_tokenizer::plain_ids(lookup.tokenizer().unwrap(), QUERY).unwrap(), ids);
    let batch: Vec<String> = (0..32).map(|i| format!("{QUERY} number {i}")).collect();
    let batch_refs: Vec<&str> = batch.iter().map(String::as_str).collect();

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("query_encoding");
    g.bench_function("lookup_tokenize_and_mean", |b| b.iter(|| lookup.encode(black_box(QUERY)).unwrap()));
    g.bench_function("lookup_mean_only", |b| b.iter(|| lookup.encode_ids(black_box(&ids)).unwrap()));
    g.bench_function("lookup_tokenize_only", |b| b.iter(|| lookup.token_ids(black_box(QUERY)).unwrap()));
    g.bench_function("hf_tokenize_only", |b| {
        b.iter(|| lr_tokenizer::plain_ids(lookup.tokenizer().unwrap(), black_box(QUERY)).unwrap())
    });
    g.sample_size(20);
    g.bench_function("full_model_batch_1", |b| b.iter(|| enc.encode(black_box(&[QUERY])).unwrap()));
    g.throughput(Throughput::Elements(32));
    g.bench_function("full_model_batch_32", |b| b.iter(|| enc.encode(black_box(&batch_refs)).unwrap()));
    g.finish();
    c.final_summary();

    let lookup_s = time_per_call(20_000, || {
        black_box(lookup.encode(QUERY).unwrap());
    });
    let tokenize_s = time_per_call(20_000, || {
        black_box(lookup.token_ids(QUERY).unwrap());
    });
    let hf_tokenize_s = time_per_call(5_000, || {
        black_box(lr_tokenizer::plain_ids(lookup.tokenizer().unwrap(), QUERY).unwrap());
    });
    let full1_s = time_per_call(50, || {
        black_box(enc.encode(&[QUERY]).unwrap());
    });
    let full32_s = time_per_call(5, || {
        black_box(enc.encode(&batch_refs).unwrap());
    }) / 32.0;
    println!("\n== ratios ({} query tokens, 2 threads)", ids.len());
    println!("lookup encode:            {:>10.2} us/query", lookup_s * 1e6);
    println!("  tokenize only (fast):   {:>10.2} us/query", tokenize_s * 1e6);
    println!("  tokenize only (HF):     {:>10.2} us/query  (tokenizers' encode, for comparison)", hf_tokenize_s * 1e6);
    println!("full model, batch 1:      {:>10.2} us/query  ({:.0}x the lookup)", full1_s * 1e6, full1_s / lookup_s);
    println!("full model, batch 32:     {:>10.2} us/query  ({:.0}x the lookup)", full32_s * 1e6, full32_s / lookup_s);
}
