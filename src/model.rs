//! InceptionV3 in native tch, with torchvision's parameter names, the auxiliary classifier, and
//! the notebook's transfer model (frozen backbone + a small trainable head).
//!
//! ```text
//! model = models.inception_v3(pretrained=True)          TransferModel::new(&TransferConfig::default())?
//! for p in model.parameters(): p.requires_grad = False    (backbone in its own frozen VarStore)
//! model.fc = nn.Sequential(Linear(2048,128), ReLU,        head VarStore: fc.0, fc.2, fc.5
//!     Linear(128,64), ReLU, Dropout(0.5), Linear(64,3))
//! ```
//!
//! Two [`InceptionVariant`]s share the parameter names and differ in two pooling details:
//! - [`InceptionVariant::Torchvision`]: torchvision's `Inception3`, average pools in the pool
//!   branches count the zero padding (`count_include_pad=True`).
//! - [`InceptionVariant::Fid2015`]: Google's 2015 TensorFlow graph (the weights of
//!   `fid_default_1.pt`, see [`crate::weights`]): the 3x3 average pools of the pool branches
//!   exclude the padding (`count_include_pad=False`) and the pool branch of the last block
//!   (`Mixed_7c`) is a 3x3 **max** pool (stride 1, padding 1); `Mixed_7b` keeps an average pool.
//!
//! Both use batch norm with eps 0.001; the 2015 weights have no batch-norm scale (gamma = 1).
//!
//! ## Input
//! The crate's transforms give `ToTensor` + `Normalize(0.5, 0.5)`, i.e. `x = p / 127.5 - 1` for an
//! 8-bit pixel `p`. Google's 2015 graph expects `(p - 128) / 128`. With
//! [`TransferConfig::exact_fid_input`] (the default for `Fid2015`) the model maps
//! `x -> (127.5 x - 0.5) / 128`, which is exactly `(p - 128) / 128`; without it the two differ by
//! at most 0.0078 (about 1/128).
//!
//! ## Speed
//! Inference of the frozen backbone uses batch norm folded into the convolutions, channels-last
//! memory layout and optionally bfloat16 ([`Precision`]). Measured on a 2-core Xeon with
//! `avx512_bf16` but no AMX, batch 8, 2 libtorch threads (`bench/run.sh`, BENCHMARKS.md): eager
//! f32 11.4 images/s, folded + channels-last f32 17.6, bf16 12.1 (0.7x f32). On a CPU without
//! native bfloat16, bf16 is about 7x slower than f32: the command line's `--precision auto`
//! ([`crate::hardware`]) uses bf16 only with AMX or on a GPU. Folded f32 features equal the eager
//! ones within 1.2e-5; bf16 features have a cosine similarity > 0.99 with them.
//!
//! ## Device
//! [`TransferModel::to_device`] moves the model (e.g. to CUDA); forward passes move their inputs
//! to the model's device, and [`TransferModel::features`] and [`TransferModel::predict_proba`]
//! return CPU tensors.
//!
//! ## Notebook defects
//! [`NotebookDefects`] reproduces, only when asked, the notebook's double softmax and its frozen
//! 1000-class auxiliary head whose loss against 3-class labels inflates the printed loss.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use tch::{nn, Device, Kind, Tensor};

/// Size of the pooled feature vector of InceptionV3.
pub const NUM_FEATURES: i64 = 2048;

/// The two block layouts for which pretrained weights exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InceptionVariant {
    /// torchvision's `Inception3` (average pools count the padding).
    Torchvision,
    /// Google's 2015 graph (average pools exclude the padding; max pool in `Mixed_7c`'s pool branch).
    Fid2015,
}

impl InceptionVariant {
    /// `"torchvision"` or `"fid2015"`.
    pub fn name(self) -> &'static str {
        match self {
            InceptionVariant::Torchvision => "torchvision",
            InceptionVariant::Fid2015 => "fid2015",
        }
    }
    /// Parses [`InceptionVariant::name`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "torchvision" => Ok(InceptionVariant::Torchvision),
            "fid2015" => Ok(InceptionVariant::Fid2015),
            _ => Err(Error::invalid(format!("unknown InceptionV3 variant {s:?} (torchvision, fid2015)"))),
        }
    }
}

/// Numeric precision of the fast (inference-only) backbone path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 (results equal the eager path within about 1e-5).
    #[default]
    F32,
    /// bfloat16 weights and activations: faster on GPUs and CPUs with AMX; 0.7x f32 measured on a
    /// CPU with `avx512_bf16` alone, several times *slower* on CPUs without native bfloat16
    /// (libtorch emulates it); features differ by about 1% relative.
    /// [`crate::hardware::choose_precision`] picks it only with AMX or on a GPU.
    Bf16,
}

impl Precision {
    fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// Converts a 4-d tensor to the channels-last memory layout (same shape, NHWC strides).
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy)]
struct Fwd {
    /// Batch norm in training mode (batch statistics). The crate keeps this false for the backbone.
    train: bool,
    /// Use folded batch norm in this dtype (no gradient to the backbone).
    fused: Option<Kind>,
}

const EVAL: Fwd = Fwd { train: false, fused: None };

