//! How often marker masking fires on a folder of films, per class, and a before/after picture of
//! the first films where it did: `cargo run --release --example marker_census -- DIR [OUT.png]`.
use covid_cxr::markers::{mask_markers, MarkerMasking};

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "../shared/data/cxr-small/train".into()));
    let out = std::env::args().nth(2);
    let mut shown = Vec::new();
    let mut titles = Vec::new();
    for class in covid_cxr::imageio::list_subdirs(&dir)? {
        let files = covid_cxr::imageio::list_images(&class)?;
        let (mut hit, mut comps) = (0, 0);
        for f in &files {
            let img = covid_cxr::imageio::open_image(f)?.to_luma8();
            let (clean, rep) = mask_markers(&img, &MarkerMasking::default());
            if rep.components > 0 {
                hit += 1;
                comps += rep.components;
                if shown.len() < 12 && hit <= 2 {
                    let name = class.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    shown.push(image::DynamicImage::ImageLuma8(img).to_rgb8());
                    shown.push(image::DynamicImage::ImageLuma8(clean).to_rgb8());
                    titles.push(format!("{name}: film"));
                    titles.push(format!("masked ({} component{})", rep.components, if rep.components == 1 { "" } else { "s" }));
                }
            }
        }
        println!("{}: {hit} of {} films with a marker masked ({comps} components)", class.display(), files.len());
    }
    if let (Some(o), false) = (out, shown.is_empty()) {
        covid_cxr::plot::image_grid_rgb(&shown, &titles, 4)?.save(&o)?;
        println!("{o}");
    }
    Ok(())
}
