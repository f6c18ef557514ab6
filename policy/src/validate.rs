//! The meaning of a merged policy, beyond what each value checks of itself
//! while read: keys in tables that cannot use them, plans that do not
//! exist, contradictions between keys (memory_high above memory, pids too
//! few for max_sessions), sizes too small to run a container, and warnings
//! (a table for root, groups whose equal priorities leave the winner to
//! name order, a service name that looks like a typo, mount sources that do
//! not exist).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{did_you_mean, Diagnostic};
use crate::raw::{Model, Picked, Rules};
use crate::resolve::{push_table, BUILTIN_SERVICES};
use crate::units::{format_size, Limit};
use crate::values::{substitute, SAMPLE};

/// The least memory a container can start with.
pub const MIN_MEMORY: u64 = 4 << 20;
/// The least writable layer.
pub const MIN_WRITABLE: u64 = 1 << 20;
/// Processes one session needs in the container: sshd's two and a shell.
pub const PIDS_PER_SESSION: u64 = 3;

/// All errors and warnings of a merged model.
pub(crate) fn validate(model: &Model) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    let push = |x: Diagnostic, d: &mut Vec<Diagnostic>| {
        if !d.contains(&x) {
            d.push(x);
        }
    };
    let tables = std::iter::once(("defaults", &model.defaults))
        .chain(model.plans.values().map(|r| ("plans", r)))
        .chain(model.groups.values().map(|r| ("groups", r)))
        .chain(model.users.values().map(|r| ("users", r)));
    for (kind, r) in tables {
        for x in table_checks(model, kind, r) {
            push(x, &mut d);
        }
    }
    // Contradictions, checked on each chain a table can be part of (groups
    // are checked over defaults; a user's groups are not known until login).
    let mut chains: Vec<Vec<(&Rules, String)>> = Vec::new();
    let mut base = Vec::new();
    push_table(model, &mut base, &model.defaults);
    chains.push(base.clone());
    for table in model
        .plans
        .values()
        .chain(model.groups.values())
        .chain(model.users.values())
    {
        let mut c = base.clone();
        push_table(model, &mut c, table);
        chains.push(c);
    }
    for c in &chains {
        let refs: Vec<(&Rules, &str)> = c.iter().map(|(r, v)| (*r, v.as_str())).collect();
        for x in chain_checks(&Picked::pick(&refs)) {
            push(x, &mut d);
        }
    }
    for x in warnings(model) {
        push(x, &mut d);
    }
    d
}

fn table_checks(model: &Model, kind: &str, r: &Rules) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    let key = |k: &str| format!("{}.{k}", r.scope);
    if let Some(p) = &r.priority {
        if kind != "groups" {
            d.push(Diagnostic::error(
                Some(p.loc.clone()),
                key("priority"),
                "priority only applies to groups",
            ));
        }
    }
    if let Some(p) = &r.plan {
        if kind == "plans" {
            d.push(Diagnostic::error(
                Some(p.loc.clone()),
                key("plan"),
                "a plan cannot name another plan",
            ));
        } else if !model.plans.contains_key(&p.value.0) {
            let hint = match did_you_mean(&p.value.0, model.plans.keys().map(String::as_str)) {
                Some(s) => format!(" (did you mean \"{s}\"?)"),
                None if model.plans.is_empty() => " (no [plans.NAME] table exists)".into(),
                None => format!(
                    " (defined: {})",
                    model
                        .plans
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            d.push(Diagnostic::error(
                Some(p.loc.clone()),
                key("plan"),
                format!("plan \"{}\" is not defined{hint}", p.value.0),
            ));
        }
    }
    if let Some(m) = &r.memory {
        if let Limit::Max(b) = m.value.0 {
            if b < MIN_MEMORY {
                d.push(Diagnostic::error(
                    Some(m.loc.clone()),
                    key("memory"),
                    format!(
                        "memory \"{}\" is out of range: a container needs at least {}",
                        format_size(b),
                        format_size(MIN_MEMORY)
                    ),
                ));
            }
        }
    }
    if let Some(w) = &r.writable_size {
        if w.value.0 < MIN_WRITABLE {
            d.push(Diagnostic::error(
                Some(w.loc.clone()),
                key("writable_size"),
                format!(
                    "writable_size \"{}\" is out of range: at least {}",
                    format_size(w.value.0),
                    format_size(MIN_WRITABLE)
                ),
            ));
        }
    }
    d
}

fn chain_checks(p: &Picked<'_>) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    if let (Some((high, hvia)), Some((max, mvia))) = (p.memory_high, p.memory) {
        if let (Limit::Max(h), Limit::Max(m)) = (high.value.0, max.value.0) {
            if h > m {
                d.push(Diagnostic::error(
                    Some(high.loc.clone()),
                    format!("{}.memory_high", base_scope(hvia)),
                    format!(
                        "memory_high \"{}\" is above memory \"{}\" ({} at {}): memory_high must not exceed memory",
                        format_size(h),
                        format_size(m),
                        base_scope(mvia),
                        max.loc
                    ),
                ));
            }
        }
    }
    if let (Some((pids, pvia)), Some((sessions, svia))) = (p.pids, p.max_sessions) {
        if let (Limit::Max(n), Limit::Max(s)) = (pids.value.0, sessions.value.0) {
            let need = 1 + PIDS_PER_SESSION * s;
            if n < need {
                d.push(Diagnostic::error(
                    Some(pids.loc.clone()),
                    format!("{}.pids", base_scope(pvia)),
                    format!(
                        "pids {n} is too few for max_sessions {s} ({} at {}): each session needs {PIDS_PER_SESSION} processes (sshd's two and a shell) and the init one, so at least {need}",
                        base_scope(svia),
                        sessions.loc
                    ),
                ));
            }
        }
    }
    d
}

