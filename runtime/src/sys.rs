//! The one place for `unsafe` libc calls that nix does not cover (or covers
//! only as `unsafe`): fork/clone, posix_spawn, pidfd_open, openat2, close_range, the
//! interface-flags ioctl and bpf (device programs). Each wrapper states the invariant it relies on.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::unistd::Pid;

/// Which side of a fork or clone the caller is on.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// `fork()`.
///
/// The caller must be single-threaded (the keeper and the PAM module check
/// this), so the child may allocate and run ordinary Rust code.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: callers are single-threaded (checked by `threads()` in the module,
    // and the keeper starts no threads), so no lock can be held by another
    // thread at the moment of the fork, and the child may call any function.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(Pid::from_raw(p))),
    }
}

/// `clone(flags | SIGCHLD)` without a new stack: like `fork()`, but the child
/// starts in the new namespaces named by `flags` (CLONE_NEW*).
///
/// Same requirement as [`fork`]: the caller is single-threaded.
pub fn clone_fork(flags: libc::c_int) -> io::Result<Forked> {
    // SAFETY: with a NULL stack the kernel gives the child a copy-on-write
    // copy of the caller's stack, exactly as fork() does; flags contain only
    // CLONE_NEW* namespace flags (no CLONE_VM/CLONE_THREAD), so the child is a
    // separate process. The caller is single-threaded (see `fork`).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(Pid::from_raw(p as i32))),
    }
}

