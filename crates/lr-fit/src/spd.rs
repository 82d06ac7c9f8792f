//! Dense symmetric positive definite solves `G X = C` (both n × n, row-major f64), for the D × D
//! ridge maps of the fit. A decoder's D is 4096: scalar Cholesky and substitution took 18 s
//! there without a progress call, so the extension could not cancel a fit during them. Here the
//! factorisation is blocked (right-looking): scalar code runs only inside a diagonal block, the
//! panel and trailing updates and both triangular solves are candle GEMMs, and progress (the
//! extension's cancellation point) is reported once per block of each phase.

use candle_core::{Device, Tensor};

/// Rows per block: large enough that the GEMMs dominate, small enough that a diagonal block's
/// scalar factorisation and each step between progress calls stay short.
const BLOCK: usize = 256;

/// `G⁻¹ C` as an n × n f64 tensor, or `None` when `G` is not (numerically) positive definite.
pub(crate) fn solve_spd(
    g: Vec<f64>,
    c: Vec<f64>,
    n: usize,
    progress: &mut dyn FnMut(f64),
) -> candle_core::Result<Option<Tensor>> {
    solve_spd_blocked(g, c, n, BLOCK, progress)
}

fn solve_spd_blocked(
    mut a: Vec<f64>,
    c: Vec<f64>,
    n: usize,
    block: usize,
    progress: &mut dyn FnMut(f64),
) -> candle_core::Result<Option<Tensor>> {
    let cpu = &Device::Cpu;
    let blocks: Vec<(usize, usize)> = (0..n)
        .step_by(block)
        .map(|k| (k, (k + block).min(n)))
        .collect();
    let steps = (3 * blocks.len()) as f64;
    let mut done = 0.0;
    // Factorisation G = L Lᵀ: per block, its diagonal part in scalar code, the panel below it
    // (L₂₁ = A₂₁ L₁₁⁻ᵀ) and the trailing update (A₂₂ −= L₂₁ L₂₁ᵀ) as GEMMs. Kept: the panels
    // and the diagonal blocks' inverses, which is all the solves need.
    let mut diag_inv: Vec<Tensor> = Vec::with_capacity(blocks.len());
    let mut panels: Vec<Option<Tensor>> = Vec::with_capacity(blocks.len());
    for &(k0, k1) in &blocks {
        let b = k1 - k0;
        let a11 = submatrix(&a, n, k0..k1, k0..k1);
        let Some(l11) = cholesky(&a11, b) else {
            return Ok(None);
        };
        let l11_inv = Tensor::from_vec(lower_triangular_inverse(&l11, b), (b, b), cpu)?;
        if k1 < n {
            let m = n - k1;
            let a21 = Tensor::from_vec(submatrix(&a, n, k1..n, k0..k1), (m, b), cpu)?;
            let l21 = a21.matmul(&l11_inv.t()?)?;
            // Trailing update A₂₂ −= L₂₁ L₂₁ᵀ, lower triangle only (the factorisation reads no
            // more), one block column at a time, subtracted in place: no m × m temporaries.
            for &(j0, j1) in blocks.iter().filter(|&&(j0, _)| j0 >= k1) {
                let below = l21.narrow(0, j0 - k1, n - j0)?;
                let column = l21.narrow(0, j0 - k1, j1 - j0)?;
                let product: Vec<f64> = below.matmul(&column.t()?)?.flatten_all()?.to_vec1()?;
                for (i, row) in product.chunks_exact(j1 - j0).enumerate() {
                    a[(j0 + i) * n + j0..(j0 + i) * n + j1].iter_mut().zip(row).for_each(|(x, p)| *x -= p);
                }
            }
            panels.push(Some(l21));
        } else {
            panels.push(None);
        }
        diag_inv.push(l11_inv);
        done += 1.0;
        progress(done / steps);
    }
    drop(a);
    // Forward: L Y = C, block row by block row. The panel of block j holds L's rows below it,
    // so block i's contributions from the blocks before it are rows of those panels.
    let c = Tensor::from_vec(c, (n, n), cpu)?;
    let mut y: Vec<Tensor> = Vec::with_capacity(blocks.len());
    for (i, &(k0, k1)) in blocks.iter().enumerate() {
        let mut rhs = c.narrow(0, k0, k1 - k0)?;
        for (j, &(_, j1)) in blocks[..i].iter().enumerate() {
            let l_ij = panels[j]
                .as_ref()
                .expect("a block before the last has a panel")
                .narrow(0, k0 - j1, k1 - k0)?;
            rhs = (rhs - l_ij.matmul(&y[j])?)?;
        }
        y.push(diag_inv[i].matmul(&rhs)?);
        done += 1.0;
        progress(done / steps);
    }
    drop(c);
    // Backward: Lᵀ X = Y, from the last block up; block i's rows of Lᵀ beyond its diagonal are
    // its panel, transposed.
    let mut x: Vec<Option<Tensor>> = vec![None; blocks.len()];
    for (i, &(_, k1)) in blocks.iter().enumerate().rev() {
        let mut rhs = y[i].clone();
        if let Some(panel) = &panels[i] {
            let below = Tensor::cat(
                &x[i + 1..]
                    .iter()
                    .map(|t| t.as_ref().expect("solved"))
                    .collect::<Vec<_>>(),
                0,
            )?;
            debug_assert_eq!(below.dim(0)?, n - k1);
            rhs = (rhs - panel.t()?.matmul(&below)?)?;
        }
        x[i] = Some(diag_inv[i].t()?.matmul(&rhs)?);
        done += 1.0;
        progress(done / steps);
    }
    let x: Vec<Tensor> = x.into_iter().map(|t| t.expect("solved")).collect();
    Ok(Some(Tensor::cat(&x, 0)?))
}

