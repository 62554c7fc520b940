//! Precision and device chosen by the hardware.
//!
//! - [`PrecisionChoice`]: `f32`, `bf16` or `auto`. `auto` picks bfloat16 only where it is fast:
//!   on a CUDA device, or on a CPU with AMX bfloat16 tiles (`amx_bf16`); f32 elsewhere. On a CPU
//!   without native bfloat16 libtorch emulates it and the backbone runs several times *slower*
//!   than in f32 (measured 7x slower on a 2-core AMD EPYC without AVX-512); on a Xeon with
//!   `avx512_bf16` but no AMX it measured 0.7x f32 (12 against 18 images/s, batch 8, 2 threads,
//!   and the same in PyTorch; see `BENCHMARKS.md`).
//! - [`DeviceChoice`]: `cpu`, `cuda` or `auto` (CUDA when `tch::Cuda::is_available()`).
//!
//! Every choice comes with the reason it was made, for the run manifest ([`HardwareChoice`]).
//!
//! ```
//! use covid_cxr::hardware::{choose_precision, PrecisionChoice};
//! use covid_cxr::model::Precision;
//! let d = choose_precision(PrecisionChoice::F32, tch::Device::Cpu);
//! assert_eq!(d.precision, Precision::F32);
//! assert!(d.reason.contains("asked"));
//! let auto = choose_precision(PrecisionChoice::Auto, tch::Device::Cpu);
//! let amx = covid_cxr::hardware::cpu_flags().iter().any(|f| f == "amx_bf16");
//! assert_eq!(auto.precision == Precision::Bf16, amx);
//! ```

use crate::error::{Error, Result};
use crate::model::Precision;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use tch::Device;

/// The precision asked for: explicit, or chosen by the hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// float32.
    F32,
    /// bfloat16 (fast only where native; see the module docs).
    Bf16,
    /// bfloat16 on CUDA or on a CPU with native bfloat16, f32 elsewhere.
    #[default]
    Auto,
}

impl FromStr for PrecisionChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(PrecisionChoice::F32),
            "bf16" | "bfloat16" => Ok(PrecisionChoice::Bf16),
            "auto" => Ok(PrecisionChoice::Auto),
            _ => Err(Error::invalid(format!("unknown precision {s:?} (f32, bf16, auto)"))),
        }
    }
}

/// The device asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device 0 (an error when none is available).
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" | "cuda:0" => Ok(DeviceChoice::Cuda),
            _ => Err(Error::invalid(format!("unknown device {s:?} (auto, cpu, cuda)"))),
        }
    }
}

/// A precision and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecisionDecision {
    /// The precision used.
    pub precision: Precision,
    /// Why, in words.
    pub reason: String,
}

/// What a run used and why; recorded in the run manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareChoice {
    /// `"f32"` or `"bf16"`.
    pub precision: Precision,
    /// Why that precision.
    pub precision_reason: String,
    /// `"cpu"` or `"cuda:N"`.
    pub device: String,
    /// Why that device.
    pub device_reason: String,
}

impl HardwareChoice {
    /// Resolves both choices: the device first, then the precision for that device.
    pub fn resolve(precision: PrecisionChoice, device: DeviceChoice) -> Result<(Device, HardwareChoice)> {
        let (d, device_reason) = choose_device(device)?;
        let p = choose_precision(precision, d);
        Ok((
            d,
            HardwareChoice {
                precision: p.precision,
                precision_reason: p.reason,
                device: device_name(d),
                device_reason,
            },
        ))
    }

    /// Resolves both choices and moves `model` there (precision, then device): what the command
    /// line's `--precision auto --device auto` does, for a notebook cell.
    ///
    /// ```no_run
    /// use covid_cxr::prelude::*;
    /// let mut model = TransferModel::pretrained(&TransferConfig::default())?;
    /// let hw = HardwareChoice::apply(&mut model, PrecisionChoice::Auto, DeviceChoice::Auto)?;
    /// println!("{hw}");
    /// # Ok::<(), covid_cxr::Error>(())
    /// ```
    pub fn apply(
        model: &mut crate::model::TransferModel,
        precision: PrecisionChoice,
        device: DeviceChoice,
    ) -> Result<HardwareChoice> {
        let (d, h) = HardwareChoice::resolve(precision, device)?;
        model.set_precision(h.precision);
        model.to_device(d);
        Ok(h)
    }
}

impl std::fmt::Display for HardwareChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device {} ({}); precision {:?} ({})", self.device, self.device_reason, self.precision, self.precision_reason)
    }
}

