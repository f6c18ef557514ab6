//! Usage history: per-user samples of what each container used and how
//! often it hit a limit, recorded by `hutchctl metrics --record` (the
//! package's timer, every 15 s) into `<lib_dir>/usage.db`, and
//! `hutchctl report [USER] [--since 7d] [--json|--csv]` over them.
//!
//! The store is SQLite (rusqlite, with SQLite itself bundled: no system
//! library to depend on): one file, transactional, so that a sampler killed
//! half-way leaves whole samples; indexed by user and time, so a report over
//! a week of a thousand users is one aggregate query; retention is a
//! `DELETE` ([host] `usage_retention`, default 30 days). Plain append-only
//! files would need a scan per report and a rewrite per retention pass.
//!
//! A sample holds the container's cumulative counters (CPU time, I/O bytes,
//! OOM kills, pids-limit hits, memory.high events, throttled time) as the
//! cgroup files give them, the memory peak, and the sessions open. A report
//! takes, per container in the window, the last value less the first (or
//! less nothing, for a container made inside the window) and sums the
//! containers of a user; the peak is the highest. Sessions are counted once
//! each (user, container, session id). A container's last sample is the
//! keeper's own, taken at teardown ([`hutch_runtime::usage_spool`]) and
//! recorded at the next run, with the number of sessions it served: so the
//! totals and the session count are whole once the container has gone; for
//! a container still running they are as of its last sample.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

use crate::metrics::Snapshot;
use crate::Cli;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS samples (
    ts INTEGER NOT NULL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    container INTEGER NOT NULL,
    sessions INTEGER NOT NULL,
    cpu_us INTEGER,
    mem_bytes INTEGER,
    mem_peak_bytes INTEGER,
    io_read_bytes INTEGER,
    io_write_bytes INTEGER,
    oom_kills INTEGER,
    pids_limit_hits INTEGER,
    memory_high_events INTEGER,
    cpu_throttled_us INTEGER
);
CREATE INDEX IF NOT EXISTS samples_user_ts ON samples(user, ts);
CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);
CREATE TABLE IF NOT EXISTS sessions (
    user TEXT NOT NULL,
    container INTEGER NOT NULL,
    id INTEGER NOT NULL,
    service TEXT NOT NULL,
    rhost TEXT NOT NULL,
    since INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (user, container, id)
);
CREATE INDEX IF NOT EXISTS sessions_last_seen ON sessions(last_seen);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Opens (making it, mode 0600) the store at `path`.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Made private before SQLite opens it (it would make it 0644).
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)
        .with_context(|| format!("creating the tables of {}", path.display()))?;
    Ok(conn)
}

/// One container's sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub user: String,
    pub uid: u32,
    /// The container: its start time (one user has one container at a time).
    pub container: u64,
    pub sessions: u64,
    pub stats: hutch_runtime::cgroup::Stats,
}

/// One open session seen by a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSeen {
    pub user: String,
    pub container: u64,
    pub id: u64,
    pub service: String,
    pub rhost: String,
    pub since: u64,
}

