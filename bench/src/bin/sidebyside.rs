//! sidebyside: hutch, LXC and a floor doing the same kernel work, measured
//! interleaved in one run on the same template (issue 15).
//!
//! Each round makes, joins and tears down one container of each, in turn:
//! - `floor` ([`hutch_bench::floor`]): the kernel work alone;
//! - `hutch`: `open_session` for a user without a container (keeper
//!   started through the real path, as pam_hutch does), three more sessions
//!   joining it, then the teardown after the last one closes (until the
//!   keeper has exited);
//! - `lxc` ([`hutch_bench::lxc`]): `lxc-start -d`, three `lxc-attach --
//!   /bin/true`, `lxc-stop -k`.
//!
//! It prints medians, p95 and the ratios to the floor, then the named
//! phases of hutch's cold start (the keeper's and the init's start marks,
//! `hutch_runtime::timing`, against the bench's own clock), so each
//! millisecond has a name. `--idle N[,N...]` then holds N idle containers
//! of each kind in turn and prints what one costs: memcg usage with kmem of
//! everything the tool keeps for it (container cgroup; hutch's keepers
//! group, LXC's monitor group), PSS of its processes, and the kernel's
//! Slab, PageTables, KernelStack, Percpu, Shmem and MemAvailable deltas.
//!
//! All three use veth networking onto bridges inside a network namespace
//! the bench makes for itself first (with a private mount namespace):
//! nothing reaches the host's network or its mount table.
//! Everything it makes is removed at the end (also on failure) and checked
//! with `hutch_tests::leftovers`.
//!
//! Run as root, after `cargo build --release --workspace`:
//! `target/release/sidebyside [--rounds N] [--idle 100,1000] [--no-lxc]`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hutch_bench::floor::{Floor, FloorContainer};
use hutch_bench::lxc::{self, Lxc};
use hutch_bench::{
    kb_field, loadavg, median, open_in_child, open_in_child_marked, percentile, MemInfo,
};
use hutch_runtime::join::{open_session, JoinOptions, Outcome, SessionInfo};
use hutch_runtime::net::netlink::Netlink;
use hutch_runtime::sys::{self, Forked};
use hutch_runtime::timing::now_ns;
use hutch_tests::{HutchEnv, TestUser};

const MEMORY: u64 = 1 << 30;
const PIDS: u64 = 512;
const JOINS: usize = 3;

struct Args {
    rounds: usize,
    idle: Vec<usize>,
    lxc: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 15,
        idle: Vec::new(),
        lxc: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--idle" => {
                a.idle = it
                    .next()
                    .context("--idle N[,N]")?
                    .split(',')
                    .map(|n| n.parse())
                    .collect::<Result<_, _>>()?
            }
            "--no-lxc" => a.lxc = false,
            _ => anyhow::bail!("usage: sidebyside [--rounds N] [--idle N[,N...]] [--no-lxc]"),
        }
    }
    Ok(a)
}

/// Moves this process into a network namespace and a private mount
/// namespace of its own, before any thread or keeper exists: every bridge
/// and veth of the run is made there, and every mount (the template hutch
/// loads, LXC's and the floor's roots) stays there. /sys is a sysfs of the
/// new network namespace (LXC looks for its bridge in /sys/class/net), the
/// cgroup mounts moved onto it from the old one.
fn private_namespaces() -> anyhow::Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::CloneFlags;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)?;
    hutch_runtime::rootfs::make_root_private()?;
    let keep = PathBuf::from(format!("/tmp/.sidebyside-cgroup-{}", std::process::id()));
    std::fs::create_dir(&keep)?;
    let none = None::<&str>;
    let r = (|| -> anyhow::Result<()> {
        mount(
            Some("/sys/fs/cgroup"),
            &keep,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .context("binding /sys/fs/cgroup aside")?;
        mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none,
        )
        .context("mounting the new network namespace's sysfs")?;
        mount(Some(&keep), "/sys/fs/cgroup", none, MsFlags::MS_MOVE, none)
            .context("moving the cgroup mounts back under /sys")?;
        Ok(())
    })();
    let _ = std::fs::remove_dir(&keep);
    r?;
    let mut nl = Netlink::open()?;
    let lo = nl.link_index("lo")?.ok_or_else(|| anyhow!("no lo"))?;
    nl.set_up(lo)?;
    Ok(())
}

