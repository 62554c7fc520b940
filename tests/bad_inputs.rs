//! Every bad input gets a clear error naming the file and the problem, and nothing is lost.
//! Fixtures are generated in code.

use covid_cxr::prelude::*;
use covid_cxr::{imageio, Error};
use image::{DynamicImage, GrayImage, ImageFormat, Luma};
use std::io::Cursor;
use std::path::Path;

fn gray(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| Luma([((x * 7 + y * 3) % 256) as u8])))
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut b = Vec::new();
    img.write_to(&mut Cursor::new(&mut b), fmt).unwrap();
    b
}

fn cmyk_jpeg() -> Vec<u8> {
    let (w, h) = (32u16, 24u16);
    // C, M, Y, K per pixel: left half white (0,0,0,0), right half black (0,0,0,255)
    let mut data = Vec::new();
    for _y in 0..h {
        for x in 0..w {
            let k = if x < w / 2 { 0 } else { 255 };
            data.extend_from_slice(&[0, 0, 0, k]);
        }
    }
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 95);
    enc.encode(&data, w, h, jpeg_encoder::ColorType::Cmyk).unwrap();
    out
}

fn assert_decode_error(path: &Path, bytes: &[u8], needle: &str) {
    std::fs::write(path, bytes).unwrap();
    let e = imageio::open_image(path).expect_err("must fail");
    let msg = e.to_string();
    assert!(matches!(e, Error::Decode { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "error must name the file: {msg}");
    assert!(msg.to_lowercase().contains(needle), "error must say {needle:?}: {msg}");
}

#[test]
fn truncated_png() {
    let t = tempfile::tempdir().unwrap();
    let b = encode(&gray(64, 64), ImageFormat::Png);
    assert_decode_error(&t.path().join("cut.png"), &b[..b.len() * 2 / 3], "png");
}

#[test]
fn truncated_jpeg() {
    let t = tempfile::tempdir().unwrap();
    let b = encode(&gray(128, 96), ImageFormat::Jpeg);
    assert_decode_error(&t.path().join("cut.jpg"), &b[..b.len() / 2], "truncated");
}

#[test]
fn zero_byte_file() {
    let t = tempfile::tempdir().unwrap();
    assert_decode_error(&t.path().join("empty.jpg"), b"", "empty file");
}

#[test]
fn text_file_named_png() {
    let t = tempfile::tempdir().unwrap();
    assert_decode_error(&t.path().join("readme.png"), b"This is not an image, just text.\n", "not an image");
}

#[test]
fn sixteen_bit_png_is_read_with_full_range() {
    let t = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(40, 30, |x, _| Luma([(x as u16) * 1600])));
    let p = t.path().join("deep.png");
    std::fs::write(&p, encode(&img, ImageFormat::Png)).unwrap();
    let back = imageio::open_image(&p).unwrap();
    assert!(matches!(back, DynamicImage::ImageLuma16(_)));
    let g = back.to_luma8();
    assert_eq!(g.get_pixel(0, 0)[0], 0);
    assert!(g.get_pixel(39, 0)[0] > 230);
    // and it loads through the notebook transforms
    let tf = Compose::notebook_val(16);
    let x = tf.apply(&back, &mut <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0)).unwrap();
    assert_eq!(x.size(), vec![3, 16, 16]);
}

#[test]
fn cmyk_jpeg_is_converted_to_rgb() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("cmyk.jpg");
    std::fs::write(&p, cmyk_jpeg()).unwrap();
    match imageio::open_image(&p) {
        Ok(img) => {
            let rgb = img.to_rgb8();
            let left = rgb.get_pixel(2, 12)[0] as i32;
            let right = rgb.get_pixel(29, 12)[0] as i32;
            assert!((left - right).abs() > 150, "CMYK white/black halves must differ: {left} vs {right}");
        }
        Err(e) => {
            // a clear error is acceptable too, as long as it names the file and says CMYK
            let m = e.to_string();
            assert!(m.contains("cmyk.jpg") && m.to_lowercase().contains("cmyk"), "{m}");
        }
    }
}

#[test]
fn augment_skips_and_counts_unreadable_files() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("covid");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a.png"), encode(&gray(50, 40), ImageFormat::Png)).unwrap();
    std::fs::write(d.join("b.png"), b"").unwrap();
    std::fs::write(d.join("c.jpg"), b"text").unwrap();
    let rep = Pipeline::new(&d).unwrap().seed(1).flip_left_right(1.0).sample(6).unwrap();
    assert_eq!(rep.written.len(), 6);
    let names: Vec<String> =
        rep.skipped.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, vec!["b.png", "c.jpg"]);
}

#[test]
fn empty_class_folder() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("covid")).unwrap();
    std::fs::write(t.path().join("covid/a.png"), encode(&gray(8, 8), ImageFormat::Png)).unwrap();
    std::fs::create_dir_all(t.path().join("normal")).unwrap();
    std::fs::write(t.path().join("normal/notes.txt"), b"no images here").unwrap();
    let e = ImageFolder::open(t.path(), Compose::notebook_val(8)).unwrap_err().to_string();
    assert!(e.contains("normal") && e.contains("empty class folder"), "{e}");
    let out = tempfile::tempdir().unwrap();
    let e = split_ratio(t.path(), out.path().join("split"), &SplitConfig::new(&[0.8, 0.2], 1)).unwrap_err().to_string();
    assert!(e.contains("normal"), "{e}");
}

#[test]
fn non_empty_output_folder_is_refused_and_kept() {
    let t = tempfile::tempdir().unwrap();
    covid_cxr::synth::generate(&t.path().join("data"), &SynthConfig::new(2, 0)).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.txt"), b"precious").unwrap();
    let e = split_ratio(t.path().join("data"), &out, &SplitConfig::new(&[0.5, 0.5], 1)).unwrap_err();
    assert!(matches!(e, Error::WouldOverwrite { .. }), "{e}");
    assert!(e.to_string().contains("out"));
    assert_eq!(std::fs::read(out.join("mine.txt")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn move_into_class_never_overwrites() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("covid");
    std::fs::create_dir_all(d.join("output")).unwrap();
    std::fs::write(d.join("x.png"), b"original").unwrap();
    std::fs::write(d.join("output/x.png"), b"augmented").unwrap();
    std::fs::write(d.join("output/y.png"), b"augmented y").unwrap();
    let e = move_into_class(&d).unwrap_err();
    assert!(matches!(e, Error::WouldOverwrite { .. }), "{e}");
    assert!(e.to_string().contains("x.png"));
    assert_eq!(std::fs::read(d.join("x.png")).unwrap(), b"original");
    // nothing moved at all
    assert!(d.join("output/y.png").exists() && !d.join("y.png").exists());
}

#[test]
fn synth_would_overwrite_is_refused() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("covid")).unwrap();
    std::fs::write(t.path().join("covid/synth_covid_00000.png"), b"user file").unwrap();
    let e = covid_cxr::synth::generate(t.path(), &SynthConfig::new(1, 0)).unwrap_err();
    assert!(e.to_string().contains("synth_covid_00000.png"), "{e}");
    assert_eq!(std::fs::read(t.path().join("covid/synth_covid_00000.png")).unwrap(), b"user file");
}
