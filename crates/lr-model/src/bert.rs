//! The BERT-family encoder stack on candle (CPU; CUDA behind the `cuda` feature): config,
//! weights, tokenizer, one padded forward. The dense (pooled) and sparse (masked-LM head)
//! encoders of lr-encoders sit on it.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use lr_tokenizer::{PrefixCutter, Tokenizer};

use crate::error::{ModelError, Result};
use crate::model_dir::{ModelFamily, ModelInfo};

/// What the dense and the sparse BERT encoders share: config, encoder stack, tokenizer (padding
/// off, truncation at the model's length) and device. The weights stay available through `vb`
/// for heads on top of the stack.
pub struct BertBackbone {
    pub config: BertConfig,
    pub model: BertModel,
    pub tokenizer: Tokenizer,
    /// Cuts long texts before tokenizing (the model reads at most `max_length` ids of them).
    cutter: PrefixCutter,
    max_length: usize,
    pub device: Device,
    pub vb: VarBuilder<'static>,
}

impl BertBackbone {
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        if info.family != ModelFamily::Bert {
            return Err(ModelError::InvalidModel(format!(
                "{} is not a BERT-family model",
                info.path.display()
            )));
        }
        let config_path = info.path.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            ModelError::InvalidModel(format!("cannot read {}: {e}", config_path.display()))
        })?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| {
            ModelError::InvalidModel(format!("{} is not a BERT config: {e}", config_path.display()))
        })?;
        // Safety: the files are memory-mapped read-only; a concurrent rewrite of a registered
        // model's weights is outside what we support (documented in the README).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&info.weight_paths(), DType::F32, device)
        }
        .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", info.path.display())))?;
        let model = BertModel::load(vb.clone(), &config)
            .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", info.path.display())))?;
        let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), Some(info.max_length))
            .map_err(ModelError::InvalidModel)?;
        let cutter = PrefixCutter::new(&tokenizer);
        Ok(BertBackbone { config, model, tokenizer, cutter, max_length: info.max_length, device: device.clone(), vb })
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
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        Ok((hidden, mask))
    }
}
