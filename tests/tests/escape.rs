//! The escape suite (`tests/escape/`): a confined user, logged in over real
//! SSH, tries to get out, and every attempt must fail. A second confined
//! user (the victim) runs beside them with things to reach: an abstract
//! socket, a 127.0.0.1 listener, files in /tmp and /dev/shm, a SysV queue.
//!
//! The attempts live in `tests/escape/attack.c` (built statically with gcc
//! here, copied into the attacker's home, one SSH login runs them all, each
//! in its own forked child) and a few here: setuid and file-capability
//! binaries in the home and the writable layer, the template's setuid
//! binaries, a symlink planted in the home between sessions to redirect a
//! policy mount at the next login. The suite prints `N attempts, 0 escapes`
//! and fails listing every escape.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hutch_tests::*;

const VICTIM_PORT: u16 = 7777;

fn policy() -> String {
    "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n\
     mounts = [ { source = \"{home}/.pm-src\", target = \"{home}/sub/pm\", mode = \"rw\" } ]\n"
        .to_string()
}

/// One attempt's outcome.
#[derive(Debug)]
struct Attempt {
    name: String,
    escaped: bool,
    detail: String,
}

fn parse(text: &str) -> (Vec<Attempt>, bool) {
    let mut out = Vec::new();
    let mut ended = false;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = line.strip_prefix("HUTCH-ATTEMPT ") {
            let mut f = rest.splitn(3, '\t');
            let name = f.next().unwrap_or("").to_string();
            let verdict = f.next().unwrap_or("");
            let detail = f.next().unwrap_or("").to_string();
            out.push(Attempt {
                name,
                escaped: verdict != "blocked",
                detail,
            });
        } else if line.starts_with("HUTCH-END ") {
            ended = true;
        }
    }
    (out, ended)
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
    let line = text.lines().find(|l| l.starts_with(tag))?;
    let mut f = line[tag.len()..].split_whitespace();
    let euid = f.next()?.parse().ok()?;
    let caps = f.next().unwrap_or("").to_string();
    Some((euid, caps))
}

