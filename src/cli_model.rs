//! The model's subcommands of `covid-cxr`: `train`, `evaluate`, `predict`, `weights`. Thin
//! wrappers over the library's [`covid_cxr::train`], [`covid_cxr::evaluate`],
//! [`covid_cxr::checkpoint`] and [`covid_cxr::weights`].

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use covid_cxr::checkpoint::{self, Manifest, WeightsRef};
use covid_cxr::data::ImageFolder;
use covid_cxr::model::{InceptionVariant, NotebookDefects, TransferConfig, TransferModel};
use covid_cxr::optim::Adam;
use covid_cxr::train::{continue_training, Progress, TrainConfig, TrainState};
use covid_cxr::transforms::Compose;
use covid_cxr::weights;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Model subcommands.
#[derive(Subcommand)]
pub enum ModelCmd {
    /// Train the transfer model (frozen InceptionV3 + head) on DIR/train, validating on DIR/val.
    Train {
        /// Folder with train/ and val/ (as `covid-cxr split` writes them).
        #[arg(long)]
        data: PathBuf,
        /// Run folder to create (must be absent or empty).
        #[arg(long)]
        out: PathBuf,
        /// Epochs.
        #[arg(long, default_value_t = 15)]
        epochs: usize,
        /// Batch size.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Adam learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Adam weight decay (default 1e-3/15, the notebook's).
        #[arg(long)]
        weight_decay: Option<f64>,
        /// Seed.
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Augmented views per training image on the cached path.
        #[arg(long, default_value_t = 3)]
        views: usize,
        /// Run the backbone on every batch of every epoch (adds the aux loss; slow on a CPU).
        #[arg(long)]
        no_cache: bool,
        /// Also train the last N backbone blocks (implies --no-cache; very slow on a CPU).
        #[arg(long, default_value_t = 0)]
        fine_tune_blocks: usize,
        /// Backbone weights (.safetensors from `covid-cxr weights`); default: the converted 2015 weights.
        #[arg(long)]
        weights: Option<PathBuf>,
        #[command(flatten)]
        hw: crate::cli_hw::HwArgs,
        /// Image size.
        #[arg(long, default_value_t = 299)]
        size: u32,
        /// libtorch threads (default: all cores).
        #[arg(long)]
        threads: Option<i32>,
        /// Continue a finished or interrupted run (its head, Adam's state and history) up to --epochs.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Reproduce the notebook's double softmax (a defect).
        #[arg(long)]
        defect_double_softmax: bool,
        /// Reproduce the notebook's frozen 1000-class aux head loss (a defect; needs --no-cache).
        #[arg(long)]
        defect_frozen_aux: bool,
        #[command(flatten)]
        extra: crate::cli_robust::TrainExtra,
        /// Mask burned-in markers (text near the border) before the model sees a film; recorded
        /// in the run's preprocessing, so evaluate, predict and explain do the same.
        #[arg(long)]
        mask_markers: bool,
    },
    /// Evaluate a trained run on an ImageFolder; write every figure as JSON.
    Evaluate {
        /// Run folder written by `train`.
        #[arg(long)]
        model: PathBuf,
        /// An ImageFolder (class sub-folders).
        #[arg(long)]
        data: PathBuf,
        /// Output JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// libtorch threads (default: all cores).
        #[arg(long)]
        threads: Option<i32>,
        #[command(flatten)]
        sub: crate::cli_robust::EvalExtra,
        /// Mask burned-in markers even if the run was trained without it (a run trained with
        /// --mask-markers always does).
        #[arg(long)]
        mask_markers: bool,
        #[command(flatten)]
        hw: crate::cli_hw::HwArgs,
    },
    /// Predict images: one JSON line per image.
    Predict {
        /// Run folder written by `train`.
        #[arg(long)]
        model: PathBuf,
        /// Defer to a human below this top probability.
        #[arg(long, default_value_t = 0.0)]
        threshold: f64,
        /// Image files or folders (searched recursively).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Mask burned-in markers even if the run was trained without it.
        #[arg(long)]
        mask_markers: bool,
        #[command(flatten)]
        hw: crate::cli_hw::HwArgs,
    },
    /// Convert or prepare pretrained weights and print the .safetensors path.
    Weights {
        /// Source: fid_default_1.pt (TorchScript), torchvision's .pth, or torchvision-named .safetensors.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Output file (default: in the cache's weights folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a model subcommand.
pub fn run(c: ModelCmd) -> Result<()> {
    match c {
        ModelCmd::Train {
            data,
            out,
            epochs,
            batch_size,
            lr,
            weight_decay,
            seed,
            views,
            no_cache,
            fine_tune_blocks,
            weights,
            hw,
            size,
            threads,
            resume,
            defect_double_softmax,
            defect_frozen_aux,
            extra,
            mask_markers,
        } => {
            set_threads(threads);
            let cfg = TrainConfig {
                epochs,
                batch_size,
                lr,
                weight_decay: weight_decay.unwrap_or(1e-3 / 15.0),
                seed,
                cached: !no_cache && fine_tune_blocks == 0,
                views,
                ..TrainConfig::default()
            };
            let defects =
                NotebookDefects { double_softmax: defect_double_softmax, frozen_1000_class_aux: defect_frozen_aux };
            if resume.is_some() && (extra.recipe != "notebook" || extra.seeds.is_some()) {
                bail!("--resume continues the notebook recipe only (no --recipe robust, no --seeds)");
            }
            let opts = TrainOpts { weights, hw, size, fine_tune_blocks, defects, resume, extra, mask_markers };
            train(&data, &out, &cfg, &opts)
        }
        ModelCmd::Evaluate { model, data, json, threads, sub, mask_markers, hw } => {
            set_threads(threads);
            evaluate(&model, &data, json.as_deref(), &sub, mask_markers, &hw)
        }
        ModelCmd::Predict { model, threshold, inputs, mask_markers, hw } => {
            predict(&model, threshold, &inputs, mask_markers, &hw)
        },
        ModelCmd::Weights { from, out } => prepare_weights(from.as_deref(), out.as_deref()),
    }
}

/// Sets libtorch's thread count (default: all cores).
pub fn set_threads(t: Option<i32>) {
    let n = t.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(1));
    tch::set_num_threads(n.max(1));
}

struct TrainOpts {
    weights: Option<PathBuf>,
    hw: crate::cli_hw::HwArgs,
    size: u32,
    fine_tune_blocks: usize,
    defects: NotebookDefects,
    resume: Option<PathBuf>,
    extra: crate::cli_robust::TrainExtra,
    mask_markers: bool,
}

/// The run's preprocessing, with marker masking added when asked for at inference only.
pub fn inference_preprocessing(manifest: &Manifest, mask_markers: bool) -> Compose {
    let tf = manifest.preprocessing.clone();
    if mask_markers && !tf.masks_markers() {
        eprintln!("masking burned-in markers at inference (the run was trained without it)");
        return tf.with_marker_masking();
    }
    tf
}

/// Refuses a non-empty `out`; returns its `.NAME.partial` work folder (an existing one is refused, not
/// deleted; this run's own is removed if the run fails).
fn check_out(out: &Path) -> Result<crate::cli_explain::Partial> {
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{}: exists and is not empty; choose a new --out (nothing is overwritten)", out.display());
    }
    crate::cli_explain::Partial::create(out)
}

