//! `hutchctl diff USER [--all]`: what the user changed in their container's
//! writable layer, against the template generation it runs on:
//! `A path` added, `C path` changed (copied up: content, mode or owner),
//! `D path` deleted.
//!
//! The layer's `upper` directory is bound, read-only, at
//! [`hutch_runtime::rootfs::ADMIN_UPPER`] inside the container (below a
//! root-only 0700 directory, see rootfs.rs), so it is reached through the
//! init's root; the template is read where its keeper sees it
//! (`<keeper's root>/<run_dir>/template/<name>/<generation>`: a keeper may
//! live in a mount namespace of its own).
//!
//! Everything below `upper` is the user's: names are bytes (not UTF-8, with
//! newlines, a `\xff` beside a U+FFFD), and any entry may be a symlink,
//! swapped for one while we look. So the walk never resolves a path twice:
//! each directory is opened from its parent's descriptor with
//! `O_NOFOLLOW | O_DIRECTORY`, entries are `fstatat(AT_SYMLINK_NOFOLLOW)`,
//! xattrs are read from the open descriptor, and the way in from the
//! container's root goes through `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`. The init and the keeper are the ones `state.json`
//! names only after a pidfd check ([`hutch_runtime::inspect`]). An entry that
//! cannot be read is reported on stderr and the walk goes on; the output
//! escapes names as `ls -b` does in the C locale, one change a line.
//!
//! overlayfs marks a deleted file with a whiteout (a character device 0:0)
//! and a directory that replaced a template one with the xattr
//! `trusted.overlay.opaque=y` (everything of the template below it is
//! deleted). Mount points hutch made (the home, bound host files) and the
//! files hutch writes itself (/etc/passwd, group, hostname, hosts,
//! resolv.conf) are left out unless `--all`.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use hutch_runtime::inspect::{self, LiveProcess};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use crate::Cli;

/// Files the container's set-up writes into the writable layer.
const WRITTEN_BY_HUTCH: [&[u8]; 5] = [
    b"/etc/passwd",
    b"/etc/group",
    b"/etc/hostname",
    b"/etc/hosts",
    b"/etc/resolv.conf",
];

/// Exit status when the walk could not read every entry (the changes it
/// found are still printed).
pub const EXIT_INCOMPLETE: i32 = 2;

/// One difference; `path` is the container path as bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub path: Vec<u8>,
    pub kind: char,
}

/// What the walk found: the changes, sorted, and what it could not read.
#[derive(Debug, Default)]
pub struct Walk {
    pub changes: Vec<Change>,
    /// (container path, cause), in the order met.
    pub errors: Vec<(Vec<u8>, String)>,
}

/// The directory tree the walk compares: the open `upper` and, where the
/// template has the same directory, the open `lower`.
struct Frame {
    upper: OwnedFd,
    lower: Option<OwnedFd>,
    rel: Vec<u8>,
    names: std::vec::IntoIter<OsString>,
}

