//! LIME, quickshift and masks, checked against hand-computed answers.
#![allow(clippy::needless_range_loop)] // the closed form is written with explicit indices

use covid_cxr::explain::lime::{weighted_r2, weighted_ridge};
use covid_cxr::explain::{
    quickshift, Explanation, FeatureSelection, LabelExplanation, LimeConfig, LimeImageExplainer, MaskOptions,
    Segmentation, Segments,
};
use covid_cxr::Result;
use image::{Rgb, RgbImage};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded textured grey image.
fn noise_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    RgbImage::from_fn(w, h, |_, _| {
        let v = rng.random_range(120..250u8);
        Rgb([v, v, v])
    })
}

/// A `rows x cols` grid of equal cells over a `w x h` image, labelled row-major.
fn grid_segments(w: usize, h: usize, rows: usize, cols: usize) -> Segments {
    let l = Array2::from_shape_fn((h, w), |(r, c)| ((r * rows / h) * cols + c * cols / w) as i32);
    Segments::from_labels(l.view()).unwrap()
}

/// Probability of class 0 rises with the mean brightness of `rect` = (x0, y0, x1, y1) only.
fn region_classifier(rect: (u32, u32, u32, u32)) -> impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>> {
    move |batch: &[RgbImage]| {
        Ok(batch
            .iter()
            .map(|im| {
                let (x0, y0, x1, y1) = rect;
                let mut s = 0.0;
                for y in y0..y1 {
                    for x in x0..x1 {
                        s += im.get_pixel(x, y).0[0] as f64;
                    }
                }
                let m = s / ((x1 - x0) * (y1 - y0)) as f64 / 255.0;
                let p = 1.0 / (1.0 + (-(8.0 * m - 3.0)).exp());
                vec![p, 1.0 - p]
            })
            .collect())
    }
}

#[test]
fn top_segments_lie_where_the_evidence_is() {
    // 64x64, 4x4 grid of 16x16 cells; the evidence is cells 5 and 6 (row 1, cols 1-2).
    let img = noise_image(64, 64, 1);
    let seg = grid_segments(64, 64, 4, 4);
    let cfg = LimeConfig {
        top_labels: Some(2),
        hide_color: Some([0, 0, 0]),
        num_samples: 400,
        seed: 3,
        ..Default::default()
    };
    let exp = LimeImageExplainer::default()
        .explain_with_segments(&img, seg, region_classifier((16, 16, 48, 32)), &cfg)
        .unwrap();
    assert_eq!(exp.top_labels, vec![0, 1]);
    let w0 = &exp.label(0).unwrap().weights;
    let mut top2: Vec<usize> = w0[..2].iter().map(|p| p.0).collect();
    top2.sort();
    assert_eq!(top2, vec![5, 6], "{w0:?}");
    assert!(w0[0].1 > 0.0 && w0[1].1 > 0.0);
    assert!(w0[2].1.abs() < 0.1 * w0[1].1.abs(), "{w0:?}");
    // Class 1 = 1 - p: the same cells with negative weights.
    let w1 = &exp.label(1).unwrap().weights;
    assert!(w1[..2].iter().all(|p| (p.0 == 5 || p.0 == 6) && p.1 < 0.0));
    // The mask shows those cells only.
    let (_, mask) = exp.get_image_and_mask(0, &MaskOptions::positive(2)).unwrap();
    assert_eq!(mask[[20, 20]], 1);
    assert_eq!(mask[[20, 40]], 1);
    assert_eq!(mask.iter().filter(|&&m| m == 1).count(), 2 * 16 * 16);
    assert!(exp.label(0).unwrap().score > 0.9);
}

#[test]
fn evidence_found_with_quickshift_segments() {
    // Bright textured blocks on a dark background; the classifier reads one block.
    let mut img = RgbImage::from_pixel(48, 48, Rgb([30, 30, 30]));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (bx, by, base) in [(4u32, 4u32, 200u8), (28, 4, 120), (4, 28, 160), (28, 28, 90)] {
        for y in by..by + 16 {
            for x in bx..bx + 16 {
                let v = base.saturating_add(rng.random_range(0..8u8));
                img.put_pixel(x, y, Rgb([v, v / 2, 255 - v]));
            }
        }
    }
    let cfg = LimeConfig {
        top_labels: None,
        labels: vec![0],
        hide_color: Some([0, 0, 0]),
        num_samples: 300,
        seed: 1,
        ..Default::default()
    };
    let exp = LimeImageExplainer::default().explain_instance(&img, region_classifier((28, 28, 44, 44)), &cfg).unwrap();
    let top = exp.label(0).unwrap().weights[0].0 as i32;
    // The top superpixel covers most of the evidence block.
    let inside =
        (28..44).flat_map(|y| (28..44).map(move |x| (y, x))).filter(|&(y, x)| exp.segments.labels[[y, x]] == top);
    assert!(inside.count() > 16 * 16 / 2, "segments {:?}", exp.segments.n_segments);
}

