//! `Directory`: a real OpenLDAP server and a real NSS client, seen only by
//! the processes a test starts inside the directory's mount namespace.
//!
//! - `slapd` runs on the host with a config and an mdb database in the
//!   test's own directory, listening only on a unix socket there
//!   (`ldapi://`); root adds entries over it with SASL EXTERNAL (the socket's
//!   peer credentials), no password anywhere.
//! - `nslcd` (nss-pam-ldapd) runs in a private mount namespace
//!   (`unshare --mount --propagation private`) in which the test's
//!   `nslcd.conf`, an `nsswitch.conf` naming `ldap` for passwd and group, and
//!   a directory of its own at `/run/nslcd` (the socket path is compiled into
//!   libnss_ldap) are bound over the host's. The host's /etc/nsswitch.conf is
//!   never touched: processes outside that namespace do not see the
//!   directory's users at all.
//! - Processes that must see the directory's users (the test's sshd, whose
//!   keepers inherit its mount namespace, `hutchctl policy`) start from that
//!   namespace: [`SshdOpts::mount_ns`](crate::SshdOpts) and
//!   [`Directory::command`].
//!
//! nslcd has `ignorecase yes`, as on sites whose users type their names in
//! any case: `getpwnam("ALICE")` gives the entry spelled as in the
//! directory. A second `uid` value of an entry is an alias: `getpwnam` of it
//! gives an entry under the alias with the same uid, and `getpwuid` gives
//! the first value, the canonical name.
//!
//! Drop kills every process of the directory's users (by uid), nslcd and
//! slapd (by pid), and removes the directory with the database and homes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{output, proc, run_ok, shell_quote, wait_until, OutputExt, TestDir};

/// The directory's base DN.
pub const BASE: &str = "dc=hutch,dc=test";

/// Where libnss_ldap (nss-pam-ldapd) looks for nslcd's socket; bound over
/// inside the directory's namespace.
const NSLCD_RUN: &str = "/run/nslcd";

/// A running slapd + nslcd pair; see the module docs.
pub struct Directory {
    dir: TestDir,
    slapd: Option<Child>,
    nslcd: Option<Child>,
    nslcd_pid: i32,
    uri: String,
    uids: std::sync::Mutex<Vec<u32>>,
}

/// An account that exists only in the directory, with an ed25519 key.
#[derive(Debug)]
pub struct LdapUser {
    /// The canonical name (the entry's first `uid` value).
    pub name: String,
    /// Further `uid` values of the entry.
    pub aliases: Vec<String>,
    pub uid: u32,
    /// The primary group's gid (a posixGroup of the same name).
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    pub key: PathBuf,
    pub pubkey: String,
    _keydir: TestDir,
}