fn i(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Records one sample of each container and the sessions seen, at `now`,
/// in one transaction; then drops what is older than `retention` (zero:
/// records nothing and keeps nothing).
pub fn record(
    conn: &mut Connection,
    now: u64,
    samples: &[Sample],
    sessions: &[SessionSeen],
    retention: Duration,
) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    if !retention.is_zero() {
        let mut ins = tx.prepare_cached(
            "INSERT INTO samples (ts, user, uid, container, sessions, cpu_us, mem_bytes, mem_peak_bytes,
                io_read_bytes, io_write_bytes, oom_kills, pids_limit_hits, memory_high_events, cpu_throttled_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        for s in samples {
            let st = &s.stats;
            ins.execute(params![
                now as i64,
                s.user,
                s.uid,
                s.container as i64,
                s.sessions as i64,
                i(st.cpu_usage_us),
                i(st.memory_current),
                i(st.memory_peak),
                i(st.io_read_bytes),
                i(st.io_write_bytes),
                i(st.oom_kills),
                i(st.pids_limit_hits),
                i(st.memory_high_events),
                i(st.cpu_throttled_us),
            ])?;
        }
        let mut up = tx.prepare_cached(
            "INSERT INTO sessions (user, container, id, service, rhost, since, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (user, container, id) DO UPDATE SET last_seen = excluded.last_seen",
        )?;
        for s in sessions {
            up.execute(params![
                s.user,
                s.container as i64,
                s.id as i64,
                s.service,
                s.rhost,
                s.since as i64,
                now as i64
            ])?;
        }
    }
    let cutoff = if retention.is_zero() {
        i64::MAX
    } else {
        now.saturating_sub(retention.as_secs()) as i64
    };
    tx.execute("DELETE FROM samples WHERE ts < ?1", [cutoff])?;
    tx.execute("DELETE FROM sessions WHERE last_seen < ?1", [cutoff])?;
    tx.commit()?;
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `metrics --record`: a sample of every live container of the snapshot.
pub fn record_snapshot(cli: &Cli, snap: &Snapshot) -> anyhow::Result<()> {
    let (host, _) = crate::metrics::host_settings(&cli.config);
    let mut samples = Vec::new();
    let mut sessions = Vec::new();
    for c in snap.containers.iter().filter(|c| c.keeper_alive) {
        let st = &c.state;
        samples.push(Sample {
            user: st.user.clone(),
            uid: st.uid,
            container: st.started,
            sessions: st.sessions.len() as u64,
            stats: c.stats.clone().unwrap_or_default(),
        });
        for s in &st.sessions {
            sessions.push(SessionSeen {
                user: st.user.clone(),
                container: st.started,
                id: s.id,
                service: s.service.clone(),
                rhost: s.rhost.clone(),
                since: s.since,
            });
        }
    }
    let path = host.usage_db.clone();
    let mut conn = open(&path)?;
    // At most one sample of the running containers per usage_interval.
    let now = now_unix();
    let last: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'last_sample'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let due =
        last.is_none_or(|t| now.saturating_sub(t.max(0) as u64) >= host.usage_interval.as_secs());
    hutch_runtime::usage_spool::enable(&host.run_dir).with_context(|| {
        format!(
            "making {}",
            hutch_runtime::usage_spool::dir(&host.run_dir).display()
        )
    })?;
    let spooled = hutch_runtime::usage_spool::pending(&host.run_dir);
    for (_, f) in &spooled {
        let last = Sample {
            user: f.user.clone(),
            uid: f.uid,
            container: f.container,
            sessions: f.sessions,
            stats: f.stats.clone(),
        };
        // Every session it served, also those too short for a sample to see.
        let served: Vec<SessionSeen> = (1..=f.served)
            .map(|id| SessionSeen {
                user: f.user.clone(),
                container: f.container,
                id,
                service: "-".into(),
                rhost: "-".into(),
                since: f.container,
            })
            .collect();
        record(&mut conn, f.ts, &[last], &served, host.usage_retention)
            .with_context(|| format!("recording usage in {}", path.display()))?;
    }
    for (file, _) in &spooled {
        let _ = std::fs::remove_file(file);
    }
    if !due {
        samples.clear();
        sessions.clear();
    }
    if due {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('last_sample', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [now as i64],
        )?;
    }
    record(&mut conn, now, &samples, &sessions, host.usage_retention)
        .with_context(|| format!("recording usage in {}", path.display()))
}

/// What one user used over a report's window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub user: String,
    pub uid: u32,
    pub containers: u64,
    pub samples: u64,
    /// First and last sample in the window (Unix time).
    pub first: u64,
    pub last: u64,
    pub cpu_seconds: f64,
    pub memory_peak_bytes: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids_limit_hits: Option<u64>,
    pub memory_high_events: Option<u64>,
    pub cpu_throttled_seconds: f64,
    pub sessions: u64,
}

impl Usage {
    /// Whether the user hit any limit in the window.
    pub fn hit_limits(&self) -> bool {
        [
            self.oom_kills,
            self.pids_limit_hits,
            self.memory_high_events,
        ]
        .iter()
        .any(|v| v.unwrap_or(0) > 0)
            || self.cpu_throttled_seconds > 0.0
    }
}

fn add(a: Option<u64>, b: Option<i64>) -> Option<u64> {
    match (a, b) {
        (a, None) => a,
        (a, Some(b)) => Some(a.unwrap_or(0) + b.max(0) as u64),
    }
}

/// Usage per user (or only `user`) from `since` (Unix time) on, sorted by user.
pub fn query(conn: &Connection, user: Option<&str>, since: u64) -> anyhow::Result<Vec<Usage>> {
    let delta = |c: &str| format!("MAX({c}) - CASE WHEN container < ?1 THEN MIN({c}) ELSE 0 END");
    let sql = format!(
        "SELECT user, MAX(uid), container, COUNT(*), MIN(ts), MAX(ts), {}, MAX(mem_peak_bytes), {}, {}, {}, {}, {}, {}
         FROM samples WHERE ts >= ?1 AND (?2 IS NULL OR user = ?2)
         GROUP BY user, container ORDER BY user, container",
        delta("cpu_us"),
        delta("io_read_bytes"),
        delta("io_write_bytes"),
        delta("oom_kills"),
        delta("pids_limit_hits"),
        delta("memory_high_events"),
        delta("cpu_throttled_us"),
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params![since as i64, user])?;
    let mut out: Vec<Usage> = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        if out.last().is_none_or(|u| u.user != name) {
            out.push(Usage {
                user: name.clone(),
                uid: r.get::<_, i64>(1)? as u32,
                first: u64::MAX,
                ..Usage::default()
            });
        }
        let u = out.last_mut().expect("pushed");
        u.containers += 1;
        u.samples += r.get::<_, i64>(3)? as u64;
        u.first = u.first.min(r.get::<_, i64>(4)? as u64);
        u.last = u.last.max(r.get::<_, i64>(5)? as u64);
        u.cpu_seconds += r.get::<_, Option<i64>>(6)?.unwrap_or(0).max(0) as f64 / 1e6;
        let peak = r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64);
        u.memory_peak_bytes = u.memory_peak_bytes.max(peak);
        u.io_read_bytes = add(u.io_read_bytes, r.get(8)?);
        u.io_write_bytes = add(u.io_write_bytes, r.get(9)?);
        u.oom_kills = add(u.oom_kills, r.get(10)?);
        u.pids_limit_hits = add(u.pids_limit_hits, r.get(11)?);
        u.memory_high_events = add(u.memory_high_events, r.get(12)?);
        u.cpu_throttled_seconds += r.get::<_, Option<i64>>(13)?.unwrap_or(0).max(0) as f64 / 1e6;
    }
    let mut count =
        conn.prepare("SELECT COUNT(*) FROM sessions WHERE user = ?1 AND last_seen >= ?2")?;
    for u in &mut out {
        u.sessions = count.query_row(params![u.user, since as i64], |r| r.get::<_, i64>(0))? as u64;
    }
    Ok(out)
}

