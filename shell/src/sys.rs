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

/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)`: loads a classic BPF
/// seccomp filter on this thread (hutch-shell has one). Needs no_new_privs.
pub fn load_seccomp(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len()).map_err(|_| io::Error::other("seccomp filter too long"))?;
    let prog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `prog` points at `filter`, `len` instructions long, both alive
    // for the whole call; the kernel copies the program and keeps no pointer
    // to our memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