/// Compares the open `upper` with the open `lower`; `mounts` are the
/// container's mount points (left out, with the directories made only to
/// hold them). Depth-first with an explicit stack (a user can make a tree
/// far deeper than PATH_MAX or the thread's stack): the descriptors held are
/// one upper and one lower per level; where they run out the subtree is
/// reported and skipped.
pub fn changes(upper: OwnedFd, lower: OwnedFd, mounts: &BTreeSet<Vec<u8>>, all: bool) -> Walk {
    let mut walk = Walk::default();
    let keep =
        |path: &[u8]| all || (!is_mount_related(path, mounts) && !WRITTEN_BY_HUTCH.contains(&path));
    let mut stack = Vec::new();
    match list(upper.as_fd()) {
        Ok(names) => stack.push(Frame {
            upper,
            lower: Some(lower),
            rel: Vec::new(),
            names: names.into_iter(),
        }),
        Err(e) => walk.errors.push((b"/".to_vec(), e.to_string())),
    }
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            continue;
        };
        let mut path = top.rel.clone();
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let cname = match CString::new(name.as_bytes()) {
            Ok(c) => c,
            Err(_) => continue, // directory entries hold no NUL
        };
        let st = match stat_at(top.upper.as_fd(), &cname) {
            Ok(st) => st,
            Err(e) => {
                walk.errors.push((path, e.to_string()));
                continue;
            }
        };
        let in_lower = top
            .lower
            .as_ref()
            .and_then(|l| stat_at(l.as_fd(), &cname).ok());
        let kind = file_kind(&st);
        let mut push = |kind: char, path: &[u8]| {
            if keep(path) {
                walk.changes.push(Change {
                    path: path.to_vec(),
                    kind,
                });
            }
        };
        if kind == SFlag::S_IFCHR && st.st_rdev == 0 {
            push('D', &path);
            continue;
        }
        if kind != SFlag::S_IFDIR {
            push(if in_lower.is_some() { 'C' } else { 'A' }, &path);
            continue;
        }
        let lower_is_dir = in_lower
            .as_ref()
            .is_some_and(|l| file_kind(l) == SFlag::S_IFDIR);
        match &in_lower {
            Some(_) if lower_is_dir => {}
            Some(_) => push('C', &path),
            None => push('A', &path),
        }
        // The entry was a directory when we looked; it may not be now
        // (O_NOFOLLOW | O_DIRECTORY then fails, and nothing is followed).
        let sub = match open_dir_at(top.upper.as_fd(), &cname) {
            Ok(fd) => fd,
            Err(e) => {
                walk.errors.push((path, e.to_string()));
                continue;
            }
        };
        let lower_sub = if lower_is_dir {
            top.lower
                .as_ref()
                .and_then(|l| open_dir_at(l.as_fd(), &cname).ok())
        } else {
            None
        };
        if let Some(low) = &lower_sub {
            match hutch_runtime::sys::fgetxattr(sub.as_fd(), c"trusted.overlay.opaque") {
                Ok(Some(v)) if v == b"y" => {
                    // The template's content below is gone, except what was made anew.
                    match list(low.as_fd()) {
                        Ok(gone) => {
                            for g in gone {
                                let Ok(cg) = CString::new(g.as_bytes()) else {
                                    continue;
                                };
                                if stat_at(sub.as_fd(), &cg).is_err() {
                                    let mut p = path.clone();
                                    p.push(b'/');
                                    p.extend_from_slice(g.as_bytes());
                                    push('D', &p);
                                }
                            }
                        }
                        Err(e) => walk
                            .errors
                            .push((path.clone(), format!("the template's side: {e}"))),
                    }
                }
                Ok(_) => {}
                Err(e) => walk
                    .errors
                    .push((path.clone(), format!("reading its xattrs: {e}"))),
            }
        }
        match list(sub.as_fd()) {
            Ok(names) => stack.push(Frame {
                upper: sub,
                lower: lower_sub,
                rel: path,
                names: names.into_iter(),
            }),
            Err(e) => walk.errors.push((path, e.to_string())),
        }
    }
    walk.changes.sort();
    walk
}

fn file_kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<FileStat> {
    fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// Opens the directory `name` (one component) of `dir` to read, never
/// through a symlink: a name swapped for one since we looked fails (ELOOP,
/// ENOTDIR) instead of being followed.
fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    use hutch_runtime::sys;
    sys::openat2(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
}

/// The names in the open directory `dir` (without `.` and `..`), sorted.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::openat(
        Some(dir.as_raw_fd()),
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort();
    Ok(names)
}

fn is_mount_related(path: &[u8], mounts: &BTreeSet<Vec<u8>>) -> bool {
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    mounts.contains(path) || mounts.iter().any(|m| m.starts_with(&prefix))
}

/// A name as `ls -b` prints it in the C locale: printable ASCII as is,
/// backslash and space escaped, `\n` `\t` `\r` as such, every other byte
/// (control characters, DEL, anything not ASCII) as `\ooo`. One change is
/// then always one line, and nothing a user named a file reaches the
/// admin's terminal as a control sequence.
pub fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        match b {
            b'\\' => out.push_str("\\\\"),
            b' ' => out.push_str("\\ "),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out
}

/// Mount points listed in a mountinfo text ([`hutch_runtime::mountinfo`]), as bytes.
fn mount_points(mountinfo: &[u8]) -> BTreeSet<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    hutch_runtime::mountinfo::parse(mountinfo)
        .into_iter()
        .map(|m| m.mount_point.into_os_string().into_vec())
        .collect()
}

