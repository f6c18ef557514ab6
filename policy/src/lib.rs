//! hutch-policy: the policy file (`/etc/hutch/hutch.toml` plus drop-ins), its
//! validation, and the resolution of one account's effective policy.
//!
//! Pure: nothing here touches the kernel; the only I/O is reading the files.
//! The PAM module, hutch-keeper and hutchctl all call the same code, so
//! `hutchctl check` judges a file exactly as a login would.

mod cache;
mod error;
pub mod net;
mod raw;
mod resolve;
pub mod units;
mod validate;
pub mod values;
mod wire;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cache::{cache_path, fuzz_cache_round_trip, CacheUse, DEFAULT_CACHE_DIR};
pub use error::{Diagnostic, Loc, Severity};
pub use net::{EgressRule, Ipv4Net, NetHost, Proto};
pub use raw::{HOST_KEYS, RULE_KEYS, TOP_KEYS};
pub use resolve::{
    default_memory_high, Entry, Explanation, Origin, BUILTIN_SERVICES, DEFAULT_CONNTRACK,
    DEFAULT_SHELL, DEFAULT_TEMPLATE, DEFAULT_WRITABLE_SIZE,
};
pub use units::OnLogout;
pub use values::{CpusMode, ServiceMode, WritableMode};

use error::Source;
use raw::Model;

/// The default place of the policy file.
pub const DEFAULT_CONFIG: &str = "/etc/hutch/hutch.toml";

/// An account as the host's NSS reports it (looked up by the runtime; the
/// policy never calls NSS itself, so tests can make accounts up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Names of all groups the account is in, the primary group first.
    pub groups: Vec<String>,
    pub home: PathBuf,
    /// The login shell from the passwd entry (for confined users: hutch-shell).
    pub shell: PathBuf,
}

/// Host-wide settings: where hutch keeps its files and cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    /// Runtime state: `<run_dir>/users/<user>/`, `<run_dir>/template/<name>/<gen>/`.
    /// Default `/run/hutch`.
    pub run_dir: PathBuf,
    /// Persistent state: `<lib_dir>/templates/<name>/`. Default `/var/lib/hutch`.
    pub lib_dir: PathBuf,
    /// The cgroup under which hutch makes its own. Absolute (`/hutch`, the
    /// default) means that path in every hierarchy; relative (`hutch-ci`)
    /// means relative to the cgroup of the process that starts the keeper,
    /// in each hierarchy (what tests and CI use).
    pub cgroup_root: String,
    /// `[host.net]`: bridge, pool, gateway, DNS, NAT uplink, lease file.
    pub net: NetHost,
    /// How long `hutchctl metrics --record` keeps usage samples
    /// (`usage_retention`, default [`DEFAULT_USAGE_RETENTION`]); zero keeps none.
    pub usage_retention: Duration,
    /// The usage history's SQLite file (`usage_db`, default `<lib_dir>/usage.db`).
    pub usage_db: PathBuf,
    /// The least time between two usage samples of the running containers
    /// (`usage_interval`, default [`DEFAULT_USAGE_INTERVAL`]); zero: every run.
    pub usage_interval: Duration,
    /// Where lxcfs is mounted (`lxcfs`, default [`DEFAULT_LXCFS`]); `None`
    /// (`"none"`): never bind it in. Used only when a live lxcfs is there.
    pub lxcfs: Option<PathBuf>,
}

/// Where Debian's lxcfs.service mounts lxcfs.
pub const DEFAULT_LXCFS: &str = "/var/lib/lxcfs";

/// How often usage is sampled at most unless `[host] usage_interval` says otherwise: 1 minute.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// How long usage samples are kept unless `[host] usage_retention` says otherwise: 30 days.
pub const DEFAULT_USAGE_RETENTION: Duration = Duration::from_secs(30 * 86400);

impl HostSettings {
    /// The sticky lease file: `[host.net] leases`, or `<lib_dir>/leases`.
    pub fn leases_file(&self) -> PathBuf {
        self.net
            .leases
            .clone()
            .unwrap_or_else(|| self.lib_dir.join("leases"))
    }
}

/// One bind mount from the policy, with `{user}`, `{uid}`, `{home}` already
/// substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// CPU quota: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// A per-device I/O limit; the device is named by path (`/dev/vda`), the
/// runtime finds major:minor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoLimit {
    pub device: PathBuf,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

