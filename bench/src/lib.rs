//! Helpers the benches share: medians, and one `open_session` measured in a
//! forked child (it changes namespaces and cgroup, so never in the bench itself).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Instant;

use hutch_runtime::join::{open_session, JoinOptions, Outcome, SessionInfo};
use hutch_runtime::sys::{self, Forked};

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
            let t = Instant::now();
            match open_session(opts, user, &info) {
                Ok(Outcome::Joined(s)) => {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    let _ = w.write_all(format!("{ms}").as_bytes());
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
            match s.strip_prefix("ERR ") {
                Some(e) => Err(e.to_string()),
                None => s
                    .parse()
                    .map_err(|_| format!("child reported {s:?} ({st:?})")),
            }
        }
    }
}
