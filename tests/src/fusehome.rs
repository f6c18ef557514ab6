//! `OwnerOnlyMount`: a file system that the kernel lets one user into and
//! refuses to everyone else, root included — what an NFS export with
//! `root_squash` does to root for a 0700 home, on a kernel without NFS.
//!
//! A squashfs image (made with `mksquashfs` from a directory the test
//! filled) is served by `squashfuse`, running as the user, on a FUSE mount
//! without `allow_other`: FUSE then answers EACCES to every process whose
//! uid is not the mount's owner (`fuse_allow_current_process`). The mount
//! is made by root (open `/dev/fuse`, `mount(2)` with `user_id=`) inside a
//! private mount namespace (`unshare --mount --propagation private`); the
//! daemon gets the descriptor as `/dev/fd/N` (libfuse ≥ 3.3), so no setuid
//! fusermount is needed and the host never sees the mount. The namespace is
//! held by the daemon itself; start an sshd from it
//! ([`SshdOpts::mount_ns`](crate::SshdOpts)).
//!
//! Drop kills the daemon (by pid), which ends the mount and the namespace,
//! and removes the image (not the mount point, which is the caller's).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{output, run_ok, wait_until, OutputExt, TestDir};

/// Mounts `/dev/fuse` for `uid` and execs squashfuse as that user on it.
const MOUNT_PY: &str = r#"
import ctypes, os, sys
uid, gid, image, target = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/dev/fuse", os.O_RDWR)
opts = "fd=%d,rootmode=40000,user_id=%d,group_id=%d" % (fd, uid, gid)
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
if libc.mount(b"squashfuse", target.encode(), b"fuse.squashfuse", MS_RDONLY | MS_NOSUID | MS_NODEV, opts.encode()) != 0:
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
os.set_inheritable(fd, True)
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
os.execvp("squashfuse", ["squashfuse", "-f", image, "/dev/fd/%d" % fd])
"#;

/// See the module docs.
pub struct OwnerOnlyMount {
    dir: TestDir,
    daemon: Option<Child>,
    pid: i32,
    /// Where the file system is mounted (inside the namespace only).
    pub mountpoint: PathBuf,
}

impl OwnerOnlyMount {
    /// Lets `fill` write the file system's content into a staging
    /// directory (as root; chown what the owner must own), then mounts it
    /// at `mountpoint` (made here, in a directory of the test's) for
    /// `uid`:`gid` and waits until it is mounted and the owner can list it.
    pub fn new(mountpoint: &Path, uid: u32, gid: u32, fill: impl FnOnce(&Path)) -> OwnerOnlyMount {
        let dir = TestDir::new("htfuse");
        let src = dir.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
        fill(&src);
        let image = dir.join("fs.sqfs");
        run_ok(Command::new("mksquashfs").arg(&src).arg(&image).args([
            "-quiet",
            "-noappend",
            "-no-progress",
        ]));
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mountpoint = mountpoint.to_path_buf();
        std::fs::create_dir(&mountpoint).unwrap();
        std::fs::write(dir.join("mount.py"), MOUNT_PY).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let daemon = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "python3"])
            .arg(dir.join("mount.py"))
            .args([uid.to_string(), gid.to_string()])
            .arg(&image)
            .arg(&mountpoint)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning the FUSE mount");
        let pid = daemon.id() as i32;
        let m = OwnerOnlyMount {
            dir,
            daemon: Some(daemon),
            pid,
            mountpoint,
        };
        let up = wait_until(Duration::from_secs(15), || {
            if !m.mounted() {
                return None;
            }
            let out = output(m.command_as(uid, gid, "ls").arg(&m.mountpoint));
            out.status.success().then_some(())
        });
        assert!(
            up.is_some(),
            "squashfuse did not come up\n{}",
            std::fs::read_to_string(m.dir.join("daemon.log")).unwrap_or_default()
        );
        m
    }

    /// The pid whose mount namespace holds the mount.
    pub fn ns_pid(&self) -> i32 {
        self.pid
    }

    /// `prog` as root inside the namespace.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.pid))
            .arg("--")
            .arg(prog);
        c.stdin(Stdio::null());
        c
    }

    /// `prog` as `uid`:`gid` (no supplementary groups) inside the namespace.
    pub fn command_as(&self, uid: u32, gid: u32, prog: &str) -> Command {
        let mut c = self.command("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .arg(prog);
        c
    }

    /// Whether the mount is still there (in the namespace's mountinfo).
    pub fn mounted(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).is_ok_and(|m| {
            m.lines().any(|l| {
                l.split(' ').nth(4) == Some(&*self.mountpoint.to_string_lossy())
                    && l.contains(" - fuse.squashfuse ")
            })
        })
    }

    /// `stat` of `path` as root inside the namespace: its stderr when refused.
    pub fn root_stat(&self, path: &Path) -> Result<String, String> {
        let out = output(self.command("stat").arg(path));
        if out.status.success() {
            Ok(out.stdout_str())
        } else {
            Err(out.stderr_str())
        }
    }
}

impl Drop for OwnerOnlyMount {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl std::fmt::Debug for OwnerOnlyMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerOnlyMount")
            .field("dir", &self.dir.path())
            .field("pid", &self.pid)
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}
