//! `--precision` and `--device`, shared by the model subcommands (see [`covid_cxr::hardware`]).

use anyhow::Result;
use covid_cxr::hardware::{DeviceChoice, HardwareChoice, PrecisionChoice};
use covid_cxr::model::TransferModel;

/// Precision and device options.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct HwArgs {
    /// Backbone precision: f32, bf16 or auto. auto = bf16 only on CUDA or on a CPU with AMX
    /// bfloat16 tiles (amx_bf16 in /proc/cpuinfo), f32 elsewhere. Measured (backbone, batch 8,
    /// 2 threads): bf16 0.7x f32 on a Xeon with avx512_bf16 but no AMX, about 7x slower on an AMD
    /// EPYC without avx512_bf16; bf16 features differ from f32 by about 1% (see BENCHMARKS.md).
    #[arg(long, default_value = "auto")]
    pub precision: PrecisionChoice,
    /// Deprecated: the same as --precision bf16.
    #[arg(long, hide = true)]
    pub bf16: bool,
    /// Device: auto (CUDA when libtorch sees one), cpu or cuda (an error without CUDA).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

impl HwArgs {
    /// The device and precision to use, and why (printed on stderr).
    pub fn resolve(&self) -> Result<(tch::Device, HardwareChoice)> {
        let p = if self.bf16 {
            eprintln!("warning: --bf16 is deprecated; use --precision bf16 (or auto)");
            PrecisionChoice::Bf16
        } else {
            self.precision
        };
        let (d, h) = HardwareChoice::resolve(p, self.device)?;
        eprintln!("{h}");
        Ok((d, h))
    }

    /// Resolves and applies the choice to a loaded model.
    pub fn apply(&self, model: &mut TransferModel) -> Result<HardwareChoice> {
        let (d, h) = self.resolve()?;
        model.set_precision(h.precision);
        model.to_device(d);
        Ok(h)
    }
}
