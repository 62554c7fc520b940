//! Every figure draws, saves as PNG and SVG with its title, and rejects malformed input.

use covid_cxr::explain::{Explanation, LabelExplanation, Segments};
use covid_cxr::plot::{self, Figure};
use image::{Rgb, RgbImage};
use ndarray::Array2;

fn classes() -> Vec<String> {
    ["covid", "normal", "pneumonia"].map(String::from).to_vec()
}

fn film() -> RgbImage {
    RgbImage::from_fn(60, 60, |x, y| {
        let v = (100 + (x + y) % 120) as u8;
        Rgb([v, v, v])
    })
}

/// A hand-made explanation of class 0 and 2 on a 3x3 grid of 20x20 superpixels.
fn explanation() -> Explanation {
    let l = Array2::from_shape_fn((60, 60), |(r, c)| ((r / 20) * 3 + c / 20) as i32);
    let segments = Segments::from_labels(l.view()).unwrap();
    let w0 = vec![(4, 0.3), (0, -0.2), (8, 0.1), (1, 0.05)];
    let w2 = vec![(0, 0.25), (4, -0.15)];
    Explanation {
        image: film(),
        segments,
        top_labels: vec![0, 2],
        labels: vec![
            LabelExplanation { label: 0, intercept: 0.1, weights: w0, score: 0.8, local_pred: 0.55 },
            LabelExplanation { label: 2, intercept: 0.2, weights: w2, score: 0.7, local_pred: 0.3 },
        ],
        predictions: vec![0.6, 0.1, 0.3],
    }
}

fn check(fig: Figure, title: &str) {
    assert!(fig.width > 100 && fig.height > 100);
    assert_eq!(fig.rgb.len(), (fig.width * fig.height * 3) as usize);
    assert!(fig.svg.contains(title), "title {title:?} missing");
    // Something was drawn besides the white background.
    assert!(fig.rgb.iter().filter(|&&v| v < 200).count() > 1000);
    let dir = tempfile::tempdir().unwrap();
    fig.save(dir.path().join("f.png")).unwrap();
    fig.save(dir.path().join("f.svg")).unwrap();
    assert_eq!(image::open(dir.path().join("f.png")).unwrap().width(), fig.width);
}

#[test]
fn training_and_evaluation_figures() {
    check(
        plot::accuracy_loss(&[0.5, 0.7, 0.8], &[0.4, 0.6, 0.7], &[1.0, 0.7, 0.5], &[1.1, 0.8, 0.6]).unwrap(),
        "Training curves",
    );
    let probs = vec![vec![0.7, 0.2, 0.1], vec![0.2, 0.2, 0.6]];
    check(plot::predictions(&[film(), film()], &[0, 1], &probs, &classes()).unwrap(), "Predictions");
    let cm = vec![vec![5, 1, 0], vec![0, 7, 2], vec![1, 0, 9]];
    check(plot::confusion_matrix(&cm, &classes()).unwrap(), "Confusion matrix");
    let roc: Vec<plot::RocCurve> =
        classes().into_iter().map(|c| (c, vec![(0.0, 0.0), (0.2, 0.7), (1.0, 1.0)], 0.8)).collect();
    check(plot::roc_curves(&roc).unwrap(), "ROC curves");
    check(plot::reliability_diagram(&[(0.3, 0.2, 3), (0.0, 0.0, 0), (0.9, 0.85, 30)], 0.05).unwrap(), "ECE = 0.050");
    check(plot::coverage_accuracy(&[(0.5, 1.0, 0.8), (0.8, 0.6, 0.95)]).unwrap(), "Deferral");
}

#[test]
fn explanation_figures() {
    let e = explanation();
    check(plot::lime_boundaries(&e, 0, "covid", 3, 5).unwrap(), "LIME superpixels");
    check(plot::lime_heatmap(&e, 0, "covid").unwrap(), "LIME superpixel weights");
    let cam = Array2::from_shape_fn((8, 8), |(r, c)| ((r + c) as f32) / 14.0);
    check(plot::gradcam_overlay(&film(), cam.view(), 0.5, "Grad-CAM test").unwrap(), "Grad-CAM test");
    let cams = vec![("covid".to_string(), cam.clone()), ("normal".to_string(), cam)];
    let f = plot::explain_side_by_side(&film(), &e, &cams, &classes()).unwrap();
    assert!(f.svg.contains("not explained by LIME")); // class 1 was not explained
    assert!(f.svg.contains("no Grad-CAM map")); // pneumonia has no map
    check(f, "LIME and Grad-CAM");
}

#[test]
fn heatmap_uses_symmetric_rdbu_limits() {
    let e = explanation();
    let f = plot::lime_heatmap(&e, 0, "covid").unwrap();
    // Colour bar ticks are ±max|w| = ±0.30.
    assert!(f.svg.contains("-0.30") && f.svg.contains("0.30"));
    let m = e.heatmap(0).unwrap();
    let img = plot::heatmap_image(m.view(), covid_cxr::explain::Colormap::RdBu, -0.3, 0.3);
    assert_eq!(img.get_pixel(30, 30).0, [5, 48, 97]); // segment 4, +0.3: darkest blue
    assert_eq!(img.get_pixel(45, 5).0, [247, 247, 247]); // segment 2, weight 0: white
}

#[test]
fn malformed_inputs_are_errors() {
    let c = classes();
    assert!(plot::accuracy_loss(&[], &[], &[], &[]).is_err());
    assert!(plot::accuracy_loss(&[f64::NAN], &[0.1], &[0.1], &[0.1]).is_err());
    assert!(plot::predictions(&[], &[], &[], &c).is_err());
    assert!(plot::predictions(&[film()], &[0], &[vec![0.5, 0.5]], &c).is_err());
    assert!(plot::predictions(&[film()], &[5], &[vec![0.5, 0.3, 0.2]], &c).is_err());
    assert!(plot::confusion_matrix(&[vec![1, 2], vec![3, 4]], &c).is_err());
    assert!(plot::roc_curves(&[]).is_err());
    assert!(plot::reliability_diagram(&[], 0.0).is_err());
    assert!(plot::coverage_accuracy(&[]).is_err());
    let e = explanation();
    assert!(plot::lime_heatmap(&e, 1, "normal").is_err());
    assert!(plot::lime_boundaries(&e, 7, "x", 3, 5).is_err());
    assert!(plot::gradcam_overlay(&film(), Array2::<f32>::zeros((0, 0)).view(), 0.5, "t").is_err());
    assert!(plot::gradcam_overlay(&film(), Array2::<f32>::zeros((2, 2)).view(), 1.5, "t").is_err());
    assert!(plot::explain_side_by_side(&film(), &e, &[], &[]).is_err());
}
