//! `HutchEnv`: one test's hutch installation: a policy file whose run dir and
//! cgroup root are the test's own, the shared e2e template (built once per
//! machine from the cached Debian rootfs), hutch-shell installed where test
//! users can run it, and the PAM stack that puts pam_hutch last. Drop waits
//! for the keepers to finish and removes the test's cgroup root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{debian_rootfs, output, unique, Bins, Sftp, SshdEnv, SshdOpts, TestDir, TestUser};

/// The template every e2e test uses.
pub const E2E_TEMPLATE: &str = "e2e";
const E2E_LIB: &str = "/var/cache/hutch-tests/lib-e2e";

/// One test's hutch set-up.
pub struct HutchEnv {
    pub dir: TestDir,
    pub bins: Bins,
    /// hutch-shell, installed world-executable: the test users' login shell.
    pub shell: PathBuf,
    /// The PAM module, installed as `pam_hutch.so`.
    pub module: PathBuf,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub lib_dir: PathBuf,
    /// Relative cgroup root (below the test's own cgroups).
    pub cgroup_root: String,
}

/// The shared lib dir with the e2e template built (once, under a lock).
pub fn e2e_lib_dir() -> PathBuf {
    let lib = PathBuf::from(E2E_LIB);
    let store = hutch_runtime::template::TemplateStore::new(&lib, Path::new("/run/hutch-unused"));
    let done = store.template_dir(E2E_TEMPLATE).join("bin/bash");
    if done.exists() {
        return lib;
    }
    std::fs::create_dir_all(&lib).expect("mkdir e2e lib dir");
    let lockf = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lib.join(".e2e-build.lock"))
        .expect("open e2e lock");
    lockf.lock().expect("lock e2e lib");
    if !done.exists() {
        let rootfs = debian_rootfs();
        store
            .build_from_dir(E2E_TEMPLATE, &rootfs)
            .expect("building the e2e template");
    }
    lib
}

impl HutchEnv {
    /// A policy of `[host]` + `[template]` made here, followed by `policy`
    /// (the test's `[defaults]`, `[users.X]`, ...).
    pub fn new(policy: &str) -> HutchEnv {
        cache_dir_was_there();
        let bins = Bins::locate();
        bins.require();
        let dir = TestDir::new("hthut");
        let shell_dir = dir.join("bin");
        std::fs::create_dir_all(&shell_dir).unwrap();
        let shell = bins.install_to(&shell_dir);
        // Installed under its real name, so syslog tags read `pam_hutch(...)`.
        let module = shell_dir.join("pam_hutch.so");
        std::fs::copy(&bins.pam_module, &module).expect("copying the PAM module");
        let lib_dir = e2e_lib_dir();
        let run_dir = dir.join("run");
        let cgroup_root = unique("hutch-t");
        let config = dir.join("hutch.toml");
        let env = HutchEnv {
            dir,
            bins,
            shell,
            module,
            config,
            run_dir,
            lib_dir,
            cgroup_root,
        };
        env.write_policy(policy);
        env
    }

    /// Rewrites the policy file (host settings kept).
    pub fn write_policy(&self, policy: &str) {
        self.write_policy_with_host("", policy);
    }

