//! Checkpoints: the trained head (and fine-tuned backbone blocks) as `.safetensors`, plus a JSON
//! run manifest naming the backbone weights file and its sha256, the configuration, classes,
//! preprocessing, seed, data fingerprint, history, metrics, crate and libtorch versions.
//!
//! A run folder holds `model.safetensors`, `optimizer.safetensors` (Adam's moments and step counts,
//! named by the manifest's `optimizer` field, so that `train --resume` continues exactly) and
//! `manifest.json`, each written atomically (temporary name, then rename; the manifest last), so a
//! crash never leaves a checkpoint that looks whole.

use crate::data::ImageFolder;
use crate::error::{Error, IoContext, Result};
use crate::imageio::write_atomic;
use crate::metrics::ClassificationReport;
use crate::model::{TransferConfig, TransferModel, BLOCK_NAMES};
use crate::train::{History, TrainConfig};
use crate::transforms::Compose;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the weights in a run folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// File name of the manifest in a run folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of Adam's state in a run folder ([`crate::optim::Adam::to_tensors`]).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// The backbone weights a checkpoint builds on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsRef {
    /// Path of the weights file when trained.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
}

/// The run manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `covid_cxr` version.
    pub crate_version: String,
    /// libtorch the crate was built against.
    pub libtorch: String,
    /// Seconds since the Unix epoch at saving.
    pub created_unix: u64,
    /// Model configuration.
    pub model: TransferConfig,
    /// Training configuration.
    pub train: Option<TrainConfig>,
    /// Class names, in output order.
    pub classes: Vec<String>,
    /// Preprocessing for inference (the validation transform).
    pub preprocessing: Compose,
    /// Training transform.
    pub train_transform: Option<Compose>,
    /// Seed.
    pub seed: u64,
    /// Fingerprint of the training data ([`crate::features::data_fingerprint`]).
    pub data_fingerprint: Option<String>,
    /// Backbone weights.
    pub weights: WeightsRef,
    /// Training history.
    pub history: Option<History>,
    /// Validation metrics of the last epoch.
    pub val_report: Option<ClassificationReport>,
    /// The training recipe: `"notebook"` or `"robust"` (absent in older manifests: the notebook's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// The robust recipe's grid, cross-validated scores and choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust: Option<crate::robust::RobustRecord>,
    /// Seed variance of the validation metrics (`train --seeds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_variance: Option<crate::robust::SeedReport>,
    /// The file in the run folder holding the optimizer's state (`optimizer.safetensors`); absent in
    /// runs saved before optimizer states were (their resume restarts Adam's moments).
    #[serde(default)]
    pub optimizer: Option<String>,
    /// The precision and device used for training, and why ([`crate::hardware`]).
    #[serde(default)]
    pub hardware: Option<crate::hardware::HardwareChoice>,
}

impl Manifest {
    /// A manifest for `model` with the given classes, preprocessing and weights; the rest empty.
    pub fn new(
        model: &TransferModel,
        classes: Vec<String>,
        preprocessing: Compose,
        weights: WeightsRef,
        seed: u64,
    ) -> Self {
        Manifest {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch: libtorch_description(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: model.cfg.clone(),
            train: None,
            classes,
            preprocessing,
            train_transform: None,
            seed,
            data_fingerprint: None,
            weights,
            history: None,
            val_report: None,
            recipe: None,
            robust: None,
            seed_variance: None,
            optimizer: None,
            hardware: None,
        }
    }
}

impl WeightsRef {
    /// A reference to the weights file `path`, with its sha256.
    pub fn of(path: &Path) -> Result<Self> {
        Ok(WeightsRef { path: path.to_path_buf(), sha256: crate::weights::sha256_file(path)? })
    }

