//! The decisions of `pam_sm_open_session` and `pam_sm_close_session`, in
//! plain Rust over [`PamOps`] (the PAM handle) and [`Joiner`] (the runtime),
//! so that tests drive them with a scripted fake handle.

use std::any::Any;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hutch_runtime::join::{JoinError, JoinOptions, Outcome, Session, SessionInfo};

use crate::args::{self, Args, OnError};
use crate::codes::{PAM_IGNORE, PAM_SERVICE_ERR, PAM_SESSION_ERR, PAM_SUCCESS};

/// syslog priorities (the facility, LOG_AUTHPRIV, is added by [`PamOps::log`]).
pub use libc::{LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_WARNING};

/// What the module needs from its PAM handle.
pub trait PamOps {
    /// The user whose session this is (`pam_get_user`).
    fn user(&mut self) -> Result<String, String>;
    /// `PAM_SERVICE`.
    fn service(&self) -> Option<String>;
    /// `PAM_TTY`.
    fn tty(&self) -> Option<String>;
    /// `PAM_RHOST`.
    fn rhost(&self) -> Option<String>;
    /// One syslog line at `priority`, LOG_AUTHPRIV (`pam_syslog`, which adds
    /// the `pam_hutch(SERVICE:session):` prefix).
    fn log(&self, priority: c_int, msg: &str);
    /// Shows `msg` to the user through the application's conversation
    /// (`PAM_ERROR_MSG`); nothing when there is no conversation.
    fn tell_user(&self, msg: &str);
    /// Keeps the session in the handle's module data until close_session
    /// (or `pam_end`, which only drops it).
    fn set_session(&mut self, session: Session) -> Result<(), String>;
    /// Takes back the session kept by [`PamOps::set_session`], if any.
    fn take_session(&mut self) -> Option<Session>;
}

/// The runtime side: the real one calls `hutch_runtime::join`.
pub trait Joiner {
    fn open(
        &self,
        opts: &JoinOptions,
        user: &str,
        info: &SessionInfo,
    ) -> Result<Outcome, JoinError>;
    fn close(&self, session: Session);
}

/// The real runtime.
pub struct Runtime;

impl Joiner for Runtime {
    fn open(
        &self,
        opts: &JoinOptions,
        user: &str,
        info: &SessionInfo,
    ) -> Result<Outcome, JoinError> {
        hutch_runtime::join::open_session(opts, user, info)
    }
    fn close(&self, session: Session) {
        session.close()
    }
}

/// Runs one entry point's body; a panic in it is logged and becomes
/// `PAM_SESSION_ERR`, never an unwind into (or an abort of) the host program.
pub fn guarded<O: PamOps>(ops: &mut O, entry: &str, body: impl FnOnce(&mut O) -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(|| body(&mut *ops))) {
        Ok(code) => code,
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            // Logging itself must not unwind out of here either.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                ops.log(
                    LOG_ERR,
                    &format!("{entry}: internal error (panic): {}", clean(&msg)),
                )
            }));
            PAM_SESSION_ERR
        }
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Parses the arguments, logging unknown ones; `Err` carries the PAM code.
fn arguments<O: PamOps, S: AsRef<str>>(ops: &O, words: &[S]) -> Result<Args, c_int> {
    match args::parse(words) {
        Ok(parsed) => {
            for word in &parsed.unknown {
                ops.log(
                    LOG_ERR,
                    &format!("unknown argument {:?} ignored", clean(word)),
                );
            }
            Ok(parsed.args)
        }
        Err(bad) => {
            ops.log(LOG_ERR, &clean(&bad.to_string()));
            Err(PAM_SERVICE_ERR)
        }
    }
}

