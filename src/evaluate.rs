//! Evaluation of a trained model on an [`ImageFolder`]: confusion matrix, per-class precision,
//! recall, F1, support, sensitivity, specificity, one-vs-rest ROC AUC (with the ROC points),
//! expected calibration error (15 bins, with the reliability-diagram bins) and the notebook's
//! "partial automation": below a confidence threshold a case is deferred to a human; coverage and
//! accuracy of the automated cases per threshold.
//!
//! Everything is computed from the probabilities by pure functions ([`evaluate_probs`]), which
//! the tests check by hand.

use crate::data::{DataLoader, ImageFolder};
use crate::error::{Error, Result};
use crate::metrics::{per_class_scores, ClassificationReport};
use crate::model::TransferModel;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Number of equal-width confidence bins of the ECE.
pub const ECE_BINS: usize = 15;

/// Per-class figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassEval {
    /// Class name.
    pub name: String,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// True samples.
    pub support: u64,
    /// Sensitivity = recall = tp / (tp + fn).
    pub sensitivity: f64,
    /// Specificity = tn / (tn + fp), one class against the rest.
    pub specificity: f64,
    /// One-vs-rest ROC AUC (`None` when the class has no positive or no negative sample).
    pub auc: Option<f64>,
}

/// A ROC curve (one class against the rest), sklearn's `roc_curve` points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocCurve {
    /// Class name.
    pub class: String,
    /// False-positive rates, from 0.
    pub fpr: Vec<f64>,
    /// True-positive rates, from 0.
    pub tpr: Vec<f64>,
    /// Score thresholds (the first is +infinity, written as `f64::MAX`).
    pub thresholds: Vec<f64>,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge (exclusive, except 0).
    pub lo: f64,
    /// Upper edge (inclusive).
    pub hi: f64,
    /// Samples whose confidence falls in the bin.
    pub count: u64,
    /// Mean confidence in the bin (0 when empty).
    pub confidence: f64,
    /// Accuracy in the bin (0 when empty).
    pub accuracy: f64,
}

/// Partial automation at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferralRow {
    /// Confidence threshold: the model decides when its top probability is >= this.
    pub threshold: f64,
    /// Fraction of cases the model decides.
    pub coverage: f64,
    /// Accuracy on those cases (`None` when there is none).
    pub accuracy: Option<f64>,
    /// Cases decided by the model.
    pub automated: u64,
    /// Cases deferred to a human.
    pub deferred: u64,
}

/// All evaluation figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Class names.
    pub classes: Vec<String>,
    /// Number of images.
    pub n: usize,
    /// Accuracy.
    pub accuracy: f64,
    /// Macro precision.
    pub macro_precision: f64,
    /// Macro recall.
    pub macro_recall: f64,
    /// Macro F1.
    pub macro_f1: f64,
    /// Confusion matrix, rows true, columns predicted, in `classes` order.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Per-class figures.
    pub per_class: Vec<ClassEval>,
    /// Macro average of the defined one-vs-rest AUCs.
    pub macro_auc: Option<f64>,
    /// ROC curves, one per class.
    pub roc: Vec<RocCurve>,
    /// Expected calibration error (15 equal-width bins of the top probability).
    pub ece: f64,
    /// Reliability-diagram bins.
    pub reliability: Vec<ReliabilityBin>,
    /// Coverage and accuracy for thresholds 0.00, 0.05, ..., 0.95.
    pub deferral: Vec<DeferralRow>,
    /// Bootstrap 95% interval of the accuracy, `[lo, hi]` (see [`Evaluation::bootstrap`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_ci: Option<[f64; 2]>,
    /// Bootstrap 95% interval of the macro-F1, `[lo, hi]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1_ci: Option<[f64; 2]>,
    /// How the intervals were drawn ([`crate::subgroups::bootstrap_ci`]: 1000 resamples, seed 0,
    /// percentile method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<crate::subgroups::BootstrapCi>,
    /// Figures per value of manifest columns: `subgroups[column][value]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subgroups: Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, crate::subgroups::SubgroupEval>>>,
    /// sklearn's classification report.
    pub report: ClassificationReport,
}

/// Probability rows, labels and paths, in dataset order.
pub type Predictions = (Vec<Vec<f32>>, Vec<i64>, Vec<PathBuf>);

/// Probabilities `n x C`, labels and paths of every image of `ds` (its transform as is).
pub fn predict_dataset(model: &TransferModel, ds: &ImageFolder, batch_size: usize) -> Result<Predictions> {
    let dl = DataLoader::new(ds, batch_size);
    let (mut probs, mut labels, mut paths) = (Vec::new(), Vec::new(), Vec::new());
    for b in dl.iter(0) {
        let b = b?;
        let p = model.predict_proba(&b.images);
        let rows: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&p)?;
        probs.extend(rows);
        labels.extend(Vec::<i64>::try_from(&b.labels)?);
        paths.extend(b.paths);
    }
    Ok((probs, labels, paths))
}

