//! The container's root filesystem, built inside the new mount namespace:
//! a writable tmpfs layer, overlayfs over the read-only template, generated
//! /etc files, the home and the login shell bound in, /proc, read-only /sys,
//! a small /dev with its own devpts, /dev/shm, /run, /tmp, the keeper's
//! syslog proxy socket at /dev/log, then pivot_root. Every step is a named function, in the order of
//! DESIGN.md ("Building a container").
//!
//! Paths the user controls (home, policy mount sources) are opened with
//! `openat2(RESOLVE_NO_SYMLINKS)` and mounted through `/proc/self/fd/N`, so a
//! symlinked home cannot redirect a bind onto `/etc`.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, chown, pivot_root, Gid, Uid};

use crate::{sys, Kernel};

/// What the root filesystem is made of.
#[derive(Debug, Clone)]
pub struct RootfsSpec {
    /// The loaded template generation (read-only tmpfs): overlay lowerdir.
    pub lower: PathBuf,
    /// An empty host directory to build on (inside the private mount ns).
    pub staging: PathBuf,
    /// Size of the writable layer and of /tmp, in bytes.
    pub writable_size: u64,
    /// The persistent layer ([`crate::layer`]): its ext4 file system as a
    /// detached mount the keeper made (the device opened outside the
    /// container's devices cgroup), attached here on the staging dir.
    /// `None`: the layer is a tmpfs, gone at teardown.
    pub layer_mount: Option<std::sync::Arc<OwnedFd>>,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// (name, gid) of the user's groups, primary first.
    pub groups: Vec<(String, u32)>,
    pub home: PathBuf,
    /// The inner shell, written as the user's shell in the generated passwd.
    pub inner_shell: PathBuf,
    /// Host files bound read-only at the same path (the login shell, hutch-shell).
    pub host_files: Vec<PathBuf>,
    /// Policy mounts.
    pub mounts: Vec<hutch_policy::BindMount>,
    pub hostname: String,
    /// The socket bound at the container's /dev/log when it exists: the
    /// keeper's proxy ([`crate::keeper::logproxy`]), never the host's.
    pub syslog_socket: PathBuf,
    /// Content of the marker at [`crate::paths::CONTAINER_MARKER`].
    pub marker: String,
    /// The generated /etc/resolv.conf (see [`crate::net::resolv_conf`]);
    /// `None` leaves the template's.
    pub resolv_conf: Option<String>,
    /// The policy's seccomp profile, passed to hutch-shell in the marker.
    pub seccomp: String,
    /// A file profile's syscall names, read by the keeper on the host
    /// ([`crate::seccomp::profile_names`]), for the marker.
    pub seccomp_deny: Vec<String>,
}

/// A failed set-up step: what was done, on what, and why.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {}", path.display())]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    Refused(String),
}

type Result<T> = std::result::Result<T, RootfsError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> RootfsError + 'a {
    move |source| RootfsError::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Builds the root and pivots into it. Runs in the container's first
/// process, as root, already in its new namespaces (mount, pid, ...).
pub fn build(spec: &RootfsSpec) -> Result<()> {
    build_with(&mut Kernel, spec)
}

/// [`build`] through `ops`: the order of the steps lives here and only here,
/// so that a test can record it with a fake (`container::tests`).
pub fn build_with(ops: &mut impl RootfsOps, spec: &RootfsSpec) -> Result<()> {
    ops.make_root_private()?;
    let layer = ops.mount_writable_layer(spec)?;
    let root = ops.mount_overlay(spec, &layer)?;
    ops.write_etc(spec, &root)?;
    // /run and /tmp before the binds: a home or a login shell under /tmp
    // must land on top of the container's /tmp, not under it.
    ops.mount_tmpfs_dirs(spec, &root)?;
    ops.bind_upper_for_admin(&layer, &root)?;
    ops.bind_home(spec, &root)?;
    ops.bind_host_files(spec, &root)?;
    ops.bind_policy_mounts(spec, &root)?;
    ops.mount_proc(&root)?;
    ops.mount_sys(&root)?;
    ops.mount_dev(spec, &root)?;
    ops.mask_paths(&root)?;
    ops.write_marker(spec, &root)?;
    ops.pivot_into(&root)?;
    Ok(())
}

