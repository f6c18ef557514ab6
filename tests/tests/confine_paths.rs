//! One confinement for every way into a container: whatever the PAM
//! service and whatever it execs, the user's first process is in the
//! container with no_new_privs and the policy's seccomp filter, and cannot
//! make a user namespace. The real programs: sshd with the template's
//! /bin/bash as login shell, `su -s /bin/sh`, `sudo -u`, `runuser -u`, a
//! cron daemon running a crontab entry (cron's own /bin/sh), atd running an
//! `at` job. Each PAM host runs with the filter itself from the join on, and
//! must still do its work (exit statuses, its own child, closing).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// What a session prints about itself: hostname, pid 1's name, the
/// seccomp and no_new_privs lines, whether a user namespace can be made.
const PROBE: &str = "echo HOST=$(hostname); echo INIT=$(cat /proc/1/comm); \
    grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t ' ; \
    if unshare -Ur true 2>/dev/null; then echo USERNS=made; else echo USERNS=denied; fi; echo PROBE-END";

/// Checks a probe's output: inside `user`'s container, confined.
fn assert_confined(how: &str, user: &TestUser, text: &str) {
    let want = [
        format!("HOST=box-{}", user.name),
        "INIT=hutch-init".to_string(),
        "Seccomp:2".to_string(),
        "NoNewPrivs:1".to_string(),
        "USERNS=denied".to_string(),
        "PROBE-END".to_string(),
    ];
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    for w in &want {
        assert!(
            lines.contains(&w.as_str()),
            "{how}: no {w:?} in the session's output:\n{text}"
        );
    }
}

fn gone(hutch: &HutchEnv, user: &TestUser) {
    let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
    assert!(
        left.is_empty(),
        "after the session of {}: {left:?}",
        user.name
    );
}

/// sshd, a login shell that is the template's /bin/bash (no hutch-shell):
/// confined all the same, with the command's exit status.
#[test]
fn template_bash_login_shell_over_sshd() {
    if !require_root("template_bash_login_shell_over_sshd") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = TestUser::create(&unique("ht"), Path::new("/bin/bash"));
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::External);
        let out = env.ssh(&user, &[&format!("{PROBE}; exit 7")]);
        assert_eq!(out.code(), Some(7), "{}", out.describe());
        assert_confined("sshd + /bin/bash", &user, &out.stdout_str());
        // The sftp-server the login shell runs (`bash -c sftp-server`) is confined too.
        let out = env.sftp(&user, "ls /\n");
        assert!(out.status.success(), "{}", out.describe());
        gone(&hutch, &user);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `su -s /bin/sh USER -c CMD` from root: su never execs hutch-shell.
