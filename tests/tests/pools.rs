//! Host-wide pools a container shares with everyone else are bounded per
//! container: ptys (every devpts instance but the host's draws from
//! kernel.pty.max - kernel.pty.reserve) and the bytes a container sends the
//! host's syslog through its /dev/log. (Kernel AIO contexts, fs.aio-max-nr,
//! are denied by the filter: the escape suite's `io-setup` attempt.)

use std::process::Command;
use std::time::Duration;

use hutch_tests::*;

/// `ptys = 3`: the container's devpts holds 3; the fourth /dev/ptmx open
/// fails with ENOSPC for the user, and the host's pool is untouched.
#[test]
fn devpts_max_from_the_policy() {
    if !require_root("devpts_max_from_the_policy") {
        return;
    }
    let hutch = HutchEnv::new("[defaults]\nhostname = \"box-{user}\"\nptys = 3\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(
            &user,
            &["for i in 1 2 3 4 5; do if exec {fd}<>/dev/ptmx; then echo PTY$i=ok; else echo PTY$i=refused; fi; done 2>/dev/null; \
               grep -o 'max=[0-9]*' /proc/self/mountinfo | head -n 1"],
        );
        assert_eq!(
            out.stdout_str(),
            "PTY1=ok\nPTY2=ok\nPTY3=ok\nPTY4=refused\nPTY5=refused\nmax=3\n",
            "{}",
            out.describe()
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// 300 lines of 8000 bytes at once (under the 500-line burst, 2.4 MB):
/// the host's syslog gets no more than the byte burst (256 KiB) and a
/// short second's worth, and one notice counting the dropped bytes.
#[test]
fn devlog_limits_bytes_not_only_lines() {
    if !require_root("devlog_limits_bytes_not_only_lines") {
        return;
    }
    let hutch = HutchEnv::new("[defaults]\nhostname = \"box-{user}\"\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let tag = format!("hutch[{name}]: ");
        let before = env.syslog().lines().len();
        let out = env.ssh(
            &user,
            &["l=$(head -c 8000 /dev/zero | tr '\\0' x); i=0; while [ $i -lt 300 ]; do echo \"$l\"; i=$((i+1)); done | logger -S 9000 -t big"],
        );
        assert!(out.status.success(), "{}", out.describe());
        let notice = env.syslog().wait_for(
            |l| l.contains(&tag) && l.contains("dropped") && l.contains("bytes"),
            Duration::from_secs(10),
        );
        assert!(notice.is_some(), "no drop notice counting bytes");
        let got: usize = env.syslog().lines()[before..]
            .iter()
            .filter(|l| l.contains(&tag) && l.contains("big"))
            .map(|l| l.len())
            .sum();
        eprintln!("forwarded {got} of 2400000 bytes; {}", notice.unwrap());
        assert!(
            got > 0 && got < 400_000,
            "{got} bytes of 2.4 MB reached the host's syslog"
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// The keeper's file descriptors: the lowest free number (what the next
/// open would get) and the count.
fn lowest_free_fd(pid: i32) -> usize {
    let used: std::collections::BTreeSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the keeper's fds")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// The state letter of `/proc/PID/stat` (R running, S sleeping, ...).
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The keeper is single-threaded and root's PAM hosts talk to it: a
/// request left half-written is dropped after the keeper's read timeout
/// (the connection closed, the next login served); and a keeper out of
/// descriptors (RLIMIT_NOFILE lowered to what it holds) closes the
/// connection it cannot serve instead of polling a readable listener in a
/// busy loop: it sleeps, says why in syslog, and serves again once it can.
#[test]
fn keeper_survives_a_half_request_and_emfile() {
    if !require_root("keeper_survives_a_half_request_and_emfile") {
        return;
    }
    use std::io::{Read, Write};
    let hutch = HutchEnv::new("[defaults]\nhostname = \"box-{user}\"\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let hold = env.hold_pty(&user);
        let keeper = hutch
            .state(&name)
            .and_then(|s| s["keeper_pid"].as_i64())
            .expect("keeper_pid in state.json") as i32;
        let sock = hutch.user_dir(&name).join("keeper.sock");

        // Half a request line, then nothing: closed by the keeper, not waited on forever.
        let mut half = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        half.write_all(b"OPEN ss").unwrap();
        half.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 64];
        let r = half.read(&mut buf);
        assert!(
            matches!(r, Ok(0)),
            "a half-written request was not dropped: {r:?}"
        );
        let out = env.ssh(&user, &["echo ALIVE"]);
        assert_eq!(out.stdout_str(), "ALIVE\n", "{}", out.describe());

        // Out of descriptors: the next one the keeper would open is over
        // its limit (once the last login's close is done with). A STATUS
        // request would be answered: shed, it reads end-of-file at once.
        // A second holding session takes the number the keeper's start left
        // free, so that its descriptors fill 0..low (poll's set, smaller than
        // that, stays within the lowered limit).
        let hold2 = env.ssh_pty(&user, &["echo HOLDING2; sleep 600"]);
        assert!(
            hold2.expect("HOLDING2", Duration::from_secs(60)).is_some(),
            "{}",
            hold2.output()
        );
        wait_until(Duration::from_secs(10), || {
            hutch
                .state(&name)
                .filter(|st| st["sessions"].as_array().map(|a| a.len()) == Some(2))
        })
        .expect("state.json with the two holding sessions");
        let limits = std::fs::read_to_string(format!("/proc/{keeper}/limits")).unwrap();
        let nofile: Vec<&str> = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .split_whitespace()
            .collect();
        let (soft, hard) = (nofile[3].to_string(), nofile[4].to_string());
        // The limit is the lowest free number; a descriptor the keeper held
        // for a moment (a cgroup file of its 5 s watch) may free a lower one
        // in between, and then the keeper can answer: set it again and retry.
        let mut shed = None;
        for _ in 0..10 {
            let mut low = usize::MAX;
            while lowest_free_fd(keeper) < low {
                low = lowest_free_fd(keeper);
                run_ok(
                    Command::new("prlimit")
                        .arg(format!("--pid={keeper}"))
                        .arg(format!("--nofile={low}:{hard}")),
                );
            }
            let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
            if c.write_all(b"STATUS\n").is_err() {
                // Closed before the request was written.
                shed = Some(());
                break;
            }
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            match c.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                // Closed with the request unread: end-of-file, or a reset.
                Ok(_) => shed = Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => shed = Some(()),
                Err(e) => panic!(
                    "the keeper out of descriptors neither answered nor closed the connection: {e}"
                ),
            }
            break;
        }
        assert!(shed.is_some(), "the keeper never ran out of descriptors");
        let asleep = wait_until(Duration::from_secs(20), || {
            (state_of(keeper) == Some('S')).then_some(())
        });
        assert!(asleep.is_some(), "the keeper does not sleep (a busy loop?)");
        assert!(
            env.syslog()
                .wait_for(
                    |l| l.contains("out of file descriptors"),
                    Duration::from_secs(10)
                )
                .is_some(),
            "{:#?}",
            env.syslog().lines()
        );
        run_ok(
            Command::new("prlimit")
                .arg(format!("--pid={keeper}"))
                .arg(format!("--nofile={soft}:{hard}")),
        );
        let out = env.ssh(&user, &["echo ALIVE-AGAIN"]);
        assert_eq!(out.stdout_str(), "ALIVE-AGAIN\n", "{}", out.describe());
        assert_eq!(
            hutch.state(&name).and_then(|s| s["keeper_pid"].as_i64()),
            Some(keeper as i64),
            "the same keeper serves"
        );
        drop(hold2);
        drop(hold);
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
