//! Merge arbitrary transforms into arbitrary specs: never panics, never loses a spec entry, and
//! the merged text reads back to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tailpod_core::merge::{apply_transforms, substitute_name};
use tailpod_core::unit::UnitFile;

fn entries(file: &UnitFile) -> Vec<(String, String, String)> {
    file.entries().map(|(s, e)| (s.to_owned(), e.key().to_owned(), e.value().to_owned())).collect()
}

fuzz_target!(|text: &str| {
    // NUL separates the spec from up to two transforms (`_base`, then the directory's).
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
});
