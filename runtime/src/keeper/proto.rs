//! The keeper's protocol: one text line per message over a Unix stream
//! socket (`<run_dir>/users/<user>/keeper.sock`, 0600 root), fields
//! separated by tabs, namespace descriptors passed with SCM_RIGHTS.
//!
//! ```text
//! module  -> keeper   OPEN <service> <tty> <rhost>
//! keeper  -> module   OK <init-pid> <session-id>        + fds in ns::Namespace::JOIN_ORDER
//!                     ERR <message>
//!                     REFUSED <refusal> <message>        (the policy refuses: see Refusal)
//! module  -> keeper   TTY </dev/NAME>                    (the host terminal it bound; no answer)
//! module  -> keeper   CLOSE                              (then the connection drops)
//! ctl     -> keeper   STATUS                             -> OK <state json>
//! ctl     -> keeper   STOP                               -> OK
//! ```
//! A session is the live connection: when it drops for any reason
//! (close_session, sshd killed), the keeper counts the session as ended,
//! and removes the session's terminal bind (`TTY`): the module, confined by
//! then, cannot unmount it, and a killed host never would.
//!
//! A keeper that cannot start reports on its readiness pipe (`--ready-fd`)
//! `READY`, `ERR <message>` or `REFUSED <refusal> <message>`, one line.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 8;
/// The longest line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// A refusal the policy makes, as opposed to a failure: the user may be
/// told it (the module passes the keeper's words on), and the login
/// counters label it. The keeper sends it as `REFUSED <label> <message>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The policy's `max_sessions` is reached.
    MaxSessions,
    /// A controller a limit needs is missing and `strict` refuses the login.
    MissingController,
    /// The PAM service refuses confined users (the module's own decision).
    Service,
}

impl Refusal {
    /// Its name on the wire and in the login counters.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxSessions => "max_sessions",
            Refusal::MissingController => "controller_missing",
            Refusal::Service => "service",
        }
    }

    /// The refusal a label names.
    pub fn from_label(label: &str) -> Option<Refusal> {
        [
            Refusal::MaxSessions,
            Refusal::MissingController,
            Refusal::Service,
        ]
        .into_iter()
        .find(|r| r.label() == label)
    }
}

/// A request to the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Open {
        service: String,
        tty: String,
        rhost: String,
    },
    /// The host terminal the module bound into the container's /dev for
    /// this session (`/dev/pts-3`); the keeper unbinds it at the session's end.
    Tty {
        path: String,
    },
    Close,
    Status,
    Stop,
}

fn clean(field: &str) -> String {
    let s: String = field
        .chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() {
        "-".to_string()
    } else {
        s
    }
}

impl Request {
    pub fn render(&self) -> String {
        match self {
            Request::Open {
                service,
                tty,
                rhost,
            } => {
                format!(
                    "OPEN\t{}\t{}\t{}\n",
                    clean(service),
                    clean(tty),
                    clean(rhost)
                )
            }
            Request::Tty { path } => format!("TTY\t{}\n", clean(path)),
            Request::Close => "CLOSE\n".into(),
            Request::Status => "STATUS\n".into(),
            Request::Stop => "STOP\n".into(),
        }
    }

    pub fn parse(line: &str) -> Option<Request> {
        let mut f = line.trim_end_matches('\n').split('\t');
        match f.next()? {
            "OPEN" => Some(Request::Open {
                service: f.next()?.to_string(),
                tty: f.next()?.to_string(),
                rhost: f.next()?.to_string(),
            }),
            "TTY" => Some(Request::Tty {
                path: f.next()?.to_string(),
            }),
            "CLOSE" => Some(Request::Close),
            "STATUS" => Some(Request::Status),
            "STOP" => Some(Request::Stop),
            _ => None,
        }
    }
}

/// Sends `line` (which must end in '\n') with `fds` attached.
pub fn send(stream: &UnixStream, line: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let bytes = line.as_bytes();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    if sent < bytes.len() {
        (&*stream).write_all(&bytes[sent..])?;
    }
    Ok(())
}

/// Receives one line, with any descriptors that came with it. `Ok(None)` at
/// end of stream before any byte.
pub fn recv(stream: &UnixStream) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    loop {
        // Peek (without taking descriptors) to find the end of the line, so
        // we never consume bytes of a following message.
        let mut buf = [0u8; 4096];
        let n = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            recvmsg::<()>(stream.as_raw_fd(), &mut iov, None, MsgFlags::MSG_PEEK)
                .map_err(io::Error::from)?
                .bytes
        };
        if n == 0 {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a line",
                ))
            };
        }
        let take = buf[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(n);
        let mut buf2 = vec![0u8; take];
        let mut cspace = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf2)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cspace),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let got = msg.bytes;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    fds.push(owned(fd));
                }
            }
        }
        line.extend_from_slice(&buf2[..got]);
        if line.last() == Some(&b'\n') {
            line.pop();
            let text = String::from_utf8(line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "message is not UTF-8"))?;
            return Ok(Some((text, fds)));
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too long",
            ));
        }
    }
}

#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just received with SCM_RIGHTS: the kernel installed
    // it in this process as a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Requests render and parse back; tabs and newlines in fields cannot break framing.
    #[test]
    fn request_round_trip() {
        let r = Request::Open {
            service: "sshd".into(),
            tty: "ssh".into(),
            rhost: "127.0.0.1".into(),
        };
        assert_eq!(Request::parse(&r.render()), Some(r));
        let evil = Request::Open {
            service: "a\tb\nc".into(),
            tty: String::new(),
            rhost: "x".into(),
        };
        assert_eq!(
            Request::parse(&evil.render()),
            Some(Request::Open {
                service: "a b c".into(),
                tty: "-".into(),
                rhost: "x".into()
            })
        );
        assert_eq!(Request::parse("BOGUS"), None);
    }

    /// A line and its descriptors arrive together, and two lines are not merged.
    #[test]
    fn fds_travel_with_the_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send(&a, "OK\t1\t2\n", &[f.as_fd()]).unwrap();
        send(&a, "SECOND\n", &[]).unwrap();
        let (line, fds) = recv(&b).unwrap().unwrap();
        assert_eq!(line, "OK\t1\t2");
        assert_eq!(fds.len(), 1);
        let (line2, fds2) = recv(&b).unwrap().unwrap();
        assert_eq!(line2, "SECOND");
        assert!(fds2.is_empty());
        drop(a);
        assert!(recv(&b).unwrap().is_none());
    }
}
