//! The escape suite (`tests/escape/`): confined users try to get out, and
//! every attempt must fail. It runs as a matrix: a login shell of
//! hutch-shell and one of the template's /bin/bash; entry through sshd,
//! `su -`, `su -s /bin/sh` and a real cron daemon's crontab entry; the
//! container's network `none` and `veth`. Each cell runs the whole batch.
//! A second confined user (the victim) runs beside the attackers with
//! things to reach: an abstract socket, a TCP listener, files in /tmp and
//! /dev/shm, a SysV queue.
//!
//! The attempts live in `tests/escape/attack.c` (built statically with gcc
//! here, copied into the attackers' homes, each attempt in its own forked
//! child) and a few here: setuid and file-capability binaries in the home
//! and the writable layer, the template's setuid binaries, a symlink planted
//! in the home between sessions to redirect a policy mount at the next
//! login, names planted in the layer for `hutchctl diff` to follow. The
//! sshd, su and cron of a network share one "host": the sshd's private
//! network and mount namespaces, where su and cron run through `nsenter`
//! with the sshd's PAM files (the test's own). The suite prints `N attempts,
//! 0 escapes` (a tally) and fails listing every escape.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hutch_tests::*;

const VICTIM_PORT: u16 = 7777;
/// The policy's `ptys` and `pids`: the batch's pool attempts check them.
const PTYS: u32 = 16;
const PIDS: u32 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    None,
    Veth,
}

impl Net {
    fn label(self) -> &'static str {
        match self {
            Net::None => "none",
            Net::Veth => "veth",
        }
    }
}

/// How a cell's session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Sshd,
    SuLogin,
    SuShell,
    Cron,
}

impl Entry {
    const ALL: [Entry; 4] = [Entry::Sshd, Entry::SuLogin, Entry::SuShell, Entry::Cron];
    fn label(self) -> &'static str {
        match self {
            Entry::Sshd => "sshd",
            Entry::SuLogin => "su-l",
            Entry::SuShell => "su-s",
            Entry::Cron => "cron",
        }
    }
}

fn policy(net: Net, leases: &Path) -> String {
    let host = match net {
        Net::None => String::new(),
        Net::Veth => format!("[host.net]\nleases = \"{}\"\n\n", leases.display()),
    };
    let network = match net {
        Net::None => "none",
        Net::Veth => "veth",
    };
    format!(
        "{host}[defaults]\nhostname = \"box-{{user}}\"\nmemory = \"1G\"\npids = {PIDS}\nptys = {PTYS}\nnetwork = \"{network}\"\n\
         mounts = [ {{ source = \"{{home}}/.pm-src\", target = \"{{home}}/sub/pm\", mode = \"rw\" }} ]\n"
    )
}

/// One attempt's outcome.
#[derive(Debug)]
struct Attempt {
    name: String,
    escaped: bool,
    detail: String,
}

/// The batch's attempt lines, and whether it reached its end.
fn parse(cell: &str, text: &str) -> (Vec<Attempt>, bool) {
    let mut out = Vec::new();
    let mut ended = false;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("HUTCH-ATTEMPT ") {
            let mut f = rest.splitn(3, '\t');
            let name = f.next().unwrap_or("").to_string();
            let verdict = f.next().unwrap_or("");
            let detail = f.next().unwrap_or("").to_string();
            out.push(Attempt {
                name: format!("{cell}/{name}"),
                escaped: verdict != "blocked",
                detail,
            });
        } else if line.starts_with("HUTCH-END ") {
            ended = true;
        }
    }
    (out, ended && text.contains("HUTCH-BATCH-DONE"))
}

