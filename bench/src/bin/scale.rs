//! scale: N users logging in through the real PAM path within a window,
//! then N idle containers held (issue 15, item 4).
//!
//! Each login is a process of its own (this binary, `--login`) that drives
//! libpam itself: `pam_start_confdir` with a PAM service file the bench wrote
//! into its own directory (never /etc/pam.d), whose session stack is the
//! host's `pam_unix` and the built `pam_hutch.so` pointing at the bench's
//! own policy, run and cgroup dirs; `pam_open_session` starts or joins the
//! keeper and moves the process into the container, where it holds the
//! session until the bench closes its stdin (`pam_close_session`,
//! `pam_end`). Logins are started at a steady rate that fits N into
//! `--within` seconds, at most `--concurrency` in flight at once; the
//! offered and the achieved rate, each login's latency (spawn to session
//! open, and pam_open_session alone) and every failure with its cause (the
//! PAM code and pam_hutch's syslog lines) are printed.
//!
//! Then all N are held idle for `--hold` seconds: every keeper's and
//! init's CPU time (utime + stime) and context switches (all threads) at
//! the start and the end of the hold, the host's responsiveness meanwhile
//! (a fork + exec of /bin/true and a 10 ms sleep, once a second), and
//! MemAvailable and the memory cgroup of hutch's root per container. Then
//! every session is closed, the keepers are waited for (bounded), and
//! `hutch_tests::leftovers` checks that nothing is left.
//!
//! The bench runs in a private mount namespace of its own (the template
//! hutch loads, a private /dev whose /dev/log is the bench's syslog
//! catcher), its cgroup root below its own cgroups (`HutchEnv`), its
//! throwaway users removed at the end, also on failure, SIGINT or SIGTERM.
//!
//! Run as root, after `cargo build --release --workspace`:
//! `target/release/scale --users 1000 --within 60 --hold 600`.

#[allow(dead_code)]
#[path = "../../../pam-module/tests/pam_client/mod.rs"]
mod pam_client;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hutch_bench::{loadavg, median, memcg_of, percentile, MemInfo};
use hutch_tests::{HutchEnv, Syslog, TestUser};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const SERVICE: &str = "hutch-scale";
/// How long one login may take before it counts as failed.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    users: usize,
    within: f64,
    hold: u64,
    concurrency: usize,
    policy: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        users: 100,
        within: 60.0,
        hold: 600,
        concurrency: 64,
        policy: "memory = \"1G\"\npids = 512\n".into(),
    };
    let usage = "usage: scale [--users N] [--within SECONDS] [--hold SECONDS] \
                 [--concurrency N] [--defaults 'TOML lines of [defaults]']";
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{usage}"));
        match x.as_str() {
            "--users" => a.users = val()?.parse()?,
            "--within" => a.within = val()?.parse()?,
            "--hold" => a.hold = val()?.parse()?,
            "--concurrency" => a.concurrency = val()?.parse::<usize>()?.max(1),
            "--defaults" => a.policy = val()?.replace("\\n", "\n"),
            _ => anyhow::bail!("{usage}"),
        }
    }
    anyhow::ensure!(a.users > 0, "{usage}");
    Ok(a)
}

/// `scale --login CONFDIR USER`: one login. Prints `open RC MS` after
/// pam_open_session, holds the session until stdin ends, then prints
/// `close RC MS` after pam_close_session and ends the transaction.
fn login(confdir: &Path, user: &str) -> ! {
    let t = Instant::now();
    let mut pam = pam_client::Transaction::start(confdir, SERVICE, user);
    let rc = pam.open_session();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "open {rc} {ms:.3}");
    let _ = out.flush();
    if rc == pam_client::PAM_SUCCESS {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let t = Instant::now();
        let rc = pam.close_session();
        drop(pam);
        let _ = writeln!(out, "close {rc} {:.3}", t.elapsed().as_secs_f64() * 1e3);
        let _ = out.flush();
    } else {
        drop(pam);
    }
    std::process::exit(if rc == pam_client::PAM_SUCCESS { 0 } else { 1 })
}

