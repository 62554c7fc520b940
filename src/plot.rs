//! Figures drawn with plotters. Every figure is a value, a [`Figure`], that saves as PNG or SVG
//! and shows itself inline in an evcxr notebook (just end a cell with it).
//!
//! To add a figure: write a function that returns `Result<Figure>` and draws its content in
//! `figure!(width, height, |root| { ... })`; the body runs once per backend (bitmap and SVG),
//! so it must be written against the generic `DrawingArea` API only.

use crate::error::{Error, Result};
use base64::Engine;
use image::RgbImage;
use plotters::prelude::*;
use std::path::Path;
use tch::Tensor;

/// A drawn figure: RGB pixels (for PNG and inline display) and an SVG rendering.
#[derive(Clone)]
pub struct Figure {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB8 pixels, row-major.
    pub rgb: Vec<u8>,
    /// The same figure as SVG.
    pub svg: String,
}

impl std::fmt::Debug for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Figure({}x{})", self.width, self.height)
    }
}

/// Maps any plotters error into the library's error.
pub fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// Draws a figure twice, into a bitmap and into an SVG, with the same body.
/// `$root` is bound to the whole drawing area (white background) in the body, which must
/// evaluate to `Result<()>`.
#[macro_export]
macro_rules! figure {
    ($w:expr, $h:expr, |$root:ident| $body:block) => {{
        use plotters::prelude::*;
        let (w, h): (u32, u32) = ($w, $h);
        let mut rgb = vec![255u8; (w as usize) * (h as usize) * 3];
        {
            let $root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            $root.fill(&WHITE).map_err($crate::plot::plot_err)?;
            let r: $crate::Result<()> = (|| $body)();
            r?;
            $root.present().map_err($crate::plot::plot_err)?;
        }
        let mut svg = String::new();
        {
            let $root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            $root.fill(&WHITE).map_err($crate::plot::plot_err)?;
            let r: $crate::Result<()> = (|| $body)();
            r?;
            $root.present().map_err($crate::plot::plot_err)?;
        }
        $crate::plot::Figure { width: w, height: h, rgb, svg }
    }};
}

impl Figure {
    /// The figure as an RGB image.
    pub fn to_image(&self) -> RgbImage {
        RgbImage::from_raw(self.width, self.height, self.rgb.clone()).expect("buffer size")
    }

    /// PNG bytes of the figure.
    pub fn png_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        image::DynamicImage::ImageRgb8(self.to_image())
            .write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
            .map_err(|e| Error::Plot(e.to_string()))?;
        Ok(buf)
    }

    /// Saves as PNG or SVG, by the extension of `path` (atomically; an existing file is replaced,
    /// since figures are outputs).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        let bytes = match ext.as_deref() {
            Some("png") => self.png_bytes()?,
            Some("svg") => self.svg.as_bytes().to_vec(),
            _ => return Err(Error::Encode { path: path.to_path_buf(), reason: "figures save as .png or .svg".into() }),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e))?;
        }
        crate::imageio::write_atomic(path, &bytes, true)
    }

    /// Shows the figure inline in an evcxr (Jupyter) notebook.
    pub fn evcxr_display(&self) {
        match self.png_bytes() {
            Ok(png) => println!(
                "EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT",
                base64::engine::general_purpose::STANDARD.encode(png)
            ),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// Undoes `Normalize(mean, std)` on a `3 x H x W` (or `N x 3 x H x W`) tensor and converts it to
/// RGB8 images.
pub fn tensor_to_images(t: &Tensor, mean: [f32; 3], std: [f32; 3]) -> Result<Vec<RgbImage>> {
    let t = if t.dim() == 3 { t.unsqueeze(0) } else { t.shallow_clone() };
    let s = t.size();
    if s.len() != 4 || s[1] != 3 {
        return Err(Error::invalid(format!("expected N x 3 x H x W images, got {s:?}")));
    }
    let m = Tensor::from_slice(&mean).view([1, 3, 1, 1]);
    let sd = Tensor::from_slice(&std).view([1, 3, 1, 1]);
    let x = (t.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu) * sd + m).clamp(0.0, 1.0) * 255.0;
    let x = x.round().to_kind(tch::Kind::Uint8).permute([0, 2, 3, 1]).contiguous();
    let (n, h, w) = (s[0] as usize, s[2] as u32, s[3] as u32);
    let flat: Vec<u8> = Vec::<u8>::try_from(x.flatten(0, -1)).map_err(Error::Torch)?;
    let per = (h * w * 3) as usize;
    Ok((0..n).map(|i| RgbImage::from_raw(w, h, flat[i * per..(i + 1) * per].to_vec()).expect("size")).collect())
}

/// Draws an RGB image into a drawing area, scaled to fit and centred.
pub fn draw_image<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, img: &RgbImage) -> Result<()> {
    let (aw, ah) = area.dim_in_pixel();
    if aw == 0 || ah == 0 {
        return Ok(());
    }
    let scale = (aw as f64 / img.width() as f64).min(ah as f64 / img.height() as f64);
    let (nw, nh) = (((img.width() as f64 * scale) as u32).max(1), ((img.height() as f64 * scale) as u32).max(1));
    let resized = image::imageops::resize(img, nw, nh, image::imageops::FilterType::Triangle);
    let (ox, oy) = (((aw - nw) / 2) as i32, ((ah - nh) / 2) as i32);
    let elem: BitMapElement<_> = BitMapElement::with_owned_buffer((ox, oy), (nw, nh), resized.into_raw())
        .ok_or_else(|| Error::Plot("bitmap size".into()))?;
    area.draw(&elem).map_err(plot_err)
}

