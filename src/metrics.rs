//! Classification metrics with scikit-learn's semantics: accuracy, per-class and macro/weighted
//! precision, recall and F1, the confusion matrix, and `classification_report` (as a polars
//! `DataFrame` and as sklearn's exact text layout).
//!
//! As sklearn's default (`zero_division="warn"`), a ratio whose denominator is 0 counts as 0.
//!
//! ```
//! use covid_cxr::metrics::ClassificationReport;
//! let r = ClassificationReport::new(&[0, 1, 2, 2], &[0, 2, 2, 2], &["a", "b", "c"]).unwrap();
//! assert_eq!(r.accuracy, 0.75);
//! assert_eq!(r.per_class[1].recall, 0.0);
//! print!("{r}");
//! ```

use crate::error::{Error, Result};
use polars::prelude::{Column, DataFrame};
use serde::{Deserialize, Serialize};

/// Confusion matrix `m[true][predicted]` for `k` classes. Labels outside `0..k` are an error.
pub fn confusion_matrix(y_true: &[i64], y_pred: &[i64], k: usize) -> Result<Vec<Vec<u64>>> {
    if y_true.len() != y_pred.len() {
        return Err(Error::invalid(format!("{} labels but {} predictions", y_true.len(), y_pred.len())));
    }
    let mut m = vec![vec![0u64; k]; k];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        if t < 0 || p < 0 || t as usize >= k || p as usize >= k {
            return Err(Error::invalid(format!("label {t} or prediction {p} outside 0..{k}")));
        }
        m[t as usize][p as usize] += 1;
    }
    Ok(m)
}

/// Fraction of correct predictions (0 for no samples).
pub fn accuracy(y_true: &[i64], y_pred: &[i64]) -> f64 {
    if y_true.is_empty() {
        return 0.0;
    }
    y_true.iter().zip(y_pred).filter(|(a, b)| a == b).count() as f64 / y_true.len() as f64
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// tp / (tp + fp), 0 if nothing was predicted as this class.
    pub precision: f64,
    /// tp / (tp + fn), 0 if the class has no sample.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 if both are 0.
    pub f1: f64,
    /// Number of true samples of the class.
    pub support: u64,
}

/// Per-class scores from a confusion matrix.
pub fn per_class_scores(cm: &[Vec<u64>]) -> Vec<ClassScores> {
    let k = cm.len();
    (0..k)
        .map(|c| {
            let tp = cm[c][c];
            let pred: u64 = (0..k).map(|r| cm[r][c]).sum();
            let support: u64 = cm[c].iter().sum();
            let precision = ratio(tp, pred);
            let recall = ratio(tp, support);
            let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
            ClassScores { precision, recall, f1, support }
        })
        .collect()
}

/// Unweighted mean of per-class scores (sklearn's `average="macro"`); support is the total.
pub fn macro_avg(s: &[ClassScores]) -> ClassScores {
    let n = s.len().max(1) as f64;
    ClassScores {
        precision: s.iter().map(|c| c.precision).sum::<f64>() / n,
        recall: s.iter().map(|c| c.recall).sum::<f64>() / n,
        f1: s.iter().map(|c| c.f1).sum::<f64>() / n,
        support: s.iter().map(|c| c.support).sum(),
    }
}

/// Support-weighted mean of per-class scores (sklearn's `average="weighted"`).
pub fn weighted_avg(s: &[ClassScores]) -> ClassScores {
    let total: u64 = s.iter().map(|c| c.support).sum();
    let w = |f: fn(&ClassScores) -> f64| {
        if total == 0 {
            0.0
        } else {
            s.iter().map(|c| f(c) * c.support as f64).sum::<f64>() / total as f64
        }
    };
    ClassScores { precision: w(|c| c.precision), recall: w(|c| c.recall), f1: w(|c| c.f1), support: total }
}

/// sklearn's `classification_report` for a multi-class problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Scores per class.
    pub per_class: Vec<ClassScores>,
    /// Accuracy.
    pub accuracy: f64,
    /// Macro average.
    pub macro_avg: ClassScores,
    /// Weighted average.
    pub weighted_avg: ClassScores,
    /// Confusion matrix, rows true, columns predicted.
    pub confusion_matrix: Vec<Vec<u64>>,
}

impl ClassificationReport {
    /// Computes the report. `classes` gives the names of labels `0..classes.len()`.
    pub fn new(y_true: &[i64], y_pred: &[i64], classes: &[impl AsRef<str>]) -> Result<Self> {
        let cm = confusion_matrix(y_true, y_pred, classes.len())?;
        let per_class = per_class_scores(&cm);
        Ok(ClassificationReport {
            classes: classes.iter().map(|c| c.as_ref().to_string()).collect(),
            macro_avg: macro_avg(&per_class),
            weighted_avg: weighted_avg(&per_class),
            per_class,
            accuracy: accuracy(y_true, y_pred),
            confusion_matrix: cm,
        })
    }

