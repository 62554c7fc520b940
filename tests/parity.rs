//! Parity with the Python libraries on committed inputs: scikit-image's quickshift (label maps compared by
//! adjusted Rand index, since the tie-breaking noise is NumPy's there and ChaCha8's here) and lime's local
//! model (lime_base + scikit-learn's Ridge: coefficients, intercept, score, local prediction). The
//! references in tests/fixtures/parity/ are made by `bash bench/parity/run.sh` (pinned versions).

use covid_cxr::explain::lime::{cosine_distance_to_ones, kernel};
use covid_cxr::explain::{quickshift, FeatureSelection, LimeImageExplainer};
use ndarray::{Array1, Array2};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// Adjusted Rand index of two labelings of the same pixels (Hubert and Arabie, as scikit-learn's).
fn adjusted_rand_index(a: &[i64], b: &[i64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let c2 = |n: f64| n * (n - 1.0) / 2.0;
    let mut pairs: HashMap<(i64, i64), f64> = HashMap::new();
    let (mut ra, mut rb): (HashMap<i64, f64>, HashMap<i64, f64>) = (HashMap::new(), HashMap::new());
    for (&x, &y) in a.iter().zip(b) {
        *pairs.entry((x, y)).or_default() += 1.0;
        *ra.entry(x).or_default() += 1.0;
        *rb.entry(y).or_default() += 1.0;
    }
    let index: f64 = pairs.values().map(|&n| c2(n)).sum();
    let (sa, sb): (f64, f64) = (ra.values().map(|&n| c2(n)).sum(), rb.values().map(|&n| c2(n)).sum());
    let expected = sa * sb / c2(a.len() as f64);
    let max = (sa + sb) / 2.0;
    if max == expected {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[test]
fn adjusted_rand_index_known_values() {
    // scikit-learn: adjusted_rand_score([0,0,1,1],[1,1,0,0]) = 1; ([0,0,1,2],[0,0,1,1]) = 0.5714285714285715
    assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
    assert!((adjusted_rand_index(&[0, 0, 1, 2], &[0, 0, 1, 1]) - 0.5714285714285715).abs() < 1e-15);
    assert!(adjusted_rand_index(&[0, 1, 0, 1, 0, 1], &[0, 0, 0, 1, 1, 1]) < 0.1);
}

/// Minimum adjusted Rand index against scikit-image over the 9 cases (3 films x 3 parameter sets, 5 to 63
/// segments). Measured: 1.0 on every case (scikit-image 0.26.0). The films are textured so that no density
/// ties; the bound still leaves room for one tie broken the other way by the different noise, which moves
/// a few pixels of 4,096 between two segments.
const MIN_ARI: f64 = 0.995;

#[test]
fn quickshift_matches_scikit_image() {
    let fx = json("quickshift.json");
    let mut worst = 1.0f64;
    for case in fx["cases"].as_array().unwrap() {
        let img = image::open(fixture(case["image"].as_str().unwrap())).unwrap().to_rgb8();
        let (k, d, r) = (case["kernel_size"].as_f64().unwrap(), case["max_dist"].as_f64().unwrap(), case["ratio"].as_f64().unwrap());
        let seg = quickshift(&img, k, d, r, 0).unwrap();
        let want: Vec<i64> =
            case["labels"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_i64().unwrap())).collect();
        let got: Vec<i64> = seg.labels.iter().map(|&v| v as i64).collect();
        let ari = adjusted_rand_index(&got, &want);
        let n_want = case["n_segments"].as_u64().unwrap() as usize;
        eprintln!("{} k={k} d={d} r={r}: {} segments (scikit-image {n_want}), ARI {ari}", case["image"], seg.n_segments);
        assert!(seg.n_segments.abs_diff(n_want) <= 1, "{}: {} segments vs {n_want}", case["image"], seg.n_segments);
        worst = worst.min(ari);
    }
    assert!(worst >= MIN_ARI, "adjusted Rand index {worst} < {MIN_ARI}");
}

/// Largest difference allowed between lime + scikit-learn's numbers and ours (coefficients, intercept,
/// score, local prediction, distances, kernel weights). Measured: 5.6e-16 at most (lime 0.2.0.1,
/// scikit-learn 1.9.1): both solve the same weighted least squares in f64 by different factorizations, so
/// a few units in the last place; 1e-14 leaves room for another BLAS.
const LIME_TOL: f64 = 1e-14;

#[test]
fn lime_local_model_matches_lime_and_scikit_learn() {
    let fx = json("lime.json");
    let rows = |v: &Value| -> Vec<Vec<f64>> {
        v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
    };
    let to_array = |r: Vec<Vec<f64>>| Array2::from_shape_vec((r.len(), r[0].len()), r.concat()).unwrap();
    let data = to_array(rows(&fx["data"]));
    let preds = to_array(rows(&fx["predictions"]));
    let kw = fx["kernel_width"].as_f64().unwrap();
    // distances and kernel weights
    let mut max_d = 0.0f64;
    let weights: Array1<f64> = data
        .rows()
        .into_iter()
        .zip(fx["distances"].as_array().unwrap())
        .zip(fx["weights"].as_array().unwrap())
        .map(|((row, d_py), w_py)| {
            let d = cosine_distance_to_ones(row);
            let w = kernel(d, kw);
            max_d = max_d.max((d - d_py.as_f64().unwrap()).abs()).max((w - w_py.as_f64().unwrap()).abs());
            w
        })
        .collect();
    eprintln!("distances and kernel weights: max difference {max_d:e}");
    assert!(max_d <= LIME_TOL, "{max_d}");
    let mut max_diff = 0.0f64;
    for case in fx["cases"].as_array().unwrap() {
        let label = case["label"].as_u64().unwrap() as usize;
        let k = case["num_features"].as_u64().unwrap() as usize;
        let method = match case["feature_selection"].as_str().unwrap() {
            "auto" => FeatureSelection::Auto,
            "forward_selection" => FeatureSelection::ForwardSelection,
            "highest_weights" => FeatureSelection::HighestWeights,
            "none" => FeatureSelection::None,
            m => panic!("unknown method {m}"),
        };
        let ex = LimeImageExplainer::new(kw, method);
        let got = ex.explain_label(data.view(), preds.column(label), weights.view(), label, k).unwrap();
        let want: Vec<(usize, f64)> = case["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
            .collect();
        let what = format!("label {label}, {method:?}, {k} features");
        let features = |v: &[(usize, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(features(&got.weights), features(&want), "{what}: chosen features (by |weight|)");
        let mut diff = got.weights.iter().zip(&want).map(|(a, b)| (a.1 - b.1).abs()).fold(0.0, f64::max);
        for key in ["intercept", "score", "local_pred"] {
            let mine = match key {
                "intercept" => got.intercept,
                "score" => got.score,
                _ => got.local_pred,
            };
            diff = diff.max((mine - case[key].as_f64().unwrap()).abs());
        }
        eprintln!("{what}: max difference {diff:e}");
        max_diff = max_diff.max(diff);
    }
    eprintln!("lime: max difference over all cases {max_diff:e}");
    assert!(max_diff <= LIME_TOL, "{max_diff}");
}