/// Resource limits of one user's container. `None` = no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub swap_max: Option<u64>,
    pub cpu: Option<CpuQuota>,
    pub cpu_weight: Option<u64>,
    /// `cpus`: the container's cpuset (`auto`: as many CPUs as `cpu` allows).
    pub cpus: CpusMode,
    pub pids_max: Option<u64>,
    pub io: Vec<IoLimit>,
    pub io_weight: Option<u64>,
    /// Size of the writable layer (tmpfs) in bytes.
    pub writable_size: u64,
    pub max_sessions: Option<u32>,
    /// Ptys the container's devpts may hold at once (`max=`); `None`:
    /// the kernel's own limit. The host's non-initial devpts instances
    /// share one pool (kernel.pty.max - kernel.pty.reserve, 3072 by
    /// default): without a bound one user takes them all.
    pub ptys_max: Option<u64>,
    /// Refuse the login when the host lacks a controller a limit needs
    /// (`strict = true`); by default the rest applies with one warning.
    pub strict: bool,
}

/// The network of a container (`network = ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// `"none"` or `"loopback"`: own network namespace with only `lo`.
    #[default]
    Loopback,
    /// `"veth"`: a veth pair, the host end on `[host.net] bridge`, the
    /// container end `eth0` with a leased address from the pool.
    Veth(Traffic),
    /// `"macvlan"`: a private-mode macvlan on `device`.
    Macvlan(DevicePolicy),
    /// `"vlan"`: VLAN `vlan_id` on `device`.
    Vlan(DevicePolicy),
    /// `"phys"`: `device` itself, given back at teardown.
    Phys(DevicePolicy),
}

/// The per-user part of a `macvlan`, `vlan` or `phys` network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePolicy {
    /// `net_device`.
    pub device: String,
    /// `vlan_id` (vlan only).
    pub vlan_id: u16,
    /// Egress lists and bandwidth, enforced inside the container's network
    /// namespace (these modes have no host port).
    pub traffic: Traffic,
}

/// What a container's traffic may do: the egress lists and the bandwidth
/// limits (`veth`: on the host's port; other modes: inside the container).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Traffic from the container to these is dropped (`egress_deny`).
    pub egress_deny: Vec<EgressRule>,
    /// When non-empty, traffic from the container to anything but these
    /// (and the gateway, and replies) is dropped (`egress_allow`);
    /// `egress_deny` is checked first.
    pub egress_allow: Vec<EgressRule>,
    /// Download limit (toward the container), bytes per second (`rate_in`).
    pub rate_in: Option<u64>,
    /// Upload limit (out of the container), bytes per second (`rate_out`).
    pub rate_out: Option<u64>,
    /// Connections the host's conntrack table may hold for the container
    /// at once (`conntrack`, `veth` only); `None`: unbounded.
    pub conntrack: Option<u64>,
}

/// Everything the runtime needs to build and run one user's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// Template name (`<lib_dir>/templates/<name>`).
    pub template: String,
    /// The shell hutch-shell execs inside the container (default `/bin/bash`).
    pub shell: PathBuf,
    /// Hostname inside the container, already substituted (pattern default
    /// `{user}`; characters a hostname cannot hold become `-`, cut at 64).
    pub hostname: String,
    pub limits: Limits,
    /// How long the container outlives its last session (0 = torn down at
    /// once). Always `on_logout.linger()`.
    pub linger: Duration,
    pub mounts: Vec<BindMount>,
    pub network: Network,
    /// What happens when the last session closes.
    pub on_logout: OnLogout,
    /// Ephemeral (tmpfs of `limits.writable_size`) or persistent
    /// (`<lib_dir>/users/<user>/`) writable layer.
    pub writable: WritableMode,
    /// The seccomp profile hutch-shell loads (`"default"`).
    pub seccomp: String,
    /// Whether a limit that acts (OOM kill, pids limit, CPU throttling) is
    /// told on the user's terminals; counted and kept for `hutch status`
    /// either way.
    pub notices: bool,
}

