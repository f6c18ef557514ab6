//! Telling the user when a limit acts: an OOM kill, a fork the pids limit
//! refused, or heavy CPU throttling reaches every terminal of the
//! container as one line that names the limit, the process and the figure
//! (`hutch: memory limit 512M reached; killed 4242 (python3), 498M`),
//! at most one line of a kind in [`WINDOW`] (the rest are summed up in one
//! line when it ends), counted for `hutch status` and `hutchctl stats`.
//!
//! What wakes the keeper ([`crate::cgroup::events`]): the kernel's own
//! notifications, where it gives them (the memory limit on v1 and v2, the
//! pids limit on v2). v1's pids limit and CPU throttling signal nothing, so
//! for those the keeper looks at two counters every [`LOOK`] while a
//! session is open (bench `notice_cost` measures what that costs). The
//! victim of an OOM kill is the kernel's report in `/dev/kmsg`
//! ([`crate::kmsg`]), read only after an OOM event; its pid is shown as
//! the container sees it, from the group's processes read when the OOM
//! began (both versions signal it before the kill) or from the dying
//! process itself.
//!
//! The lines go to the container's ptys (its own devpts, opened from the
//! init's root without following a name the user controls; only ptys owned
//! by the user) and to the host terminals bound in for a session (su, a
//! console login), each opened `O_NOCTTY | O_NOFOLLOW | O_NONBLOCK` and
//! checked to be a character device; a terminal that would block is skipped.
//! The command names come from the user's processes: only printable ASCII
//! is written.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};

use super::status::bytes;
use super::Keeper;
use crate::cgroup::events::{CpuPeriods, LimitEvents, LimitKind};
use crate::kmsg::{self, Kmsg};
use crate::sys;

/// At most one line of a kind in this time; what comes meanwhile is summed
/// up in one line when it ends.
pub const WINDOW: Duration = Duration::from_secs(10);
/// CPU throttling is told when it begins, and again at most this often.
const CPU_WINDOW: Duration = Duration::from_secs(60);
/// How often the keeper looks at the counters the kernel does not signal
/// (v1 pids, CPU throttling), while a session is open.
pub const LOOK: Duration = Duration::from_secs(5);
/// How long after an OOM event the kernel's report of the kill is waited
/// for, and how often it is looked for meanwhile.
const OOM_REPORT_WAIT: Duration = Duration::from_secs(2);
const OOM_REPORT_POLL: Duration = Duration::from_millis(20);
/// "Heavy" throttling: in at least half of the CPU periods since the last
/// look, and at least this many periods.
const MIN_PERIODS: u64 = 10;

/// Which limit a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Pids,
    Cpu,
}

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    fn window(self) -> Duration {
        match self {
            Kind::Cpu => CPU_WINDOW,
            _ => WINDOW,
        }
    }
}

/// A process as the line names it: its pid in the container (when known)
/// and its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: Option<i32>,
    pub comm: String,
}

impl Proc {
    fn words(&self) -> String {
        let comm = printable(&self.comm);
        match self.pid {
            Some(p) => format!("{p} ({comm})"),
            None => format!("({comm})"),
        }
    }
}

