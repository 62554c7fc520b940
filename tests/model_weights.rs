//! Pretrained weights: conversion of the 2015 TorchScript file and parity of the native model, on synthetic
//! films generated here (so the parity test always runs). Without the weights (scripts/setup.sh installs
//! them with libtorch) the tests fail with that remedy rather than pass unchecked.

mod common;
use covid_cxr::data::{DataLoader, ImageFolder};
use covid_cxr::model::{InceptionVariant, Precision, TransferConfig, TransferModel};
use covid_cxr::transforms::Compose;
use covid_cxr::weights;
use std::time::Instant;
use tch::Tensor;

/// One synthetic film per class, as a 299 x 299 batch in [-1, 1] (the notebook's validation transforms).
fn film_batch() -> Tensor {
    let dir = tempfile::tempdir().unwrap();
    covid_cxr::synth::generate(dir.path(), &covid_cxr::synth::SynthConfig::new(1, 4)).unwrap();
    let ds = ImageFolder::open(dir.path(), Compose::notebook_val(299)).unwrap();
    assert_eq!(ds.len(), 3);
    let dl = DataLoader::new(&ds, ds.len());
    dl.iter(0).next().unwrap().unwrap().images
}

#[test]
fn native_fid2015_matches_torchscript() {
    let pt = common::require_weights();
    let x = film_batch();
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
    common::require_weights();
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
