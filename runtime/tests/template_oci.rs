//! Templates from an OCI image layout, rebuilt from their recorded source,
//! and generations released when their last container is gone, against the
//! real kernel (tmpfs mounts under a temp run_dir). Root only: without root
//! each test prints why it skips; with `HUTCH_REQUIRE_ROOT=1` a skip fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hutch_runtime::template::{BuildOptions, Source, TemplateError};
use hutch_tests::store::write_file;
use hutch_tests::StoreEnv;

/// A private lib_dir and run_dir for `test`, unmounted and removed on Drop.
fn test_env(test: &str) -> StoreEnv {
    StoreEnv::new(&format!("hutch-oci-{test}-"))
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Stores `path` as a blob of `layout`; returns its descriptor (JSON).
fn add_blob(layout: &Path, path: &Path, media_type: &str) -> String {
    let hex = sha256(path);
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::copy(path, blobs.join(&hex)).unwrap();
    let size = fs::metadata(path).unwrap().len();
    format!(r#"{{"mediaType":"{media_type}","digest":"sha256:{hex}","size":{size}}}"#)
}

/// Tars `dir`'s contents into `out` (`gzip`: compressed).
fn tar_dir(dir: &Path, out: &Path, gzip: bool) {
    let status = Command::new("tar")
        .arg(if gzip { "-czf" } else { "-cf" })
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
}

/// An OCI layout of two layers. Layer 1 (gzip): /bin/sh, sftp-server, a
/// setuid file, /etc/gone, /etc/keep, /opt/app/{old,sub/x}. Layer 2
/// (uncompressed): a whiteout of /etc/gone, an opaque /opt/app holding only
/// `new`, a replaced /etc/keep, a new /etc/added.
fn make_layout(base: &Path) -> PathBuf {
    let l1 = base.join("layer1");
    write_file(&l1.join("usr/bin/dash"), "#!/nonexistent\n", 0o755);
    std::os::unix::fs::symlink("usr/bin", l1.join("bin")).unwrap();
    std::os::unix::fs::symlink("dash", l1.join("usr/bin/sh")).unwrap();
    write_file(
        &l1.join("usr/lib/openssh/sftp-server"),
        "#!/nonexistent\n",
        0o755,
    );
    write_file(&l1.join("usr/bin/su"), "setuid\n", 0o4755);
    write_file(&l1.join("etc/gone"), "lower\n", 0o644);
    write_file(&l1.join("etc/keep"), "lower\n", 0o644);
    write_file(&l1.join("opt/app/old"), "lower\n", 0o644);
    write_file(&l1.join("opt/app/sub/x"), "lower\n", 0o644);

    let l2 = base.join("layer2");
    write_file(&l2.join("etc/.wh.gone"), "", 0o644);
    write_file(&l2.join("etc/keep"), "upper\n", 0o644);
    write_file(&l2.join("etc/added"), "upper\n", 0o644);
    write_file(&l2.join("opt/app/.wh..wh..opq"), "", 0o644);
    write_file(&l2.join("opt/app/new"), "upper\n", 0o644);

    let layout = base.join("layout");
    fs::create_dir_all(&layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    tar_dir(&l1, &base.join("l1.tar.gz"), true);
    tar_dir(&l2, &base.join("l2.tar"), false);
    let d1 = add_blob(
        &layout,
        &base.join("l1.tar.gz"),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let d2 = add_blob(
        &layout,
        &base.join("l2.tar"),
        "application/vnd.oci.image.layer.v1.tar",
    );
    fs::write(
        base.join("config.json"),
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .unwrap();
    let config = add_blob(
        &layout,
        &base.join("config.json"),
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{config},"layers":[{d1},{d2}]}}"#
    );
    fs::write(base.join("manifest.json"), manifest).unwrap();
    let m = add_blob(
        &layout,
        &base.join("manifest.json"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    fs::write(
        layout.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{m}]}}"#),
    )
    .unwrap();
    layout
}

/// Layers apply in order: the whiteout deletes, the opaque directory keeps
/// only the upper layer's entries, upper files replace lower ones, no
/// whiteout file survives, setuid is stripped; the source is recorded.
#[test]
fn build_from_oci_layout() {
    if !hutch_tests::require_root("build_from_oci_layout") {
        return;
    }
    let env = test_env("build");
    let layout = make_layout(env.path());
    let report = env
        .store
        .build(
            "oci",
            &Source::Oci(layout.clone()),
            &BuildOptions::default(),
        )
        .unwrap();
    let t = &report.path;
    assert!(!t.join("etc/gone").exists(), "whiteout not applied");
    assert_eq!(fs::read_to_string(t.join("etc/keep")).unwrap(), "upper\n");
    assert_eq!(fs::read_to_string(t.join("etc/added")).unwrap(), "upper\n");
    assert!(
        !t.join("opt/app/old").exists() && !t.join("opt/app/sub").exists(),
        "opaque dir kept lower entries"
    );
    assert_eq!(
        fs::read_to_string(t.join("opt/app/new")).unwrap(),
        "upper\n"
    );
    assert!(!t.join("etc/.wh.gone").exists() && !t.join("opt/app/.wh..wh..opq").exists());
    assert!(fs::symlink_metadata(t.join("bin"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::metadata(t.join("usr/bin/su"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert!(
        report.warnings.iter().any(|w| w.contains("/usr/bin/su")),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        env.store.recorded_source("oci").unwrap(),
        Some(Source::Oci(fs::canonicalize(&layout).unwrap()))
    );
    // No staging or scratch directory is left behind.
    let left: Vec<_> = fs::read_dir(env.store.templates_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A blob whose content does not match its digest is refused.
#[test]
fn oci_digest_mismatch_is_refused() {
    if !hutch_tests::require_root("oci_digest_mismatch_is_refused") {
        return;
    }
    let env = test_env("digest");
    let layout = make_layout(env.path());
    let hex = sha256(&env.path().join("l2.tar"));
    fs::write(layout.join("blobs/sha256").join(&hex), b"tampered").unwrap();
    let err = env
        .store
        .build("bad", &Source::Oci(layout), &BuildOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!env.store.template_dir("bad").exists());
}

/// A shell the policy names but the image lacks refuses the build.
#[test]
fn oci_missing_policy_shell_is_refused() {
    if !hutch_tests::require_root("oci_missing_policy_shell_is_refused") {
        return;
    }
    let env = test_env("shell");
    let layout = make_layout(env.path());
    let policy = hutch_policy::Policy::parse(
        "[defaults]\nshell = \"/bin/sh\"\n[groups.staff]\nshell = \"/usr/bin/zsh\"\n",
        Path::new("hutch.toml"),
    )
    .unwrap();
    assert_eq!(
        policy.shells(),
        vec![PathBuf::from("/bin/sh"), PathBuf::from("/usr/bin/zsh")]
    );
    let options = BuildOptions {
        shells: policy.shells(),
    };
    match env.store.build("noz", &Source::Oci(layout), &options) {
        Err(TemplateError::Missing { path, .. }) => assert_eq!(path, Path::new("/usr/bin/zsh")),
        other => panic!("expected a missing-shell refusal, got {other:?}"),
    }
}

/// The built-in default shell counts unless `[defaults]` sets one.
#[test]
fn policy_shells_include_the_default() {
    let policy = hutch_policy::Policy::parse(
        "[users.alice]\nshell = \"/bin/zsh\"\n",
        Path::new("hutch.toml"),
    )
    .unwrap();
    assert_eq!(
        policy.shells(),
        vec![PathBuf::from("/bin/bash"), PathBuf::from("/bin/zsh")]
    );
}

/// `update` rebuilds from the recorded source and loads a new generation;
/// `release` keeps the newest and any generation a state.json names, and
/// unloads an older one nobody uses; `list` shows the users of each.
#[test]
fn update_and_release_generations() {
    if !hutch_tests::require_root("update_and_release_generations") {
        return;
    }
    let env = test_env("gens");
    let layout = make_layout(env.path());
    env.store
        .build("t", &Source::Oci(layout), &BuildOptions::default())
        .unwrap();
    let g1 = env.store.load("t").unwrap();
    let (_, g2) = env
        .store
        .update("t", None, &BuildOptions::default())
        .unwrap();
    assert_eq!((g1.generation, g2.generation), (1, 2));
    assert_eq!(env.store.current("t").unwrap(), Some(g2.clone()));

    // A container on generation 1 (as its keeper's state.json says).
    let user_dir = env.store.run_dir.join("users/alice");
    fs::create_dir_all(&user_dir).unwrap();
    fs::write(
        user_dir.join("state.json"),
        r#"{"user":"alice","uid":1000,"keeper_pid":1,"init_pid":2,"started":0,"template":"t","generation":1,"hostname":"h","cgroups":[],"sessions":[]}"#,
    )
    .unwrap();
    let list = env.store.list().unwrap();
    assert_eq!(list[0].generations[0].users, vec!["alice".to_string()]);
    assert!(list[0].generations[1].users.is_empty());

    assert!(
        !env.store.release("t", 1).unwrap(),
        "released a generation in use"
    );
    assert!(
        !env.store.release("t", 2).unwrap(),
        "released the newest generation"
    );
    fs::remove_file(user_dir.join("state.json")).unwrap();
    assert!(env.store.release("t", 1).unwrap());
    assert!(!g1.path.exists());
    assert!(g2.path.join("etc/keep").exists());
    assert!(
        !env.store.release("t", 1).unwrap(),
        "a second release is a no-op"
    );
}
