//! The shape of a policy file, as serde reads it (`deny_unknown_fields`
//! everywhere, every rule value with its span), and its located form
//! ([`Rules`]: each key's value with the file, line and column it came
//! from), which drop-ins overlay key by key.
//!
//! The rule keys are listed once, in [`rules!`]; the raw struct, the
//! located struct, the overlay and the per-key pick of resolution all follow
//! from that list.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Diagnostic, Loc, Located, Source};
use crate::units::{CountLimit, CpuLimit, OnLogout, Seconds, Size, SizeLimit, Weight};
use crate::values::{
    AbsPath, CgroupRoot, CpusMode, HostnamePattern, IoList, MountList, Name, NetworkMode,
    PathOrNone, SeccompProfile, ServiceMode, WritableMode,
};
macro_rules! rules {
    ($( $(#[$m:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        rules!(@keys ($) $($field),*);

        /// One rule table (`[defaults]`, `[plans.X]`, `[groups.X]`, `[users.X]`) as written.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawRules {
            $( $(#[$m])* #[serde(default)] pub $field: Option<Spanned<$ty>>, )*
        }

        /// The keys a rule table takes, in the order of the schema.
        pub const RULE_KEYS: &[&str] = &[ $( stringify!($field) ),* ];

        /// One rule table with the place of each value.
        #[derive(Debug, Clone, Default)]
        pub(crate) struct Rules {
            /// `defaults`, `plans.pro`, `groups.staff`, `users.alice`.
            pub scope: String,
            /// Where the table was first opened.
            pub header: Option<Loc>,
            $( pub $field: Option<Located<$ty>>, )*
        }

        impl Rules {
            fn locate(raw: RawRules, src: &Source<'_>, scope: String, header: Option<Loc>) -> Rules {
                Rules { scope, header, $( $field: raw.$field.map(|s| src.locate(s)), )* }
            }

            /// Takes every key `later` sets (a drop-in over the main file).
            pub(crate) fn overlay(&mut self, later: Rules) {
                if self.header.is_none() {
                    self.header = later.header;
                }
                $( if later.$field.is_some() { self.$field = later.$field; } )*
            }
        }

        /// For each key, the value that wins among layers (lowest first) and the layer it came from.
        #[allow(dead_code)] // plan, priority and linger are layer machinery, never picked.
        #[derive(Debug, Default)]
        pub(crate) struct Picked<'a> {
            $( pub $field: Option<(&'a Located<$ty>, &'a str)>, )*
        }

        impl<'a> Picked<'a> {
            /// Key by key, the last layer that sets a key wins. Each layer is (rules, how it applies).
            pub(crate) fn pick(layers: &[(&'a Rules, &'a str)]) -> Picked<'a> {
                Picked { $( $field: layers.iter().rev().find_map(|(r, via)| r.$field.as_ref().map(|v| (v, *via))), )* }
            }
        }
    };
    // `with_rule_keys!(m)` calls `m!(key, key, ...)` with every rule key,
    // so that code elsewhere (the cache codec, wire.rs) follows the one list
    // without this file depending on it. (`$d` passes a literal `$` into
    // the macro this defines.)
    (@keys ($d:tt) $($field:ident),*) => {
        macro_rules! with_rule_keys {
            ($d callback:ident) => {
                $d callback!($($field),*);
            };
        }
        pub(crate) use with_rule_keys;
    };
}

rules! {
    /// `false` exempts (the session runs on the host).
    confine: bool,
    /// `false`: monitor only. pam_hutch logs what it would have done with the
    /// session (confine or refuse it) and lets it run on the host.
    enforce: bool,
    /// A `[plans.NAME]` whose keys apply beneath this table's own.
    plan: Name,
    /// Groups only: the higher wins where a user's groups disagree.
    priority: i64,
    template: Name,
    shell: AbsPath,
    hostname: HostnamePattern,
    memory: SizeLimit,
    memory_high: SizeLimit,
    swap: SizeLimit,
    cpu: CpuLimit,
    cpu_weight: Weight,
    /// Which host CPUs the container runs on: `auto` (as many as `cpu` allows).
    cpus: CpusMode,
    pids: CountLimit,
    io: IoList,
    io_weight: Weight,
    writable_size: Size,
    writable: WritableMode,
    max_sessions: CountLimit,
    /// Pseudo-terminals the container's devpts may hold at once (devpts `max=`).
    ptys: CountLimit,
    on_logout: OnLogout,
    /// Synonym of `on_logout = "linger:DURATION"`; folded into `on_logout` when read.
    linger: Seconds,
    mounts: MountList,
    network: NetworkMode,
    /// Destinations a `veth` container may not reach (see [`crate::net::EgressRule`]).
    egress_deny: crate::net::EgressList,
    /// When non-empty, the only destinations (besides the gateway) a `veth` container may reach.
    egress_allow: crate::net::EgressList,
    /// Bandwidth toward the container (download), for `veth`.
    rate_in: crate::net::Rate,
    /// Bandwidth out of the container (upload), for `veth`.
    rate_out: crate::net::Rate,
    /// Connections of a `veth` container the host's conntrack table may
    /// hold at once (one host-wide table, nf_conntrack_max).
    conntrack: CountLimit,
    /// `macvlan`/`vlan`: the parent interface; `phys`: the interface moved in.
    net_device: crate::net::IfName,
    /// `vlan`: the VLAN id.
    vlan_id: crate::net::VlanId,
    seccomp: SeccompProfile,
    /// Refuse logins when the host lacks a cgroup controller a limit needs.
    strict: bool,
    /// `false`: a limit that acts is not told on the user's terminals
    /// (still counted and shown by `hutch status`).
    notices: bool,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub run_dir: Option<Spanned<AbsPath>>,
    pub lib_dir: Option<Spanned<AbsPath>>,
    pub cgroup_root: Option<Spanned<CgroupRoot>>,
    pub net: Option<Spanned<crate::net::NetHost>>,
    pub usage_retention: Option<Spanned<crate::units::Seconds>>,
    pub usage_db: Option<Spanned<AbsPath>>,
    pub usage_interval: Option<Spanned<crate::units::Seconds>>,
    pub lxcfs: Option<Spanned<PathOrNone>>,
}

/// The keys of `[host]` (part of the cache's format fingerprint).
pub const HOST_KEYS: &[&str] = &[
    "run_dir",
    "lib_dir",
    "cgroup_root",
    "net",
    "usage_retention",
    "usage_db",
    "usage_interval",
    "lxcfs",
];

/// `[template]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTemplate {
    pub name: Option<Spanned<Name>>,
}

