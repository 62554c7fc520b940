//! `covid-cxr`: the notebook's pipeline from the command line. A thin layer over the same
//! library functions the notebooks call; errors are reported with their context.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use covid_cxr::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod cli_bench;
mod cli_explain;
mod cli_faithfulness;
mod cli_hw;
mod cli_model;
mod cli_robust;
mod cli_shortcut;

#[derive(Parser)]
#[command(
    name = "covid-cxr",
    version,
    about = "COVID-19 detection from chest X-rays: transfer learning and explanations on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Stages of `covid-cxr bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchStage {
    All,
    Load,
    Augment,
    Backbone,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write synthetic chest films (an ImageFolder: covid/, normal/, pneumonia/). Not diagnostic.
    Synth {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = 40)]
        per_class: usize,
        /// Seed.
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Also write each film's lesion mask to MASKS/<class>/<file name> (white = evidence).
        #[arg(long)]
        masks: Option<PathBuf>,
        /// Burn a word into a share of one class's films: TEXT:CLASS:P (e.g. PORTABLE:normal:0.9;
        /// classes joined with +).
        #[arg(long)]
        shortcut: Option<String>,
        /// Lesion density scale (1: default; smaller is subtler).
        #[arg(long, default_value_t = 1.0)]
        evidence: f32,
    },
    /// Augment the images of one folder with the notebook's Augmentor pipeline
    /// (rotate 0.7/10/10, random_distortion 1/4/4/8, flip_left_right 1).
    Augment {
        /// The class folder to augment (e.g. data/covid).
        dir: PathBuf,
        /// Number of images to sample (with replacement).
        #[arg(long)]
        sample: Option<usize>,
        /// Run every image once instead (Augmentor's process()).
        #[arg(long, conflicts_with = "sample")]
        process: bool,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Then move the generated files from DIR/output/ into DIR/ (never overwriting).
        #[arg(long)]
        move_into_class: bool,
    },
    /// Split class folders into train/val(/test), split-folders' ratio semantics.
    Split {
        /// Input ImageFolder.
        input: PathBuf,
        /// Output folder (must be empty or absent).
        output: PathBuf,
        /// Ratios, e.g. 0.8,0.2 or 0.8,0.1,0.1.
        #[arg(long, default_value = "0.8,0.2", value_delimiter = ',')]
        ratio: Vec<f64>,
        /// Seed.
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Keep groups together: prefix:DELIM (file-name prefix) or MANIFEST.csv:COLUMN.
        #[arg(long)]
        group_by: Option<String>,
        /// Move files instead of copying them.
        #[arg(long = "move")]
        move_files: bool,
    },
    /// Load one batch with the notebook's transforms and save its labelled grid as PNG.
    Grid {
        /// An ImageFolder (e.g. split/train).
        data: PathBuf,
        /// Output picture (.png or .svg).
        #[arg(long)]
        out: PathBuf,
        /// Batch size.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Use the training transform (random crop, flip) instead of the validation one.
        #[arg(long)]
        train_transform: bool,
        /// Image size.
        #[arg(long, default_value_t = 299)]
        size: u32,
        /// Seed.
        #[arg(long, default_value_t = 1337)]
        seed: u64,
    },
    /// The main job end to end on the embedded synthetic default: synth, augment, split, load (grid
    /// picture), pretrained InceptionV3 training, evaluation figures, predictions, LIME and
    /// Grad-CAM. Writes into a new folder, renamed into place only when complete.
    Demo {
        /// Output folder (must not exist); default runs/demo-<time>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Synthetic images per class.
        #[arg(long, default_value_t = 60)]
        per_class: usize,
        /// Seed.
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        /// Only the data stages (no model).
        #[arg(long)]
        quick: bool,
        /// LIME samples for the explanation step.
        #[arg(long, default_value_t = 1000)]
        explain_samples: usize,
        #[command(flatten)]
        hw: cli_hw::HwArgs,
    },
    /// Throughput benchmark: decode + transform, and augmentation sample(), images/s; or the
    /// backbone at each precision (`--stage backbone`). bench/run.sh runs every stage beside Python.
    Bench {
        /// all (decode + transform and augmentation), load, augment, or backbone.
        #[arg(long, value_enum, default_value_t = BenchStage::All)]
        stage: BenchStage,
        /// Backbone path for --stage backbone.
        #[arg(long, value_enum, default_value_t = cli_bench::BackboneMode::Chosen)]
        mode: cli_bench::BackboneMode,
        /// Timed batches of 8 for --stage backbone.
        #[arg(long, default_value_t = 4)]
        batches: usize,
        /// libtorch threads (default: all cores).
        #[arg(long)]
        threads: Option<i32>,
        #[command(flatten)]
        hw: cli_hw::HwArgs,
        /// An ImageFolder (default: ../shared/data/cxr-small/train if present, else synthetic).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Images to augment.
        #[arg(long, default_value_t = 200)]
        augment_samples: usize,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    #[command(flatten)]
    Model(cli_model::ModelCmd),
    #[command(flatten)]
    Explain(cli_explain::ExplainCmd),
    #[command(flatten)]
    Faithfulness(cli_faithfulness::FaithfulnessCmd),
    #[command(flatten)]
    Shortcut(cli_shortcut::ShortcutCmd),
}

fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn synth(out: &Path, masks: Option<&Path>, cfg: &SynthConfig) -> Result<()> {
    let pb = bar((cfg.per_class * 3) as u64, "synth");
    covid_cxr::synth::generate_with_masks(out, masks, cfg, |n| pb.set_position(n as u64))
        .with_context(|| format!("writing synthetic films to {}", out.display()))?;
    pb.finish();
    eprintln!("wrote {} synthetic films per class to {} (synthetic, not diagnostic)", cfg.per_class, out.display());
    if let Some(m) = masks {
        eprintln!("lesion masks in {}", m.display());
    }
    Ok(())
}

fn notebook_pipeline(dir: &Path, seed: u64) -> Result<Pipeline> {
    Ok(Pipeline::new(dir)?.seed(seed).rotate(0.7, 10, 10).random_distortion(1.0, 4, 4, 8).flip_left_right(1.0))
}

fn augment(dir: &Path, sample: Option<usize>, process: bool, seed: u64, mv: bool) -> Result<()> {
    let p = notebook_pipeline(dir, seed).with_context(|| format!("augmenting {}", dir.display()))?;
    let report = if process {
        p.process()?
    } else {
        let n = sample.context("give --sample N or --process")?;
        let pb = bar(n as u64, "augment");
        let r = p.sample_with_progress(n, |k| pb.set_position(k as u64))?;
        pb.finish();
        r
    };
    for (path, why) in &report.skipped {
        eprintln!("skipped unreadable file {}: {why}", path.display());
    }
    eprintln!(
        "wrote {} images to {}; {} unreadable file(s) skipped",
        report.written.len(),
        p.output().display(),
        report.skipped.len()
    );
    if mv {
        let moved = move_into_class(dir)?;
        eprintln!("moved {} files into {}", moved.len(), dir.display());
    }
    Ok(())
}

fn split(input: &Path, output: &Path, ratio: Vec<f64>, seed: u64, group_by: Option<String>, mv: bool) -> Result<()> {
    let mut cfg = SplitConfig::new(&ratio, seed);
    cfg.move_files = mv;
    if let Some(g) = group_by {
        cfg.group_by = GroupBy::parse(&g)?;
    }
    let rep = split_ratio(input, output, &cfg)
        .with_context(|| format!("splitting {} into {}", input.display(), output.display()))?;
    print!("{rep}");
    Ok(())
}

