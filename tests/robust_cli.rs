//! `train --recipe robust`, `train --seeds` and `evaluate --manifest --by` end to end on tiny
//! synthetic data with a randomly initialised backbone file.

mod common;
use common::{bin, random_backbone, run_ok, train_cmd};

#[test]
fn robust_recipe_seeds_and_subgroups() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    run_ok(bin().args(["synth", "--per-class", "8", "--seed", "3", "--out"]).arg(p("data")));
    run_ok(bin().arg("split").arg(p("data")).arg(p("split")).args(["--ratio", "0.5,0.5"]));
    random_backbone(&p("w.safetensors"));
    // a manifest: patient = every two files of a class, cohort by position; one val file has no row
    let mut csv = String::from("file,patient,cohort,age\n");
    let mut skipped = None;
    for split in ["train", "val"] {
        for class in ["covid", "normal", "pneumonia"] {
            let mut names: Vec<String> = std::fs::read_dir(p("split").join(split).join(class))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for (i, n) in names.iter().enumerate() {
                if split == "val" && skipped.is_none() {
                    skipped = Some(n.clone());
                    continue;
                }
                let cohort = if i % 2 == 0 { "adult" } else { "child" };
                let age = ["7", "40", "70", "1-5 (cohort)"][i % 4];
                csv.push_str(&format!("{split}/{class}/{n},{class}-p{},{cohort},{age}\n", i / 2));
            }
        }
    }
    std::fs::write(p("m.csv"), csv).unwrap();
    let train = |out: &str, extra: &[&str]| {
        let mut c = train_cmd(t.path(), &p("split"), &p(out), "2", "96", "2");
        c.args(extra);
        c
    };
    let gb = format!("{}:patient", p("m.csv").display());
    let out = run_ok(&mut train("robust", &["--recipe", "robust", "--folds", "3", "--group-by", &gb]));
    assert!(out.contains("val accuracy"), "{out}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(p("robust/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["recipe"], "robust");
    let chosen = m["robust"]["chosen"].as_u64().unwrap() as usize;
    let scores = m["robust"]["scores"].as_array().unwrap();
    assert_eq!(scores.len(), covid_cxr::robust::default_grid().len());
    assert_eq!(m["model"]["head"], serde_json::to_value(scores[chosen]["candidate"]["head"].clone()).unwrap());
    assert!(p("robust/cv_scores.json").is_file());
    // the same seed gives the same run
    run_ok(&mut train("robust2", &["--recipe", "robust", "--folds", "3", "--group-by", &gb]));
    let m2: serde_json::Value = serde_json::from_slice(&std::fs::read(p("robust2/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["robust"]["scores"], m2["robust"]["scores"]);
    assert_eq!(
        std::fs::read(p("robust/model.safetensors")).unwrap(),
        std::fs::read(p("robust2/model.safetensors")).unwrap()
    );
    // evaluate with bootstrap intervals and subgroups; the file without a row is counted, not dropped
    let ev_out = run_ok(
        bin()
            .args(["evaluate", "--model"])
            .arg(p("robust"))
            .arg("--data")
            .arg(p("split/val"))
            .arg("--json")
            .arg(p("ev.json"))
            .arg("--manifest")
            .arg(p("m.csv"))
            .args(["--by", "cohort,age:18:65"]),
    );
    assert!(ev_out.contains("95% CI"), "{ev_out}");
    let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(p("ev.json")).unwrap()).unwrap();
    let (acc, n) = (ev["accuracy"].as_f64().unwrap(), ev["n"].as_u64().unwrap());
    let ci = ev["accuracy_ci"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= acc && acc <= ci[1].as_f64().unwrap(), "{ci:?} {acc}");
    assert_eq!(ev["macro_f1_ci"].as_array().unwrap().len(), 2);
    let groups = ev["subgroups"]["cohort"].as_object().unwrap();
    assert_eq!(groups.values().map(|g| g["n"].as_u64().unwrap()).sum::<u64>(), n);
    assert_eq!(groups[covid_cxr::subgroups::NO_ROW]["n"], 1);
    assert!(groups.contains_key("adult") && groups["adult"]["recall"].is_object());
    // age in bands; a value that is not a number stays a subgroup of its own
    let bands = ev["subgroups"]["age:18:65"].as_object().unwrap();
    assert_eq!(bands.values().map(|g| g["n"].as_u64().unwrap()).sum::<u64>(), n);
    for k in bands.keys() {
        assert!(["<18", "18-<65", ">=65", "1-5 (cohort)", covid_cxr::subgroups::NO_ROW].contains(&k.as_str()), "{k}");
    }
    // predict works with the chosen head
    let pred = run_ok(bin().args(["predict", "--model"]).arg(p("robust")).arg(p("split/val/covid")));
    assert!(pred.lines().count() >= 1 && pred.contains("probabilities"), "{pred}");
    // a bad column names the CSV and the column
    let o = bin()
        .args(["evaluate", "--model"])
        .arg(p("robust"))
        .arg("--data")
        .arg(p("split/val"))
        .arg("--manifest")
        .arg(p("m.csv"))
        .args(["--by", "nonesuch"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("m.csv") && err.contains("nonesuch"), "{err}");
    // seed variance of the notebook recipe
    let out = run_ok(&mut train("seeds", &["--seeds", "3"]));
    assert!(out.contains("over 3 seeds"), "{out}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(p("seeds/seeds.json")).unwrap()).unwrap();
    assert_eq!(s["seeds"].as_array().unwrap().len(), 3);
    let a = &s["summary"]["accuracy"];
    assert!(a["min"].as_f64().unwrap() <= a["mean"].as_f64().unwrap());
    assert!(a["mean"].as_f64().unwrap() <= a["max"].as_f64().unwrap());
    assert!(s["summary"]["macro_f1"]["std"].as_f64().unwrap() >= 0.0);
}
