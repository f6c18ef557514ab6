//! The policy's string values that carry meaning: paths (absolute, no `..`),
//! template and plan names, the hostname pattern, `{user}`/`{uid}`/`{home}`
//! substitution, mounts (and the targets they may never cover), per-device
//! I/O limits, and the small enumerations (`writable`, `network`,
//! `[services]` modes). Each checks itself while the TOML is read, so its
//! errors carry the value's line and column.

use std::fmt;
use std::path::{Component, Path};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::units::{format_size, Size};
use crate::IoLimit;

/// Values substituted into patterns.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub user: &'a str,
    pub uid: u32,
    pub home: &'a str,
}

/// Stand-ins used to check a pattern before any account is known.
pub(crate) const SAMPLE: Vars<'static> = Vars {
    user: "user",
    uid: 1000,
    home: "/home/user",
};

/// Replaces `{user}`, `{uid}` and (if `allow_home`) `{home}` in `pattern`.
pub fn substitute(pattern: &str, vars: Vars<'_>, allow_home: bool) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("\"{pattern}\": unclosed \"{{\""))?;
        match &after[..close] {
            "user" => out.push_str(vars.user),
            "uid" => out.push_str(&vars.uid.to_string()),
            "home" if allow_home => out.push_str(vars.home),
            other => {
                let known = if allow_home {
                    "{user}, {uid} and {home}"
                } else {
                    "{user} and {uid}"
                };
                return Err(format!(
                    "\"{pattern}\": unknown placeholder \"{{{other}}}\" (known: {known})"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("\"{pattern}\": unmatched \"}}\""));
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a path is absolute, has no `..` and no NUL.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.contains('\0') {
        return Err(format!("\"{}\" contains a NUL byte", path.escape_debug()));
    }
    if !path.starts_with('/') {
        return Err(format!("\"{path}\" is not an absolute path"));
    }
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(format!("\"{path}\" contains \"..\""));
    }
    Ok(())
}

/// If a mount at `target` would cover a place that must stay out of the
/// user's reach, names that place.
pub fn forbidden_target(target: &str) -> Option<String> {
    let p = Path::new(target);
    let mut parts = p
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir));
    let Some(Component::Normal(first)) = parts.next() else {
        return Some("/".into());
    };
    let first = first.to_string_lossy();
    match first.as_ref() {
        "etc" | "usr" | "bin" | "sbin" | "proc" | "sys" | "dev" => Some(format!("/{first}")),
        f if f.starts_with("lib") => Some(format!("/{first}")),
        "run" => match parts.next() {
            None => Some("/run".into()),
            Some(Component::Normal(s)) if s == "hutch" => Some("/run/hutch".into()),
            _ => None,
        },
        _ => None,
    }
}

fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d)
}

/// An absolute path without `..`: `shell`, `run_dir`, `lib_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(pub String);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        check_path(&s).map_err(|e| de::Error::custom(format!("invalid path {e}")))?;
        Ok(AbsPath(s))
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An absolute path, or `"none"`: `[host] lxcfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathOrNone(pub Option<String>);

impl<'de> Deserialize<'de> for PathOrNone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        if s == "none" {
            return Ok(PathOrNone(None));
        }
        check_path(&s).map_err(|e| de::Error::custom(format!("invalid path {e} (or \"none\")")))?;
        Ok(PathOrNone(Some(s)))
    }
}

impl fmt::Display for PathOrNone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "{p:?}"),
            None => f.write_str("\"none\""),
        }
    }
}

/// `cgroup_root`: absolute (`/hutch`) or relative (`hutch-ci`), no `..`, not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoot(pub String);

impl<'de> Deserialize<'de> for CgroupRoot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        let bad = s.trim_matches('/').is_empty()
            || s.contains('\0')
            || Path::new(&s)
                .components()
                .any(|c| c == Component::ParentDir);
        if bad {
            return Err(de::Error::custom(format!(
                "invalid cgroup_root \"{}\": expected a cgroup path such as \"/hutch\" or \"hutch-ci\", without \"..\"",
                s.escape_debug()
            )));
        }
        Ok(CgroupRoot(s))
    }
}

/// The `seccomp` key: `"default"`, `"off"`, or the absolute path of a
/// root-owned file of extra syscall names (read on the host; whether it
/// exists and what it names is checked by `hutchctl check` and at login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProfile(pub String);

impl<'de> Deserialize<'de> for SeccompProfile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        if s == "default" || s == "off" {
            return Ok(SeccompProfile(s));
        }
        if s.starts_with('/') {
            check_path(&s)
                .map_err(|e| de::Error::custom(format!("invalid seccomp profile path {e}")))?;
            return Ok(SeccompProfile(s));
        }
        Err(de::Error::custom(format!(
            "invalid seccomp profile \"{}\": expected \"default\", \"off\" or the absolute path of a file of syscall names",
            s.escape_debug()
        )))
    }
}

impl fmt::Display for SeccompProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A name of a template or plan: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name(pub String);

pub(crate) fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid name \"{}\": use letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit, at most 64", s.escape_debug()))
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        check_name(&s).map_err(de::Error::custom)?;
        Ok(Name(s))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The longest hostname the kernel takes.
pub const HOSTNAME_MAX: usize = 64;

fn hostname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

/// `hostname = "{user}-box"`: `{user}` and `{uid}`, literal characters from `[A-Za-z0-9-.]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnamePattern(pub String);

