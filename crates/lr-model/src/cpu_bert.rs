//! Classic BERT (all-MiniLM, SPLADE's BertForMaskedLM stack) on the CPU, written for speed: the
//! same arithmetic as candle-transformers' `BertModel` (which stays the CUDA path), without its
//! costs here — sequences are packed end to end (no padding, so no attention mask), q/k/v are one
//! GEMM, the residual is accumulated by the GEMM itself, and bias, activation, LayerNorm and
//! softmax are fused row passes (`kernels.rs`). Attention runs one (sequence, head) per rayon
//! task.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::kernels::{self, Activation, Dense, SharedMut};

/// Hidden states of a group of sequences, packed: sequence `i` is rows
/// `offsets[i]..offsets[i + 1]` of `data` (`[rows, hidden]`, row-major).
pub struct Packed {
    pub data: Vec<f32>,
    pub offsets: Vec<usize>,
    pub hidden: usize,
}

impl Packed {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows of sequence `i`.
    pub fn sequence(&self, i: usize) -> &[f32] {
        &self.data[self.offsets[i] * self.hidden..self.offsets[i + 1] * self.hidden]
    }

    /// Packs the first `lengths[i]` rows of each sequence of a right-padded `[batch, len, hidden]`.
    pub fn from_padded(hidden: &Tensor, lengths: &[usize]) -> Result<Self> {
        let (_, len, dim) = hidden.dims3()?;
        let all: Vec<f32> = hidden.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut data = Vec::with_capacity(lengths.iter().sum::<usize>() * dim);
        let mut offsets = vec![0];
        for (b, &l) in lengths.iter().enumerate() {
            data.extend_from_slice(&all[b * len * dim..(b * len + l) * dim]);
            offsets.push(offsets.last().unwrap() + l);
        }
        Ok(Packed { data, offsets, hidden: dim })
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

pub struct CpuBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    activation: Activation,
    max_positions: usize,
    /// `[vocab, hidden]`.
    word: Vec<f32>,
    /// `[max_positions, hidden]`, with token type 0's row added (every input is type 0).
    position_and_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

fn to_vec(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

/// The activation of a BERT config, as candle-transformers' BERT applies it.
pub fn activation_of(act: HiddenAct) -> Activation {
    match act {
        HiddenAct::Gelu => Activation::GeluErf,
        HiddenAct::GeluApproximate => Activation::GeluTanh,
        HiddenAct::Relu => Activation::Relu,
    }
}

/// A `Linear` at `vb` (`weight` [outputs, inputs], `bias` [outputs]) as a [`Dense`].
pub fn load_dense(vb: &VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Dense> {
    let weight = to_vec(vb.get((outputs, inputs), "weight")?)?;
    Ok(Dense::from_linear(weight, to_vec(vb.get(outputs, "bias")?)?, outputs, inputs))
}

fn load_norm(vb: &VarBuilder, hidden: usize) -> candle_core::Result<Norm> {
    // Old checkpoints name them gamma/beta (candle_nn::layer_norm reads both as well).
    let (g, b) = if vb.contains_tensor("weight") { ("weight", "bias") } else { ("gamma", "beta") };
    Ok(Norm { gamma: to_vec(vb.get(hidden, g)?)?, beta: to_vec(vb.get(hidden, b)?)? })
}

impl CpuBert {
    /// Loads the encoder stack under `vb` (tensors unprefixed or under `{model_type}.`, as
    /// candle-transformers' `BertModel::load` finds them).
    pub fn load(vb: &VarBuilder, config: &BertConfig) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        for (name, value) in [
            ("hidden_size", h),
            ("intermediate_size", i),
            ("vocab_size", config.vocab_size),
            ("type_vocab_size", config.type_vocab_size),
            ("max_position_embeddings", config.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(ModelError::InvalidModel(format!("{name} is 0")));
            }
        }
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            return Err(ModelError::InvalidModel(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            )));
        }
        let root = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb.clone()
        } else {
            vb.pp(config.model_type.as_deref().unwrap_or("bert"))
        };
        let load = || -> candle_core::Result<Self> {
            let e = root.pp("embeddings");
            let word = to_vec(e.get((config.vocab_size, h), "word_embeddings.weight")?)?;
            let mut position_and_type =
                to_vec(e.get((config.max_position_embeddings, h), "position_embeddings.weight")?)?;
            let types = to_vec(e.get((config.type_vocab_size, h), "token_type_embeddings.weight")?)?;
            for row in position_and_type.chunks_exact_mut(h) {
                row.iter_mut().zip(&types[..h]).for_each(|(p, t)| *p += t);
            }
            let embedding_norm = load_norm(&e.pp("LayerNorm"), h)?;
            let layers = (0..config.num_hidden_layers)
                .map(|l| {
                    let vb = root.pp(format!("encoder.layer.{l}"));
                    let a = vb.pp("attention");
                    let qkv = Dense::concat(vec![
                        load_dense(&a.pp("self.query"), h, h)?,
                        load_dense(&a.pp("self.key"), h, h)?,
                        load_dense(&a.pp("self.value"), h, h)?,
                    ]);
                    Ok(Layer {
                        qkv,
                        attention_out: load_dense(&a.pp("output.dense"), h, h)?,
                        attention_norm: load_norm(&a.pp("output.LayerNorm"), h)?,
                        intermediate: load_dense(&vb.pp("intermediate.dense"), h, i)?,
                        output: load_dense(&vb.pp("output.dense"), i, h)?,
                        output_norm: load_norm(&vb.pp("output.LayerNorm"), h)?,
                    })
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(CpuBert {
                hidden: h,
                heads: config.num_attention_heads,
                eps: config.layer_norm_eps as f32,
                activation: activation_of(config.hidden_act),
                max_positions: config.max_position_embeddings,
                word,
                position_and_type,
                embedding_norm,
                layers,
            })
        };
        load().map_err(|e| ModelError::InvalidModel(e.to_string()))
    }

    /// The last hidden states of every sequence (token ids with special tokens), packed.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Packed> {
        let h = self.hidden;
        let mut offsets = vec![0usize];
        for s in seqs {
            if s.len() > self.max_positions {
                return Err(ModelError::Inference(format!(
                    "a sequence of {} tokens is longer than the model's {} positions",
                    s.len(),
                    self.max_positions
                )));
            }
            offsets.push(offsets.last().unwrap() + s.len());
        }
        let rows = *offsets.last().unwrap();
        let vocab = self.word.len() / h;
        let mut x = vec![0f32; rows * h];
        for (s, seq) in seqs.iter().enumerate() {
            for (p, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(ModelError::Inference(format!("token id {id} is outside the vocabulary of {vocab}")));
                }
                let row = &mut x[(offsets[s] + p) * h..(offsets[s] + p + 1) * h];
                let (w, pt) = (&self.word[id * h..(id + 1) * h], &self.position_and_type[p * h..(p + 1) * h]);
                row.iter_mut().zip(w.iter().zip(pt)).for_each(|(v, (a, b))| *v = a + b);
            }
        }
        let zeros = vec![0f32; h];
        kernels::residual_layer_norm(&mut x, &zeros, &self.embedding_norm.gamma, &self.embedding_norm.beta, self.eps);

        let inter = self.layers.first().map_or(0, |l| l.intermediate.outputs);
        let mut qkv = vec![0f32; rows * 3 * h];
        let mut context = vec![0f32; rows * h];
        let mut intermediate = vec![0f32; rows * inter];
        for layer in &self.layers {
            layer.qkv.matmul_into(&x, rows, &mut qkv, false);
            kernels::add_bias(&mut qkv, &layer.qkv.bias);
            self.attention(&qkv, &offsets, &mut context);
            // x += context·Wo, then x = LayerNorm(x + bo): the GEMM adds the residual itself.
            layer.attention_out.matmul_into(&context, rows, &mut x, true);
            let n = &layer.attention_norm;
            kernels::residual_layer_norm(&mut x, &layer.attention_out.bias, &n.gamma, &n.beta, self.eps);
            layer.intermediate.matmul_into(&x, rows, &mut intermediate, false);
            kernels::bias_activation(&mut intermediate, &layer.intermediate.bias, self.activation);
            layer.output.matmul_into(&intermediate, rows, &mut x, true);
            let n = &layer.output_norm;
            kernels::residual_layer_norm(&mut x, &layer.output.bias, &n.gamma, &n.beta, self.eps);
        }
        Ok(Packed { data: x, offsets, hidden: h })
    }