/// `make_grid` with titles: the images of a batch in a grid of `ncols` columns, each titled.
///
/// `images` is `N x 3 x H x W`, normalized with `mean`/`std` (undone for display).
///
/// ```
/// let imgs = tch::Tensor::zeros([4, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
/// let titles = ["covid", "normal", "pneumonia", "covid"].map(String::from);
/// let fig = covid_cxr::plot::image_grid(&imgs, &titles, 4, [0.5; 3], [0.5; 3]).unwrap();
/// assert!(fig.width > 0 && fig.svg.contains("pneumonia"));
/// ```
pub fn image_grid(images: &Tensor, titles: &[String], ncols: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Figure> {
    let imgs = tensor_to_images(images, mean, std)?;
    image_grid_rgb(&imgs, titles, ncols)
}

/// [`image_grid`] over RGB images.
pub fn image_grid_rgb(imgs: &[RgbImage], titles: &[String], ncols: usize) -> Result<Figure> {
    if imgs.is_empty() {
        return Err(Error::invalid("image_grid: no images"));
    }
    let ncols = ncols.clamp(1, imgs.len());
    let nrows = imgs.len().div_ceil(ncols);
    let tile = 220u32;
    let title_h = 26u32;
    let fig = figure!(ncols as u32 * tile, nrows as u32 * (tile + title_h), |root| {
        let cells = root.split_evenly((nrows, ncols));
        for (k, cell) in cells.iter().enumerate() {
            if k >= imgs.len() {
                break;
            }
            let (top, rest) = cell.split_vertically(title_h);
            let t = titles.get(k).cloned().unwrap_or_default();
            top.draw(&Text::new(t, (6, 4), ("sans-serif", 18).into_font().color(&BLACK))).map_err(plot_err)?;
            draw_image(&rest.margin(2, 2, 2, 2), &imgs[k])?;
        }
        Ok(())
    });
    Ok(fig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_saves_png_and_svg() {
        let imgs: Vec<RgbImage> = (0..3).map(|i| RgbImage::from_pixel(20, 10, image::Rgb([i * 80, 0, 0]))).collect();
        let fig = image_grid_rgb(&imgs, &["a".into(), "b".into(), "c".into()], 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fig.save(dir.path().join("g.png")).unwrap();
        fig.save(dir.path().join("g.svg")).unwrap();
        let back = image::open(dir.path().join("g.png")).unwrap();
        assert_eq!(back.width(), fig.width);
        assert!(std::fs::read_to_string(dir.path().join("g.svg")).unwrap().contains("<svg"));
        assert!(fig.save(dir.path().join("g.gif")).is_err());
    }

    #[test]
    fn tensor_roundtrip() {
        let t =
            Tensor::from_slice(&[-1.0f32, 0.0, 1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).view([1, 3, 2, 2]);
        let imgs = tensor_to_images(&t, [0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(imgs[0].get_pixel(0, 0).0, [0, 0, 128]);
        assert_eq!(imgs[0].get_pixel(1, 1).0, [255, 128, 255]);
    }
}
