//! JinaBERT (jinaai/jina-embeddings-v2-*-en; the passage encoder of PE-Rank) on candle-nn ops:
//! post-LayerNorm BERT with a symmetric ALiBi attention bias instead of position embeddings, and
//! a GEGLU MLP. Written here rather than taken from candle-transformers' `jina_bert`, whose
//! ALiBi slopes are not jina's (`1/2^(8/v)`, v = 1..n: for 4 heads 1/256, 1/16, 2^(−8/3), 1/4
//! instead of 1/4, 1/16, 1/64, 1/256; tests/rerank_reference/README.md).
//!
//! Conventions (jina-bert-implementation's `modeling_bert.py`; text-embeddings-inference's
//! `jina.rs` loads the same tensors):
//! - embeddings: `LayerNorm(word[ids] + token_type[0])`, no position table;
//! - attention: `softmax(q kᵀ / √d − slope_h·|i − j| + padding mask) v`, then
//!   `LayerNorm(x + dense(·))`;
//! - MLP: `y = gated_layers(a)` ([2I], no bias), `LayerNorm(a + wo(gelu_erf(y[..I]) · y[I..]))`:
//!   the first half goes through the exact (erf) GELU (jina's `nn.GELU()`, whatever
//!   `hidden_act` says);
//! - tensors unprefixed (`embeddings.*`, `encoder.layer.{i}.*`) as jina-embeddings-v2 saves
//!   them, or under `bert.`; others (`pooler.*`, an MLM head) are not read.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde_json::Value;

use crate::error::{ModelError, Result};

/// Whether a `model_type: "bert"` config.json describes JinaBERT: ALiBi positions, a gated
/// feed-forward, or a `JinaBert*` architecture (any one is enough; [`JinaBertConfig::from_json`]
/// then says what is not supported).
pub fn is_jina_bert(config: &Value) -> bool {
    let text = |k: &str| config.get(k).and_then(Value::as_str);
    text("position_embedding_type") == Some("alibi")
        || text("feed_forward_type").is_some_and(|f| f != "original")
        || config
            .get("architectures")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|n| n.starts_with("JinaBert")))
}

/// The ALiBi slope of each head, as jina-bert-implementation's `_get_alibi_head_slopes` (and
/// the ALiBi paper) compute them: for `n` a power of two `2^(−8k/n)`, k = 1..n; otherwise the
/// slopes of the power of two below `n`, then every other slope of the next power of two
/// (its 1st, 3rd, …) until there are `n`.
pub fn alibi_slopes(heads: usize) -> Vec<f64> {
    fn power_of_2(n: usize) -> Vec<f64> {
        (1..=n).map(|k| 2f64.powf(-8.0 * k as f64 / n as f64)).collect()
    }
    if heads == 0 {
        return Vec::new();
    }
    if heads.is_power_of_two() {
        return power_of_2(heads);
    }
    let below = 1usize << (usize::BITS - 1 - heads.leading_zeros()); // largest power of 2 < heads
    let mut slopes = power_of_2(below);
    slopes.extend(alibi_slopes(2 * below).into_iter().step_by(2).take(heads - below));
    slopes
}

/// What JinaBERT needs from config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct JinaBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

