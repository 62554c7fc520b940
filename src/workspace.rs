//! Work folders for the notebooks: the data switch (`COVID_CXR_DATA`, or the embedded synthetic
//! films), a working copy of the data that augmentation may write into, stage folders that are
//! rebuilt when a cell runs again, and the place of the trained model that later notebooks load.
//!
//! The user's folder is only ever read: [`Workspace::fresh_data`] hard-links (or, across file
//! systems, copies) its images into `<work>/<tag>/data/`, and every write happens there.
//! Removing a hard link never removes the user's file, and nothing in the crate writes into an
//! existing file in place (outputs are written to a temporary name and renamed), so the
//! originals are safe. A work folder carries a marker file; a folder without it is never
//! emptied.
//!
//! ```
//! use covid_cxr::workspace::{DataSource, Workspace};
//! use covid_cxr::synth::SynthConfig;
//! let tmp = tempfile::tempdir().unwrap();
//! let ws = Workspace::new(tmp.path().join("work"), DataSource::Synthetic(SynthConfig::new(2, 1)))?;
//! let data = ws.fresh_data()?;          // synthetic films, 2 per class
//! assert!(data.join("covid").is_dir());
//! let again = ws.fresh_data()?;         // running the cell again starts from the same films
//! assert_eq!(data, again);
//! # Ok::<(), covid_cxr::Error>(())
//! ```

use crate::error::{Error, IoContext, Result};
use crate::imageio::{list_images, list_subdirs};
use crate::synth::{SynthConfig, CLASSES};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};

/// The environment variable naming a real ImageFolder (`covid/`, `normal/`, `pneumonia/`).
pub const DATA_ENV: &str = "COVID_CXR_DATA";
/// The marker file of a work folder.
pub const MARKER: &str = ".covid-cxr-workspace";
/// The folder, inside a work folder, of the trained model (checkpoint) that later notebooks load.
pub const RUN_DIR: &str = "run";
/// The folder, inside a work folder, of the train/val split.
pub const SPLIT_DIR: &str = "postXrayData";

/// Where the notebook's images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The embedded synthetic films (not diagnostic).
    Synthetic(SynthConfig),
    /// A real ImageFolder with `covid/`, `normal/` and `pneumonia/` (only read, never written).
    Folder(PathBuf),
}

/// A notebook's work folder `<work>/<tag>`: `synthetic`, or `real-<hash of the data path>`, so
/// that runs on different data never mix.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    source: DataSource,
}

