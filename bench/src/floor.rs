//! The floor: the kernel work a hutch container needs, done by hand with
//! nothing around it (no policy, no supervisor, no checks beyond errors),
//! so that hutch's and LXC's times have something to be measured against:
//!
//! - cgroups: a group and its `procs` leaf in every v1 hierarchy hutch uses
//!   (the same directories hutch makes, beside hutch's own), the same
//!   limits (memory.limit_in_bytes, pids.max, the devices list on the group
//!   before the leaf exists and on the leaf; cpuset values copied down);
//! - clone into new mount, pid, uts, ipc and net namespaces, the child
//!   attached to the leaves before it goes on, then its own cgroup
//!   namespace;
//! - the root: propagation stopped, a tmpfs writable layer, the overlay over
//!   the loaded template, tmpfs /run and /tmp, /proc, read-only /sys, a
//!   tmpfs /dev with the six nodes, its own devpts and /dev/shm, pivot_root
//!   with the old root detached;
//! - hostname, lo up, setgroups/setresgid/setresuid to the user;
//! - a veth pair: one end onto a bridge of the bench's network namespace,
//!   eth0 in the container with an address, up, a default route;
//! - the user's firewall tables on the port (phase `nft`): the same tables
//!   hutch installs for the policy, through the same encoder
//!   (`hutch_runtime::net::nft::install`: one raw nf_tables batch), deleted
//!   at teardown as hutch deletes them;
//! - a join: attach to the leaves and setns into the six namespaces
//!   ([`hutch_runtime::ns::Namespaces::join_all`], as pam_hutch);
//! - teardown: SIGKILL, reap, the tables deleted, the cgroup directories
//!   removed (the veth goes with the network namespace).

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hutch_runtime::net::netlink::{self, Netlink};
use hutch_runtime::net::nft;
use hutch_runtime::ns::{Namespace, Namespaces};
use hutch_runtime::sys::{self, Forked};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};

/// The devices of the container's /dev and its devices cgroup (hutch's
/// list, `keeper::container_devices`).
const NODES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What every floor container shares: the template, the hierarchies, the
/// bridge, the user.
pub struct Floor {
    lower: PathBuf,
    scratch: PathBuf,
    /// The cgroup directory in each hierarchy under which the floor's groups
    /// go (hutch's own cgroup root there), and whether it is cpuset's.
    parents: Vec<(PathBuf, bool)>,
    bridge: String,
    uid: u32,
    gid: u32,
    memory_max: u64,
    pids_max: u64,
    devices: Vec<String>,
    /// The policy's conntrack bound (hutch's tables count connections).
    conntrack: Option<u64>,
}

/// One floor container.
pub struct FloorContainer {
    pub init: Pid,
    pub ns: Namespaces,
    groups: Vec<PathBuf>,
    pub port: String,
    /// Whose tables (`hutch-flr<i>` in the bench's namespace).
    user: String,
    /// The `nft` phase: installing the tables, milliseconds.
    pub nft_ms: f64,
}

fn write(dir: &Path, file: &str, value: &str) -> anyhow::Result<()> {
    fs::write(dir.join(file), value)
        .with_context(|| format!("writing {value:?} to {}/{file}", dir.display()))
}

