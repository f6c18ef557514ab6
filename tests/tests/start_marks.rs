//! The start marks (`hutch_runtime::timing`) a real cold start leaves in
//! state.json, which `bench --bin sidebyside` turns into its per-phase
//! breakdown: the keeper's phases, the init's set-up steps and the first
//! session's admission, each list in the order it happened, all inside the
//! time the session's open_session took.

use std::io::{Read, Write};
use std::time::Duration;

use hutch_runtime::join::{open_session, JoinOptions, Outcome, SessionInfo};
use hutch_runtime::sys::{self, Forked};
use hutch_runtime::timing;
use hutch_tests::*;

#[test]
fn a_cold_start_names_its_phases() {
    if !require_root("a_cold_start_names_its_phases") {
        return;
    }
    let hutch = HutchEnv::new("[defaults]\nmemory = \"1G\"\npids = 512\n");
    let user = hutch.user();
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };
    let (r, w) = nix::unistd::pipe().unwrap();
    let (go_r, go_w) = nix::unistd::pipe().unwrap();
    // The session is opened (and held) in a child: it joins the container.
    let child = match sys::fork().unwrap() {
        Forked::Child => {
            drop(r);
            drop(go_w);
            let mut w = std::fs::File::from(w);
            let info = SessionInfo {
                service: "marks".into(),
                tty: None,
                rhost: None,
            };
            let t0 = timing::now_ns();
            match open_session(&opts, &user.name, &info) {
                Ok(Outcome::Joined(s)) => {
                    let t1 = timing::now_ns();
                    let pam = timing::encode(&timing::take());
                    let _ = write!(w, "{t0} {t1} {pam}");
                    drop(w);
                    let mut b = [0u8; 1];
                    let _ = std::fs::File::from(go_r).read(&mut b);
                    s.close();
                }
                other => {
                    let _ = write!(w, "ERR {:?}", other.map(|_| ()));
                }
            }
            sys::exit_now(0)
        }
        Forked::Parent(pid) => pid,
    };
    drop(w);
    drop(go_r);
    let mut said = String::new();
    std::fs::File::from(r).read_to_string(&mut said).unwrap();
    let mut f = said.split(' ');
    let t0: u64 = f
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{said}"));
    let t1: u64 = f
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{said}"));
    let pam = timing::decode(f.next().unwrap_or(""));
    // The first session's admission is written with the session.
    let st = wait_until(Duration::from_secs(10), || {
        hutch.state(&user.name).filter(|s| {
            s["start_marks"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x[0] == "open_sent"))
        })
    });
    // The keeper is nobody's child in the PAM host, and in a session of its own.
    if let Some(kp) = st.as_ref().and_then(|s| s["keeper_pid"].as_i64()) {
        let kp = kp as i32;
        assert_ne!(hutch_tests::proc::ppid(kp), Some(child.as_raw()));
        let sid = |p: i32| nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(p))).ok();
        assert_ne!(sid(kp), sid(child.as_raw()));
        assert!(sid(kp).is_some());
    }
    drop(go_w);
    let _ = nix::sys::wait::waitpid(child, None);
    let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
    let st = st.expect("state.json with the start marks");
    let marks: Vec<(String, u64)> = serde_json::from_value(st["start_marks"].clone()).unwrap();
    let names: Vec<&str> = marks.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("no mark {n:?} in {names:?}"))
    };
    // The keeper's phases, in order; the init's steps between the clone and its report.
    // The account is the one the module looked up, handed over on a pipe
    // (`--account-fd`): the keeper does not ask NSS again.
    let keeper = [
        "exec",
        "account_handed",
        "policy",
        "keeper_cgroup",
        "template",
        "cgroup",
        "clone",
        "attach",
        "report",
        "namespaces",
        "container",
        "state",
        "ready",
        "open_attach",
        "open_sent",
    ];
    let init = [
        "init",
        "placed",
        "mount_overlay",
        "mount_proc",
        "mount_dev",
        "pivot_into",
        "become_user",
    ];
    for seq in [&keeper[..], &init[..]] {
        for w in seq.windows(2) {
            let (a, b) = (pos(w[0]), pos(w[1]));
            assert!(a < b, "{} listed after {}: {names:?}", w[0], w[1]);
            assert!(marks[a].1 <= marks[b].1, "{} after {} in time", w[0], w[1]);
        }
    }
    assert!(pos("attach") < pos("init") && pos("become_user") < pos("report"));
    assert!(!names.contains(&"account_looked_up"), "{names:?}");
    for (n, t) in marks.iter().chain(&pam) {
        assert!(
            *t >= t0 && *t <= t1,
            "mark {n} at {t} outside the open ({t0}..{t1})"
        );
    }
    // pam_hutch's own steps, in the PAM host.
    let pam_names: Vec<&str> = pam.iter().map(|(n, _)| n.as_str()).collect();
    for n in [
        "pam_account",
        "pam_policy",
        "pam_forked",
        "pam_ready_read",
        "pam_setns",
        "pam_confined",
    ] {
        assert!(pam_names.contains(&n), "no {n} in {pam_names:?}");
    }
    assert!(left.is_empty(), "{left:?}");
    let name = user.name.clone();
    drop(user);
    drop(hutch);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// The keeper reads the policy through the PAM module's cache (the