/// Linux-PAM's name of a return code (the ones a session can end with).
fn pam_code(rc: i32) -> &'static str {
    match rc {
        0 => "PAM_SUCCESS",
        3 => "PAM_SERVICE_ERR",
        4 => "PAM_SYSTEM_ERR",
        5 => "PAM_BUF_ERR",
        6 => "PAM_PERM_DENIED",
        10 => "PAM_USER_UNKNOWN",
        14 => "PAM_SESSION_ERR",
        19 => "PAM_CONV_ERR",
        25 => "PAM_IGNORE",
        26 => "PAM_ABORT",
        _ => "another PAM code",
    }
}

/// SIGINT and SIGTERM, blocked in every thread and read from a signalfd:
/// the bench stops where it is and cleans up.
struct Stop(SignalFd);

impl Stop {
    fn new() -> anyhow::Result<Stop> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.thread_block()?;
        Ok(Stop(SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK)?))
    }

    fn check(&mut self) -> anyhow::Result<()> {
        match self.0.read_signal() {
            Ok(Some(s)) => Err(anyhow!("stopped by signal {}", s.ssi_signo)),
            _ => Ok(()),
        }
    }

    /// Sleeps `d`, or less if a signal comes.
    fn sleep(&mut self, d: Duration) -> anyhow::Result<()> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let ms = d.as_millis().min(i32::MAX as u128) as i32;
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        self.check()
    }
}

/// One login process.
struct Login {
    user: usize,
    child: Child,
    /// Closed to end the session.
    stdin: Option<ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
    spawned: Instant,
    /// Spawn to `open` line, ms; pam_open_session alone, ms.
    open: Option<(f64, f64)>,
    failed: Option<String>,
    /// What has come of the `open` line so far.
    partial: String,
}

/// Every login process; Drop ends each session (stdin closed) and waits
/// for them, bounded, then kills what is left by pid.
#[derive(Default)]
struct Logins(Vec<Login>);

impl Logins {
    /// Closes every session and waits up to `timeout` for the processes:
    /// (exited, seconds until the last, close_session ms of each).
    fn close_all(&mut self, timeout: Duration) -> (usize, f64, Vec<f64>) {
        let t = Instant::now();
        for l in &mut self.0 {
            drop(l.stdin.take());
        }
        let mut close_ms = Vec::new();
        let mut exited = 0;
        for l in &mut self.0 {
            let left = timeout.saturating_sub(t.elapsed());
            if hutch_tests::wait_until(left, || l.child.try_wait().ok().flatten()).is_some() {
                exited += 1;
            }
            let mut line = String::new();
            while l.out.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(ms) = line
                    .strip_prefix("close ")
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|m| m.parse().ok())
                {
                    close_ms.push(ms);
                }
                line.clear();
            }
        }
        (exited, t.elapsed().as_secs_f64(), close_ms)
    }
}

impl Drop for Logins {
    fn drop(&mut self) {
        self.close_all(Duration::from_secs(60));
        for l in &mut self.0 {
            if l.child.try_wait().ok().flatten().is_none() {
                let _ = l.child.kill();
                let _ = l.child.wait();
            }
        }
    }
}

/// Reads what the login has printed so far (its stdout is non-blocking):
/// true once its `open` line (or its end) has been seen.
fn poll_login(l: &mut Login) -> bool {
    match l.out.read_line(&mut l.partial) {
        Ok(0) => {
            let st = l.child.wait();
            l.failed = Some(format!("the login process ended without a result: {st:?}"));
            true
        }
        Ok(_) if l.partial.ends_with('\n') => {
            let line = std::mem::take(&mut l.partial);
            let f: Vec<&str> = line.split_whitespace().collect();
            match (f.first(), f.get(1).and_then(|r| r.parse::<i32>().ok())) {
                (Some(&"open"), Some(0)) => {
                    let pam_ms = f.get(2).and_then(|m| m.parse().ok()).unwrap_or(f64::NAN);
                    l.open = Some((l.spawned.elapsed().as_secs_f64() * 1e3, pam_ms));
                }
                (Some(&"open"), Some(rc)) => {
                    l.failed = Some(format!("pam_open_session: {rc} ({})", pam_code(rc)));
                }
                _ => l.failed = Some(format!("unexpected output {line:?}")),
            }
            true
        }
        // Part of the line, or nothing yet (EAGAIN): kept, read on later.
        _ => false,
    }
}

