//! `hutchctl template ...`: build templates on disk, load them into RAM
//! (update = build again and load a new generation), list both with the
//! users on each generation. The paths come from the policy's host settings
//! (`lib_dir`, `run_dir`, `cgroup_root`); without a policy file, the
//! defaults. Loading moves hutchctl into hutch's own cgroup first, so the
//! template's memory is charged there and never to a user.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use hutch_runtime::template::{human_bytes, BuildOptions, Loaded, Source, TemplateStore};

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
    ///
    /// Every shell the policy names must exist in the template.
    #[command(group(ArgGroup::new("source").required(true).args(["from_dir", "from_tar", "from_oci", "debootstrap"])))]
    Build {
        /// Template name: letters, digits, '.', '_', '-', not starting with '.', '_' or '-'.
        name: String,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Load a template into RAM (a new generation).
    ///
    /// Copies <lib_dir>/templates/NAME into a tmpfs at
    /// <run_dir>/template/NAME/GEN and remounts it read-only, nosuid, nodev.
    /// Containers created afterwards use it; running ones keep theirs.
    Load { name: String },
    /// Build NAME again and load it as a new generation.
    ///
    /// From the source given, or else the one recorded at its last build.
    /// Containers created afterwards use the new generation; running ones
    /// keep theirs, and an old generation is unmounted when its last
    /// container is gone.
    #[command(group(ArgGroup::new("source").required(false).args(["from_dir", "from_tar", "from_oci", "debootstrap"])))]
    Update {
        name: String,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Unmount one generation (lazily: containers still using it keep it).
    Unload { name: String, generation: u64 },
    /// List templates, loaded generations, their size in RAM and their users.
    List,
}

/// Where a build takes its tree from, and what it must contain.
#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Copy an existing root filesystem directory (symlinks are copied, never followed).
    #[arg(long, value_name = "DIR")]
    from_dir: Option<PathBuf>,
    /// Unpack a root filesystem tarball (e.g. from `docker export`; compressed or not).
    #[arg(long, value_name = "FILE")]
    from_tar: Option<PathBuf>,
    /// Unpack an OCI image layout (index.json, blobs/): its layers in order, whiteouts applied.
    #[arg(long, value_name = "DIR")]
    from_oci: Option<PathBuf>,
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
}

impl SourceArgs {
    fn source(&self) -> Option<Source> {
        if let Some(dir) = &self.from_dir {
            Some(Source::Dir(dir.clone()))
        } else if let Some(tar) = &self.from_tar {
            Some(Source::Tar(tar.clone()))
        } else if let Some(oci) = &self.from_oci {
            Some(Source::Oci(oci.clone()))
        } else {
            self.debootstrap.as_ref().map(|suite| Source::Debootstrap {
                suite: suite.clone(),
                include: self.include.clone(),
            })
        }
    }

    /// The shells to require: the policy's and the ones given.
    fn options(&self, policy: Option<&hutch_policy::Policy>) -> BuildOptions {
        let mut shells: Vec<PathBuf> = policy.map(|p| p.shells()).unwrap_or_default();
        shells.extend(self.require_shell.iter().cloned());
        shells.sort();
        shells.dedup();
        BuildOptions { shells }
    }
}

