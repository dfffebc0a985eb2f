//! Interface set-up over rtnetlink, without the `ip` command: bring links up, set the MTU, add
//! addresses and default routes. The messages are built as bytes here (and unit-tested as
//! such); [`Netlink`] sends them and checks each acknowledgement.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTAX_MTU: u16 = 2;

const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 1;

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

/// A netlink message under construction: header, fixed part, attributes.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> Message {
        let mut bytes = vec![0; 16];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(fixed);
        Message(bytes)
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Message {
        let len = u16::try_from(4 + data.len()).expect("attributes are small");
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).expect("messages are small");
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// RTM_NEWLINK: set `index` up, and its MTU if given.
pub fn link_up(seq: u32, index: u32, mtu: Option<u32>) -> Vec<u8> {
    let mut ifinfo = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    ifinfo.extend_from_slice(&index.to_ne_bytes());
    ifinfo.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
    ifinfo.extend_from_slice(&IFF_UP.to_ne_bytes()); // change mask
    let message = Message::new(RTM_NEWLINK, 0, seq, &ifinfo);
    match mtu {
        Some(mtu) => message.attr(IFLA_MTU, &mtu.to_ne_bytes()).finish(),
        None => message.finish(),
    }
}

/// RTM_NEWADDR: `ip/prefix` on `index` (replacing an equal one; no IPv6 duplicate detection,
/// which would only delay a point-to-point tunnel).
pub fn add_address(seq: u32, index: u32, ip: IpAddr, prefix: u8) -> Vec<u8> {
    let flags = if ip.is_ipv6() { IFA_F_NODAD } else { 0 };
    let mut ifaddr = vec![family(ip), prefix, flags, RT_SCOPE_UNIVERSE];
    ifaddr.extend_from_slice(&index.to_ne_bytes());
    Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &ifaddr)
        .attr(IFA_LOCAL, &octets(ip))
        .attr(IFA_ADDRESS, &octets(ip))
        .finish()
}

/// RTM_NEWROUTE: the default route of `source`'s family through `index`, from `source`.
/// A route out of the interface from `source`: to `to` (an address and prefix length), or the
/// default route; with `mtu`, packets on it are at most that big.
pub fn add_route(
    seq: u32,
    index: u32,
    source: IpAddr,
    to: Option<(IpAddr, u8)>,
    mtu: Option<u32>,
) -> Vec<u8> {
    let rtmsg = [
        family(source),
        to.map_or(0, |(_, prefix)| prefix), // dst_len: 0 for the default route
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_LINK,
        RTN_UNICAST,
        0,
        0,
        0,
        0, // flags
    ];
    let mut message = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &rtmsg);
    if let Some((dst, _)) = to {
        message = message.attr(RTA_DST, &octets(dst));
    }
    message = message.attr(RTA_OIF, &index.to_ne_bytes()).attr(RTA_PREFSRC, &octets(source));
    if let Some(mtu) = mtu {
        // RTA_METRICS nests attributes of its own: here the one, RTAX_MTU.
        let mut metrics = 8u16.to_ne_bytes().to_vec();
        metrics.extend_from_slice(&RTAX_MTU.to_ne_bytes());
        metrics.extend_from_slice(&mtu.to_ne_bytes());
        message = message.attr(RTA_METRICS, &metrics);
    }
    message.finish()
}

