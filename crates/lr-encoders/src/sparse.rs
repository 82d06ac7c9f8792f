//! SPLADE-style sparse document encoder on a BERT masked-LM model: the MLM head's logits at every
//! content position, max over positions, then `log(1 + relu(·))` → one weight per vocabulary id.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use lr_tokenizer::{Encoding, Tokenizer};

use lr_model::cpu_bert::activation_of;
use lr_model::kernels::{self, Activation, Dense};
use lr_model::{in_length_batches, BertBackbone, BertVariant, Kernels, DOCUMENT_BATCH};
use lr_model::error::{ModelError, Result};
use lr_model::model_dir::{ModelInfo, BERT_MLM_HEAD_TENSOR};

/// Positions per head matmul: bounds the logits buffer ([rows, vocab] f32, 62 MB for BERT's
/// 30,522 ids) however large the batch.
const HEAD_ROWS: usize = 512;

/// BERT's `cls.predictions`: dense(hidden→hidden), activation, LayerNorm, decoder(hidden→vocab).
struct MlmHead {
    dense: Linear,
    activation: HiddenAct,
    norm: LayerNorm,
    decoder: Linear,
}

impl MlmHead {
    fn load(vb: &VarBuilder, config: &BertConfig) -> candle_core::Result<Self> {
        let (hidden, vocab) = (config.hidden_size, config.vocab_size);
        let head = vb.pp("cls.predictions");
        let dense = candle_nn::linear(hidden, hidden, head.pp("transform.dense"))?;
        // candle_nn::layer_norm also reads the old `gamma`/`beta` names this model uses.
        let norm = candle_nn::layer_norm(hidden, config.layer_norm_eps, head.pp("transform.LayerNorm"))?;
        // Hugging Face ties the decoder weight to the word embeddings and saves one copy only
        // (as `bert.embeddings.word_embeddings.weight`); the bias is saved as `cls.predictions.bias`.
        let weight = if head.contains_tensor("decoder.weight") {
            head.get((vocab, hidden), "decoder.weight")?
        } else {
            vb.get((vocab, hidden), "bert.embeddings.word_embeddings.weight")?
        };
        let bias = if head.contains_tensor("bias") {
            head.get(vocab, "bias")?
        } else {
            head.get(vocab, "decoder.bias")?
        };
        let decoder = Linear::new(weight, Some(bias));
        Ok(MlmHead { dense, activation: config.hidden_act, norm, decoder })
    }

    /// [rows, hidden] → logits [rows, vocab].
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let xs = self.dense.forward(xs)?;
        let xs = match self.activation {
            // Transformers' "gelu" is the exact (erf) GELU; "gelu_new"-style tanh is the approximation.
            HiddenAct::Gelu => xs.gelu_erf()?,
            HiddenAct::GeluApproximate => xs.gelu()?,
            HiddenAct::Relu => xs.relu()?,
        };
        self.decoder.forward(&self.norm.forward(&xs)?)
    }
}

/// The same head on the native CPU kernels: one GEMM for the transform, then the decoder's
/// logits reduced to their max per document tile by tile (`kernels::segment_max_logits`),
/// never written out whole.
struct NativeMlmHead {
    dense: Dense,
    activation: Activation,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
    /// `[vocab, hidden]`, as stored (the tied word embeddings).
    decoder: Vec<f32>,
    decoder_bias: Vec<f32>,
    vocab: usize,
}

fn floats(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()
}

impl NativeMlmHead {
    fn from(head: &MlmHead, config: &BertConfig) -> candle_core::Result<Self> {
        let (hidden, vocab) = (config.hidden_size, config.vocab_size);
        let bias = head.dense.bias().map(floats).transpose()?.unwrap_or_else(|| vec![0.0; hidden]);
        Ok(NativeMlmHead {
            dense: Dense::from_linear(floats(head.dense.weight())?, bias, hidden, hidden),
            activation: activation_of(head.activation),
            gamma: floats(head.norm.weight())?,
            beta: head.norm.bias().map(floats).transpose()?.unwrap_or_else(|| vec![0.0; hidden]),
            eps: config.layer_norm_eps as f32,
            decoder: floats(head.decoder.weight())?,
            decoder_bias: head.decoder.bias().map(floats).transpose()?.unwrap_or_else(|| vec![0.0; vocab]),
            vocab,
        })
    }

