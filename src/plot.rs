//! Figures drawn with plotters. Every figure is a value, a [`Figure`], that saves as PNG or SVG
//! and shows itself inline in an evcxr notebook (just end a cell with it).
//!
//! To add a figure: write a function that returns `Result<Figure>` and draws its content in
//! `figure!(width, height, |root| { ... })`; the body runs once per backend (bitmap and SVG),
//! so it must be written against the generic `DrawingArea` API only.

use crate::error::{Error, Result};
use crate::explain::{mark_boundaries, overlay, BoundaryMode, Colormap, Explanation, MaskOptions};
use base64::Engine;
use image::RgbImage;
use ndarray::{Array2, ArrayView2};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
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

/// The widest a figure is shown inline in a notebook, in pixels.
pub const INLINE_MAX_WIDTH: u32 = 760;

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

    /// PNG bytes for showing inline: at most [`INLINE_MAX_WIDTH`] pixels wide (scaled down with a
    /// Lanczos filter when wider) and compressed hard, so a notebook with many figures stays small.
    /// Saved files ([`Figure::save`]) keep the full size.
    pub fn inline_png_bytes(&self) -> Result<Vec<u8>> {
        use image::codecs::png::{CompressionType, FilterType, PngEncoder};
        let mut img = self.to_image();
        if img.width() > INLINE_MAX_WIDTH {
            let h = (img.height() as f64 * INLINE_MAX_WIDTH as f64 / img.width() as f64).round().max(1.0) as u32;
            img = image::imageops::resize(&img, INLINE_MAX_WIDTH, h, image::imageops::FilterType::Lanczos3);
        }
        let mut buf = Vec::new();
        let enc = PngEncoder::new_with_quality(&mut buf, CompressionType::Best, FilterType::Adaptive);
        image::ImageEncoder::write_image(enc, img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::Plot(e.to_string()))?;
        Ok(buf)
    }

    /// Shows the figure inline in an evcxr (Jupyter) notebook (see [`Figure::inline_png_bytes`]).
    pub fn evcxr_display(&self) {
        match self.inline_png_bytes() {
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

/// One image at its own size under a title, as a figure (to show a saved PNG, such as a grid the
/// shortcut lab wrote, inline without shrinking it into a grid tile).
///
/// ```
/// let img = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 0, 0]));
/// let fig = covid_cxr::plot::image_figure(&img, "red").unwrap();
/// assert_eq!((fig.width, fig.height), (40, 30 + 26));
/// assert!(fig.svg.contains("red"));
/// ```
pub fn image_figure(img: &RgbImage, title: &str) -> Result<Figure> {
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::invalid("image_figure: empty image"));
    }
    let title_h = 26u32;
    Ok(figure!(img.width(), img.height() + title_h, |root| {
        let (top, rest) = root.split_vertically(title_h);
        top.draw(&Text::new(title.to_string(), (6, 4), ("sans-serif", 18).into_font().color(&BLACK)))
            .map_err(plot_err)?;
        draw_image(&rest, img)
    }))
}

// ---------------------------------------------------------------------------------------------
// Building blocks shared by the figures below.
// ---------------------------------------------------------------------------------------------

type Area<DB> = DrawingArea<DB, plotters::coord::Shift>;

/// Series colours (matplotlib's tab10).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Text centred at `(x, y)` (pixels of `area`).
fn centred_text<DB: DrawingBackend>(
    area: &Area<DB>,
    text: &str,
    (x, y): (i32, i32),
    size: u32,
    color: RGBColor,
) -> Result<()> {
    let style = ("sans-serif", size).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(text.to_string(), (x, y), style)).map_err(plot_err)
}

/// Draws a centred title in a strip of `height` pixels at the top of `area` and returns the rest.
fn with_title<DB: DrawingBackend>(area: &Area<DB>, title: &str, height: u32, size: u32) -> Result<Area<DB>> {
    let (top, rest) = area.split_vertically(height);
    let w = top.dim_in_pixel().0 as i32;
    centred_text(&top, title, (w / 2, height as i32 / 2), size, BLACK)?;
    Ok(rest)
}

