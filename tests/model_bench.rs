//! Backbone inference speed: eager f32 against folded batch norm + channels-last in f32 and
//! bf16. `cargo test --test model_bench -- --ignored --nocapture` (set COVID_CXR_BENCH_THREADS
//! to choose libtorch's thread count).

use covid_cxr::model::{Precision, TransferConfig, TransferModel};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn rate(n: usize, batch: i64, f: impl Fn()) -> f64 {
    f(); // warm-up: folding, oneDNN primitive creation
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    (n as i64 * batch) as f64 / t.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark"]
fn backbone_images_per_second() {
    if let Some(n) = std::env::var("COVID_CXR_BENCH_THREADS").ok().and_then(|s| s.parse().ok()) {
        tch::set_num_threads(n);
    }
    let batch = 8;
    let x = Tensor::rand([batch, 3, 299, 299], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    tch::manual_seed(0);
    let m = TransferModel::new(&TransferConfig::default()).unwrap();
    let mb = TransferModel::new(&TransferConfig { precision: Precision::Bf16, ..TransferConfig::default() }).unwrap();
    let eager = rate(2, batch, || {
        let _ = m.features_eager(&x);
    });
    let fused = rate(2, batch, || {
        let _ = m.features(&x);
    });
    let bf16 = rate(2, batch, || {
        let _ = mb.features(&x);
    });
    eprintln!(
        "threads {}, batch {batch}: eager f32 {eager:.1} img/s; folded BN + channels-last f32 {fused:.1} img/s; bf16 {bf16:.1} img/s",
        tch::get_num_threads()
    );
}
