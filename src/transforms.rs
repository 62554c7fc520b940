//! torchvision-style transforms (the notebook's `transforms.Compose([...])`).
//!
//! ```
//! use covid_cxr::transforms::Compose;
//! // train = RandomResizedCrop(299), RandomHorizontalFlip, ToTensor, Normalize((0.5,), (0.5,))
//! let train = Compose::new().random_resized_crop(299).random_horizontal_flip(0.5).to_tensor().normalize([0.5; 3], [0.5; 3]);
//! // val = Resize((299, 299)), ToTensor, Normalize((0.5,), (0.5,))
//! let val = Compose::new().resize(299, 299).to_tensor().normalize([0.5; 3], [0.5; 3]);
//! assert_eq!(val.output_size(), Some((299, 299)));
//! # let _ = train;
//! ```
//!
//! Images are converted to 8-bit RGB first (PIL's `convert("RGB")` in `ImageFolder`), so a
//! grayscale film becomes three equal channels. Resizing is bilinear with antialiasing when
//! shrinking (as PIL's `BILINEAR`).

use crate::error::{Error, Result};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// One transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Transform {
    /// torchvision `RandomResizedCrop(size, scale, ratio)`.
    RandomResizedCrop { size: u32, scale: (f64, f64), ratio: (f64, f64) },
    /// torchvision `RandomHorizontalFlip(p)`.
    RandomHorizontalFlip { p: f64 },
    /// torchvision `Resize((h, w))`.
    Resize { height: u32, width: u32 },
    /// torchvision `Resize(size)`: the shorter side becomes `size`, the aspect ratio is kept.
    ResizeShorter { size: u32 },
    /// torchvision `CenterCrop((h, w))`.
    CenterCrop { height: u32, width: u32 },
    /// torchvision `ToTensor()`: HxWxC u8 -> CxHxW f32 in [0, 1].
    ToTensor,
    /// torchvision `Normalize(mean, std)`, per channel.
    Normalize { mean: [f32; 3], std: [f32; 3] },
    /// Finds burned-in markers near the border and fills them with the local background
    /// ([`crate::markers::mask_markers`]); not a torchvision transform.
    MaskMarkers(crate::markers::MarkerMasking),
}

/// A sequence of transforms (`transforms.Compose`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compose {
    /// The transforms, in order.
    pub ops: Vec<Transform>,
}

