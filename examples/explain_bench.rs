//! Times quickshift and LIME's own overhead (cheap classifier) on an image.
//!
//! `cargo run --example explain_bench -- [image.jpg] [num_samples]` (0 samples: quickshift only); without an image a synthetic
//! 299x299 chest film is used. Prints the segment count, which can be compared with
//! scikit-image's `quickshift(img, kernel_size=4, max_dist=200, ratio=0.2)`.
use covid_cxr::explain::bench;
use image::imageops::FilterType;

fn main() -> covid_cxr::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let img = match args.get(1) {
        Some(p) => covid_cxr::imageio::open_image(p)?.to_rgb8(),
        None => image::DynamicImage::ImageLuma8(covid_cxr::synth::chest_film("covid", 1)).to_rgb8(),
    };
    let img = image::imageops::resize(&img, 299, 299, FilterType::Triangle);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let batches: &[usize] = if n == 0 { &[] } else { &[10, 32, 64] };
    let report = bench::run(&img, n, batches, bench::cheap_classifier)?;
    print!("{report}");
    Ok(())
}