/// Who holds the most of the tasks at the pids limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process, by its threads and children (a fork loop, make's jobs).
    Parent(Proc, u64),
    /// Processes of one command whose parent has gone (orphans the
    /// container's init took over).
    Command(String, u64),
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The OOM killer ended `victim` (holding `rss`), or a process the
    /// kernel's log did not name.
    OomKill {
        limit: Option<u64>,
        victim: Option<(Proc, u64)>,
    },
    /// `refused` forks failed at the pids limit; `in_use` tasks, of which
    /// `holder` holds the most.
    ForksRefused {
        limit: Option<u64>,
        refused: u64,
        in_use: Option<u64>,
        holder: Option<Holder>,
    },
    /// The CPU quota throttled the container in `percent` of the periods
    /// of the last `secs`; `busiest` has used `busy` percent of a core.
    Throttled {
        cores: f64,
        percent: u64,
        secs: u64,
        busiest: Option<(Proc, u64)>,
    },
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self {
            Event::OomKill { .. } => Kind::Memory,
            Event::ForksRefused { .. } => Kind::Pids,
            Event::Throttled { .. } => Kind::Cpu,
        }
    }

    /// The line the user sees.
    pub fn line(&self) -> String {
        match self {
            Event::OomKill { limit, victim } => {
                let what = match victim {
                    Some((p, rss)) => format!("killed {}, {}", p.words(), bytes(*rss)),
                    None => "a process was killed".into(),
                };
                format!("hutch: {} reached; {what}", memory_limit(*limit))
            }
            Event::ForksRefused {
                limit,
                refused,
                in_use,
                holder,
            } => {
                let forks = if *refused == 1 {
                    "a fork refused".to_string()
                } else {
                    format!("{refused} forks refused")
                };
                let detail = match (in_use, holder) {
                    (Some(n), Some(Holder::Parent(p, k))) => {
                        format!(" ({n} in use, {k} of them by {})", p.words())
                    }
                    (Some(n), Some(Holder::Command(c, k))) => {
                        format!(" ({n} in use, {k} of them {})", printable(c))
                    }
                    (Some(n), None) => format!(" ({n} in use)"),
                    _ => String::new(),
                };
                format!("hutch: {} reached; {forks}{detail}", pids_limit(*limit))
            }
            Event::Throttled {
                cores,
                percent,
                secs,
                busiest,
            } => {
                let busy = match busiest {
                    Some((p, b)) => format!("; busiest {} at {b}% of a core", p.words()),
                    None => String::new(),
                };
                format!(
                    "hutch: CPU limit {} reached; throttled in {percent}% of the last {secs}s{busy}",
                    cores_words(*cores)
                )
            }
        }
    }

    /// The line that sums up `more` events of this kind held back in a
    /// window, `self` the last of them.
    fn summary(&self, more: u64) -> String {
        let secs = self.kind().window().as_secs();
        match self {
            Event::OomKill { limit, victim } => {
                let last = match victim {
                    Some((p, rss)) => format!(", the last {}, {}", p.words(), bytes(*rss)),
                    None => String::new(),
                };
                format!(
                    "hutch: {} reached; {more} more process{} killed in {secs}s{last}",
                    memory_limit(*limit),
                    if more == 1 { "" } else { "es" }
                )
            }
            Event::ForksRefused { limit, .. } => format!(
                "hutch: {} reached; {more} more time{} forks were refused in {secs}s",
                pids_limit(*limit),
                if more == 1 { "" } else { "s" }
            ),
            Event::Throttled { .. } => self.line(),
        }
    }
}

fn memory_limit(limit: Option<u64>) -> String {
    match limit {
        Some(l) => format!("memory limit {}", bytes(l)),
        None => "memory limit".into(),
    }
}

fn pids_limit(limit: Option<u64>) -> String {
    match limit {
        Some(l) => format!("process limit {l}"),
        None => "process limit".into(),
    }
}

fn cores_words(c: f64) -> String {
    let n = if c.fract() == 0.0 {
        format!("{c:.0}")
    } else {
        format!("{c:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    };
    format!("{n} core{}", if c == 1.0 { "" } else { "s" })
}

/// `s` with everything but printable ASCII replaced by `?` (a command name
/// is the user's: no escape sequence reaches a terminal), at most 32 bytes.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct Slot {
    /// When the last line of this kind was written.
    last: Option<Instant>,
    /// Events held back since, and the last of them.
    held: u64,
    last_held: Option<Event>,
}

/// The rate limit: per kind, one line in its window; the events held back
/// meanwhile become one line when it ends (CPU ones are dropped).
#[derive(Debug, Default)]
pub struct Limiter {
    slots: [Slot; 3],
}

impl Limiter {
    /// The line to write now for `e`, or `None` when it is held back.
    pub fn offer(&mut self, e: Event, now: Instant) -> Option<String> {
        let kind = e.kind();
        let slot = &mut self.slots[kind.index()];
        let open = slot
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= kind.window());
        if open && slot.held == 0 {
            slot.last = Some(now);
            return Some(e.line());
        }
        if kind != Kind::Cpu {
            slot.held += 1;
            slot.last_held = Some(e);
        }
        None
    }

    /// The summary lines whose window has ended by `now`.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(last) = slot.last else { continue };
            let Some(e) = slot.last_held.take() else {
                continue;
            };
            let window = e.kind().window();
            if now.saturating_duration_since(last) < window {
                slot.last_held = Some(e);
                continue;
            }
            debug_assert_eq!(e.kind().index(), i);
            out.push(e.summary(slot.held));
            slot.held = 0;
            slot.last = Some(now);
        }
        out
    }

    /// How long until a summary is due, if one is held.
    pub fn next_due(&self, now: Instant) -> Option<Duration> {
        self.slots
            .iter()
            .filter_map(|s| {
                let e = s.last_held.as_ref()?;
                let end = s.last? + e.kind().window();
                Some(end.saturating_duration_since(now))
            })
            .min()
    }
}

