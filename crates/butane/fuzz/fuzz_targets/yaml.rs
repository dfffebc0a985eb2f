//! The YAML reader on arbitrary text: an answer or an error, never a panic, a hang or an
//! allocation out of proportion (aliases are expanded within a bound).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = butane::yaml::parse(text);
});
