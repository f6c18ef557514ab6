//! Printing an error with its causes, each once: `step: cause: cause`, what
//! anyhow's `{:#}` prints. For the places in the library that turn an error
//! into a line (the container's report to the keeper, the keeper's `ERR`
//! answer and syslog, the PAM module's log); the binaries use anyhow.
//!
//! The errors of this crate keep their cause in `#[source]` and out of
//! their own message, so that printing the chain never repeats it.

use std::error::Error;
use std::fmt;

/// Displays an error and its sources, separated by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a string.
pub fn chain(e: &dyn Error) -> String {
    Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening /x")]
    struct Outer(#[source] std::io::Error);

    /// Each cause is printed once, after its step.
    #[test]
    fn prints_each_cause_once() {
        let e = Outer(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            chain(&e),
            "opening /x: No such file or directory (os error 2)"
        );
    }

    /// The errors of the kernel seam name their step once and their cause
    /// once: no message repeats its own source.
    #[test]
    fn seam_errors_print_their_cause_once() {
        use std::path::PathBuf;
        let enoent = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let cause = enoent().to_string();
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(crate::rootfs::RootfsError::Io {
                op: "binding",
                path: PathBuf::from("/home/a"),
                source: enoent(),
            }),
            Box::new(crate::net::NetError::Lease {
                file: PathBuf::from("/var/lib/hutch/leases"),
                source: enoent(),
            }),
            Box::new(crate::net::NetError::Forward(enoent())),
            Box::new(crate::container::ContainerError::Io {
                op: "clone",
                source: enoent(),
            }),
            Box::new(crate::container::SetupError::LinkUp(enoent())),
            Box::new(crate::keeper::StartError::Network(
                crate::net::NetError::Netlink {
                    op: "creating",
                    object: "veth h1".into(),
                    source: enoent(),
                },
            )),
            Box::new(crate::ns::NsError::Open {
                path: PathBuf::from("/proc/1/ns/net"),
                source: enoent(),
            }),
        ];
        for e in &errors {
            let line = chain(e.as_ref());
            assert_eq!(line.matches(&cause).count(), 1, "{line}");
            assert!(!e.to_string().contains(&cause), "{e}");
        }
        assert_eq!(
            chain(errors[5].as_ref()),
            format!("network: creating veth h1: {cause}")
        );
    }
}
