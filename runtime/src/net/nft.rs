//! Per-user firewall: a user's host tables, and the table inside a
//! device-mode container, as nf_tables messages sent as one atomic batch
//! of raw netlink (`net::nftnl`; no libnftables, which fetched the
//! namespace's whole ruleset, every user's tables, before each batch).
//!
//! - `table bridge hutch-<user>`: frames arriving from the user's bridge
//!   port (input to the host, forwarded to other ports) must carry the
//!   port's own MAC and, for IPv4 and ARP, its own address (anti-spoof);
//!   anything but IPv4 and ARP is dropped; then the egress deny list.
//! - `table ip hutch-<user>` (with NAT, an egress allow list or a
//!   conntrack bound): masquerade the user's address out of the uplink; a
//!   new connection from the user's address beyond `conntrack` live ones
//!   (`ct count`, one count for what the host receives and routes) is
//!   dropped, so one container cannot fill the host-wide conntrack table
//!   (nf_conntrack_max) that every connection of the host needs; with `egress_allow`,
//!   IP packets from the user's address that the host receives or routes
//!   are dropped unless they are replies (conntrack established/related),
//!   go to the gateway, or match an allowed entry. The bridge table's deny
//!   list sees every frame first, so a deny always wins.
//!
//! The rules are described in [`tables`] in nft's syntax; the bytecode is
//! what nft 1.0.6 generates for it, so `nft list table bridge hutch-<user>`
//! shows them. Installing is one batch that `create`s the tables (failing if one
//! exists) and fills them: the kernel applies all of it or nothing. Only
//! when that fails (a table a crashed keeper left) does a second batch add,
//! delete and re-add them: a delete in the batch costs ~10 ms more (hooks
//! unregistered, an RCU grace period), so the usual login avoids it.

use std::net::Ipv4Addr;

use hutch_policy::EgressRule;

use super::nftnl::{
    self, matches, Base, CmpOp, Expr, Family, Hook, MetaKey, Op, Verdict, HOOK_FORWARD, HOOK_INPUT,
    HOOK_OUTPUT, HOOK_POSTROUTING,
};
use super::CONTAINER_IF;

/// What one user's rules are about.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub user: &'a str,
    /// The host end of the user's veth.
    pub port: &'a str,
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
    pub egress_deny: &'a [EgressRule],
    /// When non-empty, the only destinations besides the gateway.
    pub egress_allow: &'a [EgressRule],
    /// The bridge's address (always reachable).
    pub gateway: Ipv4Addr,
    /// Masquerade out of this interface.
    pub nat_uplink: Option<&'a str>,
    /// At most this many live connections from the user's address.
    pub conntrack: Option<u64>,
}