fn weights_file(w: Option<PathBuf>) -> Result<PathBuf> {
    match w {
        Some(p) => Ok(p),
        None => Ok(weights::ensure_pretrained()?),
    }
}

fn train(data: &Path, out: &Path, cfg: &TrainConfig, o: &TrainOpts) -> Result<()> {
    let (device, hw) = o.hw.resolve()?;
    if o.size < 75 {
        // smaller inputs shrink to nothing inside InceptionV3 (libtorch would abort the convolution)
        bail!("--size {}: InceptionV3 needs images of at least 75 x 75", o.size);
    }
    let guard = check_out(out)?;
    let partial = guard.path().to_path_buf();
    let (mut train_tf, mut val_tf) = (Compose::notebook_train(o.size), Compose::notebook_val(o.size));
    if o.mask_markers {
        (train_tf, val_tf) = (train_tf.with_marker_masking(), val_tf.with_marker_masking());
    }
    let (train_ds, val_ds) = ImageFolder::open_split(data, train_tf.clone(), val_tf.clone())
        .with_context(|| format!("opening {}/train and {}/val", data.display(), data.display()))?;
    let wpath = weights_file(o.weights.clone())?;
    let sha = weights::sha256_file(&wpath)?;
    let variant = weights::variant_of(&wpath).ok().flatten().unwrap_or(InceptionVariant::Fid2015);
    if o.fine_tune_blocks > 0 || !cfg.cached {
        eprintln!("warning: the uncached path runs the backbone on every image of every epoch: expect minutes per epoch on a CPU");
    }
    let mcfg = TransferConfig {
        variant,
        num_classes: train_ds.classes.len() as i64,
        precision: hw.precision,
        fine_tune_blocks: o.fine_tune_blocks,
        defects: o.defects,
        ..TransferConfig::default()
    };
    tch::manual_seed(cfg.seed as i64);
    let cfg = TrainConfig { weights_sha256: Some(sha.clone()), ..cfg.clone() };
    let (mut model, previous) = match &o.resume {
        None => {
            let mut m = TransferModel::new(&mcfg)?;
            weights::load_backbone(&mut m, &wpath)?;
            (m, TrainState { history: Default::default(), optimizer: Adam::new(cfg.lr, cfg.weight_decay) })
        }
        Some(run) => {
            let (m, man) = checkpoint::load(run).with_context(|| format!("loading {}", run.display()))?;
            checkpoint::check_compatible(&man, &val_ds)?;
            if man.weights.sha256 != sha {
                bail!("{}: trained on other backbone weights (sha256 {})", run.display(), man.weights.sha256);
            }
            eprintln!("resuming {} after epoch {}", run.display(), man.history.as_ref().map_or(0, |h| h.epochs.len()));
            let optimizer = match checkpoint::load_optimizer(run, &man, &m, &cfg)? {
                Some(o) => o,
                None => {
                    eprintln!("warning: {} has no optimizer state (an older run): Adam's moments restart", run.display());
                    Adam::new(cfg.lr, cfg.weight_decay)
                }
            };
            (m, TrainState { history: man.history.unwrap_or_default(), optimizer })
        }
    };
    model.set_precision(hw.precision);
    model.to_device(device);
    eprintln!(
        "train {} images, val {} images, classes {:?}; weights {} ({}); {} path",
        train_ds.len(),
        val_ds.len(),
        train_ds.classes,
        wpath.display(),
        variant.name(),
        if cfg.cached { "cached-feature" } else { "uncached" }
    );
    let mut previous = Some(previous);
    // Adam's state, for an exact resume (the notebook recipe's optimizer; the robust recipe has none)
    let mut optimizer: Option<Adam> = None;
    let (history, recipe) =
        crate::cli_robust::train_recipe(&mut model, &train_ds, &val_ds, &cfg, &o.extra, &mut |m| {
            let fresh = || TrainState { history: Default::default(), optimizer: Adam::new(cfg.lr, cfg.weight_decay) };
            let state = run_training(m, &train_ds, &val_ds, &cfg, previous.take().unwrap_or_else(fresh))?;
            optimizer = Some(state.optimizer);
            Ok(state.history)
        })?;
    let last = history.epochs.last().context("no epoch")?;
    let mut manifest =
        Manifest::for_training(&model, &train_ds, &val_ds, &cfg, &history, WeightsRef { path: wpath.clone(), sha256: sha })?;
    recipe.record(&mut manifest);
    if let Some(opt) = &optimizer {
        checkpoint::save_optimizer(&partial, opt, &mut manifest)?;
    }
    manifest.hardware = Some(hw);
    checkpoint::save(&partial, &model, &manifest)?;
    recipe.write(&partial)?;
    write_json(&partial.join("history.json"), &history)?;
    write_json(&partial.join("metrics.json"), &last.val)?;
    covid_cxr::imageio::write_atomic(
        &partial.join("classification_report.txt"),
        last.val.report.to_string().as_bytes(),
        true,
    )?;
    // pictures: the training curves and the validation figures
    covid_cxr::report::accuracy_loss(&history)?.save(partial.join("accuracy_loss.png"))?;
    let ev = covid_cxr::train::evaluate_val(&model, &val_ds, &cfg)?;
    write_json(&partial.join("val_evaluation.json"), &ev)?;
    covid_cxr::report::save_evaluation_figures(&ev, &partial, "val_")?;
    guard.finish(out)?;
    println!(
        "val accuracy {:.4}  macro precision {:.4}  macro recall {:.4}  macro F1 {:.4}  ({:.1}s in all, {:.1}s features)",
        last.val.accuracy, last.val.macro_precision, last.val.macro_recall, last.val.macro_f1, history.total_seconds, history.feature_seconds
    );
    print!("{}", last.val.report);
    eprintln!("run written to {}", out.display());
    Ok(())
}

