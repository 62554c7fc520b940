//! LIME for images, written from `lime_image.py` and `lime_base.py` (marcotcr/lime) without a
//! LIME library.
//!
//! [`LimeImageExplainer::explain_instance`] segments the image into superpixels (quickshift by
//! default), draws `num_samples` random on/off patterns of the superpixels (row 0: all on),
//! builds the perturbed images (switched-off superpixels take `hide_color`, or by default their
//! own mean colour), asks the classifier for class probabilities in batches, weights each sample
//! by `sqrt(exp(-d² / kernel_width²))` of its cosine distance `d` to the all-on row, selects
//! features, and fits a weighted ridge regression (`alpha = 1`, with intercept) of each
//! explained class's probability on the on/off pattern. The coefficients are the superpixels'
//! weights. On the same samples, labels and distances the local models (forward selection,
//! highest weights, all features) equal `lime_base.explain_instance_with_data` within 1e-14
//! (measured 5.6e-16 against lime 0.2.0.1 and scikit-learn 1.9.1; `tests/parity.rs`, fixtures from
//! `bench/parity/`).
//!
//! The sampler is a ChaCha8 generator, not NumPy's, so the random on/off patterns differ from
//! Python's for the same seed; a seed still fixes the whole explanation.
//!
//! ```
//! use covid_cxr::explain::{LimeConfig, LimeImageExplainer, Segmentation};
//! use image::{Rgb, RgbImage};
//! // A 2-class "model" that only looks at the left half's brightness.
//! let img = RgbImage::from_fn(32, 16, |x, _| if x < 16 { Rgb([230, 230, 230]) } else { Rgb([40, 40, 40]) });
//! let classifier = |batch: &[RgbImage]| -> covid_cxr::Result<Vec<Vec<f64>>> {
//!     Ok(batch.iter().map(|im| {
//!         let m = (0..16).flat_map(|y| (0..16).map(move |x| (x, y)))
//!             .map(|(x, y)| im.get_pixel(x, y).0[0] as f64).sum::<f64>() / (256.0 * 255.0);
//!         vec![m, 1.0 - m]
//!     }).collect())
//! };
//! let cfg = LimeConfig { num_samples: 200, hide_color: Some([0, 0, 0]), top_labels: Some(2),
//!     segmentation: Segmentation::Slic { n_segments: 8, compactness: 10.0, max_iter: 10 }, ..Default::default() };
//! let exp = LimeImageExplainer::default().explain_instance(&img, classifier, &cfg).unwrap();
//! assert_eq!(exp.top_labels, vec![0, 1]);
//! let (_, mask) = exp.get_image_and_mask(0, &Default::default()).unwrap();
//! assert_eq!(mask[[8, 4]], 1); // the left half explains class 0
//! assert_eq!(mask[[8, 28]], 0);
//! ```

use super::segmentation::{Segmentation, Segments};
use crate::error::{Error, Result};
use image::RgbImage;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use ndarray_linalg::{Inverse, LeastSquaresSvd, SolveH};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How LIME chooses the superpixels that enter the final model (`feature_selection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FeatureSelection {
    /// Forward selection when `num_features <= 6`, otherwise highest weights (lime's `'auto'`).
    #[default]
    Auto,
    /// Greedily adds the feature that most improves the weighted R² of an unregularised fit.
    ForwardSelection,
    /// Keeps the `num_features` largest |coefficients| of a weighted ridge fit (alpha 0.01).
    HighestWeights,
    /// Uses every superpixel (lime's `'none'`).
    None,
}

/// lime's `LimeImageExplainer(kernel_width=0.25, feature_selection='auto')`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimeImageExplainer {
    /// Width of the exponential kernel on cosine distances.
    pub kernel_width: f64,
    /// Feature selection method.
    pub feature_selection: FeatureSelection,
}

impl Default for LimeImageExplainer {
    fn default() -> Self {
        LimeImageExplainer { kernel_width: 0.25, feature_selection: FeatureSelection::Auto }
    }
}

/// Parameters of one explanation (lime's `explain_instance` arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimeConfig {
    /// Explain the `k` most probable classes (lime default 5, the notebook 3); clamped to the
    /// number of classes. `None`: explain [`LimeConfig::labels`].
    pub top_labels: Option<usize>,
    /// Classes to explain when `top_labels` is `None` (lime default `(1,)`).
    pub labels: Vec<usize>,
    /// Colour of switched-off superpixels; `None`: each superpixel's own mean colour.
    pub hide_color: Option<[u8; 3]>,
    /// Number of perturbed samples, including the original (row 0).
    pub num_samples: usize,
    /// Maximum number of superpixels in the final model (lime default 100000: all).
    pub num_features: usize,
    /// Images per classifier call.
    pub batch_size: usize,
    /// Seed of the segmentation noise and of the sampler.
    pub seed: u64,
    /// Superpixel algorithm.
    pub segmentation: Segmentation,
    /// Draw the samples in rounds and stop once the top superpixels are stable
    /// ([`AdaptiveSampling`]); `num_samples` is then the maximum. `None` (default): exactly
    /// `num_samples`, as lime.
    #[serde(default)]
    pub adaptive: Option<AdaptiveSampling>,
}

/// The adaptive sampler (in the spirit of S-LIME, Zhou et al. 2021): the samples are drawn in
/// rounds of `round` from the same stream as the fixed sampler (so the first `n` samples are those
/// of a fixed run with `num_samples = n`); after each round, once at least `min_samples` are in,
/// the local model of every explained class is refitted and the round is judged by `rule`
/// ([`StopRule`]). Sampling stops when `stable_rounds` consecutive rounds have passed for every
/// explained class, or at `num_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveSampling {
    /// Samples per round.
    pub round: usize,
    /// Never stop before this many samples.
    pub min_samples: usize,
    /// Size of the set that must be stable (the notebook shows 5 superpixels).
    pub top_k: usize,
    /// Consecutive passing rounds needed to stop.
    pub stable_rounds: usize,
    /// What makes a round pass.
    #[serde(default)]
    pub rule: StopRule,
}

impl Default for AdaptiveSampling {
    fn default() -> Self {
        AdaptiveSampling { round: 50, min_samples: 150, top_k: 5, stable_rounds: 3, rule: StopRule::Unchanged }
    }
}

impl AdaptiveSampling {
    /// S-LIME's rule: stop at the first round (from 150 samples) where the top `k` superpixels
    /// are separated from the rest by a one-sided z-test at level `z` (1.645: 5%), see
    /// [`StopRule::Gap`].
    ///
    /// ```
    /// let a = covid_cxr::explain::AdaptiveSampling::gap(1.645);
    /// assert_eq!((a.stable_rounds, a.top_k), (1, 5));
    /// ```
    pub fn gap(z: f64) -> Self {
        AdaptiveSampling { stable_rounds: 1, rule: StopRule::Gap { z }, ..Default::default() }
    }
}

/// When a round of the adaptive sampler passes.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// The set of the top k superpixels (by |weight|) is the same as after the previous round.
    #[default]
    Unchanged,
    /// Every superpixel of the top k has a larger |weight| than every one outside it by at least
    /// `z` standard errors (heteroskedasticity-robust sandwich errors of the weighted ridge fit;
    /// [`top_k_separation`]): S-LIME's test on the k-th and (k+1)-th features, applied to every
    /// pair across the boundary.
    Gap {
        /// The z threshold (1.645: one-sided 5%).
        z: f64,
    },
}

