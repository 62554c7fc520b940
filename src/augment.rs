//! Augmentation with Augmentor's semantics (the notebook's first cell).
//!
//! ```text
//! p = Augmentor.Pipeline("data/covid")            Pipeline::new("data/covid")?
//! p.rotate(0.7, 10, 10)                           .rotate(0.7, 10, 10)
//! p.random_distortion(1, 4, 4, 8)                 .random_distortion(1.0, 4, 4, 8)
//! p.flip_left_right(1)                            .flip_left_right(1.0)
//! p.sample(580)                                   .seed(1).sample(580)?
//! ```
//!
//! Semantics kept from Augmentor (`Operations.py`, `Pipeline.py`):
//! * an operation fires when `round(uniform(0, 1), 1) <= probability` (so 0.7 fires ~75% of the time);
//! * `rotate`: an integer angle, a fair coin picks left (`randint(-max_left, 0)`) or right
//!   (`randint(0, max_right)`); the image is rotated with an expanded canvas, the largest
//!   inscribed rectangle (Augmentor's formula) is cropped and resized back to the original size;
//! * `random_distortion`: a `grid_width x grid_height` grid (the last row and column take
//!   the remainder), every interior vertex moved by integer `dx, dy` in `[-magnitude, magnitude]`
//!   pixels, the four tiles meeting at a vertex share its move, each tile warped by a bilinear
//!   quadrilateral mapping (PIL's `MESH`/`QUAD`);
//! * `flip_left_right`: a mirror;
//! * `sample(n)` draws `n` images with replacement and writes them to `<folder>/output/` as
//!   `<class>_original_<file name>_<uuid>.<format>`; `process()` runs every image once.
//!
//! One difference, on purpose: the geometric operations of one image are composed into a
//! single coordinate map and the image is resampled once (bicubic, a = -0.5 as PIL), instead of
//! once per operation. The geometry is the same; the result is sharper and several times faster.
//! Randomness comes from a seed: the same seed gives the same files, whatever the thread count.

use crate::error::{Error, IoContext, Result};
use crate::imageio::{self, list_images};
use image::{DynamicImage, ImageBuffer, ImageFormat, Pixel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// One operation of a [`Pipeline`].
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Augmentor's `rotate(probability, max_left_rotation, max_right_rotation)`.
    Rotate { probability: f64, max_left: u32, max_right: u32 },
    /// Augmentor's `random_distortion(probability, grid_width, grid_height, magnitude)`.
    Distort { probability: f64, grid_width: u32, grid_height: u32, magnitude: u32 },
    /// Augmentor's `flip_left_right(probability)`.
    FlipLeftRight { probability: f64 },
}

/// Whether an operation with `probability` fires, by Augmentor's rule
/// `round(uniform(0, 1), 1) <= probability`.
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let n = (0..10_000).filter(|_| covid_cxr::augment::fires(&mut rng, 0.7)).count();
/// assert!((7_200..7_800).contains(&n), "{n}"); // ~75%, not 70%
/// ```
pub fn fires(rng: &mut impl Rng, probability: f64) -> bool {
    let u: f64 = rng.random::<f64>();
    ((u * 10.0).round() / 10.0) <= probability
}

/// An inverse coordinate map: output point -> source point (continuous pixel coordinates,
/// pixel `i` covering `[i, i + 1)`).
#[derive(Debug, Clone)]
enum Step {
    /// Rotation by `deg` (counter-clockwise, as PIL), expanded canvas, inscribed crop, resize back.
    Rotate { deg: i32 },
    /// Mesh warp: per-tile output boxes and source quads (UL, LL, LR, UR).
    Mesh { tiles: Vec<([f32; 4], [f32; 8])>, grid_w: usize, grid_h: usize, tile_w: f32, tile_h: f32 },
    /// Mirror.
    Flip,
}

