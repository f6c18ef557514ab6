//! Cloning a container's init with its namespaces, in the order of DESIGN.md:
//! the keeper clones the child into new mount, pid, uts, ipc and net
//! namespaces; places it in the user's cgroup; the child then makes its own
//! cgroup namespace (rooted at that cgroup), builds its root
//! ([`crate::rootfs`]), sets the hostname, brings up `lo`, drops every
//! capability and becomes the user, and reports ready. After that it is the
//! container's PID 1: it reaps zombies until the keeper (its parent) is gone.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{setgroups, sethostname, setresgid, setresuid, Gid, Pid, Uid};

use crate::rootfs::{self, RootfsSpec};
use crate::sys::{self, Forked};

/// Namespaces the container's init is made in (the cgroup namespace is
/// made by the child itself once it sits in the user's cgroup).
const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET;

/// The namespaces a session joins, in the order it joins them (mount last).
pub const JOIN_ORDER: [&str; 6] = ["cgroup", "ipc", "uts", "net", "pid", "mnt"];

/// Everything needed to make one container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub rootfs: RootfsSpec,
}

/// A running container, from the keeper's side.
#[derive(Debug)]
pub struct Container {
    /// The init, in the host's pid namespace.
    pub init: Pid,
    /// Readable when the init has exited.
    pub pidfd: OwnedFd,
    /// The init's namespaces, in [`JOIN_ORDER`].
    pub namespaces: Vec<OwnedFd>,
    /// Inode of the container's pid namespace (also in the marker).
    pub pidns: u64,
}

/// A container that could not be made: the step and its cause.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("placing the init in its cgroup: {0}")]
    Attach(String),
    #[error("{0}")]
    Child(String),
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::Io {
        op: "pipe2",
        source: e.into(),
    })
}

/// Makes the container. `attach` puts the child (by host pid) into the
/// user's cgroup before it does anything else.
pub fn spawn(
    spec: &ContainerSpec,
    attach: impl FnOnce(Pid) -> Result<(), String>,
) -> Result<Container, ContainerError> {
    let (go_r, go_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let keeper = nix::unistd::getpid();
    match sys::clone_fork(CLONE_FLAGS).map_err(|source| ContainerError::Io {
        op: "clone",
        source,
    })? {
        Forked::Child => {
            drop(go_w);
            drop(status_r);
            child_main(spec, keeper, go_r, status_w)
        }
        Forked::Parent(child) => {
            drop(go_r);
            drop(status_w);
            let fail = |e: ContainerError| {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                e
            };
            if let Err(e) = attach(child) {
                drop(go_w);
                return Err(fail(ContainerError::Attach(e)));
            }
            let mut go = fs::File::from(go_w);
            if let Err(source) = go.write_all(b"g") {
                return Err(fail(ContainerError::Io {
                    op: "starting the init",
                    source,
                }));
            }
            drop(go);
            let mut status = String::new();
            let _ = fs::File::from(status_r).read_to_string(&mut status);
            let status = status.trim_end();
            if let Some(msg) = status.strip_prefix("ERR ") {
                return Err(fail(ContainerError::Child(msg.to_string())));
            }
            let Some(pidns) = status
                .strip_prefix("OK ")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                return Err(fail(ContainerError::Child(format!(
                    "the container's init exited during set-up without a report ({status:?})"
                ))));
            };
            let pidfd = sys::pidfd_open(child).map_err(|source| {
                fail(ContainerError::Io {
                    op: "pidfd_open of the init",
                    source,
                })
            })?;
            let mut namespaces = Vec::new();
            for ns in JOIN_ORDER {
                let path = format!("/proc/{}/ns/{ns}", child.as_raw());
                let f = fs::File::open(&path).map_err(|source| {
                    fail(ContainerError::Io {
                        op: "opening a namespace of the init",
                        source,
                    })
                })?;
                namespaces.push(OwnedFd::from(f));
            }
            Ok(Container {
                init: child,
                pidfd,
                namespaces,
                pidns,
            })
        }
    }
}

/// The child: set up, report, then be PID 1. Never returns.
fn child_main(spec: &ContainerSpec, keeper: Pid, go: OwnedFd, status: OwnedFd) -> ! {
    let mut status = fs::File::from(status);
    match setup(spec, keeper, go) {
        Ok(pidns) => {
            let _ = writeln!(status, "OK {pidns}");
            drop(status);
            init_loop()
        }
        Err(msg) => {
            let _ = writeln!(status, "ERR {}", msg.replace('\n', " "));
            sys::exit_now(1)
        }
    }
}