fn give(path: &Path, user: &TestUser, mode: u32) {
    chown(path, Some(user.uid), Some(user.gid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Compiles the attack program statically into `dir`.
fn build_attack(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("escape/attack.c");
    let bin = dir.join("attack");
    let out = output(
        Command::new("gcc")
            .args(["-static", "-O1", "-w", "-o"])
            .arg(&bin)
            .arg(&src),
    );
    assert!(
        out.status.success(),
        "building {}: {}",
        src.display(),
        out.describe()
    );
    bin
}

fn euid_line(text: &str, tag: &str) -> Option<(u32, String)> {
    let line = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with(tag))?;
    let mut f = line[tag.len()..].split_whitespace();
    let euid = f.next()?.parse().ok()?;
    let caps = f.next().unwrap_or("").to_string();
    Some((euid, caps))
}

/// What the batch printed beside attack.c's lines: the setuid and
/// file-capability copies, the template's setuid binaries.
fn host_side_checks(cell: &str, text: &str, setcap_ok: bool, layer_ok: bool) -> Vec<Attempt> {
    let mut results = Vec::new();
    let mut uid_check = |tag: &str, name: &str| {
        let name = format!("{cell}/{name}");
        results.push(match euid_line(text, tag) {
            Some((euid, caps)) => Attempt {
                name,
                escaped: euid == 0 || !caps.trim_start_matches('0').is_empty(),
                detail: format!("euid {euid}, CapEff {caps}"),
            },
            None => Attempt {
                name,
                escaped: false,
                detail: "did not run (exec refused)".into(),
            },
        })
    };
    uid_check("SUID-EUID ", "setuid-root-binary-in-home");
    if setcap_ok {
        uid_check("CAP-EUID ", "file-caps-binary-in-home");
    }
    if layer_ok {
        uid_check("LAYER-EUID ", "setuid-root-binary-in-writable-layer");
    }
    for (tag, name) in [
        ("TEMPLATE-SUID-MOUNT=", "template-setuid-mount"),
        ("TEMPLATE-SU=", "template-setuid-su"),
    ] {
        let v = text
            .lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(tag))
            .unwrap_or("missing");
        results.push(Attempt {
            name: format!("{cell}/{name}"),
            escaped: v != "blocked",
            detail: format!("{tag}{v}"),
        });
    }
    results
}

/// An attacker: the account, its shell's label, the batch script in its home.
struct Attacker {
    user: TestUser,
    shell: &'static str,
    batch: String,
    layer_ok: bool,
    setcap_ok: bool,
}

/// Things every attacker's batch names: the victim and the host side.
struct Targets {
    victim_name: String,
    victim_home: String,
    victim_uid: u32,
    victim_pid: i32,
    victim_ip: String,
    sshd_pid: i32,
    sshd_port: u16,
    host_secret: String,
}

/// The attacker's home: the attack binary, root-made things (a setuid-root
/// copy, a copy with file capabilities, a device node: as an admin's
/// mistake, a restored backup or a shared file could put there; the home
/// is bound nosuid,nodev and the user has no_new_privs: all must be inert),
/// and the policy mount's source.
fn arm(user: &TestUser, attack: &Path) -> bool {
    let src = user.home.join(".pm-src");
    std::fs::create_dir_all(&src).unwrap();
    give(&src, user, 0o755);
    let a = user.home.join("attack");
    std::fs::copy(attack, &a).unwrap();
    give(&a, user, 0o755);
    let suid = user.home.join("suid-attack");
    std::fs::copy(attack, &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let capbin = user.home.join("cap-attack");
    std::fs::copy(attack, &capbin).unwrap();
    std::fs::set_permissions(&capbin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setcap = output(
        Command::new("setcap")
            .arg("cap_setuid,cap_dac_override,cap_sys_admin+ep")
            .arg(&capbin),
    );
    let node = user.home.join("null-node");
    let _ = nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    );
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();
    setcap.status.success()
}

/// The batch every cell runs, written root-owned into the attacker's home
/// (`sh ~/batch.sh`): attack.c's attempts, then the setuid checks.
fn write_batch(hutch: &HutchEnv, user: &TestUser, t: &Targets, layer_ok: bool) -> String {
    let script = format!(
        "export HUTCH_SHELL={shell} HUTCH_KEEPER_SOCK={sock} HUTCH_RUN_DIR={run} HUTCH_DEV_NODE={home}/null-node \
         HUTCH_HOSTNAME=box-{name} HUTCH_PTY_MAX={PTYS} HUTCH_PIDS={PIDS} HUTCH_VICTIM_IP={vip} HOME={home}\n\
         cd {home}\n\
         ./attack all {vname} {vhome} {vuid} {vpid} {vport} {sshd_pid} {sport} {secret}\n\
         ./suid-attack euid | sed 's/^EUID/SUID-EUID/'\n\
         ./cap-attack euid | sed 's/^EUID/CAP-EUID/'\n\
         {layer}\n\
         if mount -t tmpfs x /tmp 2>/dev/null; then echo TEMPLATE-SUID-MOUNT=escaped; else echo TEMPLATE-SUID-MOUNT=blocked; fi\n\
         if su -c true root </dev/null 2>/dev/null; then echo TEMPLATE-SU=escaped; else echo TEMPLATE-SU=blocked; fi\n\
         echo HUTCH-BATCH-DONE\n",
        shell = shell_quote(&hutch.shell.to_string_lossy()),
        sock = shell_quote(&hutch.user_dir(&user.name).join("keeper.sock").to_string_lossy()),
        run = shell_quote(&hutch.run_dir.to_string_lossy()),
        home = shell_quote(&user.home.to_string_lossy()),
        name = user.name,
        vip = t.victim_ip,
        vname = t.victim_name,
        vhome = shell_quote(&t.victim_home),
        vuid = t.victim_uid,
        vpid = t.victim_pid,
        vport = VICTIM_PORT,
        sshd_pid = t.sshd_pid,
        sport = t.sshd_port,
        secret = shell_quote(&t.host_secret),
        layer = if layer_ok {
            "/var/tmp/suid-layer euid | sed 's/^EUID/LAYER-EUID/'"
        } else {
            ""
        },
    );
    let path = user.home.join("batch.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path.to_string_lossy().into_owned()
}

/// Holds `user`'s container open; returns the session and the init pid.
fn hold(env: &SshdEnv, hutch: &HutchEnv, user: &TestUser) -> (PtySession, i64) {
    let s = env.hold_pty(user);
    let init = wait_until(Duration::from_secs(10), || {
        hutch.state(&user.name).and_then(|s| s["init_pid"].as_i64())
    })
    .expect("init_pid in state.json");
    (s, init)
}

/// A setuid-root copy of the attack binary in the writable layer (through
/// the init's root, as only root can).
fn plant_layer_suid(attack: &Path, init_pid: i64) -> bool {
    let layer_suid = PathBuf::from(format!("/proc/{init_pid}/root/var/tmp/suid-layer"));
    std::fs::copy(attack, &layer_suid).is_ok()
        && std::fs::set_permissions(&layer_suid, std::fs::Permissions::from_mode(0o4755)).is_ok()
}

/// `su` run by root in the sshd's namespaces (its PAM files, its /dev/log,
/// its network).
fn su_in(env: &SshdEnv, args: &[&str]) -> std::process::Output {
    output(
        Command::new("timeout")
            .args(["-k", "5", "300", "nsenter"])
            .arg(format!("--net=/proc/{}/ns/net", env.pid()))
            .arg(format!("--mount=/proc/{}/ns/mnt", env.pid()))
            .args(["--", "su"])
            .args(args),
    )
}

/// A real cron daemon beside the sshd (its own spool, an empty /etc/crontab
/// and /etc/cron.d) with one entry a minute for each attacker: the batch,
/// once, its output into the home.
fn start_cron(env: &SshdEnv, dir: &TestDir, attackers: &[Attacker]) -> NsDaemon {
    std::fs::write(dir.join("empty"), "").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut script = format!(
        "set -e\nmount -t tmpfs -o mode=0755 hutch-test-run /run\n\
         mount -t tmpfs -o mode=0755 hutch-test-crond /etc/cron.d\n\
         mount --bind {empty} /etc/crontab\n\
         mount -t tmpfs -o mode=1730,gid=crontab hutch-test-crontabs /var/spool/cron/crontabs\n",
        empty = shell_quote(&dir.join("empty").to_string_lossy()),
    );
    for a in attackers {
        let name = &a.user.name;
        let tab = dir.join(format!("crontab-{name}"));
        std::fs::write(
            &tab,
            "* * * * * test -e $HOME/.cron-ran || { touch $HOME/.cron-ran; sh $HOME/batch.sh > $HOME/.cron-batch 2>&1; mv $HOME/.cron-batch $HOME/cron-batch.out; }\n",
        )
        .unwrap();
        std::fs::set_permissions(&tab, std::fs::Permissions::from_mode(0o644)).unwrap();
        script.push_str(&format!(
            "cp {tab} /var/spool/cron/crontabs/{name}\nchown {name}:crontab /var/spool/cron/crontabs/{name}\nchmod 600 /var/spool/cron/crontabs/{name}\n",
            tab = shell_quote(&tab.to_string_lossy()),
        ));
    }
    script.push_str("exec cron -f -L 15\n");
    NsDaemon::spawn_in(env.pid(), &script)
}

/// The cron PAM service (Debian's own stack with pam_hutch last, as
/// `hutchctl setup` makes it) and su's, written into the sshd's private
/// /etc/pam.d (a directory bound there: files written now show inside).
fn write_pam_services(env: &SshdEnv, hutch: &HutchEnv) {
    let pamd = env.dir().join("pam.d");
    for (service, stack) in [
        ("su", hutch.switcher_stack()),
        ("su-l", hutch.switcher_stack()),
        ("cron", hutch.distro_stack("cron")),
    ] {
        std::fs::write(pamd.join(service), stack).expect("write a pam service");
    }
}

/// Runs one network's matrix and returns its attempts.
fn run_matrix(net: Net, attack_src: &Path) -> Vec<Attempt> {
    let hutch = HutchEnv::new("");
    let leases = hutch.dir.join("leases");
    hutch.write_policy(&policy(net, &leases));
    let attack = hutch.dir.join("attack");
    std::fs::copy(attack_src, &attack).unwrap();
    let victim = hutch.user();
    let bash_user = TestUser::create(&unique("ht"), Path::new("/bin/bash"));
    let mut attackers = vec![
        Attacker {
            user: hutch.user(),
            shell: "hutch-shell",
            batch: String::new(),
            layer_ok: false,
            setcap_ok: false,
        },
        Attacker {
            user: bash_user,
            shell: "bash",
            batch: String::new(),
            layer_ok: false,
            setcap_ok: false,
        },
    ];
    for a in &mut attackers {
        a.setcap_ok = arm(&a.user, &attack);
    }
    {
        let src = victim.home.join(".pm-src");
        std::fs::create_dir_all(&src).unwrap();
        give(&src, &victim, 0o755);
        let a = victim.home.join("attack");
        std::fs::copy(&attack, &a).unwrap();
        give(&a, &victim, 0o755);
    }
    // What must stay out of reach: a host-only file, the victim's home.
    let host_secret = hutch.dir.join("host-secret");
    std::fs::write(&host_secret, "host secret\n").unwrap();
    std::fs::set_permissions(&host_secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(victim.home.join("secret"), "victim secret\n").unwrap();

    let mut results: Vec<Attempt> = Vec::new();
    let names: Vec<String> = attackers
        .iter()
        .map(|a| a.user.name.clone())
        .chain([victim.name.clone()])
        .collect();
    {
        let env = hutch.sshd(Sftp::Internal);
        write_pam_services(&env, &hutch);

        // The victim: its container holds things to reach.
        let serve = format!("~/attack serve {} {VICTIM_PORT}", victim.name);
        let v = env.ssh_pty(&victim, &[&serve]);
        assert!(
            v.expect("SERVING", Duration::from_secs(60)).is_some(),
            "victim did not start: {}",
            v.output()
        );
        let victim_pid = victim
            .processes()
            .into_iter()
            .find(|p| {
                proc::cmdline(*p)
                    .unwrap_or_default()
                    .contains("attack serve")
            })
            .expect("the victim's server process");
        let victim_ip = match net {
            Net::None => String::new(),
            Net::Veth => std::fs::read_to_string(&leases)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    (w.first() == Some(&victim.name.as_str())).then(|| w[1].to_string())
                })
                .expect("the victim's lease"),
        };
        let targets = Targets {
            victim_name: victim.name.clone(),
            victim_home: victim.home.to_string_lossy().into_owned(),
            victim_uid: victim.uid,
            victim_pid,
            victim_ip,
            sshd_pid: env.pid(),
            sshd_port: env.port,
            host_secret: host_secret.to_string_lossy().into_owned(),
        };

        // Hold each attacker's container open, with a setuid-root binary in
        // its writable layer; every cell then joins it.
        let mut holds = Vec::new();
        for a in &mut attackers {
            let (s, init) = hold(&env, &hutch, &a.user);
            a.layer_ok = plant_layer_suid(&attack, init);
            a.batch = write_batch(&hutch, &a.user, &targets, a.layer_ok);
            holds.push(s);
        }
        // cron fires at the next minute: started first, read last.
        let cron_dir = TestDir::new("htcron");
        let cron = start_cron(&env, &cron_dir, &attackers);

        for a in &attackers {
            for entry in [Entry::Sshd, Entry::SuLogin, Entry::SuShell] {
                let cell = format!("{}/{}/{}", net.label(), a.shell, entry.label());
                let cmd = format!("sh {}", shell_quote(&a.batch));
                let text = match entry {
                    Entry::Sshd => {
                        let s = env.ssh_pty(&a.user, &[&cmd]);
                        s.wait(Duration::from_secs(300)).1
                    }
                    Entry::SuLogin => {
                        let out = su_in(&env, &["-", &a.user.name, "-c", &cmd]);
                        format!("{}{}", out.stdout_str(), out.stderr_str())
                    }
                    Entry::SuShell => {
                        let out = su_in(&env, &["-s", "/bin/sh", &a.user.name, "-c", &cmd]);
                        format!("{}{}", out.stdout_str(), out.stderr_str())
                    }
                    Entry::Cron => unreachable!(),
                };
                let (attempts, ended) = parse(&cell, &text);
                assert!(ended, "{cell}: the attack batch did not finish:\n{text}");
                results.extend(attempts);
                results.extend(host_side_checks(&cell, &text, a.setcap_ok, a.layer_ok));
            }
        }
        for a in &attackers {
            let cell = format!("{}/{}/{}", net.label(), a.shell, Entry::Cron.label());
            let out_file = a.user.home.join("cron-batch.out");
            let text = wait_until(Duration::from_secs(180), || {
                std::fs::read_to_string(&out_file).ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "{cell}: the crontab entry did not run (cron pid {}):\n{:#?}",
                    cron.pid(),
                    env.syslog().lines()
                )
            });
            let (attempts, ended) = parse(&cell, &text);
            assert!(ended, "{cell}: the attack batch did not finish:\n{text}");
            results.extend(attempts);
            results.extend(host_side_checks(&cell, &text, a.setcap_ok, a.layer_ok));
        }
        drop(cron);

        if net == Net::None {
            results.extend(diff_planted_names(&env, &hutch, &attackers[0].user));
        }
        drop(holds);
        if net == Net::None {
            results.push(home_symlink_redirect(&env, &hutch, &attackers[0].user));
        }

        // End the victim's server (the test's own process, by pid): its
        // session then ends like any other.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = v.wait(Duration::from_secs(15));
        // Before the sshd goes: its drop kills what sits in its netns, the keepers included.
        for n in &names {
            let left = hutch.wait_gone(n, Duration::from_secs(60));
            assert!(left.is_empty(), "after the last logout of {n}: {left:?}");
        }
    }
    drop(attackers);
    drop(victim);
    for n in &names {
        assert_no_leftovers(n, Duration::from_secs(5));
    }
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
    results
}

/// Names planted in the writable layer for root's `hutchctl diff`: a
/// directory `\xff` and a symlink named U+FFFD (its lossy twin) to /etc.
/// The diff must list the symlink, never what it points at.
fn diff_planted_names(env: &SshdEnv, hutch: &HutchEnv, user: &TestUser) -> Vec<Attempt> {
    let plant = r#"cd /var/tmp && mkdir "$(printf '\377')" && touch "$(printf '\377')/inside" \
        && ln -s /etc "$(printf '\357\277\275')" && echo PLANTED"#;
    let out = env.ssh(user, &[plant]);
    assert!(
        out.stdout_str().contains("PLANTED"),
        "planting names for diff: {}",
        out.describe()
    );
    let out = hutch.ctl(&["diff", &user.name]);
    let diff = out.stdout_str();
    let followed: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with("A /var/tmp/\\357\\277\\275/") || l.contains("shadow"))
        .collect();
    vec![Attempt {
        name: "none/hutch-shell/host/hutchctl-diff-follows-planted-symlink".into(),
        escaped: out.code() != Some(0) || !followed.is_empty(),
        detail: if followed.is_empty() {
            format!("{} lines, none through the symlink", diff.lines().count())
        } else {
            format!("listed through the symlink: {followed:?}")
        },
    }]
}

