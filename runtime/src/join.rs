//! What the PAM module does to join a container: find or start the user's
//! keeper, open a session (a live connection), move the calling process
//! into the container's cgroup and namespaces (mount last), and confine it
//! as a session's processes are. Every failure is a [`JoinError`] naming
//! its [`Step`].

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keeper::lock_user;
pub use crate::keeper::proto::Refusal;
use crate::keeper::proto::{self, Request};
use crate::ns::{Namespace, Namespaces, NsError};
use crate::paths::UserPaths;
use crate::{account, privs, seccomp, sys, Kernel};
use hutch_policy::{Decision, Policy, ServiceMode};

/// How long closing a session waits for the keeper's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the module finds things; from its arguments.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The policy file (`config=`).
    pub config: PathBuf,
    /// The hutch-keeper binary (`keeper=`).
    pub keeper: PathBuf,
    /// How long to wait for a new keeper to report its container ready.
    pub timeout: Duration,
    /// Where the compiled policy is cached between logins
    /// ([`hutch_policy::DEFAULT_CACHE_DIR`]); fixed by the caller, never by
    /// the policy it caches.
    pub policy_cache: PathBuf,
}

/// The PAM items of the session being opened, for the keeper's log and state.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub service: String,
    pub tty: Option<String>,
    pub rhost: Option<String>,
}

/// A session in a container: the open connection to the keeper. Dropping it
/// (or the process dying) ends the session as far as the keeper is concerned.
#[derive(Debug)]
pub struct Session {
    pub conn: UnixStream,
    pub user: String,
    pub uid: u32,
    /// This session's login made the container (started the keeper).
    pub created: bool,
    /// The container's init, in the host's pid namespace.
    pub init_pid: i32,
    /// The caller's terminal, when it came from the host (su, login), as the
    /// container's /dev shows it (`/dev/pts-3`, `/dev/tty1`); the bind goes
    /// at close. `Err`: why it could not be shown (the session goes on; the
    /// terminal still works, it has no name inside).
    pub tty: Option<Result<String, String>>,
}

/// The result of [`open_session`].
#[derive(Debug)]
pub enum Outcome {
    /// The user is not confined; nothing was changed. The string says why.
    Exempt(String),
    /// The calling process is now in the user's container.
    Joined(Session),
    /// `enforce = false`: nothing was changed; the session runs on the host.
    /// `would` is what an enforcing policy would do (`confine in template
    /// default`, `refuse: ...`); `why` where `enforce = false` came from.
    Monitor {
        uid: u32,
        would: String,
        why: String,
    },
    /// The policy cannot be loaded (`broken` says why), but the last one
    /// that did exempted the account (`why`): the session runs on the host.
    ExemptByLastGood { broken: String, why: String },
}

/// The step of opening a session that failed, as the log line and the
/// login counters name it ([`Step::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The PAM module's own: no user name from PAM.
    PamGetUser,
    Account,
    Policy,
    Threads,
    /// Resolving the policy's seccomp profile (on the host, before the join).
    Seccomp,
    Lock,
    Keeper,
    Dumpable,
    Setns(Namespace),
    Chdir,
    Capabilities,
    Fds,
    NoNewPrivs,
    /// Loading the seccomp filter (inside).
    SeccompLoad,
}

