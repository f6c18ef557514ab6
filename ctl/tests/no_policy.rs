//! hutchctl on a host without a policy file (a fresh install): the commands
//! that read hutch's state say once that no policy was found and use the
//! defaults, as `template build` does; a policy that exists but is broken is
//! still an error naming the file.

use std::path::Path;
use std::process::{Command, Output};

const ABSENT: &str = "/nonexistent-hutch-ctl-test/hutch.toml";

fn hutchctl(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hutchctl"))
        .arg("--config")
        .arg(config)
        .args(args)
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

/// `list`, `list --json`, `stats --json` and `watch --once` exit 0 without a
/// policy file and say so exactly once on stderr.
#[test]
fn state_commands_use_the_defaults_without_a_policy() {
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["stats", "--json"],
        &["watch", "--once"],
    ] {
        let out = hutchctl(Path::new(ABSENT), args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches("no policy at").count(),
            1,
            "{args:?} says it once: {}",
            describe(&out)
        );
        assert!(err.contains(ABSENT), "{args:?} names the path: {err}");
        if args.contains(&"--json") {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{args:?} prints JSON ({e}): {}", describe(&out)));
            assert!(v.is_array(), "{args:?}: {v}");
        }
    }
}

/// The table has its header even when nothing runs.
#[test]
fn list_prints_a_table_without_a_policy() {
    let out = hutchctl(Path::new(ABSENT), &["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("USER"), "{}", describe(&out));
}

/// A policy file that exists but does not parse is an error naming it,
/// never silently replaced by the defaults.
#[test]
fn a_broken_policy_is_still_an_error() {
    let dir = std::env::temp_dir().join(format!("hutchctl-no-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hutch.toml");
    std::fs::write(&file, "[defaults\n").unwrap();
    let out = hutchctl(&file, &["list"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hutch.toml"), "{err}");
    assert!(!err.contains("no policy at"), "{err}");
}
