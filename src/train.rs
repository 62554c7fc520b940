//! Training as in the notebook: Adam (lr 1e-3, weight decay 1e-3/15), cross-entropy, batch 8,
//! 15 epochs, loss = main + 0.4 x aux in training; per epoch the train and val loss, accuracy,
//! macro precision/recall/F1 and the classification report.
//!
//! Two paths:
//! - **cached** (default): the backbone is frozen, so its pooled features are extracted once
//!   (`views` augmented views per training image with the train transform, one view of each
//!   validation image) and cached on disk ([`crate::features`]); each epoch then trains the head on
//!   view `epoch % views` of every image. The auxiliary loss is **omitted** on this path: the aux
//!   head needs `Mixed_6e`'s 768 x 17 x 17 activations, too big to cache.
//! - **uncached**: every epoch decodes and transforms the images and runs the backbone (frozen
//!   part without gradient, on the fast path); the aux loss is added; the last
//!   `fine_tune_blocks` backbone blocks can be trained too (slow on a CPU).
//!
//! Deterministic for a seed: the dropout generator is reseeded from `(seed, epoch)` at the start of
//! every epoch, and shuffling and transforms are drawn from the seed and the epoch, so that with Adam's
//! state ([`crate::optim::Adam`], saved in checkpoints) a resumed run equals an uninterrupted one.

use crate::data::{check_same_classes, DataLoader, ImageFolder};
use crate::error::{Error, Result};
use crate::features::{cached_features, default_cache_dir, FeatureSet};
use crate::metrics::ClassificationReport;
use crate::model::TransferModel;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use crate::optim::Adam;
use std::time::Instant;
use tch::Tensor;

/// Training hyperparameters (defaults: the notebook's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs (15).
    pub epochs: usize,
    /// Batch size (8).
    pub batch_size: usize,
    /// Adam learning rate (1e-3).
    pub lr: f64,
    /// Adam weight decay (1e-3 / 15).
    pub weight_decay: f64,
    /// Weight of the auxiliary loss (0.4).
    pub aux_weight: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// Use the feature cache (frozen backbone only).
    pub cached: bool,
    /// Augmented views per training image on the cached path.
    pub views: usize,
    /// Batch size of feature extraction.
    pub extract_batch_size: usize,
    /// Cache folder (default `<cache>/features`).
    pub cache_dir: Option<PathBuf>,
    /// sha256 of the backbone weights file (part of the cache key); `None` disables the disk
    /// cache (features are still extracted once).
    pub weights_sha256: Option<String>,
    /// What [`train_model`] prints (the progress callback of [`train_model_with`] is unaffected).
    #[serde(default)]
    pub verbosity: Verbosity,
}

/// What [`train_model`] prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verbosity {
    /// Nothing.
    Quiet,
    /// One line per epoch and the total time, on stderr.
    #[default]
    Epoch,
    /// What the notebook's `train_model` prints, on stdout: per epoch, for train and val, the
    /// loss, accuracy, macro precision, recall and F1 and the classification report; progress
    /// of feature extraction; then `Training complete in Xm Ys`.
    Notebook,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 15,
            batch_size: 8,
            lr: 1e-3,
            weight_decay: 1e-3 / 15.0,
            aux_weight: 0.4,
            seed: 1337,
            cached: true,
            views: 3,
            extract_batch_size: 16,
            cache_dir: None,
            weights_sha256: None,
            verbosity: Verbosity::Epoch,
        }
    }
}

/// Figures of one split in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    /// Mean loss per image (main + aux weight x aux in training where the aux head is used).
    pub loss: f64,
    /// Accuracy.
    pub accuracy: f64,
    /// Macro precision.
    pub macro_precision: f64,
    /// Macro recall.
    pub macro_recall: f64,
    /// Macro F1.
    pub macro_f1: f64,
    /// sklearn's classification report.
    pub report: ClassificationReport,
}

impl SplitStats {
    /// Figures from a mean loss, labels and predictions.
    pub fn new(loss: f64, y: &[i64], p: &[i64], classes: &[String]) -> Result<Self> {
        let report = ClassificationReport::new(y, p, classes)?;
        Ok(SplitStats {
            loss,
            accuracy: report.accuracy,
            macro_precision: report.macro_avg.precision,
            macro_recall: report.macro_avg.recall,
            macro_f1: report.macro_avg.f1,
            report,
        })
    }
}