/// Conv (no bias) + batch norm (eps 0.001) + ReLU: torchvision's `BasicConv2d`
/// (`<name>.conv.weight`, `<name>.bn.{weight,bias,running_mean,running_var}`).
#[derive(Debug)]
pub struct BasicConv2d {
    /// Convolution weight, `out x in x kh x kw`.
    pub weight: Tensor,
    /// Batch-norm scale (gamma).
    pub bn_weight: Tensor,
    /// Batch-norm shift (beta).
    pub bn_bias: Tensor,
    /// Batch-norm running mean.
    pub running_mean: Tensor,
    /// Batch-norm running variance.
    pub running_var: Tensor,
    stride: [i64; 2],
    padding: [i64; 2],
    fused: Mutex<Option<(Kind, Tensor, Tensor)>>,
}

impl BasicConv2d {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, k: [i64; 2], stride: i64, pad: [i64; 2]) -> Self {
        let c = p / "conv";
        let b = p / "bn";
        BasicConv2d {
            weight: c.var("weight", &[c_out, c_in, k[0], k[1]], nn::init::DEFAULT_KAIMING_UNIFORM),
            bn_weight: b.var("weight", &[c_out], nn::Init::Const(1.0)),
            bn_bias: b.var("bias", &[c_out], nn::Init::Const(0.0)),
            running_mean: b.zeros_no_train("running_mean", &[c_out]),
            running_var: b.ones_no_train("running_var", &[c_out]),
            stride: [stride, stride],
            padding: pad,
            fused: Mutex::new(None),
        }
    }
    fn sq(p: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, pad: i64) -> Self {
        Self::new(p, c_in, c_out, [k, k], stride, [pad, pad])
    }

    /// Folded conv weight and bias: `w * g / sqrt(var + eps)`, `beta - mean * g / sqrt(var + eps)`.
    fn folded(&self, kind: Kind) -> (Tensor, Tensor) {
        let mut g = self.fused.lock().unwrap();
        if let Some((k, w, b)) = g.as_ref() {
            if *k == kind {
                return (w.shallow_clone(), b.shallow_clone());
            }
        }
        let (w, b) = tch::no_grad(|| {
            let scale = &self.bn_weight / (&self.running_var + 1e-3).sqrt();
            let w = &self.weight * scale.view([-1, 1, 1, 1]);
            let b = &self.bn_bias - &self.running_mean * &scale;
            (to_channels_last(&w.to_kind(kind)), b.to_kind(kind))
        });
        *g = Some((kind, w.shallow_clone(), b.shallow_clone()));
        (w, b)
    }

    /// Drops the folded weights (call after the parameters changed).
    fn invalidate(&self) {
        *self.fused.lock().unwrap() = None;
    }

    fn fwd(&self, x: &Tensor, f: Fwd) -> Tensor {
        if let Some(kind) = f.fused {
            let (w, b) = self.folded(kind);
            return x.conv2d(&w, Some(&b), self.stride, self.padding, [1, 1], 1).relu();
        }
        x.conv2d(&self.weight, None::<&Tensor>, self.stride, self.padding, [1, 1], 1)
            .batch_norm(
                Some(&self.bn_weight),
                Some(&self.bn_bias),
                Some(&self.running_mean),
                Some(&self.running_var),
                f.train,
                0.1,
                1e-3,
                false,
            )
            .relu()
    }
}

/// Pooling of a pool branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    AvgIncludePad,
    AvgExcludePad,
    Max,
}

fn pool3(x: &Tensor, k: PoolKind) -> Tensor {
    match k {
        PoolKind::AvgIncludePad => x.avg_pool2d([3, 3], [1, 1], [1, 1], false, true, None),
        PoolKind::AvgExcludePad => x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None),
        PoolKind::Max => x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false),
    }
}

fn max_pool_s2(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

fn chain(x: &Tensor, convs: &[BasicConv2d], f: Fwd) -> Tensor {
    let mut y = convs[0].fwd(x, f);
    for c in &convs[1..] {
        y = c.fwd(&y, f);
    }
    y
}

/// One stage of the network, in order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Block {
    Conv(BasicConv2d),
    MaxPool,
    /// InceptionA: 1x1 | 5x5 | 3x3dbl | pool.
    A {
        b1: BasicConv2d,
        b5: Vec<BasicConv2d>,
        b3: Vec<BasicConv2d>,
        bp: BasicConv2d,
        pool: PoolKind,
    },
    /// InceptionB (Mixed_6a): 3x3/2 | 3x3dbl/2 | max pool.
    B {
        b3: BasicConv2d,
        b3d: Vec<BasicConv2d>,
    },
    /// InceptionC: 1x1 | 7x7 | 7x7dbl | pool.
    C {
        b1: BasicConv2d,
        b7: Vec<BasicConv2d>,
        b7d: Vec<BasicConv2d>,
        bp: BasicConv2d,
        pool: PoolKind,
    },
    /// InceptionD (Mixed_7a): 3x3/2 | 7x7x3/2 | max pool.
    D {
        b3: Vec<BasicConv2d>,
        b7: Vec<BasicConv2d>,
    },
    /// InceptionE: 1x1 | 3x3 (1x3, 3x1) | 3x3dbl (1x3, 3x1) | pool.
    E {
        b1: BasicConv2d,
        b3: [BasicConv2d; 3],
        b3d: [BasicConv2d; 4],
        bp: BasicConv2d,
        pool: PoolKind,
    },
}

