//! `writable = "persistent"` over real SSH: the user's changes outside home
//! live in an ext4 image under `<lib_dir>/users/<user>/`, survive logout, a
//! crashed keeper and a reboot-like teardown (every process, mount and
//! /run state gone), are held to `writable_size` by the image on ext4 and
//! on xfs, are shown by `hutchctl diff` running and stopped, and go with
//! `hutchctl reset`. Switching a user between ephemeral and persistent
//! keeps each mode's contract.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hutch_runtime::layer;
use hutch_tests::hutch::trimmed;
use hutch_tests::*;

const POLICY: &str = "[defaults]\nwritable = \"persistent\"\nwritable_size = \"64M\"\n";

/// A user's layer directory under the test's lib_dir, removed on Drop
/// (and the file system a test mounted there unmounted).
struct LayerGuard {
    dir: PathBuf,
    mounted: bool,
    _fs: Option<TestDir>,
}

impl LayerGuard {
    fn new(lib: &Path, user: &str) -> LayerGuard {
        LayerGuard {
            dir: layer::user_dir(lib, user),
            mounted: false,
            _fs: None,
        }
    }

    /// An xfs file system (a sparse 300 MiB image, xfs's least) mounted on
    /// the user's layer directory, so that the image is made on xfs.
    fn on_xfs(lib: &Path, user: &str) -> LayerGuard {
        let mut g = LayerGuard::new(lib, user);
        let fs = TestDir::new("htxfs");
        let img = fs.join("xfs.img");
        run_ok(Command::new("truncate").args(["-s", "300M"]).arg(&img));
        run_ok(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(&img));
        let users = lib.join(layer::USERS_DIR);
        std::fs::create_dir_all(&users).unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(&g.dir).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&g.dir),
        );
        std::fs::set_permissions(&g.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        g.mounted = true;
        g._fs = Some(fs);
        g
    }

    fn image(&self) -> PathBuf {
        self.dir.join(layer::IMAGE)
    }
}

impl Drop for LayerGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.image());
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `stat -f -c %T` of a path on the host.
fn fs_type(p: &Path) -> String {
    trimmed(&run_ok(
        Command::new("stat").args(["-f", "-c", "%T"]).arg(p),
    ))
}

