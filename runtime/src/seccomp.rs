//! The seccomp filter hutch-shell loads just before it execs the inner
//! shell (after no_new_privs, which lets an unprivileged process load it),
//! and `hutchctl enter` before it execs a command as the user.
//!
//! A deny list, not moby's allow list: the user's processes already hold no
//! capabilities, so most privileged calls fail anyway; the filter closes the
//! kernel surface an unprivileged process still reaches and that a container
//! does not need (what moby's `profiles/seccomp/default.json` denies a
//! container without capabilities, and its `socket` and `clone` argument
//! rules):
//! - namespaces: `unshare`, `setns`, `clone` with any `CLONE_NEW*` flag
//!   (`clone3` answers ENOSYS so libc falls back to `clone`, whose flags we
//!   can see);
//! - the mount family: `mount`, `umount2`, `pivot_root`, `chroot`, `fsopen`,
//!   `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`, `mount_setattr`;
//! - keyrings (not namespaced), `bpf`, `perf_event_open`, `userfaultfd`,
//!   `io_uring_*`, `io_setup` (kernel AIO contexts: one host-wide pool,
//!   fs.aio-max-nr), `kexec_*`, modules, `open_by_handle_at`, `reboot`,
//!   swap, `acct`, `quotactl`, `syslog`;
//! - `socket(AF_ALG)` (page-cache writes into the shared template, "Copy
//!   Fail") and `socket(AF_VSOCK)`;
//! - `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)` (typing into someone's terminal).
//!
//! Only the native architecture is allowed: a syscall made through another
//! ABI (i386 `int 0x80`, x32 numbers on x86_64) kills the process, so the
//! compat entry points (socketcall, the i386 numbers) cannot go around the
//! list. Denied calls fail with EPERM, which programs handle.
//!
//! Profiles (the policy's `seccomp`): `default` is this filter; `off`
//! loads none; an absolute path names a root-owned file of extra syscall
//! names (one a line, `#` comments) denied on top of the default. The file
//! is read on the host only, never inside a container (where the path would
//! name whatever the template or the user put there): by the PAM module
//! before it joins ([`resolve`]) and by the keeper, which writes the names
//! it found into the container's marker (`seccomp_deny=`), from which
//! hutch-shell and `hutchctl enter` build the same filter
//! ([`resolve_marker`]).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::sys;

// BPF opcodes (linux/bpf_common.h, linux/filter.h), built from their parts.
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_K: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
const BPF_JEQ_K: u16 = BPF_JMP | BPF_JEQ | BPF_K;
const BPF_JGE_K: u16 = BPF_JMP | BPF_JGE | BPF_K;
const BPF_JSET_K: u16 = BPF_JMP | BPF_JSET | BPF_K;
const BPF_RET_K: u16 = BPF_RET | BPF_K;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;

// Offsets in struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }.
// The low 32 bits of each argument are at its offset (little endian); the
// arguments checked here (clone flags' namespace bits, socket's int domain,
// ioctl's unsigned int request) are all in the low 32 bits, and the kernel
// ignores the high bits of the last two.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16;
const OFF_ARG1: u32 = 24;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// x32 syscalls on x86_64 carry this bit in their number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Every `CLONE_NEW*` flag: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (moby's 0x7E020000).
const CLONE_NS_FLAGS: u32 = 0x7E02_0000;
const AF_ALG: u32 = 38;
const AF_VSOCK: u32 = 40;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;

/// Syscalls the default profile denies outright, by name (names are what a
/// profile file uses too).
pub const DENIED: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Kernel AIO contexts come from one host-wide pool (fs.aio-max-nr): a
    // container could take them all. Denied like io_uring.
    "io_setup",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "lookup_dcookie",
    "fanotify_init",
];

