//! The native CPU forwards (the default) against candle's ops (the CUDA path, `Kernels::Candle`)
//! on the same inputs: MiniLM, SPLADE-tiny and every tiny decoder family, in length-mixed batches
//! with texts past the models' limits. The references decide correctness (reference.rs,
//! sparse_reference.rs, decoder_reference.rs); this checks that the two implementations a
//! deployment can run agree with each other everywhere in between.

use lr_encoders::{DocumentEncoder, SparseDocumentEncoder};
use lr_model::{Device, Kernels, ModelInfo, ModelOptions};
use lr_testkit::{cisi_docs, dense_model_dir, sparse_model_dir, tiny_models_dir};

fn texts() -> Vec<String> {
    let mut t: Vec<String> = cisi_docs().into_iter().take(40).collect();
    t.push(String::new());
    t.push("a".into());
    t.push(cisi_docs().iter().take(12).cloned().collect::<Vec<_>>().join(" ")); // past every limit
    t
}

fn info(dir: &std::path::Path) -> ModelInfo {
    ModelInfo::inspect(dir, &ModelOptions::default()).unwrap()
}

fn assert_rows_close(native: &[Vec<f32>], candle: &[Vec<f32>], tolerance: f32, what: &str) {
    assert_eq!(native.len(), candle.len(), "{what}: row counts");
    for (i, (a, b)) in native.iter().zip(candle).enumerate() {
        lr_testkit::assert_within(a, b, tolerance, &format!("{what}, text {i}"));
    }
}

fn dense_pair(dir: &std::path::Path, tolerance: f32) {
    let info = info(dir);
    let refs: Vec<String> = texts();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let native = DocumentEncoder::load_with(&info, &Device::Cpu, Kernels::Native).unwrap().encode(&refs).unwrap();
    let candle = DocumentEncoder::load_with(&info, &Device::Cpu, Kernels::Candle).unwrap().encode(&refs).unwrap();
    assert_rows_close(&native, &candle, tolerance, &dir.display().to_string());
}

fn densified(v: &[(u32, f32)], vocab: usize) -> Vec<f32> {
    let mut row = vec![0f32; vocab];
    v.iter().for_each(|&(i, w)| row[i as usize] = w);
    row
}

fn sparse_pair(dir: &std::path::Path, tolerance: f32) {
    let info = info(dir);
    let refs: Vec<String> = texts();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let vocab = info.vocab_size;
    let run = |k| -> Vec<Vec<f32>> {
        SparseDocumentEncoder::load_with(&info, &Device::Cpu, k)
            .unwrap()
            .encode(&refs)
            .unwrap()
            .iter()
            .map(|v| densified(v, vocab))
            .collect()
    };
    assert_rows_close(&run(Kernels::Native), &run(Kernels::Candle), tolerance, &dir.display().to_string());
}

#[test]
fn minilm_native_equals_candle() {
    dense_pair(&dense_model_dir(), 2e-6);
}

#[test]
fn splade_native_equals_candle() {
    sparse_pair(&sparse_model_dir(), 2e-5);
}

#[test]
fn decoders_native_equal_candle() {
    for name in ["tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-qwen3"] {
        let dir = tiny_models_dir().join(name);
        dense_pair(&dir, 2e-6);
        sparse_pair(&dir, 2e-5);
    }
}

#[test]
fn an_empty_batch_and_degenerate_configs_are_handled() {
    use lr_model::{DecoderConfig, PaddingSide};
    let dir = tiny_models_dir().join("tiny-qwen3");
    let enc = lr_encoders::LlmEncoder::load(&info(&dir), &Device::Cpu).unwrap();
    let (hidden, real) = enc.decoder().forward_sequences(&[], PaddingSide::Left).unwrap();
    assert_eq!(hidden.dims3().unwrap().0, 0);
    assert!(real.is_empty());
    assert!(enc.encode(&[]).unwrap().is_empty());
    // Zero-sized shapes are refused when the config is read, before any weight is touched.
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    for key in ["hidden_size", "intermediate_size", "vocab_size", "head_dim"] {
        let mut bad = config.clone();
        bad[key] = 0.into();
        let err = DecoderConfig::from_json(&bad, &dir.join("config.json")).unwrap_err().to_string();
        assert!(err.contains("0"), "{key}: {err}");
    }
}