/// Evaluates `model` on `ds` (use the checkpoint's preprocessing as the dataset transform).
pub fn evaluate(model: &TransferModel, ds: &ImageFolder) -> Result<Evaluation> {
    if ds.is_empty() {
        return Err(Error::dataset(&ds.root, "no images to evaluate"));
    }
    let (probs, labels, _) = predict_dataset(model, ds, 16)?;
    evaluate_probs(&probs, &labels, &ds.classes)
}

fn argmax(p: &[f32]) -> (usize, f64) {
    let mut best = 0;
    for (i, &v) in p.iter().enumerate() {
        if v > p[best] {
            best = i;
        }
    }
    (best, p[best] as f64)
}

/// All figures from probabilities (`n` rows of `C`) and true labels.
pub fn evaluate_probs(probs: &[Vec<f32>], labels: &[i64], classes: &[String]) -> Result<Evaluation> {
    let k = classes.len();
    if probs.len() != labels.len() || probs.is_empty() {
        return Err(Error::invalid(format!("{} probability rows for {} labels", probs.len(), labels.len())));
    }
    if let Some(r) = probs.iter().find(|r| r.len() != k) {
        return Err(Error::invalid(format!("probability row of length {} for {k} classes", r.len())));
    }
    let top: Vec<(usize, f64)> = probs.iter().map(|p| argmax(p)).collect();
    let preds: Vec<i64> = top.iter().map(|t| t.0 as i64).collect();
    let report = ClassificationReport::new(labels, &preds, classes)?;
    let ci = crate::subgroups::bootstrap_ci(labels, &preds, k, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)?;
    let cm = report.confusion_matrix.clone();
    let n = labels.len() as u64;
    let scores = per_class_scores(&cm);
    let mut per_class = Vec::new();
    let mut roc = Vec::new();
    for c in 0..k {
        let s: Vec<f64> = probs.iter().map(|p| p[c] as f64).collect();
        let pos: Vec<bool> = labels.iter().map(|&l| l == c as i64).collect();
        let curve = roc_curve(&s, &pos);
        let auc = curve.as_ref().map(|(f, t, _)| trapezoid(f, t));
        let (fpr, tpr, thresholds) = curve.unwrap_or_default();
        roc.push(RocCurve { class: classes[c].clone(), fpr, tpr, thresholds });
        let fp: u64 = (0..k).filter(|&r| r != c).map(|r| cm[r][c]).sum();
        let negatives = n - scores[c].support;
        let tn = negatives - fp;
        per_class.push(ClassEval {
            name: classes[c].clone(),
            precision: scores[c].precision,
            recall: scores[c].recall,
            f1: scores[c].f1,
            support: scores[c].support,
            sensitivity: scores[c].recall,
            specificity: if negatives == 0 { 0.0 } else { tn as f64 / negatives as f64 },
            auc,
        });
    }
    let aucs: Vec<f64> = per_class.iter().filter_map(|c| c.auc).collect();
    let conf: Vec<f64> = top.iter().map(|t| t.1).collect();
    let correct: Vec<bool> = preds.iter().zip(labels).map(|(p, l)| p == l).collect();
    let (ece, reliability) = expected_calibration_error(&conf, &correct, ECE_BINS);
    Ok(Evaluation {
        classes: classes.to_vec(),
        n: labels.len(),
        accuracy: report.accuracy,
        macro_precision: report.macro_avg.precision,
        macro_recall: report.macro_avg.recall,
        macro_f1: report.macro_avg.f1,
        confusion_matrix: cm,
        per_class,
        macro_auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
        roc,
        ece,
        reliability,
        deferral: deferral_table(&conf, &correct),
        accuracy_ci: Some(ci.accuracy_ci),
        macro_f1_ci: Some(ci.macro_f1_ci),
        bootstrap: Some(ci),
        subgroups: None,
        report,
    })
}

/// Number of bootstrap resamples of [`evaluate_probs`]' intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
/// Seed of [`evaluate_probs`]' bootstrap.
pub const BOOTSTRAP_SEED: u64 = 0;

impl Evaluation {
    /// Adds the figures per value of a manifest column (`keys[i]`: image `i`'s value, `None`
    /// without a row; see [`crate::subgroups::subgroup_table`]) under `subgroups.<column>`.
    pub fn add_subgroups(
        &mut self,
        column: &str,
        labels: &[i64],
        preds: &[i64],
        keys: &[Option<String>],
    ) -> Result<()> {
        let t = crate::subgroups::subgroup_table(labels, preds, &self.classes, keys)?;
        self.subgroups.get_or_insert_with(Default::default).insert(column.to_string(), t);
        Ok(())
    }
}

/// sklearn's `roc_curve` (with `drop_intermediate=False`): thresholds at every distinct score,
/// descending, starting at (0, 0). `None` without positives or negatives.
pub fn roc_curve(scores: &[f64], positive: &[bool]) -> Option<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let p = positive.iter().filter(|&&b| b).count() as f64;
    let n = positive.len() as f64 - p;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut fpr, mut tpr, mut thr) = (vec![0.0], vec![0.0], vec![f64::MAX]);
    let (mut tp, mut fp) = (0.0, 0.0);
    for (j, &i) in idx.iter().enumerate() {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = j + 1 == idx.len() || scores[idx[j + 1]] != scores[i];
        if last_of_tie {
            fpr.push(fp / n);
            tpr.push(tp / p);
            thr.push(scores[i]);
        }
    }
    Some((fpr, tpr, thr))
}

