//! Augmentation end to end on generated images: determinism, naming, image types, big films.

use covid_cxr::prelude::*;
use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::Path;

fn pipeline(dir: &Path, seed: u64) -> Pipeline {
    Pipeline::new(dir).unwrap().seed(seed).rotate(0.7, 10, 10).random_distortion(1.0, 4, 4, 8).flip_left_right(1.0)
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn same_seed_same_files_whatever_the_threads() {
    let t = tempfile::tempdir().unwrap();
    covid_cxr::synth::generate(
        &t.path().join("a"),
        &SynthConfig { per_class: 4, seed: 5, width_range: (96, 128), marker_probability: 0.3, ..Default::default() },
    )
    .unwrap();
    covid_cxr::synth::generate(
        &t.path().join("b"),
        &SynthConfig { per_class: 4, seed: 5, width_range: (96, 128), marker_probability: 0.3, ..Default::default() },
    )
    .unwrap();
    pipeline(&t.path().join("a/covid"), 11).sample(9).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| pipeline(&t.path().join("b/covid"), 11).sample(9).unwrap());
    let (fa, fb) = (files(&t.path().join("a/covid/output")), files(&t.path().join("b/covid/output")));
    assert_eq!(fa.len(), 9);
    assert_eq!(fa, fb);
    for (name, _) in &fa {
        assert!(name.starts_with("covid_original_synth_covid_000") && name.ends_with(".png"), "{name}");
    }
    // another seed, other files
    pipeline(&t.path().join("b/normal"), 12).sample(3).unwrap();
    pipeline(&t.path().join("a/normal"), 13).sample(3).unwrap();
    assert_ne!(files(&t.path().join("a/normal/output")), files(&t.path().join("b/normal/output")));
}

#[test]
fn image_types_are_kept_and_process_runs_each_once() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("mixed");
    std::fs::create_dir_all(&d).unwrap();
    DynamicImage::ImageLuma8(GrayImage::from_fn(64, 48, |x, _| Luma([x as u8 * 3]))).save(d.join("g8.png")).unwrap();
    DynamicImage::ImageLuma16(ImageBuffer::from_fn(64, 48, |x, _| Luma([x as u16 * 900])))
        .save(d.join("g16.png"))
        .unwrap();
    DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8, y as u8, 9])))
        .save(d.join("rgb.jpg"))
        .unwrap();
    DynamicImage::ImageRgba8(RgbaImage::from_fn(64, 48, |x, _| Rgba([x as u8, 1, 2, 255])))
        .save(d.join("rgba.png"))
        .unwrap();
    let rep = pipeline(&d, 1).process().unwrap();
    assert_eq!(rep.written.len(), 4);
    for w in &rep.written {
        let img = covid_cxr::imageio::open_image(w).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
        let name = w.file_name().unwrap().to_string_lossy().into_owned();
        let kind = match &img {
            DynamicImage::ImageLuma8(_) => "L8",
            DynamicImage::ImageLuma16(_) => "L16",
            DynamicImage::ImageRgb8(_) => "RGB8",
            DynamicImage::ImageRgba8(_) => "RGBA8",
            _ => "other",
        };
        let expect = if name.contains("g8.png") {
            "L8"
        } else if name.contains("g16.png") {
            "L16"
        } else if name.contains("rgb.jpg") {
            "RGB8"
        } else {
            "RGBA8"
        };
        assert_eq!(kind, expect, "{name}");
        if name.contains("rgb.jpg") {
            assert!(name.ends_with(".jpeg"), "Augmentor names by format: {name}");
        }
    }
}

#[test]
fn a_3000_by_2500_film() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("big");
    std::fs::create_dir_all(&d).unwrap();
    let film = GrayImage::from_fn(3000, 2500, |x, y| Luma([((x / 10 + y / 10) % 256) as u8]));
    DynamicImage::ImageLuma8(film).save(d.join("film.png")).unwrap();
    let rep = pipeline(&d, 2).sample(2).unwrap();
    assert_eq!(rep.written.len(), 2);
    let out = covid_cxr::imageio::open_image(&rep.written[0]).unwrap();
    assert_eq!((out.width(), out.height()), (3000, 2500));
}
