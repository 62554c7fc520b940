//! The shortcut lab: a model that reads a hospital's burned-in label instead of the lungs, shown
//! on synthetic films, and a remedy.
//!
//! Real COVID-19 collections mix hospitals: one class's films come from a place that burns
//! "PORTABLE" (or its name, or the patient's age) into a corner, and a model learns the word.
//! [`run_lab`] reproduces this in minutes:
//!
//! 1. synthetic training and validation films with a word burned into (a share of) one class's
//!    films only ([`crate::synth::Shortcut`]), and two test sets of the *same* films: one without
//!    the word (`clean`), one with the word moved onto every film of the other classes (`moved`);
//! 2. the notebook's recipe (frozen ImageNet InceptionV3, cached features, new head), evaluated
//!    on validation (the word where it was in training), `clean` and `moved`: the accuracy
//!    collapses on `moved`;
//! 3. Grad-CAM on films that carry the word: the share of the map's mass on the word;
//! 4. the remedy, the same recipe with burned-in markers masked before the model sees the film
//!    ([`crate::markers`], [`crate::transforms::Compose::with_marker_masking`]): the accuracy on
//!    `moved` recovers.

use crate::checkpoint::{Manifest, WeightsRef};
use crate::data::ImageFolder;
use crate::error::{Error, Result};
use crate::evaluate::{evaluate, Evaluation};
use crate::explain::gradcam::{cam_maps, grad_cam_classes};
use crate::explain::model_glue::{model_view, to_batch};
use crate::model::{TransferConfig, TransferModel};
use crate::synth::{generate, synth_film, Shortcut, SynthConfig, CLASSES};
use crate::train::{train_model_with, Progress, TrainConfig};
use crate::transforms::Compose;
use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Settings of the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabConfig {
    /// Training films per class.
    pub per_class: usize,
    /// Validation films per class (same distribution as training, word included).
    pub val_per_class: usize,
    /// Test films per class (the clean and moved sets are the same films).
    pub test_per_class: usize,
    /// Seed of the films and of training.
    pub seed: u64,
    /// The burned-in word.
    pub text: String,
    /// The class whose films carry it in training.
    pub class: String,
    /// The share of that class's training films that carry it.
    pub share: f64,
    /// Lesion density scale ([`SynthConfig::evidence`]); subtle evidence makes the word the
    /// easier cue, as on real films.
    pub evidence: f32,
    /// Image size of the model.
    pub size: u32,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            per_class: 40,
            val_per_class: 12,
            test_per_class: 20,
            seed: 1,
            text: "PORTABLE".into(),
            class: "normal".into(),
            share: 1.0,
            evidence: 0.5,
            size: 299,
        }
    }
}

/// Accuracy (and the evaluation) of one model on the lab's three sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// Validation: the word where it was in training.
    pub val_accuracy: f64,
    /// The test films without the word.
    pub clean_accuracy: f64,
    /// The same films with the word on every film of the other classes.
    pub moved_accuracy: f64,
    /// Mean share of Grad-CAM's mass (for the predicted class) inside the word's box, over
    /// films of the shortcut class that carry it.
    pub gradcam_on_word: f64,
    /// The word's box area as a share of the film (what a map blind to the word would score).
    pub word_area: f64,
    /// Full evaluations: val, clean, moved.
    pub evaluations: Vec<Evaluation>,
}

/// The lab's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabReport {
    /// Settings.
    pub config: LabConfig,
    /// The notebook's recipe on the films as they are.
    pub baseline: ArmReport,
    /// The same recipe with burned-in markers masked.
    pub remedy: ArmReport,
    /// Share of the `moved` test films in which marker masking found something.
    pub moved_films_masked: f64,
    /// Seconds in all.
    pub seconds: f64,
}

