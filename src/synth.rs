//! The embedded default data set: synthetic frontal chest films.
//!
//! **Synthetic and not diagnostic.** These images are drawn by a procedural model of a
//! chest radiograph so that the whole pipeline can run on a machine where no real data
//! set can be downloaded. They look like chest films (lung fields, ribs, clavicles,
//! spine, heart shadow, diaphragm domes, soft tissue, noise, exposure and positioning
//! that vary, sometimes a burned-in "R" or "L" marker), and their class evidence follows
//! what radiologists describe:
//!
//! * `pneumonia`: a lobar or segmental consolidation, dense with fairly sharp borders,
//!   usually in one lung;
//! * `covid`: bilateral, peripheral, lower-zone ground-glass opacities, hazy and patchy;
//! * `normal`: clear lungs.
//!
//! Generation is deterministic for a seed: the same seed gives the same bytes.

use crate::error::{Error, IoContext, Result};
use crate::imageio::save_image;
use image::{DynamicImage, GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The three classes of the notebook, in ImageFolder (sorted) order.
pub const CLASSES: [&str; 3] = ["covid", "normal", "pneumonia"];

/// Options of the synthetic generator.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Images per class.
    pub per_class: usize,
    /// Seed: the same seed gives the same images.
    pub seed: u64,
    /// Smallest and largest image width in pixels (height follows a random aspect ratio).
    pub width_range: (u32, u32),
    /// Probability of a burned-in "R"/"L" marker.
    pub marker_probability: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { per_class: 40, seed: 1337, width_range: (320, 560), marker_probability: 0.4 }
    }
}

impl SynthConfig {
    /// A config with `per_class` images per class and `seed`.
    ///
    /// ```
    /// let cfg = covid_cxr::synth::SynthConfig::new(5, 42);
    /// assert_eq!(cfg.per_class, 5);
    /// ```
    pub fn new(per_class: usize, seed: u64) -> Self {
        SynthConfig { per_class, seed, ..Default::default() }
    }
}

fn mix_seed(seed: u64, class: usize, index: usize) -> u64 {
    // independent streams per image
    crate::seed::mix(seed, class as u64, 0x9E37_79B9_7F4A_7C15, index as u64, 0xD1B5_4A32_D192_ED03)
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A smooth random field in [0, 1] (bilinear value noise on a `cell`-pixel grid).
struct ValueNoise {
    gw: usize,
    grid: Vec<f32>,
    cell: f32,
}

impl ValueNoise {
    fn new(rng: &mut impl Rng, w: u32, h: u32, cell: f32) -> Self {
        let gw = (w as f32 / cell).ceil() as usize + 2;
        let gh = (h as f32 / cell).ceil() as usize + 2;
        let grid = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
        ValueNoise { gw, grid, cell }
    }
    fn at(&self, x: f32, y: f32) -> f32 {
        let fx = (x / self.cell).max(0.0);
        let fy = (y / self.cell).max(0.0);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let (tx, ty) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let g = |i: usize, j: usize| self.grid[j * self.gw + i];
        let a = g(ix, iy) * (1.0 - tx) + g(ix + 1, iy) * tx;
        let b = g(ix, iy + 1) * (1.0 - tx) + g(ix + 1, iy + 1) * tx;
        a * (1.0 - ty) + b * ty
    }
}

/// Which lung a finding sits in (patient's side: the patient's right is on the image's left).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Right,
    Left,
}

/// The geometry of one synthetic patient on one film.
struct Anatomy {
    cx: f32,
    torso_hw: f32,
    lung_top: f32,
    lung_base: f32,
    gap: f32,
    lung_w: f32,
    dome: f32,
    heart: (f32, f32, f32, f32),
    rib_spacing: f32,
    rib_curve: f32,
    tilt: f32,
}

