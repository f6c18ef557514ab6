//! Tests of the whole crate through its public API: every key, unit,
//! precedence rule and error message (the message text is part of the
//! interface).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

pub(crate) fn account(name: &str, uid: u32, groups: &[&str]) -> Account {
    Account {
        name: name.into(),
        uid,
        gid: uid,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        home: PathBuf::from(format!("/home/{name}")),
        shell: "/usr/sbin/hutch-shell".into(),
    }
}

pub(crate) fn alice() -> Account {
    account("alice", 1001, &["alice", "students"])
}

fn parse(text: &str) -> Policy {
    Policy::parse(text, Path::new("hutch.toml"))
        .unwrap_or_else(|e| panic!("policy should parse:\n{e}"))
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
        &HostSettings {
            run_dir: "/run/hutch".into(),
            lib_dir: "/var/lib/hutch".into(),
            cgroup_root: "/hutch".into(),
            net: Default::default(),
            usage_retention: crate::DEFAULT_USAGE_RETENTION,
            usage_db: "/var/lib/hutch/usage.db".into(),
            usage_interval: crate::DEFAULT_USAGE_INTERVAL,
            lxcfs: Some("/var/lib/lxcfs".into()),
        }
    );
    let u = confined(&p, &alice());
    assert_eq!(u.template, "default");
    assert_eq!(u.shell, PathBuf::from("/bin/bash"));
    assert_eq!(u.hostname, "alice");
    assert_eq!(
        u.limits,
        Limits {
            writable_size: 1 << 30,
            ptys_max: Some(crate::resolve::DEFAULT_PTYS),
            ..Limits::default()
        }
    );
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
            BindMount {
                source: "/srv/data/alice".into(),
                target: "/data".into(),
                read_only: true
            },
            BindMount {
                source: "/home/alice/www".into(),
                target: "/var/www".into(),
                read_only: false
            },
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
    assert_eq!(
        p.resolve(&account("root", 0, &["root"]), "sshd"),
        Decision::Exempt("root is never confined".into())
    );
    // Also under another name with uid 0.
    assert_eq!(
        p.resolve(&account("toor", 0, &[]), "sshd"),
        Decision::Exempt("root is never confined".into())
    );
}

/// `[host] usage_retention` takes a duration, `usage_db` an absolute path.
#[test]
fn usage_retention_key() {
    assert_eq!(
        parse("[host]\nusage_retention = \"7d\"\n")
            .host()
            .usage_retention,
        std::time::Duration::from_secs(7 * 86400)
    );
    assert!(error("[host]\nusage_retention = \"soon\"\n").contains("usage_retention"));
    // usage_db: under lib_dir unless set; an absolute path.
    let p = parse("[host]\nlib_dir = \"/srv/hutch\"\n");
    assert_eq!(
        p.host().usage_db,
        std::path::PathBuf::from("/srv/hutch/usage.db")
    );
    let p = parse("[host]\nusage_db = \"/var/log/hutch-usage.db\"\n");
    assert_eq!(
        p.host().usage_db,
        std::path::PathBuf::from("/var/log/hutch-usage.db")
    );
    assert!(error("[host]\nusage_db = \"rel.db\"\n").contains("usage_db"));
    assert_eq!(
        parse("[host]\nusage_interval = \"5m\"\n")
            .host()
            .usage_interval,
        std::time::Duration::from_secs(300)
    );
}