/// The steps of [`build`], one method each. [`Kernel`] performs them; a
/// recording fake in the tests asserts their order without root.
pub trait RootfsOps {
    fn make_root_private(&mut self) -> Result<()>;
    fn mount_writable_layer(&mut self, spec: &RootfsSpec) -> Result<PathBuf>;
    fn mount_overlay(&mut self, spec: &RootfsSpec, layer: &Path) -> Result<PathBuf>;
    fn write_etc(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn mount_tmpfs_dirs(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn bind_upper_for_admin(&mut self, layer: &Path, root: &Path) -> Result<()>;
    fn bind_home(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn bind_host_files(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn bind_policy_mounts(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn mount_proc(&mut self, root: &Path) -> Result<()>;
    fn mount_sys(&mut self, root: &Path) -> Result<()>;
    fn mount_dev(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn mask_paths(&mut self, root: &Path) -> Result<()>;
    fn write_marker(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()>;
    fn pivot_into(&mut self, root: &Path) -> Result<()>;
}

/// The real steps: the functions of this file, on the kernel.
impl RootfsOps for Kernel {
    fn make_root_private(&mut self) -> Result<()> {
        make_root_private()
    }
    fn mount_writable_layer(&mut self, spec: &RootfsSpec) -> Result<PathBuf> {
        mount_writable_layer(spec)
    }
    fn mount_overlay(&mut self, spec: &RootfsSpec, layer: &Path) -> Result<PathBuf> {
        mount_overlay(spec, layer)
    }
    fn write_etc(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        write_etc(spec, root)
    }
    fn mount_tmpfs_dirs(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        mount_tmpfs_dirs(spec, root)
    }
    fn bind_upper_for_admin(&mut self, layer: &Path, root: &Path) -> Result<()> {
        bind_upper_for_admin(layer, root)
    }
    fn bind_home(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        bind_home(spec, root)
    }
    fn bind_host_files(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        bind_host_files(spec, root)
    }
    fn bind_policy_mounts(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        bind_policy_mounts(spec, root)
    }
    fn mount_proc(&mut self, root: &Path) -> Result<()> {
        mount_proc(root)
    }
    fn mount_sys(&mut self, root: &Path) -> Result<()> {
        mount_sys(root)
    }
    fn mount_dev(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        mount_dev(spec, root)
    }
    fn mask_paths(&mut self, root: &Path) -> Result<()> {
        mask_paths(root)
    }
    fn write_marker(&mut self, spec: &RootfsSpec, root: &Path) -> Result<()> {
        write_marker(spec, root)
    }
    fn pivot_into(&mut self, root: &Path) -> Result<()> {
        pivot_into(root)
    }
}

fn make_root_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys_err(
        "making / private (MS_REC|MS_PRIVATE)",
        Path::new("/"),
    ))
}

/// The writable layer on the staging dir, with `upper`, `work` and `root`
/// (the merged view) inside: a tmpfs of the policy's size, or the
/// persistent layer's ext4 image, mounted by the keeper.
fn mount_writable_layer(spec: &RootfsSpec) -> Result<PathBuf> {
    let dir = &spec.staging;
    match &spec.layer_mount {
        None => {
            let data = format!("size={},mode=0755", spec.writable_size.max(1 << 20));
            mount(
                Some("hutch-upper"),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(data.as_str()),
            )
            .map_err(sys_err("mounting the writable layer (tmpfs) on", dir))?;
        }
        Some(tree) => {
            let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
                RootfsError::Refused(format!("{} contains a NUL byte", dir.display()))
            })?;
            sys::move_mount_to(tree.as_fd(), &c)
                .map_err(io_err("attaching the persistent layer (ext4) on", dir))?;
        }
    }
    for sub in ["upper", "work", "root"] {
        let path = dir.join(sub);
        mkdir_mode(&path, 0o755)?;
        // Made by hutch at the layer's top, which the user never sees; checked
        // all the same, since a persistent one was made in an earlier life.
        let md = fs::symlink_metadata(&path).map_err(io_err("stat of", &path))?;
        if !md.is_dir() {
            return Err(RootfsError::Refused(format!(
                "{} in the writable layer is not a directory",
                path.display()
            )));
        }
    }
    Ok(dir.clone())
}

fn overlay_path_ok(p: &Path) -> bool {
    let s = p.to_string_lossy();
    !s.contains(',') && !s.contains(':') && !s.contains('\\')
}

fn mount_overlay(spec: &RootfsSpec, layer: &Path) -> Result<PathBuf> {
    let root = layer.join("root");
    for p in [&spec.lower, &layer.to_path_buf()] {
        if !overlay_path_ok(p) {
            return Err(RootfsError::Refused(format!(
                "path {} contains a character overlayfs cannot take (',' ':' '\\')",
                p.display()
            )));
        }
    }
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.lower.display(),
        layer.join("upper").display(),
        layer.join("work").display()
    );
    if spec.layer_mount.is_some() {
        // A persistent upper outlives its template generation: overlayfs
        // allows a lower changed while unmounted only without these.
        data.push_str(",index=off,redirect_dir=off,metacopy=off");
    }
    mount(
        Some("hutch"),
        &root,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(sys_err("mounting the overlay root on", &root))?;
    Ok(root)
}

/// Joins an absolute container path onto the new root, refusing `..`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RootfsError::Refused(format!(
                    "path {} contains '..'",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating directory", path)(e)),
    }
}

fn mkdir_p(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(io_err("creating directory", path))
}

/// Writes a root-owned file, replacing whatever the template had there.
fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(RootfsError::Refused(format!(
                "{} is a directory in the template",
                path.display()
            )))
        }
        Ok(_) => fs::remove_file(path).map_err(io_err("removing", path))?,
        Err(_) => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("creating", path))?;
    f.write_all(content.as_bytes())
        .map_err(io_err("writing", path))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))?;
    Ok(())
}

