//! The cgroup v1 backend: one directory per controller hierarchy; limits in
//! memory, cpu, pids and blkio, counters from cpuacct and the rest, the
//! freezer for kill-all where cgroup2's `cgroup.kill` is not there, and the
//! cpuset values a new v1 group must be given before it can take a process.
//!
//! Each function takes the directories it works on, so that it runs the same
//! on `/sys/fs/cgroup/<controller>` and on a fake tree in a temporary directory.
//!
//! ## Weights
//! v2 weights run 1..=10000 with 100 the default; v1 `cpu.shares` run
//! 2..=262144 with 1024 the default. [`weight_to_shares`] maps them piecewise
//! linearly so that the ends and the defaults meet: 1→2, 100→1024,
//! 10000→262144 (systemd maps `CPUWeight=` 100 to `CPUShares=` 1024 too; runc's
//! single line maps 100 to 2597, which would give every hutch user 2.5× the
//! host's default share). v1 `blkio.weight`/`blkio.bfq.weight` (10..=1000,
//! default 500 for blkio.weight, 100 for bfq) are mapped the same way
//! by [`weight_to_blkio`] with 1→10, 100→500, 10000→1000.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fsio;
use super::{bpfdev, Cgroup, CgroupError, Controller, DeviceRule, Hier, Limits, Stats, LEAF};

/// The group's directory in each v1 hierarchy hutch uses (`None`: that
/// controller is not mounted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirs {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub freezer: Option<PathBuf>,
    pub cpuset: Option<PathBuf>,
    pub devices: Option<PathBuf>,
}

/// Maps `x` in `[x0, x1]` linearly onto `[y0, y1]` (integer, rounded down).
fn lerp(x: u64, x0: u64, x1: u64, y0: u64, y1: u64) -> u64 {
    y0 + (x - x0) * (y1 - y0) / (x1 - x0)
}

/// v2 `cpu.weight` (1..=10000, default 100) → v1 `cpu.shares` (2..=262144,
/// default 1024); out-of-range weights are clamped. See the module docs.
pub fn weight_to_shares(weight: u64) -> u64 {
    let w = weight.clamp(1, 10_000);
    if w <= 100 {
        lerp(w, 1, 100, 2, 1024)
    } else {
        lerp(w, 100, 10_000, 1024, 262_144)
    }
}

/// v1 `cpu.shares` → v2 weight, the inverse of [`weight_to_shares`] (for
/// showing a v1 group's shares in v2 terms).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    if s <= 1024 {
        lerp(s, 2, 1024, 1, 100)
    } else {
        lerp(s, 1024, 262_144, 100, 10_000)
    }
}

/// v2 `io.weight` (1..=10000, default 100) → v1 blkio weight (10..=1000,
/// default 500).
pub fn weight_to_blkio(weight: u64) -> u64 {
    let w = weight.clamp(1, 10_000);
    if w <= 100 {
        lerp(w, 1, 100, 10, 500)
    } else {
        lerp(w, 100, 10_000, 500, 1000)
    }
}

/// The v1 memory writes, in the order the kernel accepts them.
///
/// v1 has no swap limit of its own: `memory.memsw.limit_in_bytes` limits
/// memory + swap and must never be below `memory.limit_in_bytes`. When the
/// memory limit goes up (above `current`, the present `memory.limit_in_bytes`)
/// memsw is written first; when it goes down, memory first. Either way every
/// intermediate state keeps memsw ≥ memory. `memory_high` becomes the soft
/// limit. A swap limit needs a memory limit to add to.
pub fn memory_writes(
    current: u64,
    limits: &Limits,
) -> Result<Vec<(&'static str, String)>, CgroupError> {
    let mut w = Vec::new();
    if let Some(h) = limits.memory_high {
        w.push(("memory.soft_limit_in_bytes", h.to_string()));
    }
    match (limits.memory_max, limits.swap_max) {
        (None, None) => {}
        (Some(m), None) => w.push(("memory.limit_in_bytes", m.to_string())),
        (None, Some(_)) => {
            return Err(CgroupError::MissingController {
                controller: Controller::Memsw,
                detail:
                    "cgroup v1 limits swap only as memory+swap: a swap limit needs a memory limit"
                        .into(),
            })
        }
        (Some(m), Some(s)) => {
            let mem = ("memory.limit_in_bytes", m.to_string());
            let memsw = (
                "memory.memsw.limit_in_bytes",
                m.saturating_add(s).to_string(),
            );
            if m > current {
                w.extend([memsw, mem]);
            } else {
                w.extend([mem, memsw]);
            }
        }
    }
    Ok(w)
}