/// How many samples an explanation used and how stable its top superpixels were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingReport {
    /// Samples classified (model calls, one image each), the original included.
    pub samples_used: usize,
    /// The maximum (`num_samples`).
    pub max_samples: usize,
    /// Whether the adaptive sampler stopped before the maximum.
    pub stopped_early: bool,
    /// Consecutive rounds, at the end, over which every class's top-k set was unchanged.
    pub stable_rounds: usize,
    /// `(samples, smallest Jaccard index over the explained classes between this round's top-k
    /// set and the previous round's)` for every round compared; empty for a fixed run.
    pub history: Vec<(usize, f64)>,
    /// `(samples, smallest separation z over the explained classes)` for every round judged by
    /// [`StopRule::Gap`] (see [`top_k_separation`]); empty otherwise.
    #[serde(default)]
    pub separation: Vec<(usize, f64)>,
}

impl Default for LimeConfig {
    fn default() -> Self {
        LimeConfig {
            top_labels: Some(5),
            labels: vec![1],
            hide_color: None,
            num_samples: 1000,
            num_features: 100_000,
            batch_size: 10,
            seed: 0,
            segmentation: Segmentation::default(),
            adaptive: None,
        }
    }
}

/// The local linear model of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelExplanation {
    /// The class index.
    pub label: usize,
    /// Intercept of the weighted ridge fit.
    pub intercept: f64,
    /// (superpixel, weight) pairs sorted by decreasing |weight| (ties keep selection order).
    pub weights: Vec<(usize, f64)>,
    /// Weighted R² of the fit on the samples.
    pub score: f64,
    /// The fit's prediction for the original image (row 0).
    pub local_pred: f64,
}

/// The result of [`LimeImageExplainer::explain_instance`] (lime's `ImageExplanation`).
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The explained image.
    pub image: RgbImage,
    /// Its superpixels.
    pub segments: Segments,
    /// The explained classes, most probable first when `top_labels` was given.
    pub top_labels: Vec<usize>,
    /// One local model per explained class, in the order of `top_labels`.
    pub labels: Vec<LabelExplanation>,
    /// The classifier's probabilities for the original image.
    pub predictions: Vec<f64>,
}

/// Options of [`Explanation::get_image_and_mask`], lime's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskOptions {
    /// Keep only superpixels with positive weight (default true).
    pub positive_only: bool,
    /// Keep only superpixels with negative weight (default false).
    pub negative_only: bool,
    /// Blank (black) every other pixel (default false).
    pub hide_rest: bool,
    /// How many superpixels (default 5); more than there are keeps them all.
    pub num_features: usize,
    /// Weights below this (in absolute value) are skipped (default 0).
    pub min_weight: f64,
}

impl Default for MaskOptions {
    fn default() -> Self {
        MaskOptions { positive_only: true, negative_only: false, hide_rest: false, num_features: 5, min_weight: 0.0 }
    }
}

impl MaskOptions {
    /// Positive superpixels only, `num_features` of them (the notebook's first picture uses 3).
    pub fn positive(num_features: usize) -> Self {
        MaskOptions { num_features, ..Default::default() }
    }

    /// Positive and negative superpixels, the `num_features` largest |weights| (the notebook's
    /// second picture uses 5).
    pub fn pos_neg(num_features: usize) -> Self {
        MaskOptions { positive_only: false, num_features, ..Default::default() }
    }
}

impl Explanation {
    /// Checks that the parts fit together (they may come from deserialised or hand-built data): the
    /// segment map has the image's size, every segment id lies in `0..n_segments`, and every weight
    /// names a segment. The helpers below call it, so bad data is an error, never a panic.
    ///
    /// ```
    /// use covid_cxr::explain::{Explanation, LabelExplanation, Segments};
    /// let segments = Segments { labels: ndarray::array![[0, 1], [1, 7]], n_segments: 2 }; // 7: no such segment
    /// let le = LabelExplanation { label: 0, intercept: 0.0, weights: vec![(0, 0.5)], score: 1.0, local_pred: 0.5 };
    /// let e = Explanation { image: image::RgbImage::new(2, 2), segments, top_labels: vec![0], labels: vec![le], predictions: vec![1.0] };
    /// assert!(e.check().unwrap_err().to_string().contains("segment id 7"));
    /// assert!(e.heatmap(0).is_err());
    /// ```
    pub fn check(&self) -> Result<()> {
        let (h, w) = self.segments.labels.dim();
        if (h, w) != (self.image.height() as usize, self.image.width() as usize) {
            return Err(Error::invalid(format!(
                "explanation: segments are {h} x {w}, the image {} x {}",
                self.image.height(),
                self.image.width()
            )));
        }
        let n = self.segments.n_segments;
        if let Some(&bad) = self.segments.labels.iter().find(|&&s| s < 0 || s as usize >= n) {
            return Err(Error::invalid(format!("explanation: segment id {bad} outside 0..{n}")));
        }
        for l in &self.labels {
            if let Some(&(f, _)) = l.weights.iter().find(|(f, _)| *f >= n) {
                return Err(Error::invalid(format!(
                    "explanation: class {} has a weight for segment {f}, but there are {n} segments",
                    l.label
                )));
            }
        }
        Ok(())
    }

