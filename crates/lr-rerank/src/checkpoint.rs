//! A PE-Rank checkpoint directory (the layout of `liuqi6777/pe-rank-mistral-jina`), recognised
//! and validated without loading weights.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use lr_model::{DecoderConfig, ModelError, Result};
use lr_tokenizer::Tokenizer;
use serde_json::Value;

/// The token whose input positions carry the projected passage embeddings.
pub const PLACEHOLDER: &str = "<PLACEHOLDER>";

/// The projector tensors of `mlp2x_gelu`: Linear(E→H) → GELU → Linear(H→H).
pub const PROJECTOR_TENSORS: [&str; 4] =
    ["model.projector.0.weight", "model.projector.0.bias", "model.projector.2.weight", "model.projector.2.bias"];

/// What a reranker checkpoint is, as read from its files.
#[derive(Debug, Clone)]
pub struct RerankerCheckpoint {
    pub dir: PathBuf,
    /// The LLM (config.json with `model_type` "embed_<decoder>" read as "<decoder>").
    pub decoder: DecoderConfig,
    /// E: the passage embedding dimension the projector takes.
    pub embedding_size: usize,
    /// Longest prompt plus decoded candidates, in positions.
    pub max_length: usize,
    pub placeholder_id: u32,
    /// The passage encoder the checkpoint was trained with (`encoder_name`), for messages.
    pub encoder_name: Option<String>,
    pub weight_files: Vec<PathBuf>,
    pub tokenizer_path: PathBuf,
    /// `chat_template` of tokenizer_config.json (the "default" one when it lists several).
    pub chat_template: String,
    pub bos_token: String,
    pub eos_token: String,
}

fn invalid(m: String) -> ModelError {
    ModelError::InvalidModel(m)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| invalid(format!("{} is not valid JSON: {e}", path.display())))
}

/// True when `config.json` of `dir` says PE-Rank (`model_type` "embed_mistral" and the like).
pub fn is_reranker_config(config: &Value) -> bool {
    config.get("model_type").and_then(Value::as_str).is_some_and(|t| t.starts_with("embed_"))
}

/// A special token of tokenizer_config.json: a string, or an AddedToken object with "content".
fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The one-line conversion README documents, for checkpoints that ship only `tokenizer.model`.
pub fn tokenizer_conversion_hint(dir: &Path) -> String {
    format!(
        "python3 -c \"from transformers import AutoTokenizer as T; T.from_pretrained('{0}', from_slow=True, legacy=True).save_pretrained('{0}')\"",
        dir.display()
    )
}