/// Names the missing hierarchy of a controller a limit needs.
fn need(dir: &Option<PathBuf>, controller: Controller) -> Result<&Path, CgroupError> {
    dir.as_deref()
        .ok_or_else(|| CgroupError::MissingController {
            controller,
            detail: "no cgroup v1 hierarchy with this controller is mounted".into(),
        })
}

/// Checks, before anything is made, that every controller `limits` needs
/// has a hierarchy.
pub fn check_controllers(d: &Dirs, limits: &Limits) -> Result<(), CgroupError> {
    if limits.memory_max.is_some() || limits.memory_high.is_some() || limits.swap_max.is_some() {
        need(&d.memory, Controller::Memory)?;
    }
    if limits.cpu_max.is_some() || limits.cpu_weight.is_some() {
        need(&d.cpu, Controller::Cpu)?;
    }
    if limits.pids_max.is_some() {
        need(&d.pids, Controller::Pids)?;
    }
    if !limits.io.is_empty() || limits.io_weight.is_some() {
        need(&d.blkio, Controller::Blkio)?;
    }
    if limits.devices.is_some() {
        need(&d.devices, Controller::Devices)?;
    }
    if limits.cpus.is_some() {
        need(&d.cpuset, Controller::Cpuset)?;
    }
    Ok(())
}

/// The v1 devices writes for an allow-list, in order: `a` to
/// `devices.deny` (empties the group's list and makes deny the default),
/// then one `devices.allow` write per rule (the file takes one rule a write).
pub fn device_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut w = vec![("devices.deny", "a".to_string())];
    w.extend(rules.iter().map(|r| ("devices.allow", r.to_string())));
    w
}

/// Restricts the v1 devices group `dir` to `rules` (see [`device_writes`]).
/// `dir` must have no child cgroups: the kernel refuses `deny a` then.
pub fn write_devices(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    for (file, value) in device_writes(rules) {
        fsio::write(dir, file, &value)?;
    }
    Ok(())
}