/// enforce = false keeps the would-be decision and says where it came from.
#[test]
fn enforce_false_monitors_with_reason() {
    let p = parse("[defaults]\nmemory = \"1G\"\n[groups.students]\nenforce = false\n[users.bob]\nconfine = false\n");
    let e = p.explain(&alice(), "sshd");
    assert!(
        matches!(e.decision, Decision::Confine(_)),
        "the would-be decision stays"
    );
    assert_eq!(
        e.monitor.as_deref(),
        Some("groups.students: enforce = false (hutch.toml:4:11)")
    );
    assert_eq!(e.get("enforce").unwrap().value, "false");
    // A refusing service is monitored too; an exempt account never is; root never.
    let e = p.explain(&alice(), "systemd-user");
    assert!(matches!(e.decision, Decision::Refuse(_)) && e.monitor.is_some());
    let bob = account("bob", 1003, &["bob", "students"]);
    assert!(p.explain(&bob, "sshd").monitor.is_none());
    let root = account("root", 0, &["root", "students"]);
    assert!(p.explain(&root, "sshd").monitor.is_none());
    // Enforced by default; a user's own `enforce = true` beats the group.
    let p = parse("[groups.students]\nenforce = false\n[users.alice]\nenforce = true\n");
    assert!(p.explain(&alice(), "sshd").monitor.is_none());
    assert!(parse("").explain(&alice(), "sshd").monitor.is_none());
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
    assert!(matches!(
        p.resolve(&account("bob", 1002, &[]), "systemd-user"),
        Decision::Exempt(_)
    ));
    for s in [
        "sshd",
        "login",
        "su",
        "su-l",
        "sudo",
        "cron",
        "some-new-service",
    ] {
        assert!(
            matches!(p.resolve(&alice(), s), Decision::Confine(_)),
            "{s} should confine"
        );
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
    assert_eq!(
        error("[userz.alice]\n"),
        "hutch.toml:1:2: unknown key \"userz\" (did you mean \"users\"?)"
    );
    assert_eq!(
        error("[host]\nrun = \"/x\"\n"),
        "hutch.toml:2:1: host: unknown key \"run\" (known keys: run_dir, lib_dir, cgroup_root, net, usage_retention, usage_db, usage_interval, lxcfs)"
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

/// `seccomp` takes default, off or an absolute path (as SECURITY.md says);
/// any other name is refused where it is written, not at every login.
#[test]
fn seccomp_profile_values() {
    assert_eq!(
        error("[defaults]\nseccomp = \"strict\"\n"),
        "hutch.toml:2:11: defaults.seccomp: invalid seccomp profile \"strict\": expected \"default\", \"off\" or the absolute path of a file of syscall names"
    );
    assert_eq!(
        error("[users.alice]\nseccomp = \"etc/extra\"\n"),
        "hutch.toml:2:11: users.alice.seccomp: invalid seccomp profile \"etc/extra\": expected \"default\", \"off\" or the absolute path of a file of syscall names"
    );
    assert!(error("[defaults]\nseccomp = \"/etc/../x\"\n").contains("contains \"..\""));
    let p = parse(
        "[defaults]\nseccomp = \"off\"\n[users.alice]\nseccomp = \"/etc/hutch/seccomp-extra\"\n",
    );
    assert_eq!(confined(&p, &alice()).seccomp, "/etc/hutch/seccomp-extra");
    let files = p.seccomp_files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "users.alice.seccomp");
    assert_eq!(files[0].2, Path::new("/etc/hutch/seccomp-extra"));
    assert_eq!(files[0].1.to_string(), "hutch.toml:4:11");
}

/// A user name a hostname cannot hold still gives a valid hostname.
#[test]
fn hostname_of_odd_user_name_is_made_valid() {
    let p = parse("");
    assert_eq!(
        confined(&p, &account("john_doe", 1005, &[])).hostname,
        "john-doe"
    );
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
    assert_eq!(
        e.message,
        format!(
            "{}:2:8: defaults.pids: invalid count -1: must be at least 1, or \"none\"",
            f.display()
        )
    );
    let missing = dir.join("nope.toml");
    let e = Policy::load(&missing).unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "reading policy {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

/// A unique, empty temporary directory, removed when the test ends.
struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

fn tempdir() -> Scratch {
    Scratch(
        tempfile::Builder::new()
            .prefix("hutch-policy-test-")
            .tempdir()
            .unwrap(),
    )
}

// ---- phase 2: plans, priorities, services, drop-ins, limits, validation ----

fn sources(files: &[(&str, &str)]) -> Result<Policy, String> {
    let v: Vec<(&str, &Path)> = files
        .iter()
        .map(|(name, text)| (*text, Path::new(*name)))
        .collect();
    Policy::from_sources(&v).map_err(|e| e.message)
}

fn diagnostics(text: &str) -> Vec<String> {
    Policy::check_sources(&[(text, Path::new("hutch.toml"))])
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Every limit key with its units reaches Limits.
#[test]
fn full_limit_set() {
    let p = parse(
        r#"
[defaults]
memory = "2G"
memory_high = "1536M"
swap = "512M"
cpu = "1.5"
cpu_weight = 200
pids = 256
io = [ { device = "/dev/vda", read_bps = "50M", write_bps = "20M", read_iops = 1000, write_iops = 500 } ]
io_weight = 50
writable_size = "2G"
max_sessions = 8
ptys = 16
writable = "persistent"
network = "loopback"
seccomp = "default"
strict = true
"#,
    );
    let u = confined(&p, &alice());
    assert_eq!(
        u.limits,
        Limits {
            memory_max: Some(2 << 30),
            memory_high: Some(1536 << 20),
            swap_max: Some(512 << 20),
            cpu: Some(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000
            }),
            cpu_weight: Some(200),
            cpus: CpusMode::Auto,
            pids_max: Some(256),
            io: vec![IoLimit {
                device: "/dev/vda".into(),
                read_bps: Some(50 << 20),
                write_bps: Some(20 << 20),
                read_iops: Some(1000),
                write_iops: Some(500),
            }],
            io_weight: Some(50),
            writable_size: 2 << 30,
            max_sessions: Some(8),
            ptys_max: Some(16),
            strict: true,
        }
    );
    assert_eq!(u.writable, WritableMode::Persistent);
    // ptys: 64 unless set; "none" leaves the kernel's own limit.
    assert_eq!(confined(&parse(""), &alice()).limits.ptys_max, Some(64));
    assert_eq!(
        confined(&parse("[defaults]\nptys = \"none\"\n"), &alice())
            .limits
            .ptys_max,
        None
    );
    assert_eq!(u.seccomp, "default");
    let pct = parse("[defaults]\ncpu = \"250%\"\n[users.alice]\ncpu = 2\n");
    assert_eq!(
        confined(&pct, &alice()).limits.cpu,
        Some(CpuQuota {
            quota_us: 200_000,
            period_us: 100_000
        })
    );
    assert_eq!(
        confined(&pct, &account("bob", 2, &[])).limits.cpu,
        Some(CpuQuota {
            quota_us: 250_000,
            period_us: 100_000
        })
    );
}

/// Out-of-range values are refused with the key.
#[test]
fn out_of_range_values() {
    assert_eq!(
        error("[defaults]\ncpu_weight = 0\n"),
        "hutch.toml:2:14: defaults.cpu_weight: invalid weight 0: must be between 1 and 10000"
    );
    assert_eq!(
        error("[defaults]\ncpu = \"0.001\"\n"),
        "hutch.toml:2:7: defaults.cpu: invalid cpu \"0.001\": must be at least 0.01 cores (1%)"
    );
    assert_eq!(
        error("[defaults]\nmax_sessions = 0\n"),
        "hutch.toml:2:16: defaults.max_sessions: invalid count 0: must be at least 1, or \"none\""
    );
    assert_eq!(
        error("[defaults]\nmemory = \"1M\"\n"),
        "hutch.toml:2:10: defaults.memory: memory \"1M\" is out of range: a container needs at least 4M"
    );
    assert_eq!(
        error("[defaults]\nwritable_size = \"none\"\n"),
        "hutch.toml:2:17: defaults.writable_size: this size cannot be \"none\""
    );
    assert_eq!(
        error("[defaults]\nio = [ { device = \"/dev/vda\" } ]\n"),
        "hutch.toml:2:8: defaults.io[0]: io device \"/dev/vda\" sets no limit (give read_bps, write_bps, read_iops or write_iops)"
    );
    assert_eq!(
        error("[defaults]\nwritable = \"disk\"\n"),
        "hutch.toml:2:12: defaults.writable: invalid value \"disk\": expected \"ephemeral\", \"persistent\""
    );
}

/// notices is on unless a table turns it off; the most specific table wins.
#[test]
fn notices_on_by_default() {
    let p = parse("[defaults]\nmemory = \"1G\"\n");
    assert!(confined(&p, &account("bob", 2, &[])).notices);
    let p = parse("[groups.lab]\nnotices = false\n[users.alice]\nnotices = true\n");
    assert!(!confined(&p, &account("bob", 2, &["lab"])).notices);
    assert!(confined(&p, &account("alice", 3, &["lab"])).notices);
    assert!(error("[defaults]\nnotices = \"no\"\n").contains("notices"));
}

/// on_logout takes its three forms; linger is its synonym; both in one table is an error.
#[test]
fn on_logout_and_linger() {
    let p = parse(
        "[defaults]\non_logout = \"keep-while-running\"\n[groups.students]\non_logout = \"linger:10m\"\n[users.alice]\nlinger = \"30s\"\n",
    );
    assert_eq!(
        confined(&p, &account("bob", 2, &[])).on_logout,
        OnLogout::KeepWhileRunning
    );
    let carol = confined(&p, &account("carol", 3, &["students"]));
    assert_eq!(
        (carol.on_logout, carol.linger),
        (
            OnLogout::Linger(Duration::from_secs(600)),
            Duration::from_secs(600)
        )
    );
    let a = confined(&p, &alice());
    assert_eq!(
        (a.on_logout, a.linger),
        (
            OnLogout::Linger(Duration::from_secs(30)),
            Duration::from_secs(30)
        )
    );
    assert_eq!(
        error("[defaults]\non_logout = \"kill\"\nlinger = \"5m\"\n"),
        "hutch.toml:3:10: defaults.linger: both linger and on_logout are set (on_logout at hutch.toml:2:13): keep one"
    );
}

/// A plan applies beneath the table that names it; the table's own keys beat the plan's.
#[test]
fn plans_apply_beneath_their_table() {
    let p = parse(
        r#"
[plans.basic]
memory = "512M"
pids = 64
[plans.pro]
memory = "4G"
pids = 1024
cpu = "2"
[defaults]
plan = "basic"
[groups.customers]
plan = "pro"
pids = 500
[users.alice]
plan = "basic"
"#,
    );
    let nobody = confined(&p, &account("nobody2", 5, &[]));
    assert_eq!(
        (nobody.limits.memory_max, nobody.limits.pids_max),
        (Some(512 << 20), Some(64))
    );
    let cust = confined(&p, &account("carl", 6, &["customers"]));
    assert_eq!(
        (cust.limits.memory_max, cust.limits.pids_max),
        (Some(4 << 30), Some(500))
    );
    assert!(cust.limits.cpu.is_some());
    // The user's plan is user-level: it beats the group's own keys.
    let a = confined(&p, &account("alice", 7, &["customers"]));
    assert_eq!(
        (a.limits.memory_max, a.limits.pids_max),
        (Some(512 << 20), Some(64))
    );
    // ...but not keys the plan does not set.
    assert!(a.limits.cpu.is_some());
}

/// Plans must exist, cannot nest, and priority belongs to groups.
#[test]
fn plan_and_priority_errors() {
    assert_eq!(
        error("[plans.pro]\npids = 10\n[users.alice]\nplan = \"por\"\n"),
        "hutch.toml:4:8: users.alice.plan: plan \"por\" is not defined (did you mean \"pro\"?)"
    );
    assert_eq!(
        error("[users.alice]\nplan = \"gold\"\n"),
        "hutch.toml:2:8: users.alice.plan: plan \"gold\" is not defined (no [plans.NAME] table exists)"
    );
    assert_eq!(
        error("[plans.a]\nplan = \"b\"\n[plans.b]\n"),
        "hutch.toml:2:8: plans.a.plan: a plan cannot name another plan"
    );
    assert_eq!(
        error("[users.alice]\npriority = 3\n"),
        "hutch.toml:2:12: users.alice.priority: priority only applies to groups"
    );
}

/// Several groups: the higher priority wins; on a tie the name that sorts first wins, and check warns.
#[test]
fn group_priority_and_tie_rule() {
    let p = parse(
        r#"
[groups.staff]
priority = 10
memory = "8G"
[groups.students]
memory = "1G"
pids = 100
[groups.alumni]
memory = "512M"
"#,
    );
    let both = confined(&p, &account("a", 10, &["students", "staff"]));
    assert_eq!(
        (both.limits.memory_max, both.limits.pids_max),
        (Some(8 << 30), Some(100))
    );
    // The group order of the account does not matter.
    assert_eq!(
        confined(&p, &account("b", 11, &["staff", "students"])),
        confined(&p, &account("b", 11, &["students", "staff"]))
    );
    // Tie at priority 0: "alumni" sorts before "students", so it wins.
    let tie = confined(&p, &account("c", 12, &["students", "alumni"]));
    assert_eq!(tie.limits.memory_max, Some(512 << 20));
    let tie2 = confined(&p, &account("c", 12, &["alumni", "students"]));
    assert_eq!(tie, tie2);
    assert!(p.warnings().iter().any(|w| w.to_string()
        == "hutch.toml:8:9: groups.alumni.memory: groups alumni, students set memory differently at the same priority 0: a user in several of them gets the value of the group whose name sorts first; set priority to decide"));
    assert!(
        p.explain(&account("c", 12, &["students", "alumni"]), "sshd")
            .groups
            == ["students", "alumni"]
    );
}

/// [services]: confine, refuse and ignore override the built-in table; unknown services confine.
#[test]
fn services_rules() {
    let p = parse("[services]\ncron = \"ignore\"\nsudo = \"refuse\"\nsystemd-user = \"confine\"\n");
    assert_eq!(
        p.resolve(&alice(), "cron"),
        Decision::Exempt(
            "service cron ignores confined users (services.cron at hutch.toml:2:8)".into()
        )
    );
    assert_eq!(
        p.resolve(&alice(), "sudo"),
        Decision::Refuse(
            "service sudo refuses confined users (services.sudo at hutch.toml:3:8)".into()
        )
    );
    assert!(matches!(
        p.resolve(&alice(), "systemd-user"),
        Decision::Confine(_)
    ));
    assert!(matches!(p.resolve(&alice(), "xdm"), Decision::Confine(_)));
    assert_eq!(
        error("[services]\nsshd = \"allow\"\n"),
        "hutch.toml:2:8: services.sshd: invalid value \"allow\": expected \"confine\", \"refuse\", \"ignore\""
    );
    assert_eq!(
        diagnostics("[services]\nssh = \"refuse\"\n"),
        ["hutch.toml:2:7: services.ssh: \"ssh\" is not a service hutch knows (did you mean \"sshd\"?); it applies only to a PAM service of exactly that name"]
    );
}

/// Drop-ins overlay the main file key by key, later files winning, and errors name the drop-in.
#[test]
fn drop_ins_overlay_key_by_key() {
    let p = sources(&[
        (
            "hutch.toml",
            "[defaults]\nmemory = \"1G\"\npids = 100\n[users.alice]\nshell = \"/bin/zsh\"\n",
        ),
        (
            "hutch.d/10-limits.toml",
            "[defaults]\nmemory = \"2G\"\n[users.alice]\npids = 50\n",
        ),
        ("hutch.d/20-more.toml", "[defaults]\nmemory = \"3G\"\n"),
    ])
    .unwrap();
    let a = confined(&p, &alice());
    assert_eq!(
        (a.limits.memory_max, a.limits.pids_max, a.shell.clone()),
        (Some(3 << 30), Some(50), PathBuf::from("/bin/zsh"))
    );
    let e = p.explain(&alice(), "sshd");
    assert_eq!(
        e.get("memory").unwrap().origin.to_string(),
        "hutch.d/20-more.toml:2:10 (defaults)"
    );
    assert_eq!(
        sources(&[("hutch.toml", ""), ("hutch.d/10-x.toml", "[defaults]\nmemory = \"lots\"\n")]).unwrap_err(),
        "hutch.d/10-x.toml:2:10: defaults.memory: invalid size \"lots\": expected a number with an optional unit K, M, G or T (e.g. \"512M\")"
    );
}

/// A contradiction across files names both places.
#[test]
fn memory_high_above_memory() {
    assert_eq!(
        sources(&[("hutch.toml", "[defaults]\nmemory = \"1G\"\n"), ("hutch.d/a.toml", "[users.alice]\nmemory_high = \"2G\"\n")]).unwrap_err(),
        "hutch.d/a.toml:2:15: users.alice.memory_high: memory_high \"2G\" is above memory \"1G\" (defaults at hutch.toml:2:10): memory_high must not exceed memory"
    );
}

/// pids must leave room for max_sessions.
#[test]
fn pids_below_max_sessions_need() {
    assert_eq!(
        error("[defaults]\npids = 10\nmax_sessions = 4\n"),
        "hutch.toml:2:8: defaults.pids: pids 10 is too few for max_sessions 4 (defaults at hutch.toml:3:16): each session needs 3 processes (sshd's two and a shell) and the init one, so at least 13"
    );
}

/// Mount targets over root-owned places and paths with ".." are refused.
#[test]
fn forbidden_mounts() {
    for t in [
        "/etc",
        "/etc/ssh",
        "/usr/local/bin",
        "/lib64",
        "/bin",
        "/sbin",
        "/proc",
        "/sys",
        "/dev",
        "/run/hutch/users",
        "/",
    ] {
        let m = error(&format!(
            "[defaults]\nmounts = [ {{ source = \"/srv\", target = \"{t}\" }} ]\n"
        ));
        assert!(m.starts_with(&format!("hutch.toml:2:12: defaults.mounts[0]: mount target \"{t}\" is refused: it would cover ")), "{m}");
    }
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/srv/x\", target = \"/etc/x\" } ]\n"),
        "hutch.toml:2:12: defaults.mounts[0]: mount target \"/etc/x\" is refused: it would cover /etc, which must stay out of the user's reach"
    );
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/srv/../etc\", target = \"/data\" } ]\n"),
        "hutch.toml:2:12: defaults.mounts[0]: invalid mount source \"/srv/../etc\" contains \"..\""
    );
    assert_eq!(
        error("[defaults]\nmounts = [ { source = \"/srv\", target = \"{home}/../../etc\" } ]\n"),
        "hutch.toml:2:12: defaults.mounts[0]: invalid mount target \"{home}/../../etc\" contains \"..\""
    );
}

