//! Building a template on disk.
//!
//! Every build happens in a staging directory
//! `<lib_dir>/templates/.<name>.tmp-XXXX/` (mode 0700, so nobody but root can
//! reach a setuid binary before it is stripped) whose `root/` receives the
//! tree. Then, in order: sanitize (device nodes and sockets removed,
//! setuid/setgid bits and file capabilities stripped, each listed), check
//! (`/bin/sh` and the requested shells must exist; `sftp-server` should),
//! and install: `renameat2(RENAME_EXCHANGE)` swaps the new tree with the old
//! one in a single step, under an exclusive lock that loaders share, and the
//! old tree is deleted with the staging directory.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{renameat2, RenameFlags};

use super::command::{find_program, run_builder};
use super::{create_dir_all_mode, lock_file, tree, BuildReport, TemplateError, TemplateStore};

/// Where a template's tree comes from. Recorded at build time (see
/// `record_source`) so that `hutchctl template update` can build again
/// from the same place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Copy a directory (never following its symlinks).
    Dir(PathBuf),
    /// Unpack a root filesystem tarball with GNU tar.
    Tar(PathBuf),
    /// mmdebstrap (or debootstrap) `--variant=minbase` from Debian's packages.
    Debootstrap { suite: String, include: Vec<String> },
    /// An OCI image layout directory: its layers applied in order, whiteouts included.
    Oci(PathBuf),
}

/// Checks beyond the built-in ones.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Absolute paths (e.g. the shells the policy names) that must exist in
    /// the template as executable files; the build is refused otherwise.
    pub shells: Vec<PathBuf>,
}

/// Where sftp-server may live; a template without it only serves internal-sftp.
const SFTP_SERVERS: [&str; 2] = ["/usr/lib/openssh/sftp-server", "/usr/lib/sftp-server"];
/// World-writable directories that are meant to be (and should be sticky).
const TMP_DIRS: [&str; 5] = ["/tmp", "/var/tmp", "/run/lock", "/var/lock", "/dev/shm"];

pub(super) fn build(
    store: &TemplateStore,
    name: &str,
    source: &Source,
    options: &BuildOptions,
) -> Result<BuildReport, TemplateError> {
    let templates = store.templates_dir();
    create_dir_all_mode(&templates, 0o755)?;
    let staging = Staging::create(&templates, name)?;
    let root = staging.root();
    let mut report = BuildReport::default();

    let skipped = match source {
        Source::Dir(src) => {
            let md =
                fs::metadata(src).map_err(TemplateError::io("inspecting source directory", src))?;
            if !md.is_dir() {
                return Err(TemplateError::Other(format!(
                    "{} is not a directory",
                    src.display()
                )));
            }
            let canonical_src =
                fs::canonicalize(src).map_err(TemplateError::io("resolving", src))?;
            let canonical_staging = fs::canonicalize(&staging.dir)
                .map_err(TemplateError::io("resolving", &staging.dir))?;
            if canonical_staging.starts_with(&canonical_src) {
                return Err(TemplateError::Other(format!(
                    "{} contains the template store {}: refusing to copy a tree into itself",
                    src.display(),
                    templates.display()
                )));
            }
            fs::create_dir(&root).map_err(TemplateError::io("creating directory", &root))?;
            tree::copy_tree(src, &root)?.skipped
        }
        Source::Tar(tarball) => {
            fs::create_dir(&root).map_err(TemplateError::io("creating directory", &root))?;
            unpack_tar(tarball, &root)?;
            Vec::new()
        }
        Source::Debootstrap { suite, include } => {
            fs::create_dir(&root).map_err(TemplateError::io("creating directory", &root))?;
            debootstrap(suite, include, &root)?;
            Vec::new()
        }
        Source::Oci(layout) => {
            fs::create_dir(&root).map_err(TemplateError::io("creating directory", &root))?;
            super::oci::unpack(layout, &root, &staging.dir.join("layer"))?;
            Vec::new()
        }
    };
    let copied = matches!(source, Source::Dir(_));

    let found = sanitize(&root)?;
    report.bytes = found.bytes;
    let mut special: Vec<PathBuf> = skipped.into_iter().chain(found.removed_special).collect();
    special.sort();
    if !special.is_empty() {
        report.warnings.push(format!(
            "skipped {} device node(s)/socket(s) (the container makes its own /dev): {}",
            special.len(),
            join_paths(&special)
        ));
    }
    for (path, mode) in &found.stripped {
        report.warnings.push(format!(
            "stripped setuid/setgid from {} (mode {:o} -> {:o})",
            path.display(),
            mode,
            mode & !0o6000
        ));
    }
    if !copied {
        strip_capabilities(&root, &mut report.warnings)?;
    }
    for dir in &found.world_writable {
        report.warnings.push(format!(
            "world-writable: {} (not a sticky tmp directory)",
            dir.display()
        ));
    }

    check_executable(&root, name, Path::new("/bin/sh"), "every login needs it")?;
    for shell in &options.shells {
        check_executable(&root, name, shell, "the policy names it as a shell")?;
    }
    if !SFTP_SERVERS
        .iter()
        .any(|p| resolve_in_root(&root, Path::new(p)).is_some_and(|r| is_executable(&r)))
    {
        report.warnings.push(format!(
            "no sftp-server ({}): only sshd's internal-sftp will work",
            SFTP_SERVERS.join(" or ")
        ));
    }

    // The template root is what users see as "/": root's, 0755.
    std::os::unix::fs::lchown(&root, Some(0), Some(0))
        .map_err(TemplateError::io("changing owner of", &root))?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
        .map_err(TemplateError::io("changing mode of", &root))?;

    let dest = store.template_dir(name);
    let _lock = lock_file(&templates.join(format!(".{name}.lock")), true)?;
    install(&root, &dest)?;
    if let Err(e) = record_source(store, name, source) {
        report.warnings.push(format!(
            "{} (hutchctl template update {name} will need the source again)",
            crate::error::chain(&e)
        ));
    }
    report.path = dest;
    Ok(report)
    // `staging` now holds the old tree (if any) and is removed on drop.
}

