//! bench: what the limit notices cost an idle container. A user logs in
//! over real SSH with a terminal and does nothing; the keeper is watched for
//! `SECS` seconds (CPU time from /proc/PID/schedstat, wakeups as context
//! switches from /proc/PID/status, resident memory):
//! - `events`: `memory` limited only: the kernel's OOM event is the only
//!   watch (an eventfd on v1, memory.events on v2): nothing wakes the keeper;
//! - `looks`: `memory`, `pids` and `cpu` limited: on v1 the pids counter
//!   and CPU throttling are looked at every 5 s while a session is open.
//!
//! It also times one look (the reads it does: pids.events, pids.current,
//! cpu.stat) on the container's own cgroup, in process.
//!
//! Run as root: `cargo run --release -p hutch-bench --bin notice_cost [SECS]`.

use std::time::{Duration, Instant};

use hutch_tests::{HutchEnv, Sftp};

/// The keeper's CPU time (ms, from schedstat: nanoseconds on a CPU),
/// context switches, and resident memory (KiB).
fn sample(pid: i32) -> anyhow::Result<(f64, u64, u64)> {
    let sched = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    let on_cpu_ns: u64 = sched
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let switches = field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:");
    Ok((on_cpu_ns as f64 / 1e6, switches, field("VmRSS:")))
}

struct Idle {
    cpu_ms: f64,
    wakeups: u64,
    rss_kib: u64,
    look_us: Option<f64>,
}

fn idle_keeper(policy: &str, secs: u64) -> anyhow::Result<Idle> {
    let hutch = HutchEnv::new(policy);
    let user = hutch.user();
    let mut env = hutch.sshd(Sftp::Internal);
    env.client_timeout = Duration::from_secs(secs + 120);
    let hold = env.ssh_pty(&user, &[]);
    anyhow::ensure!(
        hold.expect("$ ", Duration::from_secs(30)).is_some(),
        "no prompt: {}",
        hold.output()
    );
    let state = hutch
        .state(&user.name)
        .ok_or_else(|| anyhow::anyhow!("no state.json"))?;
    let keeper = state["keeper_pid"].as_i64().unwrap_or(0) as i32;
    // Let the login settle (the keeper's first look, state written).
    std::thread::sleep(Duration::from_secs(2));
    let (c0, s0, _) = sample(keeper)?;
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, s1, rss) = sample(keeper)?;

    // One look's reads, on the container's own cgroup.
    let root = hutch_runtime::cgroup::CgroupRoot::open(&hutch.cgroup_root)?;
    let cg = root
        .existing(&hutch_runtime::paths::user_cgroup(&user.name))
        .ok_or_else(|| anyhow::anyhow!("no cgroup"))?;
    let look_us = if policy.contains("pids") {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(cg.pids_refused()?);
            std::hint::black_box(cg.cpu_periods()?);
        }
        Some(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    } else {
        None
    };
    drop(hold);
    let _ = hutch.ctl(&["stop", &user.name]);
    hutch.wait_gone(&user.name, Duration::from_secs(20));
    Ok(Idle {
        cpu_ms: c1 - c0,
        wakeups: s1 - s0,
        rss_kib: rss,
        look_us,
    })
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("run as root");
    }
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    if std::env::var_os("HUTCH_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("HUTCH_BIN_DIR", dir);
        }
    }
    let linger = "on_logout = \"kill\"\n";
    let runs = [
        ("events", format!("[defaults]\nmemory = \"256M\"\n{linger}")),
        (
            "looks",
            format!("[defaults]\nmemory = \"256M\"\npids = 128\ncpu = \"1\"\n{linger}"),
        ),
    ];
    println!("an idle container with one terminal session, the keeper over {secs} s:");
    for (name, policy) in &runs {
        let r = idle_keeper(policy, secs)?;
        println!(
            "{name:>7}: keeper CPU {:.1} ms, {} wakeups ({:.1}/min), RSS {} KiB{}",
            r.cpu_ms,
            r.wakeups,
            r.wakeups as f64 * 60.0 / secs as f64,
            r.rss_kib,
            r.look_us
                .map(|u| format!(", one look {u:.1} us"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
