//! Beyond the notebook: seed variance and a robust recipe chosen by cross-validation on cached
//! features.
//!
//! **Seed variance** ([`seed_variance`]): the notebook's head trained with several seeds on the
//! *same* cached features; the mean, standard deviation (sample, n - 1), minimum and maximum of
//! every validation metric ([`SeedReport`]). One validation figure of one seed says little.
//!
//! **The robust recipe** ([`train_robust`]): k-fold cross-validation (5 folds by default) on the
//! training images' cached features, folds grouped by patient (or any manifest column) where
//! groups are given and balanced per class, over a small grid ([`default_grid`]):
//!
//! | head | features | L2 (Adam weight decay) | label smoothing | class-balanced loss | epochs | ensemble |
//! |---|---|---|---|---|---|---|
//! | linear (multinomial logistic regression from zero, full batch, Adam lr 0.01, 300 steps) | standardised | 0.1, 0.01, 0.001 | 0, 0.1 | no, yes | - | 1 |
//! | the notebook's MLP (Adam lr 1e-3, batch 8, dropout 0.5) | raw, as the notebook | 1e-2, 1e-3/15 | 0 | no | 5, 15 | 1, 3 seeds averaged |
//!
//! Each candidate is fitted on every view of the training folds' images (the augmented views and
//! one view with the inference transform, i.e. what `evaluate` sees) and scored by macro-F1 on the
//! inference-transform view of the held-out fold. **Choice**: the one-standard-error rule: the
//! best mean CV macro-F1 minus its standard error (fold standard deviation / sqrt(k)) is the bar;
//! the first candidate in grid order whose mean reaches it wins. The grid is listed from the
//! simplest, most regularised model to the most flexible, so among candidates the CV cannot tell
//! apart the simpler one is taken (exact ties go to the earlier one as well). The winner is then
//! fitted on all training images and installed as the model's head ([`crate::model::HeadSpec`]:
//! standardisation statistics and every ensemble member are saved in the checkpoint). The folds
//! come from `cv_seed` (0 by default), not from the run's seed: they are a property of the data.

use crate::data::ImageFolder;
use crate::error::{Error, Result};
use crate::features::FeatureSet;
use crate::model::{Head, HeadKind, HeadSpec, TransferModel};
use crate::optim::Adam;
use crate::train::{features_for, train_head_on_features, History, Progress, TrainConfig};
use rand::seq::SliceRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// Mean, sample standard deviation, minimum and maximum of one metric over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1; 0 for one value).
    pub std: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Spread {
    /// The spread of `v` (must not be empty).
    ///
    /// ```
    /// let s = covid_cxr::robust::Spread::of(&[1.0, 2.0, 3.0]);
    /// assert_eq!((s.mean, s.std, s.min, s.max), (2.0, 1.0, 1.0, 3.0));
    /// ```
    pub fn of(v: &[f64]) -> Spread {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Spread {
            mean,
            std: var.sqrt(),
            min: v.iter().cloned().fold(f64::INFINITY, f64::min),
            max: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Validation metrics of several seeds on the same features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedReport {
    /// The seeds, in order.
    pub seeds: Vec<u64>,
    /// Every seed's last-epoch validation metrics, by name.
    pub runs: Vec<BTreeMap<String, f64>>,
    /// The spread of each metric over the seeds.
    pub summary: BTreeMap<String, Spread>,
}

impl SeedReport {
    /// A report from each seed's metrics.
    pub fn new(seeds: Vec<u64>, runs: Vec<BTreeMap<String, f64>>) -> Self {
        let mut summary = BTreeMap::new();
        if let Some(first) = runs.first() {
            for k in first.keys() {
                let v: Vec<f64> = runs.iter().filter_map(|r| r.get(k).copied()).collect();
                summary.insert(k.clone(), Spread::of(&v));
            }
        }
        SeedReport { seeds, runs, summary }
    }
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "validation metrics over {} seeds {:?}", self.seeds.len(), self.seeds)?;
        writeln!(f, "{:<28}{:>9}{:>9}{:>9}{:>9}", "metric", "mean", "std", "min", "max")?;
        for (k, s) in &self.summary {
            writeln!(f, "{k:<28}{:>9.4}{:>9.4}{:>9.4}{:>9.4}", s.mean, s.std, s.min, s.max)?;
        }
        Ok(())
    }
}

/// The last-epoch validation metrics of a history, by name: loss, accuracy, macro precision,
/// recall and F1, and each class's precision, recall and F1.
pub fn val_metrics(h: &History) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if let Some(e) = h.epochs.last() {
        let v = &e.val;
        m.insert("loss".into(), v.loss);
        m.insert("accuracy".into(), v.accuracy);
        m.insert("macro_precision".into(), v.macro_precision);
        m.insert("macro_recall".into(), v.macro_recall);
        m.insert("macro_f1".into(), v.macro_f1);
        for (name, c) in v.report.classes.iter().zip(&v.report.per_class) {
            m.insert(format!("{name}.precision"), c.precision);
            m.insert(format!("{name}.recall"), c.recall);
            m.insert(format!("{name}.f1"), c.f1);
        }
    }
    m
}

/// Trains the head of `model` once per seed (`cfg` with each seed; a fresh head each time) on the
/// same features (extracted once, with `cfg.seed`, from the disk cache when
/// `cfg.weights_sha256` is set) and reports the spread of the validation metrics. `model` keeps
/// the last seed's head.
pub fn seed_variance(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    seeds: &[u64],
    progress: &mut dyn FnMut(Progress),
) -> Result<SeedReport> {
    if seeds.is_empty() {
        return Err(Error::invalid("seed_variance needs at least one seed"));
    }
    let mut h = History::default();
    let (ft, fv) = features_for(model, train, val, cfg, &mut h, progress)?;
    let spec = model.cfg.head;
    let mut runs = Vec::new();
    for &s in seeds {
        tch::manual_seed(s as i64);
        model.reset_head(&spec);
        let c = TrainConfig { seed: s, ..cfg.clone() };
        let h = train_head_on_features(model, &ft, &fv, &c, &train.classes, History::default(), progress)?;
        runs.push(val_metrics(&h));
    }
    Ok(SeedReport::new(seeds.to_vec(), runs))
}

