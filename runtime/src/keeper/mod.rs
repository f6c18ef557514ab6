//! hutch-keeper: one per user with a live container. Started by the PAM
//! module (or anything that opens a session) when the user has none; it
//!
//! 1. places itself in hutch's own cgroup (never the user's quota, never
//!    sshd's scope), cleans what a crashed predecessor left, loads the
//!    template if it is not loaded yet;
//! 2. makes the user's cgroup with the limits, then the container
//!    ([`crate::container::spawn`]);
//! 3. listens on `keeper.sock` and reports ready (1-3: [`start`], which
//!    undoes a half-made container when a phase fails);
//! 4. serves sessions: each is a live connection (see [`proto`]; `serve`);
//! 5. when the last session is gone and the linger time has passed (or on
//!    `STOP`, SIGTERM, or the init dying), tears everything down: kills every
//!    process in the cgroup, waits for the init, removes the cgroup and the
//!    state, and exits (`teardown`).

mod audit;
pub mod logproxy;
pub mod notice;
pub mod proto;
mod serve;
pub mod start;
pub mod state;
pub mod status;
mod teardown;

pub use start::{cgroup_limits, container_devices, StartError};

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hutch_policy::{Account, UserPolicy};
use nix::sys::signalfd::SignalFd;

use crate::cgroup::Cgroup;
use crate::container::Container;
use crate::paths::UserPaths;
use crate::sys;
use crate::template::TemplateStore;

use state::State;

/// How the keeper was started.
#[derive(Debug)]
pub struct Options {
    pub config: PathBuf,
    /// The PAM module's policy cache (`--policy-cache`: the starter's
    /// [`JoinOptions::policy_cache`](crate::join::JoinOptions)), read the
    /// same way the module reads it: only a root-owned cache that no one
    /// else can write, whose key matches every source file. `None`: the
    /// files are parsed.
    pub policy_cache: Option<PathBuf>,
    pub user: String,
    /// The PAM service of the session that started it (for resolution).
    pub service: String,
    /// Where to report `READY` or `ERR <cause>` (the module waits on it).
    pub ready: Option<OwnedFd>,
    /// The account as the starter looked it up (`--account-fd`: one
    /// [`crate::account::Handed`]); `None`: the keeper looks it up.
    pub account: Option<OwnedFd>,
}

/// The keeper's own umask, whatever it inherited.
pub const KEEPER_UMASK: u32 = 0o022;

/// Runs a keeper to the end; returns the exit code.
pub fn main(opts: Options) -> i32 {
    sys::reset_signals();
    // The keeper makes the container's directories and files with the modes
    // it names; the umask of whatever PAM host started it (077 under some
    // admins' su) must not take bits off (a 0700 `/` in the container).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(KEEPER_UMASK));
    sys::openlog(c"hutch-keeper");
    let mut ready = opts.ready.map(File::from);
    // First, so that it holds one of the lowest numbers: the one a
    // connection gets when the keeper is out of descriptors.
    let spare = serve::Spare::open();
    let started = Instant::now();
    match Keeper::start(
        &opts.config,
        opts.policy_cache.as_deref(),
        &opts.user,
        &opts.service,
        opts.account,
        spare,
    ) {
        Ok(mut keeper) => {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{}: container up in {ms:.1} ms (init pid {}, template {} generation {})",
                    keeper.account.name,
                    keeper.container.init,
                    keeper.state.template,
                    keeper.state.generation
                ),
            );
            keeper.audit_container_start(ms);
            // What the start parsed and built (policy, spec, netlink and
            // nftables buffers) is freed: give it back before idling.
            sys::malloc_trim();
            let now = crate::timing::now_ns();
            keeper.state.start_marks.push(("ready".into(), now));
            if let Some(mut r) = ready.take() {
                let _ = r.write_all(b"READY\n");
            }
            keeper.serve();
            0
        }
        Err(err) => {
            let e = crate::error::chain(&err);
            let msg = format!("{}: {e}", opts.user);
            sys::syslog(
                libc::LOG_ERR,
                &format!("cannot make the container of {msg}"),
            );
            match ready.take() {
                Some(mut r) => {
                    let line = e.replace('\n', " ");
                    let _ = match err.refusal() {
                        Some(refusal) => writeln!(r, "REFUSED {} {line}", refusal.label()),
                        None => writeln!(r, "ERR {line}"),
                    };
                }
                None => eprintln!("hutch-keeper: cannot make the container of {msg}"),
            }
            1
        }
    }
}

struct Keeper {
    account: Account,
    policy: UserPolicy,
    paths: UserPaths,
    cgroup: Cgroup,
    /// The leaf's `cgroup.procs` files, held from the first session to the
    /// teardown (a join is one write a hierarchy).
    leaf_procs: Option<crate::cgroup::LeafProcs>,
    /// hutch's own group, where the keeper runs: where a closing session's
    /// PAM host goes when its own cgroup is gone.
    keepers: Cgroup,
    container: Container,
    /// What the network set-up made (released at teardown).
    net: Option<crate::net::NetHandle>,
    /// The container's /dev/log (dropped at teardown, which removes its socket).
    log: Option<logproxy::LogProxy>,
    /// `hutch status`'s socket (dropped at teardown, which removes it).
    status: Option<status::StatusServer>,
    /// The limits' events and the notices written to the terminals.
    watch: notice::Watch,
    listener: Option<UnixListener>,
    signals: SignalFd,
    sessions: serve::Sessions,
    state: State,
    /// Where the container's template generation is released at teardown.
    store: TemplateStore,
    /// A descriptor held in reserve for running out of them (EMFILE).
    spare: serve::Spare,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Makes `dir` (and parents) owned by root with mode 0700 for the last part.
pub fn make_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let md = fs::symlink_metadata(dir)?;
            if !md.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

impl Keeper {
    fn write_state(&self) {
        let mut st = self.state.clone();
        st.sessions = self.sessions.states();
        st.notices = self.watch.sent;
        st.last_notice = self.watch.last.clone();
        if let Err(e) = st.write(&self.paths.state()) {
            sys::syslog(
                libc::LOG_WARNING,
                &format!(
                    "{}: writing {}: {e}",
                    self.account.name,
                    self.paths.state().display()
                ),
            );
        }
    }
}

/// Takes the user's lock file (created if missing), checking that the file
/// locked is still the one at `path` (the keeper removes it at teardown).
/// `Ok(None)` when `block` is false and someone else holds it.
pub fn lock_user(path: &Path, block: bool) -> io::Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..50 {
        if let Some(parent) = path.parent() {
            make_private_dir(parent)?;
        }
        let f = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if block {
            f.lock()?;
        } else {
            match f.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let same = match (f.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(Some(f));
        }
    }
    Err(io::Error::other(format!(
        "{} keeps changing under us",
        path.display()
    )))
}