    /// Scaled dot-product attention of every sequence and head: `context[s, h] = softmax(q kᵀ/√d) v`.
    fn attention(&self, qkv: &[f32], offsets: &[usize], context: &mut [f32]) {
        let (h, d) = (self.hidden, self.hidden / self.heads);
        let stride = 3 * h;
        let tasks: Vec<(usize, usize, usize)> = (0..offsets.len() - 1)
            .flat_map(|s| (0..self.heads).map(move |head| (offsets[s], offsets[s + 1] - offsets[s], head)))
            .filter(|&(_, len, _)| len > 0)
            .collect();
        let out = SharedMut(context.as_mut_ptr());
        let scale = 1.0 / (d as f32).sqrt();
        tasks.par_iter().for_each_init(Vec::new, |scores: &mut Vec<f32>, &(start, len, head)| {
            let base = qkv[start * stride..].as_ptr();
            // Safety: every row read stays inside `qkv` (rows start..start+len, columns of this
            // head); each task writes only its own rows × head columns of `context`.
            unsafe {
                kernels::attention_head(
                    len,
                    len,
                    d,
                    (base.add(head * d), stride),
                    (base.add(h + head * d), stride),
                    (base.add(2 * h + head * d), stride),
                    (out.get().add(start * h + head * d), h),
                    scale,
                    None,
                    scores,
                );
            }
        });
    }
}
