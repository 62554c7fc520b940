//! Evaluation that tells the truth: bootstrap confidence intervals of accuracy and macro-F1, and
//! the same figures per subgroup (each value of a manifest column, e.g. the source hospital or an
//! age band).
//!
//! - **Bootstrap**: `resamples` (1000 by default) resamples of the `n` (label, prediction) pairs,
//!   drawn with replacement by a ChaCha8 generator seeded with `seed` (0 by default); the 95%
//!   interval is the percentile interval (2.5th and 97.5th percentiles, linear interpolation
//!   between order statistics, as NumPy's default `percentile`).
//! - **Macro-F1 of a subset** (a resample or a subgroup) averages the F1 of the classes present in
//!   its labels or its predictions (scikit-learn's `f1_score(average="macro")` without `labels`), so
//!   a subgroup with no normal films is not charged a zero for the normal class it never saw.
//! - **Subgroups**: every image falls in exactly one subgroup; images without a manifest row are
//!   counted under [`NO_ROW`], and an empty value under [`EMPTY_VALUE`], so counts always sum to `n`.

use crate::error::{Error, Result};
use crate::metrics::{confusion_matrix, per_class_scores};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Subgroup key of images that have no row in the manifest.
pub const NO_ROW: &str = "(no manifest row)";
/// Subgroup key of images whose row has an empty value in the column.
pub const EMPTY_VALUE: &str = "(empty)";

/// Accuracy and macro-F1 over the classes present in `y_true` or `y_pred` (see the module docs).
///
/// ```
/// let (acc, f1) = covid_cxr::subgroups::accuracy_macro_f1(&[0, 0, 2], &[0, 2, 2], 3);
/// assert!((acc - 2.0 / 3.0).abs() < 1e-12);
/// assert!((f1 - 2.0 / 3.0).abs() < 1e-12); // classes 0 and 2 only, each F1 2/3
/// ```
pub fn accuracy_macro_f1(y_true: &[i64], y_pred: &[i64], k: usize) -> (f64, f64) {
    let Ok(cm) = confusion_matrix(y_true, y_pred, k) else { return (0.0, 0.0) };
    let scores = per_class_scores(&cm);
    let present: Vec<usize> =
        (0..k).filter(|&c| cm[c].iter().sum::<u64>() > 0 || (0..k).any(|r| cm[r][c] > 0)).collect();
    let acc = crate::metrics::accuracy(y_true, y_pred);
    let f1 = if present.is_empty() {
        0.0
    } else {
        present.iter().map(|&c| scores[c].f1).sum::<f64>() / present.len() as f64
    };
    (acc, f1)
}

/// The `q`-quantile (0..=1) of sorted values, linear interpolation between order statistics.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Bootstrap settings and the 95% percentile intervals they gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCi {
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Method, in words.
    pub method: String,
    /// 95% interval of the accuracy, `[lo, hi]`.
    pub accuracy_ci: [f64; 2],
    /// 95% interval of the macro-F1, `[lo, hi]`.
    pub macro_f1_ci: [f64; 2],
}