/// The syscall numbers hutch knows by name (native architecture).
fn number(name: &str) -> Option<u32> {
    let n: libc::c_long = match name {
        "unshare" => libc::SYS_unshare,
        "setns" => libc::SYS_setns,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "chroot" => libc::SYS_chroot,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "move_mount" => libc::SYS_move_mount,
        "open_tree" => libc::SYS_open_tree,
        "mount_setattr" => libc::SYS_mount_setattr,
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_setup" => libc::SYS_io_setup,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "reboot" => libc::SYS_reboot,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "acct" => libc::SYS_acct,
        "quotactl" => libc::SYS_quotactl,
        "syslog" => libc::SYS_syslog,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "fanotify_init" => libc::SYS_fanotify_init,
        "ptrace" => libc::SYS_ptrace,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "personality" => libc::SYS_personality,
        "kcmp" => libc::SYS_kcmp,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "process_madvise" => libc::SYS_process_madvise,
        "mbind" => libc::SYS_mbind,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "move_pages" => libc::SYS_move_pages,
        "migrate_pages" => libc::SYS_migrate_pages,
        "vhangup" => libc::SYS_vhangup,
        "clock_settime" => libc::SYS_clock_settime,
        "settimeofday" => libc::SYS_settimeofday,
        "sethostname" => libc::SYS_sethostname,
        "setdomainname" => libc::SYS_setdomainname,
        "memfd_create" => libc::SYS_memfd_create,
        "execveat" => libc::SYS_execveat,
        "memfd_secret" => libc::SYS_memfd_secret,
        "seccomp" => libc::SYS_seccomp,
        #[cfg(target_arch = "x86_64")]
        "iopl" => libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        "ioperm" => libc::SYS_ioperm,
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// A profile that could not be loaded; hutch-shell refuses to start then.
#[derive(Debug)]
pub enum SeccompError {
    Profile { path: String, why: String },
    Load { source: std::io::Error },
}

impl fmt::Display for SeccompError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeccompError::Profile { path, why } => write!(f, "seccomp profile {path}: {why}"),
            SeccompError::Load { source } => write!(f, "loading the seccomp filter: {source}"),
        }
    }
}

/// The message carries the cause (hutch-shell prints it alone), so there is
/// no separate source.
impl std::error::Error for SeccompError {}

/// The syscalls a profile denies beyond the default, by name: none for
/// `default` and `off`, the file's names for an absolute path (read here,
/// on the host: a regular root-owned file, every name known). What the
/// keeper writes into the marker and `hutchctl check` validates.
pub fn profile_names(profile: &str) -> Result<Vec<String>, SeccompError> {
    match profile {
        "off" | "default" | "" => Ok(Vec::new()),
        p if p.starts_with('/') => read_profile(Path::new(p)),
        other => Err(SeccompError::Profile {
            path: other.to_string(),
            why: "unknown profile (expected default, off or an absolute path)".into(),
        }),
    }
}

/// What to load for a policy's profile, read on the host: `None` for `off`.
pub fn resolve(profile: &str) -> Result<Option<Vec<u32>>, SeccompError> {
    let extra = profile_names(profile)?;
    if profile == "off" {
        return Ok(None);
    }
    denied_with(&extra).map(Some)
}

/// What to load for a container marker's `seccomp=` and `seccomp_deny=`:
/// `None` for `off`. Reads no file (inside a container a profile path
/// names nothing the admin wrote).
pub fn resolve_marker(profile: &str, extra: &[String]) -> Result<Option<Vec<u32>>, SeccompError> {
    match profile {
        "off" => Ok(None),
        "default" | "" => denied_with(extra).map(Some),
        p if p.starts_with('/') => denied_with(extra).map(Some),
        other => Err(SeccompError::Profile {
            path: other.to_string(),
            why: "unknown profile (expected default, off or an absolute path)".into(),
        }),
    }
}

/// The default list plus `extra` (names), sorted.
fn denied_with(extra: &[String]) -> Result<Vec<u32>, SeccompError> {
    let mut denied: Vec<u32> = DENIED.iter().filter_map(|n| number(n)).collect();
    for name in extra {
        denied.push(number(name).ok_or_else(|| SeccompError::Profile {
            path: "(marker)".into(),
            why: format!("unknown syscall {name:?}"),
        })?);
    }
    denied.sort_unstable();
    denied.dedup();
    Ok(denied)
}