impl Step {
    /// `"keeper"`, `"setns(mnt)"`, `"seccomp(load)"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Step::PamGetUser => "pam_get_user",
            Step::Account => "account",
            Step::Policy => "policy",
            Step::Threads => "threads",
            Step::Seccomp => "seccomp",
            Step::Lock => "lock",
            Step::Keeper => "keeper",
            Step::Dumpable => "dumpable",
            Step::Setns(ns) => ns.setns_step(),
            Step::Chdir => "chdir",
            Step::Capabilities => "capabilities",
            Step::Fds => "fds",
            Step::NoNewPrivs => "no_new_privs",
            Step::SeccompLoad => "seccomp(load)",
        }
    }

    /// Whether the caller had begun joining the container when this step
    /// failed (the namespaces, capabilities and the session's confinement):
    /// then it is neither on the host nor confined, and the only safe
    /// answer is a refusal, whatever `on_error` says.
    pub fn inside(self) -> bool {
        match self {
            Step::PamGetUser
            | Step::Account
            | Step::Policy
            | Step::Threads
            | Step::Seccomp
            | Step::Lock
            | Step::Keeper => false,
            Step::Dumpable
            | Step::Setns(_)
            | Step::Chdir
            | Step::Capabilities
            | Step::Fds
            | Step::NoNewPrivs
            | Step::SeccompLoad => true,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The cause of a [`JoinError`]: a typed error where the failure happened
/// in this process, the keeper's words where it happened in the keeper.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Opening a session failed at `step`; the cause is the source (print the
/// whole with [`crate::error::chain`]: `setns(mnt): EINVAL: ...`).
/// `refusal` is set when the policy refused, rather than something failing.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct JoinError {
    pub step: Step,
    pub refusal: Option<Refusal>,
    #[source]
    pub cause: Cause,
}

impl JoinError {
    pub fn new(step: Step, cause: impl Into<Cause>) -> JoinError {
        JoinError {
            step,
            refusal: None,
            cause: cause.into(),
        }
    }

    /// A refusal the policy makes, with its words.
    pub fn refused(step: Step, refusal: Refusal, cause: impl Into<Cause>) -> JoinError {
        JoinError {
            refusal: Some(refusal),
            ..JoinError::new(step, cause)
        }
    }

    /// [`Step::inside`] of its step.
    pub fn inside(&self) -> bool {
        self.step.inside()
    }
}

fn err(step: Step) -> impl FnOnce(String) -> JoinError {
    move |cause| JoinError::new(step, cause)
}

/// Opens a session of `user` through PAM service `info.service`: looks the
/// account up (root is exempt without reading the policy), loads the
/// policy through its cache, and for a confined user checks the caller is single-threaded,
/// connects to (or starts) the keeper, and joins the container.
pub fn open_session(
    opts: &JoinOptions,
    user: &str,
    info: &SessionInfo,
) -> Result<Outcome, JoinError> {
    crate::timing::mark("pam_start");
    let account_err = |e| JoinError::new(Step::Account, e);
    let mut account = account::lookup_without_groups(user).map_err(account_err)?;
    crate::timing::mark("pam_account");
    // Root logs in even when the policy cannot be read (fail closed for everyone else).
    if account.uid == 0 {
        return Ok(Outcome::Exempt("root is never confined".into()));
    }
    let policy = match Policy::load_cached(&opts.config, &opts.policy_cache) {
        Ok(p) => p,
        Err(e) => {
            account::add_groups(&mut account).map_err(account_err)?;
            return broken_policy(opts, &account, &info.service, e);
        }
    };
    crate::timing::mark("pam_policy_read");
    // The groups decide nothing in a policy without group tables (a keeper
    // this login starts gets them all the same: `connect_or_start`).
    let group_ids = if policy.uses_groups() {
        let ids = account::add_groups(&mut account).map_err(account_err)?;
        crate::timing::mark("pam_groups");
        Some(ids)
    } else {
        None
    };
    let explained = policy.explain(&account, &info.service);
    crate::timing::mark("pam_policy");
    if let Some(why) = explained.monitor {
        return Ok(Outcome::Monitor {
            uid: account.uid,
            would: would_do(&explained.decision),
            why,
        });
    }
    let up = match explained.decision {
        Decision::Exempt(why) => return Ok(Outcome::Exempt(why)),
        Decision::Refuse(why) if explained.service_mode == ServiceMode::Refuse => {
            return Err(JoinError::refused(Step::Policy, Refusal::Service, why))
        }
        Decision::Refuse(why) => return Err(err(Step::Policy)(why)),
        Decision::Confine(up) => up,
    };
    confine(opts, &policy, &up, account, group_ids, info).map(Outcome::Joined)
}

/// For `hutchctl check --probe`: like [`open_session`] for a user the
/// policy confines, `enforce = false` or not (the probe tries the would-be
/// container); an exempt or refused user is an error of step `policy`.
pub fn open_probe_session(
    opts: &JoinOptions,
    user: &str,
    info: &SessionInfo,
) -> Result<Session, JoinError> {
    let (account, group_ids) =
        account::lookup_with_ids(user).map_err(|e| JoinError::new(Step::Account, e))?;
    if account.uid == 0 {
        return Err(err(Step::Policy)("root is never confined".into()));
    }
    let policy = Policy::load(&opts.config).map_err(|e| JoinError::new(Step::Policy, e))?;
    match policy.resolve(&account, &info.service) {
        Decision::Exempt(why) => Err(err(Step::Policy)(format!("not confined: {why}"))),
        Decision::Refuse(why) => Err(err(Step::Policy)(format!("refused: {why}"))),
        Decision::Confine(up) => confine(opts, &policy, &up, account, Some(group_ids), info),
    }
}

/// Connects to (or starts) the keeper of a confined `user` and joins the
/// container, after checking the caller is single-threaded; then confines
/// the caller with `up`'s seccomp profile ([`confine_session_process`]).
/// A keeper it starts is handed the account as looked up here, with its
/// groups' ids (`group_ids`; `None`: not looked up yet).
fn confine(
    opts: &JoinOptions,
    policy: &Policy,
    up: &hutch_policy::UserPolicy,
    account: hutch_policy::Account,
    group_ids: Option<Vec<(String, u32)>>,
    info: &SessionInfo,
) -> Result<Session, JoinError> {
    // Before anything changes: setns(mnt) fails in a threaded caller, and a
    // half-joined process must never happen.
    check_single_threaded()?;
    // The session's seccomp filter, a profile file read now, on the host.
    let filter = seccomp::resolve(&up.seccomp).map_err(|e| err(Step::Seccomp)(e.to_string()))?;
    // Keyed by the NSS canonical name, not the string PAM was given.
    let user = account.name.as_str();
    let paths = UserPaths::new(policy.host(), user);
    crate::timing::mark("pam_seccomp");
    let (conn, init_pid, namespaces, created) =
        connect_or_start(opts, &paths, &account, group_ids, info)?;
    crate::timing::mark("pam_opened");
    let tty = host_tty();
    join_container(&namespaces)?;
    crate::timing::mark("pam_setns");
    let tty = tty.map(|t| t.and_then(bind_tty));
    if let Some(Ok(inside)) = &tty {
        // The keeper removes the bind when the session ends (the confined
        // caller can no longer unmount anything, and may be killed).
        let _ = proto::send(
            &conn,
            &Request::Tty {
                path: inside.clone(),
            }
            .render(),
            &[],
        );
    }
    confine_session_process(filter.as_deref())?;
    crate::timing::mark("pam_confined");
    Ok(Session {
        conn,
        user: user.to_string(),
        uid: account.uid,
        created,
        init_pid,
        tty,
    })
}

/// What an enforcing policy would do with a session (for a monitor-only log line).
fn would_do(d: &Decision) -> String {
    match d {
        Decision::Confine(p) => format!("confine in template {}", p.template),
        Decision::Refuse(why) => format!("refuse: {why}"),
        Decision::Exempt(why) => format!("exempt: {why}"),
    }
}

/// A login whose policy cannot be loaded is refused (fail closed), unless
/// the last policy that loaded (the cache) exempted the account: then it
/// goes on unconfined ([`Outcome::ExemptByLastGood`]), so a broken edit
/// never locks an exempt admin out (root is let in before the policy is
/// read at all).
fn broken_policy(
    opts: &JoinOptions,
    account: &hutch_policy::Account,
    service: &str,
    e: hutch_policy::PolicyError,
) -> Result<Outcome, JoinError> {
    match Policy::last_good(&opts.config, &opts.policy_cache).map(|p| p.resolve(account, service)) {
        Some(Decision::Exempt(why)) => Ok(Outcome::ExemptByLastGood {
            broken: e.to_string(),
            why,
        }),
        _ => Err(JoinError::new(Step::Policy, e)),
    }
}

/// The caller's terminal from the host: a detached clone of its device node
/// (made in the host's mount namespace) and the name it gets in the
/// container's /dev.
struct HostTty {
    tree: OwnedFd,
    inside: String,
}

/// `None` when fd 0 is no terminal, or one the container made (sshd
/// allocates its ptys after joining: they are the container's own).
fn host_tty() -> Option<Result<HostTty, String>> {
    if !nix::unistd::isatty(0).unwrap_or(false) {
        return None;
    }
    let path = fs::read_link("/proc/self/fd/0").ok()?;
    let rest = path.to_str()?.strip_prefix("/dev/")?.to_string();
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    let inside = format!("/dev/{}", rest.replace('/', "-"));
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    Some(
        sys::open_tree_clone(&c)
            .map_err(|e| format!("open_tree({}): {e}", path.display()))
            .and_then(|tree| {
                use std::os::unix::fs::FileTypeExt;
                // Only a character device is shown (fd 0 could name anything under /dev).
                let ft = fs::metadata(format!("/proc/self/fd/{}", tree.as_raw_fd()))
                    .map(|m| m.file_type());
                match ft {
                    Ok(ft) if ft.is_char_device() => Ok(HostTty { tree, inside }),
                    _ => Err(format!("{} is not a character device", path.display())),
                }
            }),
    )
}

/// Binds the terminal at its name in the container's /dev (a root-owned
/// tmpfs: the mount point is a fresh empty file, never a symlink), so that
/// ttyname(3) and tty(1) find it: the container's devpts cannot hold a host
/// pty, and a console's node is not in the container's /dev.
fn bind_tty(t: HostTty) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let made = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&t.inside);
    match made {
        Ok(_) => {}
        // A session on the same terminal before (su inside su, or one that
        // was killed): mount over it, unless it is not a plain file.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let md = fs::symlink_metadata(&t.inside).map_err(|e| format!("{}: {e}", t.inside))?;
            if md.file_type().is_symlink() || md.is_dir() {
                return Err(format!("{} exists and is not a file", t.inside));
            }
        }
        Err(e) => return Err(format!("creating {}: {e}", t.inside)),
    }
    let target = CString::new(t.inside.as_str()).map_err(|_| "bad terminal name".to_string())?;
    sys::move_mount_to(t.tree.as_fd(), &target)
        .map_err(|e| format!("binding the terminal on {}: {e}", t.inside))?;
    Ok(t.inside)
}

