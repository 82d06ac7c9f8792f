//! pgvector's varlena payloads, byte for byte, with no PostgreSQL dependency.
//!
//! A varlena datum is a 4-byte length header followed by a payload. The header is written by
//! the caller (pgrx's `set_varsize`) because its encoding is platform-specific; this crate reads
//! and writes only the payload that follows it:
//!
//! * `vector`:    `i16 dim | i16 unused (= 0) | f32 x[dim]`
//! * `sparsevec`: `i32 dim | i32 nnz | i32 unused (= 0) | i32 indices[nnz] | f32 values[nnz]`
//!   with 0-based, strictly ascending indices and no stored zeros.
//!
//! Limits follow pgvector 0.8: `vector` up to 16,000 dimensions, `sparsevec` up to
//! 1,000,000,000 dimensions and 16,000 non-zero elements.

use std::fmt;

/// pgvector's VECTOR_MAX_DIM.
pub const VECTOR_MAX_DIM: usize = 16_000;
/// pgvector's SPARSEVEC_MAX_DIM.
pub const SPARSEVEC_MAX_DIM: usize = 1_000_000_000;
/// pgvector's SPARSEVEC_MAX_NNZ.
pub const SPARSEVEC_MAX_NNZ: usize = 16_000;

const VECTOR_HEADER: usize = 4;
const SPARSEVEC_HEADER: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    Truncated { need: usize, have: usize },
    TrailingBytes { expected: usize, have: usize },
    BadDimensions(i64),
    UnusedNotZero(i64),
    TooManyNonZeros(i64),
    NonFinite { index: usize },
    IndexOutOfRange { index: i64, dim: usize },
    IndicesNotAscending { position: usize },
    ZeroValue { index: usize },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Truncated { need, have } => {
                write!(f, "vector payload truncated: need {need} bytes, have {have}")
            }
            LayoutError::TrailingBytes { expected, have } => {
                write!(f, "vector payload has {have} bytes, expected {expected}")
            }
            LayoutError::BadDimensions(d) => write!(f, "invalid vector dimensions {d}"),
            LayoutError::UnusedNotZero(u) => write!(f, "vector header field `unused` is {u}, expected 0"),
            LayoutError::TooManyNonZeros(n) => write!(
                f,
                "sparsevec has {n} non-zero elements; pgvector allows at most {SPARSEVEC_MAX_NNZ} \
                 (keep the largest weights with an explicit top-k pruning)"
            ),
            LayoutError::NonFinite { index } => write!(f, "element {index} is NaN or infinite"),
            LayoutError::IndexOutOfRange { index, dim } => {
                write!(f, "sparsevec index {index} is outside 0..{dim}")
            }
            LayoutError::IndicesNotAscending { position } => write!(
                f,
                "sparsevec indices must be strictly ascending (position {position})"
            ),
            LayoutError::ZeroValue { index } => {
                write!(f, "sparsevec stores a zero at index {index}; zeros must be omitted")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

fn read_i16(b: &[u8], at: usize) -> i16 {
    i16::from_ne_bytes([b[at], b[at + 1]])
}
fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}
fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn check_len(bytes: &[u8], expected: usize) -> Result<(), LayoutError> {
    if bytes.len() < expected {
        return Err(LayoutError::Truncated { need: expected, have: bytes.len() });
    }
    if bytes.len() > expected {
        return Err(LayoutError::TrailingBytes { expected, have: bytes.len() });
    }
    Ok(())
}

/// Payload size of a `vector` of `dim` elements.
pub fn vector_payload_len(dim: usize) -> usize {
    VECTOR_HEADER + 4 * dim
}

/// Validates a dense vector's values for pgvector (1..=16,000 finite elements).
pub fn validate_vector(x: &[f32]) -> Result<(), LayoutError> {
    if x.is_empty() || x.len() > VECTOR_MAX_DIM {
        return Err(LayoutError::BadDimensions(x.len() as i64));
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(LayoutError::NonFinite { index });
    }
    Ok(())
}