/// Rows `rows` × columns `cols` of a row-major n × n matrix, row-major.
fn submatrix(
    a: &[f64],
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    for r in rows {
        out.extend_from_slice(&a[r * n + cols.start..r * n + cols.end]);
    }
    out
}

/// The inverse of a lower-triangular `n × n` matrix (row-major), itself lower-triangular.
fn lower_triangular_inverse(l: &[f64], n: usize) -> Vec<f64> {
    // Row i of L⁻¹ = (e_i − Σ_{k<i} L[i,k] · row k of L⁻¹) / L[i,i]: contiguous rows only.
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        let (done, rest) = inv.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for k in 0..i {
            let a = l[i * n + k];
            if a != 0.0 {
                row[..=k]
                    .iter_mut()
                    .zip(&done[k * n..k * n + k + 1])
                    .for_each(|(r, v)| *r -= a * v);
            }
        }
        let p = l[i * n + i];
        row[..=i].iter_mut().for_each(|r| *r /= p);
    }
    inv
}

/// Lower Cholesky factor of a symmetric `n × n` matrix (row-major; only its lower triangle is
/// read), or `None` when it is not positive definite.
fn cholesky(m: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = m[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.centred()).collect()
    }

    /// B Bᵀ + n/10 · I: symmetric positive definite, moderately conditioned.
    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let b = random(n * n, seed);
        let mut g = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>();
            }
            g[i * n + i] += n as f64 / 10.0;
        }
        g
    }

    /// Checks `G X = C` directly (no factorisation in the reference), for block sizes that divide
    /// n (7, 10, 35: several whole blocks), leave a ragged last block (8, 16, 33) or hold n in
    /// one block (70, 256), and that progress ends at 1.
    #[test]
    fn blocked_solve_satisfies_the_system() {
        let n = 70;
        let g = spd(n, 1);
        let c = random(n * n, 2);
        for block in [7, 8, 10, 16, 33, 35, 70, 256] {
            let mut last = 0.0;
            let mut calls = 0;
            let x = solve_spd_blocked(g.clone(), c.clone(), n, block, &mut |f| {
                assert!(f > last, "progress goes forward");
                last = f;
                calls += 1;
            })
            .unwrap()
            .expect("positive definite");
            let x: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
            let mut worst = 0.0f64;
            for i in 0..n {
                for j in 0..n {
                    let gx: f64 = (0..n).map(|k| g[i * n + k] * x[k * n + j]).sum();
                    worst = worst.max((gx - c[i * n + j]).abs());
                }
            }
            assert!(worst < 1e-10, "block {block}: |G X − C| up to {worst:e}");
            assert!(
                (last - 1.0).abs() < 1e-12,
                "block {block}: progress ends at {last}"
            );
            assert_eq!(
                calls,
                3 * n.div_ceil(block),
                "block {block}: a progress call per block and phase"
            );
        }
    }

    #[test]
    fn not_positive_definite_is_none() {
        let n = 40;
        let mut g = spd(n, 3);
        // An indefinite trailing block: found in a later block's factorisation.
        g[35 * n + 35] = -1e6;
        assert!(solve_spd_blocked(g, random(n * n, 4), n, 16, &mut |_| {})
            .unwrap()
            .is_none());
        assert!(
            solve_spd_blocked(vec![0.0; n * n], random(n * n, 5), n, 16, &mut |_| {})
                .unwrap()
                .is_none()
        );
        // A NaN or infinity reaching a later block's pivot (through the trailing update, or on
        // the diagonal) is refused, not propagated into the solution.
        for (at, value) in [(20 * n + 3, f64::NAN), (n * n - 1, f64::INFINITY), (35 * n + 35, f64::NAN)] {
            let mut g = spd(n, 6);
            g[at] = value;
            assert!(
                solve_spd_blocked(g, random(n * n, 7), n, 16, &mut |_| {}).unwrap().is_none(),
                "{value} at {at}"
            );
        }
    }
}
