//! LightRetriever on a decoder LLM, as published (shared/notes/lightretriever.md):
//! - dense documents: `[bos] text [eos]`, the eos position's final hidden state, L2-normalised;
//! - query table rows: `[bos] Instruct: {instruction}\nQuery: {token}[eos]`, eos state, L2;
//! - sparse documents: LM-head logits at every position but bos/eos/pad, max, log(1 + relu(·)).

use candle_core::{Device, IndexOp, Tensor};
use lr_tokenizer::{PrefixCutter, Tokenizer};

use lr_model::{sequences_in_length_batches, Kernels, DOCUMENT_BATCH};
use lr_model::decoder::{Decoder, DecoderConfig, PaddingSide};
use lr_model::error::{ModelError, Result};
use lr_model::lora::{AdapterConfig, LoraAdapter};
use lr_model::model_dir::ModelInfo;
use lr_model::pooling::l2_normalize;

/// Positions per LM-head matmul: bounds the logits buffer ([rows, vocab] f32: 33 MB for a
/// 128k vocabulary) however long the batch.
const HEAD_ROWS: usize = 64;

pub struct LlmEncoder {
    model: Decoder,
    tokenizer: Tokenizer,
    /// Cuts long documents before tokenizing (only their first `max_length` ids are read).
    cutter: PrefixCutter,
    info: ModelInfo,
    bos: Option<u32>,
    eos: u32,
}

impl LlmEncoder {
    pub fn load(info: &ModelInfo, device: &Device) -> Result<Self> {
        Self::load_with(info, device, Kernels::Native)
    }

    /// [`LlmEncoder::load`] with a choice of CPU kernels.
    pub fn load_with(info: &ModelInfo, device: &Device, kernels: Kernels) -> Result<Self> {
        if !info.family.is_decoder() {
            return Err(ModelError::InvalidModel(format!("{} is not a decoder LLM", info.path.display())));
        }
        let config = DecoderConfig::read(&info.path)?;
        let adapter = match &info.adapter {
            Some(dir) => Some(LoraAdapter::load(&AdapterConfig::read(dir)?, device)?),
            None => None,
        };
        let model = Decoder::load_with(config, &info.weight_paths(), adapter.as_ref(), device, kernels)
            .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", info.path.display())))?;
        // Truncation is ours (content tokens only, then bos/eos around them).
        let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), None).map_err(ModelError::InvalidModel)?;
        let c = model.config();
        let eos = c.eos_token_id.ok_or_else(|| {
            ModelError::InvalidModel(format!("{}/config.json has no eos_token_id (last-token pooling needs it)", info.path.display()))
        })?;
        let bos = c.bos_token_id.filter(|&b| b != eos);
        let cutter = PrefixCutter::new(&tokenizer);
        Ok(LlmEncoder { bos, eos, model, tokenizer, cutter, info: info.clone() })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn dim(&self) -> usize {
        self.model.hidden_size()
    }

    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn decoder(&self) -> &Decoder {
        &self.model
    }

    fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn wrap(&self, content: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.extend(self.bos);
        ids.extend_from_slice(content);
        ids.push(self.eos);
        ids
    }

    /// `[bos] text [eos]`, the text truncated so that the whole fits the model's max length.
    /// The content ids are those of the whole text, truncated; a long text is cut first where
    /// the cut leaves them as they are (`lr_tokenizer::PrefixCutter`).
    pub fn document_ids(&self, text: &str) -> Result<Vec<u32>> {
        let specials = 1 + usize::from(self.bos.is_some());
        let content = self
            .cutter
            .first_ids(text, self.info.max_length.saturating_sub(specials), |p| {
                self.tokenizer.encode(p, false).map(|e| e.get_ids().to_vec()).map_err(|e| e.to_string())
            })
            .map_err(ModelError::Tokenizer)?;
        Ok(self.wrap(&content))
    }

    /// Dense document vectors (eos state, L2), in input order; batched by length.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts.iter().map(|t| self.document_ids(t)).collect::<Result<Vec<_>>>()?;
        self.encode_id_sequences(&ids, DOCUMENT_BATCH)
    }

    /// Dense vectors of already-wrapped sequences (their last id is pooled).
    pub fn encode_id_sequences(&self, seqs: &[Vec<u32>], batch: usize) -> Result<Vec<Vec<f32>>> {
        sequences_in_length_batches(seqs, batch, |group| {
            // Left padding puts every sequence's last token in the last column.
            let (hidden, _) = self.model.forward_sequences(group, PaddingSide::Left)?;
            let t = hidden.dim(1)?;
            let mut rows: Vec<Vec<f32>> = hidden.i((.., t - 1, ..))?.to_vec2()?;
            rows.iter_mut().for_each(|r| l2_normalize(r));
            Ok(rows)
        })
    }

    /// `[bos]` and the instruction prompt before each table token:
    /// `Instruct: {instruction}\nQuery: `.
    pub fn query_prompt_prefix(&self, instruction: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.content_ids(&format!("Instruct: {instruction}\nQuery: "))?);
        Ok(ids)
    }

    /// `[bos]` alone (no instruction), or nothing for models without a bos token.
    pub fn bos_prefix(&self) -> Vec<u32> {
        self.bos.into_iter().collect()
    }

    /// Query table rows: for each id, `prefix + [id, eos]` through the model, the eos state, L2.
    /// The prefix is run once and its keys and values shared by every id of the batch.
    pub fn token_table_rows(&self, prefix: &[u32], ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.model.device();
        let mut cache = self.model.new_cache(1);
        if !prefix.is_empty() {
            let p = Tensor::from_vec(prefix.to_vec(), (1, prefix.len()), device)?;
            self.model.forward(&self.model.embed(&p)?, &[vec![true; prefix.len()]], &mut cache)?;
        }
        let mut cache = cache.repeat(ids.len())?;
        let step: Vec<u32> = ids.iter().flat_map(|&id| [id, self.eos]).collect();
        let step = Tensor::from_vec(step, (ids.len(), 2), device)?;
        let hidden = self.model.forward(&self.model.embed(&step)?, &vec![vec![true; 2]; ids.len()], &mut cache)?;
        let mut rows: Vec<Vec<f32>> = hidden.i((.., 1, ..))?.to_vec2()?;
        rows.iter_mut().for_each(|r| l2_normalize(r));
        Ok(rows)
    }

    /// Sparse document vectors: (id, weight) sorted by id, weights > 0; with `top_k`, only the
    /// k largest weights are kept (ties broken by lower id).
    pub fn encode_sparse(&self, texts: &[&str], top_k: Option<usize>) -> Result<Vec<Vec<(u32, f32)>>> {
        let ids = texts.iter().map(|t| self.document_ids(t)).collect::<Result<Vec<_>>>()?;
        self.encode_sparse_ids(&ids, top_k)
    }

    /// Sparse vectors of already-wrapped sequences.
    pub fn encode_sparse_ids(&self, seqs: &[Vec<u32>], top_k: Option<usize>) -> Result<Vec<Vec<(u32, f32)>>> {
        sequences_in_length_batches(seqs, DOCUMENT_BATCH, |group| self.sparse_batch(group, top_k))
    }

    fn sparse_batch(&self, group: &[&[u32]], top_k: Option<usize>) -> Result<Vec<Vec<(u32, f32)>>> {
        let (hidden, real) = self.model.forward_sequences(group, PaddingSide::Right)?;
        let (b, t, h) = hidden.dims3()?;
        let flat = hidden.reshape((b * t, h))?;
        let pad = self.model.config().pad_token_id;
        let mut out = Vec::with_capacity(b);
        for (r, seq) in group.iter().enumerate() {
            // Content positions: real tokens that are not bos, eos or pad.
            let rows: Vec<u32> = seq
                .iter()
                .enumerate()
                .filter(|&(i, &id)| real[r][i] && Some(id) != self.bos && id != self.eos && Some(id) != pad)
                .map(|(i, _)| (r * t + i) as u32)
                .collect();
            let mut max: Option<Vec<f32>> = None;
            for chunk in rows.chunks(HEAD_ROWS) {
                let index = Tensor::new(chunk, self.model.device())?;
                let m: Vec<f32> = self.model.logits(&flat.index_select(&index, 0)?)?.max(0)?.to_vec1()?;
                match &mut max {
                    Some(acc) => acc.iter_mut().zip(&m).for_each(|(a, &x)| *a = a.max(x)),
                    slot => *slot = Some(m),
                }
            }
            out.push(sparse_weights(max.as_deref().unwrap_or(&[]), top_k)?);
        }
        Ok(out)
    }
}