impl HostnamePattern {
    /// The hostname for one account. Characters a hostname cannot hold (`_`
    /// in `john_doe`) become `-`, and the result is cut at 64, so every
    /// account gets a valid hostname.
    pub fn render(&self, user: &str, uid: u32) -> String {
        let raw = substitute(
            &self.0,
            Vars {
                user,
                uid,
                home: "",
            },
            false,
        )
        .unwrap_or_else(|_| self.0.clone());
        let mut name: String = raw
            .chars()
            .map(|c| if hostname_char(c) { c } else { '-' })
            .take(HOSTNAME_MAX)
            .collect();
        if name.is_empty() {
            name.push_str("hutch");
        }
        name
    }
}

impl<'de> Deserialize<'de> for HostnamePattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d)?;
        let sample = substitute(
            &s,
            Vars {
                user: "u",
                uid: 0,
                home: "",
            },
            false,
        )
        .map_err(|e| de::Error::custom(format!("invalid hostname {e}")))?;
        if let Some(c) = sample.chars().find(|&c| !hostname_char(c)) {
            return Err(de::Error::custom(format!(
                "invalid hostname \"{s}\": {c:?} is not allowed (use letters, digits, \"-\" and \".\")"
            )));
        }
        if sample.is_empty() || sample.len() > HOSTNAME_MAX {
            return Err(de::Error::custom(format!(
                "invalid hostname \"{s}\": must be 1 to 64 characters"
            )));
        }
        Ok(HostnamePattern(s))
    }
}

impl fmt::Display for HostnamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One policy mount, patterns not yet substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    source: String,
    target: String,
    mode: Option<String>,
}

impl MountSpec {
    /// Checks the substituted `source` and `target`: absolute, no `..`, the
    /// target not over a forbidden place.
    pub fn check(source: &str, target: &str) -> Result<(), String> {
        check_path(source).map_err(|e| format!("invalid mount source {e}"))?;
        check_path(target).map_err(|e| format!("invalid mount target {e}"))?;
        if let Some(place) = forbidden_target(target) {
            return Err(format!(
                "mount target \"{target}\" is refused: it would cover {place}, which must stay out of the user's reach"
            ));
        }
        Ok(())
    }
}

impl MountSpec {
    fn from_raw(raw: RawMount) -> Result<MountSpec, String> {
        let read_only = match raw.mode.as_deref() {
            None | Some("ro") => true,
            Some("rw") => false,
            Some(m) => {
                return Err(format!(
                    "invalid mount mode \"{m}\": expected \"ro\" or \"rw\""
                ))
            }
        };
        let source = substitute(&raw.source, SAMPLE, true)
            .map_err(|e| format!("invalid mount source {e}"))?;
        let target = substitute(&raw.target, SAMPLE, true)
            .map_err(|e| format!("invalid mount target {e}"))?;
        // Check the pattern itself too: "{home}/../etc" must not pass because the sample home is harmless.
        for (what, p) in [("source", &raw.source), ("target", &raw.target)] {
            if Path::new(p).components().any(|c| c == Component::ParentDir) {
                return Err(format!("invalid mount {what} \"{p}\" contains \"..\""));
            }
        }
        MountSpec::check(&source, &target)?;
        Ok(MountSpec {
            source: raw.source,
            target: raw.target,
            read_only,
        })
    }
}

