//! Packets from the tailnet, the container and the internet's STUN servers: parsed or refused,
//! never a panic; a UDP packet that parses is rebuilt to one that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnode::{packet, stun};

fuzz_target!(|data: &[u8]| {
    let _ = packet::version_and_protocol(data);
    let _ = packet::echo_reply4(data);
    let _ = packet::too_big(data, 1280);
    let _ = stun::parse_binding_success(data);
    if let Some(udp) = packet::parse_udp4(data) {
        let rebuilt = packet::build_udp4(&udp);
        let again = packet::parse_udp4(&rebuilt).expect("a rebuilt packet parses");
        assert_eq!(again, udp);
    }
});
