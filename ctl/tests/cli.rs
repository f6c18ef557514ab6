//! The hutchctl binary as a user meets it, without root: `--version` names
//! the build, and the bash completion script completes in a real bash.

use std::process::Command;

fn hutchctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hutchctl"))
}

/// `--version` prints the package version and the commit of this checkout.
#[test]
fn version_names_version_and_commit() {
    let out = hutchctl().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        text.starts_with(&format!("hutchctl {} (git ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(h) if h.status.success() && std::env::var_os("HUTCH_GIT_COMMIT").is_none() => {
            let commit = String::from_utf8_lossy(&h.stdout).trim().to_string();
            assert_eq!(
                text,
                format!("hutchctl {} (git {commit})", env!("CARGO_PKG_VERSION"))
            );
        }
        _ => eprintln!("no git checkout here: only the form of {text:?} is checked"),
    }
}

/// Sourced into bash, the script completes `hutchctl te` to `template` and
/// `hutchctl template u` to `unload update`.
#[test]
fn bash_completion_completes() {
    let script = hutchctl().args(["completions", "bash"]).output().unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hutchctl.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let complete = |words: &str| {
        let n = words.split(' ').count() - 1;
        let out = Command::new("bash")
            .arg("--norc")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={n}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _hutchctl hutchctl \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        words.sort();
        words
    };
    assert_eq!(complete("hutchctl te"), ["template"]);
    assert_eq!(complete("hutchctl template u"), ["unload", "update"]);
}

/// `[host] usage_db` and `usage_retention` through the binary: `metrics
/// --record` samples a container (here one whose keeper is this test and
/// whose cgroup is gone) into usage_db, `report` shows it; with
/// `usage_retention = 0` the history keeps nothing.
#[test]
fn usage_db_and_retention_keys() {
    use hutch_runtime::keeper::state::{SessionState, State};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let config = dir.path().join("hutch.toml");
    let policy = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[host]\nrun_dir = \"{}\"\nlib_dir = \"{}\"\ncgroup_root = \"hutch-cli-test-none\"\nusage_db = \"{}\"\n{extra}",
                dir.path().join("run").display(),
                dir.path().join("lib").display(),
                db.display()
            ),
        )
        .unwrap();
    };
    policy("");
    let user_dir = dir.path().join("run/users/rcuser");
    std::fs::create_dir_all(&user_dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    State {
        user: "rcuser".into(),
        uid: 4242,
        keeper_pid: std::process::id() as i32,
        init_pid: 1,
        started: now,
        template: "t".into(),
        generation: 1,
        hostname: "rcuser".into(),
        cgroups: vec![],
        cpus: None,
        start_marks: vec![],
        sessions: vec![SessionState {
            id: 1,
            service: "sshd".into(),
            tty: "ssh".into(),
            rhost: "-".into(),
            pid: 1,
            since: now,
        }],
        notices: 0,
        last_notice: None,
    }
    .write(&user_dir.join("state.json"))
    .unwrap();
    let run = |args: &[&str]| {
        let out = hutchctl()
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = run(&["metrics", "--record"]);
    assert!(
        metrics.contains("hutch_container_sessions{user=\"rcuser\"} 1\n"),
        "{metrics}"
    );
    assert!(db.exists(), "the history is at usage_db");
    let csv = run(&["report", "--since", "1h", "--csv"]);
    assert!(
        csv.lines()
            .nth(1)
            .unwrap_or("")
            .starts_with("\"rcuser\",1,1,"),
        "{csv}"
    );
    // Within usage_interval (default 1m) a second run samples nothing; with 0, every run.
    run(&["metrics", "--record"]);
    let samples = |csv: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(csv).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["samples"].to_string())
            .collect()
    };
    assert_eq!(samples(&run(&["report", "--since", "1h", "--json"])), ["1"]);
    policy("usage_interval = 0\n");
    run(&["metrics", "--record"]);
    assert_eq!(samples(&run(&["report", "--since", "1h", "--json"])), ["2"]);
    policy("usage_retention = 0\n");
    run(&["metrics", "--record"]);
    let csv = run(&["report", "--since", "1h", "--csv"]);
    assert_eq!(csv.lines().count(), 1, "retention 0 keeps nothing: {csv}");
}
