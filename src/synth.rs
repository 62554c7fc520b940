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

/// The version of the drawing: it changes whenever the same seed would give other films, so
/// that caches of generated films (the notebooks' work folder) are not reused across versions.
/// 3: covid's reticular net, pneumonia's bronchopneumonia foci.
pub const GENERATOR_VERSION: u32 = 3;

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
    /// Scale of the lesions' density (1: the default evidence; smaller is subtler).
    pub evidence: f32,
    /// A burned-in word in a share of some classes' films (the shortcut lab).
    pub shortcut: Option<Shortcut>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            per_class: 40,
            seed: 1337,
            width_range: (320, 560),
            marker_probability: 0.4,
            evidence: 1.0,
            shortcut: None,
        }
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

/// A shortcut: the word `text` burned into the top-left corner (where a hospital's label, such
/// as "PORTABLE", would be) of a share `share` of the films of `classes`, and of no other film.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Shortcut {
    /// The word, in the built-in 5 x 7 font (A-Z, 0-9, space, - . : /).
    pub text: String,
    /// The classes whose films carry it.
    pub classes: Vec<String>,
    /// The share of those classes' films that carry it (exactly `round(share * per_class)`).
    pub share: f64,
}

impl Shortcut {
    /// Parses `TEXT:CLASS:P` (several classes joined with `+`), e.g. `PORTABLE:normal:0.9`.
    ///
    /// ```
    /// let s = covid_cxr::synth::Shortcut::parse("PORTABLE:normal:0.9")?;
    /// assert_eq!((s.text.as_str(), s.classes[0].as_str(), s.share), ("PORTABLE", "normal", 0.9));
    /// assert!(covid_cxr::synth::Shortcut::parse("PORTABLE:lungs:0.9").is_err());
    /// # Ok::<(), covid_cxr::Error>(())
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        if parts.len() != 3 {
            return Err(Error::invalid(format!("shortcut {spec:?}: expected TEXT:CLASS:P, e.g. PORTABLE:normal:0.9")));
        }
        let (text, classes, p) = (parts[2], parts[1], parts[0]);
        let share: f64 = p
            .parse()
            .ok()
            .filter(|v: &f64| (0.0..=1.0).contains(v))
            .ok_or_else(|| Error::invalid(format!("shortcut {spec:?}: share {p:?} must be a number in [0, 1]")))?;
        let classes: Vec<String> = classes.split('+').map(str::to_string).collect();
        if let Some(c) = classes.iter().find(|c| !CLASSES.contains(&c.as_str())) {
            return Err(Error::invalid(format!("shortcut {spec:?}: class {c:?} is not one of {CLASSES:?}")));
        }
        check_marker_text(text)?;
        Ok(Shortcut { text: text.to_string(), classes, share })
    }

    /// Indices (of `0..per_class`) of the films of `class` that carry the word under `seed`.
    pub fn carriers(&self, class: &str, per_class: usize, seed: u64) -> Vec<usize> {
        if !self.classes.iter().any(|c| c == class) {
            return Vec::new();
        }
        let k = ((self.share * per_class as f64).round() as usize).min(per_class);
        let c = CLASSES.iter().position(|&x| x == class).unwrap_or(0);
        let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::mix(seed, c as u64, 0xA24B_AED4_963E_E407, 7, 1));
        let mut idx: Vec<usize> = (0..per_class).collect();
        rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
        let mut chosen = idx[..k].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

/// One synthetic film with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthFilm {
    /// The film.
    pub image: GrayImage,
    /// The class evidence: 255 where a lesion shows on the film, 0 elsewhere (all 0 for normal).
    pub mask: GrayImage,
    /// The box `[x, y, width, height]` of a burned-in shortcut word, if the film has one.
    pub shortcut_box: Option<[u32; 4]>,
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

/// One opacity: an ellipse in image coordinates with a soft edge and a density.
#[derive(Clone, Copy, Debug)]
struct Blob {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
    /// Rotation in radians.
    angle: f32,
    /// Added brightness at the centre (before the film's contrast and gamma).
    density: f32,
    /// Width of the soft edge as a share of the radius (consolidation sharp, ground glass hazy).
    soft: f32,
    /// How much the patch texture modulates the density (0: uniform, 1: very patchy).
    patchy: f32,
    /// Amplitude of a fine reticular net over the opacity (0: none; ground glass with
    /// interlobular septal thickening, "crazy paving", in covid).
    reticular: f32,
    /// Spacing of that net in pixels.
    spacing: f32,
}

