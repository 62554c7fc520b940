//! Train/val(/test) split with split-folders' `ratio` semantics (the notebook's
//! `splitfolders.ratio(data, output, seed=1337, ratio=(.8, .2))`).
//!
//! Per class folder: list the image files (hidden and non-image files skipped), sort, shuffle with the seed,
//! train gets `int(r_train * n)` (Python's float product, truncated, so 0.7 of 90 is 62), val gets
//! `int(r_val * n)` when a test ratio is given and the rest otherwise, test the rest. Files are copied (or moved, by option).
//! With a grouping key (a file-name prefix or a CSV manifest column, e.g. a patient id) whole
//! groups are assigned, so no patient is in two splits; counts then come as close to the
//! ratio as the group sizes allow.
//!
//! The shuffle is ChaCha8 + Fisher-Yates: the file lists differ from Python's Mersenne
//! Twister ones; the counts, the determinism for a seed and the disjointness are the same.

use crate::error::{Error, IoContext, Result};
use crate::file_manifest::ManifestIndex;
use crate::imageio::{has_image_extension, is_hidden, list_subdirs};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The names of the splits, in order.
pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

/// How files are grouped so that a group never straddles two splits.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    /// Each file is its own group (split-folders' default).
    None,
    /// The group is the part of the file name before the first `delimiter`
    /// (e.g. `patient12_view2.png` with `_` gives `patient12`).
    Prefix(String),
    /// The group is `key_column` of the CSV row whose `file_column` names the file (matched
    /// by path suffix, then by file name). Files absent from the manifest are an error.
    Manifest { csv: PathBuf, file_column: String, key_column: String },
}

impl GroupBy {
    /// Parses the command line's `--group-by`: `prefix:_` or `manifest.csv:column`
    /// (`manifest.csv:file_column:key_column` to name the file column too).
    ///
    /// ```
    /// use covid_cxr::split::GroupBy;
    /// assert_eq!(GroupBy::parse("prefix:_").unwrap(), GroupBy::Prefix("_".into()));
    /// assert!(matches!(GroupBy::parse("m.csv:split_group").unwrap(), GroupBy::Manifest { .. }));
    /// assert!(GroupBy::parse("nonsense").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(d) = s.strip_prefix("prefix:") {
            if d.is_empty() {
                return Err(Error::invalid("--group-by prefix: needs a delimiter, e.g. prefix:_"));
            }
            return Ok(GroupBy::Prefix(d.to_string()));
        }
        match crate::file_manifest::parse_spec(s) {
            Some((csv, file_column, key_column)) => Ok(GroupBy::Manifest { csv, file_column, key_column }),
            None => Err(Error::invalid(format!("--group-by {s:?}: expected prefix:DELIM or MANIFEST.csv:COLUMN"))),
        }
    }
}

/// Options of [`ratio`].
#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// Two (train, val) or three (train, val, test) ratios summing to 1.
    pub ratios: Vec<f64>,
    /// Shuffle seed (split-folders' default: 1337).
    pub seed: u64,
    /// Move instead of copy.
    pub move_files: bool,
    /// Grouping key.
    pub group_by: GroupBy,
}

impl SplitConfig {
    /// `ratios` with `seed`, copying, no grouping.
    pub fn new(ratios: &[f64], seed: u64) -> Self {
        SplitConfig { ratios: ratios.to_vec(), seed, move_files: false, group_by: GroupBy::None }
    }
}

/// Per class and split counts, and the assignment of every file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SplitReport {
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Split names used (`train`, `val`, maybe `test`).
    pub splits: Vec<String>,
    /// `counts[class][split]`.
    pub counts: Vec<Vec<usize>>,
    /// `(source, destination)` of every file.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// The seed used.
    pub seed: u64,
    /// The ratios used.
    pub ratios: Vec<f64>,
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<14}", "class")?;
        for s in &self.splits {
            write!(f, "{s:>8}")?;
        }
        writeln!(f, "{:>8}", "total")?;
        let mut tot = vec![0; self.splits.len()];
        for (c, row) in self.classes.iter().zip(&self.counts) {
            write!(f, "{c:<14}")?;
            for (i, n) in row.iter().enumerate() {
                write!(f, "{n:>8}")?;
                tot[i] += n;
            }
            writeln!(f, "{:>8}", row.iter().sum::<usize>())?;
        }
        write!(f, "{:<14}", "total")?;
        for n in &tot {
            write!(f, "{n:>8}")?;
        }
        writeln!(f, "{:>8}", tot.iter().sum::<usize>())
    }
}

