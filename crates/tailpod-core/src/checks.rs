//! The invariants the fuzz targets check, as functions that panic when one breaks, so the
//! fuzzers (`fuzz/`) and the replay of what they found (`tests/fuzz_regressions.rs`) check the
//! same thing. Not part of the API.

use crate::merge::{apply_transforms, substitute_name};
use crate::unit::{Section, UnitFile};

fn entries(file: &UnitFile) -> Vec<(String, String, String)> {
    file.entries().map(|(s, e)| (s.to_owned(), e.key().to_owned(), e.value().to_owned())).collect()
}

/// `text` is a spec and up to two transforms (`_base`, then the directory's), separated by NUL.
/// The merge never panics, never loses a spec entry, and its text reads back to the same
/// entries.
pub fn merge_keeps_every_entry(text: &str) {
    let mut parts = text.splitn(3, '\0');
    let spec = UnitFile::parse(parts.next().unwrap_or_default());
    let transforms: Vec<UnitFile> = parts.map(UnitFile::parse).collect();
    let merged = apply_transforms(&spec, &transforms);
    let have = entries(&merged);
    let mut rest = have.iter();
    for entry in entries(&spec) {
        assert!(rest.any(|e| *e == entry), "lost {entry:?}");
    }
    let text = merged.to_string();
    assert_eq!(entries(&UnitFile::parse(&text)), have);
    let _ = substitute_name(&text, "web");
}

/// Parse, write, parse again: the text is stable, and so is what systemd sees (keys and
/// values; a dangling continuation is ended when written, so raw text and line numbers may
/// change).
pub fn parse_round_trips(text: &str) {
    let once = UnitFile::parse(text);
    let written = once.to_string();
    let twice = UnitFile::parse(&written);
    assert_eq!(twice.to_string(), written);
    assert_eq!(once.sections.len(), twice.sections.len());
    let pairs = |s: &Section| {
        s.entries().map(|e| (e.key().to_owned(), e.value().to_owned())).collect::<Vec<_>>()
    };
    for (a, b) in once.sections.iter().zip(&twice.sections) {
        assert_eq!(a.name(), b.name());
        assert_eq!(pairs(a), pairs(b), "entries changed in [{}]", a.name());
    }
    let _ = once.problems();
}
