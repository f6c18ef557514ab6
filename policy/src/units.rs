//! The admin's units: sizes (`"1G"`, `512M`, bytes), durations (`"30s"`,
//! `"5m"`, `"1h30m"`), CPU (`"1.5"` cores, `"150%"`), counts with `"none"`,
//! and the `on_logout` forms. Each is a plain parser plus a serde value type,
//! so a bad unit is reported by the TOML parser at the value's line and
//! column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::CpuQuota;

/// The CFS/cpu.max period hutch writes quotas against.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A limit that may be lifted: `"none"` (also `"max"`, `"unlimited"`) or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// A number (bytes, processes, sessions): the ceiling.
    Max(u64),
    /// No limit. Sorts above every `Max`, so `min` means "tighter".
    Unlimited,
}

impl Limit {
    /// `Some(n)` for a ceiling, `None` for no limit.
    pub fn get(self) -> Option<u64> {
        match self {
            Limit::Max(n) => Some(n),
            Limit::Unlimited => None,
        }
    }
}

fn is_unlimited(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "none" | "max" | "unlimited"
    )
}

/// Parses `"1G"`, `"1.5G"`, `"512M"`, `"64k"`, `"1024"` (bytes): powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size \"{text}\": expected a number with an optional unit K, M, G or T (e.g. \"512M\")"));
    }
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(format!("invalid size \"{text}\": unknown unit \"{other}\" (use K, M, G or T, powers of 1024, or plain bytes)"))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size \"{text}\": \"{num}\" is not a number"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size \"{text}\": too large"));
    }
    Ok(bytes as u64)
}

/// Formats bytes in the largest unit that divides them (`1G`, `1536M`, `100`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes & ((1u64 << shift) - 1) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Parses `0`, `"30s"`, `"5m"`, `"1h"`, `"2d"`, `"1h30m"`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = |why: &str| {
        format!("invalid duration \"{text}\": {why} (e.g. \"0\", \"30s\", \"5m\", \"1h30m\")")
    };
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| bad("too large"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "" => return Err(bad("a unit is missing after a number")),
            u => return Err(bad(&format!("unknown unit \"{u}\", use s, m, h or d"))),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too large"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds as `"1h30m"`, `"45s"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (scale, unit) in [(86400, "d"), (3600, "h"), (60, "m"), (1, "s")] {
        if s >= scale {
            out.push_str(&format!("{}{unit}", s / scale));
            s %= scale;
        }
    }
    out
}

/// Parses CPU as cores (`"1.5"`, `2`) or percent of one core (`"150%"`).
pub fn parse_cpu(text: &str) -> Result<CpuQuota, String> {
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 0.01),
        None => (t, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| {
        format!(
            "invalid cpu \"{text}\": expected cores (\"1.5\") or percent of one core (\"150%\")"
        )
    })?;
    cores_to_quota(v * scale).map_err(|why| format!("invalid cpu \"{text}\": {why}"))
}

fn cores_to_quota(cores: f64) -> Result<CpuQuota, String> {
    if !cores.is_finite() || cores < 0.01 {
        return Err("must be at least 0.01 cores (1%)".into());
    }
    if cores > 4096.0 {
        return Err("must be at most 4096 cores".into());
    }
    Ok(CpuQuota {
        quota_us: (cores * CPU_PERIOD_US as f64).round() as u64,
        period_us: CPU_PERIOD_US,
    })
}

/// Formats a quota as cores (`"1.5"`).
pub fn format_cpu(q: CpuQuota) -> String {
    let cores = q.quota_us as f64 / q.period_us as f64;
    format!("\"{}\"", (cores * 1000.0).round() / 1000.0)
}

/// What happens to the container when its last session closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLogout {
    /// Torn down at once.
    #[default]
    Kill,
    /// Torn down after this long without a session (a new login in between keeps it).
    Linger(Duration),
    /// Kept while any process runs in it (a `nohup` job); torn down when the last ends.
    KeepWhileRunning,
}

