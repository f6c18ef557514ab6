//! Directory users on a login host: accounts and groups that exist only in a
//! real OpenLDAP (slapd), seen through a real NSS client (nslcd +
//! libnss-ldapd) inside the test's own mount namespace (`Directory`), log
//! in over the real sshd, land in their containers with the limits of their
//! directory groups from a site policy plus a host drop-in, and see only
//! themselves and their groups in the container's /etc. Spellings of one
//! account (another case, an alias) share its one container.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use hutch_tests::hutch::trimmed;
use hutch_tests::*;

/// The site's policy, as config management ships it to every host: limits
/// by directory group.
fn site_drop_in(students: &str, staff: &str) -> String {
    format!(
        "[groups.{students}]\npids = 77\nmemory = \"300M\"\n\n\
         [groups.{staff}]\npids = 88\n"
    )
}

/// This host's own drop-in, sorting after the site's: overrides one key.
fn host_drop_in(students: &str) -> String {
    format!("[groups.{students}]\npids = 66\n")
}

fn write_drop_ins(hutch: &HutchEnv, students: &str, staff: &str) {
    let d = hutch_policy::drop_in_dir(&hutch.config);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("10-site.toml"), site_drop_in(students, staff)).unwrap();
    std::fs::write(d.join("90-host.toml"), host_drop_in(students)).unwrap();
}

/// The container's limit file `name` (pids.max, ...) of `user`, if up.
fn limit(hutch: &HutchEnv, user: &str, name: &str) -> Option<String> {
    hutch
        .user_cgroups(user)
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(name)).ok())
        .map(|s| s.trim().to_string())
}

/// Sessions that hold their users' containers open until dropped: ssh
/// logins on ptys, all started at once (users arriving together), each up
/// once its shell has run inside its container (its limits are written by
/// then). A login that fails says why (its output).
fn hold_all<L: Login>(env: &SshdEnv, users: &[&L]) -> Vec<PtySession> {
    let held: Vec<PtySession> = users
        .iter()
        .map(|u| env.ssh_pty(*u, &["echo HOLDING; sleep 600"]))
        .collect();
    for (s, u) in held.iter().zip(users) {
        assert!(
            s.expect("HOLDING", Duration::from_secs(120)).is_some(),
            "{}: the holding login did not come up: {}",
            u.login(),
            s.output()
        );
    }
    held
}

/// One holding session ([`hold_all`]).
fn hold<L: Login>(env: &SshdEnv, user: &L) -> PtySession {
    hold_all(env, &[user]).remove(0)
}

/// `hutchctl policy SPELLING` inside the directory's namespace.
fn ctl_policy(dir: &Directory, hutch: &HutchEnv, spelling: &str) -> String {
    let out = output(
        dir.command(&hutch.bins.ctl)
            .arg("--config")
            .arg(&hutch.config)
            .args(["policy", spelling]),
    );
    assert!(out.status.success(), "{}", out.describe());
    out.stdout_str()
}

/// The `key = value  # origin` line of `key` in `hutchctl policy` output.
fn policy_line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
}