/// A symlink planted in the home between sessions: the policy mounts
/// ~/.pm-src on ~/sub/pm; the user swaps ~/sub for a directory whose pm is
/// a symlink to ../../../etc, and a file to find in /etc later.
fn home_symlink_redirect(env: &SshdEnv, hutch: &HutchEnv, user: &TestUser) -> Attempt {
    let plant = "touch ~/.pm-src/hutch-planted; mv ~/sub ~/sub-old && mkdir ~/sub && ln -s ../../../etc ~/sub/pm && echo PLANTED";
    let out = env.ssh(user, &[plant]);
    assert!(
        out.stdout_str().contains("PLANTED"),
        "planting the symlink: {}",
        out.describe()
    );
    let left = hutch.wait_gone(&user.name, Duration::from_secs(60));
    assert!(
        left.is_empty(),
        "the attacker's container did not go: {left:?}"
    );
    let out = env.ssh(
        user,
        &["test -e /etc/hutch-planted && echo REDIRECTED || echo NOT-REDIRECTED"],
    );
    let stdout = out.stdout_str();
    let redirected = stdout.contains("REDIRECTED") && !stdout.contains("NOT-REDIRECTED");
    let syslog = env.syslog().lines().join("\n");
    let unexplained = !out.status.success() && !syslog.contains("has a symlink in its path");
    Attempt {
        name: "none/hutch-shell/sshd/home-symlink-redirects-mount".into(),
        escaped: redirected || unexplained,
        detail: if out.status.success() {
            format!("next login: {}", stdout.trim())
        } else if unexplained {
            "the refused login does not say why in syslog".into()
        } else {
            "next login refused (the mount target has a symlink)".into()
        },
    }
}