/// `plans.pro via users.alice` → `plans.pro`.
fn base_scope(via: &str) -> &str {
    via.split(" via ").next().unwrap_or(via)
}

fn warnings(model: &Model) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    if let Some(root) = model.users.get("root") {
        d.push(Diagnostic::warning(
            root.header.clone(),
            "users.root",
            "root is never confined: this table has no effect",
        ));
    }
    for (name, mode) in &model.services {
        if BUILTIN_SERVICES.iter().any(|(s, _)| s == name) {
            continue;
        }
        if let Some(s) = did_you_mean(name, BUILTIN_SERVICES.iter().map(|(s, _)| *s)) {
            d.push(Diagnostic::warning(
                Some(mode.loc.clone()),
                format!("services.{name}"),
                format!("\"{name}\" is not a service hutch knows (did you mean \"{s}\"?); it applies only to a PAM service of exactly that name"),
            ));
        }
    }
    d.extend(priority_ties(model));
    d
}

macro_rules! set_keys {
    ($r:expr, $($k:ident),*) => {{
        let mut v: Vec<(&'static str, String)> = Vec::new();
        $( if let Some(x) = &$r.$k { v.push((stringify!($k), format!("{:?}", x.value))); } )*
        v
    }};
}

/// Groups of equal priority that set the same key to different values: a
/// user in both gets the one whose name sorts first. One warning per
/// (priority, key).
fn priority_ties(model: &Model) -> Vec<Diagnostic> {
    let mut by: BTreeMap<(i64, &'static str), Vec<(&str, String)>> = BTreeMap::new();
    for (name, r) in &model.groups {
        let prio = r.priority.as_ref().map_or(0, |p| p.value);
        let keys = set_keys!(
            r,
            confine,
            enforce,
            plan,
            template,
            shell,
            hostname,
            memory,
            memory_high,
            swap,
            cpu,
            cpu_weight,
            pids,
            io,
            io_weight,
            writable_size,
            writable,
            max_sessions,
            ptys,
            on_logout,
            mounts,
            network,
            egress_deny,
            egress_allow,
            rate_in,
            conntrack,
            rate_out,
            net_device,
            vlan_id,
            seccomp,
            strict,
            notices
        );
        for (k, v) in keys {
            by.entry((prio, k)).or_default().push((name.as_str(), v));
        }
    }
    let mut d = Vec::new();
    for ((prio, key), groups) in by {
        if groups.len() < 2 || groups.iter().all(|(_, v)| *v == groups[0].1) {
            continue;
        }
        let names: Vec<&str> = groups.iter().map(|(n, _)| *n).collect();
        let shown = if names.len() > 4 {
            format!("{} and {} more", names[..4].join(", "), names.len() - 4)
        } else {
            names.join(", ")
        };
        let first = &model.groups[names[0]];
        d.push(Diagnostic::warning(
            first.header.clone(),
            format!("groups.{}.{key}", names[0]),
            format!(
                "groups {shown} set {key} differently at the same priority {prio}: a user in several of them gets the value of the group whose name sorts first; set priority to decide"
            ),
        ));
    }
    d
}

/// Warnings for mount sources that do not exist on this host (sources with
/// `{user}`, `{uid}` or `{home}` cannot be checked before login and are skipped).
pub(crate) fn missing_mount_sources(model: &Model) -> Vec<Diagnostic> {
    let mut d = Vec::new();
    let tables = std::iter::once(&model.defaults)
        .chain(model.plans.values())
        .chain(model.groups.values())
        .chain(model.users.values());
    for r in tables {
        let Some(mounts) = &r.mounts else { continue };
        for (i, m) in mounts.value.0.iter().enumerate() {
            if m.source.contains('{') {
                continue;
            }
            let source = substitute(&m.source, SAMPLE, true).unwrap_or_else(|_| m.source.clone());
            if !Path::new(&source).exists() {
                d.push(Diagnostic::warning(
                    Some(mounts.loc.clone()),
                    format!("{}.mounts[{i}].source", r.scope),
                    format!("mount source \"{source}\" does not exist on this host"),
                ));
            }
        }
    }
    d
}