impl Blob {
    /// The reticular net's modulation at (x, y): 1 without a net; with one, thin lines in two
    /// directions (the blob's angle, bent by the smooth noise `wobble`) at full density and the haze between them at 35%.
    fn net(&self, x: f32, y: f32, wobble: f32) -> f32 {
        if self.reticular <= 0.0 {
            return 1.0;
        }
        let (s, c) = self.angle.sin_cos();
        // the smooth noise bends the lines, so that the net is irregular
        let bend = 0.9 * (wobble - 0.5);
        let (u, v) = ((x * c + y * s) / self.spacing + bend, (-x * s + y * c) / self.spacing - bend);
        let d = (u - u.round()).abs().min((v - v.round()).abs());
        let line = 1.0 - smoothstep(0.08, 0.2, d);
        1.0 - self.reticular + self.reticular * (0.35 + 0.65 * line)
    }

    /// The blob's opacity at (x, y) in [0, density], before the patch texture; `wobble` in
    /// [0, 1] (a smooth noise) makes the border irregular.
    fn at(&self, x: f32, y: f32, wobble: f32) -> f32 {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = (x - self.cx, y - self.cy);
        let (u, v) = ((dx * c + dy * s) / self.rx, (-dx * s + dy * c) / self.ry);
        let r = (u * u + v * v).sqrt() * (1.0 + 0.5 * (wobble - 0.5));
        self.density * (1.0 - smoothstep(1.0 - self.soft, 1.0, r))
    }
}

/// A point inside one lung (image coordinates), drawn by rejection: `lat` and `vert` ranges
/// constrain where in the lung (0..1 from the mediastinum to the chest wall, from apex to base).
fn point_in_lung(
    rng: &mut impl Rng,
    a: &Anatomy,
    w: f32,
    h: f32,
    side: Side,
    lat: (f32, f32),
    vert: (f32, f32),
) -> (f32, f32) {
    let mut best = (a.cx, (a.lung_top + a.lung_base) / 2.0);
    for _ in 0..400 {
        let x = rng.random_range(0.0..w);
        let y = rng.random_range(0.0..h);
        let (m, s, l, v) = a.lung(x, y);
        if s == side && m > 0.95 && (lat.0..=lat.1).contains(&l) && (vert.0..=vert.1).contains(&v) {
            return (x, y);
        }
        if s == side && m > 0.95 {
            best = (x, y);
        }
    }
    best
}

/// The opacities drawn into the lungs for a class: for pneumonia one or two dense, fairly sharp,
/// homogeneous consolidations in one lung (sometimes a second in the other) and three to five
/// small ill-defined patchy foci scattered through both lungs (bronchopneumonia); for covid four to six hazy
/// ground-glass opacities in both lungs, mostly peripheral and lower, with a fine reticular net
/// ("crazy paving"); none for normal.
/// `evidence` scales the densities (1 is the default).
fn sample_lesions(rng: &mut impl Rng, class: &str, a: &Anatomy, w: f32, h: f32, evidence: f32) -> Vec<Blob> {
    let lh = a.lung_base - a.lung_top;
    let mut out = Vec::new();
    match class {
        "pneumonia" => {
            let side = if rng.random_bool(0.6) { Side::Right } else { Side::Left };
            let n = if rng.random_bool(0.25) { 2 } else { 1 };
            for k in 0..n {
                // a lobe or segment anywhere in the lung: upper, middle or lower zone
                let s = if k == 1 && rng.random_bool(0.5) { other(side) } else { side };
                let (cx, cy) = point_in_lung(rng, a, w, h, s, (0.25, 0.8), (0.15, 0.85));
                let scale = if k == 0 { 1.0 } else { 0.7 };
                out.push(Blob {
                    cx,
                    cy,
                    rx: a.lung_w * rng.random_range(0.55..0.75) * scale,
                    ry: lh * rng.random_range(0.28..0.4) * scale,
                    angle: rng.random_range(-0.5..0.5),
                    density: rng.random_range(0.62..0.8) * evidence,
                    soft: rng.random_range(0.3..0.5),
                    // consolidation is fairly homogeneous
                    patchy: rng.random_range(0.15..0.3),
                    reticular: 0.0,
                    spacing: 1.0,
                });
            }
            // bronchopneumonia: small, ill-defined, patchy foci scattered through both lungs
            for _ in 0..rng.random_range(3..=5) {
                let s = if rng.random_bool(0.5) { Side::Right } else { Side::Left };
                let (cx, cy) = point_in_lung(rng, a, w, h, s, (0.2, 0.85), (0.1, 0.9));
                let r = rng.random_range(0.16..0.26);
                out.push(Blob {
                    cx,
                    cy,
                    rx: a.lung_w * r,
                    ry: a.lung_w * r * rng.random_range(0.7..1.3),
                    angle: rng.random_range(-0.5..0.5),
                    density: rng.random_range(0.38..0.52) * evidence,
                    soft: rng.random_range(0.6..0.8),
                    patchy: rng.random_range(0.5..0.7),
                    reticular: 0.0,
                    spacing: 1.0,
                });
            }
        }
        "covid" => {
            // bilateral: at least two patches per lung, peripheral and lower more often than not
            let n = rng.random_range(4..=6);
            for k in 0..n {
                let side = if k % 2 == 0 { Side::Right } else { Side::Left };
                let (cx, cy) = point_in_lung(rng, a, w, h, side, (0.45, 0.95), (0.3, 0.95));
                let r = rng.random_range(0.36..0.5);
                out.push(Blob {
                    cx,
                    cy,
                    rx: a.lung_w * r * rng.random_range(0.8..1.2),
                    ry: lh * r * 0.7 * rng.random_range(0.8..1.2),
                    angle: rng.random_range(-0.8..0.8),
                    density: rng.random_range(0.5..0.62) * evidence,
                    soft: rng.random_range(0.5..0.7),
                    patchy: rng.random_range(0.5..0.7),
                    reticular: rng.random_range(0.55..0.75),
                    spacing: w * rng.random_range(0.022..0.03),
                });
            }
        }
        _ => {}
    }
    out
}

