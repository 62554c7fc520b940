//! Shared helpers for the integration tests.
#![allow(dead_code)]
use std::path::PathBuf;

/// The real chest X-ray set `cxr-small`, if present: `$COVID_CXR_SHARED_DATA` or
/// `<crate>/../shared/data/cxr-small`. Prints why a test is skipped otherwise.
pub fn cxr_small(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("COVID_CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cxr-small"));
    if p.join("train").is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED {test}: real data set not found at {} (set COVID_CXR_SHARED_DATA)", p.display());
        None
    }
}

/// The `covid-cxr` binary under test.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_covid-cxr"))
}

/// Runs `c`, fails the test with its stderr if it fails, returns its stdout.
pub fn run_ok(c: &mut std::process::Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{:?} failed: {}", c, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Writes a randomly initialised Fid2015 backbone as safetensors (no pretrained weights needed).
pub fn random_backbone(path: &std::path::Path) {
    use covid_cxr::model::{TransferConfig, TransferModel};
    tch::manual_seed(0);
    let m = TransferModel::new(&TransferConfig::default()).unwrap();
    let t: Vec<(String, tch::Tensor)> = m.backbone_vs.variables().into_iter().collect();
    covid_cxr::weights::write_safetensors(path, &t, &[("variant", "fid2015")]).unwrap();
}