impl Anatomy {
    fn sample(rng: &mut impl Rng, w: f32, h: f32) -> Self {
        let cx = w * rng.random_range(0.46..0.54);
        let torso_hw = w * rng.random_range(0.36..0.46);
        let lung_top = h * rng.random_range(0.10..0.20);
        let lung_base = h * rng.random_range(0.66..0.80);
        let gap = torso_hw * rng.random_range(0.10..0.16);
        let lung_w = torso_hw * rng.random_range(0.66..0.78);
        let lh = lung_base - lung_top;
        let heart = (
            cx + torso_hw * rng.random_range(0.10..0.18),
            lung_base - lh * rng.random_range(0.16..0.24),
            torso_hw * rng.random_range(0.36..0.46),
            lh * rng.random_range(0.22..0.28),
        );
        Anatomy {
            cx,
            torso_hw,
            lung_top,
            lung_base,
            gap,
            lung_w,
            dome: lh * rng.random_range(0.08..0.16),
            heart,
            rib_spacing: lh * rng.random_range(0.095..0.115),
            rib_curve: lh * rng.random_range(0.45..0.65),
            tilt: rng.random_range(-0.04..0.04),
        }
    }

    /// Soft lung membership in [0, 1], the side, and the position inside the lung:
    /// `lateral` in [0, 1] from the mediastinum to the chest wall, `vertical` in [0, 1]
    /// from apex to base.
    fn lung(&self, x: f32, y: f32) -> (f32, Side, f32, f32) {
        let y = y + self.tilt * (x - self.cx);
        let dx = x - self.cx;
        let side = if dx < 0.0 { Side::Right } else { Side::Left };
        let ax = dx.abs();
        let lh = self.lung_base - self.lung_top;
        let v = (y - self.lung_top) / lh;
        let outer = self.gap + self.lung_w * (0.30 + 0.70 * v.clamp(0.0, 1.0).powf(0.45));
        let lat = (ax - self.gap) / (outer - self.gap).max(1.0);
        // diaphragm dome: highest in the middle of each hemithorax; the left dome sits lower.
        let mid = (lat - 0.5) * 2.0;
        let base_shift = if side == Side::Left { lh * 0.03 } else { 0.0 };
        let base = self.lung_base + base_shift - self.dome * (1.0 - mid * mid).max(0.0);
        let soft = 3.0f32.max(lh * 0.022);
        let m_in = smoothstep(self.gap - soft, self.gap + soft, ax);
        let m_out = 1.0 - smoothstep(outer - soft, outer + soft, ax);
        let m_top = smoothstep(self.lung_top - soft * 2.0, self.lung_top + soft * 4.0, y);
        let m_bot = 1.0 - smoothstep(base - soft, base + soft, y);
        // rounded apex
        let apex = if v < 0.12 {
            smoothstep(0.0, 1.0, 1.0 - ((lat - 0.55).abs() * 2.0 - v / 0.12 * 1.2).max(0.0))
        } else {
            1.0
        };
        let mut m = m_in * m_out * m_top * m_bot * apex;
        // cardiac notch in the left lung
        if side == Side::Left {
            let (hx, hy, rx, ry) = self.heart;
            let e = ((x - hx) / (rx * 0.9)).powi(2) + ((y - hy) / (ry * 1.05)).powi(2);
            m *= smoothstep(0.85, 1.15, e);
        }
        (m, side, lat.clamp(0.0, 1.0), ((y - self.lung_top) / (base - self.lung_top)).clamp(0.0, 1.0))
    }
}

/// What is drawn into the lungs for a class.
enum Finding {
    None,
    /// Consolidation: a lobe-like region of one lung.
    Consolidation {
        side: Side,
        v0: f32,
        v1: f32,
        lat0: f32,
        density: f32,
    },
    /// Ground glass: bilateral, peripheral, lower zone.
    GroundGlass {
        density: f32,
        extent: f32,
    },
}

fn sample_finding(rng: &mut impl Rng, class: &str) -> Finding {
    match class {
        "pneumonia" => {
            let side = if rng.random_bool(0.6) { Side::Right } else { Side::Left };
            // lower, middle or upper lobe (or a segment of it)
            let (v0, v1) = match rng.random_range(0..3) {
                0 => (rng.random_range(0.45..0.6), 1.05),
                1 => (rng.random_range(0.30..0.45), rng.random_range(0.60..0.75)),
                _ => (-0.05, rng.random_range(0.35..0.5)),
            };
            Finding::Consolidation {
                side,
                v0,
                v1,
                lat0: rng.random_range(0.0..0.35),
                density: rng.random_range(0.3..0.42),
            }
        }
        "covid" => Finding::GroundGlass { density: rng.random_range(0.2..0.3), extent: rng.random_range(0.5..0.75) },
        _ => Finding::None,
    }
}

