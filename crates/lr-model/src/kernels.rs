//! CPU kernels for the native forwards (`cpu_bert.rs`, `cpu_decoder.rs`, the SPLADE head): GEMM
//! through oneDNN's sgemm when `libdnnl.so.2` is installed (`dnnl.rs`), else through the `gemm`
//! crate (packed micro-kernels, AVX2 or AVX-512 picked at run time), split across the rayon
//! threads; and the row-wise ops around it — bias + activation, residual LayerNorm, RMSNorm,
//! softmax, SwiGLU — written branch-free so that LLVM vectorises them. The crates are compiled
//! for baseline x86-64, so each row op also has AVX2+FMA and AVX-512 copies chosen at run time
//! (`simd!`).

use rayon::prelude::*;

/// Which implementation runs a model on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The native forwards (`cpu_bert.rs`, `cpu_decoder.rs`, the SPLADE head): the default.
    Native,
    /// candle's ops, as on CUDA: the cross-check of the native forwards, and the "before" of
    /// `make bench-encode`.
    Candle,
}

/// Row-wise ops: the body is compiled three times (baseline, AVX2+FMA, AVX-512) and the best the
/// CPU has runs.
macro_rules! simd {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                {
                    // Safety: the CPU has the features the copy was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // Safety: the CPU has the features the copy was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// A strided matrix operand: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Strided {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// A row-major matrix with rows `rs` apart.
    pub fn rows(data: &[f32], rs: usize) -> Self {
        Strided { ptr: data.as_ptr(), rs, cs: 1 }
    }
}

/// `dst[m×n] = scale · lhs[m×k] · rhs[k×n]`, or `dst += …` when `accumulate`; `dst` row-major
/// with rows `dst_rs` apart. Runs on every rayon thread when `parallel` and the product is
/// large enough to share.
///
/// # Safety
/// Every element the three views address must lie inside live allocations, `dst`'s elements
/// must not overlap `lhs`'s or `rhs`'s, and nothing else may access `dst`'s elements meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // A few rows by a weight matrix stored output by output (`Dense`): bandwidth-bound,
    // streamed without packing.
    if m <= crate::skinny::MAX_ROWS && scale == 1.0 && lhs.cs == 1 && rhs.rs == 1 && k >= 64 && crate::skinny::available() {
        let parallel = parallel && threads > 1 && m * n * k >= PARALLEL_MACS;
        crate::skinny::gemm(m, n, k, lhs.ptr, lhs.rs, rhs.ptr, rhs.cs, dst, dst_rs, accumulate, parallel);
        return;
    }
    if crate::dnnl::supports(m, n, k, (lhs.rs, lhs.cs), (rhs.rs, rhs.cs), dst_rs) {
        let beta = if accumulate { 1.0 } else { 0.0 };
        // oneDNN runs each call on one thread; a large product is split here into one block
        // of columns (or of rows, when it is tall and narrow) per rayon thread.
        let ways = if parallel && threads > 1 && m * n * k >= PARALLEL_MACS { threads } else { 1 };
        let by_columns = n >= m || n >= 64 * ways;
        let (extent, align) = if by_columns { (n, 16) } else { (m, 1) };
        let chunk = extent.div_ceil(ways).next_multiple_of(align);
        let blocks: Vec<(usize, usize)> = (0..extent).step_by(chunk.max(1)).map(|s| (s, chunk.min(extent - s))).collect();
        let (d, l, r) = (SharedMut(dst), SharedMut(lhs.ptr as *mut f32), SharedMut(rhs.ptr as *mut f32));
        let run = |&(start, len): &(usize, usize)| {
            // Safety: each block reads a sub-view of the caller's operands and writes its own
            // columns (or rows) of `dst`, disjoint from every other block's.
            let done = unsafe {
                if by_columns {
                    crate::dnnl::sgemm(m, len, k, scale, (l.get(), lhs.rs, lhs.cs), (r.get().add(start * rhs.cs), rhs.rs, rhs.cs), beta, d.get().add(start), dst_rs)
                } else {
                    crate::dnnl::sgemm(len, n, k, scale, (l.get().add(start * lhs.rs), lhs.rs, lhs.cs), (r.get(), rhs.rs, rhs.cs), beta, d.get().add(start * dst_rs), dst_rs)
                }
            };
            // The layouts were checked above: a refusal is oneDNN's own error (e.g. memory).
            assert!(done, "oneDNN sgemm failed on a {m}×{n}×{k} product");
        };
        if blocks.len() > 1 {
            blocks.par_iter().for_each(run);
        } else {
            blocks.iter().for_each(run);
        }
        return;
    }
    // Below this many multiply-adds, splitting costs more than it saves.
    let parallelism = if parallel && threads > 1 && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        parallelism,
    );
}