/// Writes a `vector` payload into `out` (which must be `vector_payload_len(x.len())` long).
pub fn write_vector(x: &[f32], out: &mut [u8]) -> Result<(), LayoutError> {
    validate_vector(x)?;
    check_len(out, vector_payload_len(x.len()))?;
    out[0..2].copy_from_slice(&(x.len() as i16).to_ne_bytes());
    out[2..4].copy_from_slice(&0i16.to_ne_bytes());
    for (chunk, v) in out[VECTOR_HEADER..].chunks_exact_mut(4).zip(x) {
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    Ok(())
}

/// Encodes a `vector` payload.
pub fn encode_vector(x: &[f32]) -> Result<Vec<u8>, LayoutError> {
    let mut out = vec![0u8; vector_payload_len(x.len())];
    write_vector(x, &mut out)?;
    Ok(out)
}

/// Decodes and validates a `vector` payload.
pub fn decode_vector(bytes: &[u8]) -> Result<Vec<f32>, LayoutError> {
    if bytes.len() < VECTOR_HEADER {
        return Err(LayoutError::Truncated { need: VECTOR_HEADER, have: bytes.len() });
    }
    let dim = read_i16(bytes, 0);
    let unused = read_i16(bytes, 2);
    if dim < 1 || dim as usize > VECTOR_MAX_DIM {
        return Err(LayoutError::BadDimensions(dim as i64));
    }
    if unused != 0 {
        return Err(LayoutError::UnusedNotZero(unused as i64));
    }
    let dim = dim as usize;
    check_len(bytes, vector_payload_len(dim))?;
    let x: Vec<f32> = (0..dim).map(|i| read_f32(bytes, VECTOR_HEADER + 4 * i)).collect();
    validate_vector(&x)?;
    Ok(x)
}

/// A sparse vector as pgvector stores it: 0-based ascending indices, no zero values.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseVector {
    pub dim: usize,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// Whether `count` non-zero weights fit one `sparsevec` (pgvector's limit): the one check of
/// it, for vectors built here and for models' sparse output before it is written.
pub fn check_non_zeros(count: usize) -> Result<(), LayoutError> {
    if count > SPARSEVEC_MAX_NNZ {
        return Err(LayoutError::TooManyNonZeros(count as i64));
    }
    Ok(())
}

impl SparseVector {
    /// Builds a validated sparse vector from (index, value) pairs in any order.
    /// Zero values are dropped; a repeated index is an error (it has no single meaning).
    pub fn from_pairs(dim: usize, mut pairs: Vec<(u32, f32)>) -> Result<Self, LayoutError> {
        pairs.retain(|&(_, v)| v != 0.0);
        check_non_zeros(pairs.len())?;
        pairs.sort_by_key(|&(i, _)| i);
        let sv = SparseVector {
            dim,
            indices: pairs.iter().map(|p| p.0).collect(),
            values: pairs.iter().map(|p| p.1).collect(),
        };
        sv.validate()?;
        Ok(sv)
    }

    /// Builds from a dense slice, keeping non-zeros.
    pub fn from_dense(x: &[f32]) -> Result<Self, LayoutError> {
        let pairs = x
            .iter()
            .enumerate()
            .filter(|(_, &v)| v != 0.0)
            .map(|(i, &v)| (i as u32, v))
            .collect();
        Self::from_pairs(x.len(), pairs)
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    pub fn to_dense(&self) -> Vec<f32> {
        let mut x = vec![0.0; self.dim];
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            x[i as usize] = v;
        }
        x
    }

    /// Inner product with another sparse vector of the same dimension.
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let (mut a, mut b, mut sum) = (0, 0, 0.0f32);
        while a < self.indices.len() && b < other.indices.len() {
            match self.indices[a].cmp(&other.indices[b]) {
                std::cmp::Ordering::Less => a += 1,
                std::cmp::Ordering::Greater => b += 1,
                std::cmp::Ordering::Equal => {
                    sum += self.values[a] * other.values[b];
                    a += 1;
                    b += 1;
                }
            }
        }
        sum
    }

    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.dim < 1 || self.dim > SPARSEVEC_MAX_DIM {
            return Err(LayoutError::BadDimensions(self.dim as i64));
        }
        if self.indices.len() != self.values.len() || self.nnz() > SPARSEVEC_MAX_NNZ {
            return Err(LayoutError::TooManyNonZeros(self.nnz() as i64));
        }
        for (pos, (&i, &v)) in self.indices.iter().zip(&self.values).enumerate() {
            if i as usize >= self.dim {
                return Err(LayoutError::IndexOutOfRange { index: i as i64, dim: self.dim });
            }
            if pos > 0 && self.indices[pos - 1] >= i {
                return Err(LayoutError::IndicesNotAscending { position: pos });
            }
            if !v.is_finite() {
                return Err(LayoutError::NonFinite { index: i as usize });
            }
            if v == 0.0 {
                return Err(LayoutError::ZeroValue { index: i as usize });
            }
        }
        Ok(())
    }

    /// Payload size of this sparse vector.
    pub fn payload_len(&self) -> usize {
        SPARSEVEC_HEADER + 8 * self.nnz()
    }

    /// Writes the `sparsevec` payload into `out` (exactly `payload_len()` bytes).
    pub fn write(&self, out: &mut [u8]) -> Result<(), LayoutError> {
        self.validate()?;
        check_len(out, self.payload_len())?;
        let nnz = self.nnz();
        out[0..4].copy_from_slice(&(self.dim as i32).to_ne_bytes());
        out[4..8].copy_from_slice(&(nnz as i32).to_ne_bytes());
        out[8..12].copy_from_slice(&0i32.to_ne_bytes());
        let (idx, vals) = out[SPARSEVEC_HEADER..].split_at_mut(4 * nnz);
        for (chunk, &i) in idx.chunks_exact_mut(4).zip(&self.indices) {
            chunk.copy_from_slice(&(i as i32).to_ne_bytes());
        }
        for (chunk, &v) in vals.chunks_exact_mut(4).zip(&self.values) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, LayoutError> {
        let mut out = vec![0u8; self.payload_len()];
        self.write(&mut out)?;
        Ok(out)
    }

    /// Decodes and validates a `sparsevec` payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, LayoutError> {
        if bytes.len() < SPARSEVEC_HEADER {
            return Err(LayoutError::Truncated { need: SPARSEVEC_HEADER, have: bytes.len() });
        }
        let dim = read_i32(bytes, 0);
        let nnz = read_i32(bytes, 4);
        let unused = read_i32(bytes, 8);
        if dim < 1 || dim as usize > SPARSEVEC_MAX_DIM {
            return Err(LayoutError::BadDimensions(dim as i64));
        }
        if nnz < 0 || nnz as usize > SPARSEVEC_MAX_NNZ {
            return Err(LayoutError::TooManyNonZeros(nnz as i64));
        }
        if unused != 0 {
            return Err(LayoutError::UnusedNotZero(unused as i64));
        }
        let nnz = nnz as usize;
        check_len(bytes, SPARSEVEC_HEADER + 8 * nnz)?;
        let mut indices = Vec::with_capacity(nnz);
        for k in 0..nnz {
            let i = read_i32(bytes, SPARSEVEC_HEADER + 4 * k);
            if i < 0 {
                return Err(LayoutError::IndexOutOfRange { index: i as i64, dim: dim as usize });
            }
            indices.push(i as u32);
        }
        let base = SPARSEVEC_HEADER + 4 * nnz;
        let values = (0..nnz).map(|k| read_f32(bytes, base + 4 * k)).collect();
        let sv = SparseVector { dim: dim as usize, indices, values };
        sv.validate()?;
        Ok(sv)
    }
}