/// Splits the files of one class, split-folders style, into `ratios.len()` parts of indices.
///
/// Exactly split-folders' arithmetic (`int(r * n)` in binary floating point, truncated): train gets
/// `int(r[0] * n)`; with two ratios val gets the rest; with three, val gets `int(r[1] * n)` and test the
/// rest. So 0.7 of 90 gives 62 (0.7 * 90 is 62.99999999999999 in `f64`), not 63.
///
/// ```
/// let parts = covid_cxr::split::split_counts(10, &[0.8, 0.2]);
/// assert_eq!(parts, vec![8, 2]);
/// let parts = covid_cxr::split::split_counts(11, &[0.8, 0.1, 0.1]);
/// assert_eq!(parts, vec![8, 1, 2]); // the last split takes the rounding slack
/// assert_eq!(covid_cxr::split::split_counts(90, &[0.7, 0.3]), vec![62, 28]); // int(0.7 * 90) = 62
/// ```
pub fn split_counts(n: usize, ratios: &[f64]) -> Vec<usize> {
    // `as usize` truncates towards zero like Python's `int()` (and saturates at 0 for negatives).
    let int_of = |r: f64| ((r * n as f64) as usize).min(n);
    let train = int_of(ratios[0]);
    let mut out = vec![train];
    if ratios.len() >= 3 {
        let val = int_of(ratios[1]).min(n - train);
        out.push(val);
        out.push(n - train - val);
    } else if ratios.len() == 2 {
        out.push(n - train);
    }
    out
}

fn check_ratios(r: &[f64]) -> Result<()> {
    if !(2..=3).contains(&r.len()) {
        return Err(Error::invalid(format!("ratio needs 2 or 3 values (train,val[,test]), got {}", r.len())));
    }
    if r.iter().any(|x| !(0.0..=1.0).contains(x)) || (r.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err(Error::invalid(format!("ratios {r:?} must lie in [0, 1] and sum to 1")));
    }
    Ok(())
}

/// The group of `path` (`rel`: its path relative to the data folder, `/`-separated) under `group`;
/// `manifest` must be loaded for [`GroupBy::Manifest`]. A file without a manifest row is an error
/// naming the CSV.
pub fn group_key(group: &GroupBy, manifest: &Option<ManifestIndex>, rel: &str, path: &Path) -> Result<String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(match group {
        GroupBy::None => name,
        GroupBy::Prefix(d) => name.split(d.as_str()).next().unwrap_or(&name).to_string(),
        GroupBy::Manifest { csv, .. } => match manifest.as_ref().and_then(|m| m.get(rel)) {
            Some(k) => k.clone(),
            None => return Err(Error::dataset(csv, format!("no row for {}", path.display()))),
        },
    })
}

/// The group of every file of `files` (under `root`) under `group`, loading its manifest once:
/// what `split --group-by` keeps together, for the grouped folds of the robust recipe.
pub fn group_keys(group: &GroupBy, root: &Path, files: &[PathBuf]) -> Result<Vec<String>> {
    let manifest = match group {
        GroupBy::Manifest { csv, file_column, key_column } => Some(ManifestIndex::load(csv, file_column, key_column)?),
        _ => None,
    };
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap_or(f).to_string_lossy().replace('\\', "/");
            group_key(group, &manifest, &rel, f)
        })
        .collect()
}

/// Assigns whole groups (in shuffled order) to splits, each split taking groups while that
/// brings its count closer to its target.
fn assign_groups(groups: &[(String, Vec<PathBuf>)], targets: &[usize]) -> Vec<Vec<PathBuf>> {
    let mut out = vec![Vec::new(); targets.len()];
    let mut s = 0;
    for (_, files) in groups {
        while s + 1 < targets.len() {
            let have = out[s].len();
            let with = have + files.len();
            if have >= targets[s] || (with > targets[s] && with - targets[s] > targets[s] - have) {
                s += 1;
            } else {
                break;
            }
        }
        out[s].extend(files.iter().cloned());
    }
    out
}