/// One epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Training figures (train mode, as the notebook prints them).
    pub train: SplitStats,
    /// Validation figures (eval mode).
    pub val: SplitStats,
    /// Seconds this epoch took.
    pub seconds: f64,
}

impl std::fmt::Display for EpochStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>2}: train loss {:.4} acc {:.4} f1 {:.4} | val loss {:.4} acc {:.4} P {:.4} R {:.4} F1 {:.4} ({:.1}s)",
            self.epoch,
            self.train.loss,
            self.train.accuracy,
            self.train.macro_f1,
            self.val.loss,
            self.val.accuracy,
            self.val.macro_precision,
            self.val.macro_recall,
            self.val.macro_f1,
            self.seconds
        )
    }
}

/// Everything measured during training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Per-epoch figures.
    pub epochs: Vec<EpochStats>,
    /// Seconds spent extracting (or loading) features on the cached path.
    pub feature_seconds: f64,
    /// Whether the features came from the disk cache (train, val).
    pub feature_cache_hits: (bool, bool),
    /// Total seconds.
    pub total_seconds: f64,
    /// `"cached"` or `"uncached"`.
    pub path: String,
}

/// Progress events.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A stage with `done` of `total` items.
    Step {
        /// Stage name ("features train", "epoch 3 train", ...).
        stage: &'a str,
        /// Items done.
        done: usize,
        /// Items in all.
        total: usize,
    },
    /// An epoch finished.
    Epoch(&'a EpochStats),
}

impl EpochStats {
    /// The epoch as the notebook's `train_model` prints it: for train and val, the loss,
    /// accuracy, macro precision, recall and F1, then sklearn's classification report.
    pub fn notebook_text(&self, epochs: usize) -> String {
        let mut s = format!("Epoch {}/{}\n{}\n", self.epoch, epochs, "-".repeat(10));
        for (phase, st) in [("train", &self.train), ("val", &self.val)] {
            s += &format!(
                "{phase} Loss: {:.4} Acc: {:.4} Precision: {:.4} Recall: {:.4} F1: {:.4}\n{}\n",
                st.loss, st.accuracy, st.macro_precision, st.macro_recall, st.macro_f1, st.report
            );
        }
        s
    }
}

/// `Training complete in Xm Ys`, as the notebook prints the total time.
///
/// ```
/// assert_eq!(covid_cxr::train::complete_in(125.4), "Training complete in 2m 5s");
/// ```
pub fn complete_in(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("Training complete in {}m {}s", s / 60, s % 60)
}

/// Trains `model` (head, and fine-tuned blocks) with the notebook's recipe, printing as
/// `cfg.verbosity` says (by default one line per epoch to stderr). See [`train_model_with`] for
/// a progress callback.
pub fn train_model(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
) -> Result<History> {
    let mut last_tenth = (String::new(), usize::MAX);
    let h = train_model_with(model, train, val, cfg, &mut |p| match (cfg.verbosity, p) {
        (Verbosity::Epoch, Progress::Epoch(e)) => eprintln!("{e}"),
        (Verbosity::Notebook, Progress::Epoch(e)) => println!("{}", e.notebook_text(cfg.epochs)),
        (Verbosity::Notebook, Progress::Step { stage, done, total }) if stage.starts_with("features") => {
            // one line per quarter of feature extraction
            let q = done * 4 / total.max(1);
            if last_tenth.0 != stage || last_tenth.1 != q {
                last_tenth = (stage.to_string(), q);
                println!("{stage}: {done}/{total} images");
            }
        }
        _ => {}
    })?;
    match cfg.verbosity {
        Verbosity::Quiet => {}
        Verbosity::Epoch => eprintln!("{}", complete_in(h.total_seconds)),
        Verbosity::Notebook => println!("{}", complete_in(h.total_seconds)),
    }
    Ok(h)
}

