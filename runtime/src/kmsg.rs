//! The kernel's own account of an OOM kill, read from `/dev/kmsg`: which
//! process it killed (host pid, command), in which memory cgroup, and how
//! much it held. cgroupfs only counts kills; the kernel log is the one place
//! that names the victim.
//!
//! Two lines matter, both printed before the kill is counted in
//! `memory.events` / `memory.oom_control`:
//!
//! ```text
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/hutch/users/alice,task_memcg=/hutch/users/alice/procs,task=python3,pid=4242,uid=1001
//! Memory cgroup out of memory: Killed process 4242 (python3) total-vm:221368kB, anon-rss:65280kB, file-rss:6672kB, shmem-rss:0kB, UID:1001 pgtables:192kB oom_score_adj:0
//! ```
//!
//! The first (with the cgroups) is rate-limited by the kernel (with the
//! whole OOM report: 10 in 5 s), the second is not. A reader opened with
//! [`Kmsg::open_at_end`] sees only what comes after it; it is read only when
//! asked ([`Kmsg::read_new`]), never polled, so it costs nothing while
//! nothing happens.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// At most this many records are read at once (a noisy host's backlog is
/// skipped rather than read to the end).
const MAX_RECORDS: usize = 4096;

/// A reader of `/dev/kmsg` (needs CAP_SYSLOG where `dmesg_restrict` is set).
pub struct Kmsg {
    file: File,
}

impl Kmsg {
    /// Opens `/dev/kmsg` positioned after the last record written so far.
    pub fn open_at_end() -> io::Result<Kmsg> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        file.seek(SeekFrom::End(0))?;
        Ok(Kmsg { file })
    }

    /// The message text of every record written since the last call (or
    /// the open), oldest first. Records the ring buffer overwrote before
    /// they were read are skipped.
    pub fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        while out.len() < MAX_RECORDS {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(m) = message(&String::from_utf8_lossy(&buf[..n])) {
                        out.push(m.to_string());
                    }
                }
                // Overwritten before it was read: the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// The text of one `/dev/kmsg` record (`PRI,SEQ,TS,FLAGS;text\n` followed by
/// ` KEY=value` lines), or `None` for a malformed one.
pub fn message(record: &str) -> Option<&str> {
    let (_, rest) = record.split_once(';')?;
    Some(rest.lines().next().unwrap_or(""))
}

/// One OOM kill as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    /// In the host's pid namespace.
    pub pid: i32,
    pub comm: String,
    /// anon + file + shmem resident memory, bytes.
    pub rss: u64,
    pub uid: Option<u32>,
    /// The cgroup whose limit was hit (`oom_memcg=`) and the victim's own
    /// (`task_memcg=`), when the rate-limited summary line was printed.
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    /// The kill was for a memory cgroup's limit (not the whole host's).
    pub memcg: bool,
}

/// The kills reported in `messages` (in order), each joined with the
/// summary line printed before it, if any.
pub fn oom_kills(messages: &[String]) -> Vec<OomKill> {
    let mut summaries: Vec<(i32, String, String)> = Vec::new();
    let mut out = Vec::new();
    for m in messages {
        if let Some((pid, oom, task)) = parse_summary(m) {
            summaries.push((pid, oom, task));
        } else if let Some(mut k) = parse_killed(m) {
            if let Some(i) = summaries.iter().rposition(|(p, ..)| *p == k.pid) {
                let (_, oom, task) = summaries.remove(i);
                k.oom_memcg = Some(oom);
                k.task_memcg = Some(task);
            }
            out.push(k);
        }
    }
    out
}

impl OomKill {
    /// Whether the kill was for the limit of the memory cgroup `memcg` (the
    /// kernel's name, [`crate::cgroup::Cgroup::memcg_kernel_path`]) or of
    /// one below it. Without the summary line only `known_pid` (the victim
    /// was seen in the group) can say so.
    pub fn is_in(&self, memcg: &str, known_pid: bool) -> bool {
        let below =
            |p: &str| p == memcg || p.strip_prefix(memcg).is_some_and(|r| r.starts_with('/'));
        match (&self.oom_memcg, &self.task_memcg) {
            (Some(oom), _) if below(oom) => true,
            (Some(_), Some(task)) => self.memcg && below(task) && known_pid,
            _ => self.memcg && known_pid,
        }
    }
}

