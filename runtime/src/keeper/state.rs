//! `state.json`: what the keeper tells hutchctl about its container.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One open session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub id: u64,
    pub service: String,
    pub tty: String,
    pub rhost: String,
    /// The session's process (sshd's monitor, login, su) in the host pid namespace.
    pub pid: i32,
    /// Unix time the session opened.
    pub since: u64,
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub user: String,
    pub uid: u32,
    pub keeper_pid: i32,
    pub init_pid: i32,
    /// Unix time the container was made.
    pub started: u64,
    pub template: String,
    pub generation: u64,
    pub hostname: String,
    pub cgroups: Vec<PathBuf>,
    /// The CPUs the container runs on (`cpus = "auto"`), when not all.
    #[serde(default)]
    pub cpus: Option<String>,
    pub sessions: Vec<SessionState>,
    /// Limit notices written to the container's terminals so far, and the
    /// last of them (`hutchctl stats`).
    #[serde(default)]
    pub notices: u64,
    #[serde(default)]
    pub last_notice: Option<String>,
    /// When each phase of the start ended (`CLOCK_MONOTONIC` ns, keeper's
    /// and init's marks in order: [`crate::timing`]), for the benches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_marks: Vec<(String, u64)>,
}

impl State {
    /// Writes atomically (temporary file + rename), mode 0600.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(self)
                .map_err(io::Error::other)?
                .as_bytes(),
        )?;
        f.write_all(b"\n")?;
        fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> io::Result<State> {
        let text = fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}