/// The generated /etc: only root, the user and the user's groups; hostname and hosts.
fn write_etc(spec: &RootfsSpec, root: &Path) -> Result<()> {
    let etc = root.join("etc");
    mkdir_p(&etc)?;
    write_file(&etc.join("passwd"), &passwd(spec), 0o644)?;
    write_file(&etc.join("group"), &group(spec), 0o644)?;
    write_file(
        &etc.join("hostname"),
        &format!("{}\n", spec.hostname),
        0o644,
    )?;
    write_file(&etc.join("hosts"), &hosts(&spec.hostname), 0o644)?;
    if let Some(resolv) = &spec.resolv_conf {
        write_file(&etc.join("resolv.conf"), resolv, 0o644)?;
    }
    Ok(())
}

/// The generated /etc/passwd.
pub fn passwd(spec: &RootfsSpec) -> String {
    format!(
        "root:x:0:0:root:/root:/bin/sh\n{}:x:{}:{}::{}:{}\n",
        spec.user,
        spec.uid,
        spec.gid,
        spec.home.display(),
        spec.inner_shell.display()
    )
}

/// The generated /etc/group: root, tty (sshd gives ptys to it), the user's groups.
pub fn group(spec: &RootfsSpec) -> String {
    let mut out = String::from("root:x:0:\n");
    let mut seen = vec![0u32];
    if !spec.groups.iter().any(|(_, g)| *g == 5) {
        out.push_str("tty:x:5:\n");
        seen.push(5);
    }
    for (name, gid) in &spec.groups {
        if seen.contains(gid) {
            continue;
        }
        seen.push(*gid);
        let members = if *gid == spec.gid {
            String::new()
        } else {
            spec.user.clone()
        };
        out.push_str(&format!("{name}:x:{gid}:{members}\n"));
    }
    out
}

/// The generated /etc/hosts.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
}

/// Opens an absolute host path refusing every symlink on the way.
fn open_no_symlinks(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    if !path.is_absolute() {
        return Err(RootfsError::Refused(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    let rootfd = fs::File::open("/").map_err(io_err("opening", Path::new("/")))?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| RootfsError::Refused(format!("{} contains a NUL byte", path.display())))?;
    sys::openat2(
        rootfd.as_fd(),
        &c,
        libc::O_PATH | flags,
        sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            RootfsError::Refused(format!(
                "{} is a symlink or has one in its path; hutch does not follow symlinks here",
                path.display()
            ))
        } else {
            io_err("opening", path)(e)
        }
    })
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// openat2's RESOLVE_BENEATH: no escape from the starting directory.
const RESOLVE_BENEATH: u64 = 0x08;

/// What a mount target must be when it has to be created.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    /// A regular file, created empty with this mode.
    File(u32),
}