/// While alive, libtorch runs on one thread; the previous count comes back when it is dropped.
///
/// Training a small head on cached features is thousands of tiny operations (batches of 8 through
/// a 2048-128-64-3 network), where a second thread buys nothing and costs a hand-off per
/// operation; on a machine shared with another job the hand-offs stall (measured with
/// `examples/cv_profile.rs` on the 2-core Xeon with a notebook kernel running: one robust-recipe
/// fit took 1.1 to 4.9 s on one thread and 15 to 238 s on two). The backbone keeps every thread.
///
/// ```
/// let before = tch::get_num_threads();
/// {
///     let _one = covid_cxr::hardware::OneThread::new();
///     assert_eq!(tch::get_num_threads(), 1);
/// }
/// assert_eq!(tch::get_num_threads(), before);
/// ```
pub struct OneThread(i32);

impl OneThread {
    /// Switches libtorch to one thread until the guard is dropped.
    pub fn new() -> Self {
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        OneThread(before)
    }
}

impl Default for OneThread {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0.max(1));
    }
}

/// `"cpu"`, `"cuda:0"`, ...
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The CPU flags (from `/proc/cpuinfo`) that give native bfloat16 arithmetic: `avx512_bf16` and `amx_bf16`. `None` when there is neither.
pub fn cpu_native_bf16() -> Option<String> {
    let flags = cpu_flags();
    let found: Vec<&str> = ["avx512_bf16", "amx_bf16"].into_iter().filter(|f| flags.iter().any(|x| x == f)).collect();
    (!found.is_empty()).then(|| found.join(" "))
}

/// The flags of the first CPU in `/proc/cpuinfo` (empty where there is none).
pub fn cpu_flags() -> Vec<String> {
    if let Ok(s) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(line) = s.lines().find(|l| l.starts_with("flags") || l.starts_with("Features")) {
            return parse_flags(line);
        }
    }
    detected_flags()
}

/// The flags of one `flags : a b c` line of `/proc/cpuinfo`.
///
/// ```
/// let f = covid_cxr::hardware::parse_flags("flags\t\t: fpu avx2 avx512_bf16");
/// assert_eq!(f, ["fpu", "avx2", "avx512_bf16"]);
/// ```
pub fn parse_flags(line: &str) -> Vec<String> {
    line.split_once(':').map(|(_, v)| v).unwrap_or("").split_whitespace().map(str::to_string).collect()
}

/// Without `/proc/cpuinfo` (not Linux) no flag is known, so `auto` stays with f32. (The crate's
/// minimum Rust, 1.85, cannot detect `avx512bf16` through `std::arch`.)
fn detected_flags() -> Vec<String> {
    Vec::new()
}

/// The precision for `device`: `choice` itself when explicit, else bfloat16 on CUDA or on a CPU
/// with AMX bfloat16 tiles (`amx_bf16`), f32 elsewhere, including CPUs with `avx512_bf16` alone,
/// where oneDNN's bfloat16 convolutions measured slower than f32 ([`cpu_native_bf16`] lists the
/// flags).
pub fn choose_precision(choice: PrecisionChoice, device: Device) -> PrecisionDecision {
    choose_precision_with(choice, device, cpu_native_bf16())
}

/// [`choose_precision`] with the CPU's native bfloat16 flags given (for tests).
pub fn choose_precision_with(choice: PrecisionChoice, device: Device, native: Option<String>) -> PrecisionDecision {
    let (precision, reason) = match choice {
        PrecisionChoice::F32 => (Precision::F32, "asked for (--precision f32)".to_string()),
        PrecisionChoice::Bf16 => {
            let warn = if device == Device::Cpu && native.is_none() {
                "; this CPU has no native bfloat16 (no avx512_bf16/amx_bf16): expect it slower than f32"
            } else {
                ""
            };
            (Precision::Bf16, format!("asked for (--precision bf16){warn}"))
        }
        PrecisionChoice::Auto => match (device, native) {
            (Device::Cuda(_), _) => (Precision::Bf16, "auto: CUDA device".to_string()),
            (_, Some(f)) if f.split_whitespace().any(|x| x == "amx_bf16") => {
                (Precision::Bf16, format!("auto: the CPU has AMX bfloat16 tiles ({f})"))
            }
            (_, Some(f)) => (
                Precision::F32,
                format!(
                    "auto: the CPU has {f} but no AMX (amx_bf16); measured on such a Xeon, the bf16 backbone ran at \
                     0.7x the f32 one (BENCHMARKS.md), so f32"
                ),
            ),
            (_, None) => {
                (Precision::F32, "auto: the CPU has no native bfloat16 (no avx512_bf16 or amx_bf16)".to_string())
            }
        },
    };
    PrecisionDecision { precision, reason }
}

