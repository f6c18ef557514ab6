//! The operator's side over real logins: the metrics textfile through
//! promtool and a real prometheus-node-exporter (in a network namespace of
//! the test's own), the usage history's report, the audit trail parsed
//! back from syslog, a monitor-only (`enforce = false`) login that lands on
//! the host, and a broken policy that never refuses root or an exempt admin.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// Every audit record among syslog lines, as key → value maps.
fn audit(lines: &[String]) -> Vec<BTreeMap<String, String>> {
    lines
        .iter()
        .filter_map(|l| hutch_runtime::audit::message_of(l))
        .map(|m| {
            hutch_runtime::audit::parse(m)
                .unwrap_or_else(|| panic!("an audit record that does not parse: {m}"))
                .into_iter()
                .collect()
        })
        .collect()
}

/// The records of `event` about `user`.
fn events<'a>(
    recs: &'a [BTreeMap<String, String>],
    event: &str,
    user: &str,
) -> Vec<&'a BTreeMap<String, String>> {
    recs.iter()
        .filter(|r| r["event"] == event && r.get("user").map(String::as_str) == Some(user))
        .collect()
}

/// hutchctl with this env's policy, in a private mount namespace whose
/// /dev/log is `log` (hutchctl's own audit records land there).
fn ctl_logged(hutch: &HutchEnv, log: &Syslog, args: &[&str]) -> std::process::Output {
    let script = format!(
        "set -e\n{}exec \"$@\"\n",
        hutch_tests::ns::private_dev_script(log.path())
    );
    output(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(&hutch.bins.ctl)
            .arg("--config")
            .arg(&hutch.config)
            .args(args),
    )
}

/// hutchctl with this env's policy in the mount namespace of process `pid`
/// (the sshd's: where its keepers loaded the template generations).
fn ctl_in_ns(hutch: &HutchEnv, pid: i32, args: &[&str]) -> std::process::Output {
    output(
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("--")
            .arg(&hutch.bins.ctl)
            .arg("--config")
            .arg(&hutch.config)
            .args(args),
    )
}

/// The value of the sample `series` (exact, labels included) in exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A real prometheus-node-exporter (textfile collector only) serving `dir`
/// on 127.0.0.1 inside a network namespace of its own, scraped once with
/// python's urllib, then stopped by pid. Returns what it served.
fn node_exporter_scrape(dir: &Path) -> String {
    let script = r#"set -e
ip link set lo up
prometheus-node-exporter --web.listen-address=127.0.0.1:9100 --collector.disable-defaults \
    --collector.textfile --collector.textfile.directory="$1" >"$2/ne.log" 2>&1 &
pid=$!
ok=1
for i in $(seq 100); do
    if python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=2).read().decode())' >"$2/scraped" 2>/dev/null; then ok=0; break; fi
    sleep 0.1
done
kill "$pid"; wait "$pid" || true
[ $ok = 0 ] || { cat "$2/ne.log" >&2; exit 1; }
cat "$2/scraped"
"#;
    let work = TestDir::new("htne");
    let out = output(
        Command::new("timeout")
            .args([
                "-k", "5", "60", "unshare", "--net", "--", "sh", "-c", script, "sh",
            ])
            .arg(dir)
            .arg(work.path()),
    );
    assert!(out.status.success(), "node_exporter: {}", out.describe());
    out.stdout_str()
}

