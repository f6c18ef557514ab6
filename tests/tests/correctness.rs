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

/// pam_hutch looks a user's groups up only for a policy with group tables
/// (without one they decide nothing): with a `[groups.NAME]` table, its
/// members are still found, parsed and through the policy cache, so a
/// group that confines its members cannot be escaped. Here every account
/// is exempt but the members of one group (a user's own group, looked up
/// by gid), whose logins would be confined (`enforce = false`: nothing
/// starts).
#[test]
fn a_group_table_decides_through_the_cache() {
    if !require_root("a_group_table_decides_through_the_cache") {
        return;
    }
    use hutch_runtime::join::{open_session, JoinOptions, Outcome, SessionInfo};
    let hutch = HutchEnv::new(POLICY);
    let member = hutch.user();
    let other = hutch.user();
    hutch.write_policy(&format!(
        "{POLICY}confine = false\n[groups.{}]\nconfine = true\nenforce = false\n",
        member.name
    ));
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(10),
        policy_cache: hutch.dir.join("policy-cache"),
    };
    let info = SessionInfo {
        service: "sshd".into(),
        tty: None,
        rhost: None,
    };
    // A policy is cached only once its sources are a second old (the
    // cache's racy window): the first round parses it and writes the
    // cache, the second reads it.
    std::thread::sleep(Duration::from_millis(1100));
    for round in 0..2 {
        match open_session(&opts, &member.name, &info) {
            Ok(Outcome::Monitor { would, .. }) => {
                assert!(would.starts_with("confine"), "round {round}: {would}")
            }
            other => panic!("round {round}: the group's member: {other:?}"),
        }
        match open_session(&opts, &other.name, &info) {
            Ok(Outcome::Exempt(_)) => {}
            other => panic!("round {round}: not a member: {other:?}"),
        }
        if round == 0 {
            assert!(
                std::fs::read_dir(&opts.policy_cache).is_ok_and(|d| d.count() == 1),
                "the first round wrote the cache"
            );
        }
    }
    assert!(hutch.state(&member.name).is_none());
}

/// A local group removed on Drop.
struct LocalGroup(String);

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let _ = output(std::process::Command::new("groupdel").arg(&self.0));
    }
}

/// A policy without group tables needs no groups to decide a login, but
/// the container still holds all of the user's: the keeper that a login
/// starts is handed the account with its groups looked up then, so the
/// container's /etc/group lists the user's supplementary group.
#[test]
fn a_policy_without_group_tables_still_gives_the_container_its_groups() {
    if !require_root("a_policy_without_group_tables_still_gives_the_container_its_groups") {
        return;
    }
    use hutch_runtime::join::{open_session, JoinOptions, Outcome, SessionInfo};
    use hutch_runtime::sys::{self, Forked};
    use std::io::{Read, Write};
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let group = LocalGroup(unique("ht"));
    run_ok(std::process::Command::new("groupadd").arg(&group.0));
    run_ok(std::process::Command::new("usermod").args(["-aG", &group.0, &user.name]));
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch.dir.join("policy-cache"),
    };
    let (r, w) = nix::unistd::pipe().unwrap();
    let (go_r, go_w) = nix::unistd::pipe().unwrap();
    let child = match sys::fork().unwrap() {
        Forked::Child => {
            drop(r);
            drop(go_w);
            let mut w = std::fs::File::from(w);
            let info = SessionInfo {
                service: "sshd".into(),
                tty: None,
                rhost: None,
            };
            match open_session(&opts, &user.name, &info) {
                Ok(Outcome::Joined(s)) => {
                    let _ = write!(w, "{}", s.init_pid);
                    drop(w);
                    let mut b = [0u8; 1];
                    let _ = std::fs::File::from(go_r).read(&mut b);
                    s.close();
                }
                other => {
                    let _ = write!(w, "ERR {:?}", other.map(|_| ()));
                }
            }
            sys::exit_now(0)
        }
        Forked::Parent(pid) => pid,
    };
    drop(w);
    drop(go_r);
    let mut said = String::new();
    std::fs::File::from(r).read_to_string(&mut said).unwrap();
    let etc_group = said
        .parse::<i32>()
        .ok()
        .and_then(|init| std::fs::read_to_string(format!("/proc/{init}/root/etc/group")).ok());
    drop(go_w);
    let _ = nix::sys::wait::waitpid(child, None);
    let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
    let etc_group = etc_group.unwrap_or_else(|| panic!("no container: {said}"));
    assert!(
        etc_group
            .lines()
            .any(|l| l.starts_with(&format!("{}:", group.0)) && l.ends_with(&user.name)),
        "{} not in the container's /etc/group:\n{etc_group}",
        group.0
    );
    assert!(left.is_empty(), "{left:?}");
    let name = user.name.clone();
    drop(user);
    drop(group);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
