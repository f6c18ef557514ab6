//! `StoreEnv`: a private template store (lib_dir and run_dir in a temporary
//! directory) for the runtime's template tests; on Drop everything mounted
//! below it is unmounted (deepest first) and the directory removed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hutch_runtime::template::TemplateStore;
use nix::mount::{umount2, MntFlags};

/// A private lib_dir and run_dir, and the store over them.
pub struct StoreEnv {
    dir: Option<tempfile::TempDir>,
    pub store: TemplateStore,
}

impl StoreEnv {
    /// A fresh one in `$TMPDIR/<prefix><random>`.
    pub fn new(prefix: &str) -> StoreEnv {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let store = TemplateStore::new(&dir.path().join("lib"), &dir.path().join("run"));
        StoreEnv {
            dir: Some(dir),
            store,
        }
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for StoreEnv {
    fn drop(&mut self) {
        let root = std::fs::canonicalize(self.path()).unwrap();
        let mut under: Vec<PathBuf> = hutch_runtime::mountinfo::read_own()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&root))
            .collect();
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in under {
            let _ = umount2(&point, MntFlags::MNT_DETACH);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Writes `data` to `path` (parents made) with `mode`.
pub fn write_file(path: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
