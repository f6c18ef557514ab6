//! The keeper's start, phase by phase: its own cgroup, what a crashed
//! predecessor left, the template, the /dev/log proxy, the user's cgroup,
//! the container, the network, the socket.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hutch_policy::{Account, Decision, Policy, UserPolicy};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::state::State;
use super::{logproxy, make_private_dir, now_unix, Keeper};
use crate::cgroup::{self, CgroupRoot};
use crate::container::{self, ContainerSpec};
use crate::error::chain;
use crate::ns::Namespace;
use crate::paths::{self, UserPaths};
use crate::rootfs::RootfsSpec;
use crate::template::TemplateStore;
use crate::{account, sys};

/// Converts the policy's limits into the cgroup layer's, finding each I/O
/// device's major:minor, with the container's device allow-list.
pub fn cgroup_limits(l: &hutch_policy::Limits) -> Result<cgroup::Limits, String> {
    let mut io = Vec::new();
    for d in &l.io {
        let md = fs::metadata(&d.device)
            .map_err(|e| format!("I/O limit on {}: {e}", d.device.display()))?;
        use std::os::unix::fs::MetadataExt;
        let rdev = md.rdev();
        if rdev == 0 {
            return Err(format!(
                "I/O limit on {}: not a block device",
                d.device.display()
            ));
        }
        io.push(cgroup::IoDeviceLimit {
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
            read_bps: d.read_bps,
            write_bps: d.write_bps,
            read_iops: d.read_iops,
            write_iops: d.write_iops,
        });
    }
    Ok(cgroup::Limits {
        memory_max: l.memory_max,
        memory_high: l.memory_high,
        swap_max: l.swap_max,
        cpu_max: l.cpu.map(|c| (c.quota_us, c.period_us)),
        cpu_weight: l.cpu_weight,
        pids_max: l.pids_max,
        io,
        io_weight: l.io_weight,
        devices: Some(container_devices()),
    })
}

/// The devices a container may use (v1 devices cgroup, a second line behind
/// the container's own /dev, nodev everywhere else and no CAP_MKNOD): the
/// nodes of its /dev (null zero full random urandom tty), ptmx and the pts.
pub fn container_devices() -> Vec<cgroup::DeviceRule> {
    let c = |major, minor| cgroup::DeviceRule::char(major, minor, "rwm");
    vec![
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(2)),
        c(136, None),
    ]
}

impl Keeper {
    pub(super) fn start(config: &Path, user: &str, service: &str) -> Result<Keeper, String> {
        let policy = Policy::load(config).map_err(|e| format!("policy: {e}"))?;
        let host = policy.host().clone();
        let account = account::lookup(user).map_err(|e| format!("account: {e}"))?;
        let up = match policy.resolve(&account, service) {
            Decision::Confine(p) => *p,
            Decision::Exempt(why) => return Err(format!("policy: {user} is not confined ({why})")),
            Decision::Refuse(why) => return Err(format!("policy: {why}")),
        };
        let paths = UserPaths::new(&host, user);
        make_private_dir(&paths.dir)
            .map_err(|e| format!("creating {}: {e}", paths.dir.display()))?;

        // 1. hutch's own cgroup for the keeper (and so for the template's memory).
        let root = CgroupRoot::open(&host.cgroup_root).map_err(|e| format!("cgroup: {e}"))?;
        let keepers = root
            .create(paths::KEEPER_CGROUP, &cgroup::Limits::default())
            .map_err(|e| format!("cgroup: {e}"))?;
        keepers
            .attach(std::process::id() as i32)
            .map_err(|e| format!("cgroup: moving the keeper: {e}"))?;

        // 2. What a crashed predecessor left.
        let rel = paths::user_cgroup(user);
        if let Some(stale) = root.existing(&rel) {
            sys::syslog(
                libc::LOG_NOTICE,
                &format!("{user}: removing the cgroup a previous keeper left"),
            );
            stale
                .kill_all()
                .map_err(|e| format!("cleaning the previous container: {e}"))?;
            stale
                .remove()
                .map_err(|e| format!("cleaning the previous container: {e}"))?;
        }
        let _ = fs::remove_file(paths.socket());

        // 3. The template.
        let store = TemplateStore::new(&host.lib_dir, &host.run_dir);
        // Pinned until state.json names the generation: a teardown elsewhere
        // must not unload it meanwhile (TemplateStore::release waits on the pin).
        let (loaded, pin) = store
            .ensure_loaded_pinned(&up.template)
            .map_err(|e| format!("template: {e}"))?;

        // 3b. The container's /dev/log: the keeper's proxy to the host's syslog.
        let log = logproxy::LogProxy::bind(
            &paths.dir.join(logproxy::SOCKET_NAME),
            user,
            Path::new("/dev/log"),
        )
        .map_err(|e| {
            format!(
                "binding {}: {e}",
                paths.dir.join(logproxy::SOCKET_NAME).display()
            )
        })?;

        // 4. The user's cgroup, limits applied before anything runs in it.
        let limits = cgroup_limits(&up.limits).map_err(|e| format!("cgroup: {e}"))?;
        // A controller the host lacks: `strict` refuses the login naming it,
        // otherwise one warning and the rest applies.
        let (cg, warnings) = root
            .create_with(&rel, &limits, up.limits.strict)
            .map_err(|e| format!("cgroup: {e}"))?;
        for w in warnings {
            sys::syslog(libc::LOG_WARNING, &format!("{user}: {w}"));
        }

        // 5. The container.
        let staging = paths.staging();
        make_private_dir(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
        let mut spec = ContainerSpec {
            rootfs: rootfs_spec(&account, &up, &loaded.path, &staging),
        };
        spec.rootfs.syslog_socket = log.path().to_path_buf();
        spec.rootfs.resolv_conf = crate::net::resolv_conf(&host, &up.network);
        let container = match container::spawn(&spec, |pid| {
            cg.attach(pid.as_raw()).map_err(|e| e.to_string())
        }) {
            Ok(c) => c,
            Err(e) => {
                let _ = cg.kill_all();
                let _ = cg.remove();
                let _ = fs::remove_dir(&staging);
                return Err(format!("container: {}", chain(&e)));
            }
        };

        // 5b. The network (veth, lease, firewall tables), from the keeper's own netns.
        let netns = container.namespaces.get(Namespace::Net);
        let net = match crate::net::setup(&host, user, &up.network, netns) {
            Ok(n) => n,
            Err(e) => {
                let _ = cg.kill_all();
                let _ = cg.remove();
                let _ = fs::remove_dir(&staging);
                return Err(format!("network: {e}"));
            }
        };
        if let Some(n) = &net {
            let steps: Vec<String> = n
                .steps
                .iter()
                .map(|(s, d)| format!("{s} {:.1}", d.as_secs_f64() * 1000.0))
                .collect();
            sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{user}: network up in {:.1} ms (address {}, port {}; ms: {})",
                    n.took.as_secs_f64() * 1000.0,
                    n.addr,
                    n.port,
                    steps.join(", ")
                ),
            );
        }

