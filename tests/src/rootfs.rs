//! A Debian bookworm rootfs for e2e templates, built once per machine and
//! cached under /var/cache/hutch-tests.

use crate::{output, OutputExt};
use nix::fcntl::{Flock, FlockArg};
use std::path::PathBuf;
use std::process::Command;

/// The suite the rootfs is built from.
pub const ROOTFS_SUITE: &str = "bookworm";

/// Packages in the rootfs besides minbase: what the e2e tests use inside a
/// container (ps, sftp-server, ssh/scp, rsync, ip, bash).
pub const ROOTFS_PACKAGES: &[&str] = &[
    "procps",
    "openssh-sftp-server",
    "openssh-client",
    "rsync",
    "iproute2",
    "bash",
];

const CACHE: &str = "/var/cache/hutch-tests";

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cached rootfs directory, built on first use with
/// `mmdebstrap --variant=minbase --include=PACKAGES bookworm` under a lock
/// file, so parallel tests (and processes) build it once; the build goes to
/// a temporary directory that is renamed when complete. `$HUTCH_ROOTFS`
/// names a ready directory to use instead; `$HUTCH_DEBIAN_MIRROR` a mirror.
/// Treat the result as read-only.
pub fn debian_rootfs() -> PathBuf {
    if let Some(p) = std::env::var_os("HUTCH_ROOTFS") {
        return PathBuf::from(p);
    }
    let key = format!("{ROOTFS_SUITE} minbase {}", ROOTFS_PACKAGES.join(","));
    let dir = PathBuf::from(CACHE).join(format!("rootfs-{:016x}", fnv1a(&key)));
    if dir.join("bin/bash").exists() {
        return dir;
    }
    std::fs::create_dir_all(CACHE).unwrap_or_else(|e| panic!("mkdir {CACHE}: {e}"));
    let lockf = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.with_extension("lock"))
        .expect("open rootfs lock");
    let _lock = Flock::lock(lockf, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    if dir.join("bin/bash").exists() {
        return dir; // another test built it while we waited
    }
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).expect("remove stale rootfs build");
    }
    let t0 = std::time::Instant::now();
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--quiet", "--variant=minbase", "--mode=root"])
        .args(hutch_runtime::template::host_apt_checks())
        .arg(format!("--include={}", ROOTFS_PACKAGES.join(",")))
        .arg(ROOTFS_SUITE)
        .arg(&tmp);
    if let Some(m) = std::env::var_os("HUTCH_DEBIAN_MIRROR") {
        cmd.arg(m);
    }
    let out = output(&mut cmd);
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!(
            "building the Debian rootfs failed: {cmd:?}\n{}",
            out.describe()
        );
    }
    std::fs::rename(&tmp, &dir).expect("rename rootfs into place");
    eprintln!("built {} in {:?}", dir.display(), t0.elapsed());
    dir
}