impl Block {
    fn fwd(&self, x: &Tensor, f: Fwd) -> Tensor {
        match self {
            Block::Conv(c) => c.fwd(x, f),
            Block::MaxPool => max_pool_s2(x),
            Block::A { b1, b5, b3, bp, pool } => {
                Tensor::cat(&[b1.fwd(x, f), chain(x, b5, f), chain(x, b3, f), bp.fwd(&pool3(x, *pool), f)], 1)
            }
            Block::B { b3, b3d } => Tensor::cat(&[b3.fwd(x, f), chain(x, b3d, f), max_pool_s2(x)], 1),
            Block::C { b1, b7, b7d, bp, pool } => {
                Tensor::cat(&[b1.fwd(x, f), chain(x, b7, f), chain(x, b7d, f), bp.fwd(&pool3(x, *pool), f)], 1)
            }
            Block::D { b3, b7 } => Tensor::cat(&[chain(x, b3, f), chain(x, b7, f), max_pool_s2(x)], 1),
            Block::E { b1, b3, b3d, bp, pool } => {
                let a = b3[0].fwd(x, f);
                let b = b3d[1].fwd(&b3d[0].fwd(x, f), f);
                Tensor::cat(
                    &[
                        b1.fwd(x, f),
                        b3[1].fwd(&a, f),
                        b3[2].fwd(&a, f),
                        b3d[2].fwd(&b, f),
                        b3d[3].fwd(&b, f),
                        bp.fwd(&pool3(x, *pool), f),
                    ],
                    1,
                )
            }
        }
    }

    /// The convolutions in torchvision's registration order (= the 2015 graph's order).
    fn convs(&self) -> Vec<&BasicConv2d> {
        match self {
            Block::Conv(c) => vec![c],
            Block::MaxPool => vec![],
            Block::A { b1, b5, b3, bp, .. } => {
                let mut v = vec![b1];
                v.extend(b5.iter());
                v.extend(b3.iter());
                v.push(bp);
                v
            }
            Block::B { b3, b3d } => std::iter::once(b3).chain(b3d.iter()).collect(),
            Block::C { b1, b7, b7d, bp, .. } => {
                let mut v = vec![b1];
                v.extend(b7.iter());
                v.extend(b7d.iter());
                v.push(bp);
                v
            }
            Block::D { b3, b7 } => b3.iter().chain(b7.iter()).collect(),
            Block::E { b1, b3, b3d, bp, .. } => {
                let mut v = vec![b1];
                v.extend(b3.iter());
                v.extend(b3d.iter());
                v.push(bp);
                v
            }
        }
    }
}

fn inception_a(p: &nn::Path, c_in: i64, c_pool: i64, pool: PoolKind) -> Block {
    Block::A {
        b1: BasicConv2d::sq(&(p / "branch1x1"), c_in, 64, 1, 1, 0),
        b5: vec![
            BasicConv2d::sq(&(p / "branch5x5_1"), c_in, 48, 1, 1, 0),
            BasicConv2d::sq(&(p / "branch5x5_2"), 48, 64, 5, 1, 2),
        ],
        b3: vec![
            BasicConv2d::sq(&(p / "branch3x3dbl_1"), c_in, 64, 1, 1, 0),
            BasicConv2d::sq(&(p / "branch3x3dbl_2"), 64, 96, 3, 1, 1),
            BasicConv2d::sq(&(p / "branch3x3dbl_3"), 96, 96, 3, 1, 1),
        ],
        bp: BasicConv2d::sq(&(p / "branch_pool"), c_in, c_pool, 1, 1, 0),
        pool,
    }
}

fn inception_b(p: &nn::Path, c_in: i64) -> Block {
    Block::B {
        b3: BasicConv2d::sq(&(p / "branch3x3"), c_in, 384, 3, 2, 0),
        b3d: vec![
            BasicConv2d::sq(&(p / "branch3x3dbl_1"), c_in, 64, 1, 1, 0),
            BasicConv2d::sq(&(p / "branch3x3dbl_2"), 64, 96, 3, 1, 1),
            BasicConv2d::sq(&(p / "branch3x3dbl_3"), 96, 96, 3, 2, 0),
        ],
    }
}

fn inception_c(p: &nn::Path, c_in: i64, c7: i64, pool: PoolKind) -> Block {
    let (h, v) = ([1, 7], [7, 1]);
    let (ph, pv) = ([0, 3], [3, 0]);
    Block::C {
        b1: BasicConv2d::sq(&(p / "branch1x1"), c_in, 192, 1, 1, 0),
        b7: vec![
            BasicConv2d::sq(&(p / "branch7x7_1"), c_in, c7, 1, 1, 0),
            BasicConv2d::new(&(p / "branch7x7_2"), c7, c7, h, 1, ph),
            BasicConv2d::new(&(p / "branch7x7_3"), c7, 192, v, 1, pv),
        ],
        b7d: vec![
            BasicConv2d::sq(&(p / "branch7x7dbl_1"), c_in, c7, 1, 1, 0),
            BasicConv2d::new(&(p / "branch7x7dbl_2"), c7, c7, v, 1, pv),
            BasicConv2d::new(&(p / "branch7x7dbl_3"), c7, c7, h, 1, ph),
            BasicConv2d::new(&(p / "branch7x7dbl_4"), c7, c7, v, 1, pv),
            BasicConv2d::new(&(p / "branch7x7dbl_5"), c7, 192, h, 1, ph),
        ],
        bp: BasicConv2d::sq(&(p / "branch_pool"), c_in, 192, 1, 1, 0),
        pool,
    }
}