/// `<lib_dir>/sources/<name>.json`: where the tree was built from.
pub(crate) fn source_record(store: &TemplateStore, name: &str) -> PathBuf {
    store.lib_dir.join("sources").join(format!("{name}.json"))
}

/// Records `source` (its paths made absolute) beside the built tree.
fn record_source(store: &TemplateStore, name: &str, source: &Source) -> Result<(), TemplateError> {
    let absolute = |p: &PathBuf| fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let source = match source {
        Source::Dir(p) => Source::Dir(absolute(p)),
        Source::Tar(p) => Source::Tar(absolute(p)),
        Source::Oci(p) => Source::Oci(absolute(p)),
        Source::Debootstrap { .. } => source.clone(),
    };
    let path = source_record(store, name);
    if let Some(dir) = path.parent() {
        create_dir_all_mode(dir, 0o755)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&source)
        .map_err(|e| TemplateError::Other(format!("encoding the source: {e}")))?;
    fs::write(&tmp, text + "\n").map_err(TemplateError::io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(TemplateError::io("writing", &path))
}

/// The source `name` was last built from, if recorded.
pub(crate) fn recorded_source(
    store: &TemplateStore,
    name: &str,
) -> Result<Option<Source>, TemplateError> {
    let path = source_record(store, name);
    match fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| TemplateError::Other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TemplateError::Io {
            op: "reading",
            path,
            source: e,
        }),
    }
}

/// `<templates>/.<name>.tmp-XXXX/`, removed with everything in it on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn create(templates: &Path, name: &str) -> Result<Staging, TemplateError> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base = u64::from(std::process::id()) << 32 | u64::from(nanos);
        for attempt in 0u64..100 {
            let dir = templates.join(format!(".{name}.tmp-{:x}", base.wrapping_add(attempt)));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Staging { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(TemplateError::Io {
                        op: "creating staging directory",
                        path: dir,
                        source: e,
                    })
                }
            }
        }
        Err(TemplateError::Other(format!(
            "no free staging directory name in {}",
            templates.display()
        )))
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Swaps `new` into `dest` in one step; `new` then holds the old tree.
fn install(new: &Path, dest: &Path) -> Result<(), TemplateError> {
    match renameat2(None, new, None, dest, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT) => {
            fs::rename(new, dest).map_err(TemplateError::io("moving the new template to", dest))
        }
        Err(Errno::EINVAL) => {
            // No RENAME_EXCHANGE on this filesystem: move the old one away first.
            let old = new.with_file_name("old");
            fs::rename(dest, &old)
                .map_err(TemplateError::io("moving the old template away from", dest))?;
            fs::rename(new, dest).map_err(TemplateError::io("moving the new template to", dest))
        }
        Err(errno) => Err(TemplateError::nix("swapping in the new template at", dest)(
            errno,
        )),
    }
}