impl Default for UserPolicy {
    /// The built-in policy of a user no table mentions (hostname `user`).
    fn default() -> Self {
        UserPolicy {
            template: DEFAULT_TEMPLATE.into(),
            shell: DEFAULT_SHELL.into(),
            hostname: "user".into(),
            limits: Limits {
                writable_size: DEFAULT_WRITABLE_SIZE,
                ..Limits::default()
            },
            linger: Duration::ZERO,
            mounts: Vec::new(),
            network: Network::Loopback,
            on_logout: OnLogout::Kill,
            writable: WritableMode::Ephemeral,
            seccomp: "default".into(),
            notices: true,
        }
    }
}

/// What to do with one account's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not confined: the session proceeds on the host untouched. The string says why
    /// (`"root is never confined"`, `"users.bob: confine = false (FILE:LINE:COL)"`).
    Exempt(String),
    /// Confined: the session goes into the user's container.
    Confine(Box<UserPolicy>),
    /// Refused: the session must not open (e.g. a service that refuses confined users).
    Refuse(String),
}

/// A policy file that could not be read or is not valid. `Display` names the
/// file, line, column and key where one is known (`FILE:LINE:COL: KEY: what`),
/// one error a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PolicyError {
    pub message: String,
}

impl PolicyError {
    fn from_diagnostics(d: &[Diagnostic]) -> PolicyError {
        let lines: Vec<String> = d
            .iter()
            .filter(|x| x.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        PolicyError {
            message: lines.join("\n"),
        }
    }
}

/// Everything `hutchctl check` reports about a policy: the policy if it is
/// valid, and every error and warning found.
#[derive(Debug, Clone)]
pub struct Report {
    pub policy: Option<Policy>,
    /// The files read, main file first, then drop-ins in the order applied.
    pub files: Vec<PathBuf>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// Whether any diagnostic is a warning.
    pub fn has_warnings(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning)
    }
}

/// A parsed, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    host: HostSettings,
    /// Whole, or for a policy read from the cache, users and groups still encoded.
    model: cache::ModelCell,
    warnings: Vec<Diagnostic>,
    files: Vec<PathBuf>,
}

/// The drop-in directory of a main file: `hutch.d` beside `hutch.toml`
/// (generally `<stem>.d` beside `<stem>.toml`).
pub fn drop_in_dir(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map_or_else(|| "hutch".into(), |s| s.to_string_lossy().into_owned());
    main.with_file_name(format!("{stem}.d"))
}

/// The drop-ins of `main`: `*.toml` files (not starting with `.`) in
/// [`drop_in_dir`], in byte-wise order of their names. A missing directory has none.
pub fn drop_ins(main: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    drop_ins_in(&drop_in_dir(main))
}