/// `hutchctl diff USER [--all]`. Exit 1 when USER has no running container,
/// [`EXIT_INCOMPLETE`] when some entries could not be read.
pub fn diff(cli: &Cli, user: &str, all: bool) -> anyhow::Result<i32> {
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host();
    let crate::Running {
        state,
        cgroups,
        cgroup,
    } = match crate::find_container(host, user)? {
        Ok(found) => found,
        Err(crate::NotRunning::NoState) => {
            if let Some(code) = crate::layer_cmd::diff_stopped(cli, user, all)? {
                return Ok(code);
            }
            eprintln!("hutchctl: {user} has no running container and no persistent layer");
            return Ok(1);
        }
        Err(crate::NotRunning::NoCgroup) => {
            eprintln!("hutchctl: {user} has no running container (no cgroup)");
            return Ok(1);
        }
    };
    let keepers = cgroups
        .existing(hutch_runtime::paths::KEEPER_CGROUP)
        .with_context(|| format!("no keepers group under {:?}", host.cgroup_root))?;
    let init = LiveProcess::verify(state.init_pid, &cgroup, "the container's cgroup")
        .with_context(|| format!("the init of {user}'s container"))?;
    let keeper = LiveProcess::verify(state.keeper_pid, &keepers, "hutch's keepers group")
        .with_context(|| format!("the keeper of {user}"))?;

    let init_root = init.open_proc("root")?;
    let upper = inspect::open_dir_strict(init_root.as_fd(), Path::new(hutch_runtime::rootfs::ADMIN_UPPER))
        .with_context(|| {
            format!(
                "opening {} in the container of {user} (a container that predates `hutchctl diff` shows it after the next login)",
                hutch_runtime::rootfs::ADMIN_UPPER
            )
        })?;
    let store = hutch_runtime::template::TemplateStore::new(&host.lib_dir, &host.run_dir);
    let gen_dir: PathBuf = store
        .generations_dir(&state.template)
        .join(state.generation.to_string());
    let keeper_root = keeper.open_proc("root")?;
    let lower = inspect::open_dir_in_root(keeper_root.as_fd(), &gen_dir).with_context(|| {
        format!(
            "the template generation {} is not readable from the keeper's root",
            gen_dir.display()
        )
    })?;
    let mountinfo = format!("/proc/{}/mountinfo", init.pid);
    let text = std::fs::read(&mountinfo).with_context(|| format!("reading {mountinfo}"))?;
    init.still_alive()
        .with_context(|| format!("the init of {user}'s container"))?;
    let mounts = mount_points(&text);

    report(&changes(upper, lower, &mounts, all))
}

/// Prints a walk as `hutchctl diff` does: the changes on stdout, what could
/// not be read on stderr; the exit status.
pub fn report(walk: &Walk) -> anyhow::Result<i32> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for c in &walk.changes {
        writeln!(out, "{} {}", c.kind, escape(&c.path))?;
    }
    out.flush()?;
    for (path, why) in &walk.errors {
        eprintln!("hutchctl: diff: {}: {why}", escape(path));
    }
    if walk.errors.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "hutchctl: diff: {} entr{} could not be read; the list above is incomplete",
            walk.errors.len(),
            if walk.errors.len() == 1 { "y" } else { "ies" }
        );
        Ok(EXIT_INCOMPLETE)
    }
}

