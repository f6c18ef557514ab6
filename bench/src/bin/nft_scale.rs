//! nft_scale: what one user's firewall costs beside many users' tables.
//!
//! In a network namespace of its own (`unshare CLONE_NEWNET`, gone when
//! the bench exits) it installs and deletes one veth user's tables (bridge
//! guard and ip conntrack bound, as hutch's defaults have them) with 0
//! other users' tables present, then with N (default 1,000, made with the
//! encoder), each way in a fresh forked child, alternating:
//!
//! - `nft -f`: the scripts hutch applied before (`create table` … and the
//!   add + delete idiom) through nft, i.e. libnftables, which fetches the
//!   namespace's whole ruleset into its cache before applying a batch
//!   (hutch `dlopen`ed libnftables in the keeper until the encoder; nft's
//!   exec adds ~1-2 ms; its peak RSS is the child's `RUSAGE_CHILDREN`);
//! - `nftnl`: the same tables as one raw nf_tables batch
//!   (`hutch_runtime::net::nft::install` / `delete`), nothing read back but
//!   acks.
//!
//! For each it prints the median wall time of install + delete and the
//! child's peak RSS (`VmHWM`), beside a child that does nothing.
//!
//! Run as root: `target/release/nft_scale [--users N] [--rounds R]`.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{anyhow, Context};
use hutch_bench::median;
use hutch_runtime::net::nft;
use hutch_runtime::sys::{self, Forked};

