//! NSS look-ups of accounts and their groups (so LDAP/SSSD users work),
//! and the form in which the PAM module hands its look-up to the keeper it
//! starts ([`Handed`]), so that a keeper need not load NSS again.

use std::ffi::CString;
use std::path::PathBuf;

use hutch_policy::Account;
use nix::unistd::{getgrouplist, Gid, Group, User};

/// A failed look-up, naming the user.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user {0:?} not found")]
    NoSuchUser(String),
    #[error("looking up {what} {name:?}")]
    Lookup {
        what: &'static str,
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("user name {0:?} is not valid")]
    BadName(String),
}

/// A user name hutch accepts in paths and cgroup names.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
}

/// Looks `name` up through NSS, with its groups' names (primary first).
///
/// The account is the one NSS calls canonical: the name `getpwuid` gives
/// for the uid `name` resolves to, when that name resolves back to the same
/// uid. `Alice` on an SSSD or AD host (case-insensitive), an LDAP entry's
/// second `uid` value, or a second local name on the same uid are one
/// account with one container, one policy table and one set of groups, not
/// one each (the uid is the principal the kernel knows). Everything hutch
/// keys by user (run dir, cgroup, keeper, hostname) uses this name.
pub fn lookup(name: &str) -> Result<Account, AccountError> {
    lookup_with_ids(name).map(|(account, _)| account)
}

/// [`lookup`], with the numeric id of each of the account's groups as the
/// same look-up found it (what [`group_ids`] asks NSS for again).
pub fn lookup_with_ids(name: &str) -> Result<(Account, Vec<(String, u32)>), AccountError> {
    let mut account = lookup_without_groups(name)?;
    let ids = add_groups(&mut account)?;
    Ok((account, ids))
}

/// [`lookup`] without the groups (`groups` left empty): `getpwnam` and the
/// canonical name's `getpwuid` only. For a policy that has no group
/// tables ([`hutch_policy::Policy::uses_groups`]) the groups change no
/// decision, and their look-up is most of a login's NSS time
/// (`getgrouplist` asks every `group` source: nss_systemd searches five
/// userdb directories twice).
pub fn lookup_without_groups(name: &str) -> Result<Account, AccountError> {
    if !valid_user_name(name) {
        return Err(AccountError::BadName(name.to_string()));
    }
    let user = User::from_name(name)
        .map_err(|source| AccountError::Lookup {
            what: "user",
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))?;
    let user = canonical(user);
    Ok(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: Vec::new(),
        home: user.dir,
        shell: user.shell,
    })
}

/// Fills in `account.groups` (names, primary first) from NSS
/// (`getgrouplist` of the canonical name, `getgrgid` of each group), and
/// returns each group's name with its id.
pub fn add_groups(account: &mut Account) -> Result<Vec<(String, u32)>, AccountError> {
    let cname = CString::new(account.name.as_str())
        .map_err(|_| AccountError::BadName(account.name.clone()))?;
    let primary = Gid::from_raw(account.gid);
    let gids = getgrouplist(&cname, primary).map_err(|source| AccountError::Lookup {
        what: "groups of",
        name: account.name.clone(),
        source,
    })?;
    let mut ids: Vec<(String, u32)> = Vec::new();
    let mut ordered: Vec<Gid> = vec![primary];
    ordered.extend(gids.into_iter().filter(|g| *g != primary));
    for gid in ordered {
        if let Ok(Some(g)) = Group::from_gid(gid) {
            if !ids.iter().any(|(n, _)| *n == g.name) {
                ids.push((g.name, gid.as_raw()));
            }
        }
    }
    account.groups = ids.iter().map(|(n, _)| n.clone()).collect();
    Ok(ids)
}

/// The canonical entry of `user`'s uid ([`lookup`]): `getpwuid`'s, if its
/// name is one hutch accepts and resolves back to the same uid; else
/// `user` as it is.
fn canonical(user: User) -> User {
    let Ok(Some(by_uid)) = User::from_uid(user.uid) else {
        return user;
    };
    if by_uid.name == user.name || !valid_user_name(&by_uid.name) {
        return user;
    }
    match User::from_name(&by_uid.name) {
        Ok(Some(back)) if back.uid == user.uid => by_uid,
        _ => user,
    }
}

/// An account as the PAM module looked it up, handed to the keeper it
/// starts on a pipe (`hutch-keeper --account-fd N`, one JSON object), so that
/// the keeper's start does not pay NSS's first use in a fresh process again
/// (~1 ms with `passwd: files systemd`, most of it `getgrouplist` loading
/// libnss_systemd). Sound because only root can start a keeper that acts on
/// it (the keeper refuses any other caller, the module runs only a root-owned
/// binary), the keeper runs in its starter's namespaces and so sees the same
/// NSS, and the starter is the process that becomes the account's session;
/// a keeper started without it looks the account up itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handed {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Each group's name and id, the primary group first.
    pub groups: Vec<(String, u32)>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// The most a handed account may take (well under a pipe's 64 KiB, so that
/// the starter's write never waits for the keeper): a larger one (an account
/// in thousands of groups) is not handed over, and the keeper looks it up.
pub const HANDED_MAX: usize = 48 * 1024;

