//! The keeper's event loop: sessions open and close, hutchctl asks for the
//! status or a stop, and the linger time runs out. The bookkeeping of the
//! sessions and the linger decision are [`Sessions`], plain data with the
//! clock passed in, tested without a container.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::audit::Ended;
use super::proto::{self, Refusal, Request};
use super::state::SessionState;
use super::{now_unix, Keeper};
use crate::cgroup;
use crate::error::chain;
use crate::ns::{Namespace, Namespaces};
use crate::sys;

/// How long a keeper waits for its first session (the module that started
/// it is on its way) before an idle keeper goes away.
const GRACE: Duration = Duration::from_secs(30);
/// The poll timeout while sessions are open: nothing is timed then.
const BUSY: Duration = Duration::from_secs(3600);
/// With `on_logout = "keep-while-running"`: how soon to look again whether
/// anything still runs.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// A login holds the user's lock: how soon to try the teardown again.
const RETRY: Duration = Duration::from_millis(50);

/// One live session.
pub(super) struct Session {
    pub(super) conn: UnixStream,
    pub(super) state: SessionState,
    /// Where the session's process (the PAM host: sshd, su, login) came
    /// from; it goes back there when it closes the session.
    pub(super) origin: cgroup::Origin,
    /// The host terminal bound into the container's /dev for this session
    /// (`TTY`), unbound when it ends.
    pub(super) tty_bind: Option<String>,
    /// The limit counters when it opened (`hutch status`: since login).
    pub(super) baseline: super::status::Hits,
}

/// The open sessions, the next session id, and since when none is open.
pub(super) struct Sessions {
    open: Vec<Session>,
    next_id: u64,
    /// When the last session ended (or the keeper started), if none is open.
    idle_since: Option<Instant>,
}

/// What the linger time says the event loop should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Linger {
    /// Nothing is due for this long.
    Wait(Duration),
    /// The container has been idle long enough: tear it down.
    TearDown,
}