    /// The local model of class `label`, or an error naming the explained classes.
    pub fn label(&self, label: usize) -> Result<&LabelExplanation> {
        self.labels.iter().find(|l| l.label == label).ok_or_else(|| {
            Error::invalid(format!("label {label} is not in the explanation (explained: {:?})", self.top_labels))
        })
    }

    /// lime's `get_image_and_mask`: the image with the chosen superpixels and a `height x width`
    /// mask. With `positive_only` (or `negative_only`) the first `num_features` superpixels whose
    /// weight is > max(0, min_weight) (or < 0 with |w| > min_weight) get mask 1. Otherwise the
    /// `num_features` largest |weights| (skipping |w| < min_weight) get mask 1 (positive) or -1
    /// (negative), and are tinted: channel 1 (green) for positive, channel 0 (red) for negative,
    /// set to the image's maximum value. `hide_rest` blanks everything else to black.
    pub fn get_image_and_mask(&self, label: usize, opts: &MaskOptions) -> Result<(RgbImage, Array2<i32>)> {
        let exp = &self.label(label)?.weights;
        self.check()?;
        if opts.positive_only && opts.negative_only {
            return Err(Error::invalid("positive_only and negative_only cannot both be true"));
        }
        let seg = &self.segments.labels;
        let mut mask = Array2::<i32>::zeros(seg.dim());
        let mut temp =
            if opts.hide_rest { RgbImage::new(self.image.width(), self.image.height()) } else { self.image.clone() };
        // (segment, mask value, tint channel)
        let chosen: Vec<(usize, i32, Option<usize>)> = if opts.positive_only || opts.negative_only {
            exp.iter()
                .filter(|(_, w)| {
                    if opts.positive_only {
                        *w > 0.0 && *w > opts.min_weight
                    } else {
                        *w < 0.0 && w.abs() > opts.min_weight
                    }
                })
                .take(opts.num_features)
                .map(|&(f, _)| (f, 1, None))
                .collect()
        } else {
            exp.iter()
                .take(opts.num_features)
                .filter(|(_, w)| w.abs() >= opts.min_weight)
                .map(|&(f, w)| if w < 0.0 { (f, -1, Some(0)) } else { (f, 1, Some(1)) })
                .collect()
        };
        let max_value = self.image.as_raw().iter().copied().max().unwrap_or(0);
        let mut what: Vec<Option<(i32, Option<usize>)>> = vec![None; self.segments.n_segments];
        for (f, m, c) in chosen {
            what[f] = Some((m, c));
        }
        for ((r, c), &s) in seg.indexed_iter() {
            if let Some((m, tint)) = what[s as usize] {
                mask[[r, c]] = m;
                let mut p = *self.image.get_pixel(c as u32, r as u32);
                if let Some(ch) = tint {
                    p.0[ch] = max_value;
                }
                temp.put_pixel(c as u32, r as u32, p);
            }
        }
        Ok((temp, mask))
    }

    /// The notebook's heatmap: every pixel gets its superpixel's weight for `label` (0 for
    /// superpixels outside the model). Draw with a diverging map and symmetric limits
    /// ([`crate::plot::lime_heatmap`]).
    pub fn heatmap(&self, label: usize) -> Result<Array2<f64>> {
        let exp = self.label(label)?;
        self.check()?;
        let mut w = vec![0.0; self.segments.n_segments];
        for &(f, v) in &exp.weights {
            w[f] = v;
        }
        Ok(self.segments.labels.mapv(|s| w[s as usize]))
    }
}

/// A fitted (weighted) linear model.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// Coefficients, one per column of the design matrix.
    pub coef: Array1<f64>,
    /// Intercept.
    pub intercept: f64,
}

impl LinearFit {
    /// Predictions for the rows of `x`.
    pub fn predict(&self, x: ArrayView2<f64>) -> Array1<f64> {
        x.dot(&self.coef) + self.intercept
    }
}

/// scikit-learn's `Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight=w)`: weighted
/// centring of `x` and `y`, then `(Xcᵀ W Xc + alpha I) b = Xcᵀ W yc`; the intercept
/// `ȳ_w - x̄_w · b` is not penalised. A singular system (possible with `alpha = 0`) is solved
/// in the least-squares sense with the minimum-norm solution (sklearn's SVD fallback).
///
/// ```
/// use ndarray::array;
/// let x = array![[0.0], [1.0], [2.0]];
/// let fit = covid_cxr::explain::lime::weighted_ridge(x.view(), array![1.0, 3.0, 5.0].view(), array![1.0, 1.0, 1.0].view(), 0.0).unwrap();
/// assert!((fit.coef[0] - 2.0).abs() < 1e-9 && (fit.intercept - 1.0).abs() < 1e-9);
/// ```
pub fn weighted_ridge(x: ArrayView2<f64>, y: ArrayView1<f64>, w: ArrayView1<f64>, alpha: f64) -> Result<LinearFit> {
    let (n, p) = x.dim();
    if y.len() != n || w.len() != n {
        return Err(Error::invalid(format!("ridge: x has {n} rows, y {} and weights {}", y.len(), w.len())));
    }
    if w.iter().any(|v| !v.is_finite() || *v < 0.0) || y.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("ridge: weights must be finite and >= 0, targets finite"));
    }
    let sw = w.sum();
    if sw.is_nan() || sw <= 0.0 {
        return Err(Error::invalid("ridge: the sample weights sum to zero"));
    }
    let xm = x.t().dot(&w) / sw;
    let ym = y.dot(&w) / sw;
    if p == 0 {
        return Ok(LinearFit { coef: Array1::zeros(0), intercept: ym });
    }
    let xc = &x - &xm.view().insert_axis(Axis(0));
    let yc = &y - ym;
    let xw = &xc * &w.view().insert_axis(Axis(1));
    let mut a = xc.t().dot(&xw);
    for i in 0..p {
        a[[i, i]] += alpha;
    }
    let b = xw.t().dot(&yc);
    let coef = match a.solveh(&b) {
        Ok(c) if c.iter().all(|v| v.is_finite()) && alpha > 0.0 => c,
        _ => least_squares(&xc, &yc, &w)?,
    };
    let intercept = ym - xm.dot(&coef);
    Ok(LinearFit { coef, intercept })
}

