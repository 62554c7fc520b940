//! Burned-in markers: finding and masking the text and symbols a hospital burns into a film near
//! its border ("PORTABLE", "R"/"L", dates, ...), which a model can learn instead of the lungs (a
//! shortcut). The step finds small, bright, high-contrast connected components in a band along
//! the border and fills them (slightly dilated) with the local background.
//!
//! It is a preprocessing step ([`crate::transforms::Transform::MaskMarkers`]): a run trained with
//! it records it in its manifest, and evaluation, prediction and explanation apply it the same way.
//!
//! ```
//! use covid_cxr::markers::{mask_markers, MarkerMasking};
//! let mut img = image::GrayImage::from_pixel(200, 200, image::Luma([90]));
//! covid_cxr::synth::burn_text(&mut img, "PORTABLE", 8, 6, 2, 250);
//! let (clean, found) = mask_markers(&img, &MarkerMasking::default());
//! assert!(found.components >= 8);
//! assert!(clean.pixels().all(|p| p[0] < 120)); // the word is gone
//! ```

use image::{GrayImage, Luma, RgbImage};
use serde::{Deserialize, Serialize};

/// Parameters of the marker search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MarkerMasking {
    /// Width of the searched band along each border, as a share of the image's smaller side.
    pub band: f32,
    /// A marker pixel is at least this many gray levels above the local mean.
    pub contrast: u8,
    /// ... and at least this bright.
    pub min_value: u8,
    /// A component's box may be at most this share of the image's height (and 3x it in width).
    pub max_size: f32,
}

impl Default for MarkerMasking {
    fn default() -> Self {
        MarkerMasking { band: 0.16, contrast: 40, min_value: 200, max_size: 0.15 }
    }
}

/// What [`mask_markers`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MarkerReport {
    /// Number of components masked.
    pub components: usize,
    /// Number of pixels replaced.
    pub pixels: usize,
    /// Boxes `[x, y, width, height]` of the masked components.
    pub boxes: Vec<[u32; 4]>,
}

/// Integral image of `v` (with a zero first row and column).
fn integral(v: &[f32], w: usize, h: usize) -> Vec<f64> {
    let mut s = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0f64;
        for x in 0..w {
            row += v[y * w + x] as f64;
            s[(y + 1) * (w + 1) + x + 1] = s[y * (w + 1) + x + 1] + row;
        }
    }
    s
}

fn box_sum(s: &[f64], w: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> f64 {
    let w1 = w + 1;
    s[y1 * w1 + x1] - s[y0 * w1 + x1] - s[y1 * w1 + x0] + s[y0 * w1 + x0]
}

/// Finds burned-in markers in a grayscale film and returns the film with them filled by the local
/// background, and what was found. A film without markers comes back unchanged.
pub fn mask_markers(img: &GrayImage, cfg: &MarkerMasking) -> (GrayImage, MarkerReport) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut report = MarkerReport::default();
    if w < 16 || h < 16 {
        return (img.clone(), report);
    }
    let px: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
    let side = w.min(h) as f32;
    let band = ((cfg.band * side) as usize).max(2);
    let r = ((side / 20.0) as usize).max(3);
    let sum = integral(&px, w, h);
    let rs = ((side / 100.0) as usize).max(3);
    let local_mean = |x: usize, y: usize, r: usize| {
        let (x0, y0, x1, y1) = (x.saturating_sub(r), y.saturating_sub(r), (x + r + 1).min(w), (y + r + 1).min(h));
        box_sum(&sum, w, x0, y0, x1, y1) / ((x1 - x0) * (y1 - y0)) as f64
    };
    let in_band = |x: usize, y: usize| x < band || y < band || x + band >= w || y + band >= h;
    // seeds: bright pixels with a sharp edge nearby (burned-in after the film's blur); a
    // component grows from them over bright pixels that stand out of the wider neighbourhood
    let mut seed = vec![false; w * h];
    let mut cand = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = px[y * w + x];
            if !in_band(x, y) || v < cfg.min_value as f32 {
                continue;
            }
            let c = cfg.contrast as f64;
            seed[y * w + x] = v as f64 >= local_mean(x, y, rs) + c;
            cand[y * w + x] = seed[y * w + x] || v as f64 >= local_mean(x, y, r) + c;
        }
    }
    // connected components (8-neighbourhood) of the candidates
    let mut label = vec![0u32; w * h];
    let mut keep = vec![false; w * h];
    let mut next = 0u32;
    let mut stack = Vec::new();
    let max_h = (cfg.max_size * h as f32).max(3.0) as usize;
    let max_w = (3.0 * cfg.max_size * h as f32).max(3.0) as usize;
    for start in 0..w * h {
        if !seed[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        let mut members = Vec::new();
        stack.push(start);
        label[start] = next;
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        let mut all_in_band = true;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            members.push(i);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            all_in_band &= in_band(x, y);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if cand[j] && label[j] == 0 {
                        label[j] = next;
                        stack.push(j);
                    }
                }
            }
        }
        let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
        if all_in_band && members.len() >= 3 && bh <= max_h && bw <= max_w {
            for &i in &members {
                keep[i] = true;
            }
            report.components += 1;
            report.boxes.push([x0 as u32, y0 as u32, bw as u32, bh as u32]);
        }
    }
    if report.components == 0 {
        return (img.clone(), report);
    }
    // dilate the kept pixels (anti-aliasing, JPEG halos), then fill each with the mean of the
    // non-candidate pixels around it
    let d = ((side / 200.0) as i64).max(1) + 1;
    let mut fill = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            if !keep[y * w + x] {
                continue;
            }
            for dy in -d..=d {
                for dx in -d..=d {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx >= 0 && ny >= 0 && nx < w as i64 && ny < h as i64 {
                        fill[ny as usize * w + nx as usize] = true;
                    }
                }
            }
        }
    }
    let bg: Vec<f32> = px.iter().zip(&fill).map(|(&v, &f)| if f { 0.0 } else { v }).collect();
    let cnt: Vec<f32> = fill.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect();
    let (sb, sc) = (integral(&bg, w, h), integral(&cnt, w, h));
    let mut out = img.clone();
    let rr = r * 2;
    for y in 0..h {
        for x in 0..w {
            if !fill[y * w + x] {
                continue;
            }
            let (x0, y0, x1, y1) =
                (x.saturating_sub(rr), y.saturating_sub(rr), (x + rr + 1).min(w), (y + rr + 1).min(h));
            let n = box_sum(&sc, w, x0, y0, x1, y1);
            let v = if n > 0.0 { box_sum(&sb, w, x0, y0, x1, y1) / n } else { px[y * w + x] as f64 };
            out.put_pixel(x as u32, y as u32, Luma([v.round().clamp(0.0, 255.0) as u8]));
            report.pixels += 1;
        }
    }
    (out, report)
}