/// `posix_spawn(prog, argv, env)` with no file actions or attributes: a new
/// process running `prog` with the caller's descriptors (those without
/// close-on-exec), signal mask and session, without copying the caller's
/// page tables first (glibc spawns with `clone(CLONE_VM | CLONE_VFORK)`
/// and the caller waits until the exec is done), so its cost does not grow
/// with the caller's memory as `fork` + `execve`'s does. An exec that
/// fails is an error here, not in the child.
pub fn spawn(
    prog: &CStr,
    argv: &[std::ffi::CString],
    env: &[std::ffi::CString],
) -> io::Result<Pid> {
    let ptrs = |v: &[std::ffi::CString]| -> Vec<*mut libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr().cast_mut())
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    };
    let (argv, env) = (ptrs(argv), ptrs(env));
    let mut pid: libc::pid_t = 0;
    // SAFETY: `prog` and every string that `argv` and `env` point to are
    // NUL-terminated and borrowed for the whole call; both arrays end with a
    // NULL pointer; posix_spawn only reads them (the `*mut` is its C
    // signature) and writes the child's pid into `pid`, which outlives the
    // call. NULL file actions and attributes are allowed (none of either).
    let r = unsafe {
        libc::posix_spawn(
            &mut pid,
            prog.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            env.as_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(Pid::from_raw(pid))
}

/// Ends the calling process at once, without running destructors or atexit
/// handlers (for a forked child that must not touch its parent's state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when `pid` exits.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// RESOLVE_NO_SYMLINKS: fail with ELOOP on any symlink in the path.
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// RESOLVE_NO_MAGICLINKS: refuse /proc magic links.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// RESOLVE_BENEATH: no escape from the starting directory.
pub const RESOLVE_BENEATH: u64 = 0x08;
/// RESOLVE_IN_ROOT: the starting directory is `/` for the whole lookup
/// (absolute symlinks and `..` stay below it).
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// `openat2(dirfd, path, {flags, 0, resolve})`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `how` a valid
    // open_how of the size passed; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a
/// detached bind mount of `path` (not following a final symlink), which
/// [`move_mount_to`] can attach in another mount namespace.
pub fn open_tree_clone(path: &CStr) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_SYMLINK_NOFOLLOW: libc::c_uint = 0x100;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_SYMLINK_NOFOLLOW;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`:
/// attaches a detached mount from [`open_tree_clone`] on `target` (in the
/// caller's mount namespace).
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &CStr) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
    // SAFETY: both strings are NUL-terminated and outlive the call; `tree`
    // is a live descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from `first` up, except those in `keep`.
pub fn close_fds_from(first: i32, keep: &[i32]) {
    let mut start = first as u32;
    let mut keep: Vec<u32> = keep
        .iter()
        .map(|&k| k as u32)
        .filter(|&k| k >= start)
        .collect();
    keep.sort_unstable();
    for k in keep {
        if k > start {
            close_range(start, k - 1);
        }
        start = k + 1;
    }
    close_range(start, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; the callers (forked
    // children about to exec or become an init) own every descriptor in the
    // range and no Rust object in them is used afterwards.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r < 0 {
        // Old kernel: close one by one up to a sane limit.
        for fd in first..last.min(65536) {
            // SAFETY: as above.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// `mount_setattr` attribute bits (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `mount_setattr(fd, "", AT_EMPTY_PATH, {attr_set: set})` (Linux 5.12):
/// adds `set` to the mount `fd` is the root of, leaving every other
/// attribute of it (noexec, nosymfollow, atime) as it is.
pub fn mount_setattr_add(fd: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated empty string and `attr` a valid
    // struct mount_attr of the size passed; both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec
/// (`close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`, Linux 5.11; else one
/// `fcntl` per entry of /proc/self/fd). The caller keeps using them; only
/// what it execs loses them.
pub fn cloexec_from(first: i32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: with CLOSE_RANGE_CLOEXEC close_range closes nothing; it only
    // sets the close-on-exec flag of open descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // A descriptor that closed meanwhile (the directory's own) is no matter.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    Ok(())
}

/// Brings a network interface (e.g. `lo`) up in the caller's network namespace.
pub fn link_up(name: &str) -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; the socket is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resets every signal's disposition to the default (SIGPIPE: ignored) and unblocks all signals
/// (a process started from sshd inherits ignored signals and masks).
pub fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // A write to a closed pipe or socket must be an error (EPIPE), not death.
        let action = if sig == libc::SIGPIPE {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: SIG_DFL/SIG_IGN install no handler code; invalid numbers just fail.
        unsafe { libc::signal(sig, action) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Opens the syslog connection with `ident` (a static C string) and
/// LOG_AUTHPRIV, for hutch's own daemons (never called inside a PAM host).
pub fn openlog(ident: &'static CStr) {
    // SAFETY: `ident` is 'static, as openlog requires (it keeps the pointer).
    unsafe {
        libc::openlog(
            ident.as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_AUTHPRIV,
        )
    };
}

/// One syslog line at `priority` (LOG_INFO, LOG_ERR, ...).
pub fn syslog(priority: libc::c_int, msg: &str) {
    let Ok(c) = std::ffi::CString::new(msg.replace('\0', " ")) else {
        return;
    };
    // SAFETY: a constant "%s" format with one valid NUL-terminated string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
}

/// Takes ownership of an inherited descriptor by number, if it is open.
pub fn take_inherited_fd(fd: RawFdNum) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process by its parent for it alone; nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        owned.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}

/// A raw descriptor number.
pub type RawFdNum = libc::c_int;

/// `lgetxattr(path, name)`: the attribute's value, `None` when the file has
/// no such attribute (ENODATA) or the filesystem keeps none (ENOTSUP).
pub fn lgetxattr(path: &std::path::Path, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::lgetxattr(
            cpath.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// `fgetxattr(fd, name)`: like [`lgetxattr`], on an open file (so that no
/// path is resolved again).
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: `name` is NUL-terminated and outlives the call; `fd` is a
    // descriptor the caller holds open; the kernel writes at most
    // `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// One `bpf(BPF_PROG_LOAD)` of a BPF_PROG_TYPE_CGROUP_DEVICE program made
/// of `insns`, with the verifier's log in `log` (none when it is empty:
/// the verifier logging every instruction is most of a load's time).
pub fn bpf_prog_load_device(
    insns: &[u64],
    license: &CStr,
    name: &[u8],
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        // NULL without a log: the kernel refuses a buffer at log level
        // 0 (EINVAL), and an empty slice's pointer is not NULL.
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        prog_name: [0; 16],
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    for (d, s) in attr.prog_name.iter_mut().take(15).zip(name) {
        *d = *s;
    }
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for
    // BPF_PROG_LOAD of the size passed; the instructions, the license
    // string and the log buffer it points to outlive the call, and the
    // kernel writes at most `log.len()` bytes into the log.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoad,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `bpf(BPF_PROG_LOAD)` of a BPF_PROG_TYPE_CGROUP_DEVICE program made of
/// `insns` (each one `struct bpf_insn`, packed into a u64 in memory order).
/// On failure the verifier's log, if any, is appended to the error.
pub fn bpf_load_cgroup_device(insns: &[u64], license: &CStr, name: &[u8]) -> io::Result<OwnedFd> {
    let load = |log: &mut [u8]| bpf_prog_load_device(insns, license, name, log);
    load(&mut []).or_else(|e| {
        let mut log = vec![0u8; 16 * 1024];
        match load(&mut log) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let text = text.trim();
                if text.is_empty() {
                    Err(e)
                } else {
                    Err(io::Error::new(
                        e.kind(),
                        format!("{e}: verifier: {}", text.replace('\n', "; ")),
                    ))
                }
            }
        }
    })
}

