//! Closing stray fds: whatever sshd, su or a PAM module left open above
//! stderr must not reach the user's shell (CVE-2024-21626 is the classic).

use std::os::fd::RawFd;

use crate::sys;

/// The most fds the last-resort loop walks.
const LOOP_LIMIT: u64 = 65536;

/// Closes every fd >= 3: close_range, else the entries of /proc/self/fd,
/// else every number up to the open-files limit.
pub fn close_stray() {
    if sys::close_range_from(3).is_ok() {
        return;
    }
    if let Some(fds) = listed_fds() {
        for fd in fds.into_iter().filter(|&fd| fd >= 3) {
            let _ = nix::unistd::close(fd);
        }
        return;
    }
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
        .min(LOOP_LIMIT);
    for fd in 3..limit as RawFd {
        let _ = nix::unistd::close(fd);
    }
}

/// The open fds per /proc/self/fd (collected before closing any, since the
/// directory's own fd is among them); `None` when it cannot be read.
fn listed_fds() -> Option<Vec<RawFd>> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (!fds.is_empty()).then_some(fds)
}
