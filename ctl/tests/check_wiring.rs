//! `hutchctl check` of the installed policy warns about each PAM service
//! the host runs (its daemon installed) whose stack lacks pam_hutch: a
//! confined user's crontab entries or at jobs would run on the host, SSH
//! logins would not be confined. An include that runs pam_hutch counts, a
//! service the policy ignores is not warned about, and `hutchctl setup`
//! wires Debian's own cron and atd stacks (atd's from the vendor dir).

use std::process::{Command, Output};

/// Debian 12's /etc/pam.d/cron.
const CRON: &str = "# The PAM configuration file for the cron daemon\n\n@include common-auth\n\n\
session    required     pam_loginuid.so\nsession       required   pam_env.so\n\
session       required   pam_env.so envfile=/etc/default/locale\n\n@include common-account\n\
@include common-session-noninteractive \n\nsession    required   pam_limits.so\n";
/// Debian 12's atd stack.
const ATD: &str = "#\n# The PAM configuration file for the at daemon\n#\n\n@include common-auth\n\
@include common-account\nsession    required   pam_loginuid.so\n@include common-session-noninteractive\n\
session    required   pam_limits.so\nsession    required   pam_env.so user_readenv=1\n";

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new(policy: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        for d in ["pam", "vendor", "sbin"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        for daemon in ["sshd", "cron", "atd"] {
            std::fs::write(dir.path().join("sbin").join(daemon), "").unwrap();
        }
        let pam = dir.path().join("pam");
        for f in [
            "common-auth",
            "common-account",
            "common-session-noninteractive",
        ] {
            std::fs::write(pam.join(f), "session required pam_unix.so\n").unwrap();
        }
        // sshd runs pam_hutch through an include.
        std::fs::write(pam.join("sshd"), "@include common-session\n").unwrap();
        std::fs::write(
            pam.join("common-session"),
            "session required pam_unix.so\nsession required pam_hutch.so\n",
        )
        .unwrap();
        std::fs::write(pam.join("cron"), CRON).unwrap();
        std::fs::write(dir.path().join("vendor").join("atd"), ATD).unwrap();
        std::fs::write(dir.path().join("hutch.toml"), policy).unwrap();
        Host { dir }
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).to_string_lossy().into_owned()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hutchctl"))
            .arg("--config")
            .arg(self.path("hutch.toml"))
            .args(args)
            .output()
            .expect("run hutchctl")
    }

    fn check(&self, extra: &[&str]) -> Output {
        let (pam, vendor, sbin) = (self.path("pam"), self.path("vendor"), self.path("sbin"));
        let mut args = vec![
            "check",
            "--pam-dir",
            &pam,
            "--vendor-pam-dir",
            &vendor,
            "--sbin-dir",
            &sbin,
        ];
        args.extend(extra);
        self.ctl(&args)
    }

    fn setup(&self, service: &str) -> Output {
        let (pam, vendor) = (self.path("pam"), self.path("vendor"));
        self.ctl(&[
            "setup",
            "--pam-service",
            service,
            "--pam-dir",
            &pam,
            "--vendor-pam-dir",
            &vendor,
        ])
    }
}

fn describe(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn warnings(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_string)
        .collect()
}

/// cron's stack without pam_hutch and no atd stack are warned about (sshd,
/// wired through an include, is not); `--strict` makes them fail.
#[test]
fn unwired_cron_and_atd_are_warned_about() {
    let h = Host::new("[defaults]\nmemory = \"1G\"\n");
    let out = h.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let w = warnings(&out);
    assert_eq!(w.len(), 2, "{}", describe(&out));
    assert!(
        w[0].contains("services.cron")
            && w[0].contains(&format!("{} does not run pam_hutch", h.path("pam/cron")))
            && w[0].contains("crontab entries run on the host")
            && w[0].contains("hutchctl setup --pam-service cron"),
        "{w:?}"
    );
    // atd has only the vendor dir's stack, which does not run it either.
    assert!(
        w[1].contains("services.atd")
            && w[1].contains(&format!("{} does not run pam_hutch", h.path("vendor/atd")))
            && w[1].contains("at jobs run on the host"),
        "{w:?}"
    );
    assert_eq!(h.check(&["--strict"]).status.code(), Some(2));
    // A staged file (FILE given) is checked as a policy only.
    let file = h.path("hutch.toml");
    assert!(warnings(&h.check(&[&file])).is_empty());
}

/// `hutchctl setup` wires Debian's cron stack in place and atd's (copied
/// from the vendor dir): then check is clean.
#[test]
fn setup_wires_cron_and_atd() {
    let h = Host::new("[defaults]\nmemory = \"1G\"\n");
    for s in ["cron", "atd"] {
        let out = h.setup(s);
        assert!(out.status.success(), "{}", describe(&out));
        let text = std::fs::read_to_string(h.dir.path().join("pam").join(s)).unwrap();
        let last_session = text
            .lines()
            .rfind(|l| l.trim_start().starts_with("session") || l.starts_with("@include"))
            .unwrap_or("");
        assert!(
            last_session.contains("pam_hutch.so"),
            "{s}: pam_hutch is not the last session line:\n{text}"
        );
    }
    let out = h.check(&[]);
    assert!(warnings(&out).is_empty(), "{}", describe(&out));
    assert_eq!(h.check(&["--strict"]).status.code(), Some(0));
}

/// A service the policy ignores is the admin's choice: no warning; a
/// missing daemon is no service to wire.
#[test]
fn ignored_service_and_missing_daemon_are_not_warned_about() {
    let h = Host::new("[services]\natd = \"ignore\"\n");
    std::fs::remove_file(h.dir.path().join("sbin/cron")).unwrap();
    let out = h.check(&[]);
    assert!(warnings(&out).is_empty(), "{}", describe(&out));
}