pub fn run(cli: &Cli, cmd: &TemplateCmd) -> anyhow::Result<i32> {
    let policy = crate::policy_file(&cli.config)?;
    let store = match &policy {
        Some(p) => TemplateStore::new(&p.host().lib_dir, &p.host().run_dir),
        None => TemplateStore::new(Path::new("/var/lib/hutch"), Path::new("/run/hutch")),
    };
    match cmd {
        TemplateCmd::Build { name, source } => {
            let Some(from) = source.source() else {
                anyhow::bail!("give one of --from-dir, --from-tar, --from-oci, --debootstrap");
            };
            build(&store, name, &from, &source.options(policy.as_ref()))
        }
        TemplateCmd::Load { name } => {
            enter_hutch_cgroup(policy.as_ref())?;
            let started = Instant::now();
            let loaded = store
                .load(name)
                .with_context(|| format!("loading template {name:?}"))?;
            print_loaded(&loaded, started);
            Ok(0)
        }
        TemplateCmd::Update { name, source } => {
            enter_hutch_cgroup(policy.as_ref())?;
            let from = source.source();
            let from_text = match &from {
                Some(s) => describe(s),
                None => match store.recorded_source(name)? {
                    Some(s) => format!("{} (recorded)", describe(&s)),
                    None => anyhow::bail!("template {name:?} has no recorded source: give one of --from-dir, --from-tar, --from-oci, --debootstrap"),
                },
            };
            eprintln!("updating template {name} from {from_text}...");
            let started = Instant::now();
            let (report, loaded) = store
                .update(name, from.as_ref(), &source.options(policy.as_ref()))
                .with_context(|| format!("updating template {name:?}"))?;
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
            println!("built template {name}: {}", human_bytes(report.bytes));
            print_loaded(&loaded, started);
            println!(
                "new containers use generation {}; running ones keep theirs",
                loaded.generation
            );
            Ok(0)
        }
        TemplateCmd::Unload { name, generation } => {
            let loaded = Loaded {
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

fn print_loaded(loaded: &Loaded, started: Instant) {
    println!(
        "loaded template {} generation {} at {} in {:.1} s",
        loaded.name,
        loaded.generation,
        loaded.path.display(),
        started.elapsed().as_secs_f64()
    );
}

fn describe(source: &Source) -> String {
    match source {
        Source::Dir(p) => format!("directory {}", p.display()),
        Source::Tar(p) => format!("tarball {}", p.display()),
        Source::Oci(p) => format!("OCI layout {}", p.display()),
        Source::Debootstrap { suite, include } if include.is_empty() => format!("Debian {suite}"),
        Source::Debootstrap { suite, include } => {
            format!("Debian {suite} with {}", include.join(","))
        }
    }
}

/// Moves this process into `<cgroup_root>/keepers`, where the keepers live,
/// before it fills a tmpfs: shmem is charged to the cgroup of the process
/// that first touches the page, so the template's RAM is hutch's, never the
/// quota of whoever runs hutchctl (or of a user).
fn enter_hutch_cgroup(policy: Option<&hutch_policy::Policy>) -> anyhow::Result<()> {
    use hutch_runtime::cgroup::{CgroupRoot, Limits};
    let spec = policy.map_or("/hutch", |p| p.host().cgroup_root.as_str());
    let root = CgroupRoot::open(spec).with_context(|| format!("opening cgroup root {spec}"))?;
    let group = root
        .create(hutch_runtime::paths::KEEPER_CGROUP, &Limits::default())
        .with_context(|| format!("making {spec}/{}", hutch_runtime::paths::KEEPER_CGROUP))?;
    group
        .attach(std::process::id() as i32)
        .context("moving hutchctl into hutch's own cgroup")?;
    Ok(())
}

/// The policy, or `None` when there is no policy file yet (a fresh machine
/// builds its template first; the built-in defaults apply).
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
    println!(
        "{:<20} {:>12}  {:>4}  {:>12}  USERS",
        "NAME", "ON DISK", "GEN", "IN RAM"
    );
    for t in &templates {
        let size = t
            .bytes
            .map_or_else(|| "(not built)".to_string(), human_bytes);
        if t.generations.is_empty() {
            println!(
                "{:<20} {:>12}  {:>4}  {:>12}  -",
                t.name, size, "-", "(not loaded)"
            );
        }
        let newest = t
            .generations
            .iter()
            .filter(|g| g.loaded)
            .map(|g| g.generation)
            .max();
        for (i, g) in t.generations.iter().enumerate() {
            let ram = match (g.loaded, g.bytes_in_ram) {
                (true, Some(bytes)) => human_bytes(bytes),
                (true, None) => "loaded".to_string(),
                (false, _) => "not mounted".to_string(),
            };
            let mut users = if g.users.is_empty() {
                "-".to_string()
            } else {
                g.users.join(",")
            };
            if Some(g.generation) == newest {
                users.push_str("  (newest: new containers use it)");
            }
            let (name, disk) = if i == 0 {
                (t.name.as_str(), size.as_str())
            } else {
                ("", "")
            };
            println!(
                "{:<20} {:>12}  {:>4}  {:>12}  {}",
                name, disk, g.generation, ram, users
            );
        }
    }
    Ok(0)
}
