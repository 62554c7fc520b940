//! Grad-CAM (Selvaraju et al. 2017) on the last mixed block of InceptionV3 (`Mixed_7c`), as
//! pytorch-grad-cam and captum's `LayerGradCam`: the block's activations `A` (N x C x h x w) are
//! cut from the graph and made a leaf; the head maps them to logits; the gradient of the chosen
//! class score with respect to `A`, averaged over space, weights the channels; the map is
//! `relu(Σ_c w_c A_c)`, upsampled bilinearly to the input size and scaled to `[0, 1]` per image
//! (`(m - min) / (max - min)`, pytorch-grad-cam's `scale_cam_image`; a map that is all zero
//! stays zero).
//!
//! The model must be in evaluation mode (batch norm on running statistics, no dropout), so that
//! each item's score depends on its own activations only.

use super::colormap::Colormap;
use crate::error::{Error, Result};
use image::RgbImage;
use ndarray::{Array2, ArrayView2};
use tch::{Kind, Tensor};

/// A model split at its last convolutional block, for Grad-CAM.
pub trait CamModel {
    /// Activations of the target block (InceptionV3: `Mixed_7c`, N x 2048 x 8 x 8 for 299x299
    /// inputs) for an `N x 3 x H x W` input.
    fn mixed_7c(&self, x: &Tensor) -> Tensor;
    /// The rest of the network, from those activations to class logits (N x classes).
    fn head_from_mixed_7c(&self, a: &Tensor) -> Tensor;
}

/// Grad-CAM maps of class `class` for every image of the batch `x` (`N x 3 x H x W`); returns an
/// `N x H x W` float tensor in `[0, 1]` on `x`'s device.
pub fn grad_cam(model: &impl CamModel, x: &Tensor, class: i64) -> Result<Tensor> {
    let n = batch_size(x)?;
    grad_cam_per_item(model, x, &vec![class; n])
}

/// Grad-CAM maps with one target class per image (`classes.len()` must equal the batch size).
pub fn grad_cam_per_item(model: &impl CamModel, x: &Tensor, classes: &[i64]) -> Result<Tensor> {
    let n = batch_size(x)?;
    if classes.len() != n {
        return Err(Error::invalid(format!("grad_cam: {} classes for a batch of {n}", classes.len())));
    }
    let a = activations(model, x, n)?;
    cam_from_activations(model, &a, classes, x)
}

/// Grad-CAM maps of one image (`x` is `1 x 3 x H x W`) for each of `classes`, with a single pass
/// through the backbone: returns `classes.len() x H x W` in `[0, 1]`, row `i` for `classes[i]`.
pub fn grad_cam_classes(model: &impl CamModel, x: &Tensor, classes: &[i64]) -> Result<Tensor> {
    if batch_size(x)? != 1 {
        return Err(Error::invalid(format!("grad_cam_classes: one image expected, got a batch of {:?}", x.size())));
    }
    if classes.is_empty() {
        return Err(Error::invalid("grad_cam_classes: no class"));
    }
    let a = activations(model, x, 1)?.repeat([classes.len() as i64, 1, 1, 1]);
    cam_from_activations(model, &a, classes, x)
}

/// The target block's activations of `x`, checked to be `n x C x h x w`.
fn activations(model: &impl CamModel, x: &Tensor, n: usize) -> Result<Tensor> {
    let a = tch::no_grad(|| model.mixed_7c(x));
    let s = a.size();
    if s.len() != 4 || s[0] != n as i64 {
        return Err(Error::invalid(format!("grad_cam: activations must be N x C x h x w, got {s:?}")));
    }
    if s[1] == 0 || s[2] == 0 || s[3] == 0 {
        return Err(Error::invalid(format!(
            "grad_cam: activations of size {s:?} have no channel or no pixel (input {:?} too small?)",
            x.size()
        )));
    }
    Ok(a)
}