/// Minimum-norm weighted least squares on centred data (`alpha = 0`).
fn least_squares(xc: &Array2<f64>, yc: &Array1<f64>, w: &ArrayView1<f64>) -> Result<Array1<f64>> {
    let sq = w.mapv(f64::sqrt);
    let xs = xc * &sq.view().insert_axis(Axis(1));
    let ys = yc * &sq;
    let r = xs.least_squares(&ys).map_err(|e| Error::Linalg(e.to_string()))?;
    Ok(r.solution)
}

/// How clearly the top `k` columns (by |ridge weight|) stand apart from the others: the smallest,
/// over pairs `i` in the top `k` and `j` outside it, of `(|b_i| - |b_j|) / se`, where `se` is the
/// standard error of `s_i b_i - s_j b_j` (`s` the signs) from the heteroskedasticity-robust (HC0)
/// sandwich covariance of the weighted ridge fit `(A⁻¹ X'W²diag(r²)X A⁻¹`, `A = X'WX + αI`, on
/// centred data). S-LIME (Zhou et al. 2021) tests the k-th against the (k+1)-th feature; this
/// tests every pair across the boundary. `+∞` when there are no more than `k` columns.
///
/// ```
/// use ndarray::{Array1, Array2};
/// // y depends strongly on columns 0 and 1, not at all on 2 and 3: a clear top 2
/// let x = Array2::from_shape_fn((64, 4), |(i, j)| ((i >> j) & 1) as f64);
/// let y: Array1<f64> = x.rows().into_iter().enumerate().map(|(i, r)| 2.0 * r[0] + r[1] + 0.01 * ((i * 7 % 5) as f64)).collect();
/// let w = Array1::ones(64);
/// let z = covid_cxr::explain::lime::top_k_separation(x.view(), y.view(), w.view(), 1.0, 2).unwrap();
/// assert!(z > 10.0, "{z}");
/// ```
pub fn top_k_separation(x: ArrayView2<f64>, y: ArrayView1<f64>, w: ArrayView1<f64>, alpha: f64, k: usize) -> Result<f64> {
    let (n, p) = x.dim();
    if p <= k {
        return Ok(f64::INFINITY);
    }
    let fit = weighted_ridge(x, y, w, alpha)?;
    let sw = w.sum();
    let xm = x.t().dot(&w) / sw;
    let xc = &x - &xm.view().insert_axis(Axis(0));
    let resid = &y - &fit.predict(x);
    let mut a = xc.t().dot(&(&xc * &w.view().insert_axis(Axis(1))));
    for i in 0..p {
        a[[i, i]] += alpha;
    }
    // (`invh` fills one triangle only: the general inverse of the symmetric positive-definite `a`)
    let a_inv = a.inv().map_err(|e| Error::Linalg(format!("top_k_separation: {e}")))?;
    let wr: Array1<f64> = (0..n).map(|i| w[i] * resid[i]).collect();
    let xs = &xc * &wr.view().insert_axis(Axis(1));
    let meat = xs.t().dot(&xs);
    let cov = a_inv.dot(&meat).dot(&a_inv);
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&i, &j| fit.coef[j].abs().total_cmp(&fit.coef[i].abs()));
    let (top, rest) = order.split_at(k);
    let mut z_min = f64::INFINITY;
    for &i in top {
        for &j in rest {
            let (si, sj) = (fit.coef[i].signum(), fit.coef[j].signum());
            let var = cov[[i, i]] + cov[[j, j]] - 2.0 * si * sj * cov[[i, j]];
            let gap = fit.coef[i].abs() - fit.coef[j].abs();
            let z = if var > 0.0 { gap / var.sqrt() } else if gap > 0.0 { f64::INFINITY } else { 0.0 };
            z_min = z_min.min(z);
        }
    }
    Ok(z_min)
}

/// scikit-learn's `r2_score(y, pred, sample_weight=w)`: 1 - Σw(y-p)² / Σw(y-ȳ_w)²; a constant
/// target gives 1 when predicted exactly, else 0.
pub fn weighted_r2(y: ArrayView1<f64>, pred: ArrayView1<f64>, w: ArrayView1<f64>) -> f64 {
    let sw = w.sum();
    let ym = if sw > 0.0 { y.dot(&w) / sw } else { 0.0 };
    let num: f64 = y.iter().zip(pred).zip(w).map(|((a, b), w)| w * (a - b) * (a - b)).sum();
    let den: f64 = y.iter().zip(w).map(|(a, w)| w * (a - ym) * (a - ym)).sum();
    if den == 0.0 {
        if num == 0.0 {
            1.0
        } else {
            0.0
        }
    } else {
        1.0 - num / den
    }
}

/// lime's kernel `sqrt(exp(-d² / width²))`.
pub fn kernel(d: f64, width: f64) -> f64 {
    (-(d * d) / (width * width)).exp().sqrt()
}

/// Cosine distance of a 0/1 row to the all-ones row (sklearn's `pairwise_distances(...,
/// metric='cosine')`): `1 - k / sqrt(k n)` for `k` ones out of `n`; an all-zero row is at 1.
pub fn cosine_distance_to_ones(row: ArrayView1<f64>) -> f64 {
    let n = row.len() as f64;
    let k: f64 = row.sum();
    if k == 0.0 || n == 0.0 {
        return 1.0;
    }
    (1.0 - k / (k.sqrt() * n.sqrt())).clamp(0.0, 2.0)
}