/// Bootstrap 95% percentile intervals of accuracy and macro-F1 (see the module docs).
///
/// ```
/// let y: Vec<i64> = (0..200).map(|i| i % 3).collect();
/// let p: Vec<i64> = y.iter().enumerate().map(|(i, &l)| if i % 10 == 0 { (l + 1) % 3 } else { l }).collect();
/// let ci = covid_cxr::subgroups::bootstrap_ci(&y, &p, 3, 1000, 0).unwrap();
/// assert!(ci.accuracy_ci[0] < 0.9 && 0.9 < ci.accuracy_ci[1]);
/// ```
pub fn bootstrap_ci(y_true: &[i64], y_pred: &[i64], k: usize, resamples: usize, seed: u64) -> Result<BootstrapCi> {
    let n = y_true.len();
    if n == 0 || n != y_pred.len() || resamples == 0 {
        return Err(Error::invalid(format!(
            "bootstrap needs as many predictions as labels (> 0) and resamples > 0: {n} labels, {} predictions, {resamples} resamples",
            y_pred.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut accs, mut f1s) = (Vec::with_capacity(resamples), Vec::with_capacity(resamples));
    let (mut yt, mut yp) = (vec![0i64; n], vec![0i64; n]);
    for _ in 0..resamples {
        for j in 0..n {
            let i = rng.random_range(0..n);
            yt[j] = y_true[i];
            yp[j] = y_pred[i];
        }
        let (a, f) = accuracy_macro_f1(&yt, &yp, k);
        accs.push(a);
        f1s.push(f);
    }
    accs.sort_by(f64::total_cmp);
    f1s.sort_by(f64::total_cmp);
    let ci = |v: &[f64]| [percentile(v, 0.025), percentile(v, 0.975)];
    Ok(BootstrapCi {
        resamples,
        seed,
        method: "percentile bootstrap over images, 95%".into(),
        accuracy_ci: ci(&accs),
        macro_f1_ci: ci(&f1s),
    })
}

/// The figures of one subgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubgroupEval {
    /// Images in the subgroup.
    pub n: usize,
    /// Accuracy.
    pub accuracy: f64,
    /// Macro-F1 over the classes present (see the module docs).
    pub macro_f1: f64,
    /// Recall of each class with films in the subgroup, by class name.
    pub recall: BTreeMap<String, f64>,
    /// Films of each class in the subgroup, by class name.
    pub support: BTreeMap<String, usize>,
}

/// Figures per subgroup: `keys[i]` is image `i`'s value of the column (`None`: no manifest row).
/// The subgroups' `n` sum to the number of images.
///
/// ```
/// use covid_cxr::subgroups::{subgroup_table, NO_ROW};
/// let classes = ["a".to_string(), "b".to_string()];
/// let keys = [Some("x".to_string()), Some("x".to_string()), Some("y".to_string()), None];
/// let t = subgroup_table(&[0, 1, 1, 0], &[0, 0, 1, 0], &classes, &keys).unwrap();
/// assert_eq!(t["x"].n + t["y"].n + t[NO_ROW].n, 4);
/// assert_eq!(t["x"].recall["b"], 0.0);
/// ```
pub fn subgroup_table(
    y_true: &[i64],
    y_pred: &[i64],
    classes: &[String],
    keys: &[Option<String>],
) -> Result<BTreeMap<String, SubgroupEval>> {
    if y_true.len() != y_pred.len() || y_true.len() != keys.len() {
        return Err(Error::invalid(format!(
            "{} labels, {} predictions, {} subgroup keys",
            y_true.len(),
            y_pred.len(),
            keys.len()
        )));
    }
    let mut groups: BTreeMap<String, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for ((&t, &p), key) in y_true.iter().zip(y_pred).zip(keys) {
        let key = match key {
            None => NO_ROW.to_string(),
            Some(v) if v.trim().is_empty() => EMPTY_VALUE.to_string(),
            Some(v) => v.clone(),
        };
        let g = groups.entry(key).or_default();
        g.0.push(t);
        g.1.push(p);
    }
    let k = classes.len();
    let mut out = BTreeMap::new();
    for (key, (yt, yp)) in groups {
        let cm = confusion_matrix(&yt, &yp, k)?;
        let scores = per_class_scores(&cm);
        let (accuracy, macro_f1) = accuracy_macro_f1(&yt, &yp, k);
        let recall = (0..k).filter(|&c| scores[c].support > 0).map(|c| (classes[c].clone(), scores[c].recall)).collect();
        let support =
            (0..k).filter(|&c| scores[c].support > 0).map(|c| (classes[c].clone(), scores[c].support as usize)).collect();
        out.insert(key, SubgroupEval { n: yt.len(), accuracy, macro_f1, recall, support });
    }
    Ok(out)
}

/// A `--by` column, optionally banded: `COLUMN` (one subgroup per value) or
/// `COLUMN:EDGE:EDGE...` (numeric values grouped into bands between increasing edges, e.g.
/// `age:18:65` gives `<18`, `18-<65` and `>=65`; values that are not numbers, such as a
/// cohort's "1-5 (cohort)", stay subgroups of their own).
///
/// ```
/// use covid_cxr::subgroups::BySpec;
/// let by = BySpec::parse("age:18:65").unwrap();
/// assert_eq!(by.column, "age");
/// assert_eq!(["4", "18", "64.5", "80", "1-5 (cohort)", ""].map(|v| by.key(v)),
///     ["<18", "18-<65", "18-<65", ">=65", "1-5 (cohort)", ""]);
/// assert_eq!(BySpec::parse("source_repo").unwrap().key("x"), "x");
/// assert!(BySpec::parse("age:65:18").is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BySpec {
    /// The manifest column.
    pub column: String,
    /// Increasing band edges (empty: every value is its own subgroup).
    pub edges: Vec<f64>,
}

impl BySpec {
    /// Parses `COLUMN` or `COLUMN:EDGE:EDGE...`.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut parts = spec.split(':');
        let column = parts.next().unwrap_or_default().trim().to_string();
        if column.is_empty() {
            return Err(Error::invalid(format!("subgroup column {spec:?}: no column name")));
        }
        let edges = parts
            .map(|e| {
                e.trim().parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| {
                    Error::invalid(format!("subgroup column {spec:?}: band edge {e:?} is not a number"))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::invalid(format!("subgroup column {spec:?}: band edges must increase")));
        }
        Ok(BySpec { column, edges })
    }

    /// The subgroup of a value: the value itself without edges or when it is not a number, else
    /// its band.
    pub fn key(&self, value: &str) -> String {
        let num = |x: f64| format!("{x}");
        match value.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && !self.edges.is_empty() => {
                match self.edges.iter().position(|&e| x < e) {
                    Some(0) => format!("<{}", num(self.edges[0])),
                    Some(i) => format!("{}-<{}", num(self.edges[i - 1]), num(self.edges[i])),
                    None => format!(">={}", num(self.edges[self.edges.len() - 1])),
                }
            }
            _ => value.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_brackets_the_estimate_and_is_seeded() {
        let y: Vec<i64> = (0..300).map(|i| i % 3).collect();
        let p: Vec<i64> = y.iter().enumerate().map(|(i, &l)| if i % 7 == 0 { (l + 2) % 3 } else { l }).collect();
        let (acc, f1) = accuracy_macro_f1(&y, &p, 3);
        let a = bootstrap_ci(&y, &p, 3, 500, 3).unwrap();
        assert!(a.accuracy_ci[0] <= acc && acc <= a.accuracy_ci[1], "{a:?} {acc}");
        assert!(a.macro_f1_ci[0] <= f1 && f1 <= a.macro_f1_ci[1], "{a:?} {f1}");
        assert!(a.accuracy_ci[1] - a.accuracy_ci[0] > 0.01);
        assert_eq!(a, bootstrap_ci(&y, &p, 3, 500, 3).unwrap());
        assert_ne!(a, bootstrap_ci(&y, &p, 3, 500, 4).unwrap());
        // perfect predictions: a degenerate interval at 1
        let b = bootstrap_ci(&y, &y, 3, 100, 0).unwrap();
        assert_eq!(b.accuracy_ci, [1.0, 1.0]);
        assert!(bootstrap_ci(&[], &[], 3, 100, 0).is_err());
    }

    #[test]
    fn percentile_interpolates() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.125), 0.5);
        assert_eq!(percentile(&v, 1.0), 4.0);
    }

    #[test]
    fn subgroup_counts_sum_to_n_and_nothing_is_dropped() {
        let classes: Vec<String> = ["covid", "normal", "pneumonia"].iter().map(|s| s.to_string()).collect();
        let y: Vec<i64> = (0..50).map(|i| i % 3).collect();
        let p: Vec<i64> = y.iter().map(|&l| if l == 1 { 2 } else { l }).collect();
        let keys: Vec<Option<String>> = (0..50)
            .map(|i| match i % 5 {
                0 => None,
                1 => Some(String::new()),
                2 | 3 => Some("adult".into()),
                _ => Some("child".into()),
            })
            .collect();
        let t = subgroup_table(&y, &p, &classes, &keys).unwrap();
        assert_eq!(t.values().map(|g| g.n).sum::<usize>(), 50);
        assert!(t.contains_key(NO_ROW) && t.contains_key(EMPTY_VALUE));
        for g in t.values() {
            assert_eq!(g.support.values().sum::<usize>(), g.n);
            assert_eq!(g.recall["normal"], 0.0);
            assert_eq!(g.recall["covid"], 1.0);
        }
        assert!(subgroup_table(&y, &p, &classes, &keys[..3]).is_err());
    }
}
