//! pam_hutch.so: the PAM session module that places a confined user's
//! session in their container (docs/DESIGN.md, "The session, step by step").
//!
//! A guest in someone else's process (sshd's privileged monitor, login, su):
//! thin `extern "C"` glue in [`ffi`] (the only unsafe code), the decisions in
//! [`session`] over the [`session::PamOps`] trait, the work in
//! `hutch_runtime::join`. Every entry point catches panics; only the
//! `pam_sm_*` symbols are exported.
//!
//! Arguments: `config=PATH`, `keeper=PATH`, `timeout=SECONDS`, `debug`,
//! `on_error=fail|ignore` (see [`args`] and pam_hutch(8)).

pub mod args;
pub mod codes;
pub mod ffi;
pub mod session;
