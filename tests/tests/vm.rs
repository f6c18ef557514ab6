//! The VM tier: hutch installed from its .deb on a cgroup-v2 systemd Debian
//! guest, a real SSH login from this host into a container under
//! hutch.service's delegated subtree, v2 quotas proven by workloads,
//! teardown, NFS homes from the guest kernel's nfsd with `root_squash`
//! (tests/vm/nfs-checks.sh: this host's kernel has no NFS), upgrade and
//! purge (tests/vm/run.sh does the work).
//!
//! Runs where QEMU can: qemu-system-x86_64 on PATH (scripts/deps.sh installs
//! it). Otherwise it skips with the reason, unless `HUTCH_REQUIRE_VM=1`,
//! where a skip is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Why the VM tier cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (mmdebstrap --mode=root, mkfs, /var/cache/hutch-tests)".into());
    }
    for tool in [
        "qemu-system-x86_64",
        "qemu-img",
        "mmdebstrap",
        "dpkg-buildpackage",
        "dh",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not found (scripts/deps.sh installs it)"));
        }
    }
    None
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The .deb to test: `HUTCH_DEB`, else `make deb` into a target dir of its
/// own (the test runner's cargo holds the lock on the usual one).
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("HUTCH_DEB") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        repo().join(target)
    };
    let deb_target = target.join("vm-deb");
    let out = deb_target.join("deb");
    let t = Instant::now();
    let status = Command::new("make")
        .arg("-C")
        .arg(repo())
        .arg("deb")
        .arg(format!("TARGET_DIR={}", deb_target.display()))
        .arg(format!("DEB_OUT={}", out.display()))
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("running make deb");
    assert!(status.success(), "make deb failed: {status}");
    eprintln!("make deb: {:?}", t.elapsed());
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("reading DEB_OUT")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("hutch_") && n.ends_with(".deb")
        })
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "expected one hutch_*.deb in {}: {debs:?}",
        out.display()
    );
    debs.into_iter().next().unwrap()
}

/// The whole VM tier: install, confined login, quotas, teardown, purge.
#[test]
fn vm_tier_debian12_systemd_cgroup2() {
    if let Some(why) = cannot_run() {
        if std::env::var("HUTCH_REQUIRE_VM").as_deref() == Ok("1") {
            panic!("VM tier cannot run: {why}; HUTCH_REQUIRE_VM=1 forbids skipping");
        }
        eprintln!("SKIP vm_tier_debian12_systemd_cgroup2: {why}");
        return;
    }
    let deb = deb();
    let t = Instant::now();
    // A stalled guest must fail the test, not CI's overall timeout; run.sh
    // kills its VM on SIGTERM.
    let out = Command::new("timeout")
        .args(["--kill-after=30", "1800"])
        .arg(repo().join("tests/vm/run.sh"))
        .env("HUTCH_DEB", &deb)
        .output()
        .expect("running tests/vm/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("VM tier: {:?}", t.elapsed());
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or("no summary line");
    assert!(
        out.status.success(),
        "VM tier failed ({summary}), status {}",
        out.status
    );
    assert!(summary.ends_with(" 0 failed"), "{summary}");
}
