//! Where models run: `cpu`, `cuda` or `cuda:N` (the `lightretriever.device` setting).

use candle_core::Device;

use crate::error::{ModelError, Result};

/// The device named by `spec`. CUDA needs the `cuda` cargo feature and a visible GPU; asking for
/// it otherwise is an error that says which of the two is missing.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err(ModelError::InvalidOption(format!("device \"{spec}\" is not one of cpu, cuda, cuda:N"))),
        },
    };
    cuda_device(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| ModelError::InvalidOption(format!("CUDA device {ordinal} is not available: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(ModelError::InvalidOption(
        "this build has no CUDA support: rebuild lightretriever with the cargo feature \"cuda\"".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_refuses_nonsense() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("tpu").unwrap_err().to_string().contains("not one of cpu, cuda, cuda:N"));
        assert!(parse_device("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_so() {
        let e = parse_device("cuda:1").unwrap_err().to_string();
        assert!(e.contains("cargo feature \"cuda\""), "{e}");
    }
}
