//! LIME's stability from seed to seed, and the adaptive sampler against the fixed 1000 samples.
//!
//! ```text
//! cargo run --release --example lime_stability -- RUN_DIR SEEDS IMAGE...
//! ```
//!
//! For every image, the superpixels are fixed (quickshift, seed 0) and the predicted class is
//! explained with the sampler seeded `0..SEEDS`. Each seed classifies the largest count of samples
//! once (`LIME_COUNTS`, default 250,500,1000,2000); the explanations at each count and the
//! adaptive one refit on prefixes of those
//! samples (the sampler draws the same first rows whatever the total), so they equal separate runs.
//! Prints, per sample count, the mean overlap |A ∩ B| / 5 of the top-5 superpixels (by |weight|)
//! over all pairs of seeds, and for the adaptive sampler (defaults, at most 1000 samples) the
//! samples used and the overlap of its top 5 with fixed-1000's top 5 for the same seed; the same
//! for S-LIME's gap rule (`AdaptiveSampling::gap(1.645)`, at most 1000 samples), with the overlap of
//! its top 5 between seeds. One JSON line per image and a summary line.

use covid_cxr::explain::model_glue::{lime_classifier, model_view};
use covid_cxr::explain::{AdaptiveSampling, LimeConfig, LimeImageExplainer, Segmentation};
use covid_cxr::Result;
use image::RgbImage;
use std::cell::RefCell;


fn top5(e: &covid_cxr::explain::Explanation) -> Vec<usize> {
    let mut t: Vec<usize> = e.labels[0].weights.iter().take(5).map(|p| p.0).collect();
    t.sort_unstable();
    t
}

