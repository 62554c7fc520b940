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
//! | linear (multinomial logistic regression, full batch, Adam lr 0.01, 300 steps) | standardised | 0.1, 0.01, 0.001 | 0, 0.1 | no, yes | - | 1 |
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
use crate::train::{features_for, train_head_on_features, History, Progress, TrainConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tch::nn::OptimizerConfig;
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

/// A head of candidate `c` fitted on rows `rows` of every view of `views` with labels
/// `labels[rows]`, in its own VarStore (variables named as in a model's head, under `fc`).
/// Ensemble members are fitted one by one, each in a VarStore of its own (so that one member's
/// optimizer never touches another), and gathered. Deterministic for a seed.
pub fn fit(
    c: &Candidate,
    views: &[Tensor],
    labels: &[i64],
    rows: &[usize],
    num_classes: usize,
    seed: u64,
) -> Result<(nn::VarStore, Head)> {
    if rows.is_empty() || views.is_empty() {
        return Err(Error::invalid("nothing to fit on"));
    }
    let _one = crate::hardware::OneThread::new(); // tiny operations: see OneThread
    let build = || {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = Head::with_spec(&(vs.root() / "fc"), &c.head, (128, 64), num_classes as i64, 0.5);
        (vs, head)
    };
    let (vs, head) = build();
    let xs: Vec<Tensor> = views.iter().map(|v| index(v, rows)).collect();
    let y_rows: Vec<i64> = rows.iter().map(|&i| labels[i]).collect();
    let y = Tensor::from_slice(&y_rows);
    let all = c.head.standardize.then(|| Tensor::cat(&xs, 0));
    let set_norm = |h: &Head| {
        if let (Some((mean, std)), Some(all)) = (h.norm(), all.as_ref()) {
            tch::no_grad(|| {
                mean.shallow_clone().copy_(&all.mean_dim(0, false, Kind::Float));
                std.shallow_clone().copy_(&all.std_dim(0, false, false).clamp_min(1e-6));
            });
        }
    };
    set_norm(&head);
    let xs: Vec<Tensor> = tch::no_grad(|| xs.iter().map(|x| head.prepare(x)).collect());
    let weights = c.balanced.then(|| {
        let mut counts = vec![0f64; num_classes];
        for &l in &y_rows {
            counts[l as usize] += 1.0;
        }
        let n = y_rows.len() as f64;
        let w: Vec<f32> = counts.iter().map(|&k| (n / (num_classes as f64 * k.max(1.0))) as f32).collect();
        Tensor::from_slice(&w)
    });
    let loss_of = |logits: &Tensor, y: &Tensor| {
        logits.cross_entropy_loss(y, weights.as_ref(), Reduction::Mean, -100, c.label_smoothing)
    };
    let members = head.num_members();
    for m in 0..members {
        let (vs_m, head_m) = build();
        let mseed = seed.wrapping_add(m as u64 * 1_000_003);
        tch::manual_seed(mseed as i64);
        match c.head.kind {
            HeadKind::Linear => {
                let mut opt = nn::Adam { wd: c.l2, ..Default::default() }.build(&vs_m, LINEAR_LR)?;
                let x = Tensor::cat(&xs, 0);
                let yy = y.repeat([xs.len() as i64]);
                for _ in 0..LINEAR_STEPS {
                    let loss = loss_of(&head_m.member_logits(m, &x, true), &yy);
                    opt.backward_step(&loss);
                }
            }
            HeadKind::Mlp => {
                let mut opt = nn::Adam { wd: c.l2, ..Default::default() }.build(&vs_m, 1e-3)?;
                let n = rows.len();
                for e in 0..c.epochs.max(1) {
                    let x = &xs[e % xs.len()];
                    let mut order: Vec<i64> = (0..n as i64).collect();
                    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mseed ^ ((e as u64 + 1) * 0x9E37_79B9)));
                    for chunk in order.chunks(8) {
                        let idx = Tensor::from_slice(chunk);
                        let out = head_m.member_logits(m, &x.index_select(0, &idx), true);
                        let loss = loss_of(&out, &y.index_select(0, &idx));
                        opt.backward_step(&loss);
                    }
                }
            }
        }
        // gather member m's variables into the final store
        let prefix = format!("fc.m{m}.");
        let src = vs_m.variables();
        tch::no_grad(|| {
            for (name, dst) in vs.variables() {
                let mine = if members == 1 { !name.starts_with("fc.norm.") } else { name.starts_with(&prefix) };
                if mine {
                    if let Some(t) = src.get(&name) {
                        dst.shallow_clone().copy_(t);
                    }
                }
            }
        });
    }
    Ok((vs, head))
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

/// k-fold cross-validation of every candidate of `cfg.grid` on `data` (see the module docs);
/// `progress(done, total)` after each fit.
pub fn cross_validate(
    data: &CvData,
    cfg: &RobustConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<CvScore>> {
    let fold = grouped_folds(&data.labels, data.groups.as_deref(), cfg.folds, cfg.cv_seed)?;
    let total = cfg.grid.len() * cfg.folds;
    let mut done = 0;
    let mut out = Vec::new();
    for c in &cfg.grid {
        let (mut f1s, mut accs) = (Vec::new(), Vec::new());
        for f in 0..cfg.folds {
            let tr: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] != f).collect();
            let te: Vec<usize> = (0..fold.len()).filter(|&i| fold[i] == f).collect();
            let (_vs, head) = fit(c, &data.views, &data.labels, &tr, data.num_classes, cfg.seed)?;
            let pred = predict(&head, &index(&data.clean, &te))?;
            let truth: Vec<i64> = te.iter().map(|&i| data.labels[i]).collect();
            let (a, m) = crate::subgroups::accuracy_macro_f1(&truth, &pred, data.num_classes);
            accs.push(a);
            f1s.push(m);
            done += 1;
            progress(done, total);
        }
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
