//! bench: what a login waits for in pam_hutch's open_session.
//!
//! Prints, side by side in one run, medians of:
//! - `floor`: the kernel work a container needs at least (clone into new
//!   mount/pid/uts/ipc/net namespaces, an overlay over the loaded template,
//!   a tmpfs upper, the child's exit), done by hand;
//! - `create`: open_session when the user has no container (keeper started,
//!   cgroup, container, join);
//! - `join`: open_session when the container exists (a second session).
//!
//! Run as root: `cargo run --release -p hutch-bench --bin session [N]`.

use std::time::{Duration, Instant};

use hutch_bench::{hold_session, median, open_in_child};
use hutch_runtime::join::JoinOptions;
use hutch_runtime::sys::{self, Forked};
use hutch_tests::HutchEnv;

fn floor_once(lower: &std::path::Path, scratch: &std::path::Path) -> Result<f64, String> {
    use nix::mount::{mount, MsFlags};
    let t = Instant::now();
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET;
    match sys::clone_fork(flags).map_err(|e| e.to_string())? {
        Forked::Child => {
            let ok = (|| -> nix::Result<()> {
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                mount(
                    Some("t"),
                    scratch,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("size=64m"),
                )?;
                for d in ["u", "w", "m"] {
                    std::fs::create_dir(scratch.join(d)).map_err(|_| nix::errno::Errno::EIO)?;
                }
                let data = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    scratch.join("u").display(),
                    scratch.join("w").display()
                );
                mount(
                    Some("o"),
                    &scratch.join("m"),
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(data.as_str()),
                )
            })();
            sys::exit_now(if ok.is_ok() { 0 } else { 1 })
        }
        Forked::Parent(pid) => {
            let st = nix::sys::wait::waitpid(pid, None).map_err(|e| e.to_string())?;
            if !matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                return Err(format!("floor child: {st:?}"));
            }
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        }
    }
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("run as root");
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    if std::env::var_os("HUTCH_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("HUTCH_BIN_DIR", dir);
        }
    }
    let hutch =
        HutchEnv::new("[defaults]\nhostname = \"bench-{user}\"\nmemory = \"1G\"\npids = 512\n");
    let user = hutch.user();
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };

    // Warm-up: loads the template into RAM once (not part of any login after the first).
    open_in_child(&opts, &user.name).map_err(anyhow::Error::msg)?;
    hutch.wait_gone(&user.name, Duration::from_secs(30));

    let store = hutch_runtime::template::TemplateStore::new(&hutch.lib_dir, &hutch.run_dir);
    let lower = store.current(hutch_tests::E2E_TEMPLATE)?.map(|l| l.path);
    let scratch = hutch.dir.join("floor");
    std::fs::create_dir_all(&scratch)?;

    let mut floor = Vec::new();
    let mut create = Vec::new();
    let mut join = Vec::new();
    for _ in 0..n {
        if let Some(lower) = &lower {
            floor.push(floor_once(lower, &scratch).map_err(anyhow::Error::msg)?);
        }
        create.push(open_in_child(&opts, &user.name).map_err(anyhow::Error::msg)?);
        let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
        anyhow::ensure!(left.is_empty(), "container not torn down: {left:?}");
    }

    // Hold one session open; every further open_session joins it.
    let held = hold_session(&opts, &user.name)?;
    hutch_tests::wait_until(Duration::from_secs(30), || {
        hutch.state(&user.name).map(|_| ())
    });
    for _ in 0..(n * 3) {
        join.push(open_in_child(&opts, &user.name).map_err(anyhow::Error::msg)?);
    }
    held.release();
    hutch.wait_gone(&user.name, Duration::from_secs(30));

    let (c, j) = (median(&mut create), median(&mut join));
    println!(
        "open_session, medians of {n} (join: {}) runs, debug={}",
        n * 3,
        cfg!(debug_assertions)
    );
    if !floor.is_empty() {
        let f = median(&mut floor);
        println!("  floor  (clone 5 namespaces + tmpfs + overlay, no cgroup): {f:8.2} ms");
        println!(
            "  create (keeper + cgroup + container + join):            {c:8.2} ms   {:.1}x floor",
            c / f
        );
    } else {
        println!("  create (keeper + cgroup + container + join):            {c:8.2} ms");
    }
    println!(
        "  join   (second session of the same user):               {j:8.2} ms   {:.3}x create",
        j / c
    );
    drop(user);
    Ok(())
}