/// A home that puts a {home} target under a forbidden place refuses that user's login instead of mounting.
#[test]
fn substituted_forbidden_target_refuses() {
    let p =
        parse("[defaults]\nmounts = [ { source = \"/srv/{user}\", target = \"{home}/data\" } ]\n");
    let mut odd = alice();
    odd.home = "/etc/alice".into();
    assert_eq!(
        p.resolve(&odd, "sshd"),
        Decision::Refuse("defaults.mounts (hutch.toml:2:10): mount target \"/etc/alice/data\" is refused: it would cover /etc, which must stay out of the user's reach".into())
    );
}

/// Warnings: a table for root, a missing mount source (only `check` looks at the disk).
#[test]
fn warnings_and_check() {
    assert_eq!(
        diagnostics("[users.root]\nmemory = \"1G\"\n"),
        ["hutch.toml:1:8: users.root: root is never confined: this table has no effect"]
    );
    let dir = tempdir();
    let f = dir.join("hutch.toml");
    std::fs::write(
        &f,
        "[defaults]\nmounts = [ { source = \"/nonexistent/hutch-test\", target = \"/data\" } ]\n",
    )
    .unwrap();
    let r = Policy::check(&f);
    assert!(!r.has_errors());
    assert_eq!(
        r.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("{}:2:10: defaults.mounts[0].source: mount source \"/nonexistent/hutch-test\" does not exist on this host", f.display())]
    );
    assert!(Policy::load(&f).is_ok());
}

