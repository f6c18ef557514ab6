//! `hutchctl check --probe USER`: builds the user's container once, as a
//! login would (`enforce = false` or not: the probe tries the would-be
//! container before it is enforced), checks from inside and from the host
//! that it is what the policy says, tears it down, and prints a verdict.
//!
//! A forked child opens the session ([`hutch_runtime::join::open_probe_session`]:
//! the keeper is started, the child moved into the container's cgroup and
//! namespaces), runs the inside checks (hostname, its own pid namespace
//! with hutch-init as pid 1, no host files, an overlay root, the network
//! interfaces of the policy's mode) and reports them on a pipe; the parent
//! checks the limits in the container's cgroup files against the policy,
//! lets the child close the session, and stops the container. A user with
//! a running container is not probed (the probe would end their sessions).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hutch_policy::{Decision, Network, UserPolicy};
use hutch_runtime::join::{JoinOptions, SessionInfo};
use hutch_runtime::sys::{self, Forked};

use crate::Cli;

/// The keeper the probe starts unless `--keeper` says otherwise: where the
/// build put it (`HUTCH_KEEPER`, as for pam_hutch), else `make install`'s.
pub const DEFAULT_KEEPER: &str = match option_env!("HUTCH_KEEPER") {
    Some(path) => path,
    None => "/usr/local/libexec/hutch/hutch-keeper",
};

/// One check and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
    }
}

/// What the child needs to know to check from inside.
struct Expect<'a> {
    hostname: &'a str,
    network: &'a Network,
    host_pidns: PathBuf,
    /// Host paths that must not be visible inside.
    host_only: Vec<PathBuf>,
}

/// The interfaces of the current network namespace (`/proc/net/dev`).
fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// The filesystem type mounted at `/` (`/proc/self/mountinfo`).
fn root_fstype() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_string)
}

/// The checks made from inside the container (in the child, after joining).
fn inside_checks(e: &Expect<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.push(check(
        "hostname",
        hostname == e.hostname,
        format!("{hostname:?} (the policy says {:?})", e.hostname),
    ));
    let pidns = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    out.push(check(
        "pid namespace",
        !pidns.as_os_str().is_empty() && pidns != e.host_pidns && init.trim() == "hutch-init",
        format!(
            "{} (host {}), pid 1 is {:?}",
            pidns.display(),
            e.host_pidns.display(),
            init.trim()
        ),
    ));
    let seen: Vec<String> = e
        .host_only
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .map(|p| p.display().to_string())
        .collect();
    let fstype = root_fstype().unwrap_or_else(|| "?".into());
    out.push(check(
        "host files",
        seen.is_empty() && fstype == "overlay",
        if seen.is_empty() {
            format!(
                "{} not visible; / is {fstype}",
                e.host_only
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("visible inside: {}", seen.join(", "))
        },
    ));
    let ifaces = interfaces();
    let (mode, ok) = match e.network {
        Network::Loopback => ("none", ifaces == ["lo"]),
        Network::Veth(_) => ("veth", ifaces.iter().any(|i| i == "eth0")),
        Network::Macvlan(_) => ("macvlan", ifaces.iter().any(|i| i == "eth0")),
        Network::Vlan(_) => ("vlan", ifaces.iter().any(|i| i == "eth0")),
        Network::Phys(_) => ("phys", ifaces.iter().any(|i| i == "eth0")),
    };
    out.push(check(
        "network",
        ok,
        format!("mode {mode}: interfaces {}", ifaces.join(" ")),
    ));
    out
}

/// Whether `applied` is what the policy asked for (v1 rounds memory down
/// to a page).
fn same_bytes(applied: Option<u64>, wanted: Option<u64>) -> bool {
    match (applied, wanted) {
        (Some(a), Some(w)) => a <= w && w - a < 4096,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// The limits in the container's cgroup files against the policy's.
fn limits_check(applied: &hutch_runtime::cgroup::Applied, up: &UserPolicy) -> Check {
    let l = &up.limits;
    let mut bad = Vec::new();
    let mut said = Vec::new();
    let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    for (name, a, w) in [
        ("memory", applied.memory_max, l.memory_max),
        ("memory_high", applied.memory_high, l.memory_high),
    ] {
        if w.is_some() {
            said.push(format!("{name} {}", show(a)));
            if !same_bytes(a, w) {
                bad.push(format!("{name} is {} not {}", show(a), show(w)));
            }
        }
    }
    if let Some(w) = l.pids_max {
        said.push(format!("pids {}", show(applied.pids_max)));
        if applied.pids_max != Some(w) {
            bad.push(format!("pids is {} not {w}", show(applied.pids_max)));
        }
    }
    if let Some(c) = l.cpu {
        let want = (c.quota_us, c.period_us);
        said.push(format!("cpu {:?}", applied.cpu_max));
        if applied.cpu_max != Some(want) {
            bad.push(format!("cpu is {:?} not {want:?}", applied.cpu_max));
        }
    }
    if bad.is_empty() {
        check(
            "limits",
            true,
            if said.is_empty() {
                "the policy sets none of memory, memory_high, pids, cpu".to_string()
            } else {
                format!("{} (as the policy says)", said.join(", "))
            },
        )
    } else {
        check("limits", false, bad.join("; "))
    }
}

fn encode(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            format!(
                "{}\t{}\t{}\n",
                c.name,
                u8::from(c.ok),
                c.detail.replace(['\t', '\n'], " ")
            )
        })
        .collect()
}

fn decode(text: &str) -> Vec<Check> {
    const NAMES: [&str; 4] = ["hostname", "pid namespace", "host files", "network"];
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?;
            let name = NAMES.into_iter().find(|n| *n == name)?;
            Some(check(name, f.next()? == "1", f.next().unwrap_or("")))
        })
        .collect()
}

