//! `synth --masks/--shortcut`, `faithfulness` and `train/evaluate/predict --mask-markers` end to
//! end on tiny data (random backbone, small images): files where they belong, JSON keys, clear
//! errors.

mod common;
use common::{bin, random_backbone, run_ok, train_cmd};

fn err(c: &mut std::process::Command) -> String {
    let o = c.output().unwrap();
    assert!(!o.status.success(), "expected a failure");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn synth_masks_shortcut_faithfulness_and_marker_masking() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    run_ok(
        bin()
            .args(["synth", "--per-class", "4", "--seed", "3", "--shortcut", "PORTABLE:normal:0.5", "--out"])
            .arg(p("data"))
            .arg("--masks")
            .arg(p("masks")),
    );
    for class in ["covid", "normal", "pneumonia"] {
        for i in 0..4 {
            let name = format!("synth_{class}_{i:05}.png");
            let mask = image::open(p("masks").join(class).join(&name)).unwrap().to_luma8();
            let film = image::open(p("data").join(class).join(&name)).unwrap();
            assert_eq!(mask.dimensions(), (film.width(), film.height()));
            assert_eq!(mask.pixels().any(|v| v[0] == 255), class != "normal", "{name}");
        }
    }
    // bad shortcut specs are clear errors, and nothing is overwritten
    let e = err(bin().args(["synth", "--shortcut", "PORTABLE:lungs:0.5", "--out"]).arg(p("d2")));
    assert!(e.contains("lungs"), "{e}");
    let e = err(bin().args(["synth", "--shortcut", "PORTABLE:normal:2", "--out"]).arg(p("d2")));
    assert!(e.contains("share"), "{e}");
    let e = err(bin().args(["synth", "--per-class", "4", "--seed", "3", "--out"]).arg(p("data")));
    assert!(e.contains("exists"), "{e}");

    run_ok(bin().arg("split").arg(p("data")).arg(p("split")).args(["--ratio", "0.5,0.5"]));
    random_backbone(&p("w.safetensors"));
    let train = |out: &str, extra: &[&str]| {
        let mut c = train_cmd(t.path(), &p("split"), &p(out), "1", "139", "1");
        c.args(extra);
        c
    };
    run_ok(&mut train("run", &[]));
    run_ok(&mut train("run_masked", &["--mask-markers"]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("run_masked/manifest.json")).unwrap()).unwrap();
    assert!(manifest["preprocessing"].to_string().contains("MaskMarkers"), "{}", manifest["preprocessing"]);
    let plain: serde_json::Value = serde_json::from_slice(&std::fs::read(p("run/manifest.json")).unwrap()).unwrap();
    assert!(!plain["preprocessing"].to_string().contains("MaskMarkers"));
    // evaluate and predict apply it (from the manifest, or asked for at inference)
    run_ok(bin().args(["evaluate", "--model"]).arg(p("run_masked")).arg("--data").arg(p("split/val")));
    let o = run_ok(bin().args(["evaluate", "--mask-markers", "--model"]).arg(p("run")).arg("--data").arg(p("split/val")));
    assert!(o.contains("accuracy"), "{o}");
    let o = run_ok(bin().args(["predict", "--mask-markers", "--model"]).arg(p("run")).arg(p("split/val/normal")));
    assert!(o.lines().count() >= 1);

    // faithfulness with masks: only films with a non-empty mask, the keys the issue names
    let f = |json: &str, extra: &[&str]| {
        let mut c = bin();
        c.args(["faithfulness", "--model"])
            .arg(p("run"))
            .arg("--data")
            .arg(p("split/val"))
            .args(["--samples", "20", "--steps", "2", "--json"])
            .arg(p(json))
            .args(extra);
        c
    };
    run_ok(f("f.json", &[]).arg("--masks").arg(p("masks")));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p("f.json")).unwrap()).unwrap();
    let n = v["n"].as_u64().unwrap();
    assert_eq!(n, 4, "2 covid + 2 pneumonia validation films"); // normal masks are empty
    assert_eq!(v["films_with_empty_mask"], 2);
    for k in ["gradcam_pointing", "lime_pointing", "gradcam_energy", "lime_energy", "gradcam_deletion_auc"] {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k}: {}", v[k]));
        assert!((0.0..=1.0).contains(&x), "{k} {x}");
    }
    assert_eq!(v["films"].as_array().unwrap().len(), 4);
    // the tolerant game never scores below the strict one, and the tolerance is recorded
    let strict = v["gradcam_pointing_strict"].as_f64().unwrap();
    assert!(strict <= v["gradcam_pointing"].as_f64().unwrap(), "{strict}");
    assert_eq!(v["pointing_tolerance_px"], covid_cxr::explain::faithfulness::POINTING_TOLERANCE_PX);
    // film paths relative to --data (class/name), true wherever the folder moves
    for film in v["films"].as_array().unwrap() {
        let image = std::path::PathBuf::from(film["image"].as_str().unwrap());
        assert!(image.is_relative() && p("split/val").join(&image).is_file(), "{image:?}");
        assert_eq!(image.parent().unwrap().to_str(), film["class"].as_str(), "{film}");
    }
    assert!(p("f_grid.png").is_file() && p("f_curves.png").is_file());
    // without masks (real films): every film, curves but no pointing
    run_ok(&mut f("g.json", &["--limit", "2"]));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p("g.json")).unwrap()).unwrap();
    assert_eq!(v["n"], 2);
    assert!(v["gradcam_pointing"].is_null() && v["lime_insertion_auc"].is_number());
    // a negative tolerance is refused
    let e = err(f("t.json", &["--tolerance=-1"]).arg("--masks").arg(p("masks")));
    assert!(e.contains("--tolerance"), "{e}");
    // a missing masks folder is named
    let e = err(f("h.json", &[]).arg("--masks").arg(p("nowhere")));
    assert!(e.contains("nowhere"), "{e}");
}
