//! The persistent writable layer (`writable = "persistent"`): one ext4 image
//! per user, `<lib_dir>/users/<user>/layer.img`, attached to a loop device
//! and mounted by the container's init where the ephemeral layer's tmpfs
//! would go (`upper`, `work` and the merged `root` inside it).
//!
//! Why an image and not a directory with a project quota: the image's size
//! *is* the limit, on any file system lib_dir lives on (ext4, xfs, btrfs,
//! even a kernel built without quota support, like this project's
//! development kernel), and nothing inside the container can move a file
//! out of it. A project quota needs the file system made (ext4 `-O
//! project,quota`) or mounted (xfs `pquota`) for it by the admin, and the
//! kernel lets a file's owner change its project ID (`FS_IOC_FSSETXATTR`
//! from the initial user namespace, which a hutch container shares): a user
//! could `chattr -p` a big file out of their quota. The image costs a mkfs
//! at the first login (~20-60 ms for 1 GiB, sparse: ~660 KiB on disk) and a
//! loop attach and ext4 mount at each container start; see README.
//!
//! Safety of the paths: `lib_dir` is opened refusing every symlink
//! (`openat2(RESOLVE_NO_SYMLINKS)`), and below it every step is an `*at`
//! call on a directory fd with `O_NOFOLLOW`: `users/` and `users/<user>/`
//! are root-owned 0700 directories, the image a root-owned 0600 regular file
//! with one link. The user never sees the image or its directory: inside the
//! container only the overlay's merged view of `upper` is reachable (the
//! admin's read-only bind of `upper` for `hutchctl diff` sits below a
//! root-only 0700 directory, see [`crate::rootfs::ADMIN_UPPER`]).
//!
//! One image, one mount: the loop device is attached with
//! `LO_FLAGS_AUTOCLEAR`, so it goes with the last mount (the container's
//! mount namespace, whose last fds the keeper closes as it exits: ext4
//! writes the layer out then). A new container, `hutchctl reset` and the
//! stopped `hutchctl diff` wait (bounded, [`RELEASE_WAIT`]) until no loop
//! device is backed by the image any more ([`wait_released`]): two ext4
//! mounts of one image through two loop devices would corrupt it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode};
use nix::unistd::{fsync, ftruncate, unlinkat, UnlinkatFlags};

use crate::sys;

/// `<lib_dir>/users`: the persistent layers' directory.
pub const USERS_DIR: &str = "users";
/// The image in a user's directory.
pub const IMAGE: &str = "layer.img";
/// An image being made (renamed to [`IMAGE`] once mkfs has finished).
const IMAGE_NEW: &str = "layer.img.new";
/// The ext4 label of every layer.
pub const LABEL: &str = "hutch-layer";
/// mkfs.ext4's `-E`: root owns the top directory; the inode tables and the
/// journal are not written out, since a new sparse file reads as zeros
/// already (the image starts at ~660 KiB on disk instead of ~33 MiB).
const MKFS_EXTENDED: &str = "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1";
/// How long a new container waits for the previous one's layer to go.
pub const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A failed step, naming what was done on what.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    #[error("{tool} {}: {detail}", path.display())]
    Tool {
        tool: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the layer {} is still mounted ({devices}): the previous container has not gone yet", path.display())]
    InUse { path: PathBuf, devices: String },
}

type Result<T> = std::result::Result<T, LayerError>;

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> LayerError + 'a {
    move |e| LayerError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// `name` in the directory `dir`, as a path through `/proc/self/fd`: opened
