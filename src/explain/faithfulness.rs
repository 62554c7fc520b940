//! Faithfulness of explanations, measured.
//!
//! * With a ground-truth mask of the class evidence (synthetic films: [`crate::synth`] writes
//!   them): the **pointing game** (is the map's maximum inside the mask? for LIME: does the most
//!   positive superpixel overlap it?) and the **energy** of the map inside the mask (the share of
//!   its positive mass there; a map that ignores the mask scores about the mask's area).
//! * Without masks (real films): **deletion** and **insertion** curves (Petsiuk et al., RISE,
//!   2018): the class probability as the most important pixels, by the map, are removed (set to
//!   black, LIME's hide colour 0) or inserted into a blurred copy, in `steps` equal steps, and
//!   the areas under them (low for deletion and high for insertion mean a faithful map).
//!
//! ```
//! use covid_cxr::explain::faithfulness::{energy_in_mask, pointing};
//! let map = ndarray::array![[0.0, 0.2], [0.9, 0.1]];
//! let mask = ndarray::array![[false, false], [true, false]];
//! assert!(pointing(map.view(), mask.view()));
//! assert!((energy_in_mask(map.view(), mask.view()) - 0.75).abs() < 1e-12);
//! ```

use crate::error::{Error, Result};
use crate::explain::lime::LabelExplanation;
use crate::explain::segmentation::Segments;
use crate::transforms::{Compose, Transform};
use image::{DynamicImage, RgbImage};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

fn check_dims<A, B>(a: ArrayView2<A>, b: ArrayView2<B>, what: &str) -> Result<()> {
    if a.dim() != b.dim() {
        return Err(Error::invalid(format!("{what}: map {:?} and mask {:?} differ in size", a.dim(), b.dim())));
    }
    Ok(())
}

/// The pointing game: whether the (first) maximum of `map` lies inside `mask`. A map and mask of
/// different sizes, or an empty map, point nowhere (false).
pub fn pointing(map: ArrayView2<f64>, mask: ArrayView2<bool>) -> bool {
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
    mask[at]
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
    /// Pointing game (with a non-empty mask).
    pub pointing: Option<bool>,
    /// Energy inside the mask (with a non-empty mask).
    pub energy: Option<f64>,
    /// Deletion / insertion curves (when computed).
    pub curves: Option<Curves>,
}

/// Scores a map against an optional mask and, with `steps > 0`, computes its curves.
pub fn score_map(
    image: &RgbImage,
    map: ArrayView2<f64>,
    mask: Option<ArrayView2<bool>>,
    class: usize,
    steps: usize,
    classifier: &mut impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>>,
) -> Result<MapScores> {
    let mut s = MapScores::default();
    if let Some(m) = mask {
        check_dims(map, m, "score_map")?;
        s.pointing = Some(pointing(map, m));
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
