//! Correctness items a review found, each with the real programs: the
//! keeper's own umask, containers keyed by the NSS canonical name, binds
//! that keep the source mount's restrictions, firewall tables that two user
//! names cannot share.

use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// A PAM host with umask 077 (an admin's su) starts the keeper: the
/// container's `/`, `/etc`, `/run` and generated files keep their modes,
/// and the user's session works in it.
#[test]
fn keeper_sets_its_own_umask() {
    if !require_root("keeper_sets_its_own_umask") {
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
            "umask 077; exec su - \"$1\" -c \"$2\"",
            &[
                &name,
                "stat -c '%n %a' / /etc /etc/passwd /etc/hostname /run /run/utmp /dev /var/tmp; echo SESSION-OK",
            ],
            &log,
        );
        assert!(
            out.status.success(),
            "{}\n{:#?}",
            out.describe(),
            log.lines()
        );
        let text = out.stdout_str();
        for want in [
            "/ 755",
            "/etc 755",
            "/etc/passwd 644",
            "/etc/hostname 644",
            "/run 755",
            "/run/utmp 664",
            "/dev 755",
            "/var/tmp 1777",
            "SESSION-OK",
        ] {
            assert!(text.lines().any(|l| l == want), "no {want:?} in:\n{text}");
        }
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// Two names on one uid (a local stand-in for SSSD's `Alice` beside
/// `alice`, or an LDAP entry's second uid value): logins under either
/// land in one container keyed by the NSS canonical name (the one
/// getpwuid gives), with its hostname; there is no run dir, cgroup or
/// keeper for the other spelling; `hutchctl stop ALIAS` stops it.
#[test]
fn containers_keyed_by_the_canonical_name() {
    if !require_root("containers_keyed_by_the_canonical_name") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let alias = TestUser::create_alias(&unique("ht"), &user);
    let (name, aname) = (user.name.clone(), alias.name.clone());
    {
        let env = hutch.sshd(Sftp::Internal);
        let hold = env.hold_pty(&user);
        let init = hutch.state(&name).and_then(|s| s["init_pid"].as_i64());
        let out = env.ssh(
            &alias,
            &["hostname; readlink /proc/self/ns/pid; sleep 1; echo ALIAS-OK"],
        );
        assert!(out.status.success(), "{}", out.describe());
        let lines: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
        assert_eq!(lines[0], format!("box-{name}"), "{}", out.describe());
        assert!(
            !hutch.user_dir(&aname).exists(),
            "a second container for the alias {aname}"
        );
        assert!(hutch.user_cgroups(&aname).is_empty());
        let pidns = std::fs::read_link(format!("/proc/{}/ns/pid", init.unwrap())).unwrap();
        assert_eq!(lines[1], pidns.to_string_lossy(), "not the same container");
        let out = hutch.ctl(&["stop", &aname]);
        assert!(out.status.success(), "{}", out.describe());
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
        drop(hold);
    }
    drop(alias);
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    assert_no_leftovers(&aname, Duration::from_secs(5));
}

/// A mount the test made on the host, unmounted (lazily) on Drop.
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A home on a `noexec,nosymfollow` file system (a tmpfs the test mounts):
/// the container's bind of it keeps both (a remount with only nosuid,nodev
/// cleared them: the user could run programs from it and follow symlinks).
#[test]
fn home_bind_keeps_the_source_mounts_restrictions() {
    if !require_root("home_bind_keeps_the_source_mounts_restrictions") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let dir = TestDir::new("htfsflags");
    let fs = dir.join("fs");
    std::fs::create_dir(&fs).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "noexec,nosymfollow,nosuid,nodev,mode=0755",
            ])
            .arg("hutch-test-flags")
            .arg(&fs),
    );
    let _mounted = HostMount(fs.clone());
    let name = unique("ht");
    let home = fs.join(&name);
    let user = TestUser::create_with_home(&name, &hutch.shell, &home);
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    {
        let env = hutch.sshd(Sftp::Internal);
        env.authorize(&user);
        let out = env.ssh(
            &user,
            &["cp /bin/true ~/t; chmod 755 ~/t; if ~/t 2>/dev/null; then echo EXEC=allowed; else echo EXEC=denied; fi; \
               ln -s /etc/hostname ~/l; if cat ~/l >/dev/null 2>&1; then echo FOLLOW=allowed; else echo FOLLOW=denied; fi; \
               grep -c \" $HOME \" /proc/self/mountinfo"],
        );
        assert_eq!(
            out.stdout_str(),
            "EXEC=denied\nFOLLOW=denied\n1\n",
            "{}",
            out.describe()
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
