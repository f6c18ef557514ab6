//! Templates against the real kernel: builds into a temp lib_dir, loads into
//! real tmpfs mounts under a temp run_dir. Root only: without root each test
//! prints why it skips, and with `HUTCH_REQUIRE_ROOT=1` a skip is a failure.
//! The Debian build (`mmdebstrap bookworm`, cached once per run under
//! /var/cache/hutch-tests/) runs with `HUTCH_TEST_DEBOOTSTRAP=1` or
//! `HUTCH_REQUIRE_ROOT=1`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hutch_runtime::template::{BuildReport, Loaded, TemplateError, TemplateStore};
use hutch_tests::store::write_file;
use hutch_tests::StoreEnv;

fn env_is(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// A private lib_dir and run_dir for `test`, unmounted and removed on Drop.
fn test_env(test: &str) -> StoreEnv {
    StoreEnv::new(&format!("hutch-tpl-{test}-"))
}

/// (mount point, per-mount options, fstype) from /proc/self/mountinfo.
fn mounts() -> Vec<(PathBuf, Vec<String>, String)> {
    hutch_runtime::mountinfo::read_own()
        .unwrap()
        .into_iter()
        .map(|m| (m.mount_point, m.options, m.fstype))
        .collect()
}

fn mount_at(path: &Path) -> Option<(PathBuf, Vec<String>, String)> {
    let path = fs::canonicalize(path).ok()?;
    mounts().into_iter().rev().find(|m| m.0 == path)
}

/// A small root filesystem: /bin/sh, sftp-server, a setuid and a setgid
/// file, a file owned by 1234:5678, a hardlink, symlinks to /etc/passwd and
/// /etc outside the tree, a character device.
fn make_rootfs(root: &Path) {
    write_file(&root.join("usr/bin/dash"), "#!/nonexistent\n", 0o755);
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("dash", root.join("usr/bin/sh")).unwrap();
    write_file(
        &root.join("usr/lib/openssh/sftp-server"),
        "#!/nonexistent\n",
        0o755,
    );
    write_file(&root.join("usr/bin/su"), "setuid\n", 0o4755);
    write_file(&root.join("usr/bin/wall"), "setgid\n", 0o2755);
    write_file(&root.join("home/owned"), "mine\n", 0o640);
    std::os::unix::fs::lchown(root.join("home/owned"), Some(1234), Some(5678)).unwrap();
    fs::hard_link(root.join("home/owned"), root.join("home/owned-link")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("etc/host-passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("host-etc")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Checks what every build of [`make_rootfs`] must give.
fn assert_sanitized(built: &Path, report: &BuildReport) {
    let warnings = report.warnings.join("\n");
    for path in ["/usr/bin/su", "/usr/bin/wall"] {
        let md = fs::metadata(built.join(&path[1..])).unwrap();
        assert_eq!(md.mode() & 0o6000, 0, "{path} still setuid/setgid");
        assert!(
            warnings.contains(&format!("stripped setuid/setgid from {path}")),
            "{warnings}"
        );
    }
    assert!(
        !built.join("dev/null").exists() && fs::symlink_metadata(built.join("dev/null")).is_err()
    );
    assert!(warnings.contains("/dev/null"), "{warnings}");
    assert!(!warnings.contains("sftp-server"), "{warnings}");
    assert!(!warnings.contains("world-writable"), "{warnings}");
    let owned = fs::metadata(built.join("home/owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    assert_eq!(
        fs::read_link(built.join("etc/host-passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(built.join("host-etc")).unwrap(),
        Path::new("/etc")
    );
    let root = fs::metadata(built).unwrap();
    assert_eq!((root.uid(), root.mode() & 0o7777), (0, 0o755));
    assert!(report.bytes >= 4 * 4096, "{}", report.bytes);
}

/// Names of entries in `dir` starting with '.' (staging leftovers), lock files aside.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && !n.ends_with(".lock"))
        .collect()
}

/// A build from a directory copies modes, owners, hardlinks and symlinks (an
/// outside-pointing one stays a symlink, not followed), skips the device
/// node and strips setuid/setgid bits, reporting each.
#[test]
fn build_from_dir_sanitizes_and_keeps_symlinks() {
    if !hutch_tests::require_root("build_from_dir_sanitizes_and_keeps_symlinks") {
        return;
    }
    let env = test_env("dir");
    let src = env.path().join("src");
    make_rootfs(&src);
    let report = env.store.build_from_dir("small", &src).unwrap();
    assert_eq!(report.path, env.store.template_dir("small"));
    assert_sanitized(&report.path, &report);
    let a = fs::metadata(report.path.join("home/owned")).unwrap();
    let b = fs::metadata(report.path.join("home/owned-link")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlink kept");
    // Following host-etc would have copied the host's /etc.
    assert!(fs::symlink_metadata(report.path.join("host-etc"))
        .unwrap()
        .file_type()
        .is_symlink());
    // The source is untouched.
    assert_eq!(
        fs::metadata(src.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert!(leftovers(&env.store.templates_dir()).is_empty());
}

/// A tree without /bin/sh is refused and leaves the previous build in place.
#[test]
fn build_refuses_tree_without_bin_sh() {
    if !hutch_tests::require_root("build_refuses_tree_without_bin_sh") {
        return;
    }
    let env = test_env("nosh");
    let good = env.path().join("good");
    make_rootfs(&good);
    env.store.build_from_dir("t", &good).unwrap();

    let bad = env.path().join("bad");
    write_file(&bad.join("usr/bin/bash"), "x", 0o755);
    let err = env.store.build_from_dir("t", &bad).unwrap_err();
    assert!(
        matches!(err, TemplateError::Missing { ref path, .. } if path == Path::new("/bin/sh")),
        "{err:?}"
    );
    assert!(err.to_string().contains("/bin/sh"), "{err}");
    assert!(
        env.store.template_dir("t").join("usr/bin/dash").exists(),
        "old build kept"
    );
    assert!(leftovers(&env.store.templates_dir()).is_empty());

    // A /bin/sh that is a dangling symlink to the host's shell counts as missing.
    let dangling = env.path().join("dangling");
    fs::create_dir_all(dangling.join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/dash-on-host-only", dangling.join("bin/sh")).unwrap();
    assert!(matches!(
        env.store.build_from_dir("u", &dangling),
        Err(TemplateError::Missing { .. })
    ));
    assert!(!env.store.template_dir("u").exists());
}

/// Rebuilding swaps the new tree in and leaves no staging or old tree behind;
/// a missing sftp-server is a warning.
#[test]
fn rebuild_replaces_template() {
    if !hutch_tests::require_root("rebuild_replaces_template") {
        return;
    }
    let env = test_env("rebuild");
    let v1 = env.path().join("v1");
    make_rootfs(&v1);
    write_file(&v1.join("version"), "1", 0o644);
    env.store.build_from_dir("t", &v1).unwrap();

    let v2 = env.path().join("v2");
    write_file(&v2.join("bin/sh"), "x", 0o755);
    write_file(&v2.join("version"), "2", 0o644);
    let report = env.store.build_from_dir("t", &v2).unwrap();
    assert_eq!(
        fs::read_to_string(env.store.template_dir("t").join("version")).unwrap(),
        "2"
    );
    assert!(!env.store.template_dir("t").join("usr").exists());
    assert!(
        report.warnings.iter().any(|w| w.contains("no sftp-server")),
        "{:?}",
        report.warnings
    );
    assert!(leftovers(&env.store.templates_dir()).is_empty());
}

/// A source directory that holds the store itself is refused (the copy would never end).
#[test]
fn build_refuses_source_containing_store() {
    if !hutch_tests::require_root("build_refuses_source_containing_store") {
        return;
    }
    let env = test_env("self");
    make_rootfs(env.path());
    let err = env.store.build_from_dir("t", env.path()).unwrap_err();
    assert!(err.to_string().contains("into itself"), "{err}");
    assert!(leftovers(&env.store.templates_dir()).is_empty());
}

/// A tarball builds like a directory: setuid stripped, device skipped, symlinks kept.
#[test]
fn build_from_tar() {
    if !hutch_tests::require_root("build_from_tar") {
        return;
    }
    let env = test_env("tar");
    let src = env.path().join("src");
    make_rootfs(&src);
    let tarball = env.path().join("rootfs.tar.gz");
    let status = std::process::Command::new("tar")
        .args(["-C"])
        .arg(&src)
        .args(["-czf"])
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let report = env.store.build_from_tar("fromtar", &tarball).unwrap();
    assert_sanitized(&report.path, &report);
}

/// A loaded generation is a tmpfs mounted ro,nosuid,nodev: writes fail with
/// EROFS; it is current; unloading leaves nothing mounted and no directory.
#[test]
fn load_is_read_only_nosuid_nodev() {
    if !hutch_tests::require_root("load_is_read_only_nosuid_nodev") {
        return;
    }
    let env = test_env("load");
    let src = env.path().join("src");
    make_rootfs(&src);
    env.store.build_from_dir("t", &src).unwrap();

    let loaded = env.store.load("t").unwrap();
    assert_eq!(loaded.generation, 1);
    assert_eq!(loaded.path, env.store.generations_dir("t").join("1"));
    let (_, options, fstype) = mount_at(&loaded.path).expect("mounted");
    assert_eq!(fstype, "tmpfs");
    for option in ["ro", "nosuid", "nodev"] {
        assert!(
            options.iter().any(|o| o == option),
            "{option} missing in {options:?}"
        );
    }
    let err = fs::write(loaded.path.join("new-file"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::create_dir(loaded.path.join("new-dir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    assert_eq!(
        fs::read_to_string(loaded.path.join("home/owned")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        fs::read_link(loaded.path.join("etc/host-passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::metadata(loaded.path.join("usr/bin/su")).unwrap().mode() & 0o6000,
        0
    );
    let root = fs::metadata(&loaded.path).unwrap();
    assert_eq!((root.uid(), root.mode() & 0o7777), (0, 0o755));
    assert_eq!(env.store.current("t").unwrap(), Some(loaded.clone()));

    env.store.unload(&loaded).unwrap();
    assert!(!loaded.path.exists());
    assert_eq!(env.store.current("t").unwrap(), None);
    let root = fs::canonicalize(env.path()).unwrap();
    assert!(
        mounts().iter().all(|m| !m.0.starts_with(&root)),
        "something left mounted"
    );
}

/// Each load is a new generation; current() is the newest loaded one and
/// list() shows them all with their size in RAM.
#[test]
fn generations_count_up() {
    if !hutch_tests::require_root("generations_count_up") {
        return;
    }
    let env = test_env("gens");
    let src = env.path().join("src");
    make_rootfs(&src);
    env.store.build_from_dir("t", &src).unwrap();
    let one = env.store.load("t").unwrap();
    let two = env.store.load("t").unwrap();
    assert_eq!((one.generation, two.generation), (1, 2));
    assert_eq!(env.store.current("t").unwrap(), Some(two.clone()));

    let list = env.store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "t");
    assert_eq!(
        list[0].built.as_deref(),
        Some(env.store.template_dir("t").as_path())
    );
    let gens: Vec<(u64, bool)> = list[0]
        .generations
        .iter()
        .map(|g| (g.generation, g.loaded))
        .collect();
    assert_eq!(gens, vec![(1, true), (2, true)]);
    assert!(list[0].generations[0].bytes_in_ram.is_some_and(|b| b > 0));

    env.store.unload(&two).unwrap();
    assert_eq!(env.store.current("t").unwrap(), Some(one.clone()));
    // A generation directory with nothing mounted is not current.
    fs::create_dir(env.store.generations_dir("t").join("7")).unwrap();
    assert_eq!(env.store.current("t").unwrap(), Some(one.clone()));
    env.store.unload(&one).unwrap();
    assert_eq!(env.store.current("t").unwrap(), None);
}

/// Concurrent first logins (ensure_loaded from several threads) load one generation.
#[test]
fn ensure_loaded_loads_once() {
    if !hutch_tests::require_root("ensure_loaded_loads_once") {
        return;
    }
    let env = test_env("ensure");
    let src = env.path().join("src");
    make_rootfs(&src);
    env.store.build_from_dir("t", &src).unwrap();
    let results: Vec<Loaded> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| env.store.ensure_loaded("t").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|l| l.generation == 1), "{results:?}");
    let entries = fs::read_dir(env.store.generations_dir("t"))
        .unwrap()
        .count();
    assert_eq!(entries, 1);
    env.store.unload(&results[0]).unwrap();
}

/// Loading a template that was never built fails with NotBuilt and makes no generation.
#[test]
fn load_of_missing_template_leaves_nothing() {
    if !hutch_tests::require_root("load_of_missing_template_leaves_nothing") {
        return;
    }
    let env = test_env("missing");
    let err = env.store.load("nope").unwrap_err();
    assert!(matches!(err, TemplateError::NotBuilt { .. }), "{err:?}");
    assert!(!env.store.generations_dir("nope").exists());
}

/// The Debian template of this run: built once by mmdebstrap into
/// /var/cache/hutch-tests/lib (shared by every test of the run).
fn debian_template() -> &'static (TemplateStore, BuildReport, Duration) {
    static BUILT: OnceLock<(TemplateStore, BuildReport, Duration)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let lib = Path::new("/var/cache/hutch-tests/lib");
        let store = TemplateStore::new(lib, Path::new("/var/cache/hutch-tests/run-unused"));
        let started = Instant::now();
        let report = store
            .build_debootstrap("bookworm", "bookworm", &["openssh-sftp-server".to_string()])
            .unwrap_or_else(|e| panic!("mmdebstrap build: {e}"));
        (store, report, started.elapsed())
    })
}

/// mmdebstrap builds a Debian template: /bin/sh and bash present, every
/// setuid bit stripped and reported, /dev nodes skipped; it loads into a
/// read-only tmpfs (build and load times printed).
#[test]
fn debootstrap_bookworm_builds_and_loads() {
    if !(env_is("HUTCH_TEST_DEBOOTSTRAP") || env_is("HUTCH_REQUIRE_ROOT")) {
        eprintln!("SKIP debootstrap_bookworm_builds_and_loads: set HUTCH_TEST_DEBOOTSTRAP=1 (needs root and a Debian mirror)");
        return;
    }
    if !hutch_tests::require_root("debootstrap_bookworm_builds_and_loads") {
        return;
    }
    let (built_store, report, took) = debian_template();
    eprintln!(
        "mmdebstrap bookworm: {:.1} s, {} bytes",
        took.as_secs_f64(),
        report.bytes
    );
    let warnings = report.warnings.join("\n");
    assert!(
        warnings.contains("stripped setuid/setgid from /usr/bin/su"),
        "{warnings}"
    );
    assert!(warnings.contains("/dev/null"), "{warnings}");
    assert!(!warnings.contains("no sftp-server"), "{warnings}");
    assert!(report.path.join("usr/bin/bash").exists());
    let mut setuid = Vec::new();
    let out = std::process::Command::new("find")
        .arg(&report.path)
        .args(["-xdev", "-perm", "/6000", "-not", "-type", "d"])
        .output()
        .unwrap();
    setuid.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string),
    );
    assert!(setuid.is_empty(), "{setuid:?}");

    let env = test_env("deb");
    let store = TemplateStore::new(&built_store.lib_dir, &env.path().join("run"));
    let started = Instant::now();
    let loaded = store.load("bookworm").unwrap();
    eprintln!(
        "load of {} MiB: {:.2} s",
        report.bytes / (1024 * 1024),
        started.elapsed().as_secs_f64()
    );
    assert!(loaded.path.join("usr/bin/bash").exists());
    let err = fs::write(loaded.path.join("etc/motd"), "x").unwrap_err();
    assert!(
        err.raw_os_error() == Some(libc::EROFS) || err.kind() == ErrorKind::PermissionDenied,
        "{err}"
    );
    store.unload(&loaded).unwrap();
}
