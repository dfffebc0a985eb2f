//! A STUN server (RFC 5389) that answers binding requests only: each well-formed binding request
//! gets a binding success response with the sender's address in XOR-MAPPED-ADDRESS and the
//! request's transaction id. Anything else is dropped unanswered.
//!
//! A message is a 20-byte header (type, body length, magic cookie, transaction id) and a body of
//! attributes (type, length, value padded to four bytes), all big-endian.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const MAGIC_COOKIE: [u8; 4] = 0x2112_A442_u32.to_be_bytes();
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Longer than any binding request worth answering. A longer datagram is cut to this size, so
/// its length field no longer matches and it is dropped: the work per packet is bounded.
const MAX_PACKET: usize = 1024;

/// A transaction id: 96 bits the client picks and the response echoes.
pub(crate) type TransactionId = [u8; 12];

/// The STUN socket, answered until dropped.
#[derive(Debug)]
pub(crate) struct StunServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StunServer {
    /// Binds `addr` (port 0: the kernel picks one) and answers there.
    pub(crate) async fn start(addr: SocketAddr) -> std::io::Result<StunServer> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut packet = [0; MAX_PACKET];
            loop {
                let (len, from) = match socket.recv_from(&mut packet).await {
                    Ok(received) => received,
                    Err(e) => {
                        log::debug!("stun: receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Some(transaction) = binding_request(&packet[..len]) {
                    let response = binding_success(transaction, from);
                    if let Err(e) = socket.send_to(&response, from).await {
                        log::debug!("stun: answer to {from} failed: {e}");
                    }
                }
            }
        });
        Ok(StunServer { addr, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The transaction id of `packet` if it is a well-formed binding request.
pub(crate) fn binding_request(packet: &[u8]) -> Option<TransactionId> {
    let header = packet.get(..HEADER_LEN)?;
    let body = &packet[HEADER_LEN..];
    if u16_at(header, 0)? != BINDING_REQUEST
        || usize::from(u16_at(header, 2)?) != body.len()
        || header[4..8] != MAGIC_COOKIE
    {
        return None;
    }
    // The attributes must fill the body exactly; their values are not needed.
    let mut rest = body;
    while !rest.is_empty() {
        let len = usize::from(u16_at(rest, 2)?);
        rest = rest.get(4 + len.next_multiple_of(4)..)?;
    }
    header[8..].try_into().ok()
}

/// A binding success response telling `from` its address.
pub(crate) fn binding_success(transaction: TransactionId, from: SocketAddr) -> Vec<u8> {
    // XOR with the cookie (port, IPv4) or the cookie and transaction id (IPv6), so that NATs
    // rewriting addresses they recognise in payloads leave this one alone.
    let key: Vec<u8> = MAGIC_COOKIE.iter().chain(&transaction).copied().collect();
    // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d; they want their IPv4 address.
    let (family, ip) = match from.ip().to_canonical() {
        IpAddr::V4(ip) => (1, ip.octets().to_vec()),
        IpAddr::V6(ip) => (2, ip.octets().to_vec()),
    };
    let port = from.port() ^ u16::from_be_bytes([key[0], key[1]]);
    let mut value = vec![0, family];
    value.extend_from_slice(&port.to_be_bytes());
    value.extend(ip.iter().zip(&key).map(|(byte, k)| byte ^ k));

    let value_len = u16::try_from(value.len()).expect("an address fits");
    let mut message = Vec::with_capacity(HEADER_LEN + 4 + value.len());
    message.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    message.extend_from_slice(&(4 + value_len).to_be_bytes());
    message.extend_from_slice(&MAGIC_COOKIE);
    message.extend_from_slice(&transaction);
    message.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    message.extend_from_slice(&value_len.to_be_bytes());
    message.extend_from_slice(&value);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769's sample request (section 2.1): a binding request with SOFTWARE, PRIORITY,
    /// ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
    const SAMPLE_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae\
        802200105354554e207465737420636c69656e74\
        002400046e0001ff\
        80290008932ff9b151263b36\
        000600096576746a3a68367659202020\
        000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
        80280004e57a3bcf";
    const SAMPLE_TRANSACTION: &str = "b7e7a701bc34d686fa87dfae";

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn transaction() -> TransactionId {
        hex(SAMPLE_TRANSACTION).try_into().unwrap()
    }

    #[test]
    fn a_binding_request_with_attributes_is_accepted() {
        assert_eq!(binding_request(&hex(SAMPLE_REQUEST)), Some(transaction()));
        let mut bare = hex(SAMPLE_REQUEST)[..HEADER_LEN].to_vec();
        bare[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(binding_request(&bare), Some(transaction()));
    }

    #[test]
    fn anything_else_is_refused() {
        let good = hex(SAMPLE_REQUEST);
        let changed = |at: usize, byte: u8| {
            let mut packet = good.clone();
            packet[at] = byte;
            packet
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("short header", good[..19].to_vec()),
            ("binding success", changed(0, 0x01)),
            ("classic STUN, no cookie", changed(4, 0)),
            ("body longer than said", [&good[..], &[0, 0, 0, 0]].concat()),
            ("body shorter than said", good[..good.len() - 4].to_vec()),
            ("attribute overruns the body", changed(HEADER_LEN + 3, 0x14)),
            ("body not whole attributes", [&good[..3], &[0x5a], &good[4..], &[0, 0]].concat()),
        ];
        for (what, packet) in cases {
            assert_eq!(binding_request(&packet), None, "{what}");
        }
    }

    /// The XOR-MAPPED-ADDRESS attributes of RFC 5769's sample responses (sections 2.2, 2.3).
    #[test]
    fn responses_match_the_rfc_samples() {
        let cases = [
            ("192.0.2.1:32853", "0020 0008 0001a147 e112a643"),
            (
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
                "0020 0014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9",
            ),
        ];
        for (from, attribute) in cases {
            let response = binding_success(transaction(), from.parse().unwrap());
            let attribute = hex(attribute);
            let length = u16::try_from(attribute.len()).unwrap().to_be_bytes();
            assert_eq!(&response[..2], &[0x01, 0x01], "{from}: type");
            assert_eq!(&response[2..4], &length, "{from}: length");
            assert_eq!(&response[4..HEADER_LEN], &hex("2112a442 b7e7a701bc34d686fa87dfae"));
            assert_eq!(&response[HEADER_LEN..], &attribute, "{from}: XOR-MAPPED-ADDRESS");
        }
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_learns_its_ipv4_address() {
        let mapped = binding_success(transaction(), "[::ffff:192.0.2.1]:32853".parse().unwrap());
        let plain = binding_success(transaction(), "192.0.2.1:32853".parse().unwrap());
        assert_eq!(mapped, plain);
    }
}
