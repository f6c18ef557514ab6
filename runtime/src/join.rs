//! What the PAM module does to enter a container: find or start the user's
//! keeper, open a session (a live connection), and move the calling process
//! into the container's cgroup and namespaces (mount last).
//!
//! INTERFACE CONTRACT (used by pam-module/): keep these signatures.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the module finds things; from its arguments.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The policy file (`config=`).
    pub config: PathBuf,
    /// The hutch-keeper binary (`keeper=`).
    pub keeper: PathBuf,
    /// How long to wait for a new keeper to report its container ready.
    pub timeout: Duration,
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
    /// The container's init, in the host's pid namespace.
    pub init_pid: i32,
}

/// The result of [`open_session`].
#[derive(Debug)]
pub enum Outcome {
    /// The user is not confined; nothing was changed. The string says why.
    Exempt(String),
    /// The calling process is now in the user's container.
    Joined(Session),
}

/// A failure, naming the step (`"policy"`, `"threads"`, `"keeper"`, `"setns(mnt)"`, ...)
/// and its cause. `Display` gives `"<step>: <cause>"`.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub struct JoinError {
    pub step: &'static str,
    pub cause: String,
}

/// Opens a session of `user` through PAM service `info.service`: loads the
/// policy, and for a confined user checks the caller is single-threaded,
/// connects to (or starts) the keeper, and joins the container.
pub fn open_session(opts: &JoinOptions, user: &str, info: &SessionInfo) -> Result<Outcome, JoinError> {
    let _ = (opts, user, info);
    todo!("core")
}

impl Session {
    /// Tells the keeper the session ended and drops the connection.
    pub fn close(self) {
        todo!("core")
    }
}