impl OnLogout {
    /// How long to linger (0 for `kill` and `keep-while-running`).
    pub fn linger(self) -> Duration {
        match self {
            OnLogout::Linger(d) => d,
            _ => Duration::ZERO,
        }
    }
}

impl fmt::Display for OnLogout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnLogout::Kill => f.write_str("kill"),
            OnLogout::Linger(d) => write!(f, "linger:{}", format_duration(*d)),
            OnLogout::KeepWhileRunning => f.write_str("keep-while-running"),
        }
    }
}

/// Parses `"kill"`, `"linger:5m"`, `"keep-while-running"`.
pub fn parse_on_logout(text: &str) -> Result<OnLogout, String> {
    match text.trim() {
        "kill" => Ok(OnLogout::Kill),
        "keep-while-running" => Ok(OnLogout::KeepWhileRunning),
        t => match t.strip_prefix("linger:") {
            Some(d) => match parse_duration(d)? {
                Duration::ZERO => Ok(OnLogout::Kill),
                d => Ok(OnLogout::Linger(d)),
            },
            None => Err(format!(
                "invalid on_logout \"{text}\": expected \"kill\", \"linger:DURATION\" (e.g. \"linger:5m\") or \"keep-while-running\""
            )),
        },
    }
}

// ---- serde value types -------------------------------------------------

/// A number or a string, as TOML gives it.
enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn non_negative<E: de::Error>(what: &str, v: i64) -> Result<u64, E> {
    u64::try_from(v).map_err(|_| E::custom(format!("invalid {what} {v}: must not be negative")))
}

/// A size that may be `"none"`: `memory`, `memory_high`, `swap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SizeLimit(pub Limit);

impl<'de> Deserialize<'de> for SizeLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Int(v) => Ok(SizeLimit(Limit::Max(non_negative("size", v)?))),
            Scalar::Str(s) if is_unlimited(&s) => Ok(SizeLimit(Limit::Unlimited)),
            Scalar::Str(s) => parse_size(&s)
                .map(|b| SizeLimit(Limit::Max(b)))
                .map_err(de::Error::custom),
            Scalar::Float(f) => Err(de::Error::custom(format!(
                "invalid size {f}: write a unit as a string, e.g. \"1.5G\""
            ))),
        }
    }
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Limit::Max(b) => write!(f, "\"{}\"", format_size(b)),
            Limit::Unlimited => f.write_str("\"none\""),
        }
    }
}

/// A size that must be given: `writable_size`, I/O bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match SizeLimit::deserialize(d)?.0 {
            Limit::Max(b) => Ok(Size(b)),
            Limit::Unlimited => Err(de::Error::custom("this size cannot be \"none\"")),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", format_size(self.0))
    }
}

/// A count that may be `"none"`: `pids`, `max_sessions`. At least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CountLimit(pub Limit);

impl<'de> Deserialize<'de> for CountLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Int(v) if v >= 1 => Ok(CountLimit(Limit::Max(v as u64))),
            Scalar::Int(v) => Err(de::Error::custom(format!(
                "invalid count {v}: must be at least 1, or \"none\""
            ))),
            Scalar::Str(s) if is_unlimited(&s) => Ok(CountLimit(Limit::Unlimited)),
            Scalar::Str(s) => Err(de::Error::custom(format!(
                "invalid count \"{s}\": expected a whole number or \"none\""
            ))),
            Scalar::Float(f) => Err(de::Error::custom(format!(
                "invalid count {f}: expected a whole number or \"none\""
            ))),
        }
    }
}

impl fmt::Display for CountLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Limit::Max(n) => write!(f, "{n}"),
            Limit::Unlimited => f.write_str("\"none\""),
        }
    }
}

/// CPU: cores or percent, or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLimit(pub Option<CpuQuota>);