/// A vertical colour bar for `cmap` from `vmin` (bottom) to `vmax` (top) with 5 ticks and a
/// caption, filling `area` (about 90 pixels wide is enough).
pub fn draw_colorbar<DB: DrawingBackend>(
    area: &Area<DB>,
    cmap: Colormap,
    vmin: f64,
    vmax: f64,
    caption: &str,
) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let (x0, bar_w) = (8i32, 18i32);
    let (top, bottom) = (14i32, h as i32 - 14);
    if bottom <= top + 4 || w < 40 {
        return Ok(());
    }
    let span = (bottom - top) as f64;
    for y in top..bottom {
        let t = 1.0 - (y - top) as f64 / span;
        let c = cmap.at(t);
        let col = RGBColor(c.0[0], c.0[1], c.0[2]);
        area.draw(&Rectangle::new([(x0, y), (x0 + bar_w, y + 1)], col.filled())).map_err(plot_err)?;
    }
    area.draw(&Rectangle::new([(x0, top), (x0 + bar_w, bottom)], BLACK.stroke_width(1))).map_err(plot_err)?;
    let font = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for k in 0..5 {
        let t = k as f64 / 4.0;
        let y = bottom - (t * span) as i32;
        let v = vmin + t * (vmax - vmin);
        area.draw(&PathElement::new(vec![(x0 + bar_w, y), (x0 + bar_w + 4, y)], BLACK)).map_err(plot_err)?;
        area.draw(&Text::new(format_tick(v), (x0 + bar_w + 6, y), font.clone())).map_err(plot_err)?;
    }
    if !caption.is_empty() {
        let style = ("sans-serif", 13)
            .into_font()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(caption.to_string(), (w as i32 - 10, (top + bottom) / 2), style)).map_err(plot_err)?;
    }
    Ok(())
}

fn format_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 0.01 && v.abs() < 1000.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

/// Colours a map with `cmap` on the scale `vmin..vmax` (NaN takes the middle colour).
///
/// ```
/// let m = ndarray::array![[-1.0, 0.0, 1.0]];
/// let img = covid_cxr::plot::heatmap_image(m.view(), covid_cxr::explain::Colormap::RdBu, -1.0, 1.0);
/// assert_eq!(img.get_pixel(0, 0).0, [103, 0, 31]);
/// assert_eq!(img.get_pixel(2, 0).0, [5, 48, 97]);
/// ```
pub fn heatmap_image(map: ArrayView2<f64>, cmap: Colormap, vmin: f64, vmax: f64) -> RgbImage {
    let (h, w) = map.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = map[[y as usize, x as usize]];
        if v.is_nan() {
            cmap.at(0.5)
        } else {
            cmap.scaled(v, vmin, vmax)
        }
    })
}

/// An image with a title above it, inside `area`.
fn titled_image<DB: DrawingBackend>(area: &Area<DB>, img: &RgbImage, title: &str) -> Result<()> {
    let rest = with_title(area, title, 28, 16)?;
    draw_image(&rest.margin(2, 2, 2, 2), img)
}

