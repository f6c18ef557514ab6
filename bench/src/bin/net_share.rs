//! bench: the share of cold-login time spent on networking.
//!
//! Prints, side by side in one run, the median cold container start (the
//! user has no container: keeper started, cgroup, container up, first
//! session joined, i.e. `open_session` from start to ready) with
//! `network = "none"` and with `network = "veth"` (bridge port, lease,
//! nftables table, eth0 inside), the runs of the two interleaved, and the
//! networking share `(veth - none) / veth`.
//!
//! veth mode makes a bridge in the keeper's network namespace, so the bench
//! first moves itself into a network namespace of its own (`unshare
//! CLONE_NEWNET`, lo up): its keepers inherit it and nothing is made in the
//! host's. The namespace, the bridge and the tables go when the bench exits.
//!
//! Run as root: `cargo run --release -p hutch-bench --bin net_share [N]`.

use std::time::Duration;

use hutch_bench::{median, open_in_child};
use hutch_runtime::join::JoinOptions;
use hutch_tests::HutchEnv;

/// Moves this process into a new network namespace with lo up. Must run
/// before any thread or keeper exists.
fn private_netns() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let st = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    anyhow::ensure!(st.success(), "ip link set lo up: {st}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("run as root");
    }
    // First of all: never make a bridge in the host's namespace.
    private_netns()?;
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    if std::env::var_os("HUTCH_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("HUTCH_BIN_DIR", dir);
        }
    }
    let base = "[defaults]\nhostname = \"bench-{user}\"\nmemory = \"1G\"\npids = 512\n";
    let hutch = HutchEnv::new(&format!("{base}network = \"none\"\n"));
    let leases = hutch.dir.join("leases");
    let policy = |mode: &str| {
        format!(
            "[host.net]\nleases = \"{}\"\n\n{base}network = \"{mode}\"\n",
            leases.display()
        )
    };
    let user = hutch.user();
    let opts = JoinOptions {
        config: hutch.config.clone(),
        keeper: hutch.bins.keeper.clone(),
        timeout: Duration::from_secs(60),
        policy_cache: hutch_policy::DEFAULT_CACHE_DIR.into(),
    };

    let modes = ["none", "veth"];
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // One warm-up per mode (template into RAM, bridge made, policy cached),
    // then the runs, interleaved so drift hits both alike.
    for round in 0..=n {
        for (i, mode) in modes.iter().enumerate() {
            hutch.write_policy(&policy(mode));
            let ms =
                open_in_child(&opts, &user.name).map_err(|e| anyhow::anyhow!("{mode}: {e}"))?;
            let left = hutch.wait_gone(&user.name, Duration::from_secs(30));
            anyhow::ensure!(left.is_empty(), "{mode}: container not torn down: {left:?}");
            if *mode == "veth" {
                // Proof the mode took: the user holds a (now free) lease.
                let l = std::fs::read_to_string(&leases).unwrap_or_default();
                anyhow::ensure!(
                    l.lines().any(|l| l.starts_with(&format!("{} ", user.name))),
                    "veth: no lease for the user: {l:?}"
                );
            }
            if round > 0 {
                times[i].push(ms);
            }
        }
    }

    let none = median(&mut times[0]);
    let veth = median(&mut times[1]);
    println!("cold container start (open_session, keeper start to ready), medians of {n} runs each, debug={}", cfg!(debug_assertions));
    println!("  network = \"none\": {none:8.2} ms");
    println!("  network = \"veth\": {veth:8.2} ms");
    println!(
        "  networking: {:8.2} ms, {:.1}% of a veth cold start",
        veth - none,
        (veth - none) / veth * 100.0
    );
    drop(user);
    Ok(())
}
