//! Products of a few rows by a weight matrix (`m ≤ 12`: decoding steps, windows in
//! lockstep, one short text) on AVX-512, without packing. Such a product reads the whole weight matrix for
//! little arithmetic, so memory bandwidth bounds it; a GEMM library packs the weights into its
//! own layout first, which reads and writes them once more (measured here: oneDNN's f32 GEMM at
//! 8 rows costs twice its 1-row time). Weights are stored output by output (`kernels::Dense`,
//! Hugging Face's layout), so each output's row is read once, front to back, and dotted with
//! every input row at once (the inputs, `m × k`, stay in L1).

use rayon::prelude::*;

use crate::kernels::SharedMut;

/// Most rows the kernel takes. Measured here (2 cores, AVX-512, oneDNN 3), one decoding step of a
/// Qwen2.5-0.5B-shaped model whose weights stream from memory: 8 rows 72 ms against oneDNN's 128
/// (which packs the weights first), 12 rows 108 against 155; at 16 rows oneDNN is ahead. A small
/// model whose weights stay in cache (MiniLM's 384 × 1536) is within 6 % either way up to 12.
pub const MAX_ROWS: usize = 12;
/// How far ahead of its loads each weight row is prefetched, in floats.
const PREFETCH_AHEAD: usize = 2048;
/// Outputs per rayon task.
const TASK_OUTPUTS: usize = 256;

/// Whether this CPU runs the kernel (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[m×n] = lhs[m×k] · wᵀ`, or `+=` when `accumulate`, with `w` `[n × k]` row-major (rows
/// `w_rs` apart): output j is the dot product of each `lhs` row with `w`'s row j. `lhs` rows are
/// `lhs_rs` apart, `dst` rows `dst_rs` apart. Blocks of outputs run on the rayon threads when
/// `parallel`.
///
/// # Safety
/// [`available`] must be true; every element addressed must lie inside live allocations, and
/// `dst` must not overlap the inputs nor be accessed by anything else meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: *const f32,
    lhs_rs: usize,
    w: *const f32,
    w_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    parallel: bool,
) {
    debug_assert!(m <= MAX_ROWS && available());
    let (l, r, d) = (SharedMut(lhs as *mut f32), SharedMut(w as *mut f32), SharedMut(dst));
    let block = |start: usize| {
        let outputs = TASK_OUTPUTS.min(n - start);
        // Safety: outputs start..start+outputs (rows of w, columns of dst), all rows of lhs.
        unsafe { outputs_block(m, outputs, k, l.get(), lhs_rs, r.get().add(start * w_rs), w_rs, d.get().add(start), dst_rs, accumulate) };
    };
    let starts: Vec<usize> = (0..n).step_by(TASK_OUTPUTS).collect();
    if parallel && starts.len() > 1 {
        starts.into_par_iter().for_each(block);
    } else {
        starts.into_iter().for_each(block);
    }
}

/// `tile::<R, C>` for runtime `rows` (1..=8) and `cols` (1, 3 or 4).
macro_rules! dispatch_tile {
    ($rows:expr, $cols:expr, $args:tt) => {
        dispatch_tile!(@rows $rows, $cols, $args, 1 2 3 4 5 6 7 8)
    };
    (@rows $rows:expr, $cols:expr, $args:tt, $($r:literal)*) => {
        match $rows {
            $( $r => dispatch_tile!(@cols $r, $cols, $args), )*
            _ => unreachable!("tiles have 1 to 8 rows"),
        }
    };
    (@cols $r:literal, $cols:expr, ($($a:expr),*)) => {
        match $cols {
            4 => tile::<$r, 4>($($a),*),
            3 => tile::<$r, 3>($($a),*),
            1 => tile::<$r, 1>($($a),*),
            _ => unreachable!("tiles have 1, 3 or 4 outputs"),
        }
    };
}

