//! cgroups v1 and v2 behind one interface.
//!
//! This module knows nothing about users or policy: it takes a relative group
//! name and a [`Limits`] of its own, and it manages directories in cgroupfs.
//!
//! Layout on a host: [`CgroupRoot::open`] resolves hutch's root in every
//! hierarchy hutch uses (v2: the unified mount; v1/hybrid: one directory per
//! controller hierarchy plus the unified mount, if any, for cgroup.kill and
//! the cgroup namespace). [`CgroupRoot::create`] makes `<root>/<rel>` with the
//! limits written and a leaf `<root>/<rel>/<LEAF>` where processes go (v2 forbids
//! processes in an inner cgroup with controllers; v1 uses the same shape so
//! that one code path serves both).
//!
//! Files: this one (the types, [`CgroupRoot`], [`Cgroup`]: attach, kill,
//! freeze, remove, stats), [`detect`] (finding the hierarchies), [`v1`] and
//! [`v2`] (each version's group making, limits, counters, freezer),
//! [`bpfdev`] (the v2 device filter), [`events`] (what the kernel signals
//! when a limit acts), `fsio` (control files read and
//! written with errors that name them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub mod bpfdev;
pub mod detect;
pub mod events;
#[cfg(test)]
mod fake;
mod fsio;
pub mod v1;
pub mod v2;

pub use detect::Mode;

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
    /// The CPUs the group may run on, a kernel CPU list (`0-1,4`): v1
    /// `cpuset.cpus` (written before the leaf exists, which copies it), v2
    /// `cpuset.cpus`. `None` leaves the parent's.
    pub cpus: Option<String>,
    pub pids_max: Option<u64>,
    pub io: Vec<IoDeviceLimit>,
    pub io_weight: Option<u64>,
    /// Device access: `Some(rules)` denies every device and allows only
    /// `rules` (v1 `devices` controller, written before the leaf is made so
    /// that the leaf inherits it, and into the leaf as well). `None` leaves
    /// device access as the parent has it. v2 has no devices controller:
    /// there the same list is an eBPF program ([`bpfdev`]) attached to the
    /// group in the unified hierarchy (pure v2, and hybrid as a second line).
    /// A new group only: an existing one keeps what it has.
    pub devices: Option<Vec<DeviceRule>>,
}

/// One device-cgroup rule: a type, a major:minor (`None` = any), and an
/// access set, in the v1 `devices.allow` syntax when displayed (`c 136:* rwm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Any of `r`, `w`, `m` (mknod).
    pub access: String,
}

/// The device type a [`DeviceRule`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

impl DeviceRule {
    /// A rule for the character device `major:minor` (`None` = any).
    pub fn char(major: u32, minor: Option<u32>, access: &str) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access: access.to_string(),
        }
    }
}

impl std::fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        write!(
            f,
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access
        )
    }
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
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup hierarchy found: {0}")]
    NoHierarchy(String),
    #[error("controller {controller} is not available on this host ({detail})")]
    MissingController {
        controller: Controller,
        detail: String,
    },
    #[error("invalid cgroup name {0:?}")]
    BadName(String),
    /// Processes were still in the group when [`Cgroup::kill_all`] gave up.
    #[error("processes {pids:?} still in {} after {waited:?}", path.display())]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

/// A controller (or the part of one) that a limit needs and the host may
/// lack, named as the kernel names it. [`CgroupRoot::create_with`] decides
/// by it which limits to drop ([`without_controller`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Controller {
    Memory,
    /// v1 swap accounting: `memory.memsw.*` (`swapaccount=1`), which also
    /// needs a memory limit (v1 limits memory+swap).
    Memsw,
    /// v2 swap accounting: `memory.swap.max`.
    MemorySwap,
    Cpu,
    Cpuacct,
    Cpuset,
    Pids,
    /// v1 I/O.
    Blkio,
    /// v1 I/O weight: `blkio.weight` (CFQ) or `blkio.bfq.weight` (BFQ).
    BlkioWeight,
    /// v2 I/O.
    Io,
    /// v1 devices.
    Devices,
    /// v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program ([`bpfdev`]).
    DeviceFilter,
    Freezer,
    /// A control file of anything else (`cgroup.*`, a fake tree's).
    Other(String),
}

