//! Global D × D least-squares maps between table rows: the linear prior (untrained rows → what
//! the spans ask for) and the unseen-row map (prior rows → fitted rows). Both accumulate their
//! normal equations over chunks of rows with candle GEMMs, solve them with [`crate::spd`], and
//! apply the map a chunk at a time, with a progress call (the extension's cancellation point)
//! after every chunk and solver block: a decoder's table is up to 150k × 4096.

use candle_core::{DType, Device, Tensor};

use crate::solve::Design;
use crate::{spd, FitError};

/// Rows per product: a chunk costs rows · D² multiply-adds plus a D × D sum, so at D = 4096 a
/// progress call comes every ~0.35 s with 512 rows (256 made the whole map a third slower);
/// narrow tables take up to 4,096 rows.
fn chunk_rows(d: usize) -> usize {
    ((1usize << 30) / (d * d).max(1)).clamp(512, 4096)
}

/// Normal equations `ΣIᵀI`, `ΣIᵀT` of a D × D map from input rows I to target rows T.
struct NormalEquations {
    gram: Tensor,
    cross: Tensor,
    what: &'static str,
}

impl NormalEquations {
    fn new(d: usize, what: &'static str) -> Result<Self, FitError> {
        let zero = Tensor::zeros((d, d), DType::F64, &Device::Cpu).map_err(error(what))?;
        Ok(NormalEquations { gram: zero.clone(), cross: zero, what })
    }

    /// Adds a chunk: `inputs` and `targets` are rows × D, f64.
    fn add(&mut self, inputs: &Tensor, targets: &Tensor) -> Result<(), FitError> {
        let e = error(self.what);
        let it = inputs.t().map_err(e)?;
        self.gram = (&self.gram + it.matmul(inputs).map_err(e)?).map_err(e)?;
        self.cross = (&self.cross + it.matmul(targets).map_err(e)?).map_err(e)?;
        Ok(())
    }

    /// `M = (G + μI)⁻¹ (C + μ s I)` as a D × D f64 tensor; μ = 10⁻³ · tr(G) / D. `s` = tr(C) /
    /// tr(G) (ridge towards the least-squares scaled identity) when `towards_scaled_identity`,
    /// else 0 (towards 0). Reports `progress` in 0..=1 once per solver block.
    fn solve(self, d: usize, towards_scaled_identity: bool, progress: &mut dyn FnMut(f64)) -> Result<Tensor, FitError> {
        let what = self.what;
        // Consumed here, so the tensors are freed before the solve's own copies exist.
        let into_vec = |t: Tensor| -> Result<Vec<f64>, FitError> { t.flatten_all().and_then(|t| t.to_vec1()).map_err(error(what)) };
        let mut gram = into_vec(self.gram)?;
        let mut cross = into_vec(self.cross)?;
        let trace_gram: f64 = (0..d).map(|i| gram[i * d + i]).sum();
        let trace_cross: f64 = (0..d).map(|i| cross[i * d + i]).sum();
        let mu = 1e-3 * trace_gram / d as f64 + 1e-12;
        let scale = if towards_scaled_identity && trace_gram > 0.0 { trace_cross / trace_gram } else { 0.0 };
        (0..d).for_each(|i| {
            gram[i * d + i] += mu;
            cross[i * d + i] += mu * scale;
        });
        spd::solve_spd(gram, cross, d, progress)
            .map_err(error(what))?
            .ok_or_else(|| FitError::InvalidInput(format!("{what}: singular system")))
    }
}

fn error(what: &'static str) -> impl Fn(candle_core::Error) -> FitError + Copy {
    move |e| FitError::InvalidInput(format!("{what}: {e}"))
}

/// Rows `ids` of a row-major table as an f64 tensor (ids × D).
fn gather(from: &[f32], ids: &[usize], d: usize, what: &'static str) -> Result<Tensor, FitError> {
    let mut v = Vec::with_capacity(ids.len() * d);
    ids.iter().for_each(|&t| v.extend(from[t * d..(t + 1) * d].iter().map(|&x| x as f64)));
    Tensor::from_vec(v, (ids.len(), d), &Device::Cpu).map_err(error(what))
}

