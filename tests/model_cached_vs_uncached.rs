//! The cached-feature path against the uncached path on the same small synthetic data (needs the
//! pretrained weights; slow on a CPU, so `#[ignore]`: `cargo test --test model_cached_vs_uncached -- --ignored --nocapture`).

use covid_cxr::data::ImageFolder;
use covid_cxr::model::{TransferConfig, TransferModel};
use covid_cxr::synth::{generate, SynthConfig};
use covid_cxr::train::{train_model, TrainConfig};
use covid_cxr::transforms::Compose;

#[test]
#[ignore = "runs the backbone every epoch (about a minute or more on 2 cores)"]
fn cached_path_matches_uncached_accuracy() {
    if !covid_cxr::weights::fid_torchscript_path().is_file() {
        eprintln!("SKIP: pretrained weights absent");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let all = t.path().join("all");
    generate(&all, &SynthConfig::new(22, 11)).unwrap();
    let split = t.path().join("split");
    covid_cxr::split::ratio(&all, &split, &covid_cxr::split::SplitConfig::new(&[16.0 / 22.0, 6.0 / 22.0], 1)).unwrap();
    let tf = Compose::new().resize(299, 299).random_horizontal_flip(0.5).to_tensor().normalize([0.5; 3], [0.5; 3]);
    let (tr, va) = ImageFolder::open_split(&split, tf, Compose::notebook_val(299)).unwrap();
    let mut accs = Vec::new();
    for cached in [true, false] {
        tch::manual_seed(0);
        let mut m = TransferModel::pretrained(&TransferConfig::default()).unwrap();
        let cfg = TrainConfig { epochs: 12, views: 2, cached, seed: 5, ..TrainConfig::default() };
        let h = train_model(&mut m, &tr, &va, &cfg).unwrap();
        let best = h.epochs.iter().map(|e| e.val.accuracy).fold(0.0, f64::max);
        let last = h.epochs.last().unwrap().val.accuracy;
        let mean_last3: f64 = h.epochs.iter().rev().take(3).map(|e| e.val.accuracy).sum::<f64>() / 3.0;
        eprintln!(
            "cached={cached}: last val acc {last:.3}, mean of last 3 {mean_last3:.3}, best {best:.3}, {:.1}s",
            h.total_seconds
        );
        accs.push(mean_last3);
    }
    // 18 validation images: one image is 0.056; allow three images of noise
    assert!((accs[0] - accs[1]).abs() <= 3.0 / 18.0 + 1e-9, "cached {} vs uncached {}", accs[0], accs[1]);
}