/// Writes `limits` into the group's v1 directories.
pub fn write_limits(d: &Dirs, limits: &Limits) -> Result<(), CgroupError> {
    check_controllers(d, limits)?;
    if let Some(mem) = d.memory.as_deref() {
        if limits.swap_max.is_some() && !mem.join("memory.memsw.limit_in_bytes").exists() {
            return Err(CgroupError::MissingController {
                controller: Controller::Memsw,
                detail: format!(
                    "no memory.memsw.limit_in_bytes in {} (kernel without swapaccount=1)",
                    mem.display()
                ),
            });
        }
        let current = fsio::read_u64(mem, "memory.limit_in_bytes")?.unwrap_or(u64::MAX);
        for (file, value) in memory_writes(current, limits)? {
            fsio::write(mem, file, &value)?;
        }
    }
    if let Some(cpu) = d.cpu.as_deref() {
        if let Some((quota, period)) = limits.cpu_max {
            // Period first: the quota is checked against it.
            fsio::write(cpu, "cpu.cfs_period_us", &period.to_string())?;
            fsio::write(cpu, "cpu.cfs_quota_us", &quota.to_string())?;
        }
        if let Some(w) = limits.cpu_weight {
            fsio::write(cpu, "cpu.shares", &weight_to_shares(w).to_string())?;
        }
    }
    if let (Some(pids), Some(max)) = (d.pids.as_deref(), limits.pids_max) {
        fsio::write(pids, "pids.max", &max.to_string())?;
    }
    if let Some(blk) = d.blkio.as_deref() {
        for dev in &limits.io {
            // 0 removes a v1 throttle rule: a device entry is complete, as in v2.
            for (file, v) in [
                ("blkio.throttle.read_bps_device", dev.read_bps),
                ("blkio.throttle.write_bps_device", dev.write_bps),
                ("blkio.throttle.read_iops_device", dev.read_iops),
                ("blkio.throttle.write_iops_device", dev.write_iops),
            ] {
                fsio::write(
                    blk,
                    file,
                    &format!("{}:{} {}", dev.major, dev.minor, v.unwrap_or(0)),
                )?;
            }
        }
        if let Some(w) = limits.io_weight {
            if blk.join("blkio.weight").exists() {
                fsio::write(blk, "blkio.weight", &weight_to_blkio(w).to_string())?;
            } else if blk.join("blkio.bfq.weight").exists() {
                fsio::write(blk, "blkio.bfq.weight", &weight_to_blkio(w).to_string())?;
            } else {
                return Err(CgroupError::MissingController {
                    controller: Controller::BlkioWeight,
                    detail: format!(
                        "neither blkio.weight nor blkio.bfq.weight in {} (no CFQ/BFQ scheduler)",
                        blk.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Control file names in a cpuset hierarchy (`noprefix` drops `cpuset.`).
fn cpuset_files(noprefix: bool) -> [&'static str; 2] {
    if noprefix {
        ["cpus", "mems"]
    } else {
        ["cpuset.cpus", "cpuset.mems"]
    }
}

/// The directories from the child of `base` down to `dir`, top first.
fn below(base: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| *a != base && a.starts_with(base))
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

/// Gives the new cpuset directory `dir` its parent's `cpus` and `mems`
/// where they are empty: a v1 cpuset group takes no process until both are set.
pub fn copy_cpuset(dir: &Path, noprefix: bool) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for f in cpuset_files(noprefix) {
        let mine = fsio::read_opt(dir, f)?.unwrap_or_default();
        if !mine.trim().is_empty() {
            continue;
        }
        let theirs = fsio::read(parent, f)?;
        fsio::write(dir, f, theirs.trim())?;
    }
    Ok(())
}

/// Sets the v1 freezer of `dir` to FROZEN or THAWED and waits, bounded, for
/// `freezer.state` to report it (FREEZING means some task has not stopped
/// yet; the write is repeated, as runc does).
pub fn set_frozen(dir: &Path, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let start = Instant::now();
    loop {
        fsio::write(dir, "freezer.state", want)?;
        let state = fsio::read(dir, "freezer.state")?;
        if state.trim() == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::Write {
                path: dir.join("freezer.state"),
                value: want.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("freezer.state is {} after {timeout:?}", state.trim()),
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sums `Read` and `Write` of a blkio `io_service*` file ("MAJ:MIN Op N" lines).
pub fn blkio_sum(text: &str) -> [u64; 2] {
    let mut s = [0u64; 2];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            continue;
        }
        let i = match f[1] {
            "Read" => 0,
            "Write" => 1,
            _ => continue,
        };
        s[i] = s[i].saturating_add(f[2].parse().unwrap_or(0));
    }
    s
}

/// Usage and fault counters from the group's v1 directories.
/// The limits in force ([`super::Applied`]): `memory.limit_in_bytes`,
/// `memory.soft_limit_in_bytes`, `pids.max`, `cpu.cfs_quota_us` over
/// `cpu.cfs_period_us` (a quota of -1 is none).
pub fn applied(d: &Dirs) -> Result<super::Applied, CgroupError> {
    let limited = |v: Option<u64>| v.filter(|&v| v < super::V1_UNLIMITED);
    let mut a = super::Applied::default();
    if let Some(m) = d.memory.as_deref() {
        a.memory_max = limited(fsio::read_u64(m, "memory.limit_in_bytes")?);
        a.memory_high = limited(fsio::read_u64(m, "memory.soft_limit_in_bytes")?);
    }
    if let Some(p) = d.pids.as_deref() {
        a.pids_max = fsio::read_u64(p, "pids.max")?;
    }
    if let Some(c) = d.cpu.as_deref() {
        let quota =
            fsio::read_opt(c, "cpu.cfs_quota_us")?.and_then(|s| s.trim().parse::<i64>().ok());
        let period = fsio::read_u64(c, "cpu.cfs_period_us")?;
        if let (Some(q), Some(p)) = (quota, period) {
            a.cpu_max = u64::try_from(q).ok().map(|q| (q, p));
        }
    }
    Ok(a)
}

pub fn stats(d: &Dirs) -> Result<Stats, CgroupError> {
    let mut s = Stats::default();
    if let Some(m) = d.memory.as_deref() {
        s.memory_current = fsio::read_u64(m, "memory.usage_in_bytes")?;
        s.memory_peak = fsio::read_u64(m, "memory.max_usage_in_bytes")?;
        let stat = fsio::read_opt(m, "memory.stat")?.unwrap_or_default();
        s.shmem = fsio::keyed(&stat, "total_shmem");
        // v1 counts an OOM kill only in the victim's own cgroup (v2
        // propagates it up): sum the group's subtree, leaf included.
        s.oom_kills = fsio::sum_keyed_subtree(m, "memory.oom_control", "oom_kill")?;
    }
    if let Some(c) = d.cpuacct.as_deref() {
        s.cpu_usage_us = fsio::read_u64(c, "cpuacct.usage")?.map(|ns| ns / 1000);
    }
    if let Some(c) = d.cpu.as_deref() {
        let stat = fsio::read_opt(c, "cpu.stat")?.unwrap_or_default();
        s.cpu_throttled_periods = fsio::keyed(&stat, "nr_throttled");
        s.cpu_throttled_us = fsio::keyed(&stat, "throttled_time").map(|ns| ns / 1000);
    }
    if let Some(p) = d.pids.as_deref() {
        s.pids_current = fsio::read_u64(p, "pids.current")?;
        // Likewise a refused fork is counted in the forking task's cgroup.
        s.pids_limit_hits = fsio::sum_keyed_subtree(p, "pids.events", "max")?;
    }
    if let Some(b) = d.blkio.as_deref() {
        if let Some(t) = fsio::read_opt(b, "blkio.throttle.io_service_bytes_recursive")? {
            let [r, w] = blkio_sum(&t);
            (s.io_read_bytes, s.io_write_bytes) = (Some(r), Some(w));
        }
        if let Some(t) = fsio::read_opt(b, "blkio.throttle.io_serviced_recursive")? {
            let [r, w] = blkio_sum(&t);
            (s.io_read_ops, s.io_write_ops) = (Some(r), Some(w));
        }
    }
    Ok(s)
}

/// [`super::CgroupRoot::create`] on a v1 (or hybrid) host: the group `cg`
/// and its leaf in every hierarchy, with what v1 needs before a process can
/// join (memory.use_hierarchy, cpuset values copied down, the devices list
/// written before the leaf exists), the device program on a hybrid host's
/// unified mount (`bpf_devices`), then the limits.
pub(super) fn create_group(
    hiers: &[Hier],
    cg: &Cgroup,
    limits: &Limits,
    bpf_devices: Option<&[DeviceRule]>,
) -> Result<(), CgroupError> {
    let dirs = cg.v1_dirs();
    check_controllers(&dirs, limits)?;
    for h in hiers {
        let group = cg.dir_in(h);
        fsio::mkdir_below(&h.mount.mount_point, &group)?;
        if h.has("memory") {
            // Always 1 on kernels since 6.x; older ones start at 0.
            if fsio::read_opt(&group, "memory.use_hierarchy")?.is_some_and(|v| v.trim() == "0") {
                fsio::write(&group, "memory.use_hierarchy", "1")?;
            }
        }
        let leaf = group.join(LEAF);
        // The unified mount of a hybrid host has no controllers,
        // but a device program attached there binds all the same.
        if let (Some(rules), true, false) = (bpf_devices, h.mount.unified, leaf.exists()) {
            bpfdev::attach(&group, rules)?;
        }
        if h.has("cpuset") {
            // Every level from the mount down, not only the ones this call
            // made: a directory another keeper has just made may not have
            // its values yet, and a child of it would copy the empty list
            // (then the init's move fails with ENOSPC). Top down, and only
            // empty values are written, so racing keepers agree.
            for d in below(&h.mount.mount_point, &group) {
                copy_cpuset(&d, h.mount.noprefix)?;
            }
            // Narrowed before the leaf exists, which copies it (a v1 child
            // must stay within its parent).
            if let (Some(cpus), false) = (&limits.cpus, leaf.exists()) {
                fsio::write(&group, cpuset_files(h.mount.noprefix)[0], cpus)?;
            }
        }
        // v1 devices: a new child copies its parent's rules and
        // can never exceed them, but `deny a` is refused on a
        // group that has children. So the group is restricted
        // before its leaf exists, and the leaf (where the
        // processes are) is written too, whether or not the group
        // was new.
        let devices = limits.devices.as_deref().filter(|_| h.has("devices"));
        if let Some(rules) = devices {
            if !leaf.exists() {
                write_devices(&group, rules)?;
            }
        }
        fsio::mkdir(&leaf)?;
        if h.has("cpuset") {
            copy_cpuset(&leaf, h.mount.noprefix)?;
        }
        if let Some(rules) = devices {
            write_devices(&leaf, rules)?;
        }
    }
    write_limits(&dirs, limits)?;
    // v1 blk-throttle is flat: a rule binds only the tasks of its
    // own cgroup, never those of the cgroups below. The processes
    // live in the leaf, so the rules go there too.
    if let (Some(blk), false) = (&dirs.blkio, limits.io.is_empty()) {
        let leaf = Dirs {
            blkio: Some(blk.join(LEAF)),
            ..Dirs::default()
        };
        write_limits(
            &leaf,
            &Limits {
                io: limits.io.clone(),
                ..Limits::default()
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fake::dir as fake;
    use super::super::IoDeviceLimit;
    use super::*;

    /// The limits read back; v1's "unlimited" values and a -1 quota are none.
    #[test]
    fn applied_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let (m, p, c) = (t.path().join("m"), t.path().join("p"), t.path().join("c"));
        fake(
            &m,
            &[
                ("memory.limit_in_bytes", "536870912\n"),
                ("memory.soft_limit_in_bytes", "9223372036854771712\n"),
            ],
        );
        fake(&p, &[("pids.max", "max\n")]);
        fake(
            &c,
            &[
                ("cpu.cfs_quota_us", "50000\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        let d = Dirs {
            memory: Some(m),
            pids: Some(p),
            cpu: Some(c.clone()),
            ..Dirs::default()
        };
        let a = applied(&d).unwrap();
        assert_eq!(a.memory_max, Some(512 << 20));
        assert_eq!(a.memory_high, None);
        assert_eq!(a.pids_max, None);
        assert_eq!(a.cpu_max, Some((50_000, 100_000)));
        fake(&c, &[("cpu.cfs_quota_us", "-1\n")]);
        assert_eq!(applied(&d).unwrap().cpu_max, None);
    }

    /// Weights map so that the ends and the defaults of v1 and v2 meet, monotonically.
    #[test]
    fn weight_mapping() {
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(10_000), 262_144);
        assert_eq!(weight_to_shares(0), 2, "clamped");
        assert_eq!(weight_to_shares(20_000), 262_144, "clamped");
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        let mut last = 0;
        for w in 1..=10_000 {
            let s = weight_to_shares(w);
            assert!(s >= last, "monotonic at {w}");
            last = s;
            let back = shares_to_weight(s);
            assert!(back.abs_diff(w) <= 1, "{w} -> {s} -> {back}");
        }
        assert_eq!(weight_to_blkio(1), 10);
        assert_eq!(weight_to_blkio(100), 500);
        assert_eq!(weight_to_blkio(10_000), 1000);
    }

    /// Raising the memory limit writes memsw first, lowering writes memory first; memsw = memory + swap.
    #[test]
    fn memory_order() {
        let l = Limits {
            memory_max: Some(200),
            swap_max: Some(50),
            ..Limits::default()
        };
        let up = memory_writes(100, &l).unwrap();
        assert_eq!(
            up,
            [
                ("memory.memsw.limit_in_bytes", "250".to_string()),
                ("memory.limit_in_bytes", "200".to_string())
            ]
        );
        let from_unlimited = memory_writes(9_223_372_036_854_771_712, &l).unwrap();
        assert_eq!(
            from_unlimited[0].0, "memory.limit_in_bytes",
            "a first limit is a lowering"
        );
        let down = memory_writes(300, &l).unwrap();
        assert_eq!(
            down,
            [
                ("memory.limit_in_bytes", "200".to_string()),
                ("memory.memsw.limit_in_bytes", "250".to_string())
            ]
        );
        let high = memory_writes(
            0,
            &Limits {
                memory_high: Some(7),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(high, [("memory.soft_limit_in_bytes", "7".to_string())]);
        assert!(memory_writes(
            0,
            &Limits {
                swap_max: Some(1),
                ..Limits::default()
            }
        )
        .is_err());
    }

    /// All v1 limits on a fake tree, in their files and syntax.
    #[test]
    fn writes_v1_limits() {
        let t = tempfile::tempdir().unwrap();
        let p = |c: &str| t.path().join(c).join("g");
        let d = Dirs {
            memory: Some(p("memory")),
            cpu: Some(p("cpu")),
            cpuacct: Some(p("cpuacct")),
            pids: Some(p("pids")),
            blkio: Some(p("blkio")),
            freezer: None,
            cpuset: None,
            devices: None,
        };
        fake(
            &p("memory"),
            &[
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.soft_limit_in_bytes", ""),
            ],
        );
        fake(
            &p("cpu"),
            &[
                ("cpu.cfs_period_us", ""),
                ("cpu.cfs_quota_us", ""),
                ("cpu.shares", ""),
            ],
        );
        fake(&p("pids"), &[("pids.max", "max")]);
        fake(
            &p("blkio"),
            &[
                ("blkio.throttle.read_bps_device", ""),
                ("blkio.throttle.write_bps_device", ""),
                ("blkio.throttle.read_iops_device", ""),
                ("blkio.throttle.write_iops_device", ""),
                ("blkio.bfq.weight", "100"),
            ],
        );
        let l = Limits {
            memory_max: Some(1 << 30),
            memory_high: Some(1 << 29),
            swap_max: Some(1 << 20),
            cpu_max: Some((25_000, 50_000)),
            cpu_weight: Some(100),
            cpus: None,
            pids_max: Some(32),
            io: vec![IoDeviceLimit {
                major: 7,
                minor: 3,
                read_bps: Some(4096),
                write_bps: None,
                read_iops: None,
                write_iops: Some(9),
            }],
            io_weight: Some(100),
            devices: None,
        };
        write_limits(&d, &l).unwrap();
        let r = |c: &str, f: &str| std::fs::read_to_string(p(c).join(f)).unwrap();
        assert_eq!(r("memory", "memory.limit_in_bytes"), "1073741824");
        assert_eq!(r("memory", "memory.memsw.limit_in_bytes"), "1074790400");
        assert_eq!(r("memory", "memory.soft_limit_in_bytes"), "536870912");
        assert_eq!(r("cpu", "cpu.cfs_period_us"), "50000");
        assert_eq!(r("cpu", "cpu.cfs_quota_us"), "25000");
        assert_eq!(r("cpu", "cpu.shares"), "1024");
        assert_eq!(r("pids", "pids.max"), "32");
        assert_eq!(r("blkio", "blkio.throttle.read_bps_device"), "7:3 4096");
        assert_eq!(r("blkio", "blkio.throttle.write_bps_device"), "7:3 0");
        assert_eq!(r("blkio", "blkio.throttle.write_iops_device"), "7:3 9");
        assert_eq!(r("blkio", "blkio.bfq.weight"), "500");
    }

    /// An allow-list becomes `deny a` first, then one `devices.allow` write per rule in the kernel's syntax.
    #[test]
    fn devices_writes() {
        use super::super::{DeviceKind, DeviceRule};
        let rules = [
            DeviceRule::char(1, Some(3), "rwm"),
            DeviceRule::char(136, None, "rw"),
            DeviceRule {
                kind: DeviceKind::Block,
                major: None,
                minor: None,
                access: "m".into(),
            },
        ];
        assert_eq!(
            device_writes(&rules),
            [
                ("devices.deny", "a".to_string()),
                ("devices.allow", "c 1:3 rwm".to_string()),
                ("devices.allow", "c 136:* rw".to_string()),
                ("devices.allow", "b *:* m".to_string()),
            ]
        );
        let d = Dirs::default();
        let l = Limits {
            devices: Some(vec![]),
            ..Limits::default()
        };
        assert!(matches!(
            check_controllers(&d, &l),
            Err(CgroupError::MissingController {
                controller: Controller::Devices,
                ..
            })
        ));
    }

    /// A swap limit without memsw (no swap accounting) and a limit without its hierarchy are missing controllers.
    #[test]
    fn v1_missing() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("memory");
        fake(&m, &[("memory.limit_in_bytes", "100")]);
        let d = Dirs {
            memory: Some(m),
            ..Dirs::default()
        };
        let l = Limits {
            memory_max: Some(10),
            swap_max: Some(0),
            ..Limits::default()
        };
        let e = write_limits(&d, &l).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::MissingController {
                    controller: Controller::Memsw,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = write_limits(
            &d,
            &Limits {
                pids_max: Some(1),
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::MissingController {
                    controller: Controller::Pids,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// A new cpuset directory gets its parent's cpus and mems; set ones are kept.
    #[test]
    fn cpuset_copy() {
        let t = tempfile::tempdir().unwrap();
        fake(
            t.path(),
            &[("cpuset.cpus", "0-3\n"), ("cpuset.mems", "0\n")],
        );
        let g = t.path().join("g");
        fake(&g, &[("cpuset.cpus", "\n"), ("cpuset.mems", "")]);
        copy_cpuset(&g, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(g.join("cpuset.cpus")).unwrap(),
            "0-3"
        );
        assert_eq!(std::fs::read_to_string(g.join("cpuset.mems")).unwrap(), "0");
        std::fs::write(g.join("cpuset.cpus"), "1").unwrap();
        copy_cpuset(&g, false).unwrap();
        assert_eq!(std::fs::read_to_string(g.join("cpuset.cpus")).unwrap(), "1");
    }

    /// v1 counters: ns become µs, oom_kill from memory.oom_control, Read/Write sums from blkio.
    #[test]
    fn v1_stats() {
        let t = tempfile::tempdir().unwrap();
        let p = |c: &str| t.path().join(c);
        fake(
            &p("memory"),
            &[
                ("memory.usage_in_bytes", "4096\n"),
                ("memory.max_usage_in_bytes", "8192\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
                ),
            ],
        );
        fake(&p("cpuacct"), &[("cpuacct.usage", "5000000\n")]);
        fake(
            &p("cpu"),
            &[(
                "cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000\n",
            )],
        );
        fake(
            &p("pids"),
            &[("pids.current", "3\n"), ("pids.events", "max 7\n")],
        );
        // Events counted in a child (the leaf) add up into the group's counter.
        fake(&p("pids").join("procs"), &[("pids.events", "max 2\n")]);
        fake(
            &p("memory").join("procs"),
            &[("memory.oom_control", "oom_kill 1\n")],
        );
        fake(
            &p("blkio"),
            &[
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\n7:1 Read 1\nTotal 151\n",
                ),
                (
                    "blkio.throttle.io_serviced_recursive",
                    "8:0 Read 2\n8:0 Write 3\n",
                ),
            ],
        );
        let d = Dirs {
            memory: Some(p("memory")),
            cpu: Some(p("cpu")),
            cpuacct: Some(p("cpuacct")),
            pids: Some(p("pids")),
            blkio: Some(p("blkio")),
            ..Dirs::default()
        };
        let s = stats(&d).unwrap();
        assert_eq!(s.memory_current, Some(4096));
        assert_eq!(s.memory_peak, Some(8192));
        assert_eq!(s.oom_kills, Some(4));
        assert_eq!(s.cpu_usage_us, Some(5000));
        assert_eq!(s.cpu_throttled_periods, Some(4));
        assert_eq!(s.cpu_throttled_us, Some(2000));
        assert_eq!(s.pids_current, Some(3));
        assert_eq!(s.pids_limit_hits, Some(9));
        assert_eq!((s.io_read_bytes, s.io_write_bytes), (Some(101), Some(50)));
        assert_eq!((s.io_read_ops, s.io_write_ops), (Some(2), Some(3)));
    }
}