impl RerankerCheckpoint {
    pub fn inspect(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
        let Some(decoder_type) = model_type.strip_prefix("embed_") else {
            return Err(invalid(format!(
                "{}: model_type \"{model_type}\" is not a PE-Rank checkpoint (embed_mistral)",
                config_path.display()
            )));
        };
        let mut as_decoder = config.clone();
        as_decoder["model_type"] = Value::String(decoder_type.to_owned());
        let decoder = DecoderConfig::from_json(&as_decoder, &config_path)?;
        if config.get("use_proj").and_then(Value::as_bool) == Some(false) {
            return Err(invalid(format!("{}: use_proj false (no projector) is not supported", config_path.display())));
        }
        let projector = config.get("projector_type").and_then(Value::as_str).unwrap_or("mlp2x_gelu");
        if projector != "mlp2x_gelu" {
            return Err(invalid(format!(
                "{}: projector_type \"{projector}\" is not supported (mlp2x_gelu is)",
                config_path.display()
            )));
        }
        let embedding_size = config.get("embedding_size").and_then(Value::as_u64).map(|e| e as usize).ok_or_else(|| {
            invalid(format!("{} has no integer \"embedding_size\"", config_path.display()))
        })?;
        let max_length = config
            .get("tokenizer_model_max_length")
            .and_then(Value::as_u64)
            .map(|m| m as usize)
            .unwrap_or(decoder.max_position_embeddings)
            .min(decoder.max_position_embeddings);
        let encoder_name = config.get("encoder_name").and_then(Value::as_str).map(str::to_owned);

        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            let hint = if dir.join("tokenizer.model").is_file() {
                format!(
                    "; it has only tokenizer.model (sentencepiece): convert it once, in legacy mode as the checkpoint was trained, with {}",
                    tokenizer_conversion_hint(dir)
                )
            } else {
                String::new()
            };
            return Err(invalid(format!("{} is missing{hint}", tokenizer_path.display())));
        }
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| invalid(format!("cannot load {}: {e}", tokenizer_path.display())))?;
        let placeholder_id = tokenizer.token_to_id(PLACEHOLDER).ok_or_else(|| {
            invalid(format!("{} has no {PLACEHOLDER} token: not a PE-Rank vocabulary", tokenizer_path.display()))
        })?;
        if placeholder_id as usize >= decoder.vocab_size {
            return Err(invalid(format!(
                "{PLACEHOLDER} is id {placeholder_id}, beyond vocab_size {} of config.json",
                decoder.vocab_size
            )));
        }
        check_legacy_spaces(&tokenizer, &tokenizer_path, dir)?;

        let tokenizer_config_path = dir.join("tokenizer_config.json");
        let tokenizer_config = read_json(&tokenizer_config_path)?;
        let chat_template = chat_template(&tokenizer_config).ok_or_else(|| {
            invalid(format!("{} has no chat_template: the prompt is the checkpoint's own template", tokenizer_config_path.display()))
        })?;
        let bos_token = special_token(&tokenizer_config, "bos_token").unwrap_or_default();
        let eos_token = special_token(&tokenizer_config, "eos_token").unwrap_or_default();

        let weight_files: Vec<PathBuf> =
            lr_model::model_dir::weight_files(dir)?.into_iter().map(|f| dir.join(f)).collect();
        check_projector(&weight_files, embedding_size, decoder.hidden_size)?;
        Ok(RerankerCheckpoint {
            dir: dir.to_owned(),
            decoder,
            embedding_size,
            max_length,
            placeholder_id,
            encoder_name,
            weight_files,
            tokenizer_path,
            chat_template,
            bos_token,
            eos_token,
        })
    }
}

/// `chat_template` is a string, or (newer tokenizer_config.json files) a list of named templates.
fn chat_template(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// PE-Rank was trained with the slow sentencepiece tokenizer in legacy mode, which starts the text
/// after every special token with "▁" (`<PLACEHOLDER>]` → `<PLACEHOLDER>`, `▁]`). A tokenizer.json
/// converted without legacy gives other ids for every passage line and a different ranking.
fn check_legacy_spaces(tokenizer: &Tokenizer, path: &Path, dir: &Path) -> Result<()> {
    if tokenizer.token_to_id("▁]").is_none() {
        return Ok(()); // not a sentencepiece vocabulary: nothing to tell apart
    }
    let enc = tokenizer
        .encode(format!("{PLACEHOLDER}]"), false)
        .map_err(|e| invalid(format!("{}: cannot tokenize: {e}", path.display())))?;
    match enc.get_tokens() {
        [_, next, ..] if !next.starts_with('▁') => Err(invalid(format!(
            "{} is not in sentencepiece legacy mode (the text after {PLACEHOLDER} does not start with \"▁\"), \
             so its ids differ from the checkpoint's training; convert tokenizer.model with {}",
            path.display(),
            tokenizer_conversion_hint(dir)
        ))),
        _ => Ok(()),
    }
}

fn check_projector(files: &[PathBuf], embedding_size: usize, hidden: usize) -> Result<()> {
    // Safety: read-only mapping of files the caller names; only headers are read here.
    let tensors = unsafe { MmapedSafetensors::multi(files) }
        .map_err(|e| invalid(format!("cannot read the safetensors headers: {e}")))?;
    let expected: [&[usize]; 4] = [&[hidden, embedding_size], &[hidden], &[hidden, hidden], &[hidden]];
    for (name, shape) in PROJECTOR_TENSORS.iter().zip(expected) {
        let view = tensors.get(name).map_err(|_| {
            invalid(format!("the weights have no {name}: not a PE-Rank checkpoint (mlp2x_gelu projector)"))
        })?;
        if view.shape() != shape {
            return Err(invalid(format!(
                "{name} has shape {:?}, expected {shape:?} (embedding_size {embedding_size}, hidden_size {hidden})",
                view.shape()
            )));
        }
    }
    Ok(())
}
