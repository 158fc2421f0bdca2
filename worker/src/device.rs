//! Device selection: `auto | cpu | cuda:N`. Without the `cuda` cargo feature, asking for
//! CUDA is one clear error; `auto` picks CUDA device 0 when built with it and present.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::WorkerError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {text:?} (expected auto, cpu or cuda:N)")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The Candle device, or one line saying why it is not available.
    pub fn device(self) -> Result<Device, WorkerError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto if cfg!(feature = "cuda") => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            Self::Auto => Ok(Device::Cpu),
            Self::Cuda(n) if cfg!(feature = "cuda") => Device::new_cuda(n)
                .map_err(|e| WorkerError::Device(format!("cuda:{n} is not available: {}", first_line(&e.to_string())))),
            Self::Cuda(n) => Err(WorkerError::Device(format!(
                "cuda:{n} requested, but this build has no CUDA support (rebuild with --features cuda)"
            ))),
        }
    }
}

/// Short name of a device for statistics.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        _ => "other".into(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_cuda_without_the_feature_is_one_clear_line() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cuda:1".parse(), Ok(DeviceChoice::Cuda(1)));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!(matches!(DeviceChoice::Cpu.device(), Ok(Device::Cpu)));
        if !cfg!(feature = "cuda") {
            let error = DeviceChoice::Cuda(0).device().expect_err("no cuda in this build").to_string();
            assert_eq!(error, "cuda:0 requested, but this build has no CUDA support (rebuild with --features cuda)");
            assert!(matches!(DeviceChoice::Auto.device(), Ok(Device::Cpu)));
        }
    }
}
