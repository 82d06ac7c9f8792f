//! The decoder's layers on the CPU, native: the same arithmetic as `decoder.rs`'s candle layers
//! (which stay the CUDA path) without their costs here. q/k/v are one GEMM and gate/up another,
//! residuals are accumulated by the GEMMs themselves, RMSNorm, RoPE and SwiGLU are fused row
//! passes (`kernels.rs`), and attention runs per (row, head, block of queries) as rayon tasks
//! that read only the causally visible keys. Keys and values are kept per (row, kv head) as
//! `[keys, head_dim]`, so that a decoding step appends instead of copying the cache.

use candle_core::{DType, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

use crate::decoder::DecoderConfig;
use crate::kernels::{self, Dense, SharedMut};

/// One block's weights, transposed for row-major GEMMs.
pub(crate) struct NativeLayer {
    pub input_norm: Vec<f32>,
    /// `[q | k | v]`: `(heads + 2·kv_heads)·head_dim` outputs.
    pub qkv: Dense,
    pub qkv_bias: bool,
    /// Qwen3: RMSNorm over each head's dims of q and k, before RoPE.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub o: Dense,
    pub o_bias: bool,
    pub post_norm: Vec<f32>,
    /// `[gate | up]`: `2·intermediate` outputs.
    pub gate_up: Dense,
    pub gate_up_bias: bool,
    pub down: Dense,
    pub down_bias: bool,
}

/// Keys and values of one layer: entry `row·kv_heads + j` holds kv head j of batch row `row`,
/// `[keys, head_dim]` row-major.
#[derive(Clone, Default)]
pub(crate) struct NativeKv {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

fn tensor_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// A candle `Linear` (weight `[outputs, inputs]`) as a [`Dense`]; whether it had a bias.
fn dense(l: &Linear) -> candle_core::Result<(Dense, bool)> {
    let (outputs, inputs) = l.weight().dims2()?;
    let bias = match l.bias() {
        Some(b) => Some(tensor_vec(b)?),
        None => None,
    };
    let has = bias.is_some();
    Ok((Dense::from_linear(tensor_vec(l.weight())?, bias.unwrap_or_else(|| vec![0.0; outputs]), outputs, inputs), has))
}

impl NativeLayer {
    /// From the loaded (LoRA-merged) linears and norms of one block.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input_norm: &Tensor,
        q: &Linear,
        k: &Linear,
        v: &Linear,
        q_norm: Option<&Tensor>,
        k_norm: Option<&Tensor>,
        o: &Linear,
        post_norm: &Tensor,
        gate: &Linear,
        up: &Linear,
        down: &Linear,
    ) -> candle_core::Result<Self> {
        let (q, qb) = dense(q)?;
        let (k, kb) = dense(k)?;
        let (v, vb) = dense(v)?;
        let (gate, gb) = dense(gate)?;
        let (up, ub) = dense(up)?;
        let (o, o_bias) = dense(o)?;
        let (down, down_bias) = dense(down)?;
        Ok(NativeLayer {
            input_norm: tensor_vec(input_norm)?,
            qkv: Dense::concat(vec![q, k, v]),
            qkv_bias: qb || kb || vb,
            q_norm: q_norm.map(tensor_vec).transpose()?,
            k_norm: k_norm.map(tensor_vec).transpose()?,
            o,
            o_bias,
            post_norm: tensor_vec(post_norm)?,
            gate_up: Dense::concat(vec![gate, up]),
            gate_up_bias: gb || ub,
            down,
            down_bias,
        })
    }
}

/// Query rows per attention task: bounds the scores buffer (`rows × keys`) of long prompts.
const QUERY_BLOCK: usize = 64;

/// The shapes the native layers run at.
pub(crate) struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub eps: f32,
}

impl Shape {
    pub fn of(c: &DecoderConfig) -> Self {
        Shape {
            hidden: c.hidden_size,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            intermediate: c.intermediate_size,
            eps: c.rms_norm_eps as f32,
        }
    }
}