/// `bpf(BPF_PROG_ATTACH)` of `prog` to the cgroup `cgroup` (a directory
/// descriptor in a cgroup2 mount) with `attach_type` and `flags`.
pub fn bpf_prog_attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    #[repr(C)]
    struct ProgAttach {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }
    const BPF_PROG_ATTACH: libc::c_long = 8;
    let attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for
    // BPF_PROG_ATTACH of the size passed and outlives the call; both
    // descriptors are open (borrowed for the call).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttach,
            std::mem::size_of::<ProgAttach>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `bpf(BPF_PROG_QUERY)`: the ids of the programs attached directly to the
/// cgroup `cgroup` with `attach_type` (at most 64).
pub fn bpf_prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    #[repr(C)]
    struct ProgQuery {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let mut ids = [0u32; 64];
    let mut attr = ProgQuery {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        pad: 0,
    };
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for
    // BPF_PROG_QUERY of the size passed; the kernel writes at most
    // `prog_cnt` ids into `ids`, and both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut ProgQuery,
            std::mem::size_of::<ProgQuery>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ids[..(attr.prog_cnt as usize).min(ids.len())].to_vec())
}

/// Whether a BPF program with this id still exists (`BPF_PROG_GET_FD_BY_ID`).
pub fn bpf_prog_exists(id: u32) -> io::Result<bool> {
    #[repr(C)]
    struct GetFd {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let attr = GetFd {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for
    // BPF_PROG_GET_FD_BY_ID of the size passed and outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &attr as *const GetFd,
            std::mem::size_of::<GetFd>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns; it is closed at once.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(true)
}

/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)`: loads a classic BPF
/// seccomp filter on the calling thread (hutch-shell and `hutchctl enter`
/// load it single-threaded, just before exec). Needs no_new_privs.
pub fn load_seccomp(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(filter.len()).map_err(|_| io::Error::other("seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, `len` instructions long, both alive
    // for the whole call; the kernel copies the program and keeps no pointer
    // to our memory.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `unix` (seconds) in local time as a syslog (RFC 3164) header writes it:
/// `Dec  3 07:40:05`, as glibc's syslog(3) does.
pub fn syslog_time(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t: libc::time_t = unix;
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct of integers
    // (and a pointer tm_zone may be null); localtime_r fills it and keeps no
    // reference to either argument.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return "Jan  1 00:00:00".to_string();
        }
        tm
    };
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The loop device is detached when its last user (the mount) closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Read-only loop device.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// The backing file is read and written with O_DIRECT: no second copy of
/// the layer in the page cache.
pub const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `ioctl(/dev/loop-control, LOOP_CTL_GET_FREE)`: the number of a free loop
/// device (made if needed).
pub fn loop_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; `control` is a live fd.
    let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as u32)
}

/// `ioctl(loop, LOOP_CONFIGURE)`: backs the loop device `dev` with
/// `backing`, with `flags` (`LO_FLAGS_*`), in one step.
pub fn loop_configure(dev: BorrowedFd<'_>, backing: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `cfg` is a valid, fully initialised loop_config that outlives
    // the call; the kernel only reads it. Both fds are live.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// The kernel's sizes: loop_info64 is 232 bytes, loop_config 304.
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// `fsopen(fsname, FSOPEN_CLOEXEC)`: a file system context.
fn fsopen(fsname: &CStr) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    // SAFETY: `fsname` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fsname.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `fsconfig(fd, cmd, key, value, 0)` with optional strings.
fn fsconfig(
    fd: BorrowedFd<'_>,
    cmd: libc::c_uint,
    key: Option<&CStr>,
    value: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: the strings are NUL-terminated (or null, as the command
    // allows) and outlive the call; `fd` is a live fs context.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            cmd,
            ptr(key),
            ptr(value),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts `source` (a block device path) as `fstype` with the
/// comma-separated `options`, nosuid and nodev, as a *detached* mount: an
/// fd that [`move_mount_to`] attaches, possibly in another mount namespace
/// (the container's). The device is opened here, by the caller, so a
/// devices cgroup the attaching process sits in does not apply to it.
pub fn mount_detached(fstype: &CStr, source: &CStr, options: &[&CStr]) -> io::Result<OwnedFd> {
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x02;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x04;
    let ctx = fsopen(fstype)?;
    fsconfig(
        ctx.as_fd(),
        FSCONFIG_SET_STRING,
        Some(c"source"),
        Some(source),
    )?;
    for opt in options {
        let text = opt.to_bytes();
        match text.iter().position(|b| *b == b'=') {
            Some(i) => {
                let key = std::ffi::CString::new(&text[..i]).map_err(io::Error::other)?;
                let value = std::ffi::CString::new(&text[i + 1..]).map_err(io::Error::other)?;
                fsconfig(ctx.as_fd(), FSCONFIG_SET_STRING, Some(&key), Some(&value))?;
            }
            None => fsconfig(ctx.as_fd(), FSCONFIG_SET_FLAG, Some(opt), None)?,
        }
    }
    fsconfig(ctx.as_fd(), FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: `ctx` is a live fs context that CMD_CREATE has made a
    // superblock for; fsmount only reads its arguments.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Points fds 0, 1 and 2 at `/dev/null` (as this process's mount namespace
/// has it); nothing changes if it cannot be opened.
pub fn stdio_to_dev_null() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// The window size of the terminal `fd` (TIOCGWINSZ).
pub fn get_winsize(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` into `ws`, which lives
    // across the call; `fd` is a valid descriptor for the call's duration.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ws)
}