/// An OOM under way: until when the kernel's report is waited for, and the
/// group's processes when it began (host pid → container pid, command).
struct OomWait {
    until: Instant,
    seen: HashMap<i32, (Option<i32>, String)>,
}

/// The keeper's side of the notices.
#[derive(Default)]
pub(super) struct Watch {
    events: Option<LimitEvents>,
    kmsg: Option<Kmsg>,
    memcg: Option<String>,
    limiter: Limiter,
    oom: Option<OomWait>,
    /// Kills told about (named or not), the v2 `oom` count last seen.
    oom_told: u64,
    oom_entered: Option<u64>,
    pids_seen: u64,
    cpu_last: Option<CpuPeriods>,
    cpu_heavy: bool,
    /// The group's processes' CPU times at the look that saw heavy
    /// throttling begin: the next look confirms it and names the process
    /// that used the most CPU in between ([`busiest_between`]).
    cpu_onset: Option<(Instant, HashMap<i32, CpuTimes>)>,
    /// Whether something needs looking at (v1 pids, CPU), and when next.
    look: bool,
    next_look: Option<Instant>,
    /// Lines written so far, and the last one.
    pub(super) sent: u64,
    pub(super) last: Option<String>,
}

impl Watch {
    /// The watch of `cg`'s limits: the kernel's events, the kernel log
    /// (opened now, read only after an OOM event), the counters' baselines.
    pub(super) fn new(cg: &crate::cgroup::Cgroup, limits: &hutch_policy::Limits) -> Watch {
        let events = match cg.limit_events() {
            Ok(e) => Some(e),
            Err(e) => {
                sys::syslog(
                    libc::LOG_WARNING,
                    &format!(
                        "watching the limits of {}: {} (no OOM notices)",
                        cg.rel(),
                        crate::error::chain(&e)
                    ),
                );
                None
            }
        };
        let pids_watched = events.as_ref().is_some_and(|e| e.watches(LimitKind::Pids));
        Watch {
            kmsg: Kmsg::open_at_end().ok(),
            memcg: cg.memcg_kernel_path(),
            oom_told: cg.oom_kills().ok().flatten().unwrap_or(0),
            oom_entered: cg.oom_events().ok().flatten(),
            pids_seen: cg.pids_refused().ok().and_then(|p| p.0).unwrap_or(0),
            look: limits.cpu.is_some() || (limits.pids_max.is_some() && !pids_watched),
            events,
            ..Watch::default()
        }
    }

    /// The descriptors to poll.
    pub(super) fn fds(&self) -> Vec<(BorrowedFd<'_>, nix::poll::PollFlags)> {
        self.events.as_ref().map(|e| e.fds()).unwrap_or_default()
    }