/// Splits the class folders of `input` into `output/{train,val[,test]}/<class>/`.
///
/// Refuses to write into a non-empty `output`. Writes `output/split.json` (seed, ratios, every
/// file's destination) last. Files are copied through a temporary name, so no half-copied file
/// ever carries a real name.
///
/// ```
/// # fn main() -> covid_cxr::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// covid_cxr::synth::generate(&tmp.path().join("data"), &covid_cxr::synth::SynthConfig::new(5, 0))?;
/// let rep = covid_cxr::split::ratio(tmp.path().join("data"), tmp.path().join("split"), &covid_cxr::split::SplitConfig::new(&[0.8, 0.2], 1337))?;
/// assert_eq!(rep.counts, vec![vec![4, 1]; 3]);
/// # Ok(()) }
/// ```
pub fn ratio(input: impl AsRef<Path>, output: impl AsRef<Path>, cfg: &SplitConfig) -> Result<SplitReport> {
    let (input, output) = (input.as_ref(), output.as_ref());
    check_ratios(&cfg.ratios)?;
    if !input.is_dir() {
        return Err(Error::dataset(input, "input is not a folder"));
    }
    if output.exists() {
        let non_empty = std::fs::read_dir(output).at("list folder", output)?.next().is_some();
        if non_empty {
            return Err(Error::WouldOverwrite {
                path: output.to_path_buf(),
                reason: "output folder is not empty".into(),
            });
        }
    }
    if let (Ok(a), Some(b)) = (input.canonicalize(), absolute(output)) {
        if b.starts_with(&a) {
            return Err(Error::invalid(format!("output {} lies inside input {}", output.display(), input.display())));
        }
    }
    let class_dirs = list_subdirs(input)?;
    if class_dirs.is_empty() {
        return Err(Error::dataset(input, "no class sub-folders"));
    }
    let manifest = match &cfg.group_by {
        GroupBy::Manifest { csv, file_column, key_column } => Some(ManifestIndex::load(csv, file_column, key_column)?),
        _ => None,
    };
    let splits: Vec<String> = SPLIT_NAMES[..cfg.ratios.len()].iter().map(|s| s.to_string()).collect();
    let mut plan: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut counts = Vec::new();
    let mut classes = Vec::new();
    for dir in &class_dirs {
        let class = dir.file_name().expect("dir").to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = Vec::new();
        for e in std::fs::read_dir(dir).at("list folder", dir)? {
            let p = e.at("list folder", dir)?.path();
            if p.is_file() && !is_hidden(&p) && has_image_extension(&p) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(Error::dataset(dir, "empty class folder: no image files"));
        }
        files.sort();
        let targets = split_counts(files.len(), &cfg.ratios);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let parts: Vec<Vec<PathBuf>> = if cfg.group_by == GroupBy::None {
            files.shuffle(&mut rng);
            let mut it = files.into_iter();
            targets.iter().map(|&k| it.by_ref().take(k).collect()).collect()
        } else {
            let mut groups: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
            for f in files {
                let rel = format!("{}/{}", class, f.file_name().unwrap().to_string_lossy());
                groups.entry(group_key(&cfg.group_by, &manifest, &rel, &f)?).or_default().push(f);
            }
            let mut groups: Vec<(String, Vec<PathBuf>)> = groups.into_iter().collect();
            groups.shuffle(&mut rng);
            assign_groups(&groups, &targets)
        };
        counts.push(parts.iter().map(|p| p.len()).collect());
        for (s, part) in parts.into_iter().enumerate() {
            for f in part {
                let dest = output.join(&splits[s]).join(&class).join(f.file_name().unwrap());
                plan.push((f, dest));
            }
        }
        classes.push(class);
    }
    for (src, dest) in &plan {
        let parent = dest.parent().expect("has parent");
        std::fs::create_dir_all(parent).at("create folder", parent)?;
        if dest.exists() {
            return Err(Error::WouldOverwrite { path: dest.clone(), reason: "file exists".into() });
        }
        if cfg.move_files {
            if std::fs::hard_link(src, dest).is_ok() {
                std::fs::remove_file(src).at("remove", src)?;
            } else {
                copy_atomic(src, dest)?;
                std::fs::remove_file(src).at("remove", src)?;
            }
        } else {
            copy_atomic(src, dest)?;
        }
    }
    let report = SplitReport { classes, splits, counts, files: plan, seed: cfg.seed, ratios: cfg.ratios.clone() };
    let json =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::Json { path: output.join("split.json"), source: e })?;
    crate::imageio::write_atomic(&output.join("split.json"), &json, false)?;
    Ok(report)
}

