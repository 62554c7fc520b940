//! The transfer model: shapes, frozen backbone, training on synthetic films, checkpoints.

mod common;
use covid_cxr::checkpoint::{self, Manifest, WeightsRef};
use covid_cxr::data::ImageFolder;
use covid_cxr::model::{TransferConfig, TransferModel};
use covid_cxr::synth::{generate, SynthConfig};
use covid_cxr::train::{train_model, TrainConfig};
use covid_cxr::transforms::Compose;
use covid_cxr::weights;
use tch::{Device, Kind, Tensor};

fn random_model(cfg: &TransferConfig) -> TransferModel {
    tch::manual_seed(0);
    TransferModel::new(cfg).unwrap()
}

/// The pretrained model; without the weights (scripts/setup.sh) the test fails with that remedy.
fn pretrained() -> TransferModel {
    common::require_weights();
    tch::manual_seed(0);
    TransferModel::pretrained(&TransferConfig::default()).unwrap()
}

/// Synthetic films split into train/val folders with the given transforms.
fn synth_split(
    per_class: usize,
    val_per_class: usize,
    size: u32,
    train_tf: Compose,
) -> (tempfile::TempDir, ImageFolder, ImageFolder) {
    let t = tempfile::tempdir().unwrap();
    let all = t.path().join("all");
    generate(&all, &SynthConfig::new(per_class + val_per_class, 7)).unwrap();
    let split = t.path().join("split");
    covid_cxr::split::ratio(
        &all,
        &split,
        &covid_cxr::split::SplitConfig::new(
            &[
                per_class as f64 / (per_class + val_per_class) as f64,
                val_per_class as f64 / (per_class + val_per_class) as f64,
            ],
            1,
        ),
    )
    .unwrap();
    let (tr, va) = ImageFolder::open_split(&split, train_tf, Compose::notebook_val(size)).unwrap();
    (t, tr, va)
}

#[test]
fn output_shapes_and_aux_head() {
    let m = random_model(&TransferConfig::default());
    let x = Tensor::randn([1, 3, 299, 299], (Kind::Float, Device::Cpu)).clamp(-1.0, 1.0);
    let a = m.forward_mixed_7c(&x);
    assert_eq!(a.size(), vec![1, 2048, 8, 8]);
    assert_eq!(m.head_from_mixed_7c(&a).size(), vec![1, 3]);
    assert_eq!(m.features(&x).size(), vec![1, 2048]);
    let out = m.forward_t(&x, true);
    assert_eq!(out.logits.size(), vec![1, 3]);
    assert_eq!(out.aux.unwrap().size(), vec![1, 3]);
    assert!(m.forward_t(&x, false).aux.is_none());
    let p = m.predict_proba(&x);
    assert!((p.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-5);
    // Grad-CAM usage: gradient of a logit with respect to Mixed_7c's activation
    let a = a.detach().set_requires_grad(true);
    m.head_from_mixed_7c(&a).get(0).get(1).backward();
    assert_eq!(a.grad().size(), vec![1, 2048, 8, 8]);
}

#[test]
fn frozen_backbone_gets_no_gradient() {
    let m = random_model(&TransferConfig::default());
    // the aux head needs Mixed_6e at 17 x 17, i.e. 299 x 299 input
    let x = Tensor::randn([2, 3, 299, 299], (Kind::Float, Device::Cpu));
    let out = m.forward_t(&x, true);
    let loss = out.logits.cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 2]))
        + out.aux.unwrap().cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 2])) * 0.4;
    loss.backward();
    for (n, t) in m.backbone_vs.variables() {
        assert!(!t.requires_grad(), "{n} requires grad");
        assert!(!t.grad().defined(), "{n} got a gradient");
    }
    for (n, t) in m.head_vs.variables() {
        // batch-norm running statistics of the aux head are buffers, not parameters
        assert_eq!(t.grad().defined(), !n.contains("running_"), "head variable {n}");
    }
    // the optimizer sees exactly the head's variables
    assert_eq!(m.trainable_tensors().len(), m.head_vs.trainable_variables().len());
}

#[test]
fn fine_tuning_last_block_trains_only_that_block() {
    let cfg = TransferConfig { fine_tune_blocks: 1, aux: false, ..TransferConfig::default() };
    let m = random_model(&cfg);
    let x = Tensor::randn([2, 3, 160, 160], (Kind::Float, Device::Cpu));
    m.forward_t(&x, true).logits.sum(Kind::Float).backward();
    for (n, t) in m.backbone_vs.variables() {
        let tuned = n.starts_with("Mixed_7c.") && !n.contains("running_");
        assert_eq!(t.grad().defined(), tuned, "{n}");
    }
}

