//! `Lxcfs`: the real lxcfs daemon (Debian's package) on a mount point of
//! the test's own, never the host's `/var/lib/lxcfs` or `/run/lxcfs.pid`;
//! stopped (by pid) and unmounted on Drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TestDir;

/// A running lxcfs mounted at [`Lxcfs::mount_point`].
pub struct Lxcfs {
    child: Child,
    mount: PathBuf,
    _dir: TestDir,
}

fn mounted(at: &Path) -> bool {
    hutch_runtime::mountinfo::read_own()
        .unwrap_or_default()
        .iter()
        .any(|m| m.mount_point == at && m.fstype == "fuse.lxcfs")
}

impl Lxcfs {
    /// Starts `lxcfs -f -p DIR/lxcfs.pid DIR/mnt` and waits until it is mounted.
    pub fn start() -> Lxcfs {
        let dir = TestDir::new("htlxcfs");
        let mount = dir.join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let child = Command::new("lxcfs")
            .arg("-f")
            .arg("-p")
            .arg(dir.join("lxcfs.pid"))
            .arg(&mount)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting lxcfs (scripts/deps.sh installs it)");
        let l = Lxcfs {
            child,
            mount,
            _dir: dir,
        };
        let up = crate::wait_until(Duration::from_secs(10), || {
            (mounted(&l.mount) && l.mount.join("proc/meminfo").exists()).then_some(())
        });
        assert!(up.is_some(), "lxcfs did not mount {}", l.mount.display());
        l
    }

    /// Where it is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Lxcfs {
    fn drop(&mut self) {
        // SIGTERM: lxcfs unmounts itself and exits.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let gone = crate::wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().map(|_| ())
        });
        if gone.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mounted(&self.mount) {
            let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
