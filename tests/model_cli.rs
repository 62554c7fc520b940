//! `covid-cxr train / evaluate / predict / weights` end to end on tiny synthetic data, with a
//! randomly initialised backbone file (no download, no pretrained weights needed).

mod common;
use common::{bin, run_ok};
use covid_cxr::model::{TransferConfig, TransferModel};

#[test]
fn train_evaluate_predict() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    common::tiny_split(t.path(), 5, 2, "0.6,0.4");
    let train = |out: &str, epochs: &str| common::train_cmd(t.path(), &p("split"), &p(out), epochs, "96", "2");
    let out = run_ok(&mut train("run", "2"));
    assert!(out.contains("val accuracy") && out.contains("weighted avg"), "{out}");
    for f in ["model.safetensors", "manifest.json", "history.json", "metrics.json", "classification_report.txt"] {
        assert!(p("run").join(f).is_file(), "{f} missing");
    }
    // no overwrite
    let o = train("run", "2").output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not empty"));
    // resume for one more epoch into a new run
    run_ok(train("run3", "3").arg("--resume").arg(p("run")));
    let h: serde_json::Value = serde_json::from_slice(&std::fs::read(p("run3/history.json")).unwrap()).unwrap();
    assert_eq!(h["epochs"].as_array().unwrap().len(), 3);
    assert_eq!(h["epochs"][2]["epoch"], 3);
    // evaluate
    run_ok(
        bin()
            .arg("evaluate")
            .arg("--model")
            .arg(p("run"))
            .arg("--data")
            .arg(p("split/val"))
            .arg("--json")
            .arg(p("ev.json")),
    );
    let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(p("ev.json")).unwrap()).unwrap();
    for k in [
        "classes",
        "n",
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "confusion_matrix",
        "per_class",
        "ece",
    ] {
        assert!(ev.get(k).is_some(), "{k} missing in evaluation JSON");
    }
    for k in ["precision", "recall", "f1", "support", "sensitivity", "specificity", "auc"] {
        assert!(ev["per_class"][0].get(k).is_some(), "per_class.{k} missing");
    }
    assert_eq!(ev["n"], 6);
    // predict: one JSON line per image
    let out =
        run_ok(bin().arg("predict").arg("--model").arg(p("run")).args(["--threshold", "0.99"]).arg(p("split/val")));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["deferred"], true);
    assert!(lines[0]["probabilities"]["covid"].is_number());
}

#[test]
fn weights_from_safetensors() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("tv.safetensors");
    tch::manual_seed(0);
    let cfg = TransferConfig { variant: covid_cxr::model::InceptionVariant::Torchvision, ..TransferConfig::default() };
    let m = TransferModel::new(&cfg).unwrap();
    let mut v: Vec<(String, tch::Tensor)> = m.backbone_vs.variables().into_iter().collect();
    v.push(("fc.weight".into(), tch::Tensor::zeros([1000, 2048], (tch::Kind::Float, tch::Device::Cpu))));
    covid_cxr::weights::write_safetensors(&src, &v, &[]).unwrap();
    let out = t.path().join("out.safetensors");
    let printed = run_ok(bin().args(["weights", "--from"]).arg(&src).arg("--out").arg(&out));
    assert_eq!(printed.trim(), out.display().to_string());
    assert_eq!(covid_cxr::weights::variant_of(&out).unwrap(), Some(covid_cxr::model::InceptionVariant::Torchvision));
    // a misnamed tensor is reported by name
    v.push(("Mixed_9z.conv.weight".into(), tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu))));
    covid_cxr::weights::write_safetensors(&src, &v, &[]).unwrap();
    let o = bin().args(["weights", "--from"]).arg(&src).arg("--out").arg(&out).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Mixed_9z.conv.weight"));
}

/// `train --resume` continues Adam's moments and step counts (saved in `optimizer.safetensors`) and the
/// per-epoch dropout seeds: 10 epochs in one go equal 5 epochs and a resume for 5 more, bit for bit, on
/// the cached path.
#[test]
fn resume_equals_uninterrupted_training() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    common::tiny_split(t.path(), 6, 4, "0.5,0.5");
    let train = |out: &str, epochs: &str| {
        let mut c = common::train_cmd(t.path(), &p("split"), &p(out), epochs, "96", "2");
        c.args(["--seed", "9"]);
        c
    };
    run_ok(&mut train("r10", "10"));
    run_ok(&mut train("r5", "5"));
    run_ok(train("r5+5", "10").arg("--resume").arg(p("r5")));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("r5/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["optimizer"], "optimizer.safetensors");
    let read = |run: &str, file: &str| {
        let mut t = covid_cxr::weights::read_tensors(&p(run).join(file)).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let tensors = |run: &str| read(run, "model.safetensors");
    let (a, b) = (tensors("r10"), tensors("r5+5"));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let d = (ta - tb).abs().max().double_value(&[]);
        assert!(ta.equal(tb), "{na}: resumed weights differ by up to {d:e}");
    }
    let opt = |run: &str| read(run, "optimizer.safetensors");
    let (oa, ob) = (opt("r10"), opt("r5+5"));
    assert!(oa.len() == ob.len() && oa.iter().zip(&ob).all(|((x, s), (y, u))| x == y && s.equal(u)));
    // the per-epoch figures agree too (except the time taken)
    let hist = |run: &str| -> Vec<serde_json::Value> {
        let h: serde_json::Value = serde_json::from_slice(&std::fs::read(p(run).join("history.json")).unwrap()).unwrap();
        h["epochs"].as_array().unwrap().iter().map(|e| serde_json::json!([e["epoch"], e["train"], e["val"]])).collect()
    };
    assert_eq!(hist("r10"), hist("r5+5"));
}