/// LDAP-only users log in over SSH into their own containers; each gets the
/// limits of its LDAP group (site drop-in, one key overridden by the host's
/// drop-in) and `hutchctl policy` names the file and group of each; inside,
/// /etc/passwd and /etc/group hold only root, the user and its groups; the
/// host itself never sees the accounts; logout leaves nothing behind.
#[test]
fn directory_users_get_their_groups_limits() {
    if !require_root("directory_users_get_their_groups_limits") {
        return;
    }
    let dir = Directory::start();
    let hutch = HutchEnv::new("");
    let students = dir.group(&unique("ht"), &[]);
    let staff = dir.group(&unique("ht"), &[]);
    let alice = dir.user(&unique("ht"), &[], &hutch.shell, None, &[&students]);
    let bob = dir.user(&unique("ht"), &[], &hutch.shell, None, &[&staff]);
    write_drop_ins(&hutch, &students.name, &staff.name);

    // Only inside the directory's namespace do the accounts exist.
    assert!(nix::unistd::User::from_name(&alice.name).unwrap().is_none());
    let pw = dir
        .getent("passwd", &alice.name)
        .expect("alice through nslcd");
    assert!(pw.starts_with(&format!("{}:", alice.name)), "{pw}");

    // hutchctl policy: the value, the file and the group it came from.
    let text = ctl_policy(&dir, &hutch, &alice.name);
    let d = hutch_policy::drop_in_dir(&hutch.config);
    let pids = policy_line(&text, "pids");
    assert!(
        pids.starts_with("pids = 66 ")
            && pids.contains(&format!("{}:", d.join("90-host.toml").display()))
            && pids.ends_with(&format!("(groups.{})", students.name)),
        "{text}"
    );
    let memory = policy_line(&text, "memory");
    assert!(
        memory.contains(&format!("{}:", d.join("10-site.toml").display()))
            && memory.ends_with(&format!("(groups.{})", students.name)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# groups with rules, lowest precedence first: {}",
            students.name
        )),
        "{text}"
    );

    {
        let mut opts = hutch.sshd_opts(Sftp::Internal);
        opts.mount_ns = Some(dir.ns_pid());
        let env = SshdEnv::start(opts);
        env.authorize(&alice);
        env.authorize(&bob);

        let held = hold_all(&env, &[&alice, &bob]);
        assert_eq!(
            limit(&hutch, &alice.name, "pids.max").as_deref(),
            Some("66")
        );
        assert_eq!(
            limit(&hutch, &alice.name, "memory.limit_in_bytes")
                .or_else(|| limit(&hutch, &alice.name, "memory.max"))
                .as_deref(),
            Some("314572800")
        );
        assert_eq!(limit(&hutch, &bob.name, "pids.max").as_deref(), Some("88"));

        let out = env.ssh(&alice, &["id -un; id -Gn; hostname"]);
        assert!(out.status.success(), "{}", out.describe());
        let lines: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
        assert_eq!(lines[0], alice.name, "{}", out.describe());
        let groups: Vec<&str> = lines[1].split_whitespace().collect();
        assert!(
            groups.contains(&alice.name.as_str()) && groups.contains(&students.name.as_str()),
            "{}",
            out.describe()
        );

        // The container's /etc holds root, the user and the user's groups only.
        let passwd = trimmed(&env.ssh(&alice, &["cat /etc/passwd"]));
        let names: Vec<&str> = passwd.lines().filter_map(|l| l.split(':').next()).collect();
        assert_eq!(names, ["root", alice.name.as_str()], "{passwd}");
        assert!(
            passwd.lines().any(|l| l
                == format!(
                    "{}:x:{}:{}::{}:/bin/bash",
                    alice.name,
                    alice.uid,
                    alice.gid,
                    alice.home.display()
                )),
            "{passwd}"
        );
        let group = trimmed(&env.ssh(&alice, &["cat /etc/group"]));
        let gnames: Vec<&str> = group.lines().filter_map(|l| l.split(':').next()).collect();
        assert_eq!(
            gnames,
            ["root", "tty", alice.name.as_str(), students.name.as_str()],
            "{group}"
        );
        assert!(!group.contains(&staff.name) && !passwd.contains(&bob.name));
        assert!(
            group.contains(&format!(
                "{}:x:{}:{}",
                students.name, students.gid, alice.name
            )),
            "{group}"
        );

        // The home is the directory's, bound in and writable by the user.
        let out = env.ssh(&alice, &["echo from-ldap > ~/note; pwd"]);
        assert_eq!(
            trimmed(&out),
            alice.home.display().to_string(),
            "{}",
            out.describe()
        );
        assert_eq!(
            std::fs::read_to_string(alice.home.join("note")).unwrap(),
            "from-ldap\n"
        );
        // The last logout tears the containers down (before the sshd, in
        // whose network namespace the keepers run, is killed).
        drop(held);
        for u in [&alice, &bob] {
            let left = hutch.wait_gone(&u.name, Duration::from_secs(20));
            assert!(left.is_empty(), "{}: {left:?}", u.name);
        }
    }
    let (a, b) = (alice.name.clone(), bob.name.clone());
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    drop(dir);
    for t in [a.as_str(), b.as_str(), tag.as_str()] {
        assert_no_leftovers(t, Duration::from_secs(5));
    }
}