/// Parses a profile file's text: syscall names, one a line, `#` comments.
pub fn parse_profile(text: &str) -> Result<Vec<u32>, String> {
    parse_profile_names(text)?
        .iter()
        .map(|n| number(n).ok_or_else(|| format!("unknown syscall {n:?}")))
        .collect()
}

/// The names of a profile file's text, each checked to be a syscall hutch knows.
pub fn parse_profile_names(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        if number(name).is_none() {
            return Err(format!("line {}: unknown syscall {name:?}", i + 1));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Reads a profile file: a regular, root-owned file nobody else can write
/// (it decides what the user may do), not followed through a symlink.
fn read_profile(path: &Path) -> Result<Vec<String>, SeccompError> {
    let shown = path.display().to_string();
    let fail = |why: String| SeccompError::Profile {
        path: shown.clone(),
        why,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(fail(
            "must be a regular file owned by root and writable only by root".into(),
        ));
    }
    let mut text = String::new();
    file.take(1 << 16)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    parse_profile_names(&text).map_err(fail)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The BPF program for a sorted list of denied syscall numbers.
pub fn program(denied: &[u32]) -> Vec<libc::sock_filter> {
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let mut p = vec![
        // Foreign architecture (i386 int 0x80 on x86_64): kill.
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    // x32 numbers: kill.
    #[cfg(target_arch = "x86_64")]
    {
        p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS));
    }
    for &nr in denied {
        p.push(jump(BPF_JEQ_K, nr, 0, 1));
        p.push(stmt(BPF_RET_K, eperm));
    }
    // clone3: its flags sit in memory we cannot inspect; ENOSYS makes libc use clone.
    p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(BPF_RET_K, enosys));
    // clone: flags are argument 0 on x86_64 and aarch64.
    p.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 4));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARG0));
    p.push(jump(BPF_JSET_K, CLONE_NS_FLAGS, 0, 1));
    p.push(stmt(BPF_RET_K, eperm));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    // socket(AF_ALG | AF_VSOCK, ...).
    p.push(jump(BPF_JEQ_K, libc::SYS_socket as u32, 0, 5));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARG0));
    p.push(jump(BPF_JEQ_K, AF_ALG, 2, 0));
    p.push(jump(BPF_JEQ_K, AF_VSOCK, 1, 0));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, eperm));
    // ioctl(fd, TIOCSTI | TIOCLINUX, ...).
    p.push(jump(BPF_JEQ_K, libc::SYS_ioctl as u32, 0, 5));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARG1));
    p.push(jump(BPF_JEQ_K, TIOCSTI, 2, 0));
    p.push(jump(BPF_JEQ_K, TIOCLINUX, 1, 0));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, eperm));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p
}

/// Loads the filter of a policy's profile, the file (if any) read on the
/// host now. Needs no_new_privs set first. `Ok(false)`: `off`, nothing loaded.
pub fn apply(profile: &str) -> Result<bool, SeccompError> {
    load(resolve(profile)?.as_deref())
}

/// Loads the filter a container's marker names (hutch-shell, `hutchctl
/// enter`), reading no file. Needs no_new_privs set first.
pub fn apply_marker(marker: &crate::paths::Marker) -> Result<bool, SeccompError> {
    load(resolve_marker(&marker.seccomp, &marker.seccomp_deny)?.as_deref())
}