/// Deserializes a table through a visitor, so that an error of `check`
/// carries the span of that table (not of the array around it).
fn checked_table<'de, D, R, T>(
    d: D,
    what: &'static str,
    check: fn(R) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
{
    struct V<R, T> {
        what: &'static str,
        check: fn(R) -> Result<T, String>,
    }
    impl<'de, R: Deserialize<'de>, T> Visitor<'de> for V<R, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.check)(raw).map_err(de::Error::custom)
        }
    }
    d.deserialize_map(V { what, check })
}

impl<'de> Deserialize<'de> for MountSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_table(
            d,
            "a mount: { source = \"/path\", target = \"/path\", mode = \"ro\" }",
            MountSpec::from_raw,
        )
    }
}

impl fmt::Display for MountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.read_only { "ro" } else { "rw" };
        write!(
            f,
            "{{ source = {:?}, target = {:?}, mode = \"{mode}\" }}",
            self.source, self.target
        )
    }
}

/// A list of mounts (`mounts = [...]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MountList(pub Vec<MountSpec>);

impl fmt::Display for MountList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, m) in self.0.iter().enumerate() {
            write!(f, "{}{m}", if i == 0 { " " } else { ", " })?;
        }
        f.write_str(if self.0.is_empty() { "]" } else { " ]" })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    device: String,
    read_bps: Option<Size>,
    write_bps: Option<Size>,
    read_iops: Option<u64>,
    write_iops: Option<u64>,
}

fn io_from_raw(r: RawIo) -> Result<IoLimit, String> {
    check_path(&r.device).map_err(|e| format!("invalid io device {e}"))?;
    if !r.device.starts_with("/dev/") {
        return Err(format!(
            "invalid io device \"{}\": expected a block device under /dev",
            r.device
        ));
    }
    let limit = IoLimit {
        device: r.device.into(),
        read_bps: r.read_bps.map(|s| s.0),
        write_bps: r.write_bps.map(|s| s.0),
        read_iops: r.read_iops,
        write_iops: r.write_iops,
    };
    let all = [
        limit.read_bps,
        limit.write_bps,
        limit.read_iops,
        limit.write_iops,
    ];
    if all.iter().all(Option::is_none) {
        return Err(format!(
            "io device \"{}\" sets no limit (give read_bps, write_bps, read_iops or write_iops)",
            limit.device.display()
        ));
    }
    if all.contains(&Some(0)) {
        return Err(format!(
            "io device \"{}\": a limit of 0 would stop all I/O",
            limit.device.display()
        ));
    }
    Ok(limit)
}

struct IoEntry(IoLimit);

impl<'de> Deserialize<'de> for IoEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_table(
            d,
            "an io limit: { device = \"/dev/vda\", read_bps = \"50M\", ... }",
            |r| io_from_raw(r).map(IoEntry),
        )
    }
}

/// `io = [ { device = "/dev/vda", read_bps = "50M", write_iops = 500 } ]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoList(pub Vec<IoLimit>);

impl<'de> Deserialize<'de> for IoList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<IoEntry>::deserialize(d)?;
        let mut out: Vec<IoLimit> = Vec::with_capacity(entries.len());
        for IoEntry(l) in entries {
            if out.iter().any(|o| o.device == l.device) {
                return Err(de::Error::custom(format!(
                    "io device \"{}\" is listed twice",
                    l.device.display()
                )));
            }
            out.push(l);
        }
        Ok(IoList(out))
    }
}

impl fmt::Display for IoList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, l) in self.0.iter().enumerate() {
            write!(
                f,
                "{}{{ device = {:?}",
                if i == 0 { " " } else { ", " },
                l.device.display().to_string()
            )?;
            for (k, v, size) in [
                ("read_bps", l.read_bps, true),
                ("write_bps", l.write_bps, true),
                ("read_iops", l.read_iops, false),
                ("write_iops", l.write_iops, false),
            ] {
                match (v, size) {
                    (Some(v), true) => write!(f, ", {k} = \"{}\"", format_size(v))?,
                    (Some(v), false) => write!(f, ", {k} = {v}")?,
                    (None, _) => {}
                }
            }
            f.write_str(" }")?;
        }
        f.write_str(if self.0.is_empty() { "]" } else { " ]" })
    }
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $( $(#[$vm:meta])* $variant:ident = $text:literal ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name { #[default] $( $(#[$vm])* $variant ),* }
        impl $name {
            /// The word used in the policy file.
            pub fn as_str(self) -> &'static str { match self { $( $name::$variant => $text ),* } }
            /// Every variant, in the order written (the cache stores the index).
            pub(crate) const ALL: &'static [$name] = &[ $( $name::$variant ),* ];
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = string(d)?;
                match s.as_str() {
                    $( $text => Ok($name::$variant), )*
                    _ => Err(de::Error::custom(format!(
                        concat!("invalid value \"{}\": expected ", $( "\"", $text, "\" ", )*),
                        s
                    ).trim_end().replace("\" \"", "\", \""))),
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "\"{}\"", self.as_str()) }
        }
    };
}