/// The drop-ins in `dir`, chosen and ordered as [`drop_ins`] does.
pub fn drop_ins_in(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PolicyError {
                message: format!("listing drop-ins in {}: {e}", dir.display()),
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PolicyError {
            message: format!("listing drop-ins in {}: {e}", dir.display()),
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".toml") && !name.starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

impl Policy {
    /// Reads and validates `path` and its drop-ins (see [`drop_ins`]).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let report = Policy::check(path);
        report
            .policy
            .ok_or_else(|| PolicyError::from_diagnostics(&report.diagnostics))
    }

    /// [`Policy::load`] with the drop-ins of `dir` in place of the main
    /// file's own (see [`Policy::check_with_drop_ins`]).
    pub fn load_with_drop_ins(path: &Path, dir: &Path) -> Result<Policy, PolicyError> {
        let report = Policy::check_with_drop_ins(path, dir);
        report
            .policy
            .ok_or_else(|| PolicyError::from_diagnostics(&report.diagnostics))
    }

    /// Like [`Policy::load`], through the on-disk cache in `cache_dir` (see
    /// [`DEFAULT_CACHE_DIR`]): a cache whose key matches the identity of
    /// every source file is used, anything else is parsed and, when the
    /// sources are not too fresh, cached. What the PAM module calls at every
    /// login. Errors are exactly those of [`Policy::load`]; a cache that
    /// cannot be used or written is never an error.
    pub fn load_cached(path: &Path, cache_dir: &Path) -> Result<Policy, PolicyError> {
        cache::load_cached(path, cache_dir, cache::RACY).0
    }

    /// The policy that last loaded through the cache in `cache_dir`, even
    /// if `path` has changed (or broken) since: for exemptions only, while
    /// the policy cannot be loaded (see pam_hutch(8)). `None` when there is
    /// no usable cache.
    pub fn last_good(path: &Path, cache_dir: &Path) -> Option<Policy> {
        cache::last_good(path, cache_dir)
    }

    /// [`Policy::load_cached`], also saying whether the cache was used (benchmarks, tests).
    pub fn load_cached_traced(
        path: &Path,
        cache_dir: &Path,
    ) -> (Result<Policy, PolicyError>, CacheUse) {
        cache::load_cached(path, cache_dir, cache::RACY)
    }

    /// Parses and validates policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Policy, PolicyError> {
        Policy::from_sources(&[(text, origin)])
    }

    /// Parses texts as a main file followed by drop-ins, in that order.
    pub fn from_sources(sources: &[(&str, &Path)]) -> Result<Policy, PolicyError> {
        let report = Policy::check_sources(sources);
        report
            .policy
            .ok_or_else(|| PolicyError::from_diagnostics(&report.diagnostics))
    }

    /// Reads `path` and its drop-ins and reports every error and warning,
    /// including mount sources missing on this host. What `hutchctl check` prints.
    pub fn check(path: &Path) -> Report {
        Policy::check_with_drop_ins(path, &drop_in_dir(path))
    }

    /// [`Policy::check`] of `path` with the drop-ins of `dir` in place of
    /// its own: a drop-in directory staged for deployment, checked against
    /// the main file it will join (`hutchctl check --drop-ins DIR`). A
    /// missing `dir` is an error here (a staged directory must exist).
    pub fn check_with_drop_ins(path: &Path, dir: &Path) -> Report {
        let mut files = vec![path.to_path_buf()];
        let mut diagnostics = Vec::new();
        let listed = if dir != drop_in_dir(path) && !dir.is_dir() {
            Err(PolicyError {
                message: format!("drop-in directory {} does not exist", dir.display()),
            })
        } else {
            drop_ins_in(dir)
        };
        match listed {
            Ok(d) => files.extend(d),
            Err(e) => diagnostics.push(Diagnostic::error(None, "", e.message)),
        }
        let mut texts = Vec::new();
        for f in &files {
            match std::fs::read_to_string(f) {
                Ok(t) => texts.push(t),
                Err(e) => {
                    diagnostics.push(Diagnostic::error(
                        None,
                        "",
                        format!("reading policy {}: {e}", f.display()),
                    ));
                    texts.push(String::new());
                }
            }
        }
        let sources: Vec<(&str, &Path)> = texts
            .iter()
            .map(String::as_str)
            .zip(files.iter().map(PathBuf::as_path))
            .collect();
        let mut report = Policy::check_sources(&sources);
        if !diagnostics.is_empty() {
            report.policy = None;
            diagnostics.append(&mut report.diagnostics);
            report.diagnostics = diagnostics;
        }
        if let Some(p) = &report.policy {
            report
                .diagnostics
                .extend(validate::missing_mount_sources(p.model.get()));
        }
        report
    }

    /// Like [`Policy::check`] on texts (main first); reads nothing from disk.
    pub fn check_sources(sources: &[(&str, &Path)]) -> Report {
        let mut diagnostics = Vec::new();
        let mut model = Model::new();
        for (text, origin) in sources {
            let src = Source::new(text, origin);
            match Model::parse_file(&src) {
                Ok((m, mut d)) => {
                    diagnostics.append(&mut d);
                    model.overlay(m);
                }
                Err(d) => diagnostics.push(d),
            }
        }
        diagnostics.extend(validate::validate(&model));
        let files = sources
            .iter()
            .map(|(_, p)| p.to_path_buf())
            .collect::<Vec<_>>();
        let ok = !diagnostics.iter().any(|d| d.severity == Severity::Error);
        let policy = ok.then(|| Policy {
            host: HostSettings {
                run_dir: model
                    .run_dir
                    .as_ref()
                    .map_or("/run/hutch", |v| v.value.0.as_str())
                    .into(),
                lib_dir: model
                    .lib_dir
                    .as_ref()
                    .map_or("/var/lib/hutch", |v| v.value.0.as_str())
                    .into(),
                cgroup_root: model
                    .cgroup_root
                    .as_ref()
                    .map_or("/hutch".to_string(), |v| v.value.0.clone()),
                net: model
                    .net
                    .as_ref()
                    .map_or_else(NetHost::default, |v| v.value.clone()),
                usage_retention: model
                    .usage_retention
                    .as_ref()
                    .map_or(DEFAULT_USAGE_RETENTION, |v| v.value.0),
                usage_db: model.usage_db.as_ref().map_or_else(
                    || {
                        Path::new(
                            model
                                .lib_dir
                                .as_ref()
                                .map_or("/var/lib/hutch", |v| v.value.0.as_str()),
                        )
                        .join("usage.db")
                    },
                    |v| PathBuf::from(&v.value.0),
                ),
                usage_interval: model
                    .usage_interval
                    .as_ref()
                    .map_or(DEFAULT_USAGE_INTERVAL, |v| v.value.0),
                lxcfs: model.lxcfs.as_ref().map_or_else(
                    || Some(PathBuf::from(DEFAULT_LXCFS)),
                    |v| v.value.0.as_ref().map(PathBuf::from),
                ),
            },
            warnings: diagnostics.clone(),
            files: files.clone(),
            model: cache::ModelCell::new(model),
        });
        Report {
            policy,
            files,
            diagnostics,
        }
    }

    /// Host-wide settings.
    pub fn host(&self) -> &HostSettings {
        &self.host
    }

    /// Warnings found while loading (the policy is used regardless).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The files this policy was read from, main file first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every inner shell the policy names (in `[defaults]`, plans, groups and
    /// users), plus the built-in default unless `[defaults]` sets one; sorted,
    /// each once. A template build checks that each exists.
    pub fn shells(&self) -> Vec<PathBuf> {
        let m = self.model.get();
        let mut shells: std::collections::BTreeSet<PathBuf> = std::iter::once(&m.defaults)
            .chain(m.plans.values())
            .chain(m.groups.values())
            .chain(m.users.values())
            .filter_map(|r| r.shell.as_ref().map(|s| PathBuf::from(&s.value.0)))
            .collect();
        if m.defaults.shell.is_none() {
            shells.insert(PathBuf::from(DEFAULT_SHELL));
        }
        shells.into_iter().collect()
    }

    /// Every `seccomp` value of the policy's tables that names a file: the
    /// dotted key, where it is written, and the path. `hutchctl check` reads
    /// each (as the module and the keeper do at login) to see it exists,
    /// is root's, and names only syscalls hutch knows.
    pub fn seccomp_files(&self) -> Vec<(String, Loc, PathBuf)> {
        let m = self.model.get();
        std::iter::once(&m.defaults)
            .chain(m.plans.values())
            .chain(m.groups.values())
            .chain(m.users.values())
            .filter_map(|r| {
                let v = r.seccomp.as_ref()?;
                v.value.0.starts_with('/').then(|| {
                    (
                        format!("{}.seccomp", r.scope),
                        v.loc.clone(),
                        PathBuf::from(&v.value.0),
                    )
                })
            })
            .collect()
    }

    /// Whether any decision depends on the account's groups: the policy
    /// has a `[groups.NAME]` table. Without one, an [`Account`] whose
    /// `groups` were never looked up resolves exactly as one with them, so
    /// pam_hutch skips the group look-up (NSS `getgrouplist` and a
    /// `getgrgid` a group, the dearest part of a login's account look-up).
    pub fn uses_groups(&self) -> bool {
        self.model.has_groups()
    }

    /// The decision for `account` opening a session through PAM service `service`.
    pub fn resolve(&self, account: &Account, service: &str) -> Decision {
        self.explain(account, service).decision
    }

    /// How the policy treats PAM service `service` (its `[services]`
    /// entry, or the built-in default), whoever logs in.
    pub fn service_mode(&self, service: &str) -> ServiceMode {
        resolve::service_mode(self.model.get(), service).0
    }

    /// The decision and every effective value with its origin (`hutchctl policy USER`).
    pub fn explain(&self, account: &Account, service: &str) -> Explanation {
        resolve::explain(&self.model.view(account), account, service)
    }
}

#[cfg(test)]
mod tests;