/// Loads the program for `denied` (from [`resolve`] or
/// [`resolve_marker`]); `None` loads nothing.
pub fn load(denied: Option<&[u32]>) -> Result<bool, SeccompError> {
    let Some(denied) = denied else {
        return Ok(false);
    };
    sys::load_seccomp(&program(denied)).map_err(|source| SeccompError::Load { source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name of the default deny list has a number on this architecture.
    #[test]
    fn default_names_known() {
        for n in DENIED {
            assert!(number(n).is_some(), "{n}");
        }
    }

    /// `off` loads nothing, `default` denies unshare, anything else is refused.
    #[test]
    fn profiles() {
        assert!(resolve("off").unwrap().is_none());
        assert!(resolve("default")
            .unwrap()
            .unwrap()
            .contains(&(libc::SYS_unshare as u32)));
        assert!(resolve("strict").is_err());
        assert!(resolve("/nonexistent/profile").is_err());
    }

    /// A profile file names syscalls, one a line; an unknown name is an error with its line.
    #[test]
    fn profile_file() {
        assert_eq!(
            parse_profile("# extra\nptrace\n\n personality # why\n").unwrap(),
            vec![libc::SYS_ptrace as u32, libc::SYS_personality as u32]
        );
        assert_eq!(
            parse_profile("ptrace\nfrobnicate\n").unwrap_err(),
            "line 2: unknown syscall \"frobnicate\""
        );
    }

    /// A profile file is read on the host (root-owned, regular), its names
    /// go to the marker, and the marker's side builds the same list without
    /// reading any file.
    #[test]
    fn file_profile_on_host_and_in_marker() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("extra");
        std::fs::write(&f, "ptrace # no tracing\npersonality\n").unwrap();
        let path = f.to_str().unwrap();
        if nix::unistd::geteuid().is_root() {
            let names = profile_names(path).unwrap();
            assert_eq!(names, ["ptrace", "personality"]);
            let host = resolve(path).unwrap().unwrap();
            assert!(host.contains(&(libc::SYS_ptrace as u32)));
            std::fs::remove_file(&f).unwrap();
            // The file is gone: the marker's side still has the list.
            assert_eq!(resolve_marker(path, &names).unwrap().unwrap(), host);
        }
        assert!(profile_names("/nonexistent/profile").is_err());
        assert!(resolve_marker("strict", &[]).is_err());
        assert!(resolve_marker("off", &[]).unwrap().is_none());
        assert!(resolve_marker("default", &["frobnicate".into()]).is_err());
    }

    /// Every jump of the program lands inside it, and it ends in a return.
    #[test]
    fn jumps_in_range() {
        let p = program(&resolve("default").unwrap().unwrap());
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(
                    i + 1 + (ins.jt.max(ins.jf) as usize) < p.len(),
                    "jump at {i} out of range"
                );
            }
        }
        assert_eq!(p.last().unwrap().code, BPF_RET_K);
        assert!(p.len() < 4096);
    }

    /// In a forked child: after loading, unshare fails with EPERM, getpid works.
    #[test]
    fn filter_denies_in_child() {
        match unsafe_free_fork() {
            Some(0) => {}
            Some(code) => panic!("child reported failure {code}"),
            None => eprintln!("SKIP filter_denies_in_child: fork failed"),
        }
    }

    fn unsafe_free_fork() -> Option<i32> {
        let mut child = std::process::Command::new(std::env::current_exe().ok()?)
            .args([
                "--exact",
                "seccomp::tests::child_body",
                "--nocapture",
                "--include-ignored",
            ])
            .env("HUTCH_SECCOMP_CHILD", "1")
            .spawn()
            .ok()?;
        let st = child.wait().ok()?;
        Some(st.code().unwrap_or(-1))
    }

    /// Run by `filter_denies_in_child` in its own process only.
    #[test]
    #[ignore]
    fn child_body() {
        if std::env::var_os("HUTCH_SECCOMP_CHILD").is_none() {
            return;
        }
        nix::sys::prctl::set_no_new_privs().unwrap();
        apply("default").unwrap();
        let e = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).unwrap_err();
        assert_eq!(e, nix::errno::Errno::EPERM);
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes one aio_context_t into `ctx`, which outlives the call.
        #[allow(unsafe_code)]
        let r = unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx as *mut libc::c_ulong) };
        assert_eq!(r, -1);
        assert_eq!(nix::errno::Errno::last(), nix::errno::Errno::EPERM);
        let e = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Alg,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap_err();
        assert_eq!(e, nix::errno::Errno::EPERM);
        assert!(nix::unistd::getpid().as_raw() > 0);
    }
}
