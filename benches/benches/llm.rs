//! Decoder-LLM speed at real shapes, on random weights (no LLM weights are reachable offline):
//! documents/s and tokens/s at batch 1, 8 and 32, and the projected time to build a query table
//! for the whole vocabulary. `make bench-llm` (or `cargo bench -p lr-benches --bench llm`).
//! The model (Qwen2.5-0.5B's shape; LR_BENCH_LLM=llama-3.2-1b for Llama-3.2-1B's) is written
//! once under target/lr-bench by scripts/make_test_models.py.

use std::path::PathBuf;
use std::time::Instant;

use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::LlmEncoder;

/// Document length in tokens (bos and eos included): a short passage.
const DOC_TOKENS: usize = 64;

fn model_dir(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lr-bench");
    let dir = root.join(format!("real-{name}"));
    if !dir.join("config.json").is_file() {
        eprintln!("writing a random-weight {name} to {} (once)...", dir.display());
        let status = std::process::Command::new("python3")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["scripts/make_test_models.py", "--out"])
            .arg(&root)
            .args(["--real", name])
            .status()
            .expect("python3 with numpy is needed (scripts/setup.sh)");
        assert!(status.success());
    }
    dir
}

fn main() {
    let name = std::env::var("LR_BENCH_LLM").unwrap_or_else(|_| "qwen2.5-0.5b".into());
    let info = ModelInfo::inspect(&model_dir(&name), &ModelOptions::default()).unwrap();
    let t = Instant::now();
    let enc = LlmEncoder::load(&info, &Device::Cpu).unwrap();
    println!("{name}: hidden {}, vocab {}, loaded in {:.1} s", enc.dim(), enc.vocab_size(), t.elapsed().as_secs_f64());
    let vocab = enc.vocab_size() as u32;
    // Deterministic pseudo-random content ids, wrapped like documents.
    let doc = |seed: u32| -> Vec<u32> {
        let mut ids = vec![info_bos(&enc)];
        ids.extend((0..DOC_TOKENS as u32 - 2).map(|i| (seed.wrapping_mul(7919).wrapping_add(i * 104_729)) % (vocab - 1000) + 500));
        ids.push(enc.decoder().config().eos_token_id.unwrap());
        ids
    };
    for batch in [1usize, 8, 32] {
        let docs: Vec<Vec<u32>> = (0..batch as u32).map(doc).collect();
        enc.encode_id_sequences(&docs[..1], 1).unwrap(); // warm-up
        let t = Instant::now();
        enc.encode_id_sequences(&docs, batch).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "documents of {DOC_TOKENS} tokens, batch {batch:>2}: {:>7.2} docs/s, {:>8.1} tokens/s ({:.2} s)",
            batch as f64 / s,
            (batch * DOC_TOKENS) as f64 / s,
            s
        );
    }
    let prefix = enc.query_prompt_prefix("Given a web search query, retrieve relevant passages that answer the query").unwrap();
    let ids: Vec<u32> = (1000..1064).collect();
    enc.token_table_rows(&prefix, &ids[..4]).unwrap(); // warm-up
    let t = Instant::now();
    enc.token_table_rows(&prefix, &ids).unwrap();
    let per_id = t.elapsed().as_secs_f64() / ids.len() as f64;
    let full = 151_936.0 * per_id;
    println!(
        "query table rows (prompt of {} tokens, shared prefix): {:.1} ids/s; whole {} vocabulary: {:.0} min; a 151,936-token Qwen2.5 table: {:.0} min",
        prefix.len(),
        1.0 / per_id,
        vocab,
        vocab as f64 * per_id / 60.0,
        full / 60.0
    );
}

fn info_bos(enc: &LlmEncoder) -> u32 {
    enc.decoder().config().bos_token_id.unwrap_or(0)
}