/// Closed-form weighted ridge with an unpenalised intercept: solves
/// `[X 1]ᵀ W [X 1] + diag(alpha, ..., alpha, 0)` by Gaussian elimination (independent of LAPACK).
fn closed_form(x: &Array2<f64>, y: &Array1<f64>, w: &Array1<f64>, alpha: f64) -> Vec<f64> {
    let (n, p) = x.dim();
    let q = p + 1;
    let xa = |i: usize, j: usize| if j < p { x[[i, j]] } else { 1.0 };
    let mut a = vec![vec![0.0; q + 1]; q];
    for r in 0..q {
        for c in 0..q {
            a[r][c] =
                (0..n).map(|i| w[i] * xa(i, r) * xa(i, c)).sum::<f64>() + if r == c && r < p { alpha } else { 0.0 };
        }
        a[r][q] = (0..n).map(|i| w[i] * xa(i, r) * y[i]).sum();
    }
    for k in 0..q {
        let piv = (k..q).max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs())).unwrap();
        a.swap(k, piv);
        for i in 0..q {
            if i != k {
                let f = a[i][k] / a[k][k];
                for j in k..=q {
                    a[i][j] -= f * a[k][j];
                }
            }
        }
    }
    (0..q).map(|k| a[k][q] / a[k][k]).collect()
}

#[test]
fn ridge_matches_closed_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (n, p) = (30, 4);
    let x = Array2::from_shape_simple_fn((n, p), || rng.random_range(0..2u8) as f64);
    let y = Array1::from_shape_simple_fn(n, || rng.random::<f64>());
    let w = Array1::from_shape_simple_fn(n, || rng.random_range(0.05..1.0));
    for alpha in [1.0, 0.01, 0.0] {
        let fit = weighted_ridge(x.view(), y.view(), w.view(), alpha).unwrap();
        let cf = closed_form(&x, &y, &w, alpha);
        for j in 0..p {
            assert!((fit.coef[j] - cf[j]).abs() < 1e-9, "alpha {alpha}: {:?} vs {cf:?}", fit.coef);
        }
        assert!((fit.intercept - cf[p]).abs() < 1e-9);
    }
    // R² of the unregularised fit is the weighted R² of WLS, in [0, 1].
    let fit = weighted_ridge(x.view(), y.view(), w.view(), 0.0).unwrap();
    let r2 = weighted_r2(y.view(), fit.predict(x.view()).view(), w.view());
    assert!((0.0..=1.0).contains(&r2));
}

/// A 6x4 image, 6 segments of 2x2 pixels (3 across, 2 down), hand-set weights.
fn hand_explanation() -> Explanation {
    let image = RgbImage::from_fn(6, 4, |x, y| Rgb([10 * x as u8, 10 * y as u8, 50]));
    let l = Array2::from_shape_fn((4, 6), |(r, c)| ((r / 2) * 3 + c / 2) as i32);
    let segments = Segments::from_labels(l.view()).unwrap();
    let weights = vec![(2, 0.5), (0, -0.4), (1, 0.3), (3, -0.1), (4, 0.05), (5, 0.0)];
    let le = LabelExplanation { label: 1, intercept: 0.2, weights, score: 0.9, local_pred: 0.6 };
    Explanation { image, segments, top_labels: vec![1], labels: vec![le], predictions: vec![0.3, 0.7] }
}

fn mask_of(segs: &[(i32, i32)]) -> Array2<i32> {
    Array2::from_shape_fn((4, 6), |(r, c)| {
        let s = ((r / 2) * 3 + c / 2) as i32;
        segs.iter().find(|p| p.0 == s).map(|p| p.1).unwrap_or(0)
    })
}

