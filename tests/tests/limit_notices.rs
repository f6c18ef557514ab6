//! When a limit acts the user is told, over real SSH: an OOM kill in one
//! session of the user reaches the terminal of another as one line naming
//! the limit, the process (its pid as the container sees it, its command)
//! and what it held; more kills within the window are summed up in one line
//! when it ends; the OOM killer takes the biggest process and the other
//! session survives (no `memory.oom.group`); a fork refused at the pids limit
//! is told too; `hutch status` and `hutchctl stats` count the notices.

use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nmemory = \"64M\"\npids = 40\nwritable_size = \"128M\"\non_logout = \"linger:2m\"\n";

/// The lines starting with `hutch: ` in a terminal's output.
fn notices(out: &str) -> Vec<String> {
    out.split(['\r', '\n'])
        .filter(|l| l.starts_with("hutch: "))
        .map(str::to_string)
        .collect()
}

/// Logs the holding session out, stops the container, waits for it to go.
fn end(hutch: &HutchEnv, mut hold: PtySession, name: &str) {
    hold.send("exit\n");
    let _ = hold.wait(Duration::from_secs(10));
    let stop = hutch.ctl(&["stop", name]);
    assert!(stop.status.success(), "{}", stop.describe());
    assert!(hutch.wait_gone(name, Duration::from_secs(20)).is_empty());
}