impl std::fmt::Display for LabReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "shortcut lab: {:?} on {:.0}% of the {} films in training (evidence {}), synthetic films",
            self.config.text,
            100.0 * self.config.share,
            self.config.class,
            self.config.evidence
        )?;
        writeln!(f, "{:<28} {:>8} {:>8} {:>8} {:>14}", "model", "val", "clean", "moved", "Grad-CAM on word")?;
        for (name, a) in [("notebook recipe", &self.baseline), ("+ marker masking", &self.remedy)] {
            writeln!(
                f,
                "{:<28} {:>8.3} {:>8.3} {:>8.3} {:>9.3} (area {:.3})",
                name, a.val_accuracy, a.clean_accuracy, a.moved_accuracy, a.gradcam_on_word, a.word_area
            )?;
        }
        write!(f, "marker masking found a marker on {:.0}% of the moved test films", 100.0 * self.moved_films_masked)
    }
}

/// Writes the lab's films under `dir`: `train/`, `val/` (with the word), `clean/` and `moved/`.
pub fn write_films(dir: &Path, cfg: &LabConfig) -> Result<()> {
    if !CLASSES.contains(&cfg.class.as_str()) {
        return Err(Error::invalid(format!("shortcut class {:?} is not one of {CLASSES:?}", cfg.class)));
    }
    let base = SynthConfig { evidence: cfg.evidence, ..SynthConfig::default() };
    let word = |classes: Vec<String>, share: f64| Some(Shortcut { text: cfg.text.clone(), classes, share });
    let others: Vec<String> = CLASSES.iter().filter(|c| **c != cfg.class).map(|c| c.to_string()).collect();
    let sets = [
        ("train", cfg.per_class, cfg.seed, word(vec![cfg.class.clone()], cfg.share)),
        ("val", cfg.val_per_class, cfg.seed + 1, word(vec![cfg.class.clone()], cfg.share)),
        ("clean", cfg.test_per_class, cfg.seed + 2, None),
        ("moved", cfg.test_per_class, cfg.seed + 2, word(others, 1.0)),
    ];
    for (name, n, seed, shortcut) in sets {
        generate(&dir.join(name), &SynthConfig { per_class: n, seed, shortcut, ..base.clone() })?;
    }
    Ok(())
}

