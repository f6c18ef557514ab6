//! `hutchctl metrics [--textfile PATH] [--record]`: the Prometheus text
//! exposition of every running container's usage and limits and of hutch's
//! own health, on stdout or as a node_exporter textfile (written to a
//! temporary file beside PATH and renamed over it, so the collector never
//! reads half a file). The package's `hutch-metrics.timer` runs it every
//! 15 s into node_exporter's textfile directory.
//!
//! Everything is read from where it is kept, not from the keepers: usage,
//! limit hits and limits from the container's cgroup files (v1 or v2 alike,
//! through the cgroup layer), sessions and templates from the keepers'
//! state, logins and refusals from pam_hutch's counters
//! ([`hutch_runtime::counters`]). No HTTP endpoint: node_exporter already
//! serves the file (with its TLS and authentication), and a root daemon
//! listening on the network is not worth what it would add.
//!
//! Names follow Prometheus' conventions: `hutch_` first, base units
//! (`_bytes`, `_seconds`), `_total` for counters, per-container series
//! labelled `user`. hutchctl(8) lists them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hutch_runtime::cgroup::{Applied, CgroupRoot, Stats};
use hutch_runtime::counters;
use hutch_runtime::keeper::state::State;

use crate::Cli;

/// One metric family: its samples in the order added.
struct Family {
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, String)>,
}

/// An exposition being built: families in the order first named.
#[derive(Default)]
pub struct Exposition {
    order: Vec<&'static str>,
    families: BTreeMap<&'static str, Family>,
}

/// A number as the text format writes it.
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    fn family(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> &mut Family {
        if !self.families.contains_key(name) {
            self.order.push(name);
        }
        self.families.entry(name).or_insert(Family {
            help,
            kind,
            samples: Vec::new(),
        })
    }

    /// Adds a sample of family `name` (series `name` + `suffix`, with labels).
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let series = counters::series(&format!("{name}{suffix}"), labels);
        self.family(name, kind, help)
            .samples
            .push((series, num(value)));
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.add(name, "gauge", help, "", labels, v);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.add(name, "counter", help, "", labels, v);
    }

    /// The text: `# HELP`, `# TYPE`, then the samples, family by family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let f = &self.families[name];
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (s, v) in &f.samples {
                let _ = writeln!(out, "{s} {v}");
            }
        }
        out
    }
}

/// What metrics are made of, gathered once.
pub struct Snapshot {
    pub containers: Vec<Container>,
    pub templates: Vec<hutch_runtime::template::TemplateInfo>,
    pub counters: counters::Counts,
    /// The policy loaded (else the last good one, or the defaults, gave the host settings).
    pub policy_ok: bool,
}

/// One running container.
pub struct Container {
    pub state: State,
    pub keeper_alive: bool,
    pub frozen: bool,
    pub stats: Option<Stats>,
    pub applied: Option<Applied>,
}

/// The host settings of `config`: the policy's, else the last good policy's,
/// else the built-in ones; and whether the policy itself loaded.
pub fn host_settings(config: &Path) -> (hutch_policy::HostSettings, bool) {
    match hutch_policy::Policy::load(config) {
        Ok(p) => (p.host().clone(), true),
        Err(_) => {
            let fallback =
                hutch_policy::Policy::last_good(config, Path::new(hutch_policy::DEFAULT_CACHE_DIR))
                    .or_else(|| hutch_policy::Policy::parse("", config).ok());
            let host = fallback.map(|p| p.host().clone());
            (host.expect("the empty policy is valid"), false)
        }
    }
}

/// Reads everything `metrics` shows.
pub fn snapshot(cli: &Cli) -> anyhow::Result<Snapshot> {
    let (host, policy_ok) = host_settings(&cli.config);
    let root = CgroupRoot::open(&host.cgroup_root).ok();
    let mut containers = Vec::new();
    let dir = hutch_runtime::paths::users_dir(&host.run_dir);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let Ok(state) = State::read(&e.path().join("state.json")) else {
                continue;
            };
            let cg = root
                .as_ref()
                .and_then(|r| r.existing(&hutch_runtime::paths::user_cgroup(&state.user)));
            let keeper_alive = state.keeper_pid > 0
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.keeper_pid), None)
                    .is_ok();
            containers.push(Container {
                keeper_alive,
                frozen: cg.as_ref().is_some_and(crate::freeze::is_frozen),
                stats: cg.as_ref().and_then(|c| c.stats().ok()),
                applied: cg.as_ref().and_then(|c| c.applied().ok()),
                state,
            });
        }
    }
    containers.sort_by(|a, b| a.state.user.cmp(&b.state.user));
    let templates = hutch_runtime::template::TemplateStore::new(&host.lib_dir, &host.run_dir)
        .list()
        .unwrap_or_default();
    let counters = counters::read(&counters::path_for(
        &cli.config,
        Path::new(counters::DEFAULT_DIR),
    ))
    .unwrap_or_default();
    Ok(Snapshot {
        containers,
        templates,
        counters,
        policy_ok,
    })
}

