//! Colour maps for explanation figures: matplotlib's `RdBu` (diverging, for LIME weights) and
//! `jet` (for Grad-CAM), with linear interpolation.

use image::Rgb;
use serde::{Deserialize, Serialize};

/// A colour map from `[0, 1]` to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Colormap {
    /// matplotlib `RdBu`: 0 dark red, 0.5 near white, 1 dark blue (ColorBrewer, 11 stops).
    RdBu,
    /// matplotlib `jet`: dark blue, cyan, yellow, dark red (OpenCV's `COLORMAP_JET`).
    #[default]
    Jet,
    /// Black to white.
    Gray,
}

const RDBU: [[u8; 3]; 11] = [
    [103, 0, 31],
    [178, 24, 43],
    [214, 96, 77],
    [244, 165, 130],
    [253, 219, 199],
    [247, 247, 247],
    [209, 229, 240],
    [146, 197, 222],
    [67, 147, 195],
    [33, 102, 172],
    [5, 48, 97],
];

/// Piecewise-linear channel of matplotlib's `jet` segment data.
fn piecewise(x: f64, pts: &[(f64, f64)]) -> f64 {
    for win in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (win[0], win[1]);
        if x <= x1 {
            return if x1 > x0 { y0 + (y1 - y0) * (x - x0) / (x1 - x0) } else { y1 };
        }
    }
    pts.last().map(|p| p.1).unwrap_or(0.0)
}

impl Colormap {
    /// The colour at `t` (clamped to `[0, 1]`; NaN maps to 0).
    ///
    /// ```
    /// use covid_cxr::explain::Colormap;
    /// assert_eq!(Colormap::RdBu.at(0.0).0, [103, 0, 31]);
    /// assert_eq!(Colormap::RdBu.at(1.0).0, [5, 48, 97]);
    /// assert_eq!(Colormap::Jet.at(0.0).0, [0, 0, 128]);
    /// ```
    pub fn at(&self, t: f64) -> Rgb<u8> {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        match self {
            Colormap::RdBu => {
                let pos = t * (RDBU.len() - 1) as f64;
                let i = (pos.floor() as usize).min(RDBU.len() - 2);
                let f = pos - i as f64;
                let (a, b) = (RDBU[i], RDBU[i + 1]);
                Rgb(std::array::from_fn(|k| (a[k] as f64 + (b[k] as f64 - a[k] as f64) * f).round() as u8))
            }
            Colormap::Jet => {
                let r = piecewise(t, &[(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)]);
                let g = piecewise(t, &[(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)]);
                let b = piecewise(t, &[(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)]);
                Rgb([(r * 255.0).round() as u8, (g * 255.0).round() as u8, (b * 255.0).round() as u8])
            }
            Colormap::Gray => {
                let v = (t * 255.0).round() as u8;
                Rgb([v, v, v])
            }
        }
    }

    /// The colour of `v` on a scale from `vmin` to `vmax` (a flat scale maps to the middle).
    pub fn scaled(&self, v: f64, vmin: f64, vmax: f64) -> Rgb<u8> {
        if vmax > vmin {
            self.at((v - vmin) / (vmax - vmin))
        } else {
            self.at(0.5)
        }
    }

    /// The map's name as matplotlib spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Colormap::RdBu => "RdBu",
            Colormap::Jet => "jet",
            Colormap::Gray => "gray",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdbu_middle_is_light_and_jet_ends() {
        assert_eq!(Colormap::RdBu.at(0.5).0, [247, 247, 247]);
        assert_eq!(Colormap::Jet.at(1.0).0, [128, 0, 0]);
        assert_eq!(Colormap::Jet.at(0.5).0[1], 255);
        assert_eq!(Colormap::Gray.scaled(3.0, 1.0, 1.0).0, [128, 128, 128]);
    }
}
