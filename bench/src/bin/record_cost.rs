//! record_cost: what `hutchctl metrics --textfile F --record` (the package's
//! 15 s timer) costs per container. Makes N cgroups under a root of its own
//! (`users/NAME` in every hierarchy, as a keeper does, so that the counters
//! are read from real cgroup files) and N keeper state files that name this
//! process as their keeper, then times the real hutchctl binary with 1 and
//! with N containers, with and without `--record`, medians of R runs, and
//! prints the cost per container of the metrics and of the recording, and
//! how much the SQLite history grows per container sample (sampling at
//! every run: `usage_interval = 0`); and what
//! pam_hutch's login counters cost a login (the locked read-modify-write of
//! its counters file, on tmpfs under /run as at a login). Root only;
//! removes everything it made.
//!
//! `record_cost [N] [R]` (default 200, 15). `HUTCHCTL` names the binary to
//! time; otherwise the release build beside this one, else the debug one
//! (`cargo build --release -p hutchctl` for the figures that matter).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hutch_bench::median;
use hutch_runtime::cgroup::{CgroupRoot, Limits};
use hutch_runtime::keeper::state::{SessionState, State};

/// The hutchctl binary: `HUTCHCTL`, else release if built, else debug.
fn hutchctl() -> PathBuf {
    if let Some(p) = std::env::var_os("HUTCHCTL") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    for p in ["release", "debug"] {
        let b = target.join(p).join("hutchctl");
        if b.exists() {
            return b;
        }
    }
    panic!("build hutchctl first");
}

/// `n` containers' state files in `run`, each naming this process as its keeper.
fn write_states(run: &Path, n: usize) {
    let users = run.join("users");
    let _ = std::fs::remove_dir_all(&users);
    for i in 0..n {
        let user = format!("rc{i}");
        let dir = users.join(&user);
        std::fs::create_dir_all(&dir).unwrap();
        State {
            user: user.clone(),
            uid: 50_000 + i as u32,
            keeper_pid: std::process::id() as i32,
            init_pid: std::process::id() as i32,
            started: 1_764_000_000,
            template: "bench".into(),
            generation: 1,
            hostname: user.clone(),
            cgroups: vec![],
            cpus: None,
            start_marks: vec![],
            sessions: vec![SessionState {
                id: 1,
                service: "sshd".into(),
                tty: "ssh".into(),
                rhost: "127.0.0.1".into(),
                pid: 1,
                since: 1_764_000_000,
            }],
            notices: 0,
            last_notice: None,
        }
        .write(&dir.join("state.json"))
        .unwrap();
    }
}

/// Median wall time (ms) of `runs` runs of hutchctl with `args`.
fn time(ctl: &Path, config: &Path, args: &[&str], runs: usize) -> f64 {
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let st = Command::new(ctl)
            .arg("--config")
            .arg(config)
            .args(args)
            .status()
            .expect("running hutchctl");
        assert!(st.success(), "hutchctl {args:?}: {st}");
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(&mut v)
}

/// The history's size on disk: the database and its write-ahead log.
fn db_bytes(db: &Path) -> u64 {
    let wal = db.with_extension("db-wal");
    [db, wal.as_path()]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// What counting one login costs pam_hutch: open the counters file (as it
/// does before joining), add a created login's increments (result,
/// histogram), medians over 2000 logins into one file under /run.
fn login_counters() -> anyhow::Result<()> {
    use hutch_runtime::counters;
    let dir = tempfile::tempdir_in("/run")?;
    let path = counters::path_for(Path::new("/etc/hutch/hutch.toml"), &dir.path().join("c"));
    let incs = counters::login(
        "sshd",
        counters::LoginResult::Joined,
        None,
        Some(("join", std::time::Duration::from_micros(900))),
    );
    let mut v = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let f = counters::open_for_update(&path)?;
        counters::add_to(&f, &incs)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "pam_hutch's login counters: {:.1} us a login (open, flock, read, rewrite; {} bytes of counters)",
        median(&mut v),
        std::fs::metadata(&path)?.len()
    );
    Ok(())
}

/// Times the four runs and prints the figures.
fn measure(
    ctl: &Path,
    config: &Path,
    run: &Path,
    db: &Path,
    prom: &str,
    n: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let plain = ["metrics", "--textfile", prom];
    let record = ["metrics", "--textfile", prom, "--record"];
    write_states(run, 1);
    let m1 = time(ctl, config, &plain, runs);
    let r1 = time(ctl, config, &record, runs);
    write_states(run, n);
    let mn = time(ctl, config, &plain, runs);
    let before = db_bytes(db);
    let rn = time(ctl, config, &record, runs);
    let after = db_bytes(db);
    let per = |a: f64, b: f64| (b - a) / (n - 1) as f64;
    let grow = after.saturating_sub(before) as f64 / (runs * n) as f64;
    println!("hutchctl: {}", ctl.display());
    println!("containers: 1 and {n}, medians of {runs} runs (ms)");
    println!("                  1 container   {n} containers   per container");
    println!(
        "metrics           {m1:>11.2}   {mn:>13.2}   {:>10.3} ms",
        per(m1, mn)
    );
    println!(
        "metrics --record  {r1:>11.2}   {rn:>13.2}   {:>10.3} ms",
        per(r1, rn)
    );
    println!(
        "recording alone: {:.3} ms per container per sample (--record less the plain run)",
        per(r1, rn) - per(m1, mn)
    );
    println!("history growth: {grow:.0} bytes per container sample");
    println!(
        "a container running for 30 days: {:.1} MB at one sample a minute (the default usage_interval), {:.1} MB at every 15 s run",
        grow * (86_400.0 / 60.0) * 30.0 / 1e6,
        grow * (86_400.0 / 15.0) * 30.0 / 1e6
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let runs: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    anyhow::ensure!(n >= 2, "N must be at least 2");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "record_cost needs root (it makes cgroups)"
    );
    let ctl = hutchctl();
    let tmp = tempfile::tempdir()?;
    let rel = format!("hutch-rc{}", std::process::id());
    let root = CgroupRoot::open(&rel)?;
    let mut made = Vec::new();
    let limits = Limits {
        memory_max: Some(1 << 30),
        pids_max: Some(512),
        ..Limits::default()
    };
    for i in 0..n {
        made.push(root.create(&format!("users/rc{i}"), &limits)?);
    }
    let db = tmp.path().join("usage.db");
    let config = tmp.path().join("hutch.toml");
    let run = tmp.path().join("run");
    std::fs::write(
        &config,
        format!(
            "[host]\nrun_dir = \"{}\"\nlib_dir = \"{}\"\ncgroup_root = \"{rel}\"\nusage_db = \"{}\"\nusage_interval = 0\n",
            run.display(),
            tmp.path().join("lib").display(),
            db.display()
        ),
    )?;
    let prom = tmp.path().join("hutch.prom");
    let prom = prom.to_string_lossy().to_string();
    let result = measure(&ctl, &config, &run, &db, &prom, n, runs).and_then(|()| login_counters());
    for cg in made {
        let _ = cg.remove();
    }
    for d in root.dirs() {
        let _ = std::fs::remove_dir(d.join("users"));
        let _ = std::fs::remove_dir(&d);
    }
    result
}