/// One point of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Head kind, ensemble size, standardisation.
    pub head: HeadSpec,
    /// L2 strength (Adam's coupled weight decay).
    pub l2: f64,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Class weights `n / (C n_c)` in the loss.
    pub balanced: bool,
    /// Epochs (MLP heads; a linear head takes [`LINEAR_STEPS`] full-batch steps).
    pub epochs: usize,
}

/// Full-batch Adam steps of a linear head.
pub const LINEAR_STEPS: usize = 300;
/// Adam learning rate of a linear head.
pub const LINEAR_LR: f64 = 0.01;

impl Candidate {
    /// A short name, e.g. `linear std l2=0.01 ls=0.1 bal` or `mlp l2=6.7e-5 ep=15 x3`.
    pub fn name(&self) -> String {
        let mut s = match self.head.kind {
            HeadKind::Linear => "linear".to_string(),
            HeadKind::Mlp => "mlp".to_string(),
        };
        if self.head.standardize {
            s.push_str(" std");
        }
        s.push_str(&format!(" l2={:.2e}", self.l2));
        if self.label_smoothing > 0.0 {
            s.push_str(&format!(" ls={}", self.label_smoothing));
        }
        if self.balanced {
            s.push_str(" bal");
        }
        if self.head.kind == HeadKind::Mlp {
            s.push_str(&format!(" ep={}", self.epochs));
        }
        if self.head.members > 1 {
            s.push_str(&format!(" x{}", self.head.members));
        }
        s
    }
}

/// The documented grid (see the module docs), from the simplest, most regularised candidate to
/// the most flexible.
pub fn default_grid() -> Vec<Candidate> {
    let mut g = Vec::new();
    for l2 in [0.1, 0.01, 0.001] {
        for ls in [0.0, 0.1] {
            for balanced in [false, true] {
                g.push(Candidate {
                    head: HeadSpec { kind: HeadKind::Linear, members: 1, standardize: true },
                    l2,
                    label_smoothing: ls,
                    balanced,
                    epochs: 0,
                });
            }
        }
    }
    for l2 in [1e-2, 1e-3 / 15.0] {
        for epochs in [5, 15] {
            for members in [1, 3] {
                g.push(Candidate {
                    head: HeadSpec { kind: HeadKind::Mlp, members, standardize: false },
                    l2,
                    label_smoothing: 0.0,
                    balanced: false,
                    epochs,
                });
            }
        }
    }
    g
}

/// Options of the robust recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustConfig {
    /// Folds (5).
    pub folds: usize,
    /// Seed of the fold assignment (0).
    pub cv_seed: u64,
    /// The grid ([`default_grid`]).
    pub grid: Vec<Candidate>,
    /// Seed of the heads (initialisation, batch order, dropout).
    pub seed: u64,
}

impl Default for RobustConfig {
    fn default() -> Self {
        RobustConfig { folds: 5, cv_seed: 0, grid: default_grid(), seed: 1337 }
    }
}

/// Cached features of the training images for the robust recipe.
#[derive(Debug)]
pub struct CvData {
    /// Views to fit on, each `n x 2048` (the augmented views and the inference-transform view).
    pub views: Vec<Tensor>,
    /// The inference-transform view `n x 2048` (scored in cross-validation).
    pub clean: Tensor,
    /// Labels, `n`.
    pub labels: Vec<i64>,
    /// Group of each image (e.g. patient); each image its own group when `None`.
    pub groups: Option<Vec<String>>,
    /// Number of classes.
    pub num_classes: usize,
}

impl CvData {
    /// From the augmented training features and the inference-transform features of the same
    /// images (same order).
    pub fn new(aug: &FeatureSet, clean: &FeatureSet, num_classes: usize, groups: Option<Vec<String>>) -> Result<Self> {
        if aug.n != clean.n {
            return Err(Error::invalid(format!("{} augmented rows but {} clean rows", aug.n, clean.n)));
        }
        let labels = Vec::<i64>::try_from(&clean.labels)?;
        if Vec::<i64>::try_from(&aug.labels)? != labels {
            return Err(Error::invalid("augmented and clean features list the images in different orders"));
        }
        if let Some(g) = &groups {
            if g.len() != labels.len() {
                return Err(Error::invalid(format!("{} groups for {} images", g.len(), labels.len())));
            }
        }
        let mut views: Vec<Tensor> = (0..aug.views).map(|v| aug.view(v)).collect();
        views.push(clean.view(0));
        Ok(CvData { views, clean: clean.view(0), labels, groups, num_classes })
    }
}

/// Fold (`0..k`) of every image: whole groups go to one fold; groups are taken in a seeded random
/// order, by class of their first image, each into the fold with the fewest images of that class
/// so far (ties: the fold with fewest images, then the lowest index). Folds are so balanced per
/// class as far as group sizes allow.
///
/// ```
/// let labels = [0, 0, 0, 0, 1, 1, 1, 1];
/// let groups: Vec<String> = ["a", "a", "b", "c", "d", "d", "e", "f"].iter().map(|s| s.to_string()).collect();
/// let f = covid_cxr::robust::grouped_folds(&labels, Some(&groups), 2, 0).unwrap();
/// assert_eq!(f[0], f[1]);
/// assert_eq!(f[4], f[5]);
/// ```
pub fn grouped_folds(labels: &[i64], groups: Option<&[String]>, k: usize, seed: u64) -> Result<Vec<usize>> {
    let n = labels.len();
    if k < 2 {
        return Err(Error::invalid(format!("cross-validation needs at least 2 folds, got {k}")));
    }
    let owned: Vec<String>;
    let groups = match groups {
        Some(g) => g,
        None => {
            owned = (0..n).map(|i| i.to_string()).collect();
            &owned
        }
    };
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        members.entry(g.as_str()).or_default().push(i);
    }
    if members.len() < k {
        return Err(Error::invalid(format!("{} groups cannot fill {k} folds", members.len())));
    }
    let mut list: Vec<Vec<usize>> = members.into_values().collect();
    list.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    list.sort_by_key(|g| labels[g[0]]); // stable: shuffled order within a class
    let classes = labels.iter().map(|&l| l.max(0) as usize + 1).max().unwrap_or(1);
    let mut per_class = vec![vec![0usize; classes]; k];
    let mut total = vec![0usize; k];
    let mut fold = vec![0usize; n];
    for g in list {
        let c = labels[g[0]].max(0) as usize;
        let f = (0..k).min_by_key(|&f| (per_class[f][c], total[f], f)).unwrap_or(0);
        for &i in &g {
            fold[i] = f;
            per_class[f][labels[i].max(0) as usize] += 1;
        }
        total[f] += g.len();
    }
    Ok(fold)
}