/// The device for `choice`, with the reason; an error when CUDA is asked and libtorch sees none.
pub fn choose_device(choice: DeviceChoice) -> Result<(Device, String)> {
    choose_device_with(choice, tch::Cuda::is_available())
}

/// [`choose_device`] with CUDA's availability given (for tests).
pub fn choose_device_with(choice: DeviceChoice, cuda: bool) -> Result<(Device, String)> {
    match (choice, cuda) {
        (DeviceChoice::Cpu, _) => Ok((Device::Cpu, "asked for (--device cpu)".into())),
        (DeviceChoice::Cuda, true) => Ok((Device::Cuda(0), "asked for (--device cuda)".into())),
        (DeviceChoice::Cuda, false) => Err(Error::invalid(
            "--device cuda: libtorch sees no CUDA device (a CPU-only libtorch, no GPU or no driver); \
             see README 'GPU' for a CUDA libtorch, or use --device cpu",
        )),
        (DeviceChoice::Auto, true) => Ok((Device::Cuda(0), "auto: CUDA is available".into())),
        (DeviceChoice::Auto, false) => Ok((Device::Cpu, "auto: no CUDA device".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!("f32".parse::<PrecisionChoice>().unwrap(), PrecisionChoice::F32);
        assert_eq!("BF16".parse::<PrecisionChoice>().unwrap(), PrecisionChoice::Bf16);
        assert_eq!("auto".parse::<PrecisionChoice>().unwrap(), PrecisionChoice::Auto);
        assert!("f16".parse::<PrecisionChoice>().unwrap_err().to_string().contains("f16"));
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert_eq!(PrecisionChoice::default(), PrecisionChoice::Auto);
    }

    #[test]
    fn auto_follows_the_flags() {
        let no = choose_precision_with(PrecisionChoice::Auto, Device::Cpu, None);
        assert_eq!(no.precision, Precision::F32);
        let yes = choose_precision_with(PrecisionChoice::Auto, Device::Cpu, Some("amx_bf16".into()));
        assert_eq!(yes.precision, Precision::Bf16);
        assert!(yes.reason.contains("amx_bf16"));
        let both = choose_precision_with(PrecisionChoice::Auto, Device::Cpu, Some("avx512_bf16 amx_bf16".into()));
        assert_eq!(both.precision, Precision::Bf16);
        // avx512_bf16 without AMX: measured slower than f32, so f32
        let avx = choose_precision_with(PrecisionChoice::Auto, Device::Cpu, Some("avx512_bf16".into()));
        assert_eq!(avx.precision, Precision::F32);
        assert!(avx.reason.contains("no AMX"), "{}", avx.reason);
        assert_eq!(choose_precision_with(PrecisionChoice::Auto, Device::Cuda(0), None).precision, Precision::Bf16);
        // explicit choices win, with a warning where bf16 is emulated
        let f = choose_precision_with(PrecisionChoice::F32, Device::Cpu, Some("avx512_bf16".into()));
        assert_eq!(f.precision, Precision::F32);
        let b = choose_precision_with(PrecisionChoice::Bf16, Device::Cpu, None);
        assert_eq!(b.precision, Precision::Bf16);
        assert!(b.reason.contains("slower"));
    }

    #[test]
    fn auto_on_this_machine_matches_cpuinfo() {
        // read the flags independently of cpu_flags()
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let native = text
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().any(|f| f == "amx_bf16"));
        let d = choose_precision(PrecisionChoice::Auto, Device::Cpu);
        if let Some(native) = native {
            assert_eq!(d.precision == Precision::Bf16, native, "{}", d.reason);
        } else {
            // no /proc/cpuinfo: no flag is known
            assert_eq!(d.precision, Precision::F32);
        }
    }

    #[test]
    fn devices() {
        assert_eq!(choose_device_with(DeviceChoice::Auto, false).unwrap().0, Device::Cpu);
        assert_eq!(choose_device_with(DeviceChoice::Auto, true).unwrap().0, Device::Cuda(0));
        assert_eq!(choose_device_with(DeviceChoice::Cpu, true).unwrap().0, Device::Cpu);
        let e = choose_device_with(DeviceChoice::Cuda, false).unwrap_err().to_string();
        assert!(e.contains("--device cuda") && e.contains("no CUDA"), "{e}");
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
    }

    #[test]
    fn resolve_on_this_machine() {
        let (d, h) = HardwareChoice::resolve(PrecisionChoice::F32, DeviceChoice::Cpu).unwrap();
        assert_eq!(d, Device::Cpu);
        assert_eq!(h.device, "cpu");
        assert_eq!(h.precision, Precision::F32);
        if !tch::Cuda::is_available() {
            assert!(HardwareChoice::resolve(PrecisionChoice::Auto, DeviceChoice::Cuda).is_err());
        }
    }
}
