//! Per-user firewall: the nftables script of a user's tables, applied as
//! one atomic batch through libnftables ([`super::nftffi`]).
//!
//! - `table bridge hutch-<user>`: frames arriving from the user's bridge
//!   port (input to the host, forwarded to other ports) must carry the
//!   port's own MAC and, for IPv4 and ARP, its own address (anti-spoof);
//!   anything but IPv4 and ARP is dropped; then the egress deny list.
//! - `table ip hutch-<user>` (only with NAT): masquerade the user's address
//!   out of the uplink.
//!
//! Installing is one batch that `create`s the tables (failing if one
//! exists) and fills them: the kernel applies all of it or nothing. Only
//! when that fails (a table a crashed keeper left) does a second batch add,
//! delete and re-add them: a delete in the batch costs ~10 ms more (hooks
//! unregistered, an RCU grace period), so the usual login avoids it.

use std::net::Ipv4Addr;

use hutch_policy::EgressRule;

/// What one user's rules are about.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub user: &'a str,
    /// The host end of the user's veth.
    pub port: &'a str,
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
    pub egress_deny: &'a [EgressRule],
    /// Masquerade out of this interface.
    pub nat_uplink: Option<&'a str>,
}

/// `hutch-<user>`, with characters nft identifiers cannot hold as `_`.
pub fn table_name(user: &str) -> String {
    let clean: String = user.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    format!("hutch-{clean}")
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
    if r.nat_uplink.is_some() {
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
    s.push_str(&format!("    ether type arp arp saddr ether != {mac} drop\n"));
    s.push_str(&format!("    ether type arp arp saddr ip != {} drop\n", r.addr));
    s.push_str(&format!("    ether type ip ip saddr != {} drop\n", r.addr));
    for e in r.egress_deny {
        let mut m = String::from("    ether type ip");
        if let Some(n) = e.net {
            m.push_str(&format!(" ip daddr {n}"));
        }
        if let Some((p, port)) = e.port {
            m.push_str(&format!(" {} dport {port}", p.as_str()));
        }
        s.push_str(&format!("{m} drop\n"));
    }
    s.push_str("  }\n");
    for hook in ["input", "forward"] {
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    iifname \"{}\" jump guard\n  }}\n",
            r.port
        ));
    }
    s.push_str("}\n");
    if let Some(up) = r.nat_uplink {
        s.push_str(&format!(
            "table ip {t} {{\n  chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {} oifname \"{up}\" masquerade\n  }}\n}}\n",
            r.addr
        ));
    }
    s
}

/// Applies a script in one batch.
pub fn apply(script: &str) -> Result<(), String> {
    super::nftffi::run(script)
}

/// Installs the user's tables, replacing stale ones if there are any.
pub fn install(r: &Rules<'_>) -> Result<(), String> {
    apply(&install_script(r)).or_else(|_| apply(&reinstall_script(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script holds anti-spoof rules for the port's MAC and address, the deny list, and NAT only when asked.
    #[test]
    fn script() {
        let deny: Vec<EgressRule> = ["169.254.169.254/32", "tcp/25", "10.0.0.0/8 udp/53"].iter().map(|s| s.parse().unwrap()).collect();
        let mut r = Rules {
            user: "al ice",
            port: "hv0a4d0002",
            addr: Ipv4Addr::new(10, 77, 0, 2),
            mac: [2, 0x68, 10, 77, 0, 2],
            egress_deny: &deny,
            nat_uplink: None,
        };
        let s = install_script(&r);
        assert!(s.starts_with("create table bridge hutch-al_ice\ntable bridge hutch-al_ice {\n"));
        assert!(reinstall_script(&r).starts_with("table bridge hutch-al_ice\ndelete table bridge hutch-al_ice\n"));
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
        assert!(s.contains("create table ip hutch-al_ice\n"));
        assert!(s.contains("ip saddr 10.77.0.2 oifname \"up0\" masquerade"));
    }
}