impl Sessions {
    /// None open, idle since `now` (the keeper's start).
    pub(super) fn new(now: Instant) -> Sessions {
        Sessions {
            open: Vec::new(),
            next_id: 1,
            idle_since: Some(now),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.open.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Session> {
        self.open.iter()
    }

    /// Session `i`, to record what it says (`TTY`).
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Session> {
        self.open.get_mut(i)
    }

    /// What state.json and `STATUS` list.
    pub(super) fn states(&self) -> Vec<SessionState> {
        self.open.iter().map(|s| s.state.clone()).collect()
    }

    /// Whether one more session may open under the policy's
    /// `max_sessions`; `Err` is the refusal the user sees.
    pub(super) fn admit(&self, user: &str, max: Option<u32>) -> Result<(), String> {
        match max {
            Some(max) if self.open.len() >= max as usize => Err(format!(
                "{user} already has {} sessions, the most the policy allows ({max})",
                self.open.len()
            )),
            _ => Ok(()),
        }
    }

    /// How many session ids were handed out: the sessions this container
    /// served (ids are 1, 2, ...).
    pub(super) fn served(&self) -> u64 {
        self.next_id - 1
    }

    /// The id of the session being opened; never reused, even when
    /// opening it fails after this.
    pub(super) fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A session is open: the container is no longer idle.
    pub(super) fn push(&mut self, s: Session) {
        self.open.push(s);
        self.idle_since = None;
    }

    /// Session `i` ended at `now`; the last one to go starts the linger time.
    pub(super) fn remove(&mut self, i: usize, now: Instant) -> Session {
        let s = self.open.remove(i);
        if self.open.is_empty() {
            self.idle_since = Some(now);
        }
        s
    }

    /// Every session ends with the container (their connections close).
    pub(super) fn clear(&mut self) {
        self.open.clear();
    }

    /// The linger decision at `now`. While a session is open nothing is
    /// due. Before the first session the keeper waits [`GRACE`], after the
    /// last the policy's `linger`; once that has passed the container goes,
    /// unless it is not the first wait and `still_running` says a job
    /// outlives its session (`on_logout = "keep-while-running"`): then look
    /// again in [`LOOK_AGAIN`].
    pub(super) fn linger(
        &self,
        now: Instant,
        linger: Duration,
        still_running: impl FnOnce() -> bool,
    ) -> Linger {
        let Some(since) = self.idle_since.filter(|_| self.open.is_empty()) else {
            return Linger::Wait(BUSY);
        };
        let first = self.next_id == 1;
        let wait = if first { GRACE } else { linger };
        let left = wait.saturating_sub(now.saturating_duration_since(since));
        if !left.is_zero() {
            Linger::Wait(left)
        } else if !first && still_running() {
            Linger::Wait(LOOK_AGAIN)
        } else {
            Linger::TearDown
        }
    }
}

/// One descriptor (the host's /dev/null) held in reserve. A keeper out of
/// descriptors (EMFILE, ENFILE: many sessions against a low
/// RLIMIT_NOFILE) cannot accept, and the waiting connection keeps its
/// listener readable: poll would return at once forever, a busy loop. So
/// [`Spare::accept`] gives the reserve up, accepts the connection and
/// closes it at once (its peer reads end-of-file: a PAM host refuses the
/// session, `hutch status` says the keeper did not answer), and takes the
/// reserve again (the nginx and libuv remedy).
pub(super) struct Spare(Option<OwnedFd>);

impl Spare {
    pub(super) fn open() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
    }

    /// Accepts one connection from `listener` (which poll found
    /// readable), shedding it when the keeper is out of descriptors.
    pub(super) fn accept(&mut self, listener: &UnixListener, user: &str) -> Option<UnixStream> {
        match listener.accept() {
            Ok((c, _)) => Some(c),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                self.0 = None;
                let shed = listener.accept().is_ok();
                *self = Spare::open();
                sys::syslog(
                    libc::LOG_WARNING,
                    &format!(
                        "{user}: out of file descriptors ({e}): {}",
                        if shed {
                            "a connection was closed unanswered"
                        } else {
                            "a connection waits"
                        }
                    ),
                );
                None
            }
            Err(_) => None,
        }
    }
}

/// What a descriptor in the poll set stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Signals,
    Init,
    Listener,
    Session(usize),
    Log,
    Status,
    Limit(usize),
}

impl Keeper {
    /// The event loop, until the container is torn down.
    pub(super) fn serve(&mut self) {
        loop {
            let now = Instant::now();
            let timeout = match self
                .sessions
                .linger(now, self.policy.linger, || self.keeps_running())
            {
                Linger::Wait(d) => d,
                Linger::TearDown if self.try_teardown("last session closed") => return,
                Linger::TearDown => RETRY,
            };
            let timeout = match self.log.as_ref().and_then(|l| l.next_tick()) {
                Some(t) => timeout.min(t),
                None => timeout,
            };
            let timeout = match self.watch.timeout(now, !self.sessions.is_empty()) {
                Some(t) => timeout.min(t),
                None => timeout,
            };
            let ptimeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            let mut sources = vec![Source::Signals, Source::Init];
            let mut fds = vec![
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.container.pidfd.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(l) = &self.listener {
                sources.push(Source::Listener);
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            for (i, s) in self.sessions.iter().enumerate() {
                sources.push(Source::Session(i));
                fds.push(PollFd::new(s.conn.as_fd(), PollFlags::POLLIN));
            }
            if let Some(l) = &self.log {
                sources.push(Source::Log);
                fds.push(PollFd::new(l.fd(), PollFlags::POLLIN));
            }
            if let Some(s) = &self.status {
                sources.push(Source::Status);
                fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
            }
            for (i, (fd, flags)) in self.watch.fds().into_iter().enumerate() {
                sources.push(Source::Limit(i));
                fds.push(PollFd::new(fd, flags));
            }
            match poll(&mut fds, ptimeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    sys::syslog(libc::LOG_ERR, &format!("{}: poll: {e}", self.account.name));
                    self.teardown("internal error");
                    return;
                }
            }
            let ready: Vec<Source> = sources
                .into_iter()
                .zip(&fds)
                .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(s, _)| s)
                .collect();
            drop(fds);
            let is = |s: Source| ready.contains(&s);
            if is(Source::Signals) {
                if let Ok(Some(sig)) = self.signals.read_signal() {
                    let name = Signal::try_from(sig.ssi_signo as i32)
                        .map(|s| s.as_str())
                        .unwrap_or("signal");
                    self.teardown(&format!("{name} received"));
                    return;
                }
            }
            if is(Source::Init) {
                self.teardown("the container's init exited");
                return;
            }
            if let Some(l) = &mut self.log {
                if is(Source::Log) {
                    l.readable();
                } else {
                    l.tick();
                }
            }
            if is(Source::Status) {
                self.status_readable();
            }
            for s in &ready {
                if let Source::Limit(i) = s {
                    self.limit_ready(*i);
                }
            }
            self.watch_tick();
            // Backwards, so that the indices still to come stay valid.
            for i in (0..self.sessions.len()).rev() {
                if is(Source::Session(i)) {
                    self.session_readable(i);
                }
            }
            if is(Source::Listener) {
                if let Some(stop) = self.accept_one() {
                    self.teardown(&stop);
                    return;
                }
            }
        }
    }