#[test]
fn escape_suite() {
    if !require_root("escape_suite") {
        return;
    }
    let hutch = HutchEnv::new(&policy());
    let attacker = hutch.user();
    let victim = hutch.user();
    let attack = build_attack(hutch.dir.path());
    for u in [&attacker, &victim] {
        let src = u.home.join(".pm-src");
        std::fs::create_dir_all(&src).unwrap();
        give(&src, u, 0o755);
        let a = u.home.join("attack");
        std::fs::copy(&attack, &a).unwrap();
        give(&a, u, 0o755);
    }
    // What must stay out of reach: a host-only file, the victim's home.
    let host_secret = hutch.dir.join("host-secret");
    std::fs::write(&host_secret, "host secret\n").unwrap();
    std::fs::set_permissions(&host_secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(victim.home.join("secret"), "victim secret\n").unwrap();
    // Root-made things in the attacker's home (as an admin's mistake, a
    // restored backup or a shared file could put there): a setuid-root copy,
    // a copy with file capabilities, a device node. The home is bound
    // nosuid,nodev and the user has no_new_privs: all must be inert.
    let suid = attacker.home.join("suid-attack");
    std::fs::copy(&attack, &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let capbin = attacker.home.join("cap-attack");
    std::fs::copy(&attack, &capbin).unwrap();
    std::fs::set_permissions(&capbin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let setcap = output(
        Command::new("setcap")
            .arg("cap_setuid,cap_dac_override,cap_sys_admin+ep")
            .arg(&capbin),
    );
    let node = attacker.home.join("null-node");
    let _ = nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    );
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();

    let mut results: Vec<Attempt> = Vec::new();
    {
        let env = hutch.sshd(Sftp::Internal);
        let sshd_pid = env.pid();

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

        // Hold the attacker's container open, and put a setuid-root binary in
        // its writable layer (through the init's root, as only root can).
        let hold = env.ssh_pty(&attacker, &["echo HOLDING; sleep 600"]);
        assert!(
            hold.expect("HOLDING", Duration::from_secs(60)).is_some(),
            "attacker hold: {}",
            hold.output()
        );
        let init_pid = hutch
            .state(&attacker.name)
            .and_then(|s| s["init_pid"].as_i64())
            .expect("init_pid in state.json");
        let layer_suid = PathBuf::from(format!("/proc/{init_pid}/root/var/tmp/suid-layer"));
        let layer_ok = std::fs::copy(&attack, &layer_suid).is_ok()
            && std::fs::set_permissions(&layer_suid, std::fs::Permissions::from_mode(0o4755))
                .is_ok();

        // The batch: every attempt of attack.c, then the setuid checks.
        let script = format!(
            "export HUTCH_SHELL={shell} HUTCH_KEEPER_SOCK={sock} HUTCH_RUN_DIR={run} HUTCH_DEV_NODE=$HOME/null-node; \
             cd $HOME; ./attack all {vname} {vhome} {vuid} {vpid} {vport} {sshd_pid} {sport} {secret}; \
             ./suid-attack euid | sed 's/^EUID/SUID-EUID/'; ./cap-attack euid | sed 's/^EUID/CAP-EUID/'; \
             {layer} \
             if mount -t tmpfs x /tmp 2>/dev/null; then echo TEMPLATE-SUID-MOUNT=escaped; else echo TEMPLATE-SUID-MOUNT=blocked; fi; \
             if su -c true root </dev/null 2>/dev/null; then echo TEMPLATE-SU=escaped; else echo TEMPLATE-SU=blocked; fi; \
             echo HUTCH-BATCH-DONE",
            shell = shell_quote(&hutch.shell.to_string_lossy()),
            sock = shell_quote(&hutch.user_dir(&attacker.name).join("keeper.sock").to_string_lossy()),
            run = shell_quote(&hutch.run_dir.to_string_lossy()),
            vname = victim.name,
            vhome = shell_quote(&victim.home.to_string_lossy()),
            vuid = victim.uid,
            vpid = victim_pid,
            vport = VICTIM_PORT,
            sport = env.port,
            secret = shell_quote(&host_secret.to_string_lossy()),
            layer = if layer_ok { "/var/tmp/suid-layer euid | sed 's/^EUID/LAYER-EUID/';" } else { "" },
        );
        let s = env.ssh_pty(&attacker, &[&script]);
        let (_, text) = s.wait(Duration::from_secs(180));
        let (attempts, ended) = parse(&text);
        assert!(
            ended && text.contains("HUTCH-BATCH-DONE"),
            "the attack batch did not finish:\n{text}"
        );
        results.extend(attempts);

        let uid_check =
            |tag: &str, name: &str, results: &mut Vec<Attempt>| match euid_line(&text, tag) {
                Some((euid, caps)) => results.push(Attempt {
                    name: name.into(),
                    escaped: euid == 0 || !caps.trim_start_matches('0').is_empty(),
                    detail: format!("euid {euid}, CapEff {caps}"),
                }),
                None => results.push(Attempt {
                    name: name.into(),
                    escaped: false,
                    detail: "did not run (exec refused)".into(),
                }),
            };
        uid_check("SUID-EUID ", "setuid-root-binary-in-home", &mut results);
        if setcap.status.success() {
            uid_check("CAP-EUID ", "file-caps-binary-in-home", &mut results);
        }
        if layer_ok {
            uid_check(
                "LAYER-EUID ",
                "setuid-root-binary-in-writable-layer",
                &mut results,
            );
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
                name: name.into(),
                escaped: v == "escaped",
                detail: format!("{tag}{v}"),
            });
        }

        // A symlink planted in the home between sessions: the policy mounts
        // ~/.pm-src on ~/sub/pm; the user swaps ~/sub for a directory whose
        // pm is a symlink to ../../../etc and a file to find in /etc later.
        let plant = "touch ~/.pm-src/hutch-planted; mv ~/sub ~/sub-old && mkdir ~/sub && ln -s ../../../etc ~/sub/pm && echo PLANTED";
        let out = env.ssh(&attacker, &[plant]);
        assert!(
            out.stdout_str().contains("PLANTED"),
            "planting the symlink: {}",
            out.describe()
        );
        drop(hold);
        let left = hutch.wait_gone(&attacker.name, Duration::from_secs(30));
        assert!(
            left.is_empty(),
            "the attacker's container did not go: {left:?}"
        );
        let out = env.ssh(
            &attacker,
            &["test -e /etc/hutch-planted && echo REDIRECTED || echo NOT-REDIRECTED"],
        );
        let stdout = out.stdout_str();
        results.push(Attempt {
            name: "home-symlink-redirects-mount".into(),
            escaped: stdout.contains("REDIRECTED") && !stdout.contains("NOT-REDIRECTED"),
            detail: if out.status.success() {
                format!("next login: {}", stdout.trim())
            } else {
                "next login refused (the mount target has a symlink)".into()
            },
        });
        let syslog = env.syslog().lines().join("\n");
        if !out.status.success() && !syslog.contains("has a symlink in its path") {
            results.push(Attempt {
                name: "home-symlink-refusal-logged".into(),
                escaped: true,
                detail: "the refused login does not say why in syslog".into(),
            });
        }
        // End the victim's server (the test's own process, by pid): its
        // session then ends like any other.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = v.wait(Duration::from_secs(15));
        // Before the sshd goes: its drop kills what sits in its netns, the keepers included.
        for n in [&attacker.name, &victim.name] {
            let left = hutch.wait_gone(n, Duration::from_secs(20));
            assert!(left.is_empty(), "after the last logout of {n}: {left:?}");
        }
    }

    let escapes: Vec<&Attempt> = results.iter().filter(|a| a.escaped).collect();
    for a in &results {
        eprintln!(
            "{:<40} {:<8} {}",
            a.name,
            if a.escaped { "ESCAPE" } else { "blocked" },
            a.detail
        );
    }
    let mut names: Vec<&str> = results.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), results.len(), "attempt names must be distinct");
    hutch_tests::tally(
        "escape",
        &format!("{} attempts, {} escapes", results.len(), escapes.len()),
    );
    assert!(results.len() >= 50, "only {} attempts ran", results.len());
    assert!(
        escapes.is_empty(),
        "escapes:\n{}",
        escapes
            .iter()
            .map(|a| format!("  {}: {}", a.name, a.detail))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let names = [attacker.name.clone(), victim.name.clone()];
    drop(attacker);
    drop(victim);
    for n in &names {
        assert_no_leftovers(n, Duration::from_secs(5));
    }
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}
