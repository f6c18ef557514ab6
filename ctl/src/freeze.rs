//! `hutchctl freeze USER` and `thaw USER`: stop every process of a
//! container where it stands (the cgroup freezer: v1 `freezer.state`, v2
//! `cgroup.freeze`) and let it go on. The frozen state lives in cgroupfs
//! only, so `list` and `watch` read it from there: a keeper that restarts
//! or a state.json written meanwhile cannot disagree with the kernel.

use std::path::Path;

use anyhow::Context;
use hutch_runtime::cgroup::{Cgroup, CgroupRoot};

use crate::Cli;

/// The user's cgroup, if the container runs.
pub fn user_cgroup(cli: &Cli, user: &str) -> anyhow::Result<Option<Cgroup>> {
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host();
    let root = CgroupRoot::open(&host.cgroup_root)
        .with_context(|| format!("cgroup root {:?}", host.cgroup_root))?;
    Ok(root.existing(&hutch_runtime::paths::user_cgroup(user)))
}

/// Whether the group is frozen (or freezing): a v1 freezer hierarchy's
/// `freezer.state` is not `THAWED`, else the unified `cgroup.freeze` is 1.
pub fn is_frozen(cg: &Cgroup) -> bool {
    let dirs = cg.dirs();
    if let Some(state) = dirs.iter().find_map(|d| read(d, "freezer.state")) {
        return state != "THAWED";
    }
    dirs.iter()
        .find_map(|d| read(d, "cgroup.freeze"))
        .is_some_and(|v| v == "1")
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// `hutchctl freeze USER` (`thaw` with `frozen` false). Exit 1 when USER has
/// no running container.
pub fn set(cli: &Cli, user: &str, frozen: bool) -> anyhow::Result<i32> {
    let Some(cg) = user_cgroup(cli, user)? else {
        eprintln!("hutchctl: {user} has no running container");
        return Ok(1);
    };
    if frozen {
        eprintln!(
            "hutchctl: warning: freezing {user}'s container also freezes their SSH connections \
             (sshd's session processes sit in the container's cgroup): their terminals hang, \
             and new logins of {user} wait until `hutchctl thaw {user}`"
        );
        cg.freeze()
            .with_context(|| format!("freezing the container of {user}"))?;
        println!("froze the container of {user}");
    } else {
        cg.thaw()
            .with_context(|| format!("thawing the container of {user}"))?;
        println!("thawed the container of {user}");
    }
    Ok(0)
}
