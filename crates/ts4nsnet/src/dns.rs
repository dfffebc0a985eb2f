//! A small DNS responder on 100.100.100.100 inside the container, standing in for MagicDNS
//! (which tailscale-rs does not have): `peer` and `peer.TAILNET` get the peer's tailnet
//! addresses; other names go to the host's resolver when there is one, else REFUSED.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The address containers are given as their resolver (`DNS=100.100.100.100` in the Quadlet).
pub const QUAD100: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
pub const NXDOMAIN: u8 = 3;
pub const REFUSED: u8 = 5;
pub const SERVFAIL: u8 = 2;
const TTL: u32 = 60;

/// A question we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// Lowercased, without the final dot.
    pub name: String,
    pub qtype: u16,
    recursion_desired: bool,
    /// The question section as sent (name, type, class), echoed in the answer.
    question: &'a [u8],
}

/// Parses a standard query with one question.
pub fn parse_query(message: &[u8]) -> Option<Query<'_>> {
    if message.len() < 12 || message[2] & 0x80 != 0 || message[2] & 0x78 != 0 {
        return None; // a response, or not a standard query
    }
    if u16::from_be_bytes([message[4], message[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*message.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression pointers do not occur in a question
        }
        let label = message.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*message.get(at)?, *message.get(at + 1)?]);
    message.get(at + 2..at + 4)?;
    Some(Query {
        id: u16::from_be_bytes([message[0], message[1]]),
        name: labels.join("."),
        qtype,
        recursion_desired: message[2] & 0x01 != 0,
        question: &message[12..at + 4],
    })
}

fn header(query: &Query<'_>, rcode: u8, answers: u16) -> Vec<u8> {
    let mut out = query.id.to_be_bytes().to_vec();
    // QR, AA, RD as asked; RA set because we do resolve (or forward) for the container.
    out.push(0x84 | u8::from(query.recursion_desired));
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.question);
    out
}

/// An error answer (`NXDOMAIN`, `REFUSED`, `SERVFAIL`).
pub fn error(query: &Query<'_>, rcode: u8) -> Vec<u8> {
    header(query, rcode, 0)
}

/// The answer for a name we know: its A or AAAA record as asked, none for other types.
pub fn answer(query: &Query<'_>, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Vec<u8> {
    let data: Option<Vec<u8>> = match query.qtype {
        TYPE_A => Some(ipv4.octets().to_vec()),
        TYPE_AAAA => Some(ipv6.octets().to_vec()),
        _ => None,
    };
    let mut out = header(query, 0, u16::from(data.is_some()));
    if let Some(data) = data {
        out.extend_from_slice(&[0xc0, 12]); // the name: a pointer to the question's
        out.extend_from_slice(&query.qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// Whether `name` is for the tailnet: a bare name, or one under the tailnet's suffix.
pub fn is_tailnet_name(name: &str, tailnet: Option<&str>) -> bool {
    !name.contains('.') || tailnet.is_some_and(|t| name.ends_with(&format!(".{t}")))
}

/// The host's first resolver from `resolv.conf` text, unless it is quad-100 itself.
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .find(|ip| *ip != std::net::IpAddr::V4(QUAD100))
        .map(|ip| SocketAddr::new(ip, 53))
}

/// Asks `upstream` (from the host's network namespace) and returns its answer.
pub async fn forward(upstream: SocketAddr, message: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr =
        if upstream.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.send_to(message, upstream).await.ok()?;
    let mut buffer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buffer)).await;
    let (len, from) = read.ok()?.ok()?;
    (from == upstream && len >= 2 && buffer[..2] == message[..2]).then(|| buffer[..len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn parses_a_question() {
        let message = query("Peer.Lab.TS.net", TYPE_A);
        let q = parse_query(&message).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (0x1234, "peer.lab.ts.net", TYPE_A));
    }

    #[test]
    fn answers_a_and_aaaa_and_nothing_else() {
        let (v4, v6) = (Ipv4Addr::new(100, 64, 0, 2), "fd7a:115c:a1e0::2".parse().unwrap());
        let message = query("peer", TYPE_A);
        let a = answer(&parse_query(&message).unwrap(), v4, v6);
        assert_eq!(&a[..4], &[0x12, 0x34, 0x85, 0x80]);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        assert_eq!(&a[a.len() - 4..], &[100, 64, 0, 2]);
        let message = query("peer", TYPE_AAAA);
        let aaaa = answer(&parse_query(&message).unwrap(), v4, v6);
        assert_eq!(&aaaa[aaaa.len() - 16..], &v6.octets());
        let message = query("peer", 16);
        let txt = answer(&parse_query(&message).unwrap(), v4, v6);
        assert_eq!((u16::from_be_bytes([txt[6], txt[7]]), txt[3] & 0x0f), (0, 0), "NODATA");
    }

    #[test]
    fn errors_carry_the_code_and_question() {
        let message = query("nope", TYPE_A);
        let q = parse_query(&message).unwrap();
        let e = error(&q, NXDOMAIN);
        assert_eq!(e[3] & 0x0f, NXDOMAIN);
        assert_eq!(&e[12..], &message[12..]);
    }

    #[test]
    fn responses_and_garbage_are_not_queries() {
        let mut response = query("peer", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), None);
        assert_eq!(parse_query(&[0; 5]), None);
        let mut truncated = query("peer", TYPE_A);
        truncated.truncate(truncated.len() - 3);
        assert_eq!(parse_query(&truncated), None);
    }

    #[test]
    fn tailnet_names_and_upstreams() {
        assert!(is_tailnet_name("peer", Some("lab.ts.net")));
        assert!(is_tailnet_name("peer.lab.ts.net", Some("lab.ts.net")));
        assert!(!is_tailnet_name("example.com", Some("lab.ts.net")));
        let conf = "# x\nnameserver 100.100.100.100\nnameserver 10.0.0.2\n";
        assert_eq!(upstream_from_resolv_conf(conf), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(upstream_from_resolv_conf("search x\n"), None);
    }
}
