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
