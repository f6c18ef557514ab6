//! The container's `/dev/log`: a datagram socket the keeper owns, bound in
//! at the container's `/dev/log` instead of the host's syslog socket (as
//! jailkit's jk_socketd does for chroots).
//!
//! Every line a container process sends is read here, tagged with the
//! container (`hutch[<user>]: ` before the sender's own tag, so nothing the
//! user writes can pass for a host daemon's line), its facility forced to
//! LOG_USER unless the sender is root in the container (sshd's monitor logs
//! authpriv), rate-limited per container by a token bucket, and forwarded to
//! the host's `/dev/log` (looked up for every line, so a restarted syslog
//! daemon is found again; absent or full, the line is dropped). The sender's
//! uid comes from the kernel (`SO_PASSCRED`), never from the line. Two
//! buckets bound what a container sends the host's syslog: lines (a flood of
//! short ones) and bytes (lines up to [`MAX_LINE`] long under the line rate
//! would still be ~800 KiB/s into the host's logs); a line goes only when
//! both have room. What they drop is counted and reported in one line at
//! most once a second.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

/// The socket's name in the user's run dir.
pub const SOCKET_NAME: &str = "log.sock";

/// Lines a container may log per second on average.
pub const RATE: u32 = 100;
/// Lines a container may log at once before the rate applies.
pub const BURST: u32 = 500;
/// Bytes a container may log per second on average (forwarded lines, tag included).
pub const BYTE_RATE: u32 = 32 << 10;
/// Bytes a container may log at once before the byte rate applies.
pub const BYTE_BURST: u32 = 256 << 10;
/// Longest line forwarded (the rest is cut).
pub const MAX_LINE: usize = 8192;
/// Datagrams read per wake-up, so a flood cannot starve the sessions.
const BATCH: usize = 256;
/// How often the dropped-lines count is reported, at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);

const LOG_USER: u8 = 1 << 3;
const LOG_NOTICE: u8 = 5;
const LOG_WARNING: u8 = 4;

/// A token bucket: `rate` tokens a second, at most `burst` held.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens if there are that many (else none).
    pub fn take_n(&mut self, now: Instant, n: usize) -> bool {
        self.refill(now);
        self.has(n) && {
            self.tokens -= n as f64;
            true
        }
    }

    /// Whether `n` tokens are there now (after [`Bucket::refill`]).
    fn has(&self, n: usize) -> bool {
        self.tokens >= n as f64
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }
}

/// Splits a syslog datagram into its priority (`<PRI>`; LOG_USER|LOG_NOTICE
/// when absent or malformed, as RFC 3164 says) and the rest.
pub fn split_pri(msg: &[u8]) -> (u8, &[u8]) {
    let default = (LOG_USER | LOG_NOTICE, msg);
    let Some(rest) = msg.strip_prefix(b"<") else {
        return default;
    };
    let Some(end) = rest.iter().take(4).position(|&b| b == b'>') else {
        return default;
    };
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return default;
    }
    match std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u16>().ok())
    {
        Some(p) if p <= 191 => (p as u8, &rest[end + 1..]),
        _ => default,
    }
}

/// True when `b` starts with an RFC 3164 timestamp (`Mmm dd hh:mm:ss `).
fn has_timestamp(b: &[u8]) -> bool {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    b.len() >= 16
        && MONTHS.contains(&&b[..3])
        && b[3] == b' '
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
        && b[15] == b' '
}

/// The line forwarded for `msg` from a sender with `uid` (`None`: unknown,
/// treated as a user): `<PRI>hutch[<user>]: <the sender's tag and text>`.
/// The sender's timestamp is dropped (the host's syslog stamps the line);
/// newlines and NULs inside become spaces, so one datagram stays one line.
pub fn rewrite(msg: &[u8], uid: Option<u32>, user: &str) -> Vec<u8> {
    let (pri, rest) = split_pri(msg);
    let pri = if uid == Some(0) {
        pri
    } else {
        LOG_USER | (pri & 7)
    };
    let mut rest = if has_timestamp(rest) {
        &rest[16..]
    } else {
        rest
    };
    while let [head @ .., b'\n' | b'\0' | b'\r'] = rest {
        rest = head;
    }
    let rest = &rest[..rest.len().min(MAX_LINE)];
    let mut out = format!("<{pri}>hutch[{user}]: ").into_bytes();
    out.extend(rest.iter().map(|&b| {
        if matches!(b, b'\n' | b'\r' | b'\0') {
            b' '
        } else {
            b
        }
    }));
    out
}

/// The proxy of one container.
pub struct LogProxy {
    sock: UnixDatagram,
    path: PathBuf,
    user: String,
    host: PathBuf,
    out: Option<UnixDatagram>,
    /// Lines.
    bucket: Bucket,
    /// Bytes.
    bytes: Bucket,
    dropped: u64,
    dropped_bytes: u64,
    last_report: Instant,
}

