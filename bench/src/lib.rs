//! Helpers the benches share: medians, and one `open_session` measured in a
//! forked child (it changes namespaces and cgroup, so never in the bench itself).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Instant;

use hutch_runtime::join::{open_session, JoinOptions, Outcome, SessionInfo};
use hutch_runtime::sys::{self, Forked};
use hutch_runtime::timing;

/// A session of `user` held open by a forked child, so that every further
/// `open_session` of the user joins its container, until [`Held::release`].
pub struct Held {
    pid: nix::unistd::Pid,
    release: OwnedFd,
}

/// Opens and holds a session of `user` in a child (see [`Held`]).
pub fn hold_session(opts: &JoinOptions, user: &str) -> std::io::Result<Held> {
    let (hold_r, hold_w): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    match sys::fork()? {
        Forked::Child => {
            drop(hold_w);
            let info = SessionInfo {
                service: "bench".into(),
                tty: None,
                rhost: None,
            };
            let s = open_session(opts, user, &info);
            let mut b = [0u8; 1];
            let _ = std::fs::File::from(hold_r).read(&mut b);
            drop(s);
            sys::exit_now(0)
        }
        Forked::Parent(pid) => Ok(Held {
            pid,
            release: hold_w,
        }),
    }
}

impl Held {
    /// Ends the held session and reaps its child.
    pub fn release(self) {
        drop(self.release);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// The median (upper middle) of `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One `open_session` in a forked child (it changes namespaces and
/// cgroup): returns its milliseconds. The child reports before it closes
/// the session: closing the last one kills the container's cgroup, which
/// the child has joined.
pub fn open_in_child(opts: &JoinOptions, user: &str) -> Result<f64, String> {
    open_in_child_marked(opts, user).map(|(ms, _, _)| ms)
}

/// One measured session open: (ms, [t0, t1], pam_hutch's marks).
pub type Marked = (f64, [u64; 2], Vec<(String, u64)>);

/// [`open_in_child`], with pam_hutch's own start marks
/// (`hutch_runtime::timing`) and the child's clock before and after
/// (CLOCK_MONOTONIC ns): (ms, [t0, t1], marks).
pub fn open_in_child_marked(opts: &JoinOptions, user: &str) -> Result<Marked, String> {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    match sys::fork().map_err(|e| e.to_string())? {
        Forked::Child => {
            drop(r);
            let mut w = std::fs::File::from(w);
            let info = SessionInfo {
                service: "bench".into(),
                tty: None,
                rhost: None,
            };
            let _ = timing::take();
            let t = Instant::now();
            let t0 = timing::now_ns();
            match open_session(opts, user, &info) {
                Ok(Outcome::Joined(s)) => {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    let t1 = timing::now_ns();
                    let marks = timing::encode(&timing::take());
                    let _ = w.write_all(format!("{ms} {t0} {t1} {marks}").as_bytes());
                    drop(w);
                    s.close();
                }
                Ok(other) => {
                    let _ = w.write_all(format!("ERR not joined: {other:?}").as_bytes());
                }
                Err(e) => {
                    let e = hutch_runtime::error::chain(&e);
                    let _ = w.write_all(format!("ERR {e}").as_bytes());
                }
            }
            sys::exit_now(0)
        }
        Forked::Parent(pid) => {
            drop(w);
            let mut s = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut s);
            let st = nix::sys::wait::waitpid(pid, None);
            if let Some(e) = s.strip_prefix("ERR ") {
                return Err(e.to_string());
            }
            let mut f = s.split(' ');
            let bad = || format!("child reported {s:?} ({st:?})");
            let ms = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let t0 = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let t1 = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            Ok((ms, [t0, t1], timing::decode(f.next().unwrap_or(""))))
        }
    }
}

pub mod floor;
pub mod lxc;

/// The `p`-th percentile (0..=100, nearest rank) of `v`.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The first field of /proc/loadavg's three, as printed there.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A `Key:  N kB` line of a /proc file, in bytes.
pub fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The /proc/meminfo fields an idle container costs the kernel, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemInfo {
    pub available: u64,
    pub slab: u64,
    pub page_tables: u64,
    pub kernel_stack: u64,
    pub percpu: u64,
    pub shmem: u64,
}

impl MemInfo {
    pub fn now() -> MemInfo {
        let f = |k: &str| kb_field("/proc/meminfo", k).unwrap_or(0);
        MemInfo {
            available: f("MemAvailable:"),
            slab: f("Slab:"),
            page_tables: f("PageTables:"),
            kernel_stack: f("KernelStack:"),
            percpu: f("Percpu:"),
            shmem: f("Shmem:"),
        }
    }
}

/// Memory charged to a v1 memory cgroup among `groups` (the one with
/// `memory.usage_in_bytes`): (usage, of it kernel memory).
pub fn memcg_of(groups: &[std::path::PathBuf]) -> (u64, u64) {
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    groups
        .iter()
        .find(|g| g.join("memory.usage_in_bytes").exists())
        .map(|g| {
            (
                read(g.join("memory.usage_in_bytes")),
                read(g.join("memory.kmem.usage_in_bytes")),
            )
        })
        .unwrap_or((0, 0))
}
