//! Parse, write, parse again: the entries and the text must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailpod_core::unit::UnitFile;

fuzz_target!(|text: &str| {
    let once = UnitFile::parse(text);
    let written = once.to_string();
    let twice = UnitFile::parse(&written);
    assert_eq!(twice.to_string(), written);
    assert_eq!(once.sections.len(), twice.sections.len());
    for (a, b) in once.sections.iter().zip(&twice.sections) {
        assert_eq!(a.name(), b.name());
        assert!(a.entries().eq(b.entries()), "entries changed in [{}]", a.name());
    }
    let _ = once.problems();
});