fn check_finite(name: &str, v: &[f64]) -> Result<()> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::invalid(format!("{name}: values must be finite")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Training and evaluation figures.
// ---------------------------------------------------------------------------------------------

/// One panel of per-epoch curves.
fn epoch_panel<DB: DrawingBackend>(
    area: &Area<DB>,
    caption: &str,
    ylabel: &str,
    series: &[(&str, &[f64])],
) -> Result<()> {
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1);
    let all: Vec<f64> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let (mut lo, mut hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..n as f64 + 0.5, (lo - pad)..(hi + pad))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(ylabel)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_labels(n.min(15))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .draw()
        .map_err(plot_err)?;
    for (k, (name, ys)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| (i as f64 + 1.0, y)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// The notebook's `plot_accuracy_loss`: accuracy (left) and loss (right) of train and val per
/// epoch.
///
/// ```
/// let f = covid_cxr::plot::accuracy_loss(&[0.6, 0.8], &[0.55, 0.75], &[0.9, 0.5], &[1.0, 0.6]).unwrap();
/// assert!(f.svg.contains("Accuracy"));
/// ```
pub fn accuracy_loss(train_acc: &[f64], val_acc: &[f64], train_loss: &[f64], val_loss: &[f64]) -> Result<Figure> {
    if train_acc.is_empty() && val_acc.is_empty() {
        return Err(Error::invalid("accuracy_loss: no epochs"));
    }
    for (n, v) in [("train_acc", train_acc), ("val_acc", val_acc), ("train_loss", train_loss), ("val_loss", val_loss)] {
        check_finite(n, v)?;
    }
    Ok(figure!(1200, 480, |root| {
        let rest = with_title(&root, "Training curves: accuracy and loss per epoch", 34, 22)?;
        let panels = rest.split_evenly((1, 2));
        epoch_panel(&panels[0], "Accuracy", "accuracy", &[("train", train_acc), ("val", val_acc)])?;
        epoch_panel(&panels[1], "Loss", "loss", &[("train", train_loss), ("val", val_loss)])?;
        Ok(())
    }))
}

/// Predictions on a few images: each image with its predicted and true label (green when
/// right, red when wrong) and a bar per class probability.
///
/// ```
/// let imgs = vec![image::RgbImage::new(8, 8); 2];
/// let classes = ["covid", "normal", "pneumonia"].map(String::from);
/// let probs = vec![vec![0.7, 0.2, 0.1], vec![0.1, 0.3, 0.6]];
/// let f = covid_cxr::plot::predictions(&imgs, &[0, 1], &probs, &classes).unwrap();
/// assert!(f.svg.contains("pneumonia"));
/// ```
pub fn predictions(
    images: &[RgbImage],
    true_labels: &[usize],
    probs: &[Vec<f64>],
    classes: &[String],
) -> Result<Figure> {
    let n = images.len();
    if n == 0 || true_labels.len() != n || probs.len() != n {
        return Err(Error::invalid(format!(
            "predictions: {n} images, {} labels, {} probability rows (need the same, > 0)",
            true_labels.len(),
            probs.len()
        )));
    }
    let k = classes.len();
    if k == 0 || probs.iter().any(|p| p.len() != k) || true_labels.iter().any(|&t| t >= k) {
        return Err(Error::invalid("predictions: each probability row needs one value per class, labels < classes"));
    }
    let (tile, bar_h) = (300u32, 26u32);
    let bars = k as u32 * bar_h + 16;
    Ok(figure!(tile * n as u32, 40 + tile + 56 + bars, |root| {
        let rest = with_title(&root, "Predictions: predicted vs true label, class probabilities", 40, 22)?;
        for (i, cell) in rest.split_evenly((1, n)).iter().enumerate() {
            let pred = argmax(&probs[i]);
            let ok = pred == true_labels[i];
            let color = if ok { RGBColor(0, 140, 0) } else { RGBColor(200, 0, 0) };
            let (img_area, below) = cell.split_vertically(tile);
            draw_image(&img_area.margin(4, 4, 8, 8), &images[i])?;
            let (text_area, bar_area) = below.split_vertically(56);
            let cx = (tile / 2) as i32;
            centred_text(
                &text_area,
                &format!("pred: {} ({:.0}%)", classes[pred], 100.0 * probs[i][pred]),
                (cx, 16),
                17,
                color,
            )?;
            centred_text(&text_area, &format!("true: {}", classes[true_labels[i]]), (cx, 40), 17, color)?;
            prob_bars(&bar_area, &probs[i], classes, pred, bar_h)?;
        }
        Ok(())
    }))
}

fn argmax(p: &[f64]) -> usize {
    p.iter().enumerate().fold(0, |b, (i, &v)| if v > p[b] { i } else { b })
}

fn prob_bars<DB: DrawingBackend>(
    area: &Area<DB>,
    p: &[f64],
    classes: &[String],
    pred: usize,
    bar_h: u32,
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let (label_w, right) = (92i32, 46i32);
    let full = (w as i32 - label_w - right - 8).max(10);
    let lf = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
    let vf = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (c, (&v, name)) in p.iter().zip(classes).enumerate() {
        let y = 4 + c as i32 * bar_h as i32;
        let mid = y + bar_h as i32 / 2;
        area.draw(&Text::new(name.clone(), (label_w - 6, mid), lf.clone())).map_err(plot_err)?;
        let len = (v.clamp(0.0, 1.0) * full as f64) as i32;
        let col = if c == pred { PALETTE[0] } else { RGBColor(170, 170, 170) };
        area.draw(&Rectangle::new([(label_w, y + 3), (label_w + len.max(1), y + bar_h as i32 - 3)], col.filled()))
            .map_err(plot_err)?;
        area.draw(&Text::new(format!("{:.1}%", 100.0 * v), (label_w + len + 4, mid), vf.clone())).map_err(plot_err)?;
    }
    Ok(())
}

/// A confusion matrix: rows are true classes, columns predicted classes, counts in the cells
/// (shaded by the share of the row).
///
/// ```
/// let classes = ["covid", "normal", "pneumonia"].map(String::from);
/// let cm = vec![vec![50, 2, 3], vec![1, 60, 4], vec![5, 6, 70]];
/// let f = covid_cxr::plot::confusion_matrix(&cm, &classes).unwrap();
/// assert!(f.svg.contains("70"));
/// ```
pub fn confusion_matrix(cm: &[Vec<usize>], classes: &[String]) -> Result<Figure> {
    let k = classes.len();
    if k == 0 || cm.len() != k || cm.iter().any(|r| r.len() != k) {
        return Err(Error::invalid(format!("confusion_matrix: need a {k} x {k} matrix for {k} classes")));
    }
    let cell = 110i32;
    let (left, top) = (150i32, 110i32);
    let size = (left + cell * k as i32 + 40, top + cell * k as i32 + 80);
    Ok(figure!(size.0 as u32, size.1 as u32, |root| {
        let w = size.0;
        centred_text(&root, "Confusion matrix (rows: true, columns: predicted)", (w / 2, 22), 20, BLACK)?;
        centred_text(&root, "predicted", (left + cell * k as i32 / 2, 60), 17, BLACK)?;
        let rot = ("sans-serif", 17)
            .into_font()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new("true".to_string(), (18, top + cell * k as i32 / 2), rot)).map_err(plot_err)?;
        for (j, name) in classes.iter().enumerate() {
            centred_text(&root, name, (left + cell * j as i32 + cell / 2, top - 16), 15, BLACK)?;
            let lf = ("sans-serif", 15).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(name.clone(), (left - 8, top + cell * j as i32 + cell / 2), lf)).map_err(plot_err)?;
        }
        for (i, row) in cm.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (j, &v) in row.iter().enumerate() {
                let share = if total > 0 { v as f64 / total as f64 } else { 0.0 };
                let bg = blues(share);
                let (x0, y0) = (left + cell * j as i32, top + cell * i as i32);
                root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], bg.filled())).map_err(plot_err)?;
                root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], BLACK.stroke_width(1)))
                    .map_err(plot_err)?;
                let fg = if share > 0.5 { WHITE } else { BLACK };
                centred_text(&root, &v.to_string(), (x0 + cell / 2, y0 + cell / 2 - 8), 22, fg)?;
                centred_text(&root, &format!("{:.0}%", 100.0 * share), (x0 + cell / 2, y0 + cell / 2 + 16), 14, fg)?;
            }
        }
        Ok(())
    }))
}

