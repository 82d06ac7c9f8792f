//! A model directory in Hugging Face layout, inspected and validated without loading weights.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decoder::DecoderConfig;
use crate::error::{ModelError, Result};
use crate::lora::AdapterConfig;
use crate::pooling::Pooling;

/// What kind of network the directory holds, which decides how it is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// BERT-family encoder (bidirectional); dense vectors by pooling, sparse by its MLM head.
    Bert,
    /// Decoder LLMs (`decoder.rs`): last-token pooling, instruction tables, LM-head sparse.
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// A PE-Rank listwise reranker (a decoder LLM with a passage-embedding projector, config
    /// `model_type` "embed_<decoder>"): it ranks passages and encodes nothing (lr-rerank).
    Reranker,
}

impl ModelFamily {
    /// Decoder LLMs that encode documents (a reranker runs a decoder too, but encodes nothing).
    pub fn is_decoder(self) -> bool {
        !matches!(self, ModelFamily::Bert | ModelFamily::Reranker)
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Bert => "bert",
            ModelFamily::Llama => "llama",
            ModelFamily::Mistral => "mistral",
            ModelFamily::Qwen2 => "qwen2",
            ModelFamily::Qwen3 => "qwen3",
            ModelFamily::Reranker => "reranker",
        }
    }
}

/// LightRetriever's document length for decoder LLMs (the paper truncates at 512 tokens).
pub const DECODER_MAX_LENGTH: usize = 512;

/// The first tensor of a BERT masked-LM head (`cls.predictions.transform.dense`); its decoder
/// weight is usually tied to the word embeddings and absent from the file.
pub const BERT_MLM_HEAD_TENSOR: &str = "cls.predictions.transform.dense.weight";

/// Options a user may give at registration (`lr_register_model(..., options)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    /// Overrides the pooling found in `1_Pooling/config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<String>,
    /// Overrides the maximum input length in tokens (special tokens included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// A PEFT LoRA adapter directory merged into the weights at load time (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Keep only the k largest weights of each sparse document vector (decoder LM heads can
    /// exceed pgvector's 16,000 non-zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_top_k: Option<usize>,
    /// A reranker's passage encoder: a registered embedding model whose dimension is the
    /// reranker's `embedding_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
}

impl ModelOptions {
    pub fn from_json(v: &Value) -> Result<Self> {
        serde_json::from_value(v.clone()).map_err(|e| ModelError::InvalidOption(e.to_string()))
    }
}

/// Everything the extension records about a registered model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub family: ModelFamily,
    /// `architectures[0]` from config.json (e.g. `BertModel`, `BertForMaskedLM`).
    pub architecture: String,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// Longest input in tokens, special tokens included.
    pub max_length: usize,
    pub pooling: Pooling,
    /// True when the weights include a masked-LM head (sparse encoding possible).
    pub has_lm_head: bool,
    /// Weight files relative to `path`.
    pub weight_files: Vec<String>,
    /// LoRA adapter merged at load time; its tokenizer.json, when it has one, replaces the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_top_k: Option<usize>,
    /// A reranker's passage embedding dimension (`embedding_size`, the projector's input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// A reranker's passage encoder, as registered (option `encoder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<String>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::InvalidModel(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::InvalidModel(format!("{} is not valid JSON: {e}", path.display())))
}

fn usize_field(config: &Value, key: &str, file: &Path) -> Result<usize> {
    config.get(key).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| {
        ModelError::InvalidModel(format!("{} has no integer \"{key}\"", file.display()))
    })
}

/// The safetensors files of a model: the shards named by `model.safetensors.index.json`, else
/// every `*.safetensors` in the directory.
pub fn weight_files(dir: &Path) -> Result<Vec<String>> {
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<String> = if index.exists() {
        let v = read_json(&index)?;
        let map = v.get("weight_map").and_then(Value::as_object).ok_or_else(|| {
            ModelError::InvalidModel(format!("{} has no \"weight_map\"", index.display()))
        })?;
        let mut f: Vec<String> =
            map.values().filter_map(Value::as_str).map(str::to_owned).collect();
        f.sort();
        f.dedup();
        f
    } else {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ModelError::InvalidModel(format!("cannot list {}: {e}", dir.display())))?;
        let mut f = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") {
                f.push(name);
            }
        }
        f.sort();
        f
    };
    if files.is_empty() {
        return Err(ModelError::InvalidModel(format!(
            "no *.safetensors weights in {}",
            dir.display()
        )));
    }
    for f in &mut files {
        let p = dir.join(&*f);
        if !p.is_file() {
            return Err(ModelError::InvalidModel(format!("weight file {} is missing", p.display())));
        }
    }
    Ok(files)
}