#[test]
fn get_image_and_mask_matches_lime() {
    let e = hand_explanation();
    // positive_only, 2 features: segments 2 and 1 (first two positive in |w| order).
    let (img, mask) = e.get_image_and_mask(1, &MaskOptions::positive(2)).unwrap();
    assert_eq!(mask, mask_of(&[(2, 1), (1, 1)]));
    assert_eq!(img, e.image);
    // min_weight 0.35 keeps only segment 2.
    let (_, mask) = e.get_image_and_mask(1, &MaskOptions { min_weight: 0.35, ..MaskOptions::positive(5) }).unwrap();
    assert_eq!(mask, mask_of(&[(2, 1)]));
    // positive and negative, 3 features: 2 (+), 0 (-), 1 (+); tints green / red with the image max.
    let (img, mask) = e.get_image_and_mask(1, &MaskOptions::pos_neg(3)).unwrap();
    assert_eq!(mask, mask_of(&[(2, 1), (0, -1), (1, 1)]));
    let max = *e.image.as_raw().iter().max().unwrap();
    assert_eq!(img.get_pixel(0, 0).0, [max, 0, 50]); // segment 0, red channel
    assert_eq!(img.get_pixel(4, 1).0, [40, max, 50]); // segment 2, green channel
    assert_eq!(img.get_pixel(0, 3).0, e.image.get_pixel(0, 3).0); // segment 3 untouched
                                                                  // hide_rest blanks the others.
    let (img, _) = e.get_image_and_mask(1, &MaskOptions { hide_rest: true, ..MaskOptions::positive(1) }).unwrap();
    assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(img.get_pixel(4, 0).0, e.image.get_pixel(4, 0).0);
    // negative_only: 0 then 3, mask 1.
    let opts = MaskOptions { positive_only: false, negative_only: true, ..MaskOptions::positive(5) };
    assert_eq!(e.get_image_and_mask(1, &opts).unwrap().1, mask_of(&[(0, 1), (3, 1)]));
    // num_features beyond the segment count: all of them (clamped).
    let (_, mask) = e.get_image_and_mask(1, &MaskOptions::pos_neg(100)).unwrap();
    assert_eq!(mask, mask_of(&[(2, 1), (0, -1), (1, 1), (3, -1), (4, 1), (5, 1)]));
    // Errors: unknown label, both positive_only and negative_only.
    assert!(e.get_image_and_mask(0, &MaskOptions::default()).is_err());
    let both = MaskOptions { negative_only: true, ..MaskOptions::default() };
    assert!(e.get_image_and_mask(1, &both).is_err());
    // Heatmap: every pixel its segment's weight.
    let h = e.heatmap(1).unwrap();
    assert_eq!(h[[0, 0]], -0.4);
    assert_eq!(h[[3, 5]], 0.0);
    assert_eq!(h[[1, 4]], 0.5);
    assert!(e.heatmap(2).is_err());
}

fn film() -> RgbImage {
    let g = covid_cxr::synth::chest_film("pneumonia", 2);
    let g = image::imageops::resize(&g, 72, 72, image::imageops::FilterType::Triangle);
    image::DynamicImage::ImageLuma8(g).to_rgb8()
}

#[test]
fn same_seed_same_explanation() {
    let img = film();
    let cfg = LimeConfig { num_samples: 150, top_labels: Some(2), seed: 9, ..Default::default() };
    let ex = LimeImageExplainer::default();
    let a = ex.explain_instance(&img, region_classifier((10, 10, 40, 40)), &cfg).unwrap();
    let b = ex.explain_instance(&img, region_classifier((10, 10, 40, 40)), &cfg).unwrap();
    assert_eq!(a.segments, b.segments);
    assert_eq!(a.labels, b.labels);
    let cfg2 = LimeConfig { seed: 10, ..cfg.clone() };
    let c = ex.explain_instance(&img, region_classifier((10, 10, 40, 40)), &cfg2).unwrap();
    assert_ne!(a.labels, c.labels);
    // Batch size does not change the result.
    let cfg3 = LimeConfig { batch_size: 64, ..cfg };
    let d = ex.explain_instance(&img, region_classifier((10, 10, 40, 40)), &cfg3).unwrap();
    assert_eq!(a.labels, d.labels);
}