impl JinaBertConfig {
    pub fn from_json(v: &Value, file: &Path) -> Result<Self> {
        let field = |key: &str| -> Result<usize> {
            v.get(key).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(|| {
                ModelError::InvalidModel(format!("{} has no integer \"{key}\"", file.display()))
            })
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str);
        // jina-bert-implementation's defaults: alibi positions, a GEGLU feed-forward.
        let positions = text("position_embedding_type").unwrap_or("alibi");
        if positions != "alibi" {
            return Err(ModelError::InvalidModel(format!(
                "{}: JinaBERT with position_embedding_type \"{positions}\" is not supported (alibi is)",
                file.display()
            )));
        }
        let feed_forward = text("feed_forward_type").unwrap_or("geglu");
        if feed_forward != "geglu" {
            return Err(ModelError::InvalidModel(format!(
                "{}: JinaBERT with feed_forward_type \"{feed_forward}\" is not supported (geglu is)",
                file.display()
            )));
        }
        let hidden_size = field("hidden_size")?;
        let num_heads = field("num_attention_heads")?;
        if num_heads == 0 || hidden_size % num_heads != 0 {
            return Err(ModelError::InvalidModel(format!(
                "{}: hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}",
                file.display()
            )));
        }
        Ok(JinaBertConfig {
            vocab_size: field("vocab_size")?,
            hidden_size,
            num_layers: field("num_hidden_layers")?,
            num_heads,
            intermediate_size: field("intermediate_size")?,
            type_vocab_size: v.get("type_vocab_size").and_then(Value::as_u64).map_or(2, |x| x as usize),
            layer_norm_eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12),
        })
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    /// [2I, H], no bias: rows 0..I are the GELU'd half, rows I..2I the linear factor.
    gated: Linear,
    wo: Linear,
    mlp_norm: LayerNorm,
}

/// The JinaBERT encoder stack (f32 compute, on the device its weights were loaded to).
pub struct JinaBert {
    config: JinaBertConfig,
    word_embeddings: Tensor,
    /// Token type 0's row [H]: documents are one segment.
    token_type: Tensor,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    /// ALiBi slopes [heads, 1, 1].
    slopes: Tensor,
    device: Device,
}