/// [`mask_markers`] on an RGB image: the search runs on its luminance and the masked pixels are
/// set to the gray background in all three channels (other pixels keep their colour).
pub fn mask_markers_rgb(img: &RgbImage, cfg: &MarkerMasking) -> (RgbImage, MarkerReport) {
    let gray = image::DynamicImage::ImageRgb8(img.clone()).to_luma8();
    let (clean, rep) = mask_markers(&gray, cfg);
    if rep.components == 0 {
        return (img.clone(), rep);
    }
    let mut out = img.clone();
    for ((o, g), c) in out.pixels_mut().zip(gray.pixels()).zip(clean.pixels()) {
        if g[0] != c[0] {
            *o = image::Rgb([c[0]; 3]);
        }
    }
    (out, rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{synth_film, SynthConfig};

    #[test]
    fn finds_the_burned_in_word_on_synthetic_films() {
        let cfg = SynthConfig { marker_probability: 0.0, ..Default::default() };
        for seed in 0..6 {
            let f = synth_film("normal", seed, &cfg, Some("PORTABLE"));
            let [bx, by, bw, bh] = f.shortcut_box.unwrap();
            let (clean, rep) = mask_markers(&f.image, &MarkerMasking::default());
            assert!(rep.components >= 6, "seed {seed}: {rep:?}");
            // inside the word's box, no pixel stays near the burned-in value
            let bright = (by..by + bh)
                .flat_map(|y| (bx..bx + bw).map(move |x| (x, y)))
                .filter(|&(x, y)| clean.get_pixel(x, y)[0] >= 235)
                .count();
            assert!(bright < 3, "seed {seed}: {bright} bright pixels left");
        }
    }

    #[test]
    fn leaves_films_without_markers_nearly_unchanged() {
        let cfg = SynthConfig { marker_probability: 0.0, ..Default::default() };
        for (k, class) in crate::synth::CLASSES.iter().enumerate() {
            for seed in 0..4 {
                let f = synth_film(class, 100 * k as u64 + seed, &cfg, None);
                let (clean, rep) = mask_markers(&f.image, &MarkerMasking::default());
                let n = (f.image.width() * f.image.height()) as f64;
                assert!((rep.pixels as f64) < 0.002 * n, "{class} {seed}: {rep:?}");
                let changed = f.image.pixels().zip(clean.pixels()).filter(|(a, b)| a != b).count() as f64;
                assert!(changed < 0.002 * n);
            }
        }
    }

    #[test]
    fn rgb_and_tiny_images() {
        let mut g = GrayImage::from_pixel(120, 120, Luma([60]));
        crate::synth::burn_text(&mut g, "L", 110, 4, 2, 255);
        let rgb = image::DynamicImage::ImageLuma8(g).to_rgb8();
        let (out, rep) = mask_markers_rgb(&rgb, &MarkerMasking::default());
        assert_eq!(rep.components, 1);
        assert!(out.pixels().all(|p| p[0] < 100));
        let tiny = GrayImage::from_pixel(8, 8, Luma([255]));
        assert_eq!(mask_markers(&tiny, &MarkerMasking::default()).0, tiny);
    }
}
