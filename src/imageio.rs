//! Reading and writing images safely: every failure names its file, outputs are
//! written under a temporary name and renamed, and nothing existing is overwritten.

use crate::error::{Error, IoContext, Result};
use image::{DynamicImage, ImageFormat, ImageReader};
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

/// File extensions read as images, as torchvision's `IMG_EXTENSIONS` (case-insensitive).
pub const IMG_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// JPEG quality of written images (PIL's default is 75; chest films deserve more).
pub const JPEG_QUALITY: u8 = 95;

/// Largest width or height accepted, to keep memory bounded on hostile files.
pub const MAX_SIDE: u32 = 16_384;

/// Whether `path` has an image extension (see [`IMG_EXTENSIONS`]).
///
/// ```
/// use covid_cxr::imageio::has_image_extension;
/// assert!(has_image_extension("a/b/x.JPG"));
/// assert!(!has_image_extension("notes.txt"));
/// assert!(!has_image_extension("README"));
/// ```
pub fn has_image_extension(path: impl AsRef<Path>) -> bool {
    path.as_ref()
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| IMG_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Whether a file name is hidden (starts with a dot), as split-folders skips them.
pub fn is_hidden(path: impl AsRef<Path>) -> bool {
    path.as_ref().file_name().and_then(|n| n.to_str()).map(|n| n.starts_with('.')).unwrap_or(false)
}

/// Decodes an image file of any supported format and bit depth.
///
/// 8- and 16-bit grayscale, RGB, RGBA and palette PNGs, baseline and
/// progressive JPEGs (CMYK JPEGs are converted to RGB), BMP, TIFF and WebP are
/// read. The format is taken from the content, not the extension. A zero-byte
/// file, a file that is not an image, a truncated file or an image larger than
/// [`MAX_SIDE`] is an [`Error::Decode`] naming the file.
///
/// ```no_run
/// let img = covid_cxr::imageio::open_image("xray.png")?;
/// println!("{}x{}", img.width(), img.height());
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub fn open_image(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let bytes = fs::read(path).at("read", path)?;
    decode_bytes(path, &bytes)
}

/// Decodes image `bytes` that came from `path` (used in error messages).
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    if bytes.is_empty() {
        return Err(Error::decode(path, "empty file (0 bytes)"));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| Error::decode(path, e))?;
    let format = match reader.format() {
        Some(f) => f,
        None => {
            let head: String =
                bytes.iter().take(16).map(|&b| if (32..127).contains(&b) { b as char } else { '.' }).collect();
            return Err(Error::decode(path, format!("not an image: unrecognised content (starts with {head:?})")));
        }
    };
    if format == ImageFormat::Jpeg && !bytes.windows(2).rev().take(1 << 16).any(|w| w == [0xFF, 0xD9]) {
        // JPEG decoders fill a cut-off scan with grey without complaint: catch it here.
        return Err(Error::decode(path, "truncated JPEG data (no end-of-image marker)"));
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| Error::decode(path, describe_decode_error(format, &e)))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::decode(path, "image has zero width or height"));
    }
    Ok(img)
}

fn describe_decode_error(format: ImageFormat, e: &image::ImageError) -> String {
    let name = format!("{format:?}").to_uppercase();
    let msg = e.to_string();
    let lower = msg.to_lowercase();
    if lower.contains("eof") || lower.contains("end of") || lower.contains("truncat") || lower.contains("unexpected") {
        format!("truncated or corrupt {name} data ({msg})")
    } else {
        format!("{name}: {msg}")
    }
}

/// A sibling temporary path for `dest`, hidden and marked as partial.
pub fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let pid = std::process::id();
    let nonce: u64 = rand::random();
    dest.with_file_name(format!(".{name}.{pid}.{nonce:016x}.partial"))
}

/// Writes `bytes` to `dest` atomically: to a temporary name in the same folder,
/// flushed, then renamed. With `overwrite = false`, an existing `dest` is an
/// [`Error::WouldOverwrite`] and is left untouched.
pub fn write_atomic(dest: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    write_atomic_with(dest, bytes, overwrite, true)
}

