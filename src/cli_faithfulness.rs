//! `covid-cxr faithfulness`: how well Grad-CAM and LIME point at the evidence (pointing game and
//! energy inside ground-truth masks) and deletion/insertion curves, over a folder of films.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use covid_cxr::explain::faithfulness::{curves_figure, mask_view, mean_curves, score_map, Curves, MapScores};
use covid_cxr::explain::gradcam::{cam_maps, grad_cam_classes};
use covid_cxr::explain::model_glue::{lime_classifier, model_view, to_batch};
use covid_cxr::explain::{Colormap, LimeConfig, LimeImageExplainer};
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
        /// Output JSON; figures are written beside it (<stem>_grid.png, <stem>_curves.png).
        #[arg(long)]
        json: PathBuf,
    },
}

/// One film's record.
#[derive(Serialize)]
struct Film {
    image: PathBuf,
    class: String,
    probability: f64,
    predicted: String,
    mask_share: Option<f64>,
    gradcam: MapScores,
    lime: MapScores,
    lime_segments: usize,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Runs the subcommand.
pub fn run(c: FaithfulnessCmd) -> Result<()> {
    let FaithfulnessCmd::Faithfulness { model, data, masks, samples, seed, limit, steps, batch_size, json } = c;
    if samples < 2 {
        bail!("--samples must be at least 2 (LIME needs perturbed samples)");
    }
    if let Some(m) = &masks {
        if !m.is_dir() {
            bail!("{}: the masks folder does not exist", m.display());
        }
    }
    if let Some(dir) = json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (m, manifest) =
        covid_cxr::checkpoint::load(&model).with_context(|| format!("loading the run {}", model.display()))?;
    let tf = manifest.preprocessing.clone();
    let ds = covid_cxr::data::ImageFolder::open(&data, tf.clone())
        .with_context(|| format!("opening {}", data.display()))?;
    if ds.classes != manifest.classes {
        bail!("{}: classes {:?} differ from the model's {:?}", data.display(), ds.classes, manifest.classes);
    }
    // the films to measure: with masks, those whose mask is non-empty
    let mut films: Vec<(PathBuf, usize, Option<PathBuf>)> = Vec::new();
    let (mut no_mask, mut empty_mask) = (0usize, 0usize);
    for (p, l) in &ds.samples {
        let class = &ds.classes[*l as usize];
        match &masks {
            None => films.push((p.clone(), *l as usize, None)),
            Some(md) => {
                let mp = md.join(class).join(p.file_name().context("file name")?);
                if !mp.is_file() {
                    no_mask += 1;
                    continue;
                }
                let mask = covid_cxr::imageio::open_image(&mp)?.to_luma8();
                if mask.pixels().any(|v| v[0] >= 128) {
                    films.push((p.clone(), *l as usize, Some(mp)));
                } else {
                    empty_mask += 1;
                }
            }
        }
    }
    if let Some(k) = limit {
        films.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        films.truncate(k);
        films.sort();
    }
    if films.is_empty() {
        bail!("{}: no film to measure (films without a mask: {no_mask}, with an empty mask: {empty_mask})", data.display());
    }
    let t0 = std::time::Instant::now();
    let pb = crate::bar(films.len() as u64, "faithfulness");
    let mut records = Vec::new();
    let mut grid: Vec<RgbImage> = Vec::new();
    let mut titles = Vec::new();
    for (path, label, mpath) in &films {
        let img = covid_cxr::imageio::open_image(path)?;
        let view = model_view(&img, &tf)?;
        let x = to_batch(std::slice::from_ref(&view), &tf)?;
        let probs: Vec<f64> =
            Vec::<f64>::try_from(tch::no_grad(|| m.predict_proba(&x)).to_kind(tch::Kind::Double).get(0))?;
        let predicted = (0..probs.len()).max_by(|a, b| probs[*a].total_cmp(&probs[*b])).unwrap_or(0);
        let mask = match mpath {
            Some(mp) => Some(mask_view(&covid_cxr::imageio::open_image(mp)?, &tf)?),
            None => None,
        };
        let cam = cam_maps(&grad_cam_classes(&m, &x, &[*label as i64])?)?.remove(0);
        let cam64 = cam.mapv(f64::from);
        let cfg = LimeConfig {
            top_labels: None,
            labels: vec![*label],
            hide_color: Some([0; 3]),
            num_samples: samples,
            batch_size,
            seed,
            ..LimeConfig::default()
        };
        let mut classify = lime_classifier(&m, &tf);
        let exp = LimeImageExplainer::default()
            .explain_instance(&view, &mut classify, &cfg)
            .with_context(|| format!("LIME on {}", path.display()))?;
        let heat = exp.heatmap(*label)?;
        let mv = mask.as_ref().map(|a| a.view());
        let gradcam = score_map(&view, cam64.view(), mv, *label, steps, &mut classify)?;
        let mut lime = score_map(&view, heat.view(), mv, *label, steps, &mut classify)?;
        if let Some(mk) = &mask {
            lime.pointing = Some(covid_cxr::explain::faithfulness::lime_pointing(exp.label(*label)?, &exp.segments, mk.view())?);
        }
        if grid.len() < 6 * 4 {
            let mask_img = match &mask {
                Some(mk) => RgbImage::from_fn(view.width(), view.height(), |c, r| {
                    let p = view.get_pixel(c, r).0;
                    if mk[[r as usize, c as usize]] {
                        image::Rgb([p[0] / 2 + 127, p[1] / 2, p[2] / 2])
                    } else {
                        image::Rgb(p)
                    }
                }),
                None => view.clone(),
            };
            let lim = heat.iter().fold(1e-12f64, |a, v| a.max(v.abs()));
            grid.push(view.clone());
            grid.push(mask_img);
            grid.push(covid_cxr::explain::overlay(&view, cam.view(), Colormap::Jet, 0.45)?);
            grid.push(covid_cxr::plot::heatmap_image(heat.view(), Colormap::RdBu, -lim, lim));
            let class = &ds.classes[*label];
            titles.push(format!("{class} (p {:.2})", probs[*label]));
            titles.push(if mask.is_some() { "mask (red)".into() } else { "no mask".into() });
            titles.push(format!("Grad-CAM{}", point_mark(gradcam.pointing)));
            titles.push(format!("LIME{}", point_mark(lime.pointing)));
        }
        records.push(Film {
            image: path.clone(),
            class: ds.classes[*label].clone(),
            probability: probs[*label],
            predicted: ds.classes[predicted].clone(),
            mask_share: mask.as_ref().map(|mk| mk.iter().filter(|&&v| v).count() as f64 / mk.len() as f64),
            gradcam,
            lime,
            lime_segments: exp.segments.n_segments,
        });
        pb.inc(1);
    }
    pb.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let share = |f: &dyn Fn(&Film) -> Option<bool>| mean(records.iter().filter_map(f).map(|b| b as u8 as f64));
    let energy = |f: &dyn Fn(&Film) -> Option<f64>| mean(records.iter().filter_map(f));
    let curves = |f: &dyn Fn(&Film) -> Option<&Curves>| mean_curves(&records.iter().filter_map(f).collect::<Vec<_>>());
    let gc_curves = curves(&|r| r.gradcam.curves.as_ref());
    let lime_curves = curves(&|r| r.lime.curves.as_ref());
    let n = records.len();
    let summary = serde_json::json!({
        "n": n,
        "model": model, "data": data, "masks": masks,
        "films_without_mask": no_mask, "films_with_empty_mask": empty_mask,
        "samples": samples, "seed": seed, "steps": steps,
        "accuracy": mean(records.iter().map(|r| (r.predicted == r.class) as u8 as f64)),
        "gradcam_pointing": share(&|r| r.gradcam.pointing),
        "lime_pointing": share(&|r| r.lime.pointing),
        "gradcam_energy": energy(&|r| r.gradcam.energy),
        "lime_energy": energy(&|r| r.lime.energy),
        "mask_share": energy(&|r| r.mask_share),
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
    let named: Vec<(String, Curves)> = [("Grad-CAM", gc_curves), ("LIME", lime_curves)]
        .into_iter()
        .filter_map(|(k, c)| c.map(|c| (k.to_string(), c)))
        .collect();
    if !named.is_empty() {
        curves_figure(&named)?.save(dir.join(format!("{stem}_curves.png")))?;
    }
    let f = |k: &str| summary[k].as_f64().map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
    println!(
        "films {n}: Grad-CAM pointing {} energy {} | LIME pointing {} energy {} | mask share {} | deletion AUC Grad-CAM {} LIME {} | insertion AUC Grad-CAM {} LIME {} ({seconds:.0}s)",
        f("gradcam_pointing"),
        f("gradcam_energy"),
        f("lime_pointing"),
        f("lime_energy"),
        f("mask_share"),
        f("gradcam_deletion_auc"),
        f("lime_deletion_auc"),
        f("gradcam_insertion_auc"),
        f("lime_insertion_auc"),
    );
    eprintln!("written {} and figures {stem}_grid.png, {stem}_curves.png beside it", json.display());
    Ok(())
}

fn point_mark(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => ": hit",
        Some(false) => ": miss",
        None => "",
    }
}