/// What [`sanitize`] found and changed.
#[derive(Debug, Default)]
struct Sanitized {
    bytes: u64,
    /// Files whose setuid/setgid bits were removed, with their old mode.
    stripped: Vec<(PathBuf, u32)>,
    /// Device nodes and sockets removed.
    removed_special: Vec<PathBuf>,
    world_writable: Vec<PathBuf>,
}

/// Removes device nodes and sockets, strips setuid/setgid bits of every
/// non-directory (on directories setgid only sets the group of new files)
/// and measures the tree.
fn sanitize(root: &Path) -> Result<Sanitized, TemplateError> {
    let mut found = Sanitized::default();
    let mut seen = std::collections::HashMap::new();
    tree::walk(root, &mut |rel, path, md| {
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
            fs::remove_file(path).map_err(TemplateError::io("removing device node", path))?;
            found.removed_special.push(rel.to_path_buf());
            return Ok(());
        }
        found.bytes = found.bytes.saturating_add(tree::tmpfs_bytes(md, &mut seen));
        if ft.is_symlink() {
            return Ok(());
        }
        let mode = md.mode() & 0o7777;
        if !ft.is_dir() && mode & 0o6000 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o6000))
                .map_err(TemplateError::io("stripping setuid/setgid of", path))?;
            found.stripped.push((rel.to_path_buf(), mode));
        }
        if ft.is_dir() && is_unexpected_world_writable(rel, mode) {
            found.world_writable.push(rel.to_path_buf());
        }
        Ok(())
    })?;
    Ok(found)
}

/// A world-writable directory that is not one of the sticky tmp directories.
fn is_unexpected_world_writable(rel: &Path, mode: u32) -> bool {
    mode & 0o002 != 0 && !(mode & 0o1000 != 0 && TMP_DIRS.iter().any(|t| rel == Path::new(t)))
}

