//! Per-user firewall: the nftables script of a user's tables, applied as
//! one atomic batch through libnftables (`net::nftffi`).
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
//! Installing is one batch that `create`s the tables (failing if one
//! exists) and fills them: the kernel applies all of it or nothing. Only
//! when that fails (a table a crashed keeper left) does a second batch add,
//! delete and re-add them: a delete in the batch costs ~10 ms more (hooks
//! unregistered, an RCU grace period), so the usual login avoids it.

use std::net::Ipv4Addr;

use hutch_policy::EgressRule;

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

/// The batch that removes the user's tables (whether they exist or not).
pub fn delete_script(user: &str) -> String {
    let t = table_name(user);
    format!("table bridge {t}\ndelete table bridge {t}\ntable ip {t}\ndelete table ip {t}\n")
}

/// The batch that installs the user's tables when none exists.
pub fn install_script(r: &Rules<'_>) -> String {
    let t = table_name(r.user);
    let mut s = format!("create table bridge {t}\n");
    if has_ip_table(r) {
        s.push_str(&format!("create table ip {t}\n"));
    }
    s.push_str(&tables(r));
    s
}

/// The batch that replaces whatever tables the user has.
pub fn reinstall_script(r: &Rules<'_>) -> String {
    delete_script(r.user) + &tables(r)
}

fn tables(r: &Rules<'_>) -> String {
    let t = table_name(r.user);
    let mac = super::addr::mac_text(r.mac);
    let mut s = format!("table bridge {t} {{\n  chain guard {{\n");
    s.push_str(&format!("    ether saddr != {mac} drop\n"));
    s.push_str("    ether type != { ip, arp } drop\n");
    s.push_str(&format!(
        "    ether type arp arp saddr ether != {mac} drop\n"
    ));
    s.push_str(&format!(
        "    ether type arp arp saddr ip != {} drop\n",
        r.addr
    ));
    s.push_str(&format!("    ether type ip ip saddr != {} drop\n", r.addr));
    for e in r.egress_deny {
        s.push_str(&format!("    ether type ip{} drop\n", match_of(e)));
    }
    s.push_str("  }\n");
    for hook in ["input", "forward"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    iifname \"{}\" jump guard\n  }}\n",
            r.port
        ));
    }
    s.push_str("}\n");
    if has_ip_table(r) {
        s.push_str(&format!("table ip {t} {{\n"));
        if let Some(up) = r.nat_uplink {
            s.push_str(&format!(
                "  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {} oifname \"{up}\" masquerade\n  }}\n",
                r.addr
            ));
        }
        if let Some(n) = r.conntrack {
            // One rule, so one count, for both hooks.
            s.push_str(&format!(
                "  chain ctlimit {{\n    ct state new ct count over {n} drop\n  }}\n"
            ));
        }
        if !r.egress_allow.is_empty() {
            s.push_str("  chain allow {\n    ct state established,related accept\n");
            s.push_str(&format!("    ip daddr {} accept\n", r.gateway));
            for e in r.egress_allow {
                s.push_str(&format!("   {} accept\n", match_of(e)));
            }
            s.push_str("    drop\n  }\n");
        }
        if r.conntrack.is_some() || !r.egress_allow.is_empty() {
            for hook in ["input", "forward"] {
                s.push_str(&format!(
                    "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n"
                ));
                if r.conntrack.is_some() {
                    s.push_str(&format!("    ip saddr {} jump ctlimit\n", r.addr));
                }
                if !r.egress_allow.is_empty() {
                    s.push_str(&format!("    ip saddr {} jump allow\n", r.addr));
                }
                s.push_str("  }\n");
            }
        }
        s.push_str("}\n");
    }
    s
}

fn has_ip_table(r: &Rules<'_>) -> bool {
    r.nat_uplink.is_some() || !r.egress_allow.is_empty() || r.conntrack.is_some()
}

