//! Self-test of the e2e harness with a stock PAM stack and a normal shell:
//! proves that a private sshd, throwaway users, the syslog catcher, the su
//! helper and the leftover checker work before hutch's own tests rely on them.

use hutch_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Key login over a private sshd: exit status passes through, scp both ways,
/// sftp, rsync, a pty session; sshd and PAM log; nothing is left afterwards.
#[test]
fn sshd_env_stock_stack() {
    if !require_root("sshd_env_stock_stack") {
        return;
    }
    let name = unique("ht");
    let (pid, service);
    {
        let user = TestUser::create(&name, Path::new("/bin/bash"));
        let env = SshdEnv::start(SshdOpts::default());
        pid = env.pid();
        service = env.service.clone();
        eprintln!("sshd started in {:?}", env.startup);

        let t = Instant::now();
        let out = env.ssh(&user, &["echo hi; exit 3"]);
        eprintln!("ssh login + command: {:?}", t.elapsed());
        assert_eq!(out.code(), Some(3), "{}", out.describe());
        assert_eq!(out.stdout_str(), "hi\n", "{}", out.describe());

        // Clients run in the private netns: the host's loopback has no sshd
        // on the port (or at least not ours).
        let out = env.ssh(&user, &["id -un; cat /proc/self/net/tcp | wc -l"]);
        assert!(
            out.stdout_str().starts_with(&format!("{name}\n")),
            "{}",
            out.describe()
        );

        // scp up and down (SFTP protocol, internal-sftp) and legacy scp.
        let local = TestDir::new("htscp");
        std::fs::write(local.join("up"), "payload\n").unwrap();
        let out = env.scp_to(&user, &local.join("up"), "up.txt");
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(user.home.join("up.txt")).unwrap(),
            "payload\n"
        );
        let out = env.scp_from(&user, "up.txt", &local.join("down"));
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(local.join("down")).unwrap(),
            "payload\n"
        );
        let out = env.scp(
            &user,
            &[
                "-O",
                &env.remote(&user, "up.txt"),
                &local.join("legacy").to_string_lossy(),
            ],
        );
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(local.join("legacy")).unwrap(),
            "payload\n"
        );

        // sftp batch and rsync.
        let out = env.sftp(&user, "mkdir d\nput /etc/hostname d/h\nls d\n");
        assert!(out.status.success(), "{}", out.describe());
        assert!(user.home.join("d/h").exists());
        let out = env.rsync(
            &user,
            &[
                "-a",
                &format!("{}/", local.path().display()),
                &env.remote(&user, "r/"),
            ],
        );
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(user.home.join("r/down")).unwrap(),
            "payload\n"
        );

        // Interactive: a pty on both sides, `tty` names a pts, exit 7.
        let t = Instant::now();
        let mut s = env.shell_pty(&user);
        eprintln!("pty login to prompt: {:?}", t.elapsed());
        s.send("tty; exit 7\n");
        let (code, text) = s.wait(Duration::from_secs(20));
        assert_eq!(code, Some(7), "{text}");
        assert!(text.contains("/dev/pts/"), "{text}");

        // Logs: sshd's own and PAM's through /dev/log.
        let log = env.sshd_log();
        assert!(
            log.contains(&format!("Accepted publickey for {name}")),
            "{log}"
        );
        let line = env.syslog().wait_for(
            |l| l.contains("session opened for user") && l.contains(&name),
            Duration::from_secs(5),
        );
        assert!(line.is_some(), "syslog: {:#?}", env.syslog().lines());
        assert!(line
            .unwrap()
            .contains(&format!("pam_unix({service}:session)")));
        assert!(env
            .syslog()
            .wait_for_substr(
                &format!("session closed for user {name}"),
                Duration::from_secs(5)
            )
            .is_some());

        // The sshd really is in a netns of its own.
        assert_ne!(
            hutch_tests::proc::ns_id(pid, "net"),
            hutch_tests::proc::ns_id(std::process::id() as i32, "net")
        );
    }
    // After drop: no user, no sshd, no processes, no mounts.
    assert!(
        nix::unistd::User::from_name(&name).unwrap().is_none(),
        "user {name} remains"
    );
    assert!(!Path::new(&format!("/home/{name}")).exists());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || hutch_tests::proc::cmdline(pid)
                .unwrap_or_default()
                .is_empty()
    );
    assert_no_leftovers(&name, Duration::from_secs(5));
    assert_no_leftovers(&service, Duration::from_secs(5));
}