/// The child: open the session, check, report, wait for the parent's go, close.
fn child(
    opts: &JoinOptions,
    user: &str,
    info: &SessionInfo,
    e: &Expect<'_>,
    report: OwnedFd,
    go: OwnedFd,
) -> ! {
    let mut report = std::fs::File::from(report);
    match hutch_runtime::join::open_probe_session(opts, user, info) {
        Ok(session) => {
            let _ = report.write_all(format!("OK\t{}\n", session.init_pid).as_bytes());
            // setns(pid) places only the children in the container's pid
            // namespace (whose /proc has no /proc/self for the caller): the
            // checks run in one, as a session's shell would.
            match sys::fork() {
                Ok(Forked::Child) => {
                    let _ = report.write_all(encode(&inside_checks(e)).as_bytes());
                    sys::exit_now(0)
                }
                Ok(Forked::Parent(p)) => {
                    let _ = nix::sys::wait::waitpid(p, None);
                }
                Err(err) => {
                    let _ = report.write_all(format!("hostname\t0\tfork: {err}\n").as_bytes());
                }
            }
            drop(report);
            // Holds the session until the parent has checked the limits.
            let _ = std::fs::File::from(go).read(&mut [0u8; 1]);
            session.close();
            sys::exit_now(0)
        }
        Err(err) => {
            let err = hutch_runtime::error::chain(&err).replace('\n', " ");
            let _ = report.write_all(format!("ERR\t{err}\n").as_bytes());
            sys::exit_now(1)
        }
    }
}