/// Draws one synthetic chest film of class `class` (one of [`CLASSES`]) from `seed`.
///
/// ```
/// let img = covid_cxr::synth::chest_film("covid", 7);
/// assert!(img.width() >= 320 && img.height() >= 256);
/// // deterministic
/// assert_eq!(img, covid_cxr::synth::chest_film("covid", 7));
/// ```
pub fn chest_film(class: &str, seed: u64) -> GrayImage {
    chest_film_with(class, seed, &SynthConfig::default())
}

fn chest_film_with(class: &str, seed: u64, cfg: &SynthConfig) -> GrayImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (wmin, wmax) = cfg.width_range;
    let w = rng.random_range(wmin..=wmax.max(wmin));
    let aspect: f32 = rng.random_range(0.8..1.25);
    let h = ((w as f32 * aspect) as u32).max(64);
    let (wf, hf) = (w as f32, h as f32);
    let a = Anatomy::sample(&mut rng, wf, hf);
    let finding = sample_finding(&mut rng, class);
    let texture = ValueNoise::new(&mut rng, w, h, (wf / 10.0).max(8.0));
    let patch = ValueNoise::new(&mut rng, w, h, (wf / 14.0).max(6.0));
    let fine = ValueNoise::new(&mut rng, w, h, 3.0);
    let contrast: f32 = rng.random_range(0.85..1.2);
    let brightness: f32 = rng.random_range(-0.06..0.08);
    let gamma: f32 = rng.random_range(0.8..1.25);
    let noise_sd: f32 = rng.random_range(0.012..0.03);
    let clav_y = a.lung_top + (a.lung_base - a.lung_top) * rng.random_range(0.02..0.1);
    let noise = Normal::new(0.0f32, noise_sd).expect("finite sd");
    let shoulder = hf * rng.random_range(0.04..0.1);

    let mut buf = vec![0f32; (w * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
            let dx = xf - a.cx;
            // soft tissue: the torso, widening below the shoulders, with a smooth edge
            let torso_hw = a.torso_hw * (1.0 + 0.12 * smoothstep(shoulder, hf * 0.3, yf));
            let body = (1.0 - smoothstep(torso_hw * 0.93, torso_hw * 1.07, dx.abs())) * smoothstep(0.0, shoulder, yf);
            let mut v = 0.05 + 0.5 * body * (0.85 + 0.15 * (1.0 - (dx / torso_hw).powi(2)).max(0.0));
            // arms / shoulders beyond the torso, fainter
            v += 0.18
                * smoothstep(torso_hw * 1.0, torso_hw * 1.2, dx.abs())
                * (1.0 - smoothstep(0.0, hf * 0.5, yf))
                * (1.0 - smoothstep(wf * 0.48, wf * 0.5, dx.abs()));
            let (lm, side, lat, vert) = a.lung(xf, yf);
            // aerated lung is dark, slightly darker at the periphery of the upper zones
            v -= lm * (0.33 + 0.04 * lat * (1.0 - vert));
            // vascular markings: fine texture near the hila
            v += lm * (0.06 * (fine.at(xf, yf) - 0.5) + 0.05 * (1.0 - lat).powi(2) * (1.0 - (vert - 0.5).abs()));
            // spine and mediastinum
            let spine = 1.0 - smoothstep(a.gap * 0.3, a.gap * 0.6, dx.abs());
            let vert_phase = ((yf - a.lung_top) / (a.rib_spacing * 0.95)).rem_euclid(1.0);
            let disc = 1.0 - 0.35 * (1.0 - smoothstep(0.0, 0.12, vert_phase.min(1.0 - vert_phase)));
            v += 0.07 * spine * disc * smoothstep(a.lung_top * 0.5, a.lung_top, yf);
            // heart shadow: soft-edged, bulging to the patient's left, merging with the mediastinum
            let (hx, hy, rx, ry) = a.heart;
            let hxx = if xf < hx { (xf - hx) / (rx * 0.75) } else { (xf - hx) / rx };
            let he = hxx * hxx + ((yf - hy) / ry).powi(2);
            v += 0.035 * (1.0 - smoothstep(0.55, 1.15, he));
            // mediastinum and aortic knob above the heart
            let med = 1.0 - smoothstep(a.gap * 0.7, a.gap * 1.25, (dx - a.gap * 0.15).abs());
            v += 0.07 * med * smoothstep(a.lung_top, a.lung_top + (a.lung_base - a.lung_top) * 0.2, yf);
            // ribs: posterior arcs leaving the spine almost level and curving down laterally,
            // faint over soft tissue, clearer over aerated lung
            if body > 0.1 && dx.abs() > a.gap * 0.5 {
                let t = (dx.abs() / a.torso_hw).min(1.3);
                let yr = yf - a.lung_top + a.rib_spacing * 0.6 - a.rib_curve * (0.9 * t * t - 0.25 * t) + a.tilt * dx;
                let k = yr / a.rib_spacing;
                let phase = k.rem_euclid(1.0);
                let width = 0.36 + 0.08 * (k / 10.0).clamp(0.0, 1.0);
                let band = smoothstep(0.0, 0.1, phase) * (1.0 - smoothstep(width - 0.08, width, phase));
                // cortical edges are a little denser than the marrow
                let cortex = 1.0 + 0.35 * ((phase - width * 0.5).abs() / (width * 0.5)).clamp(0.0, 1.0);
                if (0.0..10.5).contains(&k) {
                    v += band * cortex * (0.015 + 0.035 * lm) * body * (1.0 - 0.5 * smoothstep(0.8, 1.2, t));
                }
            }
            // clavicles
            let cy = clav_y - 0.25 * (dx.abs() - a.torso_hw * 0.45).abs() * 0.3;
            let clav = (1.0 - smoothstep(0.0, hf * 0.012, (yf - cy).abs()))
                * (1.0 - smoothstep(a.torso_hw * 0.8, a.torso_hw * 0.95, dx.abs()))
                * smoothstep(a.gap * 0.3, a.gap, dx.abs());
            v += 0.12 * clav;
            // class evidence
            match finding {
                Finding::None => {}
                Finding::Consolidation { side: s, v0, v1, lat0, density } => {
                    if side == s {
                        let inside = smoothstep(v0 - 0.03, v0 + 0.03, vert)
                            * (1.0 - smoothstep(v1 - 0.03, v1 + 0.03, vert))
                            * smoothstep(lat0 - 0.05, lat0 + 0.05, lat);
                        let mottled = 0.75 + 0.5 * (patch.at(xf, yf) - 0.5);
                        v += lm * inside * density * mottled;
                    }
                }
                Finding::GroundGlass { density, extent } => {
                    let periph = smoothstep(0.35, 0.85, lat);
                    let lower = smoothstep(1.0 - extent - 0.1, 1.0 - extent + 0.25, vert);
                    let patchy = smoothstep(0.3, 0.7, patch.at(xf, yf));
                    v += lm * density * periph * lower * (0.35 + 0.65 * patchy);
                }
            }
            // large-scale exposure inhomogeneity
            v += 0.05 * (texture.at(xf, yf) - 0.5);
            buf[(y * w + x) as usize] = v;
        }
    }
    // the film's unsharpness: a light blur of the anatomy, then quantum noise
    let sigma = rng.random_range(0.8f32..1.8) * (w as f32 / 400.0);
    let blurred =
        image::imageops::blur(&image::ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w, h, buf).expect("size"), sigma);
    let mut img = GrayImage::new(w, h);
    for (p, b) in img.pixels_mut().zip(blurred.pixels()) {
        let v = (b[0] * contrast + brightness).clamp(0.0, 1.0).powf(gamma) + noise.sample(&mut rng);
        *p = Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8]);
    }
    if rng.random_bool(cfg.marker_probability.clamp(0.0, 1.0)) {
        let letter = if rng.random_bool(0.5) { 'R' } else { 'L' };
        let scale = (h / 60).max(2);
        let (mx, my) = if rng.random_bool(0.5) { (w / 14, h / 14) } else { (w - w / 14 - 5 * scale, h / 14) };
        draw_letter(&mut img, letter, mx, my, scale);
    }
    img
}

