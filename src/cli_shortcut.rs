//! `covid-cxr shortcut-lab`: a model that learns a burned-in word instead of the lungs, on
//! synthetic films, and the remedy (marker masking). See [`covid_cxr::shortcut`].

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use covid_cxr::shortcut::{run_lab, LabConfig};
use covid_cxr::train::Progress;
use std::path::PathBuf;

/// The shortcut lab subcommand.
#[derive(Subcommand)]
pub enum ShortcutCmd {
    /// The shortcut lab: train on synthetic films where one class carries a burned-in word,
    /// evaluate on clean films and on films with the word moved to the other classes, Grad-CAM on
    /// the word, then the same with burned-in markers masked. Writes films, two runs, JSON and figures.
    ShortcutLab {
        /// Output folder (must not exist); written as .NAME.partial and renamed when complete.
        #[arg(long)]
        out: PathBuf,
        /// Training films per class.
        #[arg(long, default_value_t = 40)]
        per_class: usize,
        /// Test films per class.
        #[arg(long, default_value_t = 20)]
        test_per_class: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The shortcut: TEXT:CLASS:P (the word, the class whose training films carry it, the share).
        #[arg(long, default_value = "PORTABLE:normal:1.0")]
        shortcut: String,
        /// Lesion density scale of the films (1: the default synthetic evidence).
        #[arg(long, default_value_t = 0.5)]
        evidence: f32,
    },
}

/// Runs the subcommand.
pub fn run(c: ShortcutCmd) -> Result<()> {
    let ShortcutCmd::ShortcutLab { out, per_class, test_per_class, seed, shortcut, evidence } = c;
    if out.exists() {
        bail!("{}: exists; choose a new --out (nothing is overwritten)", out.display());
    }
    let sc = covid_cxr::synth::Shortcut::parse(&shortcut)?;
    if sc.classes.len() != 1 {
        bail!("--shortcut: the lab puts the word on one class, got {:?}", sc.classes);
    }
    let cfg = LabConfig {
        per_class,
        test_per_class,
        seed,
        text: sc.text,
        class: sc.classes[0].clone(),
        share: sc.share,
        evidence,
        ..LabConfig::default()
    };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).map(PathBuf::from).unwrap_or_else(|| ".".into());
    let work = parent.join(format!(".{}.partial", out.file_name().context("--out needs a name")?.to_string_lossy()));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing stale {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let pb = crate::bar(1, "lab");
    let mut stage = String::new();
    let report = run_lab(
        &work,
        &cfg,
        &mut |s| pb.println(format!("shortcut lab: {s}")),
        &mut |p: Progress| {
            if let Progress::Step { stage: s, done, total } = p {
                if s != stage {
                    stage = s.to_string();
                    pb.set_message(stage.clone());
                    pb.set_length(total as u64);
                    pb.reset();
                }
                pb.set_position(done as u64);
            }
        },
    )?;
    pb.finish_and_clear();
    std::fs::rename(&work, &out).with_context(|| format!("renaming {} to {}", work.display(), out.display()))?;
    println!("{report}");
    eprintln!(
        "written to {}: shortcut_lab.json, accuracy.png, gradcam_baseline.png, gradcam_remedy.png, runs/, films/",
        out.display()
    );
    Ok(())
}
