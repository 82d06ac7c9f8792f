//! Our in-process encoder on a file of texts, for `make bench-encode` (benches/encode_side_by_side.py
//! runs it between ONNX Runtime's runs). Loads the model once, encodes the texts `--reps` times
//! (batch 32, length-sorted, as the worker does) and writes the wall time of each rep, the token
//! count and the vectors of the last rep.
//!
//! encode_texts --model DIR --kind dense|sparse --texts FILE.json --reps N --out FILE.json
//!              [--vectors FILE.f32] [--batch N]   (--batch: dense only; default 32 length-sorted)
//! texts: a JSON array of strings. vectors: little-endian f32, one row per text (sparse vectors
//! densified over the vocabulary). out: {"seconds": [...], "docs": n, "tokens": t, "dim": d}.

use std::time::Instant;

use lr_encoders::encoders::FamilyEncoder;
use lr_encoders::{DocumentEncoder, SparseDocumentEncoder};
use lr_model::{Device, ModelInfo, ModelOptions};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Token ids of one document as the model sees it (special tokens, truncation).
fn dense_ids(enc: &DocumentEncoder, text: &str) -> usize {
    match enc {
        FamilyEncoder::Bert(e) => e.document_ids(text).unwrap().len(),
        FamilyEncoder::Llm(e) => e.document_ids(text).unwrap().len(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |n: &str| arg(&args, n).unwrap_or_else(|| panic!("{n} is required"));
    let model = need("--model");
    let kind = need("--kind");
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(need("--texts")).unwrap()).unwrap();
    let batch: Option<usize> = arg(&args, "--batch").map(|b| b.parse().unwrap());
    let reps: usize = arg(&args, "--reps").map_or(1, |r| r.parse().unwrap());
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let info = ModelInfo::inspect(std::path::Path::new(&model), &ModelOptions::default()).unwrap();

    let mut seconds = Vec::new();
    let (rows, dim, tokens): (Vec<Vec<f32>>, usize, usize) = match kind.as_str() {
        "dense" => {
            let enc = DocumentEncoder::load(&info, &Device::Cpu).unwrap();
            let tokens = refs.iter().map(|t| dense_ids(&enc, t)).sum();
            let mut rows = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                rows = match batch {
                    Some(b) => enc.encode_document_ids(&refs, b).unwrap(),
                    None => enc.encode(&refs).unwrap(),
                };
                seconds.push(t.elapsed().as_secs_f64());
            }
            let dim = rows.first().map_or(0, Vec::len);
            (rows, dim, tokens)
        }
        "sparse" => {
            let enc = SparseDocumentEncoder::load(&info, &Device::Cpu).unwrap();
            let tokens = match &enc {
                FamilyEncoder::Bert(e) => refs.iter().map(|t| e.document_ids(t).unwrap().len()).sum(),
                FamilyEncoder::Llm(e) => refs.iter().map(|t| e.document_ids(t).unwrap().len()).sum(),
            };
            let mut sparse = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                sparse = enc.encode(&refs).unwrap();
                seconds.push(t.elapsed().as_secs_f64());
            }
            let dim = info.vocab_size;
            let rows = sparse
                .iter()
                .map(|v| {
                    let mut row = vec![0f32; dim];
                    v.iter().for_each(|&(i, w)| row[i as usize] = w);
                    row
                })
                .collect();
            (rows, dim, tokens)
        }
        other => panic!("--kind {other}: dense or sparse"),
    };
    if let Some(path) = arg(&args, "--vectors") {
        let bytes: Vec<u8> = rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).unwrap();
    }
    let out = serde_json::json!({"seconds": seconds, "docs": texts.len(), "tokens": tokens, "dim": dim});
    std::fs::write(need("--out"), out.to_string()).unwrap();
}