/// Jaccard index of two sets given as sorted, duplicate-free slices (1 for two empty sets).
///
/// ```
/// assert_eq!(covid_cxr::explain::lime::jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
/// ```
pub fn jaccard(a: &[usize], b: &[usize]) -> f64 {
    let inter = a.iter().filter(|x| b.binary_search(x).is_ok()).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Columns of `x` listed in `cols`.
fn columns(x: ArrayView2<f64>, cols: &[usize]) -> Array2<f64> {
    x.select(Axis(1), cols)
}

impl LimeImageExplainer {
    /// An explainer with kernel width `kernel_width` and a feature selection method.
    pub fn new(kernel_width: f64, feature_selection: FeatureSelection) -> Self {
        LimeImageExplainer { kernel_width, feature_selection }
    }

    /// lime's `explain_instance`: segments `image` with `cfg.segmentation` and explains it.
    ///
    /// `classifier` maps a batch of images to class probabilities (one row per image, the same
    /// number of classes for every row). Errors: an empty image, `num_samples`, `batch_size` or
    /// `num_features` of 0, a classifier error or a malformed answer, an unknown class in
    /// `cfg.labels`. Same seed, same classifier: the same explanation.
    pub fn explain_instance(
        &self,
        image: &RgbImage,
        classifier: impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
        cfg: &LimeConfig,
    ) -> Result<Explanation> {
        Ok(self.explain_instance_report(image, classifier, cfg)?.0)
    }

    /// [`explain_instance`](Self::explain_instance), with the [`SamplingReport`] (samples used,
    /// stability) of the adaptive sampler or of the fixed one.
    pub fn explain_instance_report(
        &self,
        image: &RgbImage,
        classifier: impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
        cfg: &LimeConfig,
    ) -> Result<(Explanation, SamplingReport)> {
        check_config(image, cfg)?;
        let segments = cfg.segmentation.segment(image, cfg.seed)?;
        self.explain_with_segments_report(image, segments, classifier, cfg)
    }

    /// [`explain_instance`](Self::explain_instance) with a given segmentation (`cfg.segmentation`
    /// is not used).
    pub fn explain_with_segments(
        &self,
        image: &RgbImage,
        segments: Segments,
        classifier: impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
        cfg: &LimeConfig,
    ) -> Result<Explanation> {
        Ok(self.explain_with_segments_report(image, segments, classifier, cfg)?.0)
    }

    /// [`explain_with_segments`](Self::explain_with_segments) with the [`SamplingReport`].
    pub fn explain_with_segments_report(
        &self,
        image: &RgbImage,
        segments: Segments,
        mut classifier: impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
        cfg: &LimeConfig,
    ) -> Result<(Explanation, SamplingReport)> {
        check_config(image, cfg)?;
        if self.kernel_width.is_nan() || self.kernel_width <= 0.0 {
            return Err(Error::invalid(format!("kernel_width must be > 0, got {}", self.kernel_width)));
        }
        if let Some(a) = &cfg.adaptive {
            if a.round == 0 || a.top_k == 0 || a.stable_rounds == 0 {
                return Err(Error::invalid("LIME: adaptive round, top_k and stable_rounds must be >= 1"));
            }
            if let StopRule::Gap { z } = a.rule {
                if !z.is_finite() || z < 0.0 {
                    return Err(Error::invalid(format!("LIME: the gap rule's z must be finite and >= 0, got {z}")));
                }
            }
        }
        segments.check_image(image)?;
        let fudged = fudged_image(image, &segments, cfg.hide_color)?;
        let data = sample_matrix(cfg.num_samples, segments.n_segments, cfg.seed);
        let weights_all: Array1<f64> =
            data.rows().into_iter().map(|r| kernel(cosine_distance_to_ones(r), self.kernel_width)).collect();
        let round = cfg.adaptive.map_or(cfg.num_samples, |a| a.round);
        let mut report = SamplingReport {
            samples_used: 0,
            max_samples: cfg.num_samples,
            stopped_early: false,
            stable_rounds: 0,
            history: Vec::new(),
            separation: Vec::new(),
        };
        let mut probs: Option<Array2<f64>> = None;
        let mut top_labels = Vec::new();
        let mut previous: Option<Vec<Vec<usize>>> = None;
        let mut n = 0;
        while n < cfg.num_samples {
            let end = (n + round).min(cfg.num_samples);
            let chunk = data.slice(ndarray::s![n..end, ..]).to_owned();
            let p = classify_samples(image, &fudged, &segments, &chunk, &mut classifier, cfg.batch_size)?;
            probs = Some(match probs {
                None => p,
                Some(old) => {
                    if old.ncols() != p.ncols() {
                        return Err(Error::invalid("LIME: the classifier changed its number of classes"));
                    }
                    ndarray::concatenate(Axis(0), &[old.view(), p.view()]).map_err(|e| Error::invalid(e.to_string()))?
                }
            });
            n = end;
            let pr = probs.as_ref().expect("set above");
            if top_labels.is_empty() {
                top_labels = choose_labels(&pr.row(0).to_vec(), cfg)?;
            }
            let (Some(a), true) = (cfg.adaptive, n < cfg.num_samples) else { continue };
            if n < a.min_samples {
                continue;
            }
            let (d, w) = (data.slice(ndarray::s![..n, ..]), weights_all.slice(ndarray::s![..n]));
            let mut sets = Vec::with_capacity(top_labels.len());
            let mut z_min = f64::INFINITY;
            for &l in &top_labels {
                let e = self.explain_label(d, pr.column(l), w, l, cfg.num_features)?;
                let mut t: Vec<usize> = e.weights.iter().take(a.top_k).map(|p| p.0).collect();
                t.sort_unstable();
                sets.push(t);
                if let StopRule::Gap { .. } = a.rule {
                    let used: Vec<usize> = e.weights.iter().map(|p| p.0).collect();
                    let x = columns(d, &used);
                    let z = top_k_separation(x.view(), pr.column(l), w, 1.0, a.top_k)?;
                    z_min = z_min.min(z);
                }
            }
            let jac = previous.as_ref().map(|prev| sets.iter().zip(prev).map(|(s, p)| jaccard(s, p)).fold(1.0, f64::min));
            if let Some(j) = jac {
                report.history.push((n, j));
            }
            let passed = match a.rule {
                StopRule::Unchanged => jac == Some(1.0),
                StopRule::Gap { z } => {
                    report.separation.push((n, z_min));
                    z_min >= z
                }
            };
            report.stable_rounds = if passed { report.stable_rounds + 1 } else { 0 };
            previous = Some(sets);
            if report.stable_rounds >= a.stable_rounds {
                report.stopped_early = true;
                break;
            }
        }
        let probs = probs.ok_or_else(|| Error::invalid("LIME: no sample"))?;
        report.samples_used = n;
        let (data, weights) = (data.slice(ndarray::s![..n, ..]), weights_all.slice(ndarray::s![..n]));
        let predictions = probs.row(0).to_vec();
        let labels = top_labels
            .iter()
            .map(|&l| self.explain_label(data, probs.column(l), weights, l, cfg.num_features))
            .collect::<Result<Vec<_>>>()?;
        Ok((Explanation { image: image.clone(), segments, top_labels, labels, predictions }, report))
    }

    /// lime_base's `explain_instance_with_data` for one class.
    pub fn explain_label(
        &self,
        data: ArrayView2<f64>,
        y: ArrayView1<f64>,
        weights: ArrayView1<f64>,
        label: usize,
        num_features: usize,
    ) -> Result<LabelExplanation> {
        let used = select_features(data, y, weights, num_features, self.feature_selection)?;
        let x = columns(data, &used);
        let fit = weighted_ridge(x.view(), y, weights, 1.0)?;
        let score = weighted_r2(y, fit.predict(x.view()).view(), weights);
        let local_pred = fit.predict(x.slice(ndarray::s![0..1, ..])).get(0).copied().unwrap_or(fit.intercept);
        let mut pairs: Vec<(usize, f64)> = used.iter().copied().zip(fit.coef.iter().copied()).collect();
        pairs.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        Ok(LabelExplanation { label, intercept: fit.intercept, weights: pairs, score, local_pred })
    }
}

fn check_config(image: &RgbImage, cfg: &LimeConfig) -> Result<()> {
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::invalid("LIME: empty image (zero width or height)"));
    }
    if cfg.num_samples == 0 {
        return Err(Error::invalid("LIME: num_samples must be >= 1"));
    }
    if cfg.batch_size == 0 {
        return Err(Error::invalid("LIME: batch_size must be >= 1"));
    }
    if cfg.num_features == 0 {
        return Err(Error::invalid("LIME: num_features must be >= 1"));
    }
    if cfg.top_labels == Some(0) || (cfg.top_labels.is_none() && cfg.labels.is_empty()) {
        return Err(Error::invalid("LIME: no label to explain (top_labels = 0 or labels empty)"));
    }
    Ok(())
}