/// The random draws of one image through a pipeline: which steps fire, with which parameters.
#[derive(Debug, Clone)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    /// The rotation angles, in order, that this plan applies (for inspection and tests).
    pub fn rotations(&self) -> Vec<i32> {
        self.steps.iter().filter_map(|s| if let Step::Rotate { deg } = s { Some(*deg) } else { None }).collect()
    }
    /// Whether this plan mirrors the image.
    pub fn flips(&self) -> bool {
        self.steps.iter().filter(|s| matches!(s, Step::Flip)).count() % 2 == 1
    }
    /// Number of operations that fired.
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    /// Whether no operation fired.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Augmentor's inscribed rectangle after rotating a `w x h` image by `deg` degrees with an
/// expanded canvas: returns the canvas size and the crop box `(left, top, right, bottom)`.
///
/// ```
/// let ((cw, ch), (l, t, r, b)) = covid_cxr::augment::rotation_crop(400, 400, 10);
/// assert!(cw > 400 && ch > 400);
/// assert!(l > 0 && t > 0 && r < cw as i64 && b < ch as i64);
/// ```
pub fn rotation_crop(w: u32, h: u32, deg: i32) -> ((u32, u32), (i64, i64, i64, i64)) {
    let th = (deg as f64).to_radians();
    let (c, s) = (th.cos(), th.sin());
    // PIL's expand: bounding box of the rotated corners.
    let (wf, hf) = (w as f64, h as f64);
    let corners = [(-wf / 2.0, -hf / 2.0), (wf / 2.0, -hf / 2.0), (wf / 2.0, hf / 2.0), (-wf / 2.0, hf / 2.0)];
    let xs: Vec<f64> = corners.iter().map(|(x, y)| c * x + s * y).collect();
    let ys: Vec<f64> = corners.iter().map(|(x, y)| -s * x + c * y).collect();
    let fmax = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
    let fmin = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let big_x = ((fmax(&xs) - 1e-9).ceil() - (fmin(&xs) + 1e-9).floor()) as i64;
    let big_y = ((fmax(&ys) - 1e-9).ceil() - (fmin(&ys) + 1e-9).floor()) as i64;
    if deg == 0 {
        return ((w, h), (0, 0, w as i64, h as i64));
    }
    // Augmentor's formula, including its `E / 1 - ...` precedence, applied to the exact extent
    // of the rotated image (PIL's integer canvas adds up to a pixel of black margin, which with
    // Augmentor's rounding can leave black corners); the box is rounded inwards.
    let a = (deg.unsigned_abs() as f64).to_radians();
    let b = (90.0 - deg.unsigned_abs() as f64).to_radians();
    let (sa, sb) = (a.sin(), b.sin());
    let (xx, yy) = (wf * a.cos() + hf * sa, hf * a.cos() + wf * sa);
    let (ox, oy) = ((big_x as f64 - xx) / 2.0, (big_y as f64 - yy) / 2.0);
    let mut e = sa / sb * (yy - xx * (sa / sb));
    e = e / 1.0 - (sa * sa / (sb * sb));
    let bb = xx - e;
    let aa = (sa / sb) * bb;
    let (l, t) = ((ox + e - 1e-6).ceil() as i64, (oy + aa - 1e-6).ceil() as i64);
    let (r, btm) = ((ox + xx - e + 1e-6).floor() as i64, (oy + yy - aa + 1e-6).floor() as i64);
    ((big_x as u32, big_y as u32), (l, t, r.max(l + 1), btm.max(t + 1)))
}

#[cfg_attr(not(test), allow(dead_code))]
impl Step {
    /// Maps an output point of this step to a point of its input (both `w x h`).
    fn inverse(&self, w: u32, h: u32, x: f32, y: f32) -> (f32, f32) {
        match self {
            Step::Flip => (w as f32 - x, y),
            Step::Rotate { deg } => {
                let ((cw, ch), (l, t, r, b)) = rotation_crop(w, h, *deg);
                // resize: output -> crop box
                let cx = l as f32 + x * (r - l) as f32 / w as f32;
                let cy = t as f32 + y * (b - t) as f32 / h as f32;
                // canvas -> source (inverse of a counter-clockwise rotation about the centres)
                let th = (*deg as f32).to_radians();
                let (c, s) = (th.cos(), th.sin());
                let (px, py) = (cx - cw as f32 / 2.0, cy - ch as f32 / 2.0);
                (c * px - s * py + w as f32 / 2.0, s * px + c * py + h as f32 / 2.0)
            }
            Step::Mesh { tiles, grid_w, grid_h, tile_w, tile_h } => {
                let i = ((x / tile_w) as usize).min(grid_w - 1);
                let j = ((y / tile_h) as usize).min(grid_h - 1);
                let (bx, q) = &tiles[j * grid_w + i];
                let (bw, bh) = (bx[2] - bx[0], bx[3] - bx[1]);
                let (u, v) = (x - bx[0], y - bx[1]);
                // PIL quad_transform: a0 + a1 u + a2 v + a3 u v
                let ax = [q[0], (q[6] - q[0]) / bw, (q[2] - q[0]) / bh, (q[4] - q[2] - q[6] + q[0]) / (bw * bh)];
                let ay = [q[1], (q[7] - q[1]) / bw, (q[3] - q[1]) / bh, (q[5] - q[3] - q[7] + q[1]) / (bw * bh)];
                (ax[0] + ax[1] * u + ax[2] * v + ax[3] * u * v, ay[0] + ay[1] * u + ay[2] * v + ay[3] * u * v)
            }
        }
    }
}

/// A step with everything that does not depend on the pixel precomputed.
enum Compiled {
    /// `(x, y) -> (a x + b y + c, d x + e y + f)`.
    Affine([f32; 6]),
    /// Per tile: box origin and the bilinear coefficients of PIL's quad transform.
    Mesh { coef: Vec<([f32; 2], [f32; 8])>, grid_w: usize, grid_h: usize, inv_tw: f32, inv_th: f32 },
}

impl Compiled {
    #[inline(always)]
    fn map(&self, x: f32, y: f32) -> (f32, f32) {
        match self {
            Compiled::Affine(m) => (m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]),
            Compiled::Mesh { coef, grid_w, grid_h, inv_tw, inv_th } => {
                let i = ((x * inv_tw) as usize).min(grid_w - 1);
                let j = ((y * inv_th) as usize).min(grid_h - 1);
                let (o, a) = &coef[j * grid_w + i];
                let (u, v) = (x - o[0], y - o[1]);
                (a[0] + a[1] * u + a[2] * v + a[3] * u * v, a[4] + a[5] * u + a[6] * v + a[7] * u * v)
            }
        }
    }
}