fn other(s: Side) -> Side {
    if s == Side::Right {
        Side::Left
    } else {
        Side::Right
    }
}

/// Lesion opacity (before blur) at a pixel: the largest blob there, modulated by the patch
/// texture, inside the lung only.
fn lesion_at(blobs: &[Blob], lung: f32, patch: f32, x: f32, y: f32) -> f32 {
    if blobs.is_empty() || lung <= 0.0 {
        return 0.0;
    }
    let mut v = 0.0f32;
    for b in blobs {
        let o = b.at(x, y, patch);
        if o > 0.0 {
            v = v.max(o * (1.0 - b.patchy * 0.5 + b.patchy * (patch - 0.5)) * b.net(x, y, patch));
        }
    }
    v * lung
}

/// Where a lesion shows on the film: the blurred opacity above this (in film brightness units
/// before contrast, about 10 gray levels) is written white in the mask.
pub const MASK_THRESHOLD: f32 = 0.04;

/// A 5 x 7 bitmap glyph: seven rows of five bits, the high bit on the left. `None` for a
/// character the font lacks (it has A-Z, 0-9, space, '-', '.', ':' and '/').
fn glyph(ch: char) -> Option<[u8; 7]> {
    Some(match ch.to_ascii_uppercase() {
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        ' ' => [0; 7],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [1, 1, 2, 4, 8, 16, 16],
        _ => return None,
    })
}

/// Checks that `text` can be burned in with the built-in 5 x 7 font.
///
/// ```
/// assert!(covid_cxr::synth::check_marker_text("PORTABLE").is_ok());
/// assert!(covid_cxr::synth::check_marker_text("ÄÖ").is_err());
/// ```
pub fn check_marker_text(text: &str) -> Result<()> {
    if text.is_empty() || text.chars().count() > 24 {
        return Err(Error::invalid(format!("marker text {text:?} must have 1 to 24 characters")));
    }
    match text.chars().find(|&c| glyph(c).is_none()) {
        Some(c) => Err(Error::invalid(format!(
            "marker text {text:?}: character {c:?} is not in the font (A-Z, 0-9, space, - . : /)"
        ))),
        None => Ok(()),
    }
}