/// Opens (O_PATH) the mount target `path` inside the new root, one
/// component at a time with `openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH)`:
/// the user owns their home (and may own a persistent layer), so a symlink
/// planted there between sessions must not redirect a mount (LXC's and
/// runc's mount-target CVEs, checklist 1.9). Missing components are made
/// (directories, and the last one as `kind`), never through a symlink.
fn open_target(root: &Path, path: &Path, kind: Kind) -> Result<OwnedFd> {
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            _ => Some(Err(())),
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            RootfsError::Refused(format!("mount target {} contains '..'", path.display()))
        })?;
    let mut cur: OwnedFd = fs::File::open(root)
        .map_err(io_err("opening", root))?
        .into();
    let resolve = sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH;
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let c = CString::new(name.as_encoded_bytes())
            .map_err(|_| RootfsError::Refused(format!("{} contains a NUL byte", path.display())))?;
        // No O_NOFOLLOW: with it O_PATH would open a final symlink itself;
        // RESOLVE_NO_SYMLINKS refuses it (ELOOP) instead.
        let open = |dir: &OwnedFd| sys::openat2(dir.as_fd(), &c, libc::O_PATH, resolve);
        let next = match open(&cur) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match (last, kind) {
                    (true, Kind::File(mode)) => {
                        let f = nix::fcntl::openat(
                            Some(cur.as_raw_fd()),
                            c.as_c_str(),
                            nix::fcntl::OFlag::O_CREAT
                                | nix::fcntl::OFlag::O_EXCL
                                | nix::fcntl::OFlag::O_NOFOLLOW
                                | nix::fcntl::OFlag::O_WRONLY
                                | nix::fcntl::OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(mode),
                        )
                        .map_err(sys_err("creating the mount target", path))?;
                        let _ = nix::unistd::close(f);
                    }
                    _ => nix::sys::stat::mkdirat(Some(cur.as_raw_fd()), c.as_c_str(), Mode::from_bits_truncate(0o755))
                        .map_err(sys_err("creating a directory of the mount target", path))?,
                }
                open(&cur).map_err(io_err("opening the mount target", path))?
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) => {
                return Err(RootfsError::Refused(format!(
                    "mount target {} has a symlink in its path inside the container; hutch does not follow symlinks here",
                    path.display()
                )))
            }
            Err(e) => return Err(io_err("opening the mount target", path)(e)),
        };
        cur = next;
    }
    let md = match fs::metadata(fd_path(&cur)) {
        Ok(md) => md,
        // The root of a file system that refuses root even a stat (FUSE
        // without allow_other; NFS answers stat): only reached where hutch
        // has just bound the user's home, whose kind the kernel matched at
        // the bind; the remount goes through this descriptor.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            return Ok(cur)
        }
        Err(e) => return Err(io_err("stat of the mount target", path)(e)),
    };
    match kind {
        Kind::Dir if !md.is_dir() => Err(RootfsError::Refused(format!(
            "mount target {} is not a directory",
            path.display()
        ))),
        Kind::File(_) if md.is_dir() => Err(RootfsError::Refused(format!(
            "mount target {} is a directory",
            path.display()
        ))),
        _ => Ok(cur),
    }
}

/// Bind-mounts the object behind `fd` on `target` (a container path,
/// resolved by [`open_target`] and mounted through its fd), then re-resolves
/// the target, which must now be the new mount, and makes it nosuid,
/// nodev, and read-only where asked, keeping every restriction the source's
/// mount had ([`restrict_bind`]: a home on a noexec or nosymfollow file
/// system stays so inside).
fn bind_fd_at(fd: &OwnedFd, root: &Path, target: &Path, kind: Kind, read_only: bool) -> Result<()> {
    let at = open_target(root, target, kind)?;
    mount(
        Some(&fd_path(fd)),
        &fd_path(&at),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys_err("bind-mounting onto", target))?;
    drop(at);
    let at = open_target(root, target, kind)?;
    restrict_bind(&at, target, read_only)
}