impl Controller {
    /// The controller called `name` (`memory`, `io`, ...).
    pub fn from_name(name: &str) -> Controller {
        match name {
            "memory" => Controller::Memory,
            "cpu" => Controller::Cpu,
            "cpuacct" => Controller::Cpuacct,
            "cpuset" => Controller::Cpuset,
            "pids" => Controller::Pids,
            "blkio" => Controller::Blkio,
            "io" => Controller::Io,
            "devices" => Controller::Devices,
            "freezer" => Controller::Freezer,
            other => Controller::Other(other.to_string()),
        }
    }

    /// The controller a control file belongs to: the part of its name
    /// before the first dot (`pids.max` is `pids`'s).
    pub fn of_file(file: &str) -> Controller {
        Controller::from_name(file.split('.').next().unwrap_or(file))
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Controller::Memory => "memory",
            Controller::Memsw => "memory.memsw (swap accounting)",
            Controller::MemorySwap => "memory.swap (swap accounting)",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
            Controller::Blkio => "blkio",
            Controller::BlkioWeight => "blkio weight",
            Controller::Io => "io",
            Controller::Devices => "devices",
            Controller::DeviceFilter => "devices (eBPF)",
            Controller::Freezer => "freezer",
            Controller::Other(name) => name,
        })
    }
}

/// Usage and fault counters of one group (the subset a hierarchy provides;
/// absent values are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    /// Of `memory_current`: tmpfs files and shared memory (the container's
    /// /tmp, /dev/shm, /run and ephemeral writable layer are tmpfs), from
    /// `memory.stat` (v2 `shmem`, v1 `total_shmem`).
    pub shmem: Option<u64>,
    pub cpu_usage_us: Option<u64>,
    pub pids_current: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids_limit_hits: Option<u64>,
    /// Times memory.high throttled the group (v2 `memory.events` high; v1 has none).
    pub memory_high_events: Option<u64>,
    /// CPU periods in which the quota throttled the group (`nr_throttled`).
    pub cpu_throttled_periods: Option<u64>,
    /// Time spent throttled by the CPU quota, µs.
    pub cpu_throttled_us: Option<u64>,
    /// Block I/O bytes and operations, summed over devices (v2 `io.stat`;
    /// v1 `blkio.throttle.io_service*_recursive`).
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub io_read_ops: Option<u64>,
    pub io_write_ops: Option<u64>,
}

/// The limits a group has now, read back from its control files (what the
/// kernel enforces, whatever asked for it). `None`: unlimited, or the
/// controller is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub memory_max: Option<u64>,
    /// v2 `memory.high`; v1 `memory.soft_limit_in_bytes`.
    pub memory_high: Option<u64>,
    pub pids_max: Option<u64>,
    /// (quota_us, period_us)
    pub cpu_max: Option<(u64, u64)>,
}

/// v1 writes "no limit" as the largest page-aligned signed value.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// How long [`Cgroup::kill_all`] waits for the group to empty.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a freeze may take before the kill goes ahead unfrozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a process was before [`Cgroup::attach_from`] moved it: its cgroup
/// directory in each of the group's hierarchies (`None` where it had none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    dirs: Vec<Option<PathBuf>>,
}

/// A group's leaf `cgroup.procs` in every hierarchy, held open by the
/// keeper ([`Cgroup::open_leaf_procs`]) so that a session's join is one
/// write a hierarchy. The files were opened by root, and a write through
/// them is checked against the opener's credentials: they must never reach
/// a process of the user (the keeper opens them after the init's clone,
/// close-on-exec, and forks only its own code after that).
#[derive(Debug)]
pub struct LeafProcs {
    files: Vec<(PathBuf, std::fs::File)>,
}