        // 6. The socket.
        let listener = UnixListener::bind(paths.socket())
            .map_err(|e| format!("binding {}: {e}", paths.socket().display()));
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = cg.kill_all();
                let _ = cg.remove();
                if let Some(n) = &net {
                    n.release(Some(netns));
                }
                return Err(e);
            }
        };
        let _ = fs::set_permissions(paths.socket(), fs::Permissions::from_mode(0o600));

        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("blocking signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;

        let state = State {
            user: account.name.clone(),
            uid: account.uid,
            keeper_pid: std::process::id() as i32,
            init_pid: container.init.as_raw(),
            started: now_unix(),
            template: loaded.name.clone(),
            generation: loaded.generation,
            hostname: up.hostname.clone(),
            cgroups: cg.dirs(),
            sessions: Vec::new(),
        };
        let keeper = Keeper {
            account,
            policy: up,
            paths,
            cgroup: cg,
            keepers,
            container,
            net,
            log: Some(log),
            listener: Some(listener),
            signals,
            sessions: Vec::new(),
            next_id: 1,
            idle_since: Some(Instant::now()),
            state,
            store,
        };
        keeper.write_state();
        drop(pin);
        Ok(keeper)
    }
}

/// The root filesystem of `account`'s container.
fn rootfs_spec(account: &Account, up: &UserPolicy, lower: &Path, staging: &Path) -> RootfsSpec {
    let groups = account::group_ids(account);
    // The login shell (hutch-shell) is bound at its host path, unless the
    // template has a file there already (a plain /bin/bash login shell).
    let mut host_files = Vec::new();
    if account.shell.is_absolute()
        && fs::symlink_metadata(
            lower.join(account.shell.strip_prefix("/").unwrap_or(&account.shell)),
        )
        .is_err()
    {
        host_files.push(account.shell.clone());
    }
    RootfsSpec {
        lower: lower.to_path_buf(),
        staging: staging.to_path_buf(),
        writable_size: up.limits.writable_size,
        user: account.name.clone(),
        uid: account.uid,
        gid: account.gid,
        groups,
        home: account.home.clone(),
        inner_shell: up.shell.clone(),
        host_files,
        mounts: up.mounts.clone(),
        hostname: up.hostname.clone(),
        syslog_socket: PathBuf::from("/dev/log"),
        marker: String::new(),
        seccomp: up.seccomp.clone(),
        resolv_conf: None,
    }
}
