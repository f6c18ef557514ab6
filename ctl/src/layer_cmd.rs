//! `hutchctl reset USER` and the stopped-container side of `hutchctl diff`:
//! what works on a persistent layer ([`hutch_runtime::layer`]) while no
//! container has it. Both hold the user's lock, so that no login starts a
//! container meanwhile, and refuse while one runs.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hutch_runtime::keeper::lock_user;
use hutch_runtime::layer;
use hutch_runtime::paths::UserPaths;

use crate::Cli;

/// The user's lock, taken only when no container runs: `Err(exit code)`
/// after saying why not.
fn lock_stopped(paths: &UserPaths, user: &str, what: &str) -> anyhow::Result<Result<Held, i32>> {
    let made_dir = !paths.dir.exists();
    let Some(lock) = lock_user(&paths.lock(), false)
        .with_context(|| format!("locking {}", paths.lock().display()))?
    else {
        eprintln!("hutchctl: a login of {user} is starting its container; try again");
        return Ok(Err(1));
    };
    let held = Held {
        lock: Some(lock),
        paths: paths.clone(),
        made_dir,
    };
    if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() {
        eprintln!(
            "hutchctl: the container of {user} is running; {what} needs it stopped (hutchctl stop {user})"
        );
        return Ok(Err(1));
    }
    Ok(Ok(held))
}

/// The user's lock while a stopped layer is worked on; removes the lock
/// file (and the run directory it made) when dropped, as a teardown does.
struct Held {
    lock: Option<std::fs::File>,
    paths: UserPaths,
    made_dir: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.made_dir || !self.paths.state().exists() {
            let _ = std::fs::remove_file(self.paths.lock());
            self.lock = None;
            let _ = std::fs::remove_dir(&self.paths.dir);
        }
    }
}

/// `hutchctl reset USER`: discards the user's persistent writable layer
/// (everything they changed outside home). Exit 1 when the container runs
/// or there is no layer.
pub fn reset(cli: &Cli, user: &str) -> anyhow::Result<i32> {
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host();
    let paths = UserPaths::new(host, user);
    let _held = match lock_stopped(&paths, user, "reset")? {
        Ok(h) => h,
        Err(code) => return Ok(code),
    };
    match layer::reset(&host.lib_dir, user)? {
        Some(r) if r.size > 0 => {
            println!(
                "removed the persistent layer of {user}: {} ({} used on disk, {} apparent)",
                r.image.display(),
                hutch_runtime::template::human_bytes(r.on_disk),
                hutch_runtime::template::human_bytes(r.size)
            );
            Ok(0)
        }
        _ => {
            eprintln!(
                "hutchctl: {user} has no persistent layer ({})",
                layer::image_path(&host.lib_dir, user).display()
            );
            Ok(1)
        }
    }
}

/// `hutchctl diff USER` of a stopped container with a persistent layer:
/// the image attached read-only and mounted (`ro,noload`: a journal left
/// by a crash is not replayed) in a mount namespace of this process alone,
/// compared with the template on disk. `Ok(None)`: the user has no layer.
pub fn diff_stopped(cli: &Cli, user: &str, all: bool) -> anyhow::Result<Option<i32>> {
    let policy = crate::policy_or_defaults(cli)?;
    let host = policy.host().clone();
    if !layer::image_path(&host.lib_dir, user).exists() {
        return Ok(None);
    }
    let paths = UserPaths::new(&host, user);
    let _held = match lock_stopped(&paths, user, "diff of the stopped layer")? {
        Ok(h) => h,
        Err(code) => return Ok(Some(code)),
    };
    // What the container binds (left out unless --all) and its template.
    let account = hutch_runtime::account::lookup(user).context("looking up the user")?;
    let up = match policy.resolve(&account, "sshd") {
        hutch_policy::Decision::Confine(p) => *p,
        _ => anyhow::bail!("{user} is not confined by {}", cli.config.display()),
    };
    use std::os::unix::ffi::OsStrExt;
    let mut mounts: BTreeSet<Vec<u8>> = up
        .mounts
        .iter()
        .map(|m| m.target.as_os_str().as_bytes().to_vec())
        .collect();
    mounts.insert(account.home.as_os_str().as_bytes().to_vec());
    mounts.insert(account.shell.as_os_str().as_bytes().to_vec());
    let store = hutch_runtime::template::TemplateStore::new(&host.lib_dir, &host.run_dir);
    let lower = store.template_dir(&up.template);
    if !lower.is_dir() {
        anyhow::bail!(
            "the template {} of {user} is not built ({})",
            up.template,
            lower.display()
        );
    }
    let Some(attached) = layer::attach_read_only(&host.lib_dir, user)? else {
        return Ok(None);
    };
    let top = mount_private(&attached)?;
    drop(attached);
    // The layer's top is hutch's; everything below `upper` the user's,
    // which the walk reads by descriptor only.
    let top_fd: std::os::fd::OwnedFd = std::fs::File::open(&top)
        .with_context(|| format!("opening {}", top.display()))?
        .into();
    let upper = hutch_runtime::inspect::open_dir_strict(top_fd.as_fd(), Path::new("upper"))
        .context("opening the layer's upper")?;
    let lower: std::os::fd::OwnedFd = std::fs::File::open(&lower)
        .with_context(|| format!("opening {}", lower.display()))?
        .into();
    crate::diff::report(&crate::diff::changes(upper, lower, &mounts, all)).map(Some)
}

/// Mounts the attached image read-only in a new mount namespace of this
/// (single-threaded) process, on a tmpfs over /tmp there: nothing is made
/// on the host, and the mounts go when hutchctl exits. Returns the layer's
/// top (holding `upper` and `work`).
fn mount_private(att: &layer::Attached) -> anyhow::Result<PathBuf> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("unshare(CLONE_NEWNS) for the read-only mount")?;
    hutch_runtime::rootfs::make_root_private()
        .context("making the private mount namespace private")?;
    let base = Path::new("/tmp");
    mount(
        Some("hutchctl-diff"),
        base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=64k"),
    )
    .context("mounting a private tmpfs")?;
    let dir = base.join("layer");
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    mount(
        Some(att.device.as_path()),
        &dir,
        Some("ext4"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("noload"),
    )
    .with_context(|| {
        format!(
            "mounting {} ({}) read-only",
            att.image.path.display(),
            att.device.display()
        )
    })?;
    Ok(dir)
}
