//! Network settings: the host-wide `[host.net]` table (bridge, address
//! pool, gateway, DNS, NAT uplink, lease file) and the per-user
//! `egress_deny`/`egress_allow` rule keys. Pure values: parsing and checking, no kernel.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The default bridge of `network = "veth"`.
pub const DEFAULT_BRIDGE: &str = "hutch0";
/// The default address pool.
pub const DEFAULT_POOL: &str = "10.77.0.0/16";
/// What `egress_deny` is when no table sets it: the cloud metadata address
/// and outbound SMTP.
pub const DEFAULT_EGRESS_DENY: &[&str] = &["169.254.169.254/32", "tcp/25"];

/// An IPv4 network `a.b.c.d/len` (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` lies in this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// The usable host addresses (network and broadcast excluded for
    /// prefixes below /31), in order.
    pub fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.addr);
        let size: u64 = 1u64 << (32 - u32::from(self.prefix));
        let (first, last) = if size <= 2 {
            (0, size - 1)
        } else {
            (1, size - 2)
        };
        (first..=last).map(move |i| Ipv4Addr::from(base.wrapping_add(i as u32)))
    }

    /// The first usable host address (the default gateway).
    pub fn first_host(self) -> Ipv4Addr {
        self.hosts().next().unwrap_or(self.addr)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("invalid IPv4 network \"{s}\": expected a.b.c.d/len"))?;
        let prefix: u8 =
            p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| {
                format!("invalid IPv4 network \"{s}\": prefix length must be 0..=32")
            })?;
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(format!(
                "invalid IPv4 network \"{s}\": host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(addr) & net.mask())
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A transport protocol in an egress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `egress_deny` entry: `"CIDR"`, `"tcp/PORT"`, `"udp/PORT"` or
/// `"CIDR tcp/PORT"` (both must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    pub net: Option<Ipv4Net>,
    pub port: Option<(Proto, u16)>,
}

impl FromStr for EgressRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut rule = EgressRule {
            net: None,
            port: None,
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.is_empty() || words.len() > 2 {
            return Err(format!("invalid egress rule \"{s}\": expected \"CIDR\", \"tcp/PORT\", \"udp/PORT\" or \"CIDR tcp/PORT\""));
        }
        for w in words {
            if let Some((proto, port)) = w
                .split_once('/')
                .filter(|(p, _)| matches!(*p, "tcp" | "udp"))
            {
                if rule.port.is_some() {
                    return Err(format!("invalid egress rule \"{s}\": two ports"));
                }
                let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("invalid egress rule \"{s}\": port must be 1..=65535")
                })?;
                rule.port = Some((
                    if proto == "tcp" {
                        Proto::Tcp
                    } else {
                        Proto::Udp
                    },
                    port,
                ));
            } else {
                if rule.net.is_some() {
                    return Err(format!("invalid egress rule \"{s}\": two networks"));
                }
                rule.net = Some(w.parse().map_err(|e| format!("egress rule: {e}"))?);
            }
        }
        Ok(rule)
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.net, self.port) {
            (Some(n), Some((p, port))) => write!(f, "{n} {}/{port}", p.as_str()),
            (Some(n), None) => write!(f, "{n}"),
            (None, Some((p, port))) => write!(f, "{}/{port}", p.as_str()),
            (None, None) => Ok(()),
        }
    }
}

/// The value of `egress_deny` or `egress_allow`: a list of [`EgressRule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressList(pub Vec<EgressRule>);

impl EgressList {
    /// The built-in default ([`DEFAULT_EGRESS_DENY`]).
    pub fn builtin() -> EgressList {
        EgressList(
            DEFAULT_EGRESS_DENY
                .iter()
                .map(|s| s.parse().expect("built-in egress rules parse"))
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for EgressList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| s.parse().map_err(de::Error::custom))
            .collect::<Result<_, _>>()
            .map(EgressList)
    }
}

impl fmt::Display for EgressList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|r| format!("\"{r}\"")).collect();
        if items.is_empty() {
            f.write_str("[]")
        } else {
            write!(f, "[ {} ]", items.join(", "))
        }
    }
}