    /// Max logit per id of each segment of `rows` (`[n, hidden]`, content positions only).
    fn max_logits(&self, rows: &[f32], segments: &[(usize, usize)]) -> Vec<Option<Vec<f32>>> {
        let hidden = self.dense.inputs;
        let n = rows.len() / hidden;
        let mut t = vec![0f32; n * hidden];
        self.dense.matmul_into(rows, n, &mut t, false);
        kernels::bias_activation(&mut t, &self.dense.bias, self.activation);
        kernels::residual_layer_norm(&mut t, &vec![0.0; hidden], &self.gamma, &self.beta, self.eps);
        let max = kernels::segment_max_logits(&t, hidden, segments, &self.decoder, self.vocab);
        segments
            .iter()
            .zip(max.chunks_exact(self.vocab))
            .map(|(&(start, end), m)| {
                // max(x·w + b) = max(x·w) + b: the bias is added once per id.
                (end > start).then(|| m.iter().zip(&self.decoder_bias).map(|(x, b)| x + b).collect())
            })
            .collect()
    }
}

/// The head as the backbone runs: candle's ops (CUDA, `Kernels::Candle`) or native.
enum Head {
    Candle(MlmHead),
    Native(NativeMlmHead),
}

pub struct SparseEncoder {
    backbone: BertBackbone,
    head: Head,
    info: ModelInfo,
}

impl SparseEncoder {
    pub fn load(info: &ModelInfo, device: &candle_core::Device) -> Result<Self> {
        Self::load_with(info, device, Kernels::Native)
    }

