//! Tests of the whole crate through its public API: every key, unit,
//! precedence rule and error message (the message text is part of the
//! interface).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn account(name: &str, uid: u32, groups: &[&str]) -> Account {
    Account {
        name: name.into(),
        uid,
        gid: uid,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        home: PathBuf::from(format!("/home/{name}")),
        shell: "/usr/sbin/hutch-shell".into(),
    }
}

fn alice() -> Account {
    account("alice", 1001, &["alice", "students"])
}

fn parse(text: &str) -> Policy {
    Policy::parse(text, Path::new("hutch.toml")).unwrap_or_else(|e| panic!("policy should parse:\n{e}"))
}

fn error(text: &str) -> String {
    match Policy::parse(text, Path::new("hutch.toml")) {
        Ok(_) => panic!("policy should be refused:\n{text}"),
        Err(e) => e.message,
    }
}

fn confined(p: &Policy, a: &Account) -> UserPolicy {
    match p.resolve(a, "sshd") {
        Decision::Confine(u) => *u,
        other => panic!("expected Confine, got {other:?}"),
    }
}

// ---- phase 1: the minimal policy -------------------------------------------

/// An empty file is a valid policy: everyone but root confined with the built-in defaults.
#[test]
fn empty_file_gives_builtin_defaults() {
    let p = parse("");
    assert_eq!(
        p.host(),
        &HostSettings { run_dir: "/run/hutch".into(), lib_dir: "/var/lib/hutch".into(), cgroup_root: "/hutch".into() }
    );
    let u = confined(&p, &alice());
    assert_eq!(u.template, "default");
    assert_eq!(u.shell, PathBuf::from("/bin/bash"));
    assert_eq!(u.hostname, "alice");
    assert_eq!(u.limits, Limits { writable_size: 1 << 30, ..Limits::default() });
    assert_eq!(u.linger, Duration::ZERO);
    assert_eq!(u.on_logout, OnLogout::Kill);
    assert!(u.mounts.is_empty());
    assert_eq!(u.network, Network::Loopback);
}

/// Every phase-1 key is read, with its units, and the host settings too.
#[test]
fn all_basic_keys() {
    let p = parse(
        r#"
[host]
run_dir = "/tmp/run"
lib_dir = "/tmp/lib"
cgroup_root = "hutch-ci"

[template]
name = "bookworm"

[defaults]
confine = true
shell = "/bin/zsh"
hostname = "{user}-{uid}.box"
memory = "1G"
pids = 512
linger = "5m"
writable_size = "256M"
mounts = [
  { source = "/srv/data/{user}", target = "/data" },
  { source = "{home}/www", target = "/var/www", mode = "rw" },
]
"#,
    );
    assert_eq!(p.host().run_dir, PathBuf::from("/tmp/run"));
    assert_eq!(p.host().lib_dir, PathBuf::from("/tmp/lib"));
    assert_eq!(p.host().cgroup_root, "hutch-ci");
    let u = confined(&p, &alice());
    assert_eq!(u.template, "bookworm");
    assert_eq!(u.shell, PathBuf::from("/bin/zsh"));
    assert_eq!(u.hostname, "alice-1001.box");
    assert_eq!(u.limits.memory_max, Some(1 << 30));
    assert_eq!(u.limits.pids_max, Some(512));
    assert_eq!(u.limits.writable_size, 256 << 20);
    assert_eq!(u.linger, Duration::from_secs(300));
    assert_eq!(u.on_logout, OnLogout::Linger(Duration::from_secs(300)));
    assert_eq!(
        u.mounts,
        vec![
            BindMount { source: "/srv/data/alice".into(), target: "/data".into(), read_only: true },
            BindMount { source: "/home/alice/www".into(), target: "/var/www".into(), read_only: false },
        ]
    );
}

