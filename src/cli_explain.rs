//! `covid-cxr explain`: LIME and Grad-CAM figures and a JSON of the figures' numbers per image.

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use covid_cxr::explain::gradcam::{cam_maps, grad_cam_classes};
use covid_cxr::explain::model_glue::{lime_classifier, model_view, to_batch};
use covid_cxr::explain::{AdaptiveSampling, LimeConfig, LimeImageExplainer};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `--hide-color`: what switched-off superpixels become in LIME's perturbed images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HideColor {
    /// Each superpixel's own mean colour (lime's default, `hide_color=None`).
    Mean,
    /// A gray level 0-255 on all three channels (the notebook passes 0).
    Gray(u8),
}

impl HideColor {
    /// The library's `LimeConfig::hide_color`.
    pub fn rgb(self) -> Option<[u8; 3]> {
        match self {
            HideColor::Mean => None,
            HideColor::Gray(g) => Some([g; 3]),
        }
    }
}

impl FromStr for HideColor {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("mean") {
            return Ok(HideColor::Mean);
        }
        s.parse::<u8>().map(HideColor::Gray).map_err(|_| format!("{s:?}: expected `mean` or a gray level 0-255"))
    }
}

/// A `.OUT.partial` folder this process created. Dropped unfinished (an error, a panic), it is removed
/// with what this process wrote in it; [`Partial::finish`] renames it to OUT. An existing one (an
/// interrupted run's, or someone's folder) is refused, never deleted.
pub struct Partial {
    path: PathBuf,
    done: bool,
}