/// Why a handed account was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HandedError {
    #[error("reading the handed account")]
    Read(#[source] std::io::Error),
    #[error("the handed account is not valid")]
    Parse(#[source] serde_json::Error),
    #[error("the handed account is {got:?}, not the user {want:?} the keeper was started for")]
    OtherUser { got: String, want: String },
}

impl Handed {
    /// The account and its groups' ids, as [`lookup_with_ids`] gives them.
    pub fn new(account: &Account, group_ids: &[(String, u32)]) -> Handed {
        Handed {
            name: account.name.clone(),
            uid: account.uid,
            gid: account.gid,
            groups: group_ids.to_vec(),
            home: account.home.clone(),
            shell: account.shell.clone(),
        }
    }

    /// One line of JSON; `None` when it would not fit [`HANDED_MAX`] or a
    /// path is not UTF-8 (then nothing is handed over).
    pub fn encode(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self)
            .ok()
            .filter(|v| v.len() <= HANDED_MAX)
    }

    /// Parses what [`Handed::encode`] wrote, for the keeper of `user`: the
    /// name must be `user` exactly (the canonical name the starter keyed the
    /// keeper by) and one hutch accepts.
    pub fn decode(bytes: &[u8], user: &str) -> Result<Handed, HandedError> {
        let h: Handed = serde_json::from_slice(bytes).map_err(HandedError::Parse)?;
        if h.name != user || !valid_user_name(&h.name) {
            return Err(HandedError::OtherUser {
                got: h.name,
                want: user.to_string(),
            });
        }
        Ok(h)
    }

    /// Reads one from `fd` (to its end, at most [`HANDED_MAX`] bytes) and
    /// [`Handed::decode`]s it.
    pub fn read(fd: std::os::fd::OwnedFd, user: &str) -> Result<Handed, HandedError> {
        use std::io::Read;
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(HANDED_MAX as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(HandedError::Read)?;
        Handed::decode(&buf, user)
    }

    /// The account, and its groups' ids (what [`group_ids`] would find).
    pub fn into_parts(self) -> (Account, Vec<(String, u32)>) {
        let account = Account {
            name: self.name,
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.iter().map(|(n, _)| n.clone()).collect(),
            home: self.home,
            shell: self.shell,
        };
        (account, self.groups)
    }
}

/// The numeric ids of the account's groups (primary first).
pub fn group_ids(account: &Account) -> Vec<(String, u32)> {
    account
        .groups
        .iter()
        .filter_map(|n| {
            Group::from_name(n)
                .ok()
                .flatten()
                .map(|g| (g.name, g.gid.as_raw()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> (Account, Vec<(String, u32)>) {
        let ids = vec![("alice".to_string(), 1001), ("students".to_string(), 2000)];
        let account = Account {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            groups: ids.iter().map(|(n, _)| n.clone()).collect(),
            home: "/home/alice".into(),
            shell: "/usr/sbin/hutch-shell".into(),
        };
        (account, ids)
    }

    /// A handed account comes back as the account and group ids it was made of.
    #[test]
    fn handed_round_trip() {
        let (account, ids) = alice();
        let bytes = Handed::new(&account, &ids).encode().unwrap();
        let back = Handed::decode(&bytes, "alice").unwrap().into_parts();
        assert_eq!(back, (account, ids));
    }

    /// The keeper of one user never takes another user's account, nor a
    /// name hutch would not accept, nor anything that is not one.
    #[test]
    fn handed_for_another_user_is_refused() {
        let (account, ids) = alice();
        let bytes = Handed::new(&account, &ids).encode().unwrap();
        assert!(matches!(
            Handed::decode(&bytes, "bob"),
            Err(HandedError::OtherUser { .. })
        ));
        let mut bad = account.clone();
        bad.name = "../x".into();
        let bytes = Handed::new(&bad, &ids).encode().unwrap();
        assert!(Handed::decode(&bytes, "../x").is_err());
        assert!(matches!(
            Handed::decode(b"{\"name\":\"alice\"}", "alice"),
            Err(HandedError::Parse(_))
        ));
        assert!(Handed::decode(b"", "alice").is_err());
    }

    /// An account too large for the pipe is not handed over (the keeper
    /// looks it up), so the starter's write never blocks.
    #[test]
    fn handed_too_large_is_not_encoded() {
        let (account, _) = alice();
        let ids: Vec<(String, u32)> = (0..2000).map(|i| (format!("group-{i:040}"), i)).collect();
        assert!(Handed::new(&account, &ids).encode().is_none());
    }

    /// What the starter writes on the pipe is what the keeper reads.
    #[test]
    fn handed_through_a_pipe() {
        let (account, ids) = alice();
        let (r, w) = nix::unistd::pipe().unwrap();
        let bytes = Handed::new(&account, &ids).encode().unwrap();
        nix::unistd::write(&w, &bytes).unwrap();
        drop(w);
        assert_eq!(
            Handed::read(r, "alice").unwrap().into_parts(),
            (account, ids)
        );
    }

    /// `lookup_with_ids` pairs each group name with the id `group_ids`
    /// finds for it (root's account, which every host has).
    #[test]
    fn lookup_ids_match_group_ids() {
        let (account, ids) = lookup_with_ids("root").unwrap();
        assert_eq!(account.uid, 0);
        assert_eq!(ids, group_ids(&account));
    }
}
