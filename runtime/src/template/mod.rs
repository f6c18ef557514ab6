//! Templates: root filesystems built once on disk
//! (`<lib_dir>/templates/<name>/`) and loaded, one copy in RAM for every user,
//! into a read-only tmpfs (`<run_dir>/template/<name>/<generation>/`).
//!
//! - `build`: make the tree (copy a directory, unpack a tarball or an OCI
//!   image layout (`oci`), or run mmdebstrap/debootstrap) in a private
//!   staging directory, record where it came from, sanitize it
//!   (setuid/setgid bits, file capabilities and device nodes removed), check
//!   it (`/bin/sh`, `sftp-server`) and swap it in atomically.
//! - `load`: generations: each load is a new tmpfs, filled, then remounted
//!   read-only, nosuid, nodev. Running containers keep the generation they
//!   were built on; new ones take the newest. A generation that is not the
//!   newest goes when the last container on it does ([`TemplateStore::release`],
//!   called by the keeper at teardown), found from the containers' state.json.
//! - `tree`: walking and copying trees without ever following a symlink.
//! - `command`: the external programs a build runs.

mod build;
mod command;
mod load;
mod oci;
mod tree;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use build::{host_apt_checks, BuildOptions, Source};

/// Errors of template handling; each names the operation and the path.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {name:?} is not built (no {})", path.display())]
    NotBuilt { name: String, path: PathBuf },
    #[error("invalid template name {0:?} (letters, digits, '-', '_', '.'; not starting with '.')")]
    BadName(String),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file every template needs (`/bin/sh`, a shell the policy names) is
    /// missing from the built tree; the build is refused.
    #[error("template {name:?} has no {} ({why}); refusing it", path.display())]
    Missing {
        name: String,
        path: PathBuf,
        why: &'static str,
    },
    /// An external builder (mmdebstrap, debootstrap, tar) failed.
    #[error("{command} failed ({status}); last lines of its stderr:\n{stderr_tail}")]
    Command {
        command: String,
        status: String,
        stderr_tail: String,
    },
    #[error("{0}")]
    Other(String),
}

impl TemplateError {
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> TemplateError + 'a {
        move |source| TemplateError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn nix<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(nix::Error) -> TemplateError + 'a {
        move |errno| TemplateError::Io {
            op,
            path: path.to_path_buf(),
            source: errno.into(),
        }
    }
}

/// A loaded generation of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub name: String,
    pub generation: u64,
    /// The read-only tmpfs mount point: the overlay's lowerdir.
    pub path: PathBuf,
}

/// What a build found, reported to the admin.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub path: PathBuf,
    /// What the tree will take in a tmpfs (file data in whole pages, each
    /// hardlinked file once).
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// A template as [`TemplateStore::list`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub name: String,
    /// `<lib_dir>/templates/<name>`, when it is built.
    pub built: Option<PathBuf>,
    /// Its size as a tmpfs would hold it (see [`BuildReport::bytes`]).
    pub bytes: Option<u64>,
    /// Generation directories under `<run_dir>/template/<name>/`, oldest first.
    pub generations: Vec<GenerationInfo>,
}

/// One generation directory of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    pub generation: u64,
    pub path: PathBuf,
    /// A read-only tmpfs is mounted there (a usable generation).
    pub loaded: bool,
    /// Bytes the tmpfs holds in RAM, when mounted.
    pub bytes_in_ram: Option<u64>,
    /// Users whose running container is on this generation (from their
    /// `<run_dir>/users/<user>/state.json`), sorted.
    pub users: Vec<String>,
}

/// A running container's use of a template, from its state.json.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct TemplateUse {
    pub user: String,
    pub template: String,
    pub generation: u64,
}