/// Refuses a caller with more than one thread: `/proc/self/task` lists
/// one entry a thread (half the cost of reading `/proc/self/status`).
pub fn check_single_threaded() -> Result<(), JoinError> {
    let threads = fs::read_dir("/proc/self/task")
        .map_err(|e| err(Step::Threads)(format!("reading /proc/self/task: {e}")))?
        .count();
    if threads != 1 {
        return Err(err(Step::Threads)(format!(
            "the calling program has {threads} threads; a process can only enter a mount namespace while single-threaded (graphical logins such as gdm cannot be confined)"
        )));
    }
    Ok(())
}

type Opened = (UnixStream, i32, Namespaces);

/// Connects to the user's keeper, starting one if none runs; also says
/// whether this call started it (the session's login made the container).
fn connect_or_start(
    opts: &JoinOptions,
    paths: &UserPaths,
    account: &hutch_policy::Account,
    group_ids: Option<Vec<(String, u32)>>,
    info: &SessionInfo,
) -> Result<(UnixStream, i32, Namespaces, bool), JoinError> {
    let joined = |(c, p, n): Opened| (c, p, n, false);
    // Fast path: a keeper is running.
    if let Some(o) = try_open(paths, info, opts.timeout)? {
        return Ok(joined(o));
    }
    crate::timing::mark("pam_no_keeper");
    // The keeper this login starts needs the groups (the init's
    // supplementary groups) even where the policy did not.
    let handed = match group_ids {
        Some(ids) => account::Handed::new(account, &ids),
        None => {
            let mut full = account.clone();
            let ids =
                account::add_groups(&mut full).map_err(|e| JoinError::new(Step::Account, e))?;
            account::Handed::new(&full, &ids)
        }
    };
    let handed = &handed;
    for _ in 0..3 {
        let lock = lock_user(&paths.lock(), true)
            .map_err(|e| err(Step::Lock)(format!("locking {}: {e}", paths.lock().display())))?
            .ok_or_else(|| err(Step::Lock)("lock not taken".into()))?;
        crate::timing::mark("pam_locked");
        if let Some(o) = try_open(paths, info, opts.timeout)? {
            return Ok(joined(o));
        }
        if let Err(e) = spawn_keeper(opts, handed, &info.service) {
            // Nothing runs for this user: leave no lock or directory behind.
            let _ = fs::remove_file(paths.lock());
            let _ = fs::remove_dir(&paths.dir);
            return Err(e);
        }
        let opened = try_open(paths, info, opts.timeout)?;
        drop(lock);
        if let Some((c, p, n)) = opened {
            return Ok((c, p, n, true));
        }
    }
    Err(err(Step::Keeper)(format!(
        "the keeper of {} did not accept the session",
        account.name
    )))
}