fn compile(steps: &[Step], w: u32, h: u32) -> Vec<Compiled> {
    // In application order; the warp walks them backwards (output -> source).
    let mut out: Vec<Compiled> = Vec::new();
    for s in steps {
        let m = match s {
            Step::Flip => [-1.0, 0.0, w as f32, 0.0, 1.0, 0.0],
            Step::Rotate { deg } => {
                let ((cw, ch), (l, t, r, b)) = rotation_crop(w, h, *deg);
                let (sx, sy) = ((r - l) as f32 / w as f32, (b - t) as f32 / h as f32);
                let th = (*deg as f32).to_radians();
                let (c, sn) = (th.cos(), th.sin());
                // p = (l + x sx - cw/2, t + y sy - ch/2); src = (c px - s py + w/2, s px + c py + h/2)
                let (ox, oy) = (l as f32 - cw as f32 / 2.0, t as f32 - ch as f32 / 2.0);
                [
                    c * sx,
                    -sn * sy,
                    c * ox - sn * oy + w as f32 / 2.0,
                    sn * sx,
                    c * sy,
                    sn * ox + c * oy + h as f32 / 2.0,
                ]
            }
            Step::Mesh { tiles, grid_w, grid_h, tile_w, tile_h } => {
                let coef = tiles
                    .iter()
                    .map(|(bx, q)| {
                        let (bw, bh) = (bx[2] - bx[0], bx[3] - bx[1]);
                        (
                            [bx[0], bx[1]],
                            [
                                q[0],
                                (q[6] - q[0]) / bw,
                                (q[2] - q[0]) / bh,
                                (q[4] - q[2] - q[6] + q[0]) / (bw * bh),
                                q[1],
                                (q[7] - q[1]) / bw,
                                (q[3] - q[1]) / bh,
                                (q[5] - q[3] - q[7] + q[1]) / (bw * bh),
                            ],
                        )
                    })
                    .collect();
                out.push(Compiled::Mesh {
                    coef,
                    grid_w: *grid_w,
                    grid_h: *grid_h,
                    inv_tw: 1.0 / tile_w,
                    inv_th: 1.0 / tile_h,
                });
                continue;
            }
        };
        out.push(Compiled::Affine(m));
    }
    out
}

fn mesh(rng: &mut impl Rng, w: u32, h: u32, gw: u32, gh: u32, magnitude: u32) -> Step {
    let (gw, gh) = (gw.max(1) as usize, gh.max(1) as usize);
    let sq_w = (w as usize / gw) as f32;
    let sq_h = (h as usize / gh) as f32;
    let mut dims = Vec::with_capacity(gw * gh);
    for j in 0..gh {
        for i in 0..gw {
            let x1 = i as f32 * sq_w;
            let y1 = j as f32 * sq_h;
            let x2 = if i == gw - 1 { w as f32 } else { x1 + sq_w };
            let y2 = if j == gh - 1 { h as f32 } else { y1 + sq_h };
            dims.push([x1, y1, x2, y2]);
        }
    }
    let mut polys: Vec<[f32; 8]> = dims.iter().map(|&[x1, y1, x2, y2]| [x1, y1, x1, y2, x2, y2, x2, y1]).collect();
    let m = magnitude as i64;
    for j in 0..gh.saturating_sub(1) {
        for i in 0..gw.saturating_sub(1) {
            let a = j * gw + i;
            let (b, c, d) = (a + 1, a + gw, a + gw + 1);
            let dx = rng.random_range(-m..=m) as f32;
            let dy = rng.random_range(-m..=m) as f32;
            polys[a][4] += dx; // lower right of a
            polys[a][5] += dy;
            polys[b][2] += dx; // lower left of b
            polys[b][3] += dy;
            polys[c][6] += dx; // upper right of c
            polys[c][7] += dy;
            polys[d][0] += dx; // upper left of d
            polys[d][1] += dy;
        }
    }
    Step::Mesh {
        tiles: dims.into_iter().zip(polys).collect(),
        grid_w: gw,
        grid_h: gh,
        tile_w: sq_w.max(1.0),
        tile_h: sq_h.max(1.0),
    }
}

/// Draws the random parameters of `ops` for one `w x h` image.
pub fn plan(ops: &[Operation], rng: &mut impl Rng, w: u32, h: u32) -> Plan {
    let mut steps = Vec::new();
    for op in ops {
        match *op {
            Operation::Rotate { probability, max_left, max_right } => {
                if fires(rng, probability) {
                    let left = rng.random_range(-(max_left as i32)..=0);
                    let right = rng.random_range(0..=max_right as i32);
                    let deg = if rng.random_range(0..=1) == 0 { left } else { right };
                    if deg != 0 {
                        steps.push(Step::Rotate { deg });
                    }
                }
            }
            Operation::Distort { probability, grid_width, grid_height, magnitude } => {
                if fires(rng, probability) {
                    steps.push(mesh(rng, w, h, grid_width, grid_height, magnitude));
                }
            }
            Operation::FlipLeftRight { probability } => {
                if fires(rng, probability) {
                    steps.push(Step::Flip);
                }
            }
        }
    }
    Plan { steps }
}

trait Sample: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}
// Rounding and flooring by casts: `f32::round`/`floor` are library calls on baseline x86-64.
impl Sample for u8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        (v.clamp(0.0, 255.0) + 0.5) as u8
    }
}
impl Sample for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        (v.clamp(0.0, 65535.0) + 0.5) as u16
    }
}

/// `floor` for the sample coordinates (finite, well inside the `i32` range).
#[inline(always)]
fn fast_floor(v: f32) -> f32 {
    let t = v as i32 as f32;
    if t > v {
        t - 1.0
    } else {
        t
    }
}