/// [`train_model`] with a progress callback.
pub fn train_model_with(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<History> {
    resume_training(model, train, val, cfg, History::default(), progress)
}

/// Continues training from `previous` (e.g. a checkpoint's history, after
/// [`crate::checkpoint::load`]) with a fresh Adam: its moments restart from zero. For an exact
/// resume, pass the checkpoint's optimizer state to [`continue_training`].
pub fn resume_training(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    previous: History,
    progress: &mut dyn FnMut(Progress),
) -> Result<History> {
    let state = TrainState { history: previous, optimizer: Adam::new(cfg.lr, cfg.weight_decay) };
    Ok(continue_training(model, train, val, cfg, state, progress)?.history)
}

/// Where a training run stands: its epochs so far and Adam's state (what a checkpoint must hold for
/// a resume to equal an uninterrupted run).
#[derive(Debug, Clone)]
pub struct TrainState {
    /// The epochs done.
    pub history: History,
    /// The optimizer of the head (and fine-tuned blocks), with its moments and step counts.
    pub optimizer: Adam,
}

/// Runs epochs `state.history.epochs.len() + 1 ..= cfg.epochs` from `state` (a fresh one, or
/// [`crate::checkpoint::load_train_state`]'s) and returns the new state. The learning rate and weight
/// decay are `cfg`'s. 5 epochs, then 5 more from the saved state, give the same weights and history
/// figures as 10 epochs in one go.
pub fn continue_training(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    state: TrainState,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainState> {
    check_inputs(model, train, val, cfg)?;
    let TrainState { history: previous, optimizer: mut opt } = state;
    opt.lr = cfg.lr;
    opt.weight_decay = cfg.weight_decay;
    let start = previous.epochs.len();
    let t0 = Instant::now();
    let prev_seconds = previous.total_seconds;
    let mut history = previous;
    let use_cache = cfg.cached && model.cfg.fine_tune_blocks == 0;
    if use_cache {
        history.path = "cached".into();
        let tf = Instant::now();
        let (ftrain, fval) = features_for(model, train, val, cfg, &mut history, progress)?;
        history.feature_seconds += tf.elapsed().as_secs_f64();
        head_epochs(model, &ftrain, &fval, cfg, &mut opt, &train.classes, &mut history, progress)?;
    } else {
        history.path = "uncached".into();
        for epoch in start..cfg.epochs {
            let te = Instant::now();
            seed_epoch(cfg, epoch);
            let tr = image_epoch(model, train, epoch, cfg, &mut opt, progress)?;
            model.invalidate_fused();
            let va = image_eval(model, val, cfg, progress)?;
            push_epoch(&mut history, epoch, tr, va, te, progress);
        }
    }
    history.total_seconds = prev_seconds + t0.elapsed().as_secs_f64();
    Ok(TrainState { history, optimizer: opt })
}

/// Reseeds libtorch's generator (dropout) from `(seed, epoch)`, so that an epoch draws the same
/// masks whether the run was resumed before it or not.
fn seed_epoch(cfg: &TrainConfig, epoch: usize) {
    tch::manual_seed(cfg.seed.wrapping_add(epoch as u64 * 7919) as i64);
}

/// Trains the head of `model` on cached features, with the notebook's recipe (Adam with
/// `cfg.lr` and `cfg.weight_decay`, batches of `cfg.batch_size`, epoch `e` on view `e % views`),
/// from epoch `history.epochs.len() + 1` to `cfg.epochs`, with a fresh Adam; reseeds libtorch's RNG (dropout) from
/// `(cfg.seed, epoch)` at each epoch, as [`continue_training`] does. Several heads can so be trained on one extraction
/// ([`crate::robust::seed_variance`]).
pub fn train_head_on_features(
    model: &TransferModel,
    ftrain: &FeatureSet,
    fval: &FeatureSet,
    cfg: &TrainConfig,
    classes: &[String],
    mut history: History,
    progress: &mut dyn FnMut(Progress),
) -> Result<History> {
    let t0 = Instant::now();
    history.path = "cached".into();
    let mut opt = Adam::new(cfg.lr, cfg.weight_decay);
    head_epochs(model, ftrain, fval, cfg, &mut opt, classes, &mut history, progress)?;
    history.total_seconds += t0.elapsed().as_secs_f64();
    Ok(history)
}

#[allow(clippy::too_many_arguments)]
fn head_epochs(
    model: &TransferModel,
    ftrain: &FeatureSet,
    fval: &FeatureSet,
    cfg: &TrainConfig,
    opt: &mut Adam,
    classes: &[String],
    history: &mut History,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    if cfg.batch_size == 0 {
        return Err(Error::invalid("batch_size must be >= 1"));
    }
    let _one = crate::hardware::OneThread::new(); // tiny operations: see OneThread
    for epoch in history.epochs.len()..cfg.epochs {
        let te = Instant::now();
        seed_epoch(cfg, epoch);
        let tr = head_epoch(model, ftrain, epoch, cfg, opt, classes)?;
        let va = head_eval(model, fval, classes)?;
        push_epoch(history, epoch, tr, va, te, progress);
    }
    Ok(())
}

fn push_epoch(
    h: &mut History,
    epoch: usize,
    train: SplitStats,
    val: SplitStats,
    t: Instant,
    progress: &mut dyn FnMut(Progress),
) {
    let e = EpochStats { epoch: epoch + 1, train, val, seconds: t.elapsed().as_secs_f64() };
    progress(Progress::Epoch(&e));
    h.epochs.push(e);
}

fn check_inputs(model: &TransferModel, train: &ImageFolder, val: &ImageFolder, cfg: &TrainConfig) -> Result<()> {
    if train.is_empty() {
        return Err(Error::dataset(&train.root, "empty training set"));
    }
    if val.is_empty() {
        return Err(Error::dataset(&val.root, "empty validation set"));
    }
    check_same_classes(train, val)?;
    if train.classes.len() as i64 != model.cfg.num_classes {
        return Err(Error::dataset(
            &train.root,
            format!(
                "{} classes {:?} but the model has {} outputs",
                train.classes.len(),
                train.classes,
                model.cfg.num_classes
            ),
        ));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::invalid("batch_size and epochs must be >= 1"));
    }
    Ok(())
}

/// Features of the training set (`cfg.views` views with its transform) and of the validation set
/// (one view), from the disk cache when `cfg.weights_sha256` is set; records the cache hits in
/// `history`.
pub fn features_for(
    model: &TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    history: &mut History,
    progress: &mut dyn FnMut(Progress),
) -> Result<(FeatureSet, FeatureSet)> {
    let dir = cfg.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let mut one = |ds: &ImageFolder, views: usize, stage: &str| -> Result<(FeatureSet, bool)> {
        let mut cb = |done, total| progress(Progress::Step { stage, done, total });
        match &cfg.weights_sha256 {
            Some(sha) => cached_features(model, sha, ds, views, cfg.seed, cfg.extract_batch_size, &dir, &mut cb),
            None => Ok((crate::features::extract(model, ds, views, cfg.seed, cfg.extract_batch_size, &mut cb)?, false)),
        }
    };
    let (ft, ht) = one(train, cfg.views, "features train")?;
    let (fv, hv) = one(val, 1, "features val")?;
    history.feature_cache_hits = (ht, hv);
    Ok((ft, fv))
}

/// The validation figures of a trained model ([`crate::evaluate::Evaluation`]): on the cached path
/// from the validation set's cached features (the frozen backbone's output is the same, so only the
/// head runs), else by running the whole model over the images as
/// [`crate::evaluate::evaluate`] does. The feature cache makes this instant after training, where
/// a second pass of the backbone over the validation images used to cost as much as extracting
/// their features.
pub fn evaluate_val(model: &TransferModel, val: &ImageFolder, cfg: &TrainConfig) -> Result<crate::evaluate::Evaluation> {
    let (Some(sha), true, 0) = (&cfg.weights_sha256, cfg.cached, model.cfg.fine_tune_blocks) else {
        return crate::evaluate::evaluate(model, val);
    };
    if val.is_empty() {
        return Err(Error::dataset(&val.root, "no images to evaluate"));
    }
    let dir = cfg.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let (fs, _) = cached_features(model, sha, val, 1, cfg.seed, cfg.extract_batch_size, &dir, &mut |_, _| {})?;
    let probs = Vec::<Vec<f32>>::try_from(&model.proba_from_features(&fs.view(0)))?;
    crate::evaluate::evaluate_probs(&probs, &labels_vec(&fs.labels)?, &val.classes)
}

fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    idx
}