/// Templates under one lib_dir/run_dir pair.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    pub lib_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl TemplateStore {
    pub fn new(lib_dir: &Path, run_dir: &Path) -> Self {
        TemplateStore {
            lib_dir: lib_dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// `<lib_dir>/templates`.
    pub fn templates_dir(&self) -> PathBuf {
        self.lib_dir.join("templates")
    }

    /// `<lib_dir>/templates/<name>`: the built tree.
    pub fn template_dir(&self, name: &str) -> PathBuf {
        self.templates_dir().join(name)
    }

    /// `<run_dir>/template/<name>`: where its generations are mounted.
    pub fn generations_dir(&self, name: &str) -> PathBuf {
        self.run_dir.join("template").join(name)
    }

    /// Copies `src` into `<lib_dir>/templates/<name>` (replacing it atomically).
    pub fn build_from_dir(&self, name: &str, src: &Path) -> Result<BuildReport, TemplateError> {
        self.build(
            name,
            &Source::Dir(src.to_path_buf()),
            &BuildOptions::default(),
        )
    }

    /// Builds with mmdebstrap (or debootstrap) from Debian's packages.
    pub fn build_debootstrap(
        &self,
        name: &str,
        suite: &str,
        include: &[String],
    ) -> Result<BuildReport, TemplateError> {
        let source = Source::Debootstrap {
            suite: suite.to_string(),
            include: include.to_vec(),
        };
        self.build(name, &source, &BuildOptions::default())
    }

    /// Unpacks a root filesystem tarball (what `docker export` writes; any
    /// compression GNU tar recognises).
    pub fn build_from_tar(&self, name: &str, tarball: &Path) -> Result<BuildReport, TemplateError> {
        self.build(
            name,
            &Source::Tar(tarball.to_path_buf()),
            &BuildOptions::default(),
        )
    }

    /// Builds from any [`Source`], with extra checks from `options`.
    pub fn build(
        &self,
        name: &str,
        source: &Source,
        options: &BuildOptions,
    ) -> Result<BuildReport, TemplateError> {
        validate_name(name)?;
        build::build(self, name, source, options)
    }

    /// Loads a new generation into a tmpfs and remounts it ro,nosuid,nodev.
    pub fn load(&self, name: &str) -> Result<Loaded, TemplateError> {
        validate_name(name)?;
        let _lock = self.lock_loading(name)?;
        load::load(self, name)
    }

    /// The newest loaded generation, if any.
    pub fn current(&self, name: &str) -> Result<Option<Loaded>, TemplateError> {
        validate_name(name)?;
        load::current(self, name)
    }

    /// The newest loaded generation, loading one first if none is (under a lock,
    /// so concurrent first logins load it once).
    pub fn ensure_loaded(&self, name: &str) -> Result<Loaded, TemplateError> {
        validate_name(name)?;
        let _lock = self.lock_loading(name)?;
        match load::current(self, name)? {
            Some(loaded) => Ok(loaded),
            None => load::load(self, name),
        }
    }

    /// [`TemplateStore::ensure_loaded`], and a [`Pin`] on the template: while
    /// the caller holds it, [`TemplateStore::release`] waits, so the
    /// generation returned cannot be unloaded before the caller's state.json
    /// names it (a keeper drops the pin right after writing it).
    pub fn ensure_loaded_pinned(&self, name: &str) -> Result<(Loaded, Pin), TemplateError> {
        validate_name(name)?;
        let _lock = self.lock_loading(name)?;
        // Taken under the loading lock, as release takes it: one order, no deadlock.
        let pin = Pin {
            _lock: lock_file(&self.pins_path(name), false)?,
        };
        let loaded = match load::current(self, name)? {
            Some(loaded) => loaded,
            None => load::load(self, name)?,
        };
        Ok((loaded, pin))
    }

    /// Builds `name` again (from `source`, or from the source recorded at its
    /// last build) and loads the result as a new generation. Containers made
    /// afterwards use it; running ones keep theirs.
    pub fn update(
        &self,
        name: &str,
        source: Option<&Source>,
        options: &BuildOptions,
    ) -> Result<(BuildReport, Loaded), TemplateError> {
        validate_name(name)?;
        let source = match source {
            Some(s) => s.clone(),
            None => self.recorded_source(name)?.ok_or_else(|| {
                TemplateError::Other(format!(
                    "template {name:?} has no recorded source ({}); give one",
                    build::source_record(self, name).display()
                ))
            })?,
        };
        let report = self.build(name, &source, options)?;
        let loaded = self.load(name)?;
        Ok((report, loaded))
    }

    /// Where `name` was last built from, if that was recorded.
    pub fn recorded_source(&self, name: &str) -> Result<Option<Source>, TemplateError> {
        validate_name(name)?;
        build::recorded_source(self, name)
    }

    /// Unloads generation `generation` of `name` if it is not the newest and
    /// no container's state.json names it any more. Returns whether it was
    /// unloaded. Called by a keeper after its container is gone (its own
    /// state.json removed); runs under the loading lock, and waits for every
    /// [`Pin`] (a keeper between choosing a generation and naming it in its
    /// state.json) to go.
    pub fn release(&self, name: &str, generation: u64) -> Result<bool, TemplateError> {
        validate_name(name)?;
        let _lock = self.lock_loading(name)?;
        let _pins = lock_file(&self.pins_path(name), true)?;
        let newest = load::current(self, name)?.map(|l| l.generation);
        if newest.is_none_or(|g| g <= generation) {
            return Ok(false);
        }
        let in_use = self
            .users()?
            .iter()
            .any(|u| u.template == name && u.generation == generation);
        if in_use {
            return Ok(false);
        }
        let loaded = Loaded {
            name: name.to_string(),
            generation,
            path: self.generations_dir(name).join(generation.to_string()),
        };
        if !loaded.path.exists() {
            return Ok(false);
        }
        load::unload(self, &loaded)?;
        Ok(true)
    }

    /// The template and generation of every running container, from
    /// `<run_dir>/users/*/state.json` (unreadable ones are skipped: a keeper
    /// may be writing it).
    pub fn users(&self) -> Result<Vec<TemplateUse>, TemplateError> {
        let dir = self.run_dir.join("users");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(TemplateError::Io {
                    op: "reading directory",
                    path: dir,
                    source: e,
                })
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(TemplateError::io("reading directory", &dir))?;
            let Ok(text) = fs::read(entry.path().join("state.json")) else {
                continue;
            };
            if let Ok(u) = serde_json::from_slice::<TemplateUse>(&text) {
                found.push(u);
            }
        }
        found.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(found)
    }

    /// Unmounts and removes one loaded generation.
    pub fn unload(&self, loaded: &Loaded) -> Result<(), TemplateError> {
        validate_name(&loaded.name)?;
        load::unload(self, loaded)
    }

    /// Templates built on disk and the generations under the run dir (also of
    /// templates no longer on disk), sorted by name.
    pub fn list(&self) -> Result<Vec<TemplateInfo>, TemplateError> {
        load::list(self)
    }

    /// `<run_dir>/template/<name>.pins`: shared by [`Pin`]s, exclusive in release.
    fn pins_path(&self, name: &str) -> PathBuf {
        self.run_dir.join("template").join(format!("{name}.pins"))
    }

    /// Exclusive lock on `<run_dir>/template/<name>.lock`: one loader at a time.
    fn lock_loading(&self, name: &str) -> Result<File, TemplateError> {
        let dir = self.run_dir.join("template");
        create_dir_all_mode(&dir, 0o755)?;
        let path = dir.join(format!("{name}.lock"));
        lock_file(&path, true)
    }
}