fn set_nonblocking(fd: &impl AsRawFd) -> anyhow::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Starts the logins: one every `within / N` seconds, at most
/// `concurrency` not yet answered. Returns the time from the first spawn
/// to the last answer.
fn start_logins(
    a: &Args,
    exe: &Path,
    confdir: &Path,
    users: &[TestUser],
    logins: &mut Logins,
    stop: &mut Stop,
) -> anyhow::Result<f64> {
    let interval = a.within / a.users as f64;
    let t0 = Instant::now();
    let mut next = 0;
    let mut pending: Vec<usize> = Vec::new();
    let mut max_pending = 0;
    while next < users.len() || !pending.is_empty() {
        stop.check()?;
        let due = t0 + Duration::from_secs_f64(interval * next as f64);
        if next < users.len() && Instant::now() >= due && pending.len() < a.concurrency {
            let mut child = Command::new(exe)
                .arg("--login")
                .arg(confdir)
                .arg(&users[next].name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                // Out of the terminal's process group: a Ctrl-C reaches the
                // bench only, which closes every session properly.
                .process_group(0)
                .spawn()
                .context("spawning a login")?;
            let stdin = child.stdin.take();
            let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            set_nonblocking(&out)?;
            logins.0.push(Login {
                user: next,
                child,
                stdin,
                out: BufReader::new(out),
                spawned: Instant::now(),
                open: None,
                failed: None,
                partial: String::new(),
            });
            pending.push(logins.0.len() - 1);
            max_pending = max_pending.max(pending.len());
            next += 1;
            continue;
        }
        let wait = if next < users.len() && pending.len() < a.concurrency {
            due.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(200)
        };
        {
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|&i| PollFd::new(logins.0[i].out.get_ref().as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(stop.0.as_fd(), PollFlags::POLLIN));
            let ms = wait.as_millis().min(1000) as i32;
            poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            )?;
        }
        pending.retain(|&i| {
            let l = &mut logins.0[i];
            if poll_login(l) {
                return false;
            }
            if l.spawned.elapsed() > LOGIN_TIMEOUT {
                l.failed = Some(format!("no answer in {LOGIN_TIMEOUT:?}"));
                return false;
            }
            true
        });
    }
    println!("  logins in flight at most: {max_pending}");
    Ok(t0.elapsed().as_secs_f64())
}

/// utime + stime (clock ticks) of a process, all its threads.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Time on a CPU (ns, /proc/PID/task/*/schedstat), summed over the threads:
/// finer than the clock ticks of utime + stime.
fn run_ns(pid: i32) -> u64 {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Voluntary and involuntary context switches, summed over the threads.
fn ctxt(pid: i32) -> (u64, u64) {
    let mut v = (0, 0);
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return v;
    };
    for t in rd.flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines() {
            let num = |p: &str| l.strip_prefix(p).and_then(|x| x.trim().parse::<u64>().ok());
            if let Some(n) = num("voluntary_ctxt_switches:") {
                v.0 += n;
            } else if let Some(n) = num("nonvoluntary_ctxt_switches:") {
                v.1 += n;
            }
        }
    }
    v
}

fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// A keeper's or init's counters at one moment.
#[derive(Clone, Copy, Default)]
struct Sample {
    ticks: u64,
    ns: u64,
    vol: u64,
    invol: u64,
}

fn sample(pid: i32) -> Option<Sample> {
    let ticks = cpu_ticks(pid)?;
    let (vol, invol) = ctxt(pid);
    Some(Sample {
        ticks,
        ns: run_ns(pid),
        vol,
        invol,
    })
}