/// Adds nosuid, nodev (and rdonly) to the bind whose root is `at`, taking
/// none of the source mount's restrictions away: `mount_setattr` sets only
/// these (Linux 5.12). A `MS_REMOUNT|MS_BIND` replaces the per-mount flags
/// instead (outside a user namespace nothing is locked), so on an older
/// kernel the source's own (noexec, nosymfollow, atime) are read with
/// statvfs and passed again.
fn restrict_bind(at: &OwnedFd, target: &Path, read_only: bool) -> Result<()> {
    let mut set = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if read_only {
        set |= sys::MOUNT_ATTR_RDONLY;
    }
    match sys::mount_setattr_add(at.as_fd(), set) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        Err(e) => {
            return Err(io_err(
                "mount_setattr (nosuid,nodev) of the bind on",
                target,
            )(e))
        }
    }
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    flags |= source_restrictions(at);
    mount(
        None::<&str>,
        &fd_path(at),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(sys_err("remounting (nosuid,nodev) the bind on", target))
}

/// The per-mount restrictions of the mount `fd` is on, as remount flags
/// (for kernels without `mount_setattr`).
fn source_restrictions(fd: &OwnedFd) -> MsFlags {
    const ST_RDONLY: u64 = 0x1;
    const ST_NOEXEC: u64 = 0x8;
    const ST_NOATIME: u64 = 0x400;
    const ST_NODIRATIME: u64 = 0x800;
    const ST_RELATIME: u64 = 0x1000;
    const ST_NOSYMFOLLOW: u64 = 0x2000;
    const MS_NOSYMFOLLOW: u64 = 0x100;
    let Ok(st) = nix::sys::statvfs::fstatvfs(fd) else {
        return MsFlags::empty();
    };
    let f = st.flags().bits();
    let mut out = MsFlags::empty();
    for (st_bit, ms) in [
        (ST_RDONLY, MsFlags::MS_RDONLY),
        (ST_NOEXEC, MsFlags::MS_NOEXEC),
        (ST_NOATIME, MsFlags::MS_NOATIME),
        (ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (ST_RELATIME, MsFlags::MS_RELATIME),
        (
            ST_NOSYMFOLLOW,
            MsFlags::from_bits_retain(MS_NOSYMFOLLOW as _),
        ),
    ] {
        if f & st_bit != 0 {
            out |= ms;
        }
    }
    if f & (ST_NOATIME | ST_RELATIME) == 0 {
        out |= MsFlags::MS_STRICTATIME;
    }
    out
}

/// A verified `/dev/null` of the new root: a character device 1:3 reached
/// without a symlink (CVE-2025-31133 swapped it for one).
fn verified_dev_null(root: &Path) -> Result<OwnedFd> {
    let path = root.join("dev/null");
    let fd = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    verify_char_dev(&fd.into(), &path, 1, 3)
}

/// Checks that `fd` is the character device `major:minor`.
fn verify_char_dev(fd: &OwnedFd, path: &Path, major: u64, minor: u64) -> Result<OwnedFd> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(sys_err("stat", path))?;
    let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_chr || st.st_rdev != makedev(major, minor) {
        return Err(RootfsError::Refused(format!(
            "{} is not the character device {major}:{minor}",
            path.display()
        )));
    }
    fd.try_clone().map_err(io_err("dup", path))
}

/// Files in /proc that leak host state or kernel memory: a verified
/// /dev/null is bound over each (moby's masked paths, plus kallsyms as
/// nspawn does).
const MASKED_PROC_FILES: &[&str] = &[
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "kallsyms",
    "sysrq-trigger",
];
/// Directories hidden under an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Masks what [`MASKED_PROC_FILES`] and [`MASKED_DIRS`] name (those that
/// exist on this kernel), and every `cpu*/thermal_throttle` in /sys.
fn mask_paths(root: &Path) -> Result<()> {
    let null = verified_dev_null(root)?;
    for name in MASKED_PROC_FILES {
        let path = root.join("proc").join(name);
        if !fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false)
        {
            continue;
        }
        mount(
            Some(&fd_path(&null)),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys_err("masking (binding /dev/null onto)", &path))?;
    }
    let mut dirs: Vec<PathBuf> = MASKED_DIRS.iter().map(|d| root.join(d)).collect();
    if let Ok(cpus) = fs::read_dir(root.join("sys/devices/system/cpu")) {
        dirs.extend(cpus.flatten().map(|e| e.path().join("thermal_throttle")));
    }
    for path in dirs {
        if !fs::symlink_metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            continue;
        }
        mount(
            Some("hutch-mask"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,nr_inodes=1"),
        )
        .map_err(sys_err("masking", &path))?;
    }
    Ok(())
}