word_enum! {
    /// `writable`: where the user's writable layer lives.
    WritableMode {
        /// A tmpfs of `writable_size`, gone at teardown (the default).
        Ephemeral = "ephemeral",
        /// An ext4 image under `<lib_dir>/users/<user>/`, kept across containers.
        Persistent = "persistent",
    }
}

word_enum! {
    /// `cpus`: which host CPUs a container runs on (its cpuset).
    CpusMode {
        /// As many as `cpu` allows, rounded up (all without a `cpu` limit),
        /// the ones fewest other containers run on; `nproc` inside counts them.
        Auto = "auto",
        /// Every CPU of the host: only the `cpu` quota limits.
        All = "none",
    }
}

word_enum! {
    /// `network`: the container's network.
    NetworkMode {
        /// Only `lo` in its own network namespace.
        Loopback = "loopback",
        /// The same as `loopback`.
        NoNetwork = "none",
        /// A veth pair to the host's bridge, with an address from the pool.
        Veth = "veth",
        /// A macvlan (private mode) on `net_device`.
        Macvlan = "macvlan",
        /// A VLAN `vlan_id` on `net_device`.
        Vlan = "vlan",
        /// The host interface `net_device` itself, moved in and given back at teardown.
        Phys = "phys",
    }
}

word_enum! {
    /// `[services]`: what a PAM service does with a confined user.
    ServiceMode {
        /// The session goes into the user's container.
        Confine = "confine",
        /// The session is refused.
        Refuse = "refuse",
        /// hutch stays out: the session runs on the host.
        Ignore = "ignore",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placeholders are substituted; unknown ones and {home} where not allowed are refused.
    #[test]
    fn substitution() {
        let v = Vars {
            user: "alice",
            uid: 1001,
            home: "/home/alice",
        };
        assert_eq!(
            substitute("/srv/{user}/{uid}", v, true).unwrap(),
            "/srv/alice/1001"
        );
        assert_eq!(
            substitute("{home}/www", v, true).unwrap(),
            "/home/alice/www"
        );
        assert_eq!(
            substitute("{home}", v, false).unwrap_err(),
            "\"{home}\": unknown placeholder \"{home}\" (known: {user} and {uid})"
        );
        assert_eq!(
            substitute("/a/{usr}", v, true).unwrap_err(),
            "\"/a/{usr}\": unknown placeholder \"{usr}\" (known: {user}, {uid} and {home})"
        );
    }

    /// Every place that must stay root's is refused as a mount target, and only those.
    #[test]
    fn forbidden_targets() {
        for t in [
            "/",
            "/etc",
            "/etc/ssh",
            "/usr/local",
            "/lib",
            "/lib64/x",
            "/bin",
            "/sbin",
            "/proc",
            "/sys/fs",
            "/dev/shm",
            "/run",
            "/run/hutch/users",
            "//etc",
        ] {
            assert!(forbidden_target(t).is_some(), "{t} should be refused");
        }
        for t in [
            "/data",
            "/home/alice/www",
            "/srv",
            "/run/user/1000",
            "/opt",
            "/etcetera",
        ] {
            assert_eq!(forbidden_target(t), None, "{t} should be allowed");
        }
    }

    /// Hostnames: characters a hostname cannot hold become "-", long ones are cut at 64.
    #[test]
    fn hostname_render() {
        let p = HostnamePattern("{user}-box".into());
        assert_eq!(p.render("john_doe", 1000), "john-doe-box");
        assert_eq!(HostnamePattern("u{uid}".into()).render("x", 1234), "u1234");
        assert_eq!(
            HostnamePattern("{user}".into())
                .render(&"a".repeat(100), 1)
                .len(),
            64
        );
    }
}
