//! NSS look-ups of accounts and their groups (so LDAP/SSSD users work).

use std::ffi::CString;

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
pub fn lookup(name: &str) -> Result<Account, AccountError> {
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
    let cname = CString::new(name).map_err(|_| AccountError::BadName(name.to_string()))?;
    let gids = getgrouplist(&cname, user.gid).map_err(|source| AccountError::Lookup {
        what: "groups of",
        name: name.to_string(),
        source,
    })?;
    let mut groups = Vec::new();
    let mut ordered: Vec<Gid> = vec![user.gid];
    ordered.extend(gids.into_iter().filter(|g| *g != user.gid));
    for gid in ordered {
        if let Ok(Some(g)) = Group::from_gid(gid) {
            if !groups.contains(&g.name) {
                groups.push(g.name);
            }
        }
    }
    Ok(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home: user.dir,
        shell: user.shell,
    })
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