/// Burns a 5x7 bitmap letter into `img` at (x, y), `scale` pixels per dot.
fn draw_letter(img: &mut GrayImage, letter: char, x: u32, y: u32, scale: u32) {
    const R: [u8; 7] = [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001];
    const L: [u8; 7] = [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111];
    let rows = if letter == 'R' { R } else { L };
    for (j, row) in rows.iter().enumerate() {
        for i in 0..5u32 {
            if row & (1 << (4 - i)) != 0 {
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x + i * scale + dx, y + j as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Luma([250]));
                        }
                    }
                }
            }
        }
    }
}

/// The file name of image `index` of `class`.
pub fn file_name(class: &str, index: usize) -> String {
    format!("synth_{class}_{index:05}.png")
}

/// Writes `cfg.per_class` synthetic films per class to `out/<class>/` as grayscale PNGs,
/// in parallel, and returns the paths written.
///
/// Refuses (before writing anything) if any target file exists. Files are written
/// under a temporary name and renamed, so an interrupted run leaves no half-written image.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let files = covid_cxr::synth::generate(dir.path(), &covid_cxr::synth::SynthConfig::new(2, 1))?;
/// assert_eq!(files.len(), 6);
/// assert!(dir.path().join("covid/synth_covid_00000.png").exists());
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub fn generate(out: &Path, cfg: &SynthConfig) -> Result<Vec<PathBuf>> {
    generate_with_progress(out, cfg, |_| {})
}