/// Policy::load reads hutch.d/*.toml beside the main file in byte-wise order, skipping other files.
#[test]
fn load_reads_drop_in_directory() {
    let dir = tempdir();
    let f = dir.join("hutch.toml");
    std::fs::write(&f, "[defaults]\npids = 10\n").unwrap();
    std::fs::create_dir(dir.join("hutch.d")).unwrap();
    std::fs::write(dir.join("hutch.d/20-b.toml"), "[defaults]\npids = 30\n").unwrap();
    std::fs::write(dir.join("hutch.d/10-a.toml"), "[defaults]\npids = 20\n").unwrap();
    std::fs::write(dir.join("hutch.d/99-z.toml.dpkg-old"), "garbage").unwrap();
    std::fs::write(dir.join("hutch.d/.30-hidden.toml"), "garbage").unwrap();
    let p = Policy::load(&f).unwrap();
    assert_eq!(confined(&p, &alice()).limits.pids_max, Some(30));
    assert_eq!(
        p.files(),
        [
            f.clone(),
            dir.join("hutch.d/10-a.toml"),
            dir.join("hutch.d/20-b.toml")
        ]
    );
    std::fs::write(dir.join("hutch.d/30-c.toml"), "[defaults]\npids = 0\n").unwrap();
    assert_eq!(
        Policy::load(&f).unwrap_err().message,
        format!(
            "{}:2:8: defaults.pids: invalid count 0: must be at least 1, or \"none\"",
            dir.join("hutch.d/30-c.toml").display()
        )
    );
}

