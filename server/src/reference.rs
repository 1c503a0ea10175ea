//! The reference data the server classifies with, and ships to devices.
//!
//! The correctable files (poverty standards, rural/urban rules, the B1 region map and an
//! official B1 point table) are read from a reference folder: `--reference-dir DIR`, or
//! `<data-dir>/reference/` when that folder exists. Each file present there replaces the
//! embedded default of the same name (`protocol::reference::STANDARDS_FILE` …); a missing file
//! keeps the default, and without `b1-table.json` there are no B1 tables (the embedded table is
//! a sample and never classifies a real household). Every file is parsed and checked before the
//! server starts; a bad file stops it with the file's name and the problem.
//!
//! `GET /v1/reference` returns the texts as loaded ([`ReferenceTexts`], JSON), so a device
//! parses exactly what the server parsed. It is public: the standards are published law.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::Json;
use protocol::reference::{
    ReferenceData, ReferenceError, ReferenceTexts, B1_REGIONS_FILE, B1_TABLE_FILE, STANDARDS_FILE,
    URBAN_RURAL_FILE,
};

use crate::AppState;

/// The reference folder inside a data directory.
pub const DEFAULT_SUBDIR: &str = "reference";

/// Loading the reference folder failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reference folder {0} does not exist or is not a folder: name the folder that holds the corrected files")]
    NotAFolder(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reference data in {dir} is refused: {source}")]
    Invalid {
        dir: PathBuf,
        source: ReferenceError,
    },
}

/// Where the reference data was loaded from, to log at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The folder read, if any.
    pub dir: Option<PathBuf>,
    /// The files found there and used instead of the embedded defaults.
    pub files: Vec<&'static str>,
    /// The fingerprint of the texts in use.
    pub fingerprint: String,
}

/// Loads the reference data for a data directory: `reference_dir` if given (it must exist),
/// else `<data_dir>/reference/` if it exists, else the embedded defaults.
pub fn load(
    data_dir: &Path,
    reference_dir: Option<&Path>,
) -> Result<(ReferenceData, Loaded), LoadError> {
    let dir = match reference_dir {
        Some(dir) if dir.is_dir() => Some(dir.to_path_buf()),
        Some(dir) => return Err(LoadError::NotAFolder(dir.to_path_buf())),
        None => Some(data_dir.join(DEFAULT_SUBDIR)).filter(|dir| dir.is_dir()),
    };
    match dir {
        Some(dir) => load_dir(&dir),
        None => {
            let data = ReferenceData::embedded().map_err(|source| LoadError::Invalid {
                dir: PathBuf::from("(embedded)"),
                source,
            })?;
            let fingerprint = data.texts().fingerprint();
            Ok((
                data,
                Loaded {
                    dir: None,
                    files: Vec::new(),
                    fingerprint,
                },
            ))
        }
    }
}

/// Loads a reference folder: each file present replaces the embedded default.
pub fn load_dir(dir: &Path) -> Result<(ReferenceData, Loaded), LoadError> {
    let mut texts = ReferenceTexts::embedded();
    let mut files = Vec::new();
    let mut read = |name: &'static str| -> Result<Option<String>, LoadError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                files.push(name);
                Ok(Some(text))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoadError::Read { path, source }),
        }
    };
    if let Some(text) = read(STANDARDS_FILE)? {
        texts.standards = text;
    }
    if let Some(text) = read(URBAN_RURAL_FILE)? {
        texts.urban_rural = text;
    }
    if let Some(text) = read(B1_REGIONS_FILE)? {
        texts.b1_regions = text;
    }
    texts.b1_table = read(B1_TABLE_FILE)?;
    let data = ReferenceData::from_texts(texts).map_err(|source| LoadError::Invalid {
        dir: dir.to_path_buf(),
        source,
    })?;
    let fingerprint = data.texts().fingerprint();
    Ok((
        data,
        Loaded {
            dir: Some(dir.to_path_buf()),
            files,
            fingerprint,
        },
    ))
}

/// `GET /v1/reference`: the reference texts in use, for devices to store.
pub(crate) async fn serve(State(state): State<AppState>) -> Json<ReferenceTexts> {
    Json(state.reference().texts().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_replaces_only_the_files_it_has() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (data, loaded) = load(dir.path(), None).expect("embedded");
        assert_eq!(loaded.dir, None);
        assert_eq!(data.texts(), &ReferenceTexts::embedded());

        let reference = dir.path().join(DEFAULT_SUBDIR);
        std::fs::create_dir(&reference).expect("mkdir");
        let corrected = protocol::standards::STANDARDS_JSON.replacen("1500000", "1800000", 1);
        std::fs::write(reference.join(STANDARDS_FILE), &corrected).expect("write");
        let (data, loaded) = load(dir.path(), None).expect("corrected");
        assert_eq!(loaded.files, vec![STANDARDS_FILE]);
        assert_eq!(data.texts().standards, corrected);
        assert_eq!(
            data.texts().urban_rural,
            ReferenceTexts::embedded().urban_rural
        );
        assert_ne!(loaded.fingerprint, ReferenceTexts::embedded().fingerprint());

        std::fs::write(reference.join(B1_TABLE_FILE), "{").expect("write");
        let error = load(dir.path(), None).expect_err("a bad table is refused");
        assert!(error.to_string().contains(B1_TABLE_FILE), "{error}");

        let missing = dir.path().join("nowhere");
        assert!(matches!(
            load(dir.path(), Some(&missing)),
            Err(LoadError::NotAFolder(_))
        ));
    }
}