/// White to matplotlib's dark `Blues` end.
fn blues(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let (a, b) = ([247.0, 251.0, 255.0], [8.0, 48.0, 107.0]);
    let c = |k: usize| (a[k] + (b[k] - a[k]) * t) as u8;
    RGBColor(c(0), c(1), c(2))
}

/// One ROC curve: class name, `(false positive rate, true positive rate)` points, AUC.
pub type RocCurve = (String, Vec<(f64, f64)>, f64);

/// One-vs-rest ROC curves: one `(class, [(fpr, tpr)], auc)` per class, AUC in the legend, the
/// chance diagonal dashed.
///
/// ```
/// let c = vec![("covid".to_string(), vec![(0.0, 0.0), (0.1, 0.8), (1.0, 1.0)], 0.9)];
/// let f = covid_cxr::plot::roc_curves(&c).unwrap();
/// assert!(f.svg.contains("AUC"));
/// ```
pub fn roc_curves(curves: &[RocCurve]) -> Result<Figure> {
    if curves.is_empty() {
        return Err(Error::invalid("roc_curves: no curve"));
    }
    Ok(figure!(720, 640, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("ROC curves, one class vs rest", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(46)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], 8, 6, RGBColor(120, 120, 120).into()))
            .map_err(plot_err)?
            .label("chance (AUC = 0.50)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(120, 120, 120)));
        for (k, (name, pts, auc)) in curves.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("{name} (AUC = {auc:.3})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }))
}

/// A reliability diagram: per confidence bin (`(mean confidence, accuracy, count)`, equal-width
/// bins over [0, 1] in order), the accuracy as a bar and the mean confidence as a marker, the
/// diagonal of perfect calibration, the expected calibration error in the title and the bin
/// counts below.
///
/// ```
/// let bins = vec![(0.35, 0.3, 10), (0.0, 0.0, 0), (0.8, 0.7, 40), (0.95, 0.93, 200)];
/// let f = covid_cxr::plot::reliability_diagram(&bins, 0.031).unwrap();
/// assert!(f.svg.contains("ECE"));
/// ```
pub fn reliability_diagram(bins: &[(f64, f64, usize)], ece: f64) -> Result<Figure> {
    if bins.is_empty() {
        return Err(Error::invalid("reliability_diagram: no bins"));
    }
    let nb = bins.len() as f64;
    let max_count = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    Ok(figure!(700, 760, |root| {
        let rest = with_title(&root, &format!("Reliability diagram (ECE = {ece:.3})"), 40, 22)?;
        let (upper, lower) = rest.split_vertically(520);
        let mut chart = ChartBuilder::on(&upper)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("confidence")
            .y_desc("accuracy")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        let bar = PALETTE[0];
        chart
            .draw_series(bins.iter().enumerate().filter(|(_, b)| b.2 > 0).map(|(i, b)| {
                Rectangle::new([(i as f64 / nb, 0.0), ((i + 1) as f64 / nb, b.1)], bar.mix(0.8).filled())
            }))
            .map_err(plot_err)?
            .label("accuracy")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], bar.filled()));
        chart
            .draw_series(bins.iter().enumerate().filter(|(_, b)| b.2 > 0).map(|(i, b)| {
                Rectangle::new([(i as f64 / nb, 0.0), ((i + 1) as f64 / nb, b.1)], BLACK.stroke_width(1))
            }))
            .map_err(plot_err)?;
        let red = PALETTE[3];
        chart
            .draw_series(
                bins.iter()
                    .enumerate()
                    .filter(|(_, b)| b.2 > 0)
                    .map(|(i, b)| Circle::new(((i as f64 + 0.5) / nb, b.0), 5, red.filled())),
            )
            .map_err(plot_err)?
            .label("mean confidence")
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, red.filled()));
        chart
            .draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], 8, 6, RGBColor(90, 90, 90).into()))
            .map_err(plot_err)?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(90, 90, 90)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        let mut counts = ChartBuilder::on(&lower)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..max_count * 1.1)
            .map_err(plot_err)?;
        counts
            .configure_mesh()
            .x_desc("confidence")
            .y_desc("images")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .y_labels(4)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(plot_err)?;
        counts
            .draw_series(bins.iter().enumerate().map(|(i, b)| {
                Rectangle::new(
                    [(i as f64 / nb, 0.0), ((i + 1) as f64 / nb, b.2 as f64)],
                    RGBColor(150, 150, 150).filled(),
                )
            }))
            .map_err(plot_err)?;
        Ok(())
    }))
}

