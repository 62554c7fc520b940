//! A CSV manifest of image files (one row per file), matched to the files of a data folder. Used by
//! `split --group-by MANIFEST.csv:COLUMN` (a patient's files stay together), by the robust
//! recipe's grouped cross-validation and by `evaluate --manifest CSV --by COLUMN` (subgroups).
//!
//! A row's file column is matched to a file by its whole path relative to the data folder (e.g.
//! `train/covid/a.png` against `train/covid/a.png`), then by its last two components
//! (`class/name`, so that `train/covid/a.png` matches `covid/a.png` in any split folder), then
//! by file name alone. For each key the first row wins.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One column of a manifest, indexed three ways so that each file is found in constant time: by
/// the whole path, by its last two components (`class/name`) and by file name (first row wins).
#[derive(Debug, Default, Clone)]
pub struct ManifestIndex {
    /// The CSV file.
    pub csv: PathBuf,
    /// The column whose values are looked up.
    pub column: String,
    full: HashMap<String, String>,
    tail2: HashMap<String, String>,
    name: HashMap<String, String>,
}

impl ManifestIndex {
    /// Adds the row of `file` (a `/`-separated path) with `value`.
    pub fn insert(&mut self, file: String, value: String) {
        let parts: Vec<&str> = file.rsplitn(3, '/').collect();
        if parts.len() >= 2 {
            self.tail2.entry(format!("{}/{}", parts[1], parts[0])).or_insert_with(|| value.clone());
        }
        self.name.entry(parts[0].to_string()).or_insert_with(|| value.clone());
        self.full.entry(file).or_insert(value);
    }

    /// The value for `rel` (a `/`-separated path relative to the data folder, e.g. `class/name`),
    /// matched by whole path, then by its last two components, then by file name.
    ///
    /// ```
    /// let mut m = covid_cxr::file_manifest::ManifestIndex::default();
    /// m.insert("train/covid/a.png".into(), "p1".into());
    /// assert_eq!(m.get("train/covid/a.png").map(String::as_str), Some("p1")); // whole path
    /// assert_eq!(m.get("covid/a.png").map(String::as_str), Some("p1")); // class/name
    /// assert_eq!(m.get("elsewhere/a.png").map(String::as_str), Some("p1")); // file name
    /// assert_eq!(m.get("covid/b.png"), None);
    /// ```
    pub fn get(&self, rel: &str) -> Option<&String> {
        let rel = rel.replace('\\', "/");
        let parts: Vec<&str> = rel.rsplitn(3, '/').collect();
        let tail2 = if parts.len() >= 2 { Some(format!("{}/{}", parts[1], parts[0])) } else { None };
        self.full
            .get(&rel)
            .or_else(|| tail2.and_then(|t| self.tail2.get(&t)))
            .or_else(|| self.name.get(parts[0]))
    }

    /// The value for `path`, a file under `root` (its path relative to `root` is matched).
    pub fn get_path(&self, root: &Path, path: &Path) -> Option<&String> {
        let rel = path.strip_prefix(root).unwrap_or(path);
        self.get(&rel.to_string_lossy())
    }

    /// Reads `csv`, whose `file_column` names each row's file, keeping `column`. Errors name the
    /// CSV and the missing column or the unreadable row (numbered as in a text editor, the header
    /// being row 1).
    pub fn load(csv: &Path, file_column: &str, column: &str) -> Result<Self> {
        let mut rdr = csv::Reader::from_path(csv).map_err(|e| Error::dataset(csv, format!("cannot read CSV: {e}")))?;
        let headers = rdr.headers().map_err(|e| Error::dataset(csv, format!("cannot read CSV header: {e}")))?.clone();
        let col = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                Error::dataset(
                    csv,
                    format!("no column {name:?} (columns: {})", headers.iter().collect::<Vec<_>>().join(", ")),
                )
            })
        };
        let (fi, ki) = (col(file_column)?, col(column)?);
        let mut index = ManifestIndex { csv: csv.to_path_buf(), column: column.to_string(), ..Default::default() };
        for (line, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| Error::dataset(csv, format!("row {}: {e}", line + 2)))?;
            let file = rec.get(fi).unwrap_or("").replace('\\', "/");
            if file.is_empty() {
                return Err(Error::dataset(csv, format!("row {}: empty {file_column:?}", line + 2)));
            }
            index.insert(file, rec.get(ki).unwrap_or("").to_string());
        }
        Ok(index)
    }

    /// The value of every file of `files` (under `root`); an error naming the CSV and the first
    /// file without a row.
    pub fn values_for(&self, root: &Path, files: &[PathBuf]) -> Result<Vec<String>> {
        files
            .iter()
            .map(|f| {
                self.get_path(root, f).cloned().ok_or_else(|| {
                    Error::dataset(&self.csv, format!("no row for {} (column {:?})", f.display(), self.column))
                })
            })
            .collect()
    }
}

/// Parses `MANIFEST.csv:COLUMN` or `MANIFEST.csv:FILE_COLUMN:COLUMN` (the file column defaults to
/// `file`) into (csv, file column, column), or `None` when `s` is not of that form.
///
/// ```
/// use covid_cxr::file_manifest::parse_spec;
/// assert_eq!(parse_spec("m.csv:patient_id"), Some(("m.csv".into(), "file".into(), "patient_id".into())));
/// assert_eq!(parse_spec("m.csv:path:age"), Some(("m.csv".into(), "path".into(), "age".into())));
/// assert_eq!(parse_spec("prefix:_"), None);
/// ```
pub fn parse_spec(s: &str) -> Option<(PathBuf, String, String)> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [csv, key] if csv.ends_with(".csv") && !key.is_empty() => Some((csv.into(), "file".into(), key.to_string())),
        [csv, file, key] if csv.ends_with(".csv") && !key.is_empty() => {
            Some((csv.into(), file.to_string(), key.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_the_three_keys_and_names_the_csv() {
        let tmp = tempfile::tempdir().unwrap();
        let csv = tmp.path().join("m.csv");
        std::fs::write(&csv, "file,patient,age\ntrain/covid/a.png,p1,30\nnormal/b.png,p2,4\nc.png,p3,50\n").unwrap();
        let m = ManifestIndex::load(&csv, "file", "patient").unwrap();
        let root = Path::new("/data/val");
        assert_eq!(m.get_path(root, &root.join("covid/a.png")).unwrap(), "p1"); // class/name
        assert_eq!(m.get_path(Path::new("/x"), Path::new("/x/train/covid/a.png")).unwrap(), "p1"); // whole
        assert_eq!(m.get_path(root, &root.join("normal/b.png")).unwrap(), "p2");
        assert_eq!(m.get_path(root, &root.join("pneumonia/c.png")).unwrap(), "p3"); // file name
        assert!(m.get_path(root, &root.join("covid/zz.png")).is_none());
        let e = m.values_for(root, &[root.join("covid/zz.png")]).unwrap_err().to_string();
        assert!(e.contains("m.csv") && e.contains("zz.png"), "{e}");
        let e = ManifestIndex::load(&csv, "file", "cohort").unwrap_err().to_string();
        assert!(e.contains("m.csv") && e.contains("cohort"), "{e}");
        std::fs::write(&csv, "file,patient\na.png,p1\n\"b.png,p2\n").unwrap();
        let e = ManifestIndex::load(&csv, "file", "patient").unwrap_err().to_string();
        assert!(e.contains("m.csv"), "{e}");
    }
}
