//! Resolution: one account's effective policy, key by key, and where each
//! value came from.
//!
//! Layers, lowest first (the last layer that sets a key wins):
//! built-in defaults; `[defaults]`'s plan; `[defaults]`; for each of the
//! account's groups that has a `[groups.NAME]` table, in rising `priority`
//! (equal priorities: the name that sorts first byte-wise wins), that
//! group's plan then the group; the user's plan; `[users.NAME]`. So a user
//! beats groups, groups beat defaults, and at each level a table's own keys
//! beat its plan's.

use std::fmt;
use std::path::PathBuf;

use crate::error::Loc;
use crate::raw::{Model, Picked, Rules};
use crate::units::{format_size, Limit, OnLogout, CPU_PERIOD_US};
use crate::values::{CpusMode, HostnamePattern, MountSpec, ServiceMode, Vars, WritableMode};
use crate::{Account, BindMount, CpuQuota, Decision, Limits, Network, UserPolicy};

/// Built-in template name.
pub const DEFAULT_TEMPLATE: &str = "default";
/// Built-in inner shell.
pub const DEFAULT_SHELL: &str = "/bin/bash";
/// Built-in hostname pattern.
pub const DEFAULT_HOSTNAME: &str = "{user}";
/// `memory_high` when only `memory` is set: 90 % of it, rounded down to a
/// 4 KiB page (Kubernetes' MemoryQoS throttles at the same fraction).
pub fn default_memory_high(memory: u64) -> u64 {
    (memory / 10 * 9) & !4095
}

/// Built-in size of the writable layer: 1 GiB.
pub const DEFAULT_WRITABLE_SIZE: u64 = 1 << 30;
/// Built-in bound of a container's ptys (devpts `max=`).
pub const DEFAULT_PTYS: u64 = 64;
/// Built-in bound of a `veth` container's connections in the host's
/// conntrack table.
pub const DEFAULT_CONNTRACK: u64 = 8192;
/// Built-in seccomp profile.
pub const DEFAULT_SECCOMP: &str = "default";

/// What each PAM service does with a confined user unless `[services]` says
/// otherwise. Services not listed confine.
pub const BUILTIN_SERVICES: &[(&str, ServiceMode)] = &[
    ("sshd", ServiceMode::Confine),
    ("login", ServiceMode::Confine),
    ("su", ServiceMode::Confine),
    ("su-l", ServiceMode::Confine),
    ("sudo", ServiceMode::Confine),
    ("sudo-i", ServiceMode::Confine),
    ("cron", ServiceMode::Confine),
    ("crond", ServiceMode::Confine),
    ("systemd-user", ServiceMode::Refuse),
];

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// hutch's own default; no file sets it.
    Builtin,
    /// Written in a file. `via` says how it applies: `users.alice`,
    /// `groups.staff`, `plans.pro via users.alice`, `defaults`, `template`, `services`.
    File { loc: Loc, via: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in default"),
            Origin::File { loc, via } => write!(f, "{loc} ({via})"),
        }
    }
}

/// One effective key: `memory = "2G"  # /etc/hutch/hutch.toml:14:10 (plans.pro via groups.staff)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: &'static str,
    /// The value as it would be written in the policy, after substitution.
    pub value: String,
    pub origin: Origin,
}

/// The effective policy of one account for one service, each value with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    /// What the service does with confined users, and where that came from.
    pub service_mode: ServiceMode,
    pub service_origin: Origin,
    /// The account's groups that have a `[groups.NAME]` table, highest precedence last.
    pub groups: Vec<String>,
    pub entries: Vec<Entry>,
    /// `enforce = false` applies: the decision is what pam_hutch *would* do;
    /// it logs it and lets the session run on the host. Says where the
    /// setting came from (`groups.staff: enforce = false (FILE:LINE:COL)`).
    /// Always `None` for root, and for an exempt decision.
    pub monitor: Option<String>,
}