/// Runs `x` (`[b·t, hidden]`, replaced by the stack's output before the final norm) through
/// `layers`. `cos`/`sin` are `[b·t, head_dim/2]`; `mask` is `[b·t, keys]` (0 or −∞) over the
/// cache's `past` keys and this step's `t`; `kv` gets this step's keys and values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_layers(
    layers: &[NativeLayer],
    s: &Shape,
    x: &mut [f32],
    b: usize,
    t: usize,
    cos: &[f32],
    sin: &[f32],
    mask: &[f32],
    kv: &mut [NativeKv],
) {
    let rows = b * t;
    if rows == 0 {
        return;
    }
    assert_eq!(kv.len(), layers.len(), "a cache for another number of layers");
    let (h, d) = (s.hidden, s.head_dim);
    let qkv_width = (s.heads + 2 * s.kv_heads) * d;
    let mut normed = vec![0f32; rows * h];
    let mut qkv = vec![0f32; rows * qkv_width];
    let mut context = vec![0f32; rows * s.heads * d];
    let mut gate_up = vec![0f32; rows * 2 * s.intermediate];
    let mut act = vec![0f32; rows * s.intermediate];
    for (layer, cache) in layers.iter().zip(kv.iter_mut()) {
        kernels::rms_norm_into(x, &mut normed, &layer.input_norm, s.eps);
        layer.qkv.matmul_into(&normed, rows, &mut qkv, false);
        if layer.qkv_bias {
            kernels::add_bias(&mut qkv, &layer.qkv.bias);
        }
        position_heads(layer, s, &mut qkv, cos, sin);
        if cache.k.is_empty() {
            cache.k = vec![Vec::new(); b * s.kv_heads];
            cache.v = vec![Vec::new(); b * s.kv_heads];
        }
        assert_eq!(cache.k.len(), b * s.kv_heads, "a cache for another batch or number of kv heads");
        for r in 0..b {
            for j in 0..s.kv_heads {
                let (kc, vc) = (&mut cache.k[r * s.kv_heads + j], &mut cache.v[r * s.kv_heads + j]);
                for i in 0..t {
                    let row = &qkv[(r * t + i) * qkv_width..][..qkv_width];
                    kc.extend_from_slice(&row[(s.heads + j) * d..][..d]);
                    vc.extend_from_slice(&row[(s.heads + s.kv_heads + j) * d..][..d]);
                }
            }
        }
        attention(s, &qkv, cache, mask, b, t, &mut context);
        // x += context·Wo (+ bo): the residual is already in x.
        layer.o.matmul_into(&context, rows, x, true);
        if layer.o_bias {
            kernels::add_bias(x, &layer.o.bias);
        }
        kernels::rms_norm_into(x, &mut normed, &layer.post_norm, s.eps);
        layer.gate_up.matmul_into(&normed, rows, &mut gate_up, false);
        if layer.gate_up_bias {
            kernels::add_bias(&mut gate_up, &layer.gate_up.bias);
        }
        kernels::silu_mul(&gate_up, &mut act, s.intermediate);
        layer.down.matmul_into(&act, rows, x, true);
        if layer.down_bias {
            kernels::add_bias(x, &layer.down.bias);
        }
    }
}

/// Qwen3's per-head q/k norms, then RoPE, on the q and k heads of every row of `qkv`.
fn position_heads(layer: &NativeLayer, s: &Shape, qkv: &mut [f32], cos: &[f32], sin: &[f32]) {
    let d = s.head_dim;
    let half = d / 2;
    let width = (s.heads + 2 * s.kv_heads) * d;
    qkv.par_chunks_mut(width).enumerate().for_each(|(row, x)| {
        let (c, sn) = (&cos[row * half..][..half], &sin[row * half..][..half]);
        for head in 0..s.heads + s.kv_heads {
            let x = &mut x[head * d..][..d];
            let norm = if head < s.heads { &layer.q_norm } else { &layer.k_norm };
            if let Some(w) = norm {
                kernels::rms_norm_row(x, w, s.eps);
            }
            kernels::rope_head(x, c, sn);
        }
    });
}

/// `context[r·t + i, head] = softmax(q kᵀ/√d + mask) v` for every row, head and query.
fn attention(s: &Shape, qkv: &[f32], cache: &NativeKv, mask: &[f32], b: usize, t: usize, context: &mut [f32]) {
    let d = s.head_dim;
    let width = (s.heads + 2 * s.kv_heads) * d;
    let ctx_width = s.heads * d;
    let keys = cache.k[0].len() / d;
    assert_eq!(keys * b * t, mask.len(), "the cache's keys and the mask disagree");
    let past = keys - t;
    let group = s.heads / s.kv_heads;
    let blocks = t.div_ceil(QUERY_BLOCK);
    let tasks: Vec<(usize, usize, usize)> =
        (0..b).flat_map(|r| (0..s.heads).flat_map(move |head| (0..blocks).map(move |blk| (r, head, blk)))).collect();
    let out = SharedMut(context.as_mut_ptr());
    let scale = 1.0 / (d as f32).sqrt();
    tasks.par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, &(r, head, blk)| {
        let q0 = blk * QUERY_BLOCK;
        let n = QUERY_BLOCK.min(t - q0);
        // Causal: the block's last query sees keys up to its own position; later ones are −∞.
        let visible = past + q0 + n;
        let j = head / group;
        let (k, v) = (&cache.k[r * s.kv_heads + j], &cache.v[r * s.kv_heads + j]);
        // Safety: q reads rows r·t+q0 … +n of `qkv` (head's columns), k and v `visible` rows of
        // this head's cache; each task writes its own rows × head columns of `context`, which no
        // other task writes.
        unsafe {
            kernels::attention_head(
                n,
                visible,
                d,
                (qkv.as_ptr().add((r * t + q0) * width + head * d), width),
                (k.as_ptr(), d),
                (v.as_ptr(), d),
                (out.get().add((r * t + q0) * ctx_width + head * d), ctx_width),
                scale,
                Some((&mask[(r * t + q0) * keys..], keys)),
                scores,
            );
        }
    });
}