/// `rate_in`/`rate_out`: a bandwidth in bits per second, written
/// `"10mbit"`, `"512kbit"`, `"1gbit"` (SI: 1000) or `"none"`; kept in bytes per second
/// (`None` = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub Option<u64>);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Rate(None));
        }
        let bad = || {
            format!("invalid rate \"{s}\": expected e.g. \"10mbit\", \"512kbit\", \"1gbit\" or \"none\"")
        };
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let mult = match unit {
            "bit" => 1,
            "kbit" => 1_000,
            "mbit" => 1_000_000,
            "gbit" => 1_000_000_000,
            _ => return Err(bad()),
        };
        let bytes = n.checked_mul(mult).ok_or_else(bad)? / 8;
        if bytes < 1000 {
            return Err(format!("invalid rate \"{s}\": at least 8kbit"));
        }
        Ok(Rate(Some(bytes)))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("\"none\""),
            Some(b) if (b * 8) % 1_000_000 == 0 => write!(f, "\"{}mbit\"", b * 8 / 1_000_000),
            Some(b) if (b * 8) % 1_000 == 0 => write!(f, "\"{}kbit\"", b * 8 / 1_000),
            Some(b) => write!(f, "\"{}bit\"", b * 8),
        }
    }
}

/// `net_device`: a host interface name (the parent of a macvlan or VLAN,
/// or the interface a `phys` container gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName(pub String);

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_ifname(&s).map_err(de::Error::custom)?;
        Ok(IfName(s))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// `vlan_id`: 1..=4094.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanId(pub u16);

impl<'de> Deserialize<'de> for VlanId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u16::try_from(n)
            .ok()
            .filter(|n| (1..=4094).contains(n))
            .map(VlanId)
            .ok_or_else(|| de::Error::custom(format!("invalid VLAN id {n}: 1..=4094")))
    }
}

/// `[host.net]`: what every `network = "veth"` container shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetHost {
    /// The bridge in the keeper's network namespace (made if missing, with
    /// the gateway address). Default `hutch0`.
    pub bridge: String,
    /// Where container addresses come from. Default `10.77.0.0/16`.
    pub pool: Ipv4Net,
    /// The bridge's address and the containers' default route. Default: the
    /// pool's first host address.
    pub gateway: Ipv4Addr,
    /// `nameserver` lines of the container's /etc/resolv.conf; empty: the
    /// template's file is left as it is.
    pub dns: Vec<IpAddr>,
    /// An interface to masquerade container traffic out of (NAT); none by default.
    pub nat_uplink: Option<String>,
    /// The sticky lease file; default `<lib_dir>/leases`.
    pub leases: Option<PathBuf>,
}

impl Default for NetHost {
    fn default() -> Self {
        let pool: Ipv4Net = DEFAULT_POOL.parse().expect("default pool parses");
        NetHost {
            bridge: DEFAULT_BRIDGE.into(),
            pool,
            gateway: pool.first_host(),
            dns: Vec::new(),
            nat_uplink: None,
            leases: None,
        }
    }
}

/// Checks an interface name as the kernel would take it.
pub fn check_ifname(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name \"{}\": 1 to 15 characters, no \"/\", \":\" or spaces",
            s.escape_debug()
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetHost {
    bridge: Option<String>,
    pool: Option<String>,
    gateway: Option<Ipv4Addr>,
    dns: Option<Vec<IpAddr>>,
    nat_uplink: Option<String>,
    leases: Option<crate::values::AbsPath>,
}

impl<'de> Deserialize<'de> for NetHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawNetHost::deserialize(d)?;
        let mut n = NetHost::default();
        if let Some(b) = raw.bridge {
            check_ifname(&b).map_err(|e| de::Error::custom(format!("bridge: {e}")))?;
            n.bridge = b;
        }
        if let Some(p) = raw.pool {
            n.pool = p
                .parse()
                .map_err(|e| de::Error::custom(format!("pool: {e}")))?;
            if n.pool.prefix > 30 {
                return Err(de::Error::custom(format!(
                    "pool: {} is too small (at most /30)",
                    n.pool
                )));
            }
            n.gateway = n.pool.first_host();
        }
        if let Some(g) = raw.gateway {
            if !n.pool.contains(g) || !n.pool.hosts().any(|h| h == g) {
                return Err(de::Error::custom(format!(
                    "gateway: {g} is not a host address of the pool {}",
                    n.pool
                )));
            }
            n.gateway = g;
        }
        n.dns = raw.dns.unwrap_or_default();
        if let Some(u) = raw.nat_uplink {
            check_ifname(&u).map_err(|e| de::Error::custom(format!("nat_uplink: {e}")))?;
            n.nat_uplink = Some(u);
        }
        n.leases = raw.leases.map(|p| PathBuf::from(p.0));
        Ok(n)
    }
}

