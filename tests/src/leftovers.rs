//! What a test may have left behind, found by a tag (a user name, a unique
//! prefix): mounts, cgroup directories, processes, hutch runtime state.

use crate::proc;
use std::path::Path;

/// Every mount (any mount line in /proc/self/mounts), cgroup directory under
/// /sys/fs/cgroup (depth ≤ 6), path under /run/hutch (depth ≤ 4) and process
/// (other than this one) whose name or command line contains `tag`, one
/// readable line each. Empty means clean.
pub fn leftovers(tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
        out.extend(m.lines().filter(|l| l.contains(tag)).map(|l| format!("mount: {l}")));
    }
    walk(Path::new("/sys/fs/cgroup"), 6, tag, "cgroup", &mut out);
    walk(Path::new("/run/hutch"), 4, tag, "state", &mut out);
    let me = std::process::id() as i32;
    for p in proc::pids() {
        if p == me {
            continue;
        }
        if let Some(c) = proc::cmdline(p) {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if c.contains(tag) || comm.contains(tag) {
                out.push(format!("process {p}: {c}"));
            }
        }
    }
    out
}

/// Panics listing what `leftovers(tag)` still finds after waiting up to
/// `timeout` for it to go away.
pub fn assert_no_leftovers(tag: &str, timeout: std::time::Duration) {
    let mut last = Vec::new();
    let gone = crate::wait_until(timeout, || {
        last = leftovers(tag);
        last.is_empty().then_some(())
    });
    assert!(gone.is_some(), "left behind for {tag:?} after {timeout:?}:\n{}", last.join("\n"));
}

fn walk(dir: &Path, depth: u32, tag: &str, kind: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        // Only real directories: v1 has symlinks like cpu -> cpu,cpuacct.
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        if name.to_string_lossy().contains(tag) {
            out.push(format!("{kind}: {}", e.path().display()));
        }
        if ft.is_dir() && depth > 1 {
            walk(&e.path(), depth - 1, tag, kind, out);
        }
    }
}
