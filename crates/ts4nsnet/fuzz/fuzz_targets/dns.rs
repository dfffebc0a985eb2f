//! What a container sends to 100.100.100.100:53, and the host's resolv.conf: any bytes parse to
//! a query or to nothing, and every answer built from a query is a well-formed reply to it.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use ts4nsnet::dns;

fuzz_target!(|data: &[u8]| {
    if let Some(query) = dns::parse_query(data) {
        for reply in [
            dns::answer(&query, Ipv4Addr::new(100, 64, 0, 1), Ipv6Addr::LOCALHOST),
            dns::error(&query, 3),
        ] {
            assert!(reply.len() >= 12, "a reply has a header");
            assert_eq!(reply[..2], data[..2], "a reply carries the query's id");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dns::upstream_from_resolv_conf(text);
    }
});