fn cubic(t: f32) -> [f32; 4] {
    // Keys cubic with a = -0.5 (PIL's bicubic)
    const A: f32 = -0.5;
    let f = |x: f32| {
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    };
    [f(t + 1.0), f(t), f(1.0 - t), f(2.0 - t)]
}

/// Sub-pixel positions of the bicubic weight table.
const LUT_STEPS: usize = 1024;

fn cubic_lut() -> &'static [[f32; 4]] {
    static LUT: std::sync::OnceLock<Vec<[f32; 4]>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| (0..=LUT_STEPS).map(|i| cubic(i as f32 / LUT_STEPS as f32)).collect())
}

fn warp<P>(src: &ImageBuffer<P, Vec<P::Subpixel>>, plan: &Plan) -> ImageBuffer<P, Vec<P::Subpixel>>
where
    P: Pixel,
    P::Subpixel: Sample,
{
    let (w, h) = src.dimensions();
    let out = match P::CHANNEL_COUNT {
        1 => warp_raw::<1, P::Subpixel>(src.as_raw(), w, h, plan),
        2 => warp_raw::<2, P::Subpixel>(src.as_raw(), w, h, plan),
        3 => warp_raw::<3, P::Subpixel>(src.as_raw(), w, h, plan),
        _ => warp_raw::<4, P::Subpixel>(src.as_raw(), w, h, plan),
    };
    ImageBuffer::from_raw(w, h, out).expect("same size")
}

