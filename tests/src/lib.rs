//! hutch's end-to-end test harness: throwaway users, a private sshd in a
//! network namespace the test made, `su` through a test-written PAM stack, a
//! syslog catcher, a leftover checker and a cached Debian template rootfs.
//!
//! Every helper owns what it starts and cleans it up on `Drop` (also when the
//! test panics), and every name is unique so tests run in parallel. Nothing
//! here edits the host's login configuration: PAM files and `/dev/log` are
//! replaced only inside private mount namespaces.
//!
//! Drop order matters only in one way: declare the `SshdEnv` *after* the
//! `TestUser`s it serves, so that the sshd (and every session it holds) is
//! gone before the users are deleted.

pub mod bins;
pub mod fusehome;
pub mod hutch;
pub mod ldap;
pub mod leftovers;
pub mod lxcfs;
pub mod ns;
pub mod proc;
pub mod pty;
pub mod rootfs;
pub mod sshd;
pub mod store;
pub mod syslog;
pub mod tmp;
pub mod user;

pub use bins::Bins;
pub use fusehome::OwnerOnlyMount;
pub use hutch::{HutchEnv, E2E_TEMPLATE};
pub use ldap::{Directory, LdapGroup, LdapUser};
pub use leftovers::{assert_no_leftovers, leftovers};
pub use lxcfs::Lxcfs;
pub use ns::{in_private_ns, su_in_private_ns, su_in_private_ns_with_log, NsDaemon};
pub use pty::PtySession;
pub use rootfs::{debian_rootfs, ROOTFS_PACKAGES};
pub use sshd::{Background, Login, Sftp, SshdEnv, SshdOpts, STOCK_PAM_STACK};
pub use store::StoreEnv;
pub use syslog::Syslog;
pub use tmp::TestDir;
pub use user::TestUser;

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when the test runs as root. Otherwise prints `SKIP <test>: needs
/// root` and returns false, unless `HUTCH_REQUIRE_ROOT=1`, where it panics:
/// CI can never pass by skipping. The one root gate of every suite (the
/// runtime's integration tests use it too).
pub fn require_root(test_name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(test_name, "needs root");
    false
}

/// Skips `test_name` for `why`, printing `SKIP <test>: <why>` past
/// libtest's capture, unless `HUTCH_REQUIRE_ROOT=1`, where a skip is a
/// failure: it panics. For what a host may lack (a v1 devices hierarchy,
/// a unified one); the caller returns after it.
pub fn skip(test_name: &str, why: &str) {
    if std::env::var("HUTCH_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test_name}: {why}, and HUTCH_REQUIRE_ROOT=1 forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test_name}: {why}");
}

/// Reports a suite's summary line (`109 attempts, 0 escapes`): printed, and
/// written to `<profile dir>/tallies/<name>.txt`, which `make test` prints
/// after cargo's summary (cargo captures a passing test's output).
pub fn tally(name: &str, line: &str) {
    println!("{line}");
    let dir = Bins::locate().dir.join("tallies");
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(dir.join(format!("{name}.txt")), format!("{name}: {line}\n"))
    });
    if let Err(e) = written {
        eprintln!("tally {name}: writing {}: {e}", dir.display());
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique on this machine while this process lives:
/// `<prefix><pid>x<n>`. With the prefix `"ht"` it is a valid user name of at
/// most 16 characters that the leftover checker recognizes (`^ht[0-9]`).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Convenience accessors on a command's `Output`.
pub trait OutputExt {
    /// stdout, lossily decoded.
    fn stdout_str(&self) -> String;
    /// stderr, lossily decoded.
    fn stderr_str(&self) -> String;
    /// The exit code; `None` when killed by a signal.
    fn code(&self) -> Option<i32>;
    /// status, stdout and stderr in one string for assertion messages.
    fn describe(&self) -> String;
}

impl OutputExt for Output {
    fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }
}

/// Runs `cmd` with stdin from /dev/null and its output captured; panics
/// naming the program if it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `cmd` and panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "{cmd:?} failed\n{}", out.describe());
    out
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