impl ModelInfo {
    /// Inspects `dir`: config.json, tokenizer.json and safetensors weights must be present and
    /// readable; the architecture must be one we can run. Weights are header-checked, not loaded.
    pub fn inspect(dir: &Path, options: &ModelOptions) -> Result<ModelInfo> {
        if !dir.is_absolute() {
            return Err(ModelError::InvalidModel(format!(
                "model path \"{}\" must be absolute (it is read by the server process)",
                dir.display()
            )));
        }
        if !dir.is_dir() {
            return Err(ModelError::InvalidModel(format!(
                "model directory {} does not exist or is not readable by the server",
                dir.display()
            )));
        }
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let adapter = match &options.adapter {
            Some(a) => {
                let a = PathBuf::from(a);
                if !a.is_absolute() {
                    return Err(ModelError::InvalidOption(format!("adapter path \"{}\" must be absolute", a.display())));
                }
                AdapterConfig::read(&a)?;
                Some(a)
            }
            None => None,
        };
        let tokenizer_path = tokenizer_of(dir, adapter.as_deref());
        if !tokenizer_path.is_file() {
            return Err(ModelError::InvalidModel(format!("{} is missing", tokenizer_path.display())));
        }
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
        let architecture = config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or(model_type)
            .to_owned();
        let family = match model_type {
            t if t.starts_with("embed_") => ModelFamily::Reranker,
            "bert" => ModelFamily::Bert,
            "llama" => ModelFamily::Llama,
            "mistral" => ModelFamily::Mistral,
            "qwen2" => ModelFamily::Qwen2,
            "qwen3" => ModelFamily::Qwen3,
            other => {
                return Err(ModelError::InvalidModel(format!(
                    "model_type \"{other}\" in {} is not supported (supported: bert, llama, mistral, qwen2, qwen3, and PE-Rank's embed_mistral)",
                    config_path.display()
                )))
            }
        };
        // JinaBERT (jina-embeddings-v2) is a BERT-family encoder too; BertBackbone picks its
        // stack from config.json at load. Its fields are checked now rather than at first use.
        let jina_bert = family == ModelFamily::Bert && crate::jina_bert::is_jina_bert(&config);
        if jina_bert {
            crate::jina_bert::JinaBertConfig::from_json(&config, &config_path)?;
        }
        let mut embedding_size = None;
        if family.is_decoder() {
            // Every field the decoder needs, checked now rather than at first use.
            DecoderConfig::from_json(&config, &config_path)?;
        } else if family == ModelFamily::Reranker {
            // The LLM under the projector (lr-rerank checks the rest of the checkpoint).
            let mut llm = config.clone();
            llm["model_type"] = Value::String(model_type.trim_start_matches("embed_").to_owned());
            DecoderConfig::from_json(&llm, &config_path)?;
            embedding_size = Some(usize_field(&config, "embedding_size", &config_path)?);
            if adapter.is_some() || options.pooling.is_some() || options.sparse_top_k.is_some() {
                return Err(ModelError::InvalidOption("a reranker takes only the encoder and max_length options".into()));
            }
        } else if adapter.is_some() {
            return Err(ModelError::InvalidOption("LoRA adapters are supported for decoder LLMs only".into()));
        }
        let hidden_size = usize_field(&config, "hidden_size", &config_path)?;
        let vocab_size = usize_field(&config, "vocab_size", &config_path)?;
        let max_positions = usize_field(&config, "max_position_embeddings", &config_path)?;

        // sentence-transformers records the length the model was trained for; prefer it.
        let st_config = dir.join("sentence_bert_config.json");
        let st_max = if st_config.is_file() {
            read_json(&st_config)?.get("max_seq_length").and_then(Value::as_u64).map(|v| v as usize)
        } else {
            None
        };
        let family_max = match family {
            ModelFamily::Bert => max_positions,
            // The prompt and the decoded candidates, within what the checkpoint was trained for.
            ModelFamily::Reranker => config
                .get("tokenizer_model_max_length")
                .and_then(Value::as_u64)
                .map_or(max_positions, |m| (m as usize).min(max_positions)),
            _ => DECODER_MAX_LENGTH.min(max_positions),
        };
        let max_length = options.max_length.or(st_max).unwrap_or(family_max);
        if max_length < 2 || max_length > max_positions {
            return Err(ModelError::InvalidOption(format!(
                "max_length {max_length} must be between 2 and the model's {max_positions} positions"
            )));
        }

        let pooling = match &options.pooling {
            Some(p) if family.is_decoder() && p != "last_token" => {
                return Err(ModelError::InvalidOption(format!(
                    "pooling \"{p}\": decoder LLMs are pooled at their last (eos) token"
                )))
            }
            Some(p) => Pooling::parse(p)?,
            None if family != ModelFamily::Bert => Pooling::LastToken,
            None => pooling_from_sentence_transformers(dir)?.unwrap_or(Pooling::Mean),
        };
        if options.encoder.is_some() && family != ModelFamily::Reranker {
            return Err(ModelError::InvalidOption("the encoder option is for rerankers (PE-Rank checkpoints) only".into()));
        }
        if options.sparse_top_k == Some(0) {
            return Err(ModelError::InvalidOption("sparse_top_k must be at least 1".into()));
        }

        let weight_files = weight_files(dir)?;
        let mut info = ModelInfo {
            path: dir.to_path_buf(),
            family,
            architecture,
            hidden_size,
            vocab_size,
            max_length,
            pooling,
            has_lm_head: false,
            weight_files,
            adapter,
            sparse_top_k: options.sparse_top_k,
            embedding_size,
            encoder: options.encoder.clone(),
        };
        let tensors = info.check_weight_headers()?;
        // Decided by the weights, not the architecture name: BertForPreTraining has the head
        // too, and a *ForMaskedLM export may have lost it.
        info.has_lm_head = match info.family {
            // Sparse encoding runs classic BERT's MLM head only (lr-encoders' SparseEncoder).
            ModelFamily::Bert if jina_bert => false,
            ModelFamily::Bert => tensors.iter().any(|t| t == BERT_MLM_HEAD_TENSOR),
            ModelFamily::Reranker => false,
            // A decoder's LM head is lm_head.weight, or the embeddings when tied (checked at load).
            _ => true,
        };
        Ok(info)
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        tokenizer_of(&self.path, self.adapter.as_deref())
    }