/// If the compiled map has at most one mesh step and every step after it (in application order)
/// maps image rows to rows (a flip, say), the whole map is linear in x along each output row,
/// piecewise between the mesh's tile boundaries; returns the mesh's index and tile width (plain
/// affine chains give a tile width of infinity). Then the warp steps through a row with two
/// additions per pixel instead of evaluating the chain.
fn row_linear_mesh(compiled: &[Compiled]) -> Option<(usize, f32)> {
    let meshes: Vec<usize> =
        compiled.iter().enumerate().filter(|(_, c)| matches!(c, Compiled::Mesh { .. })).map(|(i, _)| i).collect();
    match meshes.as_slice() {
        // all affine: linear along whole rows (no cuts)
        [] => Some((usize::MAX, f32::INFINITY)),
        [k] => {
            let rows_kept = compiled[k + 1..].iter().all(|c| matches!(c, Compiled::Affine(m) if m[3] == 0.0));
            match &compiled[*k] {
                Compiled::Mesh { inv_tw, .. } if rows_kept => Some((*k, 1.0 / inv_tw)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn warp_raw<const CH: usize, S: Sample>(raw_in: &[S], w: u32, h: u32, plan: &Plan) -> Vec<S> {
    let wu = w as usize;
    // one conversion per source sample instead of sixteen
    let raw: Vec<f32> = raw_in.iter().map(|v| v.to_f32()).collect();
    let mut out: Vec<S> = vec![S::from_f32(0.0); raw.len()];
    let compiled = compile(&plan.steps, w, h);
    let raw = &raw[..];
    let lut = cubic_lut();
    let row_linear = row_linear_mesh(&compiled);
    out.par_chunks_mut(wu * CH).enumerate().for_each(|(y, row)| {
        let yc = y as f32 + 0.5;
        let chain = |x: f32| compiled.iter().rev().fold((x, yc), |(a, b), st| st.map(a, b));
        // Segments of the row on which the whole map is linear in x (see `row_linear_mesh`).
        let segments: Vec<(usize, usize)> = match &row_linear {
            Some((k, tile_w)) => {
                // output x -> mesh input x is affine: find where it crosses tile boundaries
                let from = if *k == usize::MAX { compiled.len() } else { k + 1 };
                let post = |x: f32| compiled[from..].iter().rev().fold((x, yc), |(a, b), st| st.map(a, b)).0;
                let (p0, p1) = (post(0.5), post(1.5));
                let slope = p1 - p0;
                let mut cuts: Vec<usize> = vec![0, wu];
                if slope.abs() > 1e-12 {
                    let mut b = *tile_w;
                    while b < w as f32 {
                        // pixel centre x + 0.5 where post(x) == b
                        let xc = (b - p0) / slope;
                        if xc > 0.0 && xc < wu as f32 {
                            cuts.push(xc.ceil() as usize);
                        }
                        b += tile_w;
                    }
                }
                cuts.sort_unstable();
                cuts.dedup();
                cuts.windows(2).map(|c| (c[0], c[1])).collect()
            }
            None => Vec::new(),
        };
        let mut seg = 0;
        let (mut sx, mut sy, mut dx, mut dy) = (0f32, 0f32, 0f32, 0f32);
        for x in 0..wu {
            if row_linear.is_some() {
                if x == segments[seg].0 || x == 0 {
                    // start of a segment: exact values at x and the per-pixel step
                    let (a0, b0) = chain(x as f32 + 0.5);
                    let (a1, b1) = chain(x as f32 + 1.5);
                    (sx, sy, dx, dy) = (a0, b0, a1 - a0, b1 - b0);
                } else {
                    sx += dx;
                    sy += dy;
                }
                if x + 1 == segments[seg].1 && seg + 1 < segments.len() {
                    seg += 1;
                }
            } else {
                (sx, sy) = chain(x as f32 + 0.5);
            }
            if !(sx >= 0.0 && sy >= 0.0 && sx < w as f32 && sy < h as f32) {
                continue; // outside: black, as PIL
            }
            let (fx, fy) = (sx - 0.5, sy - 0.5);
            let (x0, y0) = (fast_floor(fx), fast_floor(fy));
            let kx = &lut[((fx - x0) * LUT_STEPS as f32) as usize];
            let ky = &lut[((fy - y0) * LUT_STEPS as f32) as usize];
            let (x0, y0) = (x0 as i64 - 1, y0 as i64 - 1);
            let mut acc = [0f32; CH];
            if x0 >= 0 && y0 >= 0 && x0 + 3 < w as i64 && y0 + 3 < h as i64 {
                let (x0, y0) = (x0 as usize, y0 as usize);
                // independent partial sums (a tree, not a chain): float adds are not reassociated
                let mut r = [[0f32; CH]; 4];
                for (j, rj) in r.iter_mut().enumerate() {
                    let base = ((y0 + j) * wu + x0) * CH;
                    let px = &raw[base..base + 4 * CH];
                    for c in 0..CH {
                        rj[c] =
                            (kx[0] * px[c] + kx[1] * px[CH + c]) + (kx[2] * px[2 * CH + c] + kx[3] * px[3 * CH + c]);
                    }
                }
                for c in 0..CH {
                    acc[c] = (ky[0] * r[0][c] + ky[1] * r[1][c]) + (ky[2] * r[2][c] + ky[3] * r[3][c]);
                }
            } else {
                for (j, wy) in ky.iter().enumerate() {
                    let yy = (y0 + j as i64).clamp(0, h as i64 - 1) as usize;
                    for (i, wx) in kx.iter().enumerate() {
                        let xx = (x0 + i as i64).clamp(0, w as i64 - 1) as usize;
                        let base = (yy * wu + xx) * CH;
                        for c in 0..CH {
                            acc[c] += wx * wy * raw[base + c];
                        }
                    }
                }
            }
            for c in 0..CH {
                row[x * CH + c] = S::from_f32(acc[c]);
            }
        }
    });
    out
}

/// Applies a drawn [`Plan`] to an image, keeping its colour type (8/16-bit grayscale, RGB, RGBA;
/// other types are converted to 8-bit RGBA).
pub fn apply(img: &DynamicImage, plan: &Plan) -> DynamicImage {
    if plan.is_empty() {
        return img.clone();
    }
    match img {
        DynamicImage::ImageLuma8(b) => DynamicImage::ImageLuma8(warp(b, plan)),
        DynamicImage::ImageLumaA8(b) => DynamicImage::ImageLumaA8(warp(b, plan)),
        DynamicImage::ImageRgb8(b) => DynamicImage::ImageRgb8(warp(b, plan)),
        DynamicImage::ImageRgba8(b) => DynamicImage::ImageRgba8(warp(b, plan)),
        DynamicImage::ImageLuma16(b) => DynamicImage::ImageLuma16(warp(b, plan)),
        DynamicImage::ImageLumaA16(b) => DynamicImage::ImageLumaA16(warp(b, plan)),
        DynamicImage::ImageRgb16(b) => DynamicImage::ImageRgb16(warp(b, plan)),
        DynamicImage::ImageRgba16(b) => DynamicImage::ImageRgba16(warp(b, plan)),
        other => DynamicImage::ImageRgba8(warp(&other.to_rgba8(), plan)),
    }
}

/// What a [`Pipeline::sample`] or [`Pipeline::process`] run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AugmentReport {
    /// Files written, in sample order.
    pub written: Vec<PathBuf>,
    /// Source files that could not be read, each with the reason; they were skipped.
    pub skipped: Vec<(PathBuf, String)>,
}

/// An Augmentor-style pipeline over the images of one folder.
#[derive(Debug, Clone)]
pub struct Pipeline {
    source: PathBuf,
    output: PathBuf,
    files: Vec<PathBuf>,
    ops: Vec<Operation>,
    seed: u64,
    class_label: String,
    runs: RunCounter,
}

/// How many times a pipeline has run: the first `sample()` or `process()` draws from the seed
/// itself, later ones from seeds derived from it, so that running a notebook cell again adds new
/// files (as Augmentor does) instead of colliding with the names of the first run.
#[derive(Debug, Default)]
struct RunCounter(AtomicU64);

impl Clone for RunCounter {
    fn clone(&self) -> Self {
        RunCounter(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl Pipeline {
    /// A pipeline over the image files of `source` (sorted; hidden and non-image files
    /// skipped), writing to `source/output/`, seed 0.
    pub fn new(source: impl AsRef<Path>) -> Result<Self> {
        let source = source.as_ref().to_path_buf();
        if !source.is_dir() {
            return Err(Error::dataset(&source, "not a folder"));
        }
        let files = list_images(&source)?;
        if files.is_empty() {
            return Err(Error::dataset(&source, "no image files in this folder"));
        }
        let class_label = source
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "images".into());
        Ok(Pipeline {
            output: source.join("output"),
            source,
            files,
            ops: Vec::new(),
            seed: 0,
            class_label,
            runs: RunCounter::default(),
        })
    }

    /// Sets the seed of every random draw.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The seed of this run: the seed itself the first time, a derived one after.
    fn run_seed(&self) -> u64 {
        match self.runs.0.fetch_add(1, Ordering::Relaxed) {
            0 => self.seed,
            k => crate::seed::mix(self.seed, k, 0xA076_1D64_78BD_642F, 1, 0xE703_7ED1_A0B4_28DB),
        }
    }

    /// Writes to `dir` instead of `<source>/output`.
    pub fn output_directory(mut self, dir: impl AsRef<Path>) -> Self {
        self.output = dir.as_ref().to_path_buf();
        self
    }

    /// Augmentor's `rotate(probability, max_left_rotation, max_right_rotation)` (degrees, at most 25).
    pub fn rotate(mut self, probability: f64, max_left: u32, max_right: u32) -> Self {
        self.ops.push(Operation::Rotate { probability, max_left: max_left.min(25), max_right: max_right.min(25) });
        self
    }

    /// Augmentor's `random_distortion(probability, grid_width, grid_height, magnitude)`.
    pub fn random_distortion(mut self, probability: f64, grid_width: u32, grid_height: u32, magnitude: u32) -> Self {
        self.ops.push(Operation::Distort { probability, grid_width, grid_height, magnitude });
        self
    }

    /// Augmentor's `flip_left_right(probability)`.
    pub fn flip_left_right(mut self, probability: f64) -> Self {
        self.ops.push(Operation::FlipLeftRight { probability });
        self
    }

    /// The operations, in order.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// The source image files.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The output folder.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Draws `n` images with replacement, runs each through the pipeline and writes it to the
    /// output folder. Unreadable source files are reported in the result and skipped (another
    /// image is drawn instead). A second call on the same pipeline draws other images under other
    /// names (the first call is determined by the seed, and so is the sequence of calls).
    pub fn sample(&self, n: usize) -> Result<AugmentReport> {
        self.sample_with_progress(n, |_| {})
    }

    /// [`Pipeline::sample`], calling `progress(done)` after each written image.
    pub fn sample_with_progress(&self, n: usize, progress: impl Fn(usize) + Sync) -> Result<AugmentReport> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.run_seed());
        let picks: Vec<(usize, u64)> = (0..n).map(|_| (rng.random_range(0..self.files.len()), rng.random())).collect();
        self.run(picks, true, progress)
    }

    /// Runs every source image through the pipeline once (Augmentor's `process()`).
    pub fn process(&self) -> Result<AugmentReport> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.run_seed());
        let picks: Vec<(usize, u64)> = (0..self.files.len()).map(|i| (i, rng.random())).collect();
        self.run(picks, false, |_| {})
    }

    fn run(&self, picks: Vec<(usize, u64)>, redraw: bool, progress: impl Fn(usize) + Sync) -> Result<AugmentReport> {
        if self.ops.is_empty() {
            return Err(Error::invalid("the pipeline has no operations"));
        }
        for op in &self.ops {
            let p = match op {
                Operation::Rotate { probability, .. }
                | Operation::Distort { probability, .. }
                | Operation::FlipLeftRight { probability } => *probability,
            };
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::invalid(format!("probability {p} is outside [0, 1]")));
            }
        }
        std::fs::create_dir_all(&self.output).at("create folder", &self.output)?;
        let bad: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        let done = AtomicUsize::new(0);
        let n_files = self.files.len();
        let results: Vec<Result<Option<PathBuf>>> = picks
            .par_iter()
            .map(|&(first, sample_seed)| {
                let mut rng = ChaCha8Rng::seed_from_u64(sample_seed);
                let mut idx = first;
                for _attempt in 0..(64 * n_files).max(256) {
                    let known_bad = bad.lock().unwrap().iter().any(|(i, _)| *i == idx);
                    if !known_bad {
                        let path = &self.files[idx];
                        match std::fs::read(path)
                            .at("read", path)
                            .and_then(|b| Ok((imageio::decode_bytes(path, &b)?, b)))
                        {
                            Ok((img, bytes)) => {
                                let p = plan(&self.ops, &mut rng, img.width(), img.height());
                                let out = apply(&img, &p);
                                let fmt = image::guess_format(&bytes).unwrap_or(ImageFormat::Png);
                                let dest = self.output.join(self.output_name(path, fmt, &mut rng));
                                imageio::save_image(&out, &dest, false)?;
                                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                                return Ok(Some(dest));
                            }
                            Err(e) => {
                                let mut b = bad.lock().unwrap();
                                if !b.iter().any(|(i, _)| *i == idx) {
                                    b.push((idx, e.to_string()));
                                }
                            }
                        }
                    }
                    if !redraw {
                        return Ok(None);
                    }
                    idx = rng.random_range(0..n_files);
                }
                Err(Error::dataset(&self.source, "no readable image in this folder"))
            })
            .collect();
        let mut report = AugmentReport::default();
        for r in results {
            if let Some(p) = r? {
                report.written.push(p);
            }
        }
        let mut bad = bad.into_inner().unwrap();
        bad.sort();
        report.skipped = bad.into_iter().map(|(i, e)| (self.files[i].clone(), e)).collect();
        Ok(report)
    }

    fn output_name(&self, path: &Path, fmt: ImageFormat, rng: &mut impl Rng) -> String {
        let ext = match fmt {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Gif => "png",
            ImageFormat::WebP => "png",
            _ => "png",
        };
        let base = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{}_original_{}_{}.{}", self.class_label, base, uuid4(rng), ext)
    }
}