/// Multiply-adds above which oneDNN's single-threaded calls are split across the rayon threads.
const PARALLEL_MACS: usize = 1 << 20;

/// A linear layer's weight as Hugging Face stores it, `[outputs × inputs]` row-major (each
/// output's weights contiguous), and its bias: `y = x·Wᵀ + b`. Kept as stored: no copy at load,
/// the GEMM reads it transposed, and a product of a few rows streams it row by row (`skinny.rs`).
pub struct Dense {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

impl Dense {
    /// From a Hugging Face `Linear` weight `[outputs, inputs]` (row-major) and its bias.
    pub fn from_linear(weight: Vec<f32>, bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs);
        assert_eq!(bias.len(), outputs);
        Dense { weight, bias, inputs, outputs }
    }

    /// Several linears of the same input stacked (`[q | k | v]` outputs): one GEMM for all.
    pub fn concat(parts: Vec<Dense>) -> Self {
        let inputs = parts[0].inputs;
        assert!(parts.iter().all(|p| p.inputs == inputs));
        let outputs: usize = parts.iter().map(|p| p.outputs).sum();
        let mut weight = Vec::with_capacity(inputs * outputs);
        let mut bias = Vec::with_capacity(outputs);
        for p in parts {
            weight.extend_from_slice(&p.weight);
            bias.extend_from_slice(&p.bias);
        }
        Dense { weight, bias, inputs, outputs }
    }

    /// `out[rows×outputs] = x·Wᵀ` (bias not added: the caller fuses it into the next row op),
    /// or `out += x·Wᵀ` when `accumulate` (a residual already in `out`).
    pub fn matmul_into(&self, x: &[f32], rows: usize, out: &mut [f32], accumulate: bool) {
        let size = |a: usize, b: usize| a.checked_mul(b).expect("matrix size overflows usize");
        assert!(self.weight.len() >= size(self.outputs, self.inputs), "a Dense weight shorter than outputs × inputs");
        assert!(x.len() >= size(rows, self.inputs) && out.len() >= size(rows, self.outputs));
        // Safety: the asserts bound every element read and written; `out` is borrowed mutably.
        unsafe {
            gemm(
                rows,
                self.outputs,
                self.inputs,
                out.as_mut_ptr(),
                self.outputs,
                accumulate,
                Strided::rows(x, self.inputs),
                Strided { ptr: self.weight.as_ptr(), rs: 1, cs: self.inputs },
                1.0,
                true,
            )
        }
    }
}

/// `x[r] += bias` for every row (rows of `bias.len()`), on every rayon thread.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    let rows = x.len() / width;
    x.par_chunks_mut(width * rows_per_task(rows)).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(width) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    });
}

/// A pointer that rayon tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// Safety: used only where each task writes elements no other task touches.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// The feed-forward activations of BERT configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` (transformers' "gelu").
    GeluErf,
    /// The tanh approximation (transformers' "gelu_new" / "gelu_pytorch_tanh").
    GeluTanh,
    Relu,
}

/// Rows per rayon task for the row-wise ops: a few tasks per thread, none tiny.
fn rows_per_task(rows: usize) -> usize {
    (rows / (rayon::current_num_threads() * 4)).max(8)
}

/// `x[r] = act(x[r] + bias)` for every row (rows of `bias.len()`), on every rayon thread.
pub fn bias_activation(x: &mut [f32], bias: &[f32], act: Activation) {
    let width = bias.len();
    let rows = x.len() / width;
    x.par_chunks_mut(width * rows_per_task(rows)).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(width) {
            bias_activation_row(row, bias, act);
        }
    });
}