/// with `O_NOFOLLOW`, it can name nothing but that entry of that directory.
fn at(dir: BorrowedFd<'_>, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Opens `name` in `dir` never through a symlink (`O_NOFOLLOW`), with
/// `extra` flags; `create`: a new file of mode 0600 (`O_CREAT|O_EXCL`).
fn open_at(
    dir: BorrowedFd<'_>,
    name: &str,
    write: bool,
    extra: i32,
    create: bool,
) -> io::Result<File> {
    File::options()
        .read(true)
        .write(write)
        .create_new(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | extra)
        .open(at(dir, name))
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

/// `<lib_dir>/users/<user>`.
pub fn user_dir(lib_dir: &Path, user: &str) -> PathBuf {
    lib_dir.join(USERS_DIR).join(user)
}

/// `<lib_dir>/users/<user>/layer.img`.
pub fn image_path(lib_dir: &Path, user: &str) -> PathBuf {
    user_dir(lib_dir, user).join(IMAGE)
}

/// A user name usable as one path component.
fn check_name(user: &str, lib_dir: &Path) -> Result<()> {
    if user.is_empty() || user == "." || user == ".." || user.contains(['/', '\0']) {
        return Err(LayerError::Refused {
            path: lib_dir.join(USERS_DIR),
            why: format!("{user:?} cannot name a layer directory"),
        });
    }
    Ok(())
}

/// Opens `lib_dir` (absolute) refusing every symlink on the way.
fn open_lib_dir(lib_dir: &Path) -> Result<OwnedFd> {
    let refused = |why: &str| LayerError::Refused {
        path: lib_dir.to_path_buf(),
        why: why.to_string(),
    };
    let rel = lib_dir
        .strip_prefix("/")
        .map_err(|_| refused("lib_dir is not an absolute path"))?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| refused("the path contains a NUL byte"))?;
    let root = File::open("/").map_err(|source| LayerError::Io {
        op: "opening",
        path: "/".into(),
        source,
    })?;
    sys::openat2(
        root.as_fd(),
        &c,
        libc::O_PATH | libc::O_DIRECTORY,
        sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|source| match source.raw_os_error() {
        Some(libc::ELOOP) => refused(
            "a symlink in lib_dir: persistent layers are made only on a path without symlinks",
        ),
        _ => LayerError::Io {
            op: "opening",
            path: lib_dir.to_path_buf(),
            source,
        },
    })
}

/// Opens (and with `create` makes) the directory `name` below `parent`:
/// never through a symlink, and only when it is root's and writable by
/// nobody else; it is left mode 0700. `None` when it is missing and
/// `create` is false.
fn private_dir(
    parent: BorrowedFd<'_>,
    parent_path: &Path,
    name: &str,
    create: bool,
) -> Result<Option<OwnedFd>> {
    let path = parent_path.join(name);
    if create {
        match mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_at("creating directory", &path)(e)),
        }
    }
    let fd = match open_at(parent, name, false, libc::O_DIRECTORY, false).map_err(|e| errno(&e)) {
        Ok(f) => OwnedFd::from(f),
        Err(Errno::ENOENT) if !create => return Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            return Err(LayerError::Refused {
                path,
                why: "is a symlink or not a directory; hutch does not follow it".into(),
            })
        }
        Err(e) => return Err(io_at("opening", &path)(e)),
    };
    let st = fstat(fd.as_raw_fd()).map_err(io_at("stat of", &path))?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(LayerError::Refused {
            path,
            why: format!(
                "must be root's and writable only by root (owner uid {}, mode {:o})",
                st.st_uid,
                st.st_mode & 0o7777
            ),
        });
    }
    if st.st_mode & 0o7777 != 0o700 {
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o700)).map_err(io_at("chmod", &path))?;
    }
    Ok(Some(fd))
}

/// Opens the directory of `user`'s layer (made when `create`).
fn open_user_dir(lib_dir: &Path, user: &str, create: bool) -> Result<Option<OwnedFd>> {
    check_name(user, lib_dir)?;
    let lib = open_lib_dir(lib_dir)?;
    let users_path = lib_dir.join(USERS_DIR);
    let Some(users) = private_dir(lib.as_fd(), lib_dir, USERS_DIR, create)? else {
        return Ok(None);
    };
    private_dir(users.as_fd(), &users_path, user, create)
}

/// An e2fsprogs tool by its absolute path (the keeper's PATH may lack sbin).
fn tool(name: &'static str) -> Result<PathBuf> {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| LayerError::Tool {
            tool: name,
            path: PathBuf::from(name),
            detail: "not found in /usr/sbin or /sbin (package e2fsprogs)".into(),
        })
}

/// Runs an e2fsprogs tool on `file` (reached as `/proc/<us>/fd/<n>`, never
/// by its path), with a clean environment. `ok` are the exit codes that
/// count as success.
fn run_tool(
    name: &'static str,
    args: &[&str],
    file: &File,
    shown: &Path,
    ok: &[i32],
) -> Result<()> {
    let fd_path = format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    let out = Command::new(tool(name)?)
        .args(args)
        .arg(&fd_path)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LayerError::Io {
            op: "running",
            path: PathBuf::from(name),
            source,
        })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(LayerError::Tool {
        tool: name,
        path: shown.to_path_buf(),
        detail: format!(
            "{} ({})",
            out.status,
            err.trim().lines().last().unwrap_or("no message")
        ),
    })
}