    /// How long the event loop may sleep as far as the notices go.
    pub(super) fn timeout(&self, now: Instant, sessions_open: bool) -> Option<Duration> {
        let oom = self.oom.as_ref().map(|_| OOM_REPORT_POLL);
        let look = match (self.look && sessions_open, self.next_look) {
            (true, Some(t)) => Some(t.saturating_duration_since(now)),
            (true, None) => Some(Duration::ZERO),
            _ => None,
        };
        [oom, look, self.limiter.next_due(now)]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Keeper {
    /// The limit event source `i` is ready.
    pub(super) fn limit_ready(&mut self, i: usize) {
        let Some(kind) = self.watch.events.as_mut().and_then(|e| e.take(i)) else {
            return;
        };
        let now = Instant::now();
        match kind {
            LimitKind::Memory => self.memory_event(now),
            LimitKind::Pids => self.check_pids(now),
        }
    }

    /// Whatever is due: the report of an OOM under way, a look at the
    /// counters nothing signals, summaries of held-back lines.
    pub(super) fn watch_tick(&mut self) {
        let now = Instant::now();
        if self.watch.oom.is_some() {
            self.resolve_oom(now);
        }
        if self.watch.look && !self.sessions.is_empty() {
            match self.watch.next_look {
                Some(t) if t > now => {}
                first => {
                    if !self
                        .watch
                        .events
                        .as_ref()
                        .is_some_and(|e| e.watches(LimitKind::Pids))
                    {
                        self.check_pids(now);
                    }
                    self.check_cpu(now, first.is_none());
                    self.watch.next_look = Some(now + LOOK);
                }
            }
        } else {
            // Looked at afresh (a new baseline) once a session opens.
            self.watch.next_look = None;
        }
        for line in self.watch.limiter.due(now) {
            self.tell(line);
        }
    }

    /// The memory limit's event: an OOM began (v1), or v2's memory.events
    /// changed (also at `high` and `max`: only a new `oom` or `oom_kill`
    /// counts).
    fn memory_event(&mut self, now: Instant) {
        if let Ok(Some(entered)) = self.cgroup.oom_events() {
            let killed = self.cgroup.oom_kills().ok().flatten().unwrap_or(0);
            if Some(entered) == self.watch.oom_entered && killed <= self.watch.oom_told {
                return;
            }
            self.watch.oom_entered = Some(entered);
        }
        if self.watch.oom.is_none() {
            let seen = self.processes();
            self.watch.oom = Some(OomWait {
                until: now + OOM_REPORT_WAIT,
                seen,
            });
        } else if let Some(w) = &mut self.watch.oom {
            w.until = now + OOM_REPORT_WAIT;
        }
        self.resolve_oom(now);
    }

    /// Tells the kills the kernel has reported for the group; once the
    /// wait is over, the ones it counted and did not name.
    fn resolve_oom(&mut self, now: Instant) {
        let Some(wait) = self.watch.oom.take() else {
            return;
        };
        let memcg = self.watch.memcg.clone().unwrap_or_default();
        let messages = self
            .watch
            .kmsg
            .as_mut()
            .map(Kmsg::read_new)
            .unwrap_or_default();
        let limit = self.policy.limits.memory_max;
        let mut found = 0;
        for k in kmsg::oom_kills(&messages) {
            let known = wait.seen.get(&k.pid);
            if !k.is_in(&memcg, known.is_some()) {
                continue;
            }
            let pid = known.and_then(|(p, _)| *p).or_else(|| ns_pid(k.pid));
            let victim = Proc {
                pid,
                comm: k.comm.clone(),
            };
            sys::syslog(
                libc::LOG_NOTICE,
                &format!(
                    "{}: memory limit reached: the kernel killed pid {} ({}), {} resident",
                    self.account.name,
                    k.pid,
                    printable(&k.comm),
                    bytes(k.rss)
                ),
            );
            self.offer(
                Event::OomKill {
                    limit,
                    victim: Some((victim, k.rss)),
                },
                now,
            );
            found += 1;
        }
        self.watch.oom_told += found;
        let counted = self.cgroup.oom_kills().ok().flatten().unwrap_or(0);
        let over = now >= wait.until;
        if counted > self.watch.oom_told && over {
            // Counted but not reported (the log overwritten, or unreadable).
            self.watch.oom_told = counted;
            self.offer(
                Event::OomKill {
                    limit,
                    victim: None,
                },
                now,
            );
        } else if !over && (found == 0 || counted > self.watch.oom_told) {
            self.watch.oom = Some(wait);
        }
    }

    /// Tells a fork refused at the pids limit since the last look.
    fn check_pids(&mut self, now: Instant) {
        let Ok((Some(refused), in_use)) = self.cgroup.pids_refused() else {
            return;
        };
        if refused <= self.watch.pids_seen {
            return;
        }
        let n = refused - self.watch.pids_seen;
        self.watch.pids_seen = refused;
        let holder = self.holder();
        self.offer(
            Event::ForksRefused {
                limit: self.policy.limits.pids_max,
                refused: n,
                in_use,
                holder,
            },
            now,
        );
    }

    /// Tells heavy throttling by the CPU quota once it has lasted two looks:
    /// the look that sees it begin notes each process's CPU time (only
    /// then: an idle or unthrottled container costs no /proc reads), the
    /// next one, still heavy, tells it with the process whose CPU time grew
    /// the most in between.
    fn check_cpu(&mut self, now: Instant, first: bool) {
        let Some(cpu) = self.policy.limits.cpu else {
            return;
        };
        let Ok(Some(p)) = self.cgroup.cpu_periods() else {
            return;
        };
        let last = self.watch.cpu_last.replace(p);
        let onset = self.watch.cpu_onset.take();
        let Some(last) = last.filter(|_| !first) else {
            return;
        };
        let periods = p.periods.saturating_sub(last.periods);
        let throttled = p.throttled.saturating_sub(last.throttled);
        let heavy = periods >= MIN_PERIODS && throttled * 2 >= periods;
        if !heavy || self.watch.cpu_heavy {
            self.watch.cpu_heavy = heavy;
            return;
        }
        let Some((then, before)) = onset else {
            self.watch.cpu_onset = Some((now, self.cpu_times()));
            return;
        };
        self.watch.cpu_heavy = true;
        let secs = now.saturating_duration_since(then).as_secs_f64();
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let busiest = busiest_between(&before, &self.cpu_times(), self.container.init.as_raw())
            .filter(|_| secs > 0.0)
            .map(|(pid, comm, ticks)| {
                (
                    Proc {
                        pid: ns_pid(pid),
                        comm,
                    },
                    (ticks as f64 / tick / secs * 100.0).round() as u64,
                )
            });
        self.offer(
            Event::Throttled {
                cores: cpu.quota_us as f64 / cpu.period_us.max(1) as f64,
                percent: throttled * 100 / periods.max(1),
                secs: LOOK.as_secs(),
                busiest,
            },
            now,
        );
    }

    /// The CPU times of the group's processes, by host pid.
    fn cpu_times(&self) -> HashMap<i32, CpuTimes> {
        let mut out = HashMap::new();
        for pid in self.cgroup.pids().unwrap_or_default() {
            if let Some(st) = proc_stat(pid) {
                out.insert(
                    pid,
                    CpuTimes {
                        comm: st.comm,
                        ppid: st.ppid,
                        start_ticks: st.start_ticks,
                        ticks: st.cpu_ticks + st.children_ticks,
                    },
                );
            }
        }
        out
    }

    fn offer(&mut self, e: Event, now: Instant) {
        if let Some(line) = self.watch.limiter.offer(e, now) {
            self.tell(line);
        }
    }

    /// Writes `line` to the container's terminals (unless the policy says
    /// `notices = false`), counts it, logs it.
    fn tell(&mut self, line: String) {
        let told = if self.policy.notices {
            format!("told {} terminal(s)", self.write_terminals(&line))
        } else {
            "not told (notices = false)".to_string()
        };
        sys::syslog(
            libc::LOG_INFO,
            &format!("{}: {told}: {line}", self.account.name),
        );
        self.watch.sent += 1;
        self.watch.last = Some(line);
        self.write_state();
    }

    /// The group's processes: host pid → (container pid, command).
    fn processes(&self) -> HashMap<i32, (Option<i32>, String)> {
        let mut out = HashMap::new();
        for pid in self.cgroup.pids().unwrap_or_default() {
            if let Some(st) = proc_stat(pid) {
                out.insert(pid, (ns_pid(pid), st.comm));
            }
        }
        out
    }

    /// Who holds the most tasks: the process with the most threads and
    /// children (a fork loop's parent, make's jobs), or, where more are
    /// orphans of one command (their parent gone, the init their parent
    /// now), that command. The init itself is never named.
    fn holder(&self) -> Option<Holder> {
        let init = self.container.init.as_raw();
        let mut held: HashMap<i32, u64> = HashMap::new();
        let mut orphans: HashMap<String, u64> = HashMap::new();
        let mut comm = HashMap::new();
        for pid in self.cgroup.pids().unwrap_or_default() {
            let Some(st) = proc_stat(pid) else { continue };
            *held.entry(pid).or_default() += st.threads.saturating_sub(1);
            if st.ppid == init {
                *orphans.entry(st.comm.clone()).or_default() += 1;
            } else {
                *held.entry(st.ppid).or_default() += 1;
            }
            comm.insert(pid, st.comm);
        }
        let parent = held
            .into_iter()
            .filter(|(p, _)| *p != init && comm.contains_key(p))
            .max_by_key(|&(p, n)| (n, -p));
        let orphan = orphans.into_iter().max_by_key(|(c, n)| (*n, c.clone()));
        match (parent, orphan) {
            (Some((_, n)), Some((c, k))) if k > n => Some(Holder::Command(c, k)),
            (None, Some((c, k))) => Some(Holder::Command(c, k)),
            (Some((pid, n)), _) => Some(Holder::Parent(
                Proc {
                    pid: ns_pid(pid),
                    comm: comm.remove(&pid).unwrap_or_default(),
                },
                n,
            )),
            (None, None) => None,
        }
    }

    /// Writes `line` to every terminal of the container; how many took it.
    fn write_terminals(&self, line: &str) -> usize {
        let text = format!("\r\n{line}\r\n");
        let Ok(root) = std::fs::File::open(format!("/proc/{}/root", self.container.init)) else {
            return 0;
        };
        let mut done = std::collections::HashSet::new();
        let mut n = 0;
        // The container's own ptys: its devpts instance, names only digits.
        if let Ok(pts) = crate::inspect::open_dir_strict(root.as_fd(), Path::new("/dev/pts")) {
            if is_devpts(pts.as_fd()) {
                for name in pty_names(pts.as_fd()) {
                    if let Some(fd) = open_terminal(pts.as_fd(), &name, Some(self.account.uid)) {
                        n += write_once(&fd, &text, &mut done) as usize;
                    }
                }
            }
        }
        // The host terminals bound in for a session (`/dev/pts-3`).
        if let Ok(dev) = crate::inspect::open_dir_strict(root.as_fd(), Path::new("/dev")) {
            for s in self.sessions.iter() {
                let Some(name) = s.tty_bind.as_deref().and_then(|b| b.strip_prefix("/dev/")) else {
                    continue;
                };
                if let Ok(c) = std::ffi::CString::new(name) {
                    if let Some(fd) = open_terminal(dev.as_fd(), &c, None) {
                        n += write_once(&fd, &text, &mut done) as usize;
                    }
                }
            }
        }
        n
    }
}

/// devpts's `f_type`.
const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

fn is_devpts(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statfs::fstatfs(fd).is_ok_and(|s| s.filesystem_type().0 == DEVPTS_SUPER_MAGIC)
}

/// The pty names in a devpts directory (`0`, `1`, ...; not `ptmx`).
fn pty_names(dir: BorrowedFd<'_>) -> Vec<std::ffi::CString> {
    let Ok(mut d) = nix::dir::Dir::openat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    d.iter()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_bytes();
            !n.is_empty() && n.iter().all(u8::is_ascii_digit)
        })
        .map(|e| e.file_name().to_owned())
        .take(4096)
        .collect()
}