fn inception_d(p: &nn::Path, c_in: i64) -> Block {
    Block::D {
        b3: vec![
            BasicConv2d::sq(&(p / "branch3x3_1"), c_in, 192, 1, 1, 0),
            BasicConv2d::sq(&(p / "branch3x3_2"), 192, 320, 3, 2, 0),
        ],
        b7: vec![
            BasicConv2d::sq(&(p / "branch7x7x3_1"), c_in, 192, 1, 1, 0),
            BasicConv2d::new(&(p / "branch7x7x3_2"), 192, 192, [1, 7], 1, [0, 3]),
            BasicConv2d::new(&(p / "branch7x7x3_3"), 192, 192, [7, 1], 1, [3, 0]),
            BasicConv2d::sq(&(p / "branch7x7x3_4"), 192, 192, 3, 2, 0),
        ],
    }
}

fn inception_e(p: &nn::Path, c_in: i64, pool: PoolKind) -> Block {
    Block::E {
        b1: BasicConv2d::sq(&(p / "branch1x1"), c_in, 320, 1, 1, 0),
        b3: [
            BasicConv2d::sq(&(p / "branch3x3_1"), c_in, 384, 1, 1, 0),
            BasicConv2d::new(&(p / "branch3x3_2a"), 384, 384, [1, 3], 1, [0, 1]),
            BasicConv2d::new(&(p / "branch3x3_2b"), 384, 384, [3, 1], 1, [1, 0]),
        ],
        b3d: [
            BasicConv2d::sq(&(p / "branch3x3dbl_1"), c_in, 448, 1, 1, 0),
            BasicConv2d::sq(&(p / "branch3x3dbl_2"), 448, 384, 3, 1, 1),
            BasicConv2d::new(&(p / "branch3x3dbl_3a"), 384, 384, [1, 3], 1, [0, 1]),
            BasicConv2d::new(&(p / "branch3x3dbl_3b"), 384, 384, [3, 1], 1, [1, 0]),
        ],
        bp: BasicConv2d::sq(&(p / "branch_pool"), c_in, 192, 1, 1, 0),
        pool,
    }
}

/// Names of the backbone stages, in order (max pools are `"maxpool1"`, `"maxpool2"`).
pub const BLOCK_NAMES: [&str; 18] = [
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
];

/// Index in [`BLOCK_NAMES`] of `Mixed_6e`, whose output feeds the auxiliary classifier.
const MIXED_6E: usize = 14;

/// The InceptionV3 feature extractor (everything up to and including `Mixed_7c`), torchvision's
/// parameter names, no classifier.
#[derive(Debug)]
pub struct InceptionV3 {
    blocks: Vec<Block>,
    /// The block layout.
    pub variant: InceptionVariant,
}

impl InceptionV3 {
    /// Creates the backbone's variables under `p` (randomly initialised).
    pub fn new(p: &nn::Path, variant: InceptionVariant) -> Self {
        let fid = variant == InceptionVariant::Fid2015;
        let avg = if fid { PoolKind::AvgExcludePad } else { PoolKind::AvgIncludePad };
        let last = if fid { PoolKind::Max } else { PoolKind::AvgIncludePad };
        let blocks = vec![
            Block::Conv(BasicConv2d::sq(&(p / "Conv2d_1a_3x3"), 3, 32, 3, 2, 0)),
            Block::Conv(BasicConv2d::sq(&(p / "Conv2d_2a_3x3"), 32, 32, 3, 1, 0)),
            Block::Conv(BasicConv2d::sq(&(p / "Conv2d_2b_3x3"), 32, 64, 3, 1, 1)),
            Block::MaxPool,
            Block::Conv(BasicConv2d::sq(&(p / "Conv2d_3b_1x1"), 64, 80, 1, 1, 0)),
            Block::Conv(BasicConv2d::sq(&(p / "Conv2d_4a_3x3"), 80, 192, 3, 1, 0)),
            Block::MaxPool,
            inception_a(&(p / "Mixed_5b"), 192, 32, avg),
            inception_a(&(p / "Mixed_5c"), 256, 64, avg),
            inception_a(&(p / "Mixed_5d"), 288, 64, avg),
            inception_b(&(p / "Mixed_6a"), 288),
            inception_c(&(p / "Mixed_6b"), 768, 128, avg),
            inception_c(&(p / "Mixed_6c"), 768, 160, avg),
            inception_c(&(p / "Mixed_6d"), 768, 160, avg),
            inception_c(&(p / "Mixed_6e"), 768, 192, avg),
            inception_d(&(p / "Mixed_7a"), 768),
            inception_e(&(p / "Mixed_7b"), 1280, avg),
            inception_e(&(p / "Mixed_7c"), 2048, last),
        ];
        InceptionV3 { blocks, variant }
    }

    /// All 94 convolution layers in order (the order of the 2015 graph and of torchvision).
    pub fn conv_layers(&self) -> Vec<&BasicConv2d> {
        self.blocks.iter().flat_map(|b| b.convs()).collect()
    }

    /// Drops cached folded weights (after loading new parameters).
    pub fn invalidate_fused(&self) {
        for c in self.conv_layers() {
            c.invalidate();
        }
    }

    fn run(&self, x: &Tensor, from: usize, to: usize, f: Fwd) -> Tensor {
        let mut y = x.shallow_clone();
        for b in &self.blocks[from..to] {
            y = b.fwd(&y, f);
        }
        y
    }

    /// Block `i` of [`BLOCK_NAMES`] alone (eager f32, eval-mode batch norm): for summaries and
    /// inspection.
    pub fn forward_block(&self, i: usize, x: &Tensor) -> Tensor {
        self.run(x, i, i + 1, EVAL)
    }