impl LeafProcs {
    /// Writes `pid` to each, in order; the first failure names its file.
    fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        use std::io::Write;
        let value = pid.to_string();
        for (path, f) in &self.files {
            (&*f)
                .write_all(value.as_bytes())
                .map_err(|source| CgroupError::Write {
                    path: path.clone(),
                    value: value.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// One hierarchy hutch uses and hutch's root directory in it.
#[derive(Debug, Clone)]
struct Hier {
    mount: detect::Mount,
    root: PathBuf,
}

impl Hier {
    fn has(&self, controller: &str) -> bool {
        self.mount.controllers.iter().any(|c| c == controller)
    }
}

/// hutch's cgroup root, resolved in every hierarchy hutch uses.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    mode: Mode,
    /// v2: the unified hierarchy alone. v1: the controller hierarchies, then
    /// the unified one if it is mounted.
    hiers: Vec<Hier>,
}

/// One group (`<root>/<rel>`) in every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    mode: Mode,
    hiers: Vec<Hier>,
    rel: String,
}

impl CgroupRoot {
    /// Resolves `spec` (absolute: that path in every hierarchy; relative:
    /// below the calling process's own cgroup in each hierarchy) from
    /// `/proc/self/cgroup` and `/proc/self/mountinfo`. Creates nothing.
    pub fn open(spec: &str) -> Result<CgroupRoot, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| CgroupError::Read {
                path: PathBuf::from(p),
                source,
            })
        };
        Self::open_at(
            spec,
            &read("/proc/self/cgroup")?,
            &read("/proc/self/mountinfo")?,
        )
    }

    /// [`CgroupRoot::open`] from given texts of `/proc/self/cgroup` and
    /// `/proc/self/mountinfo` (whose mount points may lie in a fake tree).
    ///
    /// Hybrid and v1 hosts (any v1 hierarchy with memory, pids, cpu, cpuacct,
    /// blkio, freezer, cpuset or devices) take limits in v1 and use the cgroup2 mount,
    /// if any, for `cgroup.kill` and membership; otherwise the cgroup2 mount
    /// must have controllers. `name=systemd` and other hierarchies are never
    /// touched.
    pub fn open_at(
        spec: &str,
        proc_self_cgroup: &str,
        mountinfo: &str,
    ) -> Result<CgroupRoot, CgroupError> {
        detect::validate_spec(spec)?;
        let mounts = detect::parse_mountinfo(mountinfo);
        let mode = detect::limits_mode(&mounts)?;
        let members = detect::parse_proc_cgroup(proc_self_cgroup);
        let mut hiers = Vec::new();
        for m in mounts.iter().filter(|m| !m.unified && mode == Mode::V1) {
            let root = detect::resolve(m, detect::own_path(m, &members), spec)?;
            hiers.push(Hier {
                mount: m.clone(),
                root,
            });
        }
        if let Some(u) = mounts.iter().find(|m| m.unified) {
            match detect::resolve(u, detect::own_path(u, &members), spec) {
                Ok(root) => hiers.push(Hier {
                    mount: u.clone(),
                    root,
                }),
                // Under v1 the unified hierarchy only helps (cgroup.kill).
                Err(_) if mode == Mode::V1 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(CgroupRoot { mode, hiers })
    }

    /// Which hierarchies carry the limits.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn group(&self, rel: &str) -> Cgroup {
        Cgroup {
            mode: self.mode,
            hiers: self.hiers.clone(),
            rel: rel.to_string(),
        }
    }

    /// Makes `<root>/<rel>` (and missing parents) in every hierarchy, writes
    /// `limits`, makes the leaf [`LEAF`]. Idempotent. A group that did not
    /// exist before and fails half-way is removed again.
    pub fn create(&self, rel: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        self.create_bpf(rel, limits, true)
    }

    /// [`CgroupRoot::create`]; `bpf`: attach the v2 device program when
    /// `limits.devices` is set.
    fn create_bpf(&self, rel: &str, limits: &Limits, bpf: bool) -> Result<Cgroup, CgroupError> {
        detect::validate_rel(rel)?;
        let cg = self.group(rel);
        let existed = cg.dirs().iter().any(|d| d.exists());
        match self.create_in(&cg, limits, bpf) {
            Ok(()) => Ok(cg),
            Err(e) => {
                if !existed {
                    let _ = cg.remove();
                }
                Err(e)
            }
        }
    }

    /// [`CgroupRoot::create`], with what to do about a controller the host
    /// lacks: `strict` refuses ([`CgroupError::MissingController`] naming
    /// it); otherwise the limits that need it are dropped, the rest applies,
    /// and each dropped controller comes back as one warning line.
    pub fn create_with(
        &self,
        rel: &str,
        limits: &Limits,
        strict: bool,
    ) -> Result<(Cgroup, Vec<String>), CgroupError> {
        let mut limits = limits.clone();
        let mut warnings = Vec::new();
        let mut bpf = true;
        loop {
            match self.create_bpf(rel, &limits, bpf) {
                Ok(cg) => return Ok((cg, warnings)),
                Err(CgroupError::MissingController { controller, detail })
                    if !strict && bpf && controller == Controller::DeviceFilter =>
                {
                    warnings.push(format!("the v2 device filter is not applied ({detail})"));
                    bpf = false;
                }
                Err(CgroupError::MissingController { controller, detail }) if !strict => {
                    let (rest, dropped) = without_controller(&limits, &controller);
                    if dropped.is_empty() || warnings.len() > 8 {
                        return Err(CgroupError::MissingController { controller, detail });
                    }
                    warnings.push(format!(
                        "controller {controller} is not available on this host ({detail}): {} not applied",
                        dropped.join(", ")
                    ));
                    limits = rest;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn create_in(&self, cg: &Cgroup, limits: &Limits, bpf: bool) -> Result<(), CgroupError> {
        let bpf_devices = limits.devices.as_deref().filter(|_| bpf);
        match self.mode {
            Mode::V2 => v2::create_group(&self.hiers[0], cg, limits, bpf_devices),
            Mode::V1 => v1::create_group(&self.hiers, cg, limits, bpf_devices),
        }
    }

    /// The existing group `<root>/<rel>`, if it exists in any hierarchy.
    pub fn existing(&self, rel: &str) -> Option<Cgroup> {
        detect::validate_rel(rel).ok()?;
        let cg = self.group(rel);
        cg.dirs().iter().any(|d| d.is_dir()).then_some(cg)
    }

    /// The root's directory in each hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(|h| h.root.clone()).collect()
    }
}

impl Cgroup {
    fn dir_in(&self, h: &Hier) -> PathBuf {
        detect::join_rel(&h.root, &self.rel)
    }

    fn v1_dirs(&self) -> v1::Dirs {
        let find = |c: &str| {
            self.hiers
                .iter()
                .find(|h| !h.mount.unified && h.has(c))
                .map(|h| self.dir_in(h))
        };
        v1::Dirs {
            memory: find("memory"),
            cpu: find("cpu"),
            cpuacct: find("cpuacct"),
            pids: find("pids"),
            blkio: find("blkio"),
            freezer: find("freezer"),
            cpuset: find("cpuset"),
            devices: find("devices"),
        }
    }

    /// The CPU lists (`cpuset.cpus`) of the groups directly below this one,
    /// in the hierarchy that carries cpusets (v1 cpuset, or v2 where the
    /// controller is on); those without one are left out.
    pub fn children_cpus(&self) -> Vec<String> {
        let dir = match self.mode {
            Mode::V1 => self.v1_dirs().cpuset,
            Mode::V2 => self.unified_dir(),
        };
        let Some(dir) = dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in ["cpuset.cpus", "cpus"] {
                if let Ok(v) = std::fs::read_to_string(e.path().join(f)) {
                    if !v.trim().is_empty() {
                        out.push(v.trim().to_string());
                    }
                    break;
                }
            }
        }
        out
    }

    /// The group's directory in the unified hierarchy, if one is mounted.
    pub fn unified_dir(&self) -> Option<PathBuf> {
        self.hiers
            .iter()
            .find(|h| h.mount.unified)
            .map(|h| self.dir_in(h))
    }

    /// The group's name below the root.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Which hierarchies carry the limits.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Moves `pid` into the leaf in every hierarchy.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for d in self.leaf_dirs() {
            fsio::write(&d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// [`Cgroup::attach`], first noting where `pid` was in each hierarchy
    /// hutch uses (from `/proc/PID/cgroup`, read in the caller's cgroup
    /// namespace), so that [`Cgroup::detach`] can put it back.
    pub fn attach_from(&self, pid: i32) -> Result<Origin, CgroupError> {
        let origin = self.origin_of(pid)?;
        self.attach(pid)?;
        Ok(origin)
    }

    /// [`Cgroup::attach_from`] through the leaf's `cgroup.procs` files
    /// held open ([`Cgroup::open_leaf_procs`]): one write a hierarchy, no
    /// path walk, no open or close (a session's join).
    pub fn attach_from_held(&self, pid: i32, held: &LeafProcs) -> Result<Origin, CgroupError> {
        let origin = self.origin_of(pid)?;
        held.attach(pid)?;
        Ok(origin)
    }

    /// Opens the leaf's `cgroup.procs` in every hierarchy, in the order
    /// [`Cgroup::attach`] writes them (v1 ones first, unified last), to be
    /// held for [`Cgroup::attach_from_held`].
    pub fn open_leaf_procs(&self) -> Result<LeafProcs, CgroupError> {
        let files = self
            .leaf_dirs()
            .into_iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(|f| (path.clone(), f))
                    .map_err(|source| CgroupError::Write {
                        path,
                        value: String::new(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(LeafProcs { files })
    }

    /// Where `pid` is in each hierarchy hutch uses, from `/proc/PID/cgroup`
    /// (one read: the file is well under a page).
    fn origin_of(&self, pid: i32) -> Result<Origin, CgroupError> {
        use std::io::Read;
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let mut buf = Vec::with_capacity(4096);
        let read = std::fs::File::open(&path).and_then(|mut f| {
            let mut chunk = [0u8; 4096];
            loop {
                match f.read(&mut chunk)? {
                    0 => return Ok(()),
                    n => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        read.map_err(|source| CgroupError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&buf);
        let members = detect::parse_proc_cgroup(&text);
        let dirs = self
            .hiers
            .iter()
            .map(|h| detect::resolve(&h.mount, detect::own_path(&h.mount, &members), "").ok())
            .collect();
        Ok(Origin { dirs })
    }

    /// Moves `pid` out of the group, in each hierarchy where it is still in
    /// this group's leaf: back to the cgroup it was in before
    /// [`Cgroup::attach_from`], or, where that is gone (systemd removes a
    /// session scope once it is empty) or refuses it, into `fallback`'s leaf
    /// (a group of the same root). A pid that is no longer in the leaf
    /// (gone, or reused by another process) is left alone. Returns how many
    /// hierarchies it was moved in.
    pub fn detach(
        &self,
        pid: i32,
        origin: &Origin,
        fallback: Option<&Cgroup>,
    ) -> Result<usize, CgroupError> {
        let fallbacks = fallback.map(Cgroup::leaf_dirs).unwrap_or_default();
        let mut moved = 0;
        for (i, leaf) in self.leaf_dirs().iter().enumerate() {
            if !fsio::procs(leaf)?.contains(&pid) {
                continue;
            }
            let back = match origin.dirs.get(i) {
                Some(Some(to)) => fsio::write(to, "cgroup.procs", &pid.to_string()),
                _ => Err(CgroupError::NoHierarchy(format!(
                    "pid {pid} had no cgroup in {}",
                    leaf.display()
                ))),
            };
            match (back, fallbacks.get(i)) {
                (Ok(()), _) => {}
                (Err(_), Some(fb)) => fsio::write(fb, "cgroup.procs", &pid.to_string())?,
                (Err(e), None) => return Err(e),
            }
            moved += 1;
        }
        Ok(moved)
    }

    /// Pids in the group (leaf and group), host pid namespace.
    ///
    /// The union over every hierarchy and every cgroup below the group, so
    /// that a process attached to only some hierarchies is still found.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = std::collections::BTreeSet::new();
        for d in self.dirs() {
            for sub in fsio::subtree(&d)? {
                all.extend(fsio::procs(&sub)?);
            }
        }
        Ok(all.into_iter().collect())
    }

    /// True while any process is in the group.
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        Ok(!self.pids()?.is_empty())
    }

    /// Kills every process in the group and waits (bounded) until it is empty:
    /// `cgroup.kill` where the kernel has it, else freeze + SIGKILL + thaw.
    ///
    /// `cgroup.kill` is written on the group in the unified hierarchy; if
    /// processes remain after a few rounds (on a hybrid host, ones attached
    /// only to v1 hierarchies) the freezer way is used as well. Gives up with
    /// [`CgroupError::NotEmpty`] after [`KILL_TIMEOUT`].
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        self.kill_all_within(KILL_TIMEOUT)
    }

    /// [`Cgroup::kill_all`] with its own bound.
    pub fn kill_all_within(&self, timeout: Duration) -> Result<(), CgroupError> {
        let kill_dir = self.unified_dir().filter(|d| v2::has_kill(d));
        let start = Instant::now();
        let mut round = 0u32;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs().into_iter().next().unwrap_or_default(),
                    pids,
                    waited: start.elapsed(),
                });
            }
            match &kill_dir {
                Some(d) if round < 20 => v2::kill(d)?,
                _ => self.freeze_and_kill()?,
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Freezes (where a freezer exists), SIGKILLs every listed pid, thaws.
    /// Frozen processes cannot fork new ones between reading the list and
    /// the kill; v1 frozen tasks die when thawed.
    fn freeze_and_kill(&self) -> Result<(), CgroupError> {
        // A freeze that does not finish in time still leaves most tasks
        // stopped; the kill goes ahead and the thaw always runs.
        let _ = self.set_frozen(true, FREEZE_TIMEOUT);
        let res = self.pids().map(|pids| {
            for p in pids {
                // ESRCH: gone already.
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        });
        let thawed = self.set_frozen(false, FREEZE_TIMEOUT);
        res.and(thawed)
    }

    /// Freezes every process in the group (v1 freezer, else v2 `cgroup.freeze`).
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true, FREEZE_TIMEOUT)
    }

    /// Thaws the group.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false, FREEZE_TIMEOUT)
    }

    fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
        if let Some(d) = self.v1_dirs().freezer {
            return v1::set_frozen(&d, frozen, timeout);
        }
        match self.unified_dir() {
            Some(d) if d.join("cgroup.freeze").exists() => v2::set_frozen(&d, frozen, timeout),
            _ => Err(CgroupError::MissingController {
                controller: Controller::Freezer,
                detail: "neither a v1 freezer hierarchy nor cgroup.freeze".into(),
            }),
        }
    }

    /// Removes the leaf and the group in every hierarchy, retrying EBUSY briefly.
    /// Cgroups made below the leaf or the group are removed first; absent
    /// directories are fine. Every hierarchy is tried; the first error is returned.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for d in self.dirs() {
            if let Err(e) = fsio::remove_tree(&d) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The group's directory in each hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hiers.iter().map(|h| self.dir_in(h)).collect()
    }

    /// The leaf's directory in each hierarchy (v1 ones first, unified last):
    /// where [`Cgroup::attach`] puts processes.
    pub fn leaf_dirs(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join(LEAF)).collect()
    }

    /// The limits the kernel enforces on the group now ([`Applied`]).
    pub fn applied(&self) -> Result<Applied, CgroupError> {
        match self.mode {
            Mode::V2 => match self.unified_dir() {
                Some(d) => v2::applied(&d),
                None => Ok(Applied::default()),
            },
            Mode::V1 => v1::applied(&self.v1_dirs()),
        }
    }

    /// Usage and fault counters.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match self.mode {
            Mode::V2 => match self.unified_dir() {
                Some(d) => v2::stats(&d),
                None => Ok(Stats::default()),
            },
            Mode::V1 => {
                let mut s = v1::stats(&self.v1_dirs())?;
                if s.cpu_usage_us.is_none() {
                    if let Some(d) = self.unified_dir() {
                        s.cpu_usage_us = fsio::read_keyed(&d, "cpu.stat", "usage_usec")?;
                    }
                }
                Ok(s)
            }
        }
    }
}

