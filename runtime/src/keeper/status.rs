//! `hutch status` inside the container: the keeper's side. A socket of the
//! keeper's (`<run_dir>/users/<user>/status.sock`) is bound into the
//! container at [`crate::paths::STATUS_SOCKET`]; whoever connects gets one
//! JSON [`Status`] and the end of the stream, nothing is read from them.
//!
//! What it says is what the user may know of their own container: its
//! limits, what it uses (the cgroup's counters, the tmpfs file systems it is
//! charged for), how often a limit acted (since the container started and
//! since the asking session's login), the sessions (without host pids),
//! what persists and when the container goes. Only the container's user
//! (or root inside it) is answered, and at most [`RATE`] answers a second
//! (the keeper's time is not charged to the user's quota).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cgroup::Stats;

/// Answers a second, and the burst allowed above it.
pub const RATE: f64 = 10.0;
const BURST: f64 = 20.0;

/// The socket's name in the user's run directory.
pub const SOCKET_NAME: &str = "status.sock";

/// How often a limit acted, from the cgroup's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hits {
    /// Processes the OOM killer ended at the memory limit.
    pub oom_kills: u64,
    /// Forks refused at the pids limit.
    pub pids_refused: u64,
    /// Times memory.high held allocations back (v2; v1 has none).
    pub memory_high: Option<u64>,
    /// Time the CPU quota held the container back, µs.
    pub cpu_throttled_us: u64,
}

impl Hits {
    pub fn from_stats(s: &Stats) -> Hits {
        Hits {
            oom_kills: s.oom_kills.unwrap_or(0),
            pids_refused: s.pids_limit_hits.unwrap_or(0),
            memory_high: s.memory_high_events,
            cpu_throttled_us: s.cpu_throttled_us.unwrap_or(0),
        }
    }

    /// What happened since `base` (counters only grow; a reset reads 0).
    pub fn since(&self, base: &Hits) -> Hits {
        Hits {
            oom_kills: self.oom_kills.saturating_sub(base.oom_kills),
            pids_refused: self.pids_refused.saturating_sub(base.pids_refused),
            memory_high: self
                .memory_high
                .map(|m| m.saturating_sub(base.memory_high.unwrap_or(0))),
            cpu_throttled_us: self.cpu_throttled_us.saturating_sub(base.cpu_throttled_us),
        }
    }
}

/// The container's limits (`None`: none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub memory: Option<u64>,
    pub memory_high: Option<u64>,
    pub swap: Option<u64>,
    /// CPU time as cores (`1.5`).
    pub cpu: Option<f64>,
    /// The CPUs it runs on (a CPU list), when not every host CPU.
    pub cpus: Option<String>,
    pub pids: Option<u64>,
    pub writable_size: u64,
    pub max_sessions: Option<u32>,
}

/// One tmpfs (or the persistent layer) of the container: what is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsUse {
    /// `/tmp`, `/dev/shm`, `/run`, or `/` for the writable layer.
    pub path: String,
    pub used: u64,
    pub size: u64,
    /// tmpfs use is memory, charged to the container's memory limit.
    pub in_memory: bool,
}

/// What the container uses now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub memory: Option<u64>,
    pub memory_peak: Option<u64>,
    /// Of `memory`: what tmpfs files and shared memory hold (memory.stat shmem).
    pub shmem: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub pids: Option<u64>,
    pub file_systems: Vec<FsUse>,
}

/// One open session, as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: u64,
    pub service: String,
    pub tty: String,
    pub rhost: String,
    /// Unix time it opened.
    pub since: u64,
}

/// What persists of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persists {
    pub home: String,
    /// `"ephemeral"` or `"persistent"`.
    pub writable: String,
}

/// The answer to `hutch status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub user: String,
    pub hostname: String,
    pub template: String,
    /// Unix times: the container's start, and now.
    pub started: u64,
    pub now: u64,
    pub limits: Limits,
    pub usage: Usage,
    /// Since the container started.
    pub hits: Hits,
    /// Since the login of the session asking, when it is one of them.
    pub hits_since_login: Option<Hits>,
    /// The asking session's id.
    pub your_session: Option<u64>,
    pub sessions: Vec<SessionInfo>,
    pub persists: Persists,
    /// When the container goes, in words.
    pub teardown: String,
    /// Limit notices written to the sessions' terminals so far.
    pub notices: u64,
    /// The last of them.
    #[serde(default)]
    pub last_notice: Option<String>,
}

/// What [`StatusServer::accept`] found.
pub enum Accepted {
    /// No connection is waiting.
    Nothing,
    /// One was waiting, and is closed unanswered (over the rate).
    OverRate,
    /// One to answer: the stream, the peer's uid and pid.
    Conn(UnixStream, u32, i32),
}

