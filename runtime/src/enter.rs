//! `hutchctl enter`: run a command inside a user's running container, the
//! way an admin needs to (what `nsenter` would do, with hutch's rules).
//!
//! hutchctl forks; the child joins the container's cgroup leaf in every
//! hierarchy, then the init's namespaces ([`Namespaces::join_all`], mount
//! last), and forks again so that the command is inside the pid namespace. The
//! middle process waits for it and passes its exit status on.
//!
//! As the user (the default) the command gets exactly a session's rights
//! ([`privs::become_user`]): empty bounding, inheritable and ambient sets,
//! the user's groups, gid and uid, no_new_privs, and the seccomp profile the container's marker names
//! (what hutch-shell loads). It runs in a session of its own (`setsid`) and
//! never holds the admin's descriptors: [`relay`](crate::relay) gives it a
//! fresh pty made inside the container (when the admin's stdin is a
//! terminal; raw mode, window size and exit status passed through) or
//! pipes, and the middle process copies. When the command exits its side is
//! closed, so nothing the user left behind can read, write or push input
//! into the admin's terminal after hutchctl returns.
//!
//! With `as_root` it stays root with every capability, in the container's
//! namespaces and cgroup, keeping the admin's terminal as its own: for
//! repairs. Nothing is dropped; it is not confined by the container beyond
//! the namespaces (it can remount, change any file of the container, see
//! every process), and loads no seccomp filter.

use std::ffi::CString;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::error::chain;
use crate::inspect::{InspectError, LiveProcess};
use crate::ns::{Namespaces, NsError};
use crate::paths::{Marker, CONTAINER_MARKER};
use crate::privs::{self, Identity};
use crate::relay::{self, Side};
use crate::sys::{self, Forked};
use crate::{seccomp, Kernel};

/// What to run, where, as whom.
#[derive(Debug)]
pub struct EnterSpec<'a> {
    /// The container's init, host pid.
    pub init_pid: i32,
    /// The container's cgroup (the init must be in it).
    pub cgroup: &'a Cgroup,
    /// `None`: stay root (see the module documentation).
    pub identity: Option<Identity>,
    /// Directory to start in, inside the container (`/` if it cannot be entered).
    pub cwd: String,
    /// The program (looked up in the container's PATH) and its arguments.
    pub argv: Vec<CString>,
    /// The whole environment of the command.
    pub env: Vec<CString>,
}

/// Entering failed before the command ran.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error(transparent)]
    Namespaces(#[from] NsError),
    /// The recorded init is gone or not the container's any more.
    #[error(transparent)]
    Init(#[from] InspectError),
    #[error("{op}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("fork")]
    Fork(#[source] std::io::Error),
}

/// Exit status the middle process reports when set-up failed in the
/// container (after the message went to stderr), like env(1)'s 125.
pub const SETUP_FAILED: i32 = 125;

/// Runs `spec.argv` in the container and returns its exit status (128+N
/// when killed by signal N). Must be called single-threaded.
pub fn run(spec: &EnterSpec<'_>) -> Result<i32, EnterError> {
    // The recorded pid, held by a pidfd and checked to be in the
    // container's cgroup; its namespaces opened, then the pidfd checked
    // again: they are that process's, not a later holder's of its number.
    let init = LiveProcess::verify(spec.init_pid, spec.cgroup, "the container's cgroup")?;
    let namespaces = Namespaces::open(init.pid)?;
    init.still_alive()?;
    // The terminal's Ctrl-C reaches hutchctl too: it waits, the middle
    // process decides. Blocked here, they die pending with hutchctl.
    let mut waiting = SigSet::empty();
    waiting.add(Signal::SIGINT);
    waiting.add(Signal::SIGQUIT);
    waiting.thread_block().map_err(|source| EnterError::Sys {
        op: "blocking SIGINT/SIGQUIT",
        source,
    })?;
    // The relay puts the admin's terminal in raw mode and restores it; this
    // restores it too should the middle process die without doing so.
    let modes = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
    let restore = || {
        if let Some(m) = &modes {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSADRAIN,
                m,
            );
        }
    };
    match sys::fork().map_err(EnterError::Fork)? {
        Forked::Child => {
            let code = match middle(spec, &namespaces) {
                Ok(code) => code,
                Err(msg) => {
                    eprintln!("hutchctl: entering the container: {msg}");
                    SETUP_FAILED
                }
            };
            sys::exit_now(code)
        }
        Forked::Parent(child) => {
            drop(namespaces);
            let status = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => break Ok(128 + sig as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(source) => {
                        break Err(EnterError::Sys {
                            op: "waitpid",
                            source,
                        })
                    }
                }
            };
            restore();
            status
        }
    }
}

