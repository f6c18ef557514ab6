//! The keeper's audit records (hutch-audit(7)): it alone sees every
//! session's whole life, so it writes `session.open` and `session.close`
//! (with how long the session lasted and why it ended: `logout` when the
//! PAM host closed it, `disconnected` when its connection dropped without a
//! close, the PAM host killed, or `teardown: WHY` when the container went
//! under it), and `container.start` and `container.stop` (with the
//! container's final usage and limit hits, read from its cgroup before it
//! is removed).

use super::serve::Session;
use super::{now_unix, Keeper};
use crate::audit::Record;

/// Why a session ended, as `session.close` says it.
pub(super) enum Ended<'a> {
    /// The PAM host sent CLOSE (a logout).
    Logout,
    /// The connection dropped without CLOSE (the PAM host died).
    Disconnected,
    /// The container was torn down with the session open.
    Teardown(&'a str),
}

impl Keeper {
    /// The run dir: `<run_dir>/users/<user>` is the keeper's own.
    fn paths_run_dir(&self) -> std::path::PathBuf {
        self.paths
            .dir
            .parent()
            .and_then(std::path::Path::parent)
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `user`, `uid` and `container` (`USER:STARTED`), which every record has.
    fn audit_record(&self, event: &'static str) -> Record {
        Record::new(event)
            .field("user", &self.account.name)
            .field("uid", self.account.uid)
            .field(
                "container",
                format!("{}:{}", self.account.name, self.state.started),
            )
    }

    fn audit_session(&self, event: &'static str, s: &Session) -> Record {
        self.audit_record(event)
            .field("session", s.state.id)
            .field("service", &s.state.service)
            .field("rhost", &s.state.rhost)
            .field("tty", &s.state.tty)
            .field("pid", s.state.pid)
            .field("template", &self.state.template)
            .field("generation", self.state.generation)
    }

    /// `container.start`: made in `ms` milliseconds.
    pub(super) fn audit_container_start(&self, ms: f64) {
        self.audit_record("container.start")
            .field("template", &self.state.template)
            .field("generation", self.state.generation)
            .field("init", self.state.init_pid)
            .field("hostname", &self.state.hostname)
            .field("setup_ms", format!("{ms:.1}"))
            .send();
    }

    /// `session.open`.
    pub(super) fn audit_session_open(&self, s: &Session) {
        self.audit_session("session.open", s)
            .field("sessions", self.sessions.len())
            .send();
    }

    /// `session.close`: its duration and why it ended.
    pub(super) fn audit_session_close(&self, s: &Session, ended: Ended<'_>) {
        let why = match ended {
            Ended::Logout => "logout".to_string(),
            Ended::Disconnected => "disconnected".to_string(),
            Ended::Teardown(why) => format!("teardown: {why}"),
        };
        self.audit_session("session.close", s)
            .field("duration", now_unix().saturating_sub(s.state.since))
            .field("why", why)
            .send();
    }

    /// `container.stop`: why, how long it ran, and its final counters,
    /// which also go to the usage spool for the history.
    pub(super) fn audit_container_stop(&self, why: &str, stats: Option<&crate::cgroup::Stats>) {
        if let Some(s) = stats {
            let spooled = crate::usage_spool::write(
                &self.paths_run_dir(),
                &crate::usage_spool::Final {
                    user: self.account.name.clone(),
                    uid: self.account.uid,
                    container: self.state.started,
                    ts: now_unix(),
                    sessions: 0,
                    served: self.sessions.served(),
                    stats: s.clone(),
                },
            );
            if let Err(e) = spooled {
                crate::sys::syslog(
                    libc::LOG_WARNING,
                    &format!("{}: spooling the final usage: {e}", self.account.name),
                );
            }
        }
        let s = stats.cloned().unwrap_or_default();
        let secs = |us: Option<u64>| us.map(|v| format!("{:.3}", v as f64 / 1e6));
        self.audit_record("container.stop")
            .field("template", &self.state.template)
            .field("generation", self.state.generation)
            .field("duration", now_unix().saturating_sub(self.state.started))
            .field("why", why)
            .opt("cpu_seconds", secs(s.cpu_usage_us))
            .opt("memory_peak_bytes", s.memory_peak)
            .opt("io_read_bytes", s.io_read_bytes)
            .opt("io_write_bytes", s.io_write_bytes)
            .opt("oom_kills", s.oom_kills)
            .opt("pids_limit_hits", s.pids_limit_hits)
            .opt("memory_high_events", s.memory_high_events)
            .opt("cpu_throttled_seconds", secs(s.cpu_throttled_us))
            .send();
    }
}