/// A change as `hutchctl diff` prints it, for tests.
#[cfg(test)]
fn shown(c: &Change) -> String {
    format!("{} {}", c.kind, escape(&c.path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::symlink;

    fn dir_fd(p: &Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    fn run(up: &Path, low: &Path, mounts: &[&str], all: bool) -> (Vec<String>, Vec<String>) {
        let mounts: BTreeSet<Vec<u8>> = mounts.iter().map(|m| m.as_bytes().to_vec()).collect();
        let w = changes(dir_fd(up), dir_fd(low), &mounts, all);
        (
            w.changes.iter().map(shown).collect(),
            w.errors
                .iter()
                .map(|(p, e)| format!("{}: {e}", escape(p)))
                .collect(),
        )
    }

    fn layers() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let (up, low) = (base.path().join("upper"), base.path().join("lower"));
        std::fs::create_dir_all(&up).unwrap();
        std::fs::create_dir_all(&low).unwrap();
        (base, up, low)
    }

    /// Added, changed, deleted (whiteout stand-in skipped: needs mknod), and mount points left out.
    #[test]
    fn added_changed_and_mounts() {
        let (_base, up, low) = layers();
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
        let (got, errors) = run(&up, &low, &["/home/u"], false);
        assert_eq!(got, ["C /etc/motd", "A /new", "A /new/sub", "A /new/sub/f"]);
        assert!(errors.is_empty(), "{errors:?}");
        let (all, _) = run(&up, &low, &["/home/u"], true);
        assert!(
            all.contains(&"A /home/u".to_string()) && all.contains(&"A /etc/passwd".to_string()),
            "{all:?}"
        );
    }

    /// The review's hole: a directory named `\xff` beside a symlink named
    /// U+FFFD (what `to_string_lossy` makes of `\xff`) pointing at /etc.
    /// Both are listed as they are, and nothing of the host's /etc.
    #[test]
    fn non_utf8_name_beside_its_lossy_twin_symlink() {
        let (_base, up, low) = layers();
        let ff = up.join(OsStr::from_bytes(b"\xff"));
        std::fs::create_dir(&ff).unwrap();
        std::fs::write(ff.join("inside"), "x").unwrap();
        symlink("/etc", up.join("\u{fffd}")).unwrap();
        let (got, errors) = run(&up, &low, &[], false);
        assert_eq!(got, ["A /\\357\\277\\275", "A /\\377", "A /\\377/inside"]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// A symlink to a directory is an entry, never a way in: nothing below it is listed.
    #[test]
    fn symlinks_are_not_followed() {
        let (_base, up, low) = layers();
        std::fs::create_dir_all(up.join("var/tmp")).unwrap();
        std::fs::create_dir_all(low.join("var/tmp")).unwrap();
        symlink("/", up.join("var/tmp/root")).unwrap();
        symlink("../../../../../../etc", up.join("var/tmp/up")).unwrap();
        let (got, errors) = run(&up, &low, &[], false);
        assert_eq!(got, ["A /var/tmp/root", "A /var/tmp/up"]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// A tree deeper than PATH_MAX is walked to its bottom (a path-based
    /// walk fails with ENAMETOOLONG there and lists nothing).
    #[test]
    fn deeper_than_path_max() {
        let (_base, up, low) = layers();
        let name = "d".repeat(200);
        let top = std::fs::File::open(&up).unwrap();
        let mut cur: OwnedFd = top.into();
        let cname = CString::new(name.as_str()).unwrap();
        for _ in 0..30 {
            nix::sys::stat::mkdirat(
                Some(cur.as_raw_fd()),
                cname.as_c_str(),
                Mode::from_bits_truncate(0o755),
            )
            .unwrap();
            cur = open_dir_at(cur.as_fd(), &cname).unwrap();
        }
        let leaf = c"leaf";
        let f = nix::fcntl::openat(
            Some(cur.as_raw_fd()),
            leaf,
            OFlag::O_CREAT | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let _ = nix::unistd::close(f);
        let (got, errors) = run(&up, &low, &[], false);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(got.len(), 31);
        let last = got.iter().max_by_key(|l| l.len()).unwrap();
        assert!(
            last.ends_with("/leaf") && last.len() > 6000,
            "{}",
            last.len()
        );
    }

    /// Names with a newline, a tab, an escape sequence and a space print as one escaped line each.
    #[test]
    fn names_are_escaped_like_ls_b() {
        assert_eq!(
            escape(b"/a b\n\tc\x1b[2J\\\x7f\xc3\xa9"),
            "/a\\ b\\n\\tc\\033[2J\\\\\\177\\303\\251"
        );
        let (_base, up, low) = layers();
        std::fs::write(up.join("evil\nD \\etc"), "").unwrap();
        let (got, _) = run(&up, &low, &[], false);
        assert_eq!(got, ["A /evil\\nD\\ \\\\etc"]);
    }

    /// mountinfo's octal escapes (a space is \040, a byte \377) are undone.
    #[test]
    fn mountinfo_escapes() {
        let m = mount_points(b"22 1 0:21 / /a\\040b rw - tmpfs x rw\n23 1 0:22 / / rw - overlay hutch rw\n24 1 0:23 / /x\\377 rw - tmpfs y rw\n");
        assert!(
            m.contains(b"/a b".as_slice())
                && m.contains(b"/".as_slice())
                && m.contains(b"/x\xff".as_slice())
        );
    }

    /// A directory the walk cannot read is reported by its path, and the
    /// walk goes on to the entries after it (run in a child without
    /// CAP_DAC_OVERRIDE/READ_SEARCH, so that mode 000 stops it as it would
    /// stop any reader).
    #[test]
    fn unreadable_entry_is_reported_and_walk_goes_on() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "diff::tests::unreadable_child",
                "--nocapture",
                "--include-ignored",
            ])
            .env("HUTCH_DIFF_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("CHILD-OK"), "{text}");
    }

    /// Run by `unreadable_entry_is_reported_and_walk_goes_on` in its own process only.
    #[test]
    #[ignore]
    fn unreadable_child() {
        if std::env::var_os("HUTCH_DIFF_CHILD").is_none() {
            return;
        }
        for cap in [
            caps::Capability::CAP_DAC_OVERRIDE,
            caps::Capability::CAP_DAC_READ_SEARCH,
        ] {
            let _ = caps::drop(None, caps::CapSet::Effective, cap);
        }
        let (_base, up, low) = layers();
        std::fs::create_dir_all(up.join("a/closed")).unwrap();
        std::fs::write(up.join("a/closed/hidden"), "").unwrap();
        std::fs::create_dir_all(up.join("b")).unwrap();
        std::fs::write(up.join("b/after"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(up.join("a/closed"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let (got, errors) = run(&up, &low, &[], false);
        std::fs::set_permissions(up.join("a/closed"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_eq!(
            got,
            ["A /a", "A /a/closed", "A /b", "A /b/after"],
            "{errors:?}"
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("/a/closed: ") && errors[0].contains("denied"),
            "{errors:?}"
        );
        println!("CHILD-OK");
    }
}
