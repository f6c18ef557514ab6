//! `hutchctl template ...`

use std::path::PathBuf;

use clap::Subcommand;

use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum TemplateCmd {
    /// Build a template into <lib_dir>/templates/NAME.
    Build {
        name: String,
        /// Copy an existing root filesystem directory.
        #[arg(long, conflicts_with = "debootstrap")]
        from_dir: Option<PathBuf>,
        /// Build from Debian's packages with mmdebstrap/debootstrap (e.g. bookworm).
        #[arg(long)]
        debootstrap: Option<String>,
        /// Extra packages for --debootstrap, comma-separated.
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
    },
    /// Load a template into RAM (a new generation).
    Load { name: String },
    /// List templates and loaded generations.
    List,
}

pub fn run(cli: &Cli, cmd: &TemplateCmd) -> anyhow::Result<i32> {
    let _ = (cli, cmd);
    anyhow::bail!("not implemented yet")
}