fn grid(data: &Path, out: &Path, batch_size: usize, train_tf: bool, size: u32, seed: u64) -> Result<()> {
    let tf = if train_tf { Compose::notebook_train(size) } else { Compose::notebook_val(size) };
    let ds = ImageFolder::open(data, tf).with_context(|| format!("opening {}", data.display()))?;
    let dl = DataLoader::new(&ds, batch_size).shuffle(seed);
    let batch = dl.iter(0).next().context("no batch")??;
    let labels: Vec<i64> = Vec::<i64>::try_from(&batch.labels)?;
    let titles: Vec<String> = labels.iter().map(|&l| ds.classes[l as usize].clone()).collect();
    let fig = image_grid(&batch.images, &titles, 4, [0.5; 3], [0.5; 3])?;
    fig.save(out)?;
    let (mn, mx) = (batch.images.min().double_value(&[]), batch.images.max().double_value(&[]));
    eprintln!("batch {:?}, values in [{mn:.3}, {mx:.3}]; grid written to {}", batch.images.size(), out.display());
    Ok(())
}

fn demo(
    out: Option<PathBuf>,
    per_class: usize,
    seed: u64,
    quick: bool,
    explain_samples: usize,
    hw: cli_hw::HwArgs,
) -> Result<()> {
    let out = out.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        PathBuf::from(format!("runs/demo-{t}"))
    });
    if out.exists() {
        bail!("{}: exists; choose a new --out (nothing is overwritten)", out.display());
    }
    // Refuses a leftover .OUT.partial rather than deleting a folder this process did not create; removes
    // its own on failure.
    let guard = cli_explain::Partial::create(&out)?;
    let work = guard.path().to_path_buf();
    let t0 = Instant::now();
    let steps = if quick { 4 } else { 9 };
    eprintln!("[1/{steps}] synthetic data (synthetic, not diagnostic)");
    synth(&work.join("data"), Some(&work.join("masks")), &SynthConfig::new(per_class, seed))?;
    eprintln!("[2/{steps}] augment covid with the notebook's Augmentor pipeline, move into class");
    augment(&work.join("data/covid"), Some(per_class / 4 + 1), false, seed, true)?;
    eprintln!("[3/{steps}] split 0.8/0.2");
    split(&work.join("data"), &work.join("split"), vec![0.8, 0.2], seed, None, false)?;
    eprintln!("[4/{steps}] load one batch with the training transforms");
    grid(&work.join("split/train"), &work.join("batch_grid.png"), 8, true, 299, seed)?;
    if !quick {
        demo_model(&work, seed, explain_samples, steps, hw)?;
    }
    eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
    guard.finish(&out)?;
    println!("{}", out.display());
    eprintln!(
        "results in {}: batch_grid.png, masks/, run/ (model, curves, evaluation figures), predictions.png, explain/ (with faithfulness.json)",
        out.display()
    );
    Ok(())
}