fn run_training(
    model: &mut TransferModel,
    train: &ImageFolder,
    val: &ImageFolder,
    cfg: &TrainConfig,
    previous: TrainState,
) -> Result<TrainState> {
    let tty = std::io::stderr().is_terminal();
    let pb = ProgressBar::new(1);
    pb.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")?.progress_chars("=> "),
    );
    if !tty {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut stage = String::new();
    let mut last = 0usize;
    let h = continue_training(model, train, val, cfg, previous, &mut |p| match p {
        Progress::Step { stage: s, done, total } => {
            if s != stage {
                last = 0;
                stage = s.to_string();
                pb.set_message(stage.clone());
                pb.set_length(total as u64);
                pb.reset();
            }
            pb.set_position(done as u64);
            // without a terminal, one line per tenth of a long stage
            let tenth = |d: usize| d * 10 / total.max(1);
            if !tty && total >= 100 && tenth(done) != tenth(last) {
                eprintln!("{stage}: {done}/{total}");
            }
            last = done;
        }
        Progress::Epoch(e) => {
            if tty {
                pb.println(e.to_string());
            } else {
                eprintln!("{e}");
            }
        }
    })?;
    pb.finish_and_clear();
    Ok(h)
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    covid_cxr::imageio::write_atomic(path, &serde_json::to_vec_pretty(v)?, true)?;
    Ok(())
}