/// The exposition of a snapshot.
pub fn exposition(s: &Snapshot) -> Exposition {
    let mut x = Exposition::default();
    x.gauge(
        "hutch_build_info",
        "The running hutchctl's version and git commit.",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("HUTCH_GIT_COMMIT")),
        ],
        1.0,
    );
    x.gauge(
        "hutch_policy_ok",
        "1 when the policy file and its drop-ins load; 0 when they do not (confined logins are refused).",
        &[],
        f64::from(u8::from(s.policy_ok)),
    );
    let live = s.containers.iter().filter(|c| c.keeper_alive).count();
    x.gauge(
        "hutch_containers",
        "Running containers (a live keeper).",
        &[],
        live as f64,
    );
    x.gauge(
        "hutch_containers_stale",
        "Container state left by a keeper that is gone.",
        &[],
        (s.containers.len() - live) as f64,
    );
    let sessions: usize = s
        .containers
        .iter()
        .filter(|c| c.keeper_alive)
        .map(|c| c.state.sessions.len())
        .sum();
    x.gauge(
        "hutch_sessions",
        "Open sessions in all containers.",
        &[],
        sessions as f64,
    );
    for c in s.containers.iter().filter(|c| c.keeper_alive) {
        container(&mut x, c);
    }
    for t in &s.templates {
        template(&mut x, t);
    }
    logins(&mut x, &s.counters);
    x
}

/// The series of one container, labelled `user`.
fn container(x: &mut Exposition, c: &Container) {
    let st = &c.state;
    let u: &[(&str, &str)] = &[("user", &st.user)];
    let generation = st.generation.to_string();
    x.gauge(
        "hutch_container_info",
        "A running container: its template generation and hostname.",
        &[
            ("user", &st.user),
            ("template", &st.template),
            ("generation", &generation),
            ("hostname", &st.hostname),
        ],
        1.0,
    );
    x.gauge(
        "hutch_container_start_time_seconds",
        "When the container was made (Unix time).",
        u,
        st.started as f64,
    );
    x.gauge(
        "hutch_container_sessions",
        "Open sessions in the container.",
        u,
        st.sessions.len() as f64,
    );
    x.gauge(
        "hutch_container_frozen",
        "1 while the container is frozen (hutchctl freeze).",
        u,
        f64::from(u8::from(c.frozen)),
    );
    let s = c.stats.clone().unwrap_or_default();
    let mut g = |name, help, v: Option<u64>, scale: f64| {
        if let Some(v) = v {
            x.gauge(name, help, u, v as f64 * scale);
        }
    };
    g(
        "hutch_container_memory_bytes",
        "Memory the container uses now.",
        s.memory_current,
        1.0,
    );
    g(
        "hutch_container_memory_peak_bytes",
        "The most memory the container has used.",
        s.memory_peak,
        1.0,
    );
    g(
        "hutch_container_pids",
        "Tasks in the container now.",
        s.pids_current,
        1.0,
    );
    let a = c.applied.clone().unwrap_or_default();
    g(
        "hutch_container_memory_limit_bytes",
        "The memory limit in force (memory.max / memory.limit_in_bytes).",
        a.memory_max,
        1.0,
    );
    g(
        "hutch_container_memory_high_bytes",
        "The memory.high (v1: soft limit) in force.",
        a.memory_high,
        1.0,
    );
    g(
        "hutch_container_pids_limit",
        "The pids limit in force.",
        a.pids_max,
        1.0,
    );
    if let Some((q, p)) = a.cpu_max.filter(|(_, p)| *p > 0) {
        x.gauge(
            "hutch_container_cpu_limit_cores",
            "The CPU quota in force, in cores (quota / period).",
            u,
            q as f64 / p as f64,
        );
    }
    let mut k = |name, help, v: Option<u64>, scale: f64| {
        if let Some(v) = v {
            x.counter(name, help, u, v as f64 * scale);
        }
    };
    k(
        "hutch_container_cpu_seconds_total",
        "CPU time the container has used.",
        s.cpu_usage_us,
        1e-6,
    );
    k(
        "hutch_container_cpu_throttled_seconds_total",
        "Time the CPU quota held the container back.",
        s.cpu_throttled_us,
        1e-6,
    );
    k(
        "hutch_container_cpu_throttled_periods_total",
        "CPU periods in which the quota throttled the container.",
        s.cpu_throttled_periods,
        1.0,
    );
    k(
        "hutch_container_oom_kills_total",
        "Processes the OOM killer killed in the container.",
        s.oom_kills,
        1.0,
    );
    k(
        "hutch_container_pids_limit_hits_total",
        "Forks refused at the pids limit.",
        s.pids_limit_hits,
        1.0,
    );
    k(
        "hutch_container_memory_high_events_total",
        "Times memory.high throttled the container (v2).",
        s.memory_high_events,
        1.0,
    );
    k(
        "hutch_container_io_read_bytes_total",
        "Bytes read from block devices.",
        s.io_read_bytes,
        1.0,
    );
    k(
        "hutch_container_io_write_bytes_total",
        "Bytes written to block devices.",
        s.io_write_bytes,
        1.0,
    );
    k(
        "hutch_container_io_read_ops_total",
        "Block device read operations.",
        s.io_read_ops,
        1.0,
    );
    k(
        "hutch_container_io_write_ops_total",
        "Block device write operations.",
        s.io_write_ops,
        1.0,
    );
}