impl Floor {
    /// `hutch_groups`: the group directories of one hutch container
    /// (state.json's `cgroups`), whose grandparents are hutch's root in
    /// each hierarchy. Makes the bridge in the caller's network namespace.
    /// `conntrack`: the bound in the users' tables, as hutch's policy has it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lower: &Path,
        scratch: &Path,
        hutch_groups: &[PathBuf],
        bridge: &str,
        uid: u32,
        gid: u32,
        memory_max: u64,
        pids_max: u64,
        devices: Vec<String>,
        conntrack: Option<u64>,
    ) -> anyhow::Result<Floor> {
        let mut parents = Vec::new();
        for g in hutch_groups {
            let root = g
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| anyhow!("{} has no grandparent", g.display()))?;
            let cpuset = root.join("cpuset.cpus").exists() || root.join("cpus").exists();
            parents.push((root.to_path_buf(), cpuset));
        }
        fs::create_dir_all(scratch)?;
        let mut nl = Netlink::open()?;
        if nl.link_index(bridge)?.is_none() {
            nl.add_bridge(bridge)?;
        }
        let b = nl
            .link_index(bridge)?
            .ok_or_else(|| anyhow!("no bridge {bridge}"))?;
        nl.set_up(b)?;
        Ok(Floor {
            lower: lower.to_path_buf(),
            scratch: scratch.to_path_buf(),
            parents,
            bridge: bridge.to_string(),
            uid,
            gid,
            memory_max,
            pids_max,
            devices,
            conntrack,
        })
    }

    fn cgroups(&self, i: usize) -> anyhow::Result<Vec<PathBuf>> {
        let mut groups = Vec::new();
        for (parent, cpuset) in &self.parents {
            let g = parent.join(format!("floor{i}"));
            fs::create_dir(&g).with_context(|| format!("mkdir {}", g.display()))?;
            groups.push(g.clone());
            let leaf = g.join("procs");
            if *cpuset {
                // A v1 cpuset child starts empty: its values copied down.
                let files: &[&str] = if parent.join("cpus").exists() {
                    &["cpus", "mems"]
                } else {
                    &["cpuset.cpus", "cpuset.mems"]
                };
                copy_down(parent, &g, files)?;
                fs::create_dir(&leaf).with_context(|| format!("mkdir {}", leaf.display()))?;
                copy_down(&g, &leaf, files)?;
                continue;
            }
            if g.join("memory.limit_in_bytes").exists() {
                write(&g, "memory.limit_in_bytes", &self.memory_max.to_string())?;
            }
            if g.join("pids.max").exists() {
                write(&g, "pids.max", &self.pids_max.to_string())?;
            }
            let devices = g.join("devices.deny").exists();
            if devices {
                write(&g, "devices.deny", "a")?;
                for r in &self.devices {
                    write(&g, "devices.allow", r)?;
                }
            }
            fs::create_dir(&leaf).with_context(|| format!("mkdir {}", leaf.display()))?;
            if devices {
                write(&leaf, "devices.deny", "a")?;
                for r in &self.devices {
                    write(&leaf, "devices.allow", r)?;
                }
            }
        }
        Ok(groups)
    }

    /// Makes container `i` (its address: 10.201.i/16 on the bridge).
    pub fn create(&self, i: usize) -> anyhow::Result<FloorContainer> {
        let staging = self.scratch.join(format!("c{i}"));
        fs::create_dir_all(&staging)?;
        let groups = self.cgroups(i)?;
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (st_r, st_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        let child = match sys::clone_fork(flags)? {
            Forked::Child => {
                drop(go_w);
                drop(st_r);
                let mut st = fs::File::from(st_w);
                let r = child_setup(self, &staging, go_r);
                match r {
                    Ok(()) => {
                        let _ = st.write_all(b"OK");
                        drop(st);
                        init_loop()
                    }
                    Err(e) => {
                        let _ = write!(st, "ERR {e:#}");
                        sys::exit_now(1)
                    }
                }
            }
            Forked::Parent(pid) => pid,
        };
        drop(go_r);
        drop(st_w);
        let placed = (|| -> anyhow::Result<()> {
            for g in &groups {
                write(&g.join("procs"), "cgroup.procs", &child.to_string())?;
            }
            Ok(())
        })();
        if let Err(e) = placed {
            let _ = kill(child, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            remove_groups(&groups);
            return Err(e);
        }
        fs::File::from(go_w).write_all(b"g")?;
        let mut s = String::new();
        let _ = fs::File::from(st_r).read_to_string(&mut s);
        let fail = |e: anyhow::Error| {
            let _ = kill(child, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            remove_groups(&groups);
            e
        };
        if s != "OK" {
            return Err(fail(anyhow!("floor init: {s}")));
        }
        let ns = Namespaces::open(child.as_raw()).map_err(|e| fail(e.into()))?;
        let port = format!("flr{i}");
        let addr = Ipv4Addr::new(10, 201, (i / 250) as u8, (i % 250) as u8 + 2);
        if let Err(e) = self.veth(&port, addr, ns.get(Namespace::Net)) {
            return Err(fail(e));
        }
        let user = format!("flr{i}");
        let t = Instant::now();
        if let Err(e) = self.tables(&user, &port, addr) {
            let _ = nft::delete(&user);
            return Err(fail(e));
        }
        let nft_ms = t.elapsed().as_secs_f64() * 1000.0;
        Ok(FloorContainer {
            init: child,
            ns,
            groups,
            port,
            user,
            nft_ms,
        })
    }

    /// The user's tables, as hutch installs them for a veth port without
    /// NAT or egress lists.
    fn tables(&self, user: &str, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        let o = addr.octets();
        nft::install(&nft::Rules {
            user,
            port,
            addr,
            mac: [0x02, 0x42, o[0], o[1], o[2], o[3]],
            egress_deny: &[],
            egress_allow: &[],
            gateway: Ipv4Addr::new(10, 201, 0, 1),
            nat_uplink: None,
            conntrack: self.conntrack,
        })
        .map_err(|e| anyhow!("floor tables of {user}: {e}"))
    }

    fn veth(
        &self,
        port: &str,
        addr: Ipv4Addr,
        netns: std::os::fd::BorrowedFd<'_>,
    ) -> anyhow::Result<()> {
        let mut nl = Netlink::open()?;
        let bridge = nl
            .link_index(&self.bridge)?
            .ok_or_else(|| anyhow!("no bridge"))?;
        let o = addr.octets();
        nl.add_veth(port, "eth0", [0x02, 0x42, o[0], o[1], o[2], o[3]], netns)?;
        let p = nl.link_index(port)?.ok_or_else(|| anyhow!("no {port}"))?;
        nl.set_controller(p, bridge)?;
        nl.set_up(p)?;
        netlink::in_netns(netns, move |nl| {
            let i = nl
                .link_index("eth0")?
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
            nl.add_address(i, addr, 16)?;
            nl.set_up(i)?;
            nl.add_default_route(Ipv4Addr::new(10, 201, 0, 1))
        })?;
        Ok(())
    }

    /// A second process joins `c` (cgroup leaves, then the six namespaces):
    /// its milliseconds, measured in the joining child.
    pub fn join(&self, c: &FloorContainer) -> anyhow::Result<f64> {
        let (r, w) = nix::unistd::pipe()?;
        match sys::fork()? {
            Forked::Child => {
                drop(r);
                let t = Instant::now();
                let ok = (|| -> anyhow::Result<()> {
                    let me = std::process::id().to_string();
                    for g in &c.groups {
                        write(&g.join("procs"), "cgroup.procs", &me)?;
                    }
                    c.ns.join_all()?;
                    Ok(())
                })();
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let mut w = fs::File::from(w);
                let _ = match ok {
                    Ok(()) => write!(w, "{ms}"),
                    Err(e) => write!(w, "ERR {e:#}"),
                };
                sys::exit_now(0)
            }
            Forked::Parent(pid) => {
                drop(w);
                let mut s = String::new();
                let _ = fs::File::from(r).read_to_string(&mut s);
                let _ = nix::sys::wait::waitpid(pid, None);
                s.parse().map_err(|_| anyhow!("floor join: {s}"))
            }
        }
    }

    /// Kills, reaps and removes `c`.
    pub fn destroy(&self, c: FloorContainer) -> anyhow::Result<()> {
        kill(c.init, Signal::SIGKILL)?;
        nix::sys::wait::waitpid(c.init, None)?;
        drop(c.ns);
        nft::delete(&c.user)
            .map_err(|e| anyhow!("deleting the floor tables of {}: {e}", c.user))?;
        remove_groups(&c.groups);
        let left: Vec<_> = c.groups.iter().filter(|g| g.exists()).collect();
        anyhow::ensure!(left.is_empty(), "floor cgroups left: {left:?}");
        Ok(())
    }

    /// The scratch staging directories (empty after every teardown).
    pub fn cleanup(&self) {
        let _ = fs::remove_dir_all(&self.scratch);
        for (parent, _) in &self.parents {
            let _ = fs::remove_dir(parent.join(WARM));
        }
    }

    /// One cgroup migration (a child of the bench into a group of the
    /// bench's own), so that the next start measured, whichever kind it is,
    /// finds the kernel's `cgroup_threadgroup_rwsem` out of its idle state:
    /// the first migration after a quiet spell waits an RCU grace period
    /// (5–17 ms here; the rwsem's `rcu_sync` idles again 1–2 grace periods
    /// after the last writer), and without this the round's order decided
    /// which of the three paid it. A start whose own migrations lie farther
    /// apart than that still pays one: that is its own.
    pub fn warm_migrations(&self) -> anyhow::Result<()> {
        let Some((parent, _)) = self.parents.iter().find(|(_, cpuset)| !cpuset) else {
            return Ok(());
        };
        let g = parent.join(WARM);
        if !g.exists() {
            fs::create_dir(&g).with_context(|| format!("mkdir {}", g.display()))?;
        }
        match sys::fork()? {
            Forked::Child => {
                let ok = write(&g, "cgroup.procs", &std::process::id().to_string()).is_ok();
                sys::exit_now(if ok { 0 } else { 1 })
            }
            Forked::Parent(pid) => {
                let st = nix::sys::wait::waitpid(pid, None)?;
                anyhow::ensure!(
                    st == nix::sys::wait::WaitStatus::Exited(pid, 0),
                    "moving a child into {}: {st:?}",
                    g.display()
                );
                Ok(())
            }
        }
    }
}

/// The group [`Floor::warm_migrations`] moves a child into.
const WARM: &str = "warm";

fn copy_down(from: &Path, to: &Path, files: &[&str]) -> anyhow::Result<()> {
    for f in files {
        let v = fs::read_to_string(from.join(f))
            .with_context(|| format!("reading {}/{f}", from.display()))?;
        write(to, f, v.trim())?;
    }
    Ok(())
}

fn remove_groups(groups: &[PathBuf]) {
    for g in groups {
        for d in [g.join("procs"), g.clone()] {
            for _ in 0..200 {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

fn child_setup(f: &Floor, staging: &Path, go: OwnedFd) -> anyhow::Result<()> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut b = [0u8; 1];
    anyhow::ensure!(fs::File::from(go).read(&mut b)? == 1, "not placed");
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)?;
    let none = None::<&str>;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    mount(
        Some("floor"),
        staging,
        Some("tmpfs"),
        nosuid,
        Some("size=1g,mode=0755"),
    )?;
    for d in ["upper", "work", "root"] {
        fs::create_dir(staging.join(d))?;
    }
    let root = staging.join("root");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        f.lower.display(),
        staging.join("upper").display(),
        staging.join("work").display()
    );
    mount(
        Some("floor"),
        &root,
        Some("overlay"),
        nosuid,
        Some(data.as_str()),
    )?;
    for d in ["run", "tmp"] {
        let p = root.join(d);
        fs::create_dir_all(&p)?;
        mount(
            Some("tmpfs"),
            &p,
            Some("tmpfs"),
            nosuid,
            Some("mode=1777,size=1g"),
        )?;
    }
    mount(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        nosuid | MsFlags::MS_NOEXEC,
        none,
    )?;
    mount(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        nosuid | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        none,
    )?;
    let dev = root.join("dev");
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755,size=64k"),
    )?;
    for (name, major, minor) in NODES {
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(dev.join(d))?;
    }
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        nosuid | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=64m"),
    )?;
    nix::unistd::chdir(&root)?;
    nix::unistd::pivot_root(".", ".")?;
    umount2(".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")?;
    nix::unistd::sethostname("floor")?;
    sys::link_up("lo")?;
    nix::unistd::setgroups(&[Gid::from_raw(f.gid)])?;
    nix::unistd::setresgid(
        Gid::from_raw(f.gid),
        Gid::from_raw(f.gid),
        Gid::from_raw(f.gid),
    )?;
    nix::unistd::setresuid(
        Uid::from_raw(f.uid),
        Uid::from_raw(f.uid),
        Uid::from_raw(f.uid),
    )?;
    Ok(())
}

/// PID 1 of a floor container: reaps until killed.
fn init_loop() -> ! {
    loop {
        match nix::sys::wait::wait() {
            Ok(_) => continue,
            Err(_) => {
                nix::unistd::pause();
            }
        }
    }
}