    /// `Mixed_7c`'s activation (`N x 2048 x 8 x 8` for 299 x 299 input), eager f32, batch norm
    /// in eval mode, differentiable.
    pub fn forward_mixed_7c(&self, x: &Tensor) -> Tensor {
        self.run(x, 0, self.blocks.len(), EVAL)
    }

    /// Pooled features `N x 2048` (eager, eval-mode batch norm, differentiable).
    pub fn features(&self, x: &Tensor) -> Tensor {
        pool_flat(&self.forward_mixed_7c(x))
    }

    /// Pooled features with batch norm in training mode (each batch's own statistics), as PyTorch runs
    /// a frozen backbone after the original notebook's `model.train()`; like PyTorch, it also moves the
    /// running statistics (momentum 0.1). For measuring that difference only: the crate's training
    /// keeps the backbone's batch norm on its running statistics.
    pub fn features_batch_statistics(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| pool_flat(&self.run(x, 0, self.blocks.len(), Fwd { train: true, fused: None })))
    }
}

/// Global average pooling and flattening: `N x C x H x W -> N x C`.
pub fn pool_flat(a: &Tensor) -> Tensor {
    a.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}

/// torchvision's `InceptionAux`: avg pool 5/3, 1x1 conv to 128, 5x5 conv to 768, global pool, fc.
#[derive(Debug)]
pub struct AuxLogits {
    conv0: BasicConv2d,
    conv1: BasicConv2d,
    fc: nn::Linear,
}

impl AuxLogits {
    /// Creates `AuxLogits.conv0`, `AuxLogits.conv1` and `AuxLogits.fc` under `p`.
    pub fn new(p: &nn::Path, num_classes: i64) -> Self {
        AuxLogits {
            conv0: BasicConv2d::sq(&(p / "conv0"), 768, 128, 1, 1, 0),
            conv1: BasicConv2d::sq(&(p / "conv1"), 128, 768, 5, 1, 0),
            fc: nn::linear(p / "fc", 768, num_classes, Default::default()),
        }
    }
    /// Logits from `Mixed_6e`'s activation (`N x 768 x 17 x 17`).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.avg_pool2d([5, 5], [3, 3], [0, 0], false, true, None);
        let y = self.conv1.fwd(&self.conv0.fwd(&y, EVAL), EVAL);
        pool_flat(&y).apply(&self.fc)
    }
}

/// The notebook's mistakes, reproducible on request only (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotebookDefects {
    /// Softmax at the end of the model, then cross-entropy on its output (a double softmax).
    pub double_softmax: bool,
    /// The auxiliary classifier keeps 1000 (ImageNet) classes and is frozen; its loss against the
    /// 3-class labels is still added (x0.4) to the training loss.
    pub frozen_1000_class_aux: bool,
}

/// Configuration of the [`TransferModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    /// Backbone layout (must match the weights).
    pub variant: InceptionVariant,
    /// Number of output classes (3 in the notebook).
    pub num_classes: i64,
    /// Hidden sizes of the head (128, 64 in the notebook).
    pub hidden: (i64, i64),
    /// Dropout before the last linear layer (0.5), and on the pooled features in training
    /// (torchvision's `Inception3.dropout`, 0.5).
    pub dropout: f64,
    /// Build the auxiliary classifier (used in training by the uncached path).
    pub aux: bool,
    /// Map the crate's `[-1, 1]` input exactly to the 2015 graph's `(p - 128) / 128`.
    pub exact_fid_input: bool,
    /// Precision of the fast inference path of the frozen backbone.
    pub precision: Precision,
    /// Backbone blocks (counted from the end: 1 = Mixed_7c) trained too; 0 = frozen backbone.
    pub fine_tune_blocks: usize,
    /// Reproduce the notebook's defects.
    pub defects: NotebookDefects,
    /// Shape of the head (default: the notebook's); absent in older manifests.
    #[serde(default)]
    pub head: HeadSpec,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            variant: InceptionVariant::Fid2015,
            num_classes: 3,
            hidden: (128, 64),
            dropout: 0.5,
            aux: true,
            exact_fid_input: true,
            precision: Precision::F32,
            fine_tune_blocks: 0,
            defects: NotebookDefects::default(),
            head: HeadSpec::default(),
        }
    }
}

/// Kind of classifier head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The notebook's `Linear(2048,128) ReLU Linear(128,64) ReLU Dropout Linear(64,C)`.
    #[default]
    Mlp,
    /// One linear layer `Linear(2048,C)` (multinomial logistic regression).
    Linear,
}

/// Shape of the classifier head: its kind, the number of ensemble members (their class
/// probabilities are averaged) and whether the features are standardised first (with the
/// training features' mean and standard deviation, stored in the checkpoint as `fc.norm.mean`
/// and `fc.norm.std`). The default is the notebook's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSpec {
    /// Kind of every member.
    pub kind: HeadKind,
    /// Ensemble members (1: a single head, named as in the notebook).
    pub members: usize,
    /// Standardise the features before the head.
    pub standardize: bool,
}

impl Default for HeadSpec {
    fn default() -> Self {
        HeadSpec { kind: HeadKind::Mlp, members: 1, standardize: false }
    }
}

/// One member of the head.
#[derive(Debug)]
enum Member {
    Mlp { l0: nn::Linear, l2: nn::Linear, l5: nn::Linear },
    Linear(nn::Linear),
}

