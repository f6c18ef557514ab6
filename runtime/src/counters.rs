//! Login counters: what pam_hutch saw at every session it was asked to open
//! (logins by service and result, refusals by cause, how long the set-up
//! took), kept for `hutchctl metrics`, which renders them for Prometheus.
//!
//! One file per policy file, `<dir>/<hash of the config path>.counters`
//! (like the policy cache, and for the same reason: a login whose policy
//! cannot be read is still counted), under `/run/hutch/counters` (0700,
//! root's): counts start again at boot, which Prometheus reads as a counter
//! reset. The file is `SERIES VALUE` lines, the series written as the
//! exposition format writes it (`hutch_logins_total{service="sshd",result="created"}`).
//! Each update takes an exclusive flock on the file, reads it, and writes
//! it back in place; a reader takes a shared lock. A line that does not
//! parse is dropped.
//!
//! Histogram sums are kept in microseconds (`…_sum_us`, an integer) and
//! rendered in seconds.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where pam_hutch keeps the counters (fixed by the caller, never by the policy).
pub const DEFAULT_DIR: &str = "/run/hutch/counters";

/// `hutch_logins_total{service,result}`: sessions pam_hutch was asked to
/// open, by PAM service and what became of them ([`LoginResult`]).
pub const LOGINS: &str = "hutch_logins_total";
/// `hutch_login_refusals_total{cause}`: refused sessions by cause.
pub const REFUSALS: &str = "hutch_login_refusals_total";
/// `hutch_login_setup_seconds{kind}`: how long a confined login's set-up
/// took in pam_hutch: `create` (a new container, keeper start included) or
/// `join` (an existing one).
pub const SETUP: &str = "hutch_login_setup_seconds";

/// Upper bounds of the set-up histogram's buckets, in seconds.
pub const SETUP_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What became of one session pam_hutch was asked to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Confined in a container made for it.
    Created,
    /// Confined in the user's running container.
    Joined,
    /// Not confined (root, `confine = false`, a service that ignores).
    Exempt,
    /// `enforce = false`: would have been confined or refused; ran on the host.
    Monitor,
    /// Refused.
    Refused,
    /// Failed, let through unconfined by `on_error=ignore`.
    Unconfined,
}

impl LoginResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Created => "created",
            LoginResult::Joined => "joined",
            LoginResult::Exempt => "exempt",
            LoginResult::Monitor => "monitor",
            LoginResult::Refused => "refused",
            LoginResult::Unconfined => "unconfined",
        }
    }
}

/// The counters file of policy `config` in `dir`.
pub fn path_for(config: &Path, dir: &Path) -> PathBuf {
    hutch_policy::cache_path(config, dir).with_extension("counters")
}

/// Escapes a label value as the exposition format wants it.
pub fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A series name with labels: `name{k="v",...}` (or `name` alone).
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Counters by series.
pub type Counts = BTreeMap<String, u64>;

