//! What a test may have left behind, found by a tag (a user name, a unique
//! prefix): mounts, cgroup directories, processes, hutch runtime state.

use crate::proc;
use std::path::Path;

/// Whether `hay` holds `tag` as a whole word: not followed by a letter or
/// digit, so that `ht12x2` does not find `ht12x21` (another test's name
/// from [`crate::unique`], alive in parallel).
pub fn names(hay: &str, tag: &str) -> bool {
    hay.match_indices(tag).any(|(i, _)| {
        let next = hay[i + tag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Every mount (any mount line in /proc/self/mounts), cgroup directory under
/// /sys/fs/cgroup (depth ≤ 6), path under /run/hutch (depth ≤ 4) and process
/// (other than this one) whose name or command line names `tag` ([`names`]),
/// one readable line each. Empty means clean.
pub fn leftovers(tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
        out.extend(
            m.lines()
                .filter(|l| names(l, tag))
                .map(|l| format!("mount: {l}")),
        );
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
            if names(&c, tag) || names(&comm, tag) {
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
    assert!(
        gone.is_some(),
        "left behind for {tag:?} after {timeout:?}:\n{}",
        last.join("\n")
    );
}

fn walk(dir: &Path, depth: u32, tag: &str, kind: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        // Only real directories: v1 has symlinks like cpu -> cpu,cpuacct.
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        if names(&name.to_string_lossy(), tag) {
            out.push(format!("{kind}: {}", e.path().display()));
        }
        if ft.is_dir() && depth > 1 {
            walk(&e.path(), depth - 1, tag, kind, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    /// A tag is found as a whole name, never as the prefix of a longer one.
    #[test]
    fn whole_names_only() {
        assert!(names("/sys/fs/cgroup/pids/hutch-t1x2", "hutch-t1x2"));
        assert!(names(
            "/sys/fs/cgroup/pids/hutch-t1x2/users/a",
            "hutch-t1x2"
        ));
        assert!(names("hutch-keeper --config /tmp/x ht1x2", "ht1x2"));
        assert!(names("user-ht1x2.slice", "ht1x2"));
        assert!(!names("/sys/fs/cgroup/pids/hutch-t1x21", "hutch-t1x2"));
        assert!(!names("sshd: ht1x21@pts/0", "ht1x2"));
        assert!(names("ht1x21 ht1x2", "ht1x2"));
    }
}
