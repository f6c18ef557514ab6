//! End to end: a confined user's SSH login lands in their own container,
//! through the real sshd, the real PAM stack, pam_hutch, hutch-keeper and
//! hutch-shell, on the real kernel.

use std::path::Path;
use std::time::{Duration, Instant};

use hutch_tests::hutch::trimmed;
use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// Login with a command and with a pty: hostname, processes, tty, exit
/// status, read-only template, writes outside home gone after teardown,
/// home persists; the last logout leaves no keeper, cgroup or state.
#[test]
fn confined_login_end_to_end() {
    if !require_root("confined_login_end_to_end") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);

        let t = Instant::now();
        let out = env.ssh(&user, &["hostname; id -un; echo $0; exit 3"]);
        eprintln!("first login (creates the container): {:?}", t.elapsed());
        assert_eq!(out.code(), Some(3), "{}", out.describe());
        let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(lines[0], format!("box-{name}"), "{}", out.describe());
        assert_eq!(lines[1], name);
        assert_eq!(lines[2], "bash");

        // Only the user's processes; pid 1 is the container's init.
        let out = env.ssh(&user, &["ps -eo pid,uid,comm --no-headers"]);
        assert!(out.status.success(), "{}", out.describe());
        let uid = user.uid.to_string();
        for l in out.stdout_str().lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                f[1],
                uid,
                "foreign process in the container: {l}\n{}",
                out.describe()
            );
        }
        assert!(
            out.stdout_str()
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["1", uid.as_str(), "hutch-init"]),
            "{}",
            out.describe()
        );
        // ... and its command line is only that (not the keeper's argv, with the config path).
        let out = env.ssh(&user, &["tr '\\0' ' ' < /proc/1/cmdline"]);
        assert_eq!(out.stdout_str().trim(), "hutch-init", "{}", out.describe());

        // A host file outside the binds is invisible; the template cannot be written.
        let marker = hutch.dir.join("host-only-file");
        std::fs::write(&marker, "x").unwrap();
        let out = env.ssh(
            &user,
            &[&format!(
                "test -e {} && echo visible || echo invisible",
                marker.display()
            )],
        );
        assert_eq!(trimmed(&out), "invisible", "{}", out.describe());

        // Interactive: prompt, tty exists inside, exit status. While this
        // session holds the container, other sessions share its writable layer.
        let mut s = env.shell_pty(&user);
        let out = env.ssh(&user, &["echo x > /etc/passwd 2>&1; echo x > /usr/bin/owned 2>&1; touch /var/tmp/scratch && echo wrote"]);
        assert_eq!(
            out.stderr_str().matches("Permission denied").count(),
            2,
            "{}",
            out.describe()
        );
        assert!(out.stdout_str().contains("wrote"), "{}", out.describe());
        let out = env.ssh(
            &user,
            &["echo persisted > ~/kept; test -e /var/tmp/scratch && echo scratch-still-there"],
        );
        assert_eq!(
            trimmed(&out),
            "scratch-still-there",
            "the writable layer is lost between sessions of one container: {}",
            out.describe()
        );
        s.send("t=$(tty); echo TTY=$t; test -c $t && echo TTY-EXISTS; exit 7\n");
        let (code, text) = s.wait(Duration::from_secs(30));
        assert_eq!(code, Some(7), "{text}");
        assert!(text.contains("TTY=/dev/pts/"), "{text}");
        assert!(text.contains("TTY-EXISTS"), "{text}");

        // After the last logout the container goes away.
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "after the last logout: {left:?}");

        // A new login gets a fresh container: the home persists, the rest does not.
        let out = env.ssh(&user, &["cat ~/kept; test -e /var/tmp/scratch && echo scratch-survived || echo scratch-gone"]);
        assert_eq!(
            out.stdout_str(),
            "persisted\nscratch-gone\n",
            "{}",
            out.describe()
        );
        assert_eq!(
            std::fs::read_to_string(user.home.join("kept")).unwrap(),
            "persisted\n"
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "after the second logout: {left:?}");

        // The keeper logged its work through the host's syslog socket.
        assert!(
            env.syslog().contains(&format!("{name}: container up")),
            "{:#?}",
            env.syslog().lines()
        );
        assert!(
            env.syslog()
                .contains(&format!("{name}: container torn down")),
            "{:#?}",
            env.syslog().lines()
        );
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}