fn setup(spec: &ContainerSpec, keeper: Pid, go: OwnedFd) -> Result<u64, String> {
    // From here on the init dies with the keeper. (getppid() says 0 in a
    // new pid namespace, so a keeper that died before this line shows up as
    // end-of-file on `go` instead.)
    let _ = keeper;
    let _ = prctl::set_name(c"hutch-init");
    // The keeper's argv (config path, service, user) is no business of the
    // container's processes: /proc/1/cmdline reads `hutch-init` instead.
    let _ = set_cmdline(b"hutch-init");
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    let mut byte = [0u8; 1];
    match fs::File::from(go).read(&mut byte) {
        Ok(1) => {}
        _ => return Err("the keeper did not place the init in its cgroup (or exited)".into()),
    }
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("unshare(CLONE_NEWCGROUP): {e}"))?;
    let pidns = fs::metadata("/proc/self/ns/pid")
        .map_err(|e| format!("stat /proc/self/ns/pid: {e}"))?
        .ino();
    let mut rootfs = spec.rootfs.clone();
    rootfs.marker = crate::paths::Marker {
        user: rootfs.user.clone(),
        uid: rootfs.uid,
        pidns,
        shell: rootfs.inner_shell.clone(),
        seccomp: rootfs.seccomp.clone(),
    }
    .render();
    configure(&mut rootfs::Kernel, &rootfs)?;
    Ok(pidns)
}

/// Overwrites this process's argument area (`arg_start..arg_end` of
/// /proc/self/stat) with `name` and NULs, through /proc/self/mem: what
/// /proc/PID/cmdline and ps show. Nothing in Rust holds a reference to
/// that memory (std keeps only the pointers, read by `env::args`).
fn set_cmdline(name: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let stat = fs::read_to_string("/proc/self/stat")?;
    // The fields after the command's closing parenthesis start at field 3;
    // arg_start and arg_end are fields 48 and 49.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let field = |n: usize| {
        rest.split_whitespace()
            .nth(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return Err(std::io::Error::other(
            "no arg_start/arg_end in /proc/self/stat",
        ));
    };
    let len = end.saturating_sub(start) as usize;
    if len == 0 {
        return Ok(());
    }
    let mut area = vec![0u8; len];
    let n = name.len().min(len - 1);
    area[..n].copy_from_slice(&name[..n]);
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?
        .write_all_at(&area, start)
}

/// The container's set-up after its namespaces exist, in the order of
/// DESIGN.md: mount propagation stopped, the root built and pivoted into
/// ([`rootfs::build_with`]), hostname, `lo`, stdio, then the privileges
/// dropped (bounding set, setgroups, setresgid, setresuid, no_new_privs).
/// Every step goes through `ops`, so a test records the order.
fn configure(ops: &mut impl SetupOps, rootfs: &RootfsSpec) -> Result<(), String> {
    rootfs::build_with(ops, rootfs).map_err(|e| e.to_string())?;
    ops.sethostname(&rootfs.hostname)?;
    ops.link_up_lo()?;
    ops.reopen_stdio();
    become_user(ops, rootfs)
}

/// The container's own set-up steps beyond the root filesystem; see
/// [`rootfs::RootfsOps`].
trait SetupOps: rootfs::RootfsOps {
    fn sethostname(&mut self, name: &str) -> Result<(), String>;
    fn link_up_lo(&mut self) -> Result<(), String>;
    fn reopen_stdio(&mut self);
    fn drop_bounding_set(&mut self) -> Result<(), String>;
    fn clear_ambient_inheritable(&mut self) -> Result<(), String>;
    fn setgroups(&mut self, gids: &[Gid]) -> Result<(), String>;
    fn setresgid(&mut self, gid: Gid) -> Result<(), String>;
    fn setresuid(&mut self, uid: Uid) -> Result<(), String>;
    fn no_new_privs(&mut self) -> Result<(), String>;
    fn not_dumpable(&mut self) -> Result<(), String>;
    fn check_no_capabilities(&mut self) -> Result<(), String>;
}