/// The middle process: cgroup, namespaces, fork, wait, pass the status on.
fn middle(spec: &EnterSpec<'_>, namespaces: &Namespaces) -> Result<i32, String> {
    spec.cgroup
        .attach(nix::unistd::getpid().as_raw())
        .map_err(|e| format!("joining the container's cgroup: {}", chain(&e)))?;
    // Non-dumpable before the first setns: visible to the container's
    // processes from the setns(pid) on.
    namespaces.join_all().map_err(|e| chain(&e))?;
    let mut forwarded = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGWINCH,
        Signal::SIGPIPE,
    ] {
        forwarded.add(s);
    }
    forwarded
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    // As the user: the command's own pty (or pipes), made here in the
    // container's mount namespace; the admin's descriptors stay with us.
    let (relay, side) = match spec.identity {
        Some(_) => {
            let (r, s) = relay::open()?;
            (Some(r), Some(s))
        }
        None => (None, None),
    };
    let child = match sys::fork().map_err(|e| format!("fork in the container: {e}"))? {
        Forked::Child => {
            // Not dropped: its Drop restores the admin's terminal, which is
            // the middle process's business (the command closes every
            // descriptor it does not use before it execs).
            std::mem::forget(relay);
            let err = command(spec, side);
            eprintln!("hutchctl: in the container: {err}");
            sys::exit_now(if err.starts_with("exec") {
                127
            } else {
                SETUP_FAILED
            })
        }
        Forked::Parent(child) => child,
    };
    drop(side);
    // As the user the command leads its own session (and process group) on
    // its own terminal: the relay passes signals sent to us on to it.
    if let Some(relay) = relay {
        return relay.run(child, &forwarded, Pid::from_raw(-child.as_raw()));
    }
    // As root it shares the terminal's process group and gets its signals itself.
    let target = child;
    loop {
        let sig = forwarded.wait().map_err(|e| format!("sigwait: {e}"))?;
        match sig {
            Signal::SIGCHLD => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                Ok(_) => continue,
                Err(e) => return Err(format!("waitpid: {e}")),
            },
            Signal::SIGINT | Signal::SIGQUIT | Signal::SIGWINCH | Signal::SIGPIPE => continue,
            other => {
                let _ = kill(target, other);
            }
        }
    }
}

/// The command's process, inside the pid namespace: becomes the user (or
/// stays root) and execs. Returns only the reason it could not.
fn command(spec: &EnterSpec<'_>, side: Option<Side>) -> String {
    if let Some(id) = &spec.identity {
        // A session of its own on its own pty or pipes, then a session's rights.
        if let Some(side) = side {
            if let Err(e) = side.attach(id.uid) {
                return e;
            }
        }
        if let Err(e) = privs::become_user(&mut Kernel, id) {
            return chain(&e);
        }
    }
    if nix::unistd::chdir(spec.cwd.as_str()).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    sys::close_fds_from(3, &[]);
    sys::reset_signals();
    if spec.identity.is_some() {
        if let Err(e) = load_session_seccomp() {
            return e;
        }
    }
    let Some(prog) = spec.argv.first() else {
        return "no command".into();
    };
    match nix::unistd::execvpe(prog, &spec.argv, &spec.env) {
        Err(e) => format!("exec {}: {e}", prog.to_string_lossy()),
        Ok(never) => match never {},
    }
}

/// The seccomp profile the container's marker names (the one hutch-shell
/// loads in every session), so that a command entered as the user is no
/// less confined than the user's own processes: else the user could ptrace
/// it and make the calls the filter denies them.
fn load_session_seccomp() -> Result<(), String> {
    let text = std::fs::read_to_string(CONTAINER_MARKER)
        .map_err(|e| format!("reading the container marker {CONTAINER_MARKER}: {e}"))?;
    let marker = Marker::parse(&text)
        .ok_or_else(|| format!("the container marker {CONTAINER_MARKER} is malformed"))?;
    seccomp::apply_marker(&marker).map_err(|e| e.to_string())?;
    Ok(())
}
