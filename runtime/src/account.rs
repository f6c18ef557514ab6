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
///
/// The account is the one NSS calls canonical: the name `getpwuid` gives
/// for the uid `name` resolves to, when that name resolves back to the same
/// uid. `Alice` on an SSSD or AD host (case-insensitive), an LDAP entry's
/// second `uid` value, or a second local name on the same uid are one
/// account with one container, one policy table and one set of groups, not
/// one each (the uid is the principal the kernel knows). Everything hutch
/// keys by user (run dir, cgroup, keeper, hostname) uses this name.
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
    let user = canonical(user);
    let cname =
        CString::new(user.name.as_str()).map_err(|_| AccountError::BadName(user.name.clone()))?;
    let gids = getgrouplist(&cname, user.gid).map_err(|source| AccountError::Lookup {
        what: "groups of",
        name: user.name.clone(),
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