/// The keeper's listening socket (removed when dropped) and its rate limit.
pub struct StatusServer {
    listener: UnixListener,
    path: PathBuf,
    tokens: f64,
    last: Instant,
}

impl StatusServer {
    /// Binds `path` (in the user's 0700 run directory), mode 0666: the
    /// user's processes reach it only through the container's bind.
    pub fn bind(path: &Path) -> std::io::Result<StatusServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        Ok(StatusServer {
            listener,
            path: path.to_path_buf(),
            tokens: BURST,
            last: Instant::now(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The next waiting connection: its stream and the peer's (uid, pid),
    /// or why it is not to be answered.
    pub(super) fn accept(&mut self, spare: &mut super::serve::Spare, user: &str) -> Accepted {
        let Some(conn) = spare.accept(&self.listener, user) else {
            return Accepted::Nothing;
        };
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * RATE).min(BURST);
        self.last = now;
        if self.tokens < 1.0 {
            return Accepted::OverRate;
        }
        self.tokens -= 1.0;
        match nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(cred) => Accepted::Conn(conn, cred.uid(), cred.pid()),
            Err(_) => Accepted::OverRate,
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `status` to `conn` without waiting on it (a reader that does not
/// read gets what fits in the socket's buffer, far more than one answer).
pub fn send(conn: &UnixStream, status: &Status) {
    let Ok(mut json) = serde_json::to_vec(status) else {
        return;
    };
    json.push(b'\n');
    let _ = conn.set_nonblocking(true);
    let _ = nix::sys::socket::send(
        conn.as_raw_fd(),
        &json,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    );
}

/// The session `pid` belongs to: the session process (`sessions`: id, host
/// pid) found among its ancestors, read from /proc (bounded: 64 steps).
pub fn session_of(pid: i32, sessions: &[(u64, i32)]) -> Option<u64> {
    let mut p = pid;
    for _ in 0..64 {
        if let Some((id, _)) = sessions.iter().find(|(_, sp)| *sp == p) {
            return Some(*id);
        }
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let ppid: i32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if ppid <= 1 {
            return None;
        }
        p = ppid;
    }
    None
}

/// Used and total bytes of the file system of `fd` (`fstatfs`).
pub fn fs_use(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let st = nix::sys::statfs::fstatfs(fd).ok()?;
    let bsize = st.block_size() as u64;
    let total = st.blocks() * bsize;
    let free = st.blocks_free() * bsize;
    Some((total.saturating_sub(free), total))
}

/// When the container goes, in words, from the policy's `on_logout`.
pub fn teardown_words(on_logout: &hutch_policy::OnLogout) -> String {
    match on_logout {
        hutch_policy::OnLogout::Kill => "at the last logout".into(),
        hutch_policy::OnLogout::Linger(d) => {
            format!("{} after the last logout", human_duration(*d))
        }
        hutch_policy::OnLogout::KeepWhileRunning => {
            "once the last session has logged out and nothing of yours runs".into()
        }
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

pub(super) fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut x = v as f64;
    let mut u = 0;
    while x >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 || x >= 100.0 || x.fract() < 0.05 {
        format!("{x:.0}{}", UNITS[u])
    } else {
        format!("{x:.1}{}", UNITS[u])
    }
}

fn opt_bytes(v: Option<u64>) -> String {
    v.map_or_else(|| "none".into(), bytes)
}

fn hits_line(h: &Hits) -> String {
    let mut parts = vec![
        format!(
            "{} OOM kill{}",
            h.oom_kills,
            if h.oom_kills == 1 { "" } else { "s" }
        ),
        format!(
            "{} fork{} refused",
            h.pids_refused,
            if h.pids_refused == 1 { "" } else { "s" }
        ),
        format!("CPU throttled {:.1}s", h.cpu_throttled_us as f64 / 1e6),
    ];
    if let Some(m) = h.memory_high {
        parts.push(format!("memory_high reached {m} times"));
    }
    parts.join(", ")
}

/// `hutch status` as text.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13} {v}\n"));
    let age = s.now.saturating_sub(s.started);
    line(
        "container",
        format!(
            "{} ({}), up {}, template {}",
            s.user,
            s.hostname,
            human_age(age),
            s.template
        ),
    );
    let l = &s.limits;
    let u = &s.usage;
    let mem = match (u.memory, l.memory) {
        (Some(used), Some(max)) => format!("{} of {}", bytes(used), bytes(max)),
        (Some(used), None) => format!("{} (no limit)", bytes(used)),
        (None, _) => format!("limit {}", opt_bytes(l.memory)),
    };
    let mut mem = mem;
    if let Some(h) = l.memory_high {
        mem.push_str(&format!(", pressure from {}", bytes(h)));
    }
    if let Some(p) = u.memory_peak {
        mem.push_str(&format!(", peak {}", bytes(p)));
    }
    line("memory", mem);
    if let Some(sh) = u.shmem {
        line("  in tmpfs", format!("{} (counted in memory)", bytes(sh)));
    }
    let cpu = match (l.cpu, &l.cpus) {
        (Some(c), Some(cpus)) => format!("{c} core(s) of time, on CPU {cpus}"),
        (Some(c), None) => format!("{c} core(s) of time"),
        (None, Some(cpus)) => format!("no quota, on CPU {cpus}"),
        (None, None) => "no limit".into(),
    };
    let used = u
        .cpu_seconds
        .map(|c| format!(", used {c:.1}s"))
        .unwrap_or_default();
    line("cpu", format!("{cpu}{used}"));
    line(
        "processes",
        match (u.pids, l.pids) {
            (Some(n), Some(max)) => format!("{n} of {max}"),
            (Some(n), None) => format!("{n} (no limit)"),
            (None, max) => format!("limit {}", max.map_or("none".into(), |m| m.to_string())),
        },
    );
    for f in &u.file_systems {
        let what = if f.path == "/" {
            format!("writable layer ({})", s.persists.writable)
        } else {
            f.path.clone()
        };
        line(
            "disk",
            format!(
                "{what}: {} of {}{}",
                bytes(f.used),
                bytes(f.size),
                if f.in_memory { " (in memory)" } else { "" }
            ),
        );
    }
    line("limit hits", hits_line(&s.hits));
    if let Some(h) = &s.hits_since_login {
        line("  since login", hits_line(h));
    }
    let sess: Vec<String> = s
        .sessions
        .iter()
        .map(|x| {
            let me = if s.your_session == Some(x.id) {
                " (this one)"
            } else {
                ""
            };
            let from = if x.rhost.is_empty() {
                String::new()
            } else {
                format!(" from {}", x.rhost)
            };
            format!("#{} {}{from}{me}", x.id, x.service)
        })
        .collect();
    line("sessions", format!("{}: {}", sess.len(), sess.join(", ")));
    let kept = if s.persists.writable == "persistent" {
        "your home and everything you change outside it (but /tmp, /run, /dev/shm)"
    } else {
        "your home only; changes outside it go at teardown"
    };
    line("persists", kept.into());
    line("teardown", s.teardown.clone());
    if s.notices > 0 {
        let last = s.last_notice.as_deref().unwrap_or("");
        let last = last.strip_prefix("hutch: ").unwrap_or(last);
        line(
            "notices",
            format!("{} limit notice(s) sent, the last: {last}", s.notices),
        );
    }
    out
}

impl super::Keeper {
    /// Answers the connections waiting on the status socket (a few at a
    /// time: the loop comes back for the rest).
    pub(super) fn status_readable(&mut self) {
        for _ in 0..16 {
            let Some(server) = self.status.as_mut() else {
                return;
            };
            match server.accept(&mut self.spare, &self.account.name) {
                Accepted::Nothing => return,
                Accepted::OverRate => continue,
                Accepted::Conn(conn, uid, pid) => {
                    // Only the container's user, or root inside it.
                    if uid == self.account.uid || uid == 0 {
                        send(&conn, &self.status_report(pid));
                    }
                }
            }
        }
    }

    /// The answer for the process `asker` (host pid, from SO_PEERCRED).
    pub(super) fn status_report(&self, asker: i32) -> Status {
        let stats = self.cgroup.stats().unwrap_or_default();
        let hits = Hits::from_stats(&stats);
        let ids: Vec<(u64, i32)> = self
            .sessions
            .iter()
            .map(|s| (s.state.id, s.state.pid))
            .collect();
        let mine = session_of(asker, &ids);
        let hits_since_login = mine
            .and_then(|id| self.sessions.iter().find(|s| s.state.id == id))
            .map(|s| hits.since(&s.baseline));
        let l = &self.policy.limits;
        let persistent = self.policy.writable == hutch_policy::WritableMode::Persistent;
        Status {
            user: self.account.name.clone(),
            hostname: self.state.hostname.clone(),
            template: self.state.template.clone(),
            started: self.state.started,
            now: super::now_unix(),
            limits: Limits {
                memory: l.memory_max,
                memory_high: l.memory_high,
                swap: l.swap_max,
                cpu: l.cpu.map(|c| c.quota_us as f64 / c.period_us.max(1) as f64),
                cpus: self.state.cpus.clone(),
                pids: l.pids_max,
                writable_size: l.writable_size,
                max_sessions: l.max_sessions,
            },
            usage: Usage {
                memory: stats.memory_current,
                memory_peak: stats.memory_peak,
                shmem: stats.shmem,
                cpu_seconds: stats.cpu_usage_us.map(|u| u as f64 / 1e6),
                pids: stats.pids_current,
                file_systems: self.file_systems(persistent),
            },
            hits,
            hits_since_login,
            your_session: mine,
            sessions: self
                .sessions
                .iter()
                .map(|s| SessionInfo {
                    id: s.state.id,
                    service: s.state.service.clone(),
                    tty: s.state.tty.clone(),
                    rhost: s.state.rhost.clone(),
                    since: s.state.since,
                })
                .collect(),
            persists: Persists {
                home: self.account.home.to_string_lossy().into_owned(),
                writable: self.policy.writable.as_str().to_string(),
            },
            teardown: teardown_words(&self.policy.on_logout),
            notices: self.watch.sent,
            last_notice: self.watch.last.clone(),
        }
    }

    /// The container's tmpfs file systems and its writable layer (through
    /// the admin's bind of its upper), each opened from the init's root
    /// without following a symlink.
    fn file_systems(&self, persistent: bool) -> Vec<FsUse> {
        let Ok(root) = std::fs::File::open(format!("/proc/{}/root", self.container.init)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (path, shown, in_memory) in [
            ("/tmp", "/tmp", true),
            ("/dev/shm", "/dev/shm", true),
            ("/run", "/run", true),
            (crate::rootfs::ADMIN_UPPER, "/", !persistent),
        ] {
            let Ok(fd) = crate::inspect::open_dir_strict(root.as_fd(), Path::new(path)) else {
                continue;
            };
            if let Some((used, size)) = fs_use(fd.as_fd()) {
                out.push(FsUse {
                    path: shown.to_string(),
                    used,
                    size,
                    in_memory,
                });
            }
        }
        out
    }
}

/// Group tmpfs/layer figures by path for tests and callers.
pub fn by_path(f: &[FsUse]) -> BTreeMap<&str, &FsUse> {
    f.iter().map(|x| (x.path.as_str(), x)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hits since a baseline subtract counter by counter, never below zero.
    #[test]
    fn hits_since_baseline() {
        let base = Hits {
            oom_kills: 1,
            pids_refused: 5,
            memory_high: Some(2),
            cpu_throttled_us: 10,
        };
        let now = Hits {
            oom_kills: 3,
            pids_refused: 5,
            memory_high: Some(9),
            cpu_throttled_us: 4,
        };
        assert_eq!(
            now.since(&base),
            Hits {
                oom_kills: 2,
                pids_refused: 0,
                memory_high: Some(7),
                cpu_throttled_us: 0
            }
        );
    }

    /// The text form names the limits, the hits and what persists.
    #[test]
    fn renders_the_essentials() {
        let s = Status {
            user: "alice".into(),
            hostname: "alice".into(),
            template: "default".into(),
            started: 1000,
            now: 1600,
            limits: Limits {
                memory: Some(512 << 20),
                memory_high: Some(460 << 20),
                cpu: Some(1.0),
                cpus: Some("1".into()),
                pids: Some(64),
                writable_size: 1 << 30,
                ..Limits::default()
            },
            usage: Usage {
                memory: Some(100 << 20),
                shmem: Some(3 << 20),
                pids: Some(5),
                file_systems: vec![FsUse {
                    path: "/tmp".into(),
                    used: 3 << 20,
                    size: 1 << 30,
                    in_memory: true,
                }],
                ..Usage::default()
            },
            hits: Hits {
                oom_kills: 1,
                ..Hits::default()
            },
            hits_since_login: Some(Hits::default()),
            your_session: Some(2),
            sessions: vec![SessionInfo {
                id: 2,
                service: "sshd".into(),
                tty: "ssh".into(),
                rhost: "10.0.0.9".into(),
                since: 1500,
            }],
            persists: Persists {
                home: "/home/alice".into(),
                writable: "ephemeral".into(),
            },
            teardown: teardown_words(&hutch_policy::OnLogout::Kill),
            notices: 1,
            last_notice: Some("hutch: memory limit 128M reached; killed 7 (x), 120M".into()),
        };
        let t = render(&s);
        for want in [
            "memory        100M of 512M, pressure from 460M",
            "in tmpfs",
            "1 core(s) of time, on CPU 1",
            "5 of 64",
            "/tmp: 3M of 1G (in memory)",
            "1 OOM kill,",
            "#2 sshd from 10.0.0.9 (this one)",
            "your home only",
            "at the last logout",
        ] {
            assert!(t.contains(want), "{want:?} not in:\n{t}");
        }
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }
}