/// A staged drop-in directory is checked (and resolved) in place of the
/// main file's own, and a missing one is an error, not an empty policy.
#[test]
fn staged_drop_ins_replace_the_deployed_ones() {
    let dir = tempdir();
    let f = dir.join("hutch.toml");
    std::fs::write(&f, "[defaults]\npids = 10\n").unwrap();
    std::fs::create_dir(dir.join("hutch.d")).unwrap();
    std::fs::write(dir.join("hutch.d/10-a.toml"), "[defaults]\npids = 20\n").unwrap();
    let staged = dir.join("staged");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("10-a.toml"), "[defaults]\npids = 0\n").unwrap();
    let r = Policy::check_with_drop_ins(&f, &staged);
    assert!(r.policy.is_none());
    assert_eq!(
        r.diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "{}:2:8: defaults.pids: invalid count 0: must be at least 1, or \"none\"",
            staged.join("10-a.toml").display()
        )]
    );
    assert_eq!(r.files, [f.clone(), staged.join("10-a.toml")]);
    std::fs::write(staged.join("10-a.toml"), "[defaults]\npids = 40\n").unwrap();
    let p = Policy::load_with_drop_ins(&f, &staged).unwrap();
    assert_eq!(confined(&p, &alice()).limits.pids_max, Some(40));
    // The deployed policy is what it was.
    assert_eq!(
        confined(&Policy::load(&f).unwrap(), &alice())
            .limits
            .pids_max,
        Some(20)
    );
    let missing = dir.join("nonexistent.d");
    assert_eq!(
        Policy::load_with_drop_ins(&f, &missing)
            .unwrap_err()
            .message,
        format!("drop-in directory {} does not exist", missing.display())
    );
}