/// The image is root's 0600 file with one link, in root's 0700 directory,
/// and no loop device holds it once the container is gone.
fn assert_image_at_rest(g: &LayerGuard) {
    let md = std::fs::symlink_metadata(g.image()).expect("the image is there");
    assert!(md.is_file() && md.uid() == 0 && md.nlink() == 1);
    assert_eq!(md.mode() & 0o7777, 0o600);
    let dmd = std::fs::symlink_metadata(&g.dir).unwrap();
    assert!(dmd.is_dir() && dmd.uid() == 0 && dmd.mode() & 0o7777 == 0o700);
    let gone = wait_until(Duration::from_secs(10), || {
        layer::loop_devices_of(&g.image()).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "loop devices still hold the image: {:?}",
        layer::loop_devices_of(&g.image())
    );
}

/// Writes outside home survive a logout, a SIGKILLed keeper and a
/// reboot-like teardown (the sshd, its mount namespace and the whole run
/// dir gone); `dd` stops at writable_size on a host ext4; the user cannot
/// reach the image; diff shows the layer running and stopped; reset is
/// refused while the container runs and then discards the layer.
#[test]
fn persistent_layer_survives_logout_and_teardown() {
    if !require_root("persistent_layer_survives_logout_and_teardown") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    let guard = LayerGuard::new(&hutch.lib_dir, &name);
    let mnt_ns;
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(
            &user,
            &["echo kept > /var/tmp/kept && mkdir /var/tmp/d && echo f > /var/tmp/d/f && echo tmp > /tmp/t && cat /var/tmp/kept"],
        );
        assert_eq!(trimmed(&out), "kept", "{}", out.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
        assert_image_at_rest(&guard);
        assert_eq!(
            fs_type(&guard.image()),
            "ext2/ext3",
            "the host's lib_dir is ext4"
        );

        // Logout: kept (but /tmp is a tmpfs of its own, and goes).
        let out = env.ssh(
            &user,
            &["cat /var/tmp/kept /var/tmp/d/f; test -e /tmp/t && echo tmp-kept || echo tmp-gone"],
        );
        assert_eq!(trimmed(&out), "kept\nf\ntmp-gone", "{}", out.describe());

        // With the container running: diff shows the layer, reset is refused.
        let hold = env.shell_pty(&user);
        let st = wait_until(Duration::from_secs(20), || hutch.state(&name)).expect("running");
        let diff = hutch.ctl(&["diff", &name]);
        assert!(diff.status.success(), "{}", diff.describe());
        let d = diff.stdout_str();
        assert!(
            d.contains("A /var/tmp/kept") && d.contains("A /var/tmp/d/f"),
            "{d}"
        );
        let reset = hutch.ctl(&["reset", &name]);
        assert_eq!(reset.code(), Some(1), "{}", reset.describe());
        assert!(
            reset.stderr_str().contains("running"),
            "{}",
            reset.describe()
        );
        assert!(guard.image().exists());

        // Nothing inside reaches the image or the raw upper.
        let out = env.ssh(
            &user,
            &["ls /run/.hutch-upper 2>&1; find / -xdev -name layer.img 2>/dev/null | wc -l; ls /dev | grep -c loop; stat -f -c %b:%S /"],
        );
        let text = out.stdout_str();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("Permission denied"), "{text}");
        assert_eq!(lines[1], "0", "{text}");
        assert_eq!(lines[2], "0", "{text}");
        // df / inside is the layer's ext4: 64 MiB less its metadata.
        let (blocks, bsize) = lines[3].split_once(':').unwrap();
        let total = blocks.parse::<u64>().unwrap() * bsize.parse::<u64>().unwrap();
        assert!(
            total > 40 << 20 && total <= 64 << 20,
            "df / says {total} bytes"
        );

        // Crash: the keeper SIGKILLed under an open session.
        let keeper = st["keeper_pid"].as_i64().unwrap() as i32;
        let init = st["init_pid"].as_i64().unwrap() as i32;
        mnt_ns = hutch_tests::proc::ns_id(init, "mnt");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(keeper),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = hold.wait(Duration::from_secs(20));
    }
    // Reboot-like: the sshd and its mount namespace (the keepers', with the
    // loaded template) are gone; the run dir goes as /run does at boot.
    // The init went with its keeper (no login has come to clean up yet).
    assert!(
        mnt_ns.is_some(),
        "the container's mount namespace was not read"
    );
    let gone = wait_until(Duration::from_secs(20), || {
        let held = hutch_tests::proc::pids()
            .into_iter()
            .any(|p| hutch_tests::proc::ns_id(p, "mnt") == mnt_ns);
        (!held && layer::loop_devices_of(&guard.image()).is_empty()).then_some(())
    });
    if gone.is_none() {
        let holders: Vec<String> = hutch_tests::proc::pids()
            .into_iter()
            .filter(|p| hutch_tests::proc::ns_id(*p, "mnt") == mnt_ns)
            .map(|p| format!("{p} {}", hutch_tests::proc::cmdline(p).unwrap_or_default()))
            .collect();
        panic!("the layer is still mounted after the crash; in its mount namespace: {holders:?}");
    }
    let _ = std::fs::remove_dir_all(&hutch.run_dir);
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(&user, &["cat /var/tmp/kept"]);
        assert_eq!(trimmed(&out), "kept", "{}", out.describe());

        // The size limit stops a dd.
        let out = env.ssh(
            &user,
            &["dd if=/dev/zero of=/var/tmp/big bs=1M count=100 2>&1; echo rc=$?; du -k /var/tmp/big | cut -f1"],
        );
        let text = out.stdout_str();
        eprintln!("dd in a 64M layer on ext4: {}", text.replace('\n', " | "));
        assert!(text.contains("No space left on device"), "{text}");
        assert!(text.contains("rc=1"), "{text}");
        let kib: u64 = text.lines().last().unwrap().trim().parse().unwrap();
        assert!(kib < 64 << 10, "the file grew past the layer: {kib} KiB");
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
        let on_disk = std::fs::metadata(guard.image()).unwrap().blocks() * 512;
        eprintln!("image on disk after the dd: {on_disk} bytes");
        assert!(
            on_disk <= 65 << 20,
            "the image holds {on_disk} bytes on disk"
        );
        assert_image_at_rest(&guard);

        // Stopped: diff mounts the image read-only and shows the same layer.
        let diff = hutch.ctl(&["diff", &name]);
        assert!(diff.status.success(), "{}", diff.describe());
        let d = diff.stdout_str();
        assert!(
            d.contains("A /var/tmp/kept") && d.contains("A /var/tmp/big"),
            "{d}"
        );
        assert!(
            !d.contains(&format!("/home/{name}")),
            "mount points are left out: {d}"
        );
        assert_image_at_rest(&guard);

        // Reset discards it; the next login starts from the template.
        let reset = hutch.ctl(&["reset", &name]);
        assert!(reset.status.success(), "{}", reset.describe());
        assert!(!guard.image().exists() && !guard.dir.exists());
        assert!(
            !hutch.user_dir(&name).exists(),
            "reset left its lock behind"
        );
        let again = hutch.ctl(&["reset", &name]);
        assert_eq!(again.code(), Some(1), "{}", again.describe());
        for l in env.syslog().lines() {
            if l.contains("container up")
                || l.contains("persistent layer")
                || l.contains("torn down")
            {
                eprintln!("keeper: {l}");
            }
        }
        let out = env.ssh(
            &user,
            &["test -e /var/tmp/kept && echo there || echo fresh"],
        );
        assert_eq!(trimmed(&out), "fresh", "{}", out.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// On xfs the image holds the limit too; switching to ephemeral neither
/// shows the persistent files nor writes into the image, and switching back
/// brings them back without what the ephemeral container wrote.
#[test]
fn persistent_layer_on_xfs_and_switching_modes() {
    if !require_root("persistent_layer_on_xfs_and_switching_modes") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    let guard = LayerGuard::on_xfs(&hutch.lib_dir, &name);
    {
        let env = hutch.sshd(Sftp::Internal);
        let out = env.ssh(
            &user,
            &["echo one > /var/tmp/one; dd if=/dev/zero of=/var/tmp/big bs=1M count=100 2>&1; echo rc=$?; rm /var/tmp/big"],
        );
        let text = out.stdout_str();
        eprintln!("dd in a 64M layer on xfs: {}", text.replace('\n', " | "));
        assert!(
            text.contains("No space left on device") && text.contains("rc=1"),
            "{text}"
        );
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
        assert_eq!(fs_type(&guard.image()), "xfs");
        assert_image_at_rest(&guard);
        let before = std::fs::metadata(guard.image()).unwrap().mtime();

        hutch.write_policy("[defaults]\nwritable = \"ephemeral\"\nwritable_size = \"64M\"\n");
        let out = env.ssh(
            &user,
            &["test -e /var/tmp/one && echo seen || echo unseen; echo two > /var/tmp/two && echo wrote"],
        );
        assert_eq!(trimmed(&out), "unseen\nwrote", "{}", out.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
        assert_eq!(
            std::fs::metadata(guard.image()).unwrap().mtime(),
            before,
            "an ephemeral container touched the image"
        );

        hutch.write_policy(POLICY);
        let out = env.ssh(
            &user,
            &["cat /var/tmp/one; test -e /var/tmp/two && echo two-seen || echo two-gone"],
        );
        assert_eq!(trimmed(&out), "one\ntwo-gone", "{}", out.describe());
        assert!(hutch.wait_gone(&name, Duration::from_secs(20)).is_empty());
        assert_image_at_rest(&guard);
        for l in env.syslog().lines() {
            if l.contains("container up") || l.contains("persistent layer") {
                eprintln!("keeper: {l}");
            }
        }
        let reset = hutch.ctl(&["reset", &name]);
        assert!(reset.status.success(), "{}", reset.describe());
        assert!(!guard.image().exists());
    }
    drop(guard);
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
