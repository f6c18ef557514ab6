//! `hutchctl enter USER [--root] [-- CMD...]`: run a command (by default
//! the policy's shell, as a login shell) inside the user's running
//! container, as the user or with `--root` as root. The kernel work is in
//! [`hutch_runtime::enter`]; this file finds the container and the identity.

use std::ffi::CString;

use anyhow::Context;
use hutch_policy::Decision;
use hutch_runtime::enter::EnterSpec;
use hutch_runtime::privs::Identity;

use crate::Cli;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(s: &str) -> anyhow::Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"))
}

/// `hutchctl enter`. Returns the command's exit status (125 when entering
/// failed inside the container, 127 when the command was not found).
pub fn enter(cli: &Cli, user: &str, root: bool, cmd: &[String]) -> anyhow::Result<i32> {
    hutch_runtime::join::check_single_threaded()?;
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host().clone();
    let crate::Running { state, cgroup, .. } = match crate::find_container(&host, user)? {
        Ok(found) => found,
        Err(crate::NotRunning::NoState) => {
            eprintln!("hutchctl: {user} has no running container");
            return Ok(1);
        }
        Err(crate::NotRunning::NoCgroup) => {
            eprintln!("hutchctl: {user} has no running container (no cgroup)");
            return Ok(1);
        }
    };
    let account =
        hutch_runtime::account::lookup(user).with_context(|| format!("looking up {user}"))?;
    // The shell the user's sessions get: the policy's for sshd.
    let shell = match policy.resolve(&account, "sshd") {
        Decision::Confine(p) => p.shell.to_string_lossy().to_string(),
        _ => "/bin/bash".to_string(),
    };
    let argv: Vec<String> = if cmd.is_empty() {
        vec![shell.clone(), "-l".into()]
    } else {
        cmd.to_vec()
    };
    let (home, name, identity) = if root {
        ("/root".to_string(), "root".to_string(), None)
    } else {
        let groups = hutch_runtime::account::group_ids(&account)
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        (
            account.home.to_string_lossy().to_string(),
            account.name.clone(),
            Some(Identity {
                uid: account.uid,
                gid: account.gid,
                groups,
            }),
        )
    };
    let mut env = vec![
        format!("PATH={PATH}"),
        format!("HOME={home}"),
        format!("USER={name}"),
        format!("LOGNAME={name}"),
        format!("SHELL={shell}"),
    ];
    for var in ["TERM", "LANG", "LC_ALL"] {
        if let Ok(v) = std::env::var(var) {
            env.push(format!("{var}={v}"));
        }
    }
    let spec = EnterSpec {
        init_pid: state.init_pid,
        cgroup: &cgroup,
        identity,
        cwd: home,
        argv: argv
            .iter()
            .map(|a| cstring(a))
            .collect::<anyhow::Result<_>>()?,
        env: env
            .iter()
            .map(|a| cstring(a))
            .collect::<anyhow::Result<_>>()?,
    };
    hutch_runtime::enter::run(&spec).with_context(|| format!("entering the container of {user}"))
}