/// `ssh NAME@`, `ssh name-in-another-case@` and `ssh alias@` of one
/// directory account land in one container, keyed by the canonical name
/// NSS gives (`getpwuid` of the account's uid), with the canonical name's
/// group limits: a spelling must neither open a second container (a second
/// set of limits) nor lose the groups' limits.
#[test]
fn spellings_of_one_account_share_its_container() {
    if !require_root("spellings_of_one_account_share_its_container") {
        return;
    }
    let dir = Directory::start();
    let hutch = HutchEnv::new("");
    let students = dir.group(&unique("ht"), &[]);
    let staff = dir.group(&unique("ht"), &[]);
    let alias = unique("al");
    let alice = dir.user(&unique("ht"), &[&alias], &hutch.shell, None, &[&students]);
    write_drop_ins(&hutch, &students.name, &staff.name);
    let upper = alice.name.to_uppercase();

    // What NSS itself says about the spellings (nslcd, ignorecase).
    let by_upper = dir
        .getent("passwd", &upper)
        .expect("the upper-case spelling");
    assert!(
        by_upper.starts_with(&format!("{}:", alice.name)),
        "{by_upper}"
    );
    let by_alias = dir.getent("passwd", &alias).expect("the alias");
    assert!(by_alias.starts_with(&format!("{alias}:")), "{by_alias}");
    let by_uid = dir.getent("passwd", &alice.uid.to_string()).unwrap();
    assert!(by_uid.starts_with(&format!("{}:", alice.name)), "{by_uid}");

    // hutchctl policy under any spelling explains the canonical account.
    for s in [upper.as_str(), alias.as_str()] {
        let text = ctl_policy(&dir, &hutch, s);
        assert!(
            text.starts_with(&format!("# user {} (uid {})", alice.name, alice.uid)),
            "{s}: {text}"
        );
        assert!(
            policy_line(&text, "pids").starts_with("pids = 66 "),
            "{s}: {text}"
        );
    }

    {
        let mut opts = hutch.sshd_opts(Sftp::Internal);
        opts.mount_ns = Some(dir.ns_pid());
        let env = SshdEnv::start(opts);
        env.authorize(&alice);
        // sshd's AuthorizedKeysFile is keys/%u, and %u is the pw_name NSS
        // answers for the spelling: nslcd gives the alias back as asked
        // (and the canonical name for another case).
        env.authorize(&alice.as_spelled(&alias));

        let _hold = hold(&env, &alice);
        let pidns = trimmed(&env.ssh(&alice, &["readlink /proc/self/ns/pid"]));
        assert!(pidns.starts_with("pid:["), "{pidns}");

        // The session's supplementary groups are the credentials sshd set
        // (initgroups of the name NSS answered) before exec: hutch keys the
        // container, its limits and its /etc by the canonical name but does
        // not touch a session's groups. nslcd answers the canonical name
        // for another case (so the canonical groups) and the alias as asked,
        // whose memberUid search finds none (SSSD would answer the
        // canonical name for both).
        let gids_of = |spelling: &str| {
            let out = output(dir.command("python3").args([
                "-c",
                "import os, pwd, sys\n\
                 p = pwd.getpwnam(sys.argv[1])\n\
                 print(*sorted(os.getgrouplist(p.pw_name, p.pw_gid)))",
                spelling,
            ]));
            assert!(out.status.success(), "{}", out.describe());
            trimmed(&out)
        };
        let upper_gids = gids_of(&upper);
        assert!(
            upper_gids
                .split_whitespace()
                .any(|g| g == students.gid.to_string()),
            "{upper_gids}"
        );
        for s in [upper.as_str(), alias.as_str()] {
            let out = env.ssh(
                &alice.as_spelled(s),
                &["readlink /proc/self/ns/pid; id -un; id -G | tr ' ' '\\n' | sort -n | xargs"],
            );
            assert!(out.status.success(), "{s}: {}", out.describe());
            let lines: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
            assert_eq!(
                lines[0],
                pidns,
                "{s} got another container: {}",
                out.describe()
            );
            assert_eq!(lines[1], alice.name, "{s}: {}", out.describe());
            assert_eq!(lines[2], gids_of(s), "{s}: {}", out.describe());
        }
        let users: Vec<String> = std::fs::read_dir(hutch.run_dir.join("users"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            users,
            std::slice::from_ref(&alice.name),
            "one container, by the canonical name"
        );
        assert_eq!(
            limit(&hutch, &alice.name, "pids.max").as_deref(),
            Some("66")
        );
        drop(_hold);
        let left = hutch.wait_gone(&alice.name, Duration::from_secs(20));
        assert!(left.is_empty(), "{left:?}");
    }
    let name = alice.name.clone();
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    drop(dir);
    for t in [name.as_str(), alias.as_str(), upper.as_str(), tag.as_str()] {
        assert_no_leftovers(t, Duration::from_secs(5));
    }
}

/// A drop-in directory staged by config management is checked against the
/// deployed main file before it goes live: a broken one is refused naming
/// the staged file, line and key while logins keep the deployed policy;
/// `hutchctl policy --drop-ins` previews what a directory user would get;
/// once the directory is swapped in, the next login gets the new limit.
#[test]
fn staged_drop_ins_are_checked_before_deploy() {
    if !require_root("staged_drop_ins_are_checked_before_deploy") {
        return;
    }
    let dir = Directory::start();
    let hutch = HutchEnv::new("");
    let students = dir.group(&unique("ht"), &[]);
    let staff = dir.group(&unique("ht"), &[]);
    let alice = dir.user(&unique("ht"), &[], &hutch.shell, None, &[&students]);
    write_drop_ins(&hutch, &students.name, &staff.name);
    let deployed = hutch_policy::drop_in_dir(&hutch.config);
    let staged = hutch.dir.join("hutch.d.new");
    std::fs::create_dir(&staged).unwrap();
    let ctl = |args: &[&str]| {
        output(
            dir.command(&hutch.bins.ctl)
                .arg("--config")
                .arg(&hutch.config)
                .args(args),
        )
    };
    let staged_s = staged.to_string_lossy().to_string();

    // A typo in the staged site drop-in: refused, naming the staged file.
    std::fs::write(
        staged.join("10-site.toml"),
        format!("[groups.{}]\npids = 55\nmemroy = \"300M\"\n", students.name),
    )
    .unwrap();
    std::fs::copy(deployed.join("90-host.toml"), staged.join("90-host.toml")).unwrap();
    let out = ctl(&["check", "--drop-ins", &staged_s]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stdout_str().contains(&format!(
            "error: {}:3:1: groups.{}: unknown key \"memroy\" (did you mean \"memory\"?)",
            staged.join("10-site.toml").display(),
            students.name
        )),
        "{}",
        out.describe()
    );
    let out = ctl(&["check"]);
    assert_eq!(
        out.code(),
        Some(0),
        "the deployed policy: {}",
        out.describe()
    );

    // Fixed: clean; the preview names the staged file; the host drop-in
    // still wins where it sets the key, so the site's new value shows only
    // once the host drops its override.
    std::fs::write(
        staged.join("10-site.toml"),
        format!("[groups.{}]\npids = 55\nmemory = \"300M\"\n", students.name),
    )
    .unwrap();
    std::fs::write(staged.join("90-host.toml"), "").unwrap();
    let out = ctl(&["check", "--drop-ins", &staged_s]);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let out = ctl(&["policy", &alice.name, "--drop-ins", &staged_s]);
    assert!(out.status.success(), "{}", out.describe());
    let text = out.stdout_str();
    let pids = policy_line(&text, "pids");
    assert!(
        pids.starts_with("pids = 55 ")
            && pids.contains(&format!("{}:2:8", staged.join("10-site.toml").display()))
            && pids.ends_with(&format!("(groups.{})", students.name)),
        "{text}"
    );

    {
        let mut opts = hutch.sshd_opts(Sftp::Internal);
        opts.mount_ns = Some(dir.ns_pid());
        let env = SshdEnv::start(opts);
        env.authorize(&alice);
        let pids_at_login = || {
            let h = hold(&env, &alice);
            let got = limit(&hutch, &alice.name, "pids.max");
            drop(h);
            let left = hutch.wait_gone(&alice.name, Duration::from_secs(20));
            assert!(left.is_empty(), "{left:?}");
            got
        };
        assert_eq!(
            pids_at_login().as_deref(),
            Some("66"),
            "the deployed policy"
        );

        // Deploy: the staged directory replaces the live one (two renames).
        let old = hutch.dir.join("hutch.d.old");
        std::fs::rename(&deployed, &old).unwrap();
        std::fs::rename(&staged, &deployed).unwrap();
        assert_eq!(pids_at_login().as_deref(), Some("55"), "after the deploy");
    }
    let name = alice.name.clone();
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    drop(dir);
    for t in [name.as_str(), tag.as_str()] {
        assert_no_leftovers(t, Duration::from_secs(5));
    }
}

/// Fills an owner-only mount for `uid`:`gid`: a 0700 home with a file,
/// `evil` a symlink to /etc and `up` a symlink to the mount's root.
fn fill_homes(src: &std::path::Path, uid: u32, gid: u32) {
    let home = src.join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("hello"), "from a home root cannot read\n").unwrap();
    std::os::unix::fs::symlink("/etc", src.join("evil")).unwrap();
    std::os::unix::fs::symlink(".", src.join("up")).unwrap();
    for p in [&home.join("hello"), &home] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A home that root cannot open — on a file system that refuses root as
/// NFS with `root_squash` does (an owner-only FUSE mount; tests/tests/nfs.rs
/// runs the real NFS server) — is opened by a child that became the user
/// and bound into the container; the last logout leaves the user's mount as
/// it was. Then the same account's home is moved (`usermod -d`, with the
/// mount down: its daemon runs as the user) onto a symlink on that mount
/// (to /etc), and onto its real home reached through a symlinked parent:
/// root cannot even look at either, so they are opened as the user too,
/// and that open follows no symlink either: both logins are refused, the
/// log naming the path.
#[test]
fn home_root_cannot_open_is_opened_as_the_user() {
    if !require_root("home_root_cannot_open_is_opened_as_the_user") {
        return;
    }
    let hutch = HutchEnv::new("");
    let place = TestDir::new("htfm");
    let mnt = place.join("mnt");
    let home = mnt.join("home");
    let name = unique("ht");
    let user = TestUser::create_with_home(&name, &hutch.shell, &home);
    let (uid, gid) = (user.uid, user.gid);
    {
        let fs = OwnerOnlyMount::new(&mnt, uid, gid, |src| fill_homes(src, uid, gid));
        // The premise: root is refused, the user is not.
        for p in [home.clone(), mnt.join("evil"), mnt.join("up")] {
            let refused = fs.root_stat(&p).expect_err("root must not reach it");
            assert!(refused.contains("Permission denied"), "{refused}");
        }
        let out = output(fs.command_as(uid, gid, "cat").arg(home.join("hello")));
        assert!(out.status.success(), "{}", out.describe());

        let mut opts = hutch.sshd_opts(Sftp::Internal);
        opts.mount_ns = Some(fs.ns_pid());
        let env = SshdEnv::start(opts);
        env.authorize(&user);
        let out = env.ssh(
            &user,
            &["pwd; cat hello; hostname; readlink /proc/1/exe >/dev/null; cat /proc/1/comm"],
        );
        assert!(out.status.success(), "{}", out.describe());
        assert_eq!(
            out.stdout_str(),
            format!(
                "{}\nfrom a home root cannot read\n{name}\nhutch-init\n",
                home.display()
            ),
            "{}",
            out.describe()
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(20));
        assert!(left.is_empty(), "{left:?}");
        assert!(fs.mounted(), "the teardown touched the user's mount");
        let out = output(fs.command_as(uid, gid, "cat").arg(home.join("hello")));
        assert!(
            out.status.success(),
            "after the teardown: {}",
            out.describe()
        );
    }

    // The account's home a symlink there (to /etc), then its real home
    // through a symlinked parent: opened as the user, still refused.
    for planted in [mnt.join("evil"), mnt.join("up").join("home")] {
        std::fs::remove_dir(&mnt).unwrap();
        run_ok(Command::new("usermod").arg("-d").arg(&planted).arg(&name));
        let fs = OwnerOnlyMount::new(&mnt, uid, gid, |src| fill_homes(src, uid, gid));
        let mut opts = hutch.sshd_opts(Sftp::Internal);
        opts.mount_ns = Some(fs.ns_pid());
        let env = SshdEnv::start(opts);
        env.authorize(&user);
        let out = env.ssh(&user, &["pwd"]);
        assert_ne!(
            out.code(),
            Some(0),
            "{}: {}",
            planted.display(),
            out.describe()
        );
        let why = format!(
            "home of {name}: {} is a symlink or has one in its path",
            planted.display()
        );
        let said = env
            .syslog()
            .wait_for(|l| l.contains(&why), Duration::from_secs(20));
        assert!(said.is_some(), "{why}\n{:#?}", env.syslog().lines());
        let left = hutch.wait_gone(&name, Duration::from_secs(20));
        assert!(left.is_empty(), "{left:?}");
        assert!(fs.mounted(), "the refused login touched the user's mount");
    }
    drop(user);
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    for t in [name.as_str(), tag.as_str()] {
        assert_no_leftovers(t, Duration::from_secs(5));
    }
}
