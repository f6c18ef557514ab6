//! `hutchctl diff USER [--all]`: what the user changed in their container's
//! writable layer, against the template generation it runs on:
//! `A path` added, `C path` changed (copied up: content, mode or owner),
//! `D path` deleted.
//!
//! The layer's `upper` directory is bound, read-only, at
//! [`hutch_runtime::rootfs::ADMIN_UPPER`] inside the container (below a
//! root-only 0700 directory, see rootfs.rs), so it is reached through the
//! init's root: `/proc/<init>/root/run/.hutch-upper/upper`. The template is
//! read where its keeper sees it: `/proc/<keeper>/root/<run_dir>/template/
//! <name>/<generation>` (a keeper may live in a mount namespace of its own).
//!
//! overlayfs marks a deleted file with a whiteout (a character device 0:0)
//! and a directory that replaced a template one with the xattr
//! `trusted.overlay.opaque=y` (everything of the template below it is
//! deleted). Mount points hutch made (the home, bound host files) and the
//! files hutch writes itself (/etc/passwd, group, hostname, hosts,
//! resolv.conf) are left out unless `--all`.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use hutch_runtime::keeper::state::State;

use crate::Cli;

/// Files the container's set-up writes into the writable layer.
const WRITTEN_BY_HUTCH: [&str; 5] = [
    "/etc/passwd",
    "/etc/group",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
];

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: String,
    pub kind: char,
}

/// Compares `upper` with `lower`; `mounts` are the container's mount points
/// (left out, with the directories made only to hold them).
pub fn changes(
    upper: &Path,
    lower: &Path,
    mounts: &BTreeSet<String>,
    all: bool,
) -> anyhow::Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(upper, lower, "", mounts, all, &mut out)?;
    out.sort();
    Ok(out)
}

fn is_mount_related(path: &str, mounts: &BTreeSet<String>) -> bool {
    let prefix = format!("{path}/");
    mounts.contains(path) || mounts.iter().any(|m| m.starts_with(&prefix))
}

fn walk(
    upper: &Path,
    lower: &Path,
    rel: &str,
    mounts: &BTreeSet<String>,
    all: bool,
    out: &mut Vec<Change>,
) -> anyhow::Result<()> {
    let dir = upper.join(rel.trim_start_matches('/'));
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = format!("{rel}/{}", name.to_string_lossy());
        let up = dir.join(&name);
        let low = lower.join(path.trim_start_matches('/'));
        let md =
            std::fs::symlink_metadata(&up).with_context(|| format!("reading {}", up.display()))?;
        let in_lower = std::fs::symlink_metadata(&low).ok();
        let mut push = |kind: char, path: &str| {
            if all || (!is_mount_related(path, mounts) && !WRITTEN_BY_HUTCH.contains(&path)) {
                out.push(Change {
                    path: path.to_string(),
                    kind,
                });
            }
        };
        if md.file_type().is_char_device() && md.rdev() == 0 {
            push('D', &path);
        } else if md.is_dir() {
            let opaque = hutch_runtime::sys::lgetxattr(&up, c"trusted.overlay.opaque")
                .with_context(|| format!("reading the xattrs of {}", up.display()))?
                .is_some_and(|v| v == b"y");
            match &in_lower {
                Some(l) if l.is_dir() => {
                    if opaque {
                        // The template's content below is gone, except what was made anew.
                        for e in std::fs::read_dir(&low)
                            .with_context(|| format!("reading {}", low.display()))?
                            .flatten()
                        {
                            if std::fs::symlink_metadata(up.join(e.file_name())).is_err() {
                                push('D', &format!("{path}/{}", e.file_name().to_string_lossy()));
                            }
                        }
                    }
                }
                Some(_) => push('C', &path),
                None => push('A', &path),
            }
            walk(upper, lower, &path, mounts, all, out)?;
        } else {
            push(if in_lower.is_some() { 'C' } else { 'A' }, &path);
        }
    }
    Ok(())
}

/// Mount points listed in a mountinfo text (field 5, octal escapes undone).
fn mount_points(mountinfo: &str) -> BTreeSet<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            let mut s = String::new();
            let b = m.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\'
                    && i + 4 <= b.len()
                    && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
                {
                    let v = u8::from_str_radix(&m[i + 1..i + 4], 8).unwrap_or(b'?');
                    s.push(v as char);
                    i += 4;
                } else {
                    s.push(b[i] as char);
                    i += 1;
                }
            }
            s
        })
        .collect()
}

/// `hutchctl diff USER [--all]`. Exit 1 when USER has no running container.
pub fn diff(cli: &Cli, user: &str, all: bool) -> anyhow::Result<i32> {
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host();
    let paths = hutch_runtime::paths::UserPaths::new(host, user);
    let state = match State::read(&paths.state()) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("hutchctl: {user} has no running container");
            return Ok(1);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", paths.state().display())),
    };
    let init_root = PathBuf::from(format!("/proc/{}/root", state.init_pid));
    let upper = init_root.join(hutch_runtime::rootfs::ADMIN_UPPER.trim_start_matches('/'));
    if !upper.is_dir() {
        anyhow::bail!(
            "{} is not there: the container of {user} predates `hutchctl diff` (it shows after the next login) or has ended",
            upper.display()
        );
    }
    let store = hutch_runtime::template::TemplateStore::new(&host.lib_dir, &host.run_dir);
    let gen_dir = store
        .generations_dir(&state.template)
        .join(state.generation.to_string());
    let lower = PathBuf::from(format!("/proc/{}/root", state.keeper_pid))
        .join(gen_dir.strip_prefix("/").unwrap_or(&gen_dir));
    if !lower.is_dir() {
        anyhow::bail!(
            "the template generation {} is not readable ({})",
            gen_dir.display(),
            lower.display()
        );
    }
    let mountinfo = format!("/proc/{}/mountinfo", state.init_pid);
    let mounts = mount_points(
        &std::fs::read_to_string(&mountinfo).with_context(|| format!("reading {mountinfo}"))?,
    );
    for c in changes(&upper, &lower, &mounts, all)? {
        println!("{} {}", c.kind, c.path);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Added, changed, deleted (whiteout stand-in skipped: needs mknod), and mount points left out.
    #[test]
    fn added_changed_and_mounts() {
        let base = std::env::temp_dir().join(format!("hutchctl-diff-{}", std::process::id()));
        let (up, low) = (base.join("upper"), base.join("lower"));
        for d in [
            up.join("etc"),
            up.join("home/u"),
            up.join("new/sub"),
            low.join("etc"),
            low.join("home"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(low.join("etc/motd"), "a").unwrap();
        std::fs::write(up.join("etc/motd"), "b").unwrap();
        std::fs::write(up.join("etc/passwd"), "x").unwrap();
        std::fs::write(up.join("new/sub/f"), "c").unwrap();
        let mounts: BTreeSet<String> = ["/home/u".to_string()].into();
        let got: Vec<String> = changes(&up, &low, &mounts, false)
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind, c.path))
            .collect();
        assert_eq!(got, ["C /etc/motd", "A /new", "A /new/sub", "A /new/sub/f"]);
        let all = changes(&up, &low, &mounts, true).unwrap();
        assert!(
            all.iter().any(|c| c.path == "/home/u") && all.iter().any(|c| c.path == "/etc/passwd")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// mountinfo's octal escapes (a space is \040) are undone.
    #[test]
    fn mountinfo_escapes() {
        let m = mount_points(
            "22 1 0:21 / /a\\040b rw - tmpfs x rw\n23 1 0:22 / / rw - overlay hutch rw\n",
        );
        assert!(m.contains("/a b") && m.contains("/"));
    }
}
