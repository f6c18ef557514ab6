//! `hutch status` inside the container, over real SSH: the user's limits,
//! usage (tmpfs use shown apart), limit hits since the container started
//! and since the asking session's login, the sessions without host pids,
//! what persists and when the container goes; `--json`; only the keeper's
//! answer on the container's socket, rate-limited.

use std::time::Duration;

use hutch_tests::hutch::trimmed;
use hutch_tests::*;

const POLICY: &str =
    "[defaults]\nmemory = \"128M\"\ncpu = \"1\"\npids = 64\nwritable_size = \"256M\"\non_logout = \"linger:2m\"\n";

fn status_json(env: &SshdEnv, user: &TestUser) -> serde_json::Value {
    let out = env.ssh(user, &["hutch status --json"]);
    assert!(out.status.success(), "{}", out.describe());
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
}

/// Limits, usage with /tmp and /dev/shm apart, sessions (the asking one
/// marked, no host pid), persists and teardown; an OOM kill counted since
/// the container started and since the login of a session open before it,
/// not of one opened after; the text form; outside a container it says so.
#[test]
fn hutch_status_inside_the_container() {
    if !require_root("hutch_status_inside_the_container") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut hold = env.shell_pty(&user);
        let out = env.ssh(
            &user,
            &["head -c 20M /dev/zero > /tmp/twenty && head -c 8M /dev/zero > /dev/shm/eight && echo ok"],
        );
        assert_eq!(trimmed(&out), "ok", "{}", out.describe());

        let s = status_json(&env, &user);
        eprintln!("hutch status --json: {s}");
        assert_eq!(s["user"], name.as_str());
        assert_eq!(s["limits"]["memory"], 128 << 20);
        assert_eq!(
            s["limits"]["memory_high"],
            hutch_policy::default_memory_high(128 << 20)
        );
        assert_eq!(s["limits"]["pids"], 64);
        assert_eq!(s["limits"]["cpu"], 1.0);
        assert_eq!(s["persists"]["writable"], "ephemeral");
        assert_eq!(s["teardown"], "2m after the last logout");
        let fs = s["usage"]["file_systems"].as_array().unwrap();
        let used = |p: &str| {
            fs.iter()
                .find(|f| f["path"] == p)
                .and_then(|f| f["used"].as_u64())
                .unwrap_or_else(|| panic!("no {p} in {fs:?}"))
        };
        assert!(used("/tmp") >= 20 << 20, "{fs:?}");
        assert!(used("/dev/shm") >= 8 << 20, "{fs:?}");
        // memory.stat is flushed lazily: wait for shmem to catch up.
        let shmem = wait_until(Duration::from_secs(10), || {
            let v = status_json(&env, &user)["usage"]["shmem"]
                .as_u64()
                .unwrap_or(0);
            (v >= 28 << 20).then_some(v)
        });
        assert!(shmem.is_some(), "shmem never reached the tmpfs files' 28M");
        let sessions = s["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert!(
            sessions.iter().all(|x| x.get("pid").is_none()),
            "a host pid is shown: {sessions:?}"
        );
        let mine = s["your_session"]
            .as_u64()
            .expect("the asking session is found");
        assert!(sessions.iter().any(|x| x["id"] == mine));
        assert_eq!(s["hits"]["oom_kills"], 0);

        // An OOM kill: counted; the holding session logged in before it.
        let out = env.ssh(
            &user,
            &["head -c 512M /dev/zero | tail -n 1 >/dev/null; echo rc=$?"],
        );
        assert!(out.stdout_str().contains("rc=137"), "{}", out.describe());
        hold.send("hutch status --json > /tmp/hold.json; echo done-$?\n");
        assert!(
            hold.expect("done-0", Duration::from_secs(20)).is_some(),
            "{}",
            hold.output()
        );
        let out = env.ssh(&user, &["cat /tmp/hold.json"]);
        let from_hold: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            from_hold["hits"]["oom_kills"].as_u64().unwrap() >= 1,
            "{from_hold}"
        );
        assert!(
            from_hold["hits_since_login"]["oom_kills"].as_u64().unwrap() >= 1,
            "{from_hold}"
        );
        let after = status_json(&env, &user);
        assert!(after["hits"]["oom_kills"].as_u64().unwrap() >= 1);
        assert_eq!(after["hits_since_login"]["oom_kills"], 0, "{after}");

        // The text form.
        let out = env.ssh(&user, &["hutch status"]);
        let text = out.stdout_str();
        eprintln!("hutch status:\n{text}");
        for want in [
            "of 128M",
            "pressure from",
            "in tmpfs",
            "/tmp: ",
            "/dev/shm: ",
            "writable layer (ephemeral)",
            "OOM kill",
            "(this one)",
            "your home only",
            "2m after the last logout",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }

        // hutchctl stats shows the tmpfs charge too.
        let out = hutch.ctl(&["stats", &name, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v[0]["stats"]["shmem"].as_u64().unwrap_or(0) >= 28 << 20,
            "{v}"
        );

        // A burst of asks is answered up to the rate; the keeper stays.
        let out = env.ssh(
            &user,
            &["n=0; for i in $(seq 60); do hutch status --json >/dev/null 2>&1 && n=$((n+1)); done; echo $n"],
        );
        let answered: u32 = trimmed(&out).parse().unwrap();
        eprintln!("burst: {answered} of 60 answered");
        assert!(answered >= 20, "{}", out.describe());
        assert!(status_json(&env, &user)["user"] == name.as_str());
        hold.send("exit\n");
        let _ = hold.wait(Duration::from_secs(10));
        let stop = hutch.ctl(&["stop", &name]);
        assert!(stop.status.success(), "{}", stop.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    // Outside a container.
    let out = output(std::process::Command::new(hutch.bins.dir.join("hutch")).arg("status"));
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(out.stderr_str().contains("not inside a hutch container"));
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
