//! One decoder-only transformer for the Llama, Mistral, Qwen2 and Qwen3 families, written on
//! candle-nn ops because candle-transformers' model files hide hidden states or lack causal masks
//! (shared/notes/candle.md).
//!
//! Conventions (Hugging Face transformers): pre-norm blocks with RMSNorm; rotate-half RoPE, with
//! Llama-3 frequency scaling; grouped-query attention where kv head j serves query heads
//! j·g … j·g+g−1; SwiGLU MLP; Qwen2's q/k/v biases and Qwen3's per-head q/k RMSNorm are taken
//! from the weights; the LM head is the embedding matrix when tied.
//!
//! One entry point, [`Decoder::forward`], runs embeddings through the stack with a [`KvCache`]:
//! a padded batch (left or right), a shared prompt prefix, or one decoding step all go through it.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, RmsNorm, VarBuilder};
use serde_json::Value;

use crate::cpu_decoder::{self, NativeKv, NativeLayer, Shape};
use crate::error::{ModelError, Result};
use crate::kernels::{self, Kernels};
use crate::lora::LoraAdapter;

/// The architectures the decoder runs, from config.json's `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderKind {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl DecoderKind {
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(DecoderKind::Llama),
            "mistral" => Some(DecoderKind::Mistral),
            "qwen2" => Some(DecoderKind::Qwen2),
            "qwen3" => Some(DecoderKind::Qwen3),
            _ => None,
        }
    }
}

/// Llama-3's RoPE frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// What the decoder needs from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub kind: DecoderKind,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub tie_word_embeddings: bool,
    /// Mistral's sliding attention window, in positions.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

fn field_usize(v: &Value, key: &str, file: &Path) -> Result<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(|| {
        ModelError::InvalidModel(format!("{} has no integer \"{key}\"", file.display()))
    })
}

fn field_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// A token id field that may be absent, null, a number or a list (Llama-3 lists several eos
/// ids; the first is the one a tokenizer appends).
fn token_id(v: &Value, key: &str) -> Option<u32> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

impl DecoderConfig {
    pub fn from_json(v: &Value, file: &Path) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let kind = DecoderKind::from_model_type(model_type).ok_or_else(|| {
            ModelError::InvalidModel(format!(
                "model_type \"{model_type}\" in {} is not a supported decoder (llama, mistral, qwen2, qwen3)",
                file.display()
            ))
        })?;
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str).filter(|a| *a != "silu") {
            return Err(ModelError::InvalidModel(format!("{}: hidden_act \"{act}\" is not supported (silu is)", file.display())));
        }
        let hidden_size = field_usize(v, "hidden_size", file)?;
        let num_heads = field_usize(v, "num_attention_heads", file)?;
        let num_kv_heads = v.get("num_key_value_heads").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(num_heads);
        let head_dim = match v.get("head_dim").and_then(Value::as_u64) {
            Some(d) => d as usize,
            None if num_heads > 0 && hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(ModelError::InvalidModel(format!(
                    "{}: hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads} and no head_dim is given",
                    file.display()
                )))
            }
        };
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 || head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::InvalidModel(format!(
                "{}: {num_heads} attention heads cannot share {num_kv_heads} key/value heads of {head_dim} dims",
                file.display()
            )));
        }
        // transformers v5 writes both under `rope_parameters`; older configs at the top level.
        let rope = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_theta = field_f64(v, "rope_theta").or_else(|| rope.and_then(|p| field_f64(p, "rope_theta"))).unwrap_or(10_000.0);
        let rope_scaling = match v.get("rope_scaling").filter(|s| !s.is_null()).or(rope) {
            None | Some(Value::Null) => None,
            Some(s) => {
                let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("");
                match kind {
                    "" | "default" => None,
                    "llama3" => {
                        let f = |k: &str| {
                            field_f64(s, k).ok_or_else(|| {
                                ModelError::InvalidModel(format!("{}: rope_scaling has no \"{k}\"", file.display()))
                            })
                        };
                        Some(Llama3RopeScaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f("original_max_position_embeddings")?,
                        })
                    }
                    other => {
                        return Err(ModelError::InvalidModel(format!(
                            "{}: rope_scaling type \"{other}\" is not supported (llama3 is)",
                            file.display()
                        )))
                    }
                }
            }
        };
        let sliding_window = match kind {
            // Qwen2 configs carry a window that is off unless use_sliding_window is true.
            DecoderKind::Mistral => v.get("sliding_window").and_then(Value::as_u64).map(|x| x as usize),
            DecoderKind::Qwen2 | DecoderKind::Qwen3
                if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) =>
            {
                return Err(ModelError::InvalidModel(format!(
                    "{}: use_sliding_window is not supported for {model_type}",
                    file.display()
                )))
            }
            _ => None,
        };
        let intermediate_size = field_usize(v, "intermediate_size", file)?;
        let vocab_size = field_usize(v, "vocab_size", file)?;
        for (name, value) in [("hidden_size", hidden_size), ("intermediate_size", intermediate_size), ("vocab_size", vocab_size)] {
            if value == 0 {
                return Err(ModelError::InvalidModel(format!("{}: {name} is 0", file.display())));
            }
        }
        Ok(DecoderConfig {
            kind,
            hidden_size,
            intermediate_size,
            num_layers: field_usize(v, "num_hidden_layers", file)?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            max_position_embeddings: field_usize(v, "max_position_embeddings", file)?,
            rms_norm_eps: field_f64(v, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            sliding_window,
            bos_token_id: token_id(v, "bos_token_id"),
            eos_token_id: token_id(v, "eos_token_id"),
            pad_token_id: token_id(v, "pad_token_id"),
        })
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join("config.json");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ModelError::InvalidModel(format!("cannot read {}: {e}", file.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::InvalidModel(format!("{} is not valid JSON: {e}", file.display())))?;
        Self::from_json(&v, &file)
    }

    /// RoPE inverse frequencies, one per pair of head dims, with Llama-3 scaling applied.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                let base = 1.0 / self.rope_theta.powf(2.0 * i as f64 / d);
                let Some(s) = self.rope_scaling else { return base as f32 };
                let wavelen = 2.0 * std::f64::consts::PI / base;
                let low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
                let high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
                let scaled = if wavelen < high_freq_wavelen {
                    base
                } else if wavelen > low_freq_wavelen {
                    base / s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * base / s.factor + smooth * base
                };
                scaled as f32
            })
            .collect()
    }
}

