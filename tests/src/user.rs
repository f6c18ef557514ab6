//! `TestUser`: a throwaway local account with an ed25519 key.

use crate::{output, proc, run_ok, OutputExt, TestDir};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A local user made with `useradd`, deleted on Drop together with every
/// process still running under its uid (found by a /proc scan, killed by
/// pid) and its key.
#[derive(Debug)]
pub struct TestUser {
    /// User name (`ht<pid>x<n>`).
    pub name: String,
    /// Numeric uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory as in the passwd entry.
    pub home: PathBuf,
    /// Login shell as in the passwd entry.
    pub shell: PathBuf,
    /// Private key (ed25519, no passphrase); `key.pub` beside it.
    pub key: PathBuf,
    /// The public key line.
    pub pubkey: String,
    /// True when the home is not the user's own directory made by useradd
    /// (a symlink the test asked for, a path on a test's mount): nothing was
    /// written into it and Drop removes only the account (and the link).
    pub home_not_made: bool,
    keydir: TestDir,
}

impl TestUser {
    /// `useradd -m -U -s SHELL NAME`, `usermod -p '*'` (not locked, no
    /// password), a key, and `~/.ssh/authorized_keys` (0700/0600, owned by
    /// the user). `name` must start with `ht` and a digit; use
    /// `unique("ht")`.
    pub fn create(name: &str, shell: &Path) -> TestUser {
        check_name(name);
        run_ok(
            Command::new("useradd")
                .args(["-m", "-U", "-s"])
                .arg(shell)
                .arg(name),
        );
        let mut u = TestUser::adopt(name, false);
        let ssh = u.home.join(".ssh");
        std::fs::create_dir_all(&ssh).expect("mkdir ~/.ssh");
        let ak = ssh.join("authorized_keys");
        std::fs::write(&ak, format!("{}\n", u.pubkey)).expect("write authorized_keys");
        for (p, mode) in [(&ssh, 0o700), (&ak, 0o600)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            chown(p, Some(u.uid), Some(u.gid)).expect("chown");
        }
        u.home_not_made = false;
        u
    }

    /// A second name on `of`'s uid, gid, home and shell (`useradd -o -u`),
    /// logging in with `of`'s key (the shared home's authorized_keys): two
    /// spellings of one principal, as an SSSD or LDAP alias is. Drop removes
    /// only the passwd entry.
    pub fn create_alias(name: &str, of: &TestUser) -> TestUser {
        check_name(name);
        run_ok(
            Command::new("useradd")
                .args(["-o", "-M", "-u"])
                .arg(of.uid.to_string())
                .arg("-g")
                .arg(of.gid.to_string())
                .arg("-d")
                .arg(&of.home)
                .arg("-s")
                .arg(&of.shell)
                .arg(name),
        );
        let mut u = TestUser::adopt(name, true);
        u.key = of.key.clone();
        u.pubkey = of.pubkey.clone();
        u
    }

    /// A user whose home directory `/home/NAME` is a symlink to `target`
    /// (e.g. `/etc`). Nothing is written through the link: authorize its key
    /// with [`SshdEnv::authorize`](crate::SshdEnv::authorize) instead.
    pub fn create_with_home_symlink(name: &str, shell: &Path, target: &Path) -> TestUser {
        check_name(name);
        let home = PathBuf::from("/home").join(name);
        assert!(
            std::fs::symlink_metadata(&home).is_err(),
            "{} already exists",
            home.display()
        );
        run_ok(
            Command::new("useradd")
                .args(["-M", "-U", "-d"])
                .arg(&home)
                .arg("-s")
                .arg(shell)
                .arg(name),
        );
        let u = TestUser::adopt(name, true);
        std::os::unix::fs::symlink(target, &home).expect("symlink home");
        u
    }

    /// A user whose home is `home`, which is neither made nor written to
    /// (a path on a file system the test mounts; authorize its key with
    /// [`SshdEnv::authorize`](crate::SshdEnv::authorize)). Drop removes
    /// only the account.
    pub fn create_with_home(name: &str, shell: &Path, home: &Path) -> TestUser {
        check_name(name);
        run_ok(
            Command::new("useradd")
                .args(["-M", "-U", "-d"])
                .arg(home)
                .arg("-s")
                .arg(shell)
                .arg(name),
        );
        TestUser::adopt(name, true)
    }

    /// Builds the struct right after useradd (so Drop cleans up if anything
    /// later fails): unlock, look up, make the key.
    fn adopt(name: &str, home_not_made: bool) -> TestUser {
        let keydir = TestDir::new("htkey");
        let mut u = TestUser {
            name: name.to_string(),
            uid: 0,
            gid: 0,
            home: PathBuf::new(),
            shell: PathBuf::new(),
            key: keydir.join("id_ed25519"),
            pubkey: String::new(),
            home_not_made,
            keydir,
        };
        let pw = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user {name} not found after useradd"));
        assert!(pw.uid.as_raw() >= 1000, "{name} got uid {}", pw.uid);
        u.uid = pw.uid.as_raw();
        u.gid = pw.gid.as_raw();
        u.home = pw.dir;
        u.shell = pw.shell;
        run_ok(Command::new("usermod").args(["-p", "*", name]));
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(name)
                .arg("-f")
                .arg(&u.key),
        );
        u.pubkey = std::fs::read_to_string(u.keydir.join("id_ed25519.pub"))
            .expect("read public key")
            .trim()
            .to_string();
        u
    }

    /// The pids of processes that still run under this user's uid.
    pub fn processes(&self) -> Vec<i32> {
        proc::pids()
            .into_iter()
            .filter(|p| proc::has_uid(*p, self.uid))
            .collect()
    }
}

fn check_name(name: &str) {
    let b = name.as_bytes();
    assert!(
        name.len() <= 16 && b.len() > 2 && name.starts_with("ht") && b[2].is_ascii_digit(),
        "test user names must match ^ht[0-9] and have at most 16 characters: {name:?}"
    );
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.uid >= 1000 {
            let left = proc::kill_until_gone(Duration::from_secs(5), || self.processes());
            if !left.is_empty() {
                eprintln!(
                    "warning: processes of {} survive SIGKILL: {left:?}",
                    self.name
                );
            }
        }
        let out = if self.home_not_made {
            let o = output(Command::new("userdel").arg(&self.name));
            if std::fs::symlink_metadata(&self.home).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(&self.home);
            }
            o
        } else {
            output(Command::new("userdel").args(["-r"]).arg(&self.name))
        };
        // userdel exits 12 when only the mail spool was missing.
        if !matches!(out.code(), Some(0) | Some(12)) {
            eprintln!("warning: userdel {}: {}", self.name, out.describe());
        }
    }
}
