//! Templates: root filesystems built once on disk
//! (`<lib_dir>/templates/<name>/`) and loaded, one copy in RAM for every user,
//! into a read-only tmpfs (`<run_dir>/template/<name>/<generation>/`).
//!
//! INTERFACE CONTRACT (used by runtime/src/keeper and ctl/): keep these signatures.

use std::path::{Path, PathBuf};

/// Errors of template handling; each names the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name:?} is not built (no {})", path.display())]
    NotBuilt { name: String, path: PathBuf },
    #[error("invalid template name {0:?} (letters, digits, '-', '_', '.'; not starting with '.')")]
    BadName(String),
    #[error("{op} {}", path.display())]
    Io { op: &'static str, path: PathBuf, #[source] source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// A loaded generation of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub name: String,
    pub generation: u64,
    /// The read-only tmpfs mount point: the overlay's lowerdir.
    pub path: PathBuf,
}

/// What a build found, reported to the admin.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// Templates under one lib_dir/run_dir pair.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    pub lib_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl TemplateStore {
    pub fn new(lib_dir: &Path, run_dir: &Path) -> Self {
        TemplateStore { lib_dir: lib_dir.to_path_buf(), run_dir: run_dir.to_path_buf() }
    }

    /// Copies `src` into `<lib_dir>/templates/<name>` (replacing it atomically).
    pub fn build_from_dir(&self, name: &str, src: &Path) -> Result<BuildReport, TemplateError> {
        let _ = (name, src);
        todo!("template helper")
    }

    /// Builds with mmdebstrap (or debootstrap) from Debian's packages.
    pub fn build_debootstrap(&self, name: &str, suite: &str, include: &[String]) -> Result<BuildReport, TemplateError> {
        let _ = (name, suite, include);
        todo!("template helper")
    }

    /// Loads a new generation into a tmpfs and remounts it ro,nosuid,nodev.
    pub fn load(&self, name: &str) -> Result<Loaded, TemplateError> {
        let _ = name;
        todo!("template helper")
    }

    /// The newest loaded generation, if any.
    pub fn current(&self, name: &str) -> Result<Option<Loaded>, TemplateError> {
        let _ = name;
        todo!("template helper")
    }

    /// The newest loaded generation, loading one first if none is (under a lock,
    /// so concurrent first logins load it once).
    pub fn ensure_loaded(&self, name: &str) -> Result<Loaded, TemplateError> {
        let _ = name;
        todo!("template helper")
    }

    /// Unmounts and removes one loaded generation.
    pub fn unload(&self, loaded: &Loaded) -> Result<(), TemplateError> {
        let _ = loaded;
        todo!("template helper")
    }
}