impl SetupOps for rootfs::Kernel {
    fn sethostname(&mut self, name: &str) -> Result<(), String> {
        sethostname(name).map_err(|e| format!("sethostname {name:?}: {e}"))
    }
    fn link_up_lo(&mut self) -> Result<(), String> {
        sys::link_up("lo").map_err(|e| format!("bringing up lo: {e}"))
    }
    fn reopen_stdio(&mut self) {
        reopen_stdio()
    }
    fn drop_bounding_set(&mut self) -> Result<(), String> {
        for cap in caps::all() {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
        Ok(())
    }
    fn clear_ambient_inheritable(&mut self) -> Result<(), String> {
        caps::clear(None, caps::CapSet::Ambient)
            .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
        caps::clear(None, caps::CapSet::Inheritable)
            .map_err(|e| format!("clearing inheritable capabilities: {e}"))
    }
    fn setgroups(&mut self, gids: &[Gid]) -> Result<(), String> {
        setgroups(gids).map_err(|e| format!("setgroups: {e}"))
    }
    fn setresgid(&mut self, gid: Gid) -> Result<(), String> {
        setresgid(gid, gid, gid).map_err(|e| format!("setresgid({gid}): {e}"))
    }
    fn setresuid(&mut self, uid: Uid) -> Result<(), String> {
        setresuid(uid, uid, uid).map_err(|e| format!("setresuid({uid}): {e}"))
    }
    fn no_new_privs(&mut self) -> Result<(), String> {
        prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))
    }
    fn not_dumpable(&mut self) -> Result<(), String> {
        prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))
    }
    fn check_no_capabilities(&mut self) -> Result<(), String> {
        if caps::read(None, caps::CapSet::Permitted)
            .map(|s| !s.is_empty())
            .unwrap_or(true)
        {
            return Err("capabilities remain after dropping to the user".into());
        }
        Ok(())
    }
}

/// fds 0-2 still point at the host's /dev/null: point them at the container's.
fn reopen_stdio() {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// Drops the bounding set, every capability and the root identity:
/// the init runs as the user with no capabilities and no_new_privs.
fn become_user(ops: &mut impl SetupOps, spec: &RootfsSpec) -> Result<(), String> {
    ops.drop_bounding_set()?;
    ops.clear_ambient_inheritable()?;
    let gids: Vec<Gid> = spec.groups.iter().map(|(_, g)| Gid::from_raw(*g)).collect();
    ops.setgroups(&gids)?;
    ops.setresgid(Gid::from_raw(spec.gid))?;
    ops.setresuid(Uid::from_raw(spec.uid))?;
    ops.no_new_privs()?;
    // Not ptraceable by the user, and /proc/1/{exe,fd,environ} stay closed:
    // the init is a fork of the keeper, its exe a host binary (CVE-2019-5736).
    ops.not_dumpable()?;
    ops.check_no_capabilities()
}

/// PID 1: reap every child (orphans of the sessions are re-parented here).
fn init_loop() -> ! {
    sys::close_fds_from(3, &[]);
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = set.thread_block();
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let _ = set.wait();
    }
}