/// Connects and sends OPEN. `Ok(None)` when no keeper is there (no socket,
/// a stale one, or a keeper that closed the connection while tearing down).
fn try_open(
    paths: &UserPaths,
    info: &SessionInfo,
    timeout: Duration,
) -> Result<Option<Opened>, JoinError> {
    let sock = paths.socket();
    let conn = match UnixStream::connect(&sock) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(err(Step::Keeper)(format!(
                "connecting to {}: {e}",
                sock.display()
            )))
        }
    };
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let req = Request::Open {
        service: info.service.clone(),
        tty: info.tty.clone().unwrap_or_default(),
        rhost: info.rhost.clone().unwrap_or_default(),
    };
    if proto::send(&conn, &req.render(), &[]).is_err() {
        return Ok(None);
    }
    let (line, fds) = match proto::recv(&conn) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(err(Step::Keeper)(format!(
                "no answer from {} within {} s",
                sock.display(),
                timeout.as_secs()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => {
            return Err(err(Step::Keeper)(format!(
                "reading from {}: {e}",
                sock.display()
            )))
        }
    };
    let mut f = line.split('\t');
    match f.next() {
        Some("OK") => {
            let pid = f.next().and_then(|p| p.parse::<i32>().ok());
            let got = fds.len();
            match (pid, Namespaces::from_fds(fds)) {
                (Some(pid), Ok(namespaces)) => {
                    let _ = conn.set_read_timeout(None);
                    Ok(Some((conn, pid, namespaces)))
                }
                _ => Err(err(Step::Keeper)(format!(
                    "malformed answer {line:?} with {got} descriptors"
                ))),
            }
        }
        Some("ERR") => Err(err(Step::Keeper)(f.collect::<Vec<_>>().join(" "))),
        Some("REFUSED") => Err(keeper_refusal(f.next(), f.collect::<Vec<_>>().join(" "))),
        _ => Err(err(Step::Keeper)(format!("unexpected answer {line:?}"))),
    }
}

/// The keeper's `REFUSED <label> <message>` (a label it does not know is
/// a plain failure: the words still reach the log).
fn keeper_refusal(label: Option<&str>, cause: String) -> JoinError {
    match label.and_then(Refusal::from_label) {
        Some(r) => JoinError::refused(Step::Keeper, r, cause),
        None => err(Step::Keeper)(cause),
    }
}

/// The keeper runs as root from inside a PAM host: refuse a binary that is
/// not root's or that others can write.
fn check_keeper_binary(path: &Path) -> Result<(), JoinError> {
    use std::os::unix::fs::MetadataExt;
    let md =
        fs::metadata(path).map_err(|e| err(Step::Keeper)(format!("{}: {e}", path.display())))?;
    if md.uid() != 0 || md.mode() & 0o022 != 0 || !md.is_file() {
        return Err(err(Step::Keeper)(format!(
            "{} must be a regular file owned by root and writable only by root",
            path.display()
        )));
    }
    Ok(())
}

/// Starts `hutch-keeper` detached (fork, new session, spawn, clean
/// environment, no inherited descriptors but the readiness pipe and the
/// handed account's) and waits for it to report.
fn spawn_keeper(
    opts: &JoinOptions,
    handed: &account::Handed,
    service: &str,
) -> Result<(), JoinError> {
    let user = handed.name.as_str();
    check_keeper_binary(&opts.keeper)?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| err(Step::Keeper)(format!("pipe2: {e}")))?;
    // The account as looked up here, written whole before the fork (it fits
    // the pipe: `Handed::encode`), so the keeper need not ask NSS again.
    // Anything amiss and nothing is handed: the keeper looks it up itself.
    let account_r = handed.encode().and_then(|bytes| {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let wrote = nix::unistd::write(&w, &bytes).ok()?;
        (wrote == bytes.len()).then_some(r)
    });
    let prog = CString::new(opts.keeper.as_os_str().as_encoded_bytes())
        .map_err(|_| err(Step::Keeper)("bad path".into()))?;
    let cstr = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
    let mut argv = vec![
        cstr("hutch-keeper"),
        cstr("--config"),
        CString::new(opts.config.as_os_str().as_encoded_bytes()).unwrap_or_default(),
        cstr("--policy-cache"),
        CString::new(opts.policy_cache.as_os_str().as_encoded_bytes()).unwrap_or_default(),
        cstr("--service"),
        cstr(service),
        cstr("--ready-fd"),
        cstr("3"),
    ];
    if account_r.is_some() {
        argv.extend([cstr("--account-fd"), cstr("4")]);
    }
    argv.push(cstr(user));
    let env = [
        cstr("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        cstr("LANG=C"),
    ];
    match sys::fork().map_err(|e| err(Step::Keeper)(format!("fork: {e}")))? {
        sys::Forked::Child => {
            // Intermediate child: new session, the keeper's descriptors,
            // spawn it, exit, so the keeper is nobody's child in the PAM
            // host. Spawned, not forked: a second copy of the PAM host's
            // page tables (and its teardown at the exec) would only delay
            // the keeper. Out of the way first (either could be 3 or 4
            // already), then each at its number without close-on-exec.
            let _ = nix::unistd::setsid();
            let high =
                |fd: i32| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)).ok();
            let ready = high(ready_w.as_raw_fd());
            let account = account_r.as_ref().and_then(|r| high(r.as_raw_fd()));
            if let Some(fd) = ready {
                let _ = nix::unistd::dup2(fd, 3);
            }
            if let Some(fd) = account {
                let _ = nix::unistd::dup2(fd, 4);
            }
            sys::close_fds_from(if account.is_some() { 5 } else { 4 }, &[]);
            sys::stdio_to_dev_null();
            sys::exit_now(match sys::spawn(&prog, &argv, &env) {
                Ok(_) => 0,
                Err(_) => 127,
            });
        }
        sys::Forked::Parent(child) => {
            drop(ready_w);
            drop(account_r);
            crate::timing::mark("pam_forked");
            let _ = nix::sys::wait::waitpid(child, None);
        }
    }
    let mut fds = [nix::poll::PollFd::new(
        ready_r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let deadline = std::time::Instant::now() + opts.timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(err(Step::Keeper)(format!(
                "the keeper did not report ready within {} s",
                opts.timeout.as_secs()
            )));
        }
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(err(Step::Keeper)(format!("poll: {e}"))),
        }
    }
    let mut line = String::new();
    let _ = io::Read::read_to_string(&mut fs::File::from(ready_r).take(4096), &mut line);
    let line = line.trim_end();
    crate::timing::mark("pam_ready_read");
    if line == "READY" {
        Ok(())
    } else if let Some(cause) = line.strip_prefix("ERR ") {
        Err(err(Step::Keeper)(cause.to_string()))
    } else if let Some(rest) = line.strip_prefix("REFUSED ") {
        let (label, cause) = rest.split_once(' ').unwrap_or((rest, ""));
        Err(keeper_refusal(Some(label), cause.to_string()))
    } else {
        Err(err(Step::Keeper)(format!(
            "{} exited without reporting (status {line:?}); see syslog",
            opts.keeper.display()
        )))
    }
}

