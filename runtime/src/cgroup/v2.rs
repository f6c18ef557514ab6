//! The cgroup v2 (unified) backend: enabling controllers down the tree,
//! writing limits, reading counters, freezing and `cgroup.kill`.
//!
//! Each function takes the directories it works on, so that it runs the same
//! on `/sys/fs/cgroup` and on a fake tree in a temporary directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::detect::word_set;
use super::fsio;
use super::{bpfdev, Cgroup, CgroupError, Controller, DeviceRule, Hier, Limits, Stats, LEAF};

/// Controllers hutch turns on where the host offers them, limits or not, so
/// that usage can be read.
pub const WANTED: &[&str] = &["cpu", "io", "memory", "pids"];

/// Controllers a group passes down to its leaf, where the container's
/// processes are: `memory`, so that the leaf has its own `memory.stat` and
/// `memory.current`. lxcfs answers `/proc/meminfo` from the `memory.stat`
/// of the cgroup of the reader's pid-1 (the container's init, in the leaf)
/// and, where that cgroup has none, shows the host's memory: without it,
/// `free` inside a 512M container on v2 showed the whole host. The limits
/// stay on the group (a leaf's use counts against them) and its
/// `memory.events` still counts the leaf's OOM kills (hierarchical).
/// Not `pids`: before Linux 6.13 a refused fork is counted only in the
/// `pids.events` of the forking task's own pids cgroup, so with pids in the
/// leaf the group's `pids.events`, which the keeper watches, would stay 0.
pub const TO_LEAF: &[&str] = &["memory"];

/// Enables in `group/cgroup.subtree_control` those of [`TO_LEAF`] that the
/// group has (`cgroup.controllers`) and does not yet pass down.
fn pass_to_leaf(group: &Path) -> Result<(), CgroupError> {
    let avail = word_set(&fsio::read(group, "cgroup.controllers")?);
    let have = word_set(&fsio::read(group, "cgroup.subtree_control")?);
    let add: Vec<String> = TO_LEAF
        .iter()
        .filter(|c| avail.contains(**c) && !have.contains(**c))
        .map(|c| format!("+{c}"))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    fsio::write(group, "cgroup.subtree_control", &add.join(" "))
}

/// The controllers `limits` needs.
pub fn required(limits: &Limits) -> BTreeSet<&'static str> {
    let mut r = BTreeSet::new();
    if limits.memory_max.is_some() || limits.memory_high.is_some() || limits.swap_max.is_some() {
        r.insert("memory");
    }
    if limits.cpu_max.is_some() || limits.cpu_weight.is_some() {
        r.insert("cpu");
    }
    if limits.pids_max.is_some() {
        r.insert("pids");
    }
    if limits.cpus.is_some() {
        r.insert("cpuset");
    }
    if !limits.io.is_empty() || limits.io_weight.is_some() {
        r.insert("io");
    }
    r
}

/// Makes `group` (and its missing parents) below the v2 mount `mount`,
/// enabling in the `cgroup.subtree_control` of each ancestor, from the mount
/// down to the group's parent, the controllers `required` and those of
/// [`WANTED`] the ancestor has but does not yet pass down. Nothing is written
/// where the controllers are already enabled (a systemd-delegated subtree),
/// and never in the group itself (what it passes to its leaf is
/// [`TO_LEAF`]'s, written by [`create_group`]).
///
/// Returns the directories it made, top first.
pub fn make_group(
    mount: &Path,
    group: &Path,
    required: &BTreeSet<&'static str>,
) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = group.strip_prefix(mount).map_err(|_| {
        CgroupError::NoHierarchy(format!(
            "{} is not below the cgroup2 mount {}",
            group.display(),
            mount.display()
        ))
    })?;
    let mut made = Vec::new();
    let mut cur = mount.to_path_buf();
    for c in rel.components() {
        enable_in(&cur, required)?;
        cur.push(c);
        if fsio::mkdir(&cur)? {
            made.push(cur.clone());
        }
    }
    Ok(made)
}

