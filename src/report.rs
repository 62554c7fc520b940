//! Figures of the model's results: the plotters figures of [`crate::plot`] fed from a training
//! [`History`] and an [`Evaluation`], and the files a run folder gets.

use crate::error::Result;
use crate::evaluate::Evaluation;
use crate::plot::{self, Figure};
use crate::train::History;
use std::path::{Path, PathBuf};

/// The notebook's `plot_accuracy_loss`: accuracy and loss of train and val per epoch.
pub fn accuracy_loss(h: &History) -> Result<Figure> {
    let f = |g: fn(&crate::train::EpochStats) -> f64| h.epochs.iter().map(g).collect::<Vec<f64>>();
    plot::accuracy_loss(&f(|e| e.train.accuracy), &f(|e| e.val.accuracy), &f(|e| e.train.loss), &f(|e| e.val.loss))
}

/// The confusion matrix with counts (rows true, columns predicted).
pub fn confusion_matrix(e: &Evaluation) -> Result<Figure> {
    let cm: Vec<Vec<usize>> = e.confusion_matrix.iter().map(|r| r.iter().map(|&v| v as usize).collect()).collect();
    plot::confusion_matrix(&cm, &e.classes)
}

/// One-vs-rest ROC curves with their AUC in the legend.
pub fn roc_curves(e: &Evaluation) -> Result<Figure> {
    let curves: Vec<plot::RocCurve> = e
        .roc
        .iter()
        .zip(&e.per_class)
        .filter(|(_, c)| c.auc.is_some())
        .map(|(r, c)| {
            (r.class.clone(), r.fpr.iter().cloned().zip(r.tpr.iter().cloned()).collect(), c.auc.unwrap_or(f64::NAN))
        })
        .collect();
    plot::roc_curves(&curves)
}

/// The reliability diagram, with the expected calibration error.
pub fn reliability_diagram(e: &Evaluation) -> Result<Figure> {
    let bins: Vec<(f64, f64, usize)> =
        e.reliability.iter().map(|b| (b.confidence, b.accuracy, b.count as usize)).collect();
    plot::reliability_diagram(&bins, e.ece)
}

/// Coverage and accuracy of the model's own decisions for each deferral threshold.
pub fn coverage_accuracy(e: &Evaluation) -> Result<Figure> {
    let rows: Vec<(f64, f64, f64)> =
        e.deferral.iter().filter_map(|r| r.accuracy.map(|a| (r.threshold, r.coverage, a))).collect();
    plot::coverage_accuracy(&rows)
}

/// Saves the evaluation figures into `dir` as `<prefix>confusion.png`, `<prefix>roc.png`,
/// `<prefix>reliability.png` and `<prefix>coverage.png`; returns their paths.
pub fn save_evaluation_figures(e: &Evaluation, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let figs = [
        ("confusion", confusion_matrix(e)?),
        ("roc", roc_curves(e)?),
        ("reliability", reliability_diagram(e)?),
        ("coverage", coverage_accuracy(e)?),
    ];
    let mut out = Vec::new();
    for (name, fig) in figs {
        let p = dir.join(format!("{prefix}{name}.png"));
        fig.save(&p)?;
        out.push(p);
    }
    Ok(out)
}
