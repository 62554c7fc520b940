//! `ImageFolder` and `DataLoader` with torchvision's semantics (the notebook's loading cell).
//!
//! ```text
//! train_ds = datasets.ImageFolder("split/train", train_tf)    ImageFolder::open("split/train", train_tf)?
//! train_dl = DataLoader(train_ds, batch_size=8, shuffle=True)  DataLoader::new(&train_ds, 8).shuffle(1337)
//! images, labels = next(iter(train_dl))                       let batch = train_dl.iter(0).next().unwrap()?;
//! ```
//!
//! Classes are the sorted sub-folder names; only files with image extensions are taken
//! (others are skipped silently, hidden files too). Decoding is parallel (rayon) one batch at
//! a time, so memory stays bounded by the batch. A corrupt image is an error naming its path,
//! or, with [`ImageFolder::skip_corrupt`], is skipped and counted.

use crate::error::{Error, Result};
use crate::imageio::{list_images, list_subdirs, open_image};
use crate::transforms::Compose;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tch::Tensor;

/// A labelled image collection laid out as `root/<class>/<image>`.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    /// The root folder.
    pub root: PathBuf,
    /// Class names (sorted sub-folder names).
    pub classes: Vec<String>,
    /// `(path, class index)` of every image, sorted by class then file name.
    pub samples: Vec<(PathBuf, i64)>,
    /// The transform applied on loading.
    pub transform: Compose,
    skip_corrupt: bool,
    skipped: Arc<Mutex<Vec<(PathBuf, String)>>>,
}

impl ImageFolder {
    /// Scans `root`: one class per sub-folder, sorted. An empty class folder (no image files),
    /// a root without sub-folders or a missing root is an error naming the folder.
    pub fn open(root: impl AsRef<Path>, transform: Compose) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::dataset(&root, "not a folder"));
        }
        let dirs = list_subdirs(&root)?;
        if dirs.is_empty() {
            return Err(Error::dataset(&root, "no class sub-folders (expected root/<class>/<image>)"));
        }
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let files = list_images(d)?;
            if files.is_empty() {
                return Err(Error::dataset(d, "empty class folder: no image files (.jpg, .jpeg, .png, ...)"));
            }
            classes.push(d.file_name().expect("dir name").to_string_lossy().into_owned());
            samples.extend(files.into_iter().map(|f| (f, i as i64)));
        }
        Ok(ImageFolder { root, classes, samples, transform, skip_corrupt: false, skipped: Arc::default() })
    }

    /// Opens `root/train` and `root/val` (as `split` writes them) and checks that they have
    /// the same classes.
    pub fn open_split(root: impl AsRef<Path>, train_tf: Compose, val_tf: Compose) -> Result<(Self, Self)> {
        let root = root.as_ref();
        let train = ImageFolder::open(root.join("train"), train_tf)?;
        let val = ImageFolder::open(root.join("val"), val_tf)?;
        check_same_classes(&train, &val)?;
        Ok((train, val))
    }

    /// Skip (and count) corrupt images instead of failing.
    pub fn skip_corrupt(mut self, yes: bool) -> Self {
        self.skip_corrupt = yes;
        self
    }

    /// The images skipped as corrupt so far, with the reason.
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        self.skipped.lock().unwrap().clone()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for (_, l) in &self.samples {
            c[*l as usize] += 1;
        }
        c
    }

    /// Loads item `index` with a transform RNG seeded by `seed` (deterministic).
    pub fn get(&self, index: usize, seed: u64) -> Result<(Tensor, i64)> {
        let (data, h, w, label) = self.get_vec(index, seed)?;
        Ok((Tensor::from_slice(&data).view([3, h as i64, w as i64]), label))
    }

    fn get_vec(&self, index: usize, seed: u64) -> Result<(Vec<f32>, u32, u32, i64)> {
        let (path, label) = self
            .samples
            .get(index)
            .ok_or_else(|| Error::invalid(format!("index {index} out of range ({} images)", self.len())))?;
        let img = open_image(path)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, h, w) = self.transform.apply_vec(&img, &mut rng)?;
        Ok((d, h, w, *label))
    }
}