simd! {
    fn bias_activation_row(row: &mut [f32], bias: &[f32], act: Activation) {
        match act {
            Activation::GeluErf => {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let x = *v + b;
                    *v = 0.5 * x * one_plus_erf(x * std::f32::consts::FRAC_1_SQRT_2);
                }
            }
            Activation::GeluTanh => {
                const C: f32 = 0.797_884_6; // √(2/π)
                for (v, &b) in row.iter_mut().zip(bias) {
                    let x = *v + b;
                    *v = 0.5 * x * (1.0 + tanh(C * (x + 0.044715 * x * x * x)));
                }
            }
            Activation::Relu => {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let x = *v + b;
                    *v = if x > 0.0 { x } else { 0.0 };
                }
            }
        }
    }
}

/// `x[r] = LayerNorm(x[r] + bias)·gamma + beta` for every row (the residual is already in `x`:
/// GEMM accumulated onto it), on every rayon thread.
pub fn residual_layer_norm(x: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = bias.len();
    let rows = x.len() / width;
    x.par_chunks_mut(width * rows_per_task(rows)).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(width) {
            layer_norm_row(row, bias, gamma, beta, eps);
        }
    });
}

simd! {
    /// One row of [`residual_layer_norm`] (`bias` may be all zeros).
    pub fn layer_norm_row(row: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
        let mean = lane_sum(row) / row.len() as f32;
        let mut sq = [0f32; LANES];
        let chunks = row.chunks_exact(LANES);
        let mut tail = 0f32;
        for &v in chunks.remainder() {
            tail += (v - mean) * (v - mean);
        }
        for c in chunks {
            for i in 0..LANES {
                let d = c[i] - mean;
                sq[i] += d * d;
            }
        }
        let var = (sq.iter().sum::<f32>() + tail) / row.len() as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

simd! {
    /// Softmax of one row in place (max subtracted first).
    pub fn softmax_row(row: &mut [f32]) {
        let max = lane_max(row);
        row.iter_mut().for_each(|v| *v = exp(*v - max));
        let inv = 1.0 / lane_sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

simd! {
    /// `acc[j] = max(acc[j], row[j])` (the SPLADE head's max over positions).
    pub fn max_into(acc: &mut [f32], row: &[f32]) {
        // A NaN is kept (v != v), so that it reaches the caller's finiteness check.
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = if v > *a || v != v { v } else { *a };
        }
    }
}

/// `x[r] = x[r] / √(mean(x[r]²) + eps) · weight` for every row (rows of `weight.len()`), as
/// transformers' RMSNorm computes it in f32, on every rayon thread.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    let rows = x.len() / width;
    x.par_chunks_mut(width * rows_per_task(rows)).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(width) {
            rms_norm_row(row, weight, eps);
        }
    });
}

/// `dst[r] = RMSNorm(src[r])·weight`: the normed copy a pre-norm block feeds its sublayer.
pub fn rms_norm_into(src: &[f32], dst: &mut [f32], weight: &[f32], eps: f32) {
    let width = weight.len();
    let rows = src.len() / width;
    let per = width * rows_per_task(rows);
    dst.par_chunks_mut(per).zip(src.par_chunks(per)).for_each(|(d, s)| {
        d.copy_from_slice(s);
        for row in d.chunks_exact_mut(width) {
            rms_norm_row(row, weight, eps);
        }
    });
}