/// A linear layer, LoRA-merged when an adapter targets it; bias when the weights have one.
fn linear(vb: &VarBuilder, lora: Option<&LoraAdapter>, inputs: usize, outputs: usize) -> Result<Linear> {
    let weight = vb.get((outputs, inputs), "weight")?;
    let weight = match lora {
        Some(adapter) => adapter.merge(&vb.prefix(), weight)?,
        None => weight,
    };
    let bias = if vb.contains_tensor("bias") { Some(vb.get(outputs, "bias")?) } else { None };
    Ok(Linear::new(weight, bias))
}

fn rms_norm(vb: &VarBuilder, size: usize, eps: f64) -> Result<RmsNorm> {
    Ok(RmsNorm::new(vb.get(size, "weight")?, eps))
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3: RMSNorm over each head's dims of q and k, before RoPE.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: &VarBuilder, c: &DecoderConfig, lora: Option<&LoraAdapter>) -> Result<Self> {
        let (h, d) = (c.hidden_size, c.head_dim);
        let qk_norm = c.kind == DecoderKind::Qwen3;
        Ok(Attention {
            q: linear(&vb.pp("q_proj"), lora, h, c.num_heads * d)?,
            k: linear(&vb.pp("k_proj"), lora, h, c.num_kv_heads * d)?,
            v: linear(&vb.pp("v_proj"), lora, h, c.num_kv_heads * d)?,
            o: linear(&vb.pp("o_proj"), lora, c.num_heads * d, h)?,
            q_norm: if qk_norm { Some(rms_norm(&vb.pp("q_norm"), d, c.rms_norm_eps)?) } else { None },
            k_norm: if qk_norm { Some(rms_norm(&vb.pp("k_norm"), d, c.rms_norm_eps)?) } else { None },
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: d,
        })
    }

    /// x [b, t, hidden] → [b, t, hidden]; appends this step's keys and values to `kv`.
    fn forward(&self, x: &Tensor, rope: &(Tensor, Tensor), mask: &Tensor, kv: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let d = self.head_dim;
        let heads_of = |l: &Linear, n: usize, norm: &Option<RmsNorm>| -> Result<Tensor> {
            let y = l.forward(x)?.reshape((b, t, n, d))?;
            let y = match norm {
                Some(norm) => norm.forward(&y)?,
                None => y,
            };
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let q = candle_nn::rotary_emb::rope(&heads_of(&self.q, self.heads, &self.q_norm)?, &rope.0, &rope.1)?;
        let k = candle_nn::rotary_emb::rope(&heads_of(&self.k, self.kv_heads, &self.k_norm)?, &rope.0, &rope.1)?;
        let v = heads_of(&self.v, self.kv_heads, &None)?;
        let (k, v) = match kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let keys = k.dim(2)?;
        // Query heads j·g … j·g+g−1 share kv head j: group them so one matmul per kv head
        // serves all g of them, with no copy of the keys.
        let g = self.heads / self.kv_heads;
        let q = q.reshape((b, self.kv_heads, g * t, d))?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
        let scores = scores.reshape((b, self.heads, t, keys))?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, self.kv_heads, g * t, keys))?;
        let out = probs.matmul(&v)?.reshape((b, self.heads, t, d))?.transpose(1, 2)?.reshape((b, t, self.heads * d))?;
        Ok(self.o.forward(&out)?)
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = (candle_nn::ops::silu(&self.gate.forward(x)?)? * self.up.forward(x)?)?;
        Ok(self.down.forward(&h)?)
    }
}

