//! The audit trail: one structured syslog record for each thing an operator
//! is asked about later: a session opened or closed, a container made or
//! torn down, a login refused, a monitor-only decision, an admin's action.
//!
//! Every record is one syslog message (LOG_AUTHPRIV, LOG_INFO; LOG_NOTICE
//! for refusals) tagged `hutch-audit`, whichever program writes it, so that
//! `journalctl -t hutch-audit` or rsyslog's `programname` finds them all.
//! The message is `key=value` pairs separated by one space, `v=1 event=NAME`
//! first; the keys of each event are fixed (hutch-audit(7)). A value is bare
//! when it is non-empty and made only of `A-Z a-z 0-9 . _ : / @ + -`;
//! otherwise it is double-quoted, with `\"`, `\\` and `\xNN` for control
//! characters. An unknown value is written `-`. [`parse`] reads a message
//! back.
//!
//! The record is sent as its own datagram to `/dev/log` (never through
//! openlog(3), which would change the identity of a PAM host's own lines);
//! where that fails it goes through syslog(3) with the same text.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The syslog tag of every record.
pub const TAG: &str = "hutch-audit";

/// The version of the record format (the `v=` field).
pub const VERSION: u32 = 1;

/// Every event hutch writes, each documented in hutch-audit(7).
pub const EVENTS: &[&str] = &[
    "container.start",
    "session.open",
    "session.close",
    "container.stop",
    "session.refuse",
    "session.unconfined",
    "session.monitor",
    "session.exempt",
    "admin",
];

/// One record: an event and its fields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub event: &'static str,
    pub fields: Vec<(&'static str, String)>,
    /// LOG_INFO, or LOG_NOTICE for refusals and errors.
    pub priority: libc::c_int,
}

impl Record {
    /// A record of `event` (`session.open`, `admin`, ...).
    pub fn new(event: &'static str) -> Record {
        debug_assert!(EVENTS.contains(&event), "undocumented audit event {event}");
        Record {
            event,
            fields: Vec::new(),
            priority: libc::LOG_INFO,
        }
    }

    /// Adds `key=value` (an empty value is written `-`).
    pub fn field(mut self, key: &'static str, value: impl ToString) -> Record {
        self.fields.push((key, value.to_string()));
        self
    }

    /// Adds `key=value`, or `key=-` for `None`.
    pub fn opt(self, key: &'static str, value: Option<impl ToString>) -> Record {
        match value {
            Some(v) => self.field(key, v),
            None => self.field(key, "-"),
        }
    }

    /// Sends at LOG_NOTICE instead of LOG_INFO.
    pub fn notice(mut self) -> Record {
        self.priority = libc::LOG_NOTICE;
        self
    }

    /// The message: `v=1 event=NAME key=value ...`.
    pub fn render(&self) -> String {
        let mut out = format!("v={VERSION} event={}", quote(self.event));
        for (k, v) in &self.fields {
            out.push(' ');
            out.push_str(k);
            out.push('=');
            out.push_str(&quote(if v.is_empty() { "-" } else { v }));
        }
        out
    }

    /// Sends the record to the host's syslog (see the module docs). Never
    /// fails: an audit record that cannot be written must not refuse a login.
    pub fn send(&self) {
        self.send_to(Path::new("/dev/log"));
    }

    /// [`Record::send`] to the syslog socket at `socket`.
    pub fn send_to(&self, socket: &Path) {
        let msg = self.render();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let datagram = format!(
            "<{}>{} {TAG}[{}]: {msg}",
            libc::LOG_AUTHPRIV | self.priority,
            crate::sys::syslog_time(now),
            std::process::id()
        );
        let sent = UnixDatagram::unbound().and_then(|s| s.send_to(datagram.as_bytes(), socket));
        if sent.is_err() {
            crate::sys::syslog(libc::LOG_AUTHPRIV | self.priority, &format!("{TAG}: {msg}"));
        }
    }
}

/// A value as the record writes it.
fn quote(v: &str) -> String {
    let bare = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_/@+-".contains(&b));
    if bare {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a record's message (what follows `hutch-audit[PID]: `) into its
/// pairs, in order. `None` when it is not well formed.
pub fn parse(msg: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i + 1,
                    '\\' => match chars.next()?.1 {
                        'x' => {
                            let hex: String = [chars.next()?.1, chars.next()?.1].iter().collect();
                            v.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        c => v.push(c),
                    },
                    c => v.push(c),
                }
            };
            (v, &q[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.push((key.to_string(), value));
        rest = match after.strip_prefix(' ') {
            Some(r) => r,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(out)
}

/// The message of a syslog line (as a socket receives it, `<PRI>` first)
/// that carries an audit record; `None` for any other line.
pub fn message_of(line: &str) -> Option<&str> {
    let at = line.find(&format!("{TAG}["))?;
    let rest = &line[at + TAG.len() + 1..];
    let (_, msg) = rest.split_once("]: ")?;
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bare and quoted values, escapes, and `-` for empty, parse back to what was written.
    #[test]
    fn render_and_parse_round_trip() {
        let r = Record::new("session.open")
            .field("user", "alice")
            .field("rhost", "")
            .field("tty", "/dev/pts/3")
            .field("why", "stopped by \"hutchctl\"\nnow\\")
            .field("cmd", "a b=c")
            .opt("gen", None::<u64>);
        let msg = r.render();
        assert_eq!(
            msg,
            "v=1 event=session.open user=alice rhost=- tty=/dev/pts/3 why=\"stopped by \\\"hutchctl\\\"\\x0anow\\\\\" cmd=\"a b=c\" gen=-"
        );
        let pairs = parse(&msg).unwrap();
        assert_eq!(
            pairs[5],
            ("why".into(), "stopped by \"hutchctl\"\nnow\\".into())
        );
        assert_eq!(pairs[6], ("cmd".into(), "a b=c".into()));
        assert_eq!(pairs.len(), 8);
    }

    /// A value from a user (a forged `event=`, a newline) cannot add a field or a line.
    #[test]
    fn values_cannot_forge_fields() {
        let msg = Record::new("session.refuse")
            .field("user", "eve event=admin")
            .render();
        assert!(!msg.contains('\n'));
        let pairs = parse(&msg).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2].1, "eve event=admin");
    }

    /// hutch-audit(7) has an entry for every event.
    #[test]
    fn every_event_is_documented() {
        let page = include_str!("../../packaging/man/hutch-audit.7");
        for e in EVENTS {
            assert!(
                page.contains(&format!(".B {e}\n")),
                "hutch-audit(7) lacks {e}"
            );
        }
    }

    /// Malformed messages are refused, not half-read.
    #[test]
    fn malformed() {
        for bad in [
            "v",
            "v=1 =x",
            "v=1 a=\"open",
            "v=1 a=b  c=d",
            "v=1 a=\"x\"y",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// The datagram carries the tag, the facility and the record; message_of finds it.
    #[test]
    fn sent_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log");
        let rx = UnixDatagram::bind(&sock).unwrap();
        Record::new("admin")
            .field("action", "stop")
            .notice()
            .send_to(&sock);
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            line.starts_with(&format!("<{}>", libc::LOG_AUTHPRIV | libc::LOG_NOTICE)),
            "{line}"
        );
        assert_eq!(
            message_of(&line),
            Some("v=1 event=admin action=stop"),
            "{line}"
        );
    }
}