/// `out[t] = from[t] · map` for every `t` in `ids`, a chunk at a time, `tick` after each chunk.
/// In f32, as the table is stored: half the time of f64 (at D = 4096 this product over a
/// decoder's 150k rows is most of the map's cost), and the normal equations, where precision
/// matters, stay f64.
fn apply_map(from: &[f32], ids: &[usize], map: &Tensor, d: usize, out: &mut [f32], what: &'static str, tick: &mut dyn FnMut()) -> Result<(), FitError> {
    let map = map.to_dtype(DType::F32).map_err(error(what))?;
    for chunk in ids.chunks(chunk_rows(d)) {
        let mut rows = Vec::with_capacity(chunk.len() * d);
        chunk.iter().for_each(|&t| rows.extend_from_slice(&from[t * d..(t + 1) * d]));
        let mapped: Vec<f32> = Tensor::from_vec(rows, (chunk.len(), d), &Device::Cpu)
            .and_then(|r| r.matmul(&map))
            .and_then(|m| m.flatten_all())
            .and_then(|m| m.to_vec1())
            .map_err(error(what))?;
        for (&t, v) in chunk.iter().zip(mapped.chunks_exact(d)) {
            out[t * d..(t + 1) * d].copy_from_slice(v);
        }
        tick();
    }
    Ok(())
}

/// Counts a stage's steps (chunks and solver blocks) into progress fractions.
struct Steps<'a> {
    done: f64,
    total: f64,
    stage: &'a str,
}

impl Steps<'_> {
    fn tick(&mut self, progress: &mut dyn FnMut(&str, f64)) {
        self.done += 1.0;
        progress(self.stage, self.done / self.total);
    }
}

