//! Times the robust grid's fits on random features of cxr-small's size (803 films, 4 views of 2048
//! features; 4 folds of 5 for training), on one libtorch thread as `fit_many` runs them: each
//! candidate fitted alone (`fit`), then the whole grid together (`fit_many`, as the
//! cross-validation runs it), and how far the two sets of heads differ:
//! `cargo run --release --example cv_profile [-- --together-only]`.
use covid_cxr::robust::{default_grid, fit, fit_many};
use std::time::Instant;
use tch::{Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let together_only = std::env::args().any(|a| a == "--together-only");
    tch::manual_seed(0);
    let n = 803;
    let views: Vec<Tensor> = (0..4).map(|_| Tensor::rand([n, 2048], (Kind::Float, tch::Device::Cpu))).collect();
    let labels: Vec<i64> = (0..n).map(|i| i % 3).collect();
    let rows: Vec<usize> = (0..n as usize).filter(|i| i % 5 != 0).collect();
    let probe = Tensor::rand([200, 2048], (Kind::Float, tch::Device::Cpu));
    let grid = default_grid();
    let t0 = Instant::now();
    let together = fit_many(&grid, &views, &labels, &rows, 3, 1, &mut |_| {})?;
    let t_together = t0.elapsed().as_secs_f64();
    println!(
        "the {} candidates together (fit_many): {t_together:.1}s; 5-fold CV about {:.0}s",
        grid.len(),
        5.0 * t_together
    );
    if together_only {
        return Ok(());
    }
    let mut total = 0.0;
    for (c, (_, h_many)) in grid.iter().zip(&together) {
        let t0 = Instant::now();
        let (_vs, h) = fit(c, &views, &labels, &rows, 3, 1)?;
        let s = t0.elapsed().as_secs_f64();
        total += s;
        let (p1, p2) = tch::no_grad(|| {
            (
                h.forward_t(&probe, false).softmax(-1, Kind::Float),
                h_many.forward_t(&probe, false).softmax(-1, Kind::Float),
            )
        });
        let diff = (p1 - p2).abs().max().double_value(&[]);
        println!("{:<45} alone {s:.2}s   max |p_alone - p_together| {diff:.1e}", c.name());
    }
    println!("each alone: {total:.1}s; together: {t_together:.1}s ({:.1}x)", total / t_together);
    Ok(())
}
