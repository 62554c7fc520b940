//! Times one fit of every candidate of the robust grid on random features of cxr-small's size
//! (803 films, 4 views of 2048 features; 4 folds of 5 for training), as `fit` runs them (on one
//! libtorch thread, see `hardware::OneThread`), and the whole 5-fold cross-validation this
//! implies: `cargo run --release --example cv_profile`.
use covid_cxr::robust::{default_grid, fit};
use std::time::Instant;
use tch::Tensor;

fn main() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let n = 803;
    let views: Vec<Tensor> = (0..4).map(|_| Tensor::rand([n, 2048], (tch::Kind::Float, tch::Device::Cpu))).collect();
    let labels: Vec<i64> = (0..n).map(|i| i % 3).collect();
    let rows: Vec<usize> = (0..n as usize).filter(|i| i % 5 != 0).collect();
    let mut total = 0.0;
    for c in default_grid() {
        let t0 = Instant::now();
        fit(&c, &views, &labels, &rows, 3, 1)?;
        let s = t0.elapsed().as_secs_f64();
        total += s;
        println!("{:<50} {s:.2}s", c.name());
    }
    println!("one fit of each of the {} candidates: {total:.1}s; 5-fold CV about {:.0}s", default_grid().len(), 5.0 * total);
    Ok(())
}
