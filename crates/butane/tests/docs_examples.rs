//! Every example config from Butane's documentation, with the real butane's `--strict` output
//! (copied from shared/fixtures into tests/docs-examples), translated by ours and compared
//! semantically: JSON values equal once every data URL is decoded (gzip bytes differ between
//! implementations, so `compression` and the encoding are not compared, the content is).

use std::path::{Path, PathBuf};

use butane::{self, Options, dataurl};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docs-examples")
}

/// Replaces every data URL by the text it carries and drops `compression`.
fn decoded(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let compression = map.get("compression").and_then(Value::as_str);
            let mut out = serde_json::Map::new();
            for (key, child) in map {
                match (key.as_str(), child.as_str()) {
                    ("compression", _) => {}
                    ("source", Some(url)) if url.starts_with("data:") => {
                        let bytes = dataurl::decode(url, compression)
                            .unwrap_or_else(|e| panic!("{url}: {e}"));
                        out.insert(
                            key.clone(),
                            Value::String(format!("decoded:{}", String::from_utf8_lossy(&bytes))),
                        );
                    }
                    _ => {
                        out.insert(key.clone(), decoded(child));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(decoded).collect()),
        other => other.clone(),
    }
}

/// The fixtures' files dir, with the empty `tree/` directory git cannot keep.
fn files_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("files-dir")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::create_dir(dir.path().join("tree")).unwrap();
    dir
}

#[test]
fn docs_examples_match_the_real_butane() {
    let files = files_dir();
    let options = Options { files_dir: Some(files.path().to_owned()) };
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bu"))
        .collect();
    inputs.sort();
    assert!(inputs.len() > 90, "fixtures missing: {}", inputs.len());

    let (mut compared, mut refused, mut unsupported) = (0, 0, 0);
    let mut failures = Vec::new();
    for input in &inputs {
        let stem = input.file_name().unwrap().to_string_lossy().trim_end_matches(".bu").to_owned();
        let source = std::fs::read_to_string(input).unwrap();
        let result = butane::butane(&source, &options, true);
        let expected_json = fixtures().join(format!("{stem}.ign.json"));
        let expected_err = fixtures().join(format!("{stem}.stderr"));
        let version = source
            .lines()
            .find_map(|l| l.strip_prefix("version: "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !["1.4.0", "1.5.0", "1.6.0"].contains(&version.as_str()) {
            // Older versions are compared through their `.as-1.6.0` twins; these must be refused.
            match &result {
                Err(lines) if lines[0].contains("No translator exists for variant fcos") => {
                    unsupported += 1
                }
                other => failures
                    .push(format!("{stem}: version {version} should be refused, got {other:?}")),
            }
            continue;
        }
        match (result, expected_json.exists(), expected_err.exists()) {
            (Ok((config, _)), true, _) => {
                let expected: Value =
                    serde_json::from_str(&std::fs::read_to_string(&expected_json).unwrap())
                        .unwrap();
                if decoded(&config) != decoded(&expected) {
                    failures.push(format!(
                        "{stem}: differs\n  expected {}\n  ours     {}",
                        decoded(&expected),
                        decoded(&config)
                    ));
                } else {
                    compared += 1;
                }
            }
            (Err(lines), false, true) => {
                // Refused, and for butane's reasons: each of its lines (in its own words, less
                // the closing remark) is one of ours.
                let stderr = std::fs::read_to_string(&expected_err).unwrap();
                let reasons: Vec<&str> = stderr
                    .lines()
                    .map(|l| l.trim_start_matches("Error translating config: "))
                    .filter(|l| !l.starts_with("Config produced warnings"))
                    .collect();
                let missing: Vec<&&str> =
                    reasons.iter().filter(|r| !lines.iter().any(|l| l.contains(**r))).collect();
                if reasons.is_empty() || !missing.is_empty() {
                    failures.push(format!(
                        "{stem}: refused, but not for butane's reasons {missing:?}; ours: {}",
                        lines.join(" | ")
                    ));
                } else {
                    refused += 1;
                }
            }
            (Ok(_), _, true) => failures.push(format!("{stem}: butane refused it, we accepted it")),
            (Err(lines), _, _) => {
                failures.push(format!("{stem}: we refused it: {}", lines.join(" | ")))
            }
            (Ok(_), false, false) => failures.push(format!("{stem}: no expected output")),
        }
    }
    eprintln!(
        "{compared} equal to butane's output, {refused} refused like butane, {unsupported} older versions refused"
    );
    assert!(failures.is_empty(), "{} fixture(s) differ:\n{}", failures.len(), failures.join("\n"));
}