/// Deferral: for each confidence threshold, the share of images the model decides alone
/// (coverage) and its accuracy on them; rows are `(threshold, coverage, accuracy)`. Left: both
/// against the threshold; right: accuracy against coverage.
///
/// ```
/// let rows = vec![(0.5, 1.0, 0.86), (0.7, 0.9, 0.9), (0.9, 0.6, 0.97)];
/// let f = covid_cxr::plot::coverage_accuracy(&rows).unwrap();
/// assert!(f.svg.contains("coverage"));
/// ```
pub fn coverage_accuracy(rows: &[(f64, f64, f64)]) -> Result<Figure> {
    if rows.is_empty() {
        return Err(Error::invalid("coverage_accuracy: no rows"));
    }
    let flat: Vec<f64> = rows.iter().flat_map(|r| [r.0, r.1, r.2]).collect();
    check_finite("coverage_accuracy", &flat)?;
    let (tmin, tmax) = rows.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| (a.min(r.0), b.max(r.0)));
    let (tmin, tmax) = if tmax > tmin { (tmin, tmax) } else { (tmin - 0.5, tmax + 0.5) };
    let ymin = rows.iter().map(|r| r.1.min(r.2)).fold(1.0, f64::min).clamp(0.0, 0.9) - 0.02;
    Ok(figure!(1200, 500, |root| {
        let rest = with_title(&root, "Deferral: the model decides only above a confidence threshold", 36, 22)?;
        let panels = rest.split_evenly((1, 2));
        let mut left = ChartBuilder::on(&panels[0])
            .caption("coverage and accuracy vs threshold", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(tmin..tmax, ymin..1.01)
            .map_err(plot_err)?;
        left.configure_mesh()
            .x_desc("confidence threshold")
            .y_desc("share")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        for (k, (name, f)) in [("coverage", 1usize), ("accuracy on decided", 2)].into_iter().enumerate() {
            let color = PALETTE[k];
            let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.0, if f == 1 { r.1 } else { r.2 })).collect();
            left.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            left.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        }
        left.configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        let mut right = ChartBuilder::on(&panels[1])
            .caption("accuracy vs coverage", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1.01f64, ymin..1.01)
            .map_err(plot_err)?;
        right
            .configure_mesh()
            .x_desc("coverage (share decided by the model)")
            .y_desc("accuracy on decided")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        let mut pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.1, r.2)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        right.draw_series(LineSeries::new(pts.clone(), PALETTE[2].stroke_width(2))).map_err(plot_err)?;
        right.draw_series(pts.iter().map(|&p| Circle::new(p, 3, PALETTE[2].filled()))).map_err(plot_err)?;
        Ok(())
    }))
}

