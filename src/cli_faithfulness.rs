//! `covid-cxr faithfulness`: how well Grad-CAM and LIME point at the evidence (pointing game and
//! energy inside ground-truth masks) and deletion/insertion curves, over a folder of films.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use covid_cxr::explain::faithfulness::{
    films_with_masks, measure_film, summarize, FaithfulnessOptions, FilmScores, MapScores,
};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The faithfulness subcommand.
#[derive(Subcommand)]
pub enum FaithfulnessCmd {
    /// Measure the explanations: pointing game and energy in ground-truth masks (synthetic films:
    /// `synth --masks`), deletion/insertion curves. JSON, plus figures beside it.
    Faithfulness {
        /// A run folder written by `covid-cxr train`.
        #[arg(long)]
        model: PathBuf,
        /// An ImageFolder (class sub-folders), e.g. split/val.
        #[arg(long)]
        data: PathBuf,
        /// Masks at MASKS/<class>/<file name> (white = evidence). With masks, only films with a
        /// non-empty mask are measured.
        #[arg(long)]
        masks: Option<PathBuf>,
        /// LIME samples per film.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// Seed of LIME and of the choice of films under --limit.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Measure at most this many films (chosen at random with the seed).
        #[arg(long)]
        limit: Option<usize>,
        /// Steps of the deletion/insertion curves (0: no curves; each step costs 4 model calls per film).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// LIME: images per model call.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Grad-CAM's pointing game: a maximum within this many pixels (of the 299-pixel view) of
        /// the mask is a hit, the game's usual tolerance; 0 = strict. The strict share is always
        /// reported too (gradcam_pointing_strict).
        #[arg(long, default_value_t = covid_cxr::explain::faithfulness::POINTING_TOLERANCE_PX)]
        tolerance: f64,
        /// Output JSON; figures are written beside it (<stem>_grid.png, <stem>_curves.png).
        #[arg(long)]
        json: PathBuf,
        #[command(flatten)]
        hw: crate::cli_hw::HwArgs,
    },
}

/// One film's record in the JSON.
#[derive(Serialize)]
struct Film {
    /// Relative to `--data` (class/name), so the record stays true when the folder moves (the
    /// demo writes into a `.partial` folder and renames it).
    image: PathBuf,
    class: String,
    probability: f64,
    predicted: String,
    mask_share: Option<f64>,
    gradcam: MapScores,
    lime: MapScores,
    lime_segments: usize,
}

impl Film {
    fn new(s: FilmScores, data: &Path, classes: &[String]) -> Self {
        let name = |k: usize| classes.get(k).cloned().unwrap_or_else(|| format!("class {k}"));
        Film {
            image: s.path.strip_prefix(data).map(Path::to_path_buf).unwrap_or_else(|_| s.path.clone()),
            class: name(s.label),
            probability: s.probability,
            predicted: name(s.predicted),
            mask_share: s.mask_share,
            gradcam: s.gradcam,
            lime: s.lime,
            lime_segments: s.lime_segments,
        }
    }
}