fn argmax(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.argmax(-1, false).to_device(tch::Device::Cpu)).unwrap_or_default()
}

fn labels_vec(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(t)?)
}

fn head_epoch(
    model: &TransferModel,
    fs: &FeatureSet,
    epoch: usize,
    cfg: &TrainConfig,
    opt: &mut Adam,
    classes: &[String],
) -> Result<SplitStats> {
    let x = fs.view(epoch);
    let order = epoch_order(fs.n, cfg.seed, epoch);
    let (mut loss_sum, mut ys, mut ps) = (0.0, Vec::new(), Vec::new());
    for chunk in order.chunks(cfg.batch_size) {
        let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (xb, yb) = (x.index_select(0, &idx), fs.labels.index_select(0, &idx));
        let out = model.head_forward_t(&xb, true);
        let loss = out.cross_entropy_for_logits(&yb.to_device(out.device()));
        opt.zero_grad(&model.head_vs);
        loss.backward();
        opt.step(&[&model.head_vs])?;
        loss_sum += loss.double_value(&[]) * chunk.len() as f64;
        ys.extend(labels_vec(&yb)?);
        ps.extend(argmax(&out));
    }
    SplitStats::new(loss_sum / fs.n as f64, &ys, &ps, classes)
}

fn head_eval(model: &TransferModel, fs: &FeatureSet, classes: &[String]) -> Result<SplitStats> {
    let (loss, preds) = tch::no_grad(|| {
        let out = model.head_forward_t(&fs.view(0), false);
        (out.cross_entropy_for_logits(&fs.labels.to_device(out.device())).double_value(&[]), argmax(&out))
    });
    SplitStats::new(loss, &labels_vec(&fs.labels)?, &preds, classes)
}

