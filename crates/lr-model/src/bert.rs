//! BERT-family dense encoder on candle (CPU; CUDA behind the `cuda` feature).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use lr_tokenizer::Tokenizer;

use crate::error::{ModelError, Result};
use crate::model_dir::{ModelFamily, ModelInfo};
use crate::pooling::l2_normalize;

/// Texts per forward pass when encoding documents: measured best on 2 CPU cores for
/// ~sentence-length inputs (candle.md: 4.7 ms/sentence at 32 vs 14.7 at 1).
pub const DOCUMENT_BATCH: usize = 32;

pub struct BertEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    info: ModelInfo,
    device: Device,
    /// `[CLS]` and `[SEP]` as the tokenizer's template places them.
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl BertEncoder {
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
        let model = BertModel::load(vb, &config)
            .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", info.path.display())))?;
        let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), Some(info.max_length))
            .map_err(ModelError::InvalidModel)?;
        let (prefix, suffix) =
            lr_tokenizer::special_wrapping(&tokenizer).map_err(ModelError::Tokenizer)?;
        Ok(BertEncoder { model, tokenizer, info: info.clone(), device: device.clone(), prefix, suffix })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn dim(&self) -> usize {
        self.info.hidden_size
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a document as the model sees it (special tokens, truncation).
    pub fn document_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes documents into L2-normalised vectors, in input order. Inputs are grouped by length
    /// so that a batch carries little padding.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts.iter().map(|t| self.document_ids(t)).collect::<Result<Vec<_>>>()?;
        self.encode_id_sequences(&ids, DOCUMENT_BATCH)
    }

    /// Encodes already-tokenised sequences (special tokens included), in input order.
    pub fn encode_id_sequences(&self, seqs: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut out = vec![Vec::new(); seqs.len()];
        for chunk in order.chunks(batch.max(1)) {
            let group: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
            let vectors = self.forward_pooled(&group)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// LightRetriever's table rows for a BERT encoder: each id encoded alone as `[CLS] id [SEP]`
    /// and pooled as the model pools documents.
    pub fn token_table_rows(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<Vec<u32>> = ids
            .iter()
            .map(|&id| {
                let mut s = self.prefix.clone();
                s.push(id);
                s.extend_from_slice(&self.suffix);
                s
            })
            .collect();
        // All the same length: one big batch per call is fastest.
        self.encode_id_sequences(&seqs, seqs.len().max(1))
    }

    /// One forward over right-padded sequences; returns pooled, L2-normalised vectors.
    fn forward_pooled(&self, group: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
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
        let pooled = self.info.pooling.apply(&hidden, &mask)?;
        let mut rows: Vec<Vec<f32>> = pooled.to_dtype(DType::F32)?.to_vec2()?;
        rows.iter_mut().for_each(|r| l2_normalize(r));
        Ok(rows)
    }
}