/// Area under a piecewise-linear curve (trapezoidal rule).
pub fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2).zip(y.windows(2)).map(|(a, b)| (a[1] - a[0]) * (b[0] + b[1]) / 2.0).sum()
}

/// Expected calibration error with `bins` equal-width bins `(lo, hi]` of the confidence (the
/// first bin includes 0): `sum_b |acc_b - conf_b| * n_b / n`. Returns the ECE and the bins.
pub fn expected_calibration_error(conf: &[f64], correct: &[bool], bins: usize) -> (f64, Vec<ReliabilityBin>) {
    let mut out: Vec<ReliabilityBin> = (0..bins)
        .map(|b| ReliabilityBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    for (&c, &ok) in conf.iter().zip(correct) {
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        out[b].count += 1;
        out[b].confidence += c;
        out[b].accuracy += ok as u8 as f64;
    }
    let n = conf.len().max(1) as f64;
    let mut ece = 0.0;
    for b in &mut out {
        if b.count > 0 {
            b.confidence /= b.count as f64;
            b.accuracy /= b.count as f64;
            ece += (b.accuracy - b.confidence).abs() * b.count as f64 / n;
        }
    }
    (ece, out)
}

/// Coverage and accuracy of the automated cases for thresholds 0.00, 0.05, ..., 0.95.
pub fn deferral_table(conf: &[f64], correct: &[bool]) -> Vec<DeferralRow> {
    (0..20)
        .map(|i| {
            let t = i as f64 * 0.05;
            let auto: Vec<bool> =
                conf.iter().zip(correct).filter(|(&c, _)| c >= t - 1e-12).map(|(_, &ok)| ok).collect();
            let a = auto.len() as u64;
            DeferralRow {
                threshold: t,
                coverage: a as f64 / conf.len().max(1) as f64,
                accuracy: (a > 0).then(|| auto.iter().filter(|&&b| b).count() as f64 / a as f64),
                automated: a,
                deferred: conf.len() as u64 - a,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_by_hand() {
        // scores of positives 0.9, 0.4; negatives 0.6, 0.1: pairs ranked right 3 of 4 -> 0.75
        let (f, t, _) = roc_curve(&[0.9, 0.6, 0.4, 0.1], &[true, false, true, false]).unwrap();
        assert_eq!(f, vec![0.0, 0.0, 0.5, 0.5, 1.0]);
        assert_eq!(t, vec![0.0, 0.5, 0.5, 1.0, 1.0]);
        assert!((trapezoid(&f, &t) - 0.75).abs() < 1e-12);
        // ties count one half
        let (f, t, _) = roc_curve(&[0.5, 0.5], &[true, false]).unwrap();
        assert!((trapezoid(&f, &t) - 0.5).abs() < 1e-12);
        assert!(roc_curve(&[0.5], &[true]).is_none());
    }

    #[test]
    fn ece_and_deferral_by_hand() {
        // confidences 0.9 (right), 0.9 (wrong), 0.5 (right)
        let (ece, bins) = expected_calibration_error(&[0.9, 0.9, 0.5], &[true, false, true], 15);
        // bin of 0.9: acc 0.5, conf 0.9, weight 2/3; bin of 0.5: acc 1, conf 0.5, weight 1/3
        assert!((ece - (0.4 * 2.0 / 3.0 + 0.5 / 3.0)).abs() < 1e-12, "{ece}");
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 3);
        let d = deferral_table(&[0.9, 0.9, 0.5], &[true, false, true]);
        assert_eq!(d.len(), 20);
        assert_eq!(d[0].coverage, 1.0);
        let r = &d[12]; // 0.60
        assert!((r.threshold - 0.6).abs() < 1e-12);
        assert_eq!((r.automated, r.deferred), (2, 1));
        assert_eq!(r.accuracy, Some(0.5));
    }

    #[test]
    fn evaluation_sensitivity_specificity() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let probs = vec![vec![0.8, 0.1, 0.1], vec![0.2, 0.7, 0.1], vec![0.5, 0.3, 0.2], vec![0.1, 0.1, 0.8]];
        let labels = [0, 1, 1, 2];
        let e = evaluate_probs(&probs, &labels, &classes).unwrap();
        assert_eq!(e.confusion_matrix, vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 0, 1]]);
        // class a: tp 1, fp 1, negatives 3 -> specificity 2/3; class b: sensitivity 1/2
        assert!((e.per_class[0].specificity - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.per_class[1].sensitivity, 0.5);
        assert_eq!(e.per_class[2].auc, Some(1.0));
        assert_eq!(e.accuracy, 0.75);
        assert!(evaluate_probs(&[], &[], &classes).is_err());
    }
}
