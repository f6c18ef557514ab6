//! `Bins`: where the built hutch artifacts are.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Paths of the built artifacts. Nothing is checked at `locate()`; call
/// `require()` in a test that needs them all.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The directory they were looked up in.
    pub dir: PathBuf,
    /// `hutch-keeper`.
    pub keeper: PathBuf,
    /// `hutch-shell`.
    pub shell: PathBuf,
    /// `hutchctl`.
    pub ctl: PathBuf,
    /// `libpam_hutch.so`.
    pub pam_module: PathBuf,
}

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

impl Bins {
    /// Finds the artifacts: `$HUTCH_BIN_DIR` if set; else the profile dir
    /// this test binary was built into (`<target>/debug/deps/..`); else
    /// `$CARGO_TARGET_DIR/debug`; else `<workspace>/target/debug`.
    pub fn locate() -> Bins {
        Bins::in_dir(Bins::dir())
    }

    fn dir() -> PathBuf {
        if let Some(d) = std::env::var_os("HUTCH_BIN_DIR") {
            return PathBuf::from(d);
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(deps) = exe.parent() {
                if deps.file_name().is_some_and(|n| n == "deps") {
                    if let Some(profile) = deps.parent() {
                        return profile.to_path_buf();
                    }
                }
            }
        }
        if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
            return PathBuf::from(t).join("debug");
        }
        workspace_dir().join("target").join("debug")
    }

    /// The artifacts in `dir`.
    pub fn in_dir(dir: PathBuf) -> Bins {
        Bins {
            keeper: dir.join("hutch-keeper"),
            shell: dir.join("hutch-shell"),
            ctl: dir.join("hutchctl"),
            pam_module: dir.join("libpam_hutch.so"),
            dir,
        }
    }

    /// Panics naming each artifact that is missing (build the workspace
    /// first: `cargo build --workspace`).
    pub fn require(&self) -> &Bins {
        let missing: Vec<String> = [&self.keeper, &self.shell, &self.ctl, &self.pam_module]
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "missing build artifacts (run `cargo build --workspace`): {}",
            missing.join(", ")
        );
        self
    }

    /// Copies hutch-shell into `dir` (mode 0755) and returns its path. Every
    /// ancestor of `dir` must be traversable by everyone, since it becomes a
    /// user's login shell and is bind-mounted into containers; a
    /// [`TestDir`](crate::TestDir) is.
    pub fn install_to(&self, dir: &Path) -> PathBuf {
        assert!(self.shell.exists(), "{} is not built", self.shell.display());
        for anc in dir.ancestors() {
            let mode = std::fs::metadata(anc)
                .unwrap_or_else(|e| panic!("stat {}: {e}", anc.display()))
                .permissions()
                .mode();
            assert!(
                mode & 0o001 != 0,
                "{} is not traversable by others",
                anc.display()
            );
        }
        let dst = dir.join("hutch-shell");
        std::fs::copy(&self.shell, &dst)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", self.shell.display(), dst.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
        dst
    }
}
