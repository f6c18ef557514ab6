//! `hutchctl stats [USER] [--json]`: what each running container uses and
//! how often it hit a limit, read from its cgroup (the keeper's state names
//! the users; the cgroup layer reads the counters, v1 or v2 alike).

use std::path::Path;

use anyhow::Context;
use hutch_runtime::cgroup::{CgroupRoot, Stats};
use hutch_runtime::keeper::state::State;

use crate::Cli;

/// One container's line of `hutchctl stats`.
#[derive(Debug)]
pub struct Row {
    pub user: String,
    pub sessions: usize,
    /// Limit notices the keeper wrote to the container's terminals, and the last.
    pub notices: u64,
    pub last_notice: Option<String>,
    /// Absent when the user's cgroup is gone (a stale state file).
    pub stats: Option<Stats>,
}

/// The users with a state file under `run_dir`, sorted.
fn states(run_dir: &Path) -> anyhow::Result<Vec<State>> {
    let dir = hutch_runtime::paths::users_dir(run_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out: Vec<State> = entries
        .flatten()
        .filter_map(|e| State::read(&e.path().join("state.json")).ok())
        .collect();
    out.sort_by(|a, b| a.user.cmp(&b.user));
    Ok(out)
}

/// Counters of every running container (or only `user`'s).
pub fn rows(cli: &Cli, user: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host();
    let root = CgroupRoot::open(&host.cgroup_root)
        .with_context(|| format!("cgroup root {:?}", host.cgroup_root))?;
    let mut rows = Vec::new();
    for st in states(&host.run_dir)? {
        if user.is_some_and(|u| u != st.user) {
            continue;
        }
        let stats = match root.existing(&hutch_runtime::paths::user_cgroup(&st.user)) {
            Some(cg) => Some(
                cg.stats()
                    .with_context(|| format!("reading the counters of {}", st.user))?,
            ),
            None => None,
        };
        rows.push(Row {
            user: st.user.clone(),
            sessions: st.sessions.len(),
            notices: st.notices,
            last_notice: st.last_notice.clone(),
            stats,
        });
    }
    Ok(rows)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "-".to_string(),
        |v| format!("{:.1}M", v as f64 / (1 << 20) as f64),
    )
}

fn secs(us: Option<u64>) -> String {
    us.map_or_else(|| "-".to_string(), |v| format!("{:.2}s", v as f64 / 1e6))
}

/// `hutchctl stats [USER] [--json]`. Exit 1 when USER has no container.
pub fn stats(cli: &Cli, user: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let rows = rows(cli, user)?;
    if let (Some(u), true) = (user, rows.is_empty()) {
        eprintln!("hutchctl: {u} has no running container");
        return Ok(1);
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "user": r.user,
                    "sessions": r.sessions,
                    "stats": r.stats,
                    "notices": r.notices,
                    "last_notice": r.last_notice,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<16} {:>4} {:>9} {:>9} {:>9} {:>9} {:>5} {:>9} {:>9} {:>7} {:>7} {:>4} {:>5} {:>5} {:>9} {:>7}",
        "USER",
        "SESS",
        "MEM",
        "MEM-PEAK",
        "IN-TMPFS",
        "CPU",
        "PIDS",
        "IO-READ",
        "IO-WRITE",
        "R-OPS",
        "W-OPS",
        "OOM",
        "PIDS!",
        "HIGH!",
        "THROTTLED",
        "NOTICES"
    );
    for r in &rows {
        let s = r.stats.clone().unwrap_or_default();
        println!(
            "{:<16} {:>4} {:>9} {:>9} {:>9} {:>9} {:>5} {:>9} {:>9} {:>7} {:>7} {:>4} {:>5} {:>5} {:>9} {:>7}",
            r.user,
            r.sessions,
            mib(s.memory_current),
            mib(s.memory_peak),
            mib(s.shmem),
            secs(s.cpu_usage_us),
            opt(s.pids_current),
            mib(s.io_read_bytes),
            mib(s.io_write_bytes),
            opt(s.io_read_ops),
            opt(s.io_write_ops),
            opt(s.oom_kills),
            opt(s.pids_limit_hits),
            opt(s.memory_high_events),
            secs(s.cpu_throttled_us),
            r.notices,
        );
    }
    Ok(0)
}