/// The classifier head `fc`. The notebook's (the default [`HeadSpec`]) is
/// Linear(2048,128) ReLU Linear(128,64) ReLU Dropout Linear(64,C), named `fc.0`, `fc.2`, `fc.5` as
/// torchvision's `nn.Sequential` would name them. A linear head is `fc.lin`; the members of an
/// ensemble live under `fc.m0`, `fc.m1`, ...; standardisation statistics under `fc.norm`.
#[derive(Debug)]
pub struct Head {
    members: Vec<Member>,
    norm: Option<(Tensor, Tensor)>,
    dropout: f64,
}

impl Head {
    /// Creates the notebook's head `fc.0`, `fc.2`, `fc.5` under `p` (PyTorch's default init).
    pub fn new(p: &nn::Path, hidden: (i64, i64), num_classes: i64, dropout: f64) -> Self {
        Self::with_spec(p, &HeadSpec::default(), hidden, num_classes, dropout)
    }

    /// Creates a head of shape `spec` under `p` (PyTorch's default init, from libtorch's RNG).
    pub fn with_spec(p: &nn::Path, spec: &HeadSpec, hidden: (i64, i64), num_classes: i64, dropout: f64) -> Self {
        let member = |q: &nn::Path| match spec.kind {
            HeadKind::Mlp => Member::Mlp {
                l0: nn::linear(q / "0", NUM_FEATURES, hidden.0, Default::default()),
                l2: nn::linear(q / "2", hidden.0, hidden.1, Default::default()),
                l5: nn::linear(q / "5", hidden.1, num_classes, Default::default()),
            },
            HeadKind::Linear => Member::Linear(nn::linear(q / "lin", NUM_FEATURES, num_classes, Default::default())),
        };
        let members = if spec.members <= 1 {
            vec![member(p)]
        } else {
            (0..spec.members).map(|i| member(&(p / format!("m{i}")))).collect()
        };
        let norm = spec.standardize.then(|| {
            let q = p / "norm";
            (q.zeros_no_train("mean", &[NUM_FEATURES]), q.ones_no_train("std", &[NUM_FEATURES]))
        });
        Head { members, norm, dropout }
    }

    /// Number of ensemble members.
    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    /// The standardisation statistics (mean, std), when the head standardises.
    pub fn norm(&self) -> Option<(&Tensor, &Tensor)> {
        self.norm.as_ref().map(|(m, s)| (m, s))
    }

    /// Features as the members see them (standardised when the head standardises).
    pub fn prepare(&self, feats: &Tensor) -> Tensor {
        match &self.norm {
            Some((m, s)) => (feats - m) / s,
            None => feats.shallow_clone(),
        }
    }

    /// Logits of member `i` from prepared features ([`Head::prepare`]). In training, an MLP
    /// member applies dropout to the features (as torchvision's `Inception3.dropout`) and before
    /// its last layer.
    pub fn member_logits(&self, i: usize, x: &Tensor, train: bool) -> Tensor {
        match &self.members[i] {
            Member::Mlp { l0, l2, l5 } => {
                x.dropout(self.dropout, train).apply(l0).relu().apply(l2).relu().dropout(self.dropout, train).apply(l5)
            }
            Member::Linear(l) => x.apply(l),
        }
    }

    /// Dropout probability of the MLP members (in training).
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// Logits of member `i` in training, with the dropout masks given instead of drawn from
    /// libtorch's global generator: `keep0` multiplies the features (`N x 2048`), `keep1` the last
    /// hidden layer (`N x hidden.1`); their entries are 0 or `1 / (1 - p)`, as dropout's. A linear
    /// member ignores them. With masks of its own, a fit can run beside another on another thread
    /// and stay deterministic.
    pub fn member_logits_masked(&self, i: usize, x: &Tensor, keep0: &Tensor, keep1: &Tensor) -> Tensor {
        match &self.members[i] {
            Member::Mlp { l0, l2, l5 } => (x * keep0).apply(l0).relu().apply(l2).relu().g_mul(keep1).apply(l5),
            Member::Linear(l) => x.apply(l),
        }
    }

    /// Logits from pooled features `N x 2048`. An ensemble returns the log of its members' mean
    /// probabilities (whose softmax is that mean).
    pub fn forward_t(&self, feats: &Tensor, train: bool) -> Tensor {
        let x = self.prepare(feats);
        if self.members.len() == 1 {
            return self.member_logits(0, &x, train);
        }
        let logp: Vec<Tensor> =
            (0..self.members.len()).map(|i| self.member_logits(i, &x, train).log_softmax(-1, Kind::Float)).collect();
        Tensor::stack(&logp, 0).logsumexp([0], false) - (self.members.len() as f64).ln()
    }
}

/// Output of a training-mode forward pass.
#[derive(Debug)]
pub struct TrainOutput {
    /// Main logits `N x C` (probabilities with the double-softmax defect).
    pub logits: Tensor,
    /// Auxiliary logits, when the aux head is active.
    pub aux: Option<Tensor>,
}

/// The notebook's transfer model: InceptionV3 backbone (frozen unless fine-tuning) and the head.
///
/// The backbone lives in [`TransferModel::backbone_vs`] (frozen: `requires_grad = false`), the
/// head (`fc.*`) and the auxiliary classifier (`AuxLogits.*`) in [`TransferModel::head_vs`]: an
/// optimizer built on `head_vs` sees only head parameters.
///
/// ```no_run
/// use covid_cxr::model::{TransferModel, TransferConfig};
/// let m = TransferModel::pretrained(&TransferConfig::default())?;
/// let x = tch::Tensor::zeros([1, 3, 299, 299], (tch::Kind::Float, tch::Device::Cpu));
/// let p = m.predict_proba(&x);
/// assert_eq!(p.size(), vec![1, 3]);
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub struct TransferModel {
    /// Backbone variables (torchvision names, no `fc`, no `AuxLogits`).
    pub backbone_vs: nn::VarStore,
    /// Head variables: `fc.*` and `AuxLogits.*`.
    pub head_vs: nn::VarStore,
    /// The backbone.
    pub net: InceptionV3,
    /// The classifier head.
    pub head: Head,
    /// The auxiliary classifier.
    pub aux: Option<AuxLogits>,
    /// The configuration.
    pub cfg: TransferConfig,
}