/// Trains one arm of the lab on `films/train` (validating on `films/val`) with `val_tf` as
/// preprocessing (and the notebook's training transform, with marker masking if `val_tf` has it).
pub fn train_arm(
    films: &Path,
    val_tf: &Compose,
    cfg: &LabConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<(TransferModel, Manifest)> {
    let mut train_tf = Compose::notebook_train(cfg.size);
    if val_tf.masks_markers() {
        train_tf = train_tf.with_marker_masking();
    }
    let train = ImageFolder::open(films.join("train"), train_tf.clone())?;
    let val = ImageFolder::open(films.join("val"), val_tf.clone())?;
    let wpath = crate::weights::ensure_pretrained()?;
    let sha = crate::weights::sha256_file(&wpath)?;
    tch::manual_seed(cfg.seed as i64);
    let mut model = TransferModel::pretrained(&TransferConfig::default())?;
    let tcfg = TrainConfig { seed: cfg.seed, weights_sha256: Some(sha.clone()), ..TrainConfig::default() };
    let history = train_model_with(&mut model, &train, &val, &tcfg, progress)?;
    let mut m =
        Manifest::new(&model, train.classes.clone(), val_tf.clone(), WeightsRef { path: wpath, sha256: sha }, cfg.seed);
    m.train = Some(tcfg);
    m.train_transform = Some(train_tf);
    m.val_report = history.epochs.last().map(|e| e.val.report.clone());
    m.history = Some(history);
    Ok((model, m))
}

/// Mean share of Grad-CAM's mass inside the word's box over `n` in-memory films of `cfg.class`
/// that carry the word, and the box's mean area share. Returns also the films and maps (for a
/// figure).
pub fn gradcam_on_word(
    model: &TransferModel,
    preprocessing: &Compose,
    cfg: &LabConfig,
    n: usize,
) -> Result<(f64, f64, Vec<(RgbImage, ndarray::Array2<f32>)>)> {
    let base = SynthConfig { evidence: cfg.evidence, ..SynthConfig::default() };
    let (mut energy, mut area) = (0.0, 0.0);
    let mut shown = Vec::new();
    for k in 0..n.max(1) {
        let film = synth_film(&cfg.class, cfg.seed.wrapping_mul(1000) + 77 + k as u64, &base, Some(&cfg.text));
        let [bx, by, bw, bh] = film.shortcut_box.unwrap_or([0, 0, 0, 0]);
        let (fw, fh) = film.image.dimensions();
        let view = model_view(&DynamicImage::ImageLuma8(film.image), preprocessing)?;
        let x = to_batch(std::slice::from_ref(&view), preprocessing)?;
        let pred = tch::no_grad(|| model.predict_proba(&x)).argmax(1, false).int64_value(&[0]);
        let map = cam_maps(&grad_cam_classes(model, &x, &[pred])?)?.remove(0);
        let (vw, vh) = view.dimensions();
        let (sx, sy) = (vw as f64 / fw as f64, vh as f64 / fh as f64);
        // the box in the model's view, a pixel of margin around it
        let (x0, y0) = (((bx as f64 * sx).floor() as usize).saturating_sub(1), ((by as f64 * sy).floor() as usize).saturating_sub(1));
        let (x1, y1) = (
            (((bx + bw) as f64 * sx).ceil() as usize + 1).min(vw as usize),
            (((by + bh) as f64 * sy).ceil() as usize + 1).min(vh as usize),
        );
        let mask = ndarray::Array2::from_shape_fn(map.dim(), |(r, c)| r >= y0 && r < y1 && c >= x0 && c < x1);
        energy += crate::explain::faithfulness::energy_in_mask(map.mapv(f64::from).view(), mask.view());
        area += mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64;
        if shown.len() < 4 {
            shown.push((view, map));
        }
    }
    let n = n.max(1) as f64;
    Ok((energy / n, area / n, shown))
}

/// Runs the whole lab into `out` (films, two run folders, `shortcut_lab.json`, figures);
/// `say` receives one line per stage and `progress` the training progress.
pub fn run_lab(
    out: &Path,
    cfg: &LabConfig,
    say: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut(Progress),
) -> Result<LabReport> {
    let t0 = std::time::Instant::now();
    let films = out.join("films");
    say("writing the films: train/val with the word, clean and moved test sets");
    write_films(&films, cfg)?;
    let val_tf = Compose::notebook_val(cfg.size);
    let mut arms = Vec::new();
    let mut moved_masked = 0.0;
    for (name, tf) in [("baseline", val_tf.clone()), ("remedy", val_tf.clone().with_marker_masking())] {
        say(&format!("training the {name} model (notebook recipe{})", if tf.masks_markers() { " + marker masking" } else { "" }));
        let (model, manifest) = train_arm(&films, &tf, cfg, progress)?;
        crate::checkpoint::save(&out.join("runs").join(name), &model, &manifest)?;
        say(&format!("evaluating the {name} model on val, clean and moved films"));
        let mut evals = Vec::new();
        for set in ["val", "clean", "moved"] {
            evals.push(evaluate(&model, &ImageFolder::open(films.join(set), tf.clone())?)?);
        }
        let (energy, area, shown) = gradcam_on_word(&model, &tf, cfg, 8)?;
        let imgs: Vec<RgbImage> = shown
            .iter()
            .flat_map(|(v, m)| {
                let o = crate::explain::overlay(v, m.view(), crate::explain::Colormap::Jet, 0.45);
                [Ok(v.clone()), o]
            })
            .collect::<Result<_>>()?;
        let titles: Vec<String> =
            (0..imgs.len()).map(|i| if i % 2 == 0 { format!("{} film", cfg.class) } else { "Grad-CAM".into() }).collect();
        crate::plot::image_grid_rgb(&imgs, &titles, 4)?.save(out.join(format!("gradcam_{name}.png")))?;
        arms.push(ArmReport {
            val_accuracy: evals[0].accuracy,
            clean_accuracy: evals[1].accuracy,
            moved_accuracy: evals[2].accuracy,
            gradcam_on_word: energy,
            word_area: area,
            evaluations: evals,
        });
        if tf.masks_markers() {
            let moved = ImageFolder::open(films.join("moved"), tf.clone())?;
            let found = moved
                .samples
                .iter()
                .filter(|(p, _)| {
                    crate::imageio::open_image(p)
                        .map(|i| crate::markers::mask_markers(&i.to_luma8(), &Default::default()).1.components > 0)
                        .unwrap_or(false)
                })
                .count();
            moved_masked = found as f64 / moved.len().max(1) as f64;
        }
    }
    let remedy = arms.pop().expect("two arms");
    let baseline = arms.pop().expect("two arms");
    let report = LabReport {
        config: cfg.clone(),
        baseline,
        remedy,
        moved_films_masked: moved_masked,
        seconds: t0.elapsed().as_secs_f64(),
    };
    accuracy_figure(&report)?.save(out.join("accuracy.png"))?;
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::invalid(e.to_string()))?;
    crate::imageio::write_atomic(&out.join("shortcut_lab.json"), &json, false)?;
    Ok(report)
}