/// Burns `text` into `img` with its top-left corner at (x, y), `scale` pixels per font dot,
/// one blank column between letters, at gray level `value`. Returns the box
/// `[x, y, width, height]` it covers (clipped to the image).
///
/// ```
/// let mut img = image::GrayImage::new(100, 40);
/// let b = covid_cxr::synth::burn_text(&mut img, "PORTABLE", 2, 3, 2, 250);
/// assert_eq!(b, [2, 3, 8 * 12 - 2, 14]);
/// assert_eq!(img.get_pixel(2, 3)[0], 250); // the P's top-left dot
/// ```
pub fn burn_text(img: &mut GrayImage, text: &str, x: u32, y: u32, scale: u32, value: u8) -> [u32; 4] {
    let scale = scale.max(1);
    let n = text.chars().count() as u32;
    for (k, ch) in text.chars().enumerate() {
        let rows = glyph(ch).unwrap_or([31; 7]);
        let x0 = x + k as u32 * 6 * scale;
        for (j, row) in rows.iter().enumerate() {
            for i in 0..5u32 {
                if row & (1 << (4 - i)) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x0 + i * scale + dx, y + j as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, Luma([value]));
                        }
                    }
                }
            }
        }
    }
    let (bw, bh) = ((n * 6 * scale).saturating_sub(scale), 7 * scale);
    [
        x.min(img.width()),
        y.min(img.height()),
        bw.min(img.width().saturating_sub(x)),
        bh.min(img.height().saturating_sub(y)),
    ]
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
    synth_film(class, seed, &SynthConfig::default(), None).image
}

/// Draws one synthetic film with its lesion mask, burning `shortcut_text` (if any) into its
/// top-left corner. Deterministic for `(class, seed, cfg.evidence, cfg.width_range,
/// cfg.marker_probability, shortcut_text)`; the same film without the word is the same pixels
/// outside the word's box.
///
/// ```
/// use covid_cxr::synth::{synth_film, SynthConfig};
/// let f = synth_film("pneumonia", 3, &SynthConfig::default(), Some("PORTABLE"));
/// assert!(f.mask.pixels().any(|p| p[0] == 255));
/// assert!(f.shortcut_box.is_some());
/// let n = synth_film("normal", 3, &SynthConfig::default(), None);
/// assert!(n.mask.pixels().all(|p| p[0] == 0));
/// ```
pub fn synth_film(class: &str, seed: u64, cfg: &SynthConfig, shortcut_text: Option<&str>) -> SynthFilm {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (wmin, wmax) = cfg.width_range;
    let w = rng.random_range(wmin..=wmax.max(wmin));
    let aspect: f32 = rng.random_range(0.8..1.25);
    let h = ((w as f32 * aspect) as u32).max(64);
    let (wf, hf) = (w as f32, h as f32);
    let a = Anatomy::sample(&mut rng, wf, hf);
    let lesions = sample_lesions(&mut rng, class, &a, wf, hf, cfg.evidence);
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
    let mut les = vec![0f32; (w * h) as usize];
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
            let (lm, _, lat, vert) = a.lung(xf, yf);
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
            let l = lesion_at(&lesions, lm, patch.at(xf, yf), xf, yf);
            v += l;
            les[(y * w + x) as usize] = l;
            // large-scale exposure inhomogeneity
            v += 0.05 * (texture.at(xf, yf) - 0.5);
            buf[(y * w + x) as usize] = v;
        }
    }
    // the film's unsharpness: a light blur of the anatomy, then quantum noise
    let sigma = rng.random_range(0.8f32..1.8) * (w as f32 / 400.0);
    let blurred =
        image::imageops::blur(&image::ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w, h, buf).expect("size"), sigma);
    // the mask: where the blurred lesion opacity is visible on the film
    let les_blurred =
        image::imageops::blur(&image::ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w, h, les).expect("size"), sigma);
    let mask = GrayImage::from_fn(w, h, |x, y| {
        Luma([if les_blurred.get_pixel(x, y)[0] >= MASK_THRESHOLD { 255 } else { 0 }])
    });
    let mut img = GrayImage::new(w, h);
    for (p, b) in img.pixels_mut().zip(blurred.pixels()) {
        let v = (b[0] * contrast + brightness).clamp(0.0, 1.0).powf(gamma) + noise.sample(&mut rng);
        *p = Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8]);
    }
    let has_letter = rng.random_bool(cfg.marker_probability.clamp(0.0, 1.0));
    let letter = if rng.random_bool(0.5) { "R" } else { "L" };
    let scale = (h / 60).max(2);
    let left = rng.random_bool(0.5) && shortcut_text.is_none();
    let (jx, jy): (f32, f32) = (rng.random_range(0.03..0.07), rng.random_range(0.025..0.05));
    if has_letter {
        let (mx, my) = if left { (w / 14, h / 14) } else { (w - w / 14 - 5 * scale, h / 14) };
        burn_text(&mut img, letter, mx, my, scale, 250);
    }
    let shortcut_box = shortcut_text.map(|t| {
        let s = (w / 200).max(2);
        burn_text(&mut img, t, (wf * jx) as u32, (hf * jy) as u32, s, 245)
    });
    SynthFilm { image: img, mask, shortcut_box }
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
    generate_with_masks(out, None, cfg, progress)
}

