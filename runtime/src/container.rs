//! Cloning a container's init with its namespaces, in the order of
//! docs/DESIGN.md ("Building a container"): the keeper clones the child into
//! new mount, pid, uts, ipc and net namespaces; places it in the user's
//! cgroup; the child then makes its own cgroup namespace (rooted at that
//! cgroup), builds its root ([`crate::rootfs`]), sets the hostname, brings up
//! `lo`, drops every capability and becomes the user ([`crate::privs`]), and
//! reports ready. After that it is the container's PID 1: it execs the tiny
//! init ([`crate::tiny_init`]), which reaps zombies until the keeper (its
//! parent) is gone; where that exec fails, it reaps in its own loop.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{sethostname, Pid};

use crate::cgroup::CgroupError;
use crate::error::chain;
use crate::ns::{Namespaces, NsError};
use crate::privs::{self, Identity, PrivOps, PrivsError};
use crate::rootfs::{self, RootfsError, RootfsSpec};
use crate::sys::{self, Forked};
use crate::Kernel;

/// Namespaces the container's init is made in (the cgroup namespace is
/// made by the child itself once it sits in the user's cgroup).
const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET;

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
    /// The init's namespaces, handed to every session.
    pub namespaces: Namespaces,
    /// Inode of the container's pid namespace (also in the marker).
    pub pidns: u64,
}

