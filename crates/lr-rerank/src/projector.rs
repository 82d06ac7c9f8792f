//! PE-Rank's `mlp2x_gelu` projector: passage embeddings (E) into the LLM's input space (H).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use lr_model::Result;

/// Linear(E→H, bias) → GELU, the exact erf form → Linear(H→H, bias). The output is not
/// normalised: it is both the candidate's input embedding and its output (LM-head) row.
pub struct Projector {
    first: Linear,
    second: Linear,
}

impl Projector {
    /// Loads `model.projector.{0,2}.*` from the checkpoint's weights, computed in f32.
    pub fn load(weight_files: &[std::path::PathBuf], embedding_size: usize, hidden: usize, device: &Device) -> Result<Self> {
        // Safety: read-only mapping, as for the decoder's weights.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weight_files, DType::F32, device) }?;
        let p = vb.pp("model.projector");
        let linear = |name: &str, inputs: usize| -> Result<Linear> {
            let l = p.pp(name);
            Ok(Linear::new(l.get((hidden, inputs), "weight")?, Some(l.get(hidden, "bias")?)))
        };
        Ok(Projector { first: linear("0", embedding_size)?, second: linear("2", hidden)? })
    }

    /// [n, E] → [n, H].
    pub fn forward(&self, embeddings: &Tensor) -> Result<Tensor> {
        Ok(self.second.forward(&self.first.forward(embeddings)?.gelu_erf()?)?)
    }
}
