//! `covid-cxr explain` end to end on a tiny run (random backbone, synthetic films): the same seed
//! gives the same weights, the figures and the JSON are written, bad inputs are clear errors.

mod common;
use common::{bin, run_ok};
use std::process::Command;

#[test]
fn explain_is_deterministic_and_checks_its_inputs() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    common::tiny_split(t.path(), 4, 3, "0.5,0.5");
    run_ok(&mut common::train_cmd(t.path(), &p("split"), &p("run"), "1", "139", "1"));
    let img = p("data/pneumonia/synth_pneumonia_00001.png");
    let explain = |out: &str, extra: &[&str]| {
        let mut c = bin();
        c.args(["explain", "--model"]).arg(p("run")).arg(&img).args(["--samples", "40", "--out"]).arg(p(out));
        if !extra.contains(&"--seed") {
            c.args(["--seed", "5"]);
        }
        c.args(extra);
        c
    };
    run_ok(&mut explain("e1", &[]));
    run_ok(&mut explain("e2", &[]));
    let json = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p(d).join("synth_pneumonia_00001.json")).unwrap()).unwrap()
    };
    let (a, b) = (json("e1"), json("e2"));
    assert_eq!(a["lime"], b["lime"], "same seed, same LIME weights");
    assert_eq!(a["gradcam"], b["gradcam"]);
    assert_eq!(a["lime"]["per_class"].as_object().unwrap().len(), 3);
    for f in ["side_by_side.png", "lime_covid.png", "lime_heatmap_normal.png", "gradcam_pneumonia.png"] {
        assert!(p("e1").join(format!("synth_pneumonia_00001_{f}")).is_file(), "{f}");
    }
    // a different seed gives other samples
    run_ok(&mut explain("e3", &["--seed", "6", "--method", "lime"]));
    assert_ne!(json("e3")["lime"]["per_class"], a["lime"]["per_class"]);

    let err = |c: &mut Command| -> String {
        let o = c.output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // the output folder is not overwritten
    assert!(err(&mut explain("e1", &[])).contains("not empty"));
    // a class the model does not have
    let e = err(&mut explain("e4", &["--class", "tuberculosis"]));
    assert!(e.contains("tuberculosis") && e.contains("covid"), "{e}");
    // zero samples
    let e = err(&mut explain("e5", &["--samples", "0", "--method", "lime"]));
    assert!(e.to_lowercase().contains("sample"), "{e}");
    // an image that cannot be read
    std::fs::write(p("broken.png"), b"not a png").unwrap();
    let o = bin()
        .args(["explain", "--model"])
        .arg(p("run"))
        .arg(p("broken.png"))
        .arg("--out")
        .arg(p("e6"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("broken.png"), "{e}");
    // no half-written output folder is left behind looking finished, nor its .partial
    assert!(!p("e5").exists() && !p("e6").exists());
    assert!(!p(".e5.partial").exists() && !p(".e6.partial").exists());

    // --hide-color mean reaches lime's default (each superpixel's mean colour): other weights than gray 0
    run_ok(&mut explain("e7", &["--method", "lime", "--hide-color", "mean"]));
    assert_ne!(json("e7")["lime"]["per_class"], a["lime"]["per_class"]);
    run_ok(&mut explain("e8", &["--method", "lime", "--hide-color", "0"]));
    assert_eq!(json("e8")["lime"]["per_class"], a["lime"]["per_class"], "0 is the default");
    let e = err(&mut explain("e9", &["--hide-color", "256"]));
    assert!(e.contains("mean") && e.contains("0-255"), "{e}");
    let o = bin().args(["explain", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--hide-color <mean|0-255>") && help.contains("mean colour"), "{help}");

    // an existing .OUT.partial is someone's: refused, not deleted
    std::fs::create_dir_all(p(".e10.partial")).unwrap();
    std::fs::write(p(".e10.partial/mine.txt"), b"keep").unwrap();
    let e = err(&mut explain("e10", &[]));
    assert!(e.contains(".e10.partial") && e.contains("exists"), "{e}");
    assert_eq!(std::fs::read(p(".e10.partial/mine.txt")).unwrap(), b"keep");
    assert!(!p("e10").exists());
}