/// Opens `name` in `dir` to write, never following it, never becoming the
/// keeper's controlling terminal, never blocking: a character device, and
/// when `owner` is given, one that uid owns.
fn open_terminal(dir: BorrowedFd<'_>, name: &CStr, owner: Option<u32>) -> Option<OwnedFd> {
    // One name, no symlink, staying below `dir`.
    let fd = sys::openat2(
        dir,
        name,
        libc::O_WRONLY | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .ok()?;
    let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?;
    let chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    (chr && owner.is_none_or(|u| st.st_uid == u)).then_some(fd)
}

/// Writes `text` once per terminal (one seen through two names is written
/// once); whether it went.
fn write_once(fd: &OwnedFd, text: &str, done: &mut std::collections::HashSet<(u64, u64)>) -> bool {
    let Ok(st) = fstat(std::os::fd::AsRawFd::as_raw_fd(fd)) else {
        return false;
    };
    if !done.insert((st.st_dev, st.st_ino)) {
        return false;
    }
    nix::unistd::write(fd, text.as_bytes()).is_ok()
}

/// The fields of /proc/PID/stat the notices use.
struct ProcStat {
    comm: String,
    ppid: i32,
    threads: u64,
    /// utime + stime, and cutime + cstime (its children's, once reaped).
    cpu_ticks: u64,
    children_ticks: u64,
    start_ticks: u64,
}

/// A process's CPU time at a look: its own and that of its children it
/// has reaped, in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CpuTimes {
    comm: String,
    ppid: i32,
    start_ticks: u64,
    ticks: u64,
}

