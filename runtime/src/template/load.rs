//! Loading templates into RAM, by generation.
//!
//! A generation is `<run_dir>/template/<name>/<N>/`: a tmpfs sized to fit
//! (template size × 1.1 + 16 MiB), filled with a copy of the built tree, then
//! remounted read-only, nosuid, nodev. Only a read-only tmpfs mounted there
//! counts as loaded, so a generation still being filled is never handed out.
//! A failed load unmounts and removes what it made.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{
    create_dir_all_mode, lock_file, tree, validate_name, GenerationInfo, Loaded, TemplateError,
    TemplateInfo, TemplateStore,
};
use crate::mountinfo::{self, Mount};

const MIB: u64 = 1024 * 1024;

/// The tmpfs size for a template of `bytes`: 10% and 16 MiB of slack (inodes,
/// directories), in whole pages.
pub(crate) fn tmpfs_size(bytes: u64) -> u64 {
    let size = bytes
        .saturating_add(bytes.div_ceil(10))
        .saturating_add(16 * MIB);
    size.div_ceil(4096).saturating_mul(4096)
}

/// A generation number: decimal digits, no sign, no leading zero, not 0.
pub(crate) fn parse_generation(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// One past the highest generation among directory entry names (1 if none).
pub(crate) fn next_generation<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(parse_generation)
        .max()
        .map_or(1, |g| g.saturating_add(1))
}