/// Grouped bars: accuracy of both models on val, clean and moved films.
pub fn accuracy_figure(r: &LabReport) -> Result<crate::plot::Figure> {
    use crate::plot::plot_err;
    let groups = ["val (word as in training)", "clean (no word)", "moved (word on other classes)"];
    let arms = [("notebook recipe", &r.baseline, RGBColor(214, 39, 40)), ("+ marker masking", &r.remedy, RGBColor(31, 119, 180))];
    use plotters::style::RGBColor;
    Ok(crate::figure!(820, 460, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Shortcut lab: {:?} on the {} films", r.config.text, r.config.class), ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..3f64, 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("accuracy")
            .draw()
            .map_err(plot_err)?;
        for (g, name) in groups.iter().enumerate() {
            chart
                .draw_series(std::iter::once(Text::new(name.to_string(), (g as f64 + 0.12, 0.04), ("sans-serif", 14))))
                .map_err(plot_err)?;
        }
        for (k, (name, a, col)) in arms.iter().enumerate() {
            let vals = [a.val_accuracy, a.clean_accuracy, a.moved_accuracy];
            let col = *col;
            chart
                .draw_series(vals.iter().enumerate().map(move |(g, &v)| {
                    let x0 = g as f64 + 0.15 + 0.35 * k as f64;
                    Rectangle::new([(x0, 0.08), (x0 + 0.32, v.max(0.08))], col.filled())
                }))
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
            chart
                .draw_series(vals.iter().enumerate().map(move |(g, &v)| {
                    Text::new(format!("{v:.2}"), (g as f64 + 0.2 + 0.35 * k as f64, (v + 0.03).min(0.97)), ("sans-serif", 14))
                }))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn films_carry_the_word_where_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LabConfig { per_class: 3, val_per_class: 1, test_per_class: 2, ..LabConfig::default() };
        write_films(dir.path(), &cfg).unwrap();
        let count = |set: &str, class: &str| crate::imageio::list_images(&dir.path().join(set).join(class)).unwrap().len();
        assert_eq!(count("train", "normal"), 3);
        assert_eq!(count("moved", "covid"), 2);
        // clean and moved: the same films, the word only on the other classes in moved
        let a = image::open(dir.path().join("clean/normal/synth_normal_00000.png")).unwrap();
        let b = image::open(dir.path().join("moved/normal/synth_normal_00000.png")).unwrap();
        assert_eq!(a, b);
        let a = image::open(dir.path().join("clean/covid/synth_covid_00001.png")).unwrap();
        let b = image::open(dir.path().join("moved/covid/synth_covid_00001.png")).unwrap();
        assert_ne!(a, b);
        assert!(write_films(dir.path(), &LabConfig { class: "lungs".into(), ..cfg }).is_err());
    }
}
