//! `hutchctl check` and the `seccomp` key: a profile name hutch does not
//! know, or a profile file that is missing, not root's or names an unknown
//! syscall, is an error naming the key and place (exit 1), instead of a
//! policy that passes check and then refuses every login.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hutchctl"))
        .arg("check")
        .arg(config)
        .output()
        .expect("run hutchctl")
}

fn describe(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn policy(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("hutch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// An unknown profile name, and a file that does not exist, fail check with the key and place.
#[test]
fn unknown_name_and_missing_file_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let out = check(&policy(d.path(), "[defaults]\nseccomp = \"strict\"\n"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hutch.toml:2:11: defaults.seccomp: invalid seccomp profile \"strict\""),
        "{}",
        describe(&out)
    );

    let missing = d.path().join("no-such-profile");
    let out = check(&policy(
        d.path(),
        &format!("[users.alice]\nseccomp = \"{}\"\n", missing.display()),
    ));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hutch.toml:2:11: users.alice.seccomp: seccomp profile")
            && text.contains("No such file")
            && text.contains("would be refused"),
        "{}",
        describe(&out)
    );
}

/// A root-owned file of known names passes; one naming an unknown syscall,
/// or writable by others, does not.
#[test]
fn profile_file_contents_are_checked() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP profile_file_contents_are_checked: a root-owned file needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("extra");
    std::fs::write(&f, "# extra denials\nptrace\npersonality\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = policy(
        d.path(),
        &format!("[defaults]\nseccomp = \"{}\"\n", f.display()),
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    std::fs::write(&f, "ptrace\nfrobnicate\n").unwrap();
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("line 2: unknown syscall \"frobnicate\""),
        "{}",
        describe(&out)
    );

    std::fs::write(&f, "ptrace\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("writable only by root"),
        "{}",
        describe(&out)
    );
}
