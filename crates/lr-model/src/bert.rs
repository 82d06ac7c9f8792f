//! The BERT-family encoder stack on candle (CPU; CUDA behind the `cuda` feature): config,
//! weights, tokenizer, one padded forward. The dense (pooled) and sparse (masked-LM head)
//! encoders of lr-encoders sit on it. Two stacks share the family, picked from config.json at
//! load: classic BERT (learned absolute positions, GELU MLP; candle-transformers) and JinaBERT
//! (ALiBi, GEGLU; `jina_bert.rs`).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use lr_tokenizer::{PrefixCutter, Tokenizer};
use serde_json::Value;

use crate::cpu_bert::{CpuBert, Packed};
use crate::kernels::Kernels;
use crate::error::{ModelError, Result};
use crate::jina_bert::{JinaBert, JinaBertConfig};
use crate::model_dir::{ModelFamily, ModelInfo};

/// Which network a BERT-family (`model_type: "bert"`) config.json describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertVariant {
    /// BERT with learned absolute positions (all-MiniLM, SPLADE, …).
    Classic,
    /// JinaBERT: ALiBi instead of positions, a GEGLU MLP (jina-embeddings-v2).
    Jina,
}

impl BertVariant {
    pub fn of_config(config: &Value) -> Self {
        if crate::jina_bert::is_jina_bert(config) {
            BertVariant::Jina
        } else {
            BertVariant::Classic
        }
    }

    /// The variant of the model in `dir` (its config.json).
    pub fn read(dir: &Path) -> Result<Self> {
        Ok(Self::of_config(&read_config(&dir.join("config.json"))?))
    }
}

fn read_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::InvalidModel(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::InvalidModel(format!("{} is not valid JSON: {e}", path.display())))
}

/// The encoder stack of a BERT-family model.
pub enum BertStack {
    /// candle-transformers' BERT (boxed: it is most of the enum's size): the CUDA path.
    Classic { config: BertConfig, model: Box<BertModel> },
    /// The same network on the CPU, native (`cpu_bert.rs`): packed sequences, fused row ops.
    NativeClassic { config: BertConfig, model: Box<CpuBert> },
    /// `jina_bert.rs` (candle-nn ops).
    Jina(JinaBert),
}

/// What the dense and the sparse BERT encoders share: the encoder stack, tokenizer (padding
/// off, truncation at the model's length) and device. The weights stay available through `vb`
/// for heads on top of the stack.
pub struct BertBackbone {
    pub stack: BertStack,
    pub tokenizer: Tokenizer,
    /// Cuts long texts before tokenizing (the model reads at most `max_length` ids of them).
    cutter: PrefixCutter,
    max_length: usize,
    pub device: Device,
    pub vb: VarBuilder<'static>,
}

