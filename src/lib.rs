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
//! | `inception_v3(pretrained=True)`, new `fc` | [`model`], [`weights`] |
//! | precision and device chosen by the hardware | [`hardware`] |
//! | training loop | [`train`], [`features`] (feature cache) |
//! | sklearn metrics, `classification_report` | [`metrics`] |
//! | saving the model, run manifest | [`checkpoint`] |
//! | evaluation, ROC, calibration, partial automation | [`evaluate`] |
//! | `plot_accuracy_loss` and the evaluation figures from a run | [`report`] |
//! | predictions for image files | [`predict`] |
//! | `torchinfo.summary(model)` | [`summary`] |
//! | the notebooks' data switch and work folders | [`workspace`] |
//!
//! A notebook needs one `use covid_cxr::prelude::*;`.

pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod explain;
pub mod features;
pub mod file_manifest;
pub mod hardware;
pub mod imageio;
pub mod markers;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod report;
pub mod robust;
pub mod seed;
pub mod shortcut;
pub mod split;
pub mod subgroups;
pub mod summary;
pub mod synth;
pub mod train;
pub mod transforms;
pub mod weights;
pub mod workspace;

pub use error::{Error, Result};

/// Everything a notebook cell needs.
pub mod prelude {
    pub use crate::augment::{move_into_class, source_of, Pipeline};
    pub use crate::data::{Batch, DataLoader, ImageFolder};
    pub use crate::error::{Error, Result};
    pub use crate::evaluate::{evaluate, Evaluation};
    pub use crate::explain::model_glue::{lime_classifier, model_view, to_batch};
    pub use crate::explain::{
        grad_cam, mark_boundaries, quickshift, AdaptiveSampling, CamModel, Colormap, Explanation, LimeConfig,
        LimeImageExplainer, MaskOptions, Segmentation,
    };
    pub use crate::checkpoint::{Manifest, WeightsRef};
    pub use crate::hardware::{DeviceChoice, HardwareChoice, PrecisionChoice};
    pub use crate::metrics::ClassificationReport;
    pub use crate::model::{InceptionVariant, Precision, TransferConfig, TransferModel};
    pub use crate::plot::{image_grid, Figure};
    pub use crate::predict::{predict_paths, Prediction};
    pub use crate::split::{ratio as split_ratio, GroupBy, SplitConfig};
    pub use crate::summary::summary;
    pub use crate::synth::{generate as synth_generate, Shortcut, SynthConfig, CLASSES};
    pub use crate::train::{train_model, History, TrainConfig, Verbosity};
    pub use crate::transforms::Compose;
    pub use crate::workspace::{DataSource, Workspace};
    pub use image;
    pub use ndarray;
    pub use tch;
}