    /// Rewrites the policy file with `host` (lines such as `lxcfs = "..."`)
    /// added to the env's `[host]` table.
    pub fn write_policy_with_host(&self, host: &str, policy: &str) {
        let text = format!(
            "[host]\nrun_dir = \"{}\"\nlib_dir = \"{}\"\ncgroup_root = \"{}\"\n{host}\n[template]\nname = \"{E2E_TEMPLATE}\"\n\n{policy}\n",
            self.run_dir.display(),
            self.lib_dir.display(),
            self.cgroup_root
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// The PAM stack of a confining service: pam_hutch is the last session line.
    pub fn pam_stack(&self, module_args: &str) -> String {
        format!(
            "auth required pam_permit.so\naccount required pam_unix.so\nsession required pam_unix.so\nsession required {} config={} keeper={} {module_args}\n",
            self.module.display(),
            self.config.display(),
            self.bins.keeper.display()
        )
    }

    /// The PAM stack of a root-run switcher (su, sudo, runuser, cron,
    /// atd): root (or the daemon) needs no password, pam_hutch last.
    pub fn switcher_stack(&self) -> String {
        format!(
            "auth sufficient pam_rootok.so\nauth required pam_permit.so\naccount required pam_unix.so\nsession required pam_unix.so\nsession required {} config={} keeper={}\n",
            self.module.display(),
            self.config.display(),
            self.bins.keeper.display()
        )
    }

    /// The distribution's own stack of `service` (/etc/pam.d/SERVICE, with
    /// its @includes) with pam_hutch as the last session line, as `hutchctl
    /// setup` makes it: every module the host runs for that service,
    /// pam_keyinit's revoke and pam_limits included, runs before or after
    /// the join.
    pub fn distro_stack(&self, service: &str) -> String {
        let text = std::fs::read_to_string(Path::new("/etc/pam.d").join(service))
            .unwrap_or_else(|e| panic!("/etc/pam.d/{service}: {e}"));
        format!(
            "{text}\nsession required {} config={} keeper={}\n",
            self.module.display(),
            self.config.display(),
            self.bins.keeper.display()
        )
    }

    /// A private sshd whose PAM service confines through this env.
    pub fn sshd(&self, sftp: Sftp) -> SshdEnv {
        SshdEnv::start(self.sshd_opts(sftp))
    }

    /// The options [`sshd`](Self::sshd) starts with, to change before
    /// [`SshdEnv::start`] (e.g. `mount_ns`).
    pub fn sshd_opts(&self, sftp: Sftp) -> SshdOpts {
        SshdOpts {
            pam_stack: self.pam_stack(""),
            sftp,
            ..Default::default()
        }
    }

    /// A throwaway user whose login shell is hutch-shell.
    pub fn user(&self) -> TestUser {
        TestUser::create(&unique("ht"), &self.shell)
    }

    /// Runs hutchctl with this env's policy.
    pub fn ctl(&self, args: &[&str]) -> Output {
        output(
            Command::new(&self.bins.ctl)
                .arg("--config")
                .arg(&self.config)
                .args(args),
        )
    }

    /// `<run_dir>/users/<user>`.
    pub fn user_dir(&self, user: &str) -> PathBuf {
        self.run_dir.join("users").join(user)
    }

    /// The container's state, if its keeper has written one.
    pub fn state(&self, user: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.user_dir(user).join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// This env's cgroup root directory in each hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        hutch_runtime::cgroup::CgroupRoot::open(&self.cgroup_root)
            .map(|r| r.dirs())
            .unwrap_or_default()
    }

    /// Cgroup directories below the root that hold a user's container.
    pub fn user_cgroups(&self, user: &str) -> Vec<PathBuf> {
        self.cgroup_dirs()
            .into_iter()
            .map(|d| d.join("users").join(user))
            .filter(|d| d.exists())
            .collect()
    }

    /// Waits until `user`'s container is gone: keeper exited, cgroups and
    /// state removed. Returns what remains after `timeout`.
    pub fn wait_gone(&self, user: &str, timeout: Duration) -> Vec<String> {
        let mut left = Vec::new();
        crate::wait_until(timeout, || {
            left = self.remains(user);
            left.is_empty().then_some(())
        });
        left
    }

    fn remains(&self, user: &str) -> Vec<String> {
        let mut left: Vec<String> = self
            .user_cgroups(user)
            .iter()
            .map(|d| format!("cgroup {}", d.display()))
            .collect();
        let dir = self.user_dir(user);
        if dir.exists() {
            left.push(format!("state dir {}", dir.display()));
        }
        for pid in crate::proc::pids() {
            let cmd = crate::proc::cmdline(pid).unwrap_or_default();
            if cmd.contains("hutch-keeper")
                && cmd.contains(&self.config.to_string_lossy().to_string())
                && cmd.ends_with(user)
            {
                left.push(format!("keeper pid {pid}"));
            }
        }
        left
    }

    /// Removes `dir` and every cgroup below it, deepest first, until
    /// `deadline`: a group a dying process still holds refuses rmdir with
    /// EBUSY for a while (a keeper's teardown of a thousand containers takes
    /// seconds), so each refusal kills what is listed in it (processes of
    /// this test's own making) and tries again.
    fn remove_cgroup_tree(dir: &Path, deadline: Instant) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    Self::remove_cgroup_tree(&e.path(), deadline);
                }
            }
        }
        loop {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!("warning: cgroup {} could not be removed", dir.display());
                return;
            }
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HutchEnv {
    fn drop(&mut self) {
        // Keepers started by this env end with their last session: let them
        // finish their own teardown (bounded), then kill what is left.
        let cfg = self.config.to_string_lossy().to_string();
        let keepers = || -> Vec<i32> {
            crate::proc::pids()
                .into_iter()
                .filter(|&p| {
                    let c = crate::proc::cmdline(p).unwrap_or_default();
                    c.contains("hutch-keeper") && c.contains(&cfg)
                })
                .collect()
        };
        crate::wait_until(Duration::from_secs(3), || {
            keepers().is_empty().then_some(())
        });
        crate::proc::kill_until_gone(Duration::from_secs(10), keepers);
        // The PAM module's cache of this env's policy, and its login counters.
        let _ = std::fs::remove_file(hutch_policy::cache_path(
            &self.config,
            Path::new(hutch_policy::DEFAULT_CACHE_DIR),
        ));
        let counters = Path::new(hutch_runtime::counters::DEFAULT_DIR);
        let _ = std::fs::remove_file(hutch_runtime::counters::path_for(&self.config, counters));
        if !cache_dir_was_there() {
            // The module made the cache directory (and /run/hutch) for the
            // tests: remove them once empty (a test still running makes them
            // again when it needs them).
            let cache = Path::new(hutch_policy::DEFAULT_CACHE_DIR);
            let _ = std::fs::remove_dir(cache);
            let _ = std::fs::remove_dir(counters);
            if let Some(parent) = cache.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        // Template generations a keeper loaded in this mount namespace (the
        // bench and tests that start keepers outside an SshdEnv).
        let mut mounts: Vec<PathBuf> = hutch_runtime::mountinfo::read_own()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| m.starts_with(&self.run_dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for d in self.cgroup_dirs() {
            if d.exists() {
                // Any process left in there is the test's own doing: kill it.
                let root = hutch_runtime::cgroup::CgroupRoot::open(&self.cgroup_root);
                if let Ok(r) = root {
                    for sub in ["users", "keepers"] {
                        if let Ok(entries) = std::fs::read_dir(d.join(sub)) {
                            for e in entries.flatten() {
                                let rel = format!("{sub}/{}", e.file_name().to_string_lossy());
                                if let Some(cg) = r.existing(&rel) {
                                    let _ = cg.kill_all();
                                }
                            }
                        }
                    }
                    if let Some(cg) = r.existing("keepers") {
                        let _ = cg.kill_all();
                    }
                }
                Self::remove_cgroup_tree(&d, Instant::now() + Duration::from_secs(30));
            }
        }
    }
}

/// Used by tests that check the user's session ran inside: the sshd
/// command's output, trimmed.
pub fn trimmed(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Whether the PAM module's policy cache directory existed before the first
/// [`HutchEnv`] of this test process (then it is the host's, and stays).
fn cache_dir_was_there() -> bool {
    static THERE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *THERE.get_or_init(|| Path::new(hutch_policy::DEFAULT_CACHE_DIR).exists())
}
