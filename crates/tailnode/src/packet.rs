//! Just enough IP parsing and building for the bridge: which protocol a packet carries, UDP
//! over IPv4 for the DNS responder, and the ICMP a node answers itself (ping, "too big").

use std::net::Ipv4Addr;

/// IP protocol numbers the bridge carries.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// The IP version and (first) protocol of a packet, or `None` for anything else.
pub fn version_and_protocol(packet: &[u8]) -> Option<(u8, u8)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some((4, packet[9])),
        6 if packet.len() >= 40 => Some((6, packet[6])),
        _ => None,
    }
}

/// A UDP datagram in an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp4<'a> {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

pub fn parse_udp4(packet: &[u8]) -> Option<Udp4<'_>> {
    let (4, UDP) = version_and_protocol(packet)? else { return None };
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if header < 20 || total > packet.len() || total < header + 8 {
        return None;
    }
    let udp = &packet[header..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    Some(Udp4 {
        src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[8..udp_len],
    })
}

/// An IPv4 packet carrying `udp`, with both checksums.
pub fn build_udp4(udp: &Udp4<'_>) -> Vec<u8> {
    let udp_len = 8 + udp.payload.len();
    let total = u16::try_from(20 + udp_len).expect("DNS answers are small");
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, UDP, 0, 0];
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&udp.src.octets());
    packet.extend_from_slice(&udp.dst.octets());
    let header_sum = checksum(&packet);
    packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let udp_len = u16::try_from(udp_len).expect("checked above");
    let mut segment = Vec::with_capacity(usize::from(udp_len));
    segment.extend_from_slice(&udp.src_port.to_be_bytes());
    segment.extend_from_slice(&udp.dst_port.to_be_bytes());
    segment.extend_from_slice(&udp_len.to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.extend_from_slice(udp.payload);
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&udp.src.octets());
    pseudo.extend_from_slice(&udp.dst.octets());
    pseudo.extend_from_slice(&[0, UDP]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&segment);
    let sum = match checksum(&pseudo) {
        0 => 0xffff,
        sum => sum,
    };
    segment[6..8].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&segment);
    packet
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 ICMP echo reply to `packet`, if it is an echo request.
pub fn echo_reply4(packet: &[u8]) -> Option<Vec<u8>> {
    let (4, ICMP) = version_and_protocol(packet)? else { return None };
    let header = usize::from(packet[0] & 0x0f) * 4;
    if packet.len() < header + 8 || packet[header] != 8 {
        return None;
    }
    let mut reply = packet.to_vec();
    reply[12..16].copy_from_slice(&packet[16..20]);
    reply[16..20].copy_from_slice(&packet[12..16]);
    reply[8] = 64;
    reply[header] = 0;
    reply[header + 2..header + 4].fill(0);
    let icmp_sum = checksum(&reply[header..]);
    reply[header + 2..header + 4].copy_from_slice(&icmp_sum.to_be_bytes());
    reply[10..12].fill(0);
    let ip_sum = checksum(&reply[..header]);
    reply[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    Some(reply)
}

/// The ICMP "too big" answer to `packet` (IPv4 "fragmentation needed" when it may not be
/// fragmented, IPv6 "packet too big"), from its destination, so the sender's path MTU discovery
/// lowers what it sends there to `mtu`. `None` when no answer is due.
pub fn too_big(packet: &[u8], mtu: u16) -> Option<Vec<u8>> {
    match version_and_protocol(packet)? {
        (4, _) => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let dont_fragment = packet[6] & 0x40 != 0;
            if !dont_fragment || packet.len() <= usize::from(mtu) || packet.len() < header {
                return None;
            }
            let quoted = &packet[..packet.len().min(header + 8)];
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&mtu.to_be_bytes());
            icmp.extend_from_slice(quoted);
            let sum = checksum(&icmp);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let total = u16::try_from(20 + icmp.len()).ok()?;
            let mut reply = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, ICMP, 0, 0];
            reply[2..4].copy_from_slice(&total.to_be_bytes());
            reply.extend_from_slice(&packet[16..20]);
            reply.extend_from_slice(&packet[12..16]);
            let sum = checksum(&reply);
            reply[10..12].copy_from_slice(&sum.to_be_bytes());
            reply.extend_from_slice(&icmp);
            Some(reply)
        }
        (6, _) => {
            if packet.len() <= usize::from(mtu) {
                return None;
            }
            // As much of the packet as fits in the smallest IPv6 MTU, as RFC 4443 asks.
            let quoted = &packet[..packet.len().min(1280 - 48)];
            let mut icmp = vec![2, 0, 0, 0];
            icmp.extend_from_slice(&u32::from(mtu).to_be_bytes());
            icmp.extend_from_slice(quoted);
            let (src, dst) = (&packet[24..40], &packet[8..24]);
            let length = u32::try_from(icmp.len()).ok()?;
            let mut pseudo = Vec::with_capacity(40 + icmp.len());
            pseudo.extend_from_slice(src);
            pseudo.extend_from_slice(dst);
            pseudo.extend_from_slice(&length.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
            pseudo.extend_from_slice(&icmp);
            let sum = checksum(&pseudo);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut reply = vec![0x60, 0, 0, 0];
            reply.extend_from_slice(&u16::try_from(icmp.len()).ok()?.to_be_bytes());
            reply.extend_from_slice(&[ICMPV6, 64]);
            reply.extend_from_slice(src);
            reply.extend_from_slice(dst);
            reply.extend_from_slice(&icmp);
            Some(reply)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_round_trips_with_valid_checksums() {
        let udp = Udp4 {
            src: Ipv4Addr::new(100, 100, 100, 100),
            src_port: 53,
            dst: Ipv4Addr::new(100, 64, 0, 3),
            dst_port: 40000,
            payload: b"answer",
        };
        let packet = build_udp4(&udp);
        assert_eq!(checksum(&packet[..20]), 0, "IPv4 header checksum");
        assert_eq!(parse_udp4(&packet), Some(udp.clone()));
        let mut pseudo = packet[12..20].to_vec();
        pseudo.extend_from_slice(&[0, UDP, 0, 14]);
        pseudo.extend_from_slice(&packet[20..]);
        assert_eq!(checksum(&pseudo), 0, "UDP checksum");
        assert_eq!(version_and_protocol(&packet), Some((4, UDP)));
    }

    #[test]
    fn truncated_or_foreign_packets_are_not_parsed() {
        assert_eq!(version_and_protocol(&[0x45; 10]), None);
        assert_eq!(version_and_protocol(&[0x15; 40]), None);
        let udp = Udp4 {
            src: Ipv4Addr::LOCALHOST,
            src_port: 1,
            dst: Ipv4Addr::LOCALHOST,
            dst_port: 2,
            payload: b"x",
        };
        let packet = build_udp4(&udp);
        assert_eq!(parse_udp4(&packet[..packet.len() - 1]), None);
    }

    #[test]
    fn too_big_packets_are_answered_with_the_mtu_from_their_destination() {
        // A 1400-byte IPv4 TCP packet with DF, from 100.64.0.1 to 192.168.5.20.
        let mut big = vec![0x45, 0, 0x05, 0x78, 0, 0, 0x40, 0, 64, TCP, 0, 0];
        big.extend_from_slice(&[100, 64, 0, 1, 192, 168, 5, 20]);
        big.resize(1400, 0xab);
        let reply = too_big(&big, 1280).unwrap();
        assert_eq!(
            (&reply[12..16], &reply[16..20]),
            (&[192, 168, 5, 20][..], &[100, 64, 0, 1][..])
        );
        assert_eq!((reply[9], reply[20], reply[21]), (ICMP, 3, 4), "fragmentation needed");
        assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1280);
        assert_eq!(&reply[28..48], &big[..20], "the original header is quoted");
        assert_eq!((checksum(&reply[..20]), checksum(&reply[20..])), (0, 0));
        assert_eq!(reply.len(), 20 + 8 + 28);
        assert_eq!(too_big(&big[..1280], 1280), None, "it fits");
        big[6] = 0;
        assert_eq!(too_big(&big, 1280), None, "it may be fragmented");

        let mut big6 = vec![0x60, 0, 0, 0, 0x05, 0x50, TCP, 64];
        big6.extend_from_slice(&[0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        big6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        big6.resize(1400, 0xcd);
        let reply = too_big(&big6, 1280).unwrap();
        assert_eq!(reply.len(), 1280, "no bigger than the smallest IPv6 MTU");
        assert_eq!((&reply[8..24], &reply[24..40]), (&big6[24..40], &big6[8..24]));
        assert_eq!(
            (reply[6], reply[40], u32::from_be_bytes(reply[44..48].try_into().unwrap())),
            (ICMPV6, 2, 1280)
        );
        let mut pseudo = reply[8..40].to_vec();
        pseudo.extend_from_slice(&(reply.len() as u32 - 40).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
        pseudo.extend_from_slice(&reply[40..]);
        assert_eq!(checksum(&pseudo), 0, "ICMPv6 checksum");
    }

    #[test]
    fn echo_requests_get_replies_from_the_pinged_address() {
        let mut request =
            vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, ICMP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        request.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        let reply = echo_reply4(&request).unwrap();
        assert_eq!((&reply[12..16], &reply[16..20]), (&[10, 0, 0, 2][..], &[10, 0, 0, 1][..]));
        assert_eq!(reply[20], 0, "echo reply");
        assert_eq!((checksum(&reply[..20]), checksum(&reply[20..])), (0, 0));
        assert_eq!(echo_reply4(&reply), None, "a reply is not answered");
    }
}
