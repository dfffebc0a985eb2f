//! Where a container's packet may go on the host's network, and from which host address: the
//! rules slirp4netns applies, as podman's flags set them. Pure, so every rule is tested.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address that stands for the host's loopback when it is allowed: slirp4netns's gateway,
/// so `allow_host_loopback=true` containers reach the host at the address they always have.
pub const HOST_ALIAS_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// slirp4netns's IPv6 gateway, standing for the host's `::1` the same way.
pub const HOST_ALIAS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// How the container reaches the host's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `10.0.2.2` and `fd00::2` reach the host's own loopback (no `--disable-host-loopback`).
    pub host_loopback: bool,
    /// IPv6 destinations are reached (`--enable-ipv6`); otherwise refused.
    pub ipv6: bool,
    /// The host address outbound IPv4 connections are made from (`--outbound-addr`).
    pub outbound_v4: Option<IpAddr>,
    /// The host address outbound IPv6 connections are made from (`--outbound-addr6`).
    pub outbound_v6: Option<IpAddr>,
}

/// Why a destination is not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The host's loopback, not opened with `allow_host_loopback`.
    HostLoopback,
    /// IPv6 without `--enable-ipv6`.
    Ipv6Disabled,
    /// Not an address a connection can go to: unspecified, multicast, broadcast, link-local.
    NotUnicast,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::HostLoopback => "the host's loopback is closed (--disable-host-loopback)",
            Refusal::Ipv6Disabled => "IPv6 is off (no --enable-ipv6)",
            Refusal::NotUnicast => "not a unicast address",
        })
    }
}

impl Policy {
    /// Where on the host's network a packet for `dst` goes, or why it does not.
    pub fn target(&self, dst: IpAddr) -> Result<IpAddr, Refusal> {
        match dst {
            IpAddr::V4(HOST_ALIAS_V4) if self.host_loopback => Ok(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(HOST_ALIAS_V6) if self.host_loopback && self.ipv6 => {
                Ok(Ipv6Addr::LOCALHOST.into())
            }
            IpAddr::V4(v4) => {
                if v4.is_loopback() {
                    Err(Refusal::HostLoopback)
                } else if v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_link_local()
                {
                    Err(Refusal::NotUnicast)
                } else {
                    Ok(dst)
                }
            }
            IpAddr::V6(_) if !self.ipv6 => Err(Refusal::Ipv6Disabled),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    // ::ffff:a.b.c.d is the IPv4 address, with the IPv4 rules.
                    return self.target(v4.into()).map(|_| dst);
                }
                if v6.is_loopback() {
                    Err(Refusal::HostLoopback)
                } else if v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local() {
                    Err(Refusal::NotUnicast)
                } else {
                    Ok(dst)
                }
            }
        }
    }

    /// The host address to make a connection to `target` from; `None` lets the kernel choose.
    pub fn source_for(&self, target: IpAddr) -> Option<IpAddr> {
        if target.is_loopback() {
            return None;
        }
        match target {
            IpAddr::V4(_) => self.outbound_v4,
            IpAddr::V6(_) => self.outbound_v6,
        }
    }
}

/// `--outbound-addr` as slirp4netns takes it: an address of the family, or an interface whose
/// first address of that family is used.
pub fn outbound_address(flag: &str, value: &str, v6: bool) -> Result<IpAddr, String> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return match ip.is_ipv6() == v6 {
            true => Ok(ip),
            false => Err(format!("{flag} {value}: not an IPv{} address", if v6 { 6 } else { 4 })),
        };
    }
    let interfaces = nix::ifaddrs::getifaddrs().map_err(|e| format!("{flag} {value}: {e}"))?;
    interfaces
        .filter(|interface| interface.interface_name == value)
        .filter_map(|interface| interface.address)
        .find_map(|address| match v6 {
            false => address.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())),
            true => address
                .as_sockaddr_in6()
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unicast_link_local())
                .map(IpAddr::V6),
        })
        .ok_or_else(|| format!("{flag} {value}: neither an address nor an interface with one"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(host_loopback: bool, ipv6: bool) -> Policy {
        Policy { host_loopback, ipv6, outbound_v4: None, outbound_v6: None }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_internet_is_reached_as_addressed() {
        let p = policy(false, true);
        for dst in ["198.51.100.7", "10.0.2.2", "192.168.1.1", "2001:db8::7", "fd00::2"] {
            assert_eq!(p.target(ip(dst)), Ok(ip(dst)), "{dst}");
        }
    }

    #[test]
    fn the_host_loopback_is_closed_unless_opened_and_then_only_through_the_alias() {
        let closed = policy(false, true);
        for dst in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(closed.target(ip(dst)), Err(Refusal::HostLoopback), "{dst}");
        }
        let open = policy(true, true);
        assert_eq!(open.target(ip("10.0.2.2")), Ok(ip("127.0.0.1")));
        assert_eq!(open.target(ip("fd00::2")), Ok(ip("::1")));
        assert_eq!(open.target(ip("127.0.0.1")), Err(Refusal::HostLoopback));
    }

    #[test]
    fn ipv6_needs_enable_ipv6_and_odd_addresses_are_refused() {
        assert_eq!(policy(true, false).target(ip("2001:db8::7")), Err(Refusal::Ipv6Disabled));
        assert_eq!(policy(true, false).target(ip("fd00::2")), Err(Refusal::Ipv6Disabled));
        let p = policy(false, true);
        for dst in ["0.0.0.0", "224.0.0.251", "255.255.255.255", "169.254.169.254", "ff02::1"] {
            assert_eq!(p.target(ip(dst)), Err(Refusal::NotUnicast), "{dst}");
        }
        assert_eq!(p.target(ip("fe80::1")), Err(Refusal::NotUnicast));
    }

    #[test]
    fn outbound_addresses_apply_except_to_the_host_loopback() {
        let p = Policy {
            outbound_v4: Some(ip("192.0.2.5")),
            outbound_v6: Some(ip("2001:db8::5")),
            ..policy(true, true)
        };
        assert_eq!(p.source_for(ip("198.51.100.7")), Some(ip("192.0.2.5")));
        assert_eq!(p.source_for(ip("2001:db8::7")), Some(ip("2001:db8::5")));
        assert_eq!(p.source_for(ip("127.0.0.1")), None);
    }

    #[test]
    fn outbound_flags_take_an_address_of_their_family_or_an_interface() {
        assert_eq!(outbound_address("--outbound-addr", "192.0.2.5", false), Ok(ip("192.0.2.5")));
        let e = outbound_address("--outbound-addr6", "192.0.2.5", true).unwrap_err();
        assert_eq!(e, "--outbound-addr6 192.0.2.5: not an IPv6 address");
        assert_eq!(outbound_address("--outbound-addr", "lo", false), Ok(ip("127.0.0.1")));
        let e = outbound_address("--outbound-addr", "no-such-if0", false).unwrap_err();
        assert!(e.contains("neither an address nor an interface"), "{e}");
    }
}