    /// [`SparseEncoder::load`] with a choice of CPU kernels.
    pub fn load_with(info: &ModelInfo, device: &candle_core::Device, kernels: Kernels) -> Result<Self> {
        // Said first: ModelInfo reports no MLM head for JinaBERT whatever its weights hold.
        if BertVariant::read(&info.path)? == BertVariant::Jina {
            return Err(ModelError::InvalidModel(format!(
                "model {} is JinaBERT (architecture {}): sparse encoding runs a classic BERT \
                 masked-LM head (SPLADE-style BertForMaskedLM); JinaBERT encodes dense vectors only",
                info.path.display(),
                info.architecture
            )));
        }
        if !info.has_lm_head {
            return Err(ModelError::InvalidModel(format!(
                "model {} has no masked-LM head (architecture {}, no {BERT_MLM_HEAD_TENSOR} in its \
                 weights): sparse encoding needs a BertForMaskedLM-style model such as SPLADE",
                info.path.display(),
                info.architecture
            )));
        }
        let backbone = BertBackbone::load_with(info, device, kernels)?;
        let config = backbone.classic_config().ok_or_else(|| {
            ModelError::InvalidModel(format!("{}: no masked-LM head on a JinaBERT stack", info.path.display()))
        })?;
        let head = MlmHead::load(&backbone.vb, config).map_err(|e| {
            ModelError::InvalidModel(format!("{}: masked-LM head: {e}", info.path.display()))
        })?;
        // One copy of the weights: the candle head is dropped once converted.
        let head = if backbone.is_native() {
            Head::Native(NativeMlmHead::from(&head, config).map_err(|e| {
                ModelError::InvalidModel(format!("{}: masked-LM head: {e}", info.path.display()))
            })?)
        } else {
            Head::Candle(head)
        };
        Ok(SparseEncoder { backbone, head, info: info.clone() })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Dimension of the sparse vectors (the MLM head's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.backbone.vocab_size()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.backbone.tokenizer
    }

    /// Token ids of a document as the model sees it (special tokens, truncation).
    pub fn document_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.backbone.tokenize(text)?.get_ids().to_vec())
    }

    /// One sparse vector per text: (token id, weight), sorted by id, only weights > 0.
    /// Inputs are grouped by length so that a batch carries little padding.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<(u32, f32)>>> {
        let encodings = texts.iter().map(|t| self.backbone.tokenize(t)).collect::<Result<Vec<_>>>()?;
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        in_length_batches(&lengths, DOCUMENT_BATCH, |chunk| {
            let group: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            self.forward_sparse(&group)
        })
    }

    fn forward_sparse(&self, docs: &[&Encoding]) -> Result<Vec<Vec<(u32, f32)>>> {
        let ids: Vec<&[u32]> = docs.iter().map(|e| e.get_ids()).collect();
        let head = match &self.head {
            Head::Candle(head) => head,
            Head::Native(head) => {
                let packed = self.backbone.forward_packed(&ids)?;
                let h = packed.hidden;
                // Content positions only: the template's [CLS]/[SEP] never reach the head.
                let mut rows = Vec::new();
                let mut segments = Vec::with_capacity(docs.len());
                for (d, enc) in docs.iter().enumerate() {
                    let start = rows.len() / h;
                    let states = packed.sequence(d);
                    for (pos, &special) in enc.get_special_tokens_mask().iter().enumerate() {
                        if special == 0 {
                            rows.extend_from_slice(&states[pos * h..(pos + 1) * h]);
                        }
                    }
                    segments.push((start, rows.len() / h));
                }
                return head
                    .max_logits(&rows, &segments)
                    .into_iter()
                    .map(|m| match m {
                        Some(m) => crate::llm::sparse_weights(&m, None),
                        None => Ok(Vec::new()), // no content tokens (empty text)
                    })
                    .collect();
            }
        };
        let (hidden, _mask) = self.backbone.forward_padded(&ids)?;
        let (batch, len, dim) = hidden.dims3()?;
        let flat = hidden.reshape((batch * len, dim))?;

        // Content positions only: the template's [CLS]/[SEP] (special-tokens mask) and padding
        // (beyond the encoding's length) never reach the head. Rows of one document are adjacent.
        let mut rows: Vec<u32> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (d, enc) in docs.iter().enumerate() {
            for (pos, &special) in enc.get_special_tokens_mask().iter().enumerate() {
                if special == 0 {
                    rows.push((d * len + pos) as u32);
                    owner.push(d);
                }
            }
        }

        // log1p∘relu is monotone, so max over positions of log1p(relu(logit)) equals
        // log1p(relu(max logit)): only the max logit per id is kept.
        let mut max_logits: Vec<Option<Vec<f32>>> = vec![None; batch];
        for (chunk_rows, chunk_owner) in rows.chunks(HEAD_ROWS).zip(owner.chunks(HEAD_ROWS)) {
            let index = Tensor::new(chunk_rows, &self.backbone.device)?;
            let logits = head.forward(&flat.index_select(&index, 0)?)?;
            let mut start = 0;
            while start < chunk_owner.len() {
                let d = chunk_owner[start];
                let end = start + chunk_owner[start..].iter().take_while(|&&o| o == d).count();
                let m: Vec<f32> = logits.narrow(0, start, end - start)?.max(0)?.to_vec1()?;
                match &mut max_logits[d] {
                    Some(acc) => acc.iter_mut().zip(&m).for_each(|(a, &x)| *a = a.max(x)),
                    slot => *slot = Some(m),
                }
                start = end;
            }
        }

        max_logits
            .into_iter()
            .map(|m| {
                let Some(m) = m else { return Ok(Vec::new()) }; // no content tokens (empty text)
                crate::llm::sparse_weights(&m, None)
            })
            .collect()
    }
}
