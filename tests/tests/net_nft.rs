//! The per-user host tables through the raw nf_tables encoder
//! (`hutch_runtime::net::nft`, `nftnl`), against the real kernel in a
//! scratch network namespace: `nft list table` (which decodes the bytecode
//! back to rules) shows the intended rules for several policies; a second
//! install falls back to replacing the tables; deleting absent tables is
//! no error; another user's tables are never touched; the table inside a
//! device-mode container's namespace is listed as intended.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

use hutch_policy::EgressRule;
use hutch_runtime::net::{netlink, nft};
use hutch_tests::*;

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = unique("htnft");
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Netns(name)
    }

    /// Runs `f` on a thread inside the namespace (the test's own
    /// namespace never changes).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("open the netns");
        netlink::in_netns(fd.as_fd(), |_| Ok(f())).expect("entering the netns")
    }

    /// `nft ARGS` inside the namespace: (success, stdout + stderr).
    fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .expect("nft");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), s)
    }

    fn table(&self, family: &str, user: &str) -> Option<String> {
        let (ok, s) = self.nft(&["list", "table", family, &nft::table_name(user)]);
        ok.then(|| normalize(&s))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One rule a line, tabs and indentation gone. (nft lists a rule without
/// the dependency matches it would add itself: `ether type ip` before `ip
/// saddr` goes, before `tcp dport` it stays; that is how nft lists
/// today's script too.)
fn normalize(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse(l: &[&str]) -> Vec<EgressRule> {
    l.iter().map(|s| s.parse().unwrap()).collect()
}

fn rules<'a>(user: &'a str, deny: &'a [EgressRule], allow: &'a [EgressRule]) -> nft::Rules<'a> {
    nft::Rules {
        user,
        port: "hv0a4d0002",
        addr: Ipv4Addr::new(10, 77, 0, 2),
        mac: [2, 0x68, 10, 77, 0, 2],
        egress_deny: deny,
        egress_allow: allow,
        gateway: Ipv4Addr::new(10, 77, 0, 1),
        nat_uplink: None,
        conntrack: None,
    }
}

const BRIDGE_HEAD: &str = "chain guard {
ether saddr != 02:68:0a:4d:00:02 drop
ether type != ip ether type != arp drop
arp saddr ether != 02:68:0a:4d:00:02 drop
arp saddr ip != 10.77.0.2 drop
ip saddr != 10.77.0.2 drop";

const BRIDGE_HOOKS: &str = "}
chain input {
type filter hook input priority 0; policy accept;
iifname \"hv0a4d0002\" jump guard
}
chain forward {
type filter hook forward priority 0; policy accept;
iifname \"hv0a4d0002\" jump guard
}
}";

/// The bridge table holds the anti-spoof guard, the deny list in order
/// (networks, ports, both), jumped to from input and forward on the port;
/// without NAT, allow list or bound there is no ip table.
#[test]
fn bridge_table_with_deny_list() {
    if !require_root("bridge_table_with_deny_list") {
        return;
    }
    let ns = Netns::new();
    let user = unique("ht");
    let deny = parse(&[
        "169.254.169.254/32",
        "tcp/25",
        "10.0.0.0/8 udp/53",
        "10.16.0.0/12",
    ]);
    let r = rules(&user, &deny, &[]);
    ns.run(|| nft::install(&r)).expect("install");
    let t = nft::table_name(&user);
    let want = format!(
        "table bridge {t} {{\n{BRIDGE_HEAD}\n\
         ip daddr 169.254.169.254 drop\n\
         ether type ip tcp dport 25 drop\n\
         ip daddr 10.0.0.0/8 udp dport 53 drop\n\
         ip daddr 10.16.0.0/12 drop\n{BRIDGE_HOOKS}"
    );
    assert_eq!(ns.table("bridge", &user).as_deref(), Some(&*want));
    assert_eq!(ns.table("ip", &user), None, "no ip table was asked for");
    ns.run(|| nft::delete(&user)).expect("delete");
    assert_eq!(ns.table("bridge", &user), None);
}

/// NAT, a conntrack bound and an allow list: the ip table masquerades the
/// user's address out of the uplink, counts new connections in one rule
/// both hooks jump to, and accepts replies, the gateway and the entries
/// before dropping the rest.
#[test]
fn ip_table_with_nat_conntrack_and_allow_list() {
    if !require_root("ip_table_with_nat_conntrack_and_allow_list") {
        return;
    }
    let ns = Netns::new();
    let user = unique("ht");
    let allow = parse(&["192.0.2.2/32 tcp/8080", "udp/53", "198.51.100.0/24"]);
    let mut r = rules(&user, &[], &allow);
    r.nat_uplink = Some("up0");
    r.conntrack = Some(300);
    ns.run(|| nft::install(&r)).expect("install");
    let t = nft::table_name(&user);
    let jumps = "ip saddr 10.77.0.2 jump ctlimit\nip saddr 10.77.0.2 jump allow\n}";
    let want = format!(
        "table ip {t} {{\n\
         chain post {{\ntype nat hook postrouting priority srcnat; policy accept;\n\
         ip saddr 10.77.0.2 oifname \"up0\" masquerade\n}}\n\
         chain ctlimit {{\nct state new ct count over 300 drop\n}}\n\
         chain allow {{\nct state established,related accept\n\
         ip daddr 10.77.0.1 accept\n\
         ip daddr 192.0.2.2 tcp dport 8080 accept\n\
         udp dport 53 accept\n\
         ip daddr 198.51.100.0/24 accept\n\
         drop\n}}\n\
         chain input {{\ntype filter hook input priority filter; policy accept;\n{jumps}\n\
         chain forward {{\ntype filter hook forward priority filter; policy accept;\n{jumps}\n}}"
    );
    assert_eq!(ns.table("ip", &user).as_deref(), Some(&*want));
    let bridge = ns.table("bridge", &user).expect("the bridge table");
    assert!(bridge.contains(BRIDGE_HEAD), "{bridge}");
    ns.run(|| nft::delete(&user)).expect("delete");
    assert_eq!(ns.table("ip", &user), None);
    assert_eq!(ns.table("bridge", &user), None);
}