/// External sftp-server through the user's shell, and key authorization via
/// the env's own keys dir for a user whose home is a symlink.
#[test]
fn sshd_env_external_sftp_and_symlink_home() {
    if !require_root("sshd_env_external_sftp_and_symlink_home") {
        return;
    }
    let name = unique("ht");
    {
        let user = TestUser::create(&name, Path::new("/bin/bash"));
        let env = SshdEnv::start(SshdOpts {
            sftp: Sftp::External,
            ..Default::default()
        });
        let out = env.sftp(&user, "put /etc/hostname x\nls -l x\n");
        assert!(out.status.success(), "{}", out.describe());
        assert!(user.home.join("x").exists());

        let target = TestDir::new("htlink");
        let lname = unique("ht");
        let linked =
            TestUser::create_with_home_symlink(&lname, Path::new("/bin/bash"), target.path());
        assert!(std::fs::symlink_metadata(&linked.home)
            .unwrap()
            .file_type()
            .is_symlink());
        env.authorize(&linked);
        let out = env.ssh(&linked, &["pwd -P"]);
        assert_eq!(
            out.stdout_str().trim(),
            target.path().to_string_lossy(),
            "{}",
            out.describe()
        );
        drop(env);
        drop(linked);
        assert!(target.path().exists(), "the symlink target must survive");
        assert!(std::fs::symlink_metadata(format!("/home/{lname}")).is_err());
        assert_no_leftovers(&lname, Duration::from_secs(5));
    }
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// The real su through a test-written PAM stack in a private mount ns.
#[test]
fn su_in_private_namespace() {
    if !require_root("su_in_private_namespace") {
        return;
    }
    let name = unique("ht");
    {
        let user = TestUser::create(&name, Path::new("/bin/bash"));
        let dir = TestDir::new("htlog");
        let log = Syslog::bind(dir.join("log.sock"));
        let stack = "auth sufficient pam_rootok.so\naccount required pam_unix.so\nsession required pam_unix.so\n";
        let out = su_in_private_ns_with_log(stack, &user.name, "id -un; tty || true", &log);
        assert!(out.status.success(), "{}", out.describe());
        assert!(
            out.stdout_str().starts_with(&format!("{name}\n")),
            "{}",
            out.describe()
        );
        assert!(
            log.wait_for_substr(
                &format!("session opened for user {name}"),
                Duration::from_secs(5)
            )
            .is_some(),
            "{:#?}",
            log.lines()
        );
        // A stack that denies: su fails, the host's su files are untouched.
        let host_su = std::fs::read("/etc/pam.d/su").unwrap();
        let out = su_in_private_ns("auth requisite pam_deny.so\n", &user.name, "true");
        assert!(!out.status.success(), "{}", out.describe());
        assert_eq!(std::fs::read("/etc/pam.d/su").unwrap(), host_su);
    }
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// unique() gives valid, distinct user names; Bins points into target/.
#[test]
fn names_and_bins() {
    let a = unique("ht");
    let b = unique("ht");
    assert_ne!(a, b);
    assert!(a.len() <= 16 && a.as_bytes()[2].is_ascii_digit(), "{a}");
    let bins = Bins::locate();
    assert!(bins.shell.ends_with("hutch-shell"));
    assert!(bins.pam_module.ends_with("libpam_hutch.so"));
}

/// The cached Debian rootfs has what e2e templates need.
#[test]
fn debian_rootfs_is_cached() {
    if !require_root("debian_rootfs_is_cached") {
        return;
    }
    let t = Instant::now();
    let r = debian_rootfs();
    eprintln!("debian_rootfs: {:?} ({})", t.elapsed(), r.display());
    for p in [
        "bin/bash",
        "usr/lib/openssh/sftp-server",
        "usr/bin/rsync",
        "bin/ps",
        "usr/bin/scp",
    ] {
        assert!(r.join(p).exists(), "{} lacks {p}", r.display());
    }
}

/// A test that panics with a live session (sshd children, user processes, a
/// backgrounded daemon of the user) still leaves nothing behind.
#[test]
fn cleanup_on_panic() {
    if !require_root("cleanup_on_panic") {
        return;
    }
    let name = unique("ht");
    let n = name.clone();
    let service = std::sync::Mutex::new(String::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let user = TestUser::create(&n, Path::new("/bin/bash"));
        let env = SshdEnv::start(SshdOpts::default());
        *service.lock().unwrap() = env.service.clone();
        let out = env.ssh(
            &user,
            &["setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo started"],
        );
        assert!(out.stdout_str().contains("started"), "{}", out.describe());
        let _s = env.shell_pty(&user);
        assert!(
            !leftovers(&n).is_empty(),
            "a live session shows up as leftovers"
        );
        panic!("deliberate");
    }));
    assert!(r.is_err());
    assert!(nix::unistd::User::from_name(&name).unwrap().is_none());
    assert_no_leftovers(&name, Duration::from_secs(5));
    assert_no_leftovers(&service.lock().unwrap(), Duration::from_secs(5));
}