fn evaluate(
    run: &Path,
    data: &Path,
    json: Option<&Path>,
    sub: &crate::cli_robust::EvalExtra,
    mask_markers: bool,
    hw: &crate::cli_hw::HwArgs,
) -> Result<()> {
    let (mut model, mut manifest) = checkpoint::load(run).with_context(|| format!("loading {}", run.display()))?;
    manifest.preprocessing = inference_preprocessing(&manifest, mask_markers);
    hw.apply(&mut model)?;
    let ds = ImageFolder::open(data, manifest.preprocessing.clone())?;
    checkpoint::check_compatible(&manifest, &ds)?;
    if ds.is_empty() {
        bail!("{}: no images to evaluate", data.display());
    }
    let (probs, labels, paths) = covid_cxr::evaluate::predict_dataset(&model, &ds, 16)?;
    let mut ev = covid_cxr::evaluate::evaluate_probs(&probs, &labels, &ds.classes)?;
    let preds: Vec<i64> = probs
        .iter()
        .map(|r| r.iter().enumerate().fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0 as i64)
        .collect();
    crate::cli_robust::add_subgroups(&mut ev, sub, &ds.root, &labels, &preds, &paths)?;
    if let Some(j) = json {
        write_json(j, &ev)?;
        // the figures beside the JSON: <stem>_confusion.png, _roc.png, _reliability.png, _coverage.png
        let stem = j.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "evaluation".into());
        let dir = j.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let figs = covid_cxr::report::save_evaluation_figures(&ev, dir, &format!("{stem}_"))?;
        eprintln!("figures: {}", figs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    print!("{}", ev.report);
    if let (Some(a), Some(f)) = (ev.accuracy_ci, ev.macro_f1_ci) {
        println!(
            "accuracy {:.4} [95% CI {:.4}, {:.4}]  macro-F1 {:.4} [{:.4}, {:.4}] (bootstrap, {} resamples, percentile)",
            ev.accuracy,
            a[0],
            a[1],
            ev.macro_f1,
            f[0],
            f[1],
            covid_cxr::evaluate::BOOTSTRAP_RESAMPLES
        );
    }
    println!(
        "ECE {:.4}; one-vs-rest AUC: {}",
        ev.ece,
        ev.per_class
            .iter()
            .map(|c| format!("{} {}", c.name, c.auc.map(|a| format!("{a:.4}")).unwrap_or("n/a".into())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files = covid_cxr::imageio::list_images(p)?;
            out.append(&mut files);
            let subs = covid_cxr::imageio::list_subdirs(p)?;
            out.extend(collect_images(&subs)?);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(out)
}

fn predict(run: &Path, threshold: f64, inputs: &[PathBuf], mask_markers: bool, hw: &crate::cli_hw::HwArgs) -> Result<()> {
    let (mut model, manifest) = checkpoint::load(run).with_context(|| format!("loading {}", run.display()))?;
    hw.apply(&mut model)?;
    let files = collect_images(inputs)?;
    let tf = &inference_preprocessing(&manifest, mask_markers);
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    for chunk in files.chunks(covid_cxr::predict::BATCH) {
        for p in covid_cxr::predict::predict_paths(&model, &manifest.classes, tf, chunk)? {
            let probs: serde_json::Map<String, serde_json::Value> = manifest
                .classes
                .iter()
                .zip(&p.probabilities)
                .map(|(c, &v)| (c.clone(), serde_json::json!(v as f32)))
                .collect();
            let line = serde_json::json!({
                "path": p.path, "probabilities": probs, "label": p.class,
                "confidence": p.confidence as f32, "deferred": p.deferred(threshold),
            });
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

fn prepare_weights(from: Option<&Path>, out: Option<&Path>) -> Result<()> {
    let path = match from {
        None => weights::ensure_pretrained()?,
        Some(src) => {
            let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
            let stem = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let is_ts = ext == "pt" && tch::CModule::load(src).is_ok();
            let dest = out.map(Path::to_path_buf).unwrap_or_else(|| {
                let name = if is_ts {
                    weights::FID2015_SAFETENSORS.to_string()
                } else {
                    format!("inception_v3_{stem}.safetensors")
                };
                weights::weights_dir().join(name)
            });
            if is_ts {
                weights::convert_fid_torchscript(src, &dest)?;
            } else if ext == "safetensors" {
                weights::convert_torchvision_safetensors(src, &dest)?;
            } else {
                weights::convert_torchvision_pth(src, &dest)?;
            }
            dest
        }
    };
    println!("{}", path.display());
    Ok(())
}