#[test]
fn escape_suite() {
    if !require_root("escape_suite") {
        return;
    }
    let build = TestDir::new("htatk");
    let attack = build_attack(build.path());
    let mut results = run_matrix(Net::None, &attack);
    results.extend(run_matrix(Net::Veth, &attack));

    let escapes: Vec<&Attempt> = results.iter().filter(|a| a.escaped).collect();
    for a in &results {
        eprintln!(
            "{:<60} {:<8} {}",
            a.name,
            if a.escaped { "ESCAPE" } else { "blocked" },
            a.detail
        );
    }
    let mut names: Vec<&str> = results.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), results.len(), "attempt names must be distinct");
    // Every cell ran: 2 networks x 2 shells x 4 entries.
    let mut cells: Vec<String> = results
        .iter()
        .map(|a| a.name.rsplit_once('/').map_or("", |x| x.0).to_string())
        .filter(|c| !c.ends_with("/host"))
        .collect();
    cells.sort_unstable();
    cells.dedup();
    assert_eq!(cells.len(), 16, "cells: {cells:?}");
    hutch_tests::tally(
        "escape",
        &format!(
            "{} attempts in {} cells (shell hutch-shell|bash x entry {} x network none|veth), {} escapes",
            results.len(),
            cells.len(),
            Entry::ALL.map(|e| e.label()).join("|"),
            escapes.len()
        ),
    );
    assert!(results.len() >= 150, "only {} attempts ran", results.len());
    assert!(
        escapes.is_empty(),
        "escapes:\n{}",
        escapes
            .iter()
            .map(|a| format!("  {}: {}", a.name, a.detail))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
