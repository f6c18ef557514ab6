//! The per-user keeper: builds the container, counts sessions, tears it down.
pub mod proto;
