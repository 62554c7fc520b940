//! Faithfulness of explanations, measured.
//!
//! * With a ground-truth mask of the class evidence (synthetic films: [`crate::synth`] writes
//!   them): the **pointing game** (is the map's maximum inside the mask, or within the game's
//!   usual tolerance of 15 pixels of it? for LIME: does the most positive superpixel overlap it?)
//!   and the **energy** of the map inside the mask (the share of its positive mass there; a map
//!   that ignores the mask scores about the mask's area).
//! * Without masks (real films): **deletion** and **insertion** curves (Petsiuk et al., RISE,
//!   2018): the class probability as the most important pixels, by the map, are removed (set to
//!   black, LIME's hide colour 0) or inserted into a blurred copy, in `steps` equal steps, and
//!   the areas under them (low for deletion and high for insertion mean a faithful map).
//!
//! [`measure_film`] measures both explanations of one film's true class (what `covid-cxr
//! faithfulness` does for each film of a folder), and [`summarize`] averages a set of films.
//!
//! ```
//! use covid_cxr::explain::faithfulness::{energy_in_mask, pointing};
//! let map = ndarray::array![[0.0, 0.2], [0.9, 0.1]];
//! let mask = ndarray::array![[false, false], [true, false]];
//! assert!(pointing(map.view(), mask.view()));
//! assert!((energy_in_mask(map.view(), mask.view()) - 0.75).abs() < 1e-12);
//! ```

use crate::data::ImageFolder;
use crate::error::{Error, Result};
use crate::explain::gradcam::{cam_maps, grad_cam_classes};
use crate::explain::lime::{LabelExplanation, LimeConfig, LimeImageExplainer};
use crate::explain::model_glue::{lime_classifier, model_view, to_batch};
use crate::explain::segmentation::Segments;
use crate::explain::Colormap;
use crate::model::TransferModel;
use crate::transforms::{Compose, Transform};
use image::{DynamicImage, RgbImage};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

fn check_dims<A, B>(a: ArrayView2<A>, b: ArrayView2<B>, what: &str) -> Result<()> {
    if a.dim() != b.dim() {
        return Err(Error::invalid(format!("{what}: map {:?} and mask {:?} differ in size", a.dim(), b.dim())));
    }
    Ok(())
}

/// The pointing game's usual tolerance, in pixels of the model's view: a maximum within this
/// distance of the mask counts as a hit, since a map's peak on the lesion's edge is as good as
/// one inside (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018, who
/// introduced the game, use 15 pixels). Grad-CAM's Mixed_7c map has one cell per 37 pixels of
/// the 299-pixel view, so its upsampled peak often sits just beside a small lesion.
pub const POINTING_TOLERANCE_PX: f64 = 15.0;

/// The strict pointing game: whether the (first) maximum of `map` lies inside `mask`. A map and
/// mask of different sizes, or an empty map, point nowhere (false).
pub fn pointing(map: ArrayView2<f64>, mask: ArrayView2<bool>) -> bool {
    pointing_within(map, mask, 0.0)
}

/// The pointing game with a tolerance: whether the (first) maximum of `map` lies within
/// `tolerance` pixels (Euclidean) of a pixel of `mask`; 0 is [`pointing`].
///
/// ```
/// use covid_cxr::explain::faithfulness::{pointing, pointing_within};
/// let mut map = ndarray::Array2::<f64>::zeros((40, 40));
/// map[[20, 5]] = 1.0;
/// let mut mask = ndarray::Array2::from_elem((40, 40), false);
/// mask[[20, 15]] = true; // 10 pixels to the right of the peak
/// assert!(!pointing(map.view(), mask.view()));
/// assert!(pointing_within(map.view(), mask.view(), 15.0));
/// assert!(!pointing_within(map.view(), mask.view(), 9.9));
/// ```
pub fn pointing_within(map: ArrayView2<f64>, mask: ArrayView2<bool>, tolerance: f64) -> bool {
    if map.dim() != mask.dim() || map.is_empty() {
        return false;
    }
    let (mut best, mut at) = (f64::NEG_INFINITY, (0, 0));
    for ((r, c), &v) in map.indexed_iter() {
        if v > best {
            best = v;
            at = (r, c);
        }
    }
    if mask[at] {
        return true;
    }
    let t = tolerance.max(0.0);
    let reach = t.floor() as usize;
    let (h, w) = mask.dim();
    let rows = at.0.saturating_sub(reach)..(at.0 + reach + 1).min(h);
    rows.into_iter().any(|r| {
        (at.1.saturating_sub(reach)..(at.1 + reach + 1).min(w)).any(|c| {
            let (dr, dc) = (r as f64 - at.0 as f64, c as f64 - at.1 as f64);
            mask[[r, c]] && dr * dr + dc * dc <= t * t
        })
    })
}