/// Parses the file's text; bad lines are dropped.
pub fn parse(text: &str) -> Counts {
    text.lines()
        .filter_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            Some((s.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn render(c: &Counts) -> String {
    c.iter().map(|(s, v)| format!("{s} {v}\n")).collect()
}

fn open(path: &Path, create: bool) -> io::Result<File> {
    if create {
        if let Some(dir) = path.parent() {
            if let Some(parent) = dir.parent() {
                let _ = fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent);
            }
            let _ = fs::DirBuilder::new().mode(0o700).create(dir);
        }
    }
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Adds each `(series, n)` to the file at `path` (made if missing).
pub fn add(path: &Path, incs: &[(String, u64)]) -> io::Result<()> {
    add_to(&open_for_update(path)?, incs)
}

/// Opens (making it) the counters file at `path` for [`add_to`]: pam_hutch
/// opens it before the session enters the container, whose mount namespace
/// has no `/run/hutch`.
pub fn open_for_update(path: &Path) -> io::Result<File> {
    open(path, true)
}

/// Adds each `(series, n)` to the counters file `file` (from [`open_for_update`]).
pub fn add_to(file: &File, incs: &[(String, u64)]) -> io::Result<()> {
    let mut f = file;
    f.lock()?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    let mut c = parse(&text);
    for (s, n) in incs {
        let v = c.entry(s.clone()).or_insert(0);
        *v = v.saturating_add(*n);
    }
    let out = render(&c);
    f.rewind()?;
    f.write_all(out.as_bytes())?;
    f.set_len(out.len() as u64)?;
    Ok(())
}

/// The counters at `path`; none when the file is missing.
pub fn read(path: &Path) -> io::Result<Counts> {
    let mut f = match open(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Counts::new()),
        Err(e) => return Err(e),
    };
    f.lock_shared()?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(parse(&text))
}

/// The increments of one login: its result by service, its refusal cause,
/// and for a confined one the set-up time in the histogram of `kind`.
pub fn login(
    service: &str,
    result: LoginResult,
    refusal: Option<&str>,
    setup: Option<(&str, Duration)>,
) -> Vec<(String, u64)> {
    let service = if service.is_empty() { "-" } else { service };
    let mut incs = vec![(
        series(LOGINS, &[("service", service), ("result", result.as_str())]),
        1,
    )];
    if let Some(cause) = refusal {
        incs.push((series(REFUSALS, &[("cause", cause)]), 1));
    }
    if let Some((kind, took)) = setup {
        let secs = took.as_secs_f64();
        for le in SETUP_BUCKETS {
            let n = u64::from(secs <= le);
            incs.push((
                series(
                    &format!("{SETUP}_bucket"),
                    &[("kind", kind), ("le", &le.to_string())],
                ),
                n,
            ));
        }
        incs.push((
            series(
                &format!("{SETUP}_bucket"),
                &[("kind", kind), ("le", "+Inf")],
            ),
            1,
        ));
        incs.push((series(&format!("{SETUP}_count"), &[("kind", kind)]), 1));
        incs.push((
            series(&format!("{SETUP}_sum_us"), &[("kind", kind)]),
            took.as_micros() as u64,
        ));
    }
    incs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Increments add up across calls; the histogram is cumulative; labels are escaped.
    #[test]
    fn add_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(
            Path::new("/etc/hutch/hutch.toml"),
            &dir.path().join("counters"),
        );
        assert!(read(&path).unwrap().is_empty());
        add(
            &path,
            &login(
                "sshd",
                LoginResult::Created,
                None,
                Some(("create", Duration::from_millis(20))),
            ),
        )
        .unwrap();
        add(
            &path,
            &login(
                "sshd",
                LoginResult::Joined,
                None,
                Some(("join", Duration::from_millis(1))),
            ),
        )
        .unwrap();
        add(
            &path,
            &login(
                "sshd",
                LoginResult::Joined,
                None,
                Some(("join", Duration::from_micros(1500))),
            ),
        )
        .unwrap();
        add(
            &path,
            &login("su\"x", LoginResult::Refused, Some("policy"), None),
        )
        .unwrap();
        let c = read(&path).unwrap();
        assert_eq!(
            c["hutch_logins_total{service=\"sshd\",result=\"joined\"}"],
            2
        );
        assert_eq!(
            c["hutch_logins_total{service=\"su\\\"x\",result=\"refused\"}"],
            1
        );
        assert_eq!(c["hutch_login_refusals_total{cause=\"policy\"}"], 1);
        assert_eq!(
            c["hutch_login_setup_seconds_bucket{kind=\"create\",le=\"0.01\"}"],
            0
        );
        assert_eq!(
            c["hutch_login_setup_seconds_bucket{kind=\"create\",le=\"0.025\"}"],
            1
        );
        assert_eq!(
            c["hutch_login_setup_seconds_bucket{kind=\"join\",le=\"0.002\"}"],
            2
        );
        assert_eq!(
            c["hutch_login_setup_seconds_bucket{kind=\"join\",le=\"+Inf\"}"],
            2
        );
        assert_eq!(c["hutch_login_setup_seconds_sum_us{kind=\"join\"}"], 2500);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }

    /// A symlink in place of the file is not followed.
    #[test]
    fn no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "").unwrap();
        let path = dir.path().join("x.counters");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(add(&path, &login("sshd", LoginResult::Exempt, None, None)).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "");
    }
}
