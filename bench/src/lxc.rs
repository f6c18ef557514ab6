//! LXC 5 (Debian's `lxc`) configured for the work a hutch container does, so
//! that the side-by-side bench measures both on the same template in one
//! run: the rootfs an overlay of the loaded template (`overlay:LOWER:UPPER`),
//! the same namespaces (mount, pid, uts, ipc, net, cgroup; no user
//! namespace), /proc, read-only /sys, an autodev /dev with its own devpts,
//! tmpfs /run and /tmp, the same limits (memory.limit_in_bytes, pids.max, the
//! devices list) in cgroups below the caller's own (`lxc.cgroup.relative`),
//! init running as the user, and a veth onto a bridge of the bench's own
//! network namespace (made by the caller: LXC never sees the host's).
//!
//! `lxc-start -d` is the cold create, `lxc-attach -- /bin/true` the warm
//! join (its exec of /bin/true included), `lxc-stop -k` the teardown.
//! Containers live under a path of their own (`-P`), named after the
//! bench's tag so that `hutch_tests::leftovers` finds what one leaves.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, Context};

/// Where the bench's LXC containers live.
pub struct Lxc {
    pub path: PathBuf,
    lower: PathBuf,
    bridge: String,
    uid: u32,
    gid: u32,
    memory_max: u64,
    pids_max: u64,
    devices: Vec<String>,
    tag: String,
}

fn run(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(ms)
}

/// Whether LXC's tools are installed.
pub fn available() -> bool {
    [
        "/usr/bin/lxc-start",
        "/usr/bin/lxc-attach",
        "/usr/bin/lxc-stop",
    ]
    .iter()
    .all(|p| Path::new(p).exists())
}

impl Lxc {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: &Path,
        lower: &Path,
        bridge: &str,
        tag: &str,
        uid: u32,
        gid: u32,
        memory_max: u64,
        pids_max: u64,
        devices: Vec<String>,
    ) -> anyhow::Result<Lxc> {
        let path = dir.join("lxc");
        fs::create_dir_all(&path)?;
        Ok(Lxc {
            path,
            lower: lower.to_path_buf(),
            bridge: bridge.to_string(),
            uid,
            gid,
            memory_max,
            pids_max,
            devices,
            tag: tag.to_string(),
        })
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}-l{i}", self.tag)
    }

    fn config(&self, i: usize) -> String {
        let dir = self.path.join(self.name(i));
        let upper = dir.join("delta");
        let addr = format!("10.202.{}.{}", i / 250, i % 250 + 2);
        let mut c = format!(
            "lxc.uts.name = lxc{i}\n\
             lxc.rootfs.path = overlay:{}:{}\n\
             lxc.mount.auto = proc:rw sys:ro\n\
             lxc.mount.entry = tmpfs run tmpfs nosuid,nodev,mode=0755,size=1g 0 0\n\
             lxc.mount.entry = tmpfs tmp tmpfs nosuid,nodev,mode=1777,size=1g 0 0\n\
             lxc.autodev = 1\n\
             lxc.pty.max = 1024\n\
             lxc.tty.max = 0\n\
             lxc.console.path = none\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.cgroup.relative = 1\n\
             lxc.cgroup.memory.limit_in_bytes = {}\n\
             lxc.cgroup.pids.max = {}\n\
             lxc.cgroup.devices.deny = a\n",
            self.lower.display(),
            upper.display(),
            self.memory_max,
            self.pids_max
        );
        for d in &self.devices {
            c.push_str(&format!("lxc.cgroup.devices.allow = {d}\n"));
        }
        c.push_str(&format!(
            "lxc.net.0.type = veth\n\
             lxc.net.0.link = {}\n\
             lxc.net.0.flags = up\n\
             lxc.net.0.ipv4.address = {addr}/16\n\
             lxc.net.0.ipv4.gateway = 10.202.0.1\n\
             lxc.init.uid = {}\n\
             lxc.init.gid = {}\n\
             lxc.init.cmd = /bin/sleep infinity\n\
             lxc.log.file = {}\n\
             lxc.log.level = WARN\n",
            self.bridge,
            self.uid,
            self.gid,
            dir.join("log").display()
        ));
        c
    }

    /// Writes container `i`'s directory and config (not timed).
    pub fn prepare(&self, i: usize) -> anyhow::Result<()> {
        let dir = self.path.join(self.name(i));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("delta"))?;
        fs::write(dir.join("config"), self.config(i))?;
        Ok(())
    }

    fn cmd(&self, prog: &str, i: usize) -> Command {
        let mut c = Command::new(prog);
        c.arg("-n").arg(self.name(i)).arg("-P").arg(&self.path);
        c
    }

    /// `lxc-start -d`: its milliseconds.
    pub fn start(&self, i: usize) -> anyhow::Result<f64> {
        run(self.cmd("lxc-start", i).arg("-d"))
    }

    /// `lxc-attach -- /bin/true`: its milliseconds.
    pub fn attach(&self, i: usize) -> anyhow::Result<f64> {
        run(self.cmd("lxc-attach", i).args(["--", "/bin/true"]))
    }

    /// `lxc-stop -k`: its milliseconds.
    pub fn stop(&self, i: usize) -> anyhow::Result<f64> {
        run(self.cmd("lxc-stop", i).arg("-k"))
    }

    /// The PIDs of container `i`: its init and its monitor (`lxc-info`).
    pub fn init_pid(&self, i: usize) -> Option<u32> {
        let out = self.cmd("lxc-info", i).args(["-p", "-H"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// The cgroup directories LXC made for container `i` (payload and
    /// monitor) in every hierarchy, below this process's own cgroups.
    pub fn cgroups(&self, i: usize) -> Vec<PathBuf> {
        let name = self.name(i);
        let mut out = Vec::new();
        for (mount, rel) in own_cgroups() {
            for kind in ["lxc.payload", "lxc.monitor"] {
                let d = mount
                    .join(rel.trim_start_matches('/'))
                    .join(format!("{kind}.{name}"));
                if d.exists() {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Removes container `i`'s directory and any cgroup LXC left (after
    /// `stop`); errors if one cannot go.
    pub fn remove(&self, i: usize) -> anyhow::Result<()> {
        for d in self.cgroups(i) {
            remove_tree(&d);
        }
        let left = self.cgroups(i);
        let _ = fs::remove_dir_all(self.path.join(self.name(i)));
        if left.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("LXC cgroups left: {left:?}"))
        }
    }
}

/// Removes the `lxc.pivot` groups LXC's monitors make below this process's
/// own cgroups (where they park themselves to remove a container's
/// groups), once no container of the bench is left.
pub fn remove_pivot() {
    for (mount, rel) in own_cgroups() {
        let d = mount.join(rel.trim_start_matches('/')).join("lxc.pivot");
        // A monitor that has just stopped may still be leaving it.
        for _ in 0..100 {
            if !d.exists() || fs::remove_dir(&d).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Removes a cgroup directory and every one below it, deepest first.
fn remove_tree(d: &Path) {
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(d);
}

/// (mount point, this process's cgroup there) of every v1 hierarchy.
fn own_cgroups() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(text) = fs::read_to_string("/proc/self/cgroup") else {
        return out;
    };
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, rel) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        // `0::/path`: the unified hierarchy of a hybrid host.
        let dir = if ctrl.is_empty() {
            "unified"
        } else {
            ctrl.strip_prefix("name=").unwrap_or(ctrl)
        };
        let mount = Path::new("/sys/fs/cgroup").join(dir);
        if mount.exists() {
            out.push((mount, rel.to_string()));
        }
    }
    out
}
