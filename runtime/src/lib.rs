//! hutch-runtime: everything in hutch that touches the kernel.
//!
//! - [`cgroup`]: v1 and v2 cgroups behind one interface (knows nothing of users)
//! - [`template`]: build templates on disk and load them read-only into tmpfs
//! - [`rootfs`]: the container's root: overlay, binds, /proc /dev /sys, pivot_root
//! - [`container`]: clone the init with its namespaces, in the order of DESIGN.md
//! - [`keeper`]: the per-user supervisor and its protocol
//! - [`join`]: what the PAM module does to enter a container
//! - [`enter`]: what `hutchctl enter` does to run an admin's command in one
//! - [`net`]: per-user networking: veth, bridge, leases, firewall tables
//! - [`account`]: NSS look-ups of accounts and groups
//! - [`sys`]: the one place for unsafe libc calls that nix does not cover

pub mod account;
pub mod cgroup;
pub mod container;
pub mod enter;
pub mod join;
pub mod keeper;
pub mod net;
pub mod paths;
pub mod rootfs;
pub mod seccomp;
pub mod sys;
pub mod template;