/// `limits` without the ones that need `controller`, and the names of
/// those dropped (empty when none needed it: then nothing can be done
/// without it).
pub fn without_controller(limits: &Limits, controller: &Controller) -> (Limits, Vec<&'static str>) {
    let mut l = limits.clone();
    let mut dropped = Vec::new();
    let mut drop_if = |set: bool, name: &'static str| {
        if set {
            dropped.push(name);
        }
    };
    match controller {
        Controller::Memsw | Controller::MemorySwap => {
            drop_if(l.swap_max.take().is_some(), "swap");
        }
        Controller::BlkioWeight => drop_if(l.io_weight.take().is_some(), "io_weight"),
        Controller::Memory => {
            drop_if(l.memory_max.take().is_some(), "memory");
            drop_if(l.memory_high.take().is_some(), "memory_high");
            drop_if(l.swap_max.take().is_some(), "swap");
        }
        Controller::Cpu => {
            drop_if(l.cpu_max.take().is_some(), "cpu");
            drop_if(l.cpu_weight.take().is_some(), "cpu_weight");
        }
        Controller::Pids => drop_if(l.pids_max.take().is_some(), "pids"),
        Controller::Cpuset => drop_if(l.cpus.take().is_some(), "cpus"),
        Controller::Blkio | Controller::Io => {
            drop_if(!std::mem::take(&mut l.io).is_empty(), "io");
            drop_if(l.io_weight.take().is_some(), "io_weight");
        }
        Controller::Devices => drop_if(l.devices.take().is_some(), "devices"),
        // No limit of its own: the device filter is dropped by create_with,
        // the freezer is needed for the group itself.
        Controller::DeviceFilter
        | Controller::Freezer
        | Controller::Cpuacct
        | Controller::Other(_) => {}
    }
    (l, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fake::{dir as fake, v2_dir};

    /// A pure v2 host end to end on a fake tree: controllers enabled above the group, limits in it, attach into the leaf.
    #[test]
    fn v2_flow_on_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        v2_dir(m, "cpu io memory pids");
        for d in [
            "hutch",
            "hutch/users",
            "hutch/users/alice",
            "hutch/users/alice/procs",
        ] {
            v2_dir(&m.join(d), "cpu io memory pids");
        }
        let mountinfo = format!(
            "30 1 0:26 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            m.display()
        );
        let root = CgroupRoot::open_at("/hutch", "0::/init.scope\n", &mountinfo).unwrap();
        assert_eq!(root.mode(), Mode::V2);
        assert_eq!(root.dirs(), [m.join("hutch")]);
        let cg = root
            .create(
                "users/alice",
                &Limits {
                    memory_max: Some(1 << 30),
                    pids_max: Some(100),
                    ..Limits::default()
                },
            )
            .unwrap();
        let r = |p: &str| std::fs::read_to_string(m.join(p)).unwrap();
        assert_eq!(r("cgroup.subtree_control"), "+cpu +io +memory +pids");
        assert_eq!(r("hutch/cgroup.subtree_control"), "+cpu +io +memory +pids");
        assert_eq!(
            r("hutch/users/cgroup.subtree_control"),
            "+cpu +io +memory +pids"
        );
        assert_eq!(
            r("hutch/users/alice/cgroup.subtree_control"),
            "+memory",
            "the group passes memory alone to its leaf (lxcfs reads the leaf's memory.stat)"
        );
        assert_eq!(r("hutch/users/alice/memory.max"), "1073741824");
        assert_eq!(r("hutch/users/alice/pids.max"), "100");
        cg.attach(4242).unwrap();
        assert_eq!(r("hutch/users/alice/procs/cgroup.procs"), "4242");
        assert_eq!(cg.pids().unwrap(), [4242]);
        assert_eq!(cg.leaf_dirs(), [m.join("hutch/users/alice/procs")]);
        assert!(root.existing("users/alice").is_some());
        assert!(root.existing("users/bob").is_none());
        assert!(root.existing("../x").is_none());
        assert!(matches!(
            root.create("a/../b", &Limits::default()),
            Err(CgroupError::BadName(_))
        ));
    }

    /// Hybrid detection: v1 hierarchies carry limits, a relative spec resolves under each own cgroup, unified is kept for kill.
    #[test]
    fn hybrid_open_at() {
        let mi = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let pc = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/sess\n";
        let root = CgroupRoot::open_at("hutch-t1", pc, mi).unwrap();
        assert_eq!(root.mode(), Mode::V1);
        assert_eq!(
            root.dirs(),
            [
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/hutch-t1"),
                PathBuf::from("/sys/fs/cgroup/unified/sess/hutch-t1"),
            ]
        );
        let cg = root.group("u");
        assert_eq!(
            cg.unified_dir(),
            Some(PathBuf::from("/sys/fs/cgroup/unified/sess/hutch-t1/u"))
        );
        assert_eq!(
            cg.v1_dirs().memory,
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/process_api/abc/hutch-t1/u"
            ))
        );
        assert_eq!(cg.v1_dirs().pids, None);
        // A pids limit with no pids hierarchy is refused before anything is made.
        assert!(matches!(
            root.create(
                "u",
                &Limits {
                    pids_max: Some(1),
                    ..Limits::default()
                }
            ),
            Err(CgroupError::MissingController {
                controller: Controller::Pids,
                ..
            })
        ));
    }

    /// Not strict: a missing controller drops only its limits, with one warning; strict refuses naming it.
    #[test]
    fn create_with_missing_controller() {
        let t = tempfile::tempdir().unwrap();
        let mem = t.path().join("memory");
        fake(
            &mem,
            &[
                ("cgroup.procs", ""),
                ("memory.limit_in_bytes", "9223372036854771712"),
            ],
        );
        let mi = format!(
            "35 31 0:32 / {} rw - cgroup cgroup rw,memory\n",
            mem.display()
        );
        let root = CgroupRoot::open_at("/h", "4:memory:/\n", &mi).unwrap();
        let limits = Limits {
            memory_max: Some(1 << 20),
            pids_max: Some(50),
            ..Limits::default()
        };
        let e = root.create_with("u", &limits, true).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::MissingController {
                    controller: Controller::Pids,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!mem.join("h/u").exists(), "a refused group is removed");
        // The fake kernel has no files below the root: pre-make the group's.
        fake(
            &mem.join("h/u"),
            &[
                ("cgroup.procs", ""),
                ("memory.limit_in_bytes", "9223372036854771712"),
            ],
        );
        let (cg, warnings) = root.create_with("u", &limits, false).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("pids") && warnings[0].contains("not applied"),
            "{warnings:?}"
        );
        assert_eq!(
            std::fs::read_to_string(mem.join("h/u/memory.limit_in_bytes")).unwrap(),
            "1048576"
        );
        assert_eq!(cg.rel(), "u");
        let (l, d) = without_controller(&limits, &Controller::Cpu);
        assert_eq!((l, d), (limits.clone(), vec![]));
    }

    /// v1 blk-throttle is flat: the I/O rules are written in the group and in its leaf, where the processes are.
    #[test]
    fn v1_io_rules_reach_the_leaf() {
        let t = tempfile::tempdir().unwrap();
        let blk = t.path().join("blkio");
        let files = [
            ("cgroup.procs", ""),
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_bps_device", ""),
            ("blkio.throttle.read_iops_device", ""),
            ("blkio.throttle.write_iops_device", ""),
        ];
        for d in ["", "h/u", "h/u/procs"] {
            fake(&blk.join(d), &files);
        }
        let mi = format!(
            "35 31 0:32 / {} rw - cgroup cgroup rw,blkio\n",
            blk.display()
        );
        let root = CgroupRoot::open_at("/h", "7:blkio:/\n", &mi).unwrap();
        let io = IoDeviceLimit {
            major: 7,
            minor: 3,
            read_bps: None,
            write_bps: Some(4 << 20),
            read_iops: None,
            write_iops: Some(100),
        };
        root.create(
            "u",
            &Limits {
                io: vec![io],
                ..Limits::default()
            },
        )
        .unwrap();
        for d in ["h/u", "h/u/procs"] {
            let r = |f: &str| std::fs::read_to_string(blk.join(d).join(f)).unwrap();
            assert_eq!(r("blkio.throttle.write_bps_device"), "7:3 4194304", "{d}");
            assert_eq!(r("blkio.throttle.write_iops_device"), "7:3 100", "{d}");
        }
    }

    /// v1 devices: the group is restricted before its leaf exists (so the leaf inherits), the leaf is written too; on an existing group only the leaf.
    #[test]
    fn v1_devices_group_then_leaf() {
        let t = tempfile::tempdir().unwrap();
        let dev = t.path().join("devices");
        let files = [
            ("cgroup.procs", ""),
            ("devices.deny", ""),
            ("devices.allow", ""),
            ("devices.list", "a *:* rwm\n"),
        ];
        fake(&dev, &files);
        // The fake kernel makes no files in new directories: pre-make the group's.
        fake(&dev.join("h/u"), &files);
        let mi = format!(
            "36 31 0:33 / {} rw - cgroup cgroup rw,devices\n",
            dev.display()
        );
        let root = CgroupRoot::open_at("/h", "5:devices:/\n", &mi).unwrap();
        let rules = vec![
            DeviceRule::char(1, Some(3), "rwm"),
            DeviceRule::char(136, None, "rwm"),
        ];
        let limits = Limits {
            devices: Some(rules.clone()),
            ..Limits::default()
        };
        // The fake kernel gives the new leaf no control files: the group is
        // written first, then the leaf write fails as a missing controller.
        let e = root.create("u", &limits).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::MissingController {
                    controller: Controller::Devices,
                    ..
                }
            ),
            "{e}"
        );
        let r = |p: &str| std::fs::read_to_string(dev.join(p)).unwrap();
        assert_eq!(r("h/u/devices.deny"), "a");
        assert_eq!(
            r("h/u/devices.allow"),
            "c 136:* rwm",
            "the last rule is written last"
        );
        // An existing group with its leaf: only the leaf is written (the
        // kernel refuses `deny a` on a group with children).
        fake(&dev.join("h/u"), &files);
        fake(&dev.join("h/u/procs"), &files);
        root.create("u", &limits).unwrap();
        assert_eq!(r("h/u/procs/devices.deny"), "a");
        assert_eq!(r("h/u/procs/devices.allow"), "c 136:* rwm");
        assert_eq!(r("h/u/devices.deny"), "", "the group is left alone");
        // No rules: nothing is written.
        fake(&dev.join("h/v"), &files);
        root.create("v", &Limits::default()).unwrap();
        assert_eq!(r("h/v/devices.deny"), "");
        assert_eq!(root.group("u").v1_dirs().devices, Some(dev.join("h/u")));
        let (l, d) = without_controller(&limits, &Controller::Devices);
        assert_eq!((l.devices, d), (None, vec!["devices"]));
    }

    /// A cgroup2 mount with no controllers and no v1 hierarchy has nothing to limit with.
    #[test]
    fn empty_unified_alone_is_no_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        fake(t.path(), &[("cgroup.controllers", "\n")]);
        let mi = format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            t.path().display()
        );
        assert!(matches!(
            CgroupRoot::open_at("/h", "0::/\n", &mi),
            Err(CgroupError::NoHierarchy(_))
        ));
        assert!(matches!(
            CgroupRoot::open_at("/h", "", ""),
            Err(CgroupError::NoHierarchy(_))
        ));
    }
}