/// The host's responsiveness, once a second while it runs: fork + exec of
/// /bin/true (ms), and how late a 10 ms sleep wakes (ms over 10).
#[derive(Default)]
struct Probe {
    exec: Vec<f64>,
    sleep: Vec<f64>,
}

fn probe_thread(phase: Arc<AtomicUsize>, out: Arc<Mutex<[Probe; 2]>>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = Command::new("/bin/true")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let exec = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(10));
        let late = t.elapsed().as_secs_f64() * 1e3 - 10.0;
        let p = phase.load(Ordering::Relaxed);
        if p < 2 {
            let mut o = out.lock().unwrap();
            if ok {
                o[p].exec.push(exec);
            }
            o[p].sleep.push(late);
        }
        std::thread::sleep(Duration::from_millis(990));
    }
}

fn dist(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut v = v.to_vec();
    format!(
        "median {:.2} / p95 {:.2} / p99 {:.2} / max {:.2} ms (n={})",
        median(&mut v),
        percentile(&mut v, 95.0),
        percentile(&mut v, 99.0),
        percentile(&mut v, 100.0),
        v.len()
    )
}

fn uptime() -> String {
    hutch_tests::output(&mut Command::new("uptime"))
        .stdout
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .trim()
        .to_string()
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--login") && argv.len() == 4 {
        login(Path::new(&argv[2]), &argv[3]);
    }
    let a = args()?;
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "scale must run as root");
    // A private mount namespace before any thread or keeper exists: the
    // template the keepers load, the private /dev, all stay in it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    hutch_runtime::rootfs::make_root_private()?;
    // Two pipe ends a login, and the keepers inherit the limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    let exe = std::env::current_exe()?;
    if std::env::var_os("HUTCH_BIN_DIR").is_none() {
        if let Some(dir) = exe.parent() {
            std::env::set_var("HUTCH_BIN_DIR", dir);
        }
    }
    let mut stop = Stop::new()?;
    let hutch = HutchEnv::new(&format!("[defaults]\n{}\n", a.policy));
    let tag = hutch.cgroup_root.clone();
    let r = run(&a, &exe, &hutch, &mut stop);
    drop(hutch);
    let left = hutch_tests::leftovers(&tag);
    if !left.is_empty() {
        eprintln!("left behind:\n{}", left.join("\n"));
    }
    r?;
    anyhow::ensure!(left.is_empty(), "the bench left things behind (above)");
    println!("cleanup: nothing left (hutch_tests::leftovers {tag}), users removed");
    Ok(())
}

fn run(a: &Args, exe: &Path, hutch: &HutchEnv, stop: &mut Stop) -> anyhow::Result<()> {
    // pam_hutch's and pam_unix's syslog lines, to name a failure's cause.
    let log = Syslog::bind(hutch.dir.join("log.sock"));
    hutch_tests::run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(hutch_tests::ns::private_dev_script(log.path())),
    );
    let confdir = hutch.dir.join("pam.d");
    std::fs::create_dir(&confdir)?;
    std::fs::write(confdir.join(SERVICE), hutch.pam_stack(""))?;
    println!(
        "scale: {} users within {} s (offered {:.1}/s), at most {} in flight, hold {} s; debug={}",
        a.users,
        a.within,
        a.users as f64 / a.within,
        a.concurrency,
        a.hold,
        cfg!(debug_assertions)
    );
    println!(
        "  policy [defaults]: {}",
        a.policy.trim().replace('\n', ", ")
    );
    println!("  before: {}", uptime());

    let t = Instant::now();
    let mut users: Vec<TestUser> = Vec::with_capacity(a.users);
    for _ in 0..a.users {
        stop.check()?;
        users.push(hutch.user());
    }
    println!(
        "  {} users made in {:.1} s",
        users.len(),
        t.elapsed().as_secs_f64()
    );
    // The template loaded once, as on a host that has had a login since boot.
    let out = hutch.ctl(&["template", "load", hutch_tests::E2E_TEMPLATE]);
    anyhow::ensure!(out.status.success(), "template load: {:?}", out);

    let r = logins_and_hold(a, exe, &confdir, hutch, &users, &log, stop);
    // Users go after their sessions and containers (dropped in `r`'s run).
    drop(users);
    r
}