/// Two concurrent sessions share one container (same pid and mount
/// namespace); the container stays while one remains; SIGKILL of the sshd
/// session process ends its session all the same.
#[test]
fn sessions_share_and_sigkill_ends_session() {
    if !require_root("sessions_share_and_sigkill_ends_session") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut a = env.shell_pty(&user);
        a.send("echo A-NS=$(readlink /proc/self/ns/pid)\n");
        let text = a
            .expect("A-NS=pid:", Duration::from_secs(10))
            .expect("pid ns of session A");
        let ns_a = text
            .split("A-NS=")
            .last()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_string();
        let out = env.ssh(
            &user,
            &["readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt"],
        );
        let ns_b = out.stdout_str().lines().next().unwrap_or("").to_string();
        assert_eq!(
            ns_a,
            ns_b,
            "two sessions, two containers: {}",
            out.describe()
        );

        // Session B has ended; A holds the container.
        let state = wait_until(Duration::from_secs(10), || {
            hutch
                .state(&name)
                .filter(|st| st["sessions"].as_array().map(|s| s.len()) == Some(1))
        })
        .unwrap_or_else(|| panic!("state.json with one session: {:?}", hutch.state(&name)));
        let out = hutch.ctl(&["list"]);
        assert!(out.stdout_str().contains(&name), "{}", out.describe());

        // SIGKILL session A's sshd processes: the root monitor (which holds
        // the keeper connection) and its post-auth child (which inherited it).
        let monitor = state["sessions"][0]["pid"].as_i64().unwrap() as i32;
        let mut victims = hutch_tests::proc::descendants(monitor);
        victims.retain(|&p| {
            hutch_tests::proc::cmdline(p)
                .unwrap_or_default()
                .contains("sshd")
        });
        victims.push(monitor);
        for p in victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(
            left.is_empty(),
            "after SIGKILL of the sshd session process: {left:?}"
        );
        drop(a);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// scp both ways, sftp with internal-sftp and with the external
/// sftp-server, rsync: each sees the container's tree.
#[test]
fn file_transfer_sees_the_container() {
    if !require_root("file_transfer_sees_the_container") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    let local = TestDir::new("htxfer");
    std::fs::write(local.join("up"), "payload\n").unwrap();
    for sftp in [Sftp::Internal, Sftp::External] {
        let env = hutch.sshd(sftp);
        let out = env.scp_to(&user, &local.join("up"), "up.txt");
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(user.home.join("up.txt")).unwrap(),
            "payload\n"
        );
        let out = env.scp_from(&user, "/etc/hostname", &local.join("hn"));
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(local.join("hn")).unwrap(),
            format!("box-{name}\n"),
            "scp read the host's /etc/hostname"
        );
        let out = env.sftp(
            &user,
            &format!("get /etc/hostname {}\n", local.join("sftp-hn").display()),
        );
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(local.join("sftp-hn")).unwrap(),
            format!("box-{name}\n"),
            "sftp read the host's /etc/hostname"
        );
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
            std::fs::read_to_string(user.home.join("r/up")).unwrap(),
            "payload\n"
        );
        let out = env.rsync(
            &user,
            &[
                &env.remote(&user, "/etc/hostname"),
                &local.join("rs-hn").to_string_lossy(),
            ],
        );
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            std::fs::read_to_string(local.join("rs-hn")).unwrap(),
            format!("box-{name}\n")
        );
        // A file made on the host outside the binds is not there for sftp.
        let out = env.sftp(&user, &format!("get {} nope\n", hutch.config.display()));
        assert!(
            !out.status.success(),
            "sftp reached a host file: {}",
            out.describe()
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "{left:?}");
        drop(env);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `su - USER` from root lands in the container through the su/su-l service.
