//! The container's PID 1 once the set-up is done: a static program of a few
//! hundred bytes of code, no libc, no heap, that only reaps. The keeper's
//! clone does the set-up (runtime/src/container.rs) and then execs this
//! from a sealed, exec-only memfd, so an idle container's init holds a page
//! of stack and a handful of page tables instead of a copy-on-write image
//! of the keeper (its heap, relocated data and page tables).
//!
//! Built by runtime/build.rs with `rustc -C panic=abort` into a static
//! non-PIE executable without start files, and embedded in the keeper.
//! What it does, in order:
//! 1. not dumpable (the exec from an unreadable file already made it so;
//!    this holds it where the mode was not applied);
//! 2. named `hutch-init` (an exec from a descriptor is named after it);
//! 3. SIGCHLD blocked, then for ever: every exited child reaped (`__WALL`,
//!    so children with another exit signal too), then wait for the next
//!    SIGCHLD. Were waiting for signals refused (a seccomp policy denying
//!    rt_sigtimedwait), it reaps once a second instead.
//!
//! It reads nothing, writes nothing and takes no input: argv, the
//! environment and every descriptor but 0-2 (/dev/null) are empty.
#![no_std]
#![no_main]

use core::arch::global_asm;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 14;
    pub const NANOSLEEP: usize = 35;
    pub const WAIT4: usize = 61;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const PRCTL: usize = 157;
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const RT_SIGPROCMASK: usize = 135;
    pub const NANOSLEEP: usize = 101;
    pub const WAIT4: usize = 260;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const PRCTL: usize = 167;
}

const PR_SET_NAME: usize = 15;
const PR_SET_DUMPABLE: usize = 4;
const SIG_BLOCK: usize = 0;
const SIGCHLD: u32 = 17;
const WNOHANG: usize = 1;
const WALL: usize = 0x4000_0000;
const EINTR: isize = 4;
const EAGAIN: isize = 11;
static NAME: [u8; 11] = *b"hutch-init\0";
/// A `struct timespec` of one second.
static SECOND: [i64; 2] = [1, 0];

/// A raw system call of up to four arguments; returns the kernel's value
/// (a negative errno on failure).
#[cfg(target_arch = "x86_64")]
fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: `syscall` with the x86_64 Linux convention (number in rax,
    // arguments in rdi, rsi, rdx, r10; rcx and r11 clobbered). Every call
    // below passes integers or pointers to live, properly sized locals.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
fn syscall4(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: `svc 0` with the aarch64 Linux convention (number in x8,
    // arguments and result in x0-x3). Every call below passes integers or
    // pointers to live, properly sized locals.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a as isize => ret,
            in("x1") b, in("x2") c, in("x3") d,
            options(nostack),
        );
    }
    ret
}

// The entry point: no return address on the stack, so align it and call.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym init_main,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, #0",
    "mov x30, #0",
    "bl {main}",
    "brk #0",
    main = sym init_main,
);

extern "C" fn init_main() -> ! {
    syscall4(nr::PRCTL, PR_SET_DUMPABLE, 0, 0, 0);
    syscall4(nr::PRCTL, PR_SET_NAME, NAME.as_ptr() as usize, 0, 0);
    let set: u64 = 1 << (SIGCHLD - 1);
    let set_ptr = &set as *const u64 as usize;
    syscall4(nr::RT_SIGPROCMASK, SIG_BLOCK, set_ptr, 0, 8);
    let mut waits = true;
    loop {
        while syscall4(nr::WAIT4, usize::MAX, 0, WNOHANG | WALL, 0) > 0 {}
        if waits {
            let r = syscall4(nr::RT_SIGTIMEDWAIT, set_ptr, 0, 0, 8);
            waits = r >= 0 || r == -EINTR || r == -EAGAIN;
        } else {
            syscall4(nr::NANOSLEEP, SECOND.as_ptr() as usize, 0, 0, 0);
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        syscall4(nr::NANOSLEEP, SECOND.as_ptr() as usize, 0, 0, 0);
    }
}