/// Whether root's open failed for want of permission (not of a path): what
/// an NFS export with `root_squash` answers root (squashed to nobody) for a
/// 0700 home or a parent nobody may not search, and FUSE without
/// `allow_other` answers every uid but the mount's owner.
fn refused_to_root(e: &RootfsError) -> bool {
    matches!(e, RootfsError::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)))
}

/// Opens a path the user may reach but root may not, as [`open_no_symlinks`]
/// does (O_PATH, `openat2` with RESOLVE_NO_SYMLINKS from `/`), but in a
/// forked child that has become the user (groups, gid, uid: the
/// credentials an NFS server or a FUSE daemon sees) and hands the
/// descriptor back over a socket pair. Never follows a symlink, whoever
/// planted it; the parent never changes its own credentials.
fn open_as_user(spec: &RootfsSpec, path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    use std::os::unix::net::UnixStream;
    let (parent, child) = UnixStream::pair().map_err(io_err("socketpair for opening", path))?;
    match sys::fork().map_err(io_err("forking to open as the user", path))? {
        sys::Forked::Child => {
            drop(parent);
            let gids: Vec<Gid> = spec.groups.iter().map(|(_, g)| Gid::from_raw(*g)).collect();
            let opened = nix::unistd::setgroups(&gids)
                .and_then(|()| {
                    let g = Gid::from_raw(spec.gid);
                    nix::unistd::setresgid(g, g, g)
                })
                .and_then(|()| {
                    let u = Uid::from_raw(spec.uid);
                    nix::unistd::setresuid(u, u, u)
                })
                .map_err(|e| RootfsError::Sys {
                    op: "becoming the user to open",
                    path: path.to_path_buf(),
                    source: e,
                })
                .and_then(|()| open_no_symlinks(path, flags));
            let sent = match &opened {
                Ok(fd) => crate::keeper::proto::send(&child, "OK\n", &[fd.as_fd()]),
                Err(RootfsError::Refused(m)) => crate::keeper::proto::send(
                    &child,
                    &format!("REFUSED {}\n", m.replace('\n', " ")),
                    &[],
                ),
                Err(RootfsError::Io { source, .. }) => crate::keeper::proto::send(
                    &child,
                    &format!("ERRNO {}\n", source.raw_os_error().unwrap_or(libc::EIO)),
                    &[],
                ),
                Err(e) => crate::keeper::proto::send(
                    &child,
                    &format!("REFUSED {}\n", crate::error::chain(&e).replace('\n', " ")),
                    &[],
                ),
            };
            sys::exit_now(i32::from(sent.is_err()))
        }
        sys::Forked::Parent(pid) => {
            drop(child);
            let got = crate::keeper::proto::recv(&parent);
            let _ = nix::sys::wait::waitpid(pid, None);
            let as_user = |source: std::io::Error| RootfsError::Io {
                op: "opening (as the user, root was refused)",
                path: path.to_path_buf(),
                source,
            };
            match got.map_err(as_user)? {
                Some((line, mut fds)) if line == "OK" && fds.len() == 1 => Ok(fds.remove(0)),
                Some((line, _)) if line.starts_with("REFUSED ") => {
                    Err(RootfsError::Refused(line["REFUSED ".len()..].to_string()))
                }
                Some((line, _)) if line.starts_with("ERRNO ") => {
                    Err(as_user(std::io::Error::from_raw_os_error(
                        line["ERRNO ".len()..].parse().unwrap_or(libc::EIO),
                    )))
                }
                other => Err(as_user(std::io::Error::other(format!(
                    "the child opening as the user answered {other:?}"
                )))),
            }
        }
    }
}