    pub fn weight_paths(&self) -> Vec<PathBuf> {
        self.weight_files.iter().map(|f| self.path.join(f)).collect()
    }

    /// Parses every weight file's safetensors header, so that a truncated or foreign file is
    /// reported at registration rather than at first use. Returns the tensor names.
    fn check_weight_headers(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for p in self.weight_paths() {
            let bytes = std::fs::File::open(&p).and_then(|f| {
                use std::io::Read;
                let mut len = [0u8; 8];
                (&f).read_exact(&mut len)?;
                Ok((f, u64::from_le_bytes(len)))
            });
            let (f, header_len) = bytes
                .map_err(|e| ModelError::InvalidModel(format!("cannot read {}: {e}", p.display())))?;
            let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if header_len == 0 || header_len > 100_000_000 || 8 + header_len > file_len {
                return Err(ModelError::InvalidModel(format!(
                    "{} is not a safetensors file (bad header length)",
                    p.display()
                )));
            }
            let mut header = vec![0u8; header_len as usize];
            use std::io::Read;
            (&f).read_exact(&mut header)
                .map_err(|e| ModelError::InvalidModel(format!("cannot read {}: {e}", p.display())))?;
            let v: Value = serde_json::from_slice(&header).map_err(|e| {
                ModelError::InvalidModel(format!("{} has a malformed safetensors header: {e}", p.display()))
            })?;
            let max_end = v
                .as_object()
                .map(|o| {
                    o.values()
                        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            if 8 + header_len + max_end > file_len {
                return Err(ModelError::InvalidModel(format!(
                    "{} is truncated: tensors need {} bytes, file has {file_len}",
                    p.display(),
                    8 + header_len + max_end
                )));
            }
            if let Some(o) = v.as_object() {
                names.extend(o.keys().filter(|k| *k != "__metadata__").cloned());
            }
        }
        Ok(names)
    }
}

/// The adapter's tokenizer when it ships one (the released LightRetriever adapters lowercase),
/// else the base model's.
fn tokenizer_of(dir: &Path, adapter: Option<&Path>) -> PathBuf {
    match adapter.map(|a| a.join("tokenizer.json")) {
        Some(t) if t.is_file() => t,
        _ => dir.join("tokenizer.json"),
    }
}

/// Reads `1_Pooling/config.json` (sentence-transformers) when present.
fn pooling_from_sentence_transformers(dir: &Path) -> Result<Option<Pooling>> {
    let p = dir.join("1_Pooling").join("config.json");
    if !p.is_file() {
        return Ok(None);
    }
    let v = read_json(&p)?;
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("pooling_mode_mean_tokens") {
        Ok(Some(Pooling::Mean))
    } else if flag("pooling_mode_cls_token") {
        Ok(Some(Pooling::Cls))
    } else if flag("pooling_mode_lasttoken") {
        Ok(Some(Pooling::LastToken))
    } else {
        Err(ModelError::InvalidModel(format!(
            "{} asks for a pooling mode that is not supported (mean, cls, lasttoken are)",
            p.display()
        )))
    }
}