fn index(t: &Tensor, idx: &[usize]) -> Tensor {
    t.index_select(0, &Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>()))
}

/// A fitted head: its VarStore (variables named as in a model's head, under `fc`) and the head.
pub type Fitted = (nn::VarStore, Head);

/// A head of candidate `c` fitted on rows `rows` of every view of `views` with labels
/// `labels[rows]`, in its own VarStore (variables named as in a model's head, under `fc`).
/// The same as [`fit_many`] with one candidate. Deterministic for a seed.
pub fn fit(
    c: &Candidate,
    views: &[Tensor],
    labels: &[i64],
    rows: &[usize],
    num_classes: usize,
    seed: u64,
) -> Result<Fitted> {
    let mut v = fit_many(std::slice::from_ref(c), views, labels, rows, num_classes, seed, &mut |_| {})?;
    Ok(v.remove(0))
}

/// Heads of every candidate of `cands` fitted on the same rows (see [`fit`]), in `cands`' order;
/// `done(k)` after each batch of `k` candidates. Candidates are fitted in families that share work:
///
/// - **linear heads** (multinomial logistic regression: a convex problem) start from zero, as
///   scikit-learn's `LogisticRegression` does, so the fitted head does not depend on the seed.
///   Those with the same standardisation are fitted side by side: their weights are
///   the column blocks of one matrix, so every full-batch step reads the features once for all of
///   them. Each block has its own loss (label smoothing, class weights) and its own L2 penalty
///   `l2/2 |w|^2` (whose gradient is Adam's coupled weight decay `l2 w`); Adam's update is
///   elementwise, so each block follows its own trajectory, equal to a fit alone up to float
///   rounding in the shared matrix product.
/// - **MLP heads** with the same L2, label smoothing, class weights and standardisation differ
///   only in epochs and ensemble size. Ensemble member `m` starts from the same initialisation and
///   sees the same batches and dropout draws whichever of them it belongs to, and a shorter run is
///   a prefix of a longer one; so each member is trained once, for the longest run, and copied out
///   after each epoch count the family asks for. This is exact: bit for bit the heads the
///   candidates would get alone (tested). The members of every family train side by side, one
///   per core, each with its own ChaCha streams for initialisation, batch order and dropout
///   (`MlpJob`), so the result does not depend on how the threads interleave.
pub fn fit_many(
    cands: &[Candidate],
    views: &[Tensor],
    labels: &[i64],
    rows: &[usize],
    num_classes: usize,
    seed: u64,
    done: &mut dyn FnMut(usize),
) -> Result<Vec<Fitted>> {
    if rows.is_empty() || views.is_empty() {
        return Err(Error::invalid("nothing to fit on"));
    }
    let raw: Vec<Tensor> = views.iter().map(|v| index(v, rows)).collect();
    let y_rows: Vec<i64> = rows.iter().map(|&i| labels[i]).collect();
    let ctx = FitContext { raw, y_rows, num_classes, seed, norm: Default::default() };
    // families, in order of first appearance
    let mut families: Vec<Vec<usize>> = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        match families.iter_mut().find(|f| same_family(&cands[f[0]], c)) {
            Some(f) => f.push(i),
            None => families.push(vec![i]),
        }
    }
    let mut out: Vec<Option<Fitted>> = (0..cands.len()).map(|_| None).collect();
    // linear families one after the other (each is one matrix product a step, on all cores) ...
    for fam in families.iter().filter(|f| cands[f[0]].head.kind == HeadKind::Linear) {
        let members: Vec<Candidate> = fam.iter().map(|&i| cands[i]).collect();
        for (&i, h) in fam.iter().zip(ctx.fit_linear(&members)?) {
            out[i] = Some(h);
        }
        done(fam.len());
    }
    // ... then every MLP member of every family side by side, one per core
    let mlp: Vec<&Vec<usize>> = families.iter().filter(|f| cands[f[0]].head.kind == HeadKind::Mlp).collect();
    if !mlp.is_empty() {
        let _one = crate::hardware::OneThread::new(); // tiny operations: see OneThread
        let mut heads = Vec::new();
        let mut jobs = Vec::new();
        for (k, fam) in mlp.iter().enumerate() {
            let members: Vec<Candidate> = fam.iter().map(|&i| cands[i]).collect();
            let (h, j) = ctx.mlp_jobs(&members, k)?;
            heads.push(h);
            jobs.extend(j);
        }
        let trained: Vec<Result<MemberRun>> = jobs.into_par_iter().map(MlpJob::run).collect();
        let mut runs: Vec<Vec<MemberRun>> = (0..mlp.len()).map(|_| Vec::new()).collect();
        for r in trained {
            let r = r?;
            runs[r.family].push(r);
        }
        for ((fam, h), r) in mlp.iter().zip(heads).zip(runs) {
            let members: Vec<Candidate> = fam.iter().map(|&i| cands[i]).collect();
            copy_members(&members, &h, &r);
            for (&i, h) in fam.iter().zip(h) {
                out[i] = Some(h);
            }
            done(fam.len());
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// Whether two candidates can be fitted together by [`fit_many`].
fn same_family(a: &Candidate, b: &Candidate) -> bool {
    match (a.head.kind, b.head.kind) {
        (HeadKind::Linear, HeadKind::Linear) => a.head.standardize == b.head.standardize,
        (HeadKind::Mlp, HeadKind::Mlp) => {
            a.head.standardize == b.head.standardize
                && a.l2 == b.l2
                && a.label_smoothing == b.label_smoothing
                && a.balanced == b.balanced
        }
        _ => false,
    }
}

/// What the candidates of one [`fit_many`] call share.
struct FitContext {
    /// The rows of every view, raw.
    raw: Vec<Tensor>,
    /// Their labels.
    y_rows: Vec<i64>,
    num_classes: usize,
    seed: u64,
    /// Standardisation statistics of `raw` (all views), computed once.
    norm: std::cell::OnceCell<(Tensor, Tensor)>,
}

impl FitContext {
    /// A fresh head of shape `spec` in its own VarStore, initialised from the seed
    /// ([`init_members`]), with the standardisation statistics set where it standardises.
    fn build(&self, spec: &HeadSpec) -> Fitted {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = Head::with_spec(&(vs.root() / "fc"), spec, HIDDEN, self.num_classes as i64, 0.5);
        init_members(&vs, head.num_members(), self.seed);
        if let Some((mean, std)) = head.norm() {
            let (m, s) = self.norm.get_or_init(|| {
                let all = Tensor::cat(&self.raw, 0);
                (all.mean_dim(0, false, Kind::Float), all.std_dim(0, false, false).clamp_min(1e-6))
            });
            tch::no_grad(|| {
                mean.shallow_clone().copy_(m);
                std.shallow_clone().copy_(s);
            });
        }
        (vs, head)
    }

    /// The views as `head` sees them.
    fn prepared(&self, head: &Head) -> Vec<Tensor> {
        tch::no_grad(|| self.raw.iter().map(|x| head.prepare(x)).collect())
    }

    /// Class weights `n / (C n_c)` of the rows.
    fn class_weights(&self) -> Vec<f64> {
        let mut counts = vec![0f64; self.num_classes];
        for &l in &self.y_rows {
            counts[l as usize] += 1.0;
        }
        let n = self.y_rows.len() as f64;
        counts.iter().map(|&k| n / (self.num_classes as f64 * k.max(1.0))).collect()
    }

    /// Linear heads side by side (see [`fit_many`]).
    fn fit_linear(&self, cands: &[Candidate]) -> Result<Vec<Fitted>> {
        let c_n = self.num_classes as i64;
        let heads: Vec<Fitted> = cands.iter().map(|c| self.build(&c.head)).collect();
        // one block of rows of the weight matrix per (candidate, member)
        let blocks: Vec<(usize, String)> = heads
            .iter()
            .enumerate()
            .flat_map(|(ci, (_, h))| {
                (0..h.num_members()).map(move |m| (ci, format!("{}lin.", member_prefix(h.num_members(), m))))
            })
            .collect();
        let k = blocks.len() as i64;
        let x = Tensor::cat(&self.prepared(&heads[0].1), 0);
        let n = x.size()[0];
        // the loss of block j is -sum(coef[:, j, :] * log_softmax(logits of block j)): torch's
        // cross-entropy with class weights w and label smoothing e, mean reduction, is
        // sum_i sum_c [(1 - e) w_y 1{c = y} + (e / C) w_c] (-log p_ic) / sum_i w_y
        let cw = self.class_weights();
        let mut coef = vec![0f32; (n * k * c_n) as usize];
        let reps = self.raw.len();
        for (j, (ci, _)) in blocks.iter().enumerate() {
            let c = &cands[*ci];
            let w = |cls: usize| if c.balanced { cw[cls] } else { 1.0 };
            let e = c.label_smoothing;
            let denom = reps as f64 * self.y_rows.iter().map(|&y| w(y as usize)).sum::<f64>();
            for i in 0..n as usize {
                let y = self.y_rows[i % self.y_rows.len()] as usize;
                for cls in 0..self.num_classes {
                    let hit = if cls == y { (1.0 - e) * w(y) } else { 0.0 };
                    let v = (hit + e / c_n as f64 * w(cls)) / denom;
                    coef[(i * k as usize + j) * self.num_classes + cls] = v as f32;
                }
            }
        }
        let coef = Tensor::from_slice(&coef).view([n, k, c_n]);
        let l2: Vec<f32> = blocks.iter().map(|(ci, _)| cands[*ci].l2 as f32).collect();
        let l2 = Tensor::from_slice(&l2).repeat_interleave_self_int(c_n, 0, None); // per row of w
        // from zero: the problem is convex, so the head does not depend on the seed
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[k * c_n, crate::model::NUM_FEATURES]);
        let b = vs.root().zeros("b", &[k * c_n]);
        let mut opt = Adam::new(LINEAR_LR, 0.0);
        for _ in 0..LINEAR_STEPS {
            let logp = x.linear(&w, Some(&b)).view([n, k, c_n]).log_softmax(-1, Kind::Float);
            let data = -(&coef * logp).sum(Kind::Float);
            let penalty =
                (&l2 * (w.square().sum_dim_intlist(1, false, Kind::Float) + b.square())).sum(Kind::Float) * 0.5;
            opt.zero_grad(&vs);
            (data + penalty).backward();
            opt.step(&[&vs])?;
        }
        // copy each block into its candidate's head
        tch::no_grad(|| -> Result<()> {
            for (j, (ci, prefix)) in blocks.iter().enumerate() {
                let vars = heads[*ci].0.variables();
                for (name, t) in [("weight", &w), ("bias", &b)] {
                    let dst = vars
                        .get(&format!("{prefix}{name}"))
                        .ok_or_else(|| Error::invalid(format!("linear head lacks {prefix}{name}")))?;
                    dst.shallow_clone().copy_(&t.narrow(0, j as i64 * c_n, c_n));
                }
            }
            Ok(())
        })?;
        Ok(heads)
    }

    /// The heads of an MLP family (candidates that differ only in epochs and ensemble size, see
    /// [`fit_many`]) and the training of each ensemble member, to run with [`MlpJob::run`].
    fn mlp_jobs(&self, cands: &[Candidate], family: usize) -> Result<(Vec<Fitted>, Vec<MlpJob>)> {
        let c0 = cands[0];
        let heads: Vec<Fitted> = cands.iter().map(|c| self.build(&c.head)).collect();
        let max_members = cands.iter().map(|c| c.head.members.max(1)).max().unwrap_or(1);
        let mut stops: Vec<usize> = cands.iter().map(|c| c.epochs.max(1)).collect();
        stops.sort_unstable();
        stops.dedup();
        let spec = HeadSpec { members: max_members, ..c0.head };
        let weights: Option<Vec<f32>> = c0.balanced.then(|| self.class_weights().iter().map(|&v| v as f32).collect());
        let mut jobs = Vec::new();
        for m in 0..max_members {
            // member m starts where it would in any head of up to max_members members
            let (vs, head) = self.build(&spec);
            let xs = self.prepared(&head);
            jobs.push(MlpJob {
                family,
                member: m,
                prefix: member_prefix(max_members, m),
                vs,
                head,
                xs,
                y: self.y_rows.clone(),
                weights: weights.clone(),
                l2: c0.l2,
                label_smoothing: c0.label_smoothing,
                seed: self.seed.wrapping_add(m as u64 * 1_000_003),
                stops: stops.clone(),
            });
        }
        Ok((heads, jobs))
    }
}

/// Initialises the members of a head as `nn::linear` does (weights uniform in
/// `+-sqrt(6 / fan_in)`, biases in `+-1 / sqrt(fan_in)`), from ChaCha8 streams of `seed`: member
/// `m` from stream `m`, its variables in name order. So member `m` starts the same in a head of any
/// size, and no draw touches libtorch's global generator (which other threads may be using).
fn init_members(vs: &nn::VarStore, members: usize, seed: u64) {
    let vars = vs.variables();
    for m in 0..members {
        let prefix = member_prefix(members, m);
        let mut mine: Vec<(&String, &Tensor)> =
            vars.iter().filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].starts_with("norm.")).collect();
        mine.sort_by(|a, b| a.0.cmp(b.0));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(m as u64);
        for (name, t) in mine {
            let layer = name.rsplit_once('.').map(|(l, _)| l).unwrap_or("");
            let fan_in = vars.get(&format!("{layer}.weight")).map(|w| w.size()[1]).unwrap_or(1).max(1) as f32;
            let bound = if name.ends_with(".weight") { (6.0 / fan_in).sqrt() } else { 1.0 / fan_in.sqrt() };
            let v: Vec<f32> = (0..t.numel()).map(|_| rng.random_range(-bound..bound)).collect();
            tch::no_grad(|| t.shallow_clone().copy_(&Tensor::from_slice(&v).view(t.size().as_slice())));
        }
    }
}

