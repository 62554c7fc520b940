//! # covid_cxr
//!
//! COVID-19 detection from chest X-rays with transfer learning and explanations: a Rust
//! reproduction, on libtorch, of the notebook "COVID-19 Detection from Chest X-rays Using
//! Transfer Learning", and more. One module per stage of the notebook:
//!
//! | notebook step | module |
//! |---|---|
//! | synthetic default data (beyond the notebook) | [`synth`] |
//! | Augmentor pipeline, move into class | [`augment`] |
//! | `splitfolders.ratio` | [`split`] |
//! | `transforms.Compose` | [`transforms`] |
//! | `ImageFolder`, `DataLoader` | [`data`] |
//! | LIME, quickshift, `mark_boundaries`, Grad-CAM | [`explain`] |
//! | figures (`make_grid`, curves, ...) | [`plot`] |
//!
//! A notebook needs one `use covid_cxr::prelude::*;`.

pub mod augment;
pub mod data;
pub mod error;
pub mod explain;
pub mod imageio;
pub mod plot;
pub mod split;
pub mod synth;
pub mod transforms;

pub use error::{Error, Result};

/// Everything a notebook cell needs.
pub mod prelude {
    pub use image;
    pub use ndarray;
    pub use tch;
    pub use crate::augment::{move_into_class, Pipeline};
    pub use crate::data::{Batch, DataLoader, ImageFolder};
    pub use crate::error::{Error, Result};
    pub use crate::explain::{
        grad_cam, mark_boundaries, quickshift, CamModel, Colormap, Explanation, LimeConfig, LimeImageExplainer,
        MaskOptions, Segmentation,
    };
    pub use crate::plot::{image_grid, Figure};
    pub use crate::split::{ratio as split_ratio, GroupBy, SplitConfig};
    pub use crate::synth::{generate as synth_generate, SynthConfig, CLASSES};
    pub use crate::transforms::Compose;
}