    /// With `on_logout = "keep-while-running"`: whether anything but the
    /// init still runs in the container.
    fn keeps_running(&self) -> bool {
        if self.policy.on_logout != hutch_policy::OnLogout::KeepWhileRunning {
            return false;
        }
        let init = self.container.init.as_raw();
        self.cgroup
            .pids()
            .map(|p| p.iter().any(|&pid| pid != init))
            .unwrap_or(false)
    }

    /// Handles a readable session connection: `TTY` (recorded), `CLOSE`,
    /// or end of stream.
    fn session_readable(&mut self, i: usize) {
        // A session says TTY (once, right after OPEN) and CLOSE; CLOSE, end
        // of stream or an error end it.
        let said = proto::recv(&self.sessions.iter().nth(i).expect("a polled session").conn);
        if let Ok(Some((line, _))) = &said {
            if let Some(Request::Tty { path }) = Request::parse(line) {
                match tty_bind_name(&path) {
                    Some(p) => {
                        if let Some(s) = self.sessions.get_mut(i) {
                            s.tty_bind = Some(p.to_string());
                        }
                    }
                    None => sys::syslog(
                        libc::LOG_WARNING,
                        &format!("{}: ignoring the terminal name {path:?}", self.account.name),
                    ),
                }
                return;
            }
        }
        {
            let s = self.sessions.remove(i, Instant::now());
            if let Some(tty) = &s.tty_bind {
                if let Err(e) = unbind_tty(&self.container.namespaces, tty) {
                    sys::syslog(
                        libc::LOG_WARNING,
                        &format!(
                            "{}: removing the terminal bind {tty}: {e}",
                            self.account.name
                        ),
                    );
                }
            }
            let closed = matches!(&said, Ok(Some((line, _))) if Request::parse(line) == Some(Request::Close));
            self.audit_session_close(
                &s,
                if closed {
                    Ended::Logout
                } else {
                    Ended::Disconnected
                },
            );
            if closed {
                // The PAM host closing the session waits for this answer,
                // so its pid is still its own: move it back out of the
                // container's cgroup, or a teardown that follows would kill
                // it before it exits (su would lose the shell's exit status).
                let answer = match self
                    .cgroup
                    .detach(s.state.pid, &s.origin, Some(&self.keepers))
                {
                    Ok(_) => "OK\n".to_string(),
                    Err(e) => {
                        let e = chain(&e);
                        sys::syslog(
                            libc::LOG_WARNING,
                            &format!(
                                "{}: moving pid {} out of the container's cgroup: {e}",
                                self.account.name, s.state.pid
                            ),
                        );
                        format!("ERR\t{e}\n")
                    }
                };
                let _ = proto::send(&s.conn, &answer, &[]);
            }
            sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{}: session {} ({}) closed, {} left",
                    self.account.name,
                    s.state.id,
                    s.state.service,
                    self.sessions.len()
                ),
            );
            self.write_state();
        }
    }

    /// Accepts one connection and serves its request. Returns `Some(reason)`
    /// when the request asks the container to stop.
    fn accept_one(&mut self) -> Option<String> {
        let listener = self.listener.as_ref()?;
        let conn = self.spare.accept(listener, &self.account.name)?;
        self.handle(conn)
    }

    pub(super) fn handle(&mut self, conn: UnixStream) -> Option<String> {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let cred = match getsockopt(&conn, PeerCredentials) {
            Ok(c) => c,
            Err(_) => return None,
        };
        if cred.uid() != 0 {
            let _ = proto::send(&conn, "ERR only root may talk to the keeper\n", &[]);
            return None;
        }
        let line = match proto::recv(&conn) {
            Ok(Some((line, _))) => line,
            _ => return None,
        };
        match Request::parse(&line) {
            Some(Request::Open {
                service,
                tty,
                rhost,
            }) => {
                self.open(conn, cred.pid(), service, tty, rhost);
                None
            }
            Some(Request::Status) => {
                let mut st = self.state.clone();
                st.sessions = self.sessions.states();
                let json = serde_json::to_string(&st).unwrap_or_default();
                let _ = proto::send(&conn, &format!("OK\t{json}\n"), &[]);
                None
            }
            Some(Request::Stop) => {
                let _ = proto::send(&conn, "OK\n", &[]);
                Some("stopped by hutchctl".into())
            }
            Some(Request::Close) | Some(Request::Tty { .. }) | None => {
                let _ = proto::send(&conn, "ERR unknown request\n", &[]);
                None
            }
        }
    }

    fn open(&mut self, conn: UnixStream, pid: i32, service: String, tty: String, rhost: String) {
        let user = self.account.name.clone();
        let max = self.policy.limits.max_sessions;
        if let Err(refusal) = self.sessions.admit(&user, max) {
            // The module passes the text on to the user.
            let _ = proto::send(
                &conn,
                &format!("REFUSED\t{}\t{refusal}\n", Refusal::MaxSessions.label()),
                &[],
            );
            sys::syslog(
                libc::LOG_NOTICE,
                &format!(
                    "{user}: session refused: limit of {} sessions reached",
                    max.unwrap_or_default()
                ),
            );
            return;
        }
        // The leaf's cgroup.procs files, opened at the first session and
        // held until the teardown; a failure to open them falls back to
        // writing by path.
        if self.leaf_procs.is_none() {
            self.leaf_procs = self.cgroup.open_leaf_procs().ok();
        }
        let attached = match &self.leaf_procs {
            Some(held) => self.cgroup.attach_from_held(pid, held),
            None => self.cgroup.attach_from(pid),
        };
        let origin = match attached {
            Ok(o) => o,
            Err(e) => {
                let _ = proto::send(
                    &conn,
                    &format!(
                        "ERR moving pid {pid} into the container's cgroup: {}\n",
                        chain(&e)
                    ),
                    &[],
                );
                return;
            }
        };
        let attached = crate::timing::now_ns();
        let id = self.sessions.take_id();
        let fds = self.container.namespaces.as_fds();
        if let Err(e) = proto::send(
            &conn,
            &format!("OK\t{}\t{id}\n", self.container.init.as_raw()),
            &fds,
        ) {
            sys::syslog(
                libc::LOG_WARNING,
                &format!("{user}: answering session {id}: {e}"),
            );
            return;
        }
        if id == 1 {
            // The first session ends the cold start (crate::timing).
            let sent = crate::timing::now_ns();
            let marks = &mut self.state.start_marks;
            marks.extend([("open_attach".into(), attached), ("open_sent".into(), sent)]);
        }
        let _ = conn.set_read_timeout(None);
        sys::syslog(
            libc::LOG_INFO,
            &format!("{user}: session {id} opened (service {service}, tty {tty}, rhost {rhost}, pid {pid})"),
        );
        self.sessions.push(Session {
            conn,
            state: SessionState {
                id,
                service,
                tty,
                rhost,
                pid,
                since: now_unix(),
            },
            origin,
            tty_bind: None,
            baseline: super::status::Hits::from_stats(&self.cgroup.stats().unwrap_or_default()),
        });
        if let Some(s) = self.sessions.iter().last() {
            self.audit_session_open(s);
        }
        self.write_state();
    }
}