/// Opens a path the user controls (their home, a policy mount source):
/// as root, and where root is refused ([`refused_to_root`]), once more as
/// the user ([`open_as_user`]). Either way no symlink is followed.
fn open_user_path(spec: &RootfsSpec, path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    match open_no_symlinks(path, flags) {
        Err(e) if refused_to_root(&e) => open_as_user(spec, path, flags),
        other => other,
    }
}

fn bind_home(spec: &RootfsSpec, root: &Path) -> Result<()> {
    let fd = open_user_path(spec, &spec.home, libc::O_DIRECTORY).map_err(|e| match e {
        RootfsError::Refused(m) => RootfsError::Refused(format!("home of {}: {m}", spec.user)),
        RootfsError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOTDIR) => {
            RootfsError::Refused(format!(
                "home of {}: {} is not a directory",
                spec.user,
                spec.home.display()
            ))
        }
        other => other,
    })?;
    bind_fd_at(&fd, root, &spec.home, Kind::Dir, false)
}

fn bind_host_files(spec: &RootfsSpec, root: &Path) -> Result<()> {
    for file in &spec.host_files {
        let fd = open_no_symlinks(file, 0)?;
        bind_fd_at(&fd, root, file, Kind::File(0o755), true)?;
    }
    Ok(())
}

fn bind_policy_mounts(spec: &RootfsSpec, root: &Path) -> Result<()> {
    for m in &spec.mounts {
        let fd = open_user_path(spec, &m.source, 0).map_err(|e| match e {
            RootfsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RootfsError::Refused(format!(
                    "mount source {} does not exist",
                    m.source.display()
                ))
            }
            other => other,
        })?;
        let is_dir = fs::metadata(fd_path(&fd))
            .map(|md| md.is_dir())
            .unwrap_or(true);
        let kind = if is_dir { Kind::Dir } else { Kind::File(0o644) };
        bind_fd_at(&fd, root, &m.target, kind, m.read_only)?;
    }
    Ok(())
}

fn mount_proc(root: &Path) -> Result<()> {
    let proc_ = root.join("proc");
    mkdir_p(&proc_)?;
    mount(
        Some("proc"),
        &proc_,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys_err("mounting proc on", &proc_))?;
    // Kernel knobs stay read-only (bind onto itself, remount ro).
    for p in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        let path = proc_.join(p);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys_err("binding read-only", &path))?;
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(sys_err("remounting read-only", &path))?;
    }
    // Masked files and directories: see mask_paths (after /dev exists).
    Ok(())
}

fn mount_sys(root: &Path) -> Result<()> {
    let sys_ = root.join("sys");
    mkdir_p(&sys_)?;
    mount(
        Some("sysfs"),
        &sys_,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys_err("mounting sysfs (read-only) on", &sys_))
}