/// Least-squares global map G (D × D) with `A (R0 G) ≈ Y` on the fitted tokens, applied to every
/// row: the prior for rows no span reaches. `A` is the span design over `fitted_ids`, `rows` the
/// untrained table, `y` the spans' targets.
pub(crate) fn linear_prior(
    a: &Design,
    fitted_ids: &[u32],
    rows: &[f32],
    y: &[f32],
    d: usize,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<Vec<f32>, FitError> {
    const WHAT: &str = "linear prior";
    let spans: Vec<usize> = (0..a.rows()).collect();
    let vocab = rows.len() / d;
    let all: Vec<usize> = (0..vocab).collect();
    let mut steps = Steps { done: 0.0, total: (spans.len().div_ceil(chunk_rows(d)) + 1 + vocab.div_ceil(chunk_rows(d))) as f64, stage: "fitting the linear prior" };
    let mut normal = NormalEquations::new(d, WHAT)?;
    for chunk in spans.chunks(chunk_rows(d)) {
        // F = A R0 for these spans (chunk × D), against their targets.
        let mut f = vec![0.0f64; chunk.len() * d];
        for (o, &si) in f.chunks_exact_mut(d).zip(chunk) {
            for (t, w) in a.row(si) {
                let id = fitted_ids[t] as usize;
                o.iter_mut().zip(&rows[id * d..(id + 1) * d]).for_each(|(x, r)| *x += w as f64 * *r as f64);
            }
        }
        let f = Tensor::from_vec(f, (chunk.len(), d), &Device::Cpu).map_err(error(WHAT))?;
        normal.add(&f, &gather(y, chunk, d, WHAT)?)?;
        steps.tick(progress);
    }
    let base = steps.done;
    let (total, stage) = (steps.total, steps.stage);
    let g = normal.solve(d, false, &mut |x| progress(stage, (base + x) / total))?;
    steps.done += 1.0;
    let mut prior = vec![0.0f32; rows.len()];
    apply_map(rows, &all, &g, d, &mut prior, WHAT, &mut || steps.tick(progress))?;
    Ok(prior)
}

/// Sets every row not `trained` to its prior row times `M`, the ridge least-squares map (D × D)
/// from the trained tokens' prior rows to their fitted rows, shrunk towards a scaled identity:
/// `M = (P_Tᵀ P_T + μI)⁻¹ (P_Tᵀ X_T + μ s I)`, μ = 10⁻³ · trace(P_Tᵀ P_T) / D, `s` the
/// least-squares scale `tr(P_Tᵀ X_T) / tr(P_Tᵀ P_T)`. With many more trained rows than D the
/// shrinkage is negligible; with fewer, the directions they do not span keep the prior row,
/// rescaled, instead of collapsing to 0. `prior_rows` are what the fit pulls rows towards (the
/// untrained rows, centred or through the linear prior when those options are on). Returns how
/// many rows it set.
pub fn map_unseen_rows(prior_rows: &[f32], rows: &mut [f32], trained: &[bool], d: usize) -> Result<usize, FitError> {
    map_unseen_rows_with_progress(prior_rows, rows, trained, d, &mut |_, _| {})
}

/// [`map_unseen_rows`], reporting progress (the extension's callback is also where a fit can be
/// cancelled) after every chunk of rows and every block of the D × D solve.
pub fn map_unseen_rows_with_progress(
    prior_rows: &[f32],
    rows: &mut [f32],
    trained: &[bool],
    d: usize,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<usize, FitError> {
    const WHAT: &str = "map_unseen_rows";
    let vocab = trained.len();
    if d == 0 || prior_rows.len() != vocab * d || rows.len() != vocab * d {
        return Err(FitError::InvalidInput(format!("map_unseen_rows: {vocab} tokens of {d} dimensions do not match the rows")));
    }
    let seen: Vec<usize> = (0..vocab).filter(|&t| trained[t]).collect();
    let unseen: Vec<usize> = (0..vocab).filter(|&t| !trained[t]).collect();
    if unseen.is_empty() || seen.is_empty() {
        return Ok(0);
    }
    if let Some(i) = prior_rows.iter().position(|v| !v.is_finite()) {
        return Err(FitError::InvalidInput(format!("map_unseen_rows: prior row {} is not finite", i / d)));
    }
    if let Some(&t) = seen.iter().find(|&&t| rows[t * d..(t + 1) * d].iter().any(|v| !v.is_finite())) {
        return Err(FitError::InvalidInput(format!("the fit diverged: row {t} is not finite (lower refine_lr)")));
    }
    let mut steps = Steps { done: 0.0, total: (seen.len().div_ceil(chunk_rows(d)) + 1 + unseen.len().div_ceil(chunk_rows(d))) as f64, stage: "mapping unseen rows" };
    let mut normal = NormalEquations::new(d, WHAT)?;
    for chunk in seen.chunks(chunk_rows(d)) {
        normal.add(&gather(prior_rows, chunk, d, WHAT)?, &gather(rows, chunk, d, WHAT)?)?;
        steps.tick(progress);
    }
    let base = steps.done;
    let (total, stage) = (steps.total, steps.stage);
    let map = normal.solve(d, true, &mut |x| progress(stage, (base + x) / total))?;
    steps.done += 1.0;
    apply_map(prior_rows, &unseen, &map, d, rows, WHAT, &mut || steps.tick(progress))?;
    Ok(unseen.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.centred() as f32).collect()
    }

    /// Progress of one stage: within 0..=1, never backwards, ending at 1, several calls.
    fn check_progress(calls: &[(String, f64)], stage: &str) {
        assert!(calls.len() > 3, "{calls:?}");
        assert!(calls.iter().all(|(s, _)| s == stage), "{calls:?}");
        assert!(calls.windows(2).all(|w| w[0].1 <= w[1].1), "{calls:?}");
        assert!(calls.iter().all(|(_, f)| (0.0..=1.0).contains(f)), "{calls:?}");
        assert!((calls.last().unwrap().1 - 1.0).abs() < 1e-12, "{calls:?}");
    }

    /// Spans whose targets are exactly `(A R0) G` for a known G: the linear prior is `R0 G` on
    /// every row, fitted or not (up to the small ridge), with more spans than one chunk.
    #[test]
    fn the_linear_prior_recovers_a_known_map() {
        let (d, vocab, spans) = (6, 40, 5000);
        let fitted_ids: Vec<u32> = (0..30).map(|t| t as u32 + 5).collect();
        let rows = random(vocab * d, 1);
        let g = random(d * d, 2);
        let picks = random(spans * 3, 3);
        let mut a = Design::new();
        let mut y = vec![0.0f32; spans * d];
        for s in 0..spans {
            let entries: Vec<(u32, f32)> = (0..3).map(|k| ((((picks[s * 3 + k] + 0.5) * 29.99) as u32), 1.0 / 3.0)).collect();
            a.push_row(&entries);
            for &(t, w) in &entries {
                let id = fitted_ids[t as usize] as usize;
                for j in 0..d {
                    y[s * d + j] += w * (0..d).map(|k| rows[id * d + k] * g[k * d + j]).sum::<f32>();
                }
            }
        }
        let mut calls = Vec::new();
        let prior = linear_prior(&a, &fitted_ids, &rows, &y, d, &mut |s, f| calls.push((s.to_string(), f))).unwrap();
        check_progress(&calls, "fitting the linear prior");
        for t in 0..vocab {
            for j in 0..d {
                let want: f32 = (0..d).map(|k| rows[t * d + k] * g[k * d + j]).sum();
                let got = prior[t * d + j];
                assert!((got - want).abs() < 5e-3 * (1.0 + want.abs()), "row {t}, column {j}: {got} vs {want}");
            }
        }
    }

    /// With fewer spans than dimensions the ridge decides the map: it must be the one towards 0,
    /// `G = (FᵀF + μI)⁻¹ FᵀY`, μ = 10⁻³ · tr(FᵀF) / D, computed here by plain elimination.
    #[test]
    fn the_linear_prior_is_the_ridge_map_towards_zero() {
        let (d, vocab) = (12, 30);
        let fitted_ids: Vec<u32> = vec![3, 7, 11, 19, 25];
        let rows = random(vocab * d, 5);
        let y = random(4 * d, 6);
        let mut a = Design::new();
        for s in 0..4u32 {
            a.push_row(&[(s, 0.5), (s + 1, 0.5)]);
        }
        let prior = linear_prior(&a, &fitted_ids, &rows, &y, d, &mut |_, _| {}).unwrap();
        // F = A R0 (4 × d) and the normal equations, in f64.
        let mut f = vec![0.0f64; 4 * d];
        for s in 0..4 {
            let (p, q) = (fitted_ids[s] as usize, fitted_ids[s + 1] as usize);
            (0..d).for_each(|j| f[s * d + j] = 0.5 * rows[p * d + j] as f64 + 0.5 * rows[q * d + j] as f64);
        }
        let mut m = vec![0.0f64; d * 2 * d]; // [FᵀF + μI | FᵀY], row by row
        for i in 0..d {
            for j in 0..d {
                m[i * 2 * d + j] = (0..4).map(|s| f[s * d + i] * f[s * d + j]).sum();
                m[i * 2 * d + d + j] = (0..4).map(|s| f[s * d + i] * y[s * d + j] as f64).sum();
            }
        }
        let mu = 1e-3 * (0..d).map(|i| m[i * 2 * d + i]).sum::<f64>() / d as f64 + 1e-12;
        (0..d).for_each(|i| m[i * 2 * d + i] += mu);
        for c in 0..d {
            let p = m[c * 2 * d + c];
            (0..2 * d).for_each(|j| m[c * 2 * d + j] /= p);
            for r in (0..d).filter(|&r| r != c) {
                let k = m[r * 2 * d + c];
                (0..2 * d).for_each(|j| m[r * 2 * d + j] -= k * m[c * 2 * d + j]);
            }
        }
        for t in 0..vocab {
            for j in 0..d {
                let want: f64 = (0..d).map(|k| rows[t * d + k] as f64 * m[k * 2 * d + d + j]).sum();
                let got = prior[t * d + j] as f64;
                assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "row {t}, column {j}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn the_unseen_row_map_reports_progress_per_chunk_and_block() {
        let (d, vocab) = (4, 20_000);
        let prior = random(vocab * d, 4);
        let mut rows: Vec<f32> = prior.iter().map(|v| 2.0 * v).collect();
        let trained: Vec<bool> = (0..vocab).map(|t| t % 3 != 0).collect();
        let mut calls = Vec::new();
        let set = map_unseen_rows_with_progress(&prior, &mut rows, &trained, d, &mut |s, f| calls.push((s.to_string(), f))).unwrap();
        assert_eq!(set, vocab.div_ceil(3));
        check_progress(&calls, "mapping unseen rows");
        // rows = 2 · prior exactly, so the map is 2 I and unseen rows become twice their prior.
        for t in (0..vocab).step_by(3) {
            for j in 0..d {
                assert!((rows[t * d + j] - 2.0 * prior[t * d + j]).abs() < 1e-5);
            }
        }
    }
}