// ---------------------------------------------------------------------------------------------
// Explanation figures.
// ---------------------------------------------------------------------------------------------

/// The notebook's two LIME pictures for class `label`: the `n_pos` most positive superpixels
/// (`positive_only=True`), and the `n_posneg` strongest superpixels of either sign
/// (`positive_only=False`; green for, red against), each outlined with `mark_boundaries`
/// (yellow, skimage's defaults). The notebook uses 3 and 5.
pub fn lime_boundaries(
    exp: &Explanation,
    label: usize,
    class_name: &str,
    n_pos: usize,
    n_posneg: usize,
) -> Result<Figure> {
    let (pos_img, pos_mask) = exp.get_image_and_mask(label, &MaskOptions::positive(n_pos))?;
    let pos = mark_boundaries(&pos_img, pos_mask.view(), [255, 255, 0], BoundaryMode::Outer)?;
    let (pn_img, pn_mask) = exp.get_image_and_mask(label, &MaskOptions::pos_neg(n_posneg))?;
    let pn = mark_boundaries(&pn_img, pn_mask.view(), [255, 255, 0], BoundaryMode::Outer)?;
    Ok(figure!(900, 500, |root| {
        let rest = with_title(&root, &format!("LIME superpixels for class '{class_name}'"), 38, 22)?;
        let panels = rest.split_evenly((1, 2));
        titled_image(&panels[0], &pos, &format!("top {n_pos} superpixels for the class"))?;
        titled_image(&panels[1], &pn, &format!("top {n_posneg}: green for, red against"))?;
        Ok(())
    }))
}

