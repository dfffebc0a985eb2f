//! Merge arbitrary transforms into arbitrary specs: never panics, never loses a spec entry, and
//! the merged text reads back to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The check lives in tailpod-core, so `tests/fuzz_regressions.rs` replays findings through it.
fuzz_target!(|text: &str| tailpod_core::checks::merge_keeps_every_entry(text));