    /// The report as a table: one row per class, then `accuracy`, `macro avg`, `weighted avg`;
    /// columns `class`, `precision`, `recall`, `f1-score`, `support` (accuracy's precision and
    /// recall are null, as blank in sklearn's text).
    pub fn to_dataframe(&self) -> Result<DataFrame> {
        let mut names: Vec<String> = self.classes.clone();
        let mut p: Vec<Option<f64>> = self.per_class.iter().map(|c| Some(c.precision)).collect();
        let mut r: Vec<Option<f64>> = self.per_class.iter().map(|c| Some(c.recall)).collect();
        let mut f: Vec<f64> = self.per_class.iter().map(|c| c.f1).collect();
        let mut s: Vec<u64> = self.per_class.iter().map(|c| c.support).collect();
        names.push("accuracy".into());
        p.push(None);
        r.push(None);
        f.push(self.accuracy);
        s.push(self.macro_avg.support);
        for (n, a) in [("macro avg", &self.macro_avg), ("weighted avg", &self.weighted_avg)] {
            names.push(n.into());
            p.push(Some(a.precision));
            r.push(Some(a.recall));
            f.push(a.f1);
            s.push(a.support);
        }
        DataFrame::new_infer_height(vec![
            Column::new("class".into(), names),
            Column::new("precision".into(), p),
            Column::new("recall".into(), r),
            Column::new("f1-score".into(), f),
            Column::new("support".into(), s),
        ])
        .map_err(|e| Error::Table(e.to_string()))
    }

    /// sklearn's text layout with `digits` decimals (sklearn's default is 2).
    pub fn to_text(&self, digits: usize) -> String {
        let heading = "weighted avg";
        let name_w = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        let width = name_w.max(heading.len()).max(digits);
        let mut out = format!("{:>width$} ", "");
        for h in ["precision", "recall", "f1-score", "support"] {
            out += &format!(" {h:>9}");
        }
        out += "\n\n";
        let row = |name: &str, c: &ClassScores| {
            format!(
                "{name:>width$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}\n",
                c.precision, c.recall, c.f1, c.support
            )
        };
        for (n, c) in self.classes.iter().zip(&self.per_class) {
            out += &row(n, c);
        }
        out += "\n";
        out += &format!(
            "{:>width$}  {:>9} {:>9} {:>9.digits$} {:>9}\n",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        );
        out += &row("macro avg", &self.macro_avg);
        out += &row("weighted avg", &self.weighted_avg);
        out
    }
}

impl std::fmt::Display for ClassificationReport {
    /// sklearn's text layout, 2 digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // y_true: a a a b b c c c c ; y_pred: a b a b c c c a c
    fn example() -> ClassificationReport {
        let t = [0, 0, 0, 1, 1, 2, 2, 2, 2];
        let p = [0, 1, 0, 1, 2, 2, 2, 0, 2];
        ClassificationReport::new(&t, &p, &["a", "b", "c"]).unwrap()
    }

    #[test]
    fn hand_worked_three_classes() {
        let r = example();
        assert_eq!(r.confusion_matrix, vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]);
        // a: tp 2, predicted 3, support 3 -> p 2/3, r 2/3
        // b: tp 1, predicted 2, support 2 -> p 1/2, r 1/2
        // c: tp 3, predicted 4, support 4 -> p 3/4, r 3/4
        let close = |x: f64, y: f64| assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        close(r.per_class[0].precision, 2.0 / 3.0);
        close(r.per_class[1].f1, 0.5);
        close(r.per_class[2].recall, 0.75);
        close(r.accuracy, 6.0 / 9.0);
        close(r.macro_avg.precision, (2.0 / 3.0 + 0.5 + 0.75) / 3.0);
        close(r.weighted_avg.recall, (3.0 * 2.0 / 3.0 + 2.0 * 0.5 + 4.0 * 0.75) / 9.0);
        assert_eq!(r.macro_avg.support, 9);
    }

    #[test]
    fn zero_division_is_zero() {
        // class b never predicted and never true; class c never predicted
        let r = ClassificationReport::new(&[0, 0, 2], &[0, 0, 0], &["a", "b", "c"]).unwrap();
        assert_eq!(r.per_class[1], ClassScores { precision: 0.0, recall: 0.0, f1: 0.0, support: 0 });
        assert_eq!(r.per_class[2].precision, 0.0);
        assert!((r.per_class[0].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!(confusion_matrix(&[0], &[3], 3).is_err());
    }

    #[test]
    fn text_layout_matches_sklearn() {
        // sklearn.metrics.classification_report([0,0,0,1,1,2,2,2,2],[0,1,0,1,2,2,2,0,2],
        //     target_names=["a","b","c"])
        let want = "              precision    recall  f1-score   support\n\n\
                    \x20          a       0.67      0.67      0.67         3\n\
                    \x20          b       0.50      0.50      0.50         2\n\
                    \x20          c       0.75      0.75      0.75         4\n\n\
                    \x20   accuracy                           0.67         9\n\
                    \x20  macro avg       0.64      0.64      0.64         9\n\
                    weighted avg       0.67      0.67      0.67         9\n";
        assert_eq!(example().to_string(), want);
    }

    #[test]
    fn dataframe_rows() {
        let df = example().to_dataframe().unwrap();
        assert_eq!(df.shape(), (6, 5));
        let s = format!("{df}");
        assert!(s.contains("weighted avg") && s.contains("f1-score"), "{s}");
    }
}