/// [`write_atomic`], with `sync = false` to skip the `fsync` before the rename (bulk outputs such
/// as augmented images: a crash still never leaves a partial file under the final name; only a
/// power cut could leave an empty one).
pub fn write_atomic_with(dest: &Path, bytes: &[u8], overwrite: bool, sync: bool) -> Result<()> {
    if !overwrite && dest.exists() {
        return Err(Error::WouldOverwrite { path: dest.to_path_buf(), reason: "file exists".into() });
    }
    let tmp = temp_path_for(dest);
    let res = (|| {
        let mut f = fs::File::create(&tmp).at("create", &tmp)?;
        f.write_all(bytes).at("write", &tmp)?;
        if sync {
            f.sync_all().at("sync", &tmp)?;
        }
        drop(f);
        if overwrite {
            fs::rename(&tmp, dest).at("rename", dest)
        } else {
            // hard_link fails if dest exists: no race can make us overwrite.
            match fs::hard_link(&tmp, dest) {
                Ok(()) => {
                    let _ = fs::remove_file(&tmp);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(Error::WouldOverwrite { path: dest.to_path_buf(), reason: "file exists".into() })
                }
                Err(_) => {
                    if dest.exists() {
                        return Err(Error::WouldOverwrite { path: dest.to_path_buf(), reason: "file exists".into() });
                    }
                    fs::rename(&tmp, dest).at("rename", dest)
                }
            }
        }
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Encodes `img` in the format given by `dest`'s extension and writes it atomically
/// (see [`write_atomic`]).
pub fn save_image(img: &DynamicImage, dest: &Path, overwrite: bool) -> Result<()> {
    let format =
        ImageFormat::from_path(dest).map_err(|e| Error::Encode { path: dest.to_path_buf(), reason: e.to_string() })?;
    let img = match format {
        // JPEG holds 8-bit L or RGB only.
        ImageFormat::Jpeg => match img {
            DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img.clone(),
            DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => {
                DynamicImage::ImageLuma8(img.to_luma8())
            }
            _ => DynamicImage::ImageRgb8(img.to_rgb8()),
        },
        _ => img.clone(),
    };
    let mut buf = Vec::new();
    if format == ImageFormat::Jpeg {
        // jpeg-encoder: a fast (SIMD) baseline encoder, quality 95.
        let enc_err =
            |e: jpeg_encoder::EncodingError| Error::Encode { path: dest.to_path_buf(), reason: e.to_string() };
        let enc = jpeg_encoder::Encoder::new(&mut buf, JPEG_QUALITY);
        let (w, h) = (u16::try_from(img.width()), u16::try_from(img.height()));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(Error::Encode {
                path: dest.to_path_buf(),
                reason: "JPEG holds at most 65535 x 65535 pixels".into(),
            });
        };
        match &img {
            DynamicImage::ImageLuma8(g) => {
                enc.encode(g.as_raw(), w, h, jpeg_encoder::ColorType::Luma).map_err(enc_err)?
            }
            other => enc.encode(other.to_rgb8().as_raw(), w, h, jpeg_encoder::ColorType::Rgb).map_err(enc_err)?,
        }
    } else {
        img.write_to(&mut Cursor::new(&mut buf), format)
            .map_err(|e| Error::Encode { path: dest.to_path_buf(), reason: e.to_string() })?;
    }
    write_atomic_with(dest, &buf, overwrite, false)
}

/// Lists the image files directly inside `dir`, sorted by name, skipping hidden
/// files and files without an image extension.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at("list folder", dir)? {
        let entry = entry.at("list folder", dir)?;
        let p = entry.path();
        if p.is_file() && !is_hidden(&p) && has_image_extension(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Lists the sub-folders of `dir` (not hidden), sorted by name.
pub fn list_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at("list folder", dir)? {
        let entry = entry.at("list folder", dir)?;
        let p = entry.path();
        if p.is_dir() && !is_hidden(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut b = Vec::new();
        img.write_to(&mut Cursor::new(&mut b), ImageFormat::Png).unwrap();
        b
    }

    #[test]
    fn zero_byte_file_is_named_error() {
        let e = decode_bytes(Path::new("x/empty.png"), &[]).unwrap_err().to_string();
        assert!(e.contains("x/empty.png") && e.contains("empty file"), "{e}");
    }

    #[test]
    fn text_named_png_is_error() {
        let e = decode_bytes(Path::new("notes.png"), b"hello, I am text\n").unwrap_err().to_string();
        assert!(e.contains("notes.png") && e.contains("not an image"), "{e}");
    }

    #[test]
    fn truncated_png_is_error() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * y) as u8])));
        let b = png_bytes(&img);
        let e = decode_bytes(Path::new("t.png"), &b[..b.len() / 2]).unwrap_err().to_string();
        assert!(e.contains("t.png"), "{e}");
    }

    #[test]
    fn sixteen_bit_png_scales() {
        let img = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(4, 4, |x, _| {
            image::Luma([if x == 0 { 0u16 } else { 65535 }])
        }));
        let d = decode_bytes(Path::new("a.png"), &png_bytes(&img)).unwrap();
        let g = d.to_luma8();
        assert_eq!(g.get_pixel(0, 0)[0], 0);
        assert_eq!(g.get_pixel(1, 0)[0], 255);
    }

    #[test]
    fn write_atomic_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one", false).unwrap();
        let e = write_atomic(&p, b"two", false).unwrap_err();
        assert!(matches!(e, Error::WouldOverwrite { .. }));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        // no partial files left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
