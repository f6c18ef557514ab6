//! The raw system calls hutch-shell needs that nix does not wrap.
#![allow(unsafe_code)]

use std::io;

/// `close_range(first, ~0U, 0)`: closes every fd from `first` up.
pub fn close_range_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; it touches no memory of
    // ours. The caller (main, before exec) owns every fd >= `first`: no
    // File/OwnedFd of this process refers to them, so nothing is closed
    // behind a Rust owner's back.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
