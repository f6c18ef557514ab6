//! Privileges: what a process that runs in a container may keep, and
//! becoming the user. Each caller goes through one function here:
//!
//! - the container's init ([`crate::container`]) and `hutchctl enter` as
//!   the user ([`crate::enter`]) call [`become_user`]: empty bounding,
//!   inheritable and ambient sets, the user's groups, gid and uid,
//!   no_new_privs, non-dumpable, then a check that no capability is left;
//! - the PAM host, once in the container ([`crate::join`]), calls
//!   [`drop_exec_caps`]: empty bounding, inheritable and ambient sets. It
//!   stays root with its effective capabilities (the host program, sshd or
//!   su, still changes to the user itself), but nothing it execs for the
//!   user can gain a capability.
//!
//! The steps go through [`PrivOps`], so that the container's recording fake
//! sees them in order (`container::tests::setup_order`).

use nix::sys::prctl;
use nix::unistd::{Gid, Uid};

use crate::Kernel;

/// Whom a process becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included where it belongs).
    pub groups: Vec<u32>,
}

/// A step of dropping privileges failed; the kernel's cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum PrivsError {
    #[error("dropping {cap} from the bounding set")]
    Bounding {
        cap: caps::Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("clearing the {set} capabilities")]
    Clear {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setgroups({groups:?})")]
    Setgroups {
        groups: Vec<u32>,
        #[source]
        source: nix::Error,
    },
    #[error("setresgid({gid})")]
    Setresgid {
        gid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("setresuid({uid})")]
    Setresuid {
        uid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("prctl(PR_SET_NO_NEW_PRIVS)")]
    NoNewPrivs(#[source] nix::Error),
    #[error("prctl(PR_SET_DUMPABLE, 0)")]
    Dumpable(#[source] nix::Error),
    #[error("capabilities remain after becoming the user")]
    CapabilitiesRemain,
}

type Result<T> = std::result::Result<T, PrivsError>;

/// The steps, one method each. [`Kernel`] performs them.
pub trait PrivOps {
    /// Empties the bounding set: no later execve can gain a capability.
    fn drop_bounding_set(&mut self) -> Result<()>;
    /// Empties the ambient and inheritable sets.
    fn clear_ambient_inheritable(&mut self) -> Result<()>;
    fn setgroups(&mut self, gids: &[u32]) -> Result<()>;
    fn setresgid(&mut self, gid: u32) -> Result<()>;
    fn setresuid(&mut self, uid: u32) -> Result<()>;
    fn no_new_privs(&mut self) -> Result<()>;
    /// Not ptraceable by the user, and /proc/PID/{exe,fd,environ} closed to
    /// them: the init is a fork of the keeper, its exe a host binary
    /// (CVE-2019-5736).
    fn not_dumpable(&mut self) -> Result<()>;
    fn check_no_capabilities(&mut self) -> Result<()>;
}

impl PrivOps for Kernel {
    fn drop_bounding_set(&mut self) -> Result<()> {
        for cap in caps::all() {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|source| PrivsError::Bounding { cap, source })?;
        }
        Ok(())
    }
    fn clear_ambient_inheritable(&mut self) -> Result<()> {
        caps::clear(None, caps::CapSet::Ambient).map_err(|source| PrivsError::Clear {
            set: "ambient",
            source,
        })?;
        caps::clear(None, caps::CapSet::Inheritable).map_err(|source| PrivsError::Clear {
            set: "inheritable",
            source,
        })
    }
    fn setgroups(&mut self, gids: &[u32]) -> Result<()> {
        let list: Vec<Gid> = gids.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&list).map_err(|source| PrivsError::Setgroups {
            groups: gids.to_vec(),
            source,
        })
    }
    fn setresgid(&mut self, gid: u32) -> Result<()> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(|source| PrivsError::Setresgid { gid, source })
    }
    fn setresuid(&mut self, uid: u32) -> Result<()> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u).map_err(|source| PrivsError::Setresuid { uid, source })
    }
    fn no_new_privs(&mut self) -> Result<()> {
        prctl::set_no_new_privs().map_err(PrivsError::NoNewPrivs)
    }
    fn not_dumpable(&mut self) -> Result<()> {
        prctl::set_dumpable(false).map_err(PrivsError::Dumpable)
    }
    fn check_no_capabilities(&mut self) -> Result<()> {
        // An unreadable set counts as not empty.
        if caps::read(None, caps::CapSet::Permitted)
            .map(|s| !s.is_empty())
            .unwrap_or(true)
        {
            return Err(PrivsError::CapabilitiesRemain);
        }
        Ok(())
    }
}

/// Empties the bounding, ambient and inheritable sets: whatever the caller
/// execs starts with every capability set empty (unless it is setuid-root,
/// which no_new_privs or nosuid stops elsewhere). The caller keeps its own
/// effective and permitted capabilities.
pub fn drop_exec_caps(ops: &mut impl PrivOps) -> Result<()> {
    ops.drop_bounding_set()?;
    ops.clear_ambient_inheritable()
}

/// Becomes `id` for good: [`drop_exec_caps`], then setgroups, setresgid,
/// setresuid (in that order: each needs the privilege the next drops),
/// no_new_privs, non-dumpable, and a check that no permitted capability is
/// left.
pub fn become_user(ops: &mut impl PrivOps, id: &Identity) -> Result<()> {
    drop_exec_caps(ops)?;
    ops.setgroups(&id.groups)?;
    ops.setresgid(id.gid)?;
    ops.setresuid(id.uid)?;
    ops.no_new_privs()?;
    ops.not_dumpable()?;
    ops.check_no_capabilities()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl PrivOps for Recorder {
        fn drop_bounding_set(&mut self) -> Result<()> {
            self.0.push("drop_bounding_set".into());
            Ok(())
        }
        fn clear_ambient_inheritable(&mut self) -> Result<()> {
            self.0.push("clear_ambient_inheritable".into());
            Ok(())
        }
        fn setgroups(&mut self, gids: &[u32]) -> Result<()> {
            self.0.push(format!("setgroups {gids:?}"));
            Ok(())
        }
        fn setresgid(&mut self, gid: u32) -> Result<()> {
            self.0.push(format!("setresgid {gid}"));
            Ok(())
        }
        fn setresuid(&mut self, uid: u32) -> Result<()> {
            self.0.push(format!("setresuid {uid}"));
            Ok(())
        }
        fn no_new_privs(&mut self) -> Result<()> {
            self.0.push("no_new_privs".into());
            Ok(())
        }
        fn not_dumpable(&mut self) -> Result<()> {
            self.0.push("not_dumpable".into());
            Ok(())
        }
        fn check_no_capabilities(&mut self) -> Result<()> {
            self.0.push("check_no_capabilities".into());
            Ok(())
        }
    }

    /// Becoming the user drops the capability sets first, then groups, gid,
    /// uid, and checks last; the PAM host's drop stops after the sets.
    #[test]
    fn become_user_order() {
        let mut rec = Recorder::default();
        let id = Identity {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
        };
        become_user(&mut rec, &id).unwrap();
        assert_eq!(
            rec.0,
            [
                "drop_bounding_set",
                "clear_ambient_inheritable",
                "setgroups [100, 27]",
                "setresgid 100",
                "setresuid 1000",
                "no_new_privs",
                "not_dumpable",
                "check_no_capabilities",
            ]
        );
        let mut rec = Recorder::default();
        drop_exec_caps(&mut rec).unwrap();
        assert_eq!(rec.0, ["drop_bounding_set", "clear_ambient_inheritable"]);
    }
}
