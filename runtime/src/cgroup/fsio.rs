//! Reading and writing cgroupfs control files, with errors that name the
//! file, the value and the controller.
//!
//! Writes open the file without `O_CREAT`: in cgroupfs a control file that is
//! not there means its controller is not enabled for that group, and that is
//! reported as [`CgroupError::MissingController`] rather than a confusing
//! `EACCES` from trying to create it. Fake trees in tests therefore make the
//! files they expect to be written, just as the kernel would.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{CgroupError, Controller};

/// Writes `value` to `dir/file`; a missing file is a missing controller.
pub fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let res = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
            Err(CgroupError::MissingController {
                controller: Controller::of_file(file),
                detail: format!("no {file} in {}", dir.display()),
            })
        }
        Err(source) => Err(CgroupError::Write {
            path,
            value: value.to_string(),
            source,
        }),
    }
}

/// Reads `dir/file`; `None` when the file (or the directory) is absent.
pub fn read_opt(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    read_path_opt(&dir.join(file))
}

/// Reads `path`; `None` when it is absent.
pub fn read_path_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads `dir/file`, which must exist.
pub fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

/// A single unsigned number, as in `memory.current` (`max` reads as `None`).
pub fn read_u64(dir: &Path, file: &str) -> Result<Option<u64>, CgroupError> {
    Ok(read_opt(dir, file)?.and_then(|s| s.trim().parse().ok()))
}

/// The value of `key` in a flat-keyed file (`key value` lines), as in
/// `memory.events`, `cpu.stat`, `pids.events`, `memory.oom_control`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key)
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// `keyed` on `dir/file`; `None` when the file or the key is absent.
pub fn read_keyed(dir: &Path, file: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    Ok(read_opt(dir, file)?.and_then(|t| keyed(&t, key)))
}

/// `read_keyed` summed over `dir` and every cgroup below it; `None` when
/// no directory has the file and key.
pub fn sum_keyed_subtree(dir: &Path, file: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    let mut sum: Option<u64> = None;
    for d in subtree(dir)? {
        if let Some(v) = read_keyed(&d, file, key)? {
            sum = Some(sum.unwrap_or(0).saturating_add(v));
        }
    }
    Ok(sum)
}

/// Pids listed in `dir/cgroup.procs` (empty when absent).
pub fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    Ok(read_opt(dir, "cgroup.procs")?
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default())
}

/// `dir` and every directory below it, parents before children.
pub fn subtree(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path: d, source }),
        };
        for e in rd {
            let e = e.map_err(|source| CgroupError::Read {
                path: d.clone(),
                source,
            })?;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// `mkdir` that accepts an existing directory; true when it made it.
pub fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `mkdir -p` of `path` below `base` (which must exist); returns the
/// directories it made, top first.
pub fn mkdir_below(base: &Path, path: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = path.strip_prefix(base).map_err(|_| CgroupError::Create {
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not below {}", base.display()),
        ),
    })?;
    let mut made = Vec::new();
    let mut cur = base.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        if mkdir(&cur)? {
            made.push(cur.clone());
        }
    }
    Ok(made)
}

/// Removes the cgroup directory `dir` and every cgroup below it, deepest
/// first. `EBUSY` (a process still exiting) is retried with a short backoff;
/// an absent directory is fine.
pub fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let mut dirs = subtree(dir)?;
    dirs.reverse();
    for d in dirs {
        rmdir_retry(&d)?;
    }
    Ok(())
}

fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    let mut delay = std::time::Duration::from_millis(2);
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 12 => {
                tries += 1;
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(200));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}
