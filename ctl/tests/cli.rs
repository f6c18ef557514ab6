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