struct Layer {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

/// Keys and values of the positions run so far, per layer, with what attention needs to mask
/// them: which are real tokens (not padding) and their positions.
pub struct KvCache {
    layers: KvLayers,
    key_valid: Vec<Vec<bool>>,
    key_positions: Vec<Vec<u32>>,
    /// The position the next real token of each row takes.
    next_position: Vec<u32>,
}

impl KvCache {
    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.key_valid.len()
    }

    /// Layers the cache holds keys and values for.
    fn layer_count(&self) -> usize {
        match &self.layers {
            KvLayers::Candle(l) => l.len(),
            KvLayers::Native(l) => l.len(),
        }
    }

    /// Positions (padding included) held per row.
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A batch-1 cache repeated `n` times: one prompt prefix shared by `n` continuations.
    pub fn repeat(&self, n: usize) -> Result<KvCache> {
        if self.batch() != 1 {
            return Err(ModelError::Inference(format!("only a batch-1 cache can be repeated (this one has {})", self.batch())));
        }
        let layers = match &self.layers {
            KvLayers::Candle(layers) => KvLayers::Candle(
                layers
                    .iter()
                    .map(|l| match l {
                        Some((k, v)) => Ok(Some((k.repeat((n, 1, 1, 1))?, v.repeat((n, 1, 1, 1))?))),
                        None => Ok(None),
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            KvLayers::Native(layers) => KvLayers::Native(
                layers
                    .iter()
                    .map(|l| NativeKv {
                        k: l.k.iter().cycle().take(l.k.len() * n).cloned().collect(),
                        v: l.v.iter().cycle().take(l.v.len() * n).cloned().collect(),
                    })
                    .collect(),
            ),
        };
        Ok(KvCache {
            layers,
            key_valid: vec![self.key_valid[0].clone(); n],
            key_positions: vec![self.key_positions[0].clone(); n],
            next_position: vec![self.next_position[0]; n],
        })
    }
}

/// The keys and values themselves, as the decoder's layers keep them.
enum KvLayers {
    Candle(Vec<Option<(Tensor, Tensor)>>),
    Native(Vec<NativeKv>),
}

/// Where a padded batch puts its padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    Left,
    Right,
}

/// The transformer blocks: candle's ops (CUDA), or native CPU kernels (`cpu_decoder.rs`).
enum Blocks {
    Candle(Vec<Layer>),
    Native(Vec<NativeLayer>),
}

pub struct Decoder {
    config: DecoderConfig,
    embeddings: Tensor,
    blocks: Blocks,
    /// The final norm's weight, for the native path.
    norm_weight: Vec<f32>,
    norm: RmsNorm,
    /// [vocab, hidden]; the embedding matrix when tied.
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    device: Device,
}

impl Decoder {
    /// Loads the weights of `dir` (one safetensors file or shards, any float dtype; computed in
    /// f32), merging `lora` into the layers it targets. On the CPU the blocks run native.
    pub fn load(config: DecoderConfig, weight_files: &[std::path::PathBuf], lora: Option<&LoraAdapter>, device: &Device) -> Result<Self> {
        Self::load_with(config, weight_files, lora, device, Kernels::Native)
    }

    /// [`Decoder::load`] with a choice of kernels (`Kernels::Candle` on the CPU too: the
    /// cross-check of the native blocks against candle's ops).
    pub fn load_with(
        config: DecoderConfig,
        weight_files: &[std::path::PathBuf],
        lora: Option<&LoraAdapter>,
        device: &Device,
        kernels: Kernels,
    ) -> Result<Self> {
        let native = device.is_cpu() && kernels == Kernels::Native;
        // Safety: the files are memory-mapped read-only; rewriting a registered model's files
        // while it is loaded is outside what we support (README).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weight_files, DType::F32, device) }?;
        let c = &config;
        let model = vb.pp("model");
        let embeddings = model.get((c.vocab_size, c.hidden_size), "embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(c.num_layers);
        let mut native_layers = Vec::with_capacity(if native { c.num_layers } else { 0 });
        for i in 0..c.num_layers {
            let l = model.pp(format!("layers.{i}"));
            let mlp = l.pp("mlp");
            let layer = Layer {
                input_norm: rms_norm(&l.pp("input_layernorm"), c.hidden_size, c.rms_norm_eps)?,
                attention: Attention::load(&l.pp("self_attn"), c, lora)?,
                post_attention_norm: rms_norm(&l.pp("post_attention_layernorm"), c.hidden_size, c.rms_norm_eps)?,
                mlp: Mlp {
                    gate: linear(&mlp.pp("gate_proj"), lora, c.hidden_size, c.intermediate_size)?,
                    up: linear(&mlp.pp("up_proj"), lora, c.hidden_size, c.intermediate_size)?,
                    down: linear(&mlp.pp("down_proj"), lora, c.intermediate_size, c.hidden_size)?,
                },
            };
            if native {
                // One copy of the weights: the candle layer is dropped once converted.
                let a = &layer.attention;
                native_layers.push(NativeLayer::new(
                    layer.input_norm.weight(),
                    &a.q,
                    &a.k,
                    &a.v,
                    a.q_norm.as_ref().map(|n| n.weight()),
                    a.k_norm.as_ref().map(|n| n.weight()),
                    &a.o,
                    layer.post_attention_norm.weight(),
                    &layer.mlp.gate,
                    &layer.mlp.up,
                    &layer.mlp.down,
                )?);
            } else {
                layers.push(layer);
            }
        }
        let norm = rms_norm(&model.pp("norm"), c.hidden_size, c.rms_norm_eps)?;
        let norm_weight = norm.weight().to_dtype(DType::F32)?.to_vec1()?;
        let blocks = if native { Blocks::Native(native_layers) } else { Blocks::Candle(layers) };
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get((c.vocab_size, c.hidden_size), "lm_head.weight")?
        } else if c.tie_word_embeddings {
            embeddings.clone()
        } else {
            return Err(ModelError::InvalidModel(
                "the weights have no lm_head.weight and config.json does not tie it to the embeddings".into(),
            ));
        };
        if let Some(adapter) = lora {
            adapter.check_all_merged()?;
        }
        let inv_freq = config.inv_freq();
        Ok(Decoder { config, embeddings, blocks, norm_weight, norm, lm_head, inv_freq, device: device.clone() })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    fn layer_count(&self) -> usize {
        match &self.blocks {
            Blocks::Candle(l) => l.len(),
            Blocks::Native(l) => l.len(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn new_cache(&self, batch: usize) -> KvCache {
        let layers = match &self.blocks {
            Blocks::Candle(layers) => KvLayers::Candle(vec![None; layers.len()]),
            Blocks::Native(layers) => KvLayers::Native(vec![NativeKv::default(); layers.len()]),
        };
        KvCache {
            layers,
            key_valid: vec![Vec::new(); batch],
            key_positions: vec![Vec::new(); batch],
            next_position: vec![0; batch],
        }
    }

    /// Token embeddings of `ids` [b, t] → [b, t, hidden].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        Ok(self.embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.config.hidden_size))?)
    }

    /// Runs `inputs` [b, t, hidden] (token embeddings, or anything projected into that space)
    /// after what `cache` holds, and returns the final normed hidden states [b, t, hidden].
    /// `real[r][i]` is false for padding: padding is never attended to and takes no position.
    /// Attention is causal over the cache and this step (and windowed for Mistral).
    pub fn forward(&self, inputs: &Tensor, real: &[Vec<bool>], cache: &mut KvCache) -> Result<Tensor> {
        let (b, t, _) = inputs.dims3()?;
        if real.len() != b || real.iter().any(|r| r.len() != t) || cache.batch() != b {
            return Err(ModelError::Inference(format!(
                "forward: {b}×{t} inputs, a {}-row padding mask and a {}-row cache",
                real.len(),
                cache.batch()
            )));
        }
        let same_kind = matches!(
            (&self.blocks, &cache.layers),
            (Blocks::Native(_), KvLayers::Native(_)) | (Blocks::Candle(_), KvLayers::Candle(_))
        );
        if !same_kind || cache.layer_count() != self.layer_count() {
            return Err(ModelError::Inference("forward: a cache made by another decoder".into()));
        }
        if b == 0 || t == 0 {
            return Ok(Tensor::zeros((b, t, self.config.hidden_size), DType::F32, &self.device)?);
        }
        let past = cache.len();
        let keys = past + t;
        let half = self.config.head_dim / 2;
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        let mut mask = vec![f32::NEG_INFINITY; b * t * keys];
        for r in 0..b {
            for i in 0..t {
                let position = cache.next_position[r];
                for &f in &self.inv_freq {
                    let angle = position as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
                cache.key_valid[r].push(real[r][i]);
                cache.key_positions[r].push(position);
                if real[r][i] {
                    cache.next_position[r] += 1;
                }
            }
            for i in 0..t {
                let q = past + i;
                let q_position = cache.key_positions[r][q];
                for k in 0..=q {
                    let in_window = self
                        .config
                        .sliding_window
                        .is_none_or(|w| (q_position - cache.key_positions[r][k]) < w as u32);
                    // A query always sees itself: a padding row then softmaxes over one finite
                    // score instead of producing NaN (its output is never used).
                    if k == q || (cache.key_valid[r][k] && in_window) {
                        mask[(r * t + i) * keys + k] = 0.0;
                    }
                }
            }
        }
        match (&self.blocks, &mut cache.layers) {
            (Blocks::Native(layers), KvLayers::Native(kv)) => {
                let mut x: Vec<f32> = inputs.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let shape = Shape::of(&self.config);
                cpu_decoder::forward_layers(layers, &shape, &mut x, b, t, &cos, &sin, &mask, kv);
                kernels::rms_norm(&mut x, &self.norm_weight, shape.eps);
                Ok(Tensor::from_vec(x, (b, t, self.config.hidden_size), &self.device)?)
            }
            (Blocks::Candle(layers), KvLayers::Candle(kv)) => {
                let rope = (
                    Tensor::from_vec(cos, (b, t, half), &self.device)?,
                    Tensor::from_vec(sin, (b, t, half), &self.device)?,
                );
                let mask = Tensor::from_vec(mask, (b, 1, t, keys), &self.device)?;
                let mut x = inputs.clone();
                for (layer, kv) in layers.iter().zip(kv.iter_mut()) {
                    let h = layer.attention.forward(&layer.input_norm.forward(&x)?, &rope, &mask, kv)?;
                    x = (x + h)?;
                    let h = layer.mlp.forward(&layer.post_attention_norm.forward(&x)?)?;
                    x = (x + h)?;
                }
                Ok(self.norm.forward(&x)?)
            }
            _ => unreachable!("checked above"),
        }
    }

    /// Final hidden states of id sequences run as one padded batch, with no cache kept.
    /// Returns the hidden states [b, t, hidden] and the real-token mask.
    pub fn forward_sequences(&self, seqs: &[&[u32]], side: PaddingSide) -> Result<(Tensor, Vec<Vec<bool>>)> {
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let pad = self.config.pad_token_id.unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * t);
        let mut real = Vec::with_capacity(seqs.len());
        for s in seqs {
            let padding = t - s.len();
            let mut row = vec![true; s.len()];
            match side {
                PaddingSide::Left => {
                    ids.extend(std::iter::repeat_n(pad, padding));
                    ids.extend_from_slice(s);
                    row.splice(0..0, std::iter::repeat_n(false, padding));
                }
                PaddingSide::Right => {
                    ids.extend_from_slice(s);
                    ids.extend(std::iter::repeat_n(pad, padding));
                    row.extend(std::iter::repeat_n(false, padding));
                }
            }
            real.push(row);
        }
        let ids = Tensor::from_vec(ids, (seqs.len(), t), &self.device)?;
        let mut cache = self.new_cache(seqs.len());
        let hidden = self.forward(&self.embed(&ids)?, &real, &mut cache)?;
        Ok((hidden, real))
    }

    /// LM-head logits of final hidden states [n, hidden] → [n, vocab].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden.matmul(&self.lm_head.t()?)?)
    }

    /// The last dimension of hidden states.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
}