#[test]
fn limit_notices_reach_the_terminals() {
    if !require_root("limit_notices_reach_the_terminals") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut hold = env.shell_pty(&user);

        // Three OOM kills in a row in another session (no terminal there).
        let out = env.ssh(
            &user,
            &["for i in 1 2 3; do tail /dev/zero & echo pid=$!; wait $!; echo rc=$?; done"],
        );
        let text = out.stdout_str();
        let pids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("pid="))
            .collect();
        assert_eq!(pids.len(), 3, "{}", out.describe());
        assert_eq!(
            text.matches("rc=137").count(),
            3,
            "each tail is killed: {}",
            out.describe()
        );
        assert!(!text.contains("hutch:"), "no terminal, no notice: {text}");
        let first = format!(
            "hutch: memory limit 64M reached; killed {} (tail), ",
            pids[0]
        );
        let seen = hold.expect(&first, Duration::from_secs(30));
        assert!(seen.is_some(), "want {first:?}:\n{}", hold.output());
        // The other two came within the window of that line (or, on a slow
        // machine, of the summary after it): they are summed up when it
        // ends, never a line each at once.
        let more = |l: &str| -> u64 {
            l.split_once("reached; ")
                .and_then(|(_, r)| r.split_once(" more process"))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(0)
        };
        let lines = wait_until(Duration::from_secs(60), || {
            let lines = notices(&hold.output());
            (lines.iter().map(|l| more(l)).sum::<u64>() >= 2).then_some(lines)
        })
        .unwrap_or_else(|| panic!("no summary of the other kills:\n{}", hold.output()));
        eprintln!("notices: {lines:#?}");
        assert!(lines[0].starts_with(&first), "{lines:#?}");
        assert!(
            lines[1..]
                .iter()
                .all(|l| more(l) > 0 && l.contains(" killed in 10s, the last ")),
            "the rest are summaries: {lines:#?}"
        );
        assert_eq!(
            lines[1..].iter().map(|l| more(l)).sum::<u64>(),
            2,
            "{lines:#?}"
        );
        let last = lines.last().unwrap();
        assert!(
            last.contains(&format!("the last {} (tail), ", pids[2])) && last.ends_with('M'),
            "{lines:#?}"
        );
        let memory_lines = lines.len() as u64;

        // The biggest process went, the holding session lives on.
        hold.send("echo alive-$((40+2))\n");
        assert!(
            hold.expect("alive-42", Duration::from_secs(20)).is_some(),
            "{}",
            hold.output()
        );

        // A fork refused at the pids limit.
        let out = env.ssh(
            &user,
            &["bash -c 'for i in $(seq 60); do sleep 8 & done; wait' 2>/dev/null; echo over"],
        );
        assert!(out.stdout_str().contains("over"), "{}", out.describe());
        let want = "hutch: process limit 40 reached; ";
        let seen = hold.expect(want, Duration::from_secs(30));
        assert!(seen.is_some(), "want {want:?}:\n{}", hold.output());
        let lines = notices(&hold.output());
        let forks = lines.iter().find(|l| l.starts_with(want)).unwrap();
        assert!(
            forks.contains("refused (")
                && forks.contains(" in use, ")
                && forks.contains(" of them by ")
                && forks.contains(" (bash))"),
            "names the forking shell: {forks}"
        );

        // Counted: hutch status (from the holding session) and hutchctl stats.
        let out = env.ssh(&user, &["hutch status --json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
        assert_eq!(s["hits"]["oom_kills"], 3, "{s}");
        assert!(s["hits"]["pids_refused"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(s["notices"], memory_lines + 1, "{s}");
        assert!(s["last_notice"].as_str().unwrap().starts_with(want), "{s}");
        let out = hutch.ctl(&["stats", &name, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v[0]["notices"], memory_lines + 1, "{v}");
        let out = hutch.ctl(&["stats", &name]);
        assert!(out.stdout_str().contains("NOTICES"), "{}", out.describe());

        end(&hutch, hold, &name);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// Heavy throttling by the CPU quota is told once, when it begins, naming
/// the busiest process; a quota that is not reached tells nothing.
#[test]
fn cpu_throttling_is_told_when_it_begins() {
    if !require_root("cpu_throttling_is_told_when_it_begins") {
        return;
    }
    let hutch =
        HutchEnv::new("[defaults]\ncpu = \"20%\"\nmemory = \"256M\"\non_logout = \"linger:2m\"\n");
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let hold = env.shell_pty(&user);
        // A busy loop in another session, for longer than two looks.
        let busy = env.background(&user, "exec timeout 25 sh -c 'while :; do :; done'");
        let want = "hutch: CPU limit 0.2 cores reached; throttled in ";
        let seen = hold.expect(want, Duration::from_secs(40));
        assert!(seen.is_some(), "want {want:?}:\n{}", hold.output());
        drop(busy);
        let lines = notices(&hold.output());
        eprintln!("notices: {lines:#?}");
        let cpu: Vec<_> = lines.iter().filter(|l| l.starts_with(want)).collect();
        assert_eq!(cpu.len(), 1, "{lines:#?}");
        assert!(
            cpu[0].contains("% of the last 5s; busiest ") && cpu[0].contains(" (sh) at "),
            "{}",
            cpu[0]
        );
        end(&hutch, hold, &name);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `notices = false`: an OOM kill reaches no terminal, but is counted and
/// its line kept for `hutch status`.
#[test]
fn notices_false_keeps_the_terminals_quiet() {
    if !require_root("notices_false_keeps_the_terminals_quiet") {
        return;
    }
    let hutch = HutchEnv::new(&format!("{POLICY}notices = false\n"));
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut hold = env.shell_pty(&user);
        let out = env.ssh(&user, &["tail /dev/zero; echo rc=$?"]);
        assert!(out.stdout_str().contains("rc=137"), "{}", out.describe());
        // The keeper writes the terminals before it counts the line, so
        // once hutch status counts it a notice would already be there.
        let status = wait_until(Duration::from_secs(30), || {
            let out = env.ssh(&user, &["hutch status --json"]);
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (s["notices"] == 1).then_some(s)
        })
        .unwrap_or_else(|| panic!("the kill was never counted"));
        assert_eq!(status["hits"]["oom_kills"], 1, "{status}");
        assert!(
            status["last_notice"]
                .as_str()
                .unwrap()
                .starts_with("hutch: memory limit 64M reached; killed "),
            "{status}"
        );
        hold.send("echo still-$((40+2))\n");
        assert!(
            hold.expect("still-42", Duration::from_secs(20)).is_some(),
            "{}",
            hold.output()
        );
        assert!(notices(&hold.output()).is_empty(), "{}", hold.output());
        end(&hutch, hold, &name);
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
