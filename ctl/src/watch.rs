//! `hutchctl watch [--interval SECS] [--once]`: a refreshing table of every
//! running container (sessions, frozen, memory, CPU %, pids), redrawn every
//! interval until Ctrl-C. `--once` prints one table without clearing the
//! screen, for scripts. CPU % is the cgroup's CPU time over the wall time
//! between two samples (100 % = one CPU busy).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use hutch_runtime::cgroup::CgroupRoot;
use hutch_runtime::keeper::state::State;

use crate::Cli;

/// One container in one sample.
struct Sample {
    user: String,
    sessions: usize,
    frozen: bool,
    memory: Option<u64>,
    cpu_us: Option<u64>,
    pids: Option<u64>,
}

fn sample(run_dir: &std::path::Path, root: &CgroupRoot) -> anyhow::Result<Vec<Sample>> {
    let dir = hutch_runtime::paths::users_dir(run_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for st in entries
        .flatten()
        .filter_map(|e| State::read(&e.path().join("state.json")).ok())
    {
        let Some(cg) = root.existing(&hutch_runtime::paths::user_cgroup(&st.user)) else {
            continue;
        };
        // A container torn down between the listing and the read is skipped.
        let Ok(stats) = cg.stats() else { continue };
        out.push(Sample {
            frozen: crate::freeze::is_frozen(&cg),
            user: st.user,
            sessions: st.sessions.len(),
            memory: stats.memory_current,
            cpu_us: stats.cpu_usage_us,
            pids: stats.pids_current,
        });
    }
    out.sort_by(|a, b| a.user.cmp(&b.user));
    Ok(out)
}

/// The table for `now`, CPU % against `before` (taken `elapsed` earlier).
fn render(now: &[Sample], before: &HashMap<String, u64>, elapsed: Duration) -> String {
    let mut s = format!(
        "{:<16} {:>4} {:<6} {:>9} {:>6} {:>5}\n",
        "USER", "SESS", "STATE", "MEM", "CPU%", "PIDS"
    );
    for r in now {
        let cpu = match (r.cpu_us, before.get(&r.user)) {
            (Some(n), Some(&b)) if elapsed > Duration::ZERO => {
                format!(
                    "{:.1}",
                    n.saturating_sub(b) as f64 / elapsed.as_micros() as f64 * 100.0
                )
            }
            _ => "-".to_string(),
        };
        s.push_str(&format!(
            "{:<16} {:>4} {:<6} {:>9} {:>6} {:>5}\n",
            r.user,
            r.sessions,
            if r.frozen { "FROZEN" } else { "run" },
            r.memory.map_or_else(
                || "-".into(),
                |m| format!("{:.1}M", m as f64 / (1 << 20) as f64)
            ),
            cpu,
            r.pids.map_or_else(|| "-".into(), |p| p.to_string()),
        ));
    }
    if now.is_empty() {
        s.push_str("(no running containers)\n");
    }
    s
}

/// `hutchctl watch`.
pub fn watch(cli: &Cli, interval: f64, once: bool) -> anyhow::Result<i32> {
    if !(interval.is_finite() && interval >= 0.1) {
        anyhow::bail!("--interval must be at least 0.1 seconds");
    }
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host().clone();
    let root = CgroupRoot::open(&host.cgroup_root)
        .with_context(|| format!("cgroup root {:?}", host.cgroup_root))?;
    let interval = if once {
        Duration::from_millis(250)
    } else {
        Duration::from_secs_f64(interval)
    };
    let mut before: HashMap<String, u64> = HashMap::new();
    let mut at = Instant::now();
    for s in sample(&host.run_dir, &root)? {
        if let Some(c) = s.cpu_us {
            before.insert(s.user, c);
        }
    }
    loop {
        std::thread::sleep(interval);
        let now = sample(&host.run_dir, &root)?;
        let table = render(&now, &before, at.elapsed());
        if once {
            print!("{table}");
            return Ok(0);
        }
        // Home, clear screen; Ctrl-C (default SIGINT) ends it.
        print!(
            "\x1b[H\x1b[2Jhutchctl watch: every {:.1}s (Ctrl-C to quit)\n\n{table}",
            interval.as_secs_f64()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        before = now
            .iter()
            .filter_map(|s| s.cpu_us.map(|c| (s.user.clone(), c)))
            .collect();
        at = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU % is the CPU time over the wall time; no earlier sample gives "-"; frozen shows.
    #[test]
    fn renders_cpu_percent() {
        let now = vec![
            Sample {
                user: "alice".into(),
                sessions: 2,
                frozen: false,
                memory: Some(3 << 20),
                cpu_us: Some(1_500_000),
                pids: Some(7),
            },
            Sample {
                user: "bob".into(),
                sessions: 1,
                frozen: true,
                memory: None,
                cpu_us: Some(10),
                pids: None,
            },
        ];
        let before: HashMap<String, u64> = [("alice".to_string(), 1_000_000)].into();
        let t = render(&now, &before, Duration::from_secs(1));
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[1], ["alice", "2", "run", "3.0M", "50.0", "7"]);
        assert_eq!(lines[2], ["bob", "1", "FROZEN", "-", "-", "-"]);
    }
}