/// The source image of a file that [`Pipeline::sample`] or [`Pipeline::process`] wrote, from
/// Augmentor's naming `<class>_original_<source file name>_<uuid>.<format>`: the source file in
/// the class folder (the parent of `output/`, or the folder itself once the file was moved in by
/// [`move_into_class`]). `None` when the name is not of that form. The output format can differ
/// from the source's extension (`x.jpg` gives `covid_original_x.jpg_<uuid>.jpeg`).
///
/// ```
/// use covid_cxr::augment::source_of;
/// use std::path::Path;
/// let out = Path::new("data/covid/output/covid_original_a_b.jpg_0f8e4a4c-1d2b-4c3d-8e9f-0a1b2c3d4e5f.jpeg");
/// assert_eq!(source_of(out).unwrap(), Path::new("data/covid/a_b.jpg"));
/// let moved = Path::new("data/covid/covid_original_x.png_0f8e4a4c-1d2b-4c3d-8e9f-0a1b2c3d4e5f.png");
/// assert_eq!(source_of(moved).unwrap(), Path::new("data/covid/x.png"));
/// assert!(source_of(Path::new("data/covid/x.png")).is_none());
/// ```
pub fn source_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (_, rest) = name.split_once("_original_")?;
    let (stem, _ext) = rest.rsplit_once('.')?;
    let (base, uuid) = stem.split_at_checked(stem.len().checked_sub(37)?)?;
    let uuid = uuid.strip_prefix('_')?;
    let is_uuid = uuid.len() == 36
        && uuid.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    if !is_uuid || base.is_empty() {
        return None;
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let class_dir = if dir.file_name().is_some_and(|n| n == "output") { dir.parent().unwrap_or(dir) } else { dir };
    Some(class_dir.join(base))
}