#[allow(clippy::too_many_arguments)]
fn logins_and_hold(
    a: &Args,
    exe: &Path,
    confdir: &Path,
    hutch: &HutchEnv,
    users: &[TestUser],
    log: &Syslog,
    stop: &mut Stop,
) -> anyhow::Result<()> {
    let mem0 = MemInfo::now();
    let (cg0, _) = memcg_of(&hutch.cgroup_dirs());
    let phase = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(Mutex::new([Probe::default(), Probe::default()]));
    let done = Arc::new(AtomicBool::new(false));
    let _prober = {
        let (p, o, d) = (phase.clone(), probes.clone(), done.clone());
        std::thread::spawn(move || probe_thread(p, o, d))
    };
    struct Done(Arc<AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _done = Done(done.clone());

    // Logins.
    let mut logins = Logins::default();
    println!("  logins start: load {}", loadavg());
    let span = start_logins(a, exe, confdir, users, &mut logins, stop)?;
    let ok: Vec<usize> = (0..logins.0.len())
        .filter(|&i| logins.0[i].open.is_some())
        .collect();
    let failed = logins.0.len() - ok.len();
    let opened = |i: &usize| logins.0[*i].open.unwrap_or_default();
    let mut total: Vec<f64> = ok.iter().map(|i| opened(i).0).collect();
    let mut pam: Vec<f64> = ok.iter().map(|i| opened(i).1).collect();
    println!(
        "logins: {} of {} open in {:.1} s: offered {:.1}/s, achieved {:.1}/s; load {}",
        ok.len(),
        users.len(),
        span,
        a.users as f64 / a.within,
        ok.len() as f64 / span,
        loadavg()
    );
    if !total.is_empty() {
        println!(
            "  spawn to session open: median {:.1} / p95 {:.1} / max {:.1} ms",
            median(&mut total),
            percentile(&mut total, 95.0),
            percentile(&mut total, 100.0)
        );
        println!(
            "  pam_open_session:      median {:.1} / p95 {:.1} / max {:.1} ms",
            median(&mut pam),
            percentile(&mut pam, 95.0),
            percentile(&mut pam, 100.0)
        );
    }
    let lines = log.lines();
    let mut causes: HashMap<String, usize> = HashMap::new();
    for l in logins.0.iter().filter(|l| l.open.is_none()) {
        let name = &users[l.user].name;
        let said: Vec<&String> = lines
            .iter()
            .filter(|x| x.contains("pam_hutch") && hutch_tests::leftovers::names(x, name))
            .collect();
        let cause = format!(
            "{}; {}",
            l.failed.as_deref().unwrap_or("?"),
            said.last()
                .map(|s| s.replace(name.as_str(), "USER"))
                .unwrap_or_else(|| "no pam_hutch line".into())
        );
        *causes.entry(cause).or_default() += 1;
    }
    for (c, n) in &causes {
        println!("  FAILED x{n}: {c}");
    }
    println!(
        "  probe while logging in: fork+exec /bin/true {}",
        dist(&probes.lock().unwrap()[0].exec)
    );
    println!(
        "                          10 ms sleep late by {}",
        dist(&probes.lock().unwrap()[0].sleep)
    );

    // The containers: keeper and init of each, and whether each login
    // process is in its container (the init's mount namespace).
    let mut pids: Vec<(i32, i32)> = Vec::new();
    let mut inside = 0;
    let mut groups: Vec<Vec<PathBuf>> = Vec::new();
    for &i in &ok {
        let l = &logins.0[i];
        let name = &users[l.user].name;
        let st = hutch
            .state(name)
            .ok_or_else(|| anyhow!("no state.json for {name} with a session open"))?;
        let (k, i) = (
            st["keeper_pid"].as_i64().unwrap_or(0) as i32,
            st["init_pid"].as_i64().unwrap_or(0) as i32,
        );
        let ns = |p: i32| hutch_tests::proc::ns_id(p, "mnt");
        if ns(l.child.id() as i32).is_some() && ns(l.child.id() as i32) == ns(i) {
            inside += 1;
        }
        pids.push((k, i));
        groups.push(
            st["cgroups"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|p| p.as_str().map(PathBuf::from))
                        .collect()
                })
                .unwrap_or_default(),
        );
    }
    println!(
        "  login processes inside their container (the init's mount namespace): {inside} of {}",
        ok.len()
    );

    // Hold.
    stop.sleep(Duration::from_secs(5))?;
    phase.store(1, Ordering::Relaxed);
    let mem1 = MemInfo::now();
    let (cg1, _) = memcg_of(&hutch.cgroup_dirs());
    let s0: Vec<(Option<Sample>, Option<Sample>)> =
        pids.iter().map(|&(k, i)| (sample(k), sample(i))).collect();
    let log0 = log.lines().len();
    let keeper_threads: usize = pids.iter().map(|&(k, _)| threads(k)).sum();
    let load0 = loadavg();
    let t = Instant::now();
    println!("hold: {} containers idle for {} s ...", ok.len(), a.hold);
    while t.elapsed() < Duration::from_secs(a.hold) {
        stop.sleep(Duration::from_secs(1).min(Duration::from_secs(a.hold) - t.elapsed()))?;
    }
    let held = t.elapsed().as_secs_f64();
    let s1: Vec<(Option<Sample>, Option<Sample>)> =
        pids.iter().map(|&(k, i)| (sample(k), sample(i))).collect();
    phase.store(2, Ordering::Relaxed);
    let mem2 = MemInfo::now();
    let (cg2, _) = memcg_of(&hutch.cgroup_dirs());
    let log_lines = log.lines().len() - log0;
    let user_mem: Vec<f64> = groups
        .iter()
        .map(|g| memcg_of(g).0 as f64 / 1024.0)
        .collect();
    let load1 = loadavg();
    // Proportional set sizes: the keepers, the inits, and the login
    // processes (the PAM hosts, sshd's monitor in a real login).
    let pss = |pid: i32| {
        hutch_bench::kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0) as f64
    };
    let keeper_pss: f64 = pids.iter().map(|&(k, _)| pss(k)).sum();
    let init_pss: f64 = pids.iter().map(|&(_, i)| pss(i)).sum();
    let host_pss: f64 = ok.iter().map(|&i| pss(logins.0[i].child.id() as i32)).sum();

    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut alive = (0, 0);
    let (mut kt, mut it) = (Vec::new(), Vec::new());
    let (mut kns, mut ins) = (0u64, 0u64);
    let (mut kv, mut ki, mut iv, mut ii) = (0u64, 0u64, 0u64, 0u64);
    let mut busiest: Vec<(u64, u64, i32)> = Vec::new();
    for (((a0, b0), (a1, b1)), &(k, _)) in s0.iter().zip(&s1).zip(&pids) {
        if let (Some(a0), Some(a1)) = (a0, a1) {
            alive.0 += 1;
            kt.push((a1.ticks - a0.ticks) as f64);
            kns += a1.ns - a0.ns;
            kv += a1.vol - a0.vol;
            ki += a1.invol - a0.invol;
            busiest.push((a1.ticks - a0.ticks, a1.vol - a0.vol, k));
        }
        if let (Some(b0), Some(b1)) = (b0, b1) {
            alive.1 += 1;
            it.push((b1.ticks - b0.ticks) as f64);
            ins += b1.ns - b0.ns;
            iv += b1.vol - b0.vol;
            ii += b1.invol - b0.invol;
        }
    }
    let n = ok.len().max(1) as f64;
    let ms = |ticks: f64| ticks / tck * 1e3;
    let (ksum, isum): (f64, f64) = (kt.iter().sum(), it.iter().sum());
    println!(
        "hold: {held:.0} s, {} of {} keepers and {} inits alive at the end, load {load0} -> {load1}",
        alive.0,
        pids.len(),
        alive.1
    );
    println!(
        "  keepers: CPU {:.1} ms in all by schedstat ({:.0} ms by utime+stime ticks), {:.4} ms each \
         ({:.5} % of a core each, {:.3} % of a core all together), max {:.0} ms (ticks); \
         wake-ups {kv} voluntary + {ki} involuntary in all: {:.2} a minute each, {:.1} a second all together; \
         {keeper_threads} threads",
        kns as f64 / 1e6,
        ms(ksum),
        kns as f64 / 1e6 / n,
        kns as f64 / 1e6 / n / (held * 1e3) * 100.0,
        kns as f64 / 1e6 / (held * 1e3) * 100.0,
        ms(kt.iter().cloned().fold(0.0, f64::max)),
        kv as f64 / n / (held / 60.0),
        kv as f64 / held,
    );
    println!(
        "  inits:   CPU {:.1} ms in all by schedstat ({:.0} ms by ticks), {:.4} ms each; \
         wake-ups {iv} + {ii} in all, {:.2} a minute each",
        ins as f64 / 1e6,
        ms(isum),
        ins as f64 / 1e6 / n,
        iv as f64 / n / (held / 60.0)
    );
    busiest.sort();
    if let Some(&(t, v, k)) = busiest.last() {
        println!(
            "  busiest keeper: pid {k}, {:.0} ms, {v} wake-ups",
            ms(t as f64)
        );
    }
    println!("  syslog lines during the hold: {log_lines}");
    {
        let p = probes.lock().unwrap();
        println!("  probe: fork+exec /bin/true {}", dist(&p[1].exec));
        println!("         10 ms sleep late by {}", dist(&p[1].sleep));
    }
    let per = |x: u64, y: u64| (x as f64 - y as f64) / n / 1024.0;
    println!(
        "  memory per container: MemAvailable {:+.0} KiB after the logins, {:+.0} KiB at the end of the hold \
         (machine-wide: other work on the machine moves it); \
         hutch's memcg (keepers + users, kmem included) {:.0} KiB -> {:.0} KiB; \
         Slab {:+.0}, PageTables {:+.0}, KernelStack {:+.0} KiB",
        per(mem1.available, mem0.available),
        per(mem2.available, mem0.available),
        per(cg1, cg0),
        per(cg2, cg0),
        per(mem2.slab, mem0.slab),
        per(mem2.page_tables, mem0.page_tables),
        per(mem2.kernel_stack, mem0.kernel_stack),
    );
    println!(
        "  PSS per container: keeper {:.0} + init {:.0} KiB; the login process holding the session {:.0} KiB",
        keeper_pss / n / 1024.0,
        init_pss / n / 1024.0,
        host_pss / n / 1024.0
    );
    if !user_mem.is_empty() {
        let mut u = user_mem.clone();
        println!(
            "  a container's own memcg (users/NAME): median {:.0} / max {:.0} KiB",
            median(&mut u),
            percentile(&mut u, 100.0)
        );
    }

    // Close.
    let (exited, secs, mut close_ms) = logins.close_all(Duration::from_secs(120));
    let t = Instant::now();
    let mut not_gone = Vec::new();
    for u in users {
        let left = hutch.wait_gone(
            &u.name,
            Duration::from_secs(180).saturating_sub(t.elapsed()),
        );
        if !left.is_empty() {
            not_gone.push(format!("{}: {left:?}", u.name));
        }
    }
    println!(
        "close: {exited} of {} login processes ended in {secs:.1} s; every container gone {:.1} s later; \
         pam_close_session median {:.1} ms",
        logins.0.len(),
        t.elapsed().as_secs_f64(),
        if close_ms.is_empty() {
            f64::NAN
        } else {
            median(&mut close_ms)
        }
    );
    println!("  after: {}", uptime());
    anyhow::ensure!(
        not_gone.is_empty(),
        "{} containers not gone: {}",
        not_gone.len(),
        not_gone.join("; ")
    );
    anyhow::ensure!(failed == 0, "{failed} logins failed (above)");
    Ok(())
}
