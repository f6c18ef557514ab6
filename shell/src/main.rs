//! hutch-shell: the login shell of confined users. Needs no setuid bit.
//!
//! pam_hutch has already put the session into the user's container; this
//! shell, run as the user, checks that it really is inside, tidies what it
//! inherited and execs the policy's inner shell. In the order of
//! docs/DESIGN.md ("The session, step by step", step 9):
//! 1. confirm the container marker (never fall back to a host shell);
//! 2. close stray fds;
//! 3. make sure the cwd is inside the container;
//! 4. set no_new_privs;
//! 5. load the seccomp filter the marker names ([`hutch_runtime::seccomp`]);
//! 6. exec the inner shell as a login shell, or with `-c CMD`.

mod fds;
mod marker;
mod plan;
mod sys;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::exit;

use hutch_runtime::paths::{Marker, CONTAINER_MARKER};
use hutch_runtime::privs::PrivOps;
use hutch_runtime::{seccomp, Kernel};

/// Exit status when not inside a container (the shell never ran).
const EXIT_REFUSED: i32 = 1;
/// Exit status when the inner shell cannot be executed (as shells do).
const EXIT_EXEC: i32 = 127;

fn main() {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_else(|| OsString::from("hutch-shell"));
    let args: Vec<OsString> = argv.collect();

    let marker = confirm_inside();
    fds::close_stray();
    ensure_cwd_inside();
    if let Err(e) = PrivOps::no_new_privs(&mut Kernel) {
        eprintln!("hutch-shell: {}", hutch_runtime::error::chain(&e));
        exit(EXIT_REFUSED);
    }
    if let Err(e) = seccomp::apply_marker(&marker) {
        eprintln!("hutch-shell: {e}");
        exit(EXIT_REFUSED);
    }
    exec_inner(&plan::plan(&argv0, &args, &marker.shell));
}

/// Step 1: the marker, or a refusal that names the likely cause.
fn confirm_inside() -> Marker {
    let expect = marker::own_pidns(Path::new("/proc")).map(|pidns| marker::Expect {
        uid: nix::unistd::getuid().as_raw(),
        pidns,
    });
    match expect.and_then(|expect| marker::read(Path::new(CONTAINER_MARKER), expect)) {
        Ok(marker) => marker,
        Err(e) => {
            eprintln!(
                "hutch-shell: this account is confined by hutch, but this session is not inside its \
                 container ({e}). Is pam_hutch the last session line of this PAM service? See pam_hutch(8)."
            );
            exit(EXIT_REFUSED);
        }
    }
}

/// Step 3: a cwd outside the container's root shows as "(unreachable)" (or
/// getcwd fails); then start in $HOME, or `/`.
fn ensure_cwd_inside() {
    let reachable = std::env::current_dir()
        .map(|cwd| cwd.is_absolute() && !cwd.as_os_str().as_bytes().starts_with(b"(unreachable)"))
        .unwrap_or(false);
    if reachable {
        return;
    }
    let home = std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute());
    if home.is_some_and(|h| std::env::set_current_dir(h).is_ok()) {
        return;
    }
    if let Err(e) = std::env::set_current_dir("/") {
        eprintln!("hutch-shell: chdir(\"/\"): {e}");
        exit(EXIT_REFUSED);
    }
}

/// Step 5: SHELL names the inner shell; then execv, or exit 127.
fn exec_inner(plan: &plan::ExecPlan) -> ! {
    std::env::set_var("SHELL", &plan.path);
    let path = CString::new(plan.path.as_os_str().as_bytes());
    let argv: Result<Vec<CString>, _> = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect();
    let err = match (path, argv) {
        (Ok(path), Ok(argv)) => match nix::unistd::execv(&path, &argv) {
            Ok(never) => match never {},
            Err(errno) => errno.desc().to_string(),
        },
        _ => "an argument contains a NUL byte".to_string(),
    };
    eprintln!(
        "hutch-shell: cannot execute the inner shell {}: {err}",
        plan.path.display()
    );
    exit(EXIT_EXEC);
}