/// Moves the caller (the PAM host) into the container: every namespace
/// ([`Namespaces::join_all`]: non-dumpable first, mount last, then `/` as
/// its cwd), then empties the capability sets that reach an exec
/// ([`privs::drop_exec_caps`]), so that whatever it forks for the user (the
/// shell, sftp, scp) starts with every capability set empty.
fn join_container(namespaces: &Namespaces) -> Result<(), JoinError> {
    namespaces.join_all().map_err(|e| match e {
        // The step names the namespace; the kernel's errno is the cause.
        NsError::Setns { ns, source } => JoinError::new(Step::Setns(ns), source),
        NsError::Dumpable(_) => JoinError::new(Step::Dumpable, e),
        NsError::Chdir(_) => JoinError::new(Step::Chdir, e),
        NsError::Open { .. } | NsError::Count { .. } => JoinError::new(Step::Keeper, e),
    })?;
    privs::drop_exec_caps(&mut Kernel).map_err(|e| JoinError::new(Step::Capabilities, e))
}

/// The PAM host, once in the container, is confined the way hutch-shell
/// confines a login shell, so that everything it runs for the user —
/// hutch-shell, a template's /bin/bash, cron's and atd's /bin/sh, `su -s`,
/// `sudo -u`, `runuser`, sftp-server — starts confined before any of its
/// code runs, and inherits it across every fork and exec:
/// 1. no descriptor of the host reaches an exec: every fd above 2 becomes
///    close-on-exec (the host keeps using its own), and a directory on
///    0-2 refuses the session (fchdir would lead out of the container);
/// 2. no_new_privs (a setuid or file-capability binary gains nothing);
/// 3. the policy's seccomp filter (`filter`, resolved on the host; `None`
///    for `seccomp = "off"`).
///
/// What the host itself does afterwards runs under the filter too: sshd's
/// monitor, su, login, cron, atd, sudo and runuser only fork, wait, change
/// to the user and talk to the keeper, none of which the filter denies
/// (the terminal bind is removed by the keeper, see [`Request::Tty`]).
fn confine_session_process(filter: Option<&[u32]>) -> Result<(), JoinError> {
    for fd in 0..3 {
        if let Ok(st) = nix::sys::stat::fstat(fd) {
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                return Err(err(Step::Fds)(format!(
                    "descriptor {fd} of the calling program is a directory of the host; a session must not start with one"
                )));
            }
        }
    }
    sys::cloexec_from(3)
        .map_err(|e| err(Step::Fds)(format!("marking descriptors close-on-exec: {e}")))?;
    use crate::privs::PrivOps;
    Kernel
        .no_new_privs()
        .map_err(|e| JoinError::new(Step::NoNewPrivs, e))?;
    seccomp::load(filter).map_err(|e| err(Step::SeccompLoad)(e.to_string()))?;
    Ok(())
}

impl Session {
    /// Tells the keeper the session ended and waits (bounded) for its
    /// answer: the keeper removes the terminal's bind (if any) and moves the
    /// calling process back to the cgroups it came from first, so that a
    /// teardown right after cannot kill it before it has reported the
    /// session's exit status.
    pub fn close(self) {
        if proto::send(&self.conn, &Request::Close.render(), &[]).is_ok() {
            let _ = self.conn.set_read_timeout(Some(CLOSE_TIMEOUT));
            let _ = proto::recv(&self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller with a second thread is refused (the test harness runs
    /// more than one); a forked child, single-threaded, passes.
    #[test]
    fn threads_counted_from_proc_self_task() {
        let t = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
        let e = check_single_threaded().expect_err("two threads at least");
        assert_eq!(e.step, Step::Threads);
        t.join().unwrap();
        match sys::fork().unwrap() {
            sys::Forked::Child => sys::exit_now(if check_single_threaded().is_ok() {
                0
            } else {
                1
            }),
            sys::Forked::Parent(pid) => assert_eq!(
                nix::sys::wait::waitpid(pid, None).unwrap(),
                nix::sys::wait::WaitStatus::Exited(pid, 0)
            ),
        }
    }
}