/// Prefix of the variables of member `m` of a head with `members` members.
fn member_prefix(members: usize, m: usize) -> String {
    if members <= 1 {
        "fc.".to_string()
    } else {
        format!("fc.m{m}.")
    }
}

/// Hidden sizes of an MLP head (the notebook's).
const HIDDEN: (i64, i64) = (128, 64);

/// The training of one ensemble member of an MLP family: Adam (lr 1e-3, the family's L2 as
/// coupled weight decay), batches of 8 in an order shuffled per epoch from the member's seed, one
/// view per epoch in turn, dropout masks from the member's own stream (ChaCha8), so that members
/// can train side by side on several threads and give the same result as one after the other.
struct MlpJob {
    family: usize,
    member: usize,
    /// Prefix of the member's variables in `vs`.
    prefix: String,
    vs: nn::VarStore,
    head: Head,
    xs: Vec<Tensor>,
    y: Vec<i64>,
    weights: Option<Vec<f32>>,
    l2: f64,
    label_smoothing: f64,
    seed: u64,
    /// Epoch counts after which the member is copied out.
    stops: Vec<usize>,
}

/// A trained member: its variables (names relative to the member) after each epoch count asked.
struct MemberRun {
    family: usize,
    member: usize,
    snapshots: Vec<(usize, Vec<(String, Tensor)>)>,
}

