//! Walking and copying a root filesystem tree without ever following a
//! symlink: every entry is looked at with `lstat`, files are opened with
//! `O_NOFOLLOW` and checked to be the inode that was looked at, symlinks are
//! recreated as symlinks (their targets may point anywhere: they resolve
//! inside the container, never here).
//!
//! The copy keeps modes (setuid bits included: [`super::build`] strips them
//! afterwards), owners, timestamps and hardlinks; it skips device nodes and
//! sockets (the container makes its own `/dev`) and copies no xattrs, so no
//! file capability ever reaches a copy.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::TemplateError;

/// Page size tmpfs allocates in.
const PAGE: u64 = 4096;
/// Symlink targets up to this length live in the inode on tmpfs (no page).
const SHORT_SYMLINK: u64 = 128;

/// Calls `visit(relative, absolute, metadata)` for every entry under `root`
/// (not `root` itself), parents before children, never following symlinks.
/// `visit` may remove the entry it is given.
pub(crate) fn walk(
    root: &Path,
    visit: &mut dyn FnMut(&Path, &Path, &Metadata) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    walk_dir(root, Path::new("/"), visit)
}

fn walk_dir(
    dir: &Path,
    rel: &Path,
    visit: &mut dyn FnMut(&Path, &Path, &Metadata) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    let entries = fs::read_dir(dir).map_err(TemplateError::io("reading directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(TemplateError::io("reading directory", dir))?;
        let path = entry.path();
        let rel_path = rel.join(entry.file_name());
        let md = fs::symlink_metadata(&path).map_err(TemplateError::io("inspecting", &path))?;
        visit(&rel_path, &path, &md)?;
        if md.file_type().is_dir() {
            walk_dir(&path, &rel_path, visit)?;
        }
    }
    Ok(())
}

/// How much a tmpfs needs to hold one entry: file data in whole pages (each
/// inode once: `seen` tracks hardlinks), long symlink targets one page.
pub(crate) fn tmpfs_bytes(md: &Metadata, seen: &mut HashMap<(u64, u64), ()>) -> u64 {
    let ft = md.file_type();
    if ft.is_file() {
        if md.nlink() > 1 && seen.insert((md.dev(), md.ino()), ()).is_some() {
            return 0;
        }
        md.size().div_ceil(PAGE) * PAGE
    } else if ft.is_symlink() && md.size() >= SHORT_SYMLINK {
        PAGE
    } else {
        0
    }
}

/// The tmpfs size of the tree under `root`.
pub(crate) fn measure(root: &Path) -> Result<u64, TemplateError> {
    let mut seen = HashMap::new();
    let mut bytes = 0u64;
    walk(root, &mut |_, _, md| {
        bytes = bytes.saturating_add(tmpfs_bytes(md, &mut seen));
        Ok(())
    })?;
    Ok(bytes)
}

/// What a copy left out.
#[derive(Debug, Default)]
pub(crate) struct CopyReport {
    /// Device nodes and sockets not copied, relative to the source root.
    pub skipped: Vec<PathBuf>,
}

/// Copies the contents of `src` into the existing, empty directory `dst`.
/// `dst` itself keeps its own owner and mode.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<CopyReport, TemplateError> {
    let mut copier = Copier {
        links: HashMap::new(),
        report: CopyReport::default(),
    };
    copier.copy_dir_contents(src, dst, Path::new("/"))?;
    Ok(copier.report)
}

struct Copier {
    /// (dev, ino) of a source file with several links → its first copy.
    links: HashMap<(u64, u64), PathBuf>,
    report: CopyReport,
}