/// Every error of every file is reported, one a line.
#[test]
fn all_errors_reported() {
    let e = sources(&[
        (
            "hutch.toml",
            "[users.a]\nplan = \"x\"\n[users.b]\npriority = 1\n",
        ),
        ("hutch.d/1.toml", "[defaults]\nbogus = 1\n"),
    ])
    .unwrap_err();
    assert_eq!(
        e.lines().collect::<Vec<_>>(),
        [
            "hutch.d/1.toml:2:1: defaults: unknown key \"bogus\" (known keys: confine, enforce, plan, priority, template, shell, hostname, memory, memory_high, swap, cpu, cpu_weight, cpus, pids, io, io_weight, writable_size, writable, max_sessions, ptys, on_logout, linger, mounts, network, egress_deny, egress_allow, rate_in, rate_out, conntrack, net_device, vlan_id, seccomp, strict, notices)",
            "hutch.toml:2:8: users.a.plan: plan \"x\" is not defined (no [plans.NAME] table exists)",
            "hutch.toml:4:12: users.b.priority: priority only applies to groups",
        ]
    );
}

/// explain names each value's origin: file and line, plan via table, or built-in.
#[test]
fn explain_shows_origins() {
    let p = parse(
        "[plans.pro]\nmemory = \"4G\"\n[groups.staff]\nplan = \"pro\"\npids = 300\n[users.alice]\nhostname = \"{user}-dev\"\n",
    );
    let e = p.explain(&account("alice", 1001, &["staff"]), "sshd");
    let show = |k: &str| {
        let x = e.get(k).unwrap();
        format!("{} = {}  # {}", x.key, x.value, x.origin)
    };
    assert_eq!(
        show("memory"),
        "memory = \"4G\"  # hutch.toml:2:10 (plans.pro via groups.staff)"
    );
    assert_eq!(show("pids"), "pids = 300  # hutch.toml:5:8 (groups.staff)");
    assert_eq!(
        show("hostname"),
        "hostname = \"alice-dev\"  # hutch.toml:7:12 (users.alice)"
    );
    assert_eq!(show("shell"), "shell = \"/bin/bash\"  # built-in default");
    assert_eq!(show("confine"), "confine = true  # built-in default");
    assert_eq!(e.service_mode, ServiceMode::Confine);
    assert_eq!(e.entries.len(), 31);
    assert_eq!(show("notices"), "notices = true  # built-in default");
    assert_eq!(show("conntrack"), "conntrack = 8192  # built-in default");
}

/// The shipped default policy parses, and the rule keys are all documented in the man page.
#[test]
fn packaged_files_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let toml = root.join("packaging/hutch.toml");
    if let Ok(text) = std::fs::read_to_string(&toml) {
        Policy::parse(&text, &toml).unwrap();
    }
    if let Ok(man) = std::fs::read_to_string(root.join("packaging/man/hutch.toml.5")) {
        for k in RULE_KEYS.iter().chain(crate::HOST_KEYS) {
            assert!(
                man.contains(&format!(".B {k}")) || man.contains(&format!("\\fB{k}\\fR")),
                "hutch.toml(5) does not document {k}"
            );
        }
    }
}

// ---- properties (a small seeded generator: no extra dependency) -------------

/// splitmix64: deterministic, so a failure names its seed and reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Limit keys whose smaller value is tighter, and how to write a value of each (None = "none").
const TIGHTEN_KEYS: &[&str] = &["memory", "swap", "cpu", "pids", "writable_size"];

fn write_value(key: &str, v: Option<u64>) -> String {
    match (key, v) {
        ("writable_size", None) => "\"1G\"".into(),
        (_, None) => "\"none\"".into(),
        ("memory" | "swap" | "writable_size", Some(mb)) => format!("\"{mb}M\""),
        ("cpu", Some(pct)) => format!("\"{pct}%\""),
        (_, Some(n)) => n.to_string(),
    }
}

fn random_value(rng: &mut Rng, key: &str) -> Option<u64> {
    if key != "writable_size" && rng.chance(15) {
        return None;
    }
    Some(match key {
        "cpu" => 1 + rng.below(400),
        "pids" => 1 + rng.below(2000),
        _ => 4 + rng.below(8000),
    })
}

/// A random file of tables, each a list of (key, value); returns (scope, key, value) triples too.
fn random_policy(rng: &mut Rng) -> Vec<(String, &'static str, Option<u64>)> {
    let mut out = Vec::new();
    let scopes = [
        "defaults",
        "plans.p1",
        "plans.p2",
        "groups.g1",
        "groups.g2",
        "groups.g3",
        "users.u1",
        "users.u2",
    ];
    for s in scopes {
        for k in TIGHTEN_KEYS {
            if rng.chance(40) {
                out.push((s.to_string(), *k, random_value(rng, k)));
            }
        }
    }
    out
}