fn mount_dev(spec: &RootfsSpec, root: &Path) -> Result<()> {
    let dev = root.join("dev");
    mkdir_p(&dev)?;
    mount(
        Some("hutch-dev"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536k"),
    )
    .map_err(sys_err("mounting tmpfs on", &dev))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(sys_err("mknod", &path))?;
        // Verify what was made before trusting it (runc mknodDevice).
        let fd: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("opening", &path))?
            .into();
        verify_char_dev(&fd, &path, major, minor)?;
        fs::set_permissions(fd_path(&fd), fs::Permissions::from_mode(0o666))
            .map_err(io_err("chmod", &path))?;
    }
    let pts = dev.join("pts");
    mkdir_mode(&pts, 0o755)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(sys_err("mounting devpts on", &pts))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        std::os::unix::fs::symlink(to, &path).map_err(io_err("creating symlink", &path))?;
    }
    let shm = dev.join("shm");
    mkdir_mode(&shm, 0o1777)?;
    mount(
        Some("hutch-shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(sys_err("mounting tmpfs on", &shm))?;
    // The keeper's syslog proxy: sshd reopens /dev/log for every line.
    if let Ok(fd) = open_no_symlinks(&spec.syslog_socket, 0) {
        let target = dev.join("log");
        write_file(&target, "", 0o666)?;
        mount(
            Some(&fd_path(&fd)),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys_err("binding the syslog socket onto", &target))?;
    }
    Ok(())
}

fn mount_tmpfs_dirs(spec: &RootfsSpec, root: &Path) -> Result<()> {
    let run = root.join("run");
    mkdir_p(&run)?;
    mount(
        Some("hutch-run"),
        &run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        Some("mode=0755,size=16m"),
    )
    .map_err(sys_err("mounting tmpfs on", &run))?;
    // sshd and login record sessions in /run/utmp; it must exist.
    write_file(&run.join("utmp"), "", 0o664)?;
    let tmp = root.join("tmp");
    mkdir_mode(&tmp, 0o1777)?;
    let data = format!("mode=1777,size={}", spec.writable_size.max(1 << 20));
    mount(
        Some("hutch-tmp"),
        &tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(sys_err("mounting tmpfs on", &tmp))?;
    Ok(())
}

/// Where `hutchctl diff` finds the writable layer's `upper` inside the
/// container (through `/proc/<init>/root`): a read-only bind below a
/// root-owned 0700 directory of the container's root-owned 0755 /run tmpfs,
/// so the user can neither read it nor write into the layer behind
/// overlayfs's back.
pub const ADMIN_UPPER: &str = "/run/.hutch-upper/upper";

fn bind_upper_for_admin(layer: &Path, root: &Path) -> Result<()> {
    let target = inside(root, Path::new(ADMIN_UPPER))?;
    let parent = target.parent().unwrap_or(root);
    mkdir_mode(parent, 0o700)?;
    chown(parent, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))
        .map_err(sys_err("chown", parent))?;
    mkdir_mode(&target, 0o700)?;
    let upper = layer.join("upper");
    mount(
        Some(&upper),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys_err("binding the writable layer's upper onto", &target))?;
    let ro = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, &target, None::<&str>, ro, None::<&str>)
        .map_err(sys_err("remounting read-only", &target))
}

fn write_marker(spec: &RootfsSpec, root: &Path) -> Result<()> {
    let path = inside(root, Path::new(crate::paths::CONTAINER_MARKER))?;
    write_file(&path, &spec.marker, 0o444)?;
    chown(&path, Some(Uid::from_raw(0)), Some(Gid::from_raw(0))).map_err(sys_err("chown", &path))
}

/// pivot_root into `root` and detach the old root.
fn pivot_into(root: &Path) -> Result<()> {
    chdir(root).map_err(sys_err("chdir", root))?;
    pivot_root(".", ".").map_err(sys_err("pivot_root into", root))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(sys_err("detaching the old root", Path::new("/")))?;
    chdir("/").map_err(sys_err("chdir", Path::new("/")))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec for tests (also `container::tests`).
    pub(crate) fn spec() -> RootfsSpec {
        RootfsSpec {
            lower: "/run/hutch/template/default/1".into(),
            staging: "/run/hutch/users/alice/root".into(),
            writable_size: 1 << 30,
            layer_mount: None,
            user: "alice".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![("alice".into(), 1001), ("devs".into(), 2000)],
            home: "/home/alice".into(),
            inner_shell: "/bin/bash".into(),
            host_files: vec![],
            mounts: vec![],
            hostname: "alice".into(),
            syslog_socket: "/dev/log".into(),
            marker: String::new(),
            seccomp: "default".into(),
            seccomp_deny: Vec::new(),
            resolv_conf: None,
        }
    }

    /// The generated passwd holds only root and the user, with the inner shell.
    #[test]
    fn passwd_has_root_and_user_only() {
        assert_eq!(
            passwd(&spec()),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/bash\n"
        );
    }

    /// The generated group holds root, tty and the user's groups, the user a member of the supplementary ones.
    #[test]
    fn group_has_user_groups() {
        assert_eq!(
            group(&spec()),
            "root:x:0:\ntty:x:5:\nalice:x:1001:\ndevs:x:2000:alice\n"
        );
    }

    /// Paths with `..` are refused when placed inside the root.
    #[test]
    fn inside_refuses_dotdot() {
        assert!(inside(Path::new("/r"), Path::new("/a/../etc")).is_err());
        assert_eq!(
            inside(Path::new("/r"), Path::new("/a/b")).unwrap(),
            PathBuf::from("/r/a/b")
        );
    }
}