/// A block of outputs for every input row. Up to 4 rows: tiles of 4 rows × 4 outputs; from 5
/// rows: 8 rows × 3 outputs (24 of the 32 zmm registers accumulate), so each stretch of a weight
/// row is loaded once for up to 8 input rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn outputs_block(
    m: usize,
    outputs: usize,
    k: usize,
    lhs: *const f32,
    lhs_rs: usize,
    w: *const f32,
    w_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
) {
    let (tile_rows, tile_outputs) = if m <= 4 { (4, 4) } else { (8, 3) };
    let mut j = 0;
    while j < outputs {
        let cols = tile_outputs.min(outputs - j);
        let mut i = 0;
        while i < m {
            let rows = tile_rows.min(m - i);
            let (x, wj, out) = (lhs.add(i * lhs_rs), w.add(j * w_rs), dst.add(i * dst_rs + j));
            if cols == tile_outputs {
                dispatch_tile!(rows, cols, (k, x, lhs_rs, wj, w_rs, out, dst_rs, accumulate));
            } else {
                // The last outputs of the block: one at a time.
                for c in 0..cols {
                    let (wc, oc) = (wj.add(c * w_rs), out.add(c));
                    dispatch_tile!(rows, 1, (k, x, lhs_rs, wc, w_rs, oc, dst_rs, accumulate));
                }
            }
            i += rows;
        }
        j += cols;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn outputs_block(_: usize, _: usize, _: usize, _: *const f32, _: usize, _: *const f32, _: usize, _: *mut f32, _: usize, _: bool) {
    unreachable!("the skinny kernel runs only where available() is true")
}

/// `R` input rows × `C` outputs: R·C zmm accumulators over k in steps of 16 (the last step
/// masked), then one horizontal sum each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const C: usize>(
    k: usize,
    x: *const f32,
    x_rs: usize,
    w: *const f32,
    w_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut kk = 0;
    while kk < k {
        let lanes = (k - kk).min(16);
        let mask: __mmask16 = if lanes == 16 { 0xffff } else { ((1u32 << lanes) - 1) as __mmask16 };
        let mut wv = [_mm512_setzero_ps(); C];
        for (c, v) in wv.iter_mut().enumerate() {
            let row = w.add(c * w_rs + kk);
            // Ahead of the hardware prefetcher, so that the arithmetic overlaps the stream.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PREFETCH_AHEAD) as *const i8);
            *v = _mm512_maskz_loadu_ps(mask, row);
        }
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(r * x_rs + kk));
            for c in 0..C {
                a[c] = _mm512_fmadd_ps(xv, wv[c], a[c]);
            }
        }
        kk += 16;
    }
    for (r, a) in acc.iter().enumerate() {
        for (c, v) in a.iter().enumerate() {
            let out = dst.add(r * dst_rs + c);
            let sum = _mm512_reduce_add_ps(*v);
            *out = if accumulate { *out + sum } else { sum };
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::{gemm, Strided};

    /// Through `kernels::gemm`, which routes up to MAX_ROWS rows here on AVX-512 CPUs (and the
    /// next few to the GEMM library): every row count, a partial column tile and task block,
    /// strided rows, with and without accumulation.
    #[test]
    fn few_rows_match_naive_products() {
        let (k, n) = (70, 555);
        for m in 1..=super::MAX_ROWS + 3 {
            let lhs_rs = k + 3;
            let a: Vec<f32> = (0..m * lhs_rs).map(|i| ((i * 37) % 11) as f32 * 0.25 - 1.0).collect();
            // [n × k], as `Dense` stores a weight (rows `k + 2` apart: strided rows too).
            let w_rs = k + 2;
            let w: Vec<f32> = (0..n * w_rs).map(|i| ((i * 13) % 7) as f32 * 0.5 - 1.5).collect();
            for accumulate in [false, true] {
                let mut c: Vec<f32> = (0..m * (n + 1)).map(|i| (i % 5) as f32).collect();
                let before = c.clone();
                unsafe {
                    gemm(m, n, k, c.as_mut_ptr(), n + 1, accumulate, Strided::rows(&a, lhs_rs), Strided { ptr: w.as_ptr(), rs: 1, cs: w_rs }, 1.0, true)
                };
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|kk| a[i * lhs_rs + kk] * w[j * w_rs + kk]).sum();
                        let want = dot + if accumulate { before[i * (n + 1) + j] } else { 0.0 };
                        assert!((c[i * (n + 1) + j] - want).abs() <= 1e-4 * (1.0 + want.abs()), "m {m} ({i}, {j}): {} vs {want}", c[i * (n + 1) + j]);
                    }
                    // The gap column after each row is untouched.
                    assert_eq!(c[i * (n + 1) + n], before[i * (n + 1) + n], "m {m} row {i}: wrote past n");
                }
            }
        }
    }
}
