//! The command side of `hutchctl enter` as the user, and the relay that
//! stands between it and the admin's descriptors.
//!
//! The command never gets the admin's fds 0-2. When the admin's stdin is a
//! terminal it runs on a fresh pty made inside the container (from the
//! container's `/dev/ptmx`, as an ssh session's is), which becomes its
//! controlling terminal, owned by the user, with the admin's terminal's
//! modes and window size; the admin's terminal is in raw mode while the
//! relay runs (restored when it ends) and window changes are passed on.
//! Otherwise (a pipe, a file, /dev/null) it runs on three pipes. Should the
//! container have no pty left (its devpts `max=`), pipes, with a warning.
//!
//! The relay is the middle process of [`crate::enter`]: root, outside the
//! container's pid namespace, not dumpable. It copies between the admin's
//! descriptors and the command's side; when the command exits it takes
//! what the command had written (the pty's and the pipes' buffers, read
//! until empty: the kernel flushes a pty's pending input before a
//! non-blocking read says EAGAIN), then closes its side. A process the
//! user left behind then holds only a hung-up pty or pipes no one reads: it
//! can neither read nor write the admin's terminal, nor push input into
//! it, once `hutchctl enter` has returned.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Pid, Uid};

use crate::sys;

/// The most a channel passes on after the command's exit: more than a
/// pipe's or a pty's buffers hold (what the command wrote before it
/// exited), so that only a writer left behind is cut off.
const DRAIN_MAX: usize = 1 << 20;

/// What the command's process gets as fds 0-2.
pub enum Side {
    /// The slave of a pty made in the container, and the modes to give it.
    Pty {
        slave: OwnedFd,
        modes: Option<Termios>,
    },
    /// The command's ends of three pipes.
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// One direction of copying.
struct Channel {
    src: Option<End>,
    dst: Option<End>,
    buf: Vec<u8>,
    /// At the source's end of file, close the destination once written
    /// (the command's stdin pipe); a pty's input is not closed.
    close_dst_at_eof: bool,
}

/// A descriptor of the admin's (never closed here) or of the relay's own.
enum End {
    Stdin(std::io::Stdin),
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    Ours(OwnedFd),
}

impl End {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            End::Stdin(f) => f.as_fd(),
            End::Stdout(f) => f.as_fd(),
            End::Stderr(f) => f.as_fd(),
            End::Ours(fd) => fd.as_fd(),
        }
    }
}

/// The middle process's side: the channels, the pty master for window
/// changes, the admin terminal's modes to restore.
pub struct Relay {
    channels: Vec<Channel>,
    master: Option<OwnedFd>,
    restore: Option<Termios>,
}

fn nonblocking(fd: &OwnedFd) -> Result<(), String> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map(drop)
        .map_err(|e| format!("making a relay descriptor non-blocking: {e}"))
}

fn clone_fd(fd: &OwnedFd) -> Result<OwnedFd, String> {
    fd.try_clone()
        .map_err(|e| format!("duplicating the pty master: {e}"))
}

/// Makes the command's side and the relay. Runs in the container's mount
/// namespace (the pty comes from its /dev/ptmx), as root.
pub fn open() -> Result<(Relay, Side), String> {
    if nix::unistd::isatty(std::io::stdin().as_raw_fd()).unwrap_or(false) {
        match sys::open_pty() {
            Ok((master, slave)) => return pty_relay(master, slave),
            Err(e) => {
                eprintln!("hutchctl: no pty in the container ({e}): the command runs on pipes")
            }
        }
    }
    pipe_relay()
}

