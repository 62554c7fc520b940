//! Draws every figure of `covid_cxr::plot` from stand-in data (no trained model needed), to
//! check their layout: `cargo run --example explain_figures -- OUT_DIR [image.jpg]`.
//!
//! LIME runs on the image with a stand-in classifier that reads the brightness of the right
//! lung field; the Grad-CAM maps are Gaussian blobs.
use covid_cxr::explain::{LimeConfig, LimeImageExplainer};
use covid_cxr::plot;
use image::{imageops::FilterType, RgbImage};
use ndarray::Array2;
use std::path::PathBuf;

fn stand_in(batch: &[RgbImage]) -> covid_cxr::Result<Vec<Vec<f64>>> {
    Ok(batch
        .iter()
        .map(|im| {
            let (w, h) = im.dimensions();
            let mut s = 0.0;
            for y in h / 4..3 * h / 4 {
                for x in w / 8..w / 2 {
                    s += im.get_pixel(x, y).0[0] as f64;
                }
            }
            let m = s / ((h / 2) * (3 * w / 8)) as f64 / 255.0;
            let z = [4.0 * m, 1.0, 2.0 * (1.0 - m)];
            let e: Vec<f64> = z.iter().map(|v: &f64| v.exp()).collect();
            let t: f64 = e.iter().sum();
            e.iter().map(|v| v / t).collect()
        })
        .collect())
}

fn blob(h: usize, w: usize, cy: f64, cx: f64, s: f64) -> Array2<f32> {
    Array2::from_shape_fn((h, w), |(y, x)| {
        let d = ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2)) / (2.0 * s * s);
        (-d).exp() as f32
    })
}

fn main() -> covid_cxr::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("figures"));
    let img = match args.get(2) {
        Some(p) => covid_cxr::imageio::open_image(p)?.to_rgb8(),
        None => image::DynamicImage::ImageLuma8(covid_cxr::synth::chest_film("covid", 1)).to_rgb8(),
    };
    let img = image::imageops::resize(&img, 299, 299, FilterType::Triangle);
    let classes: Vec<String> = ["covid", "normal", "pneumonia"].map(String::from).to_vec();

    let t = std::time::Instant::now();
    let cfg = LimeConfig { top_labels: Some(3), hide_color: Some([0, 0, 0]), seed: 1, ..Default::default() };
    let exp = LimeImageExplainer::default().explain_instance(&img, stand_in, &cfg)?;
    println!(
        "LIME: {} segments, {:.2} s, top labels {:?}",
        exp.segments.n_segments,
        t.elapsed().as_secs_f64(),
        exp.top_labels
    );
    let top = exp.top_labels[0];
    plot::lime_boundaries(&exp, top, &classes[top], 3, 5)?.save(out.join("lime_boundaries.png"))?;
    plot::lime_heatmap(&exp, top, &classes[top])?.save(out.join("lime_heatmap.png"))?;
    let cams: Vec<(String, Array2<f32>)> = vec![
        (classes[0].clone(), blob(8, 8, 4.0, 2.0, 1.5)),
        (classes[1].clone(), blob(8, 8, 2.0, 5.0, 2.5)),
        (classes[2].clone(), blob(8, 8, 6.0, 6.0, 1.0)),
    ];
    plot::gradcam_overlay(&img, cams[0].1.view(), 0.45, "Grad-CAM for 'covid' (Mixed_7c)")?
        .save(out.join("gradcam.png"))?;
    plot::explain_side_by_side(&img, &exp, &cams, &classes)?.save(out.join("side_by_side.png"))?;
    plot::explain_side_by_side(&img, &exp, &cams, &classes)?.save(out.join("side_by_side.svg"))?;

    let acc = [0.62, 0.71, 0.77, 0.8, 0.83, 0.84, 0.85];
    let vacc = [0.6, 0.7, 0.74, 0.79, 0.8, 0.83, 0.84];
    let loss = [0.95, 0.75, 0.62, 0.55, 0.5, 0.47, 0.45];
    let vloss = [0.98, 0.8, 0.7, 0.6, 0.58, 0.52, 0.5];
    plot::accuracy_loss(&acc, &vacc, &loss, &vloss)?.save(out.join("accuracy_loss.png"))?;
    let probs = vec![vec![0.81, 0.1, 0.09], vec![0.2, 0.7, 0.1], vec![0.3, 0.25, 0.45]];
    plot::predictions(&[img.clone(), img.clone(), img.clone()], &[0, 1, 0], &probs, &classes)?
        .save(out.join("predictions.png"))?;
    let cm = vec![vec![820, 40, 24], vec![30, 905, 65], vec![18, 120, 862]];
    plot::confusion_matrix(&cm, &classes)?.save(out.join("confusion_matrix.png"))?;
    let roc = classes
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let a = 2.0 + k as f64;
            let pts: Vec<(f64, f64)> =
                (0..=50).map(|i| i as f64 / 50.0).map(|x| (x, 1.0 - (1.0 - x).powf(a))).collect();
            (c.clone(), pts, 1.0 - 1.0 / (a + 1.0))
        })
        .collect::<Vec<_>>();
    plot::roc_curves(&roc)?.save(out.join("roc.png"))?;
    let bins: Vec<(f64, f64, usize)> = (0..10)
        .map(|i| (i as f64 / 10.0 + 0.05, (i as f64 / 10.0 + 0.05 - 0.04).max(0.0), if i < 3 { 0 } else { 10 * i * i }))
        .collect();
    plot::reliability_diagram(&bins, 0.037)?.save(out.join("reliability.png"))?;
    let rows: Vec<(f64, f64, f64)> = (0..10)
        .map(|i| {
            let t = 0.4 + 0.06 * i as f64;
            (t, 1.0 - 0.08 * i as f64, 0.86 + 0.012 * i as f64)
        })
        .collect();
    plot::coverage_accuracy(&rows)?.save(out.join("coverage.png"))?;
    println!("figures in {}", out.display());
    Ok(())
}
