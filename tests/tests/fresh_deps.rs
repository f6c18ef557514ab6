//! `scripts/deps.sh` on a fresh Debian 12 whose qemu-utils comes from
//! bookworm-backports: the way `make test` once failed on a new machine
//! (bookworm's qemu-system-x86 made apt remove qemu-utils, and qemu-img was
//! gone an hour later). `tests/fresh/deps-chroot.sh` makes the chroots (one
//! like the machine image, one with backports still in the sources), runs
//! deps.sh in each, and checks every needed command itself. Downloads from
//! the Debian mirror; the .debs are cached in /var/cache/hutch-tests.

use std::process::Command;

use hutch_tests::*;

#[test]
fn deps_installs_everything_on_a_fresh_debian_with_backports_qemu_utils() {
    if !require_root("deps_installs_everything_on_a_fresh_debian_with_backports_qemu_utils") {
        return;
    }
    let script = hutch_tests::bins::workspace_dir().join("tests/fresh/deps-chroot.sh");
    let out = output(
        Command::new("timeout")
            .args(["--kill-after=30s", "1800s", "bash"])
            .arg(&script),
    );
    let text = format!("{}{}", out.stdout_str(), out.stderr_str());
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("[fresh")
                || l.starts_with("deps.sh:")
                || l.starts_with("MISSING")
                || l.starts_with("qemu-utils ")
                || l.starts_with("FAIL")
        })
        .collect();
    assert!(
        out.status.success(),
        "deps-chroot.sh failed ({}):\n{}\n--- last output:\n{}",
        out.status,
        summary.join("\n"),
        text.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Both machines: the conflict was seen, and qemu-img is there after.
    assert_eq!(
        summary
            .iter()
            .filter(|l| l.starts_with("qemu-utils ") && l.contains("qemu-img version"))
            .count(),
        2,
        "{}",
        summary.join("\n")
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("makes apt remove: qemu-utils")),
        "the image machine's conflict was reported:\n{}",
        summary.join("\n")
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("qemu-utils") && l.contains("breaks the install")),
        "the backports machine's conflict was resolved:\n{}",
        summary.join("\n")
    );
    eprintln!("{}", summary.join("\n"));
}