impl Copier {
    fn copy_dir_contents(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: &Path,
    ) -> Result<(), TemplateError> {
        let entries = fs::read_dir(src).map_err(TemplateError::io("reading directory", src))?;
        for entry in entries {
            let entry = entry.map_err(TemplateError::io("reading directory", src))?;
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let rel_path = rel.join(entry.file_name());
            let md = fs::symlink_metadata(&from).map_err(TemplateError::io("inspecting", &from))?;
            let ft = md.file_type();
            if ft.is_dir() {
                fs::create_dir(&to).map_err(TemplateError::io("creating directory", &to))?;
                self.copy_dir_contents(&from, &to, &rel_path)?;
                set_attributes(&to, &md)?;
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&from).map_err(TemplateError::io("reading symlink", &from))?;
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(TemplateError::io("creating symlink", &to))?;
                std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()))
                    .map_err(TemplateError::io("changing owner of", &to))?;
                set_times(&to, &md)?;
            } else if ft.is_file() {
                let key = (md.dev(), md.ino());
                if md.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        fs::hard_link(first, &to)
                            .map_err(TemplateError::io("creating hardlink", &to))?;
                        continue;
                    }
                }
                copy_file(&from, &to, &md)?;
                set_attributes(&to, &md)?;
                if md.nlink() > 1 {
                    self.links.insert(key, to);
                }
            } else if ft.is_fifo() {
                nix::unistd::mkfifo(&to, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(TemplateError::nix("creating fifo", &to))?;
                set_attributes(&to, &md)?;
            } else {
                // Character and block devices, sockets.
                self.report.skipped.push(rel_path);
            }
        }
        Ok(())
    }
}

/// Copies one regular file's data (copy_file_range under `io::copy`),
/// refusing to open anything but the inode `md` describes.
fn copy_file(from: &Path, to: &Path, md: &Metadata) -> Result<(), TemplateError> {
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(from)
        .map_err(TemplateError::io("opening", from))?;
    let opened = input
        .metadata()
        .map_err(TemplateError::io("inspecting", from))?;
    if (opened.dev(), opened.ino()) != (md.dev(), md.ino()) {
        return Err(TemplateError::Io {
            op: "copying (file changed during the copy)",
            path: from.to_path_buf(),
            source: io::Error::from(io::ErrorKind::Other),
        });
    }
    let mut output: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(to)
        .map_err(TemplateError::io("creating", to))?;
    io::copy(&mut input, &mut output).map_err(TemplateError::io("copying into", to))?;
    Ok(())
}

/// Owner, then mode (chown clears setuid bits), then timestamps of a
/// non-symlink.
fn set_attributes(path: &Path, md: &Metadata) -> Result<(), TemplateError> {
    std::os::unix::fs::lchown(path, Some(md.uid()), Some(md.gid()))
        .map_err(TemplateError::io("changing owner of", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(TemplateError::io("changing mode of", path))?;
    set_times(path, md)
}

fn set_times(path: &Path, md: &Metadata) -> Result<(), TemplateError> {
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(None, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(TemplateError::nix("setting times of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy recreates files, directories, symlinks (targets untouched, even
    /// outside the tree) and hardlinks, and keeps modes.
    #[test]
    fn copy_keeps_shapes_and_modes() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir(s.join("d")).unwrap();
        fs::write(s.join("d/f"), b"data").unwrap();
        fs::set_permissions(s.join("d/f"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::hard_link(s.join("d/f"), s.join("d/g")).unwrap();
        std::os::unix::fs::symlink("/etc", s.join("out")).unwrap();
        std::os::unix::fs::symlink("d/f", s.join("rel")).unwrap();
        fs::set_permissions(s.join("d"), fs::Permissions::from_mode(0o700)).unwrap();

        copy_tree(s, dst.path()).unwrap();
        let d = dst.path();
        assert_eq!(fs::read(d.join("d/f")).unwrap(), b"data");
        assert_eq!(fs::metadata(d.join("d/f")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(fs::metadata(d.join("d")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(
            fs::metadata(d.join("d/f")).unwrap().ino(),
            fs::metadata(d.join("d/g")).unwrap().ino()
        );
        assert!(fs::symlink_metadata(d.join("out"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(d.join("out")).unwrap(), Path::new("/etc"));
        assert_eq!(fs::read_link(d.join("rel")).unwrap(), Path::new("d/f"));
    }

    /// Measuring counts whole pages per file, hardlinked files once, short symlinks nothing.
    #[test]
    fn measure_counts_pages_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a"), vec![0u8; 10]).unwrap();
        fs::write(p.join("b"), vec![0u8; 4097]).unwrap();
        fs::hard_link(p.join("b"), p.join("c")).unwrap();
        std::os::unix::fs::symlink("a", p.join("s")).unwrap();
        std::os::unix::fs::symlink("x".repeat(200), p.join("long")).unwrap();
        assert_eq!(measure(p).unwrap(), 4096 + 8192 + 4096);
    }
}