#[test]
fn checkpoint_round_trip_and_mismatches() {
    let t = tempfile::tempdir().unwrap();
    let m = random_model(&TransferConfig::default());
    // a random backbone stands in for the pretrained one
    let wfile = t.path().join("backbone.safetensors");
    let bb: Vec<(String, Tensor)> = m.backbone_vs.variables().into_iter().collect();
    weights::write_safetensors(&wfile, &bb, &[("variant", "fid2015")]).unwrap();
    let sha = weights::sha256_file(&wfile).unwrap();
    let classes: Vec<String> = ["covid", "normal", "pneumonia"].iter().map(|s| s.to_string()).collect();
    let manifest =
        Manifest::new(&m, classes, Compose::notebook_val(160), WeightsRef { path: wfile.clone(), sha256: sha }, 1);
    let run = t.path().join("run");
    checkpoint::save(&run, &m, &manifest).unwrap();
    let (m2, man2) = checkpoint::load(&run).unwrap();
    assert_eq!(man2, manifest);
    let x = Tensor::randn([2, 3, 160, 160], (Kind::Float, Device::Cpu));
    assert!(m.forward(&x).equal(&m2.forward(&x)), "logits differ after the round trip");
    // data with other classes or other preprocessing
    let data = t.path().join("data");
    generate(&data, &SynthConfig { per_class: 1, seed: 1, width_range: (64, 80), marker_probability: 0.0, ..Default::default() }).unwrap();
    std::fs::rename(data.join("pneumonia"), data.join("tuberculosis")).unwrap();
    let ds = ImageFolder::open(&data, Compose::notebook_val(160)).unwrap();
    let e = checkpoint::check_compatible(&man2, &ds).unwrap_err().to_string();
    assert!(e.contains("tuberculosis"), "{e}");
    std::fs::rename(data.join("tuberculosis"), data.join("pneumonia")).unwrap();
    let ds = ImageFolder::open(&data, Compose::notebook_val(224)).unwrap();
    assert!(checkpoint::check_compatible(&man2, &ds).unwrap_err().to_string().contains("preprocessing"));
    // a tampered head tensor is named
    let mut head: Vec<(String, Tensor)> = weights::read_tensors(&run.join(checkpoint::MODEL_FILE)).unwrap();
    let i = head.iter().position(|(n, _)| n == "fc.2.weight").unwrap();
    head[i].1 = Tensor::zeros([5, 5], (Kind::Float, Device::Cpu));
    weights::write_safetensors(&run.join(checkpoint::MODEL_FILE), &head, &[]).unwrap();
    let e = checkpoint::load(&run).unwrap_err().to_string();
    assert!(e.contains("fc.2.weight"), "{e}");
}

#[test]
fn empty_validation_set_is_an_error() {
    let (_t, tr, mut va) = synth_split(2, 1, 96, Compose::notebook_val(96));
    va.samples.clear();
    let mut m = random_model(&TransferConfig::default());
    let e =
        train_model(&mut m, &tr, &va, &TrainConfig { epochs: 1, ..TrainConfig::default() }).unwrap_err().to_string();
    assert!(e.contains("empty validation set"), "{e}");
}

