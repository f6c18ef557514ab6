//! Host-wide pools a container shares with everyone else are bounded per
//! container: ptys (every devpts instance but the host's draws from
//! kernel.pty.max - kernel.pty.reserve) and the bytes a container sends the
//! host's syslog through its /dev/log. (Kernel AIO contexts, fs.aio-max-nr,
//! are denied by the filter: the escape suite's `io-setup` attempt.)

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
