//! Sticky address leases: one text file, `USER ADDRESS PID` a line, where
//! PID is the keeper holding the lease or 0 when it is free. A free lease is
//! kept, so the same user gets the same address next time; a held lease
//! whose keeper is dead (a crash) counts as free. Every change happens under
//! an `flock` on `<file>.lock` and is written by rename, so concurrent
//! logins get different addresses, a reader never sees half a file, and a
//! keeper killed mid-write loses nothing (the old file stays whole).
//!
//! The new file is not `fsync`ed (it cost 0.9 ms of every cold start with
//! a network): the leases only have to outlive keepers, not the machine.
//! No container survives a reboot, so after a power loss every lease is
//! free anyway; what a lost write can cost is stickiness (a user may get
//! another address than before the crash) — the file is then the old one,
//! or empty where the file system kept the rename but not the data, and
//! both parse (an empty file is no leases; bad lines are skipped).

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use hutch_policy::Ipv4Net;

/// One line of the lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub user: String,
    pub addr: Ipv4Addr,
    /// The keeper holding it; 0 = free.
    pub pid: i32,
}

/// Parses the file (bad lines are skipped: a lease is only a preference).
pub fn parse(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let user = w.next()?.to_string();
            let addr = w.next()?.parse().ok()?;
            let pid = w.next()?.parse().ok()?;
            Some(Lease { user, addr, pid })
        })
        .collect()
}

/// Renders the file.
pub fn render(leases: &[Lease]) -> String {
    leases
        .iter()
        .map(|l| format!("{} {} {}\n", l.user, l.addr, l.pid))
        .collect()
}

/// Picks `user`'s address and marks it held by `pid`: the user's own lease
/// if there is one (free, held by a dead keeper, by `pid`, or by a live
/// keeper that is not `user`'s: its pid was reused after a crash or a
/// reboot), else the lowest pool address no lease names, else the free
/// lease of another user (stickiness gives way). `None`: the pool is
/// exhausted. `alive(pid)`: a live keeper has the pid; `keeps(pid)`: it is
/// `user`'s keeper.
pub fn choose(
    leases: &mut Vec<Lease>,
    pool: Ipv4Net,
    reserved: &[Ipv4Addr],
    user: &str,
    pid: i32,
    alive: impl Fn(i32) -> bool,
    keeps: impl Fn(i32) -> bool,
) -> Option<Ipv4Addr> {
    let usable = |l: &Lease| l.pid == 0 || l.pid == pid || !alive(l.pid);
    leases.retain(|l| pool.contains(l.addr) && !reserved.contains(&l.addr));
    if let Some(l) = leases.iter_mut().find(|l| l.user == user) {
        if usable(l) || !keeps(l.pid) {
            l.pid = pid;
            return Some(l.addr);
        }
        // Held by a live keeper of the same user: should not happen (the
        // user's lock serialises keepers); refuse rather than share.
        return None;
    }
    if let Some(addr) = pool
        .hosts()
        .find(|a| !reserved.contains(a) && !leases.iter().any(|l| l.addr == *a))
    {
        leases.push(Lease {
            user: user.into(),
            addr,
            pid,
        });
        return Some(addr);
    }
    let l = leases.iter_mut().find(|l| usable(l))?;
    l.user = user.into();
    l.pid = pid;
    Some(l.addr)
}

/// Whether `pid` is a live hutch-keeper (pids get reused). A killed
/// keeper that its parent (PID 1, after the double fork) has not reaped yet
/// is a zombie: dead, though `/proc/PID` still names it.
pub fn keeper_alive(pid: i32) -> bool {
    pid > 0
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat_is_live(&stat, "hutch-keeper"))
}

/// Whether the keeper `pid` is `user`'s: its last argument (the user the
/// PAM module started it for, `join::spawn_keeper`). Used only for the
/// user's own lease, where a keeper of another user holding it can only
/// be a reused pid; another user's lease is never taken on this test.
pub fn keeper_of(pid: i32, user: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| last_arg(&c) == Some(user.as_bytes()))
}