#[test]
fn feature_selection_methods() {
    let img = noise_image(40, 40, 4);
    let seg = grid_segments(40, 40, 4, 4);
    let base = LimeConfig { top_labels: Some(1), hide_color: Some([0, 0, 0]), num_samples: 200, ..Default::default() };
    for (fs, nf, expect_len) in [
        (FeatureSelection::Auto, 3, 3),   // forward selection
        (FeatureSelection::Auto, 10, 10), // highest weights
        (FeatureSelection::ForwardSelection, 2, 2),
        (FeatureSelection::HighestWeights, 4, 4),
        (FeatureSelection::None, 3, 16),
        (FeatureSelection::Auto, 100_000, 16),
    ] {
        let cfg = LimeConfig { num_features: nf, ..base.clone() };
        let e = LimeImageExplainer::new(0.25, fs)
            .explain_with_segments(&img, seg.clone(), region_classifier((10, 10, 20, 20)), &cfg)
            .unwrap();
        let w = &e.label(0).unwrap().weights;
        assert_eq!(w.len(), expect_len, "{fs:?} {nf}");
        // The evidence cell (row 1, col 1 = segment 5) comes first.
        assert_eq!(w[0].0, 5, "{fs:?} {nf}: {w:?}");
        assert!(w.windows(2).all(|p| p[0].1.abs() >= p[1].1.abs()));
    }
}

#[test]
fn bad_inputs_are_errors() {
    let img = noise_image(20, 20, 0);
    let ex = LimeImageExplainer::default();
    let ok = LimeConfig {
        num_samples: 20,
        segmentation: Segmentation::Slic { n_segments: 4, compactness: 10.0, max_iter: 5 },
        ..Default::default()
    };
    assert!(ex.explain_instance(&img, region_classifier((0, 0, 5, 5)), &ok).is_ok());
    let zero = LimeConfig { num_samples: 0, ..ok.clone() };
    assert!(ex.explain_instance(&img, region_classifier((0, 0, 5, 5)), &zero).is_err());
    let bs = LimeConfig { batch_size: 0, ..ok.clone() };
    assert!(ex.explain_instance(&img, region_classifier((0, 0, 5, 5)), &bs).is_err());
    let nf = LimeConfig { num_features: 0, ..ok.clone() };
    assert!(ex.explain_instance(&img, region_classifier((0, 0, 5, 5)), &nf).is_err());
    let lab = LimeConfig { top_labels: None, labels: vec![7], ..ok.clone() };
    let err = ex.explain_instance(&img, region_classifier((0, 0, 5, 5)), &lab).unwrap_err();
    assert!(err.to_string().contains("label 7"), "{err}");
    assert!(ex.explain_instance(&RgbImage::new(0, 0), region_classifier((0, 0, 5, 5)), &ok).is_err());
    // Classifier errors and malformed answers.
    let failing = |_: &[RgbImage]| -> Result<Vec<Vec<f64>>> { Err(covid_cxr::Error::invalid("model down")) };
    assert!(ex.explain_instance(&img, failing, &ok).unwrap_err().to_string().contains("model down"));
    let short = |b: &[RgbImage]| -> Result<Vec<Vec<f64>>> { Ok(vec![vec![1.0]; b.len() - 1]) };
    assert!(ex.explain_instance(&img, short, &ok).is_err());
    let nan = |b: &[RgbImage]| -> Result<Vec<Vec<f64>>> { Ok(vec![vec![f64::NAN, 0.0]; b.len()]) };
    assert!(ex.explain_instance(&img, nan, &ok).is_err());
    // top_labels beyond the class count is clamped.
    let many = LimeConfig { top_labels: Some(10), ..ok };
    assert_eq!(ex.explain_instance(&img, region_classifier((0, 0, 5, 5)), &many).unwrap().top_labels.len(), 2);
}

#[test]
fn quickshift_follows_flat_colour_regions() {
    // Four 24x24 quadrants of distinct flat colours.
    let colours = [[220u8, 40, 40], [40, 200, 60], [40, 60, 210], [230, 220, 60]];
    let img = RgbImage::from_fn(48, 48, |x, y| Rgb(colours[((y / 24) * 2 + x / 24) as usize]));
    for (k, d, r) in [(3.0, 6.0, 0.5), (4.0, 10.0, 1.0)] {
        let s = quickshift(&img, k, d, r, 0).unwrap();
        // No segment crosses a colour border.
        let mut region_of = vec![None; s.n_segments];
        for ((y, x), &l) in s.labels.indexed_iter() {
            let q = (y / 24) * 2 + x / 24;
            assert_eq!(*region_of[l as usize].get_or_insert(q), q, "kernel {k}: segment {l} crosses a border");
        }
        assert!(s.n_segments >= 4);
    }
    // Deterministic per seed.
    assert_eq!(quickshift(&img, 4.0, 200.0, 0.2, 1).unwrap(), quickshift(&img, 4.0, 200.0, 0.2, 1).unwrap());
}