fn absolute(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = p.parent().filter(|q| !q.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(absolute(parent)?.join(p.file_name()?))
}

fn copy_atomic(src: &Path, dest: &Path) -> Result<()> {
    let tmp = crate::imageio::temp_path_for(dest);
    std::fs::copy(src, &tmp).at("copy", src)?;
    match std::fs::hard_link(&tmp, dest) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Err(Error::WouldOverwrite { path: dest.to_path_buf(), reason: "file exists".into() })
            } else {
                std::fs::copy(src, dest).at("copy", dest).map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn touch_class(root: &Path, class: &str, names: &[&str]) {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for n in names {
            std::fs::write(d.join(n), n.as_bytes()).unwrap();
        }
    }

    #[test]
    fn counts_follow_split_folders_int() {
        // split-folders: train = int(r0 * n); val = int(r1 * n) with a test split, the rest without.
        for n in [1, 2, 5, 9, 10, 175, 400, 429] {
            let c = split_counts(n, &[0.8, 0.2]);
            assert_eq!(c[0], (0.8 * n as f64) as usize);
            assert_eq!(c.iter().sum::<usize>(), n);
        }
        // Values from Python 3's int(r * n); all but the 10-file cases differ from floor(r * n + 1e-9), the former rule.
        assert_eq!(split_counts(90, &[0.7, 0.3]), vec![62, 28]);
        assert_eq!(split_counts(10, &[0.7, 0.3]), vec![7, 3]); // 0.7 * 10 = 7.0
        assert_eq!(split_counts(100, &[0.29, 0.71]), vec![28, 72]); // 0.29 * 100 = 28.999999999999996
        assert_eq!(split_counts(100, &[0.57, 0.43]), vec![56, 44]); // 56.99999999999999
        assert_eq!(split_counts(90, &[0.7, 0.2, 0.1]), vec![62, 18, 10]);
        assert_eq!(split_counts(100, &[0.14, 0.29, 0.57]), vec![14, 28, 58]);
        assert_eq!(split_counts(10, &[0.6, 0.3, 0.1]), vec![6, 3, 1]); // 0.3 * 10 = 3.0000000000000004, int 3
    }

    #[test]
    fn deterministic_disjoint_and_hidden_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..23).map(|i| format!("f{i:02}.png")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        touch_class(&tmp.path().join("in"), "a", &refs);
        touch_class(&tmp.path().join("in"), "a", &[".hidden.png"]);
        touch_class(&tmp.path().join("in"), "b", &refs[..7]);
        let cfg = SplitConfig::new(&[0.8, 0.2], 1337);
        let r1 = ratio(tmp.path().join("in"), tmp.path().join("o1"), &cfg).unwrap();
        let r2 = ratio(tmp.path().join("in"), tmp.path().join("o2"), &cfg).unwrap();
        assert_eq!(r1.counts, vec![vec![18, 5], vec![5, 2]]);
        let names1: Vec<_> =
            r1.files.iter().map(|(_, d)| d.strip_prefix(tmp.path().join("o1")).unwrap().to_path_buf()).collect();
        let names2: Vec<_> =
            r2.files.iter().map(|(_, d)| d.strip_prefix(tmp.path().join("o2")).unwrap().to_path_buf()).collect();
        assert_eq!(names1, names2);
        let train: std::collections::HashSet<_> =
            std::fs::read_dir(tmp.path().join("o1/train/a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        let val: std::collections::HashSet<_> =
            std::fs::read_dir(tmp.path().join("o1/val/a")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(train.is_disjoint(&val));
        assert_eq!(train.len() + val.len(), 23);
        // a different seed gives a different assignment
        let r3 = ratio(tmp.path().join("in"), tmp.path().join("o3"), &SplitConfig::new(&[0.8, 0.2], 1)).unwrap();
        let names3: Vec<_> =
            r3.files.iter().map(|(_, d)| d.strip_prefix(tmp.path().join("o3")).unwrap().to_path_buf()).collect();
        assert_ne!(names1, names3);
    }

    #[test]
    fn refuses_non_empty_output() {
        let tmp = tempfile::tempdir().unwrap();
        touch_class(&tmp.path().join("in"), "a", &["x.png", "y.png"]);
        std::fs::create_dir_all(tmp.path().join("out")).unwrap();
        std::fs::write(tmp.path().join("out/keep.txt"), b"mine").unwrap();
        let e = ratio(tmp.path().join("in"), tmp.path().join("out"), &SplitConfig::new(&[0.5, 0.5], 0)).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert_eq!(std::fs::read(tmp.path().join("out/keep.txt")).unwrap(), b"mine");
    }

    #[test]
    fn empty_class_folder_is_error() {
        let tmp = tempfile::tempdir().unwrap();
        touch_class(&tmp.path().join("in"), "a", &["x.png"]);
        std::fs::create_dir_all(tmp.path().join("in/empty")).unwrap();
        let e = ratio(tmp.path().join("in"), tmp.path().join("out"), &SplitConfig::new(&[0.8, 0.2], 0)).unwrap_err();
        assert!(e.to_string().contains("empty class folder"), "{e}");
    }

    #[test]
    fn groups_stay_together() {
        let tmp = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..30).map(|i| format!("p{}_{}.png", i / 3, i % 3)).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        touch_class(&tmp.path().join("in"), "a", &refs);
        let mut cfg = SplitConfig::new(&[0.8, 0.2], 5);
        cfg.group_by = GroupBy::Prefix("_".into());
        let r = ratio(tmp.path().join("in"), tmp.path().join("out"), &cfg).unwrap();
        assert_eq!(r.counts[0], vec![24, 6]);
        let mut split_of = HashMap::new();
        for (src, dst) in &r.files {
            let g = src.file_name().unwrap().to_string_lossy().split('_').next().unwrap().to_string();
            let s =
                dst.strip_prefix(tmp.path().join("out")).unwrap().components().next().unwrap().as_os_str().to_owned();
            assert_eq!(*split_of.entry(g).or_insert(s.clone()), s);
        }
    }
}