/// `pam_sm_open_session`.
pub fn open_session<O: PamOps, S: AsRef<str>>(
    ops: &mut O,
    words: &[S],
    joiner: &dyn Joiner,
) -> c_int {
    let args = match arguments(ops, words) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let user = match ops.user() {
        Ok(user) => user,
        Err(cause) => {
            return failed(
                ops,
                &args,
                "?",
                &JoinError {
                    step: "pam_get_user",
                    cause,
                },
            );
        }
    };
    let info = SessionInfo {
        service: ops.service().unwrap_or_default(),
        tty: ops.tty(),
        rhost: ops.rhost(),
    };
    ops.log(
        LOG_INFO,
        &format!(
            "open: user={} service={} rhost={} tty={}",
            clean(&user),
            clean(or_dash(Some(&info.service).filter(|s| !s.is_empty()))),
            clean(or_dash(info.rhost.as_ref())),
            clean(or_dash(info.tty.as_ref())),
        ),
    );
    let opts = JoinOptions {
        config: args.config.clone(),
        keeper: args.keeper.clone(),
        timeout: args.timeout,
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };
    match joiner.open(&opts, &user, &info) {
        Ok(Outcome::Exempt(why)) => {
            if args.debug {
                ops.log(
                    LOG_DEBUG,
                    &format!("{} is not confined: {}", clean(&user), clean(&why)),
                );
            }
            PAM_IGNORE
        }
        Ok(Outcome::Joined(session)) => {
            let init_pid = session.init_pid;
            let tty = session.tty.clone();
            if let Err(cause) = ops.set_session(session) {
                // The caller is in the container already, so on_error=ignore
                // cannot let it through: without the connection the keeper
                // does not count this session.
                ops.log(
                    LOG_ERR,
                    &format!(
                        "refusing session of {}: pam_set_data: {}",
                        clean(&user),
                        clean(&cause)
                    ),
                );
                return PAM_SESSION_ERR;
            }
            ops.log(
                LOG_INFO,
                &format!("joined container of {} (init pid {init_pid})", clean(&user)),
            );
            if let Some(Err(why)) = tty {
                ops.log(
                    LOG_WARNING,
                    &format!(
                        "the terminal of {} has no name in the container: {}",
                        clean(&user),
                        clean(&why)
                    ),
                );
            }
            PAM_SUCCESS
        }
        Err(e) => failed(ops, &args, &user, &e),
    }
}

/// One LOG_ERR line naming user, step and cause; the code `on_error` asks for.
fn failed<O: PamOps>(ops: &O, args: &Args, user: &str, e: &JoinError) -> c_int {
    match args.on_error {
        OnError::Fail => {
            ops.log(
                LOG_ERR,
                &format!(
                    "refusing session of {}: {}",
                    clean(user),
                    clean(&e.to_string())
                ),
            );
            ops.tell_user(&user_message(e));
            PAM_SESSION_ERR
        }
        OnError::Ignore => {
            ops.log(
                LOG_ERR,
                &format!(
                    "NOT confining session of {} (on_error=ignore): {}",
                    clean(user),
                    clean(&e.to_string())
                ),
            );
            PAM_IGNORE
        }
    }
}

/// `pam_sm_close_session`.
pub fn close_session<O: PamOps, S: AsRef<str>>(
    ops: &mut O,
    words: &[S],
    joiner: &dyn Joiner,
) -> c_int {
    let args = match arguments(ops, words) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match ops.take_session() {
        Some(session) => {
            let user = session.user.clone();
            joiner.close(session);
            ops.log(LOG_INFO, &format!("close: user={}", clean(&user)));
            PAM_SUCCESS
        }
        None => {
            if args.debug {
                ops.log(
                    LOG_DEBUG,
                    "close: no hutch session in this handle (user not confined)",
                );
            }
            PAM_IGNORE
        }
    }
}

/// What a refused user is told: the keeper's own words for a refusal the
/// policy makes (the session limit, a controller `strict` requires);
/// otherwise only that the cause is in the system log (paths and internals
/// stay there).
pub fn user_message(e: &JoinError) -> String {
    let policy_refusal = e.step == "keeper"
        && (e.cause.contains("the most the policy allows")
            || e.cause.contains("is not available on this host"));
    if policy_refusal {
        format!("hutch: login refused: {}", clean(&e.cause))
    } else {
        "hutch: your session could not be set up; the system log says why".to_string()
    }
}

