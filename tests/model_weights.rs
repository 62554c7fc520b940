//! Pretrained weights: conversion of the 2015 TorchScript file and parity of the native model.
//! Skips (with a printed reason) where the weights or the shared data are absent.

use covid_cxr::data::{DataLoader, ImageFolder};
use covid_cxr::model::{InceptionVariant, Precision, TransferConfig, TransferModel};
use covid_cxr::transforms::Compose;
use covid_cxr::weights;
use std::path::PathBuf;
use std::time::Instant;
use tch::Tensor;

fn shared_data() -> Option<PathBuf> {
    let p = match std::env::var_os("COVID_CXR_SHARED_DATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cxr-small"),
    };
    p.join("train").is_dir().then_some(p)
}

fn pt() -> Option<PathBuf> {
    let p = weights::fid_torchscript_path();
    p.is_file().then_some(p)
}

/// A few real images per class, as a 299 x 299 batch in [-1, 1].
fn real_batch(n_per_class: usize) -> Option<Tensor> {
    let root = shared_data()?.join("train");
    let mut ds = ImageFolder::open(&root, Compose::notebook_val(299)).ok()?;
    let mut keep = Vec::new();
    for c in 0..ds.classes.len() as i64 {
        keep.extend(ds.samples.iter().filter(|s| s.1 == c).take(n_per_class).cloned());
    }
    ds.samples = keep;
    let dl = DataLoader::new(&ds, ds.len());
    Some(dl.iter(0).next()?.ok()?.images)
}

#[test]
fn native_fid2015_matches_torchscript() {
    let (Some(pt), Some(x)) = (pt(), real_batch(1)) else {
        eprintln!("SKIP: fid_default_1.pt or ../shared/data/cxr-small absent");
        return;
    };
    let path = weights::ensure_pretrained().expect("convert");
    let mut m = TransferModel::new(&TransferConfig::default()).unwrap();
    weights::load_backbone(&mut m, &path).unwrap();
    let ts = tch::CModule::load(&pt).unwrap();
    let xm = m.map_input(&x);
    let t = Instant::now();
    let want = tch::no_grad(|| ts.forward_ts(&[&xm]).unwrap());
    eprintln!("torchscript: {:.2}s for {}", t.elapsed().as_secs_f64(), x.size()[0]);
    let t = Instant::now();
    let eager = m.features_eager(&x);
    eprintln!("native eager: {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let fast = m.features(&x);
    eprintln!("native fused channels-last f32: {:.2}s", t.elapsed().as_secs_f64());
    assert_eq!(want.size(), vec![3, 2048]);
    let d1 = (&eager - &want).abs().max().double_value(&[]);
    let d2 = (&fast - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    eprintln!("max |eager - ts| = {d1:e}, max |fused - ts| = {d2:e}, max |ts| = {scale}");
    assert!(d1 < 1e-4, "eager differs by {d1}");
    assert!(d2 < 1e-4, "fused differs by {d2}");
    // bf16: close in relative terms
    let cfg = TransferConfig { precision: Precision::Bf16, ..TransferConfig::default() };
    let mut mb = TransferModel::new(&cfg).unwrap();
    weights::load_backbone(&mut mb, &path).unwrap();
    let t = Instant::now();
    let fb = mb.features(&x);
    eprintln!("native fused channels-last bf16: {:.2}s", t.elapsed().as_secs_f64());
    let cos = Tensor::cosine_similarity(&fb, &want, 1, 1e-8).min().double_value(&[]);
    eprintln!("bf16 min cosine similarity {cos}");
    assert!(cos > 0.99, "bf16 cosine {cos}");
}

#[test]
fn wrong_shape_in_weights_file_is_named() {
    let Some(_) = pt() else {
        eprintln!("SKIP: fid_default_1.pt absent");
        return;
    };
    let path = weights::ensure_pretrained().unwrap();
    let mut t = weights::read_tensors(&path).unwrap();
    let i = t.iter().position(|(n, _)| n == "Mixed_6b.branch7x7_2.conv.weight").unwrap();
    t[i].1 = Tensor::zeros([3, 3], (tch::Kind::Float, tch::Device::Cpu));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    weights::write_safetensors(&bad, &t, &[("variant", "fid2015")]).unwrap();
    let mut m = TransferModel::new(&TransferConfig::default()).unwrap();
    let e = weights::load_backbone(&mut m, &bad).unwrap_err().to_string();
    assert!(e.contains("Mixed_6b.branch7x7_2.conv.weight") && e.contains("shape"), "{e}");
    // wrong variant
    let cfg = TransferConfig { variant: InceptionVariant::Torchvision, ..TransferConfig::default() };
    let mut m = TransferModel::new(&cfg).unwrap();
    let e = weights::load_backbone(&mut m, &path).unwrap_err().to_string();
    assert!(e.contains("fid2015"), "{e}");
}