impl Workspace {
    /// Reads [`DATA_ENV`]: a real ImageFolder when set (and not empty), else `synthetic`.
    pub fn from_env(work: impl AsRef<Path>, synthetic: SynthConfig) -> Result<Self> {
        let source = match std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
            Some(p) => DataSource::Folder(PathBuf::from(p)),
            None => DataSource::Synthetic(synthetic),
        };
        Workspace::new(work, source)
    }

    /// Opens (creating it if needed) the work folder of `source` under `work`. A real data folder
    /// must hold `covid/`, `normal/` and `pneumonia/` with images, and must neither contain nor lie
    /// inside the work folder.
    pub fn new(work: impl AsRef<Path>, source: DataSource) -> Result<Self> {
        let tag = match &source {
            DataSource::Synthetic(_) => "synthetic".to_string(),
            DataSource::Folder(p) => {
                check_image_folder(p)?;
                let canon = p.canonicalize().at("resolve", p)?;
                let h = Sha256::digest(canon.to_string_lossy().as_bytes());
                format!("real-{}", h.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
            }
        };
        let root = work.as_ref().join(tag);
        if let DataSource::Folder(p) = &source {
            // before creating anything: the work folder must not lie inside the data, nor contain it
            let data = p.canonicalize().at("resolve", p)?;
            let work_abs = resolve(&root)?;
            if work_abs.starts_with(&data) || data.starts_with(&work_abs) {
                return Err(Error::dataset(p, "the data folder and the work folder must not contain one another"));
            }
        }
        if root.exists() && !root.join(MARKER).is_file() && dir_has_entries(&root)? {
            return Err(Error::WouldOverwrite {
                path: root,
                reason: format!("not a covid-cxr work folder (no {MARKER}); choose another work folder"),
            });
        }
        std::fs::create_dir_all(&root).at("create folder", &root)?;
        let marker = root.join(MARKER);
        if !marker.is_file() {
            crate::imageio::write_atomic(&marker, b"covid-cxr notebook work folder: its contents are rebuilt at will\n", true)?;
        }
        Ok(Workspace { root, source })
    }

    /// The work folder (as given, relative when `work` was relative).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the images come from.
    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// Whether the data are the synthetic films.
    pub fn is_synthetic(&self) -> bool {
        matches!(self.source, DataSource::Synthetic(_))
    }

    /// The checkpoint folder (`<root>/run`).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join(RUN_DIR)
    }

    /// The split folder (`<root>/postXrayData`, with `train/` and `val/`).
    pub fn split_dir(&self) -> PathBuf {
        self.root.join(SPLIT_DIR)
    }

    /// An empty folder `<root>/<name>`: what an earlier run of the cell left there is removed
    /// first (it is the notebook's own output, inside the marked work folder). `name` must be a
    /// relative path without `..`.
    pub fn fresh_dir(&self, name: impl AsRef<Path>) -> Result<PathBuf> {
        let name = name.as_ref();
        if name.as_os_str().is_empty() || !name.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::invalid(format!("{}: a work sub-folder must be a plain relative path", name.display())));
        }
        if !self.root.join(MARKER).is_file() {
            return Err(Error::WouldOverwrite { path: self.root.clone(), reason: format!("{MARKER} is missing") });
        }
        let dir = self.root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).at("remove", &dir)?;
        }
        std::fs::create_dir_all(&dir).at("create folder", &dir)?;
        Ok(dir)
    }

    /// A fresh working copy of the data in `<root>/data/<class>/`: the synthetic films (drawn once
    /// into `<root>/originals/`), or the images of the real folder, hard-linked (copied across
    /// file systems). Calling it again discards what augmentation added and starts over.
    pub fn fresh_data(&self) -> Result<PathBuf> {
        let originals = match &self.source {
            DataSource::Folder(p) => p.clone(),
            DataSource::Synthetic(cfg) => self.synthetic_originals(cfg)?,
        };
        let data = self.fresh_dir("data")?;
        for class in CLASSES {
            let (src, dst) = (originals.join(class), data.join(class));
            std::fs::create_dir_all(&dst).at("create folder", &dst)?;
            for f in list_images(&src)? {
                let to = dst.join(f.file_name().expect("a file name"));
                if std::fs::hard_link(&f, &to).is_err() {
                    std::fs::copy(&f, &to).at("copy", &f)?;
                }
            }
        }
        Ok(data)
    }

    /// Loads the checkpoint that the main notebook saved in [`Workspace::run_dir`]; a clear error
    /// when there is none yet.
    pub fn load_checkpoint(&self) -> Result<(crate::model::TransferModel, crate::checkpoint::Manifest)> {
        let run = self.run_dir();
        if !run.join(crate::checkpoint::MANIFEST_FILE).is_file() {
            return Err(Error::dataset(
                &run,
                "no trained model here yet: run notebooks/covid_cxr.ipynb first (with the same COVID_CXR_DATA); \
                 it trains the model and saves it in this folder",
            ));
        }
        crate::checkpoint::load(&run)
    }

    fn synthetic_originals(&self, cfg: &SynthConfig) -> Result<PathBuf> {
        // keyed by the generator's version too: films drawn by an older generator are not reused
        let v = crate::synth::GENERATOR_VERSION;
        let dir = self.root.join(format!("originals-v{v}-{}-{}", cfg.per_class, cfg.seed));
        if !dir.join(".complete").is_file() {
            let partial = self.fresh_dir(format!(".originals-v{v}-{}-{}.partial", cfg.per_class, cfg.seed))?;
            crate::synth::generate(&partial, cfg)?;
            std::fs::write(partial.join(".complete"), b"").at("write", &partial)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).at("remove", &dir)?;
            }
            std::fs::rename(&partial, &dir).at("rename", &partial)?;
        }
        Ok(dir)
    }
}