impl fmt::Display for NetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bridge {} pool {} gateway {}",
            self.bridge, self.pool, self.gateway
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Networks parse, refuse host bits, and list their hosts without network and broadcast.
    #[test]
    fn networks() {
        let n: Ipv4Net = "10.77.0.0/30".parse().unwrap();
        assert_eq!(
            n.hosts().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)]
        );
        assert!(
            n.contains(Ipv4Addr::new(10, 77, 0, 3)) && !n.contains(Ipv4Addr::new(10, 77, 0, 4))
        );
        assert!("10.77.0.1/16"
            .parse::<Ipv4Net>()
            .unwrap_err()
            .contains("did you mean 10.77.0.0/16"));
        assert_eq!(
            "1.2.3.4".parse::<Ipv4Net>().unwrap().to_string(),
            "1.2.3.4/32"
        );
    }

    /// Egress rules: network, port, both; round-trip through Display.
    #[test]
    fn egress_rules() {
        for s in ["169.254.169.254/32", "tcp/25", "10.0.0.0/8 udp/53"] {
            assert_eq!(s.parse::<EgressRule>().unwrap().to_string(), s);
        }
        assert!("tcp/0".parse::<EgressRule>().is_err());
        assert!("tcp/25 tcp/26".parse::<EgressRule>().is_err());
        assert!("".parse::<EgressRule>().is_err());
        assert_eq!(
            EgressList::builtin().to_string(),
            "[ \"169.254.169.254/32\", \"tcp/25\" ]"
        );
    }

    /// Network keys resolve: veth with the built-in egress denies and rates; [host.net]
    /// defaults and overrides; a device mode without net_device refuses the login.
    #[test]
    fn network_resolution() {
        use crate::{Decision, Network, Policy};
        let path = std::path::Path::new("hutch.toml");
        let p = Policy::parse(
            "[defaults]\nnetwork = \"veth\"\nrate_out = \"8mbit\"\n",
            path,
        )
        .unwrap();
        assert_eq!(p.host().net, NetHost::default());
        assert_eq!(p.host().net.gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            p.host().leases_file(),
            PathBuf::from("/var/lib/hutch/leases")
        );
        let Decision::Confine(u) = p.resolve(&crate::tests::alice(), "sshd") else {
            panic!()
        };
        let Network::Veth(v) = &u.network else {
            panic!("{:?}", u.network)
        };
        assert_eq!(v.egress_deny, EgressList::builtin().0);
        assert!(v.egress_allow.is_empty());
        assert_eq!((v.rate_in, v.rate_out), (None, Some(1_000_000)));

        let p = Policy::parse("[defaults]\nnetwork = \"veth\"\negress_allow = [\"192.0.2.2/32 tcp/8080\", \"udp/53\"]\n", path).unwrap();
        let Decision::Confine(u) = p.resolve(&crate::tests::alice(), "sshd") else {
            panic!()
        };
        let Network::Veth(v) = &u.network else {
            panic!("{:?}", u.network)
        };
        assert_eq!(
            EgressList(v.egress_allow.clone()).to_string(),
            "[ \"192.0.2.2/32 tcp/8080\", \"udp/53\" ]"
        );
        assert_eq!(v.egress_deny, EgressList::builtin().0);
        assert!(Policy::parse("[defaults]\negress_allow = [\"tcp/0\"]\n", path).is_err());

        let p = Policy::parse(
            "[host.net]\npool = \"10.9.0.0/24\"\ndns = [\"10.9.0.1\"]\nnat_uplink = \"eth0\"\n",
            path,
        )
        .unwrap();
        assert_eq!(p.host().net.gateway, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(p.host().net.nat_uplink.as_deref(), Some("eth0"));
        let Decision::Confine(u) = p.resolve(&crate::tests::alice(), "sshd") else {
            panic!()
        };
        assert_eq!(u.network, Network::Loopback);
        assert!(Policy::parse(
            "[host.net]\npool = \"10.9.0.0/24\"\ngateway = \"10.8.0.1\"\n",
            path
        )
        .is_err());
        assert!(Policy::parse("[host.net]\nbridge = \"a-name-far-too-long\"\n", path).is_err());

        let p = Policy::parse("[defaults]\nnetwork = \"macvlan\"\n", path).unwrap();
        match p.resolve(&crate::tests::alice(), "sshd") {
            Decision::Refuse(why) => assert!(why.contains("needs net_device"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    /// Rates: SI bit units to bytes per second, "none", and back.
    #[test]
    fn rates() {
        assert_eq!("8mbit".parse::<Rate>().unwrap(), Rate(Some(1_000_000)));
        assert_eq!(
            "512kbit".parse::<Rate>().unwrap().to_string(),
            "\"512kbit\""
        );
        assert_eq!("none".parse::<Rate>().unwrap(), Rate(None));
        for bad in ["10", "10MB", "mbit", "1bit"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