impl LogProxy {
    /// Binds the container's socket at `path` (a stale one is replaced),
    /// root-owned and mode 0666 so that every process of the container can
    /// send, with `SO_PASSCRED` on. Lines go to the host's socket `host`.
    pub fn bind(path: &Path, user: &str, host: &Path) -> io::Result<LogProxy> {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        setsockopt(&sock, sockopt::PassCred, &true)?;
        sock.set_nonblocking(true)?;
        let now = Instant::now();
        Ok(LogProxy {
            sock,
            path: path.to_path_buf(),
            user: user.to_string(),
            host: host.to_path_buf(),
            out: None,
            bucket: Bucket::new(RATE, BURST, now),
            bytes: Bucket::new(BYTE_RATE, BYTE_BURST, now),
            dropped: 0,
            dropped_bytes: 0,
            last_report: now,
        })
    }

    /// The socket's path (what is bound at the container's /dev/log).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reads what is queued (a batch at most), forwards or drops each line,
    /// and reports drops when due.
    pub fn readable(&mut self) {
        let mut buf = vec![0u8; MAX_LINE + 512];
        for _ in 0..BATCH {
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let (n, uid) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                match recvmsg::<()>(
                    self.sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(m) => {
                        let uid = m.cmsgs().ok().and_then(|mut c| {
                            c.find_map(|c| match c {
                                ControlMessageOwned::ScmCredentials(cred) => Some(cred.uid()),
                                _ => None,
                            })
                        });
                        (m.bytes, uid)
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                }
            };
            let now = Instant::now();
            let line = rewrite(&buf[..n], uid, &self.user);
            if self.admit(now, line.len()) {
                self.forward(&line);
            } else {
                self.dropped += 1;
                self.dropped_bytes += line.len() as u64;
            }
        }
        self.tick();
    }

    /// Whether a line of `len` bytes may go now: one line token and `len`
    /// byte tokens, both taken or neither.
    fn admit(&mut self, now: Instant, len: usize) -> bool {
        self.bucket.refill(now);
        self.bytes.refill(now);
        if self.bucket.has(1) && self.bytes.has(len) {
            self.bucket.take_n(now, 1) && self.bytes.take_n(now, len)
        } else {
            false
        }
    }

    /// How long until a drop report is due (`None`: nothing to report).
    pub fn next_tick(&self) -> Option<Duration> {
        (self.dropped > 0).then(|| REPORT_EVERY.saturating_sub(self.last_report.elapsed()))
    }

    /// Reports the dropped lines if a report is due.
    pub fn tick(&mut self) {
        if self.last_report.elapsed() >= REPORT_EVERY {
            self.flush();
        }
    }

    /// Reports the dropped lines now, if any.
    pub fn flush(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let text = format!(
            "<{}>hutch[{}]: dropped {} lines, {} bytes (rate limits {RATE} lines/s, burst {BURST}; {BYTE_RATE} bytes/s, burst {BYTE_BURST})",
            LOG_USER | LOG_WARNING,
            self.user,
            self.dropped,
            self.dropped_bytes
        );
        self.forward(text.as_bytes());
        self.dropped = 0;
        self.dropped_bytes = 0;
        self.last_report = Instant::now();
    }

    /// Sends one line to the host's syslog; never blocks, drops on failure.
    fn forward(&mut self, line: &[u8]) {
        if self.out.is_none() {
            self.out = UnixDatagram::unbound()
                .ok()
                .filter(|s| s.set_nonblocking(true).is_ok());
        }
        if let Some(out) = &self.out {
            let _ = out.send_to(line, &self.host);
        }
    }
}

