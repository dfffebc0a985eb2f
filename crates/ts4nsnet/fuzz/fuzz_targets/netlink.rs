//! The kernel's answers to ts4nsnet's netlink requests, as if they could be anything: an
//! acknowledgement is read or refused, never out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let seq = data.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let _ = ts4nsnet::netlink::ack_error(data, seq);
});
