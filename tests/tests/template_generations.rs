//! Templates end to end: a generation upgrade with a user logged in over
//! real SSH, per-user templates from the policy, the template's RAM charged
//! to hutch's own cgroup, and 50 containers sharing one copy in RAM.
//!
//! The sshd of [`SshdEnv`] runs in a private mount namespace, and so do the
//! keepers it starts: hutchctl runs there too (`nsenter --mount`), as it
//! would on a real host where there is one namespace. Everything mounted
//! goes away with that namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";
const MIB: u64 = 1024 * 1024;

/// Tests that load templates measure machine-wide figures: one at a time.
static RAM: Mutex<()> = Mutex::new(());

fn ram_lock() -> std::sync::MutexGuard<'static, ()> {
    RAM.lock().unwrap_or_else(|e| e.into_inner())
}

/// hutchctl with `hutch`'s policy, in the mount namespace of `pid`.
fn ctl_in(hutch: &HutchEnv, pid: i32, args: &[&str]) -> Output {
    output(
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("--")
            .arg(&hutch.bins.ctl)
            .arg("--config")
            .arg(&hutch.config)
            .args(args),
    )
}

/// The mount points in the mount namespace of `pid`.
fn mounts_of(pid: i32) -> Vec<PathBuf> {
    hutch_runtime::mountinfo::read(Path::new(&format!("/proc/{pid}/mountinfo")))
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// The overlay lowerdir of the container whose init is `pid`.
fn lowerdir_of(init: i64) -> String {
    let text = std::fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap_or_default();
    text.split([',', ' '])
        .find_map(|o| o.strip_prefix("lowerdir="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no overlay lowerdir in the mounts of {init}:\n{text}"))
}

fn state_u64(hutch: &HutchEnv, user: &str, key: &str) -> u64 {
    let st = hutch
        .state(user)
        .unwrap_or_else(|| panic!("no state.json for {user}"));
    st[key]
        .as_u64()
        .unwrap_or_else(|| panic!("state.json of {user}: no {key}: {st}"))
}

/// `key` of memory.stat in the memory hierarchy of a group (v1 `total_*`
/// when present, which counts the subtree like v2 does).
fn memory_stat(dirs: &[PathBuf], key: &str) -> Option<u64> {
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("memory.stat")) else {
            continue;
        };
        let get = |k: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(k)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
        };
        if let Some(v) = get(&format!("total_{key}")).or_else(|| get(key)) {
            return Some(v);
        }
    }
    None
}

fn meminfo_shmem() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Shmem:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Shmem in /proc/meminfo");
    kb * 1024
}

/// The shared lib dir with a second template, `e2e-alt` (a copy of `e2e`),
/// built once per machine.
fn alt_lib_dir() -> PathBuf {
    let lib = hutch_tests::hutch::e2e_lib_dir();
    let store = hutch_runtime::template::TemplateStore::new(&lib, Path::new("/run/hutch-unused"));
    let done = store.template_dir("e2e-alt").join("bin/bash");
    if !done.exists() {
        let lockf = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lib.join(".e2e-alt.lock"))
            .unwrap();
        lockf.lock().unwrap();
        if !done.exists() {
            store
                .build_from_dir("e2e-alt", &store.template_dir(E2E_TEMPLATE))
                .expect("building e2e-alt");
        }
    }
    lib
}