/// torchvision's `RandomResizedCrop.get_params`: returns `(top, left, height, width)`.
///
/// Up to 10 tries of a random area in `scale` and a log-uniform aspect ratio in `ratio`;
/// otherwise a centre crop at the nearest allowed aspect ratio.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let (i, j, h, w) = covid_cxr::transforms::random_resized_crop_params(&mut rng, 300, 200, (0.08, 1.0), (0.75, 4.0 / 3.0));
/// assert!(i + h <= 200 && j + w <= 300 && h > 0 && w > 0);
/// ```
pub fn random_resized_crop_params(
    rng: &mut impl Rng,
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> (u32, u32, u32, u32) {
    let area = (width as f64) * (height as f64);
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let ar = rng.random_range(lr0..=lr1).exp();
        let w = (target * ar).sqrt().round() as i64;
        let h = (target / ar).sqrt().round() as i64;
        if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
            let i = rng.random_range(0..=(height as i64 - h)) as u32;
            let j = rng.random_range(0..=(width as i64 - w)) as u32;
            return (i, j, h as u32, w as u32);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0.min(ratio.1) {
        (width, ((width as f64 / ratio.0.min(ratio.1)).round() as u32).max(1))
    } else if in_ratio > ratio.0.max(ratio.1) {
        (((height as f64 * ratio.0.max(ratio.1)).round() as u32).max(1), height)
    } else {
        (width, height)
    };
    ((height - h.min(height)) / 2, (width - w.min(width)) / 2, h.min(height), w.min(width))
}

impl Compose {
    /// An empty pipeline.
    pub fn new() -> Self {
        Compose { ops: Vec::new() }
    }
    /// Appends `RandomResizedCrop(size)` with torchvision's defaults (scale 0.08..1, ratio 3/4..4/3).
    pub fn random_resized_crop(mut self, size: u32) -> Self {
        self.ops.push(Transform::RandomResizedCrop { size, scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) });
        self
    }
    /// Appends `RandomHorizontalFlip(p)`.
    pub fn random_horizontal_flip(mut self, p: f64) -> Self {
        self.ops.push(Transform::RandomHorizontalFlip { p });
        self
    }
    /// Appends `Resize((height, width))`.
    pub fn resize(mut self, height: u32, width: u32) -> Self {
        self.ops.push(Transform::Resize { height, width });
        self
    }
    /// Appends `Resize(size)` (shorter side).
    pub fn resize_shorter(mut self, size: u32) -> Self {
        self.ops.push(Transform::ResizeShorter { size });
        self
    }
    /// Appends `CenterCrop((height, width))`.
    pub fn center_crop(mut self, height: u32, width: u32) -> Self {
        self.ops.push(Transform::CenterCrop { height, width });
        self
    }
    /// Appends `ToTensor()`.
    pub fn to_tensor(mut self) -> Self {
        self.ops.push(Transform::ToTensor);
        self
    }
    /// Appends `Normalize(mean, std)`.
    pub fn normalize(mut self, mean: [f32; 3], std: [f32; 3]) -> Self {
        self.ops.push(Transform::Normalize { mean, std });
        self
    }

    /// Puts marker masking ([`Transform::MaskMarkers`], default parameters) first, on the
    /// image at its own resolution; a pipeline that has it already is returned unchanged.
    ///
    /// ```
    /// let tf = covid_cxr::transforms::Compose::notebook_val(299).with_marker_masking();
    /// assert!(tf.masks_markers());
    /// assert_eq!(tf.clone().with_marker_masking(), tf);
    /// ```
    pub fn with_marker_masking(mut self) -> Self {
        if !self.masks_markers() {
            self.ops.insert(0, Transform::MaskMarkers(crate::markers::MarkerMasking::default()));
        }
        self
    }

    /// Whether the pipeline masks burned-in markers.
    pub fn masks_markers(&self) -> bool {
        self.ops.iter().any(|t| matches!(t, Transform::MaskMarkers(_)))
    }

    /// The notebook's training transform at `size`: RandomResizedCrop, RandomHorizontalFlip,
    /// ToTensor, Normalize(0.5, 0.5).
    pub fn notebook_train(size: u32) -> Self {
        Compose::new().random_resized_crop(size).random_horizontal_flip(0.5).to_tensor().normalize([0.5; 3], [0.5; 3])
    }

    /// The notebook's validation transform at `size`: Resize((size, size)), ToTensor, Normalize(0.5, 0.5).
    pub fn notebook_val(size: u32) -> Self {
        Compose::new().resize(size, size).to_tensor().normalize([0.5; 3], [0.5; 3])
    }

    /// Whether any step draws random numbers.
    pub fn is_random(&self) -> bool {
        self.ops
            .iter()
            .any(|t| matches!(t, Transform::RandomResizedCrop { .. } | Transform::RandomHorizontalFlip { .. }))
    }

    /// The fixed output size `(height, width)`, if the pipeline has one.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        let mut out = None;
        for t in &self.ops {
            match *t {
                Transform::RandomResizedCrop { size, .. } => out = Some((size, size)),
                Transform::Resize { height, width } | Transform::CenterCrop { height, width } => {
                    out = Some((height, width))
                }
                Transform::ResizeShorter { .. } => out = None,
                _ => {}
            }
        }
        out
    }

    /// The mean and std of the last `Normalize`, if any (to undo it for display).
    pub fn normalization(&self) -> Option<([f32; 3], [f32; 3])> {
        self.ops.iter().rev().find_map(|t| {
            if let Transform::Normalize { mean, std } = t {
                Some((*mean, *std))
            } else {
                None
            }
        })
    }

    /// Applies the image steps (everything before `ToTensor`) to an image, as 8-bit RGB.
    pub fn apply_image(&self, img: &DynamicImage, rng: &mut impl Rng) -> Result<RgbImage> {
        let mut cur: RgbImage = img.to_rgb8();
        for t in &self.ops {
            cur = match *t {
                Transform::RandomResizedCrop { size, scale, ratio } => {
                    check_size(size, size)?;
                    let (i, j, h, w) = random_resized_crop_params(rng, cur.width(), cur.height(), scale, ratio);
                    let crop = image::imageops::crop_imm(&cur, j, i, w, h).to_image();
                    image::imageops::resize(&crop, size, size, FilterType::Triangle)
                }
                Transform::RandomHorizontalFlip { p } => {
                    if rng.random::<f64>() < p {
                        image::imageops::flip_horizontal(&cur)
                    } else {
                        cur
                    }
                }
                Transform::Resize { height, width } => {
                    check_size(height, width)?;
                    if cur.dimensions() == (width, height) {
                        cur
                    } else {
                        image::imageops::resize(&cur, width, height, FilterType::Triangle)
                    }
                }
                Transform::ResizeShorter { size } => {
                    check_size(size, size)?;
                    let (w, h) = cur.dimensions();
                    let (nw, nh) = if w <= h {
                        (size, ((size as u64 * h as u64) / w as u64) as u32)
                    } else {
                        (((size as u64 * w as u64) / h as u64) as u32, size)
                    };
                    image::imageops::resize(&cur, nw, nh, FilterType::Triangle)
                }
                Transform::CenterCrop { height, width } => {
                    check_size(height, width)?;
                    center_crop(&cur, height, width)
                }
                Transform::MaskMarkers(cfg) => crate::markers::mask_markers_rgb(&cur, &cfg).0,
                Transform::ToTensor | Transform::Normalize { .. } => break,
            };
        }
        Ok(cur)
    }

    /// Applies the whole pipeline and returns a `3 x H x W` f32 tensor.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 30, image::Luma([255])));
    /// let t = covid_cxr::transforms::Compose::notebook_val(16).apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
    /// assert_eq!(t.size(), vec![3, 16, 16]);
    /// assert!((t.max().double_value(&[]) - 1.0).abs() < 1e-6); // (1 - 0.5) / 0.5
    /// ```
    pub fn apply(&self, img: &DynamicImage, rng: &mut impl Rng) -> Result<Tensor> {
        let (data, h, w) = self.apply_vec(img, rng)?;
        Ok(Tensor::from_slice(&data).view([3, h as i64, w as i64]))
    }

    /// Applies the whole pipeline into a CHW `Vec<f32>`; returns it with its height and width.
    pub fn apply_vec(&self, img: &DynamicImage, rng: &mut impl Rng) -> Result<(Vec<f32>, u32, u32)> {
        if !self.ops.iter().any(|t| matches!(t, Transform::ToTensor)) {
            return Err(Error::invalid("the transform pipeline has no to_tensor() step"));
        }
        let rgb = self.apply_image(img, rng)?;
        let (w, h) = rgb.dimensions();
        let n = (w * h) as usize;
        let mut data = vec![0f32; 3 * n];
        for (k, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                data[c * n + k] = p[c] as f32 / 255.0;
            }
        }
        let mut seen_tensor = false;
        for t in &self.ops {
            match t {
                Transform::ToTensor => seen_tensor = true,
                Transform::Normalize { mean, std } if seen_tensor => {
                    for c in 0..3 {
                        if std[c] == 0.0 {
                            return Err(Error::invalid("Normalize with std 0"));
                        }
                        for v in &mut data[c * n..(c + 1) * n] {
                            *v = (*v - mean[c]) / std[c];
                        }
                    }
                }
                Transform::Normalize { .. } => return Err(Error::invalid("Normalize must come after ToTensor")),
                _ if seen_tensor => return Err(Error::invalid(format!("{t:?} after ToTensor is not supported"))),
                _ => {}
            }
        }
        Ok((data, h, w))
    }
}

