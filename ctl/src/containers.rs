//! `hutchctl list`, `stop`, `setup`.

use std::path::Path;

use crate::Cli;

pub fn list(cli: &Cli, json: bool) -> anyhow::Result<i32> {
    let _ = (cli, json);
    anyhow::bail!("not implemented yet")
}

pub fn stop(cli: &Cli, user: &str) -> anyhow::Result<i32> {
    let _ = (cli, user);
    anyhow::bail!("not implemented yet")
}

pub fn setup(pam_dir: &Path, service: &str, undo: bool) -> anyhow::Result<i32> {
    let _ = (pam_dir, service, undo);
    anyhow::bail!("not implemented yet")
}
