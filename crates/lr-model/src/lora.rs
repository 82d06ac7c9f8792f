//! PEFT LoRA adapters (the released LightRetriever checkpoints), merged into the base weights at
//! load time: W' = W + s·B·A with s = lora_alpha / r (lora_alpha / √r with rsLoRA).
//!
//! Anything in an adapter we would not apply (other PEFT types, fan-in/fan-out weights, saved
//! full modules, a LoRA pair that matches no layer) is an error, never silently skipped.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ModelError, Result};

/// What `adapter_config.json` says, checked without loading the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub path: PathBuf,
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    pub target_modules: Vec<String>,
    /// `base_model_name_or_path`, for messages and for finding the base when it is a directory.
    pub base_model: Option<String>,
}

const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

impl AdapterConfig {
    pub fn is_adapter_dir(dir: &Path) -> bool {
        dir.join("adapter_config.json").is_file()
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let file = dir.join("adapter_config.json");
        let invalid = |m: String| ModelError::InvalidModel(format!("{}: {m}", file.display()));
        let text = std::fs::read_to_string(&file).map_err(|e| invalid(format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(invalid(format!("peft_type \"{peft_type}\" is not supported (LORA is)")));
        }
        if v.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            return Err(invalid("fan_in_fan_out adapters are not supported".into()));
        }
        if let Some(m) = v.get("modules_to_save").and_then(Value::as_array).filter(|m| !m.is_empty()) {
            return Err(invalid(format!("modules_to_save ({m:?}) are not supported: only LoRA pairs are merged")));
        }
        let rank = v.get("r").and_then(Value::as_u64).filter(|&r| r > 0).ok_or_else(|| invalid("no positive integer \"r\"".into()))? as usize;
        let alpha = v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(rank as f64);
        let target_modules = match v.get("target_modules") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        if !dir.join(ADAPTER_WEIGHTS).is_file() {
            let hint = if dir.join("adapter_model.bin").is_file() { " (adapter_model.bin is a pickle: convert it to safetensors)" } else { "" };
            return Err(ModelError::InvalidModel(format!("{} is missing{hint}", dir.join(ADAPTER_WEIGHTS).display())));
        }
        Ok(AdapterConfig {
            path: dir.to_path_buf(),
            rank,
            alpha,
            use_rslora: v.get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            target_modules,
            base_model: v.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_owned),
        })
    }

    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    pub fn weights_path(&self) -> PathBuf {
        self.path.join(ADAPTER_WEIGHTS)
    }
}

/// A loaded adapter: the (A, B) pair of every module it adapts, keyed by the base model's module
/// path (`model.layers.0.self_attn.q_proj`).
pub struct LoraAdapter {
    config: AdapterConfig,
    pairs: BTreeMap<String, (Tensor, Tensor)>,
    merged: RefCell<BTreeSet<String>>,
}

impl LoraAdapter {
    pub fn load(config: &AdapterConfig, device: &Device) -> Result<Self> {
        let file = config.weights_path();
        let tensors = candle_core::safetensors::load(&file, device)
            .map_err(|e| ModelError::InvalidModel(format!("{}: {e}", file.display())))?;
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        for (name, t) in tensors {
            // PEFT prefixes the wrapped model's names with `base_model.model.`; an adapter trained
            // on the bare transformer (no `model.` of a *ForCausalLM) names layers one level up.
            let inner = name.strip_prefix("base_model.model.").unwrap_or(&name);
            let inner = if inner.starts_with("model.") { inner.to_owned() } else { format!("model.{inner}") };
            let inner = inner.as_str();
            // PEFT saves `…q_proj.lora_A.weight`; older versions kept the adapter name (`.default`).
            let split = [".lora_A.weight", ".lora_A.default.weight"]
                .iter()
                .find_map(|s| inner.strip_suffix(s).map(|m| (m, true)))
                .or_else(|| [".lora_B.weight", ".lora_B.default.weight"].iter().find_map(|s| inner.strip_suffix(s).map(|m| (m, false))));
            match split {
                Some((module, true)) => {
                    a.insert(module.to_owned(), t.to_dtype(DType::F32)?);
                }
                Some((module, false)) => {
                    b.insert(module.to_owned(), t.to_dtype(DType::F32)?);
                }
                None => {
                    return Err(ModelError::InvalidModel(format!(
                        "{}: tensor \"{name}\" is not a LoRA A/B weight; only LoRA pairs can be merged",
                        file.display()
                    )))
                }
            }
        }
        let mut pairs = BTreeMap::new();
        for (module, ta) in a {
            let tb = b.remove(&module).ok_or_else(|| {
                ModelError::InvalidModel(format!("{}: {module} has lora_A but no lora_B", file.display()))
            })?;
            pairs.insert(module, (ta, tb));
        }
        if let Some(module) = b.keys().next() {
            return Err(ModelError::InvalidModel(format!("{}: {module} has lora_B but no lora_A", file.display())));
        }
        if pairs.is_empty() {
            return Err(ModelError::InvalidModel(format!("{} holds no LoRA weights", file.display())));
        }
        Ok(LoraAdapter { config: config.clone(), pairs, merged: RefCell::new(BTreeSet::new()) })
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// `weight` [out, in] of `module` plus the adapter's low-rank update, if it adapts `module`.
    pub fn merge(&self, module: &str, weight: Tensor) -> Result<Tensor> {
        let Some((a, b)) = self.pairs.get(module) else { return Ok(weight) };
        let (out, inp) = weight.dims2()?;
        let (ra, ia) = a.dims2()?;
        let (ob, rb) = b.dims2()?;
        if ia != inp || ob != out || ra != rb {
            return Err(ModelError::InvalidModel(format!(
                "{}: {module} is [{out}, {inp}] but its LoRA A is [{ra}, {ia}] and B is [{ob}, {rb}]",
                self.config.weights_path().display()
            )));
        }
        let delta = (b.matmul(a)? * self.config.scale())?;
        self.merged.borrow_mut().insert(module.to_owned());
        let delta = delta.to_dtype(weight.dtype())?;
        Ok((weight + delta)?)
    }

    /// Fails when a LoRA pair matched no layer of the base model (a different architecture, or
    /// a naming scheme we do not know): applying part of an adapter would be a silent wrong answer.
    pub fn check_all_merged(&self) -> Result<()> {
        let merged = self.merged.borrow();
        match self.pairs.keys().find(|m| !merged.contains(*m)) {
            Some(m) => Err(ModelError::InvalidModel(format!(
                "{}: LoRA weights for {m} match no layer of the base model",
                self.config.weights_path().display()
            ))),
            None => Ok(()),
        }
    }
}