/// log(1 + relu(max logit)) per id (log1p∘relu is monotone, so max first), pruned to `top_k`.
pub(crate) fn sparse_weights(max_logits: &[f32], top_k: Option<usize>) -> Result<Vec<(u32, f32)>> {
    let mut weights = Vec::new();
    for (id, &x) in max_logits.iter().enumerate() {
        if !x.is_finite() {
            return Err(ModelError::Inference(format!("logit of token id {id} is {x}")));
        }
        if x > 0.0 {
            weights.push((id as u32, x.ln_1p()));
        }
    }
    Ok(prune_to_top_k(weights, top_k))
}

/// The `top_k` largest weights (ties to the lower id), sorted by id; all of them without a k.
pub(crate) fn prune_to_top_k(weights: Vec<(u32, f32)>, top_k: Option<usize>) -> Vec<(u32, f32)> {
    match top_k {
        Some(k) => lr_vector::top_k(weights, k),
        None => weights,
    }
}

#[cfg(test)]
mod tests {
    use super::sparse_weights;

    #[test]
    fn top_k_keeps_the_largest_weights_sorted_by_id() {
        let w = sparse_weights(&[0.5, -1.0, 3.0, 2.0, 3.0], Some(2)).unwrap();
        assert_eq!(w.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 4]);
        let all = sparse_weights(&[0.5, -1.0, 3.0], None).unwrap();
        assert_eq!(all, vec![(0, 0.5f32.ln_1p()), (2, 3.0f32.ln_1p())]);
        assert!(sparse_weights(&[f32::NAN], None).is_err());
    }
}