/// A posixGroup of the directory.
#[derive(Debug, Clone)]
pub struct LdapGroup {
    pub name: String,
    pub gid: u32,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A uid/gid no other test process on this machine hands out while this one
/// lives: above any local account, from this process's pid.
fn fresh_id() -> u32 {
    10_000_000 + std::process::id() * 64 + NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// `ldapi://` URL of a socket path (the path percent-encoded).
fn ldapi_url(socket: &Path) -> String {
    let mut s = String::from("ldapi://");
    for b in socket.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

impl Directory {
    /// Starts slapd and nslcd as the module docs say and waits until a
    /// look-up through NSS inside the namespace answers. Panics with both
    /// daemons' logs if they do not come up.
    pub fn start() -> Directory {
        let dir = TestDir::new("htldap");
        let d = dir.path().to_path_buf();
        std::fs::create_dir(d.join("db")).expect("mkdir db");
        std::fs::create_dir(d.join("nslcd")).expect("mkdir nslcd");
        std::fs::create_dir(d.join("home")).expect("mkdir home");
        let socket = d.join("ldapi");
        let uri = ldapi_url(&socket);
        let peer_root = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth";
        std::fs::write(
            d.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/nis.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 modulepath /usr/lib/ldap\n\
                 moduleload back_mdb\n\
                 pidfile {d}/slapd.pid\n\
                 database mdb\n\
                 suffix \"{BASE}\"\n\
                 rootdn \"{peer_root}\"\n\
                 directory {d}/db\n\
                 maxsize 16777216\n\
                 access to * by * read\n",
                d = d.display()
            ),
        )
        .expect("write slapd.conf");
        std::fs::write(
            d.join("base.ldif"),
            format!(
                "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: hutch\no: hutch tests\n\n\
                 dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
                 dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n"
            ),
        )
        .expect("write base.ldif");
        run_ok(
            Command::new("slapadd")
                .arg("-q")
                .arg("-f")
                .arg(d.join("slapd.conf"))
                .arg("-l")
                .arg(d.join("base.ldif")),
        );
        let slapd_log = std::fs::File::create(d.join("slapd.log")).expect("create slapd.log");
        // -d: stays in the foreground (logging stats to its stderr), so the
        // child is the server and dies by pid.
        let slapd = Command::new("slapd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args(["-h", &uri, "-d", "stats"])
            .stdin(Stdio::null())
            .stdout(slapd_log.try_clone().unwrap())
            .stderr(slapd_log)
            .spawn()
            .expect("spawning slapd");

        std::fs::write(
            d.join("nslcd.conf"),
            format!("uri {uri}\nbase {BASE}\nignorecase yes\n"),
        )
        .expect("write nslcd.conf");
        std::fs::set_permissions(d.join("nslcd.conf"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(
            d.join("nsswitch.conf"),
            "passwd: files ldap\ngroup: files ldap\nshadow: files\nhosts: files\n",
        )
        .expect("write nsswitch.conf");
        // The mount point for the bind; the nslcd package's own init script
        // makes it (and it stays, like sshd's /run/sshd: removing it would
        // detach the binds of a test running in parallel).
        if !Path::new(NSLCD_RUN).exists() {
            let _ = std::fs::create_dir(NSLCD_RUN);
        }
        // /etc/nslcd.conf is the nslcd package's conffile: the bind's target.
        let script = format!(
            "set -e\n\
             mount --bind {nsswitch} /etc/nsswitch.conf\n\
             mount --bind {conf} /etc/nslcd.conf\n\
             mount --bind {run} {NSLCD_RUN}\n\
             exec nslcd -d\n",
            nsswitch = shell_quote(&d.join("nsswitch.conf").to_string_lossy()),
            conf = shell_quote(&d.join("nslcd.conf").to_string_lossy()),
            run = shell_quote(&d.join("nslcd").to_string_lossy()),
        );
        let nslcd_log = std::fs::File::create(d.join("nslcd.log")).expect("create nslcd.log");
        let nslcd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(nslcd_log.try_clone().unwrap())
            .stderr(nslcd_log)
            .spawn()
            .expect("spawning nslcd");
        let nslcd_pid = nslcd.id() as i32;
        let dir_ = Directory {
            dir,
            slapd: Some(slapd),
            nslcd: Some(nslcd),
            nslcd_pid,
            uri,
            uids: std::sync::Mutex::new(Vec::new()),
        };
        let up = wait_until(Duration::from_secs(20), || {
            let search = output(Command::new("ldapsearch").args([
                "-Q", "-Y", "EXTERNAL", "-H", &dir_.uri, "-b", BASE, "-s", "base", "dn",
            ]));
            (search.status.success() && d.join("nslcd/socket").exists()).then_some(())
        });
        assert!(
            up.is_some(),
            "slapd/nslcd did not come up\n--- slapd ---\n{}\n--- nslcd ---\n{}",
            dir_.log("slapd"),
            dir_.log("nslcd")
        );
        dir_
    }

    /// The pid whose mount namespace holds the NSS set-up (nslcd's).
    pub fn ns_pid(&self) -> i32 {
        self.nslcd_pid
    }

    /// The directory's own files (slapd.conf, logs, `home/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `slapd` or `nslcd`'s log so far.
    pub fn log(&self, which: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{which}.log"))).unwrap_or_default()
    }

    /// A command that runs `prog` in the directory's mount namespace, where
    /// NSS sees the directory's users and groups.
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.nslcd_pid))
            .arg("--")
            .arg(prog);
        c.stdin(Stdio::null());
        c
    }

    /// `getent DB KEY` inside the namespace: the line, or `None`.
    pub fn getent(&self, db: &str, key: &str) -> Option<String> {
        let out = output(self.command("getent").args([db, key]));
        out.status
            .success()
            .then(|| out.stdout_str().trim().to_string())
    }

    /// Adds entries (LDIF) as the directory's root (SASL EXTERNAL over the socket).
    pub fn add(&self, ldif: &str) {
        let f = self.dir.join(format!("{}.ldif", crate::unique("add")));
        std::fs::write(&f, ldif).expect("write ldif");
        let out = output(
            Command::new("ldapadd")
                .args(["-Q", "-Y", "EXTERNAL", "-H", &self.uri, "-f"])
                .arg(&f),
        );
        let _ = std::fs::remove_file(&f);
        assert!(
            out.status.success(),
            "ldapadd failed\n{ldif}\n{}",
            out.describe()
        );
    }

    /// A posixGroup `name` with a fresh gid and `members` (memberUid).
    pub fn group(&self, name: &str, members: &[&str]) -> LdapGroup {
        let gid = fresh_id();
        let mut ldif =
            format!("dn: cn={name},ou=groups,{BASE}\nobjectClass: posixGroup\ncn: {name}\ngidNumber: {gid}\n");
        for m in members {
            ldif.push_str(&format!("memberUid: {m}\n"));
        }
        self.add(&ldif);
        LdapGroup {
            name: name.to_string(),
            gid,
        }
    }

    /// Adds `member` to the existing group (memberUid).
    pub fn add_member(&self, group: &LdapGroup, member: &str) {
        let f = self.dir.join(format!("{}.ldif", crate::unique("mod")));
        std::fs::write(
            &f,
            format!(
                "dn: cn={},ou=groups,{BASE}\nchangetype: modify\nadd: memberUid\nmemberUid: {member}\n",
                group.name
            ),
        )
        .unwrap();
        let out = output(
            Command::new("ldapmodify")
                .args(["-Q", "-Y", "EXTERNAL", "-H", &self.uri, "-f"])
                .arg(&f),
        );
        let _ = std::fs::remove_file(&f);
        assert!(
            out.status.success(),
            "ldapmodify failed\n{}",
            out.describe()
        );
    }

    /// A posixAccount `name` (then `aliases` as further `uid` values) with a
    /// primary posixGroup of its own, login shell `shell`, and a 0700 home
    /// owned by it under [`dir`](Self::dir)`/home` unless `home` names one
    /// (which is then only recorded, not made). Also in each of `groups`.
    pub fn user(
        &self,
        name: &str,
        aliases: &[&str],
        shell: &Path,
        home: Option<&Path>,
        groups: &[&LdapGroup],
    ) -> LdapUser {
        let uid = fresh_id();
        self.uids.lock().unwrap().push(uid);
        let primary = self.group(name, &[]);
        let home = home.map_or_else(|| self.dir.join("home").join(name), Path::to_path_buf);
        let mut ldif = format!(
            "dn: uid={name},ou=people,{BASE}\nobjectClass: account\nobjectClass: posixAccount\n\
             uid: {name}\n"
        );
        for a in aliases {
            ldif.push_str(&format!("uid: {a}\n"));
        }
        ldif.push_str(&format!(
            "cn: {name}\nuidNumber: {uid}\ngidNumber: {}\nhomeDirectory: {}\nloginShell: {}\n",
            primary.gid,
            home.display(),
            shell.display()
        ));
        self.add(&ldif);
        for g in groups {
            self.add_member(g, name);
        }
        if home.starts_with(self.dir.path()) {
            std::fs::create_dir(&home).expect("mkdir home");
            std::os::unix::fs::chown(&home, Some(uid), Some(primary.gid)).unwrap();
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let keydir = TestDir::new("htkey");
        let key = keydir.join("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&key),
        );
        let pubkey = std::fs::read_to_string(keydir.join("id_ed25519.pub"))
            .expect("read public key")
            .trim()
            .to_string();
        LdapUser {
            name: name.to_string(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            uid,
            gid: primary.gid,
            home,
            shell: shell.to_path_buf(),
            key,
            pubkey,
            _keydir: keydir,
        }
    }
}

impl LdapUser {
    /// The same account logging in as `spelling` (another case, an alias).
    pub fn as_spelled<'a>(&'a self, spelling: &'a str) -> Spelled<'a> {
        Spelled {
            user: self,
            spelling,
        }
    }
}

/// An [`LdapUser`] under another spelling of its name, for `ssh SPELLING@`.
#[derive(Debug, Clone, Copy)]
pub struct Spelled<'a> {
    pub user: &'a LdapUser,
    pub spelling: &'a str,
}

impl crate::Login for LdapUser {
    fn login(&self) -> &str {
        &self.name
    }
    fn key(&self) -> &Path {
        &self.key
    }
    fn pubkey(&self) -> &str {
        &self.pubkey
    }
}

impl crate::Login for Spelled<'_> {
    fn login(&self) -> &str {
        self.spelling
    }
    fn key(&self) -> &Path {
        &self.user.key
    }
    fn pubkey(&self) -> &str {
        &self.user.pubkey
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let uids = self.uids.lock().map(|u| u.clone()).unwrap_or_default();
        let left = proc::kill_until_gone(Duration::from_secs(5), || {
            proc::pids()
                .into_iter()
                .filter(|p| uids.iter().any(|u| proc::has_uid(*p, *u)))
                .collect()
        });
        if !left.is_empty() {
            eprintln!("warning: processes of directory users survive SIGKILL: {left:?}");
        }
        for child in [self.nslcd.take(), self.slapd.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- slapd log ---\n{}", self.log("slapd"));
            eprintln!("--- nslcd log ---\n{}", self.log("nslcd"));
        }
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("dir", &self.dir.path())
            .field("uri", &self.uri)
            .field("nslcd_pid", &self.nslcd_pid)
            .finish()
    }
}