/// A shared flock on `<run_dir>/template/<name>.pins`, from
/// [`TemplateStore::ensure_loaded_pinned`]: no generation of the template is
/// released while it is held. Dropping it lets go.
#[derive(Debug)]
pub struct Pin {
    _lock: File,
}

/// Opens (creating it, mode 0600) and flocks `path`: exclusive or shared.
/// The lock lasts as long as the returned file is open.
pub(crate) fn lock_file(path: &Path, exclusive: bool) -> Result<File, TemplateError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(TemplateError::io("opening lock file", path))?;
    let locked = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    locked.map_err(TemplateError::io("locking", path))?;
    Ok(file)
}

/// `mkdir -p` whose new directories get `mode`.
pub(crate) fn create_dir_all_mode(dir: &Path, mode: u32) -> Result<(), TemplateError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(TemplateError::io("creating directory", dir))
}

/// Refuses names that are not `[A-Za-z0-9][A-Za-z0-9._-]*` (at most 64 bytes):
/// a name becomes a path component under lib_dir and run_dir.
pub fn validate_name(name: &str) -> Result<(), TemplateError> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(TemplateError::BadName(name.to_string()))
    }
}

/// A byte count for people: `193.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names made of letters, digits, '.', '_' and '-' that start with a letter or digit pass.
    #[test]
    fn good_names_pass() {
        for name in ["default", "bookworm", "deb-12.5_min", "0", "A.b"] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    /// Empty, hidden, path-like, spaced and over-long names are refused.
    #[test]
    fn bad_names_are_refused() {
        let long = "a".repeat(65);
        for name in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "../etc",
            "a b",
            "é",
            "a\n",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_name(name), Err(TemplateError::BadName(_))),
                "{name:?}"
            );
        }
    }

    /// Byte counts print in the largest binary unit below them.
    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200.0 MiB");
    }

    /// Building into a store with a bad name fails before touching the disk.
    #[test]
    fn store_refuses_bad_name_before_io() {
        let store =
            TemplateStore::new(Path::new("/nonexistent/lib"), Path::new("/nonexistent/run"));
        assert!(matches!(
            store.build_from_dir("../x", Path::new("/")),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(store.load(".x"), Err(TemplateError::BadName(_))));
        assert!(matches!(
            store.current("a/b"),
            Err(TemplateError::BadName(_))
        ));
    }

    /// release waits while a starting keeper holds a pin, and goes on once it is dropped.
    #[test]
    fn release_waits_for_pins() {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::new(&dir.path().join("lib"), &dir.path().join("run"));
        create_dir_all_mode(&dir.path().join("run/template"), 0o755).unwrap();
        let pin = Pin {
            _lock: lock_file(&store.pins_path("t"), false).unwrap(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = store.clone();
        let t = std::thread::spawn(move || tx.send(s2.release("t", 1).unwrap()).unwrap());
        let wait = std::time::Duration::from_millis(300);
        assert!(
            rx.recv_timeout(wait).is_err(),
            "release went ahead under a pin"
        );
        drop(pin);
        assert!(!rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap());
        t.join().unwrap();
    }
}
