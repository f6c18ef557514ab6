//! Is this process inside its user's hutch container? The keeper writes a
//! root-owned marker (`hutch_runtime::paths::CONTAINER_MARKER`) inside the
//! container; we trust it only if it is a regular file (not a symlink),
//! owned by root, not writable by group or others, names our uid, and names
//! the pid namespace we are in.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use hutch_runtime::paths::Marker;

/// The largest marker we read; a real one is under 200 bytes.
const MAX_MARKER: u64 = 4096;

/// Why the marker was not accepted. `Display` gives the detail that goes in
/// the parentheses of the refusal message.
#[derive(Debug)]
pub enum MarkerError {
    Missing {
        path: String,
    },
    Open {
        path: String,
        source: io::Error,
    },
    NotRegular {
        path: String,
    },
    NotRoot {
        path: String,
        uid: u32,
    },
    Writable {
        path: String,
        mode: u32,
    },
    Read {
        path: String,
        source: io::Error,
    },
    Malformed {
        path: String,
    },
    WrongUser {
        path: String,
        marker_uid: u32,
        uid: u32,
    },
    PidNs {
        source: io::Error,
    },
    WrongPidNs {
        marker: u64,
        ours: u64,
    },
}

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerError::Missing { path } => write!(f, "no marker at {path}"),
            MarkerError::Open { path, source } => {
                write!(f, "cannot open the marker {path}: {source}")
            }
            MarkerError::NotRegular { path } => {
                write!(f, "the marker {path} is not a regular file")
            }
            MarkerError::NotRoot { path, uid } => {
                write!(f, "the marker {path} is owned by uid {uid}, not root")
            }
            MarkerError::Writable { path, mode } => {
                write!(
                    f,
                    "the marker {path} is writable by group or others (mode {:o})",
                    mode & 0o7777
                )
            }
            MarkerError::Read { path, source } => {
                write!(f, "cannot read the marker {path}: {source}")
            }
            MarkerError::Malformed { path } => write!(f, "the marker {path} is malformed"),
            MarkerError::WrongUser {
                path,
                marker_uid,
                uid,
            } => {
                write!(
                    f,
                    "the marker {path} is for uid {marker_uid}, not uid {uid}"
                )
            }
            MarkerError::PidNs { source } => write!(f, "cannot stat /proc/self/ns/pid: {source}"),
            MarkerError::WrongPidNs { marker, ours } => {
                write!(
                    f,
                    "the marker names pid namespace {marker}, but this process is in {ours}"
                )
            }
        }
    }
}

/// The identity to check the marker against.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub uid: u32,
    pub pidns: u64,
}

/// The inode of the pid namespace this process is in.
pub fn own_pidns(proc_dir: &Path) -> Result<u64, MarkerError> {
    // metadata() follows the magic link to the nsfs inode.
    std::fs::metadata(proc_dir.join("self/ns/pid"))
        .map(|m| m.ino())
        .map_err(|source| MarkerError::PidNs { source })
}

/// Opens, checks and parses the marker at `path`.
pub fn read(path: &Path, expect: Expect) -> Result<Marker, MarkerError> {
    let shown = path.display().to_string();
    let file = open_nofollow(path).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOENT) => MarkerError::Missing {
            path: shown.clone(),
        },
        Some(libc::ELOOP) => MarkerError::NotRegular {
            path: shown.clone(),
        },
        _ => MarkerError::Open {
            path: shown.clone(),
            source,
        },
    })?;
    let meta = file.metadata().map_err(|source| MarkerError::Read {
        path: shown.clone(),
        source,
    })?;
    check_meta(&shown, &meta)?;
    let mut text = String::new();
    file.take(MAX_MARKER)
        .read_to_string(&mut text)
        .map_err(|source| MarkerError::Read {
            path: shown.clone(),
            source,
        })?;
    let marker = Marker::parse(&text).ok_or_else(|| MarkerError::Malformed {
        path: shown.clone(),
    })?;
    if marker.uid != expect.uid {
        return Err(MarkerError::WrongUser {
            path: shown,
            marker_uid: marker.uid,
            uid: expect.uid,
        });
    }
    if marker.pidns != expect.pidns {
        return Err(MarkerError::WrongPidNs {
            marker: marker.pidns,
            ours: expect.pidns,
        });
    }
    Ok(marker)
}

/// O_NOFOLLOW: a symlink is refused (ELOOP); O_NONBLOCK: a FIFO cannot hang us.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn check_meta(path: &str, meta: &Metadata) -> Result<(), MarkerError> {
    if !meta.file_type().is_file() {
        return Err(MarkerError::NotRegular {
            path: path.to_string(),
        });
    }
    if meta.uid() != 0 {
        return Err(MarkerError::NotRoot {
            path: path.to_string(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(MarkerError::Writable {
            path: path.to_string(),
            mode: meta.mode(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn marker(uid: u32, pidns: u64) -> String {
        Marker {
            user: "alice".into(),
            uid,
            pidns,
            shell: "/bin/bash".into(),
            seccomp: "default".into(),
            seccomp_deny: Vec::new(),
        }
        .render()
    }

    fn am_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A missing marker says so, with the path.
    #[test]
    fn missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(&dir.path().join("m"), Expect { uid: 1, pidns: 2 }).unwrap_err();
        assert!(matches!(err, MarkerError::Missing { .. }));
        assert!(err.to_string().starts_with("no marker at /"));
    }

    /// A symlink to a good marker is refused.
    #[test]
    fn symlink_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, marker(1, 2)).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("m")).unwrap();
        let err = read(&dir.path().join("m"), Expect { uid: 1, pidns: 2 }).unwrap_err();
        assert!(matches!(err, MarkerError::NotRegular { .. }), "{err}");
    }

    /// A directory (or any non-regular file) is refused.
    #[test]
    fn directory_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path(), Expect { uid: 1, pidns: 2 }).unwrap_err();
        assert!(matches!(err, MarkerError::NotRegular { .. }), "{err}");
    }

    /// Ownership, mode, uid and pid namespace are all checked (needs root to
    /// make a root-owned file; as non-root the ownership check is what fails).
    #[test]
    fn identity_checks() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::write(&m, marker(1001, 4026532180)).unwrap();
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o444)).unwrap();
        let good = Expect {
            uid: 1001,
            pidns: 4026532180,
        };
        if !am_root() {
            assert!(matches!(
                read(&m, good).unwrap_err(),
                MarkerError::NotRoot { .. }
            ));
            eprintln!("SKIP rest of identity_checks: not root");
            return;
        }
        assert_eq!(
            read(&m, good).unwrap().shell,
            std::path::PathBuf::from("/bin/bash")
        );
        let e = read(&m, Expect { uid: 1002, ..good }).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the marker {} is for uid 1001, not uid 1002", m.display())
        );
        let e = read(&m, Expect { pidns: 7, ..good }).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the marker names pid namespace 4026532180, but this process is in 7"
        );
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(
            read(&m, good).unwrap_err(),
            MarkerError::Writable { .. }
        ));
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::write(&m, "user=alice\n").unwrap();
        assert!(matches!(
            read(&m, good).unwrap_err(),
            MarkerError::Malformed { .. }
        ));
        nix::unistd::chown(&m, Some(nix::unistd::Uid::from_raw(1)), None).unwrap();
        assert!(matches!(
            read(&m, good).unwrap_err(),
            MarkerError::NotRoot { uid: 1, .. }
        ));
    }

    /// Our own pid namespace has an inode.
    #[test]
    fn pidns_inode() {
        assert!(own_pidns(Path::new("/proc")).unwrap() > 0);
    }
}
