//! The decisions of `pam_sm_open_session` and `pam_sm_close_session`, in
//! plain Rust over [`PamOps`] (the PAM handle) and [`Joiner`] (the runtime),
//! so that tests drive them with a scripted fake handle.

use std::any::Any;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hutch_runtime::audit::Record;
use hutch_runtime::counters::{self, LoginResult};
use hutch_runtime::error::chain;
use hutch_runtime::join::{JoinError, JoinOptions, Outcome, Refusal, Session, SessionInfo, Step};

use crate::args::{self, Args, OnError};
use crate::codes::{PAM_IGNORE, PAM_SERVICE_ERR, PAM_SESSION_ERR, PAM_SUCCESS};

/// syslog priorities (the facility, LOG_AUTHPRIV, is added by [`PamOps::log`]).
pub use libc::{LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING};

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
    /// The counters file of policy `config` (`hutchctl metrics`), opened
    /// before the session enters the container.
    fn counters(&self, config: &std::path::Path) -> Option<std::fs::File>;
    /// Adds a login's increments to `file` (from [`Joiner::counters`]); a
    /// failure is ignored.
    fn count(&self, file: Option<&std::fs::File>, incs: &[(String, u64)]);
    /// Sends one audit record (hutch-audit(7)) to the host's syslog.
    fn audit(&self, record: &Record);
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
    fn counters(&self, config: &std::path::Path) -> Option<std::fs::File> {
        let path = counters::path_for(config, std::path::Path::new(counters::DEFAULT_DIR));
        counters::open_for_update(&path).ok()
    }
    fn count(&self, file: Option<&std::fs::File>, incs: &[(String, u64)]) {
        if let Some(f) = file {
            let _ = counters::add_to(f, incs);
        }
    }
    fn audit(&self, record: &Record) {
        record.send()
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
    let info = SessionInfo {
        service: ops.service().unwrap_or_default(),
        tty: ops.tty(),
        rhost: ops.rhost(),
    };
    let user = match ops.user() {
        Ok(user) => user,
        Err(cause) => {
            return failed(
                ops,
                &args,
                joiner,
                joiner.counters(&args.config).as_ref(),
                "?",
                &info,
                &JoinError::new(Step::PamGetUser, cause),
            );
        }
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
    let started = std::time::Instant::now();
    let counters_file = joiner.counters(&args.config);
    let count =
        |result: LoginResult, refusal: Option<&str>, setup: Option<(&str, std::time::Duration)>| {
            joiner.count(
                counters_file.as_ref(),
                &counters::login(&info.service, result, refusal, setup),
            );
        };
    match joiner.open(&opts, &user, &info) {
        Ok(Outcome::Exempt(why)) => {
            count(LoginResult::Exempt, None, None);
            if args.debug {
                ops.log(
                    LOG_DEBUG,
                    &format!("{} is not confined: {}", clean(&user), clean(&why)),
                );
            }
            PAM_IGNORE
        }
        Ok(Outcome::Monitor { uid, would, why }) => {
            count(LoginResult::Monitor, None, None);
            ops.log(
                LOG_NOTICE,
                &format!(
                    "monitor only ({}): would {} the session of {}; it runs on the host",
                    clean(&why),
                    clean(&would),
                    clean(&user)
                ),
            );
            joiner.audit(
                &session_record("session.monitor", &user, Some(uid), &info)
                    .field("would", &would)
                    .field("why", &why),
            );
            PAM_IGNORE
        }
        Ok(Outcome::ExemptByLastGood { broken, why }) => {
            count(LoginResult::Exempt, None, None);
            ops.log(
                LOG_ERR,
                &format!(
                    "the policy cannot be loaded ({}); letting {} in unconfined: the last policy that loaded exempts them ({})",
                    clean(&broken),
                    clean(&user),
                    clean(&why)
                ),
            );
            joiner.audit(
                &session_record("session.exempt", &user, None, &info)
                    .field("why", format!("exempt by the last good policy: {why}"))
                    .field("broken", &broken)
                    .notice(),
            );
            PAM_IGNORE
        }
        Ok(Outcome::Joined(session)) => {
            let took = started.elapsed();
            if session.created {
                count(LoginResult::Created, None, Some(("create", took)));
            } else {
                count(LoginResult::Joined, None, Some(("join", took)));
            }
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
        Err(e) => failed(ops, &args, joiner, counters_file.as_ref(), &user, &info, &e),
    }
}

/// An audit record about `user`'s session: event, user, uid, PAM items.
fn session_record(event: &'static str, user: &str, uid: Option<u32>, info: &SessionInfo) -> Record {
    let uid = uid.or_else(|| hutch_runtime::account::lookup(user).ok().map(|a| a.uid));
    Record::new(event)
        .field("user", user)
        .opt("uid", uid)
        .field("service", &info.service)
        .opt("rhost", info.rhost.as_ref())
        .opt("tty", info.tty.as_ref())
}

/// The cause of a refusal as the counters label it: the step, or for the
/// keeper's and the policy's own refusals what they refused for.
pub fn refusal_cause(e: &JoinError) -> String {
    if let Some(r) = e.refusal {
        return r.label().into();
    }
    let mut out = String::new();
    for c in e.step.name().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// One LOG_ERR line naming user, step and cause; the code `on_error` asks
/// for; the login counted and an audit record sent.
fn failed<O: PamOps>(
    ops: &O,
    args: &Args,
    joiner: &dyn Joiner,
    counters_file: Option<&std::fs::File>,
    user: &str,
    info: &SessionInfo,
    e: &JoinError,
) -> c_int {
    let cause = refusal_cause(e);
    let on_error = effective_on_error(args, e);
    let result = match on_error {
        OnError::Fail => LoginResult::Refused,
        OnError::Ignore => LoginResult::Unconfined,
    };
    joiner.count(
        counters_file,
        &counters::login(&info.service, result, Some(&cause), None),
    );
    let event = match on_error {
        OnError::Fail => "session.refuse",
        OnError::Ignore => "session.unconfined",
    };
    joiner.audit(
        &session_record(event, user, None, info)
            .field("cause", &cause)
            .field("reason", chain(e))
            .notice(),
    );
    match on_error {
        OnError::Fail => {
            ops.log(
                LOG_ERR,
                &format!("refusing session of {}: {}", clean(user), clean(&chain(e))),
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
                    clean(&chain(e))
                ),
            );
            PAM_IGNORE
        }
    }
}

/// What `on_error` means for this failure: `ignore` cannot let through a
/// caller that had begun joining the container ([`JoinError::inside`]): it
/// is neither on the host nor confined, so the session is refused.
fn effective_on_error(args: &Args, e: &JoinError) -> OnError {
    if e.inside() {
        OnError::Fail
    } else {
        args.on_error
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
    match e.refusal {
        Some(Refusal::MaxSessions | Refusal::MissingController) => {
            format!("hutch: login refused: {}", clean(&chain(e.cause.as_ref())))
        }
        Some(Refusal::Service) | None => {
            "hutch: your session could not be set up; the system log says why".to_string()
        }
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
    use hutch_runtime::ns::Namespace;
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
        Monitor,
        LastGood,
        Join,
        Fail(Step, &'static str),
        Refused(Step, Refusal, &'static str),
        Panic,
    }

    /// One call of `count`: its increments.
    type Counted = Vec<(String, u64)>;

    struct FakeJoiner {
        script: Script,
        opened: RefCell<Vec<(JoinOptions, String, SessionInfo)>>,
        closed: RefCell<Vec<String>>,
        counted: RefCell<Vec<Counted>>,
        counters_of: RefCell<Vec<std::path::PathBuf>>,
        audited: RefCell<Vec<String>>,
    }

    impl FakeJoiner {
        fn new(script: Script) -> Self {
            FakeJoiner {
                script,
                opened: RefCell::default(),
                closed: RefCell::default(),
                counted: RefCell::default(),
                counters_of: RefCell::default(),
                audited: RefCell::default(),
            }
        }
        /// The series counted, over every login so far.
        fn series(&self) -> Vec<String> {
            self.counted
                .borrow()
                .iter()
                .flat_map(|incs| incs.iter().filter(|(_, n)| *n > 0).map(|(s, _)| s.clone()))
                .collect()
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
                Script::Monitor => Ok(Outcome::Monitor {
                    uid: 1001,
                    would: "confine in template default".into(),
                    why: "groups.staff: enforce = false (hutch.toml:3:11)".into(),
                }),
                Script::LastGood => Ok(Outcome::ExemptByLastGood {
                    broken: "hutch.toml:1:1: bad".into(),
                    why: "groups.admins: confine = false (hutch.toml:2:11)".into(),
                }),
                Script::Join => {
                    let (conn, _peer) = UnixStream::pair().unwrap();
                    Ok(Outcome::Joined(Session {
                        conn,
                        user: user.to_string(),
                        uid: 1001,
                        created: true,
                        init_pid: 4242,
                        tty: None,
                    }))
                }
                Script::Fail(step, cause) => Err(JoinError::new(step, cause)),
                Script::Refused(step, refusal, cause) => {
                    Err(JoinError::refused(step, refusal, cause))
                }
                Script::Panic => panic!("boom in join"),
            }
        }
        fn close(&self, session: Session) {
            self.closed.borrow_mut().push(session.user.clone());
        }
        fn counters(&self, config: &std::path::Path) -> Option<std::fs::File> {
            self.counters_of.borrow_mut().push(config.to_path_buf());
            None
        }
        fn count(&self, _file: Option<&std::fs::File>, incs: &[(String, u64)]) {
            self.counted.borrow_mut().push(incs.to_vec());
        }
        fn audit(&self, record: &Record) {
            self.audited.borrow_mut().push(record.render());
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
        let j = FakeJoiner::new(Script::Fail(Step::Keeper, "no keeper after 30s"));
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
        let j = FakeJoiner::new(Script::Refused(
            Step::Keeper,
            Refusal::MaxSessions,
            "alice already has 2 sessions, the most the policy allows (2)",
        ));
        assert_eq!(open(&mut h, &[], &j), PAM_SESSION_ERR);
        assert_eq!(
            *h.told.borrow(),
            vec!["hutch: login refused: alice already has 2 sessions, the most the policy allows (2)".to_string()]
        );
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Fail(
            Step::Keeper,
            "template: /var/lib/hutch/templates/x: not found",
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
            Step::Policy,
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

    /// A failure once the caller had begun joining (a setns, the session's
    /// seccomp filter) refuses the session even with on_error=ignore.
    #[test]
    fn failure_inside_refuses_even_with_ignore() {
        for step in [
            Step::Setns(Namespace::Mnt),
            Step::SeccompLoad,
            Step::NoNewPrivs,
            Step::Fds,
        ] {
            let mut h = FakeHandle::alice();
            let j = FakeJoiner::new(Script::Fail(step, "boom"));
            assert_eq!(
                open(&mut h, &["on_error=ignore"], &j),
                PAM_SESSION_ERR,
                "{step}"
            );
            assert_eq!(
                h.lines()[1],
                (LOG_ERR, format!("refusing session of alice: {step}: boom"))
            );
        }
        // Before joining, ignore still lets the session through (on the host).
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Fail(Step::Seccomp, "profile /x: not found"));
        assert_eq!(open(&mut h, &["on_error=ignore"], &j), PAM_IGNORE);
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

    /// enforce = false: the would-be decision is logged and audited, the
    /// login counted as monitor, and the session goes on (PAM_IGNORE).
    #[test]
    fn monitor_only_logs_and_lets_through() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Monitor);
        assert_eq!(open(&mut h, &[], &j), PAM_IGNORE);
        assert!(h.data.is_none());
        assert_eq!(
            h.lines()[1],
            (
                LOG_NOTICE,
                "monitor only (groups.staff: enforce = false (hutch.toml:3:11)): would confine in template default the session of alice; it runs on the host".to_string()
            )
        );
        assert_eq!(
            *j.audited.borrow(),
            vec!["v=1 event=session.monitor user=alice uid=1001 service=sshd rhost=192.0.2.7 tty=ssh would=\"confine in template default\" why=\"groups.staff: enforce = false (hutch.toml:3:11)\"".to_string()]
        );
        assert_eq!(
            j.series(),
            vec!["hutch_logins_total{service=\"sshd\",result=\"monitor\"}".to_string()]
        );
    }

    /// A broken policy that the last good one says exempts: in, with a LOG_ERR line.
    #[test]
    fn last_good_exemption_lets_in() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::LastGood);
        assert_eq!(open(&mut h, &[], &j), PAM_IGNORE);
        assert_eq!(h.lines()[1].0, LOG_ERR);
        assert!(
            h.lines()[1].1.contains("letting alice in unconfined"),
            "{:?}",
            h.lines()
        );
        assert!(j.audited.borrow()[0].starts_with("v=1 event=session.exempt user=alice"));
    }

    /// A refusal is counted by cause and audited; a join by kind with its set-up time.
    #[test]
    fn refusals_and_joins_counted() {
        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Refused(
            Step::Keeper,
            Refusal::MaxSessions,
            "alice already has 2 sessions, the most the policy allows (2)",
        ));
        open(&mut h, &["config=/etc/x.toml"], &j);
        let series = j.series();
        assert!(
            series.contains(&"hutch_logins_total{service=\"sshd\",result=\"refused\"}".to_string()),
            "{series:?}"
        );
        assert!(
            series.contains(&"hutch_login_refusals_total{cause=\"max_sessions\"}".to_string()),
            "{series:?}"
        );
        assert_eq!(
            j.counters_of.borrow()[0],
            std::path::PathBuf::from("/etc/x.toml")
        );
        let rec = j.audited.borrow()[0].clone();
        let pairs = hutch_runtime::audit::parse(&rec).unwrap();
        assert_eq!(pairs[1], ("event".into(), "session.refuse".into()));
        assert!(
            pairs.contains(&("cause".into(), "max_sessions".into())),
            "{rec}"
        );

        let mut h = FakeHandle::alice();
        let j = FakeJoiner::new(Script::Join);
        open(&mut h, &[], &j);
        let series = j.series();
        assert!(
            series.contains(&"hutch_logins_total{service=\"sshd\",result=\"created\"}".to_string()),
            "{series:?}"
        );
        assert!(
            series.contains(&"hutch_login_setup_seconds_count{kind=\"create\"}".to_string()),
            "{series:?}"
        );
    }

    /// Causes are labels: a step's odd characters go, the policy's and keeper's refusals are named.
    #[test]
    fn refusal_causes() {
        let e = |step, cause: &'static str| JoinError::new(step, cause);
        assert_eq!(
            refusal_cause(&e(Step::Setns(Namespace::Mnt), "EINVAL")),
            "setns_mnt"
        );
        assert_eq!(
            refusal_cause(&e(Step::Policy, "hutch.toml:1:1: bad")),
            "policy"
        );
        assert_eq!(
            refusal_cause(&JoinError::refused(
                Step::Policy,
                Refusal::Service,
                "service systemd-user refuses confined users (x)"
            )),
            "service"
        );
        assert_eq!(
            refusal_cause(&JoinError::refused(
                Step::Keeper,
                Refusal::MissingController,
                "controller memory is not available on this host (x)"
            )),
            "controller_missing"
        );
        assert_eq!(
            refusal_cause(&e(Step::PamGetUser, "no user")),
            "pam_get_user"
        );
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
