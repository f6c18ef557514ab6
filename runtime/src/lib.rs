//! hutch-runtime: everything in hutch that touches the kernel. docs/DESIGN.md
//! (in the repository) walks through it in the order a login runs.
//!
//! - [`cgroup`]: v1 and v2 cgroups behind one interface (knows nothing of users)
//! - [`template`]: build templates on disk and load them read-only into tmpfs
//! - [`layer`]: the persistent writable layer: an ext4 image per user on a loop device
//! - [`rootfs`]: the container's root: overlay, binds, /proc /dev /sys, pivot_root
//! - [`cpus`]: the container's CPU set and the CPU figures it shows without lxcfs
//! - [`container`]: clone the init with its namespaces and set it up, step by step
//! - [`ns`]: the container's namespaces, their join order, opening and joining them
//! - [`privs`]: capability sets and becoming the user
//! - [`keeper`]: the per-user supervisor and its protocol
//! - [`join`]: what the PAM module does to join a container
//! - [`enter`]: what `hutchctl enter` does to run an admin's command in one
//! - [`inspect`]: root's view of a running container, never through the user's names
//! - [`net`]: per-user networking: veth, bridge, leases, firewall tables
//! - [`account`]: NSS look-ups of accounts and groups
//! - [`audit`]: the structured audit records (`hutch-audit` in syslog)
//! - [`counters`]: pam_hutch's login counters, for `hutchctl metrics`
//! - [`mountinfo`]: the one parser of /proc/PID/mountinfo
//! - [`usage_spool`]: a container's final usage, left by its keeper for the history
//! - [`figures`]: what a container is told of its own resources (lxcfs or generated)
//! - [`seccomp`]: the seccomp filter of a session
//! - [`paths`]: where hutch keeps its files; the container marker
//! - [`sys`]: the one place for unsafe libc calls that nix does not cover
//! - [`error`]: printing an error with its causes
//! - [`timing`]: the start marks of a container (state.json, for the benches)

pub mod account;
pub mod audit;
pub mod cgroup;
pub mod container;
pub mod counters;
pub mod cpus;
pub mod enter;
pub mod error;
pub mod figures;
pub mod inspect;
pub mod join;
pub mod keeper;
pub mod kmsg;
pub mod layer;
pub mod mountinfo;
pub mod net;
pub mod ns;
pub mod paths;
pub mod privs;
pub mod relay;
pub mod rootfs;
pub mod seccomp;
pub mod sys;
pub mod template;
pub mod timing;
pub mod tiny_init;
pub mod usage_spool;

/// The real system. Every set-up trait of this crate
/// ([`rootfs::RootfsOps`], [`privs::PrivOps`], the container's own steps)
/// is implemented for it by calling the kernel; the tests implement them
/// with recording fakes that assert the order without root.
#[derive(Debug, Default)]
pub struct Kernel;
