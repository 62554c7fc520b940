//! `train --seeds K`, `train --recipe robust` and `evaluate --manifest CSV --by COLUMN`: the
//! command-line side of [`covid_cxr::robust`] and [`covid_cxr::subgroups`].

use anyhow::{bail, Context, Result};
use clap::Args;
use covid_cxr::checkpoint::Manifest;
use covid_cxr::data::ImageFolder;
use covid_cxr::evaluate::Evaluation;
use covid_cxr::features::{cached_features, default_cache_dir};
use covid_cxr::file_manifest::ManifestIndex;
use covid_cxr::model::TransferModel;
use covid_cxr::robust::{self, CvData, RobustConfig, RobustRecord, SeedReport};
use covid_cxr::split::GroupBy;
use covid_cxr::train::{features_for, EpochStats, History, Progress, SplitStats, TrainConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `train` beyond the notebook.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainExtra {
    /// Training recipe: `notebook` (the reproduction, default) or `robust` (a head chosen by
    /// k-fold cross-validation on the cached features; see the README).
    #[arg(long, default_value = "notebook")]
    pub recipe: String,
    /// Also train K heads (seeds SEED..SEED+K-1) on the same cached features and report the mean,
    /// std, min and max of every validation metric (printed, and saved as seeds.json).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Robust recipe: keep groups in one fold, MANIFEST.csv:COLUMN (e.g. a patient id) or
    /// prefix:DELIM, as `split --group-by`.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Robust recipe: cross-validation folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
}

/// Options of `evaluate` beyond the figures.
#[derive(Args, Debug, Clone, Default)]
pub struct EvalExtra {
    /// A CSV manifest with one row per image (matched by path relative to --data, class/name or
    /// file name, as `split --group-by`).
    #[arg(long, requires = "by")]
    pub manifest: Option<PathBuf>,
    /// Manifest column(s) to report subgroups by (comma-separated). COLUMN:EDGE:EDGE.. groups
    /// numeric values into bands (e.g. age:18:65 gives <18, 18-<65, >=65; other values stay as
    /// they are); the JSON key is the text as given.
    #[arg(long, value_delimiter = ',', requires = "manifest")]
    pub by: Vec<String>,
    /// The manifest's file column.
    #[arg(long, default_value = "file")]
    pub file_column: String,
}

/// What a recipe adds to the run folder and manifest.
#[derive(Default)]
pub struct RecipeOutput {
    robust: Option<RobustRecord>,
    seeds: Option<SeedReport>,
    recipe: String,
}

impl RecipeOutput {
    /// Records the recipe in the manifest.
    pub fn record(&self, m: &mut Manifest) {
        m.recipe = Some(self.recipe.clone());
        m.robust = self.robust.clone();
        m.seed_variance = self.seeds.clone();
    }
    /// Writes seeds.json and cv_scores.json into the run folder.
    pub fn write(&self, dir: &Path) -> Result<()> {
        if let Some(s) = &self.seeds {
            write_json(&dir.join("seeds.json"), s)?;
        }
        if let Some(r) = &self.robust {
            write_json(&dir.join("cv_scores.json"), r)?;
        }
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    covid_cxr::imageio::write_atomic(path, &serde_json::to_vec_pretty(v)?, true)?;
    Ok(())
}

/// Trains `model` with the chosen recipe; `notebook` runs `run_notebook` (the existing loop).
pub fn train_recipe(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    extra: &TrainExtra,
    run_notebook: &mut dyn FnMut(&mut TransferModel) -> Result<History>,
) -> Result<(History, RecipeOutput)> {
    if extra.seeds == Some(0) {
        bail!("--seeds must be >= 1");
    }
    let seeds: Vec<u64> = (0..extra.seeds.unwrap_or(0) as u64).map(|i| cfg.seed + i).collect();
    match extra.recipe.as_str() {
        "notebook" => {
            if extra.group_by.is_some() {
                bail!("--group-by applies to --recipe robust (its cross-validation folds)");
            }
            let history = run_notebook(model)?;
            let mut out = RecipeOutput { recipe: "notebook".into(), ..Default::default() };
            if !seeds.is_empty() {
                if !cfg.cached {
                    bail!("--seeds needs the cached-feature path (not --no-cache / --fine-tune-blocks)");
                }
                let keep = robust::snapshot_head(model);
                let spec = model.cfg.head;
                eprintln!("seed variance: {} heads on the same cached features", seeds.len());
                let rep = robust::seed_variance(model, train, val, cfg, &seeds, &mut stage_printer())?;
                robust::install_head(model, &spec, &keep)?;
                print!("{rep}");
                out.seeds = Some(rep);
            }
            Ok((history, out))
        }
        "robust" => {
            if !cfg.cached {
                bail!("--recipe robust works on cached features (not --no-cache / --fine-tune-blocks)");
            }
            let t0 = Instant::now();
            let mut history = History::default();
            let mut show = stage_printer();
            let (ftrain, fval) = features_for(model, train, val, cfg, &mut history, &mut show)?;
            // the training images once more, as evaluate sees them (the inference transform)
            let clean_ds = ImageFolder::open(&train.root, val.transform.clone())?;
            let sha = cfg.weights_sha256.clone().context("weights sha256 missing")?;
            let dir = cfg.cache_dir.clone().unwrap_or_else(default_cache_dir);
            let (fclean, _) = cached_features(
                model,
                &sha,
                &clean_ds,
                1,
                cfg.seed,
                cfg.extract_batch_size,
                &dir,
                &mut |done, total| show(Progress::Step { stage: "features train (inference view)", done, total }),
            )?;
            history.feature_seconds = t0.elapsed().as_secs_f64();
            let groups = match &extra.group_by {
                Some(g) => {
                    let gb = GroupBy::parse(g)?;
                    let files: Vec<PathBuf> = train.samples.iter().map(|(p, _)| p.clone()).collect();
                    Some(covid_cxr::split::group_keys(&gb, &train.root, &files)?)
                }
                None => None,
            };
            let n_groups = groups.as_ref().map(|g| g.iter().collect::<std::collections::HashSet<_>>().len());
            let data = CvData::new(&ftrain, &fclean, train.classes.len(), groups)?;
            let run_seeds = if seeds.is_empty() { vec![cfg.seed] } else { seeds.clone() };
            eprintln!(
                "robust recipe: {}-fold CV over {} candidates on {} images{} (seed {})",
                extra.folds,
                robust::default_grid().len(),
                train.len(),
                n_groups.map(|k| format!(" in {k} groups")).unwrap_or_default(),
                cfg.seed
            );
            let mut runs = Vec::new();
            let mut chosen: Option<(RobustRecord, History, std::collections::HashMap<String, tch::Tensor>)> = None;
            for &s in &run_seeds {
                let rcfg = RobustConfig { folds: extra.folds, seed: s, ..RobustConfig::default() };
                let pb = indicatif::ProgressBar::new(1);
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                if !tty {
                    pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                }
                let mut lines = stage_printer(); // without a terminal, one line per tenth of the fits
                let rec = robust::train_robust(model, &data, &rcfg, extra.group_by.clone(), &mut |d, t| {
                    pb.set_length(t as u64);
                    pb.set_position(d as u64);
                    if !tty {
                        lines(Progress::Step { stage: "cross-validation fits", done: d, total: t });
                    }
                })?;
                pb.finish_and_clear();
                eprint!("seed {s}:\n{}", robust::format_scores(&rec.scores, rec.chosen));
                eprintln!("chosen: {} ({})", rec.chosen_name, robust::TIE_RULE);
                eprintln!(
                    "cross-validation: {} fits in {:.1}s; the winner fitted on all {} images in {:.1}s",
                    rec.scores.len() * rec.folds,
                    rec.cv_seconds,
                    data.labels.len(),
                    rec.seconds - rec.cv_seconds
                );
                let h = one_epoch_history(model, &fclean, &fval, &train.classes, &history, t0)?;
                runs.push(robust::val_metrics(&h));
                if chosen.is_none() {
                    chosen = Some((rec, h, robust::snapshot_head(model)));
                }
            }
            let (rec, h, vars) = chosen.context("no run")?;
            let spec = rec.scores[rec.chosen].candidate.head;
            robust::install_head(model, &spec, &vars)?;
            let mut out = RecipeOutput { recipe: "robust".into(), robust: Some(rec), ..Default::default() };
            if !seeds.is_empty() {
                let rep = SeedReport::new(run_seeds, runs);
                print!("{rep}");
                out.seeds = Some(rep);
            }
            Ok((h, out))
        }
        r => bail!("--recipe {r:?}: expected notebook or robust"),
    }
}

/// Prints a stage's progress to stderr, one line per tenth.
fn stage_printer() -> impl FnMut(Progress) {
    let mut last = (String::new(), usize::MAX);
    move |p| {
        if let Progress::Step { stage, done, total } = p {
            let tenth = done * 10 / total.max(1);
            if stage != last.0 || tenth != last.1 {
                eprintln!("{stage}: {done}/{total}");
                last = (stage.to_string(), tenth);
            }
        }
    }
}

/// A one-entry history: the fitted head's figures on the training images (inference view) and
/// on the validation set.
fn one_epoch_history(
    model: &TransferModel,
    ftrain: &covid_cxr::features::FeatureSet,
    fval: &covid_cxr::features::FeatureSet,
    classes: &[String],
    base: &History,
    t0: Instant,
) -> Result<History> {
    let stats = |fs: &covid_cxr::features::FeatureSet| -> Result<SplitStats> {
        let (loss, preds) = tch::no_grad(|| {
            let out = model.head_forward_t(&fs.view(0), false);
            (out.cross_entropy_for_logits(&fs.labels).double_value(&[]), out.argmax(-1, false))
        });
        let y = Vec::<i64>::try_from(&fs.labels)?;
        Ok(SplitStats::new(loss, &y, &Vec::<i64>::try_from(&preds)?, classes)?)
    };
    let e = EpochStats { epoch: 1, train: stats(ftrain)?, val: stats(fval)?, seconds: t0.elapsed().as_secs_f64() };
    eprintln!("{e}");
    Ok(History {
        epochs: vec![e],
        feature_seconds: base.feature_seconds,
        feature_cache_hits: base.feature_cache_hits,
        total_seconds: t0.elapsed().as_secs_f64(),
        path: "cached".into(),
    })
}

/// Adds `subgroups.<column>` for each `--by` column to `ev`; prints the table. Images without a
/// row are counted under [`covid_cxr::subgroups::NO_ROW`] and reported.
pub fn add_subgroups(
    ev: &mut Evaluation,
    extra: &EvalExtra,
    root: &Path,
    labels: &[i64],
    preds: &[i64],
    paths: &[PathBuf],
) -> Result<()> {
    let Some(csv) = &extra.manifest else { return Ok(()) };
    for col in &extra.by {
        let spec = covid_cxr::subgroups::BySpec::parse(col)?;
        let idx = ManifestIndex::load(csv, &extra.file_column, &spec.column)?;
        let keys: Vec<Option<String>> = paths.iter().map(|p| idx.get_path(root, p).map(|v| spec.key(v))).collect();
        let missing = keys.iter().filter(|k| k.is_none()).count();
        if missing > 0 {
            eprintln!(
                "warning: {missing} of {} images have no row in {}; counted under {:?}",
                paths.len(),
                csv.display(),
                covid_cxr::subgroups::NO_ROW
            );
        }
        ev.add_subgroups(col, labels, preds, &keys)?;
        println!("by {col}:");
        println!("{:<40}{:>6}{:>10}{:>10}  recall", "value", "n", "accuracy", "macro-F1");
        for (v, g) in &ev.subgroups.as_ref().expect("just added")[col] {
            let rec: Vec<String> = g.recall.iter().map(|(c, r)| format!("{c} {r:.3}")).collect();
            println!("{v:<40}{:>6}{:>10.4}{:>10.4}  {}", g.n, g.accuracy, g.macro_f1, rec.join(", "));
        }
    }
    Ok(())
}