/// The model half of the demo: pretrained InceptionV3, training, evaluation, predictions, explanations.
fn demo_model(work: &Path, seed: u64, explain_samples: usize, steps: usize, hw: cli_hw::HwArgs) -> Result<()> {
    use covid_cxr::checkpoint::{Manifest, WeightsRef};
    eprintln!("[5/{steps}] pretrained InceptionV3 (frozen), new head; train 15 epochs on cached features");
    let wpath =
        covid_cxr::weights::ensure_pretrained().context("preparing the pretrained weights (run scripts/setup.sh)")?;
    let sha = covid_cxr::weights::sha256_file(&wpath)?;
    let (device, choice) = hw.resolve()?;
    tch::manual_seed(seed as i64);
    let mut model =
        TransferModel::pretrained(&TransferConfig { precision: choice.precision, ..TransferConfig::default() })?;
    model.to_device(device);
    let (train_ds, val_ds) =
        ImageFolder::open_split(work.join("split"), Compose::notebook_train(299), Compose::notebook_val(299))?;
    let cfg = TrainConfig { seed, weights_sha256: Some(sha.clone()), ..TrainConfig::default() };
    let history = covid_cxr::train::train_model(&mut model, &train_ds, &val_ds, &cfg)?;
    let run = work.join("run");
    let mut manifest =
        Manifest::for_training(&model, &train_ds, &val_ds, &cfg, &history, WeightsRef { path: wpath, sha256: sha })?;
    manifest.hardware = Some(choice);
    covid_cxr::checkpoint::save(&run, &model, &manifest)?;
    covid_cxr::imageio::write_atomic(&run.join("history.json"), &serde_json::to_vec_pretty(&history)?, false)?;
    covid_cxr::report::accuracy_loss(&history)?.save(run.join("accuracy_loss.png"))?;
    eprintln!("[6/{steps}] evaluate on val: report, confusion matrix, ROC, calibration, deferral");
    let ev = evaluate(&model, &val_ds)?;
    print!("{}", ev.report);
    covid_cxr::imageio::write_atomic(&run.join("val_evaluation.json"), &serde_json::to_vec_pretty(&ev)?, false)?;
    covid_cxr::report::save_evaluation_figures(&ev, &run, "val_")?;
    eprintln!("[7/{steps}] predictions on one image per class");
    let picks: Vec<usize> =
        (0..val_ds.classes.len()).filter_map(|c| val_ds.samples.iter().position(|(_, l)| *l == c as i64)).collect();
    let batch = DataLoader::new(&val_ds, picks.len()).load(&picks, 0)?.context("no validation image")?;
    let probs: Vec<Vec<f64>> = Vec::<Vec<f32>>::try_from(&tch::no_grad(|| model.predict_proba(&batch.images)))?
        .into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect();
    let labels: Vec<usize> = Vec::<i64>::try_from(&batch.labels)?.into_iter().map(|l| l as usize).collect();
    let images = covid_cxr::plot::tensor_to_images(&batch.images, [0.5; 3], [0.5; 3])?;
    covid_cxr::plot::predictions(&images, &labels, &probs, &val_ds.classes)?.save(work.join("predictions.png"))?;
    // explain a film whose lesion mask is known (augmented copies have none)
    let masks = work.join("masks");
    let with_mask = |p: &PathBuf, l: i64| -> bool {
        let m = masks.join(&val_ds.classes[l as usize]).join(p.file_name().unwrap_or_default());
        covid_cxr::imageio::open_image(&m).map(|i| i.to_luma8().pixels().any(|v| v[0] > 127)).unwrap_or(false)
    };
    let film = val_ds.samples.iter().find(|(p, l)| with_mask(p, *l)).map_or(batch.paths[0].clone(), |s| s.0.clone());
    eprintln!("[8/{steps}] explain one validation image with LIME ({explain_samples} samples) and Grad-CAM");
    cli_explain::run(cli_explain::ExplainCmd::Explain {
        model: run.clone(),
        images: vec![film],
        method: cli_explain::Method::Both,
        samples: explain_samples,
        batch_size: 8,
        top_labels: 3,
        class: None,
        hide_color: cli_explain::HideColor::Gray(0),
        seed,
        out: work.join("explain"),
        mask_markers: false,
        adaptive: None,
        hw: hw.clone(),
    })?;
    eprintln!("[9/{steps}] faithfulness on 4 validation films with lesion masks (LIME 300 samples, Grad-CAM)");
    cli_faithfulness::run(cli_faithfulness::FaithfulnessCmd::Faithfulness {
        model: run,
        data: work.join("split/val"),
        masks: Some(masks),
        samples: 300,
        seed,
        limit: Some(4),
        steps: 0,
        batch_size: 8,
        tolerance: covid_cxr::explain::faithfulness::POINTING_TOLERANCE_PX,
        json: work.join("explain/faithfulness.json"),
        hw,
    })
}

