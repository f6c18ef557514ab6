//! `hutchctl enter` as the user, from an admin's terminal: the command runs
//! on a fresh pty made inside the container (a tty, the admin's window size
//! and its changes, the exit status), the admin's terminal is raw while it
//! runs and restored after, and a process the user leaves behind can
//! neither write to the admin's terminal, nor read what the admin types
//! next, nor push input into it, once enter has returned.

use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// The entered command: reports its terminal, waits for the test's line,
/// reports the window size again, leaves a process behind and exits 3.
/// The leftover (ignoring SIGHUP) waits for `~/go`, which the test makes
/// after enter returned, then tries the admin's terminal every way it has.
const SCRIPT: &str = r#"tty; test -t 0 && echo STDIN-IS-A-TTY; echo "SIZE=$(stty size)"; echo READY; read x; echo "SIZE2=$(stty size)"
exec 3<&0
trap '' HUP INT TERM
( while [ ! -e "$HOME/go" ]; do sleep 0.1; done
  echo LEFTOVER-FD1 2>/dev/null; echo LEFTOVER-FD2 >&2 2>/dev/null
  { echo LEFTOVER-TTY > /dev/tty; } 2>/dev/null
  if read -t 3 y <&3 2>/dev/null; then echo "READ:$y" > "$HOME/left-read"; else echo NOREAD > "$HOME/left-read"; fi
  perl -e 'my $c = "Z"; print(ioctl(STDIN, 0x5412, $c) ? "TIOCSTI-OK" : "TIOCSTI-ERR $!")' <&3 > "$HOME/left-sti" 2>&1
  touch "$HOME/left-done" ) &
exit 3"#;

/// `hutchctl enter USER -- bash -c SCRIPT` as the admin runs it.
fn enter_argv(hutch: &HutchEnv, name: &str, script: &str) -> Vec<String> {
    [
        hutch.bins.ctl.to_string_lossy().as_ref(),
        "--config",
        hutch.config.to_string_lossy().as_ref(),
        "enter",
        name,
        "--",
        "bash",
        "-c",
        script,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn enter_runs_on_its_own_pty() {
    if !require_root("enter_runs_on_its_own_pty") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let hold = env.hold_pty(&user);
        let argv = enter_argv(&hutch, &name, SCRIPT);
        let mut admin = PtySession::spawn(&argv);
        admin
            .expect("READY", Duration::from_secs(60))
            .unwrap_or_else(|| panic!("enter did not start: {}", admin.output()));
        // (The relay makes it raw as it starts; READY may come a moment before.)
        let raw = wait_until(Duration::from_secs(10), || {
            let m = admin.modes();
            (!m.local_flags
                .contains(nix::sys::termios::LocalFlags::ICANON))
            .then_some(())
        });
        assert!(
            raw.is_some(),
            "the admin's terminal is not raw while enter runs: {}",
            admin.output()
        );
        admin.resize(30, 100);
        admin.send("go\n");
        let code = admin.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(3), "{}", admin.output());
        let restored = admin.modes();
        assert!(
            restored.local_flags.contains(
                nix::sys::termios::LocalFlags::ICANON | nix::sys::termios::LocalFlags::ECHO
            ),
            "the admin's terminal modes were not restored"
        );
        let lines: Vec<String> = admin
            .output()
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        assert!(
            lines.iter().any(|l| l.starts_with("/dev/pts/")),
            "{lines:?}"
        );
        for want in ["STDIN-IS-A-TTY", "SIZE=24 80", "SIZE2=30 100"] {
            assert!(lines.iter().any(|l| l == want), "no {want:?} in {lines:?}");
        }

        // After enter returned: the leftover tries; the admin types a line.
        std::fs::write(user.home.join("go"), "").unwrap();
        admin.send("INJECTED-LINE\n");
        let done = wait_until(Duration::from_secs(60), || {
            user.home.join("left-done").exists().then_some(())
        });
        assert!(
            done.is_some(),
            "the leftover process did not finish: {:?} {:?}",
            std::fs::read_dir(&user.home)
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            user.processes()
                .iter()
                .map(|p| proc::cmdline(*p))
                .collect::<Vec<_>>()
        );
        let after = admin.output();
        assert!(
            !after.contains("LEFTOVER-"),
            "a leftover process wrote to the admin's terminal:\n{after}"
        );
        let read = std::fs::read_to_string(user.home.join("left-read")).unwrap_or_default();
        assert!(
            !read.contains("INJECTED"),
            "a leftover process read the admin's typing: {read}"
        );
        let sti = std::fs::read_to_string(user.home.join("left-sti")).unwrap_or_default();
        assert!(
            sti.contains("TIOCSTI-ERR"),
            "TIOCSTI from a leftover process: {sti:?}"
        );
        drop(admin);
        drop(hold);
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// A process left behind that keeps writing (`yes`) neither keeps `hutchctl
/// enter` from returning with the command's status nor outlives the pty:
/// its writes fail once the relay has closed its side, and it ends. (With
/// the admin's terminal as its own it wrote there for ever. The relay's
/// drain is bounded too, `relay::DRAIN_MAX`, though a reader this fast
/// catches up with `yes` anyway.)
#[test]
fn enter_returns_while_a_leftover_keeps_writing() {
    if !require_root("enter_returns_while_a_leftover_keeps_writing") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let hold = env.hold_pty(&user);
        let argv = enter_argv(
            &hutch,
            &name,
            "trap '' HUP; (exec yes LEFTOVER-SPAM) & sleep 1; exit 4",
        );
        let mut admin = PtySession::spawn(&argv);
        let code = admin.wait_exit(Duration::from_secs(120));
        assert_eq!(
            code,
            Some(4),
            "enter did not return with the command's status"
        );
        let spammer_gone = wait_until(Duration::from_secs(30), || {
            (!user.processes().iter().any(|p| {
                proc::cmdline(*p)
                    .unwrap_or_default()
                    .contains("yes LEFTOVER")
            }))
            .then_some(())
        });
        assert!(
            spammer_gone.is_some(),
            "the writer left behind still runs: its pty was not hung up"
        );
        drop(admin);
        drop(hold);
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