/// Grad-CAM of row `i` of the activations `a` for `classes[i]`, upsampled to `x`'s size.
fn cam_from_activations(model: &impl CamModel, a: &Tensor, classes: &[i64], x: &Tensor) -> Result<Tensor> {
    let n = classes.len() as i64;
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    tch::with_grad(|| {
        let a = a.detach().set_requires_grad(true);
        let logits = model.head_from_mixed_7c(&a);
        let ls = logits.size();
        if ls.len() != 2 || ls[0] != n {
            return Err(Error::invalid(format!("grad_cam: logits must be N x classes, got {ls:?}")));
        }
        if let Some(&bad) = classes.iter().find(|&&c| c < 0 || c >= ls[1]) {
            return Err(Error::invalid(format!("grad_cam: class {bad} but the model has {} classes", ls[1])));
        }
        let idx = Tensor::from_slice(classes).to_device(logits.device()).view([n, 1]);
        let score = logits.gather(1, &idx, false).sum(Kind::Float);
        let grads = Tensor::f_run_backward(&[&score], &[&a], false, false)?;
        let g = &grads[0];
        let weights = g.mean_dim([2i64, 3].as_slice(), true, Kind::Float);
        let cam = (weights * a.detach().to_kind(Kind::Float)).sum_dim_intlist(1, true, Kind::Float).relu();
        let cam = cam.upsample_bilinear2d([h, w], false, None, None).squeeze_dim(1);
        Ok(normalise(&cam))
    })
}

/// Scales each map of an `N x H x W` tensor to `[0, 1]` (min to 0, max to 1; flat maps to 0).
fn normalise(cam: &Tensor) -> Tensor {
    let mn = cam.amin([1i64, 2].as_slice(), true);
    let shifted = cam - &mn;
    let mx = shifted.amax([1i64, 2].as_slice(), true);
    let denom = mx.clamp_min(1e-12);
    (shifted / denom).clamp(0.0, 1.0)
}

fn batch_size(x: &Tensor) -> Result<usize> {
    let s = x.size();
    if s.len() != 4 || s[0] == 0 || s[2] == 0 || s[3] == 0 {
        return Err(Error::invalid(format!("grad_cam: input must be N x C x H x W with N, H, W > 0, got {s:?}")));
    }
    Ok(s[0] as usize)
}

/// Converts an `N x H x W` (or `H x W`) tensor of maps to ndarray arrays (rows x cols).
pub fn cam_maps(t: &Tensor) -> Result<Vec<Array2<f32>>> {
    let t = if t.dim() == 2 { t.unsqueeze(0) } else { t.shallow_clone() };
    let s = t.size();
    if s.len() != 3 {
        return Err(Error::invalid(format!("cam_maps: expected N x H x W, got {s:?}")));
    }
    let (h, w) = (s[1] as usize, s[2] as usize);
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!("cam_maps: maps of zero height or width: {s:?}")));
    }
    let flat: Vec<f32> = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1))?;
    flat.chunks(h * w)
        .take(s[0] as usize)
        .map(|c| Array2::from_shape_vec((h, w), c.to_vec()).map_err(|e| Error::invalid(format!("cam_maps: {e}"))))
        .collect()
}

/// Bilinear sample of `map` at the centre of output pixel (`x`, `y`) of an `ow x oh` grid
/// (`align_corners = false`).
fn sample(map: ArrayView2<f32>, x: u32, y: u32, ow: u32, oh: u32) -> f32 {
    let (h, w) = map.dim();
    let fy = ((y as f64 + 0.5) * h as f64 / oh as f64 - 0.5).clamp(0.0, (h - 1) as f64);
    let fx = ((x as f64 + 0.5) * w as f64 / ow as f64 - 0.5).clamp(0.0, (w - 1) as f64);
    let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let (ty, tx) = ((fy - y0 as f64) as f32, (fx - x0 as f64) as f32);
    let top = map[[y0, x0]] * (1.0 - tx) + map[[y0, x1]] * tx;
    let bot = map[[y1, x0]] * (1.0 - tx) + map[[y1, x1]] * tx;
    top * (1.0 - ty) + bot * ty
}