/// Enables the needed controllers in `dir/cgroup.subtree_control`.
fn enable_in(dir: &Path, required: &BTreeSet<&'static str>) -> Result<(), CgroupError> {
    let avail = word_set(&fsio::read(dir, "cgroup.controllers")?);
    let have = word_set(&fsio::read(dir, "cgroup.subtree_control")?);
    if let Some(c) = required.iter().find(|c| !avail.contains(**c)) {
        return Err(CgroupError::MissingController {
            controller: Controller::from_name(c),
            detail: format!("not in {}/cgroup.controllers", dir.display()),
        });
    }
    let add = |only_required: bool| -> String {
        WANTED
            .iter()
            .copied()
            .chain(required.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|c| avail.contains(*c) && !have.contains(*c))
            .filter(|c| !only_required || required.contains(c))
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let all = add(false);
    if all.is_empty() {
        return Ok(());
    }
    match fsio::write(dir, "cgroup.subtree_control", &all) {
        Ok(()) => Ok(()),
        Err(e) => {
            // An optional controller may be refused (say, cpu with a realtime
            // task about); the required ones alone must go through.
            let req = add(true);
            if req.is_empty() {
                return Ok(());
            }
            if req == all {
                return Err(e);
            }
            fsio::write(dir, "cgroup.subtree_control", &req)
        }
    }
}

/// `max` for `None`, else the number.
fn num_or_max(v: Option<u64>) -> String {
    v.map_or_else(|| "max".to_string(), |v| v.to_string())
}

/// The (file, value) writes that put `limits` on a v2 group, in order.
/// `None` leaves a file untouched, except inside an [`super::IoDeviceLimit`],
/// which is complete: its `None` fields are written as `max`.
pub fn limit_writes(limits: &Limits) -> Vec<(&'static str, String)> {
    let mut w = Vec::new();
    if let Some(v) = limits.memory_high {
        w.push(("memory.high", v.to_string()));
    }
    if let Some(v) = limits.memory_max {
        w.push(("memory.max", v.to_string()));
    }
    if let Some(v) = limits.swap_max {
        w.push(("memory.swap.max", v.to_string()));
    }
    if let Some((quota, period)) = limits.cpu_max {
        w.push(("cpu.max", format!("{quota} {period}")));
    }
    if let Some(v) = limits.cpu_weight {
        w.push(("cpu.weight", v.clamp(1, 10_000).to_string()));
    }
    if let Some(v) = limits.pids_max {
        w.push(("pids.max", v.to_string()));
    }
    if let Some(v) = &limits.cpus {
        w.push(("cpuset.cpus", v.clone()));
    }
    for d in &limits.io {
        w.push((
            "io.max",
            format!(
                "{}:{} rbps={} wbps={} riops={} wiops={}",
                d.major,
                d.minor,
                num_or_max(d.read_bps),
                num_or_max(d.write_bps),
                num_or_max(d.read_iops),
                num_or_max(d.write_iops)
            ),
        ));
    }
    if let Some(v) = limits.io_weight {
        w.push(("io.weight", format!("default {}", v.clamp(1, 10_000))));
    }
    w
}

/// Writes `limits` into the group directory `dir`.
///
/// `memory.swap.max` is absent without swap accounting: a swap limit then
/// fails as a missing controller. `io.weight` is absent under BFQ, which has
/// `io.bfq.weight` (1..1000) instead: the weight goes there, clamped.
pub fn write_limits(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    for (file, value) in limit_writes(limits) {
        if file == "io.weight"
            && !dir.join("io.weight").exists()
            && dir.join("io.bfq.weight").exists()
        {
            let w = limits.io_weight.unwrap_or(100).clamp(1, 1000);
            fsio::write(dir, "io.bfq.weight", &format!("default {w}"))?;
            continue;
        }
        fsio::write(dir, file, &value).map_err(|e| match e {
            CgroupError::MissingController { detail, .. } if file == "memory.swap.max" => {
                CgroupError::MissingController {
                    controller: Controller::MemorySwap,
                    detail,
                }
            }
            e => e,
        })?;
    }
    Ok(())
}

/// Usage and fault counters of the group directory `dir` (absent files give `None`).
/// The limits in force ([`super::Applied`]): `memory.max`, `memory.high`,
/// `pids.max` (`max` is none) and `cpu.max` (`max PERIOD` is none).
pub fn applied(dir: &Path) -> Result<super::Applied, CgroupError> {
    let cpu = fsio::read_opt(dir, "cpu.max")?.and_then(|s| {
        let mut it = s.split_whitespace();
        let q = it.next()?.parse().ok()?;
        let p = it.next()?.parse().ok()?;
        Some((q, p))
    });
    Ok(super::Applied {
        memory_max: fsio::read_u64(dir, "memory.max")?,
        memory_high: fsio::read_u64(dir, "memory.high")?,
        pids_max: fsio::read_u64(dir, "pids.max")?,
        cpu_max: cpu,
    })
}

pub fn stats(dir: &Path) -> Result<Stats, CgroupError> {
    let cpu = fsio::read_opt(dir, "cpu.stat")?.unwrap_or_default();
    let mem_events = fsio::read_opt(dir, "memory.events")?.unwrap_or_default();
    let io = fsio::read_opt(dir, "io.stat")?.map(|t| io_stat_sum(&t));
    let mem_stat = fsio::read_opt(dir, "memory.stat")?.unwrap_or_default();
    Ok(Stats {
        memory_current: fsio::read_u64(dir, "memory.current")?,
        memory_peak: fsio::read_u64(dir, "memory.peak")?,
        shmem: fsio::keyed(&mem_stat, "shmem"),
        cpu_usage_us: fsio::keyed(&cpu, "usage_usec"),
        pids_current: fsio::read_u64(dir, "pids.current")?,
        oom_kills: fsio::keyed(&mem_events, "oom_kill"),
        pids_limit_hits: fsio::read_keyed(dir, "pids.events", "max")?,
        memory_high_events: fsio::keyed(&mem_events, "high"),
        cpu_throttled_periods: fsio::keyed(&cpu, "nr_throttled"),
        cpu_throttled_us: fsio::keyed(&cpu, "throttled_usec"),
        io_read_bytes: io.map(|s| s[0]),
        io_write_bytes: io.map(|s| s[1]),
        io_read_ops: io.map(|s| s[2]),
        io_write_ops: io.map(|s| s[3]),
    })
}

/// Sums `rbytes wbytes rios wios` over the devices of an `io.stat`.
pub fn io_stat_sum(text: &str) -> [u64; 4] {
    let mut s = [0u64; 4];
    for line in text.lines() {
        for kv in line.split_whitespace().skip(1) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let i = match k {
                "rbytes" => 0,
                "wbytes" => 1,
                "rios" => 2,
                "wios" => 3,
                _ => continue,
            };
            s[i] = s[i].saturating_add(v.parse().unwrap_or(0));
        }
    }
    s
}