/// User beats group beats defaults, key by key.
#[test]
fn user_over_groups_over_defaults() {
    let p = parse(
        r#"
[defaults]
memory = "1G"
pids = 100
shell = "/bin/sh"
[groups.students]
memory = "2G"
pids = 200
[users.alice]
memory = "3G"
"#,
    );
    let u = confined(&p, &alice());
    assert_eq!(u.limits.memory_max, Some(3 << 30));
    assert_eq!(u.limits.pids_max, Some(200));
    assert_eq!(u.shell, PathBuf::from("/bin/sh"));
    let bob = confined(&p, &account("bob", 1002, &["bob"]));
    assert_eq!(bob.limits.memory_max, Some(1 << 30));
    assert_eq!(bob.limits.pids_max, Some(100));
}

/// "none" lifts a limit a lower layer set.
#[test]
fn none_lifts_a_limit() {
    let p = parse("[defaults]\nmemory = \"1G\"\npids = 10\n[users.alice]\nmemory = \"none\"\npids = \"none\"\n");
    let u = confined(&p, &alice());
    assert_eq!(u.limits.memory_max, None);
    assert_eq!(u.limits.pids_max, None);
}

/// Root is never confined, whatever the policy says.
#[test]
fn root_is_never_confined() {
    let p = parse("[users.root]\nconfine = true\n[defaults]\nconfine = true\n");
    assert_eq!(p.resolve(&account("root", 0, &["root"]), "sshd"), Decision::Exempt("root is never confined".into()));
    // Also under another name with uid 0.
    assert_eq!(p.resolve(&account("toor", 0, &[]), "sshd"), Decision::Exempt("root is never confined".into()));
}

/// confine = false exempts, and the reason names the table and place.
#[test]
fn confine_false_exempts_with_reason() {
    let p = parse("[users.bob]\nconfine = false\n\n[groups.admins]\nconfine = false\n");
    assert_eq!(
        p.resolve(&account("bob", 1002, &[]), "sshd"),
        Decision::Exempt("users.bob: confine = false (hutch.toml:2:11)".into())
    );
    assert_eq!(
        p.resolve(&account("carol", 1003, &["admins"]), "sshd"),
        Decision::Exempt("groups.admins: confine = false (hutch.toml:5:11)".into())
    );
}

/// systemd-user is refused for confined users and ignored for exempt ones.
#[test]
fn systemd_user_is_refused_for_confined() {
    let p = parse("[users.bob]\nconfine = false\n");
    assert_eq!(
        p.resolve(&alice(), "systemd-user"),
        Decision::Refuse(
            "service systemd-user refuses confined users (built-in: a user manager outside the container would be an escape)".into()
        )
    );
    assert!(matches!(p.resolve(&account("bob", 1002, &[]), "systemd-user"), Decision::Exempt(_)));
    for s in ["sshd", "login", "su", "su-l", "sudo", "cron", "some-new-service"] {
        assert!(matches!(p.resolve(&alice(), s), Decision::Confine(_)), "{s} should confine");
    }
}

/// A TOML syntax error names file, line and column.
#[test]
fn syntax_error_has_file_line_column() {
    let m = error("[defaults]\nmemory = \n");
    assert!(m.starts_with("hutch.toml:2:10: "), "{m}");
}

/// An unknown key names file, line, column, the table and a did-you-mean.
#[test]
fn unknown_key_with_did_you_mean() {
    assert_eq!(
        error("[defaults]\nmemroy = \"1G\"\n"),
        "hutch.toml:2:1: defaults: unknown key \"memroy\" (did you mean \"memory\"?)"
    );
    assert_eq!(
        error("[users.alice]\nshel = \"/bin/sh\"\n"),
        "hutch.toml:2:1: users.alice: unknown key \"shel\" (did you mean \"shell\"?)"
    );
    assert_eq!(error("[userz.alice]\n"), "hutch.toml:1:2: unknown key \"userz\" (did you mean \"users\"?)");
    assert_eq!(
        error("[host]\nrun = \"/x\"\n"),
        "hutch.toml:2:1: host: unknown key \"run\" (known keys: run_dir, lib_dir, cgroup_root)"
    );
}

/// A wrong type names the key.
#[test]
fn wrong_type_names_key() {
    assert_eq!(
        error("[defaults]\nconfine = \"yes\"\n"),
        "hutch.toml:2:11: defaults.confine: invalid type: string \"yes\", expected a boolean"
    );
}