fn overlap(a: &[usize], b: &[usize]) -> f64 {
    a.iter().filter(|x| b.contains(x)).count() as f64 / a.len().max(1) as f64
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn pairwise(sets: &[Vec<usize>]) -> f64 {
    let mut v = Vec::new();
    for i in 0..sets.len() {
        for j in i + 1..sets.len() {
            v.push(overlap(&sets[i], &sets[j]));
        }
    }
    mean(&v)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 3, "usage: lime_stability RUN_DIR SEEDS IMAGE...");
    let (model, manifest) = covid_cxr::checkpoint::load(std::path::Path::new(&args[0]))?;
    let seeds: u64 = args[1].parse()?;
    // sample counts compared (LIME_COUNTS=250,500,1000,2000 by default)
    let counts: Vec<usize> = std::env::var("LIME_COUNTS")
        .unwrap_or_else(|_| "250,500,1000,2000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<std::result::Result<_, _>>()?;
    anyhow::ensure!(counts.contains(&1000), "LIME_COUNTS must include 1000 (the adaptive sampler's reference)");
    let max = *counts.iter().max().unwrap_or(&1000);
    let ex = LimeImageExplainer::default();
    let (mut all_fixed, mut all_adapt, mut all_used) = (vec![Vec::new(); counts.len()], Vec::new(), Vec::new());
    let (mut all_gap, mut all_gap_used, mut all_gap_seeds) = (Vec::new(), Vec::new(), Vec::new());
    for path in &args[2..] {
        let view = model_view(&covid_cxr::imageio::open_image(path)?, &manifest.preprocessing)?;
        let segments = Segmentation::default().segment(&view, 0)?;
        let mut per_count: Vec<Vec<Vec<usize>>> = vec![Vec::new(); counts.len()];
        let (mut adapt_overlap, mut used) = (Vec::new(), Vec::new());
        let (mut gap_overlap, mut gap_used, mut gap_sets) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 0..seeds {
            let base = LimeConfig {
                top_labels: Some(1),
                hide_color: Some([0, 0, 0]),
                batch_size: 8,
                seed,
                num_samples: max,
                ..LimeConfig::default()
            };
            // classify the largest count once, recording the answers in order
            let recorded = RefCell::new(Vec::<Vec<f64>>::new());
            let mut real = lime_classifier(&model, &manifest.preprocessing);
            let recording = |b: &[RgbImage]| -> Result<Vec<Vec<f64>>> {
                let r = real(b)?;
                recorded.borrow_mut().extend(r.iter().cloned());
                Ok(r)
            };
            ex.explain_with_segments(&view, segments.clone(), recording, &base)?;
            let rows = recorded.into_inner();
            let rows = &rows;
            let replay = || {
                let mut at = 0usize;
                move |b: &[RgbImage]| -> Result<Vec<Vec<f64>>> {
                    let r = rows[at..at + b.len()].to_vec();
                    at += b.len();
                    Ok(r)
                }
            };
            let mut fixed1000 = Vec::new();
            for (k, &n) in counts.iter().enumerate() {
                let e = ex.explain_with_segments(
                    &view,
                    segments.clone(),
                    replay(),
                    &LimeConfig { num_samples: n, ..base.clone() },
                )?;
                if n == 1000 {
                    fixed1000 = top5(&e);
                }
                per_count[k].push(top5(&e));
            }
            let cfg = LimeConfig { num_samples: 1000, adaptive: Some(AdaptiveSampling::default()), ..base.clone() };
            let (e, rep) = ex.explain_with_segments_report(&view, segments.clone(), replay(), &cfg)?;
            adapt_overlap.push(overlap(&top5(&e), &fixed1000));
            used.push(rep.samples_used as f64);
            let cfg = LimeConfig { num_samples: 1000, adaptive: Some(AdaptiveSampling::gap(1.645)), ..base.clone() };
            let (e, rep) = ex.explain_with_segments_report(&view, segments.clone(), replay(), &cfg)?;
            gap_overlap.push(overlap(&top5(&e), &fixed1000));
            gap_used.push(rep.samples_used as f64);
            gap_sets.push(top5(&e));
        }
        let gap_seeds = pairwise(&gap_sets);
        all_gap.extend(gap_overlap.iter().copied());
        all_gap_used.extend(gap_used.iter().copied());
        all_gap_seeds.push(gap_seeds);
        let stab: Vec<f64> = per_count.iter().map(|s| pairwise(s)).collect();
        for (k, s) in stab.iter().enumerate() {
            all_fixed[k].push(*s);
        }
        all_adapt.extend(adapt_overlap.iter().copied());
        all_used.extend(used.iter().copied());
        println!(
            "{}",
            serde_json::json!({
                "image": path, "n_segments": segments.n_segments, "seeds": seeds,
                "top5_overlap_between_seeds": counts.iter().zip(&stab).map(|(n, s)| serde_json::json!([n, s])).collect::<Vec<_>>(),
                "adaptive_overlap_with_fixed1000_same_seed": mean(&adapt_overlap),
                "adaptive_samples_used": used,
                "gap_overlap_with_fixed1000_same_seed": mean(&gap_overlap),
                "gap_samples_used": gap_used,
                "gap_top5_overlap_between_seeds": gap_seeds,
            })
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "summary": true, "images": args.len() - 2, "seeds": seeds,
            "top5_overlap_between_seeds": counts.iter().zip(&all_fixed).map(|(n, s)| serde_json::json!([n, mean(s)])).collect::<Vec<_>>(),
            "adaptive_overlap_with_fixed1000_same_seed": mean(&all_adapt),
            "adaptive_mean_samples": mean(&all_used),
            "adaptive_max_samples": all_used.iter().cloned().fold(0.0, f64::max),
            "gap_overlap_with_fixed1000_same_seed": mean(&all_gap),
            "gap_mean_samples": mean(&all_gap_used),
            "gap_max_samples": all_gap_used.iter().cloned().fold(0.0, f64::max),
            "gap_top5_overlap_between_seeds": mean(&all_gap_seeds),
        })
    );
    Ok(())
}
