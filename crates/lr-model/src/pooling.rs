use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the non-padding tokens, special tokens included (sentence-transformers).
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
    /// The last non-padding token's state (decoder LLMs, LightRetriever).
    LastToken,
}

impl Pooling {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last_token" | "last" => Ok(Pooling::LastToken),
            other => Err(ModelError::InvalidOption(format!(
                "pooling \"{other}\" is not one of mean, cls, last_token"
            ))),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "last_token",
        }
    }

    /// Pools `hidden` [batch, seq, dim] under `mask` [batch, seq] (1 = token, 0 = pad,
    /// right padding) into [batch, dim].
    pub fn apply(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let pooled = match self {
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1f32, f32::MAX)?;
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::LastToken => {
                let lengths: Vec<u32> = mask.to_dtype(DType::U32)?.sum(1)?.to_vec1()?;
                let rows = lengths
                    .iter()
                    .enumerate()
                    .map(|(b, &len)| hidden.get(b)?.get(len.max(1) as usize - 1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&rows, 0)?
            }
        };
        Ok(pooled)
    }
}

impl Pooling {
    /// Pools one sequence's token states (`rows`, `[len, dim]` row-major, no padding) into one
    /// vector, as [`Pooling::apply`] pools a padded batch.
    pub fn apply_rows(&self, rows: &[f32], dim: usize) -> Vec<f32> {
        let len = rows.len() / dim;
        match self {
            Pooling::Mean => {
                let mut sum = vec![0f32; dim];
                for row in rows.chunks_exact(dim) {
                    sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                let n = len.max(1) as f32;
                sum.iter_mut().for_each(|s| *s /= n);
                sum
            }
            Pooling::Cls => rows.get(..dim).map_or(vec![0.0; dim], <[f32]>::to_vec),
            Pooling::LastToken => rows.get(len.max(1) * dim - dim..len.max(1) * dim).map_or(vec![0.0; dim], <[f32]>::to_vec),
        }
    }
}

/// L2-normalises in place; a zero vector stays zero (the caller decides whether that is an error).
pub fn l2_normalize(x: &mut [f32]) {
    let norm = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        x.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_pooling_ignores_padding() {
        let hidden = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., 100.]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = Pooling::Mean.apply(&hidden, &mask).unwrap().to_vec2().unwrap();
        assert_eq!(v, vec![vec![2.0, 3.0]]);
        let v: Vec<Vec<f32>> = Pooling::Cls.apply(&hidden, &mask).unwrap().to_vec2().unwrap();
        assert_eq!(v, vec![vec![1.0, 2.0]]);
        let v: Vec<Vec<f32>> = Pooling::LastToken.apply(&hidden, &mask).unwrap().to_vec2().unwrap();
        assert_eq!(v, vec![vec![3.0, 4.0]]);
    }

    #[test]
    fn l2_normalize_handles_zero() {
        let mut x = vec![3.0, 4.0];
        l2_normalize(&mut x);
        assert_eq!(x, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn parse_pooling() {
        assert_eq!(Pooling::parse("cls").unwrap(), Pooling::Cls);
        assert!(Pooling::parse("max").is_err());
    }
}