/// `hutch-<user>`, injective: letters, digits, `-` and `.` stay, every
/// other byte (`_` itself included) becomes `_` and two hex digits, so no
/// two user names share a table (`x$` is `hutch-x_24`, `x_` is
/// `hutch-x_5f`): a second user's install would otherwise replace the
/// first one's rules.
pub fn table_name(user: &str) -> String {
    let mut out = String::from("hutch-");
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The batch that removes the user's tables (whether they exist or not):
/// each is added (a no-op if it exists) and then deleted.
pub fn delete_ops(user: &str) -> Vec<Op> {
    let t = table_name(user);
    let mut ops = Vec::new();
    for family in [Family::Bridge, Family::Ip] {
        ops.push(Op::NewTable {
            family,
            name: t.clone(),
            excl: false,
        });
        ops.push(Op::DelTable {
            family,
            name: t.clone(),
        });
    }
    ops
}

/// The batch that installs the user's tables when none exists (`create`:
/// refused if one does).
pub fn install_ops(r: &Rules<'_>) -> Vec<Op> {
    tables(r, true)
}

/// The batch that replaces whatever tables the user has.
pub fn reinstall_ops(r: &Rules<'_>) -> Vec<Op> {
    let mut ops = delete_ops(r.user);
    ops.extend(tables(r, false));
    ops
}

/// A rule of `chain`: the matches, then the verdict.
fn rule(family: Family, t: &str, chain: &str, m: Vec<Expr>, v: Verdict) -> Op {
    let mut exprs = m;
    exprs.push(matches::verdict(v));
    Op::NewRule {
        family,
        table: t.to_string(),
        chain: chain.to_string(),
        exprs,
    }
}

fn base_chain(
    family: Family,
    t: &str,
    name: &str,
    num: u32,
    priority: i32,
    kind: &'static str,
) -> Op {
    Op::NewChain {
        family,
        table: t.to_string(),
        name: name.to_string(),
        hook: Some(Hook {
            num,
            priority,
            kind,
        }),
    }
}

fn chain(family: Family, t: &str, name: &str) -> Op {
    Op::NewChain {
        family,
        table: t.to_string(),
        name: name.to_string(),
        hook: None,
    }
}

/// `ether type` (`0x0800` IPv4, `0x0806` ARP) `OP`.
fn ether_type(op: CmpOp, ty: u16) -> Vec<Expr> {
    vec![
        matches::load(Base::Link, 12, 2),
        matches::cmp(op, &ty.to_be_bytes()),
    ]
}

const ETH_IP: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;

/// The user's tables and everything in them, as nft 1.0.6 encodes:
///
/// ```text
/// table bridge hutch-<u> {
///   chain guard {
///     ether saddr != MAC drop
///     ether type != ip ether type != arp drop
///     ether type arp arp saddr ether != MAC drop
///     ether type arp arp saddr ip != ADDR drop
///     ether type ip ip saddr != ADDR drop
///     ether type ip [ip daddr NET] [tcp|udp dport PORT] drop   (each deny entry)
///   }
///   chain input|forward { type filter hook input|forward priority 0; policy accept;
///     iifname "PORT" jump guard }
/// }
/// table ip hutch-<u> {            (with NAT, an allow list or a conntrack bound)
///   chain post { type nat hook postrouting priority srcnat; policy accept;
///     ip saddr ADDR oifname "UPLINK" masquerade }
///   chain ctlimit { ct state new ct count over N drop }
///   chain allow { ct state established,related accept
///     ip daddr GATEWAY accept
///     [ip daddr NET] [tcp|udp dport PORT] accept   (each allow entry)
///     drop }
///   chain input|forward { type filter hook input|forward priority 0; policy accept;
///     ip saddr ADDR jump ctlimit
///     ip saddr ADDR jump allow }
/// }
/// ```
///
/// (The second guard rule was `ether type != { ip, arp } drop`, an
/// anonymous set; two comparisons of the same field drop the same frames
/// without one.)
fn tables(r: &Rules<'_>, excl: bool) -> Vec<Op> {
    use matches::*;
    let t = table_name(r.user);
    let br = Family::Bridge;
    let mut ops = vec![Op::NewTable {
        family: br,
        name: t.clone(),
        excl,
    }];
    let g = "guard";
    ops.push(chain(br, &t, g));
    let mac_src = |op| vec![load(Base::Link, 6, 6), cmp(op, &r.mac)];
    ops.push(rule(br, &t, g, mac_src(CmpOp::Neq), Verdict::Drop));
    let mut m = ether_type(CmpOp::Neq, ETH_IP);
    m.push(cmp(CmpOp::Neq, &ETH_ARP.to_be_bytes()));
    ops.push(rule(br, &t, g, m, Verdict::Drop));
    let mut m = ether_type(CmpOp::Eq, ETH_ARP);
    m.extend([load(Base::Network, 8, 6), cmp(CmpOp::Neq, &r.mac)]);
    ops.push(rule(br, &t, g, m, Verdict::Drop));
    let mut m = ether_type(CmpOp::Eq, ETH_ARP);
    m.extend([
        load(Base::Network, 14, 4),
        cmp(CmpOp::Neq, &r.addr.octets()),
    ]);
    ops.push(rule(br, &t, g, m, Verdict::Drop));
    let mut m = ether_type(CmpOp::Eq, ETH_IP);
    m.extend(ipv4_addr(12, r.addr, CmpOp::Neq));
    ops.push(rule(br, &t, g, m, Verdict::Drop));
    for e in r.egress_deny {
        let mut m = ether_type(CmpOp::Eq, ETH_IP);
        m.extend(match_of(e));
        ops.push(rule(br, &t, g, m, Verdict::Drop));
    }
    for (name, num) in [("input", HOOK_INPUT), ("forward", HOOK_FORWARD)] {
        ops.push(base_chain(br, &t, name, num, 0, "filter"));
        let m = ifname(MetaKey::IifName, CmpOp::Eq, r.port);
        ops.push(rule(br, &t, name, m, Verdict::Jump(g.into())));
    }
    if !has_ip_table(r) {
        return ops;
    }
    let ip = Family::Ip;
    ops.push(Op::NewTable {
        family: ip,
        name: t.clone(),
        excl,
    });
    if let Some(up) = r.nat_uplink {
        ops.push(base_chain(ip, &t, "post", HOOK_POSTROUTING, 100, "nat"));
        let mut m = ipv4_addr(12, r.addr, CmpOp::Eq);
        m.extend(ifname(MetaKey::OifName, CmpOp::Eq, up));
        m.push(Expr::Masq);
        // masq is the rule's last statement: no verdict of its own.
        ops.push(Op::NewRule {
            family: ip,
            table: t.clone(),
            chain: "post".into(),
            exprs: m,
        });
    }
    if let Some(n) = r.conntrack {
        // One rule, so one count, for both hooks. A bound past u32 (the
        // kernel's counter) is no bound.
        ops.push(chain(ip, &t, "ctlimit"));
        let mut m = ct_state(CT_NEW);
        m.push(Expr::Connlimit {
            count: u32::try_from(n).unwrap_or(u32::MAX),
            over: true,
        });
        ops.push(rule(ip, &t, "ctlimit", m, Verdict::Drop));
    }
    if !r.egress_allow.is_empty() {
        let a = "allow";
        ops.push(chain(ip, &t, a));
        let m = ct_state(CT_ESTABLISHED | CT_RELATED);
        ops.push(rule(ip, &t, a, m, Verdict::Accept));
        let m = ipv4_addr(16, r.gateway, CmpOp::Eq);
        ops.push(rule(ip, &t, a, m, Verdict::Accept));
        for e in r.egress_allow {
            ops.push(rule(ip, &t, a, match_of(e), Verdict::Accept));
        }
        ops.push(rule(ip, &t, a, Vec::new(), Verdict::Drop));
    }
    if r.conntrack.is_some() || !r.egress_allow.is_empty() {
        for (name, num) in [("input", HOOK_INPUT), ("forward", HOOK_FORWARD)] {
            ops.push(base_chain(ip, &t, name, num, 0, "filter"));
            if r.conntrack.is_some() {
                let m = ipv4_addr(12, r.addr, CmpOp::Eq);
                ops.push(rule(ip, &t, name, m, Verdict::Jump("ctlimit".into())));
            }
            if !r.egress_allow.is_empty() {
                let m = ipv4_addr(12, r.addr, CmpOp::Eq);
                ops.push(rule(ip, &t, name, m, Verdict::Jump("allow".into())));
            }
        }
    }
    ops
}

fn has_ip_table(r: &Rules<'_>) -> bool {
    r.nat_uplink.is_some() || !r.egress_allow.is_empty() || r.conntrack.is_some()
}

/// The match of one egress entry (`ip daddr NET`, then `tcp|udp dport
/// PORT` with its `meta l4proto` dependency); empty for neither.
fn match_of(e: &EgressRule) -> Vec<Expr> {
    let mut m = Vec::new();
    if let Some(n) = e.net {
        m.extend(matches::ipv4_net(16, n.addr, n.prefix, CmpOp::Eq));
    }
    if let Some((p, port)) = e.port {
        let l4 = match p {
            hutch_policy::Proto::Tcp => 6,
            hutch_policy::Proto::Udp => 17,
        };
        m.extend(matches::dport(l4, port));
    }
    m
}

/// The table hutch installs inside the network namespace of a `macvlan`,
/// `vlan` or `phys` container, whose traffic never crosses a host port:
/// `table inet hutch`, on `eth0` only. Output: IPv6 dropped (as the veth
/// bridge table does), a source other than the leased address dropped, the
/// deny list, then the allow list (replies, the gateway, the entries; the
/// rest dropped). Input: IPv6 dropped and, with `rate_in`, a policer (what
/// arrives above the rate is dropped; TCP backs off to it). The user holds
/// no capability in that namespace, so cannot change it; it goes with the
/// namespace.
///
/// The batch, as nft 1.0.6 encodes `table inet hutch { chain output { type
/// filter hook output priority 0; policy accept; oifname != "eth0" accept;
/// meta nfproto ipv6 drop; ip saddr != ADDR drop; DENY… drop; [ct state
/// established,related accept; ip daddr GATEWAY accept; ALLOW… accept;
/// drop] } chain input { type filter hook input priority 0; policy
/// accept; iifname != "eth0" accept; meta nfproto ipv6 drop; [limit rate
/// over RATE bytes/second drop] } }` (in the inet family an `ip` match
/// carries nft's `meta nfproto ipv4` dependency).
pub fn device_ops(addr: Ipv4Addr, gateway: Ipv4Addr, t: &hutch_policy::Traffic) -> Vec<Op> {
    use matches::*;
    let (f, tb) = (Family::Inet, "hutch");
    let v4 = || vec![Expr::Meta(MetaKey::NfProto), cmp(CmpOp::Eq, &[2])];
    let v6 = vec![Expr::Meta(MetaKey::NfProto), cmp(CmpOp::Eq, &[10])];
    let mut ops = vec![Op::NewTable {
        family: f,
        name: tb.into(),
        excl: false,
    }];
    let o = "output";
    ops.push(base_chain(f, tb, o, HOOK_OUTPUT, 0, "filter"));
    let m = ifname(MetaKey::OifName, CmpOp::Neq, CONTAINER_IF);
    ops.push(rule(f, tb, o, m, Verdict::Accept));
    ops.push(rule(f, tb, o, v6.clone(), Verdict::Drop));
    let mut m = v4();
    m.extend(ipv4_addr(12, addr, CmpOp::Neq));
    ops.push(rule(f, tb, o, m, Verdict::Drop));
    let entry = |e: &EgressRule| {
        let mut m = if e.net.is_some() { v4() } else { Vec::new() };
        m.extend(match_of(e));
        m
    };
    for e in &t.egress_deny {
        ops.push(rule(f, tb, o, entry(e), Verdict::Drop));
    }
    if !t.egress_allow.is_empty() {
        let m = ct_state(CT_ESTABLISHED | CT_RELATED);
        ops.push(rule(f, tb, o, m, Verdict::Accept));
        let mut m = v4();
        m.extend(ipv4_addr(16, gateway, CmpOp::Eq));
        ops.push(rule(f, tb, o, m, Verdict::Accept));
        for e in &t.egress_allow {
            ops.push(rule(f, tb, o, entry(e), Verdict::Accept));
        }
        ops.push(rule(f, tb, o, Vec::new(), Verdict::Drop));
    }
    let i = "input";
    ops.push(base_chain(f, tb, i, HOOK_INPUT, 0, "filter"));
    let m = ifname(MetaKey::IifName, CmpOp::Neq, CONTAINER_IF);
    ops.push(rule(f, tb, i, m, Verdict::Accept));
    ops.push(rule(f, tb, i, v6, Verdict::Drop));
    if let Some(rate) = t.rate_in {
        // nft's byte limit holds one second at the rate (the kernel's bucket
        // is rate + burst): enough for TCP, so no burst on top.
        let m = vec![Expr::LimitBytes {
            rate,
            burst: 0,
            over: true,
        }];
        ops.push(rule(f, tb, i, m, Verdict::Drop));
    }
    ops
}

/// Installs [`device_ops`] in the caller's (thread's) network namespace.
pub fn install_device(
    addr: Ipv4Addr,
    gateway: Ipv4Addr,
    t: &hutch_policy::Traffic,
) -> Result<(), String> {
    nftnl::apply(&device_ops(addr, gateway, t)).map_err(|e| chain_text(&e))
}

/// Installs the user's tables in one batch of raw nf_tables messages
/// (`nftnl`), replacing stale ones (a crashed keeper's) if `create` is
/// refused.
pub fn install(r: &Rules<'_>) -> Result<(), String> {
    match nftnl::apply(&install_ops(r)) {
        Ok(()) => Ok(()),
        Err(first) => nftnl::apply(&reinstall_ops(r)).map_err(|e| {
            format!(
                "{} (after `create` failed: {})",
                chain_text(&e),
                chain_text(&first)
            )
        }),
    }
}

/// Removes the user's tables; absent ones are no error.
pub fn delete(user: &str) -> Result<(), String> {
    nftnl::apply(&delete_ops(user)).map_err(|e| chain_text(&e))
}

/// An error and its causes, `: `-separated.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s.push_str(&format!(": {x}"));
        c = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table names are injective over user names, and valid nft identifiers.
    #[test]
    fn table_names_are_injective() {
        assert_eq!(table_name("alice"), "hutch-alice");
        assert_eq!(table_name("x$"), "hutch-x_24");
        assert_eq!(table_name("x_"), "hutch-x_5f");
        assert_eq!(table_name("a.b-c"), "hutch-a.b-c");
        let names = ["x$", "x_", "x_24", "x", "x__", "x_5f", "X$", "a.b", "a_2eb"];
        let mut seen = std::collections::BTreeSet::new();
        for n in names {
            assert!(seen.insert(table_name(n)), "{n} collides");
            assert!(table_name(n)
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
        }
    }

    /// The rules of `ops` in nft's `--debug=netlink` form: a header line
    /// per rule (`family table chain`), its expressions, a blank line.
    fn debug(ops: &[Op]) -> String {
        let mut s = String::new();
        for op in ops {
            if let Op::NewRule {
                family,
                table,
                chain,
                exprs,
            } = op
            {
                let f = match family {
                    Family::Bridge => "bridge",
                    Family::Ip => "ip",
                    Family::Inet => "inet",
                };
                s.push_str(&format!("{f} {table} {chain}\n"));
                for e in exprs {
                    s.push_str(&format!("  {e}\n"));
                }
                s.push('\n');
            }
        }
        s
    }

    /// The messages' names in order, `Display` of each op without rules.
    fn objects(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .filter(|o| !matches!(o, Op::NewRule { .. }))
            .map(|o| o.to_string())
            .collect()
    }

    fn rules<'a>(deny: &'a [EgressRule], allow: &'a [EgressRule]) -> Rules<'a> {
        Rules {
            user: "t",
            port: "hv0a4d0002",
            addr: Ipv4Addr::new(10, 77, 0, 2),
            mac: [2, 0x68, 10, 77, 0, 2],
            egress_deny: deny,
            egress_allow: allow,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            nat_uplink: Some("up0"),
            conntrack: Some(300),
        }
    }

    fn parse(l: &[&str]) -> Vec<EgressRule> {
        l.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// The bytecode is what `nft --debug=netlink -f` prints for today's
    /// script (nft 1.0.6; the `ether type != { ip, arp }` set as two
    /// comparisons), dependency matches included.
    #[test]
    fn bytecode_matches_nft() {
        let deny = parse(&["169.254.169.254/32", "tcp/25", "10.0.0.0/8 udp/53"]);
        let allow = parse(&["192.0.2.2/32 tcp/8080", "udp/53"]);
        let got = debug(&install_ops(&rules(&deny, &allow)));
        let want = include_str!("nft_debug.txt");
        assert_eq!(got, want, "got:\n{got}");
    }

    /// `create` for the tables in the usual install; the fallback and the
    /// delete add (no error if present) and delete both tables first; the
    /// chains in order, base chains with their hooks.
    #[test]
    fn batches() {
        let r = rules(&[], &[]);
        assert_eq!(
            objects(&install_ops(&r)),
            [
                "create table bridge hutch-t",
                "add chain bridge hutch-t guard",
                "add chain bridge hutch-t input",
                "add chain bridge hutch-t forward",
                "create table ip hutch-t",
                "add chain ip hutch-t post",
                "add chain ip hutch-t ctlimit",
                "add chain ip hutch-t input",
                "add chain ip hutch-t forward",
            ]
        );
        let del = [
            "add table bridge hutch-t",
            "delete table bridge hutch-t",
            "add table ip hutch-t",
            "delete table ip hutch-t",
        ];
        assert_eq!(objects(&delete_ops("t")), del);
        let re = objects(&reinstall_ops(&r));
        assert_eq!(re[..4], del);
        assert_eq!(re[4], "add table bridge hutch-t");
        let hooks: Vec<_> = install_ops(&r)
            .into_iter()
            .filter_map(|o| match o {
                Op::NewChain {
                    family,
                    name,
                    hook: Some(h),
                    ..
                } => Some((family, name, h.num, h.priority, h.kind)),
                _ => None,
            })
            .collect();
        assert_eq!(
            hooks,
            [
                (Family::Bridge, "input".to_string(), 1, 0, "filter"),
                (Family::Bridge, "forward".to_string(), 2, 0, "filter"),
                (Family::Ip, "post".to_string(), 4, 100, "nat"),
                (Family::Ip, "input".to_string(), 1, 0, "filter"),
                (Family::Ip, "forward".to_string(), 2, 0, "filter"),
            ]
        );
    }

    /// No NAT, allow list or bound: only the bridge table (and the user
    /// name escaped in it).
    #[test]
    fn bridge_only() {
        let mut r = rules(&[], &[]);
        r.user = "al ice";
        r.nat_uplink = None;
        r.conntrack = None;
        let ops = install_ops(&r);
        assert_eq!(
            objects(&ops).last().unwrap(),
            "add chain bridge hutch-al_20ice forward"
        );
        let d = debug(&ops);
        assert!(!d.contains("masq") && !d.contains("connlimit"), "{d}");
    }

    /// A conntrack bound without NAT or allow list: one counting rule
    /// that both hooks jump to for the user's address.
    #[test]
    fn conntrack_only() {
        let mut r = rules(&[], &[]);
        r.nat_uplink = None;
        r.conntrack = Some(5_000_000_000);
        let ops = install_ops(&r);
        let d = debug(&ops);
        assert_eq!(d.matches("connlimit").count(), 1, "{d}");
        assert!(d.contains("[ connlimit count 4294967295 flags 1 ]"), "{d}");
        assert_eq!(d.matches("jump -> ctlimit").count(), 2, "{d}");
        assert!(!d.contains("masq") && !d.contains("allow"), "{d}");
    }

    /// Inside a device-mode container: the bytecode is what nft prints
    /// for the script hutch applied there before (eth0 only, IPv6 and
    /// foreign sources dropped, deny before allow, the policer with
    /// rate_in); without lists or rate, no ct state, no limit.
    #[test]
    fn device_table() {
        let mut t = hutch_policy::Traffic {
            egress_deny: parse(&["169.254.169.254/32", "tcp/25", "10.0.0.0/8 udp/53"]),
            egress_allow: parse(&["udp/53"]),
            rate_in: Some(1_250_000),
            ..Default::default()
        };
        let (addr, gw) = (Ipv4Addr::new(10, 77, 0, 9), Ipv4Addr::new(10, 77, 0, 1));
        let ops = device_ops(addr, gw, &t);
        let got = debug(&ops);
        assert_eq!(got, include_str!("nft_device_debug.txt"), "got:\n{got}");
        assert_eq!(
            objects(&ops),
            [
                "add table inet hutch",
                "add chain inet hutch output",
                "add chain inet hutch input"
            ]
        );
        t = hutch_policy::Traffic::default();
        let d = debug(&device_ops(addr, gw, &t));
        assert!(!d.contains("limit") && !d.contains("ct load"), "{d}");
    }
}
