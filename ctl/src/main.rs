//! hutchctl: the admin's tool.
//!
//! `template build|load|list|update|unload`, `list`, `stats`, `watch`,
//! `freeze`, `thaw`, `enter`, `diff`, `stop`, `reset`, `check`, `policy`,
//! `setup`, `completions`.

mod admin_audit;
mod completions;
mod containers;
mod diff;
mod enter;
mod freeze;
mod layer_cmd;
#[cfg(test)]
mod manpage;
mod metrics;
mod policy_cmd;
mod probe;
mod stats;
mod template_cmd;
mod usage;
mod watch;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The build `--version` names: the package version and the git commit
/// (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("HUTCH_GIT_COMMIT"),
    ")"
);

/// Manage hutch: per-user login containers.
#[derive(Parser, Debug)]
#[command(name = "hutchctl", version = VERSION, about, long_about = None)]
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
    /// A refreshing table of every running container: sessions, state,
    /// memory, CPU %, pids. Ctrl-C ends it.
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Print one table (CPU % over a quarter second) and exit, without
        /// clearing the screen.
        #[arg(long)]
        once: bool,
    },
    /// Freeze every process of a user's container (cgroup freezer).
    ///
    /// The user's SSH connections freeze too: sshd's session processes sit
    /// in the container's cgroup. New logins of the user wait until `thaw`.
    Freeze {
        /// The user whose container to freeze.
        user: String,
    },
    /// Thaw a frozen container.
    Thaw {
        /// The user whose container to thaw.
        user: String,
    },
    /// Run a command inside a user's running container (default: the
    /// policy's shell as a login shell), as the user or with --root as root.
    ///
    /// As the user the command has a session's rights (no capabilities,
    /// no_new_privs, the container's seccomp filter) and runs in a session
    /// of its own on a fresh pty made inside the container when stdin is a
    /// terminal (the terminal in raw mode meanwhile, its window size passed
    /// on), on pipes otherwise; hutchctl relays, and closes the command's
    /// side when it exits, so nothing the user left behind can read or
    /// write the admin's terminal afterwards. With --root it keeps every
    /// capability and the terminal itself, and loads no filter. Exit status:
    /// the command's; 125 when entering failed, 127 when the command was
    /// not found.
    Enter {
        /// The user whose container to enter.
        user: String,
        /// Stay root (all capabilities) inside the container.
        #[arg(long)]
        root: bool,
        /// The command and its arguments (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// What the user changed in their container's writable layer against
    /// the template: `A path` added, `C path` changed, `D path` deleted.
    ///
    /// Names are printed as `ls -b` does in the C locale, one change a line;
    /// no name the user made is followed. Exit status 2 when some entries
    /// could not be read (they are named on stderr).
    ///
    /// Of a running container: its layer against the template generation it
    /// runs on. Of a stopped one with a persistent layer: the layer, mounted
    /// read-only for the moment, against the template as built on disk.
    Diff {
        /// The user whose container to compare.
        user: String,
        /// Also show the files hutch writes (/etc/passwd, ...) and mount points.
        #[arg(long)]
        all: bool,
    },
    /// Stop a user's container: end every process and session in it.
    Stop {
        /// The user whose container to stop.
        user: String,
    },
    /// Discard a user's persistent writable layer (`writable =
    /// "persistent"`): every change they made outside home. The container
    /// must be stopped; the next login starts from the template.
    Reset {
        /// The user whose layer to discard.
        user: String,
    },
    /// Check a policy file (default: --config) and report errors.
    Check {
        /// The file to check.
        file: Option<PathBuf>,
        /// Exit 2 when there are warnings only.
        #[arg(long)]
        strict: bool,
        /// Check with the drop-ins of DIR instead of the file's own hutch.d.
        ///
        /// A drop-in directory staged by config management is checked
        /// against the main file it will join, before it is deployed.
        #[arg(long, value_name = "DIR")]
        drop_ins: Option<PathBuf>,
        /// Instead: build USER's container once (as a login through
        /// --service would, even under `enforce = false`), check it from
        /// inside and from the host (hostname, own pid namespace, no host
        /// files, network mode, limits in its cgroup), tear it down and
        /// print a verdict. Exit 0 when every check passed.
        #[arg(long, value_name = "USER", conflicts_with_all = ["file", "strict", "drop_ins"])]
        probe: Option<String>,
        /// The PAM service the probe resolves the policy for.
        #[arg(long, default_value = "sshd", requires = "probe")]
        service: String,
        /// The hutch-keeper binary the probe starts.
        #[arg(long, default_value = probe::DEFAULT_KEEPER, hide = true)]
        keeper: PathBuf,
        /// Where the host's PAM services are (the wiring check).
        #[arg(long, default_value = "/etc/pam.d", hide = true)]
        pam_dir: PathBuf,
        /// The distribution's PAM directory.
        #[arg(long, default_value = "/usr/lib/pam.d", hide = true)]
        vendor_pam_dir: PathBuf,
        /// Where the daemons (sshd, cron, atd) are installed.
        #[arg(long, default_value = "/usr/sbin", hide = true)]
        sbin_dir: PathBuf,
    },
    /// Print the effective policy of a user, with where each value came from.
    Policy {
        /// The user to resolve.
        user: String,
        /// The PAM service to resolve for.
        #[arg(long, default_value = "sshd")]
        service: String,
        /// Resolve with the drop-ins of DIR instead of the policy's own
        /// hutch.d (what the user would get once DIR is deployed).
        #[arg(long, value_name = "DIR")]
        drop_ins: Option<PathBuf>,
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
        /// The distribution's PAM directory, read when the service has no
        /// file in --pam-dir (systemd ships systemd-user there).
        #[arg(long, default_value = "/usr/lib/pam.d", hide = true)]
        vendor_pam_dir: PathBuf,
    },
    /// Prometheus metrics of every running container (usage, limits, limit
    /// hits), the templates, and pam_hutch's logins and refusals.
    ///
    /// On stdout, or with --textfile written atomically for node_exporter's
    /// textfile collector (the package's hutch-metrics.timer does that every
    /// 15 s). With --record, also a usage sample of every container into the
    /// history `report` reads.
    Metrics {
        /// Write this file (atomically, mode 0644) instead of stdout.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
        /// Also record a usage sample of every container (<lib_dir>/usage.db).
        #[arg(long)]
        record: bool,
    },
    /// Who used what and who hit their limits, from the recorded usage
    /// history: CPU time, memory peak, I/O, OOM kills, pids-limit and
    /// memory.high hits, throttled time, sessions.
    Report {
        /// Only this user.
        user: Option<String>,
        /// The window: this long back from now (30m, 24h, 7d).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Print JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV (a header line, then one line a user).
        #[arg(long)]
        csv: bool,
    },
    /// Print a shell completion script for hutchctl (the package installs
    /// the bash and zsh ones).
    Completions {
        /// The shell: bash or zsh.
        shell: completions::Shell,
    },
}

