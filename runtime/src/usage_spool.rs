//! The last word of a container on its usage: at teardown the keeper writes
//! the container's final counters (read from its cgroup once everything in
//! it is dead, before the cgroup is removed) to
//! `<run_dir>/usage-spool/<user>.<started>.json`, and the next
//! `hutchctl metrics --record` takes them into the usage history and
//! removes the file. So the history has what a container did after the
//! sampler last looked, and the keeper needs no database. The keeper spools
//! only where the spool directory exists: the first recording makes it, so
//! a host that records nothing gathers no files.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::Stats;

/// One container's final usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub user: String,
    pub uid: u32,
    /// The container's start time (its identity in the history).
    pub container: u64,
    /// When it was torn down (Unix time): the sample's time.
    pub ts: u64,
    /// Sessions open when it went.
    pub sessions: u64,
    /// Sessions it served in all (their ids are 1 to `served`).
    #[serde(default)]
    pub served: u64,
    pub stats: Stats,
}

/// `<run_dir>/usage-spool`.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("usage-spool")
}

/// Makes the spool directory (0700): from now on keepers spool.
pub fn enable(run_dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir)?;
    match fs::DirBuilder::new().mode(0o700).create(dir(run_dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `f` (a private temporary file renamed into place), if the spool
/// directory exists ([`enable`]); `Ok(false)` when it does not.
pub fn write(run_dir: &Path, f: &Final) -> io::Result<bool> {
    let d = dir(run_dir);
    if !d.is_dir() {
        return Ok(false);
    }
    let name = format!("{}.{}.json", f.user, f.container);
    let tmp = d.join(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(
        serde_json::to_string(f)
            .map_err(io::Error::other)?
            .as_bytes(),
    )?;
    fs::rename(&tmp, d.join(name))?;
    Ok(true)
}

/// Every spooled final usage, with its file (to remove once recorded).
/// Files that do not parse are skipped (and left).
pub fn pending(run_dir: &Path) -> Vec<(PathBuf, Final)> {
    let Ok(entries) = fs::read_dir(dir(run_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Final)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|p| {
            let f = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
            Some((p, f))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written final usage is pending until its file is removed.
    #[test]
    fn write_and_pending() {
        let d = tempfile::tempdir().unwrap();
        assert!(pending(d.path()).is_empty());
        let f = Final {
            user: "alice".into(),
            uid: 1001,
            container: 17,
            ts: 20,
            sessions: 0,
            served: 3,
            stats: Stats {
                cpu_usage_us: Some(5),
                ..Stats::default()
            },
        };
        assert!(!write(d.path(), &f).unwrap(), "no spool before enable");
        assert!(pending(d.path()).is_empty());
        enable(d.path()).unwrap();
        assert!(write(d.path(), &f).unwrap());
        let p = pending(d.path());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, f);
        fs::remove_file(&p[0].0).unwrap();
        assert!(pending(d.path()).is_empty());
    }
}