/// Runs the subcommand.
pub fn run(c: FaithfulnessCmd) -> Result<()> {
    let FaithfulnessCmd::Faithfulness { model, data, masks, samples, seed, limit, steps, batch_size, tolerance, json, hw } =
        c;
    if samples < 2 {
        bail!("--samples must be at least 2 (LIME needs perturbed samples)");
    }
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        bail!("--tolerance must be a number of pixels, 0 or more (got {tolerance})");
    }
    if let Some(m) = &masks {
        if !m.is_dir() {
            bail!("{}: the masks folder does not exist", m.display());
        }
    }
    if let Some(dir) = json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (mut m, manifest) =
        covid_cxr::checkpoint::load(&model).with_context(|| format!("loading the run {}", model.display()))?;
    hw.apply(&mut m)?;
    let tf = manifest.preprocessing.clone();
    let ds = covid_cxr::data::ImageFolder::open(&data, tf.clone())
        .with_context(|| format!("opening {}", data.display()))?;
    if ds.classes != manifest.classes {
        bail!("{}: classes {:?} differ from the model's {:?}", data.display(), ds.classes, manifest.classes);
    }
    // the films to measure: with masks, those whose mask is non-empty
    let (mut films, no_mask, empty_mask): (Vec<(PathBuf, usize, Option<PathBuf>)>, usize, usize) = match &masks {
        None => (ds.samples.iter().map(|(p, l)| (p.clone(), *l as usize, None)).collect(), 0, 0),
        Some(md) => {
            let (f, a, b) = films_with_masks(&ds, md)?;
            (f.into_iter().map(|(p, l, mp)| (p, l, Some(mp))).collect(), a, b)
        }
    };
    if let Some(k) = limit {
        films.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        films.truncate(k);
        films.sort();
    }
    if films.is_empty() {
        bail!("{}: no film to measure (films without a mask: {no_mask}, with an empty mask: {empty_mask})", data.display());
    }
    let opts = FaithfulnessOptions { samples, seed, steps, batch_size, tolerance };
    let t0 = std::time::Instant::now();
    let pb = crate::bar(films.len() as u64, "faithfulness");
    let mut scores = Vec::new();
    let mut grid: Vec<RgbImage> = Vec::new();
    let mut titles = Vec::new();
    for (path, label, mpath) in &films {
        let (s, tiles) = measure_film(&m, &tf, path, *label, mpath.as_deref(), &opts)
            .with_context(|| format!("measuring {}", path.display()))?;
        if grid.len() < 6 * 4 {
            grid.extend(tiles);
            titles.extend(s.tile_titles(&ds.classes));
        }
        // one line per film: on a terminal above the bar, otherwise as progress in the log
        if pb.is_hidden() {
            println!("{}", s.line(&ds.classes));
        } else {
            pb.println(s.line(&ds.classes));
        }
        scores.push(s);
        pb.inc(1);
    }
    pb.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let sum = summarize(&scores);
    let (gc_curves, lime_curves) = (&sum.gradcam_curves, &sum.lime_curves);
    let n = sum.n;
    let records: Vec<Film> = scores.into_iter().map(|s| Film::new(s, &data, &ds.classes)).collect();
    let summary = serde_json::json!({
        "n": n,
        "model": model, "data": data, "masks": masks,
        "films_without_mask": no_mask, "films_with_empty_mask": empty_mask,
        "samples": samples, "seed": seed, "steps": steps,
        "accuracy": sum.accuracy,
        "gradcam_pointing": sum.gradcam_pointing,
        "gradcam_pointing_strict": sum.gradcam_pointing_strict,
        "pointing_tolerance_px": tolerance,
        "lime_pointing": sum.lime_pointing,
        "gradcam_energy": sum.gradcam_energy,
        "lime_energy": sum.lime_energy,
        "mask_share": sum.mask_share,
        "gradcam_deletion_auc": gc_curves.as_ref().map(|c| c.deletion_auc),
        "gradcam_insertion_auc": gc_curves.as_ref().map(|c| c.insertion_auc),
        "lime_deletion_auc": lime_curves.as_ref().map(|c| c.deletion_auc),
        "lime_insertion_auc": lime_curves.as_ref().map(|c| c.insertion_auc),
        "gradcam_mean_curves": gc_curves, "lime_mean_curves": lime_curves,
        "seconds": seconds, "seconds_per_film": seconds / n as f64,
        "films": records,
    });
    covid_cxr::imageio::write_atomic(&json, &serde_json::to_vec_pretty(&summary)?, true)?;
    let stem = json.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "faithfulness".into());
    let dir = json.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    covid_cxr::plot::image_grid_rgb(&grid, &titles, 4)?.save(dir.join(format!("{stem}_grid.png")))?;
    if let Some(fig) = sum.curves_figure()? {
        fig.save(dir.join(format!("{stem}_curves.png")))?;
    }
    println!("{sum} ({seconds:.0}s)");
    eprintln!("written {} and figures {stem}_grid.png, {stem}_curves.png beside it", json.display());
    Ok(())
}