/// A terminal bind's name as the module makes it: `/dev/` and one component
/// (`pts-3`, `tty1`), nothing that could name another place.
fn tty_bind_name(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/dev/")?;
    let ok = !rest.is_empty()
        && rest != "."
        && rest != ".."
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(path)
}

/// Unmounts the terminal bind `path` in the container's mount namespace
/// and removes its mount point, in a forked child (the keeper's own
/// namespaces stay as they are). The container's /dev is a root-owned
/// tmpfs: nothing of the user's is on the way; the final name is not
/// followed (UMOUNT_NOFOLLOW), and the file goes only if the unmount did.
fn unbind_tty(namespaces: &Namespaces, path: &str) -> Result<(), String> {
    use nix::sys::wait::{waitpid, WaitStatus};
    match sys::fork().map_err(|e| format!("fork: {e}"))? {
        sys::Forked::Child => {
            let code = (|| {
                namespaces.join(Namespace::Mnt).map_err(|_| 2)?;
                nix::mount::umount2(
                    path,
                    nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
                )
                .map_err(|e| if e == nix::errno::Errno::EINVAL { 3 } else { 4 })?;
                let _ = std::fs::remove_file(path);
                Ok::<i32, i32>(0)
            })()
            .unwrap_or_else(|c| c);
            sys::exit_now(code)
        }
        sys::Forked::Parent(child) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, 2)) => Err("setns(mnt) failed".into()),
            // Not mounted (any more): nothing to remove.
            Ok(WaitStatus::Exited(_, 3)) => Ok(()),
            Ok(other) => Err(format!("umount2 failed ({other:?})")),
            Err(e) => Err(format!("waitpid: {e}")),
        },
    }
}

