//! The BERT-family dense encoder: the model's pooling over lr-model's encoder stack,
//! L2-normalised (all-MiniLM-L6-v2 and its kin), and its query-table rows (`[CLS] id [SEP]`).

use candle_core::{DType, Device};
use lr_model::{sequences_in_length_batches, BertBackbone, Kernels, DOCUMENT_BATCH};
use lr_model::{ModelError, ModelInfo, Result};
use lr_tokenizer::Tokenizer;

use lr_model::pooling::l2_normalize;

/// A BERT-family document encoder (dense vectors by the model's pooling).
pub struct BertEncoder {
    backbone: BertBackbone,
    info: ModelInfo,
    /// `[CLS]` and `[SEP]` as the tokenizer's template places them.
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl BertEncoder {
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        Self::load_with(info, device, Kernels::Native)
    }

    /// [`BertEncoder::load`] with a choice of CPU kernels.
    pub fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self> {
        let backbone = BertBackbone::load_with(info, device, kernels)?;
        let (prefix, suffix) =
            lr_tokenizer::special_wrapping(&backbone.tokenizer).map_err(ModelError::Tokenizer)?;
        Ok(BertEncoder { backbone, info: info.clone(), prefix, suffix })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn dim(&self) -> usize {
        self.info.hidden_size
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.backbone.tokenizer
    }

    /// Token ids of a document as the model sees it (special tokens, truncation).
    pub fn document_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.backbone.tokenize(text)?.get_ids().to_vec())
    }

    /// Encodes documents into L2-normalised vectors, in input order. Inputs are grouped by length
    /// so that a batch carries little padding.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts.iter().map(|t| self.document_ids(t)).collect::<Result<Vec<_>>>()?;
        self.encode_id_sequences(&ids, DOCUMENT_BATCH)
    }

    /// Encodes already-tokenised sequences (special tokens included), in input order.
    pub fn encode_id_sequences(&self, seqs: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        sequences_in_length_batches(seqs, batch, |group| self.forward_pooled(group))
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
        if self.backbone.is_native() {
            let packed = self.backbone.forward_packed(group)?;
            return Ok((0..packed.len())
                .map(|i| {
                    let mut v = self.info.pooling.apply_rows(packed.sequence(i), packed.hidden);
                    l2_normalize(&mut v);
                    v
                })
                .collect());
        }
        let (hidden, mask) = self.backbone.forward_padded(group)?;
        let pooled = self.info.pooling.apply(&hidden, &mask)?;
        let mut rows: Vec<Vec<f32>> = pooled.to_dtype(DType::F32)?.to_vec2()?;
        rows.iter_mut().for_each(|r| l2_normalize(r));
        Ok(rows)
    }
}