fn bridge(name: &str) -> anyhow::Result<()> {
    let mut nl = Netlink::open()?;
    if nl.link_index(name)?.is_none() {
        nl.add_bridge(name)?;
    }
    let b = nl
        .link_index(name)?
        .ok_or_else(|| anyhow!("no bridge {name}"))?;
    nl.set_up(b)?;
    Ok(())
}

/// One cold hutch session held open by a forked child until `close` is
/// sent: (t0, t1) on CLOCK_MONOTONIC around its open_session.
struct Held {
    pid: nix::unistd::Pid,
    go: Option<OwnedFd>,
    t0: u64,
    t1: u64,
    /// pam_hutch's own marks (`pam_*`).
    marks: Vec<(String, u64)>,
}

fn hold(opts: &JoinOptions, user: &str) -> anyhow::Result<Held> {
    let (r, w) = nix::unistd::pipe()?;
    let (go_r, go_w) = nix::unistd::pipe()?;
    match sys::fork()? {
        Forked::Child => {
            drop(r);
            drop(go_w);
            let mut w = std::fs::File::from(w);
            let info = SessionInfo {
                service: "bench".into(),
                tty: None,
                rhost: None,
            };
            let _ = hutch_runtime::timing::take();
            let t0 = now_ns();
            match open_session(opts, user, &info) {
                Ok(Outcome::Joined(s)) => {
                    let t1 = now_ns();
                    let marks = hutch_runtime::timing::encode(&hutch_runtime::timing::take());
                    let _ = write!(w, "{t0} {t1} {marks}");
                    drop(w);
                    let mut b = [0u8; 1];
                    let _ = std::fs::File::from(go_r).read(&mut b);
                    s.close();
                }
                Ok(other) => {
                    let _ = write!(w, "ERR not joined: {other:?}");
                }
                Err(e) => {
                    let _ = write!(w, "ERR {}", hutch_runtime::error::chain(&e));
                }
            }
            sys::exit_now(0)
        }
        Forked::Parent(pid) => {
            drop(w);
            drop(go_r);
            let mut s = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut s);
            let mut f = s.split(' ');
            match (f.next().map(str::parse), f.next().map(str::parse)) {
                (Some(Ok(t0)), Some(Ok(t1))) => Ok(Held {
                    pid,
                    go: Some(go_w),
                    t0,
                    t1,
                    marks: hutch_runtime::timing::decode(f.next().unwrap_or("")),
                }),
                _ => {
                    let _ = nix::sys::wait::waitpid(pid, None);
                    Err(anyhow!("hutch cold open: {s}"))
                }
            }
        }
    }
}

impl Held {
    fn close(mut self) {
        drop(self.go.take());
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Waits until `fd` (a pidfd) is readable: the process exited.
fn wait_pidfd(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)), Ok(n) if n > 0)
}

#[derive(Default)]
struct Times {
    create: Vec<f64>,
    join: Vec<f64>,
    teardown: Vec<f64>,
}

/// The durations between consecutive marks of one cold start, by name:
/// `t0` (the bench before open_session), the keeper's and init's marks,
/// `t1` (open_session returned).
fn phases(t0: u64, marks: &[(String, u64)], t1: u64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut prev = t0;
    let mut all: Vec<(String, u64)> = marks.to_vec();
    // The init's marks interleave with the keeper's: in the order they happened.
    all.sort_by_key(|m| m.1);
    all.push(("open_session returned".into(), t1));
    for (name, t) in all {
        let label = match name.as_str() {
            "exec" => "exec (keeper's main)".to_string(),
            n => n.to_string(),
        };
        out.push((label, (t as f64 - prev as f64) / 1e6));
        prev = t;
    }
    out
}