fn pty_relay(master: OwnedFd, slave: OwnedFd) -> Result<(Relay, Side), String> {
    let modes = tcgetattr(std::io::stdin()).ok();
    if let Ok(ws) = sys::get_winsize(std::io::stdin().as_fd()) {
        sys::set_winsize(master.as_fd(), &ws)
            .map_err(|e| format!("setting the pty's window size: {e}"))?;
    }
    nonblocking(&master)?;
    let input = Channel {
        src: Some(End::Stdin(std::io::stdin())),
        dst: Some(End::Ours(clone_fd(&master)?)),
        buf: Vec::new(),
        close_dst_at_eof: false,
    };
    let output = Channel {
        src: Some(End::Ours(clone_fd(&master)?)),
        dst: Some(End::Stdout(std::io::stdout())),
        buf: Vec::new(),
        close_dst_at_eof: false,
    };
    let relay = Relay {
        channels: vec![input, output],
        master: Some(master),
        restore: modes.clone(),
    };
    Ok((relay, Side::Pty { slave, modes }))
}

fn pipe_relay() -> Result<(Relay, Side), String> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    for fd in [&in_w, &out_r, &err_r] {
        nonblocking(fd)?;
    }
    let channel = |src: End, dst: End, close| Channel {
        src: Some(src),
        dst: Some(dst),
        buf: Vec::new(),
        close_dst_at_eof: close,
    };
    let relay = Relay {
        channels: vec![
            channel(End::Stdin(std::io::stdin()), End::Ours(in_w), true),
            channel(End::Ours(out_r), End::Stdout(std::io::stdout()), false),
            channel(End::Ours(err_r), End::Stderr(std::io::stderr()), false),
        ],
        master: None,
        restore: None,
    };
    let side = Side::Pipes {
        stdin: in_r,
        stdout: out_w,
        stderr: err_w,
    };
    Ok((relay, side))
}

impl Side {
    /// In the command's process, still root, before it becomes the user: a
    /// session of its own, fds 0-2 on this side; a pty becomes its
    /// controlling terminal, owned by `uid`, in the admin's terminal's modes.
    pub fn attach(self, uid: u32) -> Result<(), String> {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        let dup = |fd: &OwnedFd, to: i32| {
            nix::unistd::dup2(fd.as_raw_fd(), to)
                .map(drop)
                .map_err(|e| format!("dup2 onto fd {to}: {e}"))
        };
        match self {
            Side::Pty { slave, modes } => {
                sys::set_controlling_tty(slave.as_fd())
                    .map_err(|e| format!("making the pty the controlling terminal: {e}"))?;
                nix::unistd::fchown(slave.as_raw_fd(), Some(Uid::from_raw(uid)), None)
                    .map_err(|e| format!("giving the pty to the user: {e}"))?;
                if let Some(m) = modes {
                    let _ = tcsetattr(&slave, SetArg::TCSANOW, &m);
                }
                for to in 0..3 {
                    dup(&slave, to)?;
                }
            }
            Side::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                dup(&stdin, 0)?;
                dup(&stdout, 1)?;
                dup(&stderr, 2)?;
            }
        }
        Ok(())
    }
}