impl MlpJob {
    fn run(self) -> Result<MemberRun> {
        let MlpJob { family, member, prefix, vs, head, xs, y, weights, l2, label_smoothing, seed, stops } = self;
        let y = Tensor::from_slice(&y);
        let weights = weights.map(|w| Tensor::from_slice(&w));
        let n = y.size()[0];
        let p = head.dropout() as f32;
        let scale = 1.0 / (1.0 - p);
        let mut drop_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD809_0F7E_5EED);
        let mut keep = |rows: usize, cols: i64| {
            let v: Vec<f32> =
                (0..rows * cols as usize).map(|_| if drop_rng.random::<f32>() < p { 0.0 } else { scale }).collect();
            Tensor::from_slice(&v).view([rows as i64, cols])
        };
        let mut opt = Adam::new(1e-3, l2);
        let mut snapshots = Vec::new();
        let last = stops.iter().copied().max().unwrap_or(1);
        for e in 0..last {
            let x = &xs[e % xs.len()];
            let mut order: Vec<i64> = (0..n).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ ((e as u64 + 1) * 0x9E37_79B9)));
            for chunk in order.chunks(8) {
                let idx = Tensor::from_slice(chunk);
                let (k0, k1) = (keep(chunk.len(), crate::model::NUM_FEATURES), keep(chunk.len(), HIDDEN.1));
                let out = head.member_logits_masked(member, &x.index_select(0, &idx), &k0, &k1);
                let loss = out.cross_entropy_loss(
                    &y.index_select(0, &idx),
                    weights.as_ref(),
                    Reduction::Mean,
                    -100,
                    label_smoothing,
                );
                opt.zero_grad(&vs);
                loss.backward();
                opt.step(&[&vs])?;
            }
            if stops.contains(&(e + 1)) {
                let vars: Vec<(String, Tensor)> = vs
                    .variables()
                    .into_iter()
                    .filter_map(|(name, t)| {
                        let rest = name.strip_prefix(&prefix)?;
                        (!rest.starts_with("norm.")).then(|| (rest.to_string(), t.detach().copy()))
                    })
                    .collect();
                snapshots.push((e + 1, vars));
            }
        }
        Ok(MemberRun { family, member, snapshots })
    }
}