simd! {
    /// One row of [`rms_norm`].
    pub fn rms_norm_row(row: &mut [f32], weight: &[f32], eps: f32) {
        let mut sq = [0f32; LANES];
        let chunks = row.chunks_exact(LANES);
        let mut tail = 0f32;
        for &v in chunks.remainder() {
            tail += v * v;
        }
        for c in chunks {
            for i in 0..LANES {
                sq[i] += c[i] * c[i];
            }
        }
        let mean = (sq.iter().sum::<f32>() + tail) / row.len() as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for (v, &w) in row.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

/// SwiGLU: `out[r][j] = silu(gate_up[r][j]) · gate_up[r][inter + j]` for rows `[gate | up]` of
/// `2·inter`, on every rayon thread.
pub fn silu_mul(gate_up: &[f32], out: &mut [f32], inter: usize) {
    let rows = out.len() / inter;
    let per = rows_per_task(rows);
    out.par_chunks_mut(inter * per).zip(gate_up.par_chunks(2 * inter * per)).for_each(|(o, gu)| {
        for (orow, gurow) in o.chunks_exact_mut(inter).zip(gu.chunks_exact(2 * inter)) {
            silu_mul_row(orow, &gurow[..inter], &gurow[inter..]);
        }
    });
}

simd! {
    fn silu_mul_row(out: &mut [f32], gate: &[f32], up: &[f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }
}

/// Rotate-half RoPE of one head's `x` (`2·half` dims) at the angles whose cosines and sines
/// are `cos`, `sin` (`half` each), as transformers' `apply_rotary_pos_emb`.
#[inline]
pub fn rope_head(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}

/// Below this many multiply-adds per product, one head's attention runs as plain vector loops:
/// a GEMM call's fixed cost (packing, dispatch) outweighs the work of short sequences and of
/// decoding steps.
const SMALL_ATTENTION_MACS: usize = 1 << 16;

/// One head's scaled dot-product attention for `n` queries over `keys` keys of `d` dims:
/// `out[i] = softmax(scale · q_i·Kᵀ + mask_i) · V`. Rows of `q`, `k`, `v` and `out` are `d`
/// contiguous floats, `q_rs`, `k_rs`, `v_rs`, `out_rs` apart; `mask` (rows `mask_rs` apart,
/// 0 or −∞) is added before the softmax when given. `scores` is the caller's scratch.
///
/// # Safety
/// Every row addressed must lie inside live allocations; `out`'s rows must not overlap the
/// inputs and nothing else may access them meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_head(
    n: usize,
    keys: usize,
    d: usize,
    q: (*const f32, usize),
    k: (*const f32, usize),
    v: (*const f32, usize),
    out: (*mut f32, usize),
    scale: f32,
    mask: Option<(&[f32], usize)>,
    scores: &mut Vec<f32>,
) {
    scores.resize(n * keys, 0.0);
    let small = n * keys * d < SMALL_ATTENTION_MACS;
    if small {
        for i in 0..n {
            let qi = std::slice::from_raw_parts(q.0.add(i * q.1), d);
            let row = &mut scores[i * keys..(i + 1) * keys];
            for (j, s) in row.iter_mut().enumerate() {
                *s = scale * dot(qi, std::slice::from_raw_parts(k.0.add(j * k.1), d));
            }
        }
    } else {
        let qv = Strided { ptr: q.0, rs: q.1, cs: 1 };
        let kt = Strided { ptr: k.0, rs: 1, cs: k.1 };
        gemm(n, keys, d, scores.as_mut_ptr(), keys, false, qv, kt, scale, false);
    }
    for (i, row) in scores.chunks_exact_mut(keys).enumerate() {
        if let Some((m, rs)) = mask {
            row.iter_mut().zip(&m[i * rs..i * rs + keys]).for_each(|(x, &m)| *x += m);
        }
        softmax_row(row);
    }
    if small {
        for i in 0..n {
            let oi = std::slice::from_raw_parts_mut(out.0.add(i * out.1), d);
            oi.fill(0.0);
            for (j, &p) in scores[i * keys..(i + 1) * keys].iter().enumerate() {
                if p != 0.0 {
                    axpy(oi, p, std::slice::from_raw_parts(v.0.add(j * v.1), d));
                }
            }
        }
    } else {
        let vv = Strided { ptr: v.0, rs: v.1, cs: 1 };
        gemm(n, d, keys, out.0, out.1, false, Strided::rows(scores, keys), vv, 1.0, false);
    }
}

/// `a·b` of two equal-length rows.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0f32;
    dot_into(&mut acc, a, b);
    acc
}

simd! {
    fn dot_into(acc: &mut f32, a: &[f32], b: &[f32]) {
        let mut lanes = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let mut tail = 0f32;
        for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                lanes[i] += x[i] * y[i];
            }
        }
        *acc = lanes.iter().sum::<f32>() + tail;
    }
}