/// Colours a map in `[0, 1]` with `cmap` and blends it over `image`:
/// `(1 - alpha) · image + alpha · colour`. The map is resized bilinearly to the image if needed.
///
/// ```
/// use covid_cxr::explain::{overlay, Colormap};
/// let img = image::RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
/// let cam = ndarray::Array2::<f32>::ones((2, 2));
/// let out = overlay(&img, cam.view(), Colormap::Jet, 1.0).unwrap();
/// assert_eq!(out.get_pixel(0, 0).0, [128, 0, 0]);
/// ```
pub fn overlay(image: &RgbImage, cam: ArrayView2<f32>, cmap: Colormap, alpha: f64) -> Result<RgbImage> {
    if image.width() == 0 || image.height() == 0 || cam.is_empty() {
        return Err(Error::invalid("overlay: empty image or map"));
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::invalid(format!("overlay: alpha must be in [0, 1], got {alpha}")));
    }
    let (ow, oh) = (image.width(), image.height());
    Ok(RgbImage::from_fn(ow, oh, |x, y| {
        let v = sample(cam, x, y, ow, oh) as f64;
        let c = cmap.at(v).0;
        let p = image.get_pixel(x, y).0;
        image::Rgb(std::array::from_fn(|k| ((1.0 - alpha) * p[k] as f64 + alpha * c[k] as f64).round() as u8))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_size_maps_are_errors_not_panics() {
        for shape in [[1i64, 0, 5], [2, 4, 0], [1, 0, 0]] {
            let t = Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu));
            let e = cam_maps(&t).unwrap_err().to_string();
            assert!(e.contains("zero height or width"), "{e}");
        }
        // activations with no pixel (an input too small for the block)
        struct Empty;
        impl CamModel for Empty {
            fn mixed_7c(&self, x: &Tensor) -> Tensor {
                Tensor::zeros([x.size()[0], 4, 0, 3], (Kind::Float, tch::Device::Cpu))
            }
            fn head_from_mixed_7c(&self, a: &Tensor) -> Tensor {
                a.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
            }
        }
        let x = Tensor::zeros([1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let e = grad_cam(&Empty, &x, 0).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
    }

    /// Activations = the red and green channels, average-pooled 4x4; class 0 = mean red - mean
    /// green, class 1 = mean green.
    struct Tiny;
    impl CamModel for Tiny {
        fn mixed_7c(&self, x: &Tensor) -> Tensor {
            x.narrow(1, 0, 2).avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>)
        }
        fn head_from_mixed_7c(&self, a: &Tensor) -> Tensor {
            let m = a.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
            let w = Tensor::from_slice(&[1.0f32, 0.0, -1.0, 1.0]).view([2, 2]);
            m.matmul(&w)
        }
    }

    fn two_patches() -> Tensor {
        let x = Tensor::zeros([1, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let _ = x.get(0).get(0).narrow(0, 0, 4).narrow(1, 0, 4).fill_(1.0); // red top-left
        let _ = x.get(0).get(1).narrow(0, 12, 4).narrow(1, 12, 4).fill_(1.0); // green bottom-right
        x
    }

    fn argmax2(m: &Array2<f32>) -> (usize, usize) {
        let (mut best, mut at) = (f32::MIN, (0, 0));
        for ((r, c), &v) in m.indexed_iter() {
            if v > best {
                best = v;
                at = (r, c);
            }
        }
        at
    }

    #[test]
    fn cam_peaks_where_the_evidence_is() {
        let x = two_patches();
        let cams = cam_maps(&grad_cam(&Tiny, &x, 0).unwrap()).unwrap();
        let (r, c) = argmax2(&cams[0]);
        assert!(r < 4 && c < 4, "class 0 peak at {r},{c}");
        assert_eq!(cams[0][[14, 14]], 0.0);
        let cams = cam_maps(&grad_cam(&Tiny, &x, 1).unwrap()).unwrap();
        let (r, c) = argmax2(&cams[0]);
        assert!(r >= 12 && c >= 12, "class 1 peak at {r},{c}");
        assert!((cams[0].iter().cloned().fold(0.0, f32::max) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn per_item_classes_and_errors() {
        let x = Tensor::cat(&[two_patches(), two_patches()], 0);
        let cams = cam_maps(&grad_cam_per_item(&Tiny, &x, &[0, 1]).unwrap()).unwrap();
        assert_eq!(cams.len(), 2);
        assert!(argmax2(&cams[0]).0 < 4 && argmax2(&cams[1]).0 >= 12);
        assert!(grad_cam(&Tiny, &x, 2).is_err());
        assert!(grad_cam_per_item(&Tiny, &x, &[0]).is_err());
        assert!(grad_cam(&Tiny, &Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu)), 0).is_err());
        // All-zero image: every map is zero, not NaN.
        let z = Tensor::zeros([1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
        let cams = cam_maps(&tch::no_grad(|| grad_cam(&Tiny, &z, 1)).unwrap()).unwrap();
        assert!(cams[0].iter().all(|&v| v == 0.0));
    }
}
