//! Fake cgroup trees for the unit tests: directories holding the control
//! files the kernel would give them (see [`super::fsio`]: a write to a file
//! that is not there is a missing controller, as in cgroupfs).

use std::path::Path;

/// Makes `dir` (and parents) holding `files` with their contents.
pub(crate) fn dir(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        std::fs::write(dir.join(f), v).unwrap();
    }
}

/// A v2 group offering `controllers`, none enabled below it yet, with the
/// memory and pids limits unset.
pub(crate) fn v2_dir(path: &Path, controllers: &str) {
    dir(
        path,
        &[
            ("cgroup.controllers", controllers),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
            ("memory.max", "max"),
            ("pids.max", "max"),
        ],
    );
}