/// Inode of a namespace file, for comparing namespaces.
pub fn ns_inode(path: &Path) -> std::io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{RootfsOps, RootfsSpec};
    use std::path::{Path, PathBuf};

    type R<T> = std::result::Result<T, crate::rootfs::RootfsError>;

    /// Records the name of every step instead of performing it.
    #[derive(Default)]
    struct Recorder(Vec<&'static str>);

    impl RootfsOps for Recorder {
        fn make_root_private(&mut self) -> R<()> {
            self.0.push("make_root_private");
            Ok(())
        }
        fn mount_writable_layer(&mut self, s: &RootfsSpec) -> R<PathBuf> {
            self.0.push("mount_writable_layer");
            Ok(s.staging.clone())
        }
        fn mount_overlay(&mut self, _: &RootfsSpec, l: &Path) -> R<PathBuf> {
            self.0.push("mount_overlay");
            Ok(l.join("root"))
        }
        fn write_etc(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("write_etc");
            Ok(())
        }
        fn mount_tmpfs_dirs(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("mount_tmpfs_dirs");
            Ok(())
        }
        fn bind_upper_for_admin(&mut self, _: &Path, _: &Path) -> R<()> {
            self.0.push("bind_upper_for_admin");
            Ok(())
        }
        fn bind_home(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("bind_home");
            Ok(())
        }
        fn bind_host_files(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("bind_host_files");
            Ok(())
        }
        fn bind_policy_mounts(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("bind_policy_mounts");
            Ok(())
        }
        fn mount_proc(&mut self, _: &Path) -> R<()> {
            self.0.push("mount_proc");
            Ok(())
        }
        fn mount_sys(&mut self, _: &Path) -> R<()> {
            self.0.push("mount_sys");
            Ok(())
        }
        fn mount_dev(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("mount_dev");
            Ok(())
        }
        fn mask_paths(&mut self, _: &Path) -> R<()> {
            self.0.push("mask_paths");
            Ok(())
        }
        fn write_marker(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("write_marker");
            Ok(())
        }
        fn pivot_into(&mut self, _: &Path) -> R<()> {
            self.0.push("pivot_into");
            Ok(())
        }
    }

    impl SetupOps for Recorder {
        fn sethostname(&mut self, _: &str) -> Result<(), String> {
            self.0.push("sethostname");
            Ok(())
        }
        fn link_up_lo(&mut self) -> Result<(), String> {
            self.0.push("link_up_lo");
            Ok(())
        }
        fn reopen_stdio(&mut self) {
            self.0.push("reopen_stdio")
        }
        fn drop_bounding_set(&mut self) -> Result<(), String> {
            self.0.push("drop_bounding_set");
            Ok(())
        }
        fn clear_ambient_inheritable(&mut self) -> Result<(), String> {
            self.0.push("clear_ambient_inheritable");
            Ok(())
        }
        fn setgroups(&mut self, _: &[Gid]) -> Result<(), String> {
            self.0.push("setgroups");
            Ok(())
        }
        fn setresgid(&mut self, _: Gid) -> Result<(), String> {
            self.0.push("setresgid");
            Ok(())
        }
        fn setresuid(&mut self, _: Uid) -> Result<(), String> {
            self.0.push("setresuid");
            Ok(())
        }
        fn no_new_privs(&mut self) -> Result<(), String> {
            self.0.push("no_new_privs");
            Ok(())
        }
        fn not_dumpable(&mut self) -> Result<(), String> {
            self.0.push("not_dumpable");
            Ok(())
        }
        fn check_no_capabilities(&mut self) -> Result<(), String> {
            self.0.push("check_no_capabilities");
            Ok(())
        }
    }

    /// The set-up runs in the hardening order of DESIGN.md: propagation stopped first, every mount before the pivot, then bounding set, setgroups, setresgid, setresuid, no_new_privs.
    #[test]
    fn setup_order() {
        let mut rec = Recorder::default();
        configure(&mut rec, &crate::rootfs::tests::spec()).unwrap();
        let steps = rec.0;
        let at = |name: &str| {
            steps
                .iter()
                .position(|s| *s == name)
                .unwrap_or_else(|| panic!("{name} never ran: {steps:?}"))
        };
        assert_eq!(
            steps[0], "make_root_private",
            "propagation must be stopped first: {steps:?}"
        );
        let pivot = at("pivot_into");
        for m in [
            "mount_writable_layer",
            "mount_overlay",
            "mount_tmpfs_dirs",
            "bind_home",
            "bind_host_files",
            "bind_policy_mounts",
            "mount_proc",
            "mount_sys",
            "mount_dev",
            "mask_paths",
        ] {
            assert!(at(m) < pivot, "{m} after the pivot: {steps:?}");
        }
        assert!(
            at("mount_tmpfs_dirs") < at("bind_home"),
            "/tmp must be mounted before the binds: {steps:?}"
        );
        let privs = [
            "drop_bounding_set",
            "setgroups",
            "setresgid",
            "setresuid",
            "no_new_privs",
        ];
        for w in privs.windows(2) {
            assert!(
                at(w[0]) < at(w[1]),
                "{} must come before {}: {steps:?}",
                w[0],
                w[1]
            );
        }
        assert!(
            pivot < at("drop_bounding_set"),
            "privileges are dropped after the root is built: {steps:?}"
        );
        assert_eq!(steps.last(), Some(&"check_no_capabilities"), "{steps:?}");
        assert_eq!(steps.len(), 26, "a step was added or lost: {steps:?}");
    }
}