/// The policy at `config`, or `None` when there is no file there (after
/// saying so once on stderr: the defaults apply, as on a fresh install).
/// A file that exists but does not load is an error naming it.
pub fn policy_file(config: &Path) -> anyhow::Result<Option<hutch_policy::Policy>> {
    if !config.exists() {
        eprintln!(
            "hutchctl: no policy at {}; using the defaults (/var/lib/hutch, /run/hutch, cgroup /hutch)",
            config.display()
        );
        return Ok(None);
    }
    let policy = hutch_policy::Policy::load(config)
        .with_context(|| format!("reading policy {}", config.display()))?;
    Ok(Some(policy))
}

/// The policy of `--config`, or the defaults (an empty policy) when there
/// is no file: what every command that only reads hutch's state uses.
pub fn policy_or_defaults(cli: &Cli) -> anyhow::Result<hutch_policy::Policy> {
    match policy_file(&cli.config)? {
        Some(p) => Ok(p),
        None => hutch_policy::Policy::parse("", &cli.config)
            .map_err(|e| anyhow::anyhow!("the default policy: {e}")),
    }
}

/// A user's running container as hutchctl finds it on the host: its
/// state.json, hutch's cgroup root and the container's group.
pub struct Running {
    pub state: hutch_runtime::keeper::state::State,
    pub cgroups: hutch_runtime::cgroup::CgroupRoot,
    pub cgroup: hutch_runtime::cgroup::Cgroup,
}