fn bench(data: Option<PathBuf>, n_aug: usize, json: Option<PathBuf>, stage: BenchStage) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("covid-cxr-bench-{}", std::process::id()));
    let data = match data {
        Some(d) => d,
        None => {
            let shared = Path::new("../shared/data/cxr-small/train");
            if shared.is_dir() {
                shared.to_path_buf()
            } else {
                eprintln!("../shared/data/cxr-small absent: benchmarking on synthetic films");
                covid_cxr::synth::generate(&tmp.join("data"), &SynthConfig::new(100, 1))?;
                tmp.join("data")
            }
        }
    };
    let threads = rayon::current_num_threads();
    let ds = ImageFolder::open(&data, Compose::notebook_train(299))?;
    let dl = DataLoader::new(&ds, 8).shuffle(1);
    let t = Instant::now();
    let mut n = 0;
    if stage != BenchStage::Augment {
        for b in dl.iter(0) {
            n += b?.images.size()[0];
        }
    }
    let load = n as f64 / t.elapsed().as_secs_f64();
    eprintln!("decode + train transform (RandomResizedCrop 299, flip, ToTensor, Normalize): {n} images, {load:.1} images/s ({threads} threads)");
    // augmentation: copy the covid folder (or the first class) to a scratch folder
    let class_dir = data.join(&ds.classes[0]);
    let mut aug = 0.0;
    let n_aug = if stage == BenchStage::Load { 0 } else { n_aug };
    if n_aug > 0 {
        let scratch = tmp.join("aug").join(&ds.classes[0]);
        std::fs::create_dir_all(&scratch)?;
        for f in covid_cxr::imageio::list_images(&class_dir)? {
            std::fs::copy(&f, scratch.join(f.file_name().context("image without a name")?))?;
        }
        let p = notebook_pipeline(&scratch, 1)?;
        let t = Instant::now();
        let rep = p.sample(n_aug)?;
        aug = rep.written.len() as f64 / t.elapsed().as_secs_f64();
        eprintln!("augmentation sample({n_aug}) on {}: {aug:.1} images/s", class_dir.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let v = serde_json::json!({"data": data, "threads": threads, "decode_transform_images_per_s": load, "augment_images_per_s": aug, "augment_samples": n_aug, "images": n});
    println!("{v}");
    if let Some(j) = json {
        covid_cxr::imageio::write_atomic(&j, serde_json::to_string_pretty(&v)?.as_bytes(), true)?;
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Synth { out, per_class, seed, masks, shortcut, evidence } => (|| {
            let shortcut = shortcut.as_deref().map(covid_cxr::synth::Shortcut::parse).transpose()?;
            synth(&out, masks.as_deref(), &SynthConfig { per_class, seed, shortcut, evidence, ..SynthConfig::default() })
        })(),
        Cmd::Augment { dir, sample, process, seed, move_into_class } => {
            augment(&dir, sample, process, seed, move_into_class)
        }
        Cmd::Split { input, output, ratio, seed, group_by, move_files } => {
            split(&input, &output, ratio, seed, group_by, move_files)
        }
        Cmd::Grid { data, out, batch_size, train_transform, size, seed } => {
            grid(&data, &out, batch_size, train_transform, size, seed)
        }
        Cmd::Demo { out, per_class, seed, quick, explain_samples, hw } => {
            demo(out, per_class, seed, quick, explain_samples, hw)
        }
        Cmd::Bench { data, augment_samples, json, stage, mode, batches, threads, hw } => {
            cli_model::set_threads(threads);
            if stage == BenchStage::Backbone {
                cli_bench::backbone(mode, batches, 8, &hw)
            } else {
                bench(data, augment_samples, json, stage)
            }
        }
        Cmd::Model(c) => cli_model::run(c),
        Cmd::Explain(c) => cli_explain::run(c),
        Cmd::Faithfulness(c) => cli_faithfulness::run(c),
        Cmd::Shortcut(c) => cli_shortcut::run(c),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