/// The share of the map's positive mass inside the mask (0 for a map without positive values).
pub fn energy_in_mask(map: ArrayView2<f64>, mask: ArrayView2<bool>) -> f64 {
    if map.dim() != mask.dim() {
        return 0.0;
    }
    let (mut inside, mut total) = (0.0, 0.0);
    for (&v, &m) in map.iter().zip(mask.iter()) {
        let v = v.max(0.0);
        total += v;
        if m {
            inside += v;
        }
    }
    if total > 0.0 {
        inside / total
    } else {
        0.0
    }
}

/// LIME's pointing game: whether the superpixel with the largest positive weight overlaps the
/// mask (false when no weight is positive).
///
/// ```
/// use covid_cxr::explain::{faithfulness::lime_pointing, LabelExplanation, Segments};
/// let seg = Segments::from_labels(ndarray::array![[0, 0, 1], [0, 2, 1]].view()).unwrap();
/// let exp = LabelExplanation { label: 0, intercept: 0.0, weights: vec![(1, 0.5), (2, 0.3)], score: 1.0, local_pred: 0.8 };
/// let mask = ndarray::array![[false, false, false], [false, true, false]];
/// assert!(!lime_pointing(&exp, &seg, mask.view()).unwrap()); // segment 1 misses
/// let mask = ndarray::array![[false, false, true], [false, false, false]];
/// assert!(lime_pointing(&exp, &seg, mask.view()).unwrap());
/// ```
pub fn lime_pointing(exp: &LabelExplanation, segments: &Segments, mask: ArrayView2<bool>) -> Result<bool> {
    check_dims(segments.labels.view(), mask, "lime_pointing")?;
    let top = exp
        .weights
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .fold(None, |a: Option<(usize, f64)>, &(s, w)| if a.is_none_or(|(_, b)| w > b) { Some((s, w)) } else { a });
    Ok(match top {
        Some((s, _)) => segments.labels.iter().zip(mask.iter()).any(|(&l, &m)| m && l as usize == s),
        None => false,
    })
}

/// A ground-truth mask as the model sees its film: the preprocessing's geometric steps (resize,
/// crop; marker masking left out) applied to the mask image, thresholded at half gray.
pub fn mask_view(mask: &DynamicImage, preprocessing: &Compose) -> Result<Array2<bool>> {
    let geometric =
        Compose { ops: preprocessing.ops.iter().filter(|t| !matches!(t, Transform::MaskMarkers(_))).cloned().collect() };
    let m = crate::explain::model_glue::model_view(mask, &geometric)?;
    let (w, h) = m.dimensions();
    Ok(Array2::from_shape_fn((h as usize, w as usize), |(r, c)| m.get_pixel(c as u32, r as u32)[0] >= 128))
}

/// Deletion and insertion curves of one map for one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// Shares of pixels removed / inserted: `0, 1/steps, ..., 1`.
    pub fractions: Vec<f64>,
    /// Class probability as the most important pixels are set to black.
    pub deletion: Vec<f64>,
    /// Class probability as the most important pixels are put back into a blurred copy.
    pub insertion: Vec<f64>,
    /// Area under the deletion curve (lower: more faithful).
    pub deletion_auc: f64,
    /// Area under the insertion curve (higher: more faithful).
    pub insertion_auc: f64,
}

/// Area under a curve sampled at equal steps on `[0, 1]` (trapezoids).
///
/// ```
/// assert!((covid_cxr::explain::faithfulness::auc(&[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-12);
/// ```
pub fn auc(ys: &[f64]) -> f64 {
    if ys.len() < 2 {
        return ys.first().copied().unwrap_or(0.0);
    }
    let dx = 1.0 / (ys.len() - 1) as f64;
    ys.windows(2).map(|p| 0.5 * (p[0] + p[1]) * dx).sum()
}