fn render(entries: &[(String, &'static str, Option<u64>)], extra: &[(String, String)]) -> String {
    let mut text = String::new();
    let mut scopes: Vec<&String> = entries
        .iter()
        .map(|e| &e.0)
        .chain(extra.iter().map(|e| &e.0))
        .collect();
    scopes.sort();
    scopes.dedup();
    for s in scopes {
        text.push_str(&format!("[{s}]\n"));
        for (_, k, v) in entries.iter().filter(|e| &e.0 == s) {
            text.push_str(&format!("{k} = {}\n", write_value(k, *v)));
        }
        for (_, line) in extra.iter().filter(|e| &e.0 == s) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn limits_of(p: &Policy, a: &Account) -> [Option<u64>; 5] {
    let l = confined(p, a).limits;
    [
        l.memory_max,
        l.swap_max,
        l.cpu.map(|c| c.quota_us),
        l.pids_max,
        Some(l.writable_size),
    ]
}

fn random_account(rng: &mut Rng) -> Account {
    let name = ["u1", "u2", "u3"][rng.below(3) as usize];
    let groups: Vec<&str> = ["g1", "g2", "g3", "g4"]
        .into_iter()
        .filter(|_| rng.chance(50))
        .collect();
    account(name, 1000 + rng.below(100) as u32, &groups)
}

/// Structure shared by a base file and its drop-in: plans and priorities (not limits).
fn random_structure(rng: &mut Rng) -> Vec<(String, String)> {
    let mut extra = Vec::new();
    for s in [
        "defaults",
        "groups.g1",
        "groups.g2",
        "groups.g3",
        "users.u1",
        "users.u2",
    ] {
        if rng.chance(30) {
            extra.push((s.to_string(), format!("plan = \"p{}\"", 1 + rng.below(2))));
        }
        if s.starts_with("groups") && rng.chance(50) {
            extra.push((s.to_string(), format!("priority = {}", rng.below(3))));
        }
    }
    extra.push(("plans.p1".into(), String::new()));
    extra.push(("plans.p2".into(), String::new()));
    extra
}

/// A drop-in that only tightens values the main file sets never loosens any user's effective limit.
#[test]
fn property_tightening_drop_in_never_loosens() {
    for seed in 0..400u64 {
        let mut rng = Rng(seed);
        let base = random_policy(&mut rng);
        let structure = random_structure(&mut rng);
        let main = render(&base, &structure);
        let mut tighter = Vec::new();
        for (s, k, v) in &base {
            if rng.chance(50) {
                let nv = match (*k, v) {
                    ("writable_size", None) => Some(4 + rng.below(1024)),
                    (_, None) => random_value(&mut rng, k),
                    (_, Some(n)) => Some(1.max(n - rng.below(*n))).map(|x| {
                        if *k == "memory" {
                            x.max(4)
                        } else {
                            x
                        }
                    }),
                };
                tighter.push((s.clone(), *k, nv));
            }
        }
        let drop_in = render(&tighter, &[]);
        let before = Policy::parse(&main, Path::new("hutch.toml"))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{main}"));
        let after = sources(&[("hutch.toml", &main), ("hutch.d/50-tighten.toml", &drop_in)])
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{drop_in}"));
        for _ in 0..8 {
            let a = random_account(&mut rng);
            let (b, t) = (limits_of(&before, &a), limits_of(&after, &a));
            for i in 0..5 {
                let looser = match (b[i], t[i]) {
                    (Some(x), Some(y)) => y > x,
                    (Some(_), None) => true,
                    _ => false,
                };
                assert!(!looser, "seed {seed}: {} loosened for {a:?}: {:?} -> {:?}\nmain:\n{main}\ndrop-in:\n{drop_in}", TIGHTEN_KEYS[i], b[i], t[i]);
            }
        }
    }
}

/// The order in which NSS lists an account's groups never changes the result.
#[test]
fn property_group_order_does_not_matter() {
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let main = render(&random_policy(&mut rng), &random_structure(&mut rng));
        let p = Policy::parse(&main, Path::new("hutch.toml")).unwrap();
        let a = random_account(&mut rng);
        let mut reversed = a.clone();
        reversed.groups.reverse();
        assert_eq!(
            p.resolve(&a, "sshd"),
            p.resolve(&reversed, "sshd"),
            "seed {seed}\n{main}"
        );
    }
}

/// Random damage to a valid file never panics the parser: it parses or is refused with a located message.
#[test]
fn property_damaged_files_never_panic() {
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/hutch.toml"),
    )
    .unwrap_or_else(|_| render(&random_policy(&mut Rng(7)), &random_structure(&mut Rng(7))));
    let pieces = [
        "=", "\"", "[", "]", "{", "}", ",", "\n", "1G", "-1", "..", "{user}", "é", "#", "[[x]]",
        "1e99", "\"none\"",
    ];
    for seed in 0..1500u64 {
        let mut rng = Rng(seed);
        let mut text = sample.clone();
        for _ in 0..1 + rng.below(4) {
            let mut at = rng.below(text.len() as u64 + 1) as usize;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if rng.chance(50) {
                text.insert_str(at, pieces[rng.below(pieces.len() as u64) as usize]);
            } else {
                let mut end = (at + 1 + rng.below(8) as usize).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, "");
            }
        }
        if let Err(e) = Policy::parse(&text, Path::new("hutch.toml")) {
            assert!(
                e.message.lines().all(|l| l.starts_with("hutch.toml:")),
                "seed {seed}: unlocated error {e}"
            );
        }
    }
}

/// Timing of load and resolve for a 10,000-user, 1,000-group, 50-plan file (run with --ignored --nocapture; bench/ owns the real benchmark).
#[test]
#[ignore]
fn timing_large_policy() {
    let mut text = String::from("[defaults]\nmemory = \"1G\"\npids = 512\n");
    for p in 0..50 {
        text.push_str(&format!(
            "[plans.p{p}]\nmemory = \"{}M\"\ncpu = \"{}%\"\n",
            256 + p,
            50 + p
        ));
    }
    for g in 0..1000 {
        text.push_str(&format!(
            "[groups.g{g}]\nplan = \"p{}\"\npriority = {}\npids = {}\n",
            g % 50,
            g % 7,
            100 + g
        ));
    }
    for u in 0..10_000 {
        text.push_str(&format!("[users.u{u}]\nmemory = \"{}M\"\n", 300 + u % 1000));
    }
    let a = account("u5000", 6000, &["g1", "g2", "g3"]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let p = Policy::parse(&text, Path::new("big.toml")).unwrap();
        let _ = p.resolve(&a, "sshd");
        times.push(t.elapsed());
    }
    times.sort();
    println!("{} bytes: median parse+resolve {:?}", text.len(), times[2]);
    let t = std::time::Instant::now();
    let _: toml::Table = toml::from_str(&text).unwrap();
    println!(
        "of which the TOML parser alone (into a plain table): {:?}",
        t.elapsed()
    );
    // What a login pays: the on-disk cache (racy window zero: the file is new).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hutch.toml");
    std::fs::write(&config, &text).unwrap();
    let cache = dir.path().join("cache");
    assert_eq!(
        crate::cache::load_cached(&config, &cache, Duration::ZERO).1,
        crate::CacheUse::Written
    );
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = std::time::Instant::now();
        let (p, used) = crate::cache::load_cached(&config, &cache, Duration::ZERO);
        assert_eq!(used, crate::CacheUse::Hit);
        let _ = p.unwrap().resolve(&a, "sshd");
        times.push(t.elapsed());
    }
    times.sort();
    println!("median cached load+resolve {:?} (budget 2ms)", times[10]);
}

