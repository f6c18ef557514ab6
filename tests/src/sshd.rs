//! `SshdEnv`: the real OpenSSH sshd on 127.0.0.1 inside a network and mount
//! namespace this test made, with its own host key, config, PAM service and
//! /dev (whose /dev/log is the env's syslog catcher).

use crate::ns::private_dev_script;
use crate::{proc, shell_quote, wait_until, PtySession, Syslog, TestDir, TestUser};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A PAM stack that lets any key-authenticated user in and logs the session
/// through pam_unix: what the harness self-test uses.
pub const STOCK_PAM_STACK: &str = "auth required pam_permit.so\n\
account required pam_unix.so\n\
session required pam_unix.so\n";

/// Who logs in: the name given to `ssh NAME@` and the key. A [`TestUser`],
/// or an account of a [`Directory`](crate::Directory) under any spelling.
pub trait Login {
    /// The name the client sends.
    fn login(&self) -> &str;
    /// The private key (ed25519, no passphrase).
    fn key(&self) -> &Path;
    /// The public key line.
    fn pubkey(&self) -> &str;
}

impl Login for TestUser {
    fn login(&self) -> &str {
        &self.name
    }
    fn key(&self) -> &Path {
        &self.key
    }
    fn pubkey(&self) -> &str {
        &self.pubkey
    }
}

/// Which sftp server the sshd offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sftp {
    /// `Subsystem sftp internal-sftp` (runs in sshd's session process).
    Internal,
    /// `Subsystem sftp /usr/lib/openssh/sftp-server` (exec'd through the
    /// user's shell with `-c`).
    External,
}

/// How to start an [`SshdEnv`].
#[derive(Debug, Clone)]
pub struct SshdOpts {
    /// Content of the sshd's PAM service file (module paths may be absolute).
    pub pam_stack: String,
    /// The sftp subsystem.
    pub sftp: Sftp,
    /// Extra `sshd_config` lines, appended.
    pub extra_config: Vec<String>,
    /// Port on 127.0.0.1 inside the private netns (free by construction).
    pub port: u16,
    /// How long to wait for "Server listening".
    pub start_timeout: Duration,
    /// Start from the mount namespace of this pid instead of the test's
    /// (e.g. a [`Directory`](crate::Directory)'s, where NSS sees its users):
    /// sshd's own private mount namespace is made as a copy of that one.
    pub mount_ns: Option<i32>,
}

impl Default for SshdOpts {
    fn default() -> Self {
        SshdOpts {
            pam_stack: STOCK_PAM_STACK.to_string(),
            sftp: Sftp::Internal,
            extra_config: Vec::new(),
            port: 2222,
            start_timeout: Duration::from_secs(15),
            mount_ns: None,
        }
    }
}

/// A private sshd. Clients (`ssh`, `scp`, `sftp`, `rsync`) run inside its
/// network namespace through `nsenter --net`. Drop kills the sshd and every
/// process it started or that sits in its network namespace (by pid), then
/// removes its directory; the namespaces die with their last process.
pub struct SshdEnv {
    dir: TestDir,
    child: Option<Child>,
    pid: i32,
    netns: String,
    /// The PAM service name (= basename of the sshd symlink).
    pub service: String,
    /// The port on 127.0.0.1 inside the netns.
    pub port: u16,
    syslog: Syslog,
    /// How long `start` took until the sshd listened.
    pub startup: Duration,
    /// Bound for every client command.
    pub client_timeout: Duration,
}

