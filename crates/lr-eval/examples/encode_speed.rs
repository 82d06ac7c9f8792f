//! Span-encoding throughput of the full model at several batch sizes (CPU).
use std::time::Instant;

use lr_model::{Device, ModelInfo, ModelOptions};
use lr_encoders::BertEncoder;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or("/opt/lightretriever/models/all-minilm-l6-v2".into()));
    let corpus = std::env::args().nth(2).unwrap_or("/work/shared/data/cisi/corpus.jsonl".into());
    let info = ModelInfo::inspect(&dir, &ModelOptions::default()).unwrap();
    let enc = BertEncoder::load(&info, &Device::Cpu).unwrap();
    let text = std::fs::read_to_string(corpus).unwrap();
    let mut spans = Vec::new();
    for (i, l) in text.lines().enumerate().take(128) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let words: Vec<String> = v["text"].as_str().unwrap().split_whitespace().map(String::from).collect();
        for j in 0..4 {
            let len = 4 + (i * 7 + j * 3) % 13;
            let start = (i * 31 + j * 17) % words.len().saturating_sub(len).max(1);
            spans.push(words[start..(start + len).min(words.len())].join(" "));
        }
    }
    let ids: Vec<Vec<u32>> = spans.iter().map(|s| enc.document_ids(s).unwrap()).collect();
    let tokens: usize = ids.iter().map(Vec::len).sum();
    println!("{} spans, {tokens} tokens", ids.len());
    for batch in [32, 64, 128, 256, 512] {
        let t = Instant::now();
        enc.encode_id_sequences(&ids, batch).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("batch {batch}: {:.2} s, {:.2} ms/span", s, 1000.0 * s / ids.len() as f64);
    }
}
