//! The `cuda` feature on a real GPU: the encoders on `cuda:0` give what the independent
//! references give (and what the CPU gives). Compiled only with `--features cuda`; run by
//! `make test-cuda` on a machine with an NVIDIA GPU (a CPU-only machine fails here, by design:
//! this suite exists to check the GPU path).

#![cfg(feature = "cuda")]

use lr_model::{parse_device, Device, ModelInfo, ModelOptions};
use lr_encoders::{BertEncoder, LlmEncoder, SparseEncoder};
use lr_testkit::*;

/// GPU matmuls sum in another order than the CPU's: a little more room than the CPU's 1e-4.
const TOLERANCE: f32 = 5e-4;

fn gpu() -> Device {
    parse_device("cuda:0").unwrap_or_else(|e| panic!("make test-cuda needs a visible GPU: {e}"))
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_within(got, want, TOLERANCE, what);
}

/// The weight of `id` in a sparse vector, 0 when absent: ids near zero may be pruned on one
/// side and not the other, so every id of either side is compared.
fn weight(v: &[(u32, f32)], id: u32) -> f32 {
    v.iter().find(|p| p.0 == id).map_or(0.0, |p| p.1)
}

#[test]
fn the_device_is_a_gpu_and_a_missing_ordinal_is_a_clear_error() {
    assert!(gpu().is_cuda());
    let e = parse_device("cuda:99").unwrap_err().to_string();
    assert!(e.contains("CUDA device 99 is not available"), "{e}");
}

#[test]
fn minilm_documents_on_the_gpu_match_the_reference() {
    let info = ModelInfo::inspect(&dense_model_dir(), &ModelOptions::default()).unwrap();
    let enc = BertEncoder::load(&info, &gpu()).unwrap();
    let r = reference();
    let sentences = r["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    for (s, got) in sentences.iter().zip(enc.encode(&texts).unwrap()) {
        close(&got, &floats(&s["embedding"]), &format!("{:.40?}", s["text"]));
    }
}

#[test]
fn splade_on_the_gpu_matches_the_cpu() {
    let info = ModelInfo::inspect(&sparse_model_dir(), &ModelOptions::default()).unwrap();
    let texts = ["Wing flutter of aircraft at transonic speeds.", "the library catalogue", ""];
    let cpu = SparseEncoder::load(&info, &Device::Cpu).unwrap().encode(&texts).unwrap();
    let gpu = SparseEncoder::load(&info, &gpu()).unwrap().encode(&texts).unwrap();
    for ((c, g), text) in cpu.iter().zip(&gpu).zip(texts) {
        for &(id, _) in c.iter().chain(g) {
            close(&[weight(g, id)], &[weight(c, id)], &format!("{text:?} id {id}"));
        }
    }
}

#[test]
fn decoders_on_the_gpu_match_the_reference() {
    let root = tiny_models_dir();
    for (name, dir, adapter) in [
        ("tiny-llama", "tiny-llama", None),
        ("tiny-mistral", "tiny-mistral", None),
        ("tiny-qwen2", "tiny-qwen2", None),
        ("tiny-qwen3", "tiny-qwen3", None),
        ("tiny-llama+lora", "tiny-llama", Some("tiny-llama-lora")),
    ] {
        let options = ModelOptions { adapter: adapter.map(|a| root.join(a).to_string_lossy().into_owned()), ..Default::default() };
        let info = ModelInfo::inspect(&root.join(dir), &options).unwrap();
        let enc = LlmEncoder::load(&info, &gpu()).unwrap();
        let r = tiny_reference(name);
        let seqs: Vec<Vec<u32>> = r["sequences"].as_array().unwrap().iter().map(ids).collect();
        for (s, v) in enc.encode_id_sequences(&seqs, 2).unwrap().iter().enumerate() {
            close(v, &floats(&r["pooled"][s]), &format!("{name} pooled {s}"));
        }
        for (s, got) in enc.encode_sparse_ids(&seqs, None).unwrap().iter().enumerate() {
            let want = id_weights(&r["sparse"][s]);
            for &(id, _) in want.iter().chain(got) {
                close(&[weight(got, id)], &[weight(&want, id)], &format!("{name} sparse {s} id {id}"));
            }
        }
    }
}