/// lime's `fudged_image`: every pixel replaced by its superpixel's mean colour (`None`) or by
/// `hide_color`.
pub fn fudged_image(image: &RgbImage, segments: &Segments, hide_color: Option<[u8; 3]>) -> Result<RgbImage> {
    segments.check_image(image)?;
    Ok(match hide_color {
        Some(c) => RgbImage::from_pixel(image.width(), image.height(), image::Rgb(c)),
        None => {
            let means = segments.mean_colors(image)?;
            RgbImage::from_fn(image.width(), image.height(), |x, y| {
                image::Rgb(means[segments.labels[[y as usize, x as usize]] as usize])
            })
        }
    })
}

/// The `num_samples x n_features` 0/1 design matrix, uniform draws from a ChaCha8 generator
/// seeded with `seed`, row 0 all ones.
pub fn sample_matrix(num_samples: usize, n_features: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4c49_4d45); // "LIME": independent of quickshift's stream
    let mut data = Array2::from_shape_simple_fn((num_samples, n_features), || rng.random_range(0..2u8) as f64);
    if num_samples > 0 {
        data.row_mut(0).fill(1.0);
    }
    data
}

/// The image for one row of the design matrix: superpixels with 0 take the fudged pixels.
pub fn perturb(image: &RgbImage, fudged: &RgbImage, segments: &Segments, row: ArrayView1<f64>) -> RgbImage {
    let off: Vec<bool> = row.iter().map(|&v| v == 0.0).collect();
    let labels: Vec<i32> = segments.labels.iter().copied().collect();
    perturb_with(image, fudged, &labels, &off)
}

/// [`perturb`] on raw slices: `labels` row-major, `off[s]` true when segment `s` is hidden.
fn perturb_with(image: &RgbImage, fudged: &RgbImage, labels: &[i32], off: &[bool]) -> RgbImage {
    let mut out = image.clone();
    for ((p, f), &s) in out.chunks_exact_mut(3).zip(fudged.chunks_exact(3)).zip(labels) {
        if off[s as usize] {
            p.copy_from_slice(f);
        }
    }
    out
}

/// Runs the classifier over all perturbed images in batches; returns `num_samples x n_classes`.
fn classify_samples(
    image: &RgbImage,
    fudged: &RgbImage,
    segments: &Segments,
    data: &Array2<f64>,
    classifier: &mut impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
    batch_size: usize,
) -> Result<Array2<f64>> {
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(data.nrows());
    let labels: Vec<i32> = segments.labels.iter().copied().collect();
    let mut start = 0;
    while start < data.nrows() {
        let end = (start + batch_size).min(data.nrows());
        let batch: Vec<RgbImage> = (start..end)
            .into_par_iter()
            .map(|r| {
                let off: Vec<bool> = data.row(r).iter().map(|&v| v == 0.0).collect();
                perturb_with(image, fudged, &labels, &off)
            })
            .collect();
        let preds = classifier(&batch)?;
        if preds.len() != batch.len() {
            return Err(Error::invalid(format!(
                "LIME: the classifier returned {} rows for a batch of {}",
                preds.len(),
                batch.len()
            )));
        }
        rows.extend(preds);
        start = end;
    }
    let k = rows[0].len();
    if k == 0 || rows.iter().any(|r| r.len() != k) {
        return Err(Error::invalid("LIME: the classifier must return the same, non-zero number of classes per image"));
    }
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::invalid("LIME: the classifier returned a non-finite probability"));
    }
    Array2::from_shape_vec((rows.len(), k), rows.concat()).map_err(|e| Error::invalid(e.to_string()))
}

