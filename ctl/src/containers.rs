//! `hutchctl list`, `stop`, `setup`.

use std::path::Path;

use anyhow::Context;
use hutch_runtime::keeper::state::State;

use crate::Cli;

/// A container as `hutchctl list` shows it.
struct Row {
    state: State,
    alive: bool,
    /// The cgroup is frozen (`hutchctl freeze`).
    frozen: bool,
}

fn keeper_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn rows(
    run_dir: &Path,
    cgroups: Option<hutch_runtime::cgroup::CgroupRoot>,
) -> anyhow::Result<Vec<Row>> {
    let dir = hutch_runtime::paths::users_dir(run_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path().join("state.json");
        let Ok(state) = State::read(&path) else {
            continue;
        };
        let alive = keeper_alive(state.keeper_pid);
        let frozen = cgroups
            .as_ref()
            .and_then(|r| r.existing(&hutch_runtime::paths::user_cgroup(&state.user)))
            .is_some_and(|cg| crate::freeze::is_frozen(&cg));
        out.push(Row {
            state,
            alive,
            frozen,
        });
    }
    out.sort_by(|a, b| a.state.user.cmp(&b.state.user));
    Ok(out)
}

fn host(cli: &Cli) -> anyhow::Result<hutch_policy::HostSettings> {
    let policy = crate::policy_or_defaults(cli)?;
    Ok(policy.host().clone())
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `hutchctl list [--json]`: user, sessions, init pid, uptime of each container.
pub fn list(cli: &Cli, json: bool) -> anyhow::Result<i32> {
    let host = host(cli)?;
    let rows = rows(
        &host.run_dir,
        hutch_runtime::cgroup::CgroupRoot::open(&host.cgroup_root).ok(),
    )?;
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(&r.state).unwrap_or_default();
                v["keeper_alive"] = serde_json::Value::Bool(r.alive);
                v["frozen"] = serde_json::Value::Bool(r.frozen);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!(
        "{:<16} {:>8} {:>8} {:>15} {:<20} HOSTNAME",
        "USER", "SESSIONS", "INIT", "UPTIME", "TEMPLATE"
    );
    for r in &rows {
        let s = &r.state;
        let mut uptime = if r.alive {
            human_duration(now.saturating_sub(s.started))
        } else {
            "stale".to_string()
        };
        if r.frozen {
            uptime = format!("FROZEN {uptime}");
        }
        println!(
            "{:<16} {:>8} {:>8} {:>15} {:<20} {}",
            s.user,
            s.sessions.len(),
            s.init_pid,
            uptime,
            format!("{}/{}", s.template, s.generation),
            s.hostname
        );
    }
    Ok(0)
}

/// `hutchctl stop USER`: asks the keeper to end every process and session.
pub fn stop(cli: &Cli, user: &str) -> anyhow::Result<i32> {
    use hutch_runtime::keeper::proto::{self, Request};
    let host = host(cli)?;
    let paths = hutch_runtime::paths::UserPaths::new(&host, user);
    let sock = paths.socket();
    let conn = match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            eprintln!("hutchctl: {user} has no running container");
            return Ok(1);
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", sock.display())),
    };
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    proto::send(&conn, &Request::Stop.render(), &[])
        .with_context(|| format!("writing to {}", sock.display()))?;
    match proto::recv(&conn).with_context(|| format!("reading from {}", sock.display()))? {
        Some((line, _)) if line == "OK" => {}
        Some((line, _)) => anyhow::bail!("the keeper of {user} answered {line:?}"),
        None => anyhow::bail!("the keeper of {user} closed the connection"),
    }
    // Wait (bounded) for the keeper to finish tearing down.
    let state = paths.state();
    for _ in 0..200 {
        if !state.exists() {
            println!("stopped the container of {user}");
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    eprintln!("hutchctl: asked the keeper of {user} to stop; it is still tearing down");
    Ok(1)
}

/// `hutchctl setup --pam-service NAME [--undo]`: makes pam_hutch the last
/// session line of `<pam_dir>/<NAME>` (idempotent; a backup
/// `<file>.hutch-bak` is made before the first change), or with `--undo`
/// removes exactly hutch's line(s).
pub fn setup(pam_dir: &Path, vendor_dir: &Path, service: &str, undo: bool) -> anyhow::Result<i32> {
    use anyhow::Context;

    if service.is_empty() || service.contains('/') || service == "." || service == ".." {
        anyhow::bail!("--pam-service {service:?} is not a PAM service name");
    }
    let file = pam_dir.join(service);
    let vendor = vendor_dir.join(service);
    let copied_marker = format!(
        "{}{}",
        crate::containers::pam_setup::COPIED_MARKER,
        vendor.display()
    );
    if undo {
        // A file setup copied from the vendor dir goes entirely, so PAM reads
        // the distribution's file again.
        if let Ok(text) = std::fs::read_to_string(&file) {
            if text.lines().next() == Some(copied_marker.as_str()) {
                std::fs::remove_file(&file)
                    .with_context(|| format!("removing {}", file.display()))?;
                println!(
                    "{}: removed (it was setup's copy of {})",
                    file.display(),
                    vendor.display()
                );
                return Ok(0);
            }
        }
    } else if std::fs::symlink_metadata(&file).is_err() && vendor.is_file() {
        // Linux-PAM reads /etc/pam.d/NAME before /usr/lib/pam.d/NAME: an
        // admin's override starts as a copy of the distribution's file.
        let text = std::fs::read_to_string(&vendor)
            .with_context(|| format!("reading {}", vendor.display()))?;
        let module = pam_setup::module_reference();
        let read = |name: &str| {
            std::fs::read_to_string(pam_dir.join(name))
                .or_else(|_| std::fs::read_to_string(vendor_dir.join(name)))
                .ok()
        };
        let body = pam_setup::apply(&text, &module, read).unwrap_or(text);
        let content = format!("{copied_marker}\n# (hutchctl setup --pam-service {service} --undo removes this file)\n{body}");
        let tmp = pam_dir.join(format!(".{service}.hutch-tmp"));
        std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
        println!(
            "{}: copied from {}; pam_hutch is now its last session line",
            file.display(),
            vendor.display()
        );
        return Ok(0);
    }
    let meta =
        std::fs::symlink_metadata(&file).with_context(|| format!("reading {}", file.display()))?;
    if meta.file_type().is_symlink() {
        anyhow::bail!(
            "{} is a symlink: run setup on the service it points to",
            file.display()
        );
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let new_text = if undo {
        pam_setup::remove(&text)
    } else {
        let module = pam_setup::module_reference();
        pam_setup::apply(&text, &module, |name| {
            std::fs::read_to_string(pam_dir.join(name)).ok()
        })
    };
    let Some(new_text) = new_text else {
        println!(
            "{}: {}",
            file.display(),
            if undo {
                "no pam_hutch line, nothing to undo"
            } else {
                "already set up"
            }
        );
        return Ok(0);
    };
    let backup = pam_setup::backup_path(&file);
    if !backup.exists() {
        std::fs::copy(&file, &backup)
            .with_context(|| format!("backing up {} to {}", file.display(), backup.display()))?;
    }
    pam_setup::replace(&file, &meta, &new_text)
        .with_context(|| format!("writing {}", file.display()))?;
    if undo {
        println!(
            "{}: removed pam_hutch (backup of the original: {})",
            file.display(),
            backup.display()
        );
    } else {
        println!(
            "{}: pam_hutch is now its last session line (backup: {})",
            file.display(),
            backup.display()
        );
    }
    Ok(0)
}

/// The pieces of [`setup`]: editing a PAM service file as text.
pub(crate) mod pam_setup {
    use std::fs::Metadata;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    /// The module's file name.
    pub const MODULE: &str = "pam_hutch.so";

    /// An absolute path to the module for installs outside libpam's own
    /// directory, set at build time (`HUTCH_PAM_MODULE`). `make install`
    /// puts it in libpam's directory, where the bare name finds it.
    const INSTALLED_MODULE: Option<&str> = option_env!("HUTCH_PAM_MODULE");

    /// Directories libpam searches for a bare module name (Debian multiarch
    /// first, then the usual others).
    const SYSTEM_MODULE_DIRS: [&str; 6] = [
        "/usr/lib/x86_64-linux-gnu/security",
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib64/security",
        "/lib64/security",
        "/usr/lib/security",
        "/lib/security",
    ];

    /// How the service line names the module: the bare name when libpam
    /// finds it in its own directory, else the absolute path set at build
    /// time; with neither, the bare name and a warning (until the module is
    /// installed, PAM refuses the service: fail closed).
    /// First line of a service file setup copied from the vendor dir.
    pub const COPIED_MARKER: &str = "# hutch: copied by hutchctl setup from ";

    pub fn module_reference() -> String {
        if SYSTEM_MODULE_DIRS
            .iter()
            .any(|d| Path::new(d).join(MODULE).exists())
        {
            return MODULE.to_string();
        }
        match INSTALLED_MODULE {
            Some(path) => path.to_string(),
            None => {
                eprintln!(
                    "hutchctl: warning: {MODULE} is not installed in libpam's module directory yet \
                     (make install); logins through this service fail until it is"
                );
                MODULE.to_string()
            }
        }
    }

    pub fn backup_path(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_os_string();
        name.push(".hutch-bak");
        PathBuf::from(name)
    }

    /// The line setup adds.
    pub fn our_line(module: &str) -> String {
        format!("session required {module}")
    }

    /// The non-comment words of a line.
    fn words(line: &str) -> Vec<&str> {
        line.split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect()
    }

    /// A line of ours: any line that loads pam_hutch.so (by any path).
    pub fn is_hutch_line(line: &str) -> bool {
        words(line)
            .iter()
            .any(|w| Path::new(w).file_name().is_some_and(|n| n == MODULE))
    }

    /// A `session` (or `-session`) line, `include`/`substack` ones included.
    fn is_session_line(line: &str) -> bool {
        matches!(words(line).first(), Some(&"session") | Some(&"-session"))
    }

    /// `@include NAME` → NAME.
    fn include_of(line: &str) -> Option<&str> {
        match words(line).as_slice() {
            ["@include", name] => Some(name),
            _ => None,
        }
    }

    /// Whether a line contributes session modules: a session line, or an
    /// `@include` of a file that has session lines (`read` gives a file of
    /// the PAM directory; one we cannot read counts if its name says
    /// "session").
    fn has_session(line: &str, read: &dyn Fn(&str) -> Option<String>) -> bool {
        if is_session_line(line) {
            return true;
        }
        match include_of(line) {
            Some(name) => match read(name) {
                Some(text) => text.lines().any(|l| {
                    is_session_line(l) || include_of(l).is_some_and(|n| n.contains("session"))
                }),
                None => name.contains("session"),
            },
            None => false,
        }
    }

    /// The text with pam_hutch as its last session line, or `None` when it
    /// already is (and then nothing is written: running twice changes
    /// nothing, and arguments an admin added to our line stay).
    pub fn apply(
        text: &str,
        module: &str,
        read: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let lines: Vec<&str> = text.lines().collect();
        let ours: Vec<usize> = (0..lines.len())
            .filter(|&i| is_hutch_line(lines[i]))
            .collect();
        let last_session = (0..lines.len())
            .rev()
            .find(|&i| !is_hutch_line(lines[i]) && has_session(lines[i], &read));
        if let [only] = ours[..] {
            if last_session.is_none_or(|s| only > s) {
                return None;
            }
        }
        // Keep an existing line's text (its arguments), else ours.
        let line = ours
            .first()
            .map(|&i| lines[i].trim().to_string())
            .unwrap_or_else(|| our_line(module));
        let mut out: Vec<&str> = Vec::with_capacity(lines.len() + 1);
        let mut placed = false;
        for (i, l) in lines.iter().enumerate() {
            if ours.contains(&i) {
                continue;
            }
            out.push(l);
            if Some(i) == last_session {
                out.push(&line);
                placed = true;
            }
        }
        if !placed {
            out.push(&line);
        }
        Some(join_lines(&out))
    }

    /// The text without pam_hutch lines, or `None` when it has none.
    pub fn remove(text: &str) -> Option<String> {
        let lines: Vec<&str> = text.lines().collect();
        let kept: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !is_hutch_line(l))
            .collect();
        (kept.len() != lines.len()).then(|| join_lines(&kept))
    }

    fn join_lines(lines: &[&str]) -> String {
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }

    /// Replaces `file` atomically (a temporary file in the same directory,
    /// renamed over it) with `text`, keeping its mode and owner.
    pub fn replace(file: &Path, meta: &Metadata, text: &str) -> std::io::Result<()> {
        let mut tmp_name = file.as_os_str().to_os_string();
        tmp_name.push(".hutch-tmp");
        let tmp = PathBuf::from(tmp_name);
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid())) {
                // Only root can give a file away; a test's own file needs no chown.
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(e);
                }
            }
            f.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod setup_tests {
    use super::pam_setup::{apply, remove};
    use super::setup;
    use std::path::PathBuf;

    /// Debian 12's /etc/pam.d/sshd, shortened.
    const SSHD: &str = "\
# PAM configuration for the Secure Shell service
@include common-auth
account    required     pam_nologin.so
@include common-account
session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so close
session    required     pam_loginuid.so
@include common-session
session    optional     pam_motd.so  motd=/run/motd.dynamic
session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale
session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so open
@include common-password
";

    const SU: &str = "auth sufficient pam_rootok.so\n@include common-auth\n@include common-account\n@include common-session\n";

    fn none(_: &str) -> Option<String> {
        None
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "hutchctl-setup-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The line goes right after the last session line (before @include common-password).
    #[test]
    fn after_last_session_line() {
        let out = apply(SSHD, "pam_hutch.so", none).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[lines.len() - 2], "session required pam_hutch.so");
        assert_eq!(lines[lines.len() - 1], "@include common-password");
        assert_eq!(lines.len(), SSHD.lines().count() + 1);
    }

    /// `@include common-session` as the last session part: our line follows it.
    #[test]
    fn after_include_common_session() {
        let out = apply(SU, "/usr/local/lib/security/pam_hutch.so", none).unwrap();
        assert!(out.ends_with(
            "@include common-session\nsession required /usr/local/lib/security/pam_hutch.so\n"
        ));
    }

    /// An include is judged by its content when it can be read.
    #[test]
    fn include_judged_by_content() {
        let text = "@include site-stack\n@include common-password\n";
        let read =
            |n: &str| (n == "site-stack").then(|| "session optional pam_umask.so\n".to_string());
        let out = apply(text, "pam_hutch.so", read).unwrap();
        assert_eq!(
            out,
            "@include site-stack\nsession required pam_hutch.so\n@include common-password\n"
        );
    }

    /// Applying twice changes nothing; a customised line of ours is kept.
    #[test]
    fn idempotent() {
        let once = apply(SSHD, "pam_hutch.so", none).unwrap();
        assert_eq!(apply(&once, "pam_hutch.so", none), None);
        let custom = once.replace(
            "session required pam_hutch.so",
            "session required pam_hutch.so debug timeout=60",
        );
        assert_eq!(apply(&custom, "pam_hutch.so", none), None);
    }

    /// A hutch line that is no longer last is moved to the end, keeping its arguments.
    #[test]
    fn moves_to_end() {
        let text = "session required pam_hutch.so debug\nsession optional pam_motd.so\n";
        assert_eq!(
            apply(text, "pam_hutch.so", none).unwrap(),
            "session optional pam_motd.so\nsession required pam_hutch.so debug\n"
        );
        let twice = "session required pam_hutch.so\nsession optional pam_motd.so\nsession required /x/pam_hutch.so\n";
        assert_eq!(
            apply(twice, "pam_hutch.so", none).unwrap(),
            "session optional pam_motd.so\nsession required pam_hutch.so\n"
        );
    }

    /// Undo removes exactly hutch's lines (any path, any arguments), and nothing else.
    #[test]
    fn undo_removes_exactly_ours() {
        let once = apply(SSHD, "pam_hutch.so", none).unwrap();
        assert_eq!(remove(&once).unwrap(), SSHD);
        assert_eq!(remove(SSHD), None);
        assert_eq!(
            remove("session optional pam_motd.so # not pam_hutch.so\n-session optional /opt/pam_hutch.so x\n"),
            Some("session optional pam_motd.so # not pam_hutch.so\n".to_string())
        );
    }

    /// On a real file: backup before the first change, second run a no-op, undo restores.
    #[test]
    fn files_and_backup() {
        let dir = TempDir::new("files");
        let file = dir.0.join("sshd-test");
        std::fs::write(&file, SSHD).unwrap();
        assert_eq!(
            setup(&dir.0, &dir.0.join("vendor"), "sshd-test", false).unwrap(),
            0
        );
        let after = std::fs::read_to_string(&file).unwrap();
        assert!(after.contains("pam_hutch.so\n@include common-password"));
        assert_eq!(
            std::fs::read_to_string(dir.0.join("sshd-test.hutch-bak")).unwrap(),
            SSHD
        );

        let before_second = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert_eq!(
            setup(&dir.0, &dir.0.join("vendor"), "sshd-test", false).unwrap(),
            0
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), after);
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            before_second
        );

        assert_eq!(
            setup(&dir.0, &dir.0.join("vendor"), "sshd-test", true).unwrap(),
            0
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), SSHD);
        assert_eq!(
            setup(&dir.0, &dir.0.join("vendor"), "sshd-test", true).unwrap(),
            0
        );
        assert!(!dir.0.join("sshd-test.hutch-tmp").exists());
    }

    /// Mode survives the rewrite.
    #[test]
    fn keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        let file = dir.0.join("login");
        std::fs::write(&file, SU).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        setup(&dir.0, &dir.0.join("vendor"), "login", false).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    /// Bad service names, a missing file and a symlink are refused.
    #[test]
    fn refusals() {
        let dir = TempDir::new("refuse");
        for name in ["", "..", "a/b"] {
            assert!(
                setup(&dir.0, &dir.0.join("vendor"), name, false).is_err(),
                "{name:?}"
            );
        }
        let err = setup(&dir.0, &dir.0.join("vendor"), "nosuch", false).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("reading {}", dir.0.join("nosuch").display()))
        );
        std::fs::write(dir.0.join("real"), SU).unwrap();
        std::os::unix::fs::symlink(dir.0.join("real"), dir.0.join("link")).unwrap();
        assert!(format!(
            "{:#}",
            setup(&dir.0, &dir.0.join("vendor"), "link", false).unwrap_err()
        )
        .contains("is a symlink"));
        assert_eq!(std::fs::read_to_string(dir.0.join("real")).unwrap(), SU);
    }

    /// A service only the distribution ships (/usr/lib/pam.d/systemd-user):
    /// setup writes an override copy with our line; undo removes the copy.
    #[test]
    fn vendor_service_is_copied_and_undone() {
        let dir = TempDir::new("vendor");
        let vendor = dir.0.join("vendor");
        std::fs::create_dir(&vendor).unwrap();
        std::fs::write(
            vendor.join("systemd-user"),
            "account include common-account\nsession required pam_keyinit.so force revoke\n",
        )
        .unwrap();
        assert_eq!(setup(&dir.0, &vendor, "systemd-user", false).unwrap(), 0);
        let text = std::fs::read_to_string(dir.0.join("systemd-user")).unwrap();
        assert!(
            text.starts_with(&format!(
                "{}{}",
                crate::containers::pam_setup::COPIED_MARKER,
                vendor.join("systemd-user").display()
            )),
            "{text}"
        );
        assert!(text.trim_end().ends_with("pam_hutch.so"), "{text}");
        assert_eq!(
            setup(&dir.0, &vendor, "systemd-user", false).unwrap(),
            0,
            "second run"
        );
        assert_eq!(
            std::fs::read_to_string(dir.0.join("systemd-user")).unwrap(),
            text,
            "second run changed the copy"
        );
        assert_eq!(setup(&dir.0, &vendor, "systemd-user", true).unwrap(), 0);
        assert!(!dir.0.join("systemd-user").exists(), "undo left the copy");
        assert!(vendor.join("systemd-user").exists());
    }
}
