//! bench: what a persistent writable layer costs a login, side by side with
//! the ephemeral tmpfs layer, in one run:
//! - `first`: the first persistent login (mkfs.ext4 of the image, sparse);
//! - `create`: open_session when the user has no container, ephemeral and
//!   persistent (loop attach + ext4 mount of an existing image);
//! - `teardown`: from the last close until the keeper is gone (persistent:
//!   the ext4 unmount and the loop device's release included).
//!
//! Run as root: `cargo run --release -p hutch-bench --bin layer [N]`.

use std::time::{Duration, Instant};

use hutch_bench::{median, open_in_child};
use hutch_runtime::join::JoinOptions;
use hutch_tests::HutchEnv;

/// One create (ms) and its teardown (ms, until nothing of it is left).
fn cycle(hutch: &HutchEnv, opts: &JoinOptions, user: &str) -> anyhow::Result<(f64, f64)> {
    let c = open_in_child(opts, user).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let left = hutch.wait_gone(user, Duration::from_secs(30));
    anyhow::ensure!(left.is_empty(), "container not torn down: {left:?}");
    Ok((c, t.elapsed().as_secs_f64() * 1000.0))
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
    let size = "1G";
    let ephemeral = format!("[defaults]\nwritable_size = \"{size}\"\n");
    let persistent = format!("{ephemeral}writable = \"persistent\"\n");
    let hutch = HutchEnv::new(&ephemeral);
    let user = hutch.user();
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };
    // Warm-up: the template into RAM.
    cycle(&hutch, &opts, &user.name)?;

    hutch.write_policy(&persistent);
    let (first, _) = cycle(&hutch, &opts, &user.name)?;
    let image = hutch_runtime::layer::image_path(&hutch.lib_dir, &user.name);
    let on_disk = std::fs::metadata(&image).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.blocks() * 512
    })?;

    let (mut ec, mut et, mut pc, mut pt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        hutch.write_policy(&ephemeral);
        let (c, t) = cycle(&hutch, &opts, &user.name)?;
        ec.push(c);
        et.push(t);
        hutch.write_policy(&persistent);
        let (c, t) = cycle(&hutch, &opts, &user.name)?;
        pc.push(c);
        pt.push(t);
    }
    let removed = hutch_runtime::layer::reset(&hutch.lib_dir, &user.name)?;
    anyhow::ensure!(removed.is_some(), "the layer was not there to remove");

    let (ec, et, pc, pt) = (
        median(&mut ec),
        median(&mut et),
        median(&mut pc),
        median(&mut pt),
    );
    println!(
        "writable layer ({size}), medians of {n} alternating runs, debug={}",
        cfg!(debug_assertions)
    );
    println!(
        "  first persistent login (mkfs.ext4, sparse image, {} KiB on disk): {first:8.2} ms",
        on_disk / 1024
    );
    println!("  create    ephemeral (tmpfs): {ec:8.2} ms   persistent (loop + ext4): {pc:8.2} ms   {:.2}x", pc / ec);
    println!("  teardown  ephemeral (tmpfs): {et:8.2} ms   persistent (loop + ext4): {pt:8.2} ms   {:.2}x", pt / et);
    drop(user);
    Ok(())
}
