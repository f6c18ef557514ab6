//! `TestDir`: a unique, world-traversable temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A unique directory `/tmp/<prefix><pid>x<n>` with mode 0755, removed with
/// everything in it on Drop.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/<unique(prefix)>` (0755).
    pub fn new(prefix: &str) -> TestDir {
        let path = PathBuf::from("/tmp").join(crate::unique(prefix));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: removing {}: {e}", self.path.display());
            }
        }
    }
}
