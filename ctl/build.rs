//! Names the build in `hutchctl --version`: the package version and the git
//! commit it was built from (`HUTCH_GIT_COMMIT` when set, as a build from a
//! tarball would set it; otherwise `git rev-parse` in the source tree;
//! `unknown` when neither says).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=HUTCH_GIT_COMMIT");
    let commit = match std::env::var("HUTCH_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => {
            // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
            // (A path that does not exist would make cargo run this every build.)
            let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
            watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
            for p in watch {
                if let Some(path) = git(&["rev-parse", "--git-path", &p]) {
                    if std::path::Path::new(&path).exists() {
                        println!("cargo:rerun-if-changed={path}");
                    }
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=HUTCH_GIT_COMMIT={commit}");
}
