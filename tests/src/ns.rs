//! Private mount namespaces for PAM clients: a private `/dev` (with the
//! test's syslog socket at `/dev/log`) and test-written PAM files bound over
//! the host's, all inside `unshare --mount --propagation private`, so the host
//! never sees any of it.

use crate::{shell_quote, OutputExt, Syslog, TestDir};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Shell commands (run inside a private mount namespace) that mount a fresh
/// tmpfs on /dev with null zero full random urandom tty, loop-control (the
/// keeper makes the loop nodes of persistent layers itself), a new devpts
/// instance at /dev/pts with /dev/ptmx → pts/ptmx, /dev/shm, the /proc/self/fd
/// links, and bind `log_socket` at /dev/log.
pub fn private_dev_script(log_socket: &Path) -> String {
    format!(
        r#"mount -t tmpfs -o mode=0755,nosuid,size=1m hutch-test-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
mknod -m 600 /dev/loop-control c 10 237
mknod -m 600 /dev/kmsg c 1 11
mkdir -m 755 /dev/pts
mkdir -m 1777 /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
: > /dev/log
mount --bind {} /dev/log
"#,
        shell_quote(&log_socket.to_string_lossy())
    )
}

/// Runs the real `/bin/su - USER -c CMD` as root in a private mount
/// namespace where `pam_stack` is the content of both /etc/pam.d/su and
/// /etc/pam.d/su-l (util-linux su hardcodes those service names), with a
/// private /dev whose /dev/log goes to a throwaway catcher. Bounded to 120 s.
pub fn su_in_private_ns(pam_stack: &str, user: &str, cmd: &str) -> Output {
    let dir = TestDir::new("htsu");
    let log = Syslog::bind(dir.join("log.sock"));
    su_in_private_ns_with_log(pam_stack, user, cmd, &log)
}

/// `su_in_private_ns`, with PAM's syslog lines going to `log`.
pub fn su_in_private_ns_with_log(pam_stack: &str, user: &str, cmd: &str, log: &Syslog) -> Output {
    let dir = TestDir::new("htsu");
    let stack = dir.join("su");
    std::fs::write(&stack, pam_stack).expect("write su stack");
    let script = format!(
        "set -e\n{}mount --bind {q} /etc/pam.d/su\nmount --bind {q} /etc/pam.d/su-l\nexec su - \"$1\" -c \"$2\"\n",
        private_dev_script(log.path()),
        q = shell_quote(&stack.to_string_lossy()),
    );
    let out = Command::new("timeout")
        .args([
            "-k",
            "5",
            "120",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
        ])
        .args(["sh", "-c", &script, "sh", user, cmd])
        .stdin(Stdio::null())
        .output()
        .expect("running unshare/su");
    if out.code() == Some(124) {
        eprintln!("su_in_private_ns: timed out\n{}", out.describe());
    }
    out
}

/// The script that makes a private mount namespace ready for a PAM client:
/// the private /dev (its /dev/log is `log`), then each `(service, stack)`
/// written to a file of `dir` and bound over `/etc/pam.d/<service>`.
fn pam_ns_prelude(dir: &Path, pam: &[(&str, &str)], log: &Path) -> String {
    let mut s = format!("set -e\n{}", private_dev_script(log));
    for (service, stack) in pam {
        let f = dir.join(format!("pam-{service}"));
        std::fs::write(&f, stack).expect("write a pam stack");
        s.push_str(&format!(
            "mount --bind {} /etc/pam.d/{service}\n",
            shell_quote(&f.to_string_lossy())
        ));
    }
    s
}

/// Runs `script` with `sh` as root in a private mount namespace (see
/// [`pam_ns_prelude`]), after `pam`'s stacks were bound over the host's:
/// `su -s`, `sudo -u`, `runuser -u` through a stack the test wrote, and
/// nothing of it seen by the host. `args` are `$1`, `$2`, ... Bounded to 120 s.
pub fn in_private_ns(pam: &[(&str, &str)], script: &str, args: &[&str], log: &Syslog) -> Output {
    let dir = TestDir::new("htpns");
    let full = format!("{}{script}\n", pam_ns_prelude(dir.path(), pam, log.path()));
    let out = Command::new("timeout")
        .args([
            "-k",
            "5",
            "120",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
        ])
        .args(["sh", "-c", &full, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running unshare");
    if out.code() == Some(124) {
        eprintln!("in_private_ns: timed out\n{}", out.describe());
    }
    out
}

/// A daemon (cron, atd) started like [`in_private_ns`]'s script, in its
/// own private mount namespace; ends (by pid) with [`Drop`].
pub struct NsDaemon {
    child: std::process::Child,
    _dir: TestDir,
}

impl NsDaemon {
    /// Starts `script` (which should `exec` the daemon in the foreground).
    pub fn spawn(pam: &[(&str, &str)], script: &str, log: &Syslog) -> NsDaemon {
        let dir = TestDir::new("htpnsd");
        let full = format!("{}{script}\n", pam_ns_prelude(dir.path(), pam, log.path()));
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &full,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning unshare");
        NsDaemon { child, _dir: dir }
    }

    /// Starts `script` (which should `exec` the daemon in the foreground)
    /// in the network namespace of `ns_pid` and a private copy of its mount
    /// namespace: a daemon beside an [`SshdEnv`](crate::SshdEnv)'s sshd,
    /// with its PAM files and /dev/log, whose mounts the sshd never sees.
    pub fn spawn_in(ns_pid: i32, script: &str) -> NsDaemon {
        let dir = TestDir::new("htpnsd");
        let child = Command::new("nsenter")
            .arg(format!("--net=/proc/{ns_pid}/ns/net"))
            .arg(format!("--mount=/proc/{ns_pid}/ns/mnt"))
            .args([
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning nsenter");
        NsDaemon { child, _dir: dir }
    }

    /// The daemon's pid (the `sh` it `exec`s into).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
