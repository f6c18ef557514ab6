//! Finding the cgroup hierarchies: parsing `/proc/self/mountinfo` and
//! `/proc/self/cgroup`, and deciding which hierarchy carries the limits.
//!
//! Pure text in, paths out: nothing here touches the filesystem except
//! [`limits_mode`], which reads `cgroup.controllers` of the unified mount.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// The v1 controllers hutch uses; other v1 hierarchies (net_cls,
/// `name=systemd`, ...) are ignored.
pub const V1_CONTROLLERS: &[&str] = &[
    "memory", "pids", "cpu", "cpuacct", "blkio", "freezer", "cpuset", "devices",
];

/// One cgroupfs mount as read from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the superblock: two mounts of one hierarchy share it.
    pub dev: String,
    /// The path inside the hierarchy that is mounted (field 4; "/" normally).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// True for cgroup2.
    pub unified: bool,
    /// v1: the controllers of interest bound to this hierarchy (sorted).
    pub controllers: Vec<String>,
    /// v1: the `noprefix` option (control files lack the `cpuset.` prefix).
    pub noprefix: bool,
}

/// The cgroup and cgroup2 mounts of a mountinfo text ([`crate::mountinfo`]),
/// one per hierarchy (the first mount of each superblock wins), v1 mounts
/// limited to those that bind a controller hutch uses.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out: Vec<Mount> = Vec::new();
    for m in crate::mountinfo::parse(text.as_bytes()) {
        let (unified, controllers, noprefix) = match m.fstype.as_str() {
            "cgroup2" => (true, Vec::new(), false),
            "cgroup" => {
                let opts = &m.super_options;
                let mut c: Vec<String> = opts
                    .iter()
                    .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
                    .cloned()
                    .collect();
                if c.is_empty() {
                    continue;
                }
                c.sort();
                (false, c, opts.iter().any(|o| o == "noprefix"))
            }
            _ => continue,
        };
        if out.iter().any(|o| o.dev == m.dev) {
            continue;
        }
        out.push(Mount {
            dev: m.dev,
            root: m.root.to_string_lossy().into_owned(),
            mount_point: m.mount_point,
            unified,
            controllers,
            noprefix,
        });
    }
    out
}

/// One line of `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Hierarchy id; 0 is the unified one.
    pub id: u32,
    /// Controllers (and `name=` tags) of the hierarchy; empty for unified.
    pub controllers: Vec<String>,
    /// The process's cgroup path in that hierarchy.
    pub path: String,
}

/// Parses `/proc/self/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctl = it.next()?;
            let path = it.next()?.to_string();
            let controllers = ctl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some(Membership {
                id,
                controllers,
                path,
            })
        })
        .collect()
}

/// The process's path in the hierarchy of `mount`.
pub fn own_path<'a>(mount: &Mount, members: &'a [Membership]) -> Option<&'a str> {
    members
        .iter()
        .find(|m| {
            if mount.unified {
                m.id == 0 && m.controllers.is_empty()
            } else {
                m.controllers.iter().any(|c| mount.controllers.contains(c))
            }
        })
        .map(|m| m.path.as_str())
}

/// Checks a relative group name: non-empty `/`-separated components, none
/// empty, `.` or `..`, no NUL or newline.
pub fn validate_rel(rel: &str) -> Result<(), CgroupError> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || rel.contains(['\0', '\n']);
    if bad {
        Err(CgroupError::BadName(rel.to_string()))
    } else {
        Ok(())
    }
}

/// Checks a root spec: absolute (`/` alone, or `/a/b`) or relative (`a/b`).
pub fn validate_spec(spec: &str) -> Result<(), CgroupError> {
    if spec == "/" {
        return Ok(());
    }
    validate_rel(spec.strip_prefix('/').unwrap_or(spec))
        .map_err(|_| CgroupError::BadName(spec.to_string()))
}

/// The directory of `spec` in the hierarchy `mount` is.
///
/// Absolute: that path below the mount point (the hierarchy as this mount
/// shows it). Relative: below the process's own cgroup, `own`, which
/// `/proc/self/cgroup` gives relative to the hierarchy's (or cgroup
/// namespace's) root; the mount's root is stripped from it.
pub fn resolve(mount: &Mount, own: Option<&str>, spec: &str) -> Result<PathBuf, CgroupError> {
    let trim = |p: &str| p.trim_start_matches('/').to_string();
    if let Some(abs) = spec.strip_prefix('/') {
        return Ok(join_rel(&mount.mount_point, abs));
    }
    let own = own.ok_or_else(|| {
        CgroupError::NoHierarchy(format!(
            "the process has no cgroup in the hierarchy mounted at {} (/proc/self/cgroup)",
            mount.mount_point.display()
        ))
    })?;
    let root = mount.root.trim_end_matches('/');
    let inside = if root.is_empty() {
        trim(own)
    } else if own == root {
        String::new()
    } else if let Some(rest) = own.strip_prefix(root).filter(|r| r.starts_with('/')) {
        trim(rest)
    } else {
        return Err(CgroupError::NoHierarchy(format!(
            "own cgroup {own} is outside the root {} of the mount at {}",
            mount.root,
            mount.mount_point.display()
        )));
    };
    Ok(join_rel(&join_rel(&mount.mount_point, &inside), spec))
}

