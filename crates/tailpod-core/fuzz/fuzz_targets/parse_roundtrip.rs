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
        // What systemd sees: keys and values (a dangling continuation is ended when written,
        // so raw text and line numbers may change).
        let pairs = |s: &tailpod_core::unit::Section| {
            s.entries().map(|e| (e.key().to_owned(), e.value().to_owned())).collect::<Vec<_>>()
        };
        assert_eq!(pairs(a), pairs(b), "entries changed in [{}]", a.name());
    }
    let _ = once.problems();
});