/// starter's `policy_cache`, passed as `--policy-cache`) instead of
/// parsing the files a second time at every cold start: once the sources
/// are old enough to be cached, the module writes the cache and the keeper
/// it starts reads it (start mark `policy_cached`, not `policy_parsed`).
#[test]
fn the_keeper_reads_the_modules_policy_cache() {
    if !require_root("the_keeper_reads_the_modules_policy_cache") {
        return;
    }
    let hutch = HutchEnv::new("[defaults]\nmemory = \"1G\"\npids = 512\n");
    let user = hutch.user();
    let cache = hutch.dir.join("policy-cache");
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: cache.clone(),
    };
    // A policy is cached only once every source is a second old (its
    // "racy" window, hutch_policy's cache.rs): wait that out, not a timing.
    std::thread::sleep(Duration::from_millis(1100));
    let (r, w) = nix::unistd::pipe().unwrap();
    let (go_r, go_w) = nix::unistd::pipe().unwrap();
    let child = match sys::fork().unwrap() {
        Forked::Child => {
            drop(r);
            drop(go_w);
            let mut w = std::fs::File::from(w);
            let info = SessionInfo {
                service: "marks".into(),
                tty: None,
                rhost: None,
            };
            match open_session(&opts, &user.name, &info) {
                Ok(Outcome::Joined(s)) => {
                    let _ = write!(w, "OK");
                    drop(w);
                    let mut b = [0u8; 1];
                    let _ = std::fs::File::from(go_r).read(&mut b);
                    s.close();
                }
                other => {
                    let _ = write!(w, "ERR {:?}", other.map(|_| ()));
                }
            }
            sys::exit_now(0)
        }
        Forked::Parent(pid) => pid,
    };
    drop(w);
    drop(go_r);
    let mut said = String::new();
    std::fs::File::from(r).read_to_string(&mut said).unwrap();
    let st = hutch.state(&user.name);
    drop(go_w);
    let _ = nix::sys::wait::waitpid(child, None);
    let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
    assert_eq!(said, "OK");
    let st = st.expect("state.json");
    let marks: Vec<(String, u64)> = serde_json::from_value(st["start_marks"].clone()).unwrap();
    let names: Vec<&str> = marks.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"policy_cached") && !names.contains(&"policy_parsed"),
        "the keeper did not read the module's cache: {names:?}"
    );
    assert!(
        std::fs::read_dir(&cache).unwrap().count() > 0,
        "no cache in {}",
        cache.display()
    );
    assert!(left.is_empty(), "{left:?}");
    let name = user.name.clone();
    drop(user);
    drop(hutch);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