/// `hutchctl check --probe USER [--service S]`: 0 when every check
/// passed, 1 when one failed or the user cannot be probed.
pub fn probe(cli: &Cli, user: &str, service: &str, keeper: &Path) -> anyhow::Result<i32> {
    hutch_runtime::join::check_single_threaded()?;
    let policy = hutch_policy::Policy::load(&cli.config)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading policy {}", cli.config.display()))?;
    let account =
        hutch_runtime::account::lookup(user).with_context(|| format!("looking up {user}"))?;
    let explained = policy.explain(&account, service);
    let up = match explained.decision {
        Decision::Confine(p) => *p,
        Decision::Exempt(why) => {
            println!("verdict: {user} is not confined ({why}): nothing to probe");
            return Ok(1);
        }
        Decision::Refuse(why) => {
            println!("verdict: a login of {user} through {service} is refused ({why})");
            return Ok(1);
        }
    };
    let host = policy.host().clone();
    let paths = hutch_runtime::paths::UserPaths::new(&host, user);
    if paths.state().exists() {
        println!("verdict: {user} has a running container; the probe builds its own and would end those sessions: not probed");
        return Ok(1);
    }
    let mut config = cli.config.clone();
    if config.is_relative() {
        config = std::env::current_dir()?.join(config);
    }
    let opts = JoinOptions {
        config: config.clone(),
        keeper: keeper.to_path_buf(),
        timeout: Duration::from_secs(30),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };
    let info = SessionInfo {
        service: service.to_string(),
        tty: Some("hutchctl-probe".into()),
        rhost: None,
    };
    let expect = Expect {
        hostname: &up.hostname,
        network: &up.network,
        host_pidns: std::fs::read_link("/proc/self/ns/pid").context("reading /proc/self/ns/pid")?,
        host_only: vec![config.clone(), paths.state()],
    };
    let (report_r, report_w) = nix::unistd::pipe().context("pipe")?;
    let (go_r, go_w) = nix::unistd::pipe().context("pipe")?;
    let started = Instant::now();
    let pid = match sys::fork().context("fork")? {
        Forked::Child => {
            drop(report_r);
            drop(go_w);
            child(&opts, user, &info, &expect, report_w, go_r)
        }
        Forked::Parent(pid) => pid,
    };
    drop(report_w);
    drop(go_r);
    let mut text = String::new();
    let _ = std::fs::File::from(report_r).read_to_string(&mut text);
    let took = started.elapsed();
    let first = text.lines().next().unwrap_or("").to_string();
    let mut checks = decode(&text);
    let joined = first.starts_with("OK\t");
    if joined {
        let cg = hutch_runtime::cgroup::CgroupRoot::open(&host.cgroup_root)
            .ok()
            .and_then(|r| r.existing(&hutch_runtime::paths::user_cgroup(user)));
        checks.push(match cg.map(|c| c.applied()) {
            Some(Ok(a)) => limits_check(&a, &up),
            Some(Err(e)) => check("limits", false, format!("reading the cgroup: {e}")),
            None => check("limits", false, "the container has no cgroup"),
        });
    }
    let state = hutch_runtime::keeper::state::State::read(&paths.state()).ok();
    // Let the child close its session, then end the container.
    drop(go_w);
    let _ = nix::sys::wait::waitpid(pid, None);
    println!(
        "probe of {user} (service {service}): {}",
        match (&state, joined) {
            (Some(s), true) => format!(
                "a container on template {} generation {}, up in {:.0} ms",
                s.template,
                s.generation,
                took.as_secs_f64() * 1000.0
            ),
            _ => format!(
                "no container: {}",
                first.strip_prefix("ERR\t").unwrap_or(&first)
            ),
        }
    );
    for c in &checks {
        println!(
            "{} {}: {}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if joined {
        teardown(cli, user, &paths, pid.as_raw())?;
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if joined && failed == 0 && checks.len() == 5 {
        println!("verdict: ok ({} checks passed)", checks.len());
        Ok(0)
    } else {
        println!(
            "verdict: FAILED ({failed} of {} checks failed{})",
            checks.len(),
            if joined {
                ""
            } else {
                "; the container could not be made"
            }
        );
        Ok(1)
    }
}

/// Stops the probe's container unless someone logged in meanwhile (a
/// session other than the probe's own, whose process was `probe_pid`: the
/// keeper may not have written its end into state.json yet).
fn teardown(
    cli: &Cli,
    user: &str,
    paths: &hutch_runtime::paths::UserPaths,
    probe_pid: i32,
) -> anyhow::Result<()> {
    let others = hutch_runtime::keeper::state::State::read(&paths.state())
        .map(|s| s.sessions.iter().filter(|x| x.pid != probe_pid).count())
        .unwrap_or(0);
    if others > 0 {
        println!("{user} logged in during the probe: the container stays ({others} sessions)");
        return Ok(());
    }
    // With no linger the keeper is already tearing down: give it a moment.
    let settle = Instant::now() + Duration::from_secs(2);
    while paths.state().exists() && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while paths.state().exists() && Instant::now() < deadline {
        if crate::containers::stop(cli, user).unwrap_or(1) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if paths.state().exists() {
        anyhow::bail!("the probe's container of {user} is still there");
    }
    println!("torn down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results cross the pipe intact; unknown names are dropped.
    #[test]
    fn checks_round_trip() {
        let c = vec![
            check("hostname", true, "\"box\" (the policy says \"box\")"),
            check("network", false, "mode none:\tinterfaces lo eth0"),
        ];
        let mut back = decode(&encode(&c));
        assert_eq!(back[0], c[0]);
        assert_eq!(back.pop().unwrap().detail, "mode none: interfaces lo eth0");
        assert!(decode("limits\t1\tforged\n").is_empty());
    }

    /// Limits compare with v1's page rounding; a missing or different one fails.
    #[test]
    fn limits_compare() {
        let mut up = UserPolicy::default();
        up.limits.memory_max = Some(1 << 30);
        up.limits.pids_max = Some(512);
        let a = hutch_runtime::cgroup::Applied {
            memory_max: Some(1 << 30),
            pids_max: Some(512),
            ..Default::default()
        };
        assert!(limits_check(&a, &up).ok);
        let a = hutch_runtime::cgroup::Applied {
            memory_max: Some((1 << 30) - 100),
            pids_max: Some(512),
            ..Default::default()
        };
        assert!(limits_check(&a, &up).ok, "page rounding");
        let a = hutch_runtime::cgroup::Applied {
            memory_max: None,
            pids_max: Some(100),
            ..Default::default()
        };
        let c = limits_check(&a, &up);
        assert!(!c.ok);
        assert_eq!(
            c.detail,
            "memory is none not 1073741824; pids is 100 not 512"
        );
    }
}