/// How `report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

const COLUMNS: [&str; 13] = [
    "user",
    "sessions",
    "containers",
    "cpu_seconds",
    "memory_peak_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "oom_kills",
    "pids_limit_hits",
    "memory_high_events",
    "cpu_throttled_seconds",
    "first",
    "last",
];

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "-".to_string(),
        |v| format!("{:.1}M", v as f64 / (1 << 20) as f64),
    )
}

/// The report's text in `format`.
pub fn render(rows: &[Usage], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_default() + "\n",
        Format::Csv => {
            let mut out = COLUMNS.join(",") + "\n";
            for u in rows {
                let csv_opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
                // User names cannot hold a comma or a quote (NSS names); quote anyway.
                out.push_str(&format!(
                    "\"{}\",{},{},{:.3},{},{},{},{},{},{},{:.3},{},{}\n",
                    u.user.replace('"', "\"\""),
                    u.sessions,
                    u.containers,
                    u.cpu_seconds,
                    csv_opt(u.memory_peak_bytes),
                    csv_opt(u.io_read_bytes),
                    csv_opt(u.io_write_bytes),
                    csv_opt(u.oom_kills),
                    csv_opt(u.pids_limit_hits),
                    csv_opt(u.memory_high_events),
                    u.cpu_throttled_seconds,
                    u.first,
                    u.last
                ));
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "{:<16} {:>5} {:>10} {:>9} {:>9} {:>9} {:>4} {:>5} {:>5} {:>9} LIMITS\n",
                "USER",
                "SESS",
                "CPU",
                "MEM-PEAK",
                "IO-READ",
                "IO-WRITE",
                "OOM",
                "PIDS!",
                "HIGH!",
                "THROTTLED"
            );
            for u in rows {
                out.push_str(&format!(
                    "{:<16} {:>5} {:>10} {:>9} {:>9} {:>9} {:>4} {:>5} {:>5} {:>9} {}\n",
                    u.user,
                    u.sessions,
                    format!("{:.1}s", u.cpu_seconds),
                    mib(u.memory_peak_bytes),
                    mib(u.io_read_bytes),
                    mib(u.io_write_bytes),
                    opt(u.oom_kills),
                    opt(u.pids_limit_hits),
                    opt(u.memory_high_events),
                    format!("{:.1}s", u.cpu_throttled_seconds),
                    if u.hit_limits() { "HIT" } else { "-" }
                ));
            }
            out
        }
    }
}

