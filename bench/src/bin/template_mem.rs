//! template_mem: what one more container costs in RAM when all share one
//! template. Loads the e2e template (`hutchctl template load`), starts N
//! containers on it the way a login does (`hutch-keeper --config CFG USER`,
//! throwaway users), and prints the machine's Shmem (/proc/meminfo) growth:
//! the template once, then per container. Root only; everything it makes
//! (users, cgroups, mounts: one private mount namespace) is gone at exit.
//!
//! `template_mem [N]` (default 50). Build the workspace first: it runs the
//! hutch binaries next to this one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hutch_tests::{output, wait_until, Bins, HutchEnv, OutputExt, TestUser, E2E_TEMPLATE};

const MIB: f64 = 1024.0 * 1024.0;

/// A `Key:  N kB` line of a /proc file, in bytes.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn shmem() -> u64 {
    kb_field("/proc/meminfo", "Shmem:").expect("Shmem in /proc/meminfo")
}

fn mem_available() -> u64 {
    kb_field("/proc/meminfo", "MemAvailable:").expect("MemAvailable in /proc/meminfo")
}

/// Proportional set size of a process (its share of shared pages).
fn pss(pid: u32) -> u64 {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0)
}

/// A private mount namespace held by a `sleep`; killed (by pid) on drop.
struct MountNs(Child);

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_ns(ns: &MountNs, program: &std::path::Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--mount=/proc/{}/ns/mnt", ns.0.id()))
        .arg("--")
        .arg(program);
    cmd
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50);
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "template_mem must run as root"
    );
    let hutch = HutchEnv::new("[defaults]\nmemory = \"1G\"\npids = 512\nlinger = \"10m\"\n");
    // The hutch binaries built with this one (HUTCH_BIN_DIR wins).
    let bins = match (
        std::env::var_os("HUTCH_BIN_DIR"),
        std::env::current_exe()?.parent(),
    ) {
        (None, Some(dir)) if dir.join("hutchctl").exists() => Bins::in_dir(dir.to_path_buf()),
        _ => hutch.bins.clone(),
    };
    let users: Vec<TestUser> = (0..n).map(|_| hutch.user()).collect();
    let ns = MountNs(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(200));
    let store = hutch_runtime::template::TemplateStore::new(&hutch.lib_dir, &hutch.run_dir);
    let template = store
        .list()?
        .into_iter()
        .find(|t| t.name == E2E_TEMPLATE)
        .and_then(|t| t.bytes)
        .unwrap_or(0);

    let s0 = shmem();
    let t = Instant::now();
    let out = output(
        in_ns(&ns, &bins.ctl)
            .arg("--config")
            .arg(&hutch.config)
            .args(["template", "load", E2E_TEMPLATE]),
    );
    anyhow::ensure!(
        out.status.success(),
        "template load failed:\n{}",
        out.describe()
    );
    let load = t.elapsed();
    let s1 = shmem();
    let a1 = mem_available();

    let t = Instant::now();
    let mut keepers = Vec::new();
    for u in &users {
        keepers.push(
            in_ns(&ns, &bins.keeper)
                .arg("--config")
                .arg(&hutch.config)
                .arg(&u.name)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    for u in &users {
        anyhow::ensure!(
            wait_until(Duration::from_secs(60), || hutch.state(&u.name)).is_some(),
            "the container of {} did not come up",
            u.name
        );
    }
    let up = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let s2 = shmem();
    let a2 = mem_available();
    // The processes of each container: its keeper (outside) and its init.
    let (mut keeper_pss, mut init_pss) = (0u64, 0u64);
    for (k, u) in keepers.iter().zip(&users) {
        keeper_pss += pss(k.id());
        if let Some(init) = hutch.state(&u.name).and_then(|st| st["init_pid"].as_u64()) {
            init_pss += pss(init as u32);
        }
    }

    for u in &users {
        let _ = output(
            in_ns(&ns, &bins.ctl)
                .arg("--config")
                .arg(&hutch.config)
                .args(["stop", &u.name]),
        );
    }
    for u in &users {
        let _ = hutch.wait_gone(&u.name, Duration::from_secs(30));
    }
    for mut k in keepers {
        let _ = k.wait();
    }
    drop(ns);
    // Everything this run made (users, cgroups, mounts) goes now, and is
    // checked gone: a bench that leaves a cgroup tree behind is a bug.
    let tag = hutch.cgroup_root.clone();
    drop(users);
    drop(hutch);
    let left = hutch_tests::leftovers(&tag);
    anyhow::ensure!(left.is_empty(), "left behind:\n{}", left.join("\n"));

    let per = s2.saturating_sub(s1) as f64 / n as f64;
    println!(
        "template            {:>10.1} MiB (tmpfs size of the tree)",
        template as f64 / MIB
    );
    println!(
        "load                {:>10.2} s, Shmem +{:.1} MiB",
        load.as_secs_f64(),
        s1.saturating_sub(s0) as f64 / MIB
    );
    println!("{n} containers up    {:>10.2} s", up.as_secs_f64());
    println!(
        "Shmem, all          {:>10.1} MiB",
        s2.saturating_sub(s0) as f64 / MIB
    );
    println!("Shmem per container {:>10.1} KiB", per / 1024.0);
    println!(
        "PSS per container   {:>10.1} KiB (keeper {:.1} + init {:.1})",
        (keeper_pss + init_pss) as f64 / n as f64 / 1024.0,
        keeper_pss as f64 / n as f64 / 1024.0,
        init_pss as f64 / n as f64 / 1024.0
    );
    println!(
        "MemAvailable drop   {:>10.1} KiB per container (all of it: processes, kernel, Shmem; noisy)",
        a1.saturating_sub(a2) as f64 / n as f64 / 1024.0
    );
    Ok(())
}