/// The generations present under `dir`, ascending (none if `dir` is missing).
fn generations(dir: &Path) -> Result<Vec<u64>, TemplateError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TemplateError::Io {
                op: "reading directory",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(TemplateError::io("reading directory", dir))?;
        if let Some(generation) = entry.file_name().to_str().and_then(parse_generation) {
            found.push(generation);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// The mounts of this process's mount namespace.
pub(crate) fn read_mounts() -> Result<Vec<Mount>, TemplateError> {
    let path = Path::new("/proc/self/mountinfo");
    mountinfo::read(path).map_err(TemplateError::io("reading", path))
}

/// The top mount at `path` (the last one listed there), if any.
fn mount_at<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// A read-only tmpfs mounted at `path`: a loaded generation.
fn is_loaded(mounts: &[Mount], path: &Path) -> bool {
    mount_at(mounts, path).is_some_and(|m| m.fstype == "tmpfs" && m.has_option("ro"))
}

/// `dir` with its symlinks resolved, as mountinfo names it (itself if missing).
fn canonical(dir: &Path) -> PathBuf {
    fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

pub(super) fn current(store: &TemplateStore, name: &str) -> Result<Option<Loaded>, TemplateError> {
    let dir = store.generations_dir(name);
    let found = generations(&dir)?;
    if found.is_empty() {
        return Ok(None);
    }
    let mounts = read_mounts()?;
    let canonical_dir = canonical(&dir);
    Ok(found
        .iter()
        .rev()
        .find(|g| is_loaded(&mounts, &canonical_dir.join(g.to_string())))
        .map(|&generation| Loaded {
            name: name.to_string(),
            generation,
            path: dir.join(generation.to_string()),
        }))
}

/// Loads a new generation; the caller holds the loading lock.
pub(super) fn load(store: &TemplateStore, name: &str) -> Result<Loaded, TemplateError> {
    let src = store.template_dir(name);
    if !fs::symlink_metadata(&src).is_ok_and(|md| md.is_dir()) {
        return Err(TemplateError::NotBuilt {
            name: name.to_string(),
            path: src,
        });
    }
    // Shared with other loaders, exclusive with a build swapping the tree in.
    let _built = lock_file(&store.templates_dir().join(format!(".{name}.lock")), false)?;
    let bytes = tree::measure(&src)?;

    let dir = store.generations_dir(name);
    create_dir_all_mode(&dir, 0o755)?;
    let (generation, path) = make_generation_dir(&dir)?;
    let mut guard = Unwind {
        path: path.clone(),
        mounted: false,
    };

    let options = format!("size={},mode=0755", tmpfs_size(bytes));
    mount(
        Some("hutch-template"),
        &path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(TemplateError::nix("mounting tmpfs on", &path))?;
    guard.mounted = true;

    tree::copy_tree(&src, &path)?;
    mount(
        None::<&str>,
        &path,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(TemplateError::nix("remounting read-only", &path))?;

    guard.mounted = false;
    guard.path = PathBuf::new();
    Ok(Loaded {
        name: name.to_string(),
        generation,
        path,
    })
}

/// Creates the next generation's directory (skipping one another process
/// just made).
fn make_generation_dir(dir: &Path) -> Result<(u64, PathBuf), TemplateError> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..100 {
        let names = generations(dir)?
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>();
        let generation = next_generation(names.iter().map(String::as_str));
        let path = dir.join(generation.to_string());
        match fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => return Ok((generation, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(TemplateError::Io {
                    op: "creating generation directory",
                    path,
                    source: e,
                })
            }
        }
    }
    Err(TemplateError::Other(format!(
        "no free generation in {}",
        dir.display()
    )))
}

/// Undoes a half-made generation on the way out of a failed load.
struct Unwind {
    path: PathBuf,
    mounted: bool,
}

impl Drop for Unwind {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        if self.mounted {
            let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir(&self.path);
    }
}

pub(super) fn unload(store: &TemplateStore, loaded: &Loaded) -> Result<(), TemplateError> {
    let expected = store
        .generations_dir(&loaded.name)
        .join(loaded.generation.to_string());
    if loaded.path != expected {
        return Err(TemplateError::Other(format!(
            "{} is not generation {} of template {:?} in this store",
            loaded.path.display(),
            loaded.generation,
            loaded.name
        )));
    }
    match umount2(&loaded.path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a load that died half-way); ENOENT: gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(TemplateError::nix("unmounting", &loaded.path)(errno)),
    }
    match fs::remove_dir(&loaded.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TemplateError::Io {
            op: "removing",
            path: loaded.path.clone(),
            source: e,
        }),
    }
}

pub(super) fn list(store: &TemplateStore) -> Result<Vec<TemplateInfo>, TemplateError> {
    let mut names = std::collections::BTreeSet::new();
    for dir in [store.templates_dir(), store.run_dir.join("template")] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(TemplateError::Io {
                    op: "reading directory",
                    path: dir,
                    source: e,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(TemplateError::io("reading directory", &dir))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let Some(name) = entry
                .file_name()
                .to_str()
                .filter(|n| is_dir && validate_name(n).is_ok())
            {
                names.insert(name.to_string());
            }
        }
    }
    let mounts = read_mounts()?;
    let uses = store.users()?;
    let mut infos = Vec::new();
    for name in names {
        let built = store.template_dir(&name);
        let (built, bytes) = if fs::symlink_metadata(&built).is_ok_and(|m| m.is_dir()) {
            let bytes = tree::measure(&built)?;
            (Some(built), Some(bytes))
        } else {
            (None, None)
        };
        let dir = store.generations_dir(&name);
        let canonical_dir = canonical(&dir);
        let generations = generations(&dir)?
            .into_iter()
            .map(|generation| {
                let path = dir.join(generation.to_string());
                let loaded = is_loaded(&mounts, &canonical_dir.join(generation.to_string()));
                let bytes_in_ram = loaded.then(|| bytes_used(&path)).flatten();
                let users = uses
                    .iter()
                    .filter(|u| u.template == name && u.generation == generation)
                    .map(|u| u.user.clone())
                    .collect();
                GenerationInfo {
                    generation,
                    path,
                    loaded,
                    bytes_in_ram,
                    users,
                }
            })
            .collect();
        infos.push(TemplateInfo {
            name,
            built,
            bytes,
            generations,
        });
    }
    Ok(infos)
}

/// Bytes in use on the filesystem at `path`.
fn bytes_used(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let used = st.blocks().saturating_sub(st.blocks_free());
    Some(used.saturating_mul(st.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tmpfs is 110% of the template plus 16 MiB, in whole pages.
    #[test]
    fn tmpfs_size_formula() {
        assert_eq!(tmpfs_size(0), 16 * MIB);
        assert_eq!(tmpfs_size(100 * MIB), 110 * MIB + 16 * MIB);
        assert_eq!(tmpfs_size(1) % 4096, 0);
        assert!(tmpfs_size(u64::MAX) > 0);
    }

    /// The next generation follows the highest numeric entry, ignoring others.
    #[test]
    fn generation_numbering() {
        assert_eq!(next_generation([]), 1);
        assert_eq!(next_generation(["1", "2", "10", "3"]), 11);
        assert_eq!(
            next_generation(["lock", ".tmp", "07", "-1", "+2", "x1", ""]),
            1
        );
        assert_eq!(next_generation(["5", "5.lock", "0"]), 6);
    }

    /// Mountinfo lines yield mount point (unescaped), fstype and per-mount options.
    #[test]
    fn mountinfo_parses() {
        let text = "\
22 1 0:21 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1g
90 22 0:50 / /run/hutch/template/a\\040b/1 ro,nosuid,nodev,relatime - tmpfs hutch-template ro,size=20m
bad line
";
        let mounts = mountinfo::parse(text.as_bytes());
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[1].mount_point,
            Path::new("/run/hutch/template/a b/1")
        );
        assert_eq!(mounts[1].fstype, "tmpfs");
        assert!(
            mounts[1].has_option("ro")
                && mounts[1].has_option("nosuid")
                && mounts[1].has_option("nodev")
        );
        assert!(is_loaded(&mounts, Path::new("/run/hutch/template/a b/1")));
        assert!(!is_loaded(&mounts, Path::new("/run")));
    }

    /// Only the top mount of a stack decides whether a generation is loaded.
    #[test]
    fn top_mount_wins() {
        let text = "\
90 22 0:50 / /r/t/x/1 ro,nosuid,nodev - tmpfs hutch-template ro
91 90 0:51 / /r/t/x/1 rw,nosuid,nodev - tmpfs other rw
";
        assert!(!is_loaded(
            &mountinfo::parse(text.as_bytes()),
            Path::new("/r/t/x/1")
        ));
    }

    /// Generations are read from a directory listing, ascending.
    #[test]
    fn generations_from_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["3", "1", "12", "junk", "04"] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(generations(dir.path()).unwrap(), vec![1, 3, 12]);
        assert_eq!(
            generations(&dir.path().join("missing")).unwrap(),
            Vec::<u64>::new()
        );
    }
}
