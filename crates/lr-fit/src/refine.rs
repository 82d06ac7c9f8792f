//! Retrieval refinement of fitted rows: the normalised lookup vector of a span is scored against
//! every document vector, and the rows are trained so that this ranking is right — InfoNCE with
//! the span's own document as positive, or KL to the full encoder's ranking (distillation).
//! Hand-written gradients, lazy Adam (only rows present in a batch move), dense products through
//! candle's CPU matmul.

use candle_core::{Device, Tensor};

use crate::rng::Rng;
use crate::solve::Design;
use crate::{FitError, FitOptions, Refine};

pub(crate) struct Refiner {
    m: Vec<f32>,
    v: Vec<f32>,
    grad: Vec<f32>,
    touched: Vec<bool>,
    step: i32,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

fn err(e: candle_core::Error) -> FitError {
    FitError::Encoder(format!("refinement: {e}"))
}

impl Refiner {
    pub(crate) fn new(params: usize, tokens: usize) -> Self {
        Refiner { m: vec![0.0; params], v: vec![0.0; params], grad: vec![0.0; params], touched: vec![false; tokens], step: 0 }
    }

    /// One pass over the training spans in a seeded random order; returns the mean loss.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn epoch(
        &mut self,
        a: &Design,
        params: &mut [f32],
        anchor: &[f32],
        targets: &[f32],
        sources: &[usize],
        docs: &Tensor,
        d: usize,
        options: &FitOptions,
        sparse_bias: Option<(&dyn Fn(usize, usize) -> f32, f32)>,
        rng: &mut Rng,
    ) -> Result<f64, FitError> {
        // Distillation needs a target per span: only the ridge's (first) spans have one.
        let n_spans = if options.refine == Refine::Distill { a.rows().min(targets.len() / d) } else { a.rows() };
        let mut order: Vec<usize> = (0..n_spans).collect();
        rng.shuffle(&mut order);
        let tau = options.refine_temperature as f32;
        let all_docs_t = docs.t().map_err(err)?;
        let mut total_loss = 0.0f64;
        for batch in order.chunks(options.refine_batch) {
            let b = batch.len();
            // Negatives: every document, or only the batch's own source documents.
            let (docs, docs_t, pos_of, doc_ids): (Tensor, Tensor, Vec<usize>, Vec<usize>) = if options.refine_in_batch {
                let mut uniq: Vec<u32> = batch.iter().map(|&s| sources[s] as u32).collect();
                uniq.sort_unstable();
                uniq.dedup();
                let pos = batch.iter().map(|&s| uniq.binary_search(&(sources[s] as u32)).unwrap()).collect();
                let idx = Tensor::from_slice(&uniq, uniq.len(), &Device::Cpu).map_err(err)?;
                let sub = docs.index_select(&idx, 0).map_err(err)?;
                let sub_t = sub.t().map_err(err)?;
                let ids = uniq.iter().map(|&u| u as usize).collect();
                (sub, sub_t, pos, ids)
            } else {
                let n = docs.dim(0).map_err(err)?;
                (docs.clone(), all_docs_t.clone(), batch.iter().map(|&s| sources[s]).collect(), (0..n).collect())
            };
            let n_docs = docs.dim(0).map_err(err)?;
            // Forward: u = Σ a_t X_t, q = u/|u|.
            let mut u = vec![0.0f32; b * d];
            let mut norms = vec![0.0f32; b];
            for (bi, &s) in batch.iter().enumerate() {
                let o = &mut u[bi * d..(bi + 1) * d];
                for (t, w) in a.row(s) {
                    for (x, p) in o.iter_mut().zip(&params[t * d..(t + 1) * d]) {
                        *x += w * p;
                    }
                }
                let n = o.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                norms[bi] = n;
                o.iter_mut().for_each(|x| *x /= n);
            }
            let q = Tensor::from_slice(&u, (b, d), &Device::Cpu).map_err(err)?;
            let mut scores: Vec<f32> = (q.matmul(&docs_t).map_err(err)? / tau as f64)
                .map_err(err)?
                .flatten_all()
                .map_err(err)?
                .to_vec1()
                .map_err(err)?;
            // A guided fit adds the sparse side's z-scored score: a constant of each logit, so
            // the gradient below is unchanged and the rows learn what the sparse side misses.
            if let Some((sparse_score, weight)) = sparse_bias {
                for (bi, &s) in batch.iter().enumerate() {
                    let raw: Vec<f32> = doc_ids.iter().map(|&j| sparse_score(s, j)).collect();
                    let n = raw.len().max(1) as f32;
                    let mean = raw.iter().sum::<f32>() / n;
                    let sd = (raw.iter().map(|r| (r - mean) * (r - mean)).sum::<f32>() / n).sqrt();
                    if sd > 0.0 {
                        for (z, r) in scores[bi * n_docs..(bi + 1) * n_docs].iter_mut().zip(&raw) {
                            *z += weight * (r - mean) / sd;
                        }
                    }
                }
            }
            let teacher: Option<Vec<f32>> = if options.refine == Refine::Distill {
                let y: Vec<f32> = batch.iter().flat_map(|&s| targets[s * d..(s + 1) * d].iter().copied()).collect();
                let yt = Tensor::from_slice(&y, (b, d), &Device::Cpu).map_err(err)?;
                Some(
                    (yt.matmul(&docs_t).map_err(err)? / tau as f64)
                        .map_err(err)?
                        .flatten_all()
                        .map_err(err)?
                        .to_vec1()
                        .map_err(err)?,
                )
            } else {
                None
            };
            // dL/dz = (softmax(z) − target) / b
            let mut gz = vec![0.0f32; b * n_docs];
            for bi in 0..b {
                let z = &scores[bi * n_docs..(bi + 1) * n_docs];
                let p = softmax(z);
                let g = &mut gz[bi * n_docs..(bi + 1) * n_docs];
                match &teacher {
                    None => {
                        let pos = pos_of[bi];
                        total_loss -= (p[pos].max(1e-30) as f64).ln();
                        for (j, (gv, pv)) in g.iter_mut().zip(&p).enumerate() {
                            *gv = (pv - (j == pos) as u8 as f32) / b as f32;
                        }
                    }
                    Some(tz) => {
                        let t = softmax(&tz[bi * n_docs..(bi + 1) * n_docs]);
                        total_loss += t
                            .iter()
                            .zip(&p)
                            .filter(|(tv, _)| **tv > 0.0)
                            .map(|(tv, pv)| *tv as f64 * ((*tv as f64).ln() - (pv.max(1e-30) as f64).ln()))
                            .sum::<f64>();
                        for ((gv, pv), tv) in g.iter_mut().zip(&p).zip(&t) {
                            *gv = (pv - tv) / b as f32;
                        }
                    }
                }
            }
            // dL/dq = G_z D / τ
            let gzt = Tensor::from_slice(&gz, (b, n_docs), &Device::Cpu).map_err(err)?;
            let gq: Vec<f32> = (gzt.matmul(&docs).map_err(err)? / tau as f64)
                .map_err(err)?
                .flatten_all()
                .map_err(err)?
                .to_vec1()
                .map_err(err)?;
            // dL/du = (g − q (q·g)) / |u|, then scatter into the rows.
            let mut touched_list: Vec<usize> = Vec::new();
            for (bi, &s) in batch.iter().enumerate() {
                let qv = &u[bi * d..(bi + 1) * d];
                let g = &gq[bi * d..(bi + 1) * d];
                let dot: f32 = qv.iter().zip(g).map(|(a, b)| a * b).sum();
                let du: Vec<f32> = g.iter().zip(qv).map(|(gv, qv)| (gv - qv * dot) / norms[bi]).collect();
                for (t, w) in a.row(s) {
                    if !self.touched[t] {
                        self.touched[t] = true;
                        touched_list.push(t);
                    }
                    for (gr, x) in self.grad[t * d..(t + 1) * d].iter_mut().zip(&du) {
                        *gr += w * x;
                    }
                }
            }
            // Lazy Adam on the rows of this batch.
            self.step += 1;
            let lr = options.refine_lr as f32;
            let bc1 = 1.0 - BETA1.powi(self.step);
            let bc2 = 1.0 - BETA2.powi(self.step);
            let rho = 2.0 * options.refine_anchor as f32;
            touched_list.sort_unstable();
            for &t in &touched_list {
                self.touched[t] = false;
                for k in t * d..(t + 1) * d {
                    let g = self.grad[k] + rho * (params[k] - anchor[k]);
                    self.grad[k] = 0.0;
                    self.m[k] = BETA1 * self.m[k] + (1.0 - BETA1) * g;
                    self.v[k] = BETA2 * self.v[k] + (1.0 - BETA2) * g * g;
                    params[k] -= lr * (self.m[k] / bc1) / ((self.v[k] / bc2).sqrt() + EPS);
                }
            }
        }
        Ok(total_loss / n_spans.max(1) as f64)
    }
}

fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= s);
    p
}
