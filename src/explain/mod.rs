//! Explanations of a classifier's decisions: LIME (written here from lime's sources, no LIME
//! library) with scikit-image's quickshift and SLIC superpixels, and Grad-CAM on a model's last
//! convolutional block. Figures of both are in [`crate::plot`].
//!
//! | notebook / library | here |
//! |---|---|
//! | `lime_image.LimeImageExplainer` | [`LimeImageExplainer`] |
//! | `explanation.get_image_and_mask` | [`Explanation::get_image_and_mask`] |
//! | `skimage.segmentation.quickshift`, `slic` | [`quickshift`], [`slic`] |
//! | `skimage.segmentation.mark_boundaries` | [`mark_boundaries`] |
//! | heatmap of `local_exp` | [`Explanation::heatmap`], [`crate::plot::lime_heatmap`] |
//! | pytorch-grad-cam on `Mixed_7c` | [`grad_cam`], [`CamModel`] |

pub mod bench;
pub mod colormap;
pub mod faithfulness;
pub mod gradcam;
pub mod lime;
pub mod model_glue;
pub mod segmentation;

pub use colormap::Colormap;
pub use gradcam::{cam_maps, grad_cam, grad_cam_classes, grad_cam_per_item, overlay, CamModel};
pub use lime::{
    AdaptiveSampling, Explanation, FeatureSelection, LabelExplanation, LimeConfig, LimeImageExplainer, LinearFit, StopRule,
    MaskOptions, SamplingReport,
};
pub use segmentation::{find_boundaries, mark_boundaries, quickshift, slic, BoundaryMode, Segmentation, Segments};