simd! {
    /// `y += a·x`.
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

/// Vocabulary columns per task of [`segment_max_logits`], and rows per GEMM in it: a task's
/// scratch (`SEGMENT_ROWS × VOCAB_TILE` f32, 256 KB) stays in L2.
const VOCAB_TILE: usize = 512;
const SEGMENT_ROWS: usize = 128;

/// For each segment `(start, end)` of the rows of `x` (`[rows, k]` row-major), the max over
/// its rows of `x·Wᵀ`, with `weight` `[vocab, k]` row-major (as Hugging Face stores an LM head
/// or a tied decoder): `[segments, vocab]`, −∞ for an empty segment. The logits are never
/// materialised beyond one tile: vocabulary tiles run as rayon tasks, each a GEMM per block of
/// rows followed by the max over that block, so the head costs one GEMM's arithmetic.
pub fn segment_max_logits(x: &[f32], k: usize, segments: &[(usize, usize)], weight: &[f32], vocab: usize) -> Vec<f32> {
    assert!(weight.len() >= vocab * k);
    let rows = segments.iter().map(|s| s.1).max().unwrap_or(0);
    assert!(x.len() >= rows * k && segments.iter().all(|s| s.0 <= s.1));
    let tiles: Vec<usize> = (0..vocab).step_by(VOCAB_TILE).collect();
    let per_tile: Vec<Vec<f32>> = tiles
        .par_iter()
        .map_init(Vec::new, |scratch: &mut Vec<f32>, &col| {
            let width = VOCAB_TILE.min(vocab - col);
            let mut acc = vec![f32::NEG_INFINITY; segments.len() * width];
            scratch.resize(SEGMENT_ROWS * width, 0.0);
            for (s, &(start, end)) in segments.iter().enumerate() {
                let acc = &mut acc[s * width..(s + 1) * width];
                for block in (start..end).step_by(SEGMENT_ROWS) {
                    let n = SEGMENT_ROWS.min(end - block);
                    // Safety: rows block..block+n of `x`, columns col..col+width of Wᵀ (rows of
                    // `weight`), all inside the asserted bounds; `scratch` is this task's.
                    unsafe {
                        let lhs = Strided { ptr: x.as_ptr().add(block * k), rs: k, cs: 1 };
                        let rhs = Strided { ptr: weight.as_ptr().add(col * k), rs: 1, cs: k };
                        gemm(n, width, k, scratch.as_mut_ptr(), width, false, lhs, rhs, 1.0, false);
                    }
                    for row in scratch[..n * width].chunks_exact(width) {
                        max_into(acc, row);
                    }
                }
            }
            acc
        })
        .collect();
    let mut out = vec![f32::NEG_INFINITY; segments.len() * vocab];
    for (&col, acc) in tiles.iter().zip(&per_tile) {
        let width = VOCAB_TILE.min(vocab - col);
        for s in 0..segments.len() {
            out[s * vocab + col..s * vocab + col + width].copy_from_slice(&acc[s * width..(s + 1) * width]);
        }
    }
    out
}

/// Independent accumulators: strict IEEE order keeps LLVM from vectorising a plain reduction.
const LANES: usize = 16;

#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let mut tail = f32::NEG_INFINITY;
    for &v in chunks.remainder() {
        tail = if v > tail { v } else { tail };
    }
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// `e^x` in f32, branch-free (Cephes' expf: Cody–Waite reduction by ln 2, degree-5 polynomial,
/// exponent by bit construction); within 2 ulp for x ≥ −80, and exactly 0 below (e^−80 ≈ 2e−35):
/// what a masked score (−∞) or a far tail gives is 0, never a subnormal, which would slow every
/// GEMM that reads it by two orders of magnitude. Only float ops, bit casts, selects and
/// wrapping integer ops, so that LLVM vectorises the loops around it (a float-to-int `as` cast
/// saturates, and that it does not vectorise).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let flush = x < -80.0;
    let x = x.clamp(-80.0, 88.3);
    // Round to nearest by the 1.5·2^23 trick: the low mantissa bits of `t` then hold n.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    let n_int = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let e = y * f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    if flush {
        0.0
    } else {
        e
    }
}

/// tanh through [`exp`]: `1 − 2/(e^{2x} + 1)`.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `erfc(|x|)` in f32 by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free.
#[inline(always)]
fn erfc_abs(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    poly * exp(-a * a)
}

/// erf in f32 (absolute error ≤ 1.5e-7), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    (1.0 - erfc_abs(x)).copysign(x)
}

