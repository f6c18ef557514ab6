//! The keeper's start, phase by phase ([`StartError`]): the policy, its own
//! cgroup, what a crashed predecessor left, the template, the /dev/log
//! proxy, the user's cgroup, the container, the network, the socket. A
//! phase that fails undoes what the ones before it made (`HalfMade`), so
//! that a login that is refused leaves no cgroup, process, address or
//! socket behind.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hutch_policy::{Account, Decision, Policy, UserPolicy};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::proto::Refusal;
use super::serve::Sessions;
use super::state::State;
use super::{logproxy, make_private_dir, now_unix, Keeper};
use crate::cgroup::{self, Cgroup, CgroupError, CgroupRoot};
use crate::container::{self, ContainerError, ContainerSpec};
use crate::net::{NetError, NetHandle};
use crate::ns::Namespace;
use crate::paths::{self, UserPaths};
use crate::rootfs::RootfsSpec;
use crate::template::{TemplateError, TemplateStore};
use crate::{account, sys};

/// The phase of the start that failed, with its cause as the source.
/// `Display` is what the login that started the keeper reports (`ERR` on
/// the ready pipe), with [`crate::error::chain`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("policy")]
    Policy(#[source] hutch_policy::PolicyError),
    #[error("account")]
    Account(#[source] account::AccountError),
    #[error("policy: {user} is not confined ({why})")]
    NotConfined { user: String, why: String },
    #[error("policy: {0}")]
    Refused(String),
    #[error("creating {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// hutch's own cgroup, or the user's.
    #[error("cgroup")]
    Cgroup(#[source] CgroupError),
    #[error("cgroup: moving the keeper")]
    MoveKeeper(#[source] CgroupError),
    #[error("cgroup")]
    Limits(#[source] LimitsError),
    #[error("cleaning the previous container")]
    Stale(#[source] CgroupError),
    #[error("template")]
    Template(#[source] TemplateError),
    #[error("binding {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("persistent layer")]
    Layer(#[source] crate::layer::LayerError),
    #[error("container")]
    Container(#[source] ContainerError),
    #[error("network")]
    Network(#[source] NetError),
    #[error("blocking signals")]
    Signals(#[source] nix::Error),
    #[error("signalfd")]
    SignalFd(#[source] nix::Error),
    /// The policy's seccomp profile file (read on the host for the marker).
    #[error("seccomp")]
    Seccomp(#[source] crate::seccomp::SeccompError),
}

impl StartError {
    /// Whether the login is refused for what the host lacks, in words the
    /// user may see, rather than failing: a cgroup controller is missing
    /// (under `strict`, any one a limit needs; otherwise one without which
    /// nothing can be applied, see [`cgroup::CgroupRoot::create_with`]).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            StartError::Cgroup(CgroupError::MissingController { .. }) => {
                Some(Refusal::MissingController)
            }
            _ => None,
        }
    }
}

/// A policy limit the cgroup layer cannot take.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("I/O limit on {}", path.display())]
    Device {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("I/O limit on {}: not a block device", path.display())]
    NotBlock { path: PathBuf },
}

/// Converts the policy's limits into the cgroup layer's, finding each I/O
/// device's major:minor, with the container's device allow-list.
pub fn cgroup_limits(l: &hutch_policy::Limits) -> Result<cgroup::Limits, LimitsError> {
    let mut io = Vec::new();
    for d in &l.io {
        let md = fs::metadata(&d.device).map_err(|source| LimitsError::Device {
            path: d.device.clone(),
            source,
        })?;
        use std::os::unix::fs::MetadataExt;
        let rdev = md.rdev();
        if rdev == 0 {
            return Err(LimitsError::NotBlock {
                path: d.device.clone(),
            });
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
        cpus: None,
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

/// What [`Keeper::start`] has made of the container so far. Dropped before
/// [`HalfMade::done`] (a later phase failed), it undoes it in the order of
/// the teardown: everything in the user's cgroup killed (the init with it),
/// the cgroup removed, the network released, the staging directory and the
/// keeper's socket removed.
struct HalfMade<'a> {
    cgroup: &'a Cgroup,
    staging: Option<PathBuf>,
    net: Option<(&'a NetHandle, BorrowedFd<'a>)>,
    socket: Option<PathBuf>,
    armed: bool,
}

impl<'a> HalfMade<'a> {
    fn new(cgroup: &'a Cgroup) -> Self {
        HalfMade {
            cgroup,
            staging: None,
            net: None,
            socket: None,
            armed: true,
        }
    }

    /// Every phase succeeded: nothing is undone.
    fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for HalfMade<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = self.cgroup.kill_all();
        let _ = self.cgroup.remove();
        if let Some((net, netns)) = self.net {
            net.release(Some(netns));
        }
        if let Some(dir) = &self.staging {
            let _ = fs::remove_dir(dir);
        }
        if let Some(sock) = &self.socket {
            let _ = fs::remove_file(sock);
        }
    }
}

impl Keeper {
    pub(super) fn start(
        config: &Path,
        policy_cache: Option<&Path>,
        user: &str,
        service: &str,
        handed: Option<OwnedFd>,
        spare: super::serve::Spare,
    ) -> Result<Keeper, StartError> {
        let policy = load_policy(config, policy_cache).map_err(StartError::Policy)?;
        let host = policy.host().clone();
        let (account, group_ids) = take_account(handed, user)?;
        // Keyed by the NSS canonical name ([`account::lookup`]), whatever
        // spelling started us.
        let canonical = account.name.clone();
        let user = canonical.as_str();
        let up = match policy.resolve(&account, service) {
            Decision::Confine(p) => *p,
            Decision::Exempt(why) => {
                return Err(StartError::NotConfined {
                    user: user.to_string(),
                    why,
                })
            }
            Decision::Refuse(why) => return Err(StartError::Refused(why)),
        };
        // A file profile is read here, on the host; its names go to the
        // container's marker (nothing inside reads the file).
        let seccomp_deny =
            crate::seccomp::profile_names(&up.seccomp).map_err(StartError::Seccomp)?;
        let paths = UserPaths::new(&host, user);
        crate::timing::mark("policy");
        private_dir(&paths.dir)?;

        // 1. hutch's own cgroup for the keeper (and so for the template's memory).
        let root = CgroupRoot::open(&host.cgroup_root).map_err(StartError::Cgroup)?;
        let keepers = root
            .create(paths::KEEPER_CGROUP, &cgroup::Limits::default())
            .map_err(StartError::Cgroup)?;
        keepers
            .attach(std::process::id() as i32)
            .map_err(StartError::MoveKeeper)?;
        crate::timing::mark("keeper_cgroup");

        // 2. What a crashed predecessor left.
        let rel = paths::user_cgroup(user);
        if let Some(stale) = root.existing(&rel) {
            sys::syslog(
                libc::LOG_NOTICE,
                &format!("{user}: removing the cgroup a previous keeper left"),
            );
            stale.kill_all().map_err(StartError::Stale)?;
            stale.remove().map_err(StartError::Stale)?;
        }
        let _ = fs::remove_file(paths.socket());
        crate::timing::mark("stale");

        // 3. The template.
        let store = TemplateStore::new(&host.lib_dir, &host.run_dir);
        // Pinned until state.json names the generation: a teardown elsewhere
        // must not unload it meanwhile (TemplateStore::release waits on the pin).
        let (loaded, pin) = store
            .ensure_loaded_pinned(&up.template)
            .map_err(StartError::Template)?;
        crate::timing::mark("template");

        // 3b. The container's /dev/log: the keeper's proxy to the host's syslog.
        let log_path = paths.dir.join(logproxy::SOCKET_NAME);
        let log =
            logproxy::LogProxy::bind(&log_path, user, Path::new("/dev/log")).map_err(|source| {
                StartError::Bind {
                    path: log_path.clone(),
                    source,
                }
            })?;

        // 3c. `hutch status`'s socket, bound into the container.
        let status_path = paths.dir.join(super::status::SOCKET_NAME);
        let status =
            super::status::StatusServer::bind(&status_path).map_err(|source| StartError::Bind {
                path: status_path.clone(),
                source,
            })?;

        crate::timing::mark("sockets");

        // 4. The user's cgroup, limits applied before anything runs in it;
        // its CPUs (`cpus = "auto"`) where the fewest other containers run.
        let mut limits = cgroup_limits(&up.limits).map_err(StartError::Limits)?;
        let cpus = crate::figures::container_cpus(&root, &up.limits);
        limits.cpus = cpus.as_ref().map(crate::cpus::format_list);
        // A controller the host lacks: `strict` refuses the login naming it,
        // otherwise one warning and the rest applies.
        let (cg, warnings) = root
            .create_with(&rel, &limits, up.limits.strict)
            .map_err(StartError::Cgroup)?;
        // Declared before the guard, so that they outlive it when a phase
        // fails (locals drop in reverse order; clippy does not see why).
        let container;
        #[allow(clippy::needless_late_init)]
        let net;
        let mut undo = HalfMade::new(&cg);
        for w in warnings {
            sys::syslog(libc::LOG_WARNING, &format!("{user}: {w}"));
        }
        crate::timing::mark("cgroup");

        // 4b. A persistent layer: the user's image, once the previous
        // container's mount of it has gone, mounted (detached) for the init
        // to attach. Dropped unattached (a later phase failed), it unmounts.
        let layer = match up.writable {
            hutch_policy::WritableMode::Ephemeral => None,
            hutch_policy::WritableMode::Persistent => {
                let t = Instant::now();
                let l = crate::layer::attach(&host.lib_dir, user, up.limits.writable_size)
                    .map_err(StartError::Layer)?;
                sys::syslog(
                    libc::LOG_INFO,
                    &format!(
                        "{user}: persistent layer {} {} on {} in {:.1} ms (ms: {}){}",
                        l.image.path.display(),
                        if l.image.created { "made" } else { "mounted" },
                        l.device.display(),
                        t.elapsed().as_secs_f64() * 1000.0,
                        l.steps
                            .iter()
                            .map(|(s, d)| format!("{s} {:.1}", d.as_secs_f64() * 1000.0))
                            .collect::<Vec<_>>()
                            .join(", "),
                        l.image
                            .note
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    ),
                );
                Some(l)
            }
        };

        crate::timing::mark("layer");

        // 5. The container.
        let staging = paths.staging();
        private_dir(&staging)?;
        undo.staging = Some(staging.clone());
        let mut spec = ContainerSpec {
            rootfs: rootfs_spec(&account, group_ids, &up, &loaded.path, &staging),
        };
        spec.rootfs.layer_mount = layer.as_ref().map(|l| l.mount.clone());
        spec.rootfs.syslog_socket = log.path().to_path_buf();
        spec.rootfs.seccomp_deny = seccomp_deny;
        spec.rootfs.status_socket = Some(status.path().to_path_buf());
        if let Some(tool) = status_tool() {
            spec.rootfs
                .tools
                .push((tool, PathBuf::from(paths::STATUS_TOOL)));
        }
        let lxcfs = host.lxcfs.as_deref().and_then(crate::figures::live_lxcfs);
        spec.rootfs.figures = crate::figures::figures(lxcfs, cpus.as_ref());
        spec.rootfs.resolv_conf = crate::net::resolv_conf(&host, &up.network);
        crate::timing::mark("spec");
        // 5b. The network (veth, lease, firewall tables), from the keeper's
        // own netns, made while the init builds its root (the keeper would
        // only wait for its report otherwise): in the init's netns by
        // /proc/PID/ns/net, the same namespace `Namespaces::open` finds.
        let mut early: Option<(OwnedFd, Result<Option<NetHandle>, NetError>)> = None;
        let spawned = container::spawn(
            &spec,
            |pid| cg.attach(pid.as_raw()),
            |pid| {
                let ns = fs::File::open(format!("/proc/{}/ns/net", pid.as_raw()));
                if let Ok(ns) = ns {
                    let ns = OwnedFd::from(ns);
                    let made = crate::net::setup(&host, user, &up.network, ns.as_fd());
                    early = Some((ns, made));
                }
            },
        );
        container = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some((ns, Ok(Some(n)))) = &early {
                    n.release(Some(ns.as_fd()));
                }
                return Err(StartError::Container(e));
            }
        };
        // Attached in the container's mount namespace now: it goes with it
        // (at the keeper's exit, which closes the namespaces' last fds).
        drop(spec);
        drop(layer);
        crate::timing::mark("container");

        let netns = container.namespaces.get(Namespace::Net);
        net = match early {
            Some((_, made)) => made,
            // /proc/PID/ns/net could not be opened: after the report, then.
            None => crate::net::setup(&host, user, &up.network, netns),
        }
        .map_err(StartError::Network)?;
        undo.net = net.as_ref().map(|n| (n, netns));
        crate::timing::mark("network");
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
        let listener = UnixListener::bind(paths.socket()).map_err(|source| StartError::Bind {
            path: paths.socket(),
            source,
        })?;
        undo.socket = Some(paths.socket());
        let _ = fs::set_permissions(paths.socket(), fs::Permissions::from_mode(0o600));

        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block().map_err(StartError::Signals)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(StartError::SignalFd)?;
        undo.done();
        crate::timing::mark("socket");

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
            cpus: cpus.as_ref().map(crate::cpus::format_list),
            sessions: Vec::new(),
            notices: 0,
            last_notice: None,
            start_marks: Vec::new(),
        };
        let watch = super::notice::Watch::new(&cg, &up.limits);
        let mut keeper = Keeper {
            account,
            policy: up,
            paths,
            cgroup: cg,
            keepers,
            container,
            net,
            log: Some(log),
            status: Some(status),
            watch,
            listener: Some(listener),
            signals,
            sessions: Sessions::new(Instant::now()),
            state,
            store,
            spare,
            leaf_procs: None,
        };
        crate::timing::mark("state");
        keeper.state.start_marks = crate::timing::take();
        keeper.write_state();
        drop(pin);
        Ok(keeper)
    }
}

/// The `hutch` command installed beside the keeper (`/usr/libexec/hutch/`
/// in the package, the build's target directory in the tests), if any.
fn status_tool() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let tool = exe.with_file_name("hutch");
    tool.is_file().then_some(tool)
}

/// [`make_private_dir`], failing as a start phase.
fn private_dir(path: &Path) -> Result<(), StartError> {
    make_private_dir(path).map_err(|source| StartError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

/// The account the keeper is for: the one its starter handed over
/// (`--account-fd`, start mark `account_handed`), else looked up through NSS
/// (`account_looked_up`), with its groups' ids. A handed account that cannot
/// be read or is for another user is not used (logged; looked up instead).
fn take_account(
    handed: Option<OwnedFd>,
    user: &str,
) -> Result<(Account, Vec<(String, u32)>), StartError> {
    if let Some(fd) = handed {
        match account::Handed::read(fd, user) {
            Ok(h) => {
                crate::timing::mark("account_handed");
                return Ok(h.into_parts());
            }
            Err(e) => sys::syslog(
                libc::LOG_WARNING,
                &format!(
                    "{user}: looking the account up: {}",
                    crate::error::chain(&e)
                ),
            ),
        }
    }
    let found = account::lookup_with_ids(user).map_err(StartError::Account)?;
    crate::timing::mark("account_looked_up");
    Ok(found)
}

/// The root filesystem of `account`'s container; `groups`: each group's
/// name and id, the primary first.
fn rootfs_spec(
    account: &Account,
    groups: Vec<(String, u32)>,
    up: &UserPolicy,
    lower: &Path,
    staging: &Path,
) -> RootfsSpec {
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
        layer_mount: None,
        user: account.name.clone(),
        uid: account.uid,
        gid: account.gid,
        groups,
        home: account.home.clone(),
        inner_shell: up.shell.clone(),
        host_files,
        tools: Vec::new(),
        status_socket: None,
        mounts: up.mounts.clone(),
        hostname: up.hostname.clone(),
        syslog_socket: PathBuf::from("/dev/log"),
        marker: String::new(),
        seccomp: up.seccomp.clone(),
        seccomp_deny: Vec::new(),
        figures: Default::default(),
        ptys_max: up.limits.ptys_max,
        resolv_conf: None,
    }
}

/// The policy, through the PAM module's cache when the starter named it
/// (the module has just loaded the same files through it, so a login's
/// second parse is a cache read), else parsed. Its start mark says which:
/// `policy_cached` or `policy_parsed`.
fn load_policy(config: &Path, cache: Option<&Path>) -> Result<Policy, hutch_policy::PolicyError> {
    let (policy, used) = match cache {
        Some(dir) => Policy::load_cached_traced(config, dir),
        None => (Policy::load(config), hutch_policy::CacheUse::Parsed),
    };
    crate::timing::mark(if used == hutch_policy::CacheUse::Hit {
        "policy_cached"
    } else {
        "policy_parsed"
    });
    policy
}