impl Explanation {
    /// The entry for `key`, if the explanation has one.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// The layers of `account`, lowest precedence first, with how each applies.
pub(crate) fn layers<'a>(
    model: &'a Model,
    account: &Account,
) -> (Vec<(&'a Rules, String)>, Vec<String>) {
    let mut out = Vec::new();
    push_table(model, &mut out, &model.defaults);
    let groups = ordered_groups(model, &account.groups);
    for g in &groups {
        if let Some(r) = model.groups.get(g) {
            push_table(model, &mut out, r);
        }
    }
    if let Some(r) = model.users.get(&account.name) {
        push_table(model, &mut out, r);
    }
    (out, groups)
}

/// A table and, beneath it, its plan.
pub(crate) fn push_table<'a>(
    model: &'a Model,
    out: &mut Vec<(&'a Rules, String)>,
    table: &'a Rules,
) {
    if let Some(plan) = table
        .plan
        .as_ref()
        .and_then(|p| model.plans.get(&p.value.0))
    {
        out.push((plan, format!("{} via {}", plan.scope, table.scope)));
    }
    out.push((table, table.scope.clone()));
}

/// The account's groups that have tables, lowest precedence first: rising
/// priority (default 0); among equal priorities the name that sorts first
/// byte-wise comes last, so it wins.
pub(crate) fn ordered_groups(model: &Model, names: &[String]) -> Vec<String> {
    let mut gs: Vec<(i64, &str)> = Vec::new();
    for n in names {
        if let Some(r) = model.groups.get(n) {
            if !gs.iter().any(|(_, g)| *g == n.as_str()) {
                gs.push((r.priority.as_ref().map_or(0, |p| p.value), n.as_str()));
            }
        }
    }
    gs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
    gs.into_iter().map(|(_, n)| n.to_string()).collect()
}

fn origin<T>(p: Option<(&crate::error::Located<T>, &str)>) -> Origin {
    match p {
        Some((v, via)) => Origin::File {
            loc: v.loc.clone(),
            via: via.to_string(),
        },
        None => Origin::Builtin,
    }
}

pub(crate) fn service_mode(model: &Model, service: &str) -> (ServiceMode, Origin) {
    if let Some(m) = model.services.get(service) {
        return (
            m.value,
            Origin::File {
                loc: m.loc.clone(),
                via: "services".into(),
            },
        );
    }
    let mode = BUILTIN_SERVICES
        .iter()
        .find(|(s, _)| *s == service)
        .map_or(ServiceMode::Confine, |(_, m)| *m);
    (mode, Origin::Builtin)
}

/// Resolves `account` for `service`: the decision and every value's origin.
pub(crate) fn explain(model: &Model, account: &Account, service: &str) -> Explanation {
    let (owned, groups) = layers(model, account);
    let refs: Vec<(&Rules, &str)> = owned.iter().map(|(r, v)| (*r, v.as_str())).collect();
    let p = Picked::pick(&refs);
    let (service_mode, service_origin) = service_mode(model, service);
    let mut entries = Vec::new();
    let mut add = |key: &'static str, value: String, origin: Origin| {
        entries.push(Entry { key, value, origin })
    };

    let confine = p.confine.is_none_or(|(v, _)| v.value);
    add("confine", confine.to_string(), origin(p.confine));
    let enforce = p.enforce.is_none_or(|(v, _)| v.value);
    add("enforce", enforce.to_string(), origin(p.enforce));

    let (template, template_origin) = match (p.template, &model.template) {
        (Some((v, via)), _) => (
            v.value.0.clone(),
            Origin::File {
                loc: v.loc.clone(),
                via: via.into(),
            },
        ),
        (None, Some(t)) => (
            t.value.0.clone(),
            Origin::File {
                loc: t.loc.clone(),
                via: "template".into(),
            },
        ),
        (None, None) => (DEFAULT_TEMPLATE.to_string(), Origin::Builtin),
    };
    add("template", format!("{template:?}"), template_origin);
    let shell = p
        .shell
        .map_or(DEFAULT_SHELL.to_string(), |(v, _)| v.value.0.clone());
    add("shell", format!("{shell:?}"), origin(p.shell));
    let pattern = p.hostname.map_or_else(
        || HostnamePattern(DEFAULT_HOSTNAME.into()),
        |(v, _)| v.value.clone(),
    );
    let hostname = pattern.render(&account.name, account.uid);
    add("hostname", format!("{hostname:?}"), origin(p.hostname));

    let size = |l: Option<Limit>| match l {
        Some(Limit::Max(b)) => format!("\"{}\"", format_size(b)),
        _ => "\"none\"".to_string(),
    };
    let count = |l: Option<Limit>| match l {
        Some(Limit::Max(n)) => n.to_string(),
        _ => "\"none\"".to_string(),
    };
    let limit = |x: Option<(&crate::error::Located<crate::units::SizeLimit>, &str)>| {
        x.map(|(v, _)| v.value.0)
    };
    let memory = limit(p.memory);
    add("memory", size(memory), origin(p.memory));
    // Unset under a memory limit: pressure (reclaim, throttling) starts at
    // 90 % of it, before the OOM killer acts at the limit; "none" turns it off.
    let memory_high = match (limit(p.memory_high), memory) {
        (Some(h), _) => Some(h),
        (None, Some(Limit::Max(m))) => Some(Limit::Max(default_memory_high(m))),
        (None, _) => None,
    };
    add("memory_high", size(memory_high), origin(p.memory_high));
    let swap = limit(p.swap);
    add("swap", size(swap), origin(p.swap));
    let cpu: Option<CpuQuota> = p.cpu.and_then(|(v, _)| v.value.0);
    add(
        "cpu",
        p.cpu
            .map_or("\"none\"".into(), |(v, _)| v.value.to_string()),
        origin(p.cpu),
    );
    let cpu_weight = p.cpu_weight.map(|(v, _)| v.value.0);
    add(
        "cpu_weight",
        cpu_weight.map_or("\"none\"".into(), |w| w.to_string()),
        origin(p.cpu_weight),
    );
    let cpus = p.cpus.map_or(CpusMode::Auto, |(v, _)| v.value);
    add("cpus", cpus.to_string(), origin(p.cpus));
    let pids = p.pids.map(|(v, _)| v.value.0);
    add("pids", count(pids), origin(p.pids));
    let io = p.io.map(|(v, _)| v.value.0.clone()).unwrap_or_default();
    add(
        "io",
        p.io.map_or("[]".into(), |(v, _)| v.value.to_string()),
        origin(p.io),
    );
    let io_weight = p.io_weight.map(|(v, _)| v.value.0);
    add(
        "io_weight",
        io_weight.map_or("\"none\"".into(), |w| w.to_string()),
        origin(p.io_weight),
    );
    let writable_size = p
        .writable_size
        .map_or(DEFAULT_WRITABLE_SIZE, |(v, _)| v.value.0);
    add(
        "writable_size",
        format!("\"{}\"", format_size(writable_size)),
        origin(p.writable_size),
    );
    let writable = p.writable.map_or(WritableMode::Ephemeral, |(v, _)| v.value);
    add("writable", writable.to_string(), origin(p.writable));
    let max_sessions = p.max_sessions.map(|(v, _)| v.value.0);
    add("max_sessions", count(max_sessions), origin(p.max_sessions));
    let ptys = p.ptys.map_or(Limit::Max(DEFAULT_PTYS), |(v, _)| v.value.0);
    add("ptys", count(Some(ptys)), origin(p.ptys));
    let on_logout = p.on_logout.map_or(OnLogout::Kill, |(v, _)| v.value);
    add("on_logout", format!("\"{on_logout}\""), origin(p.on_logout));
    let network = p
        .network
        .map_or(crate::values::NetworkMode::Loopback, |(v, _)| v.value);
    add("network", network.to_string(), origin(p.network));
    let egress_deny = p
        .egress_deny
        .map_or_else(crate::net::EgressList::builtin, |(v, _)| v.value.clone());
    add(
        "egress_deny",
        egress_deny.to_string(),
        origin(p.egress_deny),
    );
    let egress_allow = p
        .egress_allow
        .map_or(crate::net::EgressList(Vec::new()), |(v, _)| v.value.clone());
    add(
        "egress_allow",
        egress_allow.to_string(),
        origin(p.egress_allow),
    );
    let rate_in = p.rate_in.map_or(crate::net::Rate(None), |(v, _)| v.value);
    add("rate_in", rate_in.to_string(), origin(p.rate_in));
    let rate_out = p.rate_out.map_or(crate::net::Rate(None), |(v, _)| v.value);
    add("rate_out", rate_out.to_string(), origin(p.rate_out));
    let conntrack = p
        .conntrack
        .map_or(Limit::Max(DEFAULT_CONNTRACK), |(v, _)| v.value.0);
    add("conntrack", count(Some(conntrack)), origin(p.conntrack));
    let net_device = p.net_device.map(|(v, _)| v.value.0.clone());
    add(
        "net_device",
        net_device
            .as_ref()
            .map_or("\"none\"".into(), |d| format!("{d:?}")),
        origin(p.net_device),
    );
    let vlan_id = p.vlan_id.map(|(v, _)| v.value.0);
    add(
        "vlan_id",
        vlan_id.map_or("\"none\"".into(), |v| v.to_string()),
        origin(p.vlan_id),
    );
    let mut network_error = None;
    let traffic = crate::Traffic {
        egress_deny: egress_deny.0,
        egress_allow: egress_allow.0,
        rate_in: rate_in.0,
        rate_out: rate_out.0,
        conntrack: conntrack.get(),
    };
    let device = |need_vlan: bool, err: &mut Option<String>| {
        let device = net_device.clone().unwrap_or_default();
        if device.is_empty() {
            *err = Some(format!("network = {network} needs net_device"));
        }
        if need_vlan && vlan_id.is_none() {
            *err = Some(format!("network = {network} needs vlan_id"));
        }
        crate::DevicePolicy {
            device,
            vlan_id: vlan_id.unwrap_or(0),
            traffic: traffic.clone(),
        }
    };
    let network = match network {
        crate::values::NetworkMode::Loopback | crate::values::NetworkMode::NoNetwork => {
            Network::Loopback
        }
        crate::values::NetworkMode::Veth => Network::Veth(traffic.clone()),
        crate::values::NetworkMode::Macvlan => Network::Macvlan(device(false, &mut network_error)),
        crate::values::NetworkMode::Vlan => Network::Vlan(device(true, &mut network_error)),
        crate::values::NetworkMode::Phys => Network::Phys(device(false, &mut network_error)),
    };
    let seccomp = p
        .seccomp
        .map_or(DEFAULT_SECCOMP.to_string(), |(v, _)| v.value.0.clone());
    add("seccomp", format!("{seccomp:?}"), origin(p.seccomp));
    let strict = p.strict.is_some_and(|(v, _)| v.value);
    add("strict", strict.to_string(), origin(p.strict));
    let notices = p.notices.is_none_or(|(v, _)| v.value);
    add("notices", notices.to_string(), origin(p.notices));

    let vars = Vars {
        user: &account.name,
        uid: account.uid,
        home: &account.home.to_string_lossy(),
    };
    let mut mounts = Vec::new();
    let mut mount_error = None;
    for m in p
        .mounts
        .map(|(v, _)| v.value.0.as_slice())
        .unwrap_or_default()
    {
        let sub = |s: &str| crate::values::substitute(s, vars, true);
        match (sub(&m.source), sub(&m.target)) {
            (Ok(source), Ok(target)) => match MountSpec::check(&source, &target) {
                Ok(()) => mounts.push(BindMount {
                    source: source.into(),
                    target: target.into(),
                    read_only: m.read_only,
                }),
                Err(e) => mount_error = mount_error.or(Some(e)),
            },
            (Err(e), _) | (_, Err(e)) => mount_error = mount_error.or(Some(e)),
        }
    }
    let shown: Vec<String> = mounts
        .iter()
        .map(|m| {
            let spec = MountSpec {
                source: m.source.display().to_string(),
                target: m.target.display().to_string(),
                read_only: m.read_only,
            };
            spec.to_string()
        })
        .collect();
    add(
        "mounts",
        if shown.is_empty() {
            "[]".into()
        } else {
            format!("[ {} ]", shown.join(", "))
        },
        origin(p.mounts),
    );

    let decision = if account.uid == 0 {
        Decision::Exempt("root is never confined".into())
    } else if !confine {
        let (v, via) = p
            .confine
            .expect("confine is false only when a table sets it");
        Decision::Exempt(format!("{via}: confine = false ({})", v.loc))
    } else {
        match service_mode {
            ServiceMode::Refuse => Decision::Refuse(match &service_origin {
                Origin::Builtin => format!(
                    "service {service} refuses confined users (built-in: a user manager outside the container would be an escape)"
                ),
                Origin::File { loc, .. } => format!("service {service} refuses confined users (services.{service} at {loc})"),
            }),
            ServiceMode::Ignore => Decision::Exempt(format!(
                "service {service} ignores confined users (services.{service} at {})",
                match &service_origin {
                    Origin::File { loc, .. } => loc.to_string(),
                    Origin::Builtin => "built-in".into(),
                }
            )),
            ServiceMode::Confine => match mount_error.map(|e| format!("{}: {e}", origin_scope(p.mounts))).or(network_error) {
                Some(e) => Decision::Refuse(e),
                None => Decision::Confine(Box::new(UserPolicy {
                    template,
                    shell: PathBuf::from(shell),
                    hostname,
                    limits: Limits {
                        memory_max: memory.and_then(Limit::get),
                        memory_high: memory_high.and_then(Limit::get),
                        swap_max: swap.and_then(Limit::get),
                        cpu,
                        cpu_weight,
                        cpus,
                        pids_max: pids.and_then(Limit::get),
                        io,
                        io_weight,
                        writable_size,
                        max_sessions: max_sessions.and_then(Limit::get).map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                        ptys_max: ptys.get(),
                        strict,
                    },
                    linger: on_logout.linger(),
                    mounts,
                    network,
                    on_logout,
                    writable,
                    seccomp,
                    notices,
                })),
            },
        }
    };
    debug_assert_eq!(CPU_PERIOD_US, 100_000);
    let monitor = match (&decision, p.enforce) {
        (Decision::Exempt(_), _) => None,
        (_, Some((v, via))) if !v.value => Some(format!("{via}: enforce = false ({})", v.loc)),
        _ => None,
    };
    Explanation {
        monitor,
        decision,
        service_mode,
        service_origin,
        groups,
        entries,
    }
}

fn origin_scope<T>(p: Option<(&crate::error::Located<T>, &str)>) -> String {
    p.map_or_else(
        || "mounts".into(),
        |(v, via)| format!("{via}.mounts ({})", v.loc),
    )
}