/// True when the kernel has `cgroup.kill` (Linux 5.14+) for `dir`.
pub fn has_kill(dir: &Path) -> bool {
    dir.join("cgroup.kill").exists()
}

/// Sends SIGKILL to every process in `dir` and below (`cgroup.kill`).
pub fn kill(dir: &Path) -> Result<(), CgroupError> {
    fsio::write(dir, "cgroup.kill", "1")
}

/// Freezes (`true`) or thaws `dir` and waits, bounded, for `cgroup.events`
/// to say so.
pub fn set_frozen(dir: &Path, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
    fsio::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = u64::from(frozen);
    let start = Instant::now();
    loop {
        let ev = fsio::read_opt(dir, "cgroup.events")?.unwrap_or_default();
        // A fake tree has no cgroup.events: nothing to wait for.
        if ev.is_empty() || fsio::keyed(&ev, "frozen") == Some(want) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(CgroupError::Write {
                path: dir.join("cgroup.freeze"),
                value: want.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("cgroup.events still not frozen={want} after {timeout:?}"),
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`super::CgroupRoot::create`] on a v2 host: the group `cg` in the
/// unified hierarchy `h`, its controllers enabled down the tree, the device
/// program attached (`bpf_devices`) before the leaf exists, the leaf, the
/// controllers the group passes to it ([`TO_LEAF`]), the limits.
pub(super) fn create_group(
    h: &Hier,
    cg: &Cgroup,
    limits: &Limits,
    bpf_devices: Option<&[DeviceRule]>,
) -> Result<(), CgroupError> {
    let group = cg.dir_in(h);
    make_group(&h.mount.mount_point, &group, &required(limits))?;
    if let (Some(rules), false) = (bpf_devices, group.join(LEAF).exists()) {
        bpfdev::attach(&group, rules)?;
    }
    fsio::mkdir(&group.join(LEAF))?;
    pass_to_leaf(&group)?;
    write_limits(&group, limits)
}

#[cfg(test)]
mod tests {
    use super::super::fake::dir as fake;
    use super::super::IoDeviceLimit;
    use super::*;

    /// Every limit set, and none is `memory.oom.group`: an OOM kills the
    /// biggest process, never the whole group (a user's other sessions go on).
    #[test]
    fn no_oom_group() {
        let all = Limits {
            memory_max: Some(1 << 30),
            memory_high: Some(900 << 20),
            swap_max: Some(0),
            cpu_max: Some((50_000, 100_000)),
            cpu_weight: Some(100),
            cpus: Some("0".into()),
            pids_max: Some(64),
            io: Vec::new(),
            io_weight: Some(100),
            devices: None,
        };
        let w = limit_writes(&all);
        assert!(w.iter().any(|(f, _)| *f == "memory.max"), "{w:?}");
        assert!(w.iter().all(|(f, _)| !f.contains("oom")), "{w:?}");
    }

    /// The limits read back: numbers, and `max` as none.
    #[test]
    fn applied_reads_back() {
        let t = tempfile::tempdir().unwrap();
        fake(
            t.path(),
            &[
                ("memory.max", "1073741824\n"),
                ("memory.high", "max\n"),
                ("pids.max", "40\n"),
                ("cpu.max", "20000 100000\n"),
            ],
        );
        let a = applied(t.path()).unwrap();
        assert_eq!(a.memory_max, Some(1 << 30));
        assert_eq!(a.memory_high, None);
        assert_eq!(a.pids_max, Some(40));
        assert_eq!(a.cpu_max, Some((20_000, 100_000)));
        fake(
            t.path(),
            &[("cpu.max", "max 100000\n"), ("pids.max", "max\n")],
        );
        let a = applied(t.path()).unwrap();
        assert_eq!((a.cpu_max, a.pids_max), (None, None));
    }

    const GROUP_FILES: &[(&str, &str)] = &[
        ("memory.max", "max"),
        ("memory.high", "max"),
        ("memory.swap.max", "max"),
        ("cpu.max", "max 100000"),
        ("cpu.weight", "100"),
        ("pids.max", "max"),
        ("io.max", ""),
        ("io.weight", "default 100"),
        ("cpuset.cpus", ""),
    ];

    /// Every limit lands in its v2 file with the kernel's syntax.
    #[test]
    fn writes_every_limit() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("g");
        fake(&g, GROUP_FILES);
        let limits = Limits {
            memory_max: Some(512 << 20),
            memory_high: Some(400 << 20),
            swap_max: Some(0),
            cpu_max: Some((50_000, 100_000)),
            cpu_weight: Some(200),
            cpus: Some("1,3".into()),
            pids_max: Some(64),
            io: vec![IoDeviceLimit {
                major: 8,
                minor: 0,
                read_bps: Some(1 << 20),
                write_bps: None,
                read_iops: None,
                write_iops: Some(100),
            }],
            io_weight: Some(50),
            devices: None,
        };
        write_limits(&g, &limits).unwrap();
        let r = |f: &str| std::fs::read_to_string(g.join(f)).unwrap();
        assert_eq!(r("memory.max"), "536870912");
        assert_eq!(r("memory.high"), "419430400");
        assert_eq!(r("memory.swap.max"), "0");
        assert_eq!(r("cpu.max"), "50000 100000");
        assert_eq!(r("cpu.weight"), "200");
        assert_eq!(r("pids.max"), "64");
        assert_eq!(r("io.max"), "8:0 rbps=1048576 wbps=max riops=max wiops=100");
        assert_eq!(r("io.weight"), "default 50");
        assert_eq!(r("cpuset.cpus"), "1,3");
        assert!(required(&limits).contains("cpuset"));
    }

    /// `None` limits leave their files alone.
    #[test]
    fn none_is_untouched() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("g");
        fake(&g, GROUP_FILES);
        write_limits(
            &g,
            &Limits {
                pids_max: Some(10),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(g.join("memory.max")).unwrap(),
            "max"
        );
        assert_eq!(std::fs::read_to_string(g.join("pids.max")).unwrap(), "10");
    }

    /// A swap limit without memory.swap.max (no swap accounting) is a missing controller naming the file.
    #[test]
    fn swap_without_accounting() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("g");
        fake(&g, &[("memory.max", "max")]);
        let e = write_limits(
            &g,
            &Limits {
                swap_max: Some(0),
                ..Limits::default()
            },
        )
        .unwrap_err();
        match e {
            CgroupError::MissingController { controller, detail } => {
                assert_eq!(controller, Controller::MemorySwap);
                assert!(controller.to_string().contains("swap"), "{controller}");
                assert!(detail.contains("memory.swap.max"), "{detail}");
            }
            e => panic!("{e:?}"),
        }
    }

    /// Under BFQ (no io.weight) the weight goes to io.bfq.weight, clamped to its 1..1000.
    #[test]
    fn bfq_weight() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("g");
        fake(&g, &[("io.bfq.weight", "default 100")]);
        write_limits(
            &g,
            &Limits {
                io_weight: Some(5000),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(g.join("io.bfq.weight")).unwrap(),
            "default 1000"
        );
    }

    /// Controllers are enabled in each ancestor that lacks them, never in the group; enabled ones are not rewritten.
    #[test]
    fn enables_down_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        fake(
            m,
            &[
                ("cgroup.controllers", "cpuset cpu io memory pids"),
                ("cgroup.subtree_control", ""),
            ],
        );
        // An ancestor that already passes memory and pids down (delegated).
        fake(
            &m.join("hutch"),
            &[
                ("cgroup.controllers", "cpu io memory pids"),
                ("cgroup.subtree_control", "memory pids"),
            ],
        );
        let group = m.join("hutch/users");
        // The kernel would give the new group these files; the fake tree makes them first.
        fake(
            &group,
            &[("cgroup.controllers", ""), ("cgroup.subtree_control", "")],
        );
        let req: BTreeSet<_> = ["memory", "pids"].into_iter().collect();
        let made = make_group(m, &group, &req).unwrap();
        assert!(made.is_empty(), "all existed");
        let r = |p: &Path| std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap();
        assert_eq!(r(m), "+cpu +io +memory +pids");
        assert_eq!(r(&m.join("hutch")), "+cpu +io");
        assert_eq!(r(&group), "", "the group itself is untouched");
    }

    /// The group passes memory (where it has it) and nothing else to its
    /// leaf, once: lxcfs needs the leaf's memory.stat; pids stays on the
    /// group, whose pids.events the keeper watches.
    #[test]
    fn passes_memory_alone_to_the_leaf() {
        let t = tempfile::tempdir().unwrap();
        let r = |p: &Path| std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap();
        let g = t.path().join("with");
        fake(
            &g,
            &[
                ("cgroup.controllers", "cpuset cpu io memory pids"),
                ("cgroup.subtree_control", ""),
            ],
        );
        pass_to_leaf(&g).unwrap();
        assert_eq!(r(&g), "+memory");
        // Already passed (the kernel lists it without the +): not rewritten.
        std::fs::write(g.join("cgroup.subtree_control"), "memory").unwrap();
        pass_to_leaf(&g).unwrap();
        assert_eq!(r(&g), "memory");
        let g = t.path().join("without");
        fake(
            &g,
            &[
                ("cgroup.controllers", "cpu pids"),
                ("cgroup.subtree_control", ""),
            ],
        );
        pass_to_leaf(&g).unwrap();
        assert_eq!(r(&g), "", "no memory controller: nothing to pass");
    }

    /// A required controller the ancestor does not have is refused before anything is made.
    #[test]
    fn missing_required_controller() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        fake(
            m,
            &[
                ("cgroup.controllers", "memory pids"),
                ("cgroup.subtree_control", "memory pids"),
            ],
        );
        let req: BTreeSet<_> = ["io"].into_iter().collect();
        let e = make_group(m, &m.join("g"), &req).unwrap_err();
        assert!(
            matches!(
                e,
                CgroupError::MissingController {
                    controller: Controller::Io,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!m.join("g").exists());
    }

    /// Counters come from memory.*, cpu.stat, pids.*, io.stat.
    #[test]
    fn reads_stats() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path();
        fake(
            g,
            &[
                ("memory.current", "1000\n"),
                ("memory.peak", "2000\n"),
                ("cpu.stat", "usage_usec 42\nuser_usec 40\nnr_throttled 3\nthrottled_usec 77\n"),
                ("pids.current", "5\n"),
                ("pids.events", "max 2\n"),
                ("memory.events", "low 0\nhigh 9\nmax 4\noom 1\noom_kill 1\n"),
                ("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=3 wios=4\n"),
            ],
        );
        let s = stats(g).unwrap();
        assert_eq!(s.memory_current, Some(1000));
        assert_eq!(s.memory_peak, Some(2000));
        assert_eq!(s.cpu_usage_us, Some(42));
        assert_eq!(s.pids_current, Some(5));
        assert_eq!(s.pids_limit_hits, Some(2));
        assert_eq!(s.oom_kills, Some(1));
        assert_eq!(s.memory_high_events, Some(9));
        assert_eq!(s.cpu_throttled_periods, Some(3));
        assert_eq!(s.cpu_throttled_us, Some(77));
        assert_eq!(
            (
                s.io_read_bytes,
                s.io_write_bytes,
                s.io_read_ops,
                s.io_write_ops
            ),
            (Some(11), Some(22), Some(4), Some(6))
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(stats(empty.path()).unwrap(), Stats::default());
    }
}