fn or_dash(s: Option<&String>) -> &str {
    s.map(String::as_str).unwrap_or("-")
}

/// Makes text from the client (user names, rhost) or from errors safe for one
/// syslog line: control characters become `\xNN`.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::net::UnixStream;

    /// A scripted PAM handle: items given up front, log lines recorded.
    #[derive(Default)]
    struct FakeHandle {
        user: Option<String>,
        service: Option<String>,
        tty: Option<String>,
        rhost: Option<String>,
        logs: RefCell<Vec<(c_int, String)>>,
        told: RefCell<Vec<String>>,
        data: Option<Session>,
        refuse_data: bool,
    }

    impl FakeHandle {
        fn alice() -> Self {
            FakeHandle {
                user: Some("alice".into()),
                service: Some("sshd".into()),
                tty: Some("ssh".into()),
                rhost: Some("192.0.2.7".into()),
                ..Default::default()
            }
        }
        fn lines(&self) -> Vec<(c_int, String)> {
            self.logs.borrow().clone()
        }
    }

    impl PamOps for FakeHandle {
        fn user(&mut self) -> Result<String, String> {
            self.user.clone().ok_or_else(|| "no user".to_string())
        }
        fn service(&self) -> Option<String> {
            self.service.clone()
        }
        fn tty(&self) -> Option<String> {
            self.tty.clone()
        }
        fn rhost(&self) -> Option<String> {
            self.rhost.clone()
        }
        fn log(&self, priority: c_int, msg: &str) {
            self.logs.borrow_mut().push((priority, msg.to_string()));
        }
        fn tell_user(&self, msg: &str) {
            self.told.borrow_mut().push(msg.to_string());
        }
        fn set_session(&mut self, session: Session) -> Result<(), String> {
            if self.refuse_data {
                return Err("Memory buffer error".into());
            }
            self.data = Some(session);
            Ok(())
        }
        fn take_session(&mut self) -> Option<Session> {
            self.data.take()
        }
    }

    /// What the fake runtime does on open.
    enum Script {
        Exempt,
        Join,
        Fail(&'static str, &'static str),
        Panic,
    }

    struct FakeJoiner {
        script: Script,
        opened: RefCell<Vec<(JoinOptions, String, SessionInfo)>>,
        closed: RefCell<Vec<String>>,
    }

    impl FakeJoiner {
        fn new(script: Script) -> Self {
            FakeJoiner {
                script,
                opened: RefCell::default(),
                closed: RefCell::default(),
            }
        }
    }

    impl Joiner for FakeJoiner {
        fn open(
            &self,
            opts: &JoinOptions,
            user: &str,
            info: &SessionInfo,
        ) -> Result<Outcome, JoinError> {
            self.opened
                .borrow_mut()
                .push((opts.clone(), user.to_string(), info.clone()));
            match self.script {
                Script::Exempt => Ok(Outcome::Exempt("root is never confined".into())),
                Script::Join => {
                    let (conn, _peer) = UnixStream::pair().unwrap();
                    Ok(Outcome::Joined(Session {
                        conn,
                        user: user.to_string(),
                        init_pid: 4242,
                        tty: None,
                    }))
                }
                Script::Fail(step, cause) => Err(JoinError {
                    step,
                    cause: cause.to_string(),
                }),
                Script::Panic => panic!("boom in join"),
            }
        }
        fn close(&self, session: Session) {
            self.closed.borrow_mut().push(session.user.clone());
        }
    }

    fn open(h: &mut FakeHandle, words: &[&str], j: &FakeJoiner) -> c_int {
        guarded(h, "open_session", |h| open_session(h, words, j))
    }

    /// An exempt user gets PAM_IGNORE and nothing is kept; debug says why.
    #[test]
    fn exempt_is_ignore() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Exempt);
        assert_eq!(open(&mut h, &["debug"], &j), PAM_IGNORE);
        assert!(h.data.is_none());
        assert_eq!(
            h.lines(),
            vec![
                (
                    LOG_INFO,
                    "open: user=alice service=sshd rhost=192.0.2.7 tty=ssh".to_string()
                ),
                (
                    LOG_DEBUG,
                    "alice is not confined: root is never confined".to_string()
                ),
            ]
        );
        // Without debug, no debug line.
        let mut h = FakeHandle::alice();
        assert_eq!(open(&mut h, &[], &j), PAM_IGNORE);
        assert_eq!(h.lines().len(), 1);
    }

    /// The arguments reach the runtime as JoinOptions; the PAM items as SessionInfo.
    #[test]
    fn options_and_items_passed() {
        let mut h = FakeHandle::alice();
        h.rhost = None;
        let j = FakeJoiner::new(Script::Exempt);
        open(
            &mut h,
            &["config=/tmp/p.toml", "keeper=/opt/keeper", "timeout=7"],
            &j,
        );
        let (opts, user, info) = j.opened.borrow()[0].clone();
        assert_eq!(opts.config, std::path::PathBuf::from("/tmp/p.toml"));
        assert_eq!(opts.keeper, std::path::PathBuf::from("/opt/keeper"));
        assert_eq!(opts.timeout, std::time::Duration::from_secs(7));
        assert_eq!(user, "alice");
        assert_eq!(
            (info.service.as_str(), info.tty.as_deref(), info.rhost),
            ("sshd", Some("ssh"), None)
        );
        assert_eq!(
            h.lines()[0].1,
            "open: user=alice service=sshd rhost=- tty=ssh"
        );
    }

    /// A joined session is kept in the handle and closed by close_session.
    #[test]
    fn joined_then_closed() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Join);
        assert_eq!(open(&mut h, &[], &j), PAM_SUCCESS);
        assert!(h.data.is_some());
        assert_eq!(
            h.lines()[1],
            (
                LOG_INFO,
                "joined container of alice (init pid 4242)".to_string()
            )
        );
        let code = guarded(&mut h, "close_session", |h| {
            close_session(h, &[] as &[&str], &j)
        });
        assert_eq!(code, PAM_SUCCESS);
        assert!(h.data.is_none());
        assert_eq!(*j.closed.borrow(), vec!["alice".to_string()]);
        assert_eq!(h.lines()[2], (LOG_INFO, "close: user=alice".to_string()));
    }

    /// close_session without a kept session (an exempt user) is PAM_IGNORE.
    #[test]
    fn close_without_session_is_ignore() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Join);
        assert_eq!(close_session(&mut h, &[] as &[&str], &j), PAM_IGNORE);
        assert!(j.closed.borrow().is_empty());
        assert!(h.lines().is_empty());
    }

    /// A failure refuses the session with one LOG_ERR line naming user, step and cause.
    #[test]
    fn error_is_session_err() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Fail("keeper", "no keeper after 30s"));
        assert_eq!(open(&mut h, &[], &j), PAM_SESSION_ERR);
        let errors: Vec<_> = h
            .lines()
            .into_iter()
            .filter(|(p, _)| *p == LOG_ERR)
            .collect();
        assert_eq!(
            errors,
            vec![(
                LOG_ERR,
                "refusing session of alice: keeper: no keeper after 30s".to_string()
            )]
        );
    }

    /// The keeper's session-limit refusal reaches the user through the conversation; other causes only syslog.
    #[test]
    fn refusal_told_to_user() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Fail(
            "keeper",
            "alice already has 2 sessions, the most the policy allows (2)",
        ));
        assert_eq!(open(&mut h, &[], &j), PAM_SESSION_ERR);
        assert_eq!(
            *h.told.borrow(),
            vec!["hutch: login refused: alice already has 2 sessions, the most the policy allows (2)".to_string()]
        );
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Fail(
            "template",
            "/var/lib/hutch/templates/x: not found",
        ));
        assert_eq!(open(&mut h, &[], &j), PAM_SESSION_ERR);
        assert_eq!(
            *h.told.borrow(),
            vec!["hutch: your session could not be set up; the system log says why".to_string()]
        );
    }

    /// on_error=ignore logs the failure and lets the session through.
    #[test]
    fn on_error_ignore() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Fail(
            "policy",
            "/etc/hutch/hutch.toml:3:1: unknown key",
        ));
        assert_eq!(open(&mut h, &["on_error=ignore"], &j), PAM_IGNORE);
        assert_eq!(
            h.lines()[1],
            (
                LOG_ERR,
                "NOT confining session of alice (on_error=ignore): policy: /etc/hutch/hutch.toml:3:1: unknown key"
                    .to_string()
            )
        );
    }

    /// A missing user is an error of step pam_get_user.
    #[test]
    fn no_user() {
        let mut h = FakeHandle::alice();
        h.user = None;
        let j = FakeJoiner::new(Script::Join);
        assert_eq!(open(&mut h, &[], &j), PAM_SESSION_ERR);
        assert_eq!(
            h.lines(),
            vec![(
                LOG_ERR,
                "refusing session of ?: pam_get_user: no user".to_string()
            )]
        );
        assert!(j.opened.borrow().is_empty());
    }

    /// If the session cannot be kept, the login is refused even with on_error=ignore.
    #[test]
    fn set_data_failure_refuses() {
        let mut h = FakeHandle::alice();
        h.refuse_data = true;
        let j = FakeJoiner::new(Script::Join);
        assert_eq!(open(&mut h, &["on_error=ignore"], &j), PAM_SESSION_ERR);
        assert_eq!(
            h.lines()[1],
            (
                LOG_ERR,
                "refusing session of alice: pam_set_data: Memory buffer error".to_string()
            )
        );
    }

    /// A panic inside becomes PAM_SESSION_ERR with a log line, not an abort.
    #[test]
    fn panic_is_session_err() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Panic);
        assert_eq!(open(&mut h, &["on_error=ignore"], &j), PAM_SESSION_ERR);
        assert_eq!(
            h.lines()[1],
            (
                LOG_ERR,
                "open_session: internal error (panic): boom in join".to_string()
            )
        );
    }

    /// Unknown arguments are logged at LOG_ERR and ignored; bad values are PAM_SERVICE_ERR.
    #[test]
    fn argument_errors() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Exempt);
        assert_eq!(open(&mut h, &["bogus"], &j), PAM_IGNORE);
        assert_eq!(
            h.lines()[0],
            (LOG_ERR, "unknown argument \"bogus\" ignored".to_string())
        );

        let mut h = FakeHandle::alice();
        assert_eq!(open(&mut h, &["timeout=soon"], &j), PAM_SERVICE_ERR);
        assert_eq!(
            h.lines(),
            vec![(
                LOG_ERR,
                "bad argument \"timeout=soon\": needs a whole number of seconds".to_string()
            )]
        );
        assert_eq!(j.opened.borrow().len(), 1);

        let mut h = FakeHandle::alice();
        assert_eq!(close_session(&mut h, &["on_error=x"], &j), PAM_SERVICE_ERR);
    }

    /// Control characters from the client cannot forge syslog lines.
    #[test]
    fn log_injection() {
        let mut h = FakeHandle::alice();
        h.user = Some("eve\nJan 1 sshd: accepted".into());
        let j = FakeJoiner::new(Script::Exempt);
        open(&mut h, &[], &j);
        assert_eq!(
            h.lines()[0].1,
            "open: user=eve\\x0aJan 1 sshd: accepted service=sshd rhost=192.0.2.7 tty=ssh"
        );
    }
}
