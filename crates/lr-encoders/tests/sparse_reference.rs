//! SPLADE-tiny's sparse document vectors against an independent float64 numpy implementation
//! (tests/reference/splade_tiny.json, written by tests/reference/splade_reference.py).

use std::collections::{BTreeMap, BTreeSet};

use lr_model::{Device, ModelError, ModelInfo, ModelOptions};
use lr_encoders::SparseEncoder;
use lr_testkit::*;

/// Weights above this must be non-zero on both sides (below it, f32 rounding may decide).
const PRESENT: f32 = 1e-3;
const MAX_DIFF: f32 = 1e-4;

fn encoder() -> SparseEncoder {
    let info = ModelInfo::inspect(&sparse_model_dir(), &ModelOptions::default()).unwrap();
    assert_eq!(info.architecture, "BertForMaskedLM");
    assert!(info.has_lm_head);
    assert_eq!((info.hidden_size, info.vocab_size, info.max_length), (128, 30522, 512));
    let enc = SparseEncoder::load(&info, &Device::Cpu).unwrap();
    assert_eq!(enc.vocab_size(), 30522);
    enc
}

fn assert_sorted_positive(v: &[(u32, f32)], what: &str) {
    assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "{what}: ids not strictly ascending");
    assert!(v.iter().all(|&(_, w)| w > 0.0 && w.is_finite()), "{what}: a weight is not > 0");
}

/// Max |got − want| over the union of ids (an absent id weighs 0).
fn max_abs_diff(got: &[(u32, f32)], want: &[(u32, f32)]) -> f32 {
    let mut all: BTreeMap<u32, (f32, f32)> = BTreeMap::new();
    got.iter().for_each(|&(i, w)| all.entry(i).or_default().0 = w);
    want.iter().for_each(|&(i, w)| all.entry(i).or_default().1 = w);
    all.values().map(|(g, w)| (g - w).abs()).fold(0.0, f32::max)
}

fn present(v: &[(u32, f32)]) -> BTreeSet<u32> {
    v.iter().filter(|p| p.1 > PRESENT).map(|p| p.0).collect()
}

#[test]
fn documents_match_reference() {
    let r = sparse_reference();
    let enc = encoder();
    let cases = r["texts"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&""), "the reference covers the empty string");
    let batch = enc.encode(&texts).unwrap();
    let mut worst = 0f32;
    for (case, got) in cases.iter().zip(&batch) {
        let text = case["text"].as_str().unwrap();
        let what = format!("{text:.40?}");
        assert_eq!(enc.document_ids(text).unwrap(), ids(&case["token_ids"]), "token ids of {what}");
        let want = id_weights(&case["weights"]);
        assert_sorted_positive(got, &what);
        assert_eq!(present(got), present(&want), "{what}: ids weighing more than {PRESENT}");
        let diff = max_abs_diff(got, &want);
        assert!(diff <= MAX_DIFF, "{what}: max |diff| {diff}");
        worst = worst.max(diff);
    }
    eprintln!("sparse reference: max |diff| {worst:e} over {} texts", texts.len());
    assert!(batch[texts.iter().position(|t| t.is_empty()).unwrap()].is_empty(), "empty text");
    let longest = cases.iter().map(|c| c["token_ids"].as_array().unwrap().len()).max().unwrap();
    assert_eq!(longest, 512, "the >512-token text is truncated to the model's 512 positions");
}

#[test]
fn batched_equals_one_by_one() {
    let r = sparse_reference();
    let enc = encoder();
    let cases = r["texts"].as_array().unwrap();
    let base: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // 5 copies: more than one length batch, and head chunks spanning several documents.
    let texts: Vec<&str> = (0..5).flat_map(|_| base.iter().copied()).collect();
    let batched = enc.encode(&texts).unwrap();
    let mut worst = 0f32;
    for (text, got) in texts.iter().zip(&batched) {
        let single = enc.encode(&[text]).unwrap().remove(0);
        assert_eq!(present(got), present(&single), "{text:.40?}");
        worst = worst.max(max_abs_diff(got, &single));
    }
    eprintln!("batched vs one by one: max |diff| {worst:e}");
    assert!(worst <= 1e-5, "batched vs one by one: max |diff| {worst}");
    assert!(enc.encode(&[]).unwrap().is_empty());
}

#[test]
fn dense_model_is_refused_for_sparse() {
    let info = ModelInfo::inspect(&dense_model_dir(), &ModelOptions::default()).unwrap();
    assert!(!info.has_lm_head);
    match SparseEncoder::load(&info, &Device::Cpu) {
        Err(ModelError::InvalidModel(m)) => {
            assert!(m.contains("has no masked-LM head") && m.contains("BertModel"), "{m}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a dense BertModel loaded as a sparse encoder"),
    }
}

#[test]
fn a_config_claiming_a_head_without_its_weights_is_refused() {
    // A config that claims a masked-LM head over weights without one (the dense model's).
    let d = dense_model_copy("claims-mlm");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"BertModel\"", "\"BertForMaskedLM\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let info = ModelInfo::inspect(&d, &ModelOptions::default()).unwrap();
    assert!(!info.has_lm_head);
    match SparseEncoder::load(&info, &Device::Cpu) {
        Err(ModelError::InvalidModel(m)) => assert!(m.contains("has no masked-LM head"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("loaded a sparse encoder without a head"),
    }
    std::fs::remove_dir_all(&d).ok();
}
