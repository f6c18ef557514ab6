//! Small /proc scanners used for cleanup: by uid, by ancestry, by netns.
//! Everything is killed by pid, never by name.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

/// All pids now in /proc.
pub fn pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
}

/// The parent pid of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    status_field(pid, "PPid:")?.parse().ok()
}

/// True when any of `pid`'s real, effective, saved or fs uids is `uid`.
pub fn has_uid(pid: i32, uid: u32) -> bool {
    status_field(pid, "Uid:").is_some_and(|v| v.split_whitespace().any(|u| u.parse() == Ok(uid)))
}

/// `pid`'s command line, NULs turned into spaces.
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim_end()
            .to_string(),
    )
}

/// The target of `/proc/<pid>/ns/<ns>`, e.g. `net:[4026532]`.
pub fn ns_id(pid: i32, ns: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// `root` and all its descendants now alive.
pub fn descendants(root: i32) -> Vec<i32> {
    let all: Vec<(i32, i32)> = pids()
        .into_iter()
        .filter_map(|p| Some((p, ppid(p)?)))
        .collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// SIGKILLs every pid `select()` returns, again and again, until it returns
/// none or `timeout` passes. Never signals this process. Returns what was
/// still alive at the end.
pub fn kill_until_gone(timeout: Duration, mut select: impl FnMut() -> Vec<i32>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let end = std::time::Instant::now() + timeout;
    loop {
        let left: Vec<i32> = select()
            .into_iter()
            .filter(|p| *p != me && *p > 1)
            .collect();
        if left.is_empty() || std::time::Instant::now() >= end {
            return left;
        }
        for p in &left {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
