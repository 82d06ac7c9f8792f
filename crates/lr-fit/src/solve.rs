//! Ridge regression of table rows on span targets, solved by Jacobi-preconditioned conjugate
//! gradients with all right-hand sides (output dimensions) at once.
//!
//! Unknowns: `X` (T × D), one row per fitted token. Data: a sparse design `A` (S × T, row s =
//! the span's token weights, summing to 1) and targets `Y` (S × D). Objective:
//!
//! ```text
//! Σ_s ‖a_s X − y_s‖² + λ Σ_t ‖X_t − P_t‖²      ⇔      (AᵀA + λI) X = AᵀY + λP
//! ```
//!
//! `AᵀA` is never formed: a product `(AᵀA + λI) V` is a gather `A V` (S × D) and a scatter back,
//! O(nnz(A) · D) per iteration. Each of the D columns runs its own CG (its own α, β) over the
//! same matrix; they share every sparse pass.

/// The span × token matrix in compressed rows: span `s` has entries `start[s]..start[s+1]`.
#[derive(Debug, Clone, Default)]
pub struct Design {
    pub start: Vec<usize>,
    pub cols: Vec<u32>,
    pub vals: Vec<f32>,
}

impl Design {
    pub fn new() -> Self {
        Design { start: vec![0], cols: Vec::new(), vals: Vec::new() }
    }

    pub fn push_row(&mut self, entries: &[(u32, f32)]) {
        for &(c, v) in entries {
            self.cols.push(c);
            self.vals.push(v);
        }
        self.start.push(self.cols.len());
    }

    pub fn rows(&self) -> usize {
        self.start.len() - 1
    }

    pub fn row(&self, s: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let r = self.start[s]..self.start[s + 1];
        self.cols[r.clone()].iter().zip(&self.vals[r]).map(|(&c, &v)| (c as usize, v))
    }
}

#[derive(Debug, Clone)]
pub struct SolveStats {
    pub iterations: usize,
    /// Largest over the output dimensions of ‖residual‖ / ‖right-hand side‖ at the end.
    pub relative_residual: f64,
}

/// `out = A V` (S × D) for `V` (T × D).
fn gather(a: &Design, v: &[f64], d: usize, out: &mut [f64]) {
    for s in 0..a.rows() {
        let o = &mut out[s * d..(s + 1) * d];
        o.iter_mut().for_each(|x| *x = 0.0);
        for (t, w) in a.row(s) {
            let w = w as f64;
            for (x, y) in o.iter_mut().zip(&v[t * d..(t + 1) * d]) {
                *x += w * y;
            }
        }
    }
}

/// `out += Aᵀ U` (T × D) for `U` (S × D).
fn scatter_add(a: &Design, u: &[f64], d: usize, out: &mut [f64]) {
    for s in 0..a.rows() {
        let us = &u[s * d..(s + 1) * d];
        for (t, w) in a.row(s) {
            let w = w as f64;
            for (x, y) in out[t * d..(t + 1) * d].iter_mut().zip(us) {
                *x += w * y;
            }
        }
    }
}

/// Per-column dot products of two T × D matrices.
fn col_dots(a: &[f64], b: &[f64], d: usize, out: &mut [f64]) {
    out.iter_mut().for_each(|x| *x = 0.0);
    for (ra, rb) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
        for ((o, x), y) in out.iter_mut().zip(ra).zip(rb) {
            *o += x * y;
        }
    }
}