#[test]
fn feature_cache_hits_and_matches() {
    let (_t, tr, _va) = synth_split(2, 1, 96, Compose::notebook_train(96));
    let m = random_model(&TransferConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (a, hit) = covid_cxr::features::cached_features(&m, "w", &tr, 2, 3, 4, dir.path(), &mut |_, _| {}).unwrap();
    assert!(!hit);
    assert_eq!(a.features.size(), vec![12, 2048]);
    let (b, hit) = covid_cxr::features::cached_features(&m, "w", &tr, 2, 3, 4, dir.path(), &mut |_, _| {}).unwrap();
    assert!(hit);
    assert!(a.features.equal(&b.features) && a.labels.equal(&b.labels));
    // the two views differ (random crops), another seed is another key
    assert!(!a.view(0).equal(&a.view(1)));
    let (_, hit) = covid_cxr::features::cached_features(&m, "w", &tr, 2, 4, 4, dir.path(), &mut |_, _| {}).unwrap();
    assert!(!hit);
}

#[test]
fn head_training_on_synthetic_films_beats_chance() {
    let mut m = pretrained();
    let (_t, tr, va) = synth_split(16, 6, 299, Compose::notebook_val(299));
    let cache = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 30,
        views: 1,
        seed: 3,
        weights_sha256: Some("test".into()),
        cache_dir: Some(cache.path().to_path_buf()),
        ..TrainConfig::default()
    };
    let h = train_model(&mut m, &tr, &va, &cfg).unwrap();
    let last = h.epochs.last().unwrap();
    eprintln!(
        "synthetic: val accuracy {:.3}, macro F1 {:.3}, {:.1}s ({:.1}s features)",
        last.val.accuracy, last.val.macro_f1, h.total_seconds, h.feature_seconds
    );
    assert_eq!(h.epochs.len(), 30);
    assert!(last.val.accuracy > 0.55, "val accuracy {} not clearly above chance (0.33)", last.val.accuracy);
    // the validation figures from the cached features equal a full pass of the model over the images
    let cached = covid_cxr::train::evaluate_val(&m, &va, &cfg).unwrap();
    let full = covid_cxr::evaluate::evaluate(&m, &va).unwrap();
    assert_eq!(cached.report.confusion_matrix, full.report.confusion_matrix);
    assert!((cached.accuracy - last.val.accuracy).abs() < 1e-12, "{} vs {}", cached.accuracy, last.val.accuracy);
    let uncached = covid_cxr::train::evaluate_val(&m, &va, &TrainConfig { cached: false, ..cfg.clone() }).unwrap();
    assert_eq!(uncached.report.confusion_matrix, full.report.confusion_matrix);
    // determinism: same seed, same history
    tch::manual_seed(0);
    let mut m2 = TransferModel::pretrained(&TransferConfig::default()).unwrap();
    let h2 = train_model(&mut m2, &tr, &va, &TrainConfig { epochs: 3, ..cfg.clone() }).unwrap();
    let mut m3 = {
        tch::manual_seed(0);
        TransferModel::pretrained(&TransferConfig::default()).unwrap()
    };
    let h3 = train_model(&mut m3, &tr, &va, &TrainConfig { epochs: 3, ..cfg }).unwrap();
    assert_eq!(h2.feature_cache_hits, (true, true));
    assert_eq!(
        h2.epochs.iter().map(|e| e.val.loss).collect::<Vec<_>>(),
        h3.epochs.iter().map(|e| e.val.loss).collect::<Vec<_>>()
    );
}

#[test]
fn uncached_path_with_aux_loss_and_notebook_defects() {
    let (_t, tr, va) = synth_split(2, 1, 299, Compose::notebook_train(299));
    let cfg = TrainConfig { epochs: 1, cached: false, batch_size: 3, ..TrainConfig::default() };
    let mut m = random_model(&TransferConfig::default());
    let aux_before = m.head_vs.variables()["AuxLogits.fc.weight"].copy();
    let h = train_model(&mut m, &tr, &va, &cfg).unwrap();
    assert_eq!(h.path, "uncached");
    assert_eq!(h.epochs.len(), 1);
    // the 3-class aux head is trained on this path
    assert!(!m.head_vs.variables()["AuxLogits.fc.weight"].equal(&aux_before));
    // the notebook's defects: 1000-class frozen aux head and double softmax
    let defects = covid_cxr::model::NotebookDefects { double_softmax: true, frozen_1000_class_aux: true };
    let mut m = random_model(&TransferConfig { defects, ..TransferConfig::default() });
    let aux = m.head_vs.variables()["AuxLogits.fc.weight"].copy();
    assert_eq!(aux.size(), vec![1000, 768]);
    let h = train_model(&mut m, &tr, &va, &cfg).unwrap();
    assert!(m.head_vs.variables()["AuxLogits.fc.weight"].equal(&aux), "frozen aux head changed");
    // the double softmax makes the model output probabilities
    let x = Tensor::zeros([1, 3, 299, 299], (Kind::Float, Device::Cpu));
    let p = m.forward(&x);
    assert!((p.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-5);
    // the 1000-class aux loss inflates the printed training loss (about ln 1000 x 0.4 = 2.8 more)
    assert!(h.epochs[0].train.loss > 2.5, "{}", h.epochs[0].train.loss);
}