// ---- memory that behaves for interactive users (issue 14) -------------------

/// Without `memory_high`, a memory limit brings pressure at 90 % of it
/// (page-aligned); `"none"` turns it off, an explicit value wins, and
/// without a memory limit there is none.
#[test]
fn memory_high_defaults_below_memory() {
    let u = confined(&parse("[defaults]\nmemory = \"512M\"\n"), &alice());
    assert_eq!(u.limits.memory_max, Some(512 << 20));
    assert_eq!(u.limits.memory_high, Some(483_183_820 & !4095));
    assert!(u.limits.memory_high.unwrap() < u.limits.memory_max.unwrap());
    let u = confined(
        &parse("[defaults]\nmemory = \"512M\"\nmemory_high = \"none\"\n"),
        &alice(),
    );
    assert_eq!(u.limits.memory_high, None);
    let u = confined(
        &parse("[defaults]\nmemory = \"512M\"\nmemory_high = \"500M\"\n"),
        &alice(),
    );
    assert_eq!(u.limits.memory_high, Some(500 << 20));
    let u = confined(&parse("[defaults]\nmemory = \"none\"\n"), &alice());
    assert_eq!(u.limits.memory_high, None);
    let u = confined(&parse(""), &alice());
    assert_eq!(u.limits.memory_high, None);
    // A user's own memory moves the default with it.
    let u = confined(
        &parse("[defaults]\nmemory = \"512M\"\n[users.alice]\nmemory = \"1G\"\n"),
        &alice(),
    );
    assert_eq!(u.limits.memory_high, Some(default_memory_high(1 << 30)));
}

/// `[host] lxcfs`: Debian's mount point by default, another absolute path,
/// or "none"; a relative path is refused naming the key.
#[test]
fn host_lxcfs() {
    assert_eq!(
        parse("").host().lxcfs,
        Some(PathBuf::from("/var/lib/lxcfs"))
    );
    assert_eq!(
        parse("[host]\nlxcfs = \"/srv/lxcfs\"\n").host().lxcfs,
        Some(PathBuf::from("/srv/lxcfs"))
    );
    assert_eq!(parse("[host]\nlxcfs = \"none\"\n").host().lxcfs, None);
    let e = error("[host]\nlxcfs = \"lxcfs\"\n");
    assert!(e.contains("lxcfs") && e.contains("\"none\""), "{e}");
}

/// `cpus`: "auto" unless set, "none" in a table, anything else refused.
#[test]
fn cpus_key() {
    assert_eq!(confined(&parse(""), &alice()).limits.cpus, CpusMode::Auto);
    let u = confined(&parse("[users.alice]\ncpus = \"none\"\n"), &alice());
    assert_eq!(u.limits.cpus, CpusMode::All);
    let e = error("[defaults]\ncpus = \"2\"\n");
    assert!(e.contains("\"auto\", \"none\""), "{e}");
}
