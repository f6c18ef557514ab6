//! The container's PID 1 after the set-up: `init/hutch-init.rs`, built by
//! build.rs, embedded here and exec'd by the keeper's clone once the
//! container is up ([`crate::container`]). An idle init then holds a page of
//! stack and its page tables (~12 KiB resident, ~24 KiB of page tables)
//! instead of a copy-on-write image of the keeper (the pages the set-up
//! wrote, and page tables for all of the keeper's mappings).
//!
//! The keeper puts the image in a sealed, exec-only memfd before the clone
//! ([`sys::exec_memfd`]): nothing on the host's file systems, nothing the
//! user can read or change, and the exec needs no path inside the
//! container. Where the exec cannot happen (no image for this architecture,
//! memfds refused, `execveat` denied by the policy's seccomp filter) the
//! clone stays PID 1 and reaps in its own loop, as before: the container
//! works the same, only costs more idle.

use std::os::fd::{AsFd, OwnedFd};

use crate::sys;

#[cfg(hutch_tiny_init)]
const IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hutch-init"));
#[cfg(not(hutch_tiny_init))]
const IMAGE: &[u8] = &[];

/// The init's image as a descriptor the clone can exec, or `None` where
/// there is none (see the module's text).
pub fn image() -> Option<OwnedFd> {
    if IMAGE.is_empty() {
        return None;
    }
    sys::exec_memfd(c"hutch-init", IMAGE).ok()
}

/// Becomes the tiny init; returns only if the exec failed.
pub fn exec(image: &OwnedFd) -> std::io::Error {
    sys::exec_fd(image.as_fd(), &[c"hutch-init"])
}

#[cfg(test)]
mod tests {
    /// The image is a static ELF executable of a few KiB, so the exec
    /// loads no interpreter from the container's root.
    #[test]
    #[cfg(hutch_tiny_init)]
    fn image_is_small_static_elf() {
        let img = super::IMAGE;
        assert_eq!(&img[..4], b"\x7fELF");
        assert!(img.len() < 16 * 1024, "{} bytes", img.len());
        // No PT_INTERP program header (type 3).
        let phoff = u64::from_le_bytes(img[32..40].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes(img[54..56].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes(img[56..58].try_into().unwrap()) as usize;
        for i in 0..phnum {
            let off = phoff + i * phentsize;
            let kind = u32::from_le_bytes(img[off..off + 4].try_into().unwrap());
            assert_ne!(kind, 3, "the init has an interpreter");
        }
    }
}
