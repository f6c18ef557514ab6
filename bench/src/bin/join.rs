//! join: a second session's join, phase by phase, many times over one
//! container (issue 15: a join in ≤ 1 ms).
//!
//! Starts one container (a held session), then opens and closes `--joins N`
//! more sessions one after another through `open_session` in a forked
//! child (as pam_hutch does in a PAM host that has loaded NSS already),
//! waiting `--gap-ms G` between them (a quiet spell: the first cgroup v1
//! migration after one may wait an RCU grace period). Prints the median,
//! p95 and minimum of the whole join and of every phase between pam_hutch's
//! start marks (`hutch_runtime::timing`), and the load average.
//!
//! To compare two builds on a loaded machine, alternate runs of each
//! build's binary (each finds its keeper next to itself, or in
//! `HUTCH_BIN_DIR`).
//!
//! Run as root, after `cargo build --release --workspace`:
//! `target/release/join [--joins N] [--gap-ms G]`. It prints the keeper's
//! pid first; `JOIN_WAIT_S=S` waits S seconds before the joins (time to
//! attach `strace -p` or `perf` to the keeper).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use hutch_bench::{hold_session, loadavg, median, open_in_child_marked, percentile};
use hutch_runtime::join::JoinOptions;
use hutch_tests::HutchEnv;

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "run as root");
    let (mut joins, mut gap) = (60usize, 20u64);
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--joins" => joins = it.next().context("--joins N")?.parse()?,
            "--gap-ms" => gap = it.next().context("--gap-ms G")?.parse()?,
            _ => anyhow::bail!("usage: join [--joins N] [--gap-ms G]"),
        }
    }
    if std::env::var_os("HUTCH_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("HUTCH_BIN_DIR", dir);
        }
    }
    let hutch = HutchEnv::new(
        "[defaults]\nhostname = \"join-{user}\"\nmemory = \"1G\"\npids = 512\nnetwork = \"none\"\n",
    );
    let user = hutch.user();
    // NSS loaded in this process (and so in every forked join), as in
    // sshd's monitor.
    hutch_runtime::account::lookup(&user.name)?;
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };

    // Hold one session open; every further open_session joins it.
    let held = hold_session(&opts, &user.name)?;
    hutch_tests::wait_until(Duration::from_secs(30), || {
        hutch.state(&user.name).map(|_| ())
    })
    .context("the container did not come up")?;
    let keeper = hutch.state(&user.name).map(|s| s["keeper_pid"].clone());
    eprintln!("join: keeper pid {}", keeper.unwrap_or_default());
    if let Some(s) = std::env::var("JOIN_WAIT_S")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        std::thread::sleep(Duration::from_secs(s));
    }

    let load0 = loadavg();
    let mut total = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // Two warm-up joins, not counted.
    for i in 0..joins + 2 {
        std::thread::sleep(Duration::from_millis(gap));
        let (ms, [t0, t1], marks) =
            open_in_child_marked(&opts, &user.name).map_err(anyhow::Error::msg)?;
        if i < 2 {
            continue;
        }
        total.push(ms);
        let mut prev = t0;
        let mut all = marks;
        all.push(("open_session returned".into(), t1));
        for (name, t) in all {
            if !order.contains(&name) {
                order.push(name.clone());
            }
            phases
                .entry(name)
                .or_default()
                .push((t as f64 - prev as f64) / 1e6);
            prev = t;
        }
    }
    let load1 = loadavg();
    held.release();
    let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
    anyhow::ensure!(left.is_empty(), "container not torn down: {left:?}");

    let st = |v: &mut Vec<f64>| (median(v), percentile(v, 95.0), percentile(v, 0.0));
    println!(
        "join: {joins} joins, {gap} ms apart; load average {load0} at the start, {load1} at the end; debug={}",
        cfg!(debug_assertions)
    );
    let (m, p, n) = st(&mut total);
    println!(
        "  {:<24} {m:7.3} {p:7.3} {n:7.3}  (median p95 min, ms)",
        "join"
    );
    for name in &order {
        let v = phases.get_mut(name).expect("a phase seen");
        let (m, p, n) = st(v);
        println!("  {name:<24} {m:7.3} {p:7.3} {n:7.3}");
    }
    drop(user);
    Ok(())
}
