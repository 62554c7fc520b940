//! Timing of the explanation pipeline without the model: quickshift on one image and LIME's own
//! overhead (sampling, perturbed images, ridge fits) around any classifier, per batch size.
//!
//! ```no_run
//! let img = image::RgbImage::new(299, 299);
//! let report = covid_cxr::explain::bench::run(&img, 1000, &[10, 32, 64], covid_cxr::explain::bench::cheap_classifier).unwrap();
//! println!("{report}");
//! ```

use super::lime::{LimeConfig, LimeImageExplainer};
use super::segmentation::quickshift;
use crate::error::Result;
use image::RgbImage;
use std::time::Instant;

/// One LIME run of the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct LimeTiming {
    /// Images per classifier call.
    pub batch_size: usize,
    /// Wall time of LIME on the precomputed quickshift segments (segmentation excluded), seconds.
    pub total_s: f64,
    /// Time spent inside the classifier, seconds.
    pub classifier_s: f64,
}

impl LimeTiming {
    /// Time LIME spends outside the classifier and the segmentation (sampling, perturbed images,
    /// distances, ridge fits), seconds.
    pub fn overhead_s(&self) -> f64 {
        self.total_s - self.classifier_s
    }
}

/// The benchmark's measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Image size (width, height).
    pub size: (u32, u32),
    /// Seconds for one quickshift (kernel 4, max_dist 200, ratio 0.2).
    pub quickshift_s: f64,
    /// Number of superpixels it found.
    pub n_segments: usize,
    /// Samples per LIME run.
    pub num_samples: usize,
    /// One entry per batch size.
    pub lime: Vec<LimeTiming>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "quickshift {}x{}: {:.3} s, {} segments",
            self.size.0, self.size.1, self.quickshift_s, self.n_segments
        )?;
        for t in &self.lime {
            writeln!(
                f,
                "LIME {} samples, batch {:>3}: total {:.3} s, classifier {:.3} s, overhead {:.3} s",
                self.num_samples,
                t.batch_size,
                t.total_s,
                t.classifier_s,
                t.overhead_s()
            )?;
        }
        Ok(())
    }
}

/// A near-free 3-class classifier (probabilities from the mean brightness of each image).
pub fn cheap_classifier(batch: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
    Ok(batch
        .iter()
        .map(|im| {
            let raw = im.as_raw();
            let m = raw.iter().map(|&v| v as f64).sum::<f64>() / (raw.len().max(1) as f64 * 255.0);
            let z = [m, 1.0 - m, 0.5];
            let e: Vec<f64> = z.iter().map(|v| (3.0 * v).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        })
        .collect())
}

/// Times quickshift on `image`, then LIME on those segments with `num_samples` samples (the
/// notebook's settings: top 3 labels, hide colour black) for each batch size, around
/// `classifier`. A full `explain_instance` costs `quickshift_s + total_s`.
pub fn run(
    image: &RgbImage,
    num_samples: usize,
    batch_sizes: &[usize],
    mut classifier: impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
) -> Result<BenchReport> {
    let t0 = Instant::now();
    let seg = quickshift(image, 4.0, 200.0, 0.2, 0)?;
    let quickshift_s = t0.elapsed().as_secs_f64();
    let explainer = LimeImageExplainer::default();
    let mut lime = Vec::new();
    for &batch_size in batch_sizes {
        let cfg = LimeConfig {
            top_labels: Some(3),
            hide_color: Some([0, 0, 0]),
            num_samples,
            batch_size,
            ..Default::default()
        };
        let mut classifier_s = 0.0;
        let timed = |b: &[RgbImage]| {
            let t = Instant::now();
            let r = classifier(b);
            classifier_s += t.elapsed().as_secs_f64();
            r
        };
        let t = Instant::now();
        explainer.explain_with_segments(image, seg.clone(), timed, &cfg)?;
        lime.push(LimeTiming { batch_size, total_s: t.elapsed().as_secs_f64(), classifier_s });
    }
    Ok(BenchReport { size: image.dimensions(), quickshift_s, n_segments: seg.n_segments, num_samples, lime })
}