/// Median, p95 and minimum (the least disturbed run on a busy machine).
fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (median(v), percentile(v, 95.0), percentile(v, 0.0))
}

/// Proportional set size of a process.
fn pss(pid: u32) -> u64 {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0)
}

fn ppid(pid: u32) -> Option<u32> {
    hutch_tests::proc::ppid(pid as i32).map(|p| p as u32)
}

fn mounts(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// What the bench made and must remove, also on failure (Drop).
struct Made<'a> {
    floor: Option<&'a Floor>,
    floors: Vec<FloorContainer>,
    lxc: Option<&'a Lxc>,
    lxcs: Vec<usize>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.floor {
            for c in self.floors.drain(..) {
                let _ = f.destroy(c);
            }
            f.cleanup();
        }
        if let Some(l) = self.lxc {
            for i in self.lxcs.drain(..) {
                let _ = l.stop(i);
                let _ = l.remove(i);
            }
            lxc::remove_pivot();
        }
    }
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "run as root");
    private_namespaces()?;
    let a = args()?;
    // The floor holds six namespace descriptors a container: 1,000 idle
    // ones need more than the usual soft limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    if std::env::var_os("HUTCH_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("HUTCH_BIN_DIR", dir);
        }
    }
    let use_lxc = a.lxc && lxc::available();
    if a.lxc && !use_lxc {
        eprintln!("sidebyside: LXC is not installed (scripts/deps.sh installs it): without LXC");
    }
    let base =
        "[defaults]\nhostname = \"sbs-{user}\"\nmemory = \"1G\"\npids = 512\nnetwork = \"veth\"\n";
    let hutch = HutchEnv::new(base);
    let tag = hutch.cgroup_root.clone();
    let leases = hutch.dir.join("leases");
    let policy = |extra: &str| {
        format!(
            "[host.net]\nleases = \"{}\"\nbridge = \"sbshut0\"\n\n{base}{extra}",
            leases.display()
        )
    };
    hutch.write_policy(&policy(""));
    let r = run(&a, use_lxc, &hutch, &policy);
    drop(hutch);
    let left = hutch_tests::leftovers(&tag);
    if !left.is_empty() {
        eprintln!("left behind:\n{}", left.join("\n"));
    }
    r?;
    anyhow::ensure!(left.is_empty(), "the bench left things behind (above)");
    println!("cleanup: nothing left (hutch_tests::leftovers {tag})");
    Ok(())
}