impl Partial {
    /// Creates `.NAME.partial` next to `out` (and `out`'s parent folders).
    pub fn create(out: &Path) -> Result<Self> {
        let name = out.file_name().context("--out needs a name")?.to_string_lossy().into_owned();
        let path = out.with_file_name(format!(".{name}.partial"));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::fs::create_dir(&path) {
            Ok(()) => Ok(Partial { path, done: false }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{}: exists (an interrupted run's unfinished output?); nothing is deleted: remove it or choose another --out",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the finished folder to `out` (which may exist only as an empty folder).
    pub fn finish(mut self, out: &Path) -> Result<()> {
        if out.exists() {
            std::fs::remove_dir(out).with_context(|| format!("replacing the empty folder {}", out.display()))?;
        }
        std::fs::rename(&self.path, out)
            .with_context(|| format!("renaming {} to {}", self.path.display(), out.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Which explanation to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// LIME (superpixels, 1000 perturbed samples by default).
    Lime,
    /// Grad-CAM on the last mixed block (Mixed_7c).
    Gradcam,
    /// Both, and a side-by-side figure.
    Both,
}

/// The explanation subcommand.
#[derive(Subcommand)]
pub enum ExplainCmd {
    /// Explain predictions with LIME and/or Grad-CAM: figures (PNG) and a JSON per image.
    Explain {
        /// A run folder written by `covid-cxr train`.
        #[arg(long)]
        model: PathBuf,
        /// Images to explain.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// lime, gradcam or both.
        #[arg(long, value_enum, default_value_t = Method::Both)]
        method: Method,
        /// LIME samples (the notebook's 1000).
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// LIME: images per model call (8 measured fastest on a 2-core CPU: see the README).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// LIME: explain the k most probable classes (the notebook's 3).
        #[arg(long, default_value_t = 3)]
        top_labels: usize,
        /// Explain this class only (by name) instead of the top ones.
        #[arg(long)]
        class: Option<String>,
        /// LIME: colour of switched-off superpixels: a gray level 0-255 (default 0, the notebook's
        /// `hide_color=0`) or `mean` for each superpixel's own mean colour (lime's default, `hide_color=None`).
        #[arg(long, default_value = "0", value_name = "mean|0-255")]
        hide_color: HideColor,
        /// Seed of LIME's segmentation and sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder (must be absent or empty); written as OUT.partial, renamed when complete.
        #[arg(long)]
        out: PathBuf,
        /// Mask burned-in markers even if the run was trained without it.
        #[arg(long)]
        mask_markers: bool,
        /// LIME: draw samples in rounds of 50 and stop early (at most --samples). `unchanged` (the
        /// value when none is given): when the top-5 superpixels of every explained class are the
        /// same for 3 rounds. `gap`: S-LIME's test, when the top 5 stand apart from the other
        /// superpixels by a one-sided z-test at 5%. Off by default: the notebook's fixed 1000.
        #[arg(long, value_name = "RULE", num_args = 0..=1, default_missing_value = "unchanged")]
        adaptive: Option<AdaptiveRule>,
        #[command(flatten)]
        hw: crate::cli_hw::HwArgs,
    },
}

/// The adaptive sampler's stopping rules on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdaptiveRule {
    /// The top-5 set unchanged for 3 rounds.
    Unchanged,
    /// S-LIME's z-test (1.645) on the top 5 against the rest.
    Gap,
}

impl AdaptiveRule {
    fn sampling(self) -> AdaptiveSampling {
        match self {
            AdaptiveRule::Unchanged => AdaptiveSampling::default(),
            AdaptiveRule::Gap => AdaptiveSampling::gap(1.645),
        }
    }
}

/// Runs the subcommand.
pub fn run(c: ExplainCmd) -> Result<()> {
    let ExplainCmd::Explain {
        model,
        images,
        method,
        samples,
        batch_size,
        top_labels,
        class,
        hide_color,
        seed,
        out,
        mask_markers,
        adaptive,
        hw,
    } = c;
    if out.exists() && std::fs::read_dir(&out).with_context(|| format!("reading {}", out.display()))?.next().is_some() {
        bail!("{}: output folder is not empty (nothing is overwritten)", out.display());
    }
    let (mut m, mut manifest) =
        covid_cxr::checkpoint::load(&model).with_context(|| format!("loading the run {}", model.display()))?;
    manifest.preprocessing = crate::cli_model::inference_preprocessing(&manifest, mask_markers);
    hw.apply(&mut m)?;
    let classes = manifest.classes.clone();
    let only: Option<usize> = match &class {
        Some(name) => Some(
            classes
                .iter()
                .position(|c| c == name)
                .with_context(|| format!("class {name:?} is not one of the model's classes {classes:?}"))?,
        ),
        None => None,
    };
    let guard = Partial::create(&out)?;
    let partial = guard.path().to_path_buf();
    let pb = crate::bar(images.len() as u64, "explain");
    for path in &images {
        let img = covid_cxr::imageio::open_image(path)?;
        let view = model_view(&img, &manifest.preprocessing)?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
        let x = to_batch(std::slice::from_ref(&view), &manifest.preprocessing)?;
        let probs: Vec<f64> =
            Vec::<f64>::try_from(tch::no_grad(|| m.predict_proba(&x)).to_kind(tch::Kind::Double).get(0))?;
        // lime's ranking (ties: the higher class index first), as the library's `choose_labels`.
        let order = covid_cxr::explain::lime::top_labels(&probs, classes.len());
        let targets: Vec<usize> = match only {
            Some(c) => vec![c],
            None => order.iter().take(top_labels.max(1)).cloned().collect(),
        };
        let mut record = serde_json::json!({
            "image": path, "classes": classes,
            "probabilities": probs, "predicted": classes[order[0]],
        });
        let mut exp = None;
        if method != Method::Gradcam {
            let cfg = LimeConfig {
                top_labels: None,
                labels: targets.clone(),
                hide_color: hide_color.rgb(),
                num_samples: samples,
                batch_size,
                seed,
                adaptive: adaptive.map(AdaptiveRule::sampling),
                ..LimeConfig::default()
            };
            let (e, sampling) = LimeImageExplainer::default()
                .explain_instance_report(&view, lime_classifier(&m, &manifest.preprocessing), &cfg)
                .with_context(|| format!("LIME on {}", path.display()))?;
            let mut per_class = serde_json::Map::new();
            for &t in &targets {
                let le = e.label(t)?;
                per_class.insert(
                    classes[t].clone(),
                    serde_json::json!({
                        "intercept": le.intercept, "score": le.score, "local_pred": le.local_pred,
                        "weights": le.weights.iter().map(|(s, w)| serde_json::json!([s, w])).collect::<Vec<_>>(),
                    }),
                );
                covid_cxr::plot::lime_boundaries(&e, t, &classes[t], 3, 5)?
                    .save(partial.join(format!("{stem}_lime_{}.png", classes[t])))?;
                covid_cxr::plot::lime_heatmap(&e, t, &classes[t])?
                    .save(partial.join(format!("{stem}_lime_heatmap_{}.png", classes[t])))?;
            }
            record["lime"] = serde_json::json!({
                "num_samples": samples, "seed": seed, "n_segments": e.segments.n_segments, "per_class": per_class,
                "adaptive": cfg.adaptive, "sampling": sampling,
            });
            exp = Some(e);
        }
        let mut cams = Vec::new();
        if method != Method::Lime {
            let mut stats = serde_json::Map::new();
            let classes_i64: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
            let maps = cam_maps(&grad_cam_classes(&m, &x, &classes_i64)?)?;
            for (&t, map) in targets.iter().zip(maps) {
                let n = map.len() as f64;
                let mean = map.iter().map(|&v| v as f64).sum::<f64>() / n;
                let (mut best, mut at) = (f32::MIN, (0usize, 0usize));
                for ((r, c), &v) in map.indexed_iter() {
                    if v > best {
                        best = v;
                        at = (r, c);
                    }
                }
                let above = map.iter().filter(|&&v| v >= 0.5).count() as f64 / n;
                stats.insert(
                    classes[t].clone(),
                    serde_json::json!({
                        "mean": mean, "max": best, "argmax_row_col": [at.0, at.1], "fraction_at_least_0.5": above,
                        "height": map.nrows(), "width": map.ncols(),
                    }),
                );
                covid_cxr::plot::gradcam_overlay(
                    &view,
                    map.view(),
                    0.45,
                    &format!("Grad-CAM (Mixed_7c) for class '{}'", classes[t]),
                )?
                .save(partial.join(format!("{stem}_gradcam_{}.png", classes[t])))?;
                cams.push((classes[t].clone(), map));
            }
            record["gradcam"] = serde_json::Value::Object(stats);
        }
        if let (Method::Both, Some(e)) = (method, &exp) {
            covid_cxr::plot::explain_side_by_side(&view, e, &cams, &classes)?
                .save(partial.join(format!("{stem}_side_by_side.png")))?;
        }
        covid_cxr::imageio::write_atomic(
            &partial.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&record)?.as_bytes(),
            false,
        )?;
        pb.inc(1);
    }
    pb.finish();
    guard.finish(&out)?;
    eprintln!("explanations written to {}", out.display());
    Ok(())
}
