//! Registration-time validation of model directories: every defect is a named error.


use lr_testkit::{dense_model_dir, sparse_model_dir};
use lr_model::{ModelError, ModelInfo, ModelOptions, Pooling};
use std::path::{Path, PathBuf};

fn copy_model(name: &str) -> PathBuf {
    lr_testkit::dense_model_copy(name)
}

fn invalid(dir: &Path, opts: &ModelOptions) -> String {
    match ModelInfo::inspect(dir, opts) {
        Err(ModelError::InvalidModel(m)) | Err(ModelError::InvalidOption(m)) => m,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn default_model_is_read_correctly() {
    let info = ModelInfo::inspect(&dense_model_dir(), &ModelOptions::default()).unwrap();
    assert_eq!(info.architecture, "BertModel");
    assert_eq!(info.weight_files, vec!["model.safetensors".to_string()]);
    assert!(!info.has_lm_head);
    let opts = ModelOptions { pooling: Some("cls".into()), max_length: Some(128), ..Default::default() };
    let info = ModelInfo::inspect(&dense_model_dir(), &opts).unwrap();
    assert_eq!((info.pooling, info.max_length), (Pooling::Cls, 128));
}

#[test]
fn defects_are_reported_by_name() {
    assert!(invalid(Path::new("relative/dir"), &ModelOptions::default()).contains("must be absolute"));
    assert!(invalid(Path::new("/nonexistent/model"), &ModelOptions::default()).contains("does not exist"));

    let d = copy_model("tok");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    assert!(invalid(&d, &ModelOptions::default()).contains("tokenizer.json is missing"));

    let d = copy_model("cfg");
    std::fs::write(d.join("config.json"), "{not json").unwrap();
    assert!(invalid(&d, &ModelOptions::default()).contains("is not valid JSON"));

    let d = copy_model("arch");
    std::fs::write(d.join("config.json"), r#"{"model_type": "t5", "hidden_size": 4}"#).unwrap();
    assert!(invalid(&d, &ModelOptions::default()).contains("\"t5\""));

    let d = copy_model("trunc");
    let f = std::fs::OpenOptions::new().write(true).open(d.join("model.safetensors")).unwrap();
    f.set_len(1_000_000).unwrap();
    assert!(invalid(&d, &ModelOptions::default()).contains("truncated"));

    let d = copy_model("noweights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert!(invalid(&d, &ModelOptions::default()).contains("no *.safetensors"));

    let d = copy_model("opts");
    let too_long = ModelOptions { pooling: None, max_length: Some(4096), ..Default::default() };
    assert!(invalid(&d, &too_long).contains("max_length 4096"));
    let bad_pool = ModelOptions { pooling: Some("max".into()), ..Default::default() };
    assert!(invalid(&d, &bad_pool).contains("\"max\""));
    assert!(ModelOptions::from_json(&serde_json::json!({"poolin": "mean"})).is_err());
}

#[test]
fn sparse_model_has_lm_head() {
    let info = ModelInfo::inspect(&sparse_model_dir(), &ModelOptions::default()).unwrap();
    assert_eq!(info.architecture, "BertForMaskedLM");
    assert!(info.has_lm_head);
    assert_eq!(info.max_length, 512);
    let opts = ModelOptions { max_length: Some(256), ..Default::default() };
    assert_eq!(ModelInfo::inspect(&sparse_model_dir(), &opts).unwrap().max_length, 256);
}

#[test]
fn lm_head_is_decided_by_the_weights_not_the_name() {
    // A config that claims a masked-LM head over weights without one.
    let d = copy_model("claims-mlm");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    let cfg = cfg.replace("\"BertModel\"", "\"BertForMaskedLM\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let info = ModelInfo::inspect(&d, &ModelOptions::default()).unwrap();
    assert_eq!(info.architecture, "BertForMaskedLM");
    assert!(!info.has_lm_head); // lr-encoders' SparseEncoder then refuses it (sparse_reference.rs)
}
