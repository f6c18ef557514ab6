//! Where hutch keeps its files, from the policy's host settings.

use std::path::{Path, PathBuf};

use hutch_policy::HostSettings;

/// Paths of one user's runtime state: `<run_dir>/users/<user>/`.
#[derive(Debug, Clone)]
pub struct UserPaths {
    pub dir: PathBuf,
}

impl UserPaths {
    pub fn new(host: &HostSettings, user: &str) -> Self {
        UserPaths {
            dir: host.run_dir.join("users").join(user),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("keeper.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// An empty directory the keeper's child mounts its root on (inside its
    /// own mount namespace only).
    pub fn staging(&self) -> PathBuf {
        self.dir.join("root")
    }
}

/// `<run_dir>/users`.
pub fn users_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("users")
}

/// The cgroup (relative to hutch's cgroup root) of a user's container.
pub fn user_cgroup(user: &str) -> String {
    format!("users/{user}")
}

/// The cgroup (relative to hutch's cgroup root) where keepers live.
pub const KEEPER_CGROUP: &str = "keepers";

/// Where `hutch status` finds the keeper's status socket inside a container.
pub const STATUS_SOCKET: &str = "/run/hutch/status.sock";

/// Where the `hutch` command is bound inside a container.
pub const STATUS_TOOL: &str = "/usr/bin/hutch";

/// Where the keeper writes the in-container marker hutch-shell checks.
pub const CONTAINER_MARKER: &str = "/run/hutch-container";

/// The marker file's format, written by the keeper (root-owned, mode 0444)
/// inside the container at [`CONTAINER_MARKER`], read by hutch-shell:
/// `key=value` lines:
/// ```text
/// user=alice
/// uid=1001
/// pidns=4026532180     (inode of the container's pid namespace)
/// shell=/bin/bash      (the inner shell from the policy)
/// seccomp=default       (the policy's seccomp profile: default, off, or an absolute path)
/// seccomp_deny=ptrace,personality  (a file profile's names, read by the keeper on the host)
/// ```
/// A marker without a `seccomp=` line (written by an older keeper) means
/// `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub user: String,
    pub uid: u32,
    pub pidns: u64,
    pub shell: PathBuf,
    /// The seccomp profile hutch-shell loads (`UserPolicy::seccomp`).
    pub seccomp: String,
    /// For a file profile: the syscalls it denies beyond the default, read
    /// from the file on the host by the keeper (no file is read inside).
    pub seccomp_deny: Vec<String>,
}

/// The seccomp profile of a marker that names none.
pub const DEFAULT_SECCOMP: &str = "default";

impl Marker {
    pub fn render(&self) -> String {
        format!(
            "user={}\nuid={}\npidns={}\nshell={}\nseccomp={}\nseccomp_deny={}\n",
            self.user,
            self.uid,
            self.pidns,
            self.shell.display(),
            self.seccomp,
            self.seccomp_deny.join(",")
        )
    }

    /// Parses a marker; `None` when a field is missing or malformed.
    pub fn parse(text: &str) -> Option<Marker> {
        let (mut user, mut uid, mut pidns, mut shell) = (None, None, None, None);
        let mut seccomp = DEFAULT_SECCOMP.to_string();
        let mut seccomp_deny = Vec::new();
        for line in text.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "user" => user = Some(v.to_string()),
                "uid" => uid = v.parse().ok(),
                "pidns" => pidns = v.parse().ok(),
                "shell" => shell = Some(PathBuf::from(v)),
                "seccomp" if !v.is_empty() => seccomp = v.to_string(),
                "seccomp_deny" => {
                    seccomp_deny = v
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                _ => {}
            }
        }
        Some(Marker {
            user: user?,
            uid: uid?,
            pidns: pidns?,
            shell: shell?,
            seccomp,
            seccomp_deny,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rendered marker parses back to itself.
    #[test]
    fn marker_round_trip() {
        let m = Marker {
            user: "alice".into(),
            uid: 1001,
            pidns: 4026532180,
            shell: "/bin/bash".into(),
            seccomp: "/etc/hutch/seccomp-extra".into(),
            seccomp_deny: vec!["ptrace".into(), "personality".into()],
        };
        assert_eq!(Marker::parse(&m.render()), Some(m));
        assert_eq!(Marker::parse("user=a\nuid=x\n"), None);
    }

    /// A marker from a keeper that wrote no `seccomp=` line means the default profile.
    #[test]
    fn marker_without_seccomp_is_default() {
        let m = Marker::parse("user=a\nuid=1\npidns=2\nshell=/bin/sh\n").unwrap();
        assert_eq!(m.seccomp, DEFAULT_SECCOMP);
    }
}
