//! The namespaces of a container: which there are, the order a process
//! joins them in, opening a process's (one descriptor each), and joining
//! them all. The keeper opens its init's ([`crate::container::spawn`]) and
//! hands them to every session over its socket; the PAM module joins them
//! ([`crate::join`]), and so does `hutchctl enter` ([`crate::enter`]) after
//! opening them itself.
//!
//! The container's user namespace is the host's (hutch maps no ids), so
//! there is none to join.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};

/// One kind of namespace a container has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Cgroup,
    Ipc,
    Uts,
    Net,
    Pid,
    Mnt,
}

impl Namespace {
    /// Every namespace of a container, in the order a process joins them.
    /// Mount last: it changes the caller's root, and every setns before it
    /// still runs with the host's view of the file system. `pid` changes
    /// only what the caller's next child is in (the caller forks after).
    pub const JOIN_ORDER: [Namespace; 6] = [
        Namespace::Cgroup,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Net,
        Namespace::Pid,
        Namespace::Mnt,
    ];

    /// Its name under `/proc/PID/ns/`.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::Cgroup => "cgroup",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
            Namespace::Mnt => "mnt",
        }
    }

    /// Its `CLONE_NEW*` flag: `setns` refuses a descriptor of another kind.
    pub fn flag(self) -> CloneFlags {
        match self {
            Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }

    /// The step that joins it, as failures name it: `setns(net)`
    /// ([`crate::join::Step::Setns`]).
    pub fn setns_step(self) -> &'static str {
        match self {
            Namespace::Cgroup => "setns(cgroup)",
            Namespace::Ipc => "setns(ipc)",
            Namespace::Uts => "setns(uts)",
            Namespace::Net => "setns(net)",
            Namespace::Pid => "setns(pid)",
            Namespace::Mnt => "setns(mnt)",
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Opening or joining namespaces failed: the step, and the kernel's cause
/// as the source.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{got} namespace descriptors where a container has {}", Namespace::JOIN_ORDER.len())]
    Count { got: usize },
    #[error("prctl(PR_SET_DUMPABLE, 0)")]
    Dumpable(#[source] nix::Error),
    #[error("setns({ns})")]
    Setns {
        ns: Namespace,
        #[source]
        source: nix::Error,
    },
    #[error("chdir(\"/\") in the container")]
    Chdir(#[source] nix::Error),
}

/// One process's namespaces, opened: a descriptor for each of
/// [`Namespace::JOIN_ORDER`], in that order.
#[derive(Debug)]
pub struct Namespaces {
    /// Always `JOIN_ORDER.len()` long, in `JOIN_ORDER`.
    fds: Vec<OwnedFd>,
}

impl Namespaces {
    /// Opens `/proc/PID/ns/*` of `pid`. (That `pid` is still the process
    /// meant is the caller's to check, after opening: a pid can be reused.)
    pub fn open(pid: i32) -> Result<Namespaces, NsError> {
        let mut fds = Vec::with_capacity(Namespace::JOIN_ORDER.len());
        for ns in Namespace::JOIN_ORDER {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{}", ns.name()));
            let f = File::open(&path).map_err(|source| NsError::Open { path, source })?;
            fds.push(OwnedFd::from(f));
        }
        Ok(Namespaces { fds })
    }

    /// Descriptors received in [`Namespace::JOIN_ORDER`] (the keeper's
    /// answer to a session). Their kinds are checked when joined.
    pub fn from_fds(fds: Vec<OwnedFd>) -> Result<Namespaces, NsError> {
        if fds.len() != Namespace::JOIN_ORDER.len() {
            return Err(NsError::Count { got: fds.len() });
        }
        Ok(Namespaces { fds })
    }

    /// The descriptor of one namespace.
    pub fn get(&self, ns: Namespace) -> BorrowedFd<'_> {
        let i = Namespace::JOIN_ORDER
            .iter()
            .position(|n| *n == ns)
            .expect("JOIN_ORDER has every namespace");
        self.fds[i].as_fd()
    }

    /// All of them in [`Namespace::JOIN_ORDER`] (to send to a session).
    pub fn as_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(|f| f.as_fd()).collect()
    }

    /// Moves the calling process into every namespace, in
    /// [`Namespace::JOIN_ORDER`], then `chdir("/")` (the host's cwd does
    /// not exist inside). Must be called single-threaded (`setns(mnt)`
    /// fails otherwise).
    ///
    /// First the caller becomes non-dumpable: once it sits in the
    /// container's namespaces it is visible to the container's processes,
    /// and none of them may ptrace it or open its /proc entries (fds, cwd,
    /// exe, environ) (runc's nsexec, CVE-2016-9962).
    pub fn join_all(&self) -> Result<(), NsError> {
        nix::sys::prctl::set_dumpable(false).map_err(NsError::Dumpable)?;
        for ns in Namespace::JOIN_ORDER {
            self.join(ns)?;
        }
        nix::unistd::chdir("/").map_err(NsError::Chdir)
    }

    /// Moves the calling thread into one of them only (the keeper's
    /// children that act in the container's mount namespace). Nothing else
    /// changes: no `chdir`, no dumpable flag.
    pub fn join(&self, ns: Namespace) -> Result<(), NsError> {
        setns(self.get(ns), ns.flag()).map_err(|source| NsError::Setns { ns, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mount is joined last, pid before it, and every namespace once.
    #[test]
    fn join_order() {
        let order = Namespace::JOIN_ORDER;
        assert_eq!(order.last(), Some(&Namespace::Mnt));
        let pos = |n| order.iter().position(|x| *x == n).unwrap();
        assert!(pos(Namespace::Pid) < pos(Namespace::Mnt));
        for (i, a) in order.iter().enumerate() {
            assert!(!order[i + 1..].contains(a), "{a} twice");
        }
        let names: Vec<_> = order.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["cgroup", "ipc", "uts", "net", "pid", "mnt"]);
    }

    /// Opening our own namespaces gives one descriptor each, of the kind
    /// asked for; a wrong count of received descriptors is refused.
    #[test]
    fn open_and_get() {
        use std::os::unix::fs::MetadataExt;
        let own = Namespaces::open(std::process::id() as i32).unwrap();
        assert_eq!(own.as_fds().len(), Namespace::JOIN_ORDER.len());
        let net = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let fd = own.get(Namespace::Net);
        let via_fd = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap()
        .ino();
        assert_eq!(via_fd, net);
        let short = Namespaces::from_fds(Vec::new()).unwrap_err();
        assert!(matches!(short, NsError::Count { got: 0 }), "{short}");
    }

    /// A pid that does not exist fails naming the path.
    #[test]
    fn open_names_the_path() {
        let e = Namespaces::open(i32::MAX).unwrap_err();
        assert!(e.to_string().contains("/proc/2147483647/ns/cgroup"), "{e}");
    }
}