/// The classes to explain: the `top_labels` most probable (numpy's `argsort(p)[-k:]` reversed),
/// or `cfg.labels`.
/// lime's choice of the `k` most probable classes: `np.argsort(pred)[-k:]` reversed, so among equal
/// probabilities the higher class index comes first (NumPy's argsort is stable on short arrays).
///
/// ```
/// use covid_cxr::explain::lime::top_labels;
/// assert_eq!(top_labels(&[0.2, 0.5, 0.3], 2), vec![1, 2]);
/// assert_eq!(top_labels(&[0.4, 0.4, 0.2], 3), vec![1, 0, 2]); // a tie: the higher index first, as lime
/// assert_eq!(top_labels(&[0.4, 0.6], 9), vec![1, 0]);          // k is clamped to the number of classes
/// ```
pub fn top_labels(pred: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..pred.len()).collect();
    idx.sort_by(|&a, &b| pred[a].total_cmp(&pred[b]));
    idx.into_iter().rev().take(k.min(pred.len())).collect()
}

fn choose_labels(pred: &[f64], cfg: &LimeConfig) -> Result<Vec<usize>> {
    match cfg.top_labels {
        Some(k) => Ok(top_labels(pred, k)),
        None => {
            if let Some(&bad) = cfg.labels.iter().find(|&&l| l >= pred.len()) {
                return Err(Error::invalid(format!("LIME: label {bad} but the classifier has {} classes", pred.len())));
            }
            Ok(cfg.labels.clone())
        }
    }
}

/// lime_base's `feature_selection`.
pub fn select_features(
    data: ArrayView2<f64>,
    y: ArrayView1<f64>,
    w: ArrayView1<f64>,
    num_features: usize,
    method: FeatureSelection,
) -> Result<Vec<usize>> {
    let p = data.ncols();
    match method {
        FeatureSelection::None => Ok((0..p).collect()),
        FeatureSelection::Auto if num_features <= 6 => forward_selection(data, y, w, num_features),
        FeatureSelection::ForwardSelection => forward_selection(data, y, w, num_features),
        FeatureSelection::Auto | FeatureSelection::HighestWeights => {
            let fit = weighted_ridge(data, y, w, 0.01)?;
            let row0 = data.row(0);
            let mut idx: Vec<(usize, f64)> = (0..p).map(|j| (j, fit.coef[j] * row0[j])).collect();
            idx.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
            Ok(idx.into_iter().take(num_features).map(|(j, _)| j).collect())
        }
    }
}

