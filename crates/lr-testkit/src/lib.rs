//! Test helpers shared by the crate tests, the `#[pg_test]`s and the end-to-end tests: where the
//! real default models live (installed by scripts/setup.sh) and the independent reference vectors
//! in `../shared/reference/minilm.json` (dense) and `tests/reference/splade_tiny.json` (sparse).

use std::path::PathBuf;

/// Root of the installed default models (`LR_MODEL_ROOT`, default /opt/lightretriever/models).
pub fn model_root() -> PathBuf {
    std::env::var_os("LR_MODEL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(option_env!("LR_MODEL_ROOT").unwrap_or("/opt/lightretriever/models")))
}

/// all-MiniLM-L6-v2; panics with the fix when absent (a test must not silently pass without it).
pub fn dense_model_dir() -> PathBuf {
    let d = model_root().join("all-minilm-l6-v2");
    assert!(d.join("config.json").is_file(), "{} is missing: run scripts/setup.sh", d.display());
    d
}

/// SPLADE-tiny (BertForMaskedLM), the default sparse model; panics with the fix when absent.
pub fn sparse_model_dir() -> PathBuf {
    let d = model_root().join("splade-tiny");
    assert!(d.join("config.json").is_file(), "{} is missing: run scripts/setup.sh", d.display());
    d
}

/// The independent SPLADE-tiny reference committed in the repository
/// (`tests/reference/splade_tiny.json`, written by `tests/reference/splade_reference.py`).
pub fn sparse_reference() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference/splade_tiny.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// `[[id, weight], ...]` as (id, weight) pairs.
pub fn id_weights(v: &serde_json::Value) -> Vec<(u32, f32)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
        .collect()
}

/// `../shared` beside the repository (`LR_SHARED_DIR` overrides).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("LR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

/// One JSON value per non-blank line of a `.jsonl` file (BEIR `queries.jsonl` / `corpus.jsonl`).
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

pub fn reference() -> serde_json::Value {
    let p = shared_dir().join("reference/minilm.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// A JSON list of float lists (reference embeddings) as rows.
pub fn matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

/// A JSON list of indices (reference permutations, positions).
pub fn indices(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// The reference file's tolerance: cosine ≥ 0.9999 and max |diff| ≤ 1e-4.
pub fn assert_matches(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dimension");
    let dot: f64 = got.iter().zip(want).map(|(a, b)| *a as f64 * *b as f64).sum();
    let na: f64 = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let cos = dot / (na * nb);
    let max_diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(cos >= 0.9999 && max_diff <= 1e-4, "{what}: cos {cos}, max diff {max_diff}");
}

/// Every element of `got` within `tolerance` of `want` (same length): for outputs checked
/// element by element against a reference.
pub fn assert_within(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= tolerance, "{what}: max |diff| {worst} > {tolerance}");
}

/// Tiny random-weight decoder LLMs (Llama, Mistral, Qwen2, Qwen3, a Llama LoRA adapter) and their
/// independent numpy reference outputs: `scripts/make_test_models.py` and
/// `tests/decoder_reference/reference.py`, written to `LR_TEST_MODELS` (default
/// /tmp/lightretriever-test-models; `make test` writes it first, readable by the server user).
/// Generated here when absent, so that plain `cargo test` works too.
pub fn tiny_models_dir() -> PathBuf {
    let dir = std::env::var_os("LR_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/lightretriever-test-models"));
    if dir.join("reference/pe-rank-tiny.json").is_file() {
        return dir;
    }
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    // Written beside, then renamed: concurrent test processes never see a half-written tree.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let run = |args: &[&std::ffi::OsStr]| {
        let status = std::process::Command::new("python3")
            .args(args)
            .current_dir(&root)
            .status()
            .unwrap_or_else(|e| panic!("cannot run python3 (numpy is needed; scripts/setup.sh installs it): {e}"));
        assert!(status.success(), "python3 {args:?} failed");
    };
    run(&["scripts/make_test_models.py".as_ref(), "--out".as_ref(), tmp.as_os_str()]);
    run(&["tests/decoder_reference/reference.py".as_ref(), tmp.as_os_str()]);
    run(&["tests/rerank_reference/reference.py".as_ref(), tmp.as_os_str()]);
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // another process got there first
    }
    assert!(dir.join("reference/pe-rank-tiny.json").is_file(), "{} was not written", dir.display());
    dir
}

/// The reference outputs of one tiny model (`tiny-llama`, …, `tiny-llama+lora`).
pub fn tiny_reference(name: &str) -> serde_json::Value {
    let p = tiny_models_dir().join("reference").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// A fresh, empty directory for one test (`<prefix>-<pid>-<name>` under the system temp dir).
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the default dense model's directory (what a model needs to load), to alter.
pub fn dense_model_copy(name: &str) -> PathBuf {
    let src = dense_model_dir();
    let dst = temp_dir("lr-model-copy", name);
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json", "1_Pooling/config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

/// xorshift64*: a fixed seed gives the same pseudo-random sequence on every run, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The CISI documents (`../shared/data/cisi`) as `title\ntext`, in corpus order.
pub fn cisi_docs() -> Vec<String> {
    let path = shared_dir().join("data/cisi/corpus.jsonl");
    read_jsonl(&path)
        .iter()
        .map(|v| {
            let title = v.get("title").and_then(|t| t.as_str()).unwrap_or("");
            format!("{title}\n{}", v["text"].as_str().unwrap())
        })
        .collect()
}

/// A document of at least `bytes` bytes: the CISI documents concatenated (blank-line separated),
/// over and over — what a careless or hostile user stores in one row.
pub fn huge_cisi_text(bytes: usize) -> String {
    let docs = cisi_docs();
    let mut text = String::with_capacity(bytes + 100_000);
    for d in docs.iter().cycle() {
        if text.len() >= bytes {
            break;
        }
        text.push_str(d);
        text.push_str("\n\n");
    }
    text
}