/// A user logged in on generation 1 keeps working while generation 2 loads
/// (`hutchctl template update`, rebuilt from the recorded source); a new
/// login gets generation 2; `template list` shows who runs on which;
/// generation 1 is unmounted once its last user logs out, generation 2 stays.
#[test]
fn upgrade_with_a_user_logged_in() {
    if !require_root("upgrade_with_a_user_logged_in") {
        return;
    }
    let _ram = ram_lock();
    let mut hutch = HutchEnv::new(POLICY);
    // A private lib dir: this test rebuilds the template.
    let shared = hutch.lib_dir.join("templates").join(E2E_TEMPLATE);
    hutch.lib_dir = hutch.dir.join("lib");
    hutch.write_policy(POLICY);
    let out = hutch.ctl(&[
        "template",
        "build",
        E2E_TEMPLATE,
        "--from-dir",
        &shared.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", out.describe());

    let first = hutch.user();
    let second = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    let gens = hutch.run_dir.join("template").join(E2E_TEMPLATE);

    let mut s1 = env.shell_pty(&first);
    assert_eq!(state_u64(&hutch, &first.name, "generation"), 1);
    let init1 = state_u64(&hutch, &first.name, "init_pid") as i64;
    assert_eq!(lowerdir_of(init1), gens.join("1").to_string_lossy());

    // Generation 2 loads while the first user keeps typing.
    let started = Instant::now();
    let update = std::thread::scope(|scope| {
        let job = scope.spawn(|| ctl_in(&hutch, env.pid(), &["template", "update", E2E_TEMPLATE]));
        let mut ticks = 0u32;
        while !job.is_finished() || ticks == 0 {
            s1.send(&format!("echo T$(({ticks}+1000))X\n"));
            let want = format!("T{}X", ticks + 1000);
            assert!(
                s1.expect(&want, Duration::from_secs(10)).is_some(),
                "the session stalled during the update: {}",
                s1.output()
            );
            ticks += 1;
        }
        eprintln!(
            "update took {:?}; the logged-in user ran {ticks} commands meanwhile",
            started.elapsed()
        );
        job.join().unwrap()
    });
    assert!(update.status.success(), "{}", update.describe());
    assert!(
        update.stdout_str().contains("generation 2"),
        "{}",
        update.describe()
    );

    // A new login gets generation 2; the first user is still on 1.
    let mut s2 = env.shell_pty(&second);
    assert_eq!(state_u64(&hutch, &second.name, "generation"), 2);
    let init2 = state_u64(&hutch, &second.name, "init_pid") as i64;
    assert_eq!(lowerdir_of(init2), gens.join("2").to_string_lossy());
    assert_eq!(state_u64(&hutch, &first.name, "generation"), 1);

    let list = ctl_in(&hutch, env.pid(), &["template", "list"]);
    assert!(list.status.success(), "{}", list.describe());
    let text = list.stdout_str();
    eprintln!("{text}");
    let row = |g: &str| {
        text.lines()
            .find(|l| l.split_whitespace().any(|w| w == g) && l.contains("iB"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("1").contains(&first.name) && !row("1").contains(&second.name),
        "{text}"
    );
    assert!(
        row("2").contains(&second.name) && row("2").contains("newest"),
        "{text}"
    );

    // The first user still works, then logs out: generation 1 goes.
    s1.send("echo S$((6*7))X; ls /usr/bin | wc -l; exit 0\n");
    let (code, out) = s1.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("S42X"), "{out}");
    let left = hutch.wait_gone(&first.name, Duration::from_secs(15));
    assert!(left.is_empty(), "after the first user's logout: {left:?}");
    let gone = wait_until(Duration::from_secs(5), || {
        (!mounts_of(env.pid()).contains(&gens.join("1")) && !gens.join("1").exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "generation 1 still there after its last user left: {:?}",
        mounts_of(env.pid())
    );
    assert!(
        mounts_of(env.pid()).contains(&gens.join("2")),
        "generation 2 must stay"
    );
    assert!(
        env.syslog().contains("generation 1 unloaded"),
        "{:#?}",
        env.syslog().lines()
    );

    // The second user's session is unaffected; the newest generation stays after it leaves.
    s2.send("echo U$((5*5))X; exit 0\n");
    let (code, out) = s2.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("U25X"), "{out}");
    let left = hutch.wait_gone(&second.name, Duration::from_secs(15));
    assert!(left.is_empty(), "after the second user's logout: {left:?}");
    assert!(
        mounts_of(env.pid()).contains(&gens.join("2")),
        "the newest generation must stay loaded"
    );
}

/// Two users whose policy names different templates get different lowerdirs.
#[test]
fn per_user_templates() {
    if !require_root("per_user_templates") {
        return;
    }
    let _ram = ram_lock();
    let lib = alt_lib_dir();
    let hutch = HutchEnv::new("");
    assert_eq!(hutch.lib_dir, lib);
    let plain = hutch.user();
    let alt = hutch.user();
    hutch.write_policy(&format!(
        "{POLICY}\n[users.{}]\ntemplate = \"e2e-alt\"\n",
        alt.name
    ));
    let env = hutch.sshd(Sftp::Internal);
    let sp = env.shell_pty(&plain);
    let sa = env.shell_pty(&alt);
    let lp = lowerdir_of(state_u64(&hutch, &plain.name, "init_pid") as i64);
    let la = lowerdir_of(state_u64(&hutch, &alt.name, "init_pid") as i64);
    assert_eq!(lp, hutch.run_dir.join("template/e2e/1").to_string_lossy());
    assert_eq!(
        la,
        hutch.run_dir.join("template/e2e-alt/1").to_string_lossy()
    );
    assert_eq!(hutch.state(&alt.name).unwrap()["template"], "e2e-alt");
    for s in [sp, sa] {
        let mut s = s;
        s.send("exit 0\n");
        let (code, out) = s.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{out}");
    }
    for u in [&plain, &alt] {
        let left = hutch.wait_gone(&u.name, Duration::from_secs(15));
        assert!(left.is_empty(), "{left:?}");
    }
}

/// `hutchctl template load` charges the tmpfs to `<cgroup_root>/keepers`:
/// its shmem grows by about the template's size, and a user's cgroup holds
/// none of it.
#[test]
fn template_memory_is_charged_to_hutch() {
    if !require_root("template_memory_is_charged_to_hutch") {
        return;
    }
    let _ram = ram_lock();
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    let t = Instant::now();
    let out = ctl_in(&hutch, env.pid(), &["template", "load", E2E_TEMPLATE]);
    assert!(out.status.success(), "{}", out.describe());
    eprintln!("template load: {:?}", t.elapsed());
    let store = hutch_runtime::template::TemplateStore::new(&hutch.lib_dir, &hutch.run_dir);
    let size = store
        .list()
        .unwrap()
        .into_iter()
        .find(|t| t.name == E2E_TEMPLATE)
        .and_then(|t| t.bytes)
        .unwrap();
    let root = hutch_runtime::cgroup::CgroupRoot::open(&hutch.cgroup_root).unwrap();
    let keepers = root
        .existing("keepers")
        .expect("hutchctl made <root>/keepers");
    // memcg statistics are flushed lazily (a reader may see them up to a
    // periodic flush, ~2 s, behind): look until they catch up.
    let want = size as f64 * 0.9;
    let stat = || memory_stat(&keepers.dirs(), "shmem").expect("memory.stat shmem of keepers");
    let shmem = wait_until(Duration::from_secs(10), || {
        Some(stat()).filter(|&s| s as f64 >= want)
    })
    .unwrap_or_else(stat);
    eprintln!(
        "template {} MiB; shmem of <root>/keepers: {} MiB",
        size / MIB,
        shmem / MIB
    );
    assert!(
        shmem as f64 >= want,
        "the template's memory is not charged to hutch's cgroup: {shmem} < {size}"
    );

    let mut s = env.shell_pty(&user);
    s.send("cat /usr/bin/* > /dev/null 2>&1; echo READ$((1+1))\n");
    assert!(
        s.expect("READ2", Duration::from_secs(60)).is_some(),
        "{}",
        s.output()
    );
    let user_cg = root
        .existing(&format!("users/{}", user.name))
        .expect("user's cgroup");
    let user_shmem = memory_stat(&user_cg.dirs(), "shmem").unwrap_or(0);
    eprintln!(
        "shmem of the user's cgroup after reading all of /usr/bin: {} KiB",
        user_shmem / 1024
    );
    assert!(
        user_shmem < 32 * MIB && user_shmem < size / 4,
        "the user's cgroup is charged {user_shmem} bytes of shmem"
    );
    s.send("exit 0\n");
    let (code, out) = s.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    let left = hutch.wait_gone(&user.name, Duration::from_secs(15));
    assert!(left.is_empty(), "{left:?}");
}

/// A process holding a private mount namespace for keepers started by
/// hand; killed (by pid) on drop, which takes every mount in it along.
struct MountNs {
    child: Child,
}

impl MountNs {
    fn new() -> MountNs {
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = child.id();
        let me = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let ok = wait_until(Duration::from_secs(5), || {
            (std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()? != me).then_some(())
        });
        assert!(ok.is_some(), "unshare did not make a mount namespace");
        MountNs { child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 50 containers from one template raise the machine's Shmem by one
/// template and a little per container: the template is counted once.
/// Keepers are started as the PAM module starts them (`hutch-keeper
/// --config CFG USER`, the same code path as a login), in one mount
/// namespace, and stopped with `hutchctl stop`.
#[test]
fn fifty_containers_share_one_template() {
    if !require_root("fifty_containers_share_one_template") {
        return;
    }
    let _ram = ram_lock();
    let report = containers_share_template(50);
    // What this test's cgroups hold (the template in <root>/keepers, the
    // containers in <root>/users): exact, whatever else the machine does.
    assert!(
        report.cgroup_total >= report.template_bytes * 9 / 10
            && report.cgroup_total < report.template_bytes + 50 * 2 * MIB,
        "the cgroups hold {} MiB of shmem for a {} MiB template and 50 containers",
        report.cgroup_total / MIB,
        report.template_bytes / MIB
    );
    // The machine's Shmem, when nothing else loaded or freed a template
    // meanwhile (the load itself must show as one template).
    let quiet = report.load_delta.abs_diff(report.template_bytes) < report.template_bytes / 10;
    if !quiet {
        eprintln!(
            "machine Shmem disturbed by other activity (load showed +{} MiB): the cgroup figure stands",
            report.load_delta / MIB
        );
        return;
    }
    assert!(
        report.total_delta < report.template_bytes + 50 * 2 * MIB,
        "Shmem grew by {} MiB for a {} MiB template and 50 containers: the template is not shared",
        report.total_delta / MIB,
        report.template_bytes / MIB
    );
}

/// What [`containers_share_template`] measured.
struct SharingReport {
    template_bytes: u64,
    load_delta: u64,
    total_delta: u64,
    per_container: u64,
    /// shmem charged to this test's cgroup root with all containers up.
    cgroup_total: u64,
}

/// Loads the e2e template, starts `n` containers on it, measures Shmem
/// before, after the load and with all `n` up, then stops them.
fn containers_share_template(n: usize) -> SharingReport {
    let hutch = HutchEnv::new(&format!("{POLICY}linger = \"10m\"\n"));
    let users: Vec<TestUser> = (0..n).map(|_| hutch.user()).collect();
    let ns = MountNs::new();
    let store = hutch_runtime::template::TemplateStore::new(&hutch.lib_dir, &hutch.run_dir);
    let template_bytes = store
        .list()
        .unwrap()
        .into_iter()
        .find(|t| t.name == E2E_TEMPLATE)
        .and_then(|t| t.bytes)
        .unwrap();

    let s0 = meminfo_shmem();
    let t = Instant::now();
    let out = ctl_in(&hutch, ns.pid(), &["template", "load", E2E_TEMPLATE]);
    assert!(out.status.success(), "{}", out.describe());
    let load_time = t.elapsed();
    let s1 = meminfo_shmem();

    let t = Instant::now();
    let mut keepers = Vec::new();
    for u in &users {
        let child = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", ns.pid()))
            .arg("--")
            .arg(&hutch.bins.keeper)
            .arg("--config")
            .arg(&hutch.config)
            .arg(&u.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting hutch-keeper");
        keepers.push(child);
    }
    for u in &users {
        let up = wait_until(Duration::from_secs(60), || hutch.state(&u.name));
        assert!(up.is_some(), "the container of {} did not come up", u.name);
        assert_eq!(up.unwrap()["generation"], 1);
    }
    let start_time = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let s2 = meminfo_shmem();
    let root = hutch_runtime::cgroup::CgroupRoot::open(&hutch.cgroup_root).unwrap();
    // Lazily flushed memcg statistics: give them time to catch up (as above).
    let total = || memory_stat(&root.dirs(), "shmem").expect("memory.stat of the cgroup root");
    let cgroup_total = wait_until(Duration::from_secs(10), || {
        Some(total()).filter(|&t| t >= template_bytes * 9 / 10)
    })
    .unwrap_or_else(total);

    let t = Instant::now();
    for u in &users {
        let out = ctl_in(&hutch, ns.pid(), &["stop", &u.name]);
        assert!(out.status.success(), "{}", out.describe());
    }
    for u in &users {
        let left = hutch.wait_gone(&u.name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    for mut k in keepers {
        let _ = k.wait();
    }
    let stop_time = t.elapsed();
    drop(ns);

    let report = SharingReport {
        template_bytes,
        load_delta: s1.saturating_sub(s0),
        total_delta: s2.saturating_sub(s0),
        per_container: s2.saturating_sub(s1) / n as u64,
        cgroup_total,
    };
    eprintln!(
        "template {:.1} MiB: load {:?} (+{:.1} MiB Shmem); {n} containers up in {:?}, stopped in {:?}; \
         Shmem +{:.1} MiB in all, {:.0} KiB per container; the test's cgroups hold {:.1} MiB of shmem",
        template_bytes as f64 / MIB as f64,
        load_time,
        report.load_delta as f64 / MIB as f64,
        start_time,
        stop_time,
        report.total_delta as f64 / MIB as f64,
        report.per_container as f64 / 1024.0,
        cgroup_total as f64 / MIB as f64
    );
    report
}