    /// The pretrained 2015 ImageNet weights of the cache ([`crate::weights::ensure_pretrained`]).
    pub fn pretrained() -> Result<Self> {
        WeightsRef::of(&crate::weights::ensure_pretrained()?)
    }
}

impl Manifest {
    /// The manifest of a finished training: the model's configuration, the classes, the
    /// validation transform as the inference preprocessing, the training transform and
    /// configuration, the data fingerprint of `train`, the history and the last epoch's
    /// validation report. The one place where the demo, `covid-cxr train` and the notebook
    /// build it.
    pub fn for_training(
        model: &TransferModel,
        train: &ImageFolder,
        val: &ImageFolder,
        cfg: &TrainConfig,
        history: &History,
        weights: WeightsRef,
    ) -> Result<Self> {
        crate::data::check_same_classes(train, val)?;
        let mut m = Manifest::new(model, train.classes.clone(), val.transform.clone(), weights, cfg.seed);
        m.train = Some(cfg.clone());
        m.train_transform = Some(train.transform.clone());
        m.data_fingerprint = Some(crate::features::data_fingerprint(train)?);
        m.val_report = history.epochs.last().map(|e| e.val.report.clone());
        m.history = Some(history.clone());
        Ok(m)
    }
}

/// The libtorch this crate was linked against (its library folder, which names the version).
pub fn libtorch_description() -> String {
    option_env!("COVID_CXR_LIBTORCH_LIB").unwrap_or("unknown").to_string()
}

/// Names of the variables saved in a checkpoint: the head and aux head, plus the backbone
/// blocks that were fine-tuned.
fn saved_variables(model: &TransferModel) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<(String, tch::Tensor)> = model.head_vs.variables().into_iter().collect();
    let tuned = &BLOCK_NAMES[model.first_trainable_block()..];
    for (n, t) in model.backbone_vs.variables() {
        if tuned.contains(&n.split('.').next().unwrap_or("")) {
            v.push((n, t));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Saves `model` and `manifest` into `dir` (created if needed), atomically file by file.
pub fn save(dir: &Path, model: &TransferModel, manifest: &Manifest) -> Result<()> {
    std::fs::create_dir_all(dir).at("create folder", dir)?;
    let vars: Vec<(String, tch::Tensor)> = saved_variables(model).into_iter().map(|(n, t)| (n, t.detach())).collect();
    crate::weights::write_safetensors(&dir.join(MODEL_FILE), &vars, &[("format", "covid_cxr checkpoint v1")])?;
    let m = dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Json { path: m.clone(), source: e })?;
    write_atomic(&m, &json, true)
}

/// Writes Adam's state to `dir/optimizer.safetensors` (atomically) and names it in `manifest`; call
/// before [`save`], which writes the manifest.
pub fn save_optimizer(dir: &Path, opt: &crate::optim::Adam, manifest: &mut Manifest) -> Result<()> {
    crate::weights::write_safetensors(&dir.join(OPTIMIZER_FILE), &opt.to_tensors(), &[("format", "covid_cxr adam v1")])?;
    manifest.optimizer = Some(OPTIMIZER_FILE.to_string());
    Ok(())
}

/// The optimizer state a run saved, checked against `model`'s variables, with `cfg`'s learning rate and
/// weight decay; `None` for a run saved without one.
pub fn load_optimizer(
    dir: &Path,
    manifest: &Manifest,
    model: &TransferModel,
    cfg: &TrainConfig,
) -> Result<Option<crate::optim::Adam>> {
    let Some(name) = &manifest.optimizer else { return Ok(None) };
    if Path::new(name).components().count() != 1 {
        return Err(Error::dataset(dir.join(MANIFEST_FILE), format!("optimizer file {name:?} is not a plain file name")));
    }
    let file = dir.join(name);
    let tensors = crate::weights::read_tensors(&file)?;
    let adam = crate::optim::Adam::from_tensors(cfg.lr, cfg.weight_decay, &tensors, &file)?;
    adam.check_against(&[&model.head_vs, &model.backbone_vs], &file)?;
    Ok(Some(adam))
}

/// Reads `dir/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let m = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&m).at("read", &m)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json { path: m, source: e })
}

/// Loads a checkpoint: builds the model from the manifest, loads the backbone weights it names
/// (checking their sha256; the cached pretrained file is used when the recorded path moved but
/// the hash matches) and the saved head.
pub fn load(dir: &Path) -> Result<(TransferModel, Manifest)> {
    let manifest = read_manifest(dir)?;
    let mut model = TransferModel::new(&manifest.model)?;
    let wpath = locate_weights(&manifest.weights)?;
    crate::weights::load_backbone(&mut model, &wpath)?;
    load_saved(&model, &dir.join(MODEL_FILE))?;
    Ok((model, manifest))
}

/// Loads a checkpoint's `model.safetensors` into `model`: every saved tensor must be a variable
/// of the model with the same shape, and every head variable must be present.
pub fn load_saved(model: &TransferModel, file: &Path) -> Result<()> {
    let tensors = crate::weights::read_tensors(file)?;
    let vars = model.named_variables();
    let werr = |r: String| Error::Weights { path: file.to_path_buf(), reason: r };
    for (n, _) in model.head_vs.variables() {
        if !tensors.iter().any(|(k, _)| *k == n) {
            return Err(werr(format!("tensor {n} is missing")));
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (n, t) in &tensors {
            let v = vars.get(n).ok_or_else(|| werr(format!("tensor {n} is not a variable of the model")))?;
            if v.size() != t.size() {
                return Err(werr(format!("tensor {n} has shape {:?}, the model needs {:?}", t.size(), v.size())));
            }
            v.shallow_clone().copy_(t);
        }
        Ok(())
    })?;
    model.invalidate_fused();
    Ok(())
}

fn locate_weights(w: &WeightsRef) -> Result<PathBuf> {
    if w.path.is_file() && crate::weights::sha256_file(&w.path)? == w.sha256 {
        return Ok(w.path.clone());
    }
    if let Ok(p) = crate::weights::ensure_pretrained() {
        if crate::weights::sha256_file(&p)? == w.sha256 {
            return Ok(p);
        }
    }
    Err(Error::Weights {
        path: w.path.clone(),
        reason: format!("backbone weights with sha256 {} not found (missing or changed)", w.sha256),
    })
}

/// Checks that a dataset fits a checkpoint: same classes in the same order, and (when
/// `transform` is given) the same preprocessing.
pub fn check_compatible(manifest: &Manifest, ds: &ImageFolder) -> Result<()> {
    if manifest.classes != ds.classes {
        return Err(Error::dataset(
            &ds.root,
            format!("classes {:?} differ from the checkpoint's {:?}", ds.classes, manifest.classes),
        ));
    }
    if ds.transform != manifest.preprocessing {
        return Err(Error::dataset(
            &ds.root,
            format!(
                "preprocessing {} differs from the checkpoint's {}",
                serde_json::to_string(&ds.transform).unwrap_or_default(),
                serde_json::to_string(&manifest.preprocessing).unwrap_or_default()
            ),
        ));
    }
    Ok(())
}