/// Fails with a clear error if `a` and `b` do not have the same classes in the same order.
pub fn check_same_classes(a: &ImageFolder, b: &ImageFolder) -> Result<()> {
    if a.classes != b.classes {
        return Err(Error::dataset(
            &b.root,
            format!("classes {:?} differ from {:?} in {}", b.classes, a.classes, a.root.display()),
        ));
    }
    Ok(())
}

/// One batch: images `N x 3 x H x W`, labels `N` (int64), and the source paths.
#[derive(Debug)]
pub struct Batch {
    /// Images.
    pub images: Tensor,
    /// Class indices.
    pub labels: Tensor,
    /// Source files, in batch order.
    pub paths: Vec<PathBuf>,
}

/// Batches over an [`ImageFolder`], shuffled by seed, decoded in parallel.
#[derive(Debug, Clone)]
pub struct DataLoader<'a> {
    dataset: &'a ImageFolder,
    batch_size: usize,
    shuffle: Option<u64>,
    seed: u64,
    drop_last: bool,
}

fn mix(a: u64, b: u64, c: u64) -> u64 {
    crate::seed::mix(a, b, 0x9E37_79B9_7F4A_7C15, c, 0xC2B2_AE3D_27D4_EB4F)
}

impl<'a> DataLoader<'a> {
    /// `DataLoader(dataset, batch_size)`, in order, not shuffled.
    pub fn new(dataset: &'a ImageFolder, batch_size: usize) -> Self {
        DataLoader { dataset, batch_size: batch_size.max(1), shuffle: None, seed: 0, drop_last: false }
    }
    /// Shuffles every epoch, with an order drawn from `(seed, epoch)`; also seeds the random transforms.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self.seed = seed;
        self
    }
    /// Seeds the random transforms without shuffling.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Drops a last incomplete batch.
    pub fn drop_last(mut self, yes: bool) -> Self {
        self.drop_last = yes;
        self
    }
    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }
    /// Whether an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The dataset.
    pub fn dataset(&self) -> &ImageFolder {
        self.dataset
    }
    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if let Some(s) = self.shuffle {
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(s, epoch, 0x5348_5546)));
        }
        idx
    }
    /// The batches of `epoch` (deterministic for the seed and epoch).
    pub fn iter(&self, epoch: u64) -> BatchIter<'a> {
        let order = self.order(epoch);
        BatchIter { loader: self.clone(), order, pos: 0, epoch }
    }
    /// Loads the items at `indices` as one batch (parallel decoding).
    pub fn load(&self, indices: &[usize], epoch: u64) -> Result<Option<Batch>> {
        let ds = self.dataset;
        if let Some(&bad) = indices.iter().find(|&&i| i >= ds.len()) {
            return Err(Error::dataset(&ds.root, format!("index {bad} out of range ({} images)", ds.len())));
        }
        let items: Vec<Result<(Vec<f32>, u32, u32, i64)>> =
            indices.par_iter().map(|&i| ds.get_vec(i, mix(self.seed, epoch, i as u64 + 1))).collect();
        let mut data = Vec::new();
        let mut labels = Vec::new();
        let mut paths = Vec::new();
        let mut shape: Option<(u32, u32)> = None;
        for (item, &i) in items.into_iter().zip(indices) {
            match item {
                Ok((d, h, w, l)) => {
                    if let Some(s) = shape {
                        if s != (h, w) {
                            return Err(Error::dataset(&ds.samples[i].0, format!("transformed size {h}x{w} differs from {}x{} in the same batch: add a resize or crop", s.0, s.1)));
                        }
                    }
                    shape = Some((h, w));
                    data.push(d);
                    labels.push(l);
                    paths.push(ds.samples[i].0.clone());
                }
                Err(e @ Error::Decode { .. }) | Err(e @ Error::Io { .. }) if ds.skip_corrupt => {
                    let mut s = ds.skipped.lock().unwrap();
                    if !s.iter().any(|(p, _)| *p == ds.samples[i].0) {
                        s.push((ds.samples[i].0.clone(), e.to_string()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let Some((h, w)) = shape else { return Ok(None) };
        let n = labels.len() as i64;
        let flat: Vec<f32> = data.concat();
        Ok(Some(Batch {
            images: Tensor::from_slice(&flat).view([n, 3, h as i64, w as i64]),
            labels: Tensor::from_slice(&labels),
            paths,
        }))
    }
}

/// Iterator over the batches of one epoch.
pub struct BatchIter<'a> {
    loader: DataLoader<'a>,
    order: Vec<usize>,
    pos: usize,
    epoch: u64,
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos >= self.order.len() {
                return None;
            }
            let end = (self.pos + self.loader.batch_size).min(self.order.len());
            if self.loader.drop_last && end - self.pos < self.loader.batch_size {
                return None;
            }
            let idx = self.order[self.pos..end].to_vec();
            self.pos = end;
            match self.loader.load(&idx, self.epoch) {
                Ok(Some(b)) => return Some(Ok(b)),
                // every image of this batch was skipped as corrupt (and counted in the dataset)
                Ok(None) => continue,
                Err(e) => {
                    self.pos = self.order.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        crate::synth::generate(
            t.path(),
            &crate::synth::SynthConfig { per_class: 3, seed: 2, width_range: (64, 96), marker_probability: 0.5 },
        )
        .unwrap();
        std::fs::write(t.path().join("covid/notes.txt"), b"not an image").unwrap();
        t
    }

    #[test]
    fn classes_sorted_and_non_images_skipped() {
        let t = fixture();
        let ds = ImageFolder::open(t.path(), Compose::notebook_val(32)).unwrap();
        assert_eq!(ds.classes, vec!["covid", "normal", "pneumonia"]);
        assert_eq!(ds.len(), 9);
        assert_eq!(ds.class_counts(), vec![3, 3, 3]);
    }

    #[test]
    fn batches_shape_range_and_determinism() {
        let t = fixture();
        let ds = ImageFolder::open(t.path(), Compose::notebook_train(32)).unwrap();
        let dl = DataLoader::new(&ds, 4).shuffle(7);
        assert_eq!(dl.len(), 3);
        let b: Vec<Batch> = dl.iter(0).collect::<Result<_>>().unwrap();
        assert_eq!(b[0].images.size(), vec![4, 3, 32, 32]);
        assert_eq!(b[2].images.size(), vec![1, 3, 32, 32]);
        let max = b[0].images.max().double_value(&[]);
        let min = b[0].images.min().double_value(&[]);
        assert!(min >= -1.0 && max <= 1.0);
        let again: Vec<Batch> = dl.iter(0).collect::<Result<_>>().unwrap();
        assert!(b[0].images.equal(&again[0].images));
        assert_eq!(b[0].paths, again[0].paths);
        let other: Vec<Batch> = dl.iter(1).collect::<Result<_>>().unwrap();
        assert_ne!(
            b.iter().flat_map(|x| x.paths.clone()).collect::<Vec<_>>(),
            other.iter().flat_map(|x| x.paths.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn load_out_of_range_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        crate::synth::generate(t.path(), &crate::synth::SynthConfig::new(1, 0)).unwrap();
        let ds = ImageFolder::open(t.path(), Compose::notebook_val(8)).unwrap();
        let e = DataLoader::new(&ds, 2).load(&[0, 3], 0).unwrap_err().to_string();
        assert!(e.contains("index 3 out of range (3 images)"), "{e}");
    }

    #[test]
    fn corrupt_image_named_or_skipped() {
        let t = fixture();
        std::fs::write(t.path().join("normal/broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
        let ds = ImageFolder::open(t.path(), Compose::notebook_val(16)).unwrap();
        let dl = DataLoader::new(&ds, 16);
        let e = dl.iter(0).next().unwrap().unwrap_err().to_string();
        assert!(e.contains("broken.png"), "{e}");
        let ds = ds.skip_corrupt(true);
        let dl = DataLoader::new(&ds, 16);
        let b = dl.iter(0).next().unwrap().unwrap();
        assert_eq!(b.images.size()[0], 9);
        assert_eq!(ds.skipped().len(), 1);
    }

    #[test]
    fn empty_class_and_mismatched_splits_are_errors() {
        let t = fixture();
        std::fs::create_dir_all(t.path().join("zzz")).unwrap();
        let e = ImageFolder::open(t.path(), Compose::notebook_val(8)).unwrap_err().to_string();
        assert!(e.contains("zzz") && e.contains("empty class folder"), "{e}");
        std::fs::remove_dir(t.path().join("zzz")).unwrap();
        let a = ImageFolder::open(t.path(), Compose::notebook_val(8)).unwrap();
        let mut b = a.clone();
        b.classes.pop();
        assert!(check_same_classes(&a, &b).is_err());
    }
}
