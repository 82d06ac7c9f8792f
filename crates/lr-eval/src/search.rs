//! Exact top-k search in memory.

pub use lr_search::top_k;

/// Dot products of each query with each document (rows, all the same width).
pub fn dense_scores(queries: &[Vec<f32>], docs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
    use candle_core::{Device, Tensor};
    if queries.is_empty() || docs.is_empty() {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    let d = docs[0].len();
    if queries.iter().chain(docs).any(|v| v.len() != d) {
        return Err("vectors of different widths".into());
    }
    let e = |e: candle_core::Error| e.to_string();
    let q: Vec<f32> = queries.iter().flatten().copied().collect();
    let m: Vec<f32> = docs.iter().flatten().copied().collect();
    let q = Tensor::from_vec(q, (queries.len(), d), &Device::Cpu).map_err(e)?;
    let m = Tensor::from_vec(m, (docs.len(), d), &Device::Cpu).map_err(e)?;
    q.matmul(&m.t().map_err(e)?).map_err(e)?.to_vec2().map_err(e)
}

/// Sparse dot product of two id-sorted (id, weight) lists.
pub fn sparse_dot(a: &[(u32, f32)], b: &[(u32, f32)]) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0f32);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    s
}
