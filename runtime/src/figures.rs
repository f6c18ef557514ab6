//! What a container is told of its own resources, decided by the keeper on
//! the host before the container is made: the CPUs it runs on (`cpus`), and
//! whether its /proc and /sys figures come from lxcfs or, without it, from
//! the small files [`crate::cpus`] generates.
//!
//! lxcfs (Debian's `lxcfs` package, the FUSE file system LXC and Incus
//! use) answers each read of its `proc/meminfo`, `cpuinfo`, `stat`,
//! `uptime`, `loadavg`, `swaps`, `diskstats` and `sys/devices/system/cpu/online`
//! from the reader's cgroup and pid namespace: `free`, `top`, `uptime` and
//! `nproc` inside show the container's limit, usage and age. It is used when
//! it is mounted where `[host] lxcfs` says (Debian's `lxcfs.service` mounts
//! it at `/var/lib/lxcfs`) and answers; hutch never starts it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cgroup::CgroupRoot;
use crate::cpus;
use crate::rootfs::Figures;

/// `path` when a live lxcfs is mounted there: a `fuse.lxcfs` mount point in
/// this mount namespace whose `proc/meminfo` can be read (a daemon that
/// died leaves a mount that answers ENOTCONN).
pub fn live_lxcfs(path: &Path) -> Option<PathBuf> {
    let mounts = crate::mountinfo::read_own().ok()?;
    let mounted = mounts
        .iter()
        .any(|m| m.mount_point == path && m.fstype == "fuse.lxcfs");
    if !mounted {
        return None;
    }
    std::fs::File::open(path.join("proc/meminfo")).ok()?;
    Some(path.to_path_buf())
}

/// The CPUs the keeper itself may run on: what hutch's cgroup allows.
pub fn available_cpus() -> BTreeSet<u32> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return BTreeSet::new();
    };
    (0..nix::sched::CpuSet::count() as u32)
        .filter(|&c| set.is_set(c as usize).unwrap_or(false))
        .collect()
}

/// The CPUs of a new container under `cpus = "auto"` with a `cpu` quota:
/// as many as the quota needs, rounded up, where the fewest of the other
/// containers (the groups below `users`) run. `None`: every CPU (no quota,
/// `cpus = "none"`, or a quota that needs them all).
pub fn container_cpus(root: &CgroupRoot, limits: &hutch_policy::Limits) -> Option<BTreeSet<u32>> {
    if limits.cpus != hutch_policy::CpusMode::Auto {
        return None;
    }
    let cpu = limits.cpu?;
    let n = cpus::count_for_quota(cpu.quota_us, cpu.period_us);
    let available = available_cpus();
    let taken: Vec<BTreeSet<u32>> = root
        .existing("users")
        .map(|users| {
            users
                .children_cpus()
                .iter()
                .filter_map(|l| cpus::parse_list(l))
                .collect()
        })
        .unwrap_or_default();
    cpus::pick(&available, &taken, n)
}

/// The figures of a container on `cpus` (`None`: every host CPU), with
/// `lxcfs` live or not.
pub fn figures(lxcfs: Option<PathBuf>, cpus: Option<&BTreeSet<u32>>) -> Figures {
    if lxcfs.is_some() {
        return Figures {
            lxcfs,
            ..Figures::default()
        };
    }
    let Some(cpus) = cpus else {
        return Figures::default();
    };
    let host = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Figures {
        lxcfs: None,
        cpuinfo: Some(cpus::cpuinfo_for(&host, cpus)),
        cpu_online: Some(cpus::online_for(cpus.len())),
    }
}