impl<'de> Deserialize<'de> for CpuLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let q = match Scalar::deserialize(d)? {
            Scalar::Int(v) => cores_to_quota(v as f64).map_err(|w| format!("invalid cpu {v}: {w}")),
            Scalar::Float(v) => cores_to_quota(v).map_err(|w| format!("invalid cpu {v}: {w}")),
            Scalar::Str(s) if is_unlimited(&s) => return Ok(CpuLimit(None)),
            Scalar::Str(s) => parse_cpu(&s),
        };
        q.map(|q| CpuLimit(Some(q))).map_err(de::Error::custom)
    }
}

impl fmt::Display for CpuLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(q) => f.write_str(&format_cpu(q)),
            None => f.write_str("\"none\""),
        }
    }
}

/// A cgroup weight, 1 to 10000 (`cpu_weight`, `io_weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(pub u64);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Int(v) if (1..=10_000).contains(&v) => Ok(Weight(v as u64)),
            Scalar::Int(v) => Err(de::Error::custom(format!(
                "invalid weight {v}: must be between 1 and 10000"
            ))),
            _ => Err(de::Error::custom(
                "invalid weight: expected a whole number between 1 and 10000",
            )),
        }
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A duration (`linger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Int(v) => Ok(Seconds(Duration::from_secs(non_negative("duration", v)?))),
            Scalar::Str(s) => parse_duration(&s).map(Seconds).map_err(de::Error::custom),
            Scalar::Float(f) => Err(de::Error::custom(format!(
                "invalid duration {f}: use whole seconds or a unit, e.g. \"90s\""
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for OnLogout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Str(s) => parse_on_logout(&s).map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "invalid on_logout: expected \"kill\", \"linger:DURATION\" or \"keep-while-running\"",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes take K/M/G/T as powers of 1024, decimals, and plain bytes.
    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(
            parse_size("1X").unwrap_err(),
            "invalid size \"1X\": unknown unit \"X\" (use K, M, G or T, powers of 1024, or plain bytes)"
        );
        assert_eq!(
            parse_size("G").unwrap_err(),
            "invalid size \"G\": expected a number with an optional unit K, M, G or T (e.g. \"512M\")"
        );
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(100), "100");
    }

    /// Durations take s, m, h, d, compound forms and bare seconds.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            "invalid duration \"5x\": unknown unit \"x\", use s, m, h or d (e.g. \"0\", \"30s\", \"5m\", \"1h30m\")"
        );
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    /// CPU is cores or percent of a core, against a 100 ms period.
    #[test]
    fn cpu() {
        assert_eq!(
            parse_cpu("1.5"),
            Ok(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cpu("150%"),
            Ok(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cpu("50%"),
            Ok(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cpu("0").unwrap_err(),
            "invalid cpu \"0\": must be at least 0.01 cores (1%)"
        );
        assert_eq!(
            parse_cpu("lots").unwrap_err(),
            "invalid cpu \"lots\": expected cores (\"1.5\") or percent of one core (\"150%\")"
        );
    }

    /// on_logout takes kill, linger:DURATION and keep-while-running.
    #[test]
    fn on_logout() {
        assert_eq!(parse_on_logout("kill"), Ok(OnLogout::Kill));
        assert_eq!(
            parse_on_logout("linger:5m"),
            Ok(OnLogout::Linger(Duration::from_secs(300)))
        );
        assert_eq!(parse_on_logout("linger:0"), Ok(OnLogout::Kill));
        assert_eq!(
            parse_on_logout("keep-while-running"),
            Ok(OnLogout::KeepWhileRunning)
        );
        assert_eq!(
            parse_on_logout("stay").unwrap_err(),
            "invalid on_logout \"stay\": expected \"kill\", \"linger:DURATION\" (e.g. \"linger:5m\") or \"keep-while-running\""
        );
        assert_eq!(
            OnLogout::Linger(Duration::from_secs(90)).to_string(),
            "linger:1m30s"
        );
    }
}
