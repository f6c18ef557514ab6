//! Where the kernel says that a limit of a group acted, as descriptors to
//! poll, and the few counters to read when one does: the memory limit's
//! OOM and the pids limit's refused forks. Like the rest of this module it
//! knows nothing of users: the keeper decides what to tell whom.
//!
//! What the kernel signals (checked on 6.18, v1 and v2):
//! - v1 memory: an eventfd registered on the group's `memory.oom_control`
//!   through `cgroup.event_control` fires when the group enters OOM, before
//!   the OOM killer has picked its victim.
//! - v2 memory: `memory.events` of the group is notified (poll `POLLPRI`)
//!   at `oom` (before the kill), `oom_kill`, `max` and `high`; a read
//!   re-arms it.
//! - v2 pids: `pids.events` of the group is notified at each refused fork.
//! - v1 pids: `pids.events` counts but notifies nothing (neither poll nor
//!   inotify), and neither version signals CPU throttling (PSI triggers
//!   would, where the kernel accepts them): for those the caller looks at
//!   [`Cgroup::pids_refused`] and [`Cgroup::cpu_periods`] itself.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;

use nix::poll::PollFlags;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{fsio, Cgroup, CgroupError, Mode};

/// Which limit an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Memory,
    Pids,
}

/// One descriptor the kernel makes readable when a limit acts.
enum Source {
    /// v1: the eventfd, and the `memory.oom_control` it was registered on
    /// (kept open: the registration lives as long as the eventfd).
    V1Oom { efd: EventFd, _control: File },
    /// v2: a kernfs file notified on change (`POLLPRI`), re-armed by a read.
    Notified { file: File, kind: LimitKind },
}

/// The group's limit events ([`Cgroup::limit_events`]).
pub struct LimitEvents {
    sources: Vec<Source>,
}

impl LimitEvents {
    /// The descriptors to poll and the flags to poll them for, in order.
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.sources
            .iter()
            .map(|s| match s {
                Source::V1Oom { efd, .. } => (efd.as_fd(), PollFlags::POLLIN),
                Source::Notified { file, .. } => (file.as_fd(), PollFlags::POLLPRI),
            })
            .collect()
    }

    /// Source `i` was ready: consumes the event (reads the eventfd, or
    /// reads the file again, which re-arms it) and says which limit it is.
    pub fn take(&mut self, i: usize) -> Option<LimitKind> {
        match self.sources.get_mut(i)? {
            Source::V1Oom { efd, .. } => {
                let mut buf = [0u8; 8];
                let _ = nix::unistd::read(efd.as_fd().as_raw_fd(), &mut buf);
                Some(LimitKind::Memory)
            }
            Source::Notified { file, kind } => {
                let _ = file.rewind();
                let mut sink = String::new();
                let _ = file.read_to_string(&mut sink);
                Some(*kind)
            }
        }
    }

    /// Whether the kernel signals this limit's events here.
    pub fn watches(&self, kind: LimitKind) -> bool {
        self.sources.iter().any(|s| match s {
            Source::V1Oom { .. } => kind == LimitKind::Memory,
            Source::Notified { kind: k, .. } => *k == kind,
        })
    }
}

/// `cpu.stat`'s period counters: how many CPU periods there were since the
/// group was made, and in how many the quota throttled it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuPeriods {
    pub periods: u64,
    pub throttled: u64,
}

impl Cgroup {
    /// The descriptors the kernel makes readable when the memory or the
    /// pids limit of this group acts (see the module's text for what each
    /// version signals). A hierarchy without the controller gives none.
    pub fn limit_events(&self) -> Result<LimitEvents, CgroupError> {
        let mut sources = Vec::new();
        match self.mode {
            Mode::V1 => {
                if let Some(m) = self.v1_dirs().memory {
                    sources.push(v1_oom_eventfd(&m)?);
                }
            }
            Mode::V2 => {
                if let Some(d) = self.unified_dir() {
                    for (name, kind) in [
                        ("memory.events", LimitKind::Memory),
                        ("pids.events", LimitKind::Pids),
                    ] {
                        let path = d.join(name);
                        let mut file = match File::open(&path) {
                            Ok(f) => f,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(source) => return Err(CgroupError::Read { path, source }),
                        };
                        // A first read arms the notification.
                        let mut sink = String::new();
                        file.read_to_string(&mut sink)
                            .map_err(|source| CgroupError::Read { path, source })?;
                        sources.push(Source::Notified { file, kind });
                    }
                }
            }
        }
        Ok(LimitEvents { sources })
    }