/// The error code in an acknowledgement for `seq`: `Some(0)` is success, `Some(-errno)` a
/// failure, `None` not an acknowledgement for it.
pub fn ack_error(reply: &[u8], seq: u32) -> Option<i32> {
    if reply.len() < 20 {
        return None;
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    let reply_seq = u32::from_ne_bytes(reply[8..12].try_into().ok()?);
    if kind != NLMSG_ERROR || reply_seq != seq {
        return None;
    }
    Some(i32::from_ne_bytes(reply[16..20].try_into().ok()?))
}

/// A route netlink socket, bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    socket: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let socket = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        Ok(Netlink { socket, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn request(&mut self, what: &str, message: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        let seq = self.next_seq();
        let fd = self.socket.as_raw_fd();
        nix::sys::socket::send(fd, &message(seq), MsgFlags::empty())?;
        let mut buffer = [0u8; 4096];
        loop {
            let len = nix::sys::socket::recv(fd, &mut buffer, MsgFlags::empty())?;
            match ack_error(&buffer[..len], seq) {
                Some(0) => return Ok(()),
                Some(code) => {
                    let error = io::Error::from_raw_os_error(-code);
                    return Err(io::Error::new(error.kind(), format!("{what}: {error}")));
                }
                None => continue,
            }
        }
    }

    pub fn link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        self.request("bringing the link up", |seq| link_up(seq, index, mtu))
    }

    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix: u8) -> io::Result<()> {
        self.request("adding the address", |seq| add_address(seq, index, ip, prefix))
    }

    pub fn add_route(
        &mut self,
        index: u32,
        source: IpAddr,
        to: Option<(IpAddr, u8)>,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let what = if to.is_some() { "adding a route" } else { "adding the default route" };
        self.request(what, |seq| add_route(seq, index, source, to, mtu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn link_up_sets_the_up_flag_and_mtu() {
        let m = link_up(7, 3, Some(1280));
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(u16_at(&m, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 7);
        assert_eq!(u32_at(&m, 20), 3, "ifi_index");
        assert_eq!((u32_at(&m, 24), u32_at(&m, 28)), (IFF_UP, IFF_UP), "flags and change");
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34), u32_at(&m, 36)), (8, IFLA_MTU, 1280));
        assert_eq!(m.len(), 40);
        assert_eq!(link_up(1, 1, None).len(), 32);
    }

    #[test]
    fn ipv4_address_has_local_and_address() {
        let m = add_address(1, 5, "100.64.0.7".parse().unwrap(), 32);
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 32, 0, RT_SCOPE_UNIVERSE]);
        assert_eq!(u32_at(&m, 20), 5);
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, IFA_LOCAL));
        assert_eq!(&m[28..32], &[100, 64, 0, 7]);
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (8, IFA_ADDRESS));
        assert_eq!(&m[36..40], &[100, 64, 0, 7]);
        assert_eq!(m.len(), 40);
    }

    #[test]
    fn ipv6_address_skips_duplicate_detection() {
        let m = add_address(1, 5, "fd7a:115c:a1e0::7".parse().unwrap(), 128);
        assert_eq!(&m[16..19], &[libc::AF_INET6 as u8, 128, IFA_F_NODAD]);
        assert_eq!(u16_at(&m, 24), 20, "16 address bytes plus the attribute header");
        assert_eq!(m.len(), 16 + 8 + 20 + 20);
    }

    #[test]
    fn default_route_goes_out_of_the_interface_from_our_address() {
        let m = add_route(9, 4, "100.64.0.7".parse().unwrap(), None, None);
        assert_eq!(u16_at(&m, 4), RTM_NEWROUTE);
        let rtmsg = &m[16..28];
        assert_eq!(rtmsg[0], libc::AF_INET as u8);
        assert_eq!(rtmsg[1], 0, "a default route has no destination prefix");
        assert_eq!((rtmsg[4], rtmsg[5], rtmsg[6], rtmsg[7]), (254, 3, 253, 1));
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30), u32_at(&m, 32)), (8, RTA_OIF, 4));
        assert_eq!((u16_at(&m, 36), u16_at(&m, 38)), (8, RTA_PREFSRC));
        assert_eq!(&m[40..44], &[100, 64, 0, 7]);
        assert_eq!(m.len(), 44);
    }

    #[test]
    fn a_route_to_a_prefix_carries_its_destination_and_mtu() {
        let source = "100.64.0.7".parse().unwrap();
        let m = add_route(9, 4, source, Some(("100.64.0.0".parse().unwrap(), 10)), Some(1280));
        assert_eq!(m[17], 10, "dst_len");
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30)), (8, RTA_DST));
        assert_eq!(&m[32..36], &[100, 64, 0, 0]);
        assert_eq!((u16_at(&m, 36), u16_at(&m, 38), u32_at(&m, 40)), (8, RTA_OIF, 4));
        assert_eq!((u16_at(&m, 44), u16_at(&m, 46)), (8, RTA_PREFSRC));
        assert_eq!((u16_at(&m, 52), u16_at(&m, 54)), (12, RTA_METRICS));
        assert_eq!((u16_at(&m, 56), u16_at(&m, 58), u32_at(&m, 60)), (8, RTAX_MTU, 1280));
        assert_eq!(m.len(), 64);
    }

    #[test]
    fn acknowledgements_are_matched_by_sequence() {
        let mut ack = vec![0u8; 36];
        ack[..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(ack_error(&ack, 5), Some(0));
        assert_eq!(ack_error(&ack, 6), None);
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(ack_error(&ack, 5), Some(-libc::EEXIST));
        assert_eq!(ack_error(&ack[..10], 5), None);
    }
}
