//! The keeper's event loop: sessions open and close, hutchctl asks for the
//! status or a stop, and the linger time runs out.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::proto::{self, Request};
use super::state::SessionState;
use super::{now_unix, Keeper, Session};
use crate::sys;

impl Keeper {
    /// The event loop, until the container is torn down.
    pub(super) fn serve(&mut self) {
        // The first session is on its way (the module that started us), so
        // give it a grace period before an idle keeper goes away.
        let grace = Duration::from_secs(30);
        loop {
            let timeout = match self.idle_since {
                Some(since) if self.sessions.is_empty() => {
                    let wait = if self.next_id == 1 {
                        grace
                    } else {
                        self.policy.linger
                    };
                    let left = wait.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        if self.next_id > 1 && self.keeps_running() {
                            // keep-while-running: a job outlives its session; look again soon.
                            Duration::from_secs(1)
                        } else if self.try_teardown("last session closed") {
                            return;
                        } else {
                            Duration::from_millis(50)
                        }
                    } else {
                        left
                    }
                }
                _ => Duration::from_secs(3600),
            };
            let timeout = match self.log.as_ref().and_then(|l| l.next_tick()) {
                Some(t) => timeout.min(t),
                None => timeout,
            };
            let ptimeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            let listener_fd = self.listener.as_ref().map(|l| l.as_fd());
            let mut fds = Vec::with_capacity(self.sessions.len() + 3);
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.container.pidfd.as_fd(), PollFlags::POLLIN));
            if let Some(l) = listener_fd {
                fds.push(PollFd::new(l, PollFlags::POLLIN));
            }
            for s in &self.sessions {
                fds.push(PollFd::new(s.conn.as_fd(), PollFlags::POLLIN));
            }
            // Last, so that the indices above stay as they are.
            if let Some(l) = &self.log {
                fds.push(PollFd::new(l.fd(), PollFlags::POLLIN));
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
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().map(|r| !r.is_empty()).unwrap_or(false))
                .collect();
            drop(fds);
            if ready[0] {
                if let Ok(Some(sig)) = self.signals.read_signal() {
                    let name = Signal::try_from(sig.ssi_signo as i32)
                        .map(|s| s.as_str())
                        .unwrap_or("signal");
                    self.teardown(&format!("{name} received"));
                    return;
                }
            }
            if ready[1] {
                self.teardown("the container's init exited");
                return;
            }
            let base = if self.listener.is_some() { 3 } else { 2 };
            if let Some(l) = &mut self.log {
                if ready
                    .get(base + self.sessions.len())
                    .copied()
                    .unwrap_or(false)
                {
                    l.readable();
                } else {
                    l.tick();
                }
            }
            // Sessions first (indices stay valid as long as we go backwards).
            for i in (0..self.sessions.len()).rev() {
                if ready[base + i] {
                    self.session_readable(i);
                }
            }
            if self.listener.is_some() && ready[2] {
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

    /// Handles a readable session connection: `CLOSE`, or end of stream.
    fn session_readable(&mut self, i: usize) {
        // A session says nothing but CLOSE; that, end of stream or an
        // error all end it.
        let said = proto::recv(&self.sessions[i].conn);
        {
            let s = self.sessions.remove(i);
            if matches!(&said, Ok(Some((line, _))) if Request::parse(line) == Some(Request::Close))
            {
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
                    s.id,
                    s.state.service,
                    self.sessions.len()
                ),
            );
            if self.sessions.is_empty() {
                self.idle_since = Some(Instant::now());
            }
            self.write_state();
        }
    }

    /// Accepts one connection and serves its request. Returns `Some(reason)`
    /// when the request asks the container to stop.
    fn accept_one(&mut self) -> Option<String> {
        let listener = self.listener.as_ref()?;
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => return None,
        };
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
                st.sessions = self.sessions.iter().map(|s| s.state.clone()).collect();
                let json = serde_json::to_string(&st).unwrap_or_default();
                let _ = proto::send(&conn, &format!("OK\t{json}\n"), &[]);
                None
            }
            Some(Request::Stop) => {
                let _ = proto::send(&conn, "OK\n", &[]);
                Some("stopped by hutchctl".into())
            }
            Some(Request::Close) | None => {
                let _ = proto::send(&conn, "ERR unknown request\n", &[]);
                None
            }
        }
    }

    fn open(&mut self, conn: UnixStream, pid: i32, service: String, tty: String, rhost: String) {
        let user = self.account.name.clone();
        if let Some(max) = self.policy.limits.max_sessions {
            if self.sessions.len() >= max as usize {
                let _ = proto::send(
                    &conn,
                    // Tab-separated like OK: the module passes the text on to the user.
                    &format!(
                        "ERR\t{user} already has {} sessions, the most the policy allows ({max})\n",
                        self.sessions.len()
                    ),
                    &[],
                );
                sys::syslog(
                    libc::LOG_NOTICE,
                    &format!("{user}: session refused: limit of {max} sessions reached"),
                );
                return;
            }
        }
        let origin = match self.cgroup.attach_from(pid) {
            Ok(o) => o,
            Err(e) => {
                let _ = proto::send(
                    &conn,
                    &format!("ERR moving pid {pid} into the container's cgroup: {e}\n"),
                    &[],
                );
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
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
        let _ = conn.set_read_timeout(None);
        sys::syslog(
            libc::LOG_INFO,
            &format!("{user}: session {id} opened (service {service}, tty {tty}, rhost {rhost}, pid {pid})"),
        );
        self.sessions.push(Session {
            id,
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
        });
        self.idle_since = None;
        self.write_state();
    }
}