/// A whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub host: RawHost,
    #[serde(default)]
    pub template: RawTemplate,
    pub defaults: Option<Spanned<RawRules>>,
    #[serde(default)]
    pub plans: BTreeMap<Spanned<String>, Spanned<RawRules>>,
    #[serde(default)]
    pub groups: BTreeMap<Spanned<String>, Spanned<RawRules>>,
    #[serde(default)]
    pub users: BTreeMap<Spanned<String>, Spanned<RawRules>>,
    #[serde(default)]
    pub services: BTreeMap<Spanned<String>, Spanned<ServiceMode>>,
}

/// The keys of a whole file's top level.
pub const TOP_KEYS: &[&str] = &[
    "host", "template", "defaults", "plans", "groups", "users", "services",
];

/// All files merged, every value located.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    pub run_dir: Option<Located<AbsPath>>,
    pub lib_dir: Option<Located<AbsPath>>,
    pub cgroup_root: Option<Located<CgroupRoot>>,
    pub net: Option<Located<crate::net::NetHost>>,
    pub usage_retention: Option<Located<crate::units::Seconds>>,
    pub usage_db: Option<Located<AbsPath>>,
    pub usage_interval: Option<Located<crate::units::Seconds>>,
    pub lxcfs: Option<Located<PathOrNone>>,
    pub template: Option<Located<Name>>,
    pub defaults: Rules,
    pub plans: BTreeMap<String, Rules>,
    pub groups: BTreeMap<String, Rules>,
    pub users: BTreeMap<String, Rules>,
    pub services: BTreeMap<String, Located<ServiceMode>>,
}

impl Model {
    /// An empty model whose `[defaults]` is named.
    pub(crate) fn new() -> Model {
        Model {
            defaults: Rules {
                scope: "defaults".into(),
                ..Rules::default()
            },
            ..Model::default()
        }
    }

