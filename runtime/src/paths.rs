//! Where hutch keeps its files, from the policy's host settings.

use std::path::{Path, PathBuf};

use hutch_policy::HostSettings;

/// Paths of one user's runtime state: `<run_dir>/users/<user>/`.
#[derive(Debug, Clone)]
pub struct UserPaths {
    pub dir: PathBuf,
}

impl UserPaths {
    pub fn new(host: &HostSettings, user: &str) -> Self {
        UserPaths { dir: host.run_dir.join("users").join(user) }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("keeper.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// An empty directory the keeper's child mounts its root on (inside its
    /// own mount namespace only).
    pub fn staging(&self) -> PathBuf {
        self.dir.join("root")
    }
}

/// `<run_dir>/users`.
pub fn users_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("users")
}

/// The cgroup (relative to hutch's cgroup root) of a user's container.
pub fn user_cgroup(user: &str) -> String {
    format!("users/{user}")
}

/// The cgroup (relative to hutch's cgroup root) where keepers live.
pub const KEEPER_CGROUP: &str = "keepers";

/// Where the keeper writes the in-container marker hutch-shell checks.
pub const CONTAINER_MARKER: &str = "/run/hutch-container";
