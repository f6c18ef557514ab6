//! Addresses: the sticky lease file and the derived names (MAC, host-side
//! interface name) that follow from a leased address.

pub mod lease;

use std::net::Ipv4Addr;

/// The container end's MAC: locally administered, derived from the address
/// (02:68 then the four address bytes), so anti-spoof rules know it in advance.
pub fn mac_of(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x68, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The host end of the veth for `addr`: `hv` and the address in hex (10
/// characters, one per address). A user who logs in again while the
/// previous container's namespace is still being destroyed finds that
/// port and deletes it first (~15 ms): a port of another name would let the
/// dying namespace (same MAC, old TCP state) steal the bridge's FDB entry
/// and stall the new container's connections (seen in the bandwidth test).
pub fn host_ifname(addr: Ipv4Addr) -> String {
    format!("hv{:08x}", u32::from(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and MACs follow from the address and fit the kernel's limits.
    #[test]
    fn derived_names() {
        let a = Ipv4Addr::new(10, 77, 0, 2);
        assert_eq!(host_ifname(a), "hv0a4d0002");
        assert_eq!(mac_text(mac_of(a)), "02:68:0a:4d:00:02");
    }
}