/// `1 + erf(x)`, computed without the cancellation of `1 + (−1 + c)` for negative x (exact
/// GELU's left tail, where `x·Φ(x)` is small).
#[inline(always)]
pub fn one_plus_erf(x: f32) -> f32 {
    let c = erfc_abs(x);
    if x < 0.0 {
        c
    } else {
        2.0 - c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
            let want = libm::erf(x as f64);
            assert!((erf(x) as f64 - want).abs() < 3e-7, "erf({x}) = {}, want {want}", erf(x));
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(-79.9) > 1e-35);
    }

    #[test]
    fn row_ops_match_plain_arithmetic() {
        let row: Vec<f32> = (0..37).map(|i| ((i * 7919) % 23) as f32 / 5.0 - 2.0).collect();
        let mut s = row.clone();
        softmax_row(&mut s);
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for (g, &v) in s.iter().zip(&row) {
            assert!((*g as f64 - (v as f64 - m).exp() / z).abs() < 1e-7);
        }
        let bias = vec![0.25f32; 37];
        let mut g = row.clone();
        bias_activation(&mut g, &bias, Activation::GeluErf);
        for (g, &v) in g.iter().zip(&row) {
            let x = (v + 0.25) as f64;
            let want = 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()));
            assert!((*g as f64 - want).abs() < 1e-6, "gelu({x}) = {g}, want {want}");
        }
        let (gamma, beta) = (vec![2.0f32; 37], vec![0.5f32; 37]);
        let mut n = row.clone();
        residual_layer_norm(&mut n, &bias, &gamma, &beta, 1e-12);
        let x: Vec<f64> = row.iter().map(|&v| v as f64 + 0.25).collect();
        let mean = x.iter().sum::<f64>() / 37.0;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 37.0;
        for (g, v) in n.iter().zip(&x) {
            assert!((*g as f64 - ((v - mean) / var.sqrt() * 2.0 + 0.5)).abs() < 1e-5);
        }
    }

    #[test]
    fn gelu_tail_and_nan_max() {
        // GELU's left tail, where 1 + erf would cancel: within the approximation's own error
        // (erf to 1.5e-7, so 0.5·|x|·1.5e-7) against f64.
        for i in 0..800 {
            let x = -6.0 + i as f32 * 0.015;
            let mut g = vec![x];
            bias_activation(&mut g, &[0.0], Activation::GeluErf);
            let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()));
            let bound = 1e-7 * (x.abs() as f64).max(1.0) + 2.0 * f32::EPSILON as f64 * want.abs();
            assert!((g[0] as f64 - want).abs() <= bound, "gelu({x}) = {}, want {want}", g[0]);
        }
        let mut acc = vec![0.0f32, 1.0, f32::NEG_INFINITY];
        max_into(&mut acc, &[f32::NAN, 2.0, -1.0]);
        assert!(acc[0].is_nan(), "a NaN must survive the max (it is an error downstream)");
        assert_eq!(&acc[1..], &[2.0, -1.0]);
        max_into(&mut acc, &[5.0, 0.0, 0.0]);
        assert!(acc[0].is_nan());
    }

    #[test]
    fn layouts_no_library_takes_run_on_the_fallback() {
        // lhs rows 0 apart (one row broadcast): no leading dimension oneDNN accepts.
        let (m, k, n) = (3, 70, 5);
        let a: Vec<f32> = (0..k).map(|i| i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 9) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        unsafe { gemm(m, n, k, c.as_mut_ptr(), n, false, Strided { ptr: a.as_ptr(), rs: 0, cs: 1 }, Strided::rows(&b, n), 1.0, true) };
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|kk| a[kk] * b[kk * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-4, "({i}, {j}): {} vs {want}", c[i * n + j]);
            }
        }
    }

    #[test]
    fn gemm_matches_naive_with_strides_and_accumulation() {
        let (m, k, n) = (13, 9, 11);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
        let mut c = vec![1f32; m * n];
        // b read transposed: element (kk, j) of bᵀ's transpose view = b[j·k + kk] with b as [n×k].
        unsafe {
            gemm(m, n, k, c.as_mut_ptr(), n, true, Strided::rows(&a, k), Strided { ptr: b.as_ptr(), rs: 1, cs: k }, 2.0, true)
        };
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + 2.0 * (0..k).map(|kk| a[i * k + kk] * b[j * k + kk]).sum::<f32>();
                assert_eq!(c[i * n + j], want);
            }
        }
    }
}