/// Solves the ridge system for `X` (T × D), starting from the prior `P`. `progress` gets the
/// iteration count and the current relative residual; returning `false` from it stops early.
pub fn ridge_cg(
    a: &Design,
    targets: &[f32],
    prior: &[f32],
    t: usize,
    d: usize,
    lambda: f64,
    max_iterations: usize,
    tolerance: f64,
    progress: &mut dyn FnMut(usize, f64),
) -> (Vec<f64>, SolveStats) {
    let s = a.rows();
    debug_assert_eq!(targets.len(), s * d);
    debug_assert_eq!(prior.len(), t * d);
    let mut x: Vec<f64> = prior.iter().map(|&v| v as f64).collect();
    // Jacobi preconditioner: diag(AᵀA) + λ.
    let mut diag = vec![lambda; t];
    for k in 0..a.cols.len() {
        diag[a.cols[k] as usize] += (a.vals[k] as f64).powi(2);
    }
    let inv_diag: Vec<f64> = diag.iter().map(|v| 1.0 / v).collect();
    // ‖B‖ per column, B = AᵀY + λP.
    let y64: Vec<f64> = targets.iter().map(|&v| v as f64).collect();
    let mut b = vec![0.0; t * d];
    scatter_add(a, &y64, d, &mut b);
    for (bv, pv) in b.iter_mut().zip(prior) {
        *bv += lambda * *pv as f64;
    }
    let mut b_norm = vec![0.0; d];
    col_dots(&b, &b, d, &mut b_norm);
    b_norm.iter_mut().for_each(|v| *v = v.sqrt().max(1e-300));
    drop(b);
    // R = B − M X with X = P: Aᵀ(Y − A P) (the λ terms cancel).
    let mut su = vec![0.0; s * d];
    gather(a, &x, d, &mut su);
    su.iter_mut().zip(&y64).for_each(|(u, y)| *u = y - *u);
    drop(y64);
    let mut r = vec![0.0; t * d];
    scatter_add(a, &su, d, &mut r);
    let mut z: Vec<f64> = r.iter().enumerate().map(|(i, v)| v * inv_diag[i / d]).collect();
    let mut p = z.clone();
    let mut rz = vec![0.0; d];
    col_dots(&r, &z, d, &mut rz);
    let mut q = vec![0.0; t * d];
    let mut tmp = vec![0.0; d];
    let residual = |r: &[f64], tmp: &mut [f64]| {
        col_dots(r, r, d, tmp);
        tmp.iter().zip(&b_norm).map(|(v, n)| v.sqrt() / n).fold(0.0, f64::max)
    };
    let mut rel = residual(&r, &mut tmp);
    let mut iterations = 0;
    while rel > tolerance && iterations < max_iterations {
        // Q = (AᵀA + λI) P
        gather(a, &p, d, &mut su);
        q.iter_mut().zip(&p).for_each(|(qv, pv)| *qv = lambda * pv);
        scatter_add(a, &su, d, &mut q);
        col_dots(&p, &q, d, &mut tmp);
        let alpha: Vec<f64> =
            rz.iter().zip(&tmp).map(|(n, dd)| if *dd > 0.0 { n / dd } else { 0.0 }).collect();
        for i in 0..t {
            let row = i * d..(i + 1) * d;
            for (j, k) in row.enumerate() {
                x[k] += alpha[j] * p[k];
                r[k] -= alpha[j] * q[k];
                z[k] = r[k] * inv_diag[i];
            }
        }
        let mut rz_new = vec![0.0; d];
        col_dots(&r, &z, d, &mut rz_new);
        let beta: Vec<f64> =
            rz_new.iter().zip(&rz).map(|(n, o)| if *o > 0.0 { n / o } else { 0.0 }).collect();
        for i in 0..t {
            for j in 0..d {
                let k = i * d + j;
                p[k] = z[k] + beta[j] * p[k];
            }
        }
        rz = rz_new;
        iterations += 1;
        rel = residual(&r, &mut tmp);
        progress(iterations, rel);
    }
    (x, SolveStats { iterations, relative_residual: rel })
}

/// Objective value split into its parts: (Σ_s ‖a_s X − y_s‖², Σ_t ‖X_t − P_t‖²).
pub fn ridge_terms(a: &Design, targets: &[f32], x: &[f64], prior: &[f32], d: usize) -> (f64, f64) {
    let mut su = vec![0.0; a.rows() * d];
    gather(a, x, d, &mut su);
    let data = su.iter().zip(targets).map(|(u, y)| (u - *y as f64).powi(2)).sum();
    let reg = x.iter().zip(prior).map(|(v, p)| (v - *p as f64).powi(2)).sum();
    (data, reg)
}