/// What [`prepare_image`] found or did.
#[derive(Debug)]
pub struct Image {
    pub file: File,
    pub path: PathBuf,
    /// Made by this call (the user's first persistent container).
    pub created: bool,
    /// The image's size now, in bytes.
    pub size: u64,
    /// Said once to the admin: grown, or kept larger than the policy's size.
    pub note: Option<String>,
}

/// Opens the user's image, making it (mkfs.ext4 on a sparse file of
/// `size` bytes) when there is none, growing it when the policy asks for
/// more. A smaller `size` than the image keeps the image: shrinking a file
/// system holding the user's files is not done behind the admin's back.
fn prepare_image(dir: BorrowedFd<'_>, dir_path: &Path, size: u64) -> Result<Image> {
    let path = dir_path.join(IMAGE);
    let new_path = dir_path.join(IMAGE_NEW);
    match unlinkat(Some(dir.as_raw_fd()), IMAGE_NEW, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io_at("removing", &new_path)(e)),
    }
    match open_at(dir, IMAGE, true, 0, false).map_err(|e| errno(&e)) {
        Ok(file) => {
            let md = file.metadata().map_err(|source| LayerError::Io {
                op: "stat of",
                path: path.clone(),
                source,
            })?;
            if !md.is_file() || md.uid() != 0 || md.nlink() != 1 {
                return Err(LayerError::Refused {
                    path,
                    why: "must be a regular file of root's with one link".into(),
                });
            }
            if md.mode() & 0o7777 != 0o600 {
                fchmod(file.as_raw_fd(), Mode::from_bits_truncate(0o600))
                    .map_err(io_at("chmod", &path))?;
            }
            let have = md.len();
            let mut note = None;
            let mut now = have;
            if size > have {
                // Offline: e2fsck -f first (resize2fs insists), then the new size.
                run_tool("e2fsck", &["-f", "-p"], &file, &path, &[0, 1])?;
                ftruncate(&file, size as i64).map_err(io_at("growing", &path))?;
                run_tool("resize2fs", &[], &file, &path, &[0])?;
                now = size;
                note = Some(format!(
                    "grown from {} to {} (writable_size)",
                    crate::template::human_bytes(have),
                    crate::template::human_bytes(size)
                ));
            } else if size < have {
                note = Some(format!(
                    "kept at {}: writable_size {} is smaller, and hutch does not shrink a layer (hutchctl reset discards it)",
                    crate::template::human_bytes(have),
                    crate::template::human_bytes(size)
                ));
            }
            Ok(Image {
                file,
                path,
                created: false,
                size: now,
                note,
            })
        }
        Err(Errno::ENOENT) => {
            let file = open_at(dir, IMAGE_NEW, true, 0, true).map_err(|source| LayerError::Io {
                op: "creating",
                path: new_path.clone(),
                source,
            })?;
            ftruncate(&file, size as i64).map_err(io_at("sizing", &new_path))?;
            run_tool(
                "mkfs.ext4",
                &["-q", "-F", "-m", "0", "-L", LABEL, "-E", MKFS_EXTENDED],
                &file,
                &new_path,
                &[0],
            )?;
            fsync(file.as_raw_fd()).map_err(io_at("fsync", &new_path))?;
            nix::fcntl::renameat(
                Some(dir.as_raw_fd()),
                IMAGE_NEW,
                Some(dir.as_raw_fd()),
                IMAGE,
            )
            .map_err(io_at("renaming into place", &new_path))?;
            let _ = fsync(dir.as_raw_fd());
            Ok(Image {
                file,
                path,
                created: true,
                size,
                note: None,
            })
        }
        Err(Errno::ELOOP) => Err(LayerError::Refused {
            path,
            why: "is a symlink; hutch does not follow it".into(),
        }),
        Err(e) => Err(io_at("opening", &path)(e)),
    }
}