/// The series of one template: generations loaded, their RAM and users.
fn template(x: &mut Exposition, t: &hutch_runtime::template::TemplateInfo) {
    let loaded: Vec<_> = t.generations.iter().filter(|g| g.loaded).collect();
    x.gauge(
        "hutch_template_generations",
        "Generations of the template loaded in RAM.",
        &[("template", &t.name)],
        loaded.len() as f64,
    );
    if let Some(b) = t.bytes {
        x.gauge(
            "hutch_template_built_bytes",
            "Size of the built template as a tmpfs holds it.",
            &[("template", &t.name)],
            b as f64,
        );
    }
    for g in loaded {
        let generation = g.generation.to_string();
        let l: &[(&str, &str)] = &[("template", &t.name), ("generation", &generation)];
        if let Some(b) = g.bytes_in_ram {
            x.gauge(
                "hutch_template_ram_bytes",
                "RAM a loaded template generation takes (its tmpfs).",
                l,
                b as f64,
            );
        }
        x.gauge(
            "hutch_template_containers",
            "Running containers on a template generation.",
            l,
            g.users.len() as f64,
        );
    }
}

/// The family of a counters-file series: its name without labels.
fn family_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// pam_hutch's counters: logins, refusals, the set-up histogram.
fn logins(x: &mut Exposition, c: &counters::Counts) {
    // Always present, so a dashboard sees 0 before the first login.
    x.family(
        counters::LOGINS,
        "counter",
        "Sessions pam_hutch was asked to open, by PAM service and result (created, joined, exempt, monitor, refused, unconfined).",
    );
    x.family(counters::REFUSALS, "counter", "Refused sessions by cause.");
    for (series, v) in c {
        let fam = family_of(series);
        let slot = if fam == counters::LOGINS {
            counters::LOGINS
        } else if fam == counters::REFUSALS {
            counters::REFUSALS
        } else {
            continue;
        };
        x.family(slot, "counter", "")
            .samples
            .push((series.clone(), v.to_string()));
    }
    // The histogram, kind by kind, buckets in rising order.
    let bucket = format!("{}_bucket", counters::SETUP);
    let count = format!("{}_count", counters::SETUP);
    let sum = format!("{}_sum_us", counters::SETUP);
    let mut kinds: Vec<String> = c
        .keys()
        .filter(|s| family_of(s) == count)
        .filter_map(|s| {
            s.split("kind=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    kinds.sort();
    if kinds.is_empty() {
        return;
    }
    let help =
        "How long a confined login's set-up took in pam_hutch: create (a new container) or join.";
    for kind in kinds {
        let get = |s: String| c.get(&s).copied().unwrap_or(0);
        let les: Vec<String> = counters::SETUP_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(std::iter::once("+Inf".to_string()))
            .collect();
        for le in les {
            let n = get(counters::series(&bucket, &[("kind", &kind), ("le", &le)]));
            x.add(
                counters::SETUP,
                "histogram",
                help,
                "_bucket",
                &[("kind", &kind), ("le", &le)],
                n as f64,
            );
        }
        let total = get(counters::series(&sum, &[("kind", &kind)]));
        x.add(
            counters::SETUP,
            "histogram",
            help,
            "_sum",
            &[("kind", &kind)],
            total as f64 / 1e6,
        );
        let n = get(counters::series(&count, &[("kind", &kind)]));
        x.add(
            counters::SETUP,
            "histogram",
            help,
            "_count",
            &[("kind", &kind)],
            n as f64,
        );
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same
/// directory (a name the textfile collector skips), mode 0644 so that
/// node_exporter (user prometheus) reads it, fsynced, renamed over `path`.
pub fn write_textfile(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// `hutchctl metrics [--textfile PATH] [--record]`.
pub fn metrics(cli: &Cli, textfile: Option<&Path>, record: bool) -> anyhow::Result<i32> {
    let snap = snapshot(cli)?;
    let text = exposition(&snap).render();
    match textfile {
        Some(path) => write_textfile(path, &text)?,
        None => print!("{text}"),
    }
    if record {
        crate::usage::record_snapshot(cli, &snap)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_runtime::keeper::state::SessionState;

    fn snap() -> Snapshot {
        let state = State {
            user: "alice".into(),
            uid: 1001,
            keeper_pid: 1,
            init_pid: 2,
            started: 1_764_000_000,
            template: "default".into(),
            generation: 3,
            hostname: "box-alice".into(),
            cgroups: vec![],
            cpus: None,
            start_marks: vec![],
            sessions: vec![SessionState {
                id: 1,
                service: "sshd".into(),
                tty: "ssh".into(),
                rhost: "127.0.0.1".into(),
                pid: 5,
                since: 1_764_000_001,
            }],
            notices: 0,
            last_notice: None,
        };
        let mut counts = counters::Counts::new();
        for incs in [
            counters::login(
                "sshd",
                counters::LoginResult::Created,
                None,
                Some(("create", std::time::Duration::from_millis(19))),
            ),
            counters::login("sshd", counters::LoginResult::Refused, Some("policy"), None),
        ] {
            for (s, n) in incs {
                *counts.entry(s).or_insert(0) += n;
            }
        }
        Snapshot {
            containers: vec![Container {
                state,
                keeper_alive: true,
                frozen: false,
                stats: Some(Stats {
                    memory_current: Some(1 << 20),
                    cpu_usage_us: Some(2_500_000),
                    oom_kills: Some(1),
                    ..Stats::default()
                }),
                applied: Some(Applied {
                    memory_max: Some(1 << 30),
                    cpu_max: Some((50_000, 100_000)),
                    ..Applied::default()
                }),
            }],
            templates: vec![],
            counters: counts,
            policy_ok: true,
        }
    }

    /// Each family once with HELP and TYPE; values in base units; the histogram in order.
    #[test]
    fn renders_families() {
        let text = exposition(&snap()).render();
        assert_eq!(
            text.matches("# TYPE hutch_logins_total counter").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("hutch_container_cpu_seconds_total{user=\"alice\"} 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("hutch_container_memory_limit_bytes{user=\"alice\"} 1073741824\n"),
            "{text}"
        );
        assert!(
            text.contains("hutch_container_cpu_limit_cores{user=\"alice\"} 0.5\n"),
            "{text}"
        );
        assert!(
            text.contains("hutch_container_oom_kills_total{user=\"alice\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hutch_login_refusals_total{cause=\"policy\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hutch_login_setup_seconds_sum{kind=\"create\"} 0.019\n"),
            "{text}"
        );
        let b = |le: &str| {
            text.find(&format!("kind=\"create\",le=\"{le}\"}}"))
                .unwrap()
        };
        assert!(
            b("0.01") < b("0.025") && b("2.5") < b("10") && b("10") < b("+Inf"),
            "{text}"
        );
        assert!(
            text.contains("le=\"0.025\"} 1\n") && text.contains("le=\"0.01\"} 0\n"),
            "{text}"
        );
    }

    /// The textfile is replaced whole, readable by others, with no temporary left.
    #[test]
    fn textfile_is_atomic() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hutch.prom");
        write_textfile(&p, "a 1\n").unwrap();
        write_textfile(&p, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
