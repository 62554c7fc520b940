//! The explainers applied to the crate's transfer model: Grad-CAM on Mixed_7c and a LIME
//! classifier that runs the model's own preprocessing (unlike the notebook, whose LIME used a
//! 224 crop and ImageNet statistics the model never saw in training).

use crate::error::Result;
use crate::explain::gradcam::CamModel;
use crate::model::TransferModel;
use crate::transforms::Compose;
use image::{DynamicImage, RgbImage};
use rand::SeedableRng;
use tch::Tensor;

impl CamModel for TransferModel {
    fn mixed_7c(&self, x: &Tensor) -> Tensor {
        self.forward_mixed_7c(x)
    }
    fn head_from_mixed_7c(&self, a: &Tensor) -> Tensor {
        TransferModel::head_from_mixed_7c(self, a)
    }
}

/// The image as the model sees it, before `ToTensor`: the preprocessing's image steps
/// (e.g. `Resize((299, 299))`), as RGB. LIME perturbs this image.
pub fn model_view(img: &DynamicImage, preprocessing: &Compose) -> Result<RgbImage> {
    preprocessing.apply_image(img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
}

/// A `N x 3 x H x W` batch of images through the preprocessing.
pub fn to_batch(images: &[RgbImage], preprocessing: &Compose) -> Result<Tensor> {
    let mut data = Vec::new();
    let mut shape = (0, 0);
    for img in images {
        let (d, h, w) = preprocessing
            .apply_vec(&DynamicImage::ImageRgb8(img.clone()), &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
        shape = (h as i64, w as i64);
        data.extend(d);
    }
    Ok(Tensor::from_slice(&data).view([images.len() as i64, 3, shape.0, shape.1]))
}

/// LIME's classifier function for `model`: RGB images in, class probabilities out.
pub fn lime_classifier<'a>(
    model: &'a TransferModel,
    preprocessing: &'a Compose,
) -> impl FnMut(&[RgbImage]) -> Result<Vec<Vec<f64>>> + 'a {
    move |batch: &[RgbImage]| {
        let x = to_batch(batch, preprocessing)?;
        let p = tch::no_grad(|| model.predict_proba(&x)).to_kind(tch::Kind::Double);
        let rows = p.size()[0];
        (0..rows).map(|i| Ok(Vec::<f64>::try_from(p.get(i))?)).collect()
    }
}