/// Sets the window size of the terminal `fd` (TIOCSWINSZ).
pub fn set_winsize(fd: BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from `ws`, valid for the
    // call; `fd` is a valid descriptor for the call's duration.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const libc::winsize) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the terminal `fd` the calling session leader's controlling
/// terminal (TIOCSCTTY, without stealing it from another session).
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); `fd`
    // is a valid descriptor for the call's duration.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pty pair from the `/dev/ptmx` of the calling process's mount
/// namespace: the master (unlocked) and its slave, opened through the
/// master (TIOCGPTPEER: no /dev/pts path is looked up), both close-on-exec
/// and neither the caller's controlling terminal.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from `unlock`, valid for the call;
    // `master` is an open pty master.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new
    // descriptor (or -1); `master` is an open, unlocked pty master.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `slave` was just returned by the kernel and is owned by no one else.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (the clock `Instant` reads, as a
/// number other processes can compare: [`crate::timing`]).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Gives the heap's free memory back to the kernel (`malloc_trim(0)`): a
/// keeper or init that has finished its start keeps only what it uses.
pub fn malloc_trim() {
    // SAFETY: malloc_trim takes no pointers; glibc's allocator is
    // thread-safe and the call only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A sealed, exec-only memfd holding `image` (an executable): made with
/// `MFD_EXEC` where the kernel knows it (6.3+, so `vm.memfd_noexec = 1`
/// does not make it unexecutable), close-on-exec, mode 0111 (no one can
/// read it, so a process exec'd from it is not dumpable), then sealed
/// against writes, growing, shrinking and further seals.
pub fn exec_memfd(name: &CStr, image: &[u8]) -> io::Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is a valid NUL-terminated string; plain flags.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above (a kernel before MFD_EXEC).
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    io::Write::write_all(&mut file, image)?;
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o111))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own, integer argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// `execveat(fd, "", argv, [], AT_EMPTY_PATH)`: runs the executable `fd`
/// refers to, with an empty environment. Returns only on failure.
pub fn exec_fd(fd: BorrowedFd<'_>, argv: &[&CStr]) -> io::Error {
    let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: `args` and `env` are NULL-terminated arrays of pointers to
    // NUL-terminated strings that outlive the call (borrowed from `argv`);
    // the path is the empty string with AT_EMPTY_PATH, so `fd` is executed.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            args.as_ptr(),
            env.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// `spawn` runs the program with its arguments and environment (the
    /// child's exit status says what it saw), and an exec that cannot
    /// happen is the caller's error.
    #[test]
    fn spawn_runs_the_program_or_says_why_not() {
        let c = |s: &str| CString::new(s).unwrap();
        let pid = spawn(
            &c("/bin/sh"),
            &[c("sh"), c("-c"), c("test \"$1$X\" = ab"), c("sh"), c("a")],
            &[c("X=b")],
        )
        .unwrap();
        let st = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(st, nix::sys::wait::WaitStatus::Exited(pid, 0));
        let e = spawn(&c("/nonexistent/hutch-keeper"), &[c("x")], &[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