/// The process that used the most CPU between two looks, and how many
/// ticks: what its CPU time grew by (its own, and its children's that
/// ended in between, less what those children had used before the first
/// look), so that the shell or make whose short-lived children did the
/// work is named, and a long-lived process that did its work long ago is
/// not. A pid whose start time changed is a new process. The init
/// (`init`) is never named; `None` when nothing used any.
fn busiest_between(
    before: &HashMap<i32, CpuTimes>,
    after: &HashMap<i32, CpuTimes>,
    init: i32,
) -> Option<(i32, String, u64)> {
    let same = |pid: &i32, b: &CpuTimes| {
        after
            .get(pid)
            .is_some_and(|a| a.start_ticks == b.start_ticks)
    };
    let mut ended: HashMap<i32, u64> = HashMap::new();
    for (_, b) in before.iter().filter(|(pid, b)| !same(pid, b)) {
        *ended.entry(b.ppid).or_default() += b.ticks;
    }
    after
        .iter()
        .filter(|(pid, _)| **pid != init)
        .map(|(pid, a)| {
            let base = before
                .get(pid)
                .filter(|b| b.start_ticks == a.start_ticks)
                .map_or(0, |b| b.ticks + ended.get(pid).copied().unwrap_or(0));
            (*pid, a, a.ticks.saturating_sub(base))
        })
        .filter(|(_, _, used)| *used > 0)
        .max_by_key(|(pid, _, used)| (*used, -*pid))
        .map(|(pid, a, used)| (pid, a.comm.clone(), used))
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields from 3 (state) on.
    let f: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: num(14)? + num(15)?,
        children_ticks: num(16)? + num(17)?,
        threads: num(20)?,
        start_ticks: num(22)?,
    })
}

