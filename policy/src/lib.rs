//! hutch-policy: the policy file (`/etc/hutch/hutch.toml` plus drop-ins), its
//! validation, and the resolution of one account's effective policy.
//!
//! Pure: nothing here touches the kernel; the only I/O is reading the files.
//! The PAM module, hutch-keeper and hutchctl all call the same code, so
//! `hutchctl check` judges a file exactly as a login would.
//!
//! INTERFACE CONTRACT (used by runtime/, pam-module/, shell/, ctl/): the public
//! types and functions below are relied upon by the other crates. Extend them
//! freely; do not rename or remove without updating the callers.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default place of the policy file.
pub const DEFAULT_CONFIG: &str = "/etc/hutch/hutch.toml";

/// An account as the host's NSS reports it (looked up by the runtime; the
/// policy never calls NSS itself, so tests can make accounts up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Names of all groups the account is in, the primary group first.
    pub groups: Vec<String>,
    pub home: PathBuf,
    /// The login shell from the passwd entry (for confined users: hutch-shell).
    pub shell: PathBuf,
}

/// Host-wide settings: where hutch keeps its files and cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// Runtime state: `<run_dir>/users/<user>/`, `<run_dir>/template/<name>/<gen>/`.
    /// Default `/run/hutch`.
    pub run_dir: PathBuf,
    /// Persistent state: `<lib_dir>/templates/<name>/`. Default `/var/lib/hutch`.
    pub lib_dir: PathBuf,
    /// The cgroup under which hutch makes its own. Absolute (`/hutch`, the
    /// default) means that path in every hierarchy; relative (`hutch-ci`)
    /// means relative to the cgroup of the process that starts the keeper,
    /// in each hierarchy (what tests and CI use).
    pub cgroup_root: String,
}

/// One bind mount from the policy, with `{user}`, `{uid}`, `{home}` already
/// substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// CPU quota: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// A per-device I/O limit; the device is named by path (`/dev/vda`), the
/// runtime finds major:minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoLimit {
    pub device: PathBuf,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

/// Resource limits of one user's container. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub swap_max: Option<u64>,
    pub cpu: Option<CpuQuota>,
    pub cpu_weight: Option<u64>,
    pub pids_max: Option<u64>,
    pub io: Vec<IoLimit>,
    pub io_weight: Option<u64>,
    /// Size of the writable layer (tmpfs) in bytes.
    pub writable_size: u64,
    pub max_sessions: Option<u32>,
}

/// The network of a container. Only `Loopback` exists for now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// Own network namespace with only `lo`.
    #[default]
    Loopback,
}

/// Everything the runtime needs to build and run one user's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// Template name (`<lib_dir>/templates/<name>`).
    pub template: String,
    /// The shell hutch-shell execs inside the container (default `/bin/bash`).
    pub shell: PathBuf,
    /// Hostname inside the container, already substituted (default `{user}`... see docs).
    pub hostname: String,
    pub limits: Limits,
    /// How long the container outlives its last session (0 = torn down at once).
    pub linger: Duration,
    pub mounts: Vec<BindMount>,
    pub network: Network,
}

/// What to do with one account's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not confined: the session proceeds on the host untouched. The string says why
    /// (`"root is never confined"`, `"users.bob: confine = false"`).
    Exempt(String),
    /// Confined: the session goes into the user's container.
    Confine(Box<UserPolicy>),
    /// Refused: the session must not open (e.g. a service that refuses confined users).
    Refuse(String),
}

/// A policy file that could not be read or is not valid. `Display` names the
/// file, line, column and key where one is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    pub message: String,
}

/// A parsed, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    _private: (),
}

impl Policy {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let _ = path;
        todo!("policy helper")
    }

    /// Parses and validates policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Policy, PolicyError> {
        let _ = (text, origin);
        todo!("policy helper")
    }

    /// Host-wide settings.
    pub fn host(&self) -> &HostSettings {
        todo!("policy helper")
    }

    /// The decision for `account` opening a session through PAM service `service`.
    pub fn resolve(&self, account: &Account, service: &str) -> Decision {
        let _ = (account, service);
        todo!("policy helper")
    }
}