/// `oom-kill:...,oom_memcg=X,task_memcg=Y,task=COMM,pid=N,uid=U`: (pid,
/// X, Y). Read from the end: a command may hold commas.
fn parse_summary(m: &str) -> Option<(i32, String, String)> {
    let rest = m.strip_prefix("oom-kill:")?;
    let (head, uid) = rest.rsplit_once(",uid=")?;
    uid.trim().parse::<u32>().ok()?;
    let (head, pid) = head.rsplit_once(",pid=")?;
    let pid: i32 = pid.trim().parse().ok()?;
    let (head, _task) = head.rsplit_once(",task=")?;
    let (head, task_memcg) = head.rsplit_once(",task_memcg=")?;
    let (_, oom_memcg) = head.rsplit_once("oom_memcg=")?;
    Some((pid, oom_memcg.to_string(), task_memcg.to_string()))
}

/// `[Memory cgroup out of memory: ]Killed process N (COMM) total-vm:..kB,
/// anon-rss:..kB, file-rss:..kB, shmem-rss:..kB, UID:U ...`.
fn parse_killed(m: &str) -> Option<OomKill> {
    let at = m.find("Killed process ")?;
    let memcg = m[..at].contains("Memory cgroup out of memory");
    let rest = &m[at + "Killed process ".len()..];
    let (pid, rest) = rest.split_once(" (")?;
    let pid: i32 = pid.parse().ok()?;
    let (comm, figures) = rest.rsplit_once(") total-vm:")?;
    let kb = |key: &str| -> u64 {
        figures
            .split_once(key)
            .and_then(|(_, v)| v.split("kB").next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let rss = (kb("anon-rss:") + kb("file-rss:") + kb("shmem-rss:")) * 1024;
    let uid = figures
        .split_once("UID:")
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    Some(OomKill {
        pid,
        comm: comm.to_string(),
        rss,
        uid,
        oom_memcg: None,
        task_memcg: None,
        memcg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/hutch/users/alice,task_memcg=/hutch/users/alice/procs,task=py, x,pid=4242,uid=1001";
    const KILLED: &str = "Memory cgroup out of memory: Killed process 4242 (py, x) total-vm:221368kB, anon-rss:65280kB, file-rss:6672kB, shmem-rss:1024kB, UID:1001 pgtables:192kB oom_score_adj:0";

    /// A record's text is what follows the `;` up to the first newline.
    #[test]
    fn record_text() {
        assert_eq!(
            message("3,417,533155926,-;Killed process 1 (x)\n SUBSYSTEM=memory\n"),
            Some("Killed process 1 (x)")
        );
        assert_eq!(message("garbage"), None);
    }

    /// The kill line gives pid, command (commas and all), the resident
    /// memory summed and the uid; the summary before it adds the cgroups.
    #[test]
    fn kill_joined_with_its_summary() {
        let msgs = vec![
            "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL)".to_string(),
            SUMMARY.to_string(),
            KILLED.to_string(),
            "oom_reaper: reaped process 4242 (py, x), now anon-rss:0kB".to_string(),
        ];
        let k = oom_kills(&msgs);
        assert_eq!(
            k,
            vec![OomKill {
                pid: 4242,
                comm: "py, x".into(),
                rss: (65280 + 6672 + 1024) * 1024,
                uid: Some(1001),
                oom_memcg: Some("/hutch/users/alice".into()),
                task_memcg: Some("/hutch/users/alice/procs".into()),
                memcg: true,
            }]
        );
        assert!(k[0].is_in("/hutch/users/alice", false));
        assert!(!k[0].is_in("/hutch/users/al", false));
        assert!(!k[0].is_in("/hutch/users/bob", true));
    }

    /// Without the (rate-limited) summary a memcg kill counts as the
    /// group's only if its pid was seen there; a host-wide OOM kill of a
    /// process in the group is found by its task cgroup.
    #[test]
    fn without_summary_the_pid_decides() {
        let k = oom_kills(&[KILLED.to_string()]);
        assert_eq!(k.len(), 1);
        assert!(k[0].oom_memcg.is_none());
        assert!(!k[0].is_in("/hutch/users/alice", false));
        assert!(k[0].is_in("/hutch/users/alice", true));
        let global = oom_kills(&[
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/hutch/users/alice/procs,task=x,pid=7,uid=1001".to_string(),
            "Out of memory: Killed process 7 (x) total-vm:1kB, anon-rss:4kB, file-rss:0kB, shmem-rss:0kB, UID:1001".to_string(),
        ]);
        assert_eq!(global.len(), 1);
        assert!(!global[0].memcg);
        assert!(!global[0].is_in("/hutch/users/alice", true));
    }
}
