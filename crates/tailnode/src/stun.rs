//! Just enough STUN (RFC 5389) to learn the public address of the node's UDP socket: a binding
//! request, and the XOR-MAPPED-ADDRESS of the answer.
//!
//! The request goes out from the same socket WireGuard uses, so the mapping it reports is the
//! one peers must use; that is why this is not `ts_netcheck`'s prober (it binds its own socket).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const HEADER: usize = 20;

/// A transaction id: 12 random bytes that tie an answer to its request.
pub type TransactionId = [u8; 12];

/// A binding request with no attributes.
pub fn binding_request(id: &TransactionId) -> [u8; HEADER] {
    let mut packet = [0u8; HEADER];
    packet[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    packet[4..8].copy_from_slice(&MAGIC_COOKIE);
    packet[8..20].copy_from_slice(id);
    packet
}

/// Whether `packet` looks like a STUN message (so it is not WireGuard or disco).
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER && packet[0] & 0xc0 == 0 && packet[4..8] == MAGIC_COOKIE
}

/// The mapped address of a binding success answer, with its transaction id; `None` for anything
/// else, including a malformed or truncated answer.
pub fn parse_binding_success(packet: &[u8]) -> Option<(TransactionId, SocketAddr)> {
    if !is_stun(packet) || u16::from_be_bytes([packet[0], packet[1]]) != BINDING_SUCCESS {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let attributes = packet.get(HEADER..HEADER + length)?;
    let id: TransactionId = packet[8..20].try_into().ok()?;
    let mut rest = attributes;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == XOR_MAPPED_ADDRESS {
            return xor_mapped(value, &id).map(|address| (id, address));
        }
        // Attributes are padded to four bytes.
        rest = rest.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

fn xor_mapped(value: &[u8], id: &TransactionId) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ 0x2112;
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE);
    key[4..].copy_from_slice(id);
    let ip = match value.get(1)? {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|i| raw[i] ^ key[i])))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| raw[i] ^ key[i])))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a server writes it (RFC 5769 style), built independently of the parser.
    fn answer(id: &TransactionId, address: SocketAddr) -> Vec<u8> {
        let mut key = MAGIC_COOKIE.to_vec();
        key.extend_from_slice(id);
        let (family, ip): (u8, Vec<u8>) = match address.ip() {
            IpAddr::V4(ip) => (1, ip.octets().to_vec()),
            IpAddr::V6(ip) => (2, ip.octets().to_vec()),
        };
        let mut value = vec![0, family];
        value.extend_from_slice(&(address.port() ^ 0x2112).to_be_bytes());
        value.extend(ip.iter().zip(&key).map(|(a, k)| a ^ k));
        // A software attribute first, odd-sized, to exercise the padding.
        let mut attributes = vec![0x80, 0x22, 0, 3, b'l', b'a', b'b', 0];
        attributes.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
        attributes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        attributes.extend_from_slice(&value);
        let mut packet = BINDING_SUCCESS.to_be_bytes().to_vec();
        packet.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        packet.extend_from_slice(&MAGIC_COOKIE);
        packet.extend_from_slice(id);
        packet.extend_from_slice(&attributes);
        packet
    }

    #[test]
    fn answers_give_the_mapped_address_for_both_families() {
        let id = *b"0123456789ab";
        for address in ["203.0.113.7:41641", "[2001:db8::7]:41641"] {
            let address: SocketAddr = address.parse().unwrap();
            assert_eq!(parse_binding_success(&answer(&id, address)), Some((id, address)));
        }
    }

    #[test]
    fn requests_and_garbage_are_not_answers() {
        let id = *b"0123456789ab";
        let request = binding_request(&id);
        assert!(is_stun(&request));
        assert_eq!(parse_binding_success(&request), None);
        let good = answer(&id, "198.51.100.1:1".parse().unwrap());
        for cut in 0..good.len() {
            assert_eq!(parse_binding_success(&good[..cut]), None, "cut at {cut}");
        }
        assert!(!is_stun(&[0x01; 40]), "a WireGuard-looking packet");
    }
}