/// Copies each trained member into every head of the family that stops after that epoch count
/// and has that member.
fn copy_members(cands: &[Candidate], heads: &[Fitted], runs: &[MemberRun]) {
    for r in runs {
        for (e, vars) in &r.snapshots {
            for (c, (vs, _)) in cands.iter().zip(heads) {
                if c.epochs.max(1) != *e || c.head.members.max(1) <= r.member {
                    continue;
                }
                let dst = vs.variables();
                let prefix = member_prefix(c.head.members, r.member);
                tch::no_grad(|| {
                    for (rest, t) in vars {
                        if let Some(d) = dst.get(&format!("{prefix}{rest}")) {
                            d.shallow_clone().copy_(t);
                        }
                    }
                });
            }
        }
    }
}

fn predict(head: &Head, x: &Tensor) -> Result<Vec<i64>> {
    let p = tch::no_grad(|| head.forward_t(x, false).argmax(-1, false));
    Ok(Vec::<i64>::try_from(&p)?)
}

/// Cross-validated scores of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvScore {
    /// The candidate's name.
    pub name: String,
    /// The candidate.
    pub candidate: Candidate,
    /// Macro-F1 of each held-out fold.
    pub fold_macro_f1: Vec<f64>,
    /// Accuracy of each held-out fold.
    pub fold_accuracy: Vec<f64>,
    /// Mean macro-F1.
    pub macro_f1: f64,
    /// Standard error of the mean macro-F1 (fold std / sqrt(k)).
    pub macro_f1_se: f64,
    /// Mean accuracy.
    pub accuracy: f64,
}

/// k-fold cross-validation of every candidate of `cfg.grid` on `data` (see the module docs), the
/// candidates of each fold fitted together by [`fit_many`]; `progress(done, total)` as fits finish.
pub fn cross_validate(
    data: &CvData,
    cfg: &RobustConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<CvScore>> {
    let fold = grouped_folds(&data.labels, data.groups.as_deref(), cfg.folds, cfg.cv_seed)?;
    let total = cfg.grid.len() * cfg.folds;
    let mut done = 0;
    let k = cfg.grid.len();
    let (mut f1s, mut accs) = (vec![Vec::new(); k], vec![Vec::new(); k]);
    for f in 0..cfg.folds {
        let tr: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] != f).collect();
        let te: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] == f).collect();
        let heads = fit_many(&cfg.grid, &data.views, &data.labels, &tr, data.num_classes, cfg.seed, &mut |n| {
            done += n;
            progress(done, total);
        })?;
        let x = index(&data.clean, &te);
        let truth: Vec<i64> = te.iter().map(|&i| data.labels[i]).collect();
        for (j, (_vs, head)) in heads.iter().enumerate() {
            let (a, m) = crate::subgroups::accuracy_macro_f1(&truth, &predict(head, &x)?, data.num_classes);
            accs[j].push(a);
            f1s[j].push(m);
        }
    }
    let mut out = Vec::new();
    for ((c, f1s), accs) in cfg.grid.iter().zip(f1s).zip(accs) {
        let s = Spread::of(&f1s);
        out.push(CvScore {
            name: c.name(),
            candidate: *c,
            macro_f1: s.mean,
            macro_f1_se: s.std / (f1s.len() as f64).sqrt(),
            accuracy: Spread::of(&accs).mean,
            fold_macro_f1: f1s,
            fold_accuracy: accs,
        });
    }
    Ok(out)
}

/// The tie rule, in words (recorded in the manifest).
pub const TIE_RULE: &str = "one-standard-error rule: the first candidate in grid order (simplest, most regularised \
first) whose mean CV macro-F1 is at least the best mean minus the best candidate's standard error";

/// Index of the chosen candidate by [`TIE_RULE`].
///
/// ```
/// use covid_cxr::robust::{choose, default_grid, CvScore};
/// let s = |m: f64, se: f64| CvScore { name: String::new(), candidate: default_grid()[0], fold_macro_f1: vec![],
///     fold_accuracy: vec![], macro_f1: m, macro_f1_se: se, accuracy: m };
/// assert_eq!(choose(&[s(0.90, 0.0), s(0.93, 0.01), s(0.96, 0.02)]), 2); // bar 0.94
/// assert_eq!(choose(&[s(0.90, 0.0), s(0.95, 0.01), s(0.955, 0.01)]), 1); // bar 0.945
/// ```
pub fn choose(scores: &[CvScore]) -> usize {
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].macro_f1.total_cmp(&scores[b].macro_f1).then(b.cmp(&a)))
        .unwrap_or(0);
    let bar = scores.get(best).map(|s| s.macro_f1 - s.macro_f1_se).unwrap_or(0.0);
    scores.iter().position(|s| s.macro_f1 >= bar - 1e-12).unwrap_or(best)
}

/// Prints the grid's cross-validated scores as a table, marking the choice.
pub fn format_scores(scores: &[CvScore], chosen: usize) -> String {
    let mut s = format!("{:<3}{:<40}{:>10}{:>8}{:>10}\n", "", "candidate", "macro-F1", "se", "accuracy");
    for (i, c) in scores.iter().enumerate() {
        let mark = if i == chosen { "*" } else { "" };
        s.push_str(&format!("{mark:<3}{:<40}{:>10.4}{:>8.4}{:>10.4}\n", c.name, c.macro_f1, c.macro_f1_se, c.accuracy));
    }
    s
}

