//! What to exec: the inner shell, with the argv sshd, login or su gave us
//! carried over (pure logic, no system calls).
//!
//! hutch-shell is called as `-hutch-shell` (a login), `hutch-shell -c CMD`
//! (ssh commands, scp, sftp-server, rsync, git) and `-hutch-shell -c CMD`
//! (`su -`). The inner shell gets the same shape: a leading `-` on argv[0]
//! stays (so it reads its profile), argv[0] becomes the inner shell's
//! basename, and the arguments pass through unchanged.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An execv call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    pub path: PathBuf,
    pub argv: Vec<OsString>,
}

/// Whether argv[0] marks a login shell (starts with `-`).
pub fn is_login(argv0: &OsStr) -> bool {
    argv0.as_bytes().first() == Some(&b'-')
}

/// The exec of `shell` for a hutch-shell started with `argv0` and `args`.
pub fn plan(argv0: &OsStr, args: &[OsString], shell: &Path) -> ExecPlan {
    let base = shell
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| shell.as_os_str().to_os_string());
    let mut name = OsString::new();
    if is_login(argv0) {
        name.push("-");
    }
    name.push(&base);
    let mut argv = vec![name];
    argv.extend(args.iter().cloned());
    ExecPlan {
        path: shell.to_path_buf(),
        argv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// `-hutch-shell` (sshd, login) → `-bash`, no arguments.
    #[test]
    fn login() {
        let p = plan(OsStr::new("-hutch-shell"), &[], Path::new("/bin/bash"));
        assert_eq!(
            p,
            ExecPlan {
                path: "/bin/bash".into(),
                argv: os(&["-bash"])
            }
        );
    }

    /// `hutch-shell -c CMD` (ssh host CMD, scp, sftp-server) → `bash -c CMD`.
    #[test]
    fn command() {
        let p = plan(
            OsStr::new("hutch-shell"),
            &os(&["-c", "rsync --server -e.Lsfx . /tmp"]),
            Path::new("/bin/bash"),
        );
        assert_eq!(p.argv, os(&["bash", "-c", "rsync --server -e.Lsfx . /tmp"]));
    }

    /// `-hutch-shell -c CMD` (su - alice -c CMD) → `-bash -c CMD`.
    #[test]
    fn su_login_command() {
        let p = plan(
            OsStr::new("-hutch-shell"),
            &os(&["-c", "id"]),
            Path::new("/usr/bin/zsh"),
        );
        assert_eq!(
            p,
            ExecPlan {
                path: "/usr/bin/zsh".into(),
                argv: os(&["-zsh", "-c", "id"])
            }
        );
    }

    /// Called by a full path, argv[0] `/usr/sbin/hutch-shell` is not a login.
    #[test]
    fn full_path_argv0() {
        let p = plan(
            OsStr::new("/usr/sbin/hutch-shell"),
            &[],
            Path::new("/bin/sh"),
        );
        assert_eq!(p.argv, os(&["sh"]));
    }

    /// Other arguments pass through untouched, non-UTF-8 bytes included.
    #[test]
    fn pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'f', 0xff, b'o']);
        let args = vec![
            OsString::from("-l"),
            OsString::from("script.sh"),
            odd.clone(),
        ];
        let p = plan(OsStr::new("hutch-shell"), &args, Path::new("/bin/bash"));
        assert_eq!(
            p.argv,
            vec![OsString::from("bash"), "-l".into(), "script.sh".into(), odd]
        );
    }
}
