//! The whole translation (YAML, Butane's sugar, Ignition's schema and rules) on arbitrary text,
//! strict and not: never a panic, and a config it returns always serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let options = butane::Options::default();
    for strict in [false, true] {
        if let Ok((config, _)) = butane::butane(text, &options, strict) {
            assert!(butane::to_json(&config, false).ends_with('\n'));
        }
    }
});