/// Logins make, join and leave a container; `metrics --textfile` passes
/// promtool and node_exporter serves it; `--record` samples feed `report`;
/// every session's open and close, the container's start and stop and the
/// admin's `stop` are audit records that parse back with their fields.
#[test]
fn metrics_report_and_audit_over_real_logins() {
    if !require_root("metrics_report_and_audit_over_real_logins") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    // The usage history of this test alone (the lib dir is shared).
    let db = hutch.dir.join("usage.db");
    let dropins = hutch_policy::drop_in_dir(&hutch.config);
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("50-usage.toml"),
        format!(
            "[host]\nusage_db = \"{}\"\nusage_interval = 0\n",
            db.display()
        ),
    )
    .unwrap();
    let user = hutch.user();
    let name = user.name.clone();
    let ctl_log = Syslog::bind(hutch.dir.join("ctl-log.sock"));
    let prom_dir = TestDir::new("htprom");
    let prom = prom_dir.join("hutch.prom");
    // Recording from the start: keepers spool their final usage from now on.
    let out = hutch.ctl(&["metrics", "--record"]);
    assert!(out.status.success(), "{}", out.describe());
    let (lines, service) = {
        let env = hutch.sshd(Sftp::Internal);
        // A login that makes the container and goes with it.
        let out = env.ssh(&user, &["true"]);
        assert!(out.status.success(), "{}", out.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(15)).is_empty());
        // One session holds the container; a second joins it and burns some CPU.
        let s = env.shell_pty(&user);
        let out = env.ssh(
            &user,
            &["i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done"],
        );
        assert_eq!(out.stdout_str().trim(), "done", "{}", out.describe());
        wait_until(Duration::from_secs(10), || {
            hutch
                .state(&name)
                .filter(|st| st["sessions"].as_array().map(Vec::len) == Some(1))
        })
        .expect("the holding session alone");

        let out = ctl_in_ns(
            &hutch,
            env.pid(),
            &["metrics", "--textfile", prom.to_str().unwrap(), "--record"],
        );
        assert!(out.status.success(), "{}", out.describe());
        let text = std::fs::read_to_string(&prom).unwrap();
        let check = output(
            Command::new("sh")
                .arg("-c")
                .arg(format!("promtool check metrics < {}", prom.display())),
        );
        assert!(
            check.status.success(),
            "promtool: {}\n{text}",
            check.describe()
        );
        let u = format!("{{user=\"{name}\"}}");
        let svc = &env.service;
        for (series, want) in [
            ("hutch_containers".to_string(), 1.0),
            ("hutch_policy_ok".to_string(), 1.0),
            (format!("hutch_container_sessions{u}"), 1.0),
            (
                format!("hutch_container_memory_limit_bytes{u}"),
                1073741824.0,
            ),
            (format!("hutch_container_pids_limit{u}"), 512.0),
            (format!("hutch_container_frozen{u}"), 0.0),
            (
                format!("hutch_logins_total{{service=\"{svc}\",result=\"created\"}}"),
                2.0,
            ),
            (
                format!("hutch_logins_total{{service=\"{svc}\",result=\"joined\"}}"),
                1.0,
            ),
            (
                "hutch_login_setup_seconds_count{kind=\"create\"}".to_string(),
                2.0,
            ),
            (
                "hutch_login_setup_seconds_bucket{kind=\"join\",le=\"+Inf\"}".to_string(),
                1.0,
            ),
        ] {
            assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
        }
        assert!(
            sample(&text, &format!("hutch_container_cpu_seconds_total{u}")).unwrap() > 0.0,
            "{text}"
        );
        assert!(
            sample(&text, &format!("hutch_container_memory_bytes{u}")).unwrap() > 0.0,
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with(&format!(
                "hutch_container_info{{user=\"{name}\",template=\"e2e\",generation=\""
            ))),
            "{text}"
        );
        assert!(
            text.contains("hutch_template_ram_bytes{template=\"e2e\",generation=\""),
            "{text}"
        );

        // node_exporter serves the file as written.
        let served = node_exporter_scrape(prom_dir.path());
        assert_eq!(
            sample(&served, "node_textfile_scrape_error"),
            Some(0.0),
            "{served}"
        );
        assert_eq!(
            sample(&served, &format!("hutch_container_sessions{u}")),
            Some(1.0),
            "{served}"
        );
        assert_eq!(
            sample(&served, &format!("hutch_container_pids_limit{u}")),
            Some(512.0),
            "{served}"
        );

        // A second sample, then the admin stops the container under the session.
        std::thread::sleep(Duration::from_millis(1100));
        let out = hutch.ctl(&["metrics", "--record"]);
        assert!(out.status.success(), "{}", out.describe());
        let out = ctl_logged(&hutch, &ctl_log, &["stop", &name]);
        assert!(out.status.success(), "{}", out.describe());
        let _ = s.wait(Duration::from_secs(30));
        assert!(hutch.wait_gone(&name, Duration::from_secs(15)).is_empty());
        // The keeper's last records are sent before it exits.
        let lines = wait_until(Duration::from_secs(10), || {
            let l = env.syslog().lines();
            l.iter()
                .any(|x| x.contains("event=container.stop") && x.contains(&name))
                .then_some(l)
        })
        .unwrap_or_else(|| env.syslog().lines());
        (lines, env.service.clone())
    };

    // The next recording takes in the last container's final usage (the
    // keeper spools it at teardown; the first container's was taken by the
    // first recording).
    let out = hutch.ctl(&["metrics", "--record"]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        hutch_runtime::usage_spool::pending(&hutch.run_dir).is_empty(),
        "the spool was not taken in"
    );
    // The report: both containers (each one's final usage, and two samples
    // of the second), the holding session.
    let out = hutch.ctl(&["report", &name, "--since", "1h", "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    let rows: serde_json::Value = serde_json::from_str(&out.stdout_str()).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let r = &rows[0];
    assert_eq!(r["user"], name.as_str());
    assert_eq!(r["samples"], 4, "{r}");
    assert_eq!(r["containers"], 2, "{r}");
    // Every session of both containers (the keepers' finals count those
    // no sample saw): the first login's, then the holding one and the
    // CPU-burning one.
    assert_eq!(r["sessions"], 3, "{r}");
    assert!(r["memory_peak_bytes"].as_u64().unwrap() > 0, "{r}");
    let out = hutch.ctl(&["report", "--since", "1h", "--csv"]);
    assert!(
        out.stdout_str()
            .lines()
            .any(|l| l.starts_with(&format!("\"{name}\","))),
        "{}",
        out.describe()
    );
    assert!(db.exists(), "the history is where usage_db says");

    // The audit trail.
    let recs = audit(&lines);
    let opens = events(&recs, "session.open", &name);
    assert_eq!(opens.len(), 3, "{lines:#?}");
    let uid = user.uid.to_string();
    for o in &opens {
        assert_eq!(o["uid"], uid);
        assert_eq!(o["service"], service);
        assert_eq!(o["rhost"], "127.0.0.1");
        assert_eq!(o["template"], "e2e");
        assert!(o["generation"].parse::<u64>().is_ok(), "{o:?}");
        assert!(o["container"].starts_with(&format!("{name}:")), "{o:?}");
        assert!(o.contains_key("tty") && o.contains_key("pid"), "{o:?}");
    }
    let closes = events(&recs, "session.close", &name);
    let whys: Vec<&str> = closes.iter().map(|c| c["why"].as_str()).collect();
    assert_eq!(
        whys.iter().filter(|w| **w == "logout").count(),
        2,
        "{closes:#?}"
    );
    assert!(
        whys.contains(&"teardown: stopped by hutchctl"),
        "{closes:#?}"
    );
    assert!(
        closes.iter().all(|c| c["duration"].parse::<u64>().is_ok()),
        "{closes:#?}"
    );
    assert_eq!(
        events(&recs, "container.start", &name).len(),
        2,
        "{lines:#?}"
    );
    let stops = events(&recs, "container.stop", &name);
    assert_eq!(stops.len(), 2, "{lines:#?}");
    assert!(
        stops.iter().any(|s| s["why"] == "stopped by hutchctl"),
        "{stops:#?}"
    );
    assert!(
        stops
            .iter()
            .all(|s| s["cpu_seconds"].parse::<f64>().is_ok()),
        "{stops:#?}"
    );
    // The history's CPU time is the containers' final CPU time, as their
    // container.stop records say it.
    let audited: f64 = stops
        .iter()
        .map(|s| s["cpu_seconds"].parse::<f64>().unwrap())
        .sum();
    let reported = r["cpu_seconds"].as_f64().unwrap();
    assert!(
        (reported - audited).abs() < 0.01 && reported > 0.0,
        "report {reported} s, container.stop {audited} s"
    );
    // hutchctl's own record of the stop.
    let admin = audit(&ctl_log.lines());
    assert!(
        admin.iter().any(|r| r["event"] == "admin"
            && r["action"] == "stop"
            && r["target"] == name
            && r["result"] == "ok"
            && r["uid"] == "0"),
        "{:#?}",
        ctl_log.lines()
    );
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}

/// `enforce = false`: the login runs on the host (the host's pid namespace,
/// no container made), the would-be decision is logged and audited, and it
/// is counted as `monitor`.
#[test]
fn monitor_only_login_lands_on_the_host() {
    if !require_root("monitor_only_login_lands_on_the_host") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    // A rollout keeps the users' shells: hutch-shell never runs outside a container.
    let user = TestUser::create(&unique("ht"), Path::new("/bin/bash"));
    let name = user.name.clone();
    hutch.write_policy(&format!("{POLICY}\n[users.{name}]\nenforce = false\n"));
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(&user, &["readlink /proc/self/ns/pid"]);
        assert!(out.status.success(), "{}", out.describe());
        let host_pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
        assert_eq!(
            out.stdout_str().trim(),
            host_pidns.to_string_lossy(),
            "not on the host"
        );
        assert!(!hutch.user_dir(&name).exists(), "a container was made");
        let line = env
            .syslog()
            .wait_for_substr("monitor only (users.", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{:#?}", env.syslog().lines()));
        assert!(
            line.contains(&format!(
                "would confine in template e2e the session of {name}"
            )),
            "{line}"
        );
        let recs = audit(&env.syslog().lines());
        let m = events(&recs, "session.monitor", &name);
        assert_eq!(m.len(), 1, "{:#?}", env.syslog().lines());
        assert_eq!(m[0]["would"], "confine in template e2e");
        assert!(
            m[0]["why"].starts_with(&format!("users.{name}: enforce = false (")),
            "{:?}",
            m[0]
        );
        assert_eq!(m[0]["uid"], user.uid.to_string());
        let out = hutch.ctl(&["metrics"]);
        let want = format!(
            "hutch_logins_total{{service=\"{}\",result=\"monitor\"}}",
            env.service
        );
        assert_eq!(
            sample(&out.stdout_str(), &want),
            Some(1.0),
            "{}",
            out.describe()
        );
        let out = hutch.ctl(&["policy", &name, "--service", &env.service]);
        assert!(
            out.stdout_str().contains("monitor only, would be confined"),
            "{}",
            out.describe()
        );
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}

/// A policy that no longer loads refuses confined users (fail closed) but
/// never root, with or without a cache, and still lets in an admin the last
/// policy that loaded exempted, saying so at LOG_ERR.
#[test]
fn broken_policy_never_refuses_root_or_exempt_admins() {
    if !require_root("broken_policy_never_refuses_root_or_exempt_admins") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    // su runs the admin's login shell on the host: a plain one.
    let admin = TestUser::create(&unique("ht"), Path::new("/bin/bash"));
    let confined = hutch.user();
    hutch.write_policy(&format!(
        "{POLICY}\n[users.{}]\nconfine = false\n",
        admin.name
    ));
    let stack = hutch.pam_stack("");
    let log = Syslog::bind(hutch.dir.join("su-log.sock"));
    // The cache is written once the policy is a second old: this login writes it.
    std::thread::sleep(Duration::from_millis(1100));
    let out = su_in_private_ns_with_log(&stack, &admin.name, "id -un", &log);
    assert_eq!(out.stdout_str().trim(), admin.name, "{}", out.describe());
    let cache = hutch_policy::cache_path(&hutch.config, Path::new(hutch_policy::DEFAULT_CACHE_DIR));
    assert!(cache.exists(), "the login cached the policy");

    hutch.write_policy("[defaults]\nmemroy = \"1G\"\n");
    let out = su_in_private_ns_with_log(&stack, "root", "id -un", &log);
    assert_eq!(
        out.stdout_str().trim(),
        "root",
        "root refused: {}",
        out.describe()
    );
    let out = su_in_private_ns_with_log(&stack, &admin.name, "id -un", &log);
    assert_eq!(
        out.stdout_str().trim(),
        admin.name,
        "the admin refused: {}",
        out.describe()
    );
    assert!(
        log.wait_for_substr(
            &format!("letting {} in unconfined", admin.name),
            Duration::from_secs(5)
        )
        .is_some(),
        "{:#?}",
        log.lines()
    );
    let out = su_in_private_ns_with_log(&stack, &confined.name, "id -un", &log);
    assert!(
        !out.status.success(),
        "a confined user got in: {}",
        out.describe()
    );
    assert!(
        log.contains(&format!("refusing session of {}: policy:", confined.name)),
        "{:#?}",
        log.lines()
    );
    let recs = audit(&log.lines());
    assert_eq!(
        events(&recs, "session.exempt", &admin.name).len(),
        1,
        "{:#?}",
        log.lines()
    );
    let refused = events(&recs, "session.refuse", &confined.name);
    assert_eq!(refused.len(), 1, "{:#?}", log.lines());
    assert_eq!(refused[0]["cause"], "policy");

    // Without the cache, root still gets in; the admin no longer does.
    std::fs::remove_file(&cache).unwrap();
    let out = su_in_private_ns_with_log(&stack, "root", "id -un", &log);
    assert_eq!(
        out.stdout_str().trim(),
        "root",
        "root refused: {}",
        out.describe()
    );
    let out = su_in_private_ns_with_log(&stack, &admin.name, "id -un", &log);
    assert!(!out.status.success(), "{}", out.describe());
    let (a, c) = (admin.name.clone(), confined.name.clone());
    drop(admin);
    drop(confined);
    assert_no_leftovers(&a, Duration::from_secs(5));
    assert_no_leftovers(&c, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}

/// `check --probe` on a monitor-only user builds the would-be container,
/// passes its checks (hostname, pid namespace, no host files, network,
/// limits), tears it down and leaves nothing; a user with a running
/// container, or an exempt one, is not probed.
#[test]
fn probe_builds_checks_and_tears_down() {
    if !require_root("probe_builds_checks_and_tears_down") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    let admin = TestUser::create(&unique("ht"), Path::new("/bin/bash"));
    hutch.write_policy(&format!(
        "{POLICY}\n[users.{name}]\nenforce = false\ncpu = \"50%\"\nmemory_high = \"768M\"\n[users.{}]\nconfine = false\n",
        admin.name
    ));
    let keeper = hutch.bins.keeper.to_string_lossy().to_string();
    let probe = |who: &str| hutch.ctl(&["check", "--probe", who, "--keeper", &keeper]);
    let out = probe(&name);
    let text = out.stdout_str();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    for c in [
        "hostname",
        "pid namespace",
        "host files",
        "network",
        "limits",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("PASS {c}: "))),
            "{c}: {text}"
        );
    }
    assert!(
        text.contains(&format!("PASS hostname: \"box-{name}\"")),
        "{text}"
    );
    assert!(
        text.contains("PASS network: mode none: interfaces lo\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "memory 1073741824, memory_high 805306368, pids 512, cpu Some((50000, 100000))"
        ),
        "{text}"
    );
    assert!(
        text.contains("torn down\nverdict: ok (5 checks passed)"),
        "{text}"
    );
    let left = hutch.wait_gone(&name, Duration::from_secs(15));
    assert!(left.is_empty(), "after the probe: {left:?}");

    // Not probed: an exempt user; a user whose container runs.
    let out = probe(&admin.name);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stdout_str().contains("is not confined"),
        "{}",
        out.describe()
    );
    {
        hutch.write_policy(POLICY);
        let env = hutch.sshd(Sftp::Internal);
        let mut s = env.shell_pty(&user);
        let out = probe(&name);
        assert_eq!(out.code(), Some(1), "{}", out.describe());
        assert!(
            out.stdout_str().contains("has a running container"),
            "{}",
            out.describe()
        );
        assert!(
            hutch.state(&name).is_some(),
            "the probe touched the running container"
        );
        s.send("exit\n");
        let _ = s.wait(Duration::from_secs(30));
        assert!(hutch.wait_gone(&name, Duration::from_secs(15)).is_empty());
    }
    let a = admin.name.clone();
    drop(user);
    drop(admin);
    assert_no_leftovers(&name, Duration::from_secs(5));
    assert_no_leftovers(&a, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}