impl JinaBert {
    /// Loads the stack from `vb` (the checkpoint's root; the `bert.` prefix is found when the
    /// tensors carry it).
    pub fn load(config: JinaBertConfig, vb: &VarBuilder, device: &Device) -> Result<Self> {
        let c = &config;
        let vb = if !vb.contains_tensor("embeddings.word_embeddings.weight")
            && vb.contains_tensor("bert.embeddings.word_embeddings.weight")
        {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let emb = vb.pp("embeddings");
        let word_embeddings = emb.get((c.vocab_size, h), "word_embeddings.weight")?;
        let token_type = emb.get((c.type_vocab_size, h), "token_type_embeddings.weight")?.get(0)?;
        let embedding_norm = candle_nn::layer_norm(h, c.layer_norm_eps, emb.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let vb = vb.pp(format!("encoder.layer.{l}"));
            let attention = vb.pp("attention");
            let mlp = vb.pp("mlp");
            layers.push(Layer {
                query: candle_nn::linear(h, h, attention.pp("self.query"))?,
                key: candle_nn::linear(h, h, attention.pp("self.key"))?,
                value: candle_nn::linear(h, h, attention.pp("self.value"))?,
                attention_output: candle_nn::linear(h, h, attention.pp("output.dense"))?,
                attention_norm: candle_nn::layer_norm(h, c.layer_norm_eps, attention.pp("output.LayerNorm"))?,
                gated: candle_nn::linear_no_bias(h, 2 * i, mlp.pp("gated_layers"))?,
                wo: candle_nn::linear(i, h, mlp.pp("wo"))?,
                mlp_norm: candle_nn::layer_norm(h, c.layer_norm_eps, mlp.pp("layernorm"))?,
            });
        }
        let slopes: Vec<f32> = alibi_slopes(c.num_heads).into_iter().map(|s| s as f32).collect();
        let slopes = Tensor::from_vec(slopes, (c.num_heads, 1, 1), device)?;
        Ok(JinaBert { config, word_embeddings, token_type, embedding_norm, layers, slopes, device: device.clone() })
    }

    pub fn config(&self) -> &JinaBertConfig {
        &self.config
    }

    /// Final hidden states [b, t, H] of right- or left-padded `ids` [b, t] (u32) under `mask`
    /// [b, t] (1 = token, 0 = padding, any integer or float dtype). Padding is never attended
    /// to; ALiBi distances are between positions in the padded row, so with right padding a
    /// row's states are those of the row alone.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = ids.dims2()?;
        let x = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?;
        let mut x = self.embedding_norm.forward(&x.broadcast_add(&self.token_type)?)?;

        // One bias for every layer: −slope_h·|i − j| [1, heads, t, t] plus the key mask
        // [b, 1, 1, t] (0 for tokens, f32::MIN for padding: −∞ for softmax, yet a row of padding
        // alone gives no NaN) → [b, heads, t, t].
        let positions = Tensor::arange(0u32, t as u32, &self.device)?.to_dtype(DType::F32)?;
        let distance = positions.unsqueeze(1)?.broadcast_sub(&positions.unsqueeze(0)?)?.abs()?;
        let alibi = self.slopes.broadcast_mul(&distance)?.neg()?.unsqueeze(0)?;
        let key_mask = mask
            .to_dtype(DType::F32)?
            .affine(f32::MAX as f64, -(f32::MAX as f64))?
            .reshape((b, 1, 1, t))?;
        let bias = alibi.broadcast_add(&key_mask)?;

        let heads = c.num_heads;
        let d = c.hidden_size / heads;
        let scale = 1.0 / (d as f64).sqrt();
        let i = c.intermediate_size;
        for layer in &self.layers {
            let split = |l: &Linear| -> Result<Tensor> {
                Ok(l.forward(&x)?.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous()?)
            };
            let (q, k, v) = (split(&layer.query)?, split(&layer.key)?, split(&layer.value)?);
            let scores = ((q.matmul(&k.t()?.contiguous()?)? * scale)? + &bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c.hidden_size))?;
            let a = layer.attention_norm.forward(&(layer.attention_output.forward(&context)? + &x)?)?;

            let y = layer.gated.forward(&a)?;
            let gated = (y.narrow(D::Minus1, 0, i)?.gelu_erf()? * y.narrow(D::Minus1, i, i)?)?;
            x = layer.mlp_norm.forward(&(layer.wo.forward(&gated)? + &a)?)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-12 * w.abs(), "{got:?} != {want:?}");
        }
    }

    #[test]
    fn alibi_slopes_are_jinas() {
        close(&alibi_slopes(4), &[0.25, 0.0625, 0.015625, 0.00390625]);
        close(&alibi_slopes(1), &[2f64.powi(-8)]);
        close(&alibi_slopes(8), &(1..=8).map(|k| 2f64.powi(-k)).collect::<Vec<_>>());
        // Not a power of two: 4 heads' slopes, then 8 heads' 1st and 3rd.
        close(&alibi_slopes(6), &[0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
        // jina-embeddings-v2-small-en's 8, base-en's 12: 8 heads' slopes, then 16 heads'
        // 1st, 3rd, 5th and 7th (2^−0.5, 2^−1.5, 2^−2.5, 2^−3.5).
        let mut twelve: Vec<f64> = (1..=8).map(|k| 2f64.powi(-k)).collect();
        twelve.extend([0.5, 1.5, 2.5, 3.5].map(|e| 2f64.powf(-e)));
        close(&alibi_slopes(12), &twelve);
        assert_eq!(alibi_slopes(24).len(), 24);
    }

    #[test]
    fn jina_configs_are_recognised() {
        let jina = serde_json::json!({"model_type": "bert", "position_embedding_type": "alibi"});
        assert!(is_jina_bert(&jina));
        assert!(is_jina_bert(&serde_json::json!({"architectures": ["JinaBertModel"]})));
        assert!(is_jina_bert(&serde_json::json!({"feed_forward_type": "geglu"})));
        let classic = serde_json::json!({"model_type": "bert", "position_embedding_type": "absolute",
                                         "architectures": ["BertModel"]});
        assert!(!is_jina_bert(&classic));
        let e = JinaBertConfig::from_json(
            &serde_json::json!({"position_embedding_type": "alibi", "feed_forward_type": "reglu"}),
            Path::new("config.json"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("feed_forward_type \"reglu\" is not supported"), "{e}");
    }
}