/// A bad unit names the key and says which units exist.
#[test]
fn bad_unit_names_key() {
    assert_eq!(
        error("[groups.students]\nmemory = \"1X\"\n"),
        "hutch.toml:2:10: groups.students.memory: invalid size \"1X\": unknown unit \"X\" (use K, M, G or T, powers of 1024, or plain bytes)"
    );
    assert_eq!(
        error("[defaults]\nlinger = \"5 minutes\"\n"),
        "hutch.toml:2:10: defaults.linger: invalid duration \"5 minutes\": unknown unit \" minutes\", use s, m, h or d (e.g. \"0\", \"30s\", \"5m\", \"1h30m\")"
    );
}

/// The shell must be absolute; the hostname pattern must give a valid hostname.
#[test]
fn shell_and_hostname_checks() {
    assert_eq!(
        error("[defaults]\nshell = \"bash\"\n"),
        "hutch.toml:2:9: defaults.shell: invalid path \"bash\" is not an absolute path"
    );
    assert_eq!(
        error("[defaults]\nhostname = \"{user}_box\"\n"),
        "hutch.toml:2:12: defaults.hostname: invalid hostname \"{user}_box\": '_' is not allowed (use letters, digits, \"-\" and \".\")"
    );
    assert_eq!(
        error("[defaults]\nhostname = \"{home}\"\n"),
        "hutch.toml:2:12: defaults.hostname: invalid hostname \"{home}\": unknown placeholder \"{home}\" (known: {user} and {uid})"
    );
}

/// A user name a hostname cannot hold still gives a valid hostname.
#[test]
fn hostname_of_odd_user_name_is_made_valid() {
    let p = parse("");
    assert_eq!(confined(&p, &account("john_doe", 1005, &[])).hostname, "john-doe");
}

/// Mount errors: bad mode, unknown placeholder, relative path, an unknown key in a mount.
#[test]
fn mount_shape_errors() {
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/a\", target = \"/b\", mode = \"wr\" } ]\n"),
        "hutch.toml:2:12: defaults.mounts[0]: invalid mount mode \"wr\": expected \"ro\" or \"rw\""
    );
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/a/{name}\", target = \"/b\" } ]\n"),
        "hutch.toml:2:12: defaults.mounts[0]: invalid mount source \"/a/{name}\": unknown placeholder \"{name}\" (known: {user}, {uid} and {home})"
    );
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/a\", target = \"b\" } ]\n"),
        "hutch.toml:2:12: defaults.mounts[0]: invalid mount target \"b\" is not an absolute path"
    );
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/a\", target = \"/b\", ro = true } ]\n"),
        "hutch.toml:2:44: defaults.mounts[0]: unknown key \"ro\" (known keys: source, target, mode)"
    );
}

/// Several tables may set the same key for the same user in one file without conflict; `[template] name` is overridden by a table's template.
#[test]
fn template_per_table() {
    let p = parse("[template]\nname = \"base\"\n[groups.students]\ntemplate = \"edu\"\n");
    assert_eq!(confined(&p, &alice()).template, "edu");
    assert_eq!(confined(&p, &account("bob", 1002, &[])).template, "base");
    assert_eq!(
        error("[template]\nname = \"../x\"\n"),
        "hutch.toml:2:8: template.name: invalid name \"../x\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 64"
    );
}

/// Policy::load reads a file and names it in errors; a missing file is an error naming it.
#[test]
fn load_names_the_file() {
    let dir = tempdir();
    let f = dir.join("hutch.toml");
    std::fs::write(&f, "[defaults]\npids = -1\n").unwrap();
    let e = Policy::load(&f).unwrap_err();
    assert_eq!(e.message, format!("{}:2:8: defaults.pids: invalid count -1: must be at least 1, or \"none\"", f.display()));
    let missing = dir.join("nope.toml");
    let e = Policy::load(&missing).unwrap_err();
    assert_eq!(e.message, format!("reading policy {}: No such file or directory (os error 2)", missing.display()));
}

/// A unique, empty temporary directory (removed by the OS's tmp cleaning; tests do not share it).
fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!("hutch-policy-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