impl std::fmt::Debug for TransferModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferModel").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl TransferModel {
    /// A randomly initialised model (use [`TransferModel::pretrained`] or
    /// [`crate::weights::load_backbone`] for pretrained weights). The head is initialised from
    /// libtorch's RNG: call `tch::manual_seed` first for determinism.
    pub fn new(cfg: &TransferConfig) -> Result<Self> {
        if cfg.num_classes < 2 {
            return Err(Error::invalid(format!("num_classes must be >= 2, got {}", cfg.num_classes)));
        }
        if cfg.fine_tune_blocks > BLOCK_NAMES.len() {
            return Err(Error::invalid(format!("fine_tune_blocks {} > {}", cfg.fine_tune_blocks, BLOCK_NAMES.len())));
        }
        let mut backbone_vs = nn::VarStore::new(Device::Cpu);
        let head_vs = nn::VarStore::new(Device::Cpu);
        let net = InceptionV3::new(&backbone_vs.root(), cfg.variant);
        let head = Head::with_spec(&(head_vs.root() / "fc"), &cfg.head, cfg.hidden, cfg.num_classes, cfg.dropout);
        let aux = if cfg.aux {
            let n = if cfg.defects.frozen_1000_class_aux { 1000 } else { cfg.num_classes };
            Some(AuxLogits::new(&(head_vs.root() / "AuxLogits"), n))
        } else {
            None
        };
        backbone_vs.freeze();
        let m = TransferModel { backbone_vs, head_vs, net, head, aux, cfg: cfg.clone() };
        m.apply_fine_tune();
        if cfg.defects.frozen_1000_class_aux {
            for (name, t) in m.head_vs.variables() {
                if name.starts_with("AuxLogits.") {
                    let _ = t.shallow_clone().set_requires_grad(false);
                }
            }
        }
        Ok(m)
    }

    /// A model whose backbone carries the pretrained 2015 ImageNet weights
    /// ([`crate::weights::ensure_pretrained`]). `cfg.variant` must be `Fid2015`.
    pub fn pretrained(cfg: &TransferConfig) -> Result<Self> {
        let path = crate::weights::ensure_pretrained()?;
        let mut m = TransferModel::new(cfg)?;
        crate::weights::load_backbone(&mut m, &path)?;
        Ok(m)
    }

    /// Replaces the head (and the aux head) by a new one of shape `spec`, initialised from
    /// libtorch's RNG (call `tch::manual_seed` first); `cfg.head` becomes `spec`. The backbone is
    /// kept, so several heads can be trained on one backbone's features.
    pub fn reset_head(&mut self, spec: &HeadSpec) {
        let head_vs = nn::VarStore::new(Device::Cpu);
        let cfg = &mut self.cfg;
        cfg.head = *spec;
        self.head = Head::with_spec(&(head_vs.root() / "fc"), spec, cfg.hidden, cfg.num_classes, cfg.dropout);
        self.aux = if cfg.aux {
            let n = if cfg.defects.frozen_1000_class_aux { 1000 } else { cfg.num_classes };
            Some(AuxLogits::new(&(head_vs.root() / "AuxLogits"), n))
        } else {
            None
        };
        self.head_vs = head_vs;
        if self.cfg.defects.frozen_1000_class_aux {
            for (name, t) in self.head_vs.variables() {
                if name.starts_with("AuxLogits.") {
                    let _ = t.shallow_clone().set_requires_grad(false);
                }
            }
        }
    }

    /// Re-enables gradients for the last `cfg.fine_tune_blocks` backbone blocks.
    fn apply_fine_tune(&self) {
        let first = self.first_trainable_block();
        let names: Vec<&str> = BLOCK_NAMES[first..].to_vec();
        for (name, t) in self.backbone_vs.variables() {
            let block = name.split('.').next().unwrap_or("");
            let trainable = names.contains(&block) && !name.contains("running_");
            if trainable {
                let _ = t.shallow_clone().set_requires_grad(true);
            }
        }
    }

    /// Index of the first backbone block that is trained (`BLOCK_NAMES.len()` when frozen).
    pub fn first_trainable_block(&self) -> usize {
        BLOCK_NAMES.len() - self.cfg.fine_tune_blocks
    }

    /// The device the model's variables live on.
    pub fn device(&self) -> Device {
        self.head_vs.device()
    }

    /// Moves every variable (backbone and head) to `device`. Inputs on any device are moved to
    /// it by the forward passes; [`TransferModel::features`], [`TransferModel::predict_proba`]
    /// and [`TransferModel::proba_from_features`] return CPU tensors. Build optimizers after
    /// moving.
    pub fn to_device(&mut self, device: Device) {
        self.backbone_vs.set_device(device);
        self.head_vs.set_device(device);
        self.invalidate_fused();
    }

    /// Sets the precision of the frozen backbone's fast path (see [`crate::hardware`]).
    pub fn set_precision(&mut self, p: Precision) {
        self.cfg.precision = p;
        self.invalidate_fused();
    }

    /// Applies the input mapping (see the module docs), on the model's device.
    pub fn map_input(&self, x: &Tensor) -> Tensor {
        let x = x.to_device(self.device());
        if self.cfg.exact_fid_input && self.cfg.variant == InceptionVariant::Fid2015 {
            (x * 127.5 - 0.5) / 128.0
        } else {
            x
        }
    }

    fn fast(&self) -> Fwd {
        Fwd { train: false, fused: Some(self.cfg.precision.kind()) }
    }

    /// Backbone blocks `[0, to)` on the fast path without gradient (channels-last, folded batch
    /// norm, the configured precision); returns f32.
    fn frozen_prefix(&self, x: &Tensor, to: usize) -> Tensor {
        let x = tch::no_grad(|| to_channels_last(&self.map_input(x)));
        self.frozen_range(&x, 0, to)
    }

    /// Backbone blocks `[from, to)` on the fast path without gradient; f32 in and out.
    fn frozen_range(&self, x: &Tensor, from: usize, to: usize) -> Tensor {
        if from >= to {
            return x.shallow_clone();
        }
        let kind = self.cfg.precision.kind();
        tch::no_grad(|| self.net.run(&x.to_kind(kind), from, to, self.fast()).to_kind(Kind::Float))
    }

    /// `Mixed_7c`'s activation, `N x 2048 x 8 x 8` for 299 x 299 input, eval mode, computed on the
    /// fast path **without gradient** (f32, contiguous). For Grad-CAM, make it a leaf with
    /// `a.detach().set_requires_grad(true)` and call [`TransferModel::head_from_mixed_7c`].
    pub fn forward_mixed_7c(&self, x: &Tensor) -> Tensor {
        self.frozen_prefix(x, BLOCK_NAMES.len()).contiguous()
    }

    /// Logits from `Mixed_7c`'s activation: global average pool, dropout (eval: identity), head.
    pub fn head_from_mixed_7c(&self, a: &Tensor) -> Tensor {
        self.head.forward_t(&pool_flat(a), false)
    }

    /// Pooled backbone features `N x 2048` (fast path, no gradient, eval mode), on the CPU.
    pub fn features(&self, x: &Tensor) -> Tensor {
        pool_flat(&self.forward_mixed_7c(x)).to_device(Device::Cpu)
    }

    /// Features in eager f32 (no folding, no channels-last): the reference path.
    pub fn features_eager(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.net.features(&self.map_input(x)))
    }

    /// Head output from pooled features: logits (probabilities under the double-softmax defect).
    pub fn head_forward_t(&self, feats: &Tensor, train: bool) -> Tensor {
        let y = self.head.forward_t(&feats.to_device(self.device()), train);
        if self.cfg.defects.double_softmax {
            y.softmax(-1, Kind::Float)
        } else {
            y
        }
    }

    /// Forward pass. In training mode with an aux head, also returns the aux logits. The backbone's
    /// batch norm always uses its running statistics; the frozen part runs without gradient.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> TrainOutput {
        let first = self.first_trainable_block();
        let k6 = MIXED_6E + 1;
        let n = BLOCK_NAMES.len();
        let aux_head = self.aux.as_ref().filter(|_| train);
        let (a, aux) = if let Some(aux_head) = aux_head {
            if first >= k6 {
                let a6 = self.frozen_prefix(x, k6);
                let aux = aux_head.forward(&a6);
                (self.frozen_range(&a6, k6, first), Some(aux))
            } else {
                let a = self.frozen_prefix(x, first);
                let a6 = self.net.run(&a, first, k6, EVAL);
                let aux = aux_head.forward(&a6);
                (a6, Some(aux))
            }
        } else {
            (self.frozen_prefix(x, first), None)
        };
        let start = if aux.is_some() { first.max(k6) } else { first };
        let a = if start < n { self.net.run(&a, start, n, EVAL) } else { a };
        TrainOutput { logits: self.head_forward_t(&pool_flat(&a), train), aux }
    }

    /// Eval-mode logits.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.forward_t(x, false).logits)
    }

    /// Class probabilities `N x C` on the CPU (softmax of the logits; the output itself under the
    /// double-softmax defect, which already is a softmax).
    pub fn predict_proba(&self, x: &Tensor) -> Tensor {
        let y = self.forward(x);
        let p = if self.cfg.defects.double_softmax { y } else { y.softmax(-1, Kind::Float) };
        p.to_device(Device::Cpu)
    }

    /// Probabilities from pooled features (eval mode).
    pub fn proba_from_features(&self, feats: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let y = self.head_forward_t(feats, false);
            let p = if self.cfg.defects.double_softmax { y } else { y.softmax(-1, Kind::Float) };
            p.to_device(Device::Cpu)
        })
    }

    /// Drops the cached folded backbone weights (after changing backbone parameters).
    pub fn invalidate_fused(&self) {
        self.net.invalidate_fused();
    }

    /// Variables that the optimizer trains: the head's (and the fine-tuned blocks').
    pub fn trainable_tensors(&self) -> Vec<Tensor> {
        let mut v: Vec<Tensor> = self.head_vs.trainable_variables().into_iter().filter(|t| t.requires_grad()).collect();
        v.extend(self.backbone_vs.trainable_variables().into_iter().filter(|t| t.requires_grad()));
        v
    }

    /// All variables by name (backbone and head).
    pub fn named_variables(&self) -> HashMap<String, Tensor> {
        let mut m = self.backbone_vs.variables();
        m.extend(self.head_vs.variables());
        m
    }
}