/// `pid`'s number in its innermost pid namespace (the container's), from
/// `NSpid` in /proc/PID/status.
fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom(pid: i32) -> Event {
        Event::OomKill {
            limit: Some(512 << 20),
            victim: Some((
                Proc {
                    pid: Some(pid),
                    comm: "python3".into(),
                },
                498 << 20,
            )),
        }
    }

    /// The lines name the limit, the process and the figure.
    #[test]
    fn lines() {
        assert_eq!(
            oom(4242).line(),
            "hutch: memory limit 512M reached; killed 4242 (python3), 498M"
        );
        let forks = Event::ForksRefused {
            limit: Some(64),
            refused: 3,
            in_use: Some(64),
            holder: Some(Holder::Parent(
                Proc {
                    pid: Some(7),
                    comm: "make".into(),
                },
                40,
            )),
        };
        assert_eq!(
            forks.line(),
            "hutch: process limit 64 reached; 3 forks refused (64 in use, 40 of them by 7 (make))"
        );
        let orphans = Event::ForksRefused {
            limit: Some(64),
            refused: 1,
            in_use: Some(64),
            holder: Some(Holder::Command("sleep".into(), 50)),
        };
        assert_eq!(
            orphans.line(),
            "hutch: process limit 64 reached; a fork refused (64 in use, 50 of them sleep)"
        );
        let cpu = Event::Throttled {
            cores: 1.5,
            percent: 96,
            secs: 5,
            busiest: Some((
                Proc {
                    pid: None,
                    comm: "cc1".into(),
                },
                100,
            )),
        };
        assert_eq!(
            cpu.line(),
            "hutch: CPU limit 1.5 cores reached; throttled in 96% of the last 5s; busiest (cc1) at 100% of a core"
        );
        assert_eq!(
            Event::OomKill {
                limit: None,
                victim: None
            }
            .line(),
            "hutch: memory limit reached; a process was killed"
        );
    }

    /// A command name cannot carry an escape sequence to a terminal.
    #[test]
    fn command_names_are_printable() {
        assert_eq!(printable("a\x1b]0;x\x07b\u{e9}"), "a?]0;x?b?");
        assert_eq!(printable(&"x".repeat(100)).len(), 32);
    }

    /// One line a kind in the window; what came meanwhile is one summary
    /// line when it ends; kinds do not hold each other back; CPU lines
    /// over the rate are dropped, not summed.
    #[test]
    fn rate_limit() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert!(l.offer(oom(1), t0).is_some());
        assert_eq!(l.next_due(t0), None);
        assert!(l.offer(oom(2), t0 + Duration::from_secs(1)).is_none());
        assert!(l.offer(oom(3), t0 + Duration::from_secs(2)).is_none());
        let forks = Event::ForksRefused {
            limit: Some(8),
            refused: 1,
            in_use: None,
            holder: None,
        };
        assert!(l.offer(forks, t0 + Duration::from_secs(2)).is_some());
        assert_eq!(
            l.next_due(t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert!(l.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            l.due(t0 + WINDOW),
            vec!["hutch: memory limit 512M reached; 2 more processes killed in 10s, the last 3 (python3), 498M".to_string()]
        );
        assert_eq!(l.next_due(t0 + WINDOW), None);
        // The summary opened a new window.
        assert!(l
            .offer(oom(4), t0 + WINDOW + Duration::from_secs(1))
            .is_none());
        assert!(l.due(t0 + WINDOW * 2).len() == 1);
        assert!(l.offer(oom(5), t0 + WINDOW * 4).is_some());

        let cpu = || Event::Throttled {
            cores: 1.0,
            percent: 90,
            secs: 5,
            busiest: None,
        };
        assert!(l.offer(cpu(), t0).is_some());
        assert!(l.offer(cpu(), t0 + Duration::from_secs(30)).is_none());
        assert!(l.due(t0 + Duration::from_secs(120)).is_empty());
        assert!(l.offer(cpu(), t0 + CPU_WINDOW).is_some());
    }

    /// /proc/PID/stat: a command with spaces and parentheses, the parent,
    /// CPU ticks, threads, start time.
    #[test]
    fn stat_fields() {
        let text = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 30 12 5 1 20 0 3 0 5000 1000 100 18446744073709551615";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.comm, "a (b) c");
        assert_eq!(st.ppid, 7);
        assert_eq!(st.cpu_ticks, 42);
        assert_eq!(st.children_ticks, 6);
        assert_eq!(st.threads, 3);
        assert_eq!(st.start_ticks, 5000);
    }

    fn times(list: &[(i32, &str, i32, u64, u64)]) -> HashMap<i32, CpuTimes> {
        list.iter()
            .map(|&(pid, comm, ppid, start_ticks, ticks)| {
                (
                    pid,
                    CpuTimes {
                        comm: comm.into(),
                        ppid,
                        start_ticks,
                        ticks,
                    },
                )
            })
            .collect()
    }

    /// The busiest process is the one whose CPU time grew the most between
    /// the two looks: not a long-lived sshd with much CPU long ago, and, for
    /// work done by short-lived children, the shell that reaped them (less
    /// what they had used before the first look).
    #[test]
    fn busiest_is_the_largest_growth() {
        // sshd: 9000 ticks over its life, 2 since; sh: 300 in the window.
        let before = times(&[
            (1, "hutch-init", 0, 10, 50),
            (10, "sshd", 1, 100, 9000),
            (20, "sh", 10, 8000, 5),
        ]);
        let after = times(&[
            (1, "hutch-init", 0, 10, 900),
            (10, "sshd", 1, 100, 9002),
            (20, "sh", 10, 8000, 305),
        ]);
        assert_eq!(
            busiest_between(&before, &after, 1),
            Some((20, "sh".into(), 300))
        );

        // A loop of short-lived children: the one seen at the first look
        // (40 ticks then) ended; bash reaped it and others, 40 + 200 in all.
        let before = times(&[
            (10, "sshd", 1, 100, 9000),
            (30, "bash", 10, 8000, 20),
            (31, "expr", 30, 8100, 40),
        ]);
        let after = times(&[
            (10, "sshd", 1, 100, 9001),
            (30, "bash", 10, 8000, 20 + 40 + 200),
            (35, "expr", 30, 8400, 3),
        ]);
        assert_eq!(
            busiest_between(&before, &after, 1),
            Some((30, "bash".into(), 200))
        );

        // A pid reused by a new process counts from zero; nothing used: none.
        let before = times(&[(40, "old", 1, 100, 500)]);
        let after = times(&[(40, "new", 1, 9000, 7)]);
        assert_eq!(
            busiest_between(&before, &after, 1),
            Some((40, "new".into(), 7))
        );
        assert_eq!(busiest_between(&after, &after, 1), None);
    }
}