/// Symmetric limits of a weight map: `±max|w|` (`±1e-12` when all are zero).
fn symmetric_limit(map: ArrayView2<f64>) -> f64 {
    map.iter().fold(0.0f64, |a, &v| if v.is_finite() { a.max(v.abs()) } else { a }).max(1e-12)
}

/// The notebook's LIME heatmap: each pixel coloured by its superpixel's weight for `label`,
/// `RdBu` with symmetric limits (`vmin = -max|w|`, `vmax = max|w|`: red against, blue for),
/// with a colour bar.
pub fn lime_heatmap(exp: &Explanation, label: usize, class_name: &str) -> Result<Figure> {
    let map = exp.heatmap(label)?;
    let lim = symmetric_limit(map.view());
    let img = heatmap_image(map.view(), Colormap::RdBu, -lim, lim);
    Ok(figure!(620, 560, |root| {
        let rest = with_title(&root, &format!("LIME superpixel weights for class '{class_name}'"), 38, 20)?;
        let (left, right) = rest.split_horizontally(520);
        draw_image(&left.margin(6, 6, 6, 6), &img)?;
        draw_colorbar(&right.margin(20, 20, 0, 0), Colormap::RdBu, -lim, lim, "weight (blue: for)")
    }))
}

/// A Grad-CAM map (values in [0, 1]) over its image, coloured with `jet` at opacity `alpha`,
/// beside the plain image, with a colour bar.
pub fn gradcam_overlay(image: &RgbImage, cam: ArrayView2<f32>, alpha: f64, title: &str) -> Result<Figure> {
    let over = overlay(image, cam, Colormap::Jet, alpha)?;
    Ok(figure!(1000, 520, |root| {
        let rest = with_title(&root, title, 38, 20)?;
        let (imgs, bar) = rest.split_horizontally(900);
        let panels = imgs.split_evenly((1, 2));
        titled_image(&panels[0], image, "image")?;
        titled_image(&panels[1], &over, &format!("Grad-CAM (opacity {alpha:.2})"))?;
        draw_colorbar(&bar.margin(40, 20, 0, 0), Colormap::Jet, 0.0, 1.0, "relevance")
    }))
}

