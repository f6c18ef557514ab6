//! hutchctl: the admin's tool.
//!
//! `template build|load|list`, `list`, `stop`, `check`, `policy`, `setup`.

mod containers;
mod policy_cmd;
mod stats;
mod template_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Manage hutch: per-user login containers.
#[derive(Parser, Debug)]
#[command(name = "hutchctl", version, about, long_about = None)]
pub struct Cli {
    /// Policy file to use.
    #[arg(long, global = true, default_value = hutch_policy::DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build, load and list templates.
    #[command(subcommand)]
    Template(template_cmd::TemplateCmd),
    /// List running containers.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Usage and limit hits of running containers: memory, CPU, pids, I/O,
    /// OOM kills, pids-limit hits, memory.high and CPU throttling.
    Stats {
        /// Only this user's container.
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a user's container: end every process and session in it.
    Stop {
        /// The user whose container to stop.
        user: String,
    },
    /// Check a policy file (default: --config) and report errors.
    Check {
        /// The file to check.
        file: Option<PathBuf>,
        /// Exit 2 when there are warnings only.
        #[arg(long)]
        strict: bool,
    },
    /// Print the effective policy of a user, with where each value came from.
    Policy {
        /// The user to resolve.
        user: String,
        /// The PAM service to resolve for.
        #[arg(long, default_value = "sshd")]
        service: String,
    },
    /// Add (or with --undo remove) pam_hutch to a PAM service, idempotently.
    Setup {
        /// The PAM service (a file in /etc/pam.d).
        #[arg(long)]
        pam_service: String,
        /// Remove the line instead.
        #[arg(long)]
        undo: bool,
        /// The directory holding PAM service files.
        #[arg(long, default_value = "/etc/pam.d", hide = true)]
        pam_dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Template(cmd) => template_cmd::run(&cli, cmd),
        Command::List { json } => containers::list(&cli, *json),
        Command::Stats { user, json } => stats::stats(&cli, user.as_deref(), *json),
        Command::Stop { user } => containers::stop(&cli, user),
        Command::Check { file, strict } => policy_cmd::check(&cli, file.as_deref(), *strict),
        Command::Policy { user, service } => policy_cmd::show(&cli, user, service),
        Command::Setup { pam_service, undo, pam_dir } => containers::setup(pam_dir, pam_service, *undo),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hutchctl: {e:#}");
            std::process::exit(1);
        }
    }
}
