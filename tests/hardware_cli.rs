//! `--precision` and `--device` on the command line: parsing, the manifest's record of the choice
//! and why, the clear error for CUDA without a GPU; `explain --adaptive` reports its samples.

mod common;
use common::{bin, random_backbone, run_ok};

/// AMX bfloat16 tiles: where `auto` picks bf16 on a CPU (avx512_bf16 alone measured slower than f32).
fn amx_bf16() -> bool {
    let t = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    t.lines().find(|l| l.starts_with("flags")).is_some_and(|l| l.split_whitespace().any(|f| f == "amx_bf16"))
}

#[test]
fn precision_and_device_choices_are_recorded() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    run_ok(bin().args(["synth", "--per-class", "3", "--seed", "2", "--out"]).arg(p("data")));
    run_ok(bin().arg("split").arg(p("data")).arg(p("split")).args(["--ratio", "0.67,0.33"]));
    random_backbone(&p("w.safetensors"));
    let train = |out: &str, extra: &[&str]| {
        let mut c = bin();
        c.args(["train", "--epochs", "1", "--size", "96", "--views", "1", "--data"])
            .arg(p("split"))
            .arg("--out")
            .arg(p(out))
            .arg("--weights")
            .arg(p("w.safetensors"))
            .args(extra)
            .env("COVID_CXR_CACHE", p("cache"));
        c
    };
    let hw = |run: &str| -> serde_json::Value {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p(run).join("manifest.json")).unwrap()).unwrap();
        m["hardware"].clone()
    };
    run_ok(&mut train("f32", &["--precision", "f32", "--device", "cpu"]));
    let h = hw("f32");
    assert_eq!((h["precision"].as_str(), h["device"].as_str()), (Some("f32"), Some("cpu")), "{h}");
    assert!(h["precision_reason"].as_str().unwrap().contains("asked"), "{h}");
    // auto (the default) follows the CPU's flags
    run_ok(&mut train("auto", &[]));
    let h = hw("auto");
    let want = if amx_bf16() || tch::Cuda::is_available() { "bf16" } else { "f32" };
    assert_eq!(h["precision"], want, "{h}");
    assert!(h["precision_reason"].as_str().unwrap().starts_with("auto"), "{h}");
    // the deprecated alias
    run_ok(&mut train("alias", &["--bf16", "--device", "cpu"]));
    assert_eq!(hw("alias")["precision"], "bf16");
    // bad values: clear errors, no panic
    let o = train("bad", &["--precision", "f16"]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("f16") && !e.contains("panicked"), "{e}");
    if !tch::Cuda::is_available() {
        let o = train("cuda", &["--device", "cuda"]).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains("--device cuda") && e.contains("no CUDA"), "{e}");
        assert!(!p("cuda").exists());
        let o = bin()
            .args(["evaluate", "--device", "cuda", "--model"])
            .arg(p("f32"))
            .arg("--data")
            .arg(p("split/val"))
            .env("COVID_CXR_CACHE", p("cache"))
            .output()
            .unwrap();
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no CUDA"));
    }
    // explain --adaptive reports the samples it used
    let img = std::fs::read_dir(p("split/val/covid")).unwrap().next().unwrap().unwrap().path();
    let stem = img.file_stem().unwrap().to_string_lossy().into_owned();
    let explain = |out: &str, args: &[&str]| {
        let mut c = bin();
        c.args(["explain", "--method", "lime"])
            .args(args)
            .arg("--model")
            .arg(p("f32"))
            .arg(&img)
            .arg("--out")
            .arg(p(out))
            .env("COVID_CXR_CACHE", p("cache"));
        c
    };
    let report = |out: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p(out).join(format!("{stem}.json"))).unwrap()).unwrap()
    };
    run_ok(&mut explain("ex", &["--samples", "120", "--top-labels", "1", "--adaptive"]));
    let j = report("ex");
    let used = j["lime"]["sampling"]["samples_used"].as_u64().unwrap();
    assert!(used > 0 && used <= 120, "{j}");
    assert_eq!(j["lime"]["adaptive"]["top_k"], 5);
    assert_eq!(j["lime"]["adaptive"]["rule"], "unchanged");
    // S-LIME's gap rule: the separation of the top 5 is reported for every round judged
    run_ok(&mut explain("ex-gap", &["--samples", "220", "--top-labels", "1", "--adaptive=gap"]));
    let j = report("ex-gap");
    assert_eq!(j["lime"]["adaptive"]["rule"]["gap"]["z"], 1.645, "{j}");
    let sep = j["lime"]["sampling"]["separation"].as_array().unwrap();
    assert!(!sep.is_empty() && sep[0][0] == 150, "{j}");
    // a rule that does not exist is refused by name
    let o = explain("ex-bad", &["--adaptive=sometimes"]).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("sometimes"));
}