/// [`generate`], and when `masks` is given, each film's lesion mask as a PNG at
/// `masks/<class>/<same file name>` (white where the class evidence shows on the film; black
/// for normal films). `progress(done)` is called after each image.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let (data, masks) = (dir.path().join("data"), dir.path().join("masks"));
/// let cfg = covid_cxr::synth::SynthConfig::new(1, 1);
/// covid_cxr::synth::generate_with_masks(&data, Some(&masks), &cfg, |_| {})?;
/// assert!(masks.join("pneumonia/synth_pneumonia_00000.png").exists());
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub fn generate_with_masks(
    out: &Path,
    masks: Option<&Path>,
    cfg: &SynthConfig,
    progress: impl Fn(usize) + Sync,
) -> Result<Vec<PathBuf>> {
    if cfg.width_range.0 < 64 || cfg.width_range.0 > cfg.width_range.1 {
        return Err(Error::invalid(format!("width_range {:?} must be ordered and at least 64", cfg.width_range)));
    }
    if !(cfg.evidence.is_finite() && cfg.evidence >= 0.0) {
        return Err(Error::invalid(format!("evidence {} must be a finite number >= 0", cfg.evidence)));
    }
    if let Some(sc) = &cfg.shortcut {
        check_marker_text(&sc.text)?;
    }
    let carriers: Vec<Vec<usize>> = CLASSES
        .iter()
        .map(|c| cfg.shortcut.as_ref().map(|s| s.carriers(c, cfg.per_class, cfg.seed)).unwrap_or_default())
        .collect();
    let jobs: Vec<(usize, usize, PathBuf)> = CLASSES
        .iter()
        .enumerate()
        .flat_map(|(c, class)| (0..cfg.per_class).map(move |i| (c, i, out.join(class).join(file_name(class, i)))))
        .collect();
    let mask_path = |c: usize, i: usize| masks.map(|m| m.join(CLASSES[c]).join(file_name(CLASSES[c], i)));
    for (c, i, p) in &jobs {
        for q in std::iter::once(p.clone()).chain(mask_path(*c, *i)) {
            if q.exists() {
                return Err(Error::WouldOverwrite { path: q, reason: "a synthetic image or mask of that name exists".into() });
            }
        }
    }
    for class in CLASSES {
        std::fs::create_dir_all(out.join(class)).at("create folder", out.join(class))?;
        if let Some(m) = masks {
            std::fs::create_dir_all(m.join(class)).at("create folder", m.join(class))?;
        }
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    jobs.par_iter().try_for_each(|(c, i, p)| {
        let text = cfg.shortcut.as_ref().filter(|_| carriers[*c].binary_search(i).is_ok()).map(|s| s.text.as_str());
        let film = synth_film(CLASSES[*c], mix_seed(cfg.seed, *c, *i), cfg, text);
        if let Some(mp) = mask_path(*c, *i) {
            save_image(&DynamicImage::ImageLuma8(film.mask), &mp, false)?;
        }
        save_image(&DynamicImage::ImageLuma8(film.image), p, false)?;
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
    fn masks_mark_the_evidence() {
        let cfg = SynthConfig::default();
        let flat = SynthConfig { evidence: 0.0, ..SynthConfig::default() };
        for seed in 0..6 {
            for class in CLASSES {
                let f = synth_film(class, seed, &cfg, None);
                assert_eq!(f.mask.dimensions(), f.image.dimensions());
                let inside: Vec<(u32, u32)> =
                    f.mask.enumerate_pixels().filter(|(_, _, p)| p[0] == 255).map(|(x, y, _)| (x, y)).collect();
                assert!(f.mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
                if class == "normal" {
                    assert!(inside.is_empty());
                    continue;
                }
                let share = inside.len() as f64 / (f.image.width() * f.image.height()) as f64;
                assert!((0.01..0.35).contains(&share), "{class} {seed}: mask share {share}");
                // the same film without lesions: brighter inside the mask, the same outside
                let g = synth_film(class, seed, &flat, None);
                assert!(g.mask.pixels().all(|p| p[0] == 0));
                let diff = |x: u32, y: u32| f.image.get_pixel(x, y)[0] as f64 - g.image.get_pixel(x, y)[0] as f64;
                let din = inside.iter().map(|&(x, y)| diff(x, y)).sum::<f64>() / inside.len() as f64;
                let (mut dout, mut nout) = (0.0, 0.0);
                for (x, y, p) in f.mask.enumerate_pixels() {
                    if p[0] == 0 {
                        dout += diff(x, y).abs();
                        nout += 1.0;
                    }
                }
                assert!(din > 12.0, "{class} {seed}: {din}");
                assert!(dout / nout < 2.0, "{class} {seed}: {}", dout / nout);
            }
        }
    }

    #[test]
    fn lesions_move_around() {
        // the centre of the mask varies over films (not always the same place)
        let centres: Vec<(f64, f64)> = (0..12)
            .map(|s| {
                let f = synth_film("pneumonia", s, &SynthConfig::default(), None);
                let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
                for (x, y, p) in f.mask.enumerate_pixels() {
                    if p[0] == 255 {
                        sx += x as f64 / f.mask.width() as f64;
                        sy += y as f64 / f.mask.height() as f64;
                        n += 1.0;
                    }
                }
                (sx / n, sy / n)
            })
            .collect();
        let spread = |k: usize| {
            let v: Vec<f64> = centres.iter().map(|c| if k == 0 { c.0 } else { c.1 }).collect();
            v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(spread(0) > 0.3 && spread(1) > 0.2, "{centres:?}");
    }

    #[test]
    fn generation_with_masks_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig { width_range: (96, 128), ..SynthConfig::new(2, 9) };
        for k in ["a", "b"] {
            let d = dir.path().join(k);
            generate_with_masks(&d.join("data"), Some(&d.join("masks")), &cfg, |_| {}).unwrap();
        }
        for class in CLASSES {
            for i in 0..2 {
                for sub in ["data", "masks"] {
                    let f = |k: &str| std::fs::read(dir.path().join(k).join(sub).join(class).join(file_name(class, i)));
                    assert_eq!(f("a").unwrap(), f("b").unwrap());
                }
            }
        }
        // a mask in the way is not overwritten
        let e = generate_with_masks(&dir.path().join("c"), Some(&dir.path().join("a/masks")), &cfg, |_| {});
        assert!(matches!(e, Err(Error::WouldOverwrite { .. })));
    }

    #[test]
    fn shortcut_goes_on_the_given_share_of_one_class() {
        let dir = tempfile::tempdir().unwrap();
        let plain = SynthConfig { marker_probability: 0.0, width_range: (200, 240), ..SynthConfig::new(10, 4) };
        let sc = Shortcut::parse("PORTABLE:normal:0.3").unwrap();
        let marked = SynthConfig { shortcut: Some(sc.clone()), ..plain.clone() };
        generate(&dir.path().join("plain"), &plain).unwrap();
        generate(&dir.path().join("marked"), &marked).unwrap();
        let carriers = sc.carriers("normal", 10, 4);
        assert_eq!(carriers.len(), 3);
        assert!(sc.carriers("covid", 10, 4).is_empty());
        for class in CLASSES {
            for i in 0..10 {
                let f = |k: &str| {
                    image::open(dir.path().join(k).join(class).join(file_name(class, i))).unwrap().to_luma8()
                };
                let (a, b) = (f("plain"), f("marked"));
                let changed: Vec<(u32, u32)> = a
                    .enumerate_pixels()
                    .filter(|(x, y, p)| b.get_pixel(*x, *y) != *p)
                    .map(|(x, y, _)| (x, y))
                    .collect();
                if class == "normal" && carriers.contains(&i) {
                    assert!(changed.len() > 50, "{class} {i}");
                    // in the top-left corner
                    let (w, h) = a.dimensions();
                    assert!(changed.iter().all(|&(x, y)| x < w * 6 / 10 && y < h / 6), "{class} {i}");
                } else {
                    assert!(changed.is_empty(), "{class} {i}");
                }
            }
        }
        assert!(Shortcut::parse("PORTABLE:normal").is_err());
        assert!(Shortcut::parse("PORTÄBLE:normal:0.5").is_err());
        assert_eq!(Shortcut::parse("A:B:covid+pneumonia:1").unwrap().text, "A:B");
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &SynthConfig::new(1, 0)).unwrap();
        let e = generate(dir.path(), &SynthConfig::new(1, 0)).unwrap_err();
        assert!(matches!(e, Error::WouldOverwrite { .. }), "{e}");
    }
}