/// The loop devices (`loop3`) whose backing file is `image`, from
/// `/sys/block/loop*/loop/backing_file`.
pub fn loop_devices_of(image: &Path) -> Vec<String> {
    let want = image.to_string_lossy();
    let deleted = format!("{want} (deleted)");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            let b = b.trim_end_matches('\n');
            if b == want || b == deleted {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// Waits (up to `timeout`) until no loop device is backed by `image`.
pub fn wait_released(image: &Path, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let devs = loop_devices_of(image);
        if devs.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Err(LayerError::InUse {
                path: image.to_path_buf(),
                devices: devs.join(", "),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loop device backed by a user's image.
#[derive(Debug)]
pub struct Attached {
    /// `/dev/loopN`.
    pub device: PathBuf,
    pub image: Image,
    /// Held until the file system is mounted (which then holds the device).
    _dev: OwnedFd,
}

/// A user's layer mounted read-write, detached: [`crate::rootfs`] attaches
/// it in the container's mount namespace. When that namespace goes (or
/// this is dropped unattached) the file system is unmounted and the loop
/// device clears itself.
#[derive(Debug)]
pub struct Mounted {
    pub device: PathBuf,
    pub image: Image,
    pub mount: std::sync::Arc<OwnedFd>,
    /// How long each step took, for the keeper's log line.
    pub steps: Vec<(&'static str, Duration)>,
}

/// Mount options of a layer: a damaged layer stops taking writes
/// (`errors=remount-ro`) rather than spreading the damage.
pub const MOUNT_OPTIONS: &[&std::ffi::CStr] = &[c"errors=remount-ro"];

/// Opens `/dev/loopN`. devtmpfs has made the node by the time
/// LOOP_CTL_GET_FREE returns (it waits for its node when a device is
/// added); a /dev that is not devtmpfs (a private one, as the tests' sshd
/// has) gets it made here, root's 0600, from the device number sysfs gives.
fn open_loop_node(n: u32, path: &Path) -> io::Result<File> {
    let open = || File::options().read(true).write(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let numbers = std::fs::read_to_string(format!("/sys/block/loop{n}/dev"))?;
    let (major, minor) = numbers
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .ok_or_else(|| io::Error::other(format!("/sys/block/loop{n}/dev: {numbers:?}")))?;
    match nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, minor),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let f = open()?;
    let md = f.metadata()?;
    use std::os::unix::fs::FileTypeExt;
    if !md.file_type().is_block_device() || md.rdev() != nix::sys::stat::makedev(major, minor) {
        return Err(io::Error::other(format!(
            "{} is not the block device {major}:{minor}",
            path.display()
        )));
    }
    Ok(f)
}

/// Attaches `file` to a free loop device with `flags`, retrying when
/// another attach takes the same device first.
fn loop_attach(file: &File, shown: &Path, flags: u32) -> Result<(OwnedFd, PathBuf)> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|source| LayerError::Io {
            op: "opening",
            path: "/dev/loop-control".into(),
            source,
        })?;
    let mut flags = flags;
    let mut last = None;
    for _ in 0..20 {
        let n = sys::loop_get_free(control.as_fd()).map_err(|source| LayerError::Io {
            op: "finding a free loop device for",
            path: shown.to_path_buf(),
            source,
        })?;
        let dev_path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match open_loop_node(n, &dev_path) {
            Ok(f) => OwnedFd::from(f),
            Err(source) => {
                return Err(LayerError::Io {
                    op: "opening",
                    path: dev_path,
                    source,
                })
            }
        };
        match sys::loop_configure(dev.as_fd(), file.as_fd(), flags) {
            Ok(()) => return Ok((dev, dev_path)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            // A backing file system without O_DIRECT: buffered, then.
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL)
                    && flags & sys::LO_FLAGS_DIRECT_IO != 0 =>
            {
                flags &= !sys::LO_FLAGS_DIRECT_IO;
                last = Some(e);
            }
            Err(source) => {
                return Err(LayerError::Io {
                    op: "attaching (LOOP_CONFIGURE) the layer to",
                    path: dev_path,
                    source,
                })
            }
        }
    }
    Err(LayerError::Io {
        op: "attaching a loop device to",
        path: shown.to_path_buf(),
        source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
    })
}

/// Makes ready `user`'s persistent layer of `size` bytes: its directory and
/// image (made at the first call), after the previous container's mount
/// of it has gone, attached read-write to a loop device that clears itself
/// when the last mount goes, and mounted (detached).
pub fn attach(lib_dir: &Path, user: &str, size: u64) -> Result<Mounted> {
    let mut steps = Vec::new();
    let mut t = Instant::now();
    let mut step = |name: &'static str| {
        steps.push((name, t.elapsed()));
        t = Instant::now();
    };
    let dir = open_user_dir(lib_dir, user, true)?.expect("made when missing");
    let dir_path = user_dir(lib_dir, user);
    wait_released(&dir_path.join(IMAGE), RELEASE_WAIT)?;
    step("wait");
    let image = prepare_image(dir.as_fd(), &dir_path, size)?;
    step(if image.created { "mkfs" } else { "open" });
    let (dev, device) = loop_attach(
        &image.file,
        &image.path,
        sys::LO_FLAGS_AUTOCLEAR | sys::LO_FLAGS_DIRECT_IO,
    )?;
    step("loop");
    let source = CString::new(device.as_os_str().as_encoded_bytes()).expect("no NUL in /dev/loopN");
    let mount =
        sys::mount_detached(c"ext4", &source, MOUNT_OPTIONS).map_err(|source| LayerError::Io {
            op: "mounting (ext4) the layer on",
            path: device.clone(),
            source,
        })?;
    step("mount");
    drop(dev);
    Ok(Mounted {
        device,
        image,
        mount: std::sync::Arc::new(mount),
        steps,
    })
}

/// `user`'s existing image attached read-only (for `hutchctl diff` of a
/// stopped container); `None` when the user has none. Fails while a
/// container has it mounted.
pub fn attach_read_only(lib_dir: &Path, user: &str) -> Result<Option<Attached>> {
    let Some(dir) = open_user_dir(lib_dir, user, false)? else {
        return Ok(None);
    };
    let path = image_path(lib_dir, user);
    wait_released(&path, RELEASE_WAIT)?;
    let file = match open_at(dir.as_fd(), IMAGE, false, 0, false).map_err(|e| errno(&e)) {
        Ok(f) => f,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(io_at("opening", &path)(e)),
    };
    let md = file.metadata().map_err(|source| LayerError::Io {
        op: "stat of",
        path: path.clone(),
        source,
    })?;
    if !md.is_file() || md.uid() != 0 {
        return Err(LayerError::Refused {
            path,
            why: "must be a regular file of root's".into(),
        });
    }
    let (dev, device) = loop_attach(
        &file,
        &path,
        sys::LO_FLAGS_AUTOCLEAR | sys::LO_FLAGS_READ_ONLY,
    )?;
    Ok(Some(Attached {
        device,
        image: Image {
            file,
            path,
            created: false,
            size: md.len(),
            note: None,
        },
        _dev: dev,
    }))
}

/// What [`reset`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub image: PathBuf,
    /// The image's apparent size and its blocks on disk, in bytes.
    pub size: u64,
    pub on_disk: u64,
}

/// Discards `user`'s persistent layer: the image and its directory. The
/// caller holds the user's lock and has made sure no container runs;
/// refused while the image is still mounted. `None` when there was none.
pub fn reset(lib_dir: &Path, user: &str) -> Result<Option<Removed>> {
    let Some(dir) = open_user_dir(lib_dir, user, false)? else {
        return Ok(None);
    };
    let dir_path = user_dir(lib_dir, user);
    let path = dir_path.join(IMAGE);
    wait_released(&path, RELEASE_WAIT)?;
    let removed =
        match open_at(dir.as_fd(), IMAGE, false, libc::O_PATH, false).map_err(|e| errno(&e)) {
            Ok(fd) => {
                let st = fstat(fd.as_raw_fd()).map_err(io_at("stat of", &path))?;
                Some(Removed {
                    image: path.clone(),
                    size: st.st_size as u64,
                    on_disk: st.st_blocks as u64 * 512,
                })
            }
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(io_at("opening", &path)(e)),
        };
    for name in [IMAGE, IMAGE_NEW] {
        match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_at("removing", &dir_path.join(name))(e)),
        }
    }
    drop(dir);
    let lib = open_lib_dir(lib_dir)?;
    if let Some(users) = private_dir(lib.as_fd(), lib_dir, USERS_DIR, false)? {
        // A directory the admin put more in (or mounted on) stays.
        match unlinkat(Some(users.as_raw_fd()), user, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EBUSY) => {}
            Err(e) => return Err(io_at("removing", &dir_path)(e)),
        }
    }
    Ok(removed.or(Some(Removed {
        image: path,
        size: 0,
        on_disk: 0,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::MetadataExt;

    /// A name that is not one path component never names a layer directory.
    #[test]
    fn names_are_one_component() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                check_name(bad, Path::new("/var/lib/hutch")).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_name("alice", Path::new("/var/lib/hutch")).is_ok());
        assert_eq!(
            image_path(Path::new("/var/lib/hutch"), "alice"),
            PathBuf::from("/var/lib/hutch/users/alice/layer.img")
        );
    }

    /// A symlinked `users/` or user directory is refused, never followed;
    /// a group-writable one too (runs as root: needs root-owned dirs).
    #[test]
    fn symlinks_and_loose_modes_are_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP symlinks_and_loose_modes_are_refused: needs root");
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let lib = base.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, lib.join(USERS_DIR)).unwrap();
        let e = open_user_dir(&lib, "alice", true).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
        std::fs::remove_file(lib.join(USERS_DIR)).unwrap();
        std::fs::create_dir(lib.join(USERS_DIR)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, lib.join(USERS_DIR).join("alice")).unwrap();
        let e = open_user_dir(&lib, "alice", true).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        std::fs::remove_file(lib.join(USERS_DIR).join("alice")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lib.join(USERS_DIR), std::fs::Permissions::from_mode(0o775))
            .unwrap();
        let e = open_user_dir(&lib, "alice", true).unwrap_err();
        assert!(e.to_string().contains("writable only by root"), "{e}");
        // A symlink in lib_dir itself.
        std::fs::set_permissions(lib.join(USERS_DIR), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink(&lib, base.path().join("link")).unwrap();
        let e = open_user_dir(&base.path().join("link"), "alice", true).unwrap_err();
        assert!(e.to_string().contains("symlink in lib_dir"), "{e}");
    }

    /// The kernel path, as root: the first attach makes and mounts the image
    /// (root's 0600 file in a 0700 directory), a second one waits for the
    /// first mount to go; a larger size grows the image (e2fsck + resize2fs),
    /// a smaller one keeps it and says so; reset removes it all. Prints each
    /// step's time.
    #[test]
    fn attach_grow_keep_and_reset() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
            eprintln!("SKIP attach_grow_keep_and_reset: needs root and loop devices");
            return;
        }
        let base = tempfile::tempdir_in("/var/tmp").unwrap();
        let lib = base.path();
        let m = attach(lib, "alice", 32 << 20).unwrap();
        eprintln!("first: {:?} on {}", m.steps, m.device.display());
        assert!(m.image.created && m.image.size == 32 << 20);
        let md = std::fs::metadata(image_path(lib, "alice")).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777, md.nlink()), (0, 0o600, 1));
        let dmd = std::fs::metadata(user_dir(lib, "alice")).unwrap();
        assert_eq!(dmd.mode() & 0o7777, 0o700);
        assert_eq!(loop_devices_of(&m.image.path).len(), 1);
        let image = m.image.path.clone();
        drop(m);
        let released = wait_released(&image, RELEASE_WAIT).unwrap();
        eprintln!("released {released:?} after the mount's fd closed");
        let m = attach(lib, "alice", 32 << 20).unwrap();
        eprintln!("again: {:?}", m.steps);
        assert!(!m.image.created && m.image.note.is_none());
        drop(m);
        wait_released(&image, RELEASE_WAIT).unwrap();
        let m = attach(lib, "alice", 48 << 20).unwrap();
        assert_eq!(m.image.size, 48 << 20);
        assert!(
            m.image.note.as_deref().unwrap().contains("grown"),
            "{:?}",
            m.image.note
        );
        drop(m);
        wait_released(&image, RELEASE_WAIT).unwrap();
        let m = attach(lib, "alice", 16 << 20).unwrap();
        assert_eq!(m.image.size, 48 << 20);
        assert!(m.image.note.as_deref().unwrap().contains("does not shrink"));
        // While mounted, reset is refused (after its bounded wait).
        drop(m);
        let r = reset(lib, "alice").unwrap().unwrap();
        assert_eq!(r.size, 48 << 20);
        assert!(!user_dir(lib, "alice").exists());
        assert!(reset(lib, "alice").unwrap().is_none());
    }
}
