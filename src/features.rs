//! Feature cache: the frozen backbone's pooled 2048-d features, extracted once per image (and
//! per augmented view) and stored on disk, so that training the head takes seconds per epoch.
//!
//! The cache key is the sha256 of: the weights file's sha256, the model's backbone settings
//! (variant, precision, input mapping), the sorted file list with sizes and mtimes (the data
//! fingerprint), the transform's description, the number of views and the seed (for a random
//! transform only: a deterministic one gives the same features for every seed). Any change of
//! those gives another file; files are written atomically.
//!
//! View `v` of image `i` is the dataset's transform run with the RNG seed the
//! [`crate::data::DataLoader`] uses for epoch `v`, item `i` (unshuffled), so the
//! views are deterministic. A deterministic transform gets a single view.

use crate::data::{DataLoader, ImageFolder};
use crate::error::{Error, IoContext, Result};
use crate::model::{TransferModel, NUM_FEATURES};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;
use tch::{Kind, Tensor};

/// Features of a dataset: `views` blocks of `n` rows, block `v` for view `v`.
#[derive(Debug)]
pub struct FeatureSet {
    /// `views * n x 2048` features, view-major.
    pub features: Tensor,
    /// `n` labels (int64), in the dataset's sample order.
    pub labels: Tensor,
    /// Number of views.
    pub views: usize,
    /// Number of images.
    pub n: usize,
}

impl FeatureSet {
    /// The `n x 2048` features of view `v` (modulo the number of views).
    pub fn view(&self, v: usize) -> Tensor {
        let v = (v % self.views) as i64;
        self.features.narrow(0, v * self.n as i64, self.n as i64)
    }
}