/// Why [`find_container`] found none.
pub enum NotRunning {
    /// No state.json: nothing runs.
    NoState,
    /// A state.json without a cgroup (a container half gone).
    NoCgroup,
}

/// Reads `user`'s state.json and finds the container's cgroup. What it
/// names (the init's pid) is only a record: check it before using it
/// ([`hutch_runtime::inspect::LiveProcess::verify`]).
pub fn find_container(
    host: &hutch_policy::HostSettings,
    user: &str,
) -> anyhow::Result<Result<Running, NotRunning>> {
    let paths = hutch_runtime::paths::UserPaths::new(host, user);
    let state = match hutch_runtime::keeper::state::State::read(&paths.state()) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err(NotRunning::NoState)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", paths.state().display())),
    };
    let cgroups = hutch_runtime::cgroup::CgroupRoot::open(&host.cgroup_root)
        .with_context(|| format!("cgroup root {:?}", host.cgroup_root))?;
    Ok(
        match cgroups.existing(&hutch_runtime::paths::user_cgroup(user)) {
            Some(cgroup) => Ok(Running {
                state,
                cgroups,
                cgroup,
            }),
            None => Err(NotRunning::NoCgroup),
        },
    )
}

/// The name a user's container is keyed by: the NSS canonical name
/// ([`hutch_runtime::account::lookup`]), so `hutchctl stop Alice` finds
/// alice's; a name NSS no longer knows (a deleted account's container) as
/// given.
fn container_user(user: &str) -> String {
    hutch_runtime::account::lookup(user)
        .map(|a| a.name)
        .unwrap_or_else(|_| user.to_string())
}

fn main() {
    let cli = Cli::parse();
    // An entered shell may run for hours: its start is a record of its own.
    admin_audit::send_start(&cli.command);
    let result = match &cli.command {
        Command::Template(cmd) => template_cmd::run(&cli, cmd),
        Command::List { json } => containers::list(&cli, *json),
        Command::Stats { user, json } => {
            let user = user.as_deref().map(container_user);
            stats::stats(&cli, user.as_deref(), *json)
        }
        Command::Watch { interval, once } => watch::watch(&cli, *interval, *once),
        Command::Freeze { user } => freeze::set(&cli, &container_user(user), true),
        Command::Thaw { user } => freeze::set(&cli, &container_user(user), false),
        Command::Enter {
            user,
            root,
            command,
        } => enter::enter(&cli, &container_user(user), *root, command),
        Command::Diff { user, all } => diff::diff(&cli, &container_user(user), *all),
        Command::Stop { user } => containers::stop(&cli, &container_user(user)),
        Command::Reset { user } => layer_cmd::reset(&cli, &container_user(user)),
        Command::Check {
            probe: Some(user),
            service,
            keeper,
            ..
        } => probe::probe(&cli, user, service, keeper),
        Command::Check {
            file,
            strict,
            drop_ins,
            pam_dir,
            vendor_pam_dir,
            sbin_dir,
            ..
        } => policy_cmd::check(
            &cli,
            file.as_deref(),
            drop_ins.as_deref(),
            *strict,
            &policy_cmd::HostDirs {
                pam: pam_dir,
                vendor_pam: vendor_pam_dir,
                sbin: sbin_dir,
            },
        ),
        Command::Policy {
            user,
            service,
            drop_ins,
        } => policy_cmd::show(&cli, user, service, drop_ins.as_deref()),
        Command::Setup {
            pam_service,
            undo,
            pam_dir,
            vendor_pam_dir,
        } => containers::setup(pam_dir, vendor_pam_dir, pam_service, *undo),
        Command::Completions { shell } => completions::print(*shell),
        Command::Metrics { textfile, record } => {
            metrics::metrics(&cli, textfile.as_deref(), *record)
        }
        Command::Report {
            user,
            since,
            json,
            csv,
        } => {
            let format = match (json, csv) {
                (true, _) => usage::Format::Json,
                (_, true) => usage::Format::Csv,
                _ => usage::Format::Table,
            };
            usage::report(&cli, user.as_deref(), since, format)
        }
    };
    admin_audit::send(&cli.command, &result);
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hutchctl: {e:#}");
            std::process::exit(1);
        }
    }
}
