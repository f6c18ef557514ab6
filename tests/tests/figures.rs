//! The container's own figures over real SSH: in a `memory = "512M"`,
//! `cpu = "1"` container, `free -m` shows ~512 MiB and `nproc` 1 with a real
//! lxcfs (on a mount point of the test's own, `[host] lxcfs`), and without
//! one the CPU count still comes from the container's cpuset (`cpus`),
//! spread over the host's CPUs, while memory figures stay the host's.

use std::time::Duration;

use hutch_tests::hutch::trimmed;
use hutch_tests::*;

/// `free -m` total, `nproc`, cpuinfo processors, `getconf _NPROCESSORS_ONLN`,
/// /proc/uptime's first field, /proc/meminfo's MemTotal (kB), one a line.
const FIGURES: &str = "free -m | awk '/^Mem:/{print $2}'; nproc; grep -c ^processor /proc/cpuinfo; getconf _NPROCESSORS_ONLN; cut -d' ' -f1 /proc/uptime; awk '/^MemTotal:/{print $2}' /proc/meminfo";

struct Figures {
    free_mib: u64,
    nproc: u32,
    cpuinfo: u32,
    online: u32,
    uptime: f64,
    memtotal_kib: u64,
}

fn figures(env: &SshdEnv, user: &TestUser) -> Figures {
    let out = env.ssh(user, &[FIGURES]);
    let text = trimmed(&out);
    let v: Vec<&str> = text.lines().collect();
    assert_eq!(v.len(), 6, "{}", out.describe());
    let n = |i: usize| {
        v[i].trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{text}"))
    };
    Figures {
        free_mib: n(0),
        nproc: n(1) as u32,
        cpuinfo: n(2) as u32,
        online: n(3) as u32,
        uptime: v[4].parse().unwrap(),
        memtotal_kib: n(5),
    }
}

fn host_cpus() -> u32 {
    trimmed(&run_ok(&mut std::process::Command::new("nproc")))
        .parse()
        .unwrap()
}

fn host_uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn host_memtotal_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// With lxcfs: free -m ≈ 512, nproc/cpuinfo/getconf 1, the container's own
/// uptime; the lxcfs files are the ones bound over /proc inside, read-only.
#[test]
fn lxcfs_shows_the_containers_memory_cpus_and_uptime() {
    if !require_root("lxcfs_shows_the_containers_memory_cpus_and_uptime") {
        return;
    }
    let lxcfs = Lxcfs::start();
    let hutch = HutchEnv::new("[defaults]\nmemory = \"512M\"\ncpu = \"1\"\n");
    hutch.write_policy_with_host(
        &format!("lxcfs = \"{}\"\n", lxcfs.mount_point().display()),
        "[defaults]\nmemory = \"512M\"\ncpu = \"1\"\n",
    );
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let f = figures(&env, &user);
        eprintln!(
            "with lxcfs: free -m {} MiB, nproc {}, cpuinfo {}, online {}, uptime {} s (host {} s)",
            f.free_mib,
            f.nproc,
            f.cpuinfo,
            f.online,
            f.uptime,
            host_uptime()
        );
        assert!(
            (500..=512).contains(&f.free_mib),
            "free -m says {} MiB",
            f.free_mib
        );
        assert_eq!(f.memtotal_kib, 512 << 10);
        assert_eq!((f.nproc, f.cpuinfo, f.online), (1, 1, 1));
        assert!(
            f.uptime < 60.0 && f.uptime < host_uptime(),
            "uptime {}",
            f.uptime
        );
        let out = env.ssh(
            &user,
            &["awk '$5 == \"/proc/meminfo\" || $5 == \"/proc/uptime\" {print $5, $6, $(NF-2)}' /proc/self/mountinfo; echo x > /proc/meminfo 2>&1 | grep -c 'Read-only'"],
        );
        let text = trimmed(&out);
        assert!(
            text.contains("/proc/meminfo ro,") && text.contains("fuse.lxcfs"),
            "{}",
            out.describe()
        );
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    drop(lxcfs);
}

/// Without lxcfs (`lxcfs = "none"`, or a path where none is mounted) the
/// CPU count comes from the cpuset: nproc, cpuinfo and getconf say 1; two
/// such containers run on different CPUs; `cpus = "none"` shows the host's
/// CPUs; memory figures are the host's (the documented fallback).
#[test]
fn without_lxcfs_cpus_come_from_the_cpuset() {
    if !require_root("without_lxcfs_cpus_come_from_the_cpuset") {
        return;
    }
    let empty = TestDir::new("htnolxcfs");
    let policy = "[defaults]\nmemory = \"512M\"\ncpu = \"1\"\n";
    let hutch = HutchEnv::new(policy);
    let a = hutch.user();
    let b = hutch.user();
    let c = hutch.user();
    hutch.write_policy_with_host(
        "lxcfs = \"none\"\n",
        &format!("{policy}[users.{}]\ncpus = \"none\"\n", c.name),
    );
    let names = [a.name.clone(), b.name.clone(), c.name.clone()];
    let cpus = host_cpus();
    {
        let env = hutch.sshd(Sftp::Internal);
        // a holds its container while b logs in: b's CPU is another one.
        let mut hold = env.shell_pty(&a);
        let fa = figures(&env, &a);
        assert_eq!((fa.nproc, fa.cpuinfo, fa.online), (1, 1, 1));
        assert_eq!(
            fa.memtotal_kib,
            host_memtotal_kib(),
            "without lxcfs meminfo is the host's"
        );
        let cpuset = |user: &TestUser| {
            trimmed(&env.ssh(user, &["grep Cpus_allowed_list /proc/self/status"]))
        };
        let ca = cpuset(&a);
        let fb = figures(&env, &b);
        assert_eq!((fb.nproc, fb.cpuinfo, fb.online), (1, 1, 1));
        let mut hold_b = env.shell_pty(&b);
        let cb = cpuset(&b);
        eprintln!("a: {ca}; b: {cb}; host has {cpus} CPUs");
        if cpus >= 2 {
            assert_ne!(
                ca, cb,
                "two one-CPU containers share a CPU on a {cpus}-CPU host"
            );
        }
        hold.send("exit\n");
        hold_b.send("exit\n");
        let _ = hold.wait(Duration::from_secs(10));
        let _ = hold_b.wait(Duration::from_secs(10));

        // cpus = "none": every CPU, the quota alone limiting.
        let fc = figures(&env, &c);
        assert_eq!((fc.nproc, fc.cpuinfo), (cpus, cpus), "cpus = none");

        // A configured path where no lxcfs runs: the same fallback.
        hutch.write_policy_with_host(&format!("lxcfs = \"{}\"\n", empty.path().display()), policy);
        let fa = figures(&env, &a);
        assert_eq!((fa.nproc, fa.cpuinfo, fa.online), (1, 1, 1));
        assert_eq!(fa.memtotal_kib, host_memtotal_kib());
        for n in &names {
            assert!(hutch.wait_gone(n, Duration::from_secs(20)).is_empty());
        }
    }
    drop((a, b, c));
    for n in &names {
        assert_no_leftovers(n, Duration::from_secs(5));
    }
}
