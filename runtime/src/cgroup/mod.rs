//! cgroups v1 and v2 behind one interface.
//!
//! This module knows nothing about users or policy: it takes a relative group
//! name and a [`Limits`] of its own, and it manages directories in cgroupfs.
//!
//! INTERFACE CONTRACT (used by runtime/src/keeper and ctl/): the public items
//! below are relied upon. Extend freely; keep these signatures.
//!
//! Layout on a host: [`CgroupRoot::open`] resolves hutch's root in every
//! hierarchy hutch uses (v2: the unified mount; v1/hybrid: one directory per
//! controller hierarchy plus the unified mount, if any, for cgroup.kill and
//! the cgroup namespace). [`CgroupRoot::create`] makes `<root>/<rel>` with the
//! limits written and a leaf `<root>/<rel>/<LEAF>` where processes go (v2 forbids
//! processes in an inner cgroup with controllers; v1 uses the same shape so
//! that one code path serves both).

use std::path::PathBuf;

pub mod v1;
pub mod v2;

/// Name of the leaf below each group where processes are placed.
pub const LEAF: &str = "procs";

/// Limits to apply, in the cgroup layer's own terms. `None` = unlimited / untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub swap_max: Option<u64>,
    /// (quota_us, period_us)
    pub cpu_max: Option<(u64, u64)>,
    pub cpu_weight: Option<u64>,
    pub pids_max: Option<u64>,
    pub io: Vec<IoDeviceLimit>,
    pub io_weight: Option<u64>,
}

/// I/O limits on one block device, by major:minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDeviceLimit {
    pub major: u32,
    pub minor: u32,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

/// Errors of the cgroup layer: each names the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {}", path.display())]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("writing {value:?} to {}", path.display())]
    Write { path: PathBuf, value: String, #[source] source: std::io::Error },
    #[error("creating {}", path.display())]
    Create { path: PathBuf, #[source] source: std::io::Error },
    #[error("removing {}", path.display())]
    Remove { path: PathBuf, #[source] source: std::io::Error },
    #[error("no cgroup hierarchy found: {0}")]
    NoHierarchy(String),
    #[error("controller {controller} is not available on this host ({detail})")]
    MissingController { controller: String, detail: String },
    #[error("invalid cgroup name {0:?}")]
    BadName(String),
}

/// Usage and fault counters of one group (the subset a hierarchy provides;
/// absent values are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    pub cpu_usage_us: Option<u64>,
    pub pids_current: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids_limit_hits: Option<u64>,
}

/// hutch's cgroup root, resolved in every hierarchy hutch uses.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    _todo: (),
}

/// One group (`<root>/<rel>`) in every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    _todo: (),
}

impl CgroupRoot {
    /// Resolves `spec` (absolute: that path in every hierarchy; relative:
    /// below the calling process's own cgroup in each hierarchy) from
    /// `/proc/self/cgroup` and `/proc/self/mountinfo`. Creates nothing.
    pub fn open(spec: &str) -> Result<CgroupRoot, CgroupError> {
        let _ = spec;
        todo!("cgroup helper")
    }

    /// Makes `<root>/<rel>` (and missing parents) in every hierarchy, writes
    /// `limits`, makes the leaf [`LEAF`]. Idempotent.
    pub fn create(&self, rel: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let _ = (rel, limits);
        todo!("cgroup helper")
    }

    /// The existing group `<root>/<rel>`, if it exists in any hierarchy.
    pub fn existing(&self, rel: &str) -> Option<Cgroup> {
        let _ = rel;
        todo!("cgroup helper")
    }

    /// The root's directory in each hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        todo!("cgroup helper")
    }
}

impl Cgroup {
    /// Moves `pid` into the leaf in every hierarchy.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let _ = pid;
        todo!("cgroup helper")
    }

    /// Pids in the group (leaf and group), host pid namespace.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        todo!("cgroup helper")
    }

    /// Kills every process in the group and waits (bounded) until it is empty:
    /// `cgroup.kill` where the kernel has it, else freeze + SIGKILL + thaw.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        todo!("cgroup helper")
    }

    /// Removes the leaf and the group in every hierarchy, retrying EBUSY briefly.
    pub fn remove(&self) -> Result<(), CgroupError> {
        todo!("cgroup helper")
    }

    /// The group's directory in each hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        todo!("cgroup helper")
    }

    /// Usage and fault counters.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        todo!("cgroup helper")
    }
}