/// The match of one egress entry (` ip daddr NET tcp dport PORT`), with a
/// leading space; empty for an entry with neither part.
fn match_of(e: &EgressRule) -> String {
    let mut m = String::new();
    if let Some(n) = e.net {
        m.push_str(&format!(" ip daddr {n}"));
    }
    if let Some((p, port)) = e.port {
        m.push_str(&format!(" {} dport {port}", p.as_str()));
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
pub fn device_script(addr: Ipv4Addr, gateway: Ipv4Addr, t: &hutch_policy::Traffic) -> String {
    let mut s = String::from("table inet hutch {\n  chain output {\n    type filter hook output priority 0; policy accept;\n");
    s.push_str(&format!("    oifname != \"{CONTAINER_IF}\" accept\n    meta nfproto ipv6 drop\n    ip saddr != {addr} drop\n"));
    for e in &t.egress_deny {
        s.push_str(&format!("   {} drop\n", match_of(e)));
    }
    if !t.egress_allow.is_empty() {
        s.push_str(&format!(
            "    ct state established,related accept\n    ip daddr {gateway} accept\n"
        ));
        for e in &t.egress_allow {
            s.push_str(&format!("   {} accept\n", match_of(e)));
        }
        s.push_str("    drop\n");
    }
    s.push_str("  }\n  chain input {\n    type filter hook input priority 0; policy accept;\n");
    s.push_str(&format!(
        "    iifname != \"{CONTAINER_IF}\" accept\n    meta nfproto ipv6 drop\n"
    ));
    if let Some(rate) = t.rate_in {
        // nft's byte limit holds one second at the rate (the kernel's bucket
        // is rate + burst): enough for TCP, so no burst on top.
        s.push_str(&format!("    limit rate over {rate} bytes/second drop\n"));
    }
    s.push_str("  }\n}\n");
    s
}

/// Applies a script in one batch (libnftables loaded for it, then
/// unloaded: `nftffi`).
pub fn apply(script: &str) -> Result<(), String> {
    super::nftffi::run(script)
}

/// Installs the user's tables, replacing stale ones if there are any
/// (libnftables loaded once for both tries).
pub fn install(r: &Rules<'_>) -> Result<(), String> {
    let nft = super::nftffi::Nft::load()?;
    nft.run(&install_script(r))
        .or_else(|_| nft.run(&reinstall_script(r)))
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

    /// The script holds anti-spoof rules for the port's MAC and address, the deny list, and NAT only when asked.
    #[test]
    fn script() {
        let deny: Vec<EgressRule> = ["169.254.169.254/32", "tcp/25", "10.0.0.0/8 udp/53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut r = Rules {
            user: "al ice",
            port: "hv0a4d0002",
            addr: Ipv4Addr::new(10, 77, 0, 2),
            mac: [2, 0x68, 10, 77, 0, 2],
            egress_deny: &deny,
            egress_allow: &[],
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            nat_uplink: None,
            conntrack: None,
        };
        let s = install_script(&r);
        assert!(
            s.starts_with("create table bridge hutch-al_20ice\ntable bridge hutch-al_20ice {\n")
        );
        assert!(reinstall_script(&r)
            .starts_with("table bridge hutch-al_20ice\ndelete table bridge hutch-al_20ice\n"));
        for want in [
            "ether saddr != 02:68:0a:4d:00:02 drop",
            "ip saddr != 10.77.0.2 drop",
            "ip daddr 169.254.169.254/32 drop",
            "ether type ip tcp dport 25 drop",
            "ip daddr 10.0.0.0/8 udp dport 53 drop",
            "iifname \"hv0a4d0002\" jump guard",
        ] {
            assert!(s.contains(want), "{want} missing in\n{s}");
        }
        assert!(!s.contains("masquerade"));
        r.nat_uplink = Some("up0");
        let s = install_script(&r);
        assert!(s.contains("create table ip hutch-al_20ice\n"));
        assert!(s.contains("ip saddr 10.77.0.2 oifname \"up0\" masquerade"));
        assert!(!s.contains("chain allow"));
        assert!(!s.contains("ct count"));
    }

    /// A conntrack bound: an ip table (even without NAT) with one counting
    /// rule that both hooks jump to for the user's address.
    #[test]
    fn conntrack_script() {
        let r = Rules {
            user: "carol",
            port: "hv0a4d0004",
            addr: Ipv4Addr::new(10, 77, 0, 4),
            mac: [2, 0x68, 10, 77, 0, 4],
            egress_deny: &[],
            egress_allow: &[],
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            nat_uplink: None,
            conntrack: Some(300),
        };
        let s = install_script(&r);
        assert!(s.contains("create table ip hutch-carol\n"), "{s}");
        assert_eq!(s.matches("ct count over 300 drop").count(), 1, "{s}");
        assert!(
            s.contains("  chain ctlimit {\n    ct state new ct count over 300 drop\n  }"),
            "{s}"
        );
        for hook in ["input", "forward"] {
            assert!(
                s.contains(&format!("type filter hook {hook} priority 0; policy accept;\n    ip saddr 10.77.0.4 jump ctlimit\n  }}")),
                "{hook}: {s}"
            );
        }
    }

    /// Inside a device-mode container: on eth0 only, IPv6 and foreign
    /// sources dropped, deny before allow, the policer only with rate_in.
    #[test]
    fn device_table() {
        let rules =
            |l: &[&str]| -> Vec<EgressRule> { l.iter().map(|s| s.parse().unwrap()).collect() };
        let mut t = hutch_policy::Traffic {
            egress_deny: rules(&["169.254.169.254/32", "tcp/25"]),
            ..Default::default()
        };
        let (addr, gw) = (Ipv4Addr::new(10, 77, 0, 9), Ipv4Addr::new(10, 77, 0, 1));
        let s = device_script(addr, gw, &t);
        for want in [
            "table inet hutch {",
            "type filter hook output priority 0; policy accept;\n    oifname != \"eth0\" accept\n    meta nfproto ipv6 drop\n    ip saddr != 10.77.0.9 drop\n",
            "    ip daddr 169.254.169.254/32 drop\n",
            "    tcp dport 25 drop\n",
            "iifname != \"eth0\" accept\n    meta nfproto ipv6 drop\n  }",
        ] {
            assert!(s.contains(want), "{want:?} missing in\n{s}");
        }
        assert!(!s.contains("limit") && !s.contains("ct state"), "{s}");
        t.egress_allow = rules(&["udp/53"]);
        t.rate_in = Some(1_250_000);
        let s = device_script(addr, gw, &t);
        let (deny, allow) = (
            s.find("tcp dport 25 drop").unwrap(),
            s.find("udp dport 53 accept").unwrap(),
        );
        assert!(deny < allow, "deny must come first:\n{s}");
        for want in [
            "ct state established,related accept\n    ip daddr 10.77.0.1 accept\n",
            "    drop\n  }\n  chain input",
            "limit rate over 1250000 bytes/second drop",
        ] {
            assert!(s.contains(want), "{want:?} missing in\n{s}");
        }
    }

    /// An allow list: an ip table (even without NAT) whose chain accepts replies,
    /// the gateway and the entries from the user's address, and drops the rest.
    #[test]
    fn allow_script() {
        let allow: Vec<EgressRule> = ["192.0.2.2/32 tcp/8080", "udp/53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let r = Rules {
            user: "bob",
            port: "hv0a4d0003",
            addr: Ipv4Addr::new(10, 77, 0, 3),
            mac: [2, 0x68, 10, 77, 0, 3],
            egress_deny: &[],
            egress_allow: &allow,
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            nat_uplink: None,
            conntrack: None,
        };
        let s = install_script(&r);
        assert!(s.contains("create table ip hutch-bob\n"), "{s}");
        for want in [
            "ct state established,related accept",
            "ip daddr 10.77.0.1 accept",
            "ip daddr 192.0.2.2/32 tcp dport 8080 accept",
            "    udp dport 53 accept",
            "    drop\n",
            "type filter hook forward priority 0",
            "type filter hook input priority 0",
            "ip saddr 10.77.0.3 jump allow",
        ] {
            assert!(s.contains(want), "{want} missing in\n{s}");
        }
        assert!(!s.contains("masquerade"));
    }
}