    /// Processes the OOM killer ended in this group (v1: summed over the
    /// group's subtree, where the kernel counts each in the victim's own
    /// cgroup; v2: `memory.events` of the group, which counts its subtree).
    pub fn oom_kills(&self) -> Result<Option<u64>, CgroupError> {
        match self.mode {
            Mode::V1 => match self.v1_dirs().memory {
                Some(m) => fsio::sum_keyed_subtree(&m, "memory.oom_control", "oom_kill"),
                None => Ok(None),
            },
            Mode::V2 => match self.unified_dir() {
                Some(d) => fsio::read_keyed(&d, "memory.events", "oom_kill"),
                None => Ok(None),
            },
        }
    }

    /// v2: the group's `memory.events` `oom` count (OOM entered, whether or
    /// not a process was killed); v1 has none.
    pub fn oom_events(&self) -> Result<Option<u64>, CgroupError> {
        match (self.mode, self.unified_dir()) {
            (Mode::V2, Some(d)) => fsio::read_keyed(&d, "memory.events", "oom"),
            _ => Ok(None),
        }
    }

    /// Forks the pids limit refused, and the processes (tasks) in the group now.
    pub fn pids_refused(&self) -> Result<(Option<u64>, Option<u64>), CgroupError> {
        let dir = match self.mode {
            Mode::V1 => self.v1_dirs().pids,
            Mode::V2 => self.unified_dir(),
        };
        let Some(d) = dir else {
            return Ok((None, None));
        };
        let refused = match self.mode {
            // v1 counts a refused fork in the forking task's cgroup (the leaf).
            Mode::V1 => fsio::sum_keyed_subtree(&d, "pids.events", "max")?,
            Mode::V2 => fsio::read_keyed(&d, "pids.events", "max")?,
        };
        Ok((refused, fsio::read_u64(&d, "pids.current")?))
    }

    /// The CPU period counters (`None` without a cpu controller).
    pub fn cpu_periods(&self) -> Result<Option<CpuPeriods>, CgroupError> {
        let dir = match self.mode {
            Mode::V1 => self.v1_dirs().cpu,
            Mode::V2 => self.unified_dir(),
        };
        let Some(d) = dir else {
            return Ok(None);
        };
        let Some(stat) = fsio::read_opt(&d, "cpu.stat")? else {
            return Ok(None);
        };
        Ok(
            match (
                fsio::keyed(&stat, "nr_periods"),
                fsio::keyed(&stat, "nr_throttled"),
            ) {
                (Some(periods), Some(throttled)) => Some(CpuPeriods { periods, throttled }),
                _ => None,
            },
        )
    }

    /// The group's memory cgroup as the kernel names it in its OOM reports
    /// (`oom_memcg=`): its path from the hierarchy's own root, which is the
    /// mount's root joined with the directory below the mount point.
    pub fn memcg_kernel_path(&self) -> Option<String> {
        let h = self.hiers.iter().find(|h| match self.mode {
            Mode::V1 => !h.mount.unified && h.has("memory"),
            Mode::V2 => h.mount.unified,
        })?;
        let dir = self.dir_in(h);
        let below = dir.strip_prefix(&h.mount.mount_point).ok()?;
        let root = h.mount.root.trim_end_matches('/');
        Some(format!("{root}/{}", below.display()))
    }
}

/// Registers an eventfd on `dir/memory.oom_control` (`cgroup.event_control`:
/// "<eventfd> <fd of the file>").
fn v1_oom_eventfd(dir: &std::path::Path) -> Result<Source, CgroupError> {
    let path: PathBuf = dir.join("memory.oom_control");
    let control = File::open(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(|e| {
        CgroupError::Read {
            path: path.clone(),
            source: e.into(),
        }
    })?;
    let efd_raw = efd.as_fd().as_raw_fd();
    fsio::write(
        dir,
        "cgroup.event_control",
        &format!("{efd_raw} {}", control.as_raw_fd()),
    )?;
    Ok(Source::V1Oom {
        efd,
        _control: control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::detect;

    /// The kernel's name of the group is the mount's root and the path
    /// below the mount point (a hierarchy mounted from a subdirectory, as
    /// in a container, keeps that subdirectory).
    #[test]
    fn memcg_kernel_path_joins_the_mount_root() {
        let mount = |root: &str| detect::Mount {
            dev: "0:1".into(),
            root: root.into(),
            mount_point: PathBuf::from("/sys/fs/cgroup/memory"),
            unified: false,
            controllers: vec!["memory".into()],
            noprefix: false,
        };
        for (root, want) in [
            ("/", "/hutch/users/alice"),
            ("/process_api/x", "/process_api/x/hutch/users/alice"),
        ] {
            let cg = Cgroup {
                mode: Mode::V1,
                hiers: vec![super::super::Hier {
                    mount: mount(root),
                    root: PathBuf::from("/sys/fs/cgroup/memory/hutch"),
                }],
                rel: "users/alice".into(),
            };
            assert_eq!(cg.memcg_kernel_path().as_deref(), Some(want), "{root}");
        }
    }
}
