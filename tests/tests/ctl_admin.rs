//! hutchctl's admin commands over a real SSH login: freeze/thaw (a `date`
//! loop in the container stops and resumes), enter (as root and as the
//! user), diff (added and deleted files against the template), watch --once
//! and list's FROZEN marker.

use std::path::PathBuf;
use std::time::Duration;

use hutch_tests::hutch::trimmed;
use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// The loop's last tick, read through the init's root (the container's /tmp).
fn tick(init_root: &std::path::Path) -> Option<u128> {
    std::fs::read_to_string(init_root.join("tmp/tick"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn freeze_enter_diff_watch() {
    if !require_root("freeze_enter_diff_watch") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut s = env.shell_pty(&user);
        let state = wait_until(Duration::from_secs(10), || {
            hutch
                .state(&name)
                .filter(|st| st["sessions"].as_array().map(|a| a.len()) == Some(1))
        })
        .expect("state.json with the session");
        let init = state["init_pid"].as_i64().unwrap();
        let init_root = PathBuf::from(format!("/proc/{init}/root"));

        // The layer's upper is out of the user's reach.
        let out = env.ssh(&user, &["stat -c %a:%U /run /run/.hutch-upper; ls /run/.hutch-upper/upper >/dev/null 2>&1 && echo READABLE || echo DENIED"]);
        assert_eq!(
            out.stdout_str(),
            "755:root\n700:root\nDENIED\n",
            "{}",
            out.describe()
        );

        // freeze / thaw: the loop stops advancing, then goes on.
        s.send("while :; do date +%s%N > /tmp/tick; sleep 0.05; done &\n");
        assert!(
            wait_until(Duration::from_secs(10), || tick(&init_root)).is_some(),
            "the loop never ticked: {}",
            s.output()
        );
        let out = hutch.ctl(&["freeze", &name]);
        assert!(out.status.success(), "{}", out.describe());
        assert!(
            out.stderr_str().contains("SSH connections"),
            "no warning: {}",
            out.describe()
        );
        std::thread::sleep(Duration::from_millis(300));
        let t1 = tick(&init_root);
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(tick(&init_root), t1, "the loop advanced while frozen");
        let out = hutch.ctl(&["list"]);
        assert!(
            out.stdout_str()
                .lines()
                .any(|l| l.starts_with(&name) && l.contains("FROZEN")),
            "{}",
            out.describe()
        );
        let out = hutch.ctl(&["list", "--json"]);
        assert!(
            out.stdout_str().contains("\"frozen\": true"),
            "{}",
            out.describe()
        );
        let out = hutch.ctl(&["watch", "--once"]);
        assert!(
            out.stdout_str()
                .lines()
                .any(|l| l.starts_with(&name) && l.contains("FROZEN")),
            "{}",
            out.describe()
        );
        let out = hutch.ctl(&["thaw", &name]);
        assert!(out.status.success(), "{}", out.describe());
        assert!(
            wait_until(Duration::from_secs(5), || (tick(&init_root) > t1)
                .then_some(()))
            .is_some(),
            "the loop did not resume after thaw"
        );
        let out = hutch.ctl(&["list"]);
        assert!(!out.stdout_str().contains("FROZEN"), "{}", out.describe());

        // watch --once lists the user, running, with its session.
        let out = hutch.ctl(&["watch", "--once"]);
        let line = out
            .stdout_str()
            .lines()
            .find(|l| l.starts_with(&name))
            .map(str::to_string);
        let fields: Vec<String> = line
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert!(
            fields.len() == 6 && fields[1] == "1" && fields[2] == "run",
            "{}",
            out.describe()
        );

        // enter: inside the container (hostname, the session's processes).
        let out = hutch.ctl(&["enter", &name, "--", "hostname"]);
        assert_eq!(trimmed(&out), format!("box-{name}"), "{}", out.describe());
        let out = hutch.ctl(&[
            "enter",
            &name,
            "--",
            "ps",
            "-eo",
            "pid,comm",
            "--no-headers",
        ]);
        assert!(out.status.success(), "{}", out.describe());
        let ps = out.stdout_str();
        assert!(
            ps.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "hutch-init"]),
            "{ps}"
        );
        // The loop runs `date` or `sleep` at any moment (`date` is what a
        // loaded machine catches now and then).
        assert!(
            ps.contains("bash") && (ps.contains("sleep") || ps.contains("date")),
            "the session's processes are not seen: {ps}"
        );
        // As the user: a file in /tmp the session sees, owned by the user; no capabilities.
        let out = hutch.ctl(&[
            "enter",
            &name,
            "--",
            "sh",
            "-c",
            "id -un > /tmp/by-enter; grep CapEff /proc/self/status",
        ]);
        assert!(
            out.stdout_str().contains("0000000000000000"),
            "{}",
            out.describe()
        );
        // ... and the session's seccomp filter (else the user could ptrace the
        // entered command and make the calls the filter denies them).
        let out = hutch.ctl(&[
            "enter",
            &name,
            "--",
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; unshare -U true && echo UNSHARED",
        ]);
        assert!(
            out.stdout_str().contains("Seccomp:\t2"),
            "{}",
            out.describe()
        );
        assert!(!out.stdout_str().contains("UNSHARED"), "{}", out.describe());
        let out = hutch.ctl(&[
            "enter",
            &name,
            "--root",
            "--",
            "grep",
            "Seccomp:",
            "/proc/self/status",
        ]);
        assert!(
            out.stdout_str().contains("Seccomp:\t0"),
            "as root, no filter: {}",
            out.describe()
        );
        s.send("echo GOT-$(cat /tmp/by-enter)-END\n");
        assert!(
            s.expect(&format!("GOT-{name}-END"), Duration::from_secs(10))
                .is_some(),
            "{}",
            s.output()
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(init_root.join("tmp/by-enter"))
                .unwrap()
                .uid(),
            user.uid
        );
        // Exit status passes through; a missing command is 127; as root, uid 0.
        assert_eq!(
            hutch
                .ctl(&["enter", &name, "--", "sh", "-c", "exit 5"])
                .code(),
            Some(5)
        );
        assert_eq!(
            hutch.ctl(&["enter", &name, "--", "/no/such/cmd"]).code(),
            Some(127)
        );
        let out = hutch.ctl(&["enter", &name, "--root", "--", "id", "-u"]);
        assert_eq!(trimmed(&out), "0", "{}", out.describe());

        // diff: a file the session made under /var/tmp, a template file deleted (by root).
        let out = env.ssh(&user, &["echo x > /var/tmp/from-session"]);
        assert!(out.status.success(), "{}", out.describe());
        let out = hutch.ctl(&["enter", &name, "--root", "--", "rm", "/etc/motd"]);
        assert!(out.status.success(), "{}", out.describe());
        let out = hutch.ctl(&["diff", &name]);
        assert!(out.status.success(), "{}", out.describe());
        let diff = out.stdout_str();
        assert!(
            diff.lines().any(|l| l == "A /var/tmp/from-session"),
            "{diff}"
        );
        assert!(diff.lines().any(|l| l == "D /etc/motd"), "{diff}");
        assert!(
            !diff.contains("/etc/passwd") && !diff.contains("/home/"),
            "hutch's own files listed: {diff}"
        );
        let out = hutch.ctl(&["diff", &name, "--all"]);
        assert!(
            out.stdout_str().lines().any(|l| l == "C /etc/passwd"),
            "{}",
            out.describe()
        );

        s.send("kill %1; exit\n");
        let (_, text) = s.wait(Duration::from_secs(30));
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "after the last logout: {left:?}\n{text}");
        assert_eq!(hutch.ctl(&["enter", &name, "--", "true"]).code(), Some(1));
        assert_eq!(hutch.ctl(&["freeze", &name]).code(), Some(1));
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}