/// The old install script of a veth user with the default conntrack bound
/// and no NAT or egress lists (`nft.rs` before the encoder, verbatim in
/// what it produced).
fn old_install_script(t: &str, port: &str, mac: &str, addr: Ipv4Addr, n: u64) -> String {
    let mut s = format!("create table bridge {t}\ncreate table ip {t}\n");
    s.push_str(&format!("table bridge {t} {{\n  chain guard {{\n"));
    s.push_str(&format!("    ether saddr != {mac} drop\n"));
    s.push_str("    ether type != { ip, arp } drop\n");
    s.push_str(&format!(
        "    ether type arp arp saddr ether != {mac} drop\n"
    ));
    s.push_str(&format!("    ether type arp arp saddr ip != {addr} drop\n"));
    s.push_str(&format!("    ether type ip ip saddr != {addr} drop\n"));
    s.push_str("  }\n");
    for hook in ["input", "forward"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    iifname \"{port}\" jump guard\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s.push_str(&format!("table ip {t} {{\n"));
    s.push_str(&format!(
        "  chain ctlimit {{\n    ct state new ct count over {n} drop\n  }}\n"
    ));
    for hook in ["input", "forward"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    ip saddr {addr} jump ctlimit\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

fn old_delete_script(t: &str) -> String {
    format!("table bridge {t}\ndelete table bridge {t}\ntable ip {t}\ndelete table ip {t}\n")
}

/// User `i`'s port, address and MAC.
fn user(i: usize) -> (String, String, Ipv4Addr, [u8; 6]) {
    let addr = Ipv4Addr::new(
        10,
        90 + (i / 62500) as u8,
        (i / 250 % 250) as u8,
        (i % 250) as u8 + 2,
    );
    let o = addr.octets();
    (
        format!("u{i}"),
        format!("hv{i}"),
        addr,
        [0x02, 0x68, o[0], o[1], o[2], o[3]],
    )
}

fn rules<'a>(name: &'a str, port: &'a str, addr: Ipv4Addr, mac: [u8; 6]) -> nft::Rules<'a> {
    nft::Rules {
        user: name,
        port,
        addr,
        mac,
        egress_deny: &[],
        egress_allow: &[],
        gateway: Ipv4Addr::new(10, 90, 0, 1),
        nat_uplink: None,
        conntrack: Some(hutch_policy::DEFAULT_CONNTRACK),
    }
}

type Samples = Vec<f64>;

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Nothing,
    Libnftables,
    Nftnl,
}

/// This process's peak RSS, KiB.
fn vm_hwm() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Applies a script with `nft -f -`.
fn nft_f(script: &str) -> Result<(), String> {
    let mut c = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let w = c.stdin.take().map(|mut i| i.write_all(script.as_bytes()));
    let st = c.wait().map_err(|e| format!("nft: {e}"))?;
    match (w, st.success()) {
        (Some(Ok(())), true) => Ok(()),
        _ => Err(format!("nft -f: {st}")),
    }
}

/// The largest peak RSS of this process's waited-for children, KiB.
fn children_max_rss() -> u64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss().max(0) as u64)
        .unwrap_or(0)
}

/// One install + delete of the probe user in a fresh child: (install ms,
/// delete ms, VmHWM KiB).
fn probe(way: Way) -> anyhow::Result<(f64, f64, u64)> {
    let (name, port, addr, mac) = user(999_999);
    let (r, w) = nix::unistd::pipe()?;
    match sys::fork()? {
        Forked::Child => {
            drop(r);
            let t = nft::table_name(&name);
            let mac_text = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
            );
            let script =
                old_install_script(&t, &port, &mac_text, addr, hutch_policy::DEFAULT_CONNTRACK);
            let install = || match way {
                Way::Nothing => Ok(()),
                Way::Libnftables => nft_f(&script),
                Way::Nftnl => nft::install(&rules(&name, &port, addr, mac)),
            };
            let delete = || match way {
                Way::Nothing => Ok(()),
                Way::Libnftables => nft_f(&old_delete_script(&t)),
                Way::Nftnl => nft::delete(&name),
            };
            let t0 = Instant::now();
            let res = install();
            let t1 = Instant::now();
            let res = res.and_then(|()| delete());
            let (i_ms, d_ms) = (
                (t1 - t0).as_secs_f64() * 1000.0,
                t1.elapsed().as_secs_f64() * 1000.0,
            );
            let mut w = std::fs::File::from(w);
            let _ = match res {
                Ok(()) => write!(w, "{i_ms} {d_ms} {}", vm_hwm().max(children_max_rss())),
                Err(e) => write!(w, "ERR {e}"),
            };
            sys::exit_now(0)
        }
        Forked::Parent(pid) => {
            drop(w);
            let mut s = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut s);
            let _ = nix::sys::wait::waitpid(pid, None);
            let f: Vec<&str> = s.split(' ').collect();
            match f[..] {
                [a, b, c] => Ok((a.parse()?, b.parse()?, c.parse()?)),
                _ => Err(anyhow!("probe: {s}")),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(nix::unistd::geteuid().is_root(), "run as root");
    // First of all: nothing of this in the host's namespace.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare CLONE_NEWNET")?;
    let mut users = 1000usize;
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--users", Some(v)) => users = v,
            ("--rounds", Some(v)) => rounds = v,
            _ => anyhow::bail!("usage: nft_scale [--users N] [--rounds R]"),
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "nft_scale: {rounds} rounds, load average {}",
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    let mut present = 0;
    for target in [0, users] {
        let t0 = Instant::now();
        while present < target {
            let (name, port, addr, mac) = user(present);
            nft::install(&rules(&name, &port, addr, mac)).map_err(|e| anyhow!("filling: {e}"))?;
            present += 1;
        }
        if target > 0 {
            println!(
                "  ({target} users' tables made with the encoder in {:.2} s)",
                t0.elapsed().as_secs_f64()
            );
        }
        let mut got: Vec<(Way, Samples, Samples, Samples)> =
            [Way::Nothing, Way::Libnftables, Way::Nftnl]
                .into_iter()
                .map(|w| (w, Vec::new(), Vec::new(), Vec::new()))
                .collect();
        for _ in 0..rounds {
            for (way, ins, del, kb) in got.iter_mut() {
                let (i, d, k) = probe(*way)?;
                ins.push(i);
                del.push(d);
                kb.push(k as f64);
            }
        }
        println!("with {present} other users' tables (install + delete of one user, medians):");
        for (way, ins, del, kb) in got.iter_mut() {
            let label = match way {
                Way::Nothing => "a child doing nothing",
                Way::Libnftables => "nft -f (libnftables)",
                Way::Nftnl => "nftnl (raw netlink batch)",
            };
            println!(
                "  {label:<28} install {:9.3} ms  delete {:9.3} ms  peak RSS {:8.0} KiB",
                median(ins),
                median(del),
                median(kb)
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at the end {}",
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
