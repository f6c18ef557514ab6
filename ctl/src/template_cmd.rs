//! `hutchctl template ...`: build templates on disk, load them into RAM,
//! list both. The paths come from the policy's host settings
//! (`lib_dir`, `run_dir`); without a policy file, the defaults.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{ArgGroup, Subcommand};
use hutch_runtime::template::{human_bytes, BuildOptions, Source, TemplateStore};

use crate::Cli;

#[derive(Subcommand, Debug)]
pub enum TemplateCmd {
    /// Build a template into <lib_dir>/templates/NAME.
    ///
    /// The tree is made in a private staging directory, device nodes are
    /// dropped, setuid/setgid bits and file capabilities are stripped (each
    /// one listed), /bin/sh must exist, and the result replaces any previous
    /// build of NAME in one atomic step. Loaded generations are not touched:
    /// run `hutchctl template load NAME` to put the new build in use.
    #[command(group(ArgGroup::new("source").required(true).args(["from_dir", "from_tar", "debootstrap"])))]
    Build {
        /// Template name: letters, digits, '.', '_', '-', not starting with '.', '_' or '-'.
        name: String,
        /// Copy an existing root filesystem directory (symlinks are copied, never followed).
        #[arg(long, value_name = "DIR")]
        from_dir: Option<PathBuf>,
        /// Unpack a root filesystem tarball (e.g. from `docker export`; compressed or not).
        #[arg(long, value_name = "FILE")]
        from_tar: Option<PathBuf>,
        /// Build from Debian's packages with mmdebstrap/debootstrap (e.g. bookworm).
        #[arg(long, value_name = "SUITE")]
        debootstrap: Option<String>,
        /// Extra packages for --debootstrap, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            requires = "debootstrap",
            value_name = "PKG,..."
        )]
        include: Vec<String>,
        /// Also require this shell (absolute path) in the template; repeatable.
        #[arg(long = "require-shell", value_name = "PATH")]
        require_shell: Vec<PathBuf>,
    },
    /// Load a template into RAM (a new generation).
    ///
    /// Copies <lib_dir>/templates/NAME into a tmpfs at
    /// <run_dir>/template/NAME/GEN and remounts it read-only, nosuid, nodev.
    /// Containers created afterwards use it; running ones keep theirs.
    Load { name: String },
    /// Unmount one generation (lazily: containers still using it keep it).
    Unload { name: String, generation: u64 },
    /// List templates and loaded generations.
    List,
}

pub fn run(cli: &Cli, cmd: &TemplateCmd) -> anyhow::Result<i32> {
    let store = store(&cli.config)?;
    match cmd {
        TemplateCmd::Build {
            name,
            from_dir,
            from_tar,
            debootstrap,
            include,
            require_shell,
        } => {
            let source = match (from_dir, from_tar, debootstrap) {
                (Some(dir), _, _) => Source::Dir(dir.clone()),
                (_, Some(tar), _) => Source::Tar(tar.clone()),
                (_, _, Some(suite)) => Source::Debootstrap {
                    suite: suite.clone(),
                    include: include.clone(),
                },
                _ => anyhow::bail!("give one of --from-dir, --from-tar, --debootstrap"),
            };
            build(
                &store,
                name,
                &source,
                &BuildOptions {
                    shells: require_shell.clone(),
                },
            )
        }
        TemplateCmd::Load { name } => {
            let started = Instant::now();
            let loaded = store
                .load(name)
                .with_context(|| format!("loading template {name:?}"))?;
            println!(
                "loaded template {name} generation {} at {} in {:.1} s",
                loaded.generation,
                loaded.path.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        TemplateCmd::Unload { name, generation } => {
            let loaded = hutch_runtime::template::Loaded {
                name: name.clone(),
                generation: *generation,
                path: store.generations_dir(name).join(generation.to_string()),
            };
            store
                .unload(&loaded)
                .with_context(|| format!("unloading template {name:?} generation {generation}"))?;
            println!("unloaded template {name} generation {generation}");
            Ok(0)
        }
        TemplateCmd::List => list(&store),
    }
}

/// The store at the policy's lib_dir and run_dir; the built-in defaults when
/// there is no policy file yet (a fresh machine builds its template first).
fn store(config: &Path) -> anyhow::Result<TemplateStore> {
    if !config.exists() {
        eprintln!(
            "hutchctl: no policy at {}; using /var/lib/hutch and /run/hutch",
            config.display()
        );
        return Ok(TemplateStore::new(
            Path::new("/var/lib/hutch"),
            Path::new("/run/hutch"),
        ));
    }
    let policy = hutch_policy::Policy::load(config)
        .with_context(|| format!("reading policy {}", config.display()))?;
    let host = policy.host();
    Ok(TemplateStore::new(&host.lib_dir, &host.run_dir))
}

fn build(
    store: &TemplateStore,
    name: &str,
    source: &Source,
    options: &BuildOptions,
) -> anyhow::Result<i32> {
    if let Source::Debootstrap { suite, .. } = source {
        eprintln!("building template {name} from Debian {suite} (mmdebstrap/debootstrap; this takes a while)...");
    }
    let started = Instant::now();
    let report = store
        .build(name, source, options)
        .with_context(|| format!("building template {name:?}"))?;
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    println!(
        "built template {name} at {}: {} in {:.1} s, {} warning(s)",
        report.path.display(),
        human_bytes(report.bytes),
        started.elapsed().as_secs_f64(),
        report.warnings.len()
    );
    println!("load it with: hutchctl template load {name}");
    Ok(0)
}

fn list(store: &TemplateStore) -> anyhow::Result<i32> {
    let templates = store.list().context("listing templates")?;
    if templates.is_empty() {
        println!("no templates in {}", store.templates_dir().display());
        return Ok(0);
    }
    println!("{:<20} {:>12}  GENERATIONS", "NAME", "ON DISK");
    for t in &templates {
        let size = t
            .bytes
            .map_or_else(|| "(not built)".to_string(), human_bytes);
        let gens: Vec<String> = t
            .generations
            .iter()
            .map(|g| match (g.loaded, g.bytes_in_ram) {
                (true, Some(bytes)) => format!("{} ({} in RAM)", g.generation, human_bytes(bytes)),
                (true, None) => format!("{} (loaded)", g.generation),
                (false, _) => format!("{} (not mounted)", g.generation),
            })
            .collect();
        let gens = if gens.is_empty() {
            "-".to_string()
        } else {
            gens.join(", ")
        };
        println!("{:<20} {:>12}  {}", t.name, size, gens);
    }
    Ok(0)
}