#[test]
fn su_lands_in_the_container() {
    if !require_root("su_lands_in_the_container") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let dir = TestDir::new("htsulog");
        let log = Syslog::bind(dir.join("log.sock"));
        let stack = format!(
            "auth sufficient pam_rootok.so\naccount required pam_unix.so\nsession required pam_unix.so\nsession required {} config={} keeper={}\n",
            hutch.module.display(),
            hutch.config.display(),
            hutch.bins.keeper.display()
        );
        let out = su_in_private_ns_with_log(&stack, &name, "hostname; id -un; exit 5", &log);
        assert_eq!(
            out.code(),
            Some(5),
            "{}\n{:#?}",
            out.describe(),
            log.lines()
        );
        assert_eq!(
            out.stdout_str(),
            format!("box-{name}\n{name}\n"),
            "{}",
            out.describe()
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// An exempt user lands on the host; a broken policy, a missing template and
/// a home that is a symlink to /etc each refuse the login with one clear
/// syslog line and leave nothing behind.
#[test]
fn exempt_and_refusals() {
    if !require_root("exempt_and_refusals") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let exempt = TestUser::create(&unique("ht"), Path::new("/bin/bash"));
    let user = hutch.user();
    let linked_target = TestDir::new("htetc");
    let linked = TestUser::create_with_home_symlink(&unique("ht"), &hutch.shell, Path::new("/etc"));
    let _ = linked_target;
    hutch.write_policy(&format!(
        "{POLICY}\n[users.{}]\nconfine = false\n",
        exempt.name
    ));
    {
        let env = hutch.sshd(Sftp::Internal);
        env.authorize(&linked);

        // Exempt: the host's hostname, no container.
        let out = env.ssh(&exempt, &["hostname"]);
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            trimmed(&out),
            nix::unistd::gethostname().unwrap().to_string_lossy()
        );
        assert!(hutch.state(&exempt.name).is_none());

        // Home that is a symlink to /etc: refused, named in syslog.
        let out = env.ssh(&linked, &["echo IN"]);
        assert!(!out.stdout_str().contains("IN"), "{}", out.describe());
        let line = env.syslog().wait_for(
            |l| l.contains("pam_hutch(") && l.contains(&linked.name) && l.contains("symlink"),
            Duration::from_secs(10),
        );
        assert!(
            line.is_some(),
            "no syslog line naming the symlinked home: {:#?}",
            env.syslog().lines()
        );
        assert!(hutch
            .wait_gone(&linked.name, Duration::from_secs(10))
            .is_empty());

        // Missing template.
        hutch.write_policy(&format!(
            "{POLICY}\n[users.{}]\ntemplate = \"no-such-template\"\n",
            user.name
        ));
        let out = env.ssh(&user, &["echo IN"]);
        assert!(!out.stdout_str().contains("IN"), "{}", out.describe());
        let line = env.syslog().wait_for(
            |l| {
                l.contains("pam_hutch(") && l.contains(&user.name) && l.contains("no-such-template")
            },
            Duration::from_secs(10),
        );
        assert!(
            line.is_some(),
            "no syslog line naming the missing template: {:#?}",
            env.syslog().lines()
        );
        assert!(hutch
            .wait_gone(&user.name, Duration::from_secs(10))
            .is_empty());

        // Broken policy: refused, with file and line.
        hutch.write_policy("[defaults]\nmemory = \"lots\"\n");
        let out = env.ssh(&user, &["echo IN"]);
        assert!(!out.stdout_str().contains("IN"), "{}", out.describe());
        let cfg = hutch.config.to_string_lossy().to_string();
        let line = env.syslog().wait_for(
            |l| l.contains("pam_hutch(") && l.contains(&user.name) && l.contains(&cfg),
            Duration::from_secs(10),
        );
        assert!(
            line.is_some(),
            "no syslog line naming the policy file: {:#?}",
            env.syslog().lines()
        );
        assert!(hutch
            .wait_gone(&user.name, Duration::from_secs(10))
            .is_empty());
    }
    assert!(hutch
        .cgroup_dirs()
        .iter()
        .all(|d| !d.join("users").join(&user.name).exists()));
    let names = [exempt.name.clone(), user.name.clone(), linked.name.clone()];
    drop((exempt, user, linked));
    for n in names {
        assert_no_leftovers(&n, Duration::from_secs(5));
    }
}

/// A console login: the real `login -f USER` (util-linux; the "login" PAM
/// service, which the built-in services confine) on a pty of its own lands
/// in the container, with its terminal, named in the container's /dev. It runs in a private mount namespace: the test's PAM
/// file over /etc/pam.d/login, a private /dev (whose devpts gives `script`
/// its pty) and throwaway utmp, wtmp, btmp and lastlog, so the host's login
/// records stay untouched.
#[test]
fn console_login_lands_in_the_container() {
    if !require_root("console_login_lands_in_the_container") {
        return;
    }
    // Lingering, so that the container outlives the session: its terminal's
    // bind must be gone with the session.
    let hutch = HutchEnv::new(&format!("{POLICY}on_logout = \"linger:60s\"\n"));
    let user = hutch.user();
    let name = user.name.clone();
    {
        let dir = TestDir::new("htlogin");
        let log = Syslog::bind(dir.join("log.sock"));
        std::fs::write(dir.join("login"), hutch.pam_stack("")).unwrap();
        let mut binds = String::new();
        for f in [
            "/var/run/utmp",
            "/var/log/wtmp",
            "/var/log/btmp",
            "/var/log/lastlog",
        ] {
            let fake = dir.join(f.rsplit('/').next().unwrap());
            std::fs::write(&fake, "").unwrap();
            binds.push_str(&format!(
                "[ -e {f} ] || : > {f}\nmount --bind {} {f}\n",
                fake.display()
            ));
        }
        let script = format!(
            "set -e\n{}mount --bind {} /etc/pam.d/login\n{binds}exec script -qfec \"login -f $1\" /dev/null\n",
            hutch_tests::ns::private_dev_script(log.path()),
            dir.join("login").display(),
        );
        // (The pty echoes this line: what is asserted must not be in it verbatim.)
        // The terminal is login's own (made before the session opened, on
        // the host's devpts): pam_hutch binds it into the container's /dev,
        // so that it has a name there too.
        let input = "hostname; echo TTY-$(test -t 0 && test -c \"$(tty)\" && echo OK); tty; echo PID1-$(cat /proc/1/comm); exit\n";
        let mut child = std::process::Command::new("timeout")
            .args([
                "-k",
                "5",
                "60",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
                &name,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("unshare/login");
        {
            use std::io::Write;
            // script waits for the session to end after its stdin's EOF.
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                text.contains(&format!("box-{name}")),
                "hostname: {}\n{:#?}",
                out.describe(),
                log.lines()
            );
            assert!(
                text.contains("TTY-OK"),
                "the session's terminal has no name inside: {}",
                out.describe()
            );
            assert!(text.contains("/dev/pts-"), "{}", out.describe());
            assert!(text.contains("PID1-hutch-init"), "{}", out.describe());
        }
        let joined = log.wait_for(
            |l| l.contains("pam_hutch(login:session): joined"),
            Duration::from_secs(5),
        );
        assert!(joined.is_some(), "{:#?}", log.lines());
        let init = hutch
            .state(&name)
            .and_then(|st| st["init_pid"].as_i64())
            .expect("the container lingers");
        let mounts = std::fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap();
        assert!(
            !mounts.contains("/dev/pts-"),
            "the terminal's bind outlived its session:\n{mounts}"
        );
        let out = hutch.ctl(&["stop", &name]);
        assert!(out.status.success(), "{}", out.describe());
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// A multi-threaded PAM caller (as gdm is) is refused before anything
/// changes: PAM_SESSION_ERR, one syslog line naming the threads, and no
/// keeper, cgroup or state made. The same caller without its second thread
/// gets in (so the threads are the cause), and outlives the teardown that
/// its pam_close_session starts (the keeper moves it back to its own cgroup).
#[test]
fn multithreaded_caller_is_refused() {
    if !require_root("multithreaded_caller_is_refused") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    let dir = TestDir::new("htmt");
    std::fs::write(dir.join("svc"), hutch.pam_stack("")).unwrap();
    let log = Syslog::bind(dir.join("log.sock"));
    let script = r#"
import ctypes, sys, threading, time
pam = ctypes.CDLL("libpam.so.0")
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata", ctypes.c_void_p)]
cb = CONV(lambda n, m, r, d: 19)
conv = PamConv(cb, None)
if sys.argv[3] == "threaded":
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
h = ctypes.c_void_p()
rc = pam.pam_start_confdir(b"svc", sys.argv[1].encode(), ctypes.byref(conv), sys.argv[2].encode(), ctypes.byref(h))
assert rc == 0, rc
rc = pam.pam_open_session(h, 0)
print(rc, open("/etc/hostname").read().strip() if rc == 0 else "-", flush=True)
if rc == 0:
    # The container goes as soon as its last session closes; the PAM host
    # that closed it must outlive that (su reports the shell's status then).
    print("closed", pam.pam_close_session(h, 0), flush=True)
    time.sleep(3)
    print("alive", flush=True)
pam.pam_end(h, rc)
"#;
    std::fs::write(dir.join("client.py"), script).unwrap();
    let run = |mode: &str| {
        let sh = format!(
            "set -e\n{}exec python3 {} {} {} {mode}\n",
            hutch_tests::ns::private_dev_script(log.path()),
            dir.join("client.py").display(),
            name,
            dir.path().display()
        );
        output(std::process::Command::new("timeout").args([
            "-k",
            "5",
            "60",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &sh,
        ]))
    };
    let out = run("threaded");
    assert_eq!(
        out.stdout_str().trim(),
        "14 -",
        "PAM_SESSION_ERR expected: {}",
        out.describe()
    );
    let line = log.wait_for(
        |l| l.contains("pam_hutch(svc:session)") && l.contains(&name) && l.contains("threads"),
        Duration::from_secs(5),
    );
    assert!(
        line.is_some(),
        "no syslog line naming the threads: {:#?}",
        log.lines()
    );
    assert!(
        hutch.state(&name).is_none() && hutch.user_cgroups(&name).is_empty(),
        "a refused caller left a container"
    );
    assert!(
        !hutch.user_dir(&name).exists(),
        "a refused caller left {}",
        hutch.user_dir(&name).display()
    );

    let out = run("single");
    assert_eq!(
        out.stdout_str().trim(),
        format!("0 box-{name}\nclosed 0\nalive"),
        "the PAM host must survive the teardown its close starts: {}\n{:#?}",
        out.describe(),
        log.lines()
    );
    let left = hutch.wait_gone(&name, Duration::from_secs(15));
    assert!(left.is_empty(), "{left:?}");
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `on_logout`: with `linger:DURATION` a login within the linger time gets
/// the same container and the container goes after it; with
/// `keep-while-running` a detached job keeps the container until it ends.
#[test]
fn on_logout_linger_and_keep_while_running() {
    if !require_root("on_logout_linger_and_keep_while_running") {
        return;
    }
    let hutch = HutchEnv::new(&format!("{POLICY}on_logout = \"linger:3s\"\n"));
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(&user, &["echo first"]);
        assert!(out.status.success(), "{}", out.describe());
        let init = |h: &HutchEnv| h.state(&name).and_then(|s| s["init_pid"].as_i64());
        let first = wait_until(Duration::from_secs(5), || init(&hutch))
            .expect("the container lingers after logout");
        let out = env.ssh(&user, &["echo second"]);
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            init(&hutch),
            Some(first),
            "a login within the linger time got a new container"
        );
        let t = Instant::now();
        let left = hutch.wait_gone(&name, Duration::from_secs(20));
        assert!(left.is_empty(), "after the linger time: {left:?}");
        eprintln!(
            "lingered {:?} after the last logout (linger 3s)",
            t.elapsed()
        );

        hutch.write_policy(&format!("{POLICY}on_logout = \"keep-while-running\"\n"));
        let out = env.ssh(
            &user,
            &["setsid sleep 4 </dev/null >/dev/null 2>&1 & echo started"],
        );
        assert!(out.stdout_str().contains("started"), "{}", out.describe());
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            hutch.state(&name).is_some(),
            "torn down while a job still ran"
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(20));
        assert!(left.is_empty(), "after the job ended: {left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// What PID 1 shows from inside: its resident size (kB), name, whether the
/// user can read its exe link and environment, the parent of an orphaned
/// `sleep` while it runs, and the number of zombies once it has ended.
const INIT_PROBE: &str = "(sleep 0.4 &); sleep 0.1; \
    echo PPID=$(ps -o ppid= -C sleep | tr -d ' ' | head -n1); sleep 0.8; \
    echo RSS=$(awk '/^VmRSS/{print $2}' /proc/1/status); echo COMM=$(cat /proc/1/comm); \
    readlink /proc/1/exe >/dev/null 2>&1 && echo EXE=readable || echo EXE=denied; \
    cat /proc/1/environ >/dev/null 2>&1 && echo ENV=readable || echo ENV=denied; \
    echo ZOMBIES=$(ps -eo stat= | grep -c '^Z')";

/// Logs a fresh user in, runs [`INIT_PROBE`], checks what holds for
/// either kind of PID 1 (named hutch-init, not dumpable, reaping the
/// orphans re-parented to it), waits for the teardown; returns PID 1's
/// resident size in kB.
fn init_rss(hutch: &HutchEnv) -> u64 {
    let user = hutch.user();
    let name = user.name.clone();
    let rss;
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(&user, &[INIT_PROBE]);
        assert!(out.status.success(), "{}", out.describe());
        let p: std::collections::BTreeMap<String, String> = out
            .stdout_str()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (key, want) in [
            ("COMM", "hutch-init"),
            ("EXE", "denied"),
            ("ENV", "denied"),
            ("PPID", "1"),
            ("ZOMBIES", "0"),
        ] {
            assert_eq!(
                p.get(key).map(String::as_str),
                Some(want),
                "{key}: {}",
                out.describe()
            );
        }
        rss = p["RSS"].parse().unwrap();
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "after the session: {left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    rss
}

/// PID 1 is the tiny init (runtime/init/hutch-init.rs) exec'd from a sealed
/// memfd once the container is up: a few pages resident (the keeper's clone
/// it replaces holds a megabyte and more), named hutch-init, not dumpable
/// (the user reads neither its exe link nor its environment), and it reaps
/// the orphans re-parented to it.
#[test]
fn init_is_tiny_unreadable_and_reaps() {
    if !require_root("init_is_tiny_unreadable_and_reaps") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let rss = init_rss(&hutch);
    assert!(rss <= 64, "PID 1 holds {rss} kB resident");
}

/// Where the policy's seccomp filter denies execveat, the tiny init cannot
/// be exec'd: the keeper's clone stays PID 1 (named hutch-init, reaping),
/// and the login works the same.
#[test]
fn init_stays_the_clone_where_execveat_is_denied() {
    if !require_root("init_stays_the_clone_where_execveat_is_denied") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let hutch = HutchEnv::new(POLICY);
    let profile = hutch.dir.join("seccomp-no-execveat");
    std::fs::write(&profile, "execveat\n").unwrap();
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o644)).unwrap();
    hutch.write_policy(&format!("{POLICY}seccomp = \"{}\"\n", profile.display()));
    let rss = init_rss(&hutch);
    assert!(rss > 64, "PID 1 holds only {rss} kB: not the clone?");
}