/// A second install (a crashed keeper's tables still there) replaces the
/// tables instead of failing or doubling them; deleting absent tables is
/// fine; another user's tables survive all of it.
#[test]
fn reinstall_delete_and_other_users() {
    if !require_root("reinstall_delete_and_other_users") {
        return;
    }
    let ns = Netns::new();
    let (me, other) = (unique("ht"), unique("ht"));
    let deny = parse(&["tcp/25"]);
    let mut o = rules(&other, &deny, &[]);
    o.conntrack = Some(77);
    ns.run(|| nft::install(&o)).expect("install the other user");
    let theirs = (ns.table("bridge", &other), ns.table("ip", &other));
    assert!(theirs.0.is_some() && theirs.1.is_some());

    let mut r = rules(&me, &[], &[]);
    r.conntrack = Some(10);
    ns.run(|| nft::install(&r)).expect("first install");
    // The stale tables hold a different bound: the reinstall must replace it.
    r.conntrack = Some(20);
    ns.run(|| nft::install(&r))
        .expect("second install falls back");
    let ip = ns.table("ip", &me).expect("ip table");
    assert_eq!(ip.matches("ct count over").count(), 1, "{ip}");
    assert!(ip.contains("ct count over 20 drop"), "{ip}");
    let bridge = ns.table("bridge", &me).expect("bridge table");
    assert_eq!(bridge.matches("jump guard").count(), 2, "{bridge}");

    ns.run(|| nft::delete(&me)).expect("delete");
    ns.run(|| nft::delete(&me))
        .expect("deleting absent tables is fine");
    assert_eq!(ns.table("bridge", &me), None);
    assert_eq!((ns.table("bridge", &other), ns.table("ip", &other)), theirs);
}

/// A refused batch names the message and the errno, and applies nothing:
/// a jump to a chain that does not exist.
#[test]
fn refused_batch_names_the_message() {
    if !require_root("refused_batch_names_the_message") {
        return;
    }
    use hutch_runtime::net::nftnl::{self, Expr, Family, Op, Verdict};
    let ns = Netns::new();
    let t = nft::table_name(&unique("ht"));
    let ops = vec![
        Op::NewTable {
            family: Family::Ip,
            name: t.clone(),
            excl: true,
        },
        Op::NewChain {
            family: Family::Ip,
            table: t.clone(),
            name: "c".into(),
            hook: None,
        },
        Op::NewRule {
            family: Family::Ip,
            table: t.clone(),
            chain: "c".into(),
            exprs: vec![Expr::Verdict(Verdict::Jump("nowhere".into()))],
        },
    ];
    let e = ns
        .run(|| nftnl::apply(&ops))
        .expect_err("a jump to nowhere");
    let text = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        text.contains("add rule ip") && text.contains("message 3") && text.contains("os error 2"),
        "{text}"
    );
    let (ok, _) = ns.nft(&["list", "table", "ip", &t]);
    assert!(!ok, "the batch was applied in part");
}

/// The device-mode table (`table inet hutch`, made inside the container's
/// own namespace): eth0 only, IPv6 and foreign sources dropped, deny then
/// allow, the policer; nft lists it as the script hutch applied before.
#[test]
fn device_table() {
    if !require_root("device_table") {
        return;
    }
    let ns = Netns::new();
    let t = hutch_policy::Traffic {
        egress_deny: parse(&["169.254.169.254/32", "tcp/25", "10.0.0.0/8 udp/53"]),
        egress_allow: parse(&["udp/53", "192.0.2.0/24"]),
        rate_in: Some(1_250_000),
        ..Default::default()
    };
    let (addr, gw) = (Ipv4Addr::new(10, 77, 0, 9), Ipv4Addr::new(10, 77, 0, 1));
    ns.run(|| nft::install_device(addr, gw, &t))
        .expect("install");
    let (ok, s) = ns.nft(&["list", "table", "inet", "hutch"]);
    assert!(ok, "{s}");
    let want = "table inet hutch {
chain output {
type filter hook output priority filter; policy accept;
oifname != \"eth0\" accept
meta nfproto ipv6 drop
ip saddr != 10.77.0.9 drop
ip daddr 169.254.169.254 drop
tcp dport 25 drop
ip daddr 10.0.0.0/8 udp dport 53 drop
ct state established,related accept
ip daddr 10.77.0.1 accept
udp dport 53 accept
ip daddr 192.0.2.0/24 accept
drop
}
chain input {
type filter hook input priority filter; policy accept;
iifname != \"eth0\" accept
meta nfproto ipv6 drop
limit rate over 1250000 bytes/second drop
}
}";
    assert_eq!(normalize(&s), want);
}