#[test]
fn su_with_a_shell_of_its_own() {
    if !require_root("su_with_a_shell_of_its_own") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let dir = TestDir::new("htsulog");
        let log = Syslog::bind(dir.join("log.sock"));
        let st = hutch.switcher_stack();
        let out = in_private_ns(
            &[("su", &st), ("su-l", &st)],
            "exec su -s /bin/sh \"$1\" -c \"$2\"",
            &[&name, &format!("{PROBE}; exit 4")],
            &log,
        );
        assert_eq!(
            out.code(),
            Some(4),
            "{}\n{:#?}",
            out.describe(),
            log.lines()
        );
        assert_confined("su -s /bin/sh", &user, &out.stdout_str());
        gone(&hutch, &user);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `sudo -u USER sh -c CMD` and `runuser -u USER -- sh -c CMD` from root.
#[test]
fn sudo_and_runuser() {
    if !require_root("sudo_and_runuser") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let dir = TestDir::new("htsulog");
        let log = Syslog::bind(dir.join("log.sock"));
        let st = hutch.switcher_stack();
        let out = in_private_ns(
            &[("sudo", &hutch.distro_stack("sudo"))],
            "exec sudo -u \"$1\" sh -c \"$2\"",
            &[&name, &format!("{PROBE}; exit 6")],
            &log,
        );
        assert_eq!(
            out.code(),
            Some(6),
            "{}\n{:#?}",
            out.describe(),
            log.lines()
        );
        assert_confined("sudo -u", &user, &out.stdout_str());
        gone(&hutch, &user);

        let out = in_private_ns(
            &[
                ("runuser", &hutch.distro_stack("runuser")),
                ("runuser-l", &st),
            ],
            "exec runuser -u \"$1\" -- sh -c \"$2\"",
            &[&name, &format!("{PROBE}; exit 8")],
            &log,
        );
        assert_eq!(
            out.code(),
            Some(8),
            "{}\n{:#?}",
            out.describe(),
            log.lines()
        );
        assert_confined("runuser -u", &user, &out.stdout_str());
        gone(&hutch, &user);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// Waits for `file` to hold a whole probe (up to `timeout`).
fn wait_probe(file: &Path, timeout: Duration) -> Option<String> {
    wait_until(timeout, || {
        std::fs::read_to_string(file)
            .ok()
            .filter(|t| t.contains("PROBE-END"))
    })
}

/// A real cron daemon (Debian's, in a private mount namespace with its own
/// spool, an empty /etc/crontab and /etc/cron.d) runs the user's crontab
/// entry through the cron PAM service: cron's /bin/sh is in the container,
/// confined. Up to a minute's wait for the entry's minute.
#[test]
fn cron_runs_a_crontab_entry_confined() {
    if !require_root("cron_runs_a_crontab_entry_confined") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let dir = TestDir::new("htcron");
        let log = Syslog::bind(dir.join("log.sock"));
        let out_file = user.home.join("cron.out");
        let tab = dir.join("crontab");
        std::fs::write(&tab, format!("* * * * * ({PROBE}) > $HOME/cron.out 2>&1\n")).unwrap();
        std::fs::write(dir.join("empty"), "").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            "mount -t tmpfs -o mode=0755 hutch-test-run /run\n\
             mount -t tmpfs -o mode=0755 hutch-test-crond /etc/cron.d\n\
             mount --bind {empty} /etc/crontab\n\
             mount -t tmpfs -o mode=1730,gid=crontab hutch-test-crontabs /var/spool/cron/crontabs\n\
             cp {tab} /var/spool/cron/crontabs/{name}\n\
             chown {name}:crontab /var/spool/cron/crontabs/{name}\n\
             chmod 600 /var/spool/cron/crontabs/{name}\n\
             exec cron -f -L 15",
            empty = shell_quote(&dir.join("empty").to_string_lossy()),
            tab = shell_quote(&tab.to_string_lossy()),
        );
        let cron = NsDaemon::spawn(&[("cron", &hutch.distro_stack("cron"))], &script, &log);
        let text = wait_probe(&out_file, Duration::from_secs(90)).unwrap_or_else(|| {
            panic!(
                "the crontab entry did not run (cron pid {}):\n{:#?}",
                cron.pid(),
                log.lines()
            )
        });
        assert_confined("cron", &user, &text);
        // cron's own child closed the session: the container goes.
        gone(&hutch, &user);
        assert!(
            log.contains("pam_hutch") && !log.contains("refusing session"),
            "{:#?}",
            log.lines()
        );
        drop(cron);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// atd (in a private mount namespace with its own spool) runs a job the
/// user queued with the real `at`: in the container, confined.
#[test]
fn atd_runs_an_at_job_confined() {
    if !require_root("atd_runs_an_at_job_confined") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let dir = TestDir::new("htatd");
        let log = Syslog::bind(dir.join("log.sock"));
        let out_file = user.home.join("at.out");
        let job = dir.join("job");
        std::fs::write(&job, format!("({PROBE}) > $HOME/at.out 2>&1\n")).unwrap();
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = format!(
            "mount -t tmpfs -o mode=0755 hutch-test-run /run\n\
             d=$(id -u daemon); g=$(id -g daemon)\n\
             mount -t tmpfs -o mode=1770,uid=$d,gid=$g hutch-test-atjobs /var/spool/cron/atjobs\n\
             mount -t tmpfs -o mode=1770,uid=$d,gid=$g hutch-test-atspool /var/spool/cron/atspool\n\
             install -o daemon -g daemon -m 600 /dev/null /var/spool/cron/atjobs/.SEQ\n\
             cd /\n\
             HOME={home} setpriv --reuid={uid} --regid={gid} --init-groups at -f {job} now 2>/dev/null\n\
             exec atd -f",
            home = shell_quote(&user.home.to_string_lossy()),
            uid = user.uid,
            gid = user.gid,
            job = shell_quote(&job.to_string_lossy()),
        );
        let atd = NsDaemon::spawn(&[("atd", &hutch.distro_stack("atd"))], &script, &log);
        let text = wait_probe(&out_file, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "the at job did not run (atd pid {}):\n{:#?}",
                atd.pid(),
                log.lines()
            )
        });
        assert_confined("atd", &user, &text);
        gone(&hutch, &user);
        drop(atd);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `seccomp = "/path"` (SECURITY.md: an absolute path, read on the host):
/// the file is read by the module and the keeper on the host, and its
/// extra denial (personality) binds the login shell, what it runs, and
/// `hutchctl enter` alike, though the file is nowhere in the container.
#[test]
fn seccomp_file_profile_read_on_the_host() {
    if !require_root("seccomp_file_profile_read_on_the_host") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let profile = hutch.dir.join("seccomp-extra");
    std::fs::write(&profile, "# no personality changes\npersonality\n").unwrap();
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o644)).unwrap();
    hutch.write_policy(&format!("{POLICY}seccomp = \"{}\"\n", profile.display()));
    let user = hutch.user();
    let name = user.name.clone();
    let try_it = "test -e \"$1\" && echo FILE=inside || echo FILE=absent; \
                  if setarch x86_64 -R true 2>/dev/null; then echo PERSONALITY=changed; else echo PERSONALITY=denied; fi";
    {
        let env = hutch.sshd(Sftp::Internal);
        let cmd = format!("sh -c '{try_it}' sh {}", profile.display());
        let out = env.ssh(&user, &[&cmd]);
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            out.stdout_str(),
            "FILE=absent\nPERSONALITY=denied\n",
            "{}",
            out.describe()
        );
        let hold = env.hold_pty(&user);
        let profile_s = profile.to_string_lossy().to_string();
        let out = hutch.ctl(&["enter", &name, "--", "sh", "-c", try_it, "sh", &profile_s]);
        assert_eq!(
            out.stdout_str(),
            "FILE=absent\nPERSONALITY=denied\n",
            "{}",
            out.describe()
        );
        drop(hold);
        gone(&hutch, &user);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