fn run(
    a: &Args,
    use_lxc: bool,
    hutch: &HutchEnv,
    policy: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    let user = hutch.user();
    // A PAM host has looked the user up before it opens the session (sshd's
    // monitor at authentication): NSS modules are loaded in the processes
    // the bench forks to open sessions, as they are in sshd.
    let _ = hutch_runtime::account::lookup(&user.name);
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };
    // Warm-up: the template loaded, the bridge made; what a hutch container
    // is made of, for the floor to make the same.
    let held = hold(&opts, &user.name)?;
    let st = hutch
        .state(&user.name)
        .ok_or_else(|| anyhow!("no state.json after a cold open"))?;
    let groups: Vec<PathBuf> = st["cgroups"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|p| p.as_str().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default();
    let hutch_init = st["init_pid"].as_u64().unwrap_or(0) as u32;
    let hutch_mounts = mounts(hutch_init);
    held.close();
    let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
    anyhow::ensure!(left.is_empty(), "hutch warm-up not torn down: {left:?}");

    let store = hutch_runtime::template::TemplateStore::new(&hutch.lib_dir, &hutch.run_dir);
    let lower = store
        .current(hutch_tests::E2E_TEMPLATE)?
        .map(|l| l.path)
        .ok_or_else(|| anyhow!("the e2e template is not loaded"))?;
    let devices: Vec<String> = hutch_runtime::keeper::container_devices()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let floor = Floor::new(
        &lower,
        &hutch.dir.join("floor"),
        &groups,
        "sbsflr0",
        user.uid,
        user.gid,
        MEMORY,
        PIDS,
        devices.clone(),
        Some(hutch_policy::DEFAULT_CONNTRACK),
    )?;
    bridge("sbslxc0")?;
    let lxc = Lxc::new(
        hutch.dir.path(),
        &lower,
        "sbslxc0",
        &hutch.cgroup_root,
        user.uid,
        user.gid,
        MEMORY,
        PIDS,
        devices,
    )?;
    let mut made = Made {
        floor: Some(&floor),
        floors: Vec::new(),
        lxc: use_lxc.then_some(&lxc),
        lxcs: Vec::new(),
    };

    let mut t: BTreeMap<&str, Times> = BTreeMap::new();
    let mut breakdown: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut join_breakdown: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut join_order: Vec<String> = Vec::new();
    let (mut floor_mounts, mut lxc_mounts) = (0, 0);
    let mut floor_nft: Vec<f64> = Vec::new();
    let load0 = loadavg();
    let started = Instant::now();
    for round in 0..=a.rounds {
        let keep = round > 0;
        // floor
        floor.warm_migrations()?;
        let t0 = Instant::now();
        let c = floor.create(0)?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if keep {
            floor_nft.push(c.nft_ms);
        }
        made.floors.push(c);
        let c = made.floors.last().unwrap();
        floor_mounts = mounts(c.init.as_raw() as u32);
        let mut joins = Vec::new();
        for _ in 0..JOINS {
            joins.push(floor.join(c)?);
        }
        let c = made.floors.pop().unwrap();
        let t0 = Instant::now();
        floor.destroy(c)?;
        let td = t0.elapsed().as_secs_f64() * 1000.0;
        if keep {
            let e = t.entry("floor").or_default();
            e.create.push(ms);
            e.join.extend(joins);
            e.teardown.push(td);
        }

        // hutch
        floor.warm_migrations()?;
        let held = hold(&opts, &user.name)?;
        let (t0n, t1n) = (held.t0, held.t1);
        let pam_marks = held.marks.clone();
        let create = (t1n - t0n) as f64 / 1e6;
        let st = hutch_tests::wait_until(Duration::from_secs(10), || {
            hutch.state(&user.name).filter(|s| {
                s["start_marks"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x[0] == "open_sent"))
            })
        })
        .ok_or_else(|| anyhow!("no start marks in state.json"))?;
        let mut marks: Vec<(String, u64)> = serde_json::from_value(st["start_marks"].clone())?;
        marks.extend(pam_marks);
        let keeper_pid = st["keeper_pid"].as_i64().unwrap_or(0) as i32;
        let mut joins = Vec::new();
        for _ in 0..JOINS {
            let (ms, [j0, j1], m) =
                open_in_child_marked(&opts, &user.name).map_err(anyhow::Error::msg)?;
            joins.push(ms);
            if keep {
                for (name, ms) in phases(j0, &m, j1) {
                    if !join_order.contains(&name) {
                        join_order.push(name.clone());
                    }
                    join_breakdown.entry(name).or_default().push(ms);
                }
            }
        }
        let pidfd = sys::pidfd_open(nix::unistd::Pid::from_raw(keeper_pid))?;
        let t0 = Instant::now();
        held.close();
        anyhow::ensure!(
            wait_pidfd(&pidfd, Duration::from_secs(30)),
            "hutch keeper did not exit"
        );
        let td = t0.elapsed().as_secs_f64() * 1000.0;
        let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
        anyhow::ensure!(left.is_empty(), "hutch container not torn down: {left:?}");
        if keep {
            let e = t.entry("hutch").or_default();
            e.create.push(create);
            e.join.extend(joins);
            e.teardown.push(td);
            for (name, ms) in phases(t0n, &marks, t1n) {
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                breakdown.entry(name).or_default().push(ms);
            }
        }

        // lxc
        if use_lxc {
            lxc.prepare(0)?;
            made.lxcs.push(0);
            floor.warm_migrations()?;
            let ms = lxc.start(0)?;
            if let Some(p) = lxc.init_pid(0) {
                lxc_mounts = mounts(p);
            }
            let mut joins = Vec::new();
            for _ in 0..JOINS {
                joins.push(lxc.attach(0)?);
            }
            let td = lxc.stop(0)?;
            made.lxcs.clear();
            lxc.remove(0)?;
            if keep {
                let e = t.entry("lxc").or_default();
                e.create.push(ms);
                e.join.extend(joins);
                e.teardown.push(td);
            }
        }
    }
    let load1 = loadavg();
    println!(
        "sidebyside: {} rounds interleaved (floor, hutch, lxc), {JOINS} joins each, in {:.0} s; load average {load0} at the start, {load1} at the end; debug={}",
        a.rounds,
        started.elapsed().as_secs_f64(),
        cfg!(debug_assertions)
    );
    println!("mounts per container: floor {floor_mounts}, hutch {hutch_mounts}, lxc {lxc_mounts}");
    println!(
        "cgroup hierarchies: {} (hutch's: {})",
        groups.len(),
        groups
            .iter()
            .map(|g| g
                .components()
                .nth(4)
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!(
        "{:<8} {:>24} {:>24} {:>24}",
        "ms", "create med/p95/min", "join med/p95/min", "teardown med/p95/min"
    );
    let mut meds: BTreeMap<&str, [f64; 3]> = BTreeMap::new();
    for name in ["floor", "hutch", "lxc"] {
        let Some(e) = t.get_mut(name) else { continue };
        let c = stats(&mut e.create);
        let j = stats(&mut e.join);
        let d = stats(&mut e.teardown);
        meds.insert(name, [c.0, j.0, d.0]);
        println!(
            "{name:<8} {:>8.2}/{:>7.2}/{:>7.2} {:>8.2}/{:>7.2}/{:>7.2} {:>8.2}/{:>7.2}/{:>7.2}",
            c.0, c.1, c.2, j.0, j.1, j.2, d.0, d.1, d.2
        );
    }
    if let Some(f) = meds.get("floor").copied() {
        for name in ["hutch", "lxc"] {
            if let Some(m) = meds.get(name) {
                println!(
                    "{:<8} {:>24} {:>24} {:>24}",
                    format!("{name}/fl"),
                    format!("{:.2}x", m[0] / f[0]),
                    format!("{:.2}x", m[1] / f[1]),
                    format!("{:.2}x", m[2] / f[2])
                );
            }
        }
    }
    if let (Some(h), Some(l)) = (meds.get("hutch"), meds.get("lxc")) {
        println!(
            "{:<8} {:>24} {:>24} {:>24}",
            "lxc/hut",
            format!("{:.2}x", l[0] / h[0]),
            format!("{:.2}x", l[1] / h[1]),
            format!("{:.2}x", l[2] / h[2])
        );
    }
    println!();
    println!(
        "hutch cold start, phase by phase (medians of {} runs; each ends at its mark):",
        a.rounds
    );
    let mut sum = 0.0;
    for name in &order {
        let v = breakdown.get_mut(name).unwrap();
        let m = median(v);
        sum += m;
        println!("  {name:<44} {m:8.3} ms");
    }
    println!("  {:<44} {sum:8.3} ms (sum of medians)", "total");
    println!(
        "  (the floor's `nft` phase, the same tables through the same encoder: {:.3} ms)",
        median(&mut floor_nft)
    );
    println!();
    println!(
        "hutch warm join, phase by phase (medians of {} runs):",
        a.rounds * JOINS
    );
    let mut sum = 0.0;
    for name in &join_order {
        let v = join_breakdown.get_mut(name).unwrap();
        let m = median(v);
        sum += m;
        println!("  {name:<44} {m:8.3} ms");
    }
    println!("  {:<44} {sum:8.3} ms (sum of medians)", "total");

    for &n in &a.idle {
        idle(
            n,
            hutch,
            policy,
            &opts,
            &floor,
            use_lxc.then_some(&lxc),
            &mut made,
        )?;
    }
    drop(made);
    drop(user);
    Ok(())
}

/// The bench in a memory cgroup of its own below hutch's cgroup root while
/// it holds idle containers, so that the root's usage (hierarchical, with
/// kmem) holds all that any of the three makes: hutch's keepers and users
/// groups, the floor's groups and the kernel objects the bench makes for
/// it, LXC's processes and groups (below the bench's, `lxc.cgroup.relative`).
/// Dropped, it moves the bench back and removes its group.
struct MemGroup {
    root: PathBuf,
    bench: PathBuf,
    back: PathBuf,
}

impl MemGroup {
    fn enter(root: PathBuf) -> anyhow::Result<MemGroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .ok_or_else(|| anyhow!("no memory cgroup in /proc/self/cgroup"))?;
        let back = PathBuf::from("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'));
        let bench = root.join("bench");
        if !bench.exists() {
            std::fs::create_dir(&bench)?;
        }
        let g = MemGroup { root, bench, back };
        std::fs::write(g.bench.join("cgroup.procs"), std::process::id().to_string())?;
        Ok(g)
    }

    /// The root's (usage, kmem).
    fn usage(&self) -> (u64, u64) {
        hutch_bench::memcg_of(std::slice::from_ref(&self.root))
    }
}

impl Drop for MemGroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.back.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for _ in 0..250 {
            // What LXC's monitors leave below it (lxc.pivot) first.
            if let Ok(rd) = std::fs::read_dir(&self.bench) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            if std::fs::remove_dir(&self.bench).is_ok() || !self.bench.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One row of the idle table: what `n` containers cost together.
struct IdleRow {
    memcg: u64,
    kmem: u64,
    pss: u64,
    before: MemInfo,
    after: MemInfo,
}

fn print_idle(name: &str, n: usize, r: &IdleRow) {
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64 / 1024.0;
    let (b, a) = (&r.before, &r.after);
    println!(
        "{name:<6} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0}",
        r.memcg as f64 / n as f64 / 1024.0,
        r.kmem as f64 / n as f64 / 1024.0,
        r.pss as f64 / n as f64 / 1024.0,
        per(b.slab, a.slab),
        per(b.page_tables, a.page_tables),
        per(b.kernel_stack, a.kernel_stack),
        per(b.percpu, a.percpu),
        per(b.shmem, a.shmem),
        -per(b.available, a.available),
    );
}

fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

/// Holds `n` idle containers of each kind in turn (floor, hutch, LXC) and
/// prints what one costs.
fn idle(
    n: usize,
    hutch: &HutchEnv,
    policy: &dyn Fn(&str) -> String,
    opts: &JoinOptions,
    floor: &Floor,
    lxc: Option<&Lxc>,
    made: &mut Made<'_>,
) -> anyhow::Result<()> {
    println!();
    println!(
        "idle containers, N = {n} of each kind in turn; KiB per container (load {}):",
        loadavg()
    );
    println!(
        "{:<6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "", "memcg", "of:kmem", "PSS", "Slab", "PageTbl", "KStack", "Percpu", "Shmem", "MemAvail-"
    );
    let root = hutch
        .cgroup_dirs()
        .into_iter()
        .find(|d| d.join("memory.usage_in_bytes").exists())
        .ok_or_else(|| anyhow!("no memory cgroup root"))?;
    let mem = MemGroup::enter(root)?;
    // floor
    settle();
    let before = MemInfo::now();
    let u0 = mem.usage();
    for i in 0..n {
        made.floors.push(floor.create(i)?);
    }
    settle();
    let after = MemInfo::now();
    let u1 = mem.usage();
    let (memcg, kmem) = (u1.0.saturating_sub(u0.0), u1.1.saturating_sub(u0.1));
    let mut pss_sum = 0;
    for c in &made.floors {
        pss_sum += pss(c.init.as_raw() as u32);
    }
    for c in made.floors.drain(..) {
        floor.destroy(c)?;
    }
    print_idle(
        "floor",
        n,
        &IdleRow {
            memcg,
            kmem,
            pss: pss_sum,
            before,
            after,
        },
    );

    // hutch: every container made by a real session, which then closes: the
    // container lingers, idle, with its keeper and init.
    hutch.write_policy(&policy("linger = \"30m\"\n"));
    let users: Vec<TestUser> = (0..n).map(|_| hutch.user()).collect();
    let r = (|| -> anyhow::Result<IdleRow> {
        settle();
        let before = MemInfo::now();
        let u0 = mem.usage();
        for u in &users {
            open_in_child(opts, &u.name).map_err(anyhow::Error::msg)?;
        }
        settle();
        let after = MemInfo::now();
        let u1 = mem.usage();
        let (memcg, kmem) = (u1.0.saturating_sub(u0.0), u1.1.saturating_sub(u0.1));
        let mut pss_sum = 0;
        for u in &users {
            let st = hutch
                .state(&u.name)
                .ok_or_else(|| anyhow!("{}: no container", u.name))?;
            pss_sum += pss(st["init_pid"].as_u64().unwrap_or(0) as u32)
                + pss(st["keeper_pid"].as_u64().unwrap_or(0) as u32);
        }
        Ok(IdleRow {
            memcg,
            kmem,
            pss: pss_sum,
            before,
            after,
        })
    })();
    for u in &users {
        let _ = hutch.ctl(&["stop", &u.name]);
    }
    for u in &users {
        let left = hutch.wait_gone(&u.name, Duration::from_secs(60));
        anyhow::ensure!(left.is_empty(), "{}: not torn down: {left:?}", u.name);
    }
    hutch.write_policy(&policy(""));
    drop(users);
    print_idle("hutch", n, &r?);

    // LXC
    if let Some(l) = lxc {
        for i in 0..n {
            l.prepare(i)?;
        }
        settle();
        let before = MemInfo::now();
        let u0 = mem.usage();
        for i in 0..n {
            made.lxcs.push(i);
            l.start(i)?;
        }
        settle();
        let after = MemInfo::now();
        let u1 = mem.usage();
        let (memcg, kmem) = (u1.0.saturating_sub(u0.0), u1.1.saturating_sub(u0.1));
        let mut pss_sum = 0;
        for i in 0..n {
            if let Some(p) = l.init_pid(i) {
                pss_sum += pss(p) + ppid(p).map(pss).unwrap_or(0);
            }
        }
        for i in made.lxcs.drain(..) {
            l.stop(i)?;
            l.remove(i)?;
        }
        lxc::remove_pivot();
        print_idle(
            "lxc",
            n,
            &IdleRow {
                memcg,
                kmem,
                pss: pss_sum,
                before,
                after,
            },
        );
    }
    drop(mem);
    println!(
        "  memcg: growth of the memory cgroup holding everything of the run (hutch's keepers and"
    );
    println!("  users groups, the floor's groups, the bench and so LXC's groups, kmem included);");
    println!(
        "  PSS: the init and its keeper/monitor; other columns: /proc/meminfo deltas, machine-wide"
    );
    println!("  (other work on the machine shows there too); MemAvail-: MemAvailable's fall");
    Ok(())
}