impl Channel {
    /// Reads what the source has (it was readable).
    fn fill(&mut self) {
        let Some(src) = &self.src else { return };
        let mut chunk = [0u8; 16384];
        match nix::unistd::read(src.fd().as_raw_fd(), &mut chunk) {
            Ok(0) => self.src_ended(),
            Ok(n) => {
                if self.dst.is_some() {
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // EIO: every slave of the pty is closed.
            Err(_) => self.src_ended(),
        }
    }

    fn src_ended(&mut self) {
        self.src = None;
        if self.close_dst_at_eof && self.buf.is_empty() {
            self.dst = None;
        }
    }

    /// Writes what the destination takes (it was writable).
    fn flush_some(&mut self) {
        let Some(dst) = &self.dst else {
            self.buf.clear();
            return;
        };
        match nix::unistd::write(dst.fd(), &self.buf) {
            Ok(n) => {
                self.buf.drain(..n);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // The admin's side went away: what the command writes is dropped.
            Err(_) => {
                self.dst = None;
                self.buf.clear();
            }
        }
        if self.buf.is_empty() && self.src.is_none() && self.close_dst_at_eof {
            self.dst = None;
        }
    }

    /// After the command's exit: everything its side still holds, written
    /// out (waiting for the destination as needed), until the source is
    /// empty or at its end, and at most [`DRAIN_MAX`] bytes: a process left
    /// behind that keeps writing does not keep hutchctl (and the admin's
    /// terminal) for itself.
    fn drain(&mut self) {
        let mut taken = 0usize;
        loop {
            while !self.buf.is_empty() && self.dst.is_some() {
                if let Some(dst) = &self.dst {
                    let mut p = [PollFd::new(dst.fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut p, PollTimeout::NONE);
                }
                self.flush_some();
            }
            let Some(src) = &self.src else { return };
            if taken >= DRAIN_MAX {
                return;
            }
            let mut chunk = [0u8; 16384];
            match nix::unistd::read(src.fd().as_raw_fd(), &mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    taken += n;
                    if self.dst.is_some() {
                        self.buf.extend_from_slice(&chunk[..n]);
                    } else {
                        continue;
                    }
                }
            }
        }
    }
}

impl Relay {
    /// Copies until `child` (the command) exits, passing the signals of
    /// `signals` (blocked by the caller, SIGCHLD among them) to `target`
    /// and window changes to the pty; then drains, restores the admin's
    /// terminal and closes the command's side. Returns the exit status
    /// (128+N when killed by signal N).
    pub fn run(mut self, child: Pid, signals: &SigSet, target: Pid) -> Result<i32, String> {
        let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;
        if let Some(modes) = &self.restore {
            let mut raw = modes.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &raw);
        }
        loop {
            // What to wait for: each channel's source when its buffer is
            // empty, its destination when not.
            let mut wanted: Vec<(usize, bool)> = Vec::new();
            let revents: Vec<PollFlags> = {
                let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
                for (i, ch) in self.channels.iter().enumerate() {
                    if ch.buf.is_empty() {
                        if let Some(src) = &ch.src {
                            fds.push(PollFd::new(src.fd(), PollFlags::POLLIN));
                            wanted.push((i, true));
                        }
                    } else if let Some(dst) = &ch.dst {
                        fds.push(PollFd::new(dst.fd(), PollFlags::POLLOUT));
                        wanted.push((i, false));
                    }
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(format!("poll: {e}")),
                }
                fds.iter()
                    .map(|p| p.revents().unwrap_or(PollFlags::empty()))
                    .collect()
            };
            if !revents[0].is_empty() {
                while let Ok(Some(info)) = sfd.read_signal() {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    match sig {
                        Signal::SIGCHLD => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::Exited(_, code)) => return Ok(self.finish(code)),
                            Ok(WaitStatus::Signaled(_, s, _)) => {
                                return Ok(self.finish(128 + s as i32))
                            }
                            Ok(_) => {}
                            Err(e) => return Err(format!("waitpid: {e}")),
                        },
                        Signal::SIGWINCH => self.pass_window_size(),
                        Signal::SIGPIPE => {}
                        other => {
                            let _ = kill(target, other);
                        }
                    }
                }
            }
            for (k, &(i, reading)) in wanted.iter().enumerate() {
                if revents[k + 1].is_empty() {
                    continue;
                }
                if reading {
                    self.channels[i].fill();
                } else {
                    self.channels[i].flush_some();
                }
            }
        }
    }

    fn pass_window_size(&self) {
        if let (Some(master), Ok(ws)) = (&self.master, sys::get_winsize(std::io::stdin().as_fd())) {
            let _ = sys::set_winsize(master.as_fd(), &ws);
        }
    }

    /// The command has exited: what it wrote goes out, then its side is
    /// closed (when `self` drops: the pty is hung up).
    fn finish(mut self, code: i32) -> i32 {
        // Nothing more goes in.
        self.channels[0].src = None;
        for ch in &mut self.channels[1..] {
            ch.drain();
        }
        code
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(modes) = &self.restore {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, modes);
        }
    }
}
