//! Times the stages of one augmentation (decode, plan, warp, encode) on one image, single-threaded:
//! `cargo run --release --example augment_profile -- IMAGE`.
use covid_cxr::augment::{apply, plan, Operation};
use rand::SeedableRng;
use std::time::Instant;

fn main() -> covid_cxr::Result<()> {
    let path = std::env::args().nth(1).expect("an image path");
    let ops = [
        Operation::Rotate { probability: 1.0, max_left: 10, max_right: 10 },
        Operation::Distort { probability: 1.0, grid_width: 4, grid_height: 4, magnitude: 8 },
        Operation::FlipLeftRight { probability: 1.0 },
    ];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        let n = 30;
        let t = Instant::now();
        let mut img = None;
        for _ in 0..n {
            img = Some(covid_cxr::imageio::open_image(&path)?);
        }
        let img = img.unwrap();
        let dec = t.elapsed().as_secs_f64() / n as f64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let t = Instant::now();
        let mut out = None;
        for _ in 0..n {
            let p = plan(&ops, &mut rng, img.width(), img.height());
            out = Some(apply(&img, &p));
        }
        let warp = t.elapsed().as_secs_f64() / n as f64;
        let out = out.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        for i in 0..n {
            covid_cxr::imageio::save_image(&out, &dir.path().join(format!("{i}.jpeg")), false)?;
        }
        let enc = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "{}x{} {:?}: decode {:.2} ms, plan+warp {:.2} ms, encode+write {:.2} ms",
            img.width(),
            img.height(),
            img.color(),
            dec * 1e3,
            warp * 1e3,
            enc * 1e3
        );
        Ok(())
    })
}
