//! The shortcut lab and the faithfulness measures in a few calls, as a notebook section would make
//! them: `cargo run --release --example shortcut_lab -- OUT_DIR`.
//!
//! 1. a model trained where "PORTABLE" marks the normal films reads the word: its accuracy
//!    collapses when the word moves to the other classes, and Grad-CAM sits on the word;
//! 2. masking burned-in markers before the model sees the film restores it.
use covid_cxr::shortcut::{run_lab, LabConfig};

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "shortcut-lab".into()));
    anyhow::ensure!(!out.exists(), "{}: exists (nothing is overwritten)", out.display());
    let cfg = LabConfig::default(); // PORTABLE on every normal film, 40 films per class, evidence 0.5
    let report = run_lab(&out, &cfg, &mut |s| eprintln!("{s}"), &mut |_| {})?;
    println!("{report}");
    println!("figures: {}/accuracy.png, gradcam_baseline.png, gradcam_remedy.png", out.display());
    Ok(())
}
