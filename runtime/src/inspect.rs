//! Root's view of a running container from the host (`hutchctl diff`,
//! `hutchctl enter`): the init the keeper recorded, checked to still be the
//! container's, and directories below its root opened so that no name the
//! user controls is followed.
//!
//! A pid in `state.json` is only a number: the init may have exited and the
//! number gone to another process. [`LiveProcess::verify`] opens a pidfd
//! first, then checks the process sits in the cgroup it must be in (only the
//! container's processes are in the user's group, only keepers in hutch's
//! own); whatever is opened through `/proc/<pid>/` afterwards is checked
//! against the pidfd again ([`LiveProcess::open_proc`]), so it belongs to
//! that very process and not to one that got its number later.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

use crate::cgroup::{Cgroup, CgroupError};
use crate::sys;

/// Why a recorded process or a path below its root could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("pid {pid} is gone")]
    Gone { pid: i32 },
    #[error("pid {pid} is not in {what} (it exited and its number was reused, or the container was replaced)")]
    NotInCgroup { pid: i32, what: &'static str },
    #[error("reading the members of {what}")]
    Cgroup {
        what: &'static str,
        #[source]
        source: CgroupError,
    },
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A process recorded by the keeper, held by a pidfd.
#[derive(Debug)]
pub struct LiveProcess {
    pub pid: i32,
    pidfd: OwnedFd,
}

impl LiveProcess {
    /// Holds `pid` and checks that it is a member of `cgroup` (`what` names
    /// the group in errors: "the container's cgroup", "hutch's keepers").
    pub fn verify(
        pid: i32,
        cgroup: &Cgroup,
        what: &'static str,
    ) -> Result<LiveProcess, InspectError> {
        if pid <= 0 {
            return Err(InspectError::Gone { pid });
        }
        let pidfd = sys::pidfd_open(Pid::from_raw(pid)).map_err(|_| InspectError::Gone { pid })?;
        let members = cgroup
            .pids()
            .map_err(|source| InspectError::Cgroup { what, source })?;
        if !members.contains(&pid) {
            return Err(InspectError::NotInCgroup { pid, what });
        }
        let p = LiveProcess { pid, pidfd };
        p.still_alive()?;
        Ok(p)
    }

    /// Whether the process the pidfd holds has not exited (a pidfd becomes
    /// readable when its process exits).
    pub fn still_alive(&self) -> Result<(), InspectError> {
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => Ok(()),
            _ => Err(InspectError::Gone { pid: self.pid }),
        }
    }

    /// `/proc/<pid>/<entry>` (e.g. `root`), opened O_PATH as a directory,
    /// then checked to belong to this process.
    pub fn open_proc(&self, entry: &str) -> Result<OwnedFd, InspectError> {
        let path = format!("/proc/{}/{entry}", self.pid);
        use std::os::unix::fs::OpenOptionsExt;
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&path)
            .map_err(|source| InspectError::Open {
                path: path.clone(),
                source,
            })?
            .into();
        self.still_alive()?;
        Ok(fd)
    }
}

/// Opens `rel` (relative, `/`-separated) below `root` as a directory to read,
/// resolved with `root` as `/` and no symlink followed
/// (`RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`): for
/// paths below a container's root that the user could have touched.
pub fn open_dir_strict(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_dir_with(
        root,
        rel,
        sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
}

/// Opens `rel` below `root` as a directory to read, with `root` as `/`
/// (symlinks allowed but kept below it, no magic links): for root-made
/// trees such as a keeper's view of the template store.
pub fn open_dir_in_root(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_dir_with(root, rel, sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS)
}

fn open_dir_with(root: BorrowedFd<'_>, rel: &Path, resolve: u64) -> io::Result<OwnedFd> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    sys::openat2(root, &c, libc::O_RDONLY | libc::O_DIRECTORY, resolve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A symlink anywhere on the way is refused by the strict open; the
    /// in-root open keeps an absolute symlink below the root.
    #[test]
    fn strict_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        symlink("/etc", d.path().join("a/link")).unwrap();
        let root = std::fs::File::open(d.path()).unwrap();
        assert!(open_dir_strict(root.as_fd(), Path::new("a/b")).is_ok());
        let e = open_dir_strict(root.as_fd(), Path::new("/a/link")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        // In root: /etc is the tree's own etc, not the host's.
        let fd = open_dir_in_root(root.as_fd(), Path::new("a/link")).unwrap();
        let shown = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap();
        assert_eq!(shown, d.path().join("etc"));
    }
}