/// The last argument of a `/proc/PID/cmdline` (NUL-separated, NUL-ended).
fn last_arg(cmdline: &[u8]) -> Option<&[u8]> {
    cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .rsplit(|b| *b == 0)
        .next()
        .filter(|a| !a.is_empty())
}

/// Whether a `/proc/PID/stat` line is of a process named `comm` that has
/// not exited: `PID (COMM) STATE ...`, the name as the kernel keeps it
/// (it may hold spaces and parentheses: the last `)` ends it), and a
/// state other than zombie (`Z`) or dead (`X`).
fn stat_is_live(stat: &str, comm: &str) -> bool {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next();
    open < close && &stat[open + 1..close] == comm && !matches!(state, Some("Z" | "X") | None)
}

/// The lease file at `path`.
pub struct LeaseFile {
    path: PathBuf,
}

impl LeaseFile {
    pub fn new(path: &Path) -> LeaseFile {
        LeaseFile {
            path: path.to_path_buf(),
        }
    }

    /// Runs `f` on the leases under the lock and writes the result back.
    fn update<T>(&self, f: impl FnOnce(&mut Vec<Lease>) -> T) -> io::Result<T> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut leases = parse(&text);
        let before = leases.clone();
        let out = f(&mut leases);
        if leases != before {
            let mut tmp = self.path.clone().into_os_string();
            tmp.push(".new");
            let mut f = fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            f.write_all(render(&leases).as_bytes())?;
            // No sync_all: see the module's comment.
            fs::rename(&tmp, &self.path)?;
        }
        Ok(out)
    }

    /// Leases an address of `pool` to `user` for the keeper `pid`.
    pub fn acquire(
        &self,
        pool: Ipv4Net,
        reserved: &[Ipv4Addr],
        user: &str,
        pid: i32,
    ) -> io::Result<Ipv4Addr> {
        self.update(|l| {
            choose(l, pool, reserved, user, pid, keeper_alive, |p| {
                keeper_of(p, user)
            })
        })?
        .ok_or_else(|| io::Error::other(format!("no free address in {pool} for {user}")))
    }

    /// Marks `user`'s lease free (kept for stickiness), if `pid` holds it.
    pub fn release(&self, user: &str, pid: i32) -> io::Result<()> {
        self.update(|leases| {
            for l in leases.iter_mut().filter(|l| l.user == user && l.pid == pid) {
                l.pid = 0;
            }
        })
    }

    /// All leases (for tests and hutchctl).
    pub fn read(&self) -> io::Result<Vec<Lease>> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Ok(parse(&t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Ipv4Net {
        "10.0.0.0/29".parse().unwrap()
    }
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    /// A keeper is live by its name and state: a zombie (killed, not yet
    /// reaped) or another program with its pid is not.
    #[test]
    fn zombie_keeper_is_not_alive() {
        assert!(stat_is_live(
            "4242 (hutch-keeper) S 1 4242 4242 0",
            "hutch-keeper"
        ));
        assert!(!stat_is_live(
            "4242 (hutch-keeper) Z 1 4242",
            "hutch-keeper"
        ));
        assert!(!stat_is_live("4242 (hutch-keeper) X 1", "hutch-keeper"));
        assert!(!stat_is_live("4242 (bash) S 1", "hutch-keeper"));
        assert!(!stat_is_live("4242 (a) (hutch-keeper) S 1", "hutch-keeper"));
        assert!(!stat_is_live("garbage", "hutch-keeper"));
        assert!(!keeper_alive(std::process::id() as i32));
    }

    /// The same user gets the same address again; others get different ones.
    #[test]
    fn sticky_and_distinct() {
        let mut l = Vec::new();
        let a = choose(&mut l, pool(), &[GW], "alice", 10, |_| true, |_| true).unwrap();
        let b = choose(&mut l, pool(), &[GW], "bob", 11, |_| true, |_| true).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        assert_ne!(a, b);
        l.iter_mut().for_each(|x| x.pid = 0); // both released
        assert_eq!(
            choose(&mut l, pool(), &[GW], "bob", 12, |_| true, |_| true),
            Some(b)
        );
        assert_eq!(
            choose(&mut l, pool(), &[GW], "alice", 13, |_| true, |_| true),
            Some(a)
        );
    }

    /// A lease held by a dead keeper is recovered by the same user; a live one is not shared.
    #[test]
    fn crash_recovery() {
        let mut l = vec![Lease {
            user: "alice".into(),
            addr: Ipv4Addr::new(10, 0, 0, 5),
            pid: 99,
        }];
        assert_eq!(
            choose(
                &mut l.clone(),
                pool(),
                &[GW],
                "alice",
                7,
                |_| true,
                |_| true
            ),
            None
        );
        // Its pid reused by another user's live keeper (after a crash or a
        // reboot): stale, taken back.
        assert_eq!(
            choose(
                &mut l.clone(),
                pool(),
                &[GW],
                "alice",
                7,
                |_| true,
                |_| false
            ),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
        assert_eq!(
            choose(&mut l, pool(), &[GW], "alice", 7, |p| p != 99, |_| true),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
        assert_eq!(l[0].pid, 7);
    }

    /// What an unsynced write can leave after a power loss parses: an
    /// empty file is no leases, a torn last line is skipped, so the next
    /// keeper leases afresh (the file is not fsynced: see the module).
    #[test]
    fn empty_or_torn_file_parses() {
        assert_eq!(parse(""), vec![]);
        assert_eq!(
            parse("alice 10.0.0.2 0\nbob 10.0.0.3 1\ncarol 10.0."),
            vec![
                Lease {
                    user: "alice".into(),
                    addr: Ipv4Addr::new(10, 0, 0, 2),
                    pid: 0
                },
                Lease {
                    user: "bob".into(),
                    addr: Ipv4Addr::new(10, 0, 0, 3),
                    pid: 1
                }
            ]
        );
        assert_eq!(parse("\0\0\0\0\n"), vec![]);
    }

    /// Another user's lease held by a live keeper is never taken, whoever
    /// that keeper says it serves.
    #[test]
    fn live_lease_of_another_user_is_kept() {
        let mut l = vec![Lease {
            user: "bob".into(),
            addr: Ipv4Addr::new(10, 0, 0, 2),
            pid: 99,
        }];
        let a = choose(&mut l, pool(), &[GW], "alice", 7, |_| true, |_| false);
        assert_eq!(a, Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(l[0].pid, 99);
    }

    /// The user a keeper serves is its last argument.
    #[test]
    fn cmdline_last_argument() {
        assert_eq!(
            last_arg(b"hutch-keeper\0--config\0/etc/hutch.toml\0alice\0"),
            Some(&b"alice"[..])
        );
        assert_eq!(last_arg(b"hutch-keeper\0bob"), Some(&b"bob"[..]));
        assert_eq!(last_arg(b""), None);
        assert!(!keeper_of(std::process::id() as i32, "alice"));
    }

    /// When every address was handed out once, free leases of others are reused; held ones never.
    #[test]
    fn exhaustion() {
        let mut l = Vec::new();
        for (i, u) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            assert!(
                choose(&mut l, pool(), &[GW], u, 100 + i as i32, |_| true, |_| true).is_some(),
                "{u}"
            );
        }
        assert_eq!(
            choose(&mut l, pool(), &[GW], "f", 200, |_| true, |_| true),
            None
        );
        l[2].pid = 0;
        assert_eq!(
            choose(&mut l, pool(), &[GW], "f", 200, |_| true, |_| true),
            Some(Ipv4Addr::new(10, 0, 0, 4))
        );
        assert_eq!(parse(&render(&l)), l);
    }
}
