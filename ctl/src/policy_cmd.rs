//! `hutchctl check [FILE] [--strict] [--drop-ins DIR]` and
//! `hutchctl policy USER [--service S] [--drop-ins DIR]`.
//!
//! Both run the same code the PAM module runs (`hutch_policy::Policy`), so
//! what `check` accepts a login accepts.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use hutch_policy::{Decision, Diagnostic, Explanation, Policy, Report, ServiceMode, Severity};

use crate::Cli;

/// Exit status of `check`: clean.
pub const EXIT_CLEAN: i32 = 0;
/// Exit status of `check`: errors (the policy would be refused at login).
pub const EXIT_ERRORS: i32 = 1;
/// Exit status of `check --strict`: warnings only.
pub const EXIT_WARNINGS: i32 = 2;

/// Prints every error and warning of the policy and its drop-ins (those of
/// `drop_ins` when given); exit 0 clean, 1 errors, 2 warnings only with `--strict`.
///
/// Checking the installed policy (no FILE), it also warns about each PAM
/// service the host runs (its daemon is installed) that does not run
/// pam_hutch, unless the policy ignores that service: there, a confined
/// user's sessions run on the host.
pub fn check(
    cli: &Cli,
    file: Option<&Path>,
    drop_ins: Option<&Path>,
    strict: bool,
    host: &HostDirs<'_>,
) -> anyhow::Result<i32> {
    let path = file.unwrap_or(&cli.config);
    let mut report = match drop_ins {
        Some(dir) => Policy::check_with_drop_ins(path, dir),
        None => Policy::check(path),
    };
    let unusable = seccomp_file_errors(&report);
    report.diagnostics.extend(unusable);
    if file.is_none() {
        if let Some(policy) = &report.policy {
            let unwired = wiring_warnings(policy, host);
            report.diagnostics.extend(unwired);
        }
    }
    let mut out = std::io::stdout().lock();
    write_report(&mut out, &report).context("writing to stdout")?;
    Ok(check_status(&report, strict))
}

/// Where `check` looks for the host's PAM services and daemons.
pub struct HostDirs<'a> {
    pub pam: &'a Path,
    pub vendor_pam: &'a Path,
    pub sbin: &'a Path,
}

/// The PAM services a host runs for its users' sessions, the programs
/// whose presence says it runs them, and what happens without pam_hutch.
const HOST_SERVICES: [(&str, &[&str], &str); 3] = [
    (
        "sshd",
        &["sshd"],
        "confined users' SSH logins are not confined (refused where the login shell is hutch-shell, on the host where it is a template shell)",
    ),
    ("cron", &["cron", "crond"], "confined users' crontab entries run on the host"),
    ("atd", &["atd"], "confined users' at jobs run on the host"),
];

/// A warning for each service of [`HOST_SERVICES`] whose daemon is
/// installed, that the policy does not ignore, and whose PAM stack (with
/// its includes) has no pam_hutch session line.
fn wiring_warnings(policy: &Policy, dirs: &HostDirs<'_>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (service, daemons, consequence) in HOST_SERVICES {
        let Some(daemon) = daemons
            .iter()
            .map(|d| dirs.sbin.join(d))
            .find(|p| p.exists())
        else {
            continue;
        };
        if policy.service_mode(service) == ServiceMode::Ignore {
            continue;
        }
        let file = [dirs.pam.join(service), dirs.vendor_pam.join(service)]
            .into_iter()
            .find(|f| f.is_file());
        if file
            .as_deref()
            .is_some_and(|f| runs_pam_hutch(f, dirs.pam, 0))
        {
            continue;
        }
        let what = match &file {
            Some(f) => format!("{} does not run pam_hutch", f.display()),
            None => format!(
                "there is no {} (PAM uses its `other` service)",
                dirs.pam.join(service).display()
            ),
        };
        out.push(Diagnostic {
            severity: Severity::Warning,
            loc: None,
            key: format!("services.{service}"),
            message: format!(
                "{} is installed but {what}: {consequence} (`hutchctl setup --pam-service {service}`, or `{service} = \"ignore\"` in [services] to mean it)",
                daemon.display()
            ),
        });
    }
    out
}

/// Whether the PAM stack `file` has a pam_hutch session line, itself or in
/// a file it includes (`@include`, `session include|substack`) from `pam_dir`.
fn runs_pam_hutch(file: &Path, pam_dir: &Path, depth: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    text.lines().any(|line| {
        let words: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let included = match words.as_slice() {
            ["@include", name, ..] => Some(*name),
            [kind, "include" | "substack", name, ..]
                if kind.trim_start_matches('-') == "session" =>
            {
                Some(*name)
            }
            _ => None,
        };
        match included {
            Some(name) => depth < 8 && runs_pam_hutch(&pam_dir.join(name), pam_dir, depth + 1),
            None => {
                words
                    .first()
                    .is_some_and(|k| k.trim_start_matches('-') == "session")
                    && crate::containers::pam_setup::is_hutch_line(line)
            }
        }
    })
}