fn check_size(h: u32, w: u32) -> Result<()> {
    if h == 0 || w == 0 {
        Err(Error::invalid(format!("transform output size {h}x{w} must be positive")))
    } else {
        Ok(())
    }
}

/// torchvision's `CenterCrop`: crops the centre, padding with black where the image is smaller.
pub fn center_crop(img: &RgbImage, height: u32, width: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(width, height);
    // torchvision: top = round((h - th) / 2)
    let top = ((h as f64 - height as f64) / 2.0).round() as i64;
    let left = ((w as f64 - width as f64) / 2.0).round() as i64;
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = (x as i64 + left, y as i64 + top);
            if sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64 {
                out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rrc_params_in_bounds_and_scale() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut areas = Vec::new();
        for _ in 0..2000 {
            let (i, j, h, w) = random_resized_crop_params(&mut rng, 320, 240, (0.08, 1.0), (0.75, 4.0 / 3.0));
            assert!(i + h <= 240 && j + w <= 320);
            areas.push((h * w) as f64 / (320.0 * 240.0));
        }
        let min = areas.iter().cloned().fold(1.0, f64::min);
        assert!(min >= 0.07, "{min}");
    }

    #[test]
    fn rrc_fallback_is_center_crop() {
        // a very wide image: no try fits the ratio, so the centre crop at ratio 4/3 is taken
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (i, j, h, w) = random_resized_crop_params(&mut rng, 1000, 10, (0.99, 1.0), (0.75, 4.0 / 3.0));
        assert_eq!((i, h), (0, 10));
        assert_eq!(w, 13);
        assert_eq!(j, (1000 - 13) / 2);
    }

    #[test]
    fn grayscale_becomes_three_equal_channels_and_normalized_range() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(50, 40, |x, _| image::Luma([(x * 5) as u8])));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (d, h, w) = Compose::notebook_train(32).apply_vec(&img, &mut rng).unwrap();
        assert_eq!((h, w), (32, 32));
        let n = 32 * 32;
        assert_eq!(&d[..n], &d[n..2 * n]);
        assert!(d.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn missing_to_tensor_is_error() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::new(4, 4));
        let e = Compose::new().resize(2, 2).apply_vec(&img, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err();
        assert!(e.to_string().contains("to_tensor"));
    }

    #[test]
    fn center_crop_pads_small_images() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]));
        let out = center_crop(&img, 4, 4);
        assert_eq!(out.get_pixel(0, 0)[0], 0);
        assert_eq!(out.get_pixel(1, 1)[0], 9);
    }
}