impl BertBackbone {
    /// Loads the model for `device`: on the CPU, classic BERT runs native (`cpu_bert.rs`).
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        Self::load_with(info, device, Kernels::Native)
    }

    /// [`BertBackbone::load`] with a choice of kernels (`Kernels::Candle` on the CPU too: the
    /// cross-check of the native forward against candle-transformers').
    pub fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self> {
        if info.family != ModelFamily::Bert {
            return Err(ModelError::InvalidModel(format!(
                "{} is not a BERT-family model",
                info.path.display()
            )));
        }
        let config_path = info.path.join("config.json");
        let config = read_config(&config_path)?;
        let invalid = |e: candle_core::Error| ModelError::InvalidModel(format!("{}: {e}", info.path.display()));
        // Safety: the files are memory-mapped read-only; a concurrent rewrite of a registered
        // model's weights is outside what we support (documented in the README).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&info.weight_paths(), DType::F32, device)
        }
        .map_err(invalid)?;
        let stack = match BertVariant::of_config(&config) {
            BertVariant::Jina => {
                let jina = JinaBertConfig::from_json(&config, &config_path)?;
                // A missing or misshapen tensor is the checkpoint's defect, not an inference error.
                BertStack::Jina(JinaBert::load(jina, &vb, device).map_err(|e| match e {
                    ModelError::Inference(m) => ModelError::InvalidModel(format!("{}: {m}", info.path.display())),
                    other => other,
                })?)
            }
            BertVariant::Classic => {
                let config: BertConfig = serde_json::from_value(config).map_err(|e| {
                    ModelError::InvalidModel(format!("{} is not a BERT config: {e}", config_path.display()))
                })?;
                if device.is_cpu() && kernels == Kernels::Native {
                    let model = CpuBert::load(&vb, &config)
                        .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", info.path.display())))?;
                    BertStack::NativeClassic { config, model: Box::new(model) }
                } else {
                    let model = BertModel::load(vb.clone(), &config).map_err(invalid)?;
                    BertStack::Classic { config, model: Box::new(model) }
                }
            }
        };
        let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), Some(info.max_length))
            .map_err(ModelError::InvalidModel)?;
        let cutter = PrefixCutter::new(&tokenizer);
        Ok(BertBackbone { stack, tokenizer, cutter, max_length: info.max_length, device: device.clone(), vb })
    }

    pub fn variant(&self) -> BertVariant {
        match self.stack {
            BertStack::Classic { .. } | BertStack::NativeClassic { .. } => BertVariant::Classic,
            BertStack::Jina(_) => BertVariant::Jina,
        }
    }

    /// The classic stack's config (what a masked-LM head on it is built from); None for JinaBERT.
    pub fn classic_config(&self) -> Option<&BertConfig> {
        match &self.stack {
            BertStack::Classic { config, .. } | BertStack::NativeClassic { config, .. } => Some(config),
            BertStack::Jina(_) => None,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.stack {
            BertStack::Classic { config, .. } | BertStack::NativeClassic { config, .. } => config.vocab_size,
            BertStack::Jina(model) => model.config().vocab_size,
        }
    }

    /// Tokenizes one text with special tokens and truncation, as the model sees it. A long text
    /// is cut first where the cut leaves its first `max_length` ids as they are
    /// (`lr_tokenizer::PrefixCutter`): the encoding is the same, its cost bounded.
    pub fn tokenize(&self, text: &str) -> Result<lr_tokenizer::Encoding> {
        let text = self
            .cutter
            .prefix_by(text, self.max_length, |p| {
                self.tokenizer.encode(p, false).map(|e| e.len()).map_err(|e| e.to_string())
            })
            .map_err(ModelError::Tokenizer)?;
        self.tokenizer.encode(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Whether the forward runs on the native CPU kernels (then [`BertBackbone::forward_packed`]
    /// is the cheap form; the others are built from it).
    pub fn is_native(&self) -> bool {
        matches!(self.stack, BertStack::NativeClassic { .. })
    }

    /// The last hidden states of each sequence (ids with special tokens), packed end to end.
    pub fn forward_packed(&self, group: &[&[u32]]) -> Result<Packed> {
        match &self.stack {
            BertStack::NativeClassic { model, .. } => model.forward(group),
            _ => {
                let (hidden, _) = self.forward_padded(group)?;
                Packed::from_padded(&hidden, &group.iter().map(|s| s.len()).collect::<Vec<_>>())
            }
        }
    }

    /// One forward over right-padded sequences. Returns the hidden states [batch, len, hidden]
    /// and the attention mask [batch, len] (u32, 1 = token, 0 = padding).
    pub fn forward_padded(&self, group: &[&[u32]]) -> Result<(Tensor, Tensor)> {
        let max_len = group.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(group.len() * max_len);
        let mut mask = Vec::with_capacity(group.len() * max_len);
        for s in group {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat(0u32).take(max_len - s.len()));
            mask.extend(std::iter::repeat(1u32).take(s.len()));
            mask.extend(std::iter::repeat(0u32).take(max_len - s.len()));
        }
        let shape = (group.len(), max_len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let hidden = match &self.stack {
            BertStack::Classic { model, .. } => model.forward(&ids, &ids.zeros_like()?, Some(&mask))?,
            BertStack::NativeClassic { model, .. } => {
                // Padding rows are zeros: the mask says which rows are tokens.
                let packed = model.forward(group)?;
                let h = packed.hidden;
                let mut padded = vec![0f32; group.len() * max_len * h];
                for b in 0..group.len() {
                    let rows = packed.sequence(b);
                    padded[b * max_len * h..b * max_len * h + rows.len()].copy_from_slice(rows);
                }
                Tensor::from_vec(padded, (group.len(), max_len, h), &self.device)?
            }
            BertStack::Jina(model) => model.forward(&ids, &mask)?,
        };
        Ok((hidden, mask))
    }
}
