//! Parse, write, parse again: the entries and the text must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The check lives in tailpod-core, so `tests/fuzz_regressions.rs` replays findings through it.
fuzz_target!(|text: &str| tailpod_core::checks::parse_round_trips(text));
