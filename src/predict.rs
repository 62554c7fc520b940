//! Predictions for image files: the notebook's "predictions on three images", `covid-cxr
//! predict`, and anything that starts from paths rather than tensors.

use crate::error::{Error, Result};
use crate::model::TransferModel;
use crate::transforms::Compose;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Images per forward pass in [`predict_paths`].
pub const BATCH: usize = 8;

/// The model's answer for one image file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The image file.
    pub path: PathBuf,
    /// Class probabilities, in the model's class order.
    pub probabilities: Vec<f64>,
    /// Index of the most probable class.
    pub label: usize,
    /// Its name.
    pub class: String,
    /// Its probability.
    pub confidence: f64,
}

impl Prediction {
    /// Whether a human should decide (partial automation): the top probability is below
    /// `threshold`.
    pub fn deferred(&self, threshold: f64) -> bool {
        self.confidence < threshold
    }
}

/// Predicts every image of `paths` with `model`: each image is decoded, passed through
/// `preprocessing` (the checkpoint's, i.e. the validation transform; random steps, if any, use
/// seed 0) and classified, [`BATCH`] at a time. `classes` names the model's outputs. An
/// unreadable image is an error naming it.
///
/// ```no_run
/// use covid_cxr::prelude::*;
/// let (model, manifest) = covid_cxr::checkpoint::load(std::path::Path::new("runs/r1"))?;
/// let preds = covid_cxr::predict::predict_paths(&model, &manifest.classes, &manifest.preprocessing, &["x.png"])?;
/// println!("{} {:.3}", preds[0].class, preds[0].confidence);
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub fn predict_paths<P: AsRef<Path>>(
    model: &TransferModel,
    classes: &[String],
    preprocessing: &Compose,
    paths: &[P],
) -> Result<Vec<Prediction>> {
    if classes.len() as i64 != model.cfg.num_classes {
        return Err(Error::invalid(format!(
            "{} class names for a model with {} outputs",
            classes.len(),
            model.cfg.num_classes
        )));
    }
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(BATCH) {
        let xs = chunk
            .iter()
            .map(|p| {
                let img = crate::imageio::open_image(p)?;
                preprocessing.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let probs = tch::no_grad(|| model.predict_proba(&Tensor::stack(&xs, 0))).to_kind(tch::Kind::Double);
        let rows = Vec::<Vec<f64>>::try_from(&probs)?;
        for (p, r) in chunk.iter().zip(rows) {
            let (label, confidence) =
                r.iter().copied().enumerate().fold((0, f64::MIN), |a, (i, v)| if v > a.1 { (i, v) } else { a });
            out.push(Prediction {
                path: p.as_ref().to_path_buf(),
                class: classes[label].clone(),
                probabilities: r,
                label,
                confidence,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TransferConfig;

    #[test]
    fn one_prediction_per_path_with_probabilities_and_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let files = crate::synth::generate(tmp.path(), &crate::synth::SynthConfig::new(3, 2)).unwrap();
        tch::manual_seed(0);
        let model = TransferModel::new(&TransferConfig::default()).unwrap();
        let classes: Vec<String> = crate::synth::CLASSES.iter().map(|c| c.to_string()).collect();
        let tf = Compose::notebook_val(75);
        let preds = predict_paths(&model, &classes, &tf, &files).unwrap();
        assert_eq!(preds.len(), files.len());
        for (p, f) in preds.iter().zip(&files) {
            assert_eq!(&p.path, f);
            assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5);
            let best = p.probabilities.iter().cloned().fold(f64::MIN, f64::max);
            assert_eq!(p.confidence, best);
            assert_eq!(p.class, classes[p.label]);
            assert!(p.deferred(best + 1e-9) && !p.deferred(best));
        }
        let bad = tmp.path().join("broken.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let e = predict_paths(&model, &classes, &tf, &[&bad]).unwrap_err();
        assert!(e.to_string().contains("broken.png"), "{e}");
        assert!(predict_paths(&model, &classes[..2], &tf, &files).is_err());
    }
}