/// An error for each `seccomp` file the policy names that a login could not
/// load: missing, not root's, writable by others, or naming an unknown
/// syscall. Read with the code the PAM module and the keeper run.
fn seccomp_file_errors(report: &Report) -> Vec<Diagnostic> {
    let Some(policy) = &report.policy else {
        return Vec::new();
    };
    policy
        .seccomp_files()
        .into_iter()
        .filter_map(|(key, loc, path)| {
            let e = hutch_runtime::seccomp::profile_names(&path.to_string_lossy()).err()?;
            Some(Diagnostic {
                severity: Severity::Error,
                loc: Some(loc),
                key,
                message: format!("{e}: every login this profile applies to would be refused"),
            })
        })
        .collect()
}

/// The exit status for a report.
pub fn check_status(report: &Report, strict: bool) -> i32 {
    if report.has_errors() {
        EXIT_ERRORS
    } else if strict && report.has_warnings() {
        EXIT_WARNINGS
    } else {
        EXIT_CLEAN
    }
}

/// `error: FILE:LINE:COL: KEY: message` lines, then a summary line.
pub fn write_report(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    for d in &report.diagnostics {
        let tag = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(out, "{tag}: {d}")?;
    }
    let errors = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = report.diagnostics.len() - errors;
    let files: Vec<String> = report
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    if errors > 0 {
        writeln!(out, "{}: {errors} error(s), {warnings} warning(s): logins of confined users would be refused", files.join(", "))
    } else {
        writeln!(out, "{}: ok, {warnings} warning(s)", files.join(", "))
    }
}

/// Prints the effective policy of `user` for `service`, each value with its origin.
pub fn show(cli: &Cli, user: &str, service: &str, drop_ins: Option<&Path>) -> anyhow::Result<i32> {
    let policy = match drop_ins {
        Some(dir) => Policy::load_with_drop_ins(&cli.config, dir),
        None => Policy::load(&cli.config),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("loading policy {}", cli.config.display()))?;
    let account = hutch_runtime::account::lookup(user)
        .with_context(|| format!("looking up user {user:?}"))?;
    let explanation = policy.explain(&account, service);
    let mut out = std::io::stdout().lock();
    write_explanation(&mut out, &account.name, account.uid, service, &explanation)
        .context("writing to stdout")?;
    Ok(0)
}

/// The explanation, like `git config --show-origin`: `key = value  # origin`.
pub fn write_explanation(
    out: &mut dyn Write,
    user: &str,
    uid: u32,
    service: &str,
    e: &Explanation,
) -> std::io::Result<()> {
    let verdict = match &e.decision {
        Decision::Confine(_) => "confined".to_string(),
        Decision::Exempt(why) => format!("exempt: {why}"),
        Decision::Refuse(why) => format!("refused: {why}"),
    };
    let verdict = match &e.monitor {
        Some(why) => format!("monitor only, would be {verdict} ({why})"),
        None => verdict,
    };
    writeln!(
        out,
        "# user {user} (uid {uid}), service {service}: {verdict}"
    )?;
    writeln!(
        out,
        "# service {service}: {}  ({})",
        e.service_mode.as_str(),
        e.service_origin
    )?;
    if !e.groups.is_empty() {
        writeln!(
            out,
            "# groups with rules, lowest precedence first: {}",
            e.groups.join(", ")
        )?;
    }
    let width = e
        .entries
        .iter()
        .map(|x| x.key.len() + 3 + x.value.len())
        .max()
        .unwrap_or(0);
    for x in &e.entries {
        let line = format!("{} = {}", x.key, x.value);
        writeln!(out, "{line:<width$}  # {}", x.origin)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_policy::Account;

    fn report(text: &str) -> Report {
        Policy::check_sources(&[(text, Path::new("hutch.toml"))])
    }

    /// check exits 0 clean, 1 on errors, 2 on warnings only with --strict (0 without).
    #[test]
    fn check_exit_status() {
        assert_eq!(check_status(&report(""), true), EXIT_CLEAN);
        assert_eq!(
            check_status(&report("[defaults]\nmemory = \"1X\"\n"), false),
            EXIT_ERRORS
        );
        let warned = report("[users.root]\npids = 5\n");
        assert_eq!(check_status(&warned, false), EXIT_CLEAN);
        assert_eq!(check_status(&warned, true), EXIT_WARNINGS);
    }

    /// check prints each finding tagged, then a summary.
    #[test]
    fn check_output() {
        let mut out = Vec::new();
        write_report(&mut out, &report("[defaults]\nmemroy = \"1G\"\n")).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: hutch.toml:2:1: defaults: unknown key \"memroy\" (did you mean \"memory\"?)\n\
             hutch.toml: 1 error(s), 0 warning(s): logins of confined users would be refused\n"
        );
    }

    /// policy USER prints the verdict and each value with its origin.
    #[test]
    fn explanation_output() {
        let p = Policy::parse("[users.alice]\npids = 100\n", Path::new("hutch.toml")).unwrap();
        let a = Account {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            groups: vec!["alice".into()],
            home: "/home/alice".into(),
            shell: "/usr/sbin/hutch-shell".into(),
        };
        let mut out = Vec::new();
        write_explanation(&mut out, "alice", 1001, "sshd", &p.explain(&a, "sshd")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("# user alice (uid 1001), service sshd: confined\n# service sshd: confine  (built-in default)\n"), "{text}");
        assert!(text.contains("\npids = 100 "), "{text}");
        assert!(text.contains("# hutch.toml:2:8 (users.alice)\n"), "{text}");
    }
}