fn image_epoch(
    model: &TransferModel,
    ds: &ImageFolder,
    epoch: usize,
    cfg: &TrainConfig,
    opt: &mut Adam,
    progress: &mut dyn FnMut(Progress),
) -> Result<SplitStats> {
    let dl = DataLoader::new(ds, cfg.batch_size).shuffle(cfg.seed);
    let stage = format!("epoch {} train", epoch + 1);
    let (mut loss_sum, mut ys, mut ps, mut n) = (0.0, Vec::new(), Vec::new(), 0usize);
    for b in dl.iter(epoch as u64) {
        let b = b?;
        let out = model.forward_t(&b.images, true);
        let labels = b.labels.to_device(out.logits.device());
        let main = out.logits.cross_entropy_for_logits(&labels);
        let loss = match &out.aux {
            Some(aux) => main + aux.cross_entropy_for_logits(&labels) * cfg.aux_weight,
            None => main,
        };
        let tuned = model.cfg.fine_tune_blocks > 0;
        opt.zero_grad(&model.head_vs);
        if tuned {
            opt.zero_grad(&model.backbone_vs);
        }
        if loss.requires_grad() {
            loss.backward();
            // frozen backbone variables have no gradient and are left alone
            if tuned {
                opt.step(&[&model.head_vs, &model.backbone_vs])?;
            } else {
                opt.step(&[&model.head_vs])?;
            }
        }
        let k = b.paths.len();
        n += k;
        loss_sum += loss.double_value(&[]) * k as f64;
        ys.extend(labels_vec(&b.labels)?);
        ps.extend(argmax(&out.logits));
        progress(Progress::Step { stage: &stage, done: n, total: ds.len() });
    }
    SplitStats::new(loss_sum / n.max(1) as f64, &ys, &ps, &ds.classes)
}

fn image_eval(
    model: &TransferModel,
    ds: &ImageFolder,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<SplitStats> {
    let dl = DataLoader::new(ds, cfg.extract_batch_size);
    let (mut loss_sum, mut ys, mut ps, mut n) = (0.0, Vec::new(), Vec::new(), 0usize);
    for b in dl.iter(0) {
        let b = b?;
        let out = model.forward(&b.images);
        let k = b.paths.len();
        n += k;
        loss_sum += out.cross_entropy_for_logits(&b.labels.to_device(out.device())).double_value(&[]) * k as f64;
        ys.extend(labels_vec(&b.labels)?);
        ps.extend(argmax(&out));
        progress(Progress::Step { stage: "val", done: n, total: ds.len() });
    }
    SplitStats::new(loss_sum / n.max(1) as f64, &ys, &ps, &ds.classes)
}
