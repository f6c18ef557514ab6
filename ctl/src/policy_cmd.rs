//! `hutchctl check` and `hutchctl policy USER`.

use std::path::Path;

use crate::Cli;

pub fn check(cli: &Cli, file: Option<&Path>, strict: bool) -> anyhow::Result<i32> {
    let _ = (cli, file, strict);
    anyhow::bail!("not implemented yet")
}

pub fn show(cli: &Cli, user: &str, service: &str) -> anyhow::Result<i32> {
    let _ = (cli, user, service);
    anyhow::bail!("not implemented yet")
}