/// `base/rel` for a validated relative path (empty = `base`).
pub fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
    }
    p
}

/// Which hierarchies carry the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Unified with controllers: limits, kill and membership all in cgroup2.
    V2,
    /// v1 controller hierarchies for limits; cgroup2 (if mounted, usually
    /// without controllers) for cgroup.kill and the v2 membership.
    V1,
}

/// Decides the mode from the mounts: any v1 hierarchy with a controller
/// hutch uses means the controllers live in v1 (hybrid), whatever the
/// cgroup2 mount holds; otherwise cgroup2 with controllers is pure v2; a
/// cgroup2 mount with an empty `cgroup.controllers` and no v1 hierarchy has
/// nothing to limit with.
pub fn limits_mode(mounts: &[Mount]) -> Result<Mode, CgroupError> {
    if mounts.iter().any(|m| !m.unified) {
        return Ok(Mode::V1);
    }
    let Some(u) = mounts.iter().find(|m| m.unified) else {
        return Err(CgroupError::NoHierarchy(
            "no cgroup or cgroup2 mount in mountinfo".into(),
        ));
    };
    let path = u.mount_point.join("cgroup.controllers");
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    if text.split_whitespace().next().is_none() {
        return Err(CgroupError::NoHierarchy(format!(
            "cgroup2 at {} has no controllers and there is no v1 hierarchy",
            u.mount_point.display()
        )));
    }
    Ok(Mode::V2)
}

/// Controller names present in a v2 `cgroup.controllers`/`subtree_control`.
pub fn word_set(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// This machine's hybrid layout: eight v1 hierarchies plus unified; name=systemd ignored.
    #[test]
    fn hybrid_mountinfo() {
        let m = parse_mountinfo(HYBRID);
        let names: Vec<String> = m
            .iter()
            .map(|m| {
                if m.unified {
                    "unified".into()
                } else {
                    m.controllers.join(",")
                }
            })
            .collect();
        assert_eq!(
            names,
            [
                "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                "unified"
            ]
        );
        assert_eq!(m[3].mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(limits_mode(&m).unwrap(), Mode::V1);
    }

    /// A co-mounted `cpu,cpuacct` hierarchy (systemd hosts) is one hierarchy with both controllers, options aside.
    #[test]
    fn comounted_cpu_cpuacct() {
        let t = "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
                 26 24 0:22 / /mnt/again rw - cgroup cgroup rw,cpu,cpuacct\n\
                 27 24 0:23 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls,net_prio\n";
        let m = parse_mountinfo(t);
        assert_eq!(
            m.len(),
            1,
            "second mount of the same superblock and net_cls are dropped"
        );
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        let pc = parse_proc_cgroup("4:cpu,cpuacct:/user.slice\n0::/user.slice/x.scope\n");
        assert_eq!(own_path(&m[0], &pc), Some("/user.slice"));
    }

    /// Octal escapes in mount points are decoded.
    #[test]
    fn mountinfo_escapes() {
        let t = "41 31 0:38 / /tmp/a\\040b rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_mountinfo(t)[0].mount_point, Path::new("/tmp/a b"));
    }

    /// Relative specs land below the process's own cgroup in each hierarchy; absolute ones at that path.
    #[test]
    fn resolve_specs() {
        let m = parse_mountinfo(HYBRID);
        let pc = parse_proc_cgroup("9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n");
        let mem = &m[3];
        let own = own_path(mem, &pc);
        assert_eq!(own, Some("/process_api/abc"));
        assert_eq!(
            resolve(mem, own, "hutch-t1").unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/hutch-t1")
        );
        assert_eq!(
            resolve(mem, own, "/hutch").unwrap(),
            Path::new("/sys/fs/cgroup/memory/hutch")
        );
        let uni = m.iter().find(|m| m.unified).unwrap();
        assert_eq!(
            resolve(uni, own_path(uni, &pc), "a/b").unwrap(),
            Path::new("/sys/fs/cgroup/unified/a/b")
        );
        // A bind mount of a sub-tree: its root is stripped from the own path.
        let sub = Mount {
            root: "/process_api".into(),
            ..mem.clone()
        };
        assert_eq!(
            resolve(&sub, own, "x").unwrap(),
            Path::new("/sys/fs/cgroup/memory/abc/x")
        );
        let other = Mount {
            root: "/elsewhere".into(),
            ..mem.clone()
        };
        assert!(resolve(&other, own, "x").is_err());
    }

    /// Names with `..`, empty components, or a leading slash (for rel) are refused.
    #[test]
    fn name_validation() {
        for bad in ["", "..", "a/../b", "a//b", "a/", "/a", ".", "a\nb"] {
            assert!(validate_rel(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b", "hutch-cgtest-1-2", "users/alice"] {
            validate_rel(good).unwrap();
        }
        validate_spec("/").unwrap();
        validate_spec("/hutch").unwrap();
        validate_spec("hutch").unwrap();
        assert!(validate_spec("/hutch/../x").is_err());
        assert!(validate_spec("//x").is_err());
    }
}
