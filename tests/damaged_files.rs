//! Damaged image files (truncated at several lengths, flipped bytes) given to every subcommand that
//! reads images: grid, train, evaluate, predict, explain, augment, and split (which copies them). None
//! may print a Rust panic; a command that fails must name the damaged file.

mod common;
use common::{bin, run_ok};
use image::{DynamicImage, GrayImage, ImageFormat, Luma};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

fn encoded(fmt: ImageFormat) -> Vec<u8> {
    let img = DynamicImage::ImageLuma8(GrayImage::from_fn(48, 40, |x, y| Luma([((x * 5 + y * 3) % 256) as u8])));
    let mut b = Vec::new();
    img.write_to(&mut Cursor::new(&mut b), fmt).unwrap();
    b
}

/// `(file name, bytes)` of each damage: PNG and JPEG cut at several lengths, and with flipped bytes.
fn damaged() -> Vec<(String, Vec<u8>)> {
    let (png, jpg) = (encoded(ImageFormat::Png), encoded(ImageFormat::Jpeg));
    let mut out = Vec::new();
    for cut in [0, 7, 8, 33, png.len() / 3, png.len() - 12] {
        out.push((format!("png_cut_{cut}.png"), png[..cut].to_vec()));
    }
    for cut in [2, 20, jpg.len() / 2, jpg.len() - 2] {
        out.push((format!("jpg_cut_{cut}.jpg"), jpg[..cut].to_vec()));
    }
    let flip = |b: &[u8], at: &[usize]| {
        let mut b = b.to_vec();
        for &i in at {
            b[i] ^= 0xA5;
        }
        b
    };
    // PNG: the IHDR's width (CRC mismatch), then bytes inside the image data
    out.push(("png_flip_ihdr.png".into(), flip(&png, &[18, 19])));
    out.push(("png_flip_data.png".into(), flip(&png, &[png.len() / 2, png.len() / 2 + 1])));
    // JPEG: the frame header's size fields, then entropy-coded data
    out.push(("jpg_flip_header.jpg".into(), flip(&jpg, &[160, 163, 165])));
    out.push(("jpg_flip_data.jpg".into(), flip(&jpg, &[jpg.len() - 40, jpg.len() - 60])));
    out
}

/// Runs `c`; asserts no panic, and that a failure names `file`. Returns whether it succeeded.
fn no_panic(c: &mut Command, what: &str, file: &str) -> bool {
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{what} on {file}: a panic: {err}");
    assert!(o.status.code().is_some(), "{what} on {file}: killed by a signal: {err}");
    if !o.status.success() {
        assert!(err.contains(file), "{what} on {file}: the error must name the file: {err}");
    }
    o.status.success()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn damaged_images_never_panic_and_are_named() {
    let t = tempfile::tempdir().unwrap();
    let p = |s: &str| t.path().join(s);
    common::tiny_split(t.path(), 3, 8, "0.67,0.33");
    let train = |data: &Path, out: &Path| common::train_cmd(t.path(), data, out, "1", "96", "1");
    run_ok(&mut train(&p("split"), &p("run")));
    let (mut failed, mut ok) = (0, 0);
    for (i, (name, bytes)) in damaged().into_iter().enumerate() {
        // a copy of the split with the damaged file among the covid images
        let case = p(&format!("case{i}"));
        copy_dir(&p("split"), &case.join("split"));
        let bad: PathBuf = case.join("split/val/covid").join(&name);
        std::fs::write(&bad, &bytes).unwrap();
        std::fs::write(case.join("split/train/covid").join(&name), &bytes).unwrap();
        let mut results = vec![
            no_panic(bin().args(["predict", "--model"]).arg(p("run")).arg(&bad), "predict", &name),
            no_panic(
                bin()
                    .args(["explain", "--samples", "8", "--model"])
                    .arg(p("run"))
                    .arg(&bad)
                    .arg("--out")
                    .arg(case.join("explain")),
                "explain",
                &name,
            ),
            no_panic(
                bin().args(["evaluate", "--model"]).arg(p("run")).arg("--data").arg(case.join("split/val")),
                "evaluate",
                &name,
            ),
            no_panic(
                bin().arg("grid").arg(case.join("split/val")).args(["--size", "64", "--out"]).arg(case.join("g.png")),
                "grid",
                &name,
            ),
            no_panic(
                bin().arg("augment").arg(case.join("split/val/covid")).args(["--sample", "4"]),
                "augment",
                &name,
            ),
            no_panic(
                bin().arg("split").arg(case.join("split/val")).arg(case.join("resplit")).args(["--ratio", "0.5,0.5"]),
                "split",
                &name,
            ),
        ];
        // training decodes the damaged file too (a few cases: each run extracts features)
        if i % 4 == 0 {
            results.push(no_panic(&mut train(&case.join("split"), &case.join("run")), "train", &name));
        }
        for r in results {
            if r {
                ok += 1
            } else {
                failed += 1
            }
        }
    }
    // most of these files cannot be decoded: the commands failed with the file's name, not by luck
    assert!(failed >= 30, "{failed} failures, {ok} successes");
    // an image size too small for InceptionV3 is refused up front, not a libtorch abort (a panic)
    let o = common::train_cmd(t.path(), &p("split"), &p("tiny"), "1", "10", "1").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked") && err.contains("at least 75"), "{err}");
}
