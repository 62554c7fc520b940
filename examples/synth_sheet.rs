//! Writes a contact sheet of synthetic films, 4 per class: `cargo run --example synth_sheet -- OUT.png`.
use covid_cxr::synth::{chest_film, CLASSES};
fn main() -> covid_cxr::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "synth_sheet.png".into());
    let mut imgs = Vec::new();
    let mut titles = Vec::new();
    for (c, class) in CLASSES.iter().enumerate() {
        for i in 0..4u64 {
            imgs.push(image::DynamicImage::ImageLuma8(chest_film(class, 1000 * c as u64 + i)).to_rgb8());
            titles.push(class.to_string());
        }
    }
    covid_cxr::plot::image_grid_rgb(&imgs, &titles, 4)?.save(&out)?;
    println!("{out}");
    Ok(())
}