/// LIME and Grad-CAM side by side for one image: one row per class (`classes[i]` is class `i`),
/// with the image, LIME's strongest superpixels (green for, red against, 5 of them), LIME's
/// weight heatmap (RdBu, symmetric limits shared by all rows) and the Grad-CAM overlay found in
/// `cams` under the class's name. A class LIME did not explain, or without a map, gets a note.
pub fn explain_side_by_side(
    image: &RgbImage,
    exp: &Explanation,
    cams: &[(String, Array2<f32>)],
    classes: &[String],
) -> Result<Figure> {
    if classes.is_empty() {
        return Err(Error::invalid("explain_side_by_side: no classes"));
    }
    struct Row {
        name: String,
        prob: Option<f64>,
        boundaries: Option<RgbImage>,
        heat: Option<Array2<f64>>,
        cam: Option<RgbImage>,
    }
    let mut rows = Vec::new();
    for (i, name) in classes.iter().enumerate() {
        let explained = exp.label(i).is_ok();
        let boundaries = if explained {
            let (img, mask) = exp.get_image_and_mask(i, &MaskOptions::pos_neg(5))?;
            Some(mark_boundaries(&img, mask.view(), [255, 255, 0], BoundaryMode::Outer)?)
        } else {
            None
        };
        let heat = if explained { Some(exp.heatmap(i)?) } else { None };
        let cam = match cams.iter().find(|c| &c.0 == name) {
            Some((_, m)) => Some(overlay(image, m.view(), Colormap::Jet, 0.45)?),
            None => None,
        };
        rows.push(Row { name: name.clone(), prob: exp.predictions.get(i).copied(), boundaries, heat, cam });
    }
    let lim = rows.iter().filter_map(|r| r.heat.as_ref()).map(|h| symmetric_limit(h.view())).fold(1e-12, f64::max);
    let tile = 260u32;
    let (label_w, bar_w) = (150u32, 110u32);
    let width = label_w + 4 * tile + bar_w;
    let height = 92 + tile * rows.len() as u32;
    Ok(figure!(width, height, |root| {
        let rest = with_title(&root, "LIME and Grad-CAM, per class", 40, 22)?.margin(0, 12, 0, 0);
        let (head, body) = rest.split_vertically(40);
        let heads = ["image", "LIME: green for, red against", "LIME weights (RdBu)", "Grad-CAM (jet)"];
        for (k, h) in heads.iter().enumerate() {
            centred_text(&head, h, ((label_w + tile * k as u32 + tile / 2) as i32, 20), 16, BLACK)?;
        }
        let (grid, bar) = body.split_horizontally(label_w + 4 * tile);
        let strips = grid.split_evenly((rows.len(), 1));
        for (row, strip) in rows.iter().zip(&strips) {
            let (lab, cells) = strip.split_horizontally(label_w);
            centred_text(&lab, &row.name, ((label_w / 2) as i32, (tile / 2) as i32 - 12), 18, BLACK)?;
            if let Some(p) = row.prob {
                centred_text(
                    &lab,
                    &format!("p = {:.1}%", 100.0 * p),
                    ((label_w / 2) as i32, (tile / 2) as i32 + 14),
                    15,
                    BLACK,
                )?;
            }
            let cs = cells.split_evenly((1, 4));
            draw_image(&cs[0].margin(4, 4, 4, 4), image)?;
            match (&row.boundaries, &row.heat) {
                (Some(b), Some(h)) => {
                    draw_image(&cs[1].margin(4, 4, 4, 4), b)?;
                    draw_image(&cs[2].margin(4, 4, 4, 4), &heatmap_image(h.view(), Colormap::RdBu, -lim, lim))?;
                }
                _ => {
                    for c in [&cs[1], &cs[2]] {
                        centred_text(
                            c,
                            "not explained by LIME",
                            ((tile / 2) as i32, (tile / 2) as i32),
                            14,
                            RGBColor(120, 120, 120),
                        )?;
                    }
                }
            }
            match &row.cam {
                Some(c) => draw_image(&cs[3].margin(4, 4, 4, 4), c)?,
                None => centred_text(
                    &cs[3],
                    "no Grad-CAM map",
                    ((tile / 2) as i32, (tile / 2) as i32),
                    14,
                    RGBColor(120, 120, 120),
                )?,
            }
        }
        let bars = bar.split_evenly((2, 1));
        draw_colorbar(&bars[0].margin(10, 10, 10, 0), Colormap::RdBu, -lim, lim, "LIME weight")?;
        draw_colorbar(&bars[1].margin(10, 10, 10, 0), Colormap::Jet, 0.0, 1.0, "Grad-CAM")
    }))
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