/// sha256 over the dataset's classes and its sorted `(relative path, size, mtime)` list.
pub fn data_fingerprint(ds: &ImageFolder) -> Result<String> {
    let mut h = Sha256::new();
    h.update(ds.classes.join("\n").as_bytes());
    let mut rows: Vec<String> = Vec::with_capacity(ds.len());
    for (p, l) in &ds.samples {
        let md = std::fs::metadata(p).at("stat", p)?;
        let mtime =
            md.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        let rel = p.strip_prefix(&ds.root).unwrap_or(p);
        rows.push(format!("{}\t{l}\t{}\t{mtime}", rel.display(), md.len()));
    }
    rows.sort();
    for r in rows {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Number of views actually extracted: 1 for a deterministic transform.
pub fn effective_views(ds: &ImageFolder, views: usize) -> usize {
    if ds.transform.is_random() {
        views.max(1)
    } else {
        1
    }
}

/// The cache key (hex sha256) for `ds` under `model` with the weights of sha256 `weights_sha`.
pub fn cache_key(
    model: &TransferModel,
    weights_sha: &str,
    ds: &ImageFolder,
    views: usize,
    seed: u64,
) -> Result<String> {
    let mut h = Sha256::new();
    let c = &model.cfg;
    let tf = serde_json::to_string(&ds.transform).map_err(|e| Error::invalid(e.to_string()))?;
    let parts = [
        "covid_cxr features v1".to_string(),
        format!("weights {weights_sha}"),
        format!("variant {} precision {:?} exact_input {}", c.variant.name(), c.precision, c.exact_fid_input),
        format!("data {}", data_fingerprint(ds)?),
        format!("transform {tf}"),
        // a deterministic transform gives the same single view for every seed
        format!("views {} seed {}", effective_views(ds, views), if ds.transform.is_random() { seed } else { 0 }),
    ];
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Extracts the features of every image, `views` times with the dataset's transform, in batches
/// of `batch_size`; `progress(done, total)` is called after each batch.
pub fn extract(
    model: &TransferModel,
    ds: &ImageFolder,
    views: usize,
    seed: u64,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FeatureSet> {
    if ds.is_empty() {
        return Err(Error::dataset(&ds.root, "no images"));
    }
    let views = effective_views(ds, views);
    let n = ds.len();
    let dl = DataLoader::new(ds, batch_size).seed(seed);
    let total = views * n;
    // One output tensor, written batch by batch: keeping a small tensor per batch alive between
    // the batches' large temporary buffers fragments glibc's heap, and the process then grew by
    // about one decoded batch per batch (1 MB per film: 10 GB at 15,000 films).
    let features = Tensor::zeros([total as i64, NUM_FEATURES], (Kind::Float, tch::Device::Cpu));
    let mut labels: Vec<i64> = Vec::with_capacity(n);
    let mut done = 0;
    // decode the next batches on another thread while the backbone runs on this one
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<crate::data::Batch>)>(2);
        let dl = &dl;
        scope.spawn(move || {
            for v in 0..views {
                for b in dl.iter(v as u64) {
                    if tx.send((v, b)).is_err() {
                        return;
                    }
                }
            }
        });
        let mut row = 0i64;
        for (v, b) in rx {
            let b = b?;
            let f = model.features(&b.images);
            let k = f.size().first().copied().unwrap_or(0);
            if f.size() != [k, NUM_FEATURES] || row + k > total as i64 {
                return Err(Error::dataset(
                    &ds.root,
                    format!("the backbone gave features of shape {:?} for a batch of {}", f.size(), b.paths.len()),
                ));
            }
            features.narrow(0, row, k).copy_(&f);
            row += k;
            if v == 0 {
                labels.extend(Vec::<i64>::try_from(&b.labels)?);
            }
            done += b.paths.len();
            progress(done, total);
        }
        if row != total as i64 {
            return Err(Error::dataset(&ds.root, format!("extracted {row} features for {total} views (corrupt images?)")));
        }
        Ok(())
    })?;
    Ok(FeatureSet { features, labels: Tensor::from_slice(&labels), views, n })
}

/// `<cache>/features`.
pub fn default_cache_dir() -> PathBuf {
    crate::weights::cache_root().join("features")
}

/// Features of `ds` from the cache in `cache_dir`, extracting and storing them on a miss.
/// Returns the set and whether it came from the cache.
#[allow(clippy::too_many_arguments)]
pub fn cached_features(
    model: &TransferModel,
    weights_sha: &str,
    ds: &ImageFolder,
    views: usize,
    seed: u64,
    batch_size: usize,
    cache_dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(FeatureSet, bool)> {
    let key = cache_key(model, weights_sha, ds, views, seed)?;
    let file = cache_dir.join(format!("{key}.safetensors"));
    if file.is_file() {
        if let Ok(fs) = read_set(&file) {
            if fs.n == ds.len() {
                return Ok((fs, true));
            }
        }
    }
    let fs = extract(model, ds, views, seed, batch_size, progress)?;
    let views_s = fs.views.to_string();
    let n_s = fs.n.to_string();
    crate::weights::write_safetensors(
        &file,
        &[("features".into(), fs.features.shallow_clone()), ("labels".into(), fs.labels.shallow_clone())],
        &[("views", &views_s), ("n", &n_s), ("root", &ds.root.to_string_lossy())],
    )?;
    Ok((fs, false))
}

fn read_set(file: &Path) -> Result<FeatureSet> {
    let meta = crate::weights::safetensors_metadata(file)?;
    let num = |k: &str| -> Result<usize> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Weights { path: file.to_path_buf(), reason: format!("metadata {k} missing") })
    };
    let (views, n) = (num("views")?, num("n")?);
    let t = crate::weights::read_tensors(file)?;
    let get = |name: &str| t.iter().find(|(k, _)| k == name).map(|(_, v)| v.shallow_clone());
    let (Some(features), Some(labels)) = (get("features"), get("labels")) else {
        return Err(Error::Weights { path: file.to_path_buf(), reason: "features or labels missing".into() });
    };
    if features.size() != [(views * n) as i64, NUM_FEATURES] || labels.size() != [n as i64] {
        return Err(Error::Weights { path: file.to_path_buf(), reason: "inconsistent shapes".into() });
    }
    Ok(FeatureSet { features: features.to_kind(Kind::Float), labels: labels.to_kind(Kind::Int64), views, n })
}
