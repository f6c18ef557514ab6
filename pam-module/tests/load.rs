//! The built pam_hutch.so as libpam sees it: what it exports, and what a
//! real PAM stack (through `pam_start_confdir`) gets back from it.
#![allow(unsafe_code)]

mod pam_client;

use std::ffi::CString;
use std::path::Path;
use std::process::Command;

use pam_client::{module_path, Transaction, PAM_SERVICE_ERR, PAM_SUCCESS};

const ENTRY_POINTS: [&str; 6] = [
    "pam_sm_acct_mgmt",
    "pam_sm_authenticate",
    "pam_sm_chauthtok",
    "pam_sm_close_session",
    "pam_sm_open_session",
    "pam_sm_setcred",
];

/// dlopen resolves the module (libpam linked in) and finds all six entry points.
#[test]
fn dlopen_finds_entry_points() {
    let so = CString::new(module_path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `so` is a NUL-terminated path; loading runs no Rust
    // initialisers with side effects (the module has none).
    let lib = unsafe { libc::dlopen(so.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen {:?} failed", so);
    for name in ENTRY_POINTS {
        let sym = CString::new(name).unwrap();
        // SAFETY: `lib` is a live handle from dlopen; `sym` is NUL-terminated.
        let p = unsafe { libc::dlsym(lib, sym.as_ptr()) };
        assert!(!p.is_null(), "{name} not exported");
    }
    // SAFETY: `lib` came from dlopen and is closed once; nothing from it is used after.
    unsafe { libc::dlclose(lib) };
}

/// Exactly the pam_sm_* symbols are exported (nm -D --defined-only).
#[test]
fn exports_only_pam_sm() {
    let out = match Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(module_path())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIP: cannot run nm: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names, ENTRY_POINTS);
}

/// Writes `<dir>/<service>`: our module line, and a tail that turns the
/// module's own code into the stack's result: PAM_IGNORE → PAM_SUCCESS
/// (skips pam_deny), PAM_SUCCESS → PAM_PERM_DENIED, errors → their code.
fn service(dir: &Path, name: &str, args: &str) {
    let text = format!(
        "session [ignore=1 default=die] {} {args}\nsession requisite pam_deny.so\nsession required pam_permit.so\n",
        module_path().display()
    );
    std::fs::write(dir.join(name), text).unwrap();
}

/// What the module keeps on the host for a policy file `0`: its login
/// counters and its policy cache (under /run/hutch, made when the module
/// runs as root), removed when the test ends, also when it fails.
struct Left(std::path::PathBuf);

impl Drop for Left {
    fn drop(&mut self) {
        let counters = Path::new(hutch_runtime::counters::DEFAULT_DIR);
        let _ = std::fs::remove_file(hutch_runtime::counters::path_for(&self.0, counters));
        let cache = Path::new(hutch_policy::DEFAULT_CACHE_DIR);
        let _ = std::fs::remove_file(hutch_policy::cache_path(&self.0, cache));
    }
}

/// root is never confined: open_session answers PAM_IGNORE through a real stack.
#[test]
fn root_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hutch.toml");
    let _left = Left(config.clone());
    std::fs::write(&config, "[defaults]\nconfine = true\n").unwrap();
    service(
        dir.path(),
        "hutch-test",
        &format!("config={} debug", config.display()),
    );
    let mut t = Transaction::start(dir.path(), "hutch-test", "root");
    assert_eq!(
        t.open_session(),
        PAM_SUCCESS,
        "open_session for root must be PAM_IGNORE"
    );
    assert_eq!(
        t.close_session(),
        PAM_SUCCESS,
        "close_session without a session must be PAM_IGNORE"
    );
}

/// A bad argument value is PAM_SERVICE_ERR, before anything else happens.
#[test]
fn bad_argument_is_service_err() {
    let dir = tempfile::tempdir().unwrap();
    service(dir.path(), "hutch-test", "timeout=soon");
    let mut t = Transaction::start(dir.path(), "hutch-test", "root");
    assert_eq!(t.open_session(), PAM_SERVICE_ERR);
}

/// `PAM_SESSION_ERR`: the module refused the session.
const PAM_SESSION_ERR: std::ffi::c_int = 14;

/// A policy with an unknown key (`memroy`): it cannot be loaded.
fn broken_policy(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("hutch.toml");
    std::fs::write(&config, "[defaults]\nmemroy = \"1G\"\n").unwrap();
    config
}

/// Fail closed: with a policy that cannot be read, a non-root user's session is refused.
#[test]
fn broken_policy_refuses_non_root() {
    let dir = tempfile::tempdir().unwrap();
    let config = broken_policy(dir.path());
    let _left = Left(config.clone());
    service(
        dir.path(),
        "hutch-test",
        &format!("config={}", config.display()),
    );
    let mut t = Transaction::start(dir.path(), "hutch-test", "nobody");
    assert_eq!(t.open_session(), PAM_SESSION_ERR);
    let missing = dir.path().join("missing.toml");
    let _left_missing = Left(missing.clone());
    service(
        dir.path(),
        "hutch-missing",
        &format!("config={}", missing.display()),
    );
    let mut t = Transaction::start(dir.path(), "hutch-missing", "nobody");
    assert_eq!(
        t.open_session(),
        PAM_SESSION_ERR,
        "a missing policy file is refused too"
    );
}

/// root is exempt before the policy is read, so a broken policy never locks root out.
#[test]
fn broken_policy_lets_root_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = broken_policy(dir.path());
    let _left = Left(config.clone());
    service(
        dir.path(),
        "hutch-test",
        &format!("config={}", config.display()),
    );
    let mut t = Transaction::start(dir.path(), "hutch-test", "root");
    assert_eq!(
        t.open_session(),
        PAM_SUCCESS,
        "root must be PAM_IGNORE even with a broken policy"
    );
}

/// on_error=ignore is the escape hatch: a broken policy lets the session through unconfined.
#[test]
fn broken_policy_with_on_error_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let config = broken_policy(dir.path());
    let _left = Left(config.clone());
    service(
        dir.path(),
        "hutch-test",
        &format!("config={} on_error=ignore", config.display()),
    );
    let mut t = Transaction::start(dir.path(), "hutch-test", "nobody");
    assert_eq!(
        t.open_session(),
        PAM_SUCCESS,
        "on_error=ignore must answer PAM_IGNORE"
    );
}