/// lime_base's `forward_selection` (unregularised weighted fits, best weighted R² first).
fn forward_selection(data: ArrayView2<f64>, y: ArrayView1<f64>, w: ArrayView1<f64>, k: usize) -> Result<Vec<usize>> {
    let mut used: Vec<usize> = Vec::new();
    for _ in 0..k.min(data.ncols()) {
        let mut best = 0;
        let mut max = -100_000_000.0;
        for f in (0..data.ncols()).filter(|f| !used.contains(f)) {
            let mut cols = used.clone();
            cols.push(f);
            let x = columns(data, &cols);
            let fit = weighted_ridge(x.view(), y, w, 0.0)?;
            let score = weighted_r2(y, fit.predict(x.view()).view(), w);
            if score > max {
                best = f;
                max = score;
            }
        }
        used.push(best);
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cosine_and_kernel() {
        assert!(cosine_distance_to_ones(array![1.0, 1.0, 1.0, 1.0].view()).abs() < 1e-12);
        assert_eq!(cosine_distance_to_ones(array![0.0, 0.0].view()), 1.0);
        // k=1 of n=4: 1 - 1/2
        assert!((cosine_distance_to_ones(array![0.0, 1.0, 0.0, 0.0].view()) - 0.5).abs() < 1e-12);
        assert!((kernel(0.5, 0.25) - (-2.0f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn r2_constant_target() {
        let y = array![1.0, 1.0];
        assert_eq!(weighted_r2(y.view(), y.view(), array![1.0, 1.0].view()), 1.0);
        assert_eq!(weighted_r2(y.view(), array![0.0, 1.0].view(), array![1.0, 1.0].view()), 0.0);
    }

    #[test]
    fn ridge_rejects_bad_weights() {
        let x = array![[0.0], [1.0]];
        assert!(weighted_ridge(x.view(), array![1.0, 2.0].view(), array![0.0, 0.0].view(), 1.0).is_err());
        assert!(weighted_ridge(x.view(), array![1.0].view(), array![1.0, 1.0].view(), 1.0).is_err());
    }

    #[test]
    fn singular_alpha0_gives_min_norm() {
        // Two identical columns: min-norm solution splits the slope.
        let x = array![[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]];
        let fit = weighted_ridge(x.view(), array![0.0, 2.0, 4.0].view(), array![1.0, 1.0, 1.0].view(), 0.0).unwrap();
        assert!((fit.coef[0] - 1.0).abs() < 1e-8 && (fit.coef[1] - 1.0).abs() < 1e-8, "{:?}", fit.coef);
    }

    #[test]
    fn sample_matrix_row0_ones_and_seeded() {
        let a = sample_matrix(50, 7, 3);
        assert!(a.row(0).iter().all(|&v| v == 1.0));
        assert_eq!(a, sample_matrix(50, 7, 3));
        assert_ne!(a, sample_matrix(50, 7, 4));
        let mean = a.slice(ndarray::s![1.., ..]).mean().unwrap();
        assert!((mean - 0.5).abs() < 0.1);
    }

    /// An 8 x 8 grid of 8-pixel cells over a 64 x 64 grey image.
    fn grid() -> (RgbImage, Segments) {
        let l = Array2::from_shape_fn((64, 64), |(r, c)| ((r / 8) * 8 + c / 8) as i32);
        (RgbImage::from_pixel(64, 64, image::Rgb([200, 200, 200])), Segments::from_labels(l.view()).unwrap())
    }

    /// Which cells of a perturbed image are on (hide colour black).
    fn cells_on(im: &RgbImage) -> Vec<f64> {
        (0..64).map(|s| if im.get_pixel((s % 8) * 8 + 4, (s / 8) * 8 + 4).0[0] > 0 { 1.0 } else { 0.0 }).collect()
    }

    /// Class 0's probability is linear in five cells (an easy function for LIME).
    fn easy(batch: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
        let w = [(5, 2.0), (6, 1.8), (20, 1.6), (40, 1.4), (63, 1.2)];
        Ok(batch
            .iter()
            .map(|im| {
                let on = cells_on(im);
                let p = 0.05 + w.iter().map(|&(s, k)| k * on[s]).sum::<f64>() / 8.5;
                vec![p, 1.0 - p]
            })
            .collect())
    }

    /// Class 0's probability is a hash of the on/off pattern: no stable top set.
    fn noise(batch: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
        Ok(batch
            .iter()
            .map(|im| {
                let h = cells_on(im)
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, &v| (h ^ (v as u64 + 1)).wrapping_mul(0x0100_0000_01b3));
                let p = (h >> 11) as f64 / (1u64 << 53) as f64;
                vec![p, 1.0 - p]
            })
            .collect())
    }

    fn adaptive_cfg(max: usize, a: AdaptiveSampling) -> LimeConfig {
        LimeConfig {
            top_labels: None,
            labels: vec![0],
            hide_color: Some([0, 0, 0]),
            num_samples: max,
            seed: 4,
            adaptive: Some(a),
            ..Default::default()
        }
    }

    fn top5(e: &Explanation) -> Vec<usize> {
        let mut t: Vec<usize> = e.labels[0].weights.iter().take(5).map(|p| p.0).collect();
        t.sort_unstable();
        t
    }

    #[test]
    fn adaptive_stops_early_on_an_easy_function_with_the_fixed_top5() {
        let (img, seg) = grid();
        let ex = LimeImageExplainer::default();
        let cfg = adaptive_cfg(1000, AdaptiveSampling::default());
        let (e, rep) = ex.explain_with_segments_report(&img, seg.clone(), easy, &cfg).unwrap();
        assert!(rep.stopped_early, "{rep:?}");
        assert!(rep.samples_used <= 1000 / 3, "{rep:?}");
        assert_eq!(rep.stable_rounds, 3);
        assert_eq!(rep.history.last().unwrap().1, 1.0);
        let fixed = LimeConfig { adaptive: None, ..cfg.clone() };
        let (f, frep) = ex.explain_with_segments_report(&img, seg.clone(), easy, &fixed).unwrap();
        assert_eq!((frep.samples_used, frep.stopped_early), (1000, false));
        assert_eq!(top5(&e), vec![5, 6, 20, 40, 63]);
        assert_eq!(top5(&e), top5(&f));
        // deterministic
        let (e2, rep2) = ex.explain_with_segments_report(&img, seg, easy, &cfg).unwrap();
        assert_eq!((e.labels.clone(), rep.clone()), (e2.labels, rep2));
    }

    #[test]
    fn adaptive_respects_the_maximum_and_equals_fixed_there() {
        let (img, seg) = grid();
        let ex = LimeImageExplainer::default();
        // never stable: runs to the maximum (not a multiple of the round) and equals a fixed run
        let never = AdaptiveSampling { stable_rounds: 1000, ..Default::default() };
        let cfg = adaptive_cfg(430, never);
        let (e, rep) = ex.explain_with_segments_report(&img, seg.clone(), easy, &cfg).unwrap();
        assert_eq!((rep.samples_used, rep.max_samples, rep.stopped_early), (430, 430, false));
        let fixed = LimeConfig { adaptive: None, ..cfg };
        let f = ex.explain_with_segments(&img, seg.clone(), easy, &fixed).unwrap();
        assert_eq!(e.labels, f.labels);
        // a function without stable superpixels does not stop early
        let (_, rep) =
            ex.explain_with_segments_report(&img, seg.clone(), noise, &adaptive_cfg(400, Default::default())).unwrap();
        assert!(!rep.stopped_early && rep.samples_used == 400, "{rep:?}");
        assert!(rep.history.iter().any(|h| h.1 < 1.0));
        let bad = adaptive_cfg(400, AdaptiveSampling { round: 0, ..Default::default() });
        assert!(ex.explain_with_segments(&img, seg, easy, &bad).is_err());
    }

    #[test]
    fn gap_rule_stops_when_the_top5_stand_apart_and_not_on_noise() {
        let (img, seg) = grid();
        let ex = LimeImageExplainer::default();
        let cfg = adaptive_cfg(1000, AdaptiveSampling::gap(1.645));
        let (e, rep) = ex.explain_with_segments_report(&img, seg.clone(), easy, &cfg).unwrap();
        assert!(rep.stopped_early && rep.samples_used <= 1000 / 3, "{rep:?}");
        assert!(rep.separation.last().unwrap().1 >= 1.645, "{rep:?}");
        let f = ex.explain_with_segments(&img, seg.clone(), easy, &LimeConfig { adaptive: None, ..cfg.clone() }).unwrap();
        assert_eq!(top5(&e), top5(&f));
        // noise: the top 5 never stand apart, so it runs to the maximum and reports every round
        let (_, rep) =
            ex.explain_with_segments_report(&img, seg.clone(), noise, &adaptive_cfg(400, AdaptiveSampling::gap(1.645))).unwrap();
        assert!(!rep.stopped_early && rep.samples_used == 400, "{rep:?}");
        assert!(rep.separation.iter().all(|s| s.1 < 1.645) && rep.separation.len() == 5, "{rep:?}");
        let bad = adaptive_cfg(400, AdaptiveSampling::gap(f64::NAN));
        assert!(ex.explain_with_segments(&img, seg, easy, &bad).unwrap_err().to_string().contains("z must be finite"));
    }

    #[test]
    fn separation_is_infinite_with_k_columns_and_small_for_equal_effects() {
        let x = Array2::from_shape_fn((32, 3), |(i, j)| ((i >> j) & 1) as f64);
        let y: Array1<f64> = x.rows().into_iter().map(|r| r[0] + r[1] + r[2]).collect();
        let w = Array1::ones(32);
        assert_eq!(top_k_separation(x.view(), y.view(), w.view(), 1.0, 3).unwrap(), f64::INFINITY);
        // three equal effects: the top 2 cannot stand apart from the third
        let noisy: Array1<f64> = y.iter().enumerate().map(|(i, v)| v + ((i * 13 % 7) as f64 - 3.0) * 0.1).collect();
        assert!(top_k_separation(x.view(), noisy.view(), w.view(), 1.0, 2).unwrap() < 1.645);
    }
}
