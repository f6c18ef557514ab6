//! Policy load and resolve per login, for a 10,000-user, 1,000-group,
//! 50-plan file: parsing it (what every login would pay without a cache)
//! against the on-disk cache keyed by the files' identity (what the PAM
//! module does). Prints the median of each and their ratio.
//!
//! `cargo run --release -p hutch-bench --bin policy_bench [-- ROUNDS]`

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hutch_policy::{Account, CacheUse, Decision, Policy};

/// The target for one login.
const BUDGET: Duration = Duration::from_millis(2);

/// The benchmark policy: defaults, 50 plans, 1,000 groups (each on a plan,
/// with priorities), 10,000 users (each with an own limit, every tenth on a plan).
fn big_policy() -> String {
    let mut text = String::from("[defaults]\nmemory = \"1G\"\npids = 512\n");
    for p in 0..50 {
        text.push_str(&format!(
            "[plans.p{p}]\nmemory = \"{}M\"\ncpu = \"{}%\"\n",
            256 + p,
            50 + p
        ));
    }
    for g in 0..1000 {
        text.push_str(&format!(
            "[groups.g{g}]\nplan = \"p{}\"\npriority = {}\npids = {}\n",
            g % 50,
            g % 7,
            100 + g
        ));
    }
    for u in 0..10_000 {
        text.push_str(&format!("[users.u{u}]\nmemory = \"{}M\"\n", 300 + u % 1000));
        if u % 10 == 0 {
            text.push_str(&format!("plan = \"p{}\"\n", u % 50));
        }
    }
    text
}

fn account() -> Account {
    Account {
        name: "u5000".into(),
        uid: 6000,
        gid: 6000,
        groups: vec!["u5000".into(), "g1".into(), "g2".into(), "g3".into()],
        home: "/home/u5000".into(),
        shell: "/usr/sbin/hutch-shell".into(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One login's work: load (by `load`) and resolve for sshd.
fn login(load: impl Fn() -> Result<Policy>) -> Result<(Duration, Decision)> {
    let t = Instant::now();
    let p = load()?;
    let d = p.resolve(&account(), "sshd");
    Ok((t.elapsed(), d))
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(Ok(21), |s| s.parse())
        .context("ROUNDS must be a number")?;
    let dir = tempfile::tempdir().context("making a temporary directory")?;
    let config = dir.path().join("hutch.toml");
    let cache_dir = dir.path().join("policy-cache");
    let text = big_policy();
    std::fs::write(&config, &text).with_context(|| format!("writing {}", config.display()))?;
    // The cache is only written for files at least a second old (see policy/src/cache.rs).
    std::thread::sleep(Duration::from_millis(1100));

    let t = Instant::now();
    let _: toml::Table = toml::from_str(&text).context("parsing as plain TOML")?;
    let toml_alone = t.elapsed();

    let mut parsed = Vec::new();
    let mut expect = None;
    for _ in 0..rounds {
        let (t, d) = login(|| Policy::load(&config).map_err(Into::into))?;
        parsed.push(t);
        expect = Some(d);
    }

    let (first, used) = Policy::load_cached_traced(&config, &cache_dir);
    first?;
    ensure!(
        used == CacheUse::Written,
        "the first cached load should write the cache, not {used:?}"
    );
    let cache_file = hutch_policy::cache_path(&config, &cache_dir);
    let cache_size = std::fs::metadata(&cache_file)
        .with_context(|| format!("reading {}", cache_file.display()))?
        .len();
    let mut cached = Vec::new();
    for _ in 0..rounds.max(101) {
        let (t, d) = login(|| {
            let (p, used) = Policy::load_cached_traced(&config, &cache_dir);
            ensure!(used == CacheUse::Hit, "expected a cache hit, got {used:?}");
            Ok(p?)
        })?;
        ensure!(
            Some(&d) == expect.as_ref(),
            "the cached policy decided differently: {d:?}"
        );
        cached.push(t);
    }

    let (p, c) = (median(parsed), median(cached));
    println!(
        "policy: {} bytes, 10000 users, 1000 groups, 50 plans; cache {cache_size} bytes",
        text.len()
    );
    println!("TOML parser alone (plain table):     {toml_alone:>10.2?}");
    println!("parse + validate + resolve, median:  {p:>10.2?}   ({rounds} logins)");
    println!(
        "cached load + resolve, median:       {c:>10.2?}   ({} logins)",
        rounds.max(101)
    );
    println!(
        "speed-up: {:.1}x; cached is {:.0}% of the {BUDGET:?} budget",
        p.as_secs_f64() / c.as_secs_f64(),
        100.0 * c.as_secs_f64() / BUDGET.as_secs_f64()
    );
    Ok(())
}