/// `hutchctl report [USER] [--since D] [--json|--csv]`. Exit 1 when USER has no samples.
pub fn report(cli: &Cli, user: Option<&str>, since: &str, format: Format) -> anyhow::Result<i32> {
    let window = hutch_policy::units::parse_duration(since)
        .map_err(|e| anyhow::anyhow!("--since {since:?}: {e}"))?;
    let (host, _) = crate::metrics::host_settings(&cli.config);
    let path = host.usage_db.clone();
    if !path.exists() {
        eprintln!(
            "hutchctl: no usage recorded yet ({} is missing; hutch-metrics.timer runs `hutchctl metrics --record`)",
            path.display()
        );
        return Ok(1);
    }
    let conn = open(&path)?;
    let rows = query(&conn, user, now_unix().saturating_sub(window.as_secs()))?;
    if let (Some(u), true) = (user, rows.is_empty()) {
        eprintln!("hutchctl: no samples of {u} in the last {since}");
        return Ok(1);
    }
    print!("{}", render(&rows, format));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_runtime::cgroup::Stats;

    fn sample(user: &str, container: u64, cpu_s: u64, oom: u64, peak: u64) -> Sample {
        Sample {
            user: user.into(),
            uid: 1001,
            container,
            sessions: 1,
            stats: Stats {
                cpu_usage_us: Some(cpu_s * 1_000_000),
                oom_kills: Some(oom),
                memory_peak: Some(peak),
                io_read_bytes: Some(cpu_s * 10),
                ..Stats::default()
            },
        }
    }

    fn session(user: &str, container: u64, id: u64) -> SessionSeen {
        SessionSeen {
            user: user.into(),
            container,
            id,
            service: "sshd".into(),
            rhost: "127.0.0.1".into(),
            since: container,
        }
    }

    /// Deltas per container, summed per user; a container older than the
    /// window counts from its first sample in it; peaks are the highest;
    /// sessions once each; retention drops old samples.
    #[test]
    fn record_query_retain() {
        let d = tempfile::tempdir().unwrap();
        let mut c = open(&d.path().join("usage.db")).unwrap();
        let keep = Duration::from_secs(1000);
        // alice: container 100 (before the window at 150), samples at 100, 200, 300.
        record(
            &mut c,
            100,
            &[sample("alice", 100, 5, 0, 10)],
            &[session("alice", 100, 1)],
            keep,
        )
        .unwrap();
        record(
            &mut c,
            200,
            &[sample("alice", 100, 7, 1, 30), sample("bob", 190, 1, 0, 5)],
            &[session("alice", 100, 1), session("alice", 100, 2)],
            keep,
        )
        .unwrap();
        record(&mut c, 300, &[sample("alice", 100, 10, 1, 20)], &[], keep).unwrap();
        // alice's second container, made in the window.
        record(
            &mut c,
            400,
            &[sample("alice", 350, 4, 2, 50)],
            &[session("alice", 350, 1)],
            keep,
        )
        .unwrap();
        let rows = query(&c, None, 150).unwrap();
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(a.user, "alice");
        assert_eq!(a.containers, 2);
        assert_eq!(a.cpu_seconds, 3.0 + 4.0, "{a:?}");
        assert_eq!(
            a.oom_kills,
            Some(2),
            "0 in the first container, 2 in the second"
        );
        assert_eq!(a.memory_peak_bytes, Some(50));
        assert_eq!(a.sessions, 3);
        assert!(a.hit_limits());
        assert_eq!((a.first, a.last), (200, 400));
        let b = &rows[1];
        assert_eq!(
            (b.user.as_str(), b.cpu_seconds, b.io_read_bytes),
            ("bob", 1.0, Some(10))
        );
        assert!(!b.hit_limits());
        assert_eq!(query(&c, Some("bob"), 0).unwrap().len(), 1);
        // Retention: at 1250, everything before 250 goes.
        record(&mut c, 1250, &[], &[], keep).unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        // Zero retention keeps nothing.
        record(
            &mut c,
            1300,
            &[sample("carol", 1, 1, 0, 1)],
            &[],
            Duration::ZERO,
        )
        .unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    /// JSON and CSV carry every column; the table flags limit hits.
    #[test]
    fn formats() {
        let u = Usage {
            user: "alice".into(),
            uid: 1001,
            cpu_seconds: 1.5,
            oom_kills: Some(1),
            ..Usage::default()
        };
        let csv = render(std::slice::from_ref(&u), Format::Csv);
        assert!(
            csv.starts_with("user,sessions,containers,cpu_seconds,"),
            "{csv}"
        );
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("\"alice\",0,0,1.500,,,,1,"),
            "{csv}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(std::slice::from_ref(&u), Format::Json)).unwrap();
        assert_eq!(json[0]["oom_kills"], 1);
        assert!(render(&[u], Format::Table)
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("HIT"));
    }
}