impl Drop for LogProxy {
    /// The last drops are reported (the container may go within the second).
    fn drop(&mut self) {
        self.flush();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<PRI>` is parsed when well-formed (0..=191), else user.notice and the whole datagram.
    #[test]
    fn pri_parsing() {
        assert_eq!(split_pri(b"<38>x"), (38, &b"x"[..]));
        assert_eq!(split_pri(b"<0>"), (0, &b""[..]));
        assert_eq!(split_pri(b"<192>x"), (13, &b"<192>x"[..]));
        assert_eq!(split_pri(b"<a>x"), (13, &b"<a>x"[..]));
        assert_eq!(split_pri(b"<>x"), (13, &b"<>x"[..]));
        assert_eq!(split_pri(b"<1234>x"), (13, &b"<1234>x"[..]));
        assert_eq!(split_pri(b"plain"), (13, &b"plain"[..]));
    }

    /// A user's line is tagged, forced to LOG_USER (severity kept), its timestamp and trailing newline dropped, inner newlines flattened.
    #[test]
    fn user_lines_are_tagged_and_demoted() {
        // authpriv.info (10<<3|6 = 86) from uid 1000.
        let l = rewrite(
            b"<86>Nov 29 03:58:01 sshd[1]: Accepted password for root\n",
            Some(1000),
            "alice",
        );
        assert_eq!(l, b"<14>hutch[alice]: sshd[1]: Accepted password for root");
        let l = rewrite(b"<13>x\n<86>sshd: forged\0", None, "alice");
        assert_eq!(l, b"<13>hutch[alice]: x <86>sshd: forged");
        let l = rewrite(b"no pri", Some(5), "bob");
        assert_eq!(l, b"<13>hutch[bob]: no pri");
    }

    /// Root in the container (sshd's monitor) keeps its facility, still tagged.
    #[test]
    fn root_keeps_facility() {
        let l = rewrite(b"<86>sshd[9]: session closed", Some(0), "alice");
        assert_eq!(l, b"<86>hutch[alice]: sshd[9]: session closed");
    }

    /// The bucket gives the burst at once, then the rate.
    #[test]
    fn bucket_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 500, t0);
        assert_eq!((0..1000).filter(|_| b.take(t0)).count(), 500);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..1000).filter(|_| b.take(t1)).count(), 10);
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(
            (0..1000).filter(|_| b.take(t2)).count(),
            500,
            "never more than the burst"
        );
    }

    /// Long lines under the line rate are held to the byte rate: of 100
    /// lines of 8 KiB at once (well under the 500-line burst), only what
    /// the 256 KiB byte burst holds goes; a line that fits goes and takes
    /// a line token, one that does not takes neither.
    #[test]
    fn bytes_are_limited_too() {
        let t0 = Instant::now();
        let t = tempfile::tempdir().unwrap();
        let mut p =
            LogProxy::bind(&t.path().join(SOCKET_NAME), "alice", &t.path().join("none")).unwrap();
        let sent = (0..100).filter(|_| p.admit(t0, MAX_LINE)).count();
        assert_eq!(sent, (BYTE_BURST as usize) / MAX_LINE);
        assert!(
            p.bucket.has(BURST as usize - sent),
            "a refused line took a line token"
        );
        // A second later, the byte rate's worth more.
        let t1 = t0 + Duration::from_secs(1);
        let more = (0..100).filter(|_| p.admit(t1, MAX_LINE)).count();
        assert_eq!(more, (BYTE_RATE as usize) / MAX_LINE);
        // Short lines still go while bytes remain.
        assert!(p.admit(t1 + Duration::from_millis(100), 100));
    }

    /// End to end on sockets: uid from SCM_CREDENTIALS (the test's own), tagging, the drop count reported once.
    #[test]
    fn proxy_forwards_and_counts_drops() {
        let t = tempfile::tempdir().unwrap();
        let host = UnixDatagram::bind(t.path().join("host")).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut p =
            LogProxy::bind(&t.path().join(SOCKET_NAME), "alice", &t.path().join("host")).unwrap();
        let mode = std::fs::metadata(p.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let c = UnixDatagram::unbound().unwrap();
        c.send_to(b"<86>fake-sshd: Accepted password for root", p.path())
            .unwrap();
        p.readable();
        let mut buf = [0u8; 1024];
        let n = host.recv(&mut buf).unwrap();
        let me = nix::unistd::getuid().as_raw();
        let pri = if me == 0 { 86 } else { 14 };
        assert_eq!(
            &buf[..n],
            format!("<{pri}>hutch[alice]: fake-sshd: Accepted password for root").as_bytes()
        );
        // Exhaust the bucket, then one report after the interval.
        p.bucket = Bucket::new(RATE, 0, Instant::now());
        for _ in 0..5 {
            c.send_to(b"<13>flood", p.path()).unwrap();
        }
        p.readable();
        assert_eq!(p.dropped, 5);
        assert!(p.next_tick().is_some());
        p.last_report = Instant::now() - REPORT_EVERY;
        p.tick();
        let n = host.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &b"<12>hutch[alice]: dropped 5 lines, 115 bytes (rate limits 100 lines/s, burst 500; 32768 bytes/s, burst 262144)"[..]
        );
        assert_eq!(p.next_tick(), None);
        c.send_to(b"<13>flood", p.path()).unwrap();
        p.readable();
        let path = p.path().to_path_buf();
        drop(p);
        assert!(!path.exists(), "removed on drop");
        let n = host.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &b"<12>hutch[alice]: dropped 1 lines, 23 bytes (rate limits 100 lines/s, burst 500; 32768 bytes/s, burst 262144)"[..],
            "pending drops reported on drop"
        );
    }
}
