//! Every input the fuzzers once broke on (`fuzz/regressions/TARGET-what`), replayed through the
//! same checks the fuzz targets run, so a regression fails `cargo test`, not only a fuzz run.
// The crate does no I/O (its clippy.toml); this test reads the saved fuzz findings.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;

use tailpod_core::checks::{merge_keeps_every_entry, parse_round_trips};

#[test]
fn every_saved_fuzz_finding_still_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions") {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name").to_owned();
        let bytes = std::fs::read(&path).expect("readable");
        // What the target saw: its &str comes from `arbitrary`, which takes the input's longest
        // valid UTF-8 prefix.
        let valid = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = std::str::from_utf8(&bytes[..valid]).expect("a valid prefix");
        match name.split('-').next() {
            Some("merge") => merge_keeps_every_entry(text),
            Some("parse") => parse_round_trips(text),
            _ => panic!("{name}: name it after its target (merge-… or parse-…)"),
        }
        replayed += 1;
    }
    assert!(replayed >= 3, "only {replayed} findings in {}", dir.display());
}
