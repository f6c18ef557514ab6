//! Per-user networking, done by the keeper in its own network namespace
//! (the host's in production; a test's private one in tests) right after
//! the container's init exists:
//!
//! - `none`/`loopback`: nothing (the init brought `lo` up);
//! - `veth`: lease an address ([`addr::lease`]), make sure the bridge
//!   exists with the gateway address, create the veth pair with the
//!   container end made directly inside the container's namespace as
//!   `eth0`, put the host end on the bridge as an isolated port, install
//!   the user's nftables tables ([`nft`]), shape downloads with a tbf on
//!   the host end, then, from a thread inside the container's namespace,
//!   shape uploads with a tbf on `eth0` and give it its address and the
//!   default route.
//!
//! Teardown ([`NetHandle::release`]) deletes the tables and frees the lease;
//! the veth pair dies with the container's namespace.

pub mod addr;
pub mod netlink;
pub mod nft;
pub mod nftnl;

use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hutch_policy::{DevicePolicy, HostSettings, NetHost, Network, Traffic};

use addr::lease::LeaseFile;
use netlink::Netlink;

/// The container end's name.
pub const CONTAINER_IF: &str = "eth0";

/// A failed step of the network set-up: what, on what, why.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("leasing an address from {}", file.display())]
    Lease {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {object}")]
    Netlink {
        op: &'static str,
        object: String,
        #[source]
        source: std::io::Error,
    },
    #[error("installing the firewall table of {user}: {msg}")]
    Nft { user: String, msg: String },
    #[error("enabling IPv4 forwarding for NAT")]
    Forward(#[source] std::io::Error),
}

fn nl_err(op: &'static str, object: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let object = object.into();
    move |source| NetError::Netlink { op, object, source }
}

/// What a set-up made, to be undone at teardown.
#[derive(Debug)]
pub struct NetHandle {
    pub user: String,
    pub addr: Ipv4Addr,
    /// The host end of the veth.
    pub port: String,
    leases: PathBuf,
    keeper: i32,
    /// How long the set-up took.
    pub took: Duration,
    /// How long each step took (lease, bridge, veth, nft, eth0), for the log.
    pub steps: Vec<(&'static str, Duration)>,
    /// Whether the user has firewall tables (veth).
    tables: bool,
    /// `phys`: the host name of the interface to give back.
    give_back: Option<String>,
    /// `macvlan`, `vlan`: eth0 is deleted at release, before the user's
    /// lock is let go. Left to the kernel's (asynchronous) teardown of the
    /// namespace, it would still hold its MAC or VLAN id on the parent when
    /// the user's next login makes a new one: EADDRINUSE/EEXIST.
    delete_inside: bool,
}

/// Sets up `user`'s network in the container whose network namespace is
/// `netns`. `None` for `loopback` (nothing to undo). On error everything
/// done so far is undone.
pub fn setup(
    host: &HostSettings,
    user: &str,
    network: &Network,
    netns: BorrowedFd<'_>,
) -> Result<Option<NetHandle>, NetError> {
    match network {
        Network::Loopback => Ok(None),
        Network::Veth(v) => setup_veth(&host.net, host.leases_file(), user, v, netns).map(Some),
        Network::Macvlan(d) => {
            setup_device(&host.net, host.leases_file(), user, Mode::Macvlan, d, netns).map(Some)
        }
        Network::Vlan(d) => {
            setup_device(&host.net, host.leases_file(), user, Mode::Vlan, d, netns).map(Some)
        }
        Network::Phys(d) => {
            setup_device(&host.net, host.leases_file(), user, Mode::Phys, d, netns).map(Some)
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Macvlan,
    Vlan,
    Phys,
}

/// Takes the user's lease and makes the handle that undoes it; `port`
/// names the host-side interface from the address.
fn leased(
    net: &NetHost,
    leases: PathBuf,
    user: &str,
    started: Instant,
    tables: bool,
    port: impl FnOnce(Ipv4Addr) -> String,
) -> Result<NetHandle, NetError> {
    let keeper = std::process::id() as i32;
    let addr = LeaseFile::new(&leases)
        .acquire(net.pool, &[net.gateway], user, keeper)
        .map_err(|source| NetError::Lease {
            file: leases.clone(),
            source,
        })?;
    crate::timing::mark("net_lease");
    Ok(NetHandle {
        user: user.into(),
        addr,
        port: port(addr),
        leases,
        keeper,
        took: Duration::ZERO,
        steps: vec![("lease", started.elapsed())],
        tables,
        give_back: None,
        delete_inside: false,
    })
}

/// macvlan, vlan, phys: an interface of the host's inside the container.
/// No host port: the egress lists, anti-spoofing and the download limit are
/// a table inside the container's namespace ([`nft::device_ops`]), the
/// upload limit a tbf on its eth0.
fn setup_device(
    net: &NetHost,
    leases: PathBuf,
    user: &str,
    mode: Mode,
    d: &DevicePolicy,
    netns: BorrowedFd<'_>,
) -> Result<NetHandle, NetError> {
    let started = Instant::now();
    let mut handle = leased(net, leases, user, started, false, |_| d.device.clone())?;
    let addr = handle.addr;
    let r = (|| {
        let mut nl = Netlink::open().map_err(nl_err("opening", "a netlink socket"))?;
        let dev = nl
            .link_index(&d.device)
            .map_err(nl_err("looking up", d.device.clone()))?
            .ok_or_else(|| {
                nl_err("looking up", d.device.clone())(std::io::Error::from_raw_os_error(
                    libc::ENODEV,
                ))
            })?;
        match mode {
            Mode::Macvlan => nl.add_child(
                dev,
                CONTAINER_IF,
                netlink::ChildKind::Macvlan,
                Some(addr::mac_of(addr)),
                netns,
            ),
            Mode::Vlan => nl.add_child(
                dev,
                CONTAINER_IF,
                netlink::ChildKind::Vlan(d.vlan_id),
                None,
                netns,
            ),
            Mode::Phys => nl.move_link(dev, netns, CONTAINER_IF),
        }
        .map_err(nl_err("moving into the container", d.device.clone()))?;
        match mode {
            Mode::Phys => handle.give_back = Some(d.device.clone()),
            Mode::Macvlan | Mode::Vlan => handle.delete_inside = true,
        }
        configure_inside(
            netns,
            addr,
            net.pool.prefix,
            net.gateway,
            d.traffic.rate_out,
        )
        .map_err(nl_err(
            "configuring eth0 in the container of",
            user.to_string(),
        ))?;
        netlink::in_netns(netns, |_| {
            nft::install_device(addr, net.gateway, &d.traffic).map_err(std::io::Error::other)
        })
        .map_err(|e| NetError::Nft {
            user: user.to_string(),
            msg: e.to_string(),
        })
    })();
    match r {
        Ok(()) => {
            handle.took = started.elapsed();
            Ok(handle)
        }
        Err(e) => {
            for msg in handle.release(Some(netns)) {
                crate::sys::syslog(
                    libc::LOG_WARNING,
                    &format!("{user}: undoing the network: {msg}"),
                );
            }
            Err(e)
        }
    }
}

/// From a thread inside the container's namespace: the upload limit, the
/// address, eth0 and lo up, the default route.
fn configure_inside(
    netns: BorrowedFd<'_>,
    addr: Ipv4Addr,
    prefix: u8,
    gw: Ipv4Addr,
    rate_out: Option<u64>,
) -> std::io::Result<()> {
    netlink::in_netns(netns, move |nl| {
        let i = nl
            .link_index(CONTAINER_IF)?
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
        if let Some(rate) = rate_out {
            nl.set_tbf(i, rate)?;
        }
        nl.add_address(i, addr, prefix)?;
        nl.set_up(i)?;
        if let Some(lo) = nl.link_index("lo")? {
            nl.set_up(lo)?;
        }
        nl.add_default_route(gw)
    })
}

fn setup_veth(
    net: &NetHost,
    leases: PathBuf,
    user: &str,
    v: &Traffic,
    netns: BorrowedFd<'_>,
) -> Result<NetHandle, NetError> {
    let started = Instant::now();
    let mut handle = leased(net, leases, user, started, true, addr::host_ifname)?;
    let mut made_port = false;
    let mut steps = Vec::new();
    let r = configure(net, v, &handle, netns, &mut made_port, &mut steps);
    handle.steps.extend(steps);
    match r {
        Ok(()) => {
            handle.took = started.elapsed();
            Ok(handle)
        }
        Err(e) => {
            if made_port {
                if let Ok(mut nl) = Netlink::open() {
                    if let Ok(Some(i)) = nl.link_index(&handle.port) {
                        let _ = nl.del_link(i);
                    }
                }
            }
            handle.release(None);
            Err(e)
        }
    }
}

fn configure(
    net: &NetHost,
    v: &Traffic,
    h: &NetHandle,
    netns: BorrowedFd<'_>,
    made_port: &mut bool,
    steps: &mut Vec<(&'static str, Duration)>,
) -> Result<(), NetError> {
    let mut t = Instant::now();
    let mut step = |name: &'static str| {
        steps.push((name, t.elapsed()));
        crate::timing::mark(&format!("net_{name}"));
        t = Instant::now();
    };
    let mut nl = Netlink::open().map_err(nl_err("opening", "a netlink socket"))?;
    let bridge = ensure_bridge(&mut nl, net)?;
    step("bridge");
    if net.nat_uplink.is_some() {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n").map_err(NetError::Forward)?;
    }
    // The port of this address's previous container, whose namespace the
    // kernel is still destroying (or a crashed keeper's): see host_ifname.
    if let Some(i) = nl
        .link_index(&h.port)
        .map_err(nl_err("looking up", h.port.clone()))?
    {
        nl.del_link(i)
            .map_err(nl_err("deleting the stale", h.port.clone()))?;
    }
    let mac = addr::mac_of(h.addr);
    nl.add_veth(&h.port, CONTAINER_IF, mac, netns)
        .map_err(nl_err("creating the veth pair", h.port.clone()))?;
    *made_port = true;
    let port = nl
        .link_index(&h.port)
        .map_err(nl_err("looking up", h.port.clone()))?
        .ok_or_else(|| {
            nl_err("looking up", h.port.clone())(std::io::Error::from_raw_os_error(libc::ENODEV))
        })?;
    nl.set_controller(port, bridge)
        .map_err(nl_err("attaching to the bridge", h.port.clone()))?;
    nl.set_port_isolated(port)
        .map_err(nl_err("isolating the bridge port", h.port.clone()))?;
    step("veth");
    let rules = nft::Rules {
        user: &h.user,
        port: &h.port,
        addr: h.addr,
        mac,
        egress_deny: &v.egress_deny,
        egress_allow: &v.egress_allow,
        gateway: net.gateway,
        nat_uplink: net.nat_uplink.as_deref(),
        conntrack: v.conntrack,
    };
    nft::install(&rules).map_err(|msg| NetError::Nft {
        user: h.user.clone(),
        msg,
    })?;
    step("nft");
    if let Some(rate) = v.rate_in {
        nl.set_tbf(port, rate)
            .map_err(nl_err("limiting the download bandwidth on", h.port.clone()))?;
    }
    nl.set_up(port)
        .map_err(nl_err("setting up", h.port.clone()))?;
    configure_inside(netns, h.addr, net.pool.prefix, net.gateway, v.rate_out).map_err(nl_err(
        "configuring eth0 in the container of",
        h.user.clone(),
    ))?;
    step("eth0");
    Ok(())
}

/// The bridge's index; made (with the gateway address, up) if missing.
fn ensure_bridge(nl: &mut Netlink, net: &NetHost) -> Result<u32, NetError> {
    let b = &net.bridge;
    let idx = match nl
        .link_index(b)
        .map_err(nl_err("looking up the bridge", b.clone()))?
    {
        Some(i) => i,
        None => {
            match nl.add_bridge(b) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(nl_err("creating the bridge", b.clone())(e))
                }
                _ => {}
            }
            nl.link_index(b)
                .map_err(nl_err("looking up the bridge", b.clone()))?
                .ok_or_else(|| {
                    nl_err("creating the bridge", b.clone())(std::io::Error::from_raw_os_error(
                        libc::ENODEV,
                    ))
                })?
        }
    };
    nl.add_address(idx, net.gateway, net.pool.prefix)
        .map_err(nl_err("adding the gateway address to", b.clone()))?;
    nl.set_up(idx)
        .map_err(nl_err("setting up the bridge", b.clone()))?;
    Ok(idx)
}

/// The container's /etc/resolv.conf under this policy, if hutch writes one.
pub fn resolv_conf(host: &HostSettings, network: &Network) -> Option<String> {
    match network {
        Network::Veth(_) if !host.net.dns.is_empty() => Some(
            host.net
                .dns
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect(),
        ),
        _ => None,
    }
}

impl NetHandle {
    /// Gives a `phys` interface back to the keeper's namespace (from the
    /// container's `netns`, which the keeper's descriptor keeps alive even
    /// after the init is gone), deletes the user's firewall tables and frees
    /// the lease (kept for stickiness). Errors are returned for the log.
    pub fn release(&self, netns: Option<BorrowedFd<'_>>) -> Vec<String> {
        let mut errs = Vec::new();
        if let (Some(name), Some(netns)) = (&self.give_back, netns) {
            let back = std::fs::File::open("/proc/thread-self/ns/net").and_then(|own| {
                use std::os::fd::AsFd;
                netlink::in_netns(netns, |nl| {
                    let i = nl
                        .link_index(CONTAINER_IF)?
                        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
                    nl.move_link(i, own.as_fd(), name)
                })
            });
            if let Err(e) = back {
                errs.push(format!("giving {name} back to the host: {e}"));
            }
        }
        if let (true, Some(netns)) = (self.delete_inside, netns) {
            let deleted = netlink::in_netns(netns, |nl| match nl.link_index(CONTAINER_IF)? {
                Some(i) => nl.del_link(i),
                None => Ok(()),
            });
            if let Err(e) = deleted {
                errs.push(format!(
                    "deleting {CONTAINER_IF} (on {}) in the container: {e}",
                    self.port
                ));
            }
        }
        if self.tables {
            if let Err(e) = nft::delete(&self.user) {
                errs.push(format!("deleting the firewall table of {}: {e}", self.user));
            }
        }
        if let Err(e) = LeaseFile::new(&self.leases).release(&self.user, self.keeper) {
            errs.push(format!(
                "releasing the lease in {}: {e}",
                self.leases.display()
            ));
        }
        errs
    }
}