/// Only `/dev/` and one plain component is a terminal bind the keeper removes.
#[cfg(test)]
#[test]
fn tty_bind_names() {
    assert_eq!(tty_bind_name("/dev/pts-3"), Some("/dev/pts-3"));
    assert_eq!(tty_bind_name("/dev/tty1"), Some("/dev/tty1"));
    for bad in [
        "/dev/",
        "/dev/..",
        "/dev/a/b",
        "/etc/passwd",
        "/dev/x y",
        "dev/tty1",
    ] {
        assert_eq!(tty_bind_name(bad), None, "{bad}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session over a socket pair (the far end is dropped: nothing reads it).
    fn session(id: u64, service: &str) -> Session {
        let (conn, _) = UnixStream::pair().unwrap();
        Session {
            conn,
            state: SessionState {
                id,
                service: service.into(),
                tty: String::new(),
                rhost: String::new(),
                pid: 4242,
                since: 0,
            },
            origin: cgroup::Origin::default(),
            tty_bind: None,
            baseline: Default::default(),
        }
    }

    fn open(s: &mut Sessions, service: &str) -> u64 {
        let id = s.take_id();
        s.push(session(id, service));
        id
    }

    const LINGER: Duration = Duration::from_secs(5);

    /// Ids count up from 1 and are never reused, also after a session that
    /// failed to open; the states list the open sessions in order.
    #[test]
    fn ids_and_states() {
        let t0 = Instant::now();
        let mut s = Sessions::new(t0);
        assert_eq!(open(&mut s, "sshd"), 1);
        let lost = s.take_id(); // answering it failed: never pushed
        assert_eq!(lost, 2);
        assert_eq!(open(&mut s, "su"), 3);
        let ids: Vec<_> = s
            .states()
            .iter()
            .map(|st| (st.id, st.service.clone()))
            .collect();
        assert_eq!(ids, [(1, "sshd".to_string()), (3, "su".to_string())]);
        let gone = s.remove(0, t0);
        assert_eq!(gone.state.id, 1);
        assert_eq!(s.len(), 1);
        assert_eq!(open(&mut s, "sshd"), 4);
    }

    /// `max_sessions` refuses the one over the limit, naming the count.
    #[test]
    fn admit_counts_open_sessions() {
        let mut s = Sessions::new(Instant::now());
        assert!(s.admit("alice", None).is_ok());
        open(&mut s, "sshd");
        open(&mut s, "sshd");
        assert!(s.admit("alice", Some(3)).is_ok());
        assert_eq!(
            s.admit("alice", Some(2)).unwrap_err(),
            "alice already has 2 sessions, the most the policy allows (2)"
        );
        s.remove(1, Instant::now());
        assert!(s.admit("alice", Some(2)).is_ok());
    }

    /// Before the first session the keeper waits the grace period, whatever
    /// the policy's linger, and keep-while-running does not hold it.
    #[test]
    fn grace_before_the_first_session() {
        let t0 = Instant::now();
        let s = Sessions::new(t0);
        assert_eq!(
            s.linger(t0, LINGER, || panic!("not asked")),
            Linger::Wait(GRACE)
        );
        let later = t0 + GRACE - Duration::from_secs(1);
        assert_eq!(
            s.linger(later, LINGER, || panic!("not asked")),
            Linger::Wait(Duration::from_secs(1))
        );
        assert_eq!(s.linger(t0 + GRACE, LINGER, || true), Linger::TearDown);
    }

    /// While a session is open nothing is timed; the last one to close
    /// starts the linger time, and one that opens meanwhile stops it.
    #[test]
    fn linger_starts_at_the_last_close() {
        let t0 = Instant::now();
        let mut s = Sessions::new(t0);
        open(&mut s, "sshd");
        open(&mut s, "sshd");
        let far = t0 + Duration::from_secs(86_400);
        assert_eq!(s.linger(far, LINGER, || false), Linger::Wait(BUSY));
        let t1 = t0 + Duration::from_secs(100);
        s.remove(1, t1);
        assert_eq!(s.linger(t1, LINGER, || false), Linger::Wait(BUSY));
        let t2 = t1 + Duration::from_secs(10);
        s.remove(0, t2);
        assert_eq!(s.linger(t2, LINGER, || false), Linger::Wait(LINGER));
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(
            s.linger(t3, LINGER, || false),
            Linger::Wait(Duration::from_secs(3))
        );
        // A login within the linger time keeps the container.
        open(&mut s, "su");
        assert_eq!(s.linger(t2 + LINGER, LINGER, || false), Linger::Wait(BUSY));
        s.remove(0, t2 + LINGER);
        assert_eq!(
            s.linger(t2 + LINGER, LINGER, || false),
            Linger::Wait(LINGER)
        );
        assert_eq!(
            s.linger(t2 + LINGER * 2, LINGER, || false),
            Linger::TearDown
        );
    }

    /// Once the linger time is over, a job that outlives its session keeps
    /// the container (looked at again every LOOK_AGAIN); a zero linger goes
    /// at once.
    #[test]
    fn keep_while_running_and_zero_linger() {
        let t0 = Instant::now();
        let mut s = Sessions::new(t0);
        open(&mut s, "cron");
        s.remove(0, t0);
        let over = t0 + LINGER;
        assert_eq!(s.linger(over, LINGER, || true), Linger::Wait(LOOK_AGAIN));
        assert_eq!(s.linger(over, LINGER, || false), Linger::TearDown);
        assert_eq!(s.linger(t0, Duration::ZERO, || false), Linger::TearDown);
        // A clock that reads earlier than the last close is not a panic.
        let mut s = Sessions::new(over);
        open(&mut s, "sshd");
        s.remove(0, over);
        assert_eq!(s.linger(t0, LINGER, || false), Linger::Wait(LINGER));
    }
}
