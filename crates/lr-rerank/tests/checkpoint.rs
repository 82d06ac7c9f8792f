//! Recognising a PE-Rank checkpoint, and the errors for the ways one can be wrong; the window
//! rule's plan for the sizes the notes list.

use std::path::{Path, PathBuf};

use lr_rerank::{windows, RerankerCheckpoint};
use lr_testkit::{temp_dir, tiny_models_dir};

/// A copy of the tiny checkpoint that a test may damage.
fn copy(name: &str) -> PathBuf {
    let dir = temp_dir("lr-rerank", name);
    for entry in std::fs::read_dir(tiny_models_dir().join("pe-rank-tiny")).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    dir
}

fn error(dir: &Path) -> String {
    RerankerCheckpoint::inspect(dir).err().expect("inspect should fail").to_string()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn the_tiny_checkpoint_is_recognised() {
    let c = RerankerCheckpoint::inspect(&tiny_models_dir().join("pe-rank-tiny")).unwrap();
    assert_eq!(c.embedding_size, 32);
    assert_eq!(c.decoder.hidden_size, 64);
    assert_eq!(c.decoder.kind, lr_model::DecoderKind::Mistral);
    assert_eq!(c.placeholder_id as usize, c.decoder.vocab_size - 2);
    assert_eq!(c.weight_files.len(), 2, "two shards");
    assert!(c.chat_template.contains("[INST]"));
    assert_eq!((c.bos_token.as_str(), c.eos_token.as_str()), ("<s>", "</s>"));
}

#[test]
fn a_checkpoint_with_only_tokenizer_model_says_how_to_convert_it() {
    let dir = copy("spm-only");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.model"), b"sentencepiece").unwrap();
    let e = error(&dir);
    assert!(e.contains("tokenizer.json is missing") && e.contains("only tokenizer.model"), "{e}");
    assert!(e.contains("from_slow=True, legacy=True"), "{e}");
}

#[test]
fn a_non_legacy_tokenizer_is_refused() {
    let dir = copy("non-legacy");
    // What a non-legacy conversion gives: a Metaspace pre-tokenizer that prefixes only the first
    // segment, instead of the normalizer that prefixes every segment between special tokens.
    edit_json(&dir.join("tokenizer.json"), |t| {
        t["normalizer"] = serde_json::json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});
        t["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false});
    });
    let e = error(&dir);
    assert!(e.contains("not in sentencepiece legacy mode"), "{e}");
}

#[test]
fn wrong_configs_and_weights_are_named() {
    let dir = copy("not-embed");
    edit_json(&dir.join("config.json"), |c| c["model_type"] = "mistral".into());
    assert!(error(&dir).contains("model_type \"mistral\" is not a PE-Rank checkpoint"), "{}", error(&dir));

    let dir = copy("projector-type");
    edit_json(&dir.join("config.json"), |c| c["projector_type"] = "linear".into());
    assert!(error(&dir).contains("projector_type \"linear\" is not supported"), "{}", error(&dir));

    let dir = copy("embedding-size");
    edit_json(&dir.join("config.json"), |c| c["embedding_size"] = 48.into());
    let e = error(&dir);
    assert!(e.contains("model.projector.0.weight has shape [64, 32], expected [64, 48]"), "{e}");

    let dir = copy("no-placeholder");
    edit_json(&dir.join("tokenizer.json"), |t| {
        t["added_tokens"].as_array_mut().unwrap().retain(|a| a["content"] != "<PLACEHOLDER>");
    });
    assert!(error(&dir).contains("has no <PLACEHOLDER> token"), "{}", error(&dir));

    let dir = copy("no-template");
    edit_json(&dir.join("tokenizer_config.json"), |t| {
        t.as_object_mut().unwrap().remove("chat_template");
    });
    assert!(error(&dir).contains("has no chat_template"), "{}", error(&dir));
}

#[test]
fn the_window_plan_follows_the_public_loop() {
    let plan = |n| windows::plan(n, 20, 10).into_iter().map(|w| (w.start, w.end)).collect::<Vec<_>>();
    assert_eq!(plan(100), (0..9).rev().map(|k| (k * 10, k * 10 + 20)).collect::<Vec<_>>());
    assert_eq!(plan(30), vec![(10, 30), (0, 20)]);
    assert_eq!(plan(25), vec![(5, 25), (0, 15)]);
    assert_eq!(plan(20), vec![(0, 20)]);
    assert_eq!(plan(10), vec![(0, 10)], "the public loop never reranks 10; one window does");
    assert_eq!(plan(1), vec![(0, 1)]);
    assert!(plan(0).is_empty());
    assert_eq!(windows::plan(7, 3, 2).into_iter().map(|w| (w.start, w.end)).collect::<Vec<_>>(), vec![(4, 7), (2, 5), (0, 3)]);
    assert!(windows::check(1, 1).is_err() && windows::check(20, 0).is_err() && windows::check(5, 6).is_err());
    assert_eq!(windows::check(-3, 1), Err("window_size must be at least 2 (it is -3)".to_owned()));
    assert_eq!((windows::check(20, 10), windows::check(2, 2)), (Ok((20, 10)), Ok((2, 2))));
}