/// A version-4 UUID string drawn from `rng` (deterministic for a seed).
///
/// ```
/// use rand::SeedableRng;
/// let u = covid_cxr::augment::uuid4(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// assert_eq!(u.len(), 36);
/// assert_eq!(&u[14..15], "4");
/// ```
pub fn uuid4(rng: &mut impl Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The notebook's next step: moves every file of `<class_dir>/output/` into `<class_dir>/`.
///
/// Nothing is overwritten: if any file name exists already in the class folder, no file is
/// moved and the error names it. The emptied `output/` folder is removed. Returns the new paths.
pub fn move_into_class(class_dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let class_dir = class_dir.as_ref();
    let out = class_dir.join("output");
    if !out.is_dir() {
        return Err(Error::dataset(&out, "no output folder to move from (run sample() first)"));
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(&out).at("list folder", &out)? {
        let p = e.at("list folder", &out)?.path();
        if p.is_file() && !imageio::is_hidden(&p) {
            files.push(p);
        }
    }
    files.sort();
    let targets: Vec<PathBuf> = files.iter().map(|p| class_dir.join(p.file_name().expect("file"))).collect();
    if let Some(t) = targets.iter().find(|t| t.exists()) {
        return Err(Error::WouldOverwrite {
            path: t.clone(),
            reason: "a file of that name is already in the class folder; nothing was moved".into(),
        });
    }
    let mut moved = Vec::new();
    for (src, dst) in files.iter().zip(&targets) {
        // hard link then unlink: fails rather than overwrite if dst appeared meanwhile
        match std::fs::hard_link(src, dst) {
            Ok(()) => std::fs::remove_file(src).at("remove", src)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::WouldOverwrite { path: dst.clone(), reason: "appeared while moving".into() })
            }
            Err(_) => std::fs::rename(src, dst).at("move", src)?,
        }
        moved.push(dst.clone());
    }
    let _ = std::fs::remove_dir(&out); // only if empty
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| Luma([((x * 3 + y * 5) % 256) as u8])))
    }

    #[test]
    fn running_a_pipeline_again_adds_new_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("covid");
        std::fs::create_dir_all(&dir).unwrap();
        imageio::save_image(&gradient(20, 20), &dir.join("a.png"), false).unwrap();
        let p = Pipeline::new(&dir).unwrap().seed(5).flip_left_right(1.0);
        let first = p.sample(3).unwrap().written;
        let second = p.sample(3).unwrap().written;
        assert!(first.iter().all(|f| !second.contains(f)));
        // a new pipeline with the same seed repeats the first run
        let again = Pipeline::new(&dir).unwrap().seed(5).flip_left_right(1.0).output_directory(tmp.path().join("o"));
        let names = |v: &[PathBuf]| v.iter().map(|p| p.file_name().unwrap().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&again.sample(3).unwrap().written), names(&first));
    }

    #[test]
    fn source_of_names_the_original_for_jpeg_and_png_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("covid");
        std::fs::create_dir_all(&dir).unwrap();
        imageio::save_image(&gradient(40, 30), &dir.join("a_original_b.jpg"), false).unwrap();
        imageio::save_image(&gradient(30, 40), &dir.join("c.png"), false).unwrap();
        let rep = Pipeline::new(&dir).unwrap().seed(3).flip_left_right(1.0).process().unwrap();
        assert_eq!(rep.written.len(), 2);
        let mut sources: Vec<PathBuf> = rep.written.iter().map(|p| source_of(p).expect("augmentor name")).collect();
        sources.sort();
        assert_eq!(sources, vec![dir.join("a_original_b.jpg"), dir.join("c.png")]);
        let moved = move_into_class(&dir).unwrap();
        for m in &moved {
            assert!(source_of(m).unwrap().is_file(), "{}", m.display());
        }
    }

    #[test]
    fn compiled_steps_match_step_inverse() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for step in [Step::Rotate { deg: 7 }, Step::Rotate { deg: -10 }, Step::Flip, mesh(&mut rng, 120, 90, 4, 4, 8)] {
            let steps = [step.clone()];
            let c = compile(&steps, 120, 90);
            for &(x, y) in &[(0.5f32, 0.5f32), (60.0, 45.0), (119.5, 3.5)] {
                let (a, b) = step.inverse(120, 90, x, y);
                let (c1, c2) = c[0].map(x, y);
                assert!((a - c1).abs() < 1e-3 && (b - c2).abs() < 1e-3, "{step:?} ({x},{y}): ({a},{b}) vs ({c1},{c2})");
            }
        }
    }

    /// The plain per-pixel evaluation of a plan through `Step::inverse`, as a reference.
    fn reference_warp(img: &GrayImage, plan: &Plan) -> GrayImage {
        let (w, h) = img.dimensions();
        GrayImage::from_fn(w, h, |x, y| {
            let (mut sx, mut sy) = (x as f32 + 0.5, y as f32 + 0.5);
            for st in plan.steps.iter().rev() {
                (sx, sy) = st.inverse(w, h, sx, sy);
            }
            if !(sx >= 0.0 && sy >= 0.0 && sx < w as f32 && sy < h as f32) {
                return Luma([0]);
            }
            let (fx, fy) = (sx - 0.5, sy - 0.5);
            let (x0, y0) = (fx.floor(), fy.floor());
            let (kx, ky) = (cubic(fx - x0), cubic(fy - y0));
            let mut acc = 0.0;
            for (j, wy) in ky.iter().enumerate() {
                let yy = (y0 as i64 - 1 + j as i64).clamp(0, h as i64 - 1) as u32;
                for (i, wx) in kx.iter().enumerate() {
                    let xx = (x0 as i64 - 1 + i as i64).clamp(0, w as i64 - 1) as u32;
                    acc += wx * wy * img.get_pixel(xx, yy)[0] as f32;
                }
            }
            Luma([u8::from_f32(acc)])
        })
    }

    #[test]
    fn fast_warp_matches_reference() {
        let img = GrayImage::from_fn(123, 97, |x, y| Luma([((x * 13 + y * 7) % 251) as u8]));
        let ops = [
            Operation::Rotate { probability: 1.0, max_left: 10, max_right: 10 },
            Operation::Distort { probability: 1.0, grid_width: 4, grid_height: 4, magnitude: 8 },
            Operation::FlipLeftRight { probability: 1.0 },
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for _ in 0..6 {
            let p = plan(&ops, &mut rng, 123, 97);
            let fast = apply(&DynamicImage::ImageLuma8(img.clone()), &p).to_luma8();
            let slow = reference_warp(&img, &p);
            let worst = fast.pixels().zip(slow.pixels()).map(|(a, b)| (a[0] as i32 - b[0] as i32).abs()).max().unwrap();
            assert!(worst <= 2, "max difference {worst} for {p:?}");
        }
    }

    #[test]
    fn flip_is_exact_mirror() {
        let img = gradient(37, 21);
        let p = Plan { steps: vec![Step::Flip] };
        let out = apply(&img, &p).to_luma8();
        let src = img.to_luma8();
        for y in 0..21 {
            for x in 0..37 {
                assert_eq!(out.get_pixel(x, y), src.get_pixel(36 - x, y));
            }
        }
    }

    #[test]
    fn zero_magnitude_mesh_is_identity() {
        let img = gradient(40, 30);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let p = Plan { steps: vec![mesh(&mut rng, 40, 30, 4, 4, 0)] };
        assert_eq!(apply(&img, &p).to_luma8(), img.to_luma8());
    }

    #[test]
    fn mesh_is_continuous_and_moves_interior_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let s = mesh(&mut rng, 100, 80, 4, 4, 8);
        // border points map to themselves
        for &(x, y) in &[(0.0, 0.0), (100.0, 40.0), (50.0, 80.0), (0.0, 33.0)] {
            let (a, b) = s.inverse(100, 80, x, y);
            assert!((a - x).abs() < 1e-3 && (b - y).abs() < 1e-3, "({x},{y}) -> ({a},{b})");
        }
        // continuity across a tile edge
        let (a1, b1) = s.inverse(100, 80, 24.999, 30.0);
        let (a2, b2) = s.inverse(100, 80, 25.001, 30.0);
        assert!((a1 - a2).abs() < 0.05 && (b1 - b2).abs() < 0.05);
    }

    #[test]
    fn rotation_crop_has_no_black_corners() {
        // Augmentor's crop formula on the exact rotated extent: no black corners, square or not.
        for (w, h) in [(120u32, 120u32), (160, 120), (120, 150)] {
            let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(w, h, Luma([200])));
            for deg in [-10, -3, 5, 10] {
                let out = apply(&img, &Plan { steps: vec![Step::Rotate { deg }] }).to_luma8();
                assert_eq!(out.dimensions(), (w, h));
                let dark: Vec<(u32, u32)> =
                    out.enumerate_pixels().filter(|p| p.2[0] < 195).map(|p| (p.0, p.1)).collect();
                assert!(
                    dark.is_empty(),
                    "deg {deg}: {} dark pixels, e.g. {:?}",
                    dark.len(),
                    &dark[..dark.len().min(10)]
                );
            }
        }
    }

    #[test]
    fn rotation_angles_are_integers_in_range() {
        let ops = [Operation::Rotate { probability: 1.0, max_left: 10, max_right: 10 }];
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            for d in plan(&ops, &mut rng, 50, 50).rotations() {
                assert!((-10..=10).contains(&d));
                seen.insert(d);
            }
        }
        assert!(seen.contains(&-10) && seen.contains(&10));
    }
}