/// Removes `security.capability` from every file that has one, with getcap
/// and setcap (libcap2-bin); only trees not made by our copier can carry
/// them. Without getcap, says so: the loaded template still never carries
/// capabilities (load copies no xattrs, and the mount is nosuid).
fn strip_capabilities(root: &Path, warnings: &mut Vec<String>) -> Result<(), TemplateError> {
    let Some(getcap) = find_program("getcap") else {
        warnings.push("getcap not found: file capabilities on disk not checked (a loaded template never has them)".into());
        return Ok(());
    };
    let output = Command::new(&getcap)
        .arg("-r")
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(TemplateError::io("running", &getcap))?;
    let canonical_root = fs::canonicalize(root).map_err(TemplateError::io("resolving", root))?;
    let setcap = find_program("setcap");
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((path, caps)) = parse_getcap_line(line) else {
            continue;
        };
        // Act only on a regular file reached without any symlink inside the tree.
        let path = PathBuf::from(path);
        if !fs::symlink_metadata(&path).is_ok_and(|md| md.is_file()) {
            continue;
        }
        if fs::canonicalize(&path).ok().as_deref() != Some(path.as_path())
            || !path.starts_with(&canonical_root)
        {
            continue;
        }
        let rel = Path::new("/").join(path.strip_prefix(&canonical_root).unwrap_or(&path));
        let removed = setcap.as_ref().is_some_and(|setcap| {
            Command::new(setcap)
                .arg("-r")
                .arg(&path)
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if removed {
            warnings.push(format!(
                "removed file capabilities from {} ({caps})",
                rel.display()
            ));
        } else {
            return Err(TemplateError::Other(format!(
                "could not remove file capabilities ({caps}) from {}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// `getcap` prints `PATH CAPS` (libcap ≥ 2.41) or `PATH = CAPS` (older).
fn parse_getcap_line(line: &str) -> Option<(&str, &str)> {
    if let Some((path, caps)) = line.rsplit_once(" = ") {
        return Some((path, caps.trim()));
    }
    let (path, caps) = line.rsplit_once(' ')?;
    (!path.is_empty() && caps.starts_with("cap_")).then_some((path, caps))
}

/// Refuses the build unless `path` resolves, inside the tree, to an executable file.
fn check_executable(
    root: &Path,
    name: &str,
    path: &Path,
    why: &'static str,
) -> Result<(), TemplateError> {
    match resolve_in_root(root, path) {
        Some(resolved) if is_executable(&resolved) => Ok(()),
        _ => Err(TemplateError::Missing {
            name: name.to_string(),
            path: path.to_path_buf(),
            why,
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|md| md.is_file() && md.mode() & 0o111 != 0)
}

/// Resolves `path` as if `root` were `/` (as a chroot would): symlinks,
/// absolute or relative, are followed inside `root`, `..` stops at `root`.
/// Returns the host path of the final non-symlink, if everything exists.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> = components_reversed(path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.to_str() {
            Some("..") => {
                resolved.pop();
                continue;
            }
            Some(".") | Some("") => continue,
            _ => {}
        }
        let candidate = resolved.join(&part);
        let md = fs::symlink_metadata(root.join(&candidate)).ok()?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = fs::read_link(root.join(&candidate)).ok()?;
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            pending.extend(components_reversed(&target));
        } else {
            resolved = candidate;
        }
    }
    Some(root.join(resolved))
}

/// The normal and `..` components of `path`, last first (a stack).
fn components_reversed(path: &Path) -> Vec<std::ffi::OsString> {
    let mut parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsStr::new("..").to_os_string()),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

/// Unpacks `tarball` into `root` as root: owners, modes, symlinks as they are.
fn unpack_tar(tarball: &Path, root: &Path) -> Result<(), TemplateError> {
    let tar =
        find_program("tar").ok_or_else(|| TemplateError::Other("tar not found in PATH".into()))?;
    let mut cmd = Command::new(tar);
    cmd.arg("--extract")
        .arg("--file")
        .arg(tarball)
        .arg("--directory")
        .arg(root)
        .args([
            "--numeric-owner",
            "--same-owner",
            "--preserve-permissions",
            "--no-overwrite-dir",
        ]);
    run_builder(cmd, "tar")
}

/// Runs mmdebstrap, or debootstrap where it is missing, into `root` (empty).
fn debootstrap(suite: &str, include: &[String], root: &Path) -> Result<(), TemplateError> {
    check_debian_word("suite", suite, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
    })?;
    for package in include {
        check_debian_word("package", package, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | ':')
        })?;
    }
    let (program, label) = if let Some(p) = find_program("mmdebstrap") {
        (p, "mmdebstrap")
    } else if let Some(p) = find_program("debootstrap") {
        (p, "debootstrap")
    } else {
        return Err(TemplateError::Other(
            "neither mmdebstrap nor debootstrap is installed".into(),
        ));
    };
    let mut cmd = Command::new(program);
    cmd.arg("--variant=minbase");
    if label == "mmdebstrap" {
        cmd.args(host_apt_checks());
    }
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    cmd.arg(suite).arg(root);
    run_builder(cmd, label)
}

/// The apt options that relax the Release file's date checks where the
/// host's own apt relaxes them (`Acquire::Check-Valid-Until "false"`,
/// `Acquire::Check-Date "false"`, as a mirror proxy or a snapshot needs),
/// as `--aptopt` arguments of mmdebstrap, which reads none of the host's
/// apt configuration: otherwise a build fails with `apt-get update ...
/// failed` where the host's own `apt-get update` works. Nothing else of
/// the host's configuration is carried over, and nothing is relaxed that
/// the host does not relax.
pub fn host_apt_checks() -> Vec<String> {
    let Some(apt_config) = find_program("apt-config") else {
        return Vec::new();
    };
    let out = Command::new(apt_config)
        .args(["dump", "Acquire::Check-Valid-Until", "Acquire::Check-Date"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => apt_checks_of(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

/// [`host_apt_checks`] of `apt-config dump`'s output.
fn apt_checks_of(dump: &str) -> Vec<String> {
    let mut opts = Vec::new();
    for key in ["Acquire::Check-Valid-Until", "Acquire::Check-Date"] {
        let off = format!("{key} \"false\";");
        if dump.lines().any(|l| l.trim() == off) {
            opts.push(format!("--aptopt={key} \"false\""));
        }
    }
    opts
}

/// Refuses a suite or package name that could be read as an option or a list.
fn check_debian_word(
    what: &str,
    word: &str,
    ok: impl Fn(char) -> bool,
) -> Result<(), TemplateError> {
    if word.is_empty() || word.starts_with('-') || !word.chars().all(ok) {
        return Err(TemplateError::Other(format!(
            "invalid {what} name {word:?}"
        )));
    }
    Ok(())
}

/// `/a, /b, /c` (at most 20, then `and N more`).
fn join_paths(paths: &[PathBuf]) -> String {
    let mut text = paths
        .iter()
        .take(20)
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > 20 {
        text.push_str(&format!(" and {} more", paths.len() - 20));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the two date checks, only where the host turns them off.
    #[test]
    fn apt_checks_follow_the_host() {
        assert!(apt_checks_of("").is_empty());
        assert!(apt_checks_of("Acquire::Check-Valid-Until \"true\";\n").is_empty());
        assert_eq!(
            apt_checks_of(
                "Acquire::Check-Valid-Until \"false\";\nAcquire::Check-Date \"false\";\nAPT::Other \"false\";\n"
            ),
            [
                "--aptopt=Acquire::Check-Valid-Until \"false\"",
                "--aptopt=Acquire::Check-Date \"false\""
            ]
        );
        assert_eq!(
            apt_checks_of("Acquire::Check-Date \"false\";\n"),
            ["--aptopt=Acquire::Check-Date \"false\""]
        );
    }

    /// Absolute and relative symlinks (merged /usr, dash) resolve inside the root.
    #[test]
    fn resolve_follows_links_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/dash"), b"").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("dash", r.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/../bin/sh", r.join("abs")).unwrap();
        assert_eq!(
            resolve_in_root(r, Path::new("/bin/sh")),
            Some(r.join("usr/bin/dash"))
        );
        assert_eq!(
            resolve_in_root(r, Path::new("/abs")),
            Some(r.join("usr/bin/dash"))
        );
        assert_eq!(resolve_in_root(r, Path::new("/bin/bash")), None);
    }

    /// A symlink pointing at a host path is resolved in the root, never on the host.
    #[test]
    fn resolve_never_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::os::unix::fs::symlink("/etc/passwd", r.join("pw")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve_in_root(r, Path::new("/pw")), None);
        assert_eq!(resolve_in_root(r, Path::new("/up")), None);
        assert_eq!(resolve_in_root(r, Path::new("/loop")), None);
    }

    /// Only sticky tmp directories may be world-writable without a warning.
    #[test]
    fn world_writable_rules() {
        assert!(!is_unexpected_world_writable(Path::new("/tmp"), 0o1777));
        assert!(is_unexpected_world_writable(Path::new("/tmp"), 0o777));
        assert!(is_unexpected_world_writable(Path::new("/srv/drop"), 0o1777));
        assert!(!is_unexpected_world_writable(Path::new("/srv"), 0o755));
    }

    /// Both getcap output formats parse; other lines do not.
    #[test]
    fn getcap_lines_parse() {
        assert_eq!(
            parse_getcap_line("/t/usr/bin/ping cap_net_raw=ep"),
            Some(("/t/usr/bin/ping", "cap_net_raw=ep"))
        );
        assert_eq!(
            parse_getcap_line("/t/a b/ping = cap_net_raw+ep"),
            Some(("/t/a b/ping", "cap_net_raw+ep"))
        );
        assert_eq!(parse_getcap_line("Failed to get capabilities"), None);
    }

    /// Suites and package names that look like options are refused.
    #[test]
    fn debian_words_are_checked() {
        assert!(debootstrap("--foo", &[], Path::new("/nonexistent")).is_err());
        assert!(debootstrap("bookworm", &["a,b".into()], Path::new("/nonexistent")).is_err());
        assert!(debootstrap("bookworm", &["-x".into()], Path::new("/nonexistent")).is_err());
    }
}
