//! `covid-cxr bench --stage backbone`: InceptionV3 backbone images/s at each precision, one JSON
//! line, for `bench/run.sh` (which runs PyTorch's figure beside it).

use anyhow::Result;
use covid_cxr::model::{Precision, TransferConfig, TransferModel};
use std::time::Instant;
use tch::{Kind, Tensor};

/// Which backbone path to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackboneMode {
    /// Eager f32 (batch norm as a separate op, NCHW): the plain reference path.
    Eager,
    /// Folded batch norm + channels-last, f32.
    F32,
    /// Folded batch norm + channels-last, bfloat16.
    Bf16,
    /// The precision `--precision` resolves to on this machine (auto by default).
    Chosen,
}

/// Times `batches` batches of `batch` random 299 x 299 images through the pretrained backbone
/// (after one warm-up batch) and prints `{"stage": "backbone", ...}` as JSON.
pub fn backbone(mode: BackboneMode, batches: usize, batch: i64, hw: &crate::cli_hw::HwArgs) -> Result<()> {
    let (device, choice) = hw.resolve()?;
    let precision = match mode {
        BackboneMode::Bf16 => Precision::Bf16,
        BackboneMode::Chosen => choice.precision,
        _ => Precision::F32,
    };
    tch::manual_seed(0);
    let mut m = TransferModel::pretrained(&TransferConfig { precision, ..TransferConfig::default() })?;
    m.to_device(device);
    let x = (Tensor::rand([batch, 3, 299, 299], (Kind::Float, device)) * 2.0 - 1.0).set_requires_grad(false);
    let run = || {
        let f = if mode == BackboneMode::Eager { m.features_eager(&x) } else { m.features(&x) };
        let _ = f.sum(Kind::Float).double_value(&[]); // synchronise (CUDA)
    };
    run(); // warm-up: folding, oneDNN primitives
    let t = Instant::now();
    for _ in 0..batches.max(1) {
        run();
    }
    let s = t.elapsed().as_secs_f64();
    let n = batches.max(1) as i64 * batch;
    let v = serde_json::json!({
        "stage": "backbone", "mode": format!("{mode:?}").to_lowercase(), "precision": precision,
        "device": choice.device, "threads": tch::get_num_threads(), "batch": batch,
        "images": n, "seconds": s, "images_per_s": n as f64 / s,
    });
    println!("{v}");
    Ok(())
}
