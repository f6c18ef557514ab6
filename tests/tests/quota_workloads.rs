//! Resource quotas proven by the workloads they stop: real workloads in a
//! confined session over real SSH (sshd, PAM, pam_hutch, keeper), limits
//! from the policy, usage read back from the cgroup accounting and from
//! `hutchctl stats`. The tests take one lock so that the timing bands (CPU,
//! I/O) are measured on a box not also running a fork bomb.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hutch_runtime::cgroup::{CgroupRoot, Stats};
use hutch_tests::hutch::trimmed;
use hutch_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A background `ssh user CMD`, killed (by pid) on Drop.
struct Bg(Child);

impl Bg {
    fn start(env: &SshdEnv, user: &TestUser, cmd: &str) -> Bg {
        let argv = env.ssh_argv(user, &[], &[cmd]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh");
        Bg(child)
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The user's cgroup counters, if the container is up.
fn stats(hutch: &HutchEnv, user: &str) -> Option<Stats> {
    let root = CgroupRoot::open(&hutch.cgroup_root).ok()?;
    root.existing(&hutch_runtime::paths::user_cgroup(user))?
        .stats()
        .ok()
}

/// `hutchctl stats USER --json`, the user's counters.
fn ctl_stats(hutch: &HutchEnv, user: &str) -> serde_json::Value {
    let out = hutch.ctl(&["stats", user, "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    v[0]["stats"].clone()
}

fn within(measured: f64, want: f64, band: f64) -> bool {
    (measured / want - 1.0).abs() <= band
}

/// A fork bomb stops at the pids limit (pids.current at the limit, the
/// pids-limit counter up); the host and another user's session stay
/// responsive; after the bomb's session ends the user logs in again.
#[test]
fn quota_fork_bomb_stops_at_pids_limit() {
    if !require_root("quota_fork_bomb_stops_at_pids_limit") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\npids = 64\ncpu = \"0.5\"\n");
    let user = hutch.user();
    let other = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let bomb = Bg::start(&env, &user, "b(){ b | b & }; b; sleep 60");
        let full = wait_until(Duration::from_secs(30), || {
            stats(&hutch, &name)
                .filter(|s| s.pids_current == Some(64) && s.pids_limit_hits.unwrap_or(0) > 0)
        });
        let s = stats(&hutch, &name);
        eprintln!("fork bomb: {s:?}");
        assert!(
            full.is_some(),
            "the bomb did not reach the pids limit: {s:?}"
        );
        let hits = full.as_ref().and_then(|f| f.pids_limit_hits).unwrap_or(0);
        std::thread::sleep(Duration::from_secs(2));
        // Still pressing on the limit and never beyond it (the count itself
        // moves: the bomb's shells exit as others fork).
        let s = stats(&hutch, &name).unwrap();
        assert!(
            s.pids_current.is_some_and(|p| p <= 64),
            "pids beyond the limit: {s:?}"
        );
        assert!(
            s.pids_limit_hits.unwrap_or(0) > hits,
            "the bomb stopped hitting the limit: {s:?}"
        );

        // The host forks and runs at once.
        let t = Instant::now();
        run_ok(&mut Command::new("true"));
        let host = t.elapsed();
        // Another user's session works.
        let t = Instant::now();
        let out = env.ssh(&other, &["echo alive"]);
        let other_login = t.elapsed();
        eprintln!("during the bomb: host fork+exec {host:?}, other user's login {other_login:?}");
        assert_eq!(trimmed(&out), "alive", "{}", out.describe());
        assert!(host < Duration::from_secs(1), "host fork took {host:?}");
        assert!(
            other_login < Duration::from_secs(20),
            "other login took {other_login:?}"
        );
        let hits = ctl_stats(&hutch, &name)["pids_limit_hits"]
            .as_u64()
            .unwrap_or(0);
        eprintln!("hutchctl stats: pids_limit_hits = {hits}");
        assert!(hits > 0);

        // End the bomb's session: the container goes, the user logs in again.
        drop(bomb);
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "after the bomb's session ended: {left:?}");
        let out = env.ssh(&user, &["echo again"]);
        assert_eq!(trimmed(&out), "again", "{}", out.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop((user, other));
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// A memory hog is OOM-killed inside the container; the shell that ran it,
/// the container's init, the keeper and a host process live on; the OOM
/// counter goes up in `hutchctl stats`.
#[test]
fn quota_memory_hog_is_oom_killed_inside() {
    if !require_root("quota_memory_hog_is_oom_killed_inside") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\nmemory = \"64M\"\npids = 128\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut sentinel = Command::new("sleep").arg("120").spawn().unwrap();
        let hold = Bg::start(&env, &user, "sleep 120");
        let st = wait_until(Duration::from_secs(30), || {
            hutch
                .state(&name)
                .filter(|s| s["sessions"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .expect("the holding session");
        let before = ctl_stats(&hutch, &name)["oom_kills"].as_u64().unwrap_or(0);
        // tail holds one "line" of 256 MiB of NULs in memory.
        let out = env.ssh(
            &user,
            &["head -c 256M /dev/zero | tail -n 1 >/dev/null; echo rc=$?; echo shell-alive"],
        );
        eprintln!("memory hog: {}", out.stdout_str().replace('\n', " "));
        assert!(
            out.stdout_str().contains("rc=137"),
            "the hog was not SIGKILLed: {}",
            out.describe()
        );
        assert!(
            out.stdout_str().contains("shell-alive"),
            "{}",
            out.describe()
        );
        let after = ctl_stats(&hutch, &name);
        eprintln!("hutchctl stats after the hog: {after}");
        assert!(
            after["oom_kills"].as_u64().unwrap_or(0) > before,
            "OOM counter did not go up: {before} -> {after}"
        );
        assert!(after["memory_peak"].as_u64().unwrap_or(u64::MAX) <= 64 << 20);
        // Nothing outside touched.
        assert!(
            sentinel.try_wait().unwrap().is_none(),
            "a host process died"
        );
        let st2 = hutch.state(&name).expect("container still up");
        assert_eq!(
            st["init_pid"], st2["init_pid"],
            "the container's init changed"
        );
        let keeper = st2["keeper_pid"].as_i64().unwrap() as i32;
        assert!(
            Path::new(&format!("/proc/{keeper}")).exists(),
            "the keeper died"
        );
        let out = env.ssh(&user, &["echo still-here"]);
        assert_eq!(trimmed(&out), "still-here", "{}", out.describe());
        let _ = sentinel.kill();
        let _ = sentinel.wait();
        drop(hold);
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// Two busy loops under `cpu = "0.5"`: over ~4 s the cgroup's CPU time is
/// within ±15% of half a CPU, and the throttling counter goes up.
#[test]
fn quota_cpu_hog_held_to_quota() {
    if !require_root("quota_cpu_hog_held_to_quota") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\ncpu = \"0.5\"\ncpu_weight = 10000\npids = 128\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let hog = Bg::start(
            &env,
            &user,
            "for i in 1 2; do (while :; do :; done) & done; sleep 60",
        );
        // Warm up until both loops run.
        let started = wait_until(Duration::from_secs(30), || {
            stats(&hutch, &name).filter(|s| s.cpu_usage_us.unwrap_or(0) > 300_000)
        });
        assert!(
            started.is_some(),
            "the hog never ran: {:?}",
            stats(&hutch, &name)
        );
        // The quota is the cap under test: give the test's own cgroup root a
        // large share so that the shared box's other load does not starve
        // the hog below it.
        for d in hutch.cgroup_dirs() {
            if d.join("cpu.shares").exists() {
                let _ = std::fs::write(d.join("cpu.shares"), "262144");
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let a = stats(&hutch, &name).unwrap();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(4));
        let b = stats(&hutch, &name).unwrap();
        let wall = t.elapsed().as_secs_f64();
        let used = (b.cpu_usage_us.unwrap() - a.cpu_usage_us.unwrap()) as f64 / 1e6;
        let cpus = used / wall;
        eprintln!(
            "cpu hog: {used:.3} s of CPU in {wall:.3} s = {cpus:.3} CPUs (quota 0.5, ratio {:.3}); throttled periods {:?} -> {:?}",
            cpus / 0.5,
            a.cpu_throttled_periods,
            b.cpu_throttled_periods
        );
        assert!(
            within(cpus, 0.5, 0.15),
            "CPU {cpus:.3} not within ±15% of 0.5"
        );
        assert!(b.cpu_throttled_periods > a.cpu_throttled_periods);
        let js = ctl_stats(&hutch, &name);
        assert!(
            js["cpu_throttled_periods"].as_u64().unwrap_or(0) > 0,
            "{js}"
        );
        drop(hog);
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// A loop device with ext4, mounted over a test user's home; unmounted and
/// detached on Drop.
struct LoopHome {
    dir: TestDir,
    dev: String,
    mnt: PathBuf,
}

impl LoopHome {
    fn over(home: &Path, uid: u32, gid: u32) -> LoopHome {
        let dir = TestDir::new("htloop");
        let img = dir.join("disk.img");
        run_ok(Command::new("truncate").args(["-s", "256M"]).arg(&img));
        let out = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&img));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut guard = LoopHome {
            dir,
            dev,
            mnt: PathBuf::new(),
        };
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&guard.dev));
        run_ok(Command::new("mount").arg(&guard.dev).arg(home));
        guard.mnt = home.to_path_buf();
        std::os::unix::fs::chown(home, Some(uid), Some(gid)).unwrap();
        guard
    }
}

impl Drop for LoopHome {
    fn drop(&mut self) {
        if !self.mnt.as_os_str().is_empty() {
            let _ = output(Command::new("umount").arg(&self.mnt));
            let _ = output(Command::new("umount").arg("-l").arg(&self.mnt));
        }
        let _ = output(Command::new("losetup").arg("-d").arg(&self.dev));
        let _ = &self.dir;
    }
}

/// Parses dd's "N bytes (...) copied, T s, ..." into (bytes, seconds).
fn dd_rate(stderr: &str) -> Option<(f64, f64)> {
    let line = stderr.lines().find(|l| l.contains("copied"))?;
    let bytes: f64 = line.split_whitespace().next()?.parse().ok()?;
    let secs: f64 = line
        .split("copied, ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((bytes, secs))
}

/// O_DIRECT writes and reads on the loop device under the user's home are
/// held to the policy's bandwidth (64 KiB blocks) and IOPS (4 KiB blocks)
/// within ±20%; `hutchctl stats` counts the bytes and operations.
#[test]
fn quota_io_bandwidth_and_iops_on_loop_device() {
    if !require_root("quota_io_bandwidth_and_iops_on_loop_device") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let disk = LoopHome::over(&user.home, user.uid, user.gid);
        let (bps, iops) = (4u64 << 20, 100u64);
        hutch.write_policy(&format!(
            "[defaults]\npids = 128\nio = [ {{ device = \"{}\", read_bps = \"4M\", write_bps = \"4M\", read_iops = {iops}, write_iops = {iops} }} ]\n",
            disk.dev
        ));
        let env = hutch.sshd(Sftp::Internal);
        env.authorize(&user);
        // The keeper runs in the sshd's private /dev: give it the device's node
        // (the tmpfs goes with the sshd's mount namespace).
        {
            use std::os::unix::fs::MetadataExt;
            let rdev = std::fs::metadata(&disk.dev).unwrap().rdev();
            let (maj, min) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
            let node = format!("/proc/{}/root{}", env.pid(), disk.dev);
            run_ok(Command::new("mknod").arg(&node).args([
                "b",
                &maj.to_string(),
                &min.to_string(),
            ]));
        }
        // 12 MiB at 4 MiB/s: ~3 s each way; 300 ops of 4 KiB at 100/s: ~3 s.
        let script = "dd if=/dev/zero of=$HOME/bw bs=64k count=192 oflag=direct 2>&1 | tail -1; \
                      dd if=$HOME/bw of=/dev/null bs=64k iflag=direct 2>&1 | tail -1; \
                      dd if=/dev/zero of=$HOME/ops bs=4k count=300 oflag=direct 2>&1 | tail -1; \
                      dd if=$HOME/ops of=/dev/null bs=4k iflag=direct 2>&1 | tail -1";
        let hold = Bg::start(&env, &user, "sleep 120");
        wait_until(Duration::from_secs(30), || {
            hutch
                .state(&name)
                .filter(|s| s["sessions"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .expect("the holding session");
        let blk = hutch
            .user_cgroups(&name)
            .into_iter()
            .find(|d| d.join("blkio.throttle.write_bps_device").exists());
        let limits = blk.map(|d| {
            std::fs::read_to_string(d.join("blkio.throttle.write_bps_device")).unwrap_or_default()
        });
        let out = env.ssh(
            &user,
            &["stat -c '%D' ~; grep \" $HOME \" /proc/self/mountinfo"],
        );
        eprintln!(
            "blkio write limits: {limits:?}; home in the container: {}",
            out.stdout_str().replace('\n', " | ")
        );
        let out = env.ssh(&user, &[script]);
        assert!(out.status.success(), "{}", out.describe());
        let lines: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 4, "{}", out.describe());
        let rates: Vec<(f64, f64)> = lines
            .iter()
            .map(|l| dd_rate(l).unwrap_or_else(|| panic!("dd said {l:?}")))
            .collect();
        let names = [
            "write bandwidth",
            "read bandwidth",
            "write IOPS",
            "read IOPS",
        ];
        let mut bad = Vec::new();
        for (i, (bytes, secs)) in rates.iter().enumerate() {
            let (measured, want, unit) = if i < 2 {
                (bytes / secs, bps as f64, "B/s")
            } else {
                (bytes / 4096.0 / secs, iops as f64, "ops/s")
            };
            eprintln!("{}: {measured:.0} {unit} (limit {want:.0}, ratio {:.3}; {bytes} bytes in {secs:.3} s)", names[i], measured / want);
            if !within(measured, want, 0.20) {
                bad.push(names[i]);
            }
        }
        let js = ctl_stats(&hutch, &name);
        eprintln!("hutchctl stats: {js}");
        assert!(
            js["io_write_bytes"].as_u64().unwrap_or(0) >= 12 << 20,
            "{js}"
        );
        assert!(js["io_read_ops"].as_u64().unwrap_or(0) >= 300, "{js}");
        assert!(bad.is_empty(), "outside ±20%: {bad:?}");
        drop(hold);
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
        drop(env);
        drop(disk);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// The writable layer stops at its size (ENOSPC in /var/tmp); with two
/// sessions open the third login is refused with the keeper's message.
#[test]
fn quota_writable_size_and_max_sessions() {
    if !require_root("quota_writable_size_and_max_sessions") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\nwritable_size = \"16M\"\nmax_sessions = 2\npids = 64\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(&user, &["dd if=/dev/zero of=/var/tmp/fill bs=1M count=64; echo rc=$?; stat -c %s /var/tmp/fill"]);
        let text = format!("{}{}", out.stdout_str(), out.stderr_str());
        eprintln!("writable layer: {}", text.replace('\n', " | "));
        assert!(
            text.contains("No space left on device"),
            "{}",
            out.describe()
        );
        let size: u64 = out
            .stdout_str()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("size");
        assert!((8 << 20..=16 << 20).contains(&size), "{size}");

        let _a = Bg::start(&env, &user, "sleep 120");
        let _b = Bg::start(&env, &user, "sleep 120");
        wait_until(Duration::from_secs(30), || {
            hutch
                .state(&name)
                .filter(|s| s["sessions"].as_array().is_some_and(|a| a.len() == 2))
        })
        .expect("two sessions");
        let out = env.ssh(&user, &["echo IN"]);
        eprintln!("third login: {}", out.describe());
        assert!(!out.stdout_str().contains("IN"), "{}", out.describe());
        let msg = "the most the policy allows (2)";
        let line = env.syslog().wait_for(
            |l| l.contains("pam_hutch") && l.contains(&name) && l.contains(msg),
            Duration::from_secs(10),
        );
        assert!(line.is_some(), "{:#?}", env.syslog().lines());
        eprintln!("syslog: {}", line.unwrap());
        let seen = format!("{}{}", out.stdout_str(), out.stderr_str());
        assert!(
            seen.contains(&format!(
                "hutch: login refused: {name} already has 2 sessions, {msg}"
            )),
            "the client was not told: {}",
            out.describe()
        );
        drop((_a, _b));
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// The keeper sits in `<root>/keepers`, not in the user's cgroup; the
/// template's tmpfs pages, read all over by the user, are not charged to
/// the user's memory.
#[test]
fn quota_hutch_is_never_charged_to_the_user() {
    if !require_root("quota_hutch_is_never_charged_to_the_user") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\nmemory = \"512M\"\npids = 128\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let _hold = Bg::start(&env, &user, "sleep 120");
        let st = wait_until(Duration::from_secs(30), || {
            hutch
                .state(&name)
                .filter(|s| s["sessions"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .expect("the holding session");
        let keeper = st["keeper_pid"].as_i64().unwrap();
        let cg = std::fs::read_to_string(format!("/proc/{keeper}/cgroup")).unwrap();
        let mem = cg
            .lines()
            .find(|l| l.split(':').nth(1) == Some("memory"))
            .unwrap()
            .to_string();
        eprintln!("keeper {keeper}: {mem}");
        assert!(
            mem.ends_with(&format!("{}/keepers/procs", hutch.cgroup_root)),
            "{cg}"
        );
        assert!(!cg.contains(&format!("/users/{name}")), "{cg}");

        // Read every template file from inside.
        let out = env.ssh(&user, &["tar cf - /usr /bin /lib 2>/dev/null | wc -c"]);
        let read: u64 = trimmed(&out).parse().unwrap_or(0);
        let memstat = hutch
            .user_cgroups(&name)
            .into_iter()
            .find_map(|d| std::fs::read_to_string(d.join("memory.stat")).ok())
            .expect("user memory.stat");
        let key = |k: &str| {
            memstat
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} ")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (shmem, cache) = (key("total_shmem"), key("total_cache"));
        eprintln!("template bytes read by the user: {read}; user's total_shmem {shmem}, total_cache {cache}");
        assert!(
            read > 50 << 20,
            "read only {read} bytes: {}",
            out.describe()
        );
        assert!(
            shmem < read / 10,
            "the template's pages were charged to the user: shmem {shmem} of {read} read"
        );
        drop(_hold);
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// A limit the host cannot apply (here: swap without a memory limit, which
/// cgroup v1 can only express as memory+swap, reported as the missing
/// controller memory.memsw): with `strict` the login is refused naming it
/// and the user is told; without, one warning in syslog and the rest applies.
#[test]
fn quota_missing_controller_strict_and_not() {
    if !require_root("quota_missing_controller_strict_and_not") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\nswap = \"64M\"\npids = 77\nstrict = true\n");
    if CgroupRoot::open(&hutch.cgroup_root)
        .expect("cgroups")
        .mode()
        != hutch_runtime::cgroup::Mode::V1
    {
        eprintln!("skipping: a v2 host can limit swap alone; nothing is missing");
        return;
    }
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(&user, &["echo IN"]);
        assert!(!out.stdout_str().contains("IN"), "{}", out.describe());
        assert!(
            out.stdout_str().contains("memory.memsw"),
            "the user was not told: {}",
            out.describe()
        );
        let line = env.syslog().wait_for(
            |l| l.contains("pam_hutch") && l.contains(&name) && l.contains("memory.memsw"),
            Duration::from_secs(10),
        );
        assert!(line.is_some(), "{:#?}", env.syslog().lines());
        eprintln!("strict: {}", line.unwrap());
        assert!(hutch.wait_gone(&name, Duration::from_secs(10)).is_empty());

        hutch.write_policy("[defaults]\nswap = \"64M\"\npids = 77\n");
        let _hold = Bg::start(&env, &user, "sleep 120");
        wait_until(Duration::from_secs(30), || {
            hutch
                .state(&name)
                .filter(|s| s["sessions"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .expect("not strict: the login goes through");
        let warn = env.syslog().wait_for(
            |l| l.contains(&name) && l.contains("memory.memsw") && l.contains("not applied"),
            Duration::from_secs(10),
        );
        assert!(warn.is_some(), "{:#?}", env.syslog().lines());
        eprintln!("not strict: {}", warn.unwrap());
        let pids = hutch
            .user_cgroups(&name)
            .into_iter()
            .find_map(|d| std::fs::read_to_string(d.join("pids.max")).ok());
        assert_eq!(
            pids.as_deref().map(str::trim),
            Some("77"),
            "the rest of the limits applies"
        );
        drop(_hold);
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `io_weight` reaches the host's weight file where it has one (v1
/// `blkio.weight`/`blkio.bfq.weight`, v2 `io.weight`), mapped to its range
/// (100 → 500 on v1); where the host has none (this development machine:
/// no CFQ, no BFQ group scheduling) the login goes through with one
/// warning naming io_weight, and the other limits apply.
#[test]
fn io_weight_applied_or_warned() {
    if !require_root("io_weight_applied_or_warned") {
        return;
    }
    let _s = serial();
    let hutch = HutchEnv::new("[defaults]\nio_weight = 100\npids = 78\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let _hold = Bg::start(&env, &user, "sleep 120");
        wait_until(Duration::from_secs(30), || {
            hutch
                .state(&name)
                .filter(|s| s["sessions"].as_array().is_some_and(|a| !a.is_empty()))
        })
        .unwrap_or_else(|| panic!("no session: {:#?}", env.syslog().lines()));
        let dirs = hutch.user_cgroups(&name);
        let read = |f: &str| {
            dirs.iter()
                .find_map(|d| std::fs::read_to_string(d.join(f)).ok())
        };
        assert_eq!(read("pids.max").as_deref().map(str::trim), Some("78"));
        let weight = [
            "blkio.weight",
            "blkio.bfq.weight",
            "io.weight",
            "io.bfq.weight",
        ]
        .iter()
        .find_map(|f| read(f).map(|v| (*f, v)));
        match weight {
            Some((f, v)) => {
                eprintln!("{f}: {v}");
                let want = if f.starts_with("blkio") { "500" } else { "100" };
                assert!(
                    v.split_whitespace().any(|w| w == want),
                    "{f} is {v:?}, want {want}"
                );
            }
            None => {
                let warn = env.syslog().wait_for(
                    |l| l.contains(&name) && l.contains("io_weight") && l.contains("not applied"),
                    Duration::from_secs(10),
                );
                assert!(warn.is_some(), "{:#?}", env.syslog().lines());
                eprintln!("no weight file here: {}", warn.unwrap());
            }
        }
        drop(_hold);
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