/// Deletion and insertion curves of `importance` (one value per pixel of `image`) for class
/// `class`, with `steps` steps (at least 1), asking `classifier` (RGB images in, probabilities
/// out, as LIME's) in one call per curve. Pixels are ranked by decreasing importance (ties in
/// raster order), so a LIME map ranks whole superpixels.
pub fn deletion_insertion(
    image: &RgbImage,
    importance: ArrayView2<f64>,
    class: usize,
    steps: usize,
    classifier: &mut impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
) -> Result<Curves> {
    let (w, h) = image.dimensions();
    if importance.dim() != (h as usize, w as usize) {
        return Err(Error::invalid(format!(
            "deletion_insertion: importance {:?} does not match the image {h} x {w}",
            importance.dim()
        )));
    }
    let steps = steps.max(1);
    let n = (w * h) as usize;
    let flat: Vec<f64> = importance.iter().copied().collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| flat[b].partial_cmp(&flat[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
    let blurred = image::imageops::blur(image, (w.min(h) as f32 / 20.0).max(1.0));
    let mut del = Vec::with_capacity(steps + 1);
    let mut ins = Vec::with_capacity(steps + 1);
    for k in 0..=steps {
        let m = n * k / steps;
        let mut d = image.clone();
        let mut i = blurred.clone();
        for &p in &order[..m] {
            let (x, y) = ((p % w as usize) as u32, (p / w as usize) as u32);
            d.put_pixel(x, y, image::Rgb([0, 0, 0]));
            i.put_pixel(x, y, *image.get_pixel(x, y));
        }
        del.push(d);
        ins.push(i);
    }
    let prob = |imgs: &[RgbImage], c: &mut dyn FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>| -> Result<Vec<f64>> {
        let rows = c(imgs)?;
        rows.iter()
            .map(|r| {
                r.get(class)
                    .copied()
                    .ok_or_else(|| Error::invalid(format!("class {class} but the classifier gave {} values", r.len())))
            })
            .collect()
    };
    let deletion = prob(&del, classifier)?;
    let insertion = prob(&ins, classifier)?;
    Ok(Curves {
        fractions: (0..=steps).map(|k| k as f64 / steps as f64).collect(),
        deletion_auc: auc(&deletion),
        insertion_auc: auc(&insertion),
        deletion,
        insertion,
    })
}

/// The figures of one film for one method, as the faithfulness command records them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapScores {
    /// Pointing game (with a non-empty mask), with the options' tolerance (Grad-CAM; LIME's is
    /// its top superpixel overlapping the mask).
    pub pointing: Option<bool>,
    /// The strict pointing game: the maximum inside the mask itself (Grad-CAM; LIME: as
    /// `pointing`).
    #[serde(default)]
    pub pointing_strict: Option<bool>,
    /// Energy inside the mask (with a non-empty mask).
    pub energy: Option<f64>,
    /// Deletion / insertion curves (when computed).
    pub curves: Option<Curves>,
}

/// Scores a map against an optional mask (the pointing game with `tolerance` pixels, and
/// strictly) and, with `steps > 0`, computes its curves.
pub fn score_map(
    image: &RgbImage,
    map: ArrayView2<f64>,
    mask: Option<ArrayView2<bool>>,
    tolerance: f64,
    class: usize,
    steps: usize,
    classifier: &mut impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
) -> Result<MapScores> {
    let mut s = MapScores::default();
    if let Some(m) = mask {
        check_dims(map, m, "score_map")?;
        s.pointing = Some(pointing_within(map, m, tolerance));
        s.pointing_strict = Some(pointing(map, m));
        s.energy = Some(energy_in_mask(map, m));
    }
    if steps > 0 {
        s.curves = Some(deletion_insertion(image, map, class, steps, classifier)?);
    }
    Ok(s)
}

/// Mean curves of several films (all with the same number of steps), for the figure.
pub fn mean_curves(curves: &[&Curves]) -> Option<Curves> {
    let first = curves.first()?;
    let k = first.fractions.len();
    if curves.iter().any(|c| c.fractions.len() != k) {
        return None;
    }
    let mean = |f: &dyn Fn(&Curves) -> &Vec<f64>| -> Vec<f64> {
        (0..k).map(|i| curves.iter().map(|c| f(c)[i]).sum::<f64>() / curves.len() as f64).collect()
    };
    let deletion = mean(&|c| &c.deletion);
    let insertion = mean(&|c| &c.insertion);
    Some(Curves {
        fractions: first.fractions.clone(),
        deletion_auc: auc(&deletion),
        insertion_auc: auc(&insertion),
        deletion,
        insertion,
    })
}

/// The mean deletion and insertion curves of named methods in one chart.
pub fn curves_figure(named: &[(String, Curves)]) -> Result<crate::plot::Figure> {
    use crate::plot::plot_err;
    let colors = [plotters::style::RGBColor(31, 119, 180), plotters::style::RGBColor(214, 39, 40)];
    Ok(crate::figure!(900, 480, |root| {
        let halves = root.split_evenly((1, 2));
        for (k, title) in ["deletion (lower is more faithful)", "insertion (higher is more faithful)"].iter().enumerate()
        {
            let mut chart = ChartBuilder::on(&halves[k])
                .caption(*title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..1f64, 0f64..1f64)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("share of pixels, most important first")
                .y_desc("class probability")
                .draw()
                .map_err(plot_err)?;
            for (i, (name, c)) in named.iter().enumerate() {
                let ys = if k == 0 { &c.deletion } else { &c.insertion };
                let a = if k == 0 { c.deletion_auc } else { c.insertion_auc };
                let col = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(c.fractions.iter().copied().zip(ys.iter().copied()), col.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(format!("{name} (AUC {a:.3})"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    }))
}

/// Settings of [`measure_film`] (the defaults are `covid-cxr faithfulness`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaithfulnessOptions {
    /// LIME samples per film (at least 2; each is one model input).
    pub samples: usize,
    /// LIME's seed.
    pub seed: u64,
    /// Steps of the deletion/insertion curves (0: no curves; each step costs 4 model inputs).
    pub steps: usize,
    /// LIME: images per model call.
    pub batch_size: usize,
    /// Grad-CAM's pointing game: pixels (of the model's view) the maximum may lie from the mask
    /// and still hit ([`POINTING_TOLERANCE_PX`]; 0 = strict; the strict game is always reported
    /// too).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    POINTING_TOLERANCE_PX
}

impl Default for FaithfulnessOptions {
    fn default() -> Self {
        FaithfulnessOptions { samples: 300, seed: 0, steps: 10, batch_size: 8, tolerance: POINTING_TOLERANCE_PX }
    }
}

/// One film's measures: both explanations of its true class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilmScores {
    /// The film.
    pub path: PathBuf,
    /// Its true class (index into the model's classes).
    pub label: usize,
    /// The model's probability of the true class.
    pub probability: f64,
    /// The model's top class.
    pub predicted: usize,
    /// The share of the film (as the model sees it) inside the mask, when a mask was given: the
    /// energy a map blind to the lesion would score.
    pub mask_share: Option<f64>,
    /// Grad-CAM (Mixed_7c) for the true class.
    pub gradcam: MapScores,
    /// LIME's superpixel weights for the true class, as a heatmap; its pointing is LIME's own
    /// ([`lime_pointing`]).
    pub lime: MapScores,
    /// LIME's number of superpixels.
    pub lime_segments: usize,
}

fn class_name(classes: &[String], k: usize) -> String {
    classes.get(k).cloned().unwrap_or_else(|| format!("class {k}"))
}

fn point_word(s: &MapScores) -> &'static str {
    match (s.pointing, s.pointing_strict) {
        (Some(true), Some(false)) => "near",
        (Some(true), _) => "hit",
        (Some(false), _) => "miss",
        (None, _) => "n/a",
    }
}

fn point_mark(s: &MapScores) -> String {
    match point_word(s) {
        "n/a" => String::new(),
        w => format!(": {w}"),
    }
}

fn fmt3(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into())
}

impl FilmScores {
    /// Titles of the four tiles of [`measure_film`]: the class and its probability, the mask, and
    /// each method with its pointing game (hit, near: within the tolerance but outside the mask,
    /// or miss).
    pub fn tile_titles(&self, classes: &[String]) -> [String; 4] {
        [
            format!("{} (p {:.2})", class_name(classes, self.label), self.probability),
            if self.mask_share.is_some() { "mask (red)".into() } else { "no mask".into() },
            format!("Grad-CAM{}", point_mark(&self.gradcam)),
            format!("LIME{}", point_mark(&self.lime)),
        ]
    }

    /// One line: the film's name, its class, probability and prediction, and both methods'
    /// pointing game (hit; near: within the tolerance only; miss) and energy in the mask.
    pub fn line(&self, classes: &[String]) -> String {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!(
            "{name}: {} p {:.2}, predicted {} | Grad-CAM pointing {} energy {} | LIME pointing {} energy {} | mask share {}",
            class_name(classes, self.label),
            self.probability,
            class_name(classes, self.predicted),
            point_word(&self.gradcam),
            fmt3(self.gradcam.energy),
            point_word(&self.lime),
            fmt3(self.lime.energy),
            fmt3(self.mask_share),
        )
    }
}

/// The films of `ds` to measure against the masks at `masks/<class>/<file name>` (white =
/// evidence): `(path, label, mask path)` of those whose mask exists and is not empty, and the
/// counts of films without a mask and with an empty one.
pub fn films_with_masks(ds: &ImageFolder, masks: &Path) -> Result<(Vec<(PathBuf, usize, PathBuf)>, usize, usize)> {
    if !masks.is_dir() {
        return Err(Error::dataset(masks, "the masks folder does not exist"));
    }
    let (mut films, mut no_mask, mut empty_mask) = (Vec::new(), 0usize, 0usize);
    for (p, l) in &ds.samples {
        let name = p.file_name().ok_or_else(|| Error::dataset(p, "a film without a file name"))?;
        let mp = masks.join(class_name(&ds.classes, *l as usize)).join(name);
        if !mp.is_file() {
            no_mask += 1;
        } else if crate::imageio::open_image(&mp)?.to_luma8().pixels().any(|v| v[0] >= 128) {
            films.push((p.clone(), *l as usize, mp));
        } else {
            empty_mask += 1;
        }
    }
    Ok((films, no_mask, empty_mask))
}

/// Measures Grad-CAM and LIME of one film's true class `label`: their pointing game and energy in
/// the mask at `mask` (a ground-truth image of the evidence, white on black, the film's size;
/// see [`crate::synth::generate_with_masks`]) and, with `opts.steps > 0`, their deletion and
/// insertion curves. The film is seen through `preprocessing` (the model's inference
/// transforms). Returns the scores and four tiles for a figure: the film as the model sees it,
/// the mask in red on it, Grad-CAM over it, and LIME's heatmap (blue for the class); their titles
/// are [`FilmScores::tile_titles`].
///
/// LIME dominates the cost: `opts.samples` model inputs per film.
pub fn measure_film(
    model: &TransferModel,
    preprocessing: &Compose,
    path: &Path,
    label: usize,
    mask: Option<&Path>,
    opts: &FaithfulnessOptions,
) -> Result<(FilmScores, [RgbImage; 4])> {
    if opts.samples < 2 {
        return Err(Error::invalid("faithfulness: samples must be at least 2 (LIME needs perturbed samples)"));
    }
    let img = crate::imageio::open_image(path)?;
    let view = model_view(&img, preprocessing)?;
    let x = to_batch(std::slice::from_ref(&view), preprocessing)?;
    let probs: Vec<f64> =
        Vec::<f64>::try_from(tch::no_grad(|| model.predict_proba(&x)).to_kind(tch::Kind::Double).get(0))?;
    let probability = *probs.get(label).ok_or_else(|| {
        Error::invalid(format!("{}: class {label}, but the model has {} classes", path.display(), probs.len()))
    })?;
    let predicted = (0..probs.len()).max_by(|a, b| probs[*a].total_cmp(&probs[*b])).unwrap_or(0);
    let mask = match mask {
        Some(mp) => Some(mask_view(&crate::imageio::open_image(mp)?, preprocessing)?),
        None => None,
    };
    let cam = cam_maps(&grad_cam_classes(model, &x, &[label as i64])?)?
        .pop()
        .ok_or_else(|| Error::invalid("Grad-CAM returned no map"))?;
    let cfg = LimeConfig {
        top_labels: None,
        labels: vec![label],
        hide_color: Some([0; 3]),
        num_samples: opts.samples,
        batch_size: opts.batch_size,
        seed: opts.seed,
        ..LimeConfig::default()
    };
    let mut classify = lime_classifier(model, preprocessing);
    let exp = LimeImageExplainer::default().explain_instance(&view, &mut classify, &cfg)?;
    let heat = exp.heatmap(label)?;
    let mv = mask.as_ref().map(|a| a.view());
    let gradcam = score_map(&view, cam.mapv(f64::from).view(), mv, opts.tolerance, label, opts.steps, &mut classify)?;
    let mut lime = score_map(&view, heat.view(), mv, opts.tolerance, label, opts.steps, &mut classify)?;
    if let Some(mk) = &mask {
        let hit = lime_pointing(exp.label(label)?, &exp.segments, mk.view())?;
        (lime.pointing, lime.pointing_strict) = (Some(hit), Some(hit));
    }
    let mask_img = match &mask {
        Some(mk) => RgbImage::from_fn(view.width(), view.height(), |c, r| {
            let p = view.get_pixel(c, r).0;
            if mk[[r as usize, c as usize]] {
                image::Rgb([p[0] / 2 + 127, p[1] / 2, p[2] / 2])
            } else {
                image::Rgb(p)
            }
        }),
        None => view.clone(),
    };
    let lim = heat.iter().fold(1e-12f64, |a, v| a.max(v.abs()));
    let tiles = [
        view.clone(),
        mask_img,
        crate::explain::overlay(&view, cam.view(), Colormap::Jet, 0.45)?,
        crate::plot::heatmap_image(heat.view(), Colormap::RdBu, -lim, lim),
    ];
    let scores = FilmScores {
        path: path.to_path_buf(),
        label,
        probability,
        predicted,
        mask_share: mask.as_ref().map(|mk| mk.iter().filter(|&&v| v).count() as f64 / mk.len().max(1) as f64),
        gradcam,
        lime,
        lime_segments: exp.segments.n_segments,
    };
    Ok((scores, tiles))
}

/// The means over a set of films, as `covid-cxr faithfulness` reports them. A figure is `None`
/// when no film has it (pointing and energy need masks, the curves `steps > 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaithfulnessSummary {
    /// Films.
    pub n: usize,
    /// Share of films whose top class is the true class.
    pub accuracy: Option<f64>,
    /// Share of films (with a mask) where Grad-CAM's maximum is within the tolerance of the mask.
    pub gradcam_pointing: Option<f64>,
    /// Share of films (with a mask) where Grad-CAM's maximum is inside the mask itself.
    #[serde(default)]
    pub gradcam_pointing_strict: Option<f64>,
    /// Share of films (with a mask) where LIME's most positive superpixel overlaps the mask.
    pub lime_pointing: Option<f64>,
    /// Mean share of Grad-CAM's positive mass inside the mask.
    pub gradcam_energy: Option<f64>,
    /// Mean share of LIME's positive mass inside the mask.
    pub lime_energy: Option<f64>,
    /// Mean share of the film inside the mask (what a blind map would score as energy).
    pub mask_share: Option<f64>,
    /// Grad-CAM's mean deletion and insertion curves.
    pub gradcam_curves: Option<Curves>,
    /// LIME's mean deletion and insertion curves.
    pub lime_curves: Option<Curves>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The means of [`FilmScores`] over films (`None` where no film has the figure).
///
/// ```
/// use covid_cxr::explain::faithfulness::{summarize, FilmScores, MapScores};
/// let film = |label, hit, energy| FilmScores {
///     path: "f.png".into(), label, probability: 0.9, predicted: 0, mask_share: Some(0.1),
///     gradcam: MapScores { pointing: Some(hit), pointing_strict: Some(hit), energy: Some(energy), curves: None },
///     lime: MapScores { pointing: Some(true), pointing_strict: Some(true), energy: Some(0.5), curves: None },
///     lime_segments: 40,
/// };
/// let s = summarize(&[film(0, true, 0.6), film(2, false, 0.2)]);
/// assert_eq!((s.n, s.accuracy, s.gradcam_pointing, s.lime_pointing), (2, Some(0.5), Some(0.5), Some(1.0)));
/// assert!((s.gradcam_energy.unwrap() - 0.4).abs() < 1e-12);
/// assert!(s.gradcam_curves.is_none());
/// assert!(s.to_string().starts_with("films 2: Grad-CAM pointing 0.500 (strict 0.500) energy 0.400 | LIME pointing 1.000"));
/// ```
pub fn summarize(films: &[FilmScores]) -> FaithfulnessSummary {
    let share = |f: &dyn Fn(&FilmScores) -> Option<bool>| mean(films.iter().filter_map(f).map(|b| b as u8 as f64));
    let avg = |f: &dyn Fn(&FilmScores) -> Option<f64>| mean(films.iter().filter_map(f));
    let curves =
        |f: &dyn Fn(&FilmScores) -> Option<&Curves>| mean_curves(&films.iter().filter_map(f).collect::<Vec<_>>());
    FaithfulnessSummary {
        n: films.len(),
        accuracy: share(&|r| Some(r.predicted == r.label)),
        gradcam_pointing: share(&|r| r.gradcam.pointing),
        gradcam_pointing_strict: share(&|r| r.gradcam.pointing_strict),
        lime_pointing: share(&|r| r.lime.pointing),
        gradcam_energy: avg(&|r| r.gradcam.energy),
        lime_energy: avg(&|r| r.lime.energy),
        mask_share: avg(&|r| r.mask_share),
        gradcam_curves: curves(&|r| r.gradcam.curves.as_ref()),
        lime_curves: curves(&|r| r.lime.curves.as_ref()),
    }
}

impl FaithfulnessSummary {
    /// The mean curves of both methods in one chart (`None` without curves).
    pub fn curves_figure(&self) -> Result<Option<crate::plot::Figure>> {
        let named: Vec<(String, Curves)> = [("Grad-CAM", &self.gradcam_curves), ("LIME", &self.lime_curves)]
            .into_iter()
            .filter_map(|(k, c)| c.clone().map(|c| (k.to_string(), c)))
            .collect();
        if named.is_empty() {
            return Ok(None);
        }
        curves_figure(&named).map(Some)
    }
}

impl std::fmt::Display for FaithfulnessSummary {
    /// One line: pointing and energy of both methods, the mask share, and the curves' areas
    /// (`n/a` where there are none).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auc = |c: &Option<Curves>, deletion: bool| {
            fmt3(c.as_ref().map(|c| if deletion { c.deletion_auc } else { c.insertion_auc }))
        };
        write!(
            f,
            "films {}: Grad-CAM pointing {} (strict {}) energy {} | LIME pointing {} energy {} | mask share {} | deletion AUC Grad-CAM {} LIME {} | insertion AUC Grad-CAM {} LIME {}",
            self.n,
            fmt3(self.gradcam_pointing),
            fmt3(self.gradcam_pointing_strict),
            fmt3(self.gradcam_energy),
            fmt3(self.lime_pointing),
            fmt3(self.lime_energy),
            fmt3(self.mask_share),
            auc(&self.gradcam_curves, true),
            auc(&self.lime_curves, true),
            auc(&self.gradcam_curves, false),
            auc(&self.lime_curves, false),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn pointing_true_and_false() {
        let mask = array![[true, false], [false, false]];
        assert!(pointing(array![[1.0, 0.0], [0.0, 0.5]].view(), mask.view()));
        assert!(!pointing(array![[0.1, 0.0], [0.0, 0.5]].view(), mask.view()));
        // ties: the first maximum in raster order
        assert!(pointing(array![[1.0, 1.0], [0.0, 0.0]].view(), mask.view()));
        assert!(!pointing(array![[1.0]].view(), mask.view()));
    }

    #[test]
    fn pointing_tolerance_is_euclidean_and_clipped_at_the_border() {
        let mut map = Array2::<f64>::zeros((30, 30));
        map[[0, 0]] = 1.0; // the peak in a corner: the search window must stop at the border
        let mut mask = Array2::from_elem((30, 30), false);
        mask[[3, 4]] = true; // 5 pixels away (3-4-5), diagonally
        assert!(!pointing_within(map.view(), mask.view(), 4.9));
        assert!(pointing_within(map.view(), mask.view(), 5.0));
        assert_eq!(pointing_within(map.view(), mask.view(), 0.0), pointing(map.view(), mask.view()));
        assert!(!pointing_within(map.view(), mask.view(), -3.0));
        assert!(!pointing_within(map.view(), Array2::from_elem((2, 2), true).view(), 100.0));
    }

    #[test]
    fn energy_counts_positive_mass() {
        let mask = array![[true, false], [false, false]];
        assert_eq!(energy_in_mask(array![[2.0, -5.0], [2.0, 0.0]].view(), mask.view()), 0.5);
        assert_eq!(energy_in_mask(array![[0.0, 0.0], [0.0, -1.0]].view(), mask.view()), 0.0);
    }

    /// A checkerboard on the left half, gray on the right.
    fn board() -> RgbImage {
        RgbImage::from_fn(16, 8, |x, y| image::Rgb([if x >= 8 { 128 } else if (x + y) % 2 == 0 { 255 } else { 0 }; 3]))
    }

    /// A toy model: the probability of class 0 is the share of the left half's pixels that show
    /// the checkerboard (blurring or blackening destroys it).
    fn left_board(imgs: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
        let b = board();
        Ok(imgs
            .iter()
            .map(|im| {
                let hits = (0..8u32)
                    .flat_map(|y| (0..8u32).map(move |x| (x, y)))
                    .filter(|&(x, y)| (im.get_pixel(x, y)[0] as i32 - b.get_pixel(x, y)[0] as i32).abs() < 10)
                    .count();
                let p = hits as f64 / 64.0;
                vec![p, 1.0 - p]
            })
            .collect())
    }

    #[test]
    fn deletion_and_insertion_rank_good_maps_above_bad_ones() {
        let img = board();
        let good = Array2::from_shape_fn((8, 16), |(_, c)| if c < 8 { 1.0 } else { 0.0 });
        let bad = good.mapv(|v| 1.0 - v);
        let g = deletion_insertion(&img, good.view(), 0, 4, &mut left_board).unwrap();
        let b = deletion_insertion(&img, bad.view(), 0, 4, &mut left_board).unwrap();
        assert_eq!(g.fractions, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(g.deletion[0], 1.0);
        assert!((g.deletion[2] - 0.5).abs() < 1e-12, "{g:?}"); // the white squares of the left half gone
        assert!(g.deletion_auc < b.deletion_auc, "{g:?} {b:?}");
        assert!(g.insertion_auc > b.insertion_auc, "{g:?} {b:?}");
        assert!((g.insertion[2] - 1.0).abs() < 1e-12 && b.insertion[2] < 0.9, "{g:?} {b:?}");
        let m = mean_curves(&[&g, &b]).unwrap();
        assert!((m.deletion_auc - 0.5 * (g.deletion_auc + b.deletion_auc)).abs() < 1e-12);
        assert!(deletion_insertion(&img, array![[1.0]].view(), 0, 4, &mut left_board).is_err());
        assert!(deletion_insertion(&img, good.view(), 5, 4, &mut left_board).is_err());
    }

    #[test]
    fn summary_of_nothing_and_of_films_without_masks() {
        let s = summarize(&[]);
        assert_eq!((s.n, s.accuracy, s.gradcam_energy), (0, None, None));
        assert!(s.to_string().contains("pointing n/a energy n/a"), "{s}");
        let c = Curves {
            fractions: vec![0.0, 1.0],
            deletion: vec![1.0, 0.0],
            insertion: vec![0.0, 1.0],
            deletion_auc: 0.5,
            insertion_auc: 0.5,
        };
        let film = FilmScores {
            path: "d/covid/a.png".into(),
            label: 0,
            probability: 0.25,
            predicted: 2,
            mask_share: None,
            gradcam: MapScores { curves: Some(c.clone()), ..MapScores::default() },
            lime: MapScores::default(),
            lime_segments: 3,
        };
        let s = summarize(&[film.clone()]);
        assert_eq!((s.accuracy, s.gradcam_pointing, s.lime_curves.as_ref()), (Some(0.0), None, None));
        assert_eq!(s.gradcam_curves.as_ref(), Some(&c));
        let line = s.to_string();
        assert!(
            line.ends_with("deletion AUC Grad-CAM 0.500 LIME n/a | insertion AUC Grad-CAM 0.500 LIME n/a"),
            "{line}"
        );
        assert!(s.curves_figure().unwrap().is_some() && summarize(&[]).curves_figure().unwrap().is_none());
        let classes: Vec<String> = ["covid", "normal", "pneumonia"].map(String::from).to_vec();
        assert_eq!(film.tile_titles(&classes), ["covid (p 0.25)", "no mask", "Grad-CAM", "LIME"].map(String::from));
        assert_eq!(film.line(&classes[..1]), "a.png: covid p 0.25, predicted class 2 | Grad-CAM pointing n/a energy n/a | LIME pointing n/a energy n/a | mask share n/a");
    }

    #[test]
    fn films_with_masks_skips_missing_and_empty_masks() {
        let dir = tempfile::tempdir().unwrap();
        let (data, masks) = (dir.path().join("data"), dir.path().join("masks"));
        let cfg = crate::synth::SynthConfig { width_range: (64, 64), ..crate::synth::SynthConfig::new(2, 5) };
        crate::synth::generate_with_masks(&data, Some(&masks), &cfg, |_| {}).unwrap();
        std::fs::remove_file(masks.join("covid/synth_covid_00001.png")).unwrap();
        let ds = ImageFolder::open(&data, Compose::notebook_val(64)).unwrap();
        let (films, no_mask, empty) = films_with_masks(&ds, &masks).unwrap();
        assert_eq!((films.len(), no_mask, empty), (3, 1, 2)); // normal masks are empty
        assert!(films.iter().all(|(p, l, m)| ds.classes[*l] != "normal" && p.file_name() == m.file_name()));
        assert!(films_with_masks(&ds, &dir.path().join("nowhere")).unwrap_err().to_string().contains("nowhere"));
    }

    #[test]
    fn mask_follows_the_resize() {
        let mut m = image::GrayImage::new(40, 20);
        for y in 0..20 {
            for x in 0..20 {
                m.put_pixel(x, y, image::Luma([255]));
            }
        }
        let v = mask_view(&DynamicImage::ImageLuma8(m), &Compose::notebook_val(10).with_marker_masking()).unwrap();
        assert_eq!(v.dim(), (10, 10));
        assert!(v[[5, 2]] && !v[[5, 8]]);
    }
}