/// A container that could not be made: the step and its cause.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{op}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("placing the init in its cgroup")]
    Attach(#[source] CgroupError),
    #[error(transparent)]
    Namespaces(NsError),
    /// The init's own report of its failed set-up (a [`SetupError`] chain,
    /// sent as a line over the status pipe).
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
/// user's cgroup before it does anything else; `meanwhile` runs in the
/// caller once the child is placed and going on, while it builds its root
/// (the keeper sets the network up then, on the second CPU), and before
/// its report is read: what it makes is the caller's to undo if this fails.
pub fn spawn(
    spec: &ContainerSpec,
    attach: impl FnOnce(Pid) -> Result<(), CgroupError>,
    meanwhile: impl FnOnce(Pid),
) -> Result<Container, ContainerError> {
    let (go_r, go_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // Made before the clone, so the clone needs no memfd of its own (a
    // seccomp policy may deny the user memfd_create; the keeper has none).
    let image = crate::tiny_init::image();
    match sys::clone_fork(CLONE_FLAGS).map_err(|source| ContainerError::Io {
        op: "clone",
        source,
    })? {
        Forked::Child => {
            drop(go_w);
            drop(status_r);
            child_main(spec, go_r, status_w, image)
        }
        Forked::Parent(child) => {
            drop(image);
            crate::timing::mark("clone");
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
            crate::timing::mark("attach");
            let mut go = fs::File::from(go_w);
            if let Err(source) = go.write_all(b"g") {
                return Err(fail(ContainerError::Io {
                    op: "starting the init",
                    source,
                }));
            }
            drop(go);
            meanwhile(child);
            let mut status = String::new();
            let _ = fs::File::from(status_r).read_to_string(&mut status);
            let status = status.trim_end();
            if let Some(msg) = status.strip_prefix("ERR ") {
                return Err(fail(ContainerError::Child(msg.to_string())));
            }
            // `OK <pid ns inode> <the init's start marks>`.
            let mut words = status.strip_prefix("OK ").unwrap_or("").split(' ');
            let pidns = words.next().and_then(|s| s.parse::<u64>().ok());
            crate::timing::extend(crate::timing::decode(words.next().unwrap_or("")));
            crate::timing::mark("report");
            let Some(pidns) = pidns else {
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
            let namespaces = Namespaces::open(child.as_raw())
                .map_err(|e| fail(ContainerError::Namespaces(e)))?;
            crate::timing::mark("namespaces");
            Ok(Container {
                init: child,
                pidfd,
                namespaces,
                pidns,
            })
        }
    }
}

/// The child: set up, report, then be PID 1 (the tiny init from `image`,
/// or this process where that exec fails). Never returns.
fn child_main(spec: &ContainerSpec, go: OwnedFd, status: OwnedFd, image: Option<OwnedFd>) -> ! {
    let mut status = fs::File::from(status);
    match setup(spec, go) {
        Ok(pidns) => {
            // Becoming the user cleared the parent-death signal (the kernel
            // does at every change of credentials): armed again, so that a
            // keeper killed from now on takes the init with it. One killed
            // before this line has closed the status pipe: the report fails.
            let armed = prctl::set_pdeathsig(Signal::SIGKILL).is_ok();
            let marks = crate::timing::encode(&crate::timing::take());
            if !armed || writeln!(status, "OK {pidns} {marks}").is_err() {
                sys::exit_now(1)
            }
            drop(status);
            if let Some(image) = image {
                // Nothing of the keeper's reaches the tiny init: every
                // descriptor above 2 is closed (the image is close-on-exec).
                sys::close_fds_from(3, &[image.as_raw_fd()]);
                let _ = crate::tiny_init::exec(&image);
            }
            init_loop()
        }
        Err(e) => {
            let _ = writeln!(status, "ERR {}", chain(&e).replace('\n', " "));
            sys::exit_now(1)
        }
    }
}

fn setup(spec: &ContainerSpec, go: OwnedFd) -> Result<u64, SetupError> {
    // The keeper's marks, copied by the clone, are the keeper's to report.
    let _ = crate::timing::take();
    crate::timing::mark("init");
    let _ = prctl::set_name(c"hutch-init");
    // The keeper's argv (config path, service, user) is no business of the
    // container's processes: /proc/1/cmdline reads `hutch-init` instead.
    let _ = set_cmdline(b"hutch-init");
    // From here on the init dies with the keeper. (getppid() says 0 in a
    // new pid namespace, so a keeper that died before this line shows up as
    // end-of-file on `go` instead.)
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::Pdeathsig)?;
    let mut byte = [0u8; 1];
    match fs::File::from(go).read(&mut byte) {
        Ok(1) => {}
        _ => return Err(SetupError::NotPlaced),
    }
    crate::timing::mark("placed");
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(SetupError::CgroupNs)?;
    let pidns = fs::metadata("/proc/self/ns/pid")
        .map_err(SetupError::PidNs)?
        .ino();
    let mut rootfs = spec.rootfs.clone();
    rootfs.marker = crate::paths::Marker {
        user: rootfs.user.clone(),
        uid: rootfs.uid,
        pidns,
        shell: rootfs.inner_shell.clone(),
        seccomp: rootfs.seccomp.clone(),
        seccomp_deny: rootfs.seccomp_deny.clone(),
    }
    .render();
    crate::timing::mark("cgroupns_marker");
    configure(&mut Kernel, &rootfs)?;
    crate::timing::mark("become_user");
    Ok(pidns)
}

/// A step of the init's set-up failed; the cause is the source. The init
/// sends it to the keeper as one line ([`crate::error::chain`]).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("PR_SET_PDEATHSIG")]
    Pdeathsig(#[source] nix::Error),
    #[error("the keeper did not place the init in its cgroup (or exited)")]
    NotPlaced,
    #[error("unshare(CLONE_NEWCGROUP)")]
    CgroupNs(#[source] nix::Error),
    #[error("stat /proc/self/ns/pid")]
    PidNs(#[source] std::io::Error),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("sethostname {name:?}")]
    Hostname {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("bringing up lo")]
    LinkUp(#[source] std::io::Error),
    #[error(transparent)]
    Privs(#[from] PrivsError),
    #[error("loading the seccomp filter into the init")]
    Seccomp(#[source] crate::seccomp::SeccompError),
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
/// docs/DESIGN.md: mount propagation stopped, the root built and pivoted
/// into ([`rootfs::build_with`]), hostname, `lo`, stdio, then the user
/// ([`privs::become_user`]: bounding set, setgroups, setresgid, setresuid,
/// no_new_privs), and last the policy's seccomp filter: the init is the
/// user's process too, so it is confined like every other one (it runs no
/// code of the user's, and is not dumpable, but nothing of the user's is
/// left unfiltered). Every step goes through `ops`, so a test records the order.
fn configure(ops: &mut impl SetupOps, rootfs: &RootfsSpec) -> Result<(), SetupError> {
    rootfs::build_with(ops, rootfs)?;
    ops.sethostname(&rootfs.hostname)?;
    ops.link_up_lo()?;
    ops.reopen_stdio();
    privs::become_user(ops, &identity(rootfs))?;
    ops.load_filter(rootfs)?;
    Ok(())
}

/// Whom the init becomes: the user, with their groups.
fn identity(spec: &RootfsSpec) -> Identity {
    Identity {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.iter().map(|(_, g)| *g).collect(),
    }
}

/// The container's own set-up steps beyond the root filesystem
/// ([`rootfs::RootfsOps`]) and the privileges ([`PrivOps`]).
trait SetupOps: rootfs::RootfsOps + PrivOps {
    fn sethostname(&mut self, name: &str) -> Result<(), SetupError>;
    fn link_up_lo(&mut self) -> Result<(), SetupError>;
    fn reopen_stdio(&mut self);
    fn load_filter(&mut self, rootfs: &RootfsSpec) -> Result<(), SetupError>;
}

impl SetupOps for Kernel {
    fn sethostname(&mut self, name: &str) -> Result<(), SetupError> {
        let r = sethostname(name).map_err(|source| SetupError::Hostname {
            name: name.to_string(),
            source,
        });
        crate::timing::mark("sethostname");
        r
    }
    fn link_up_lo(&mut self) -> Result<(), SetupError> {
        let r = sys::link_up("lo").map_err(SetupError::LinkUp);
        crate::timing::mark("link_up_lo");
        r
    }
    /// fds 0-2 still point at the host's /dev/null: point them at the container's.
    fn reopen_stdio(&mut self) {
        sys::stdio_to_dev_null();
        crate::timing::mark("reopen_stdio");
    }
    /// The filter every session of the container gets (the marker's).
    fn load_filter(&mut self, rootfs: &RootfsSpec) -> Result<(), SetupError> {
        let denied = crate::seccomp::resolve_marker(&rootfs.seccomp, &rootfs.seccomp_deny)
            .map_err(SetupError::Seccomp)?;
        crate::seccomp::load(denied.as_deref()).map_err(SetupError::Seccomp)?;
        Ok(())
    }
}

/// PID 1: reap every child (orphans of the sessions are re-parented here).
fn init_loop() -> ! {
    sys::close_fds_from(3, &[]);
    // The set-up's allocations (the spec, the marks) are done with.
    sys::malloc_trim();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{RootfsOps, RootfsSpec};
    use std::path::{Path, PathBuf};

    type P = std::result::Result<(), PrivsError>;

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
        fn mount_figures(&mut self, _: &RootfsSpec, _: &Path) -> R<()> {
            self.0.push("mount_figures");
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
        fn sethostname(&mut self, _: &str) -> Result<(), SetupError> {
            self.0.push("sethostname");
            Ok(())
        }
        fn link_up_lo(&mut self) -> Result<(), SetupError> {
            self.0.push("link_up_lo");
            Ok(())
        }
        fn reopen_stdio(&mut self) {
            self.0.push("reopen_stdio")
        }
        fn load_filter(&mut self, _: &RootfsSpec) -> Result<(), SetupError> {
            self.0.push("load_filter");
            Ok(())
        }
    }

    impl PrivOps for Recorder {
        fn drop_bounding_set(&mut self) -> P {
            self.0.push("drop_bounding_set");
            Ok(())
        }
        fn clear_ambient_inheritable(&mut self) -> P {
            self.0.push("clear_ambient_inheritable");
            Ok(())
        }
        fn setgroups(&mut self, _: &[u32]) -> P {
            self.0.push("setgroups");
            Ok(())
        }
        fn setresgid(&mut self, _: u32) -> P {
            self.0.push("setresgid");
            Ok(())
        }
        fn setresuid(&mut self, _: u32) -> P {
            self.0.push("setresuid");
            Ok(())
        }
        fn no_new_privs(&mut self) -> P {
            self.0.push("no_new_privs");
            Ok(())
        }
        fn not_dumpable(&mut self) -> P {
            self.0.push("not_dumpable");
            Ok(())
        }
        fn check_no_capabilities(&mut self) -> P {
            self.0.push("check_no_capabilities");
            Ok(())
        }
    }

    /// The set-up runs in the hardening order of docs/DESIGN.md: propagation stopped first, every mount before the pivot, then bounding set, setgroups, setresgid, setresuid, no_new_privs.
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
            "mount_figures",
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
        assert_eq!(
            steps[steps.len() - 2..],
            ["check_no_capabilities", "load_filter"],
            "the filter is loaded last, into the user's init: {steps:?}"
        );
        assert!(
            at("mount_sys") < at("mount_figures") && at("mount_figures") < at("mask_paths"),
            "the figures go over a mounted /proc and /sys: {steps:?}"
        );
        assert_eq!(steps.len(), 28, "a step was added or lost: {steps:?}");
    }
}