    /// Parses one file's text. On a parse error, one diagnostic (serde stops at the first).
    pub(crate) fn parse_file(src: &Source<'_>) -> Result<(Model, Vec<Diagnostic>), Diagnostic> {
        let raw: RawFile = toml::from_str(src.text).map_err(|e| src.toml_error(&e))?;
        let mut diags = Vec::new();
        let mut m = Model::new();
        m.run_dir = raw.host.run_dir.map(|s| src.locate(s));
        m.lib_dir = raw.host.lib_dir.map(|s| src.locate(s));
        m.cgroup_root = raw.host.cgroup_root.map(|s| src.locate(s));
        m.net = raw.host.net.map(|s| src.locate(s));
        m.usage_retention = raw.host.usage_retention.map(|s| src.locate(s));
        m.usage_db = raw.host.usage_db.map(|s| src.locate(s));
        m.usage_interval = raw.host.usage_interval.map(|s| src.locate(s));
        m.lxcfs = raw.host.lxcfs.map(|s| src.locate(s));
        m.template = raw.template.name.map(|s| src.locate(s));
        if let Some(d) = raw.defaults {
            let loc = src.loc(d.span().start);
            m.defaults = rules_from(
                d.into_inner(),
                src,
                "defaults".into(),
                Some(loc),
                &mut diags,
            );
        }
        for (kind, table, out) in [
            ("plans", raw.plans, &mut m.plans),
            ("groups", raw.groups, &mut m.groups),
            ("users", raw.users, &mut m.users),
        ] {
            for (name, rules) in table {
                let loc = src.loc(name.span().start);
                let name = name.into_inner();
                let scope = format!("{kind}.{}", quote_key(&name));
                out.insert(
                    name,
                    rules_from(rules.into_inner(), src, scope, Some(loc), &mut diags),
                );
            }
        }
        for (name, mode) in raw.services {
            m.services.insert(name.into_inner(), src.locate(mode));
        }
        Ok((m, diags))
    }

    /// Lays a later file (a drop-in) over this one, key by key.
    pub(crate) fn overlay(&mut self, later: Model) {
        fn take<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        take(&mut self.run_dir, later.run_dir);
        take(&mut self.lib_dir, later.lib_dir);
        take(&mut self.cgroup_root, later.cgroup_root);
        take(&mut self.net, later.net);
        take(&mut self.usage_retention, later.usage_retention);
        take(&mut self.usage_db, later.usage_db);
        take(&mut self.usage_interval, later.usage_interval);
        take(&mut self.lxcfs, later.lxcfs);
        take(&mut self.template, later.template);
        self.defaults.overlay(later.defaults);
        for (mine, theirs) in [
            (&mut self.plans, later.plans),
            (&mut self.groups, later.groups),
            (&mut self.users, later.users),
        ] {
            for (name, rules) in theirs {
                match mine.get_mut(&name) {
                    Some(r) => r.overlay(rules),
                    None => {
                        mine.insert(name, rules);
                    }
                }
            }
        }
        self.services.extend(later.services);
    }
}

/// `alice` stays `alice`; a name TOML needs quoted (`"j.doe"`) is quoted.
pub(crate) fn quote_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Locates a raw table and folds `linger` into `on_logout`.
fn rules_from(
    raw: RawRules,
    src: &Source<'_>,
    scope: String,
    header: Option<Loc>,
    diags: &mut Vec<Diagnostic>,
) -> Rules {
    let mut r = Rules::locate(raw, src, scope, header);
    if let Some(linger) = r.linger.take() {
        if let Some(on) = &r.on_logout {
            diags.push(Diagnostic::error(
                Some(linger.loc.clone()),
                format!("{}.linger", r.scope),
                format!(
                    "both linger and on_logout are set (on_logout at {}): keep one",
                    on.loc
                ),
            ));
        } else {
            let value = if linger.value.0.is_zero() {
                OnLogout::Kill
            } else {
                OnLogout::Linger(linger.value.0)
            };
            r.on_logout = Some(Located {
                value,
                loc: linger.loc,
            });
        }
    }
    r
}