impl SshdEnv {
    /// Starts an sshd as described in the crate docs and waits until it
    /// listens. Panics with the sshd's log if it does not.
    pub fn start(opts: SshdOpts) -> SshdEnv {
        let t0 = Instant::now();
        let dir = TestDir::new("htsshd");
        let service = format!(
            "hutch-sshd-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let syslog = Syslog::bind(dir.join("log.sock"));

        // Host key, per-env authorized keys, PAM dir (a copy of the host's
        // files so @include works, plus our service).
        crate::run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join("host_ed25519")),
        );
        let keys = dir.join("keys");
        std::fs::create_dir(&keys).expect("mkdir keys");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pamd = dir.join("pam.d");
        std::fs::create_dir(&pamd).expect("mkdir pam.d");
        for e in std::fs::read_dir("/etc/pam.d")
            .expect("read /etc/pam.d")
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::copy(e.path(), pamd.join(e.file_name())).expect("copy pam file");
            }
        }
        std::fs::write(pamd.join(&service), &opts.pam_stack).expect("write pam service");
        std::fs::set_permissions(&pamd, std::fs::Permissions::from_mode(0o755)).unwrap();

        let sftp = match opts.sftp {
            Sftp::Internal => "internal-sftp",
            Sftp::External => "/usr/lib/openssh/sftp-server",
        };
        let d = dir.path().display();
        let mut config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/sshd.pid\n\
             UsePAM yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin no\n\
             AuthorizedKeysFile .ssh/authorized_keys {d}/keys/%u\n\
             StrictModes no\n\
             UseDNS no\n\
             PrintMotd no\n\
             X11Forwarding no\n\
             MaxStartups 64\n\
             MaxSessions 64\n\
             Subsystem sftp {sftp}\n\
             LogLevel VERBOSE\n",
            port = opts.port,
        );
        for l in &opts.extra_config {
            config.push_str(l);
            config.push('\n');
        }
        std::fs::write(dir.join("sshd_config"), config).expect("write sshd_config");

        // OpenSSH names its PAM service after argv[0]'s basename.
        let link = dir.join(&service);
        std::os::unix::fs::symlink("/usr/sbin/sshd", &link).expect("symlink sshd");
        // The privsep chroot dir is compiled in; the host's sshd package
        // normally creates it at boot.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir("/run/sshd");
            let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
        }

        let script = format!(
            "set -e\nip link set lo up\n{dev}mount --bind {pamd} /etc/pam.d\nexec {link} -D -e -f {cfg}\n",
            dev = private_dev_script(syslog.path()),
            pamd = shell_quote(&pamd.to_string_lossy()),
            link = shell_quote(&link.to_string_lossy()),
            cfg = shell_quote(&dir.join("sshd_config").to_string_lossy()),
        );
        let log = std::fs::File::create(dir.join("sshd.log")).expect("create sshd.log");
        let mut cmd = match opts.mount_ns {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
                    .arg("--")
                    .arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        let child = cmd
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning unshare");
        let pid = child.id() as i32;
        let mut env = SshdEnv {
            dir,
            child: Some(child),
            pid,
            netns: String::new(),
            service,
            port: opts.port,
            syslog,
            startup: Duration::ZERO,
            client_timeout: Duration::from_secs(60),
        };
        let listening = format!("Server listening on 127.0.0.1 port {}", opts.port);
        let ok = wait_until(opts.start_timeout, || {
            if env.sshd_log().contains(&listening) {
                return Some(true);
            }
            match env.child.as_mut().unwrap().try_wait() {
                Ok(Some(_)) => Some(false),
                _ => None,
            }
        });
        assert!(
            ok == Some(true),
            "sshd did not start (waited {:?})\n--- sshd log ---\n{}",
            opts.start_timeout,
            env.sshd_log()
        );
        env.netns = proc::ns_id(pid, "net").expect("sshd's netns");
        assert_ne!(
            Some(&env.netns),
            proc::ns_id(std::process::id() as i32, "net").as_ref()
        );
        env.startup = t0.elapsed();
        env
    }

    /// The sshd's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The env's private directory (host key, config, pam.d, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sshd's stderr (`-e`, LogLevel VERBOSE) so far.
    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// What was logged to /dev/log inside the sshd's mount namespace (PAM
    /// modules, sshd's session processes).
    pub fn syslog(&self) -> &Syslog {
        &self.syslog
    }

    /// Authorizes `user`'s key through the env's own AuthorizedKeysFile
    /// (`<dir>/keys/%u`), for users whose home cannot hold it.
    pub fn authorize(&self, user: &impl Login) {
        std::fs::write(
            self.dir.join("keys").join(user.login()),
            format!("{}\n", user.pubkey()),
        )
        .expect("write authorized key");
    }

    /// `user@127.0.0.1:path` for scp/rsync arguments.
    pub fn remote(&self, user: &impl Login, path: &str) -> String {
        format!("{}@127.0.0.1:{path}", user.login())
    }

    /// ssh client options shared by ssh, scp, sftp and rsync (no port).
    pub fn ssh_opts(user: &impl Login) -> Vec<String> {
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
        v.push(user.key().to_string_lossy().into_owned());
        for o in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
            "ConnectTimeout=20",
        ] {
            v.push("-o".into());
            v.push(o.into());
        }
        v
    }

    /// A command running `prog` inside the sshd's netns, bounded by
    /// `client_timeout` (exit 124 when it ran out).
    pub fn client(&self, prog: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "5"])
            .arg(self.client_timeout.as_secs().to_string())
            .arg("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid))
            .arg("--")
            .arg(prog);
        c.stdin(Stdio::null());
        c
    }

    /// The argument list of `ssh ... user@127.0.0.1 ARGS` (for callers that
    /// drive it themselves).
    pub fn ssh_argv(&self, user: &impl Login, extra: &[&str], args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "nsenter".to_string(),
            format!("--net=/proc/{}/ns/net", self.pid),
            "--".into(),
            "ssh".into(),
        ];
        v.extend(Self::ssh_opts(user));
        v.extend(["-p".to_string(), self.port.to_string()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(format!("{}@127.0.0.1", user.login()));
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `ssh user@127.0.0.1 ARGS` with stdin from /dev/null.
    pub fn ssh(&self, user: &impl Login, args: &[&str]) -> Output {
        let mut c = self.client("ssh");
        c.args(Self::ssh_opts(user))
            .args(["-p", &self.port.to_string()])
            .arg(format!("{}@127.0.0.1", user.login()))
            .args(args);
        crate::output(&mut c)
    }

    /// `scp -P PORT ARGS` (use [`remote`](Self::remote) for the remote side;
    /// OpenSSH 9 scp speaks SFTP unless ARGS has `-O`).
    pub fn scp(&self, user: &impl Login, args: &[&str]) -> Output {
        let mut c = self.client("scp");
        c.args(Self::ssh_opts(user))
            .args(["-P", &self.port.to_string()])
            .args(args);
        crate::output(&mut c)
    }

    /// Copies a local file to `remote_path` in the user's session.
    pub fn scp_to(&self, user: &impl Login, local: &Path, remote_path: &str) -> Output {
        self.scp(
            user,
            &[&local.to_string_lossy(), &self.remote(user, remote_path)],
        )
    }

    /// Copies `remote_path` from the user's session to a local file.
    pub fn scp_from(&self, user: &impl Login, remote_path: &str, local: &Path) -> Output {
        self.scp(
            user,
            &[&self.remote(user, remote_path), &local.to_string_lossy()],
        )
    }

    /// `sftp -b BATCH user@127.0.0.1` (batch given as text, one command a
    /// line; a failing command fails the run unless prefixed with `-`).
    pub fn sftp(&self, user: &impl Login, batch: &str) -> Output {
        let f = self.dir.join(format!("{}.sftp", crate::unique("batch")));
        std::fs::write(&f, batch).expect("write sftp batch");
        let mut c = self.client("sftp");
        c.args(Self::ssh_opts(user))
            .args(["-P", &self.port.to_string(), "-b"])
            .arg(&f)
            .arg(format!("{}@127.0.0.1", user.login()));
        let out = crate::output(&mut c);
        let _ = std::fs::remove_file(&f);
        out
    }

    /// `rsync -e "ssh OPTS -p PORT" ARGS` (use [`remote`](Self::remote)).
    pub fn rsync(&self, user: &impl Login, args: &[&str]) -> Output {
        let mut e = vec!["ssh".to_string()];
        e.extend(Self::ssh_opts(user).iter().map(|s| shell_quote(s)));
        e.extend(["-p".to_string(), self.port.to_string()]);
        let mut c = self.client("rsync");
        c.arg("-e").arg(e.join(" ")).args(args);
        crate::output(&mut c)
    }

    /// `ssh user@127.0.0.1 CMD` left running (output discarded) until the
    /// returned handle drops: a session that holds the container open.
    pub fn background(&self, user: &impl Login, cmd: &str) -> Background {
        let argv = self.ssh_argv(user, &[], &[cmd]);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh");
        Background(child)
    }

    /// An interactive login: `ssh -tt user@127.0.0.1 [ARGS]` on a local pty
    /// that is its controlling terminal. Drive it with `expect`/`send`, then
    /// `wait` for the exit code.
    pub fn ssh_pty(&self, user: &impl Login, args: &[&str]) -> PtySession {
        let mut argv = vec![
            "timeout".to_string(),
            "--foreground".into(),
            "-k".into(),
            "5".into(),
            self.client_timeout.as_secs().to_string(),
        ];
        argv.extend(self.ssh_argv(user, &["-tt"], args));
        PtySession::spawn(&argv)
    }

    /// An interactive login of `user` ([`SshdEnv::ssh_pty`] with no
    /// command), once its shell's prompt (`$ `) is there; panics with what
    /// the terminal showed if it does not come within 30 s.
    pub fn shell_pty(&self, user: &impl Login) -> PtySession {
        let s = self.ssh_pty(user, &[]);
        assert!(
            s.expect("$ ", Duration::from_secs(30)).is_some(),
            "no prompt: {}",
            s.output()
        );
        s
    }

    /// A pty login of `user` that holds its container up until dropped
    /// (`echo HOLDING; sleep 900`), once it is in; panics with what the
    /// terminal showed if it is not within 60 s.
    pub fn hold_pty(&self, user: &impl Login) -> PtySession {
        let s = self.ssh_pty(user, &["echo HOLDING; sleep 900"]);
        assert!(
            s.expect("HOLDING", Duration::from_secs(60)).is_some(),
            "not holding: {}",
            s.output()
        );
        s
    }

    /// Pids of every process started by the sshd or living in its netns.
    pub fn processes(&self) -> Vec<i32> {
        let mut v = proc::descendants(self.pid);
        if !self.netns.is_empty() {
            v.extend(
                proc::pids()
                    .into_iter()
                    .filter(|p| proc::ns_id(*p, "net").as_deref() == Some(&self.netns)),
            );
        }
        v.sort_unstable();
        v.dedup();
        v.retain(|p| proc::ns_id(*p, "net").is_some());
        v
    }
}

/// A background ssh client from [`SshdEnv::background`], killed (by pid) on Drop.
#[derive(Debug)]
pub struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for SshdEnv {
    fn drop(&mut self) {
        let left = proc::kill_until_gone(Duration::from_secs(5), || {
            // The sshd itself stays our zombie until reaped below; skip it
            // once it is dead.
            self.processes()
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| {
                            !s.rsplit(')')
                                .next()
                                .unwrap_or("")
                                .trim_start()
                                .starts_with('Z')
                        })
                        .unwrap_or(false)
                })
                .collect()
        });
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !left.is_empty() {
            eprintln!("warning: sshd env processes survive SIGKILL: {left:?}");
        }
        if std::thread::panicking() {
            eprintln!("--- sshd log ({}) ---\n{}", self.service, self.sshd_log());
            eprintln!("--- syslog ---\n{}", self.syslog.lines().join("\n"));
        }
    }
}

impl std::fmt::Debug for SshdEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshdEnv")
            .field("dir", &self.dir.path())
            .field("pid", &self.pid)
            .field("service", &self.service)
            .field("port", &self.port)
            .finish()
    }
}
