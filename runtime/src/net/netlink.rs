//! A small synchronous rtnetlink client (netlink-sys + netlink-packet-route):
//! links, bridge ports, addresses and routes in the network namespace the
//! socket was opened in. A socket stays in the namespace it was created in,
//! so [`in_netns`] opens one from a short-lived thread that has entered
//! another namespace.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A route netlink socket in one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

/// Runs `f` with a netlink socket opened inside the namespace `netns`, on a
/// short-lived thread (setns affects only the calling thread, which ends
/// with `f`). The caller's own namespace is never changed.
pub fn in_netns<T: Send>(
    netns: BorrowedFd<'_>,
    f: impl FnOnce(&mut Netlink) -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            let mut nl = Netlink::open()?;
            f(&mut nl)
        })
        .join()
        .map_err(|_| io::Error::other("the netns thread panicked"))?
    })
}

impl Netlink {
    /// A socket in the caller's (thread's) network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// Sends one request and collects the answers up to the ACK (or DONE).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        self.seq = self.seq.wrapping_add(1);
        hdr.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            rbuf.clear();
            let n = self.sock.recv(&mut rbuf, 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[off..n]).map_err(
                    |e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink answer: {e}")),
                )?;
                let len = m.header.length as usize;
                if m.header.sequence_number != self.seq {
                    off += len.max(16).next_multiple_of(4);
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(_) => Err(e.to_io()),
                            None => Ok(out),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(x) => out.push(x),
                    _ => {}
                }
                off += len.max(16).next_multiple_of(4);
            }
        }
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn new_link(&mut self, msg: LinkMessage) -> io::Result<()> {
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Creates a bridge.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.new_link(msg)
    }

    /// Creates a veth pair: `host` here, `peer` (with MAC `peer_mac`) made
    /// directly in the namespace `peer_netns`.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_mac: [u8; 6],
        peer_netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.into()));
        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_fd().as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.into()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.new_link(msg)
    }

    /// Deletes a link by index.
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0).map(drop)
    }

    fn set_link(&mut self, index: u32, attrs: Vec<LinkAttribute>, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        msg.attributes = attrs;
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.set_link(index, Vec::new(), true)
    }

    /// Puts a link on a bridge (its controller).
    pub fn set_controller(&mut self, index: u32, bridge: u32) -> io::Result<()> {
        self.set_link(index, vec![LinkAttribute::Controller(bridge)], false)
    }

    /// Sets IFLA_BRPORT_ISOLATED on a bridge port: isolated ports cannot
    /// talk to each other, only to non-isolated ports (the bridge itself).
    pub fn set_port_isolated(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                true,
            )])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), 0).map(drop)
    }

    /// Adds `addr/prefix` to a link (EEXIST is success).
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.into()));
        msg.attributes.push(AddressAttribute::Address(addr.into()));
        let p = u32::from(prefix);
        let bcast = if p >= 31 {
            addr
        } else {
            Ipv4Addr::from(u32::from(addr) | (u32::MAX >> p))
        };
        msg.attributes.push(AddressAttribute::Broadcast(bcast));
        match self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Adds the default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = 254; // RT_TABLE_MAIN
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }
}

/// `tc_ratespec` + `tc_tbf_qopt` (linux/pkt_sched.h), built by hand: the
/// crate has no TBF type.
fn tbf_parms(rate: u64, limit: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    // rate: cell_log, linklayer (TC_LINKLAYER_ETHERNET: no rate table
    // needed), overhead, cell_align, mpu, rate (u32; RATE64 above).
    v.extend_from_slice(&[0u8, 1]);
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&(-1i16).to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    v.extend_from_slice(&[0u8; 12]); // peakrate: none
    v.extend_from_slice(&limit.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes()); // buffer: from TCA_TBF_BURST
    v.extend_from_slice(&0u32.to_ne_bytes()); // mtu (peak only)
    v
}

impl Netlink {
    /// Replaces the root qdisc of a link with a token bucket of `rate`
    /// bytes per second (burst ~50 ms, queue ~100 ms, each at least a few frames).
    pub fn set_tbf(&mut self, index: u32, rate: u64) -> io::Result<()> {
        use netlink_packet_core::{DefaultNla, NLM_F_REPLACE};
        use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
        const TCA_TBF_PARMS: u16 = 1;
        const TCA_TBF_RATE64: u16 = 4;
        const TCA_TBF_BURST: u16 = 6;
        let burst = (rate / 20).clamp(8 * 1514, u64::from(u32::MAX)) as u32;
        let limit = (rate / 10).clamp(16 * 1514, u64::from(u32::MAX)) as u32;
        let mut opts = vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, tbf_parms(rate, limit))),
            TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
        ];
        if rate > u64::from(u32::MAX) {
            opts.push(TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                rate.to_ne_bytes().to_vec(),
            )));
        }
        let mut msg = TcMessage::default();
        msg.header.index = index as i32;
        msg.header.parent = TcHandle::ROOT;
        msg.header.handle = TcHandle { major: 1, minor: 0 };
        msg.attributes = vec![TcAttribute::Kind("tbf".into()), TcAttribute::Options(opts)];
        self.request(
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }
}

/// What to make on a parent interface, directly inside a container.
pub enum ChildKind {
    /// macvlan, private mode.
    Macvlan,
    /// 802.1Q VLAN with this id.
    Vlan(u16),
}

impl Netlink {
    /// Creates a macvlan or VLAN `name` on the link `parent`, made directly
    /// in the namespace `netns`.
    pub fn add_child(
        &mut self,
        parent: u32,
        name: &str,
        kind: ChildKind,
        mac: Option<[u8; 6]>,
        netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        use netlink_packet_route::link::{InfoMacVlan, InfoVlan, MacVlanMode};
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_fd().as_raw_fd()));
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(match kind {
            ChildKind::Macvlan => vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    MacVlanMode::Private,
                )])),
            ],
            ChildKind::Vlan(id) => vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
            ],
        }));
        self.new_link(msg)
    }

    /// Moves the link `index` into the namespace `netns`, named `name` there.
    pub fn move_link(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> io::Result<()> {
        self.set_link(
            index,
            vec![
                LinkAttribute::NetNsFd(netns.as_fd().as_raw_fd()),
                LinkAttribute::IfName(name.into()),
            ],
            false,
        )
    }
}