/// [`generate`], calling `progress(done)` after each image.
pub fn generate_with_progress(out: &Path, cfg: &SynthConfig, progress: impl Fn(usize) + Sync) -> Result<Vec<PathBuf>> {
    if cfg.width_range.0 < 64 || cfg.width_range.0 > cfg.width_range.1 {
        return Err(Error::invalid(format!("width_range {:?} must be ordered and at least 64", cfg.width_range)));
    }
    let jobs: Vec<(usize, usize, PathBuf)> = CLASSES
        .iter()
        .enumerate()
        .flat_map(|(c, class)| (0..cfg.per_class).map(move |i| (c, i, out.join(class).join(file_name(class, i)))))
        .collect();
    if let Some((_, _, p)) = jobs.iter().find(|(_, _, p)| p.exists()) {
        return Err(Error::WouldOverwrite { path: p.clone(), reason: "a synthetic image of that name exists".into() });
    }
    for class in CLASSES {
        std::fs::create_dir_all(out.join(class)).at("create folder", out.join(class))?;
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    jobs.par_iter().try_for_each(|(c, i, p)| {
        let img = chest_film_with(CLASSES[*c], mix_seed(cfg.seed, *c, *i), cfg);
        save_image(&DynamicImage::ImageLuma8(img), p, false)?;
        progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        Ok::<(), Error>(())
    })?;
    Ok(jobs.into_iter().map(|(_, _, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lung_mean(img: &GrayImage, side_left_of_image: bool, lower: bool) -> f32 {
        // crude: sample a box in the expected lung area
        let (w, h) = (img.width() as f32, img.height() as f32);
        let x0 = if side_left_of_image { w * 0.22 } else { w * 0.62 };
        let y0 = if lower { h * 0.5 } else { h * 0.25 };
        let mut s = 0.0;
        let mut n = 0.0;
        for y in (y0 as u32)..((y0 + h * 0.12) as u32) {
            for x in (x0 as u32)..((x0 + w * 0.14) as u32) {
                s += img.get_pixel(x, y)[0] as f32;
                n += 1.0;
            }
        }
        s / n
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        assert_eq!(chest_film("normal", 3), chest_film("normal", 3));
        assert_ne!(chest_film("normal", 3), chest_film("normal", 4));
    }

    #[test]
    fn sizes_vary() {
        let sizes: std::collections::HashSet<_> = (0..10).map(|s| chest_film("normal", s).dimensions()).collect();
        assert!(sizes.len() >= 8, "{sizes:?}");
        for (w, h) in sizes {
            let r = h as f32 / w as f32;
            assert!((0.78..1.27).contains(&r));
        }
    }

    #[test]
    fn diseased_lungs_are_denser_on_average() {
        // lower-zone lung density: covid and pneumonia above normal, averaged over films
        let mean = |class: &str| -> f32 {
            (0..24)
                .map(|s| {
                    let i = chest_film(class, 100 + s);
                    lung_mean(&i, true, true) + lung_mean(&i, false, true)
                })
                .sum::<f32>()
                / 24.0
        };
        let (n, c, p) = (mean("normal"), mean("covid"), mean("pneumonia"));
        assert!(c > n + 3.0, "covid {c} normal {n}");
        assert!(p > n + 3.0, "pneumonia {p} normal {n}");
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &SynthConfig::new(1, 0)).unwrap();
        let e = generate(dir.path(), &SynthConfig::new(1, 0)).unwrap_err();
        assert!(matches!(e, Error::WouldOverwrite { .. }), "{e}");
    }
}