impl std::fmt::Display for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            DataSource::Synthetic(c) => write!(
                f,
                "synthetic films (not diagnostic), {} per class, seed {}; work folder {}",
                c.per_class,
                c.seed,
                self.root.display()
            ),
            DataSource::Folder(p) => write!(f, "{DATA_ENV}={}; work folder {}", p.display(), self.root.display()),
        }
    }
}

/// `path` made absolute with its longest existing prefix resolved (symbolic links followed).
fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).at("resolve", path)?;
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            return Ok(rest.iter().rev().fold(c, |acc: PathBuf, part| acc.join(part)));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return Ok(abs),
        }
    }
}

fn dir_has_entries(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir).at("list folder", dir)?.next().is_some())
}

/// Checks that `dir` is an ImageFolder with `covid/`, `normal/` and `pneumonia/`, each with images,
/// and no other class folder.
pub fn check_image_folder(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::dataset(dir, format!("{DATA_ENV}: not a folder")));
    }
    let subs: Vec<String> =
        list_subdirs(dir)?.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    let expected: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
    if subs != expected {
        return Err(Error::dataset(
            dir,
            format!("expected exactly the class folders {expected:?} (an ImageFolder), found {subs:?}"),
        ));
    }
    for c in CLASSES {
        if list_images(&dir.join(c))?.is_empty() {
            return Err(Error::dataset(dir.join(c), "no image files (.jpg, .jpeg, .png, ...)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_folder_is_linked_and_never_written() {
        let tmp = tempfile::tempdir().unwrap();
        let user = tmp.path().join("user");
        crate::synth::generate(&user, &SynthConfig::new(2, 3)).unwrap();
        let before: Vec<PathBuf> = CLASSES.iter().flat_map(|c| list_images(&user.join(c)).unwrap()).collect();
        let ws = Workspace::new(tmp.path().join("work"), DataSource::Folder(user.clone())).unwrap();
        assert!(ws.root().file_name().unwrap().to_string_lossy().starts_with("real-"));
        let data = ws.fresh_data().unwrap();
        // augmentation writes into the copy only
        std::fs::write(data.join("covid").join("extra.png"), b"x").unwrap();
        let again = ws.fresh_data().unwrap();
        assert!(!again.join("covid").join("extra.png").exists());
        assert_eq!(list_images(&again.join("normal")).unwrap().len(), 2);
        let after: Vec<PathBuf> = CLASSES.iter().flat_map(|c| list_images(&user.join(c)).unwrap()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn refuses_bad_folders_and_foreign_work_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let user = tmp.path().join("user");
        std::fs::create_dir_all(user.join("covid")).unwrap();
        let e = Workspace::new(tmp.path().join("w"), DataSource::Folder(user.clone())).unwrap_err();
        assert!(e.to_string().contains("expected exactly the class folders"), "{e}");
        // a work folder inside the data folder
        crate::synth::generate(&tmp.path().join("d"), &SynthConfig::new(1, 1)).unwrap();
        let e = Workspace::new(tmp.path().join("d/covid/w"), DataSource::Folder(tmp.path().join("d"))).unwrap_err();
        assert!(e.to_string().contains("must not contain"), "{e}");
        assert!(!tmp.path().join("d/covid/w").exists(), "nothing is created inside the data folder");
        // a user folder with files but no marker is never emptied
        let foreign = tmp.path().join("mine/synthetic");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("keep.txt"), b"x").unwrap();
        assert!(Workspace::new(tmp.path().join("mine"), DataSource::Synthetic(SynthConfig::new(1, 1))).is_err());
        assert!(foreign.join("keep.txt").exists());
    }

    #[test]
    fn fresh_dir_rejects_escapes_and_checkpoint_error_names_the_notebook() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path(), DataSource::Synthetic(SynthConfig::new(1, 1))).unwrap();
        assert!(ws.fresh_dir("../x").is_err());
        assert!(ws.fresh_dir("/abs").is_err());
        let e = ws.load_checkpoint().unwrap_err();
        assert!(e.to_string().contains("covid_cxr.ipynb"), "{e}");
    }
}
