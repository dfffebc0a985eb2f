//! The Quadlet model against data: every example of podman's documentation passes, and each
//! mistake in `tests/quadlet/mistakes/` is reported exactly as its `# expect:` lines say.
// The crate does no I/O (its clippy.toml); this test reads its example and mistake files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;

use tailpod_core::quadlet::{self, PodmanVersion, Severity};
use tailpod_core::unit::UnitFile;

fn files(dir: &str) -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/quadlet").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let extension = path.extension().unwrap().to_string_lossy().into_owned();
            (name, extension, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in {}", dir.display());
    files
}

fn report(text: &str, extension: &str) -> Vec<String> {
    let target = PodmanVersion::DEFAULT_TARGET;
    quadlet::check(&UnitFile::parse(text), extension, target)
        .into_iter()
        .map(|f| {
            let severity = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!("{} {severity}: {}", f.line, f.message)
        })
        .collect()
}

#[test]
fn every_example_of_podmans_documentation_passes() {
    for (name, extension, text) in files("podman-docs") {
        assert_eq!(report(&text, &extension), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn each_mistake_is_reported_with_its_line_and_what_was_meant() {
    for (name, extension, text) in files("mistakes") {
        let expected: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .map(str::to_owned)
            .collect();
        assert!(!expected.is_empty(), "{name} expects nothing");
        assert_eq!(report(&text, &extension), expected, "{name}");
    }
}