/// Builds a validated `sparsevec` payload of dimension `dim` from (index, value) pairs in any
/// order (zeros dropped). More than pgvector's 16,000 non-zeros is `TooManyNonZeros(count)`,
/// never a silent cut: callers that accept losing the smallest weights call `top_k` first.
pub fn sparsevec_payload(dim: usize, pairs: Vec<(u32, f32)>) -> Result<Vec<u8>, LayoutError> {
    SparseVector::from_pairs(dim, pairs)?.encode()
}

/// Keeps the `k` pairs of largest |value| (ties: the smaller index wins, so the result does not
/// depend on input order), returned sorted by index. Zero values are dropped first.
pub fn top_k(mut pairs: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    pairs.retain(|&(_, v)| v != 0.0);
    // By index first: lr_search::top_k breaks ties by position, which is then the index.
    pairs.sort_by_key(|&(i, _)| i);
    if pairs.len() > k {
        let magnitudes: Vec<f32> = pairs.iter().map(|p| p.1.abs()).collect();
        let mut kept: Vec<(u32, f32)> = lr_search::top_k(&magnitudes, k).into_iter().map(|(at, _)| pairs[at]).collect();
        kept.sort_by_key(|&(i, _)| i);
        pairs = kept;
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_layout_is_pgvectors() {
        let bytes = encode_vector(&[1.0, -2.5, 0.0]).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&3i16.to_ne_bytes());
        expected.extend_from_slice(&0i16.to_ne_bytes());
        for v in [1.0f32, -2.5, 0.0] {
            expected.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(bytes, expected);
        assert_eq!(decode_vector(&bytes).unwrap(), vec![1.0, -2.5, 0.0]);
    }

    #[test]
    fn vector_rejects_bad_payloads() {
        assert_eq!(encode_vector(&[]), Err(LayoutError::BadDimensions(0)));
        assert_eq!(encode_vector(&[f32::NAN]), Err(LayoutError::NonFinite { index: 0 }));
        assert_eq!(
            encode_vector(&vec![1.0; VECTOR_MAX_DIM + 1]),
            Err(LayoutError::BadDimensions(16_001))
        );
        let mut b = encode_vector(&[1.0, 2.0]).unwrap();
        assert_eq!(decode_vector(&b[..b.len() - 1]), Err(LayoutError::Truncated { need: 12, have: 11 }));
        b[2] = 1; // unused
        assert_eq!(decode_vector(&b), Err(LayoutError::UnusedNotZero(1)));
        let mut b = encode_vector(&[1.0, 2.0]).unwrap();
        b.push(0);
        assert_eq!(decode_vector(&b), Err(LayoutError::TrailingBytes { expected: 12, have: 13 }));
        let b = encode_vector(&[1.0]).unwrap();
        let mut inf = b.clone();
        inf[4..8].copy_from_slice(&f32::INFINITY.to_ne_bytes());
        assert_eq!(decode_vector(&inf), Err(LayoutError::NonFinite { index: 0 }));
    }

    #[test]
    fn sparsevec_layout_is_pgvectors() {
        let sv = SparseVector::from_pairs(10, vec![(7, 3.0), (2, 1.5), (4, 0.0)]).unwrap();
        assert_eq!(sv.indices, vec![2, 7]);
        let bytes = sv.encode().unwrap();
        let mut expected = Vec::new();
        for v in [10i32, 2, 0, 2, 7] {
            expected.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [1.5f32, 3.0] {
            expected.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(bytes, expected);
        assert_eq!(SparseVector::decode(&bytes).unwrap(), sv);
        assert_eq!(sv.to_dense(), vec![0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn sparsevec_rejects_invalid() {
        assert_eq!(
            SparseVector::from_pairs(5, vec![(1, 1.0), (1, 2.0)]),
            Err(LayoutError::IndicesNotAscending { position: 1 })
        );
        assert_eq!(
            SparseVector::from_pairs(5, vec![(5, 1.0)]),
            Err(LayoutError::IndexOutOfRange { index: 5, dim: 5 })
        );
        let zero = SparseVector { dim: 3, indices: vec![1], values: vec![0.0] };
        assert_eq!(zero.encode(), Err(LayoutError::ZeroValue { index: 1 }));
        let unsorted = SparseVector { dim: 3, indices: vec![2, 1], values: vec![1.0, 1.0] };
        let mut raw = Vec::new();
        for v in [3i32, 2, 0, 2, 1] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [1.0f32, 1.0] {
            raw.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(SparseVector::decode(&raw), Err(LayoutError::IndicesNotAscending { position: 1 }));
        assert!(unsorted.validate().is_err());
        let too_many = SparseVector::from_dense(&vec![1.0; SPARSEVEC_MAX_NNZ + 1]);
        assert_eq!(too_many, Err(LayoutError::TooManyNonZeros(16_001)));
        let empty = SparseVector::from_pairs(4, vec![]).unwrap();
        assert_eq!(SparseVector::decode(&empty.encode().unwrap()).unwrap(), empty);
    }

    #[test]
    fn sparse_dot_matches_dense() {
        let a = SparseVector::from_dense(&[0.0, 1.0, 2.0, 0.0, 3.0]).unwrap();
        let b = SparseVector::from_dense(&[4.0, 0.0, 5.0, 6.0, 7.0]).unwrap();
        assert_eq!(a.dot(&b), 2.0 * 5.0 + 3.0 * 7.0);
    }

    #[test]
    fn payload_from_pairs_names_the_nnz_limit() {
        let bytes = sparsevec_payload(10, vec![(7, 3.0), (2, 1.5), (4, 0.0)]).unwrap();
        let sv = SparseVector::decode(&bytes).unwrap();
        assert_eq!((sv.indices, sv.values), (vec![2, 7], vec![1.5, 3.0]));

        let over: Vec<(u32, f32)> = (0..16_001).map(|i| (i, 1.0 + i as f32)).collect();
        let err = sparsevec_payload(30_522, over.clone()).unwrap_err();
        assert_eq!(err, LayoutError::TooManyNonZeros(16_001));
        let msg = err.to_string();
        assert!(msg.contains("16001") && msg.contains("16000"), "{msg}");
        // Exactly at the limit is fine; pruning is the caller's explicit choice.
        let pruned = top_k(over, SPARSEVEC_MAX_NNZ);
        assert_eq!(pruned.len(), SPARSEVEC_MAX_NNZ);
        assert_eq!(pruned[0], (1, 2.0), "the smallest weight (index 0) is the one dropped");
        let sv = SparseVector::decode(&sparsevec_payload(30_522, pruned).unwrap()).unwrap();
        assert_eq!(sv.nnz(), SPARSEVEC_MAX_NNZ);
        assert_eq!(sparsevec_payload(0, vec![]), Err(LayoutError::BadDimensions(0)));
    }

    #[test]
    fn top_k_keeps_largest_magnitudes_sorted_by_index() {
        let pairs = vec![(9, 0.5), (1, -4.0), (5, 2.0), (3, 0.0), (7, 2.0), (2, 1.0)];
        assert_eq!(top_k(pairs.clone(), 2), vec![(1, -4.0), (5, 2.0)]); // 5 beats 7 on the tie
        assert_eq!(top_k(pairs.clone(), 3), vec![(1, -4.0), (5, 2.0), (7, 2.0)]);
        assert_eq!(top_k(pairs.clone(), 0), vec![]);
        assert_eq!(top_k(pairs.clone(), 100), vec![(1, -4.0), (2, 1.0), (5, 2.0), (7, 2.0), (9, 0.5)]);
        let mut reversed = pairs;
        reversed.reverse();
        assert_eq!(top_k(reversed, 2), vec![(1, -4.0), (5, 2.0)]);
    }
}
