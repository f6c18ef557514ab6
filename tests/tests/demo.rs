//! The README's first command, run as a new user would run it without a
//! terminal: `scripts/demo.sh` (what `make demo` calls after building)
//! builds or reuses its template, makes its demo user and private sshd,
//! logs in confined, and removes everything it made: no cgroup, mount,
//! process, user or policy cache is left behind.

use std::path::Path;
use std::process::{Command, Stdio};

use hutch_tests::*;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().unwrap().port()
}

/// No policy cache file names a demo's policy (its key holds the path).
fn demo_cache_files() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(hutch_policy::DEFAULT_CACHE_DIR) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read(e.path()).is_ok_and(|b| b.windows(16).any(|w| w == b"/tmp/hutch-demo."))
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn demo_runs_non_interactively_and_leaves_nothing() {
    if !require_root("demo_runs_non_interactively_and_leaves_nothing") {
        return;
    }
    let bins = Bins::locate();
    bins.require();
    let target = bins.dir.parent().expect("the profile dir has a parent");
    let out = output(
        Command::new("timeout")
            .args(["--kill-after=10s", "900s", "bash"])
            .arg(hutch_tests::bins::workspace_dir().join("scripts/demo.sh"))
            .env("CARGO_TARGET_DIR", target)
            .env("HUTCH_DEMO_PORT", free_port().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let text = out.stdout_str();
    assert!(out.status.success(), "demo failed\n{}", out.describe());
    assert!(
        text.contains("hostname: hutchdemo-box"),
        "the login ran in the container\n{}",
        out.describe()
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("hutchdemo ") && l.contains("hutchdemo-box")),
        "hutchctl list showed the container\n{}",
        out.describe()
    );
    assert!(text.contains("demo: logged out; cleaning up."), "{text}");
    // The demo waited for its keeper before it returned: nothing is left
    // now, without waiting.
    for tag in ["hutch-demo", "hutchdemo"] {
        let left = leftovers(tag);
        assert!(
            left.is_empty(),
            "left behind for {tag}:\n{}",
            left.join("\n")
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains("/tmp/hutch-demo."),
        "demo mounts left:\n{mounts}"
    );
    assert!(
        Command::new("id")
            .arg("hutchdemo")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| !s.success()),
        "the demo user is gone"
    );
    assert_eq!(
        demo_cache_files(),
        Vec::<String>::new(),
        "policy cache left"
    );
    let work: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hutch-demo."))
        .map(|e| e.path())
        .collect();
    assert!(work.is_empty(), "demo work dirs left: {work:?}");
    assert!(Path::new("/var/lib/hutch-demo/templates/bookworm/bin/bash").exists());
}
