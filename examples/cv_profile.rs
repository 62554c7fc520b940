//! Times one cross-validation fit of each kind of candidate of the robust grid on random features
//! of cxr-small's size (803 films, 4 views of 2048), at 1 and at 2 libtorch threads:
//! `cargo run --release --example cv_profile`.
use covid_cxr::robust::{default_grid, fit};
use std::time::Instant;
use tch::Tensor;

fn main() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let n = 803;
    let views: Vec<Tensor> = (0..4).map(|_| Tensor::rand([n, 2048], (tch::Kind::Float, tch::Device::Cpu))).collect();
    let labels: Vec<i64> = (0..n).map(|i| i % 3).collect();
    let rows: Vec<usize> = (0..n as usize).filter(|i| i % 5 != 0).collect();
    let grid = default_grid();
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        for k in [0, 12, 13, 15] {
            let c = grid[k];
            let t0 = Instant::now();
            fit(&c, &views, &labels, &rows, 3, 1)?;
            println!("threads {threads} {:<50} {:.2}s", c.name(), t0.elapsed().as_secs_f64());
        }
    }
    Ok(())
}
