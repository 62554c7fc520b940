//! The command line on generated data: synth, augment, split, grid, demo; and its errors.

use std::path::Path;
use std::process::Command;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_covid-cxr")).args(args).output().expect("run covid-cxr")
}

fn ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(o.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.filter(|e| e.as_ref().unwrap().path().is_file()).count()).unwrap_or(0)
}

#[test]
fn synth_augment_split_grid() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = data.to_str().unwrap();
    ok(&["synth", "--out", d, "--per-class", "5", "--seed", "7"]);
    assert_eq!(count(&data.join("covid")), 5);
    assert_eq!(count(&data.join("pneumonia")), 5);
    // deterministic: the same seed gives the same bytes
    let again = t.path().join("again");
    ok(&["synth", "--out", again.to_str().unwrap(), "--per-class", "5", "--seed", "7"]);
    assert_eq!(
        std::fs::read(data.join("normal/synth_normal_00003.png")).unwrap(),
        std::fs::read(again.join("normal/synth_normal_00003.png")).unwrap()
    );
    let covid = data.join("covid");
    let out = ok(&["augment", covid.to_str().unwrap(), "--sample", "4", "--seed", "1", "--move-into-class"]);
    assert!(out.contains("wrote 4 images"), "{out}");
    assert_eq!(count(&covid), 9);
    let split = t.path().join("split");
    let out = ok(&["split", d, split.to_str().unwrap(), "--ratio", "0.8,0.2", "--seed", "1337"]);
    assert!(out.contains("covid") && out.contains("total"), "{out}");
    assert_eq!(count(&split.join("train/covid")), 7);
    assert_eq!(count(&split.join("val/covid")), 2);
    assert_eq!(count(&split.join("train/normal")), 4);
    let grid = t.path().join("grid.png");
    let out = ok(&["grid", split.join("train").to_str().unwrap(), "--out", grid.to_str().unwrap(), "--size", "64"]);
    assert!(out.contains("[8, 3, 64, 64]"), "{out}");
    assert!(image::open(&grid).unwrap().width() > 100);
}

#[test]
fn errors_name_the_file_and_exit_non_zero() {
    let t = tempfile::tempdir().unwrap();
    let o = cli(&["split", t.path().join("missing").to_str().unwrap(), t.path().join("o").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing") && err.contains("not a folder"), "{err}");
    let o = cli(&["split", t.path().to_str().unwrap(), "x", "--ratio", "0.7,0.7"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sum to 1"));
}

#[test]
fn demo_writes_a_finished_folder_only() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("run");
    ok(&["demo", "--out", out.to_str().unwrap(), "--per-class", "6", "--quick"]);
    assert!(out.join("batch_grid.png").exists());
    assert!(out.join("split/train/covid").is_dir());
    assert!(!t.path().join(".run.partial").exists());
    // never overwrites
    let o = cli(&["demo", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    // a leftover .OUT.partial (an interrupted run's, or someone's) is refused, not deleted
    let leftover = t.path().join(".run2.partial");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("mine.txt"), b"keep").unwrap();
    let o = cli(&["demo", "--out", t.path().join("run2").to_str().unwrap(), "--per-class", "6", "--quick"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(".run2.partial") && err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(leftover.join("mine.txt")).unwrap(), b"keep");
    assert!(!t.path().join("run2").exists());
}
