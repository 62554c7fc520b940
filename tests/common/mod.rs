//! Shared helpers for the integration tests.
#![allow(dead_code)]
use std::path::PathBuf;

/// The real chest X-ray set `cxr-small`: `$COVID_CXR_SHARED_DATA` or `<crate>/../shared/data/cxr-small`.
/// The tests that call this are `#[ignore]`d, so they only run when asked for (`-- --ignored`, as
/// `scripts/test.sh` does where the data exists); asked for without the data, they fail rather than
/// pass having checked nothing.
pub fn cxr_small() -> PathBuf {
    let p = std::env::var_os("COVID_CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cxr-small"));
    assert!(
        p.join("train").is_dir(),
        "real data set not found at {} (set COVID_CXR_SHARED_DATA); this test checks nothing without it",
        p.display()
    );
    p
}

/// The pretrained-weights TorchScript file that `scripts/setup.sh` installs (with libtorch, which every
/// test needs anyway). Missing, the test fails with the remedy instead of passing unchecked.
pub fn require_weights() -> PathBuf {
    let p = covid_cxr::weights::fid_torchscript_path();
    assert!(p.is_file(), "pretrained weights absent at {}: run scripts/setup.sh", p.display());
    p
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

/// Synthetic films (`per_class` per class, `seed`) in `dir/data`, split by `ratio` (e.g. "0.5,0.5") into
/// `dir/split`, and a random backbone in `dir/w.safetensors`: a tiny training set-up for CLI tests.
pub fn tiny_split(dir: &std::path::Path, per_class: usize, seed: u64, ratio: &str) {
    run_ok(bin().args(["synth", "--per-class", &per_class.to_string(), "--seed", &seed.to_string(), "--out"]).arg(dir.join("data")));
    run_ok(bin().arg("split").arg(dir.join("data")).arg(dir.join("split")).args(["--ratio", ratio]));
    random_backbone(&dir.join("w.safetensors"));
}

/// `covid-cxr train --data DATA --out OUT` with [`tiny_split`]'s backbone, images of `size`, `views`
/// cached views, and the feature cache in `dir/cache`; more arguments can be appended.
pub fn train_cmd(dir: &std::path::Path, data: &std::path::Path, out: &std::path::Path, epochs: &str, size: &str, views: &str) -> std::process::Command {
    let mut c = bin();
    c.args(["train", "--epochs", epochs, "--size", size, "--views", views, "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--weights")
        .arg(dir.join("w.safetensors"))
        .env("COVID_CXR_CACHE", dir.join("cache"));
    c
}