/// What the robust recipe did, for the run manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustRecord {
    /// Folds.
    pub folds: usize,
    /// Seed of the folds.
    pub cv_seed: u64,
    /// Seed of the heads.
    pub seed: u64,
    /// What grouped the folds (e.g. `manifest.csv:patient_id`), if anything.
    pub grouped_by: Option<String>,
    /// The tie rule.
    pub tie_rule: String,
    /// Every candidate's CV scores, in grid order.
    pub scores: Vec<CvScore>,
    /// Index of the chosen candidate.
    pub chosen: usize,
    /// Its name.
    pub chosen_name: String,
    /// Seconds the search and the final fit took.
    pub seconds: f64,
    /// Seconds the cross-validation alone took (absent in manifests written before it was kept).
    #[serde(default)]
    pub cv_seconds: f64,
}

/// Cross-validates the grid on `data`, fits the winner on all of it and installs it as the head of
/// `model` (`model.cfg.head` becomes the winner's shape).
pub fn train_robust(
    model: &mut TransferModel,
    data: &CvData,
    cfg: &RobustConfig,
    grouped_by: Option<String>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RobustRecord> {
    if data.num_classes as i64 != model.cfg.num_classes {
        return Err(Error::invalid(format!(
            "{} classes in the data, {} outputs in the model",
            data.num_classes, model.cfg.num_classes
        )));
    }
    let t0 = Instant::now();
    let scores = cross_validate(data, cfg, progress)?;
    let cv_seconds = t0.elapsed().as_secs_f64();
    let chosen = choose(&scores);
    let c = scores[chosen].candidate;
    let all: Vec<usize> = (0..data.labels.len()).collect();
    let (vs, _head) = fit(&c, &data.views, &data.labels, &all, data.num_classes, cfg.seed)?;
    install_head(model, &c.head, &vs.variables())?;
    Ok(RobustRecord {
        folds: cfg.folds,
        cv_seed: cfg.cv_seed,
        seed: cfg.seed,
        grouped_by,
        tie_rule: TIE_RULE.into(),
        chosen_name: scores[chosen].name.clone(),
        scores,
        chosen,
        seconds: t0.elapsed().as_secs_f64(),
        cv_seconds,
    })
}

/// Replaces the head of `model` by one of shape `spec` carrying the tensors of `vars` (by name,
/// as [`fit`]'s VarStore or [`snapshot_head`] give them); variables absent from `vars` other than
/// the aux head's are an error.
pub fn install_head(model: &mut TransferModel, spec: &HeadSpec, vars: &HashMap<String, Tensor>) -> Result<()> {
    model.reset_head(spec);
    tch::no_grad(|| -> Result<()> {
        for (name, dst) in model.head_vs.variables() {
            match vars.get(&name) {
                Some(s) => {
                    dst.shallow_clone().copy_(s);
                }
                None if name.starts_with("AuxLogits.") => {}
                None => return Err(Error::invalid(format!("fitted head lacks {name}"))),
            }
        }
        Ok(())
    })
}

/// A copy of the head's variables (to restore with [`install_head`]).
pub fn snapshot_head(model: &TransferModel) -> HashMap<String, Tensor> {
    model.head_vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three classes of 60 images in 20 groups of 3, separable features with noise; 2 views.
    fn synthetic(seed: i64) -> CvData {
        tch::manual_seed(seed);
        let n = 180;
        let labels: Vec<i64> = (0..n).map(|i| (i / 60) as i64).collect();
        let y = Tensor::from_slice(&labels);
        let centers = Tensor::randn([3, 2048], (Kind::Float, Device::Cpu)) * 0.3;
        let base = centers.index_select(0, &y);
        let views: Vec<Tensor> =
            (0..2).map(|_| &base + Tensor::randn([n as i64, 2048], (Kind::Float, Device::Cpu))).collect();
        let groups = (0..n).map(|i| format!("g{}", i / 3)).collect();
        CvData { clean: views[1].shallow_clone(), views, labels, groups: Some(groups), num_classes: 3 }
    }

    #[test]
    fn folds_are_disjoint_grouped_and_balanced() {
        let d = synthetic(0);
        let f = grouped_folds(&d.labels, d.groups.as_deref(), 5, 7).unwrap();
        let g = d.groups.as_ref().unwrap();
        for i in 0..f.len() {
            for j in 0..f.len() {
                if g[i] == g[j] {
                    assert_eq!(f[i], f[j], "group {} split", g[i]);
                }
            }
        }
        // every image in exactly one fold, each fold has every class
        for k in 0..5 {
            for c in 0..3 {
                let cnt = (0..f.len()).filter(|&i| f[i] == k && d.labels[i] == c).count();
                assert!((9..=15).contains(&cnt), "fold {k} class {c}: {cnt}");
            }
        }
        assert_eq!(f, grouped_folds(&d.labels, d.groups.as_deref(), 5, 7).unwrap());
        assert!(grouped_folds(&d.labels, Some(&vec!["x".to_string(); 180]), 5, 0).is_err());
    }

    #[test]
    fn robust_training_is_deterministic_and_learns() {
        let d = synthetic(1);
        let grid = vec![default_grid()[0], Candidate { epochs: 2, ..default_grid()[12] }];
        let cfg = RobustConfig { folds: 2, cv_seed: 0, grid, seed: 5 };
        let a = cross_validate(&d, &cfg, &mut |_, _| {}).unwrap();
        let b = cross_validate(&d, &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(a, b);
        assert!(a[0].macro_f1 > 0.9, "{}", format_scores(&a, choose(&a)));
        // fitting the same candidate twice gives the same head
        let all: Vec<usize> = (0..180).collect();
        let c = Candidate { head: HeadSpec { members: 2, ..default_grid()[12].head }, epochs: 2, ..default_grid()[12] };
        let (_v1, h1) = fit(&c, &d.views, &d.labels, &all, 3, 9).unwrap();
        let (_v2, h2) = fit(&c, &d.views, &d.labels, &all, 3, 9).unwrap();
        let x = d.clean.narrow(0, 0, 10);
        let (p1, p2) = tch::no_grad(|| (h1.forward_t(&x, false), h2.forward_t(&x, false)));
        assert!(p1.allclose(&p2, 0.0, 0.0, false));
        // the ensemble's output is a log-probability
        let s = p1.exp().sum_dim_intlist(-1, false, Kind::Float);
        assert!(s.allclose(&Tensor::ones([10], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    }

    /// Softmax outputs of a head on `x`.
    fn proba(h: &Head, x: &Tensor) -> Tensor {
        tch::no_grad(|| h.forward_t(x, false).softmax(-1, Kind::Float))
    }

    #[test]
    fn mlp_families_fitted_together_equal_each_alone_bit_for_bit() {
        let d = synthetic(2);
        let rows: Vec<usize> = (0..180).filter(|i| i % 4 != 0).collect();
        let mlp = |members, epochs, l2| Candidate {
            head: HeadSpec { kind: HeadKind::Mlp, members, standardize: false },
            l2,
            label_smoothing: 0.0,
            balanced: false,
            epochs,
        };
        // two families (two L2 values), each with members 1 and 3 and epochs 1 and 3
        let grid: Vec<Candidate> =
            [1e-2, 1e-4].iter().flat_map(|&l2| [(1, 1), (3, 1), (1, 3), (3, 3)].map(|(m, e)| mlp(m, e, l2))).collect();
        let mut calls = Vec::new();
        let together = fit_many(&grid, &d.views, &d.labels, &rows, 3, 11, &mut |k| calls.push(k)).unwrap();
        assert_eq!(calls, vec![4, 4]);
        let x = d.clean.narrow(0, 0, 20);
        for (c, (_, h)) in grid.iter().zip(&together) {
            let (_, alone) = fit(c, &d.views, &d.labels, &rows, 3, 11).unwrap();
            assert!(proba(&alone, &x).equal(&proba(h, &x)), "{}", c.name());
        }
        // and a shorter run is not the longer one
        assert!(!proba(&together[0].1, &x).equal(&proba(&together[2].1, &x)));
    }

    #[test]
    fn linear_heads_fitted_together_equal_each_alone_to_rounding() {
        let d = synthetic(3);
        let rows: Vec<usize> = (0..180).filter(|i| i % 3 != 0).collect();
        let mut grid: Vec<Candidate> = default_grid().into_iter().filter(|c| c.head.kind == HeadKind::Linear).collect();
        grid.push(Candidate { head: HeadSpec { members: 2, ..grid[0].head }, ..grid[3] });
        let together = fit_many(&grid, &d.views, &d.labels, &rows, 3, 4, &mut |_| {}).unwrap();
        let x = &d.clean;
        for (c, (_, h)) in grid.iter().zip(&together) {
            let (_, alone) = fit(c, &d.views, &d.labels, &rows, 3, 4).unwrap();
            let diff = (proba(&alone, x) - proba(h, x)).abs().max().double_value(&[]);
            assert!(diff < 1e-3, "{}: {diff}", c.name());
        }
        // a linear head starts from zero: the seed does not change it
        let (_, seed4) = fit(&grid[0], &d.views, &d.labels, &rows, 3, 4).unwrap();
        let (_, seed99) = fit(&grid[0], &d.views, &d.labels, &rows, 3, 99).unwrap();
        assert!(proba(&seed4, x).equal(&proba(&seed99, x)));
        // the candidates differ from each other (their own losses and penalties were applied)
        let d01 = (proba(&together[0].1, x) - proba(&together[8].1, x)).abs().max().double_value(&[]);
        assert!(d01 > 1e-3, "L2 0.1 and 0.001 gave the same head ({d01})");
    }

    #[test]
    fn seed_report_spreads() {
        let r = |a: f64| BTreeMap::from([("accuracy".to_string(), a)]);
        let rep = SeedReport::new(vec![1, 2, 3], vec![r(0.8), r(0.9), r(1.0)]);
        let s = rep.summary["accuracy"];
        assert!((s.mean - 0.9).abs() < 1e-12 && (s.std - 0.1).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.8, 1.0));
        assert!(rep.to_string().contains("accuracy"));
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use crate::model::TransferConfig;

    #[test]
    fn old_configs_load_with_the_notebook_head() {
        let mut v = serde_json::to_value(TransferConfig::default()).unwrap();
        v.as_object_mut().unwrap().remove("head");
        let c: TransferConfig = serde_json::from_value(v).unwrap();
        assert_eq!(c.head, HeadSpec::default());
    }

    #[test]
    fn an_ensemble_head_survives_a_checkpoint() {
        tch::manual_seed(0);
        let n = 40;
        let labels: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
        let x = Tensor::randn([n as i64, 2048], (Kind::Float, Device::Cpu))
            + Tensor::from_slice(&labels).to_kind(Kind::Float).unsqueeze(1);
        let c = Candidate {
            head: HeadSpec { kind: HeadKind::Mlp, members: 3, standardize: true },
            l2: 1e-3,
            label_smoothing: 0.1,
            balanced: true,
            epochs: 2,
        };
        let all: Vec<usize> = (0..n).collect();
        let (vs, head) = fit(&c, &[x.shallow_clone()], &labels, &all, 3, 1).unwrap();
        let cfg = TransferConfig { aux: false, ..TransferConfig::default() };
        let mut m = TransferModel::new(&cfg).unwrap();
        install_head(&mut m, &c.head, &vs.variables()).unwrap();
        let want = tch::no_grad(|| head.forward_t(&x, false)).softmax(-1, Kind::Float);
        assert!(m.proba_from_features(&x).allclose(&want, 1e-6, 1e-6, false));
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("h.safetensors");
        let vars: Vec<(String, Tensor)> = m.head_vs.variables().into_iter().collect();
        crate::weights::write_safetensors(&file, &vars, &[]).unwrap();
        let m2 = TransferModel::new(&m.cfg).unwrap();
        crate::checkpoint::load_saved(&m2, &file).unwrap();
        assert!(m2.proba_from_features(&x).allclose(&want, 1e-6, 1e-6, false));
        // the notebook's head cannot load it
        let m3 = TransferModel::new(&cfg).unwrap();
        assert!(crate::checkpoint::load_saved(&m3, &file).is_err());
    }
}
