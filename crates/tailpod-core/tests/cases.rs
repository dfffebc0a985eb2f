//! Runs every `tests/cases/*.case` file; see `tests/cases/README.md` for the format.
// The crate does no I/O (its clippy.toml); this test reads its case files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt::Write as _;
use std::path::Path;

use tailpod_core::merge::{apply_transforms, substitute_name};
use tailpod_core::unit::UnitFile;

#[derive(Default)]
struct Case {
    spec: Option<String>,
    transforms: Vec<String>,
    name: Option<String>,
    semantic: Option<String>,
    exact: Option<String>,
}

fn unescape(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                other => panic!("unknown escape \\{other:?} in {line:?}"),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

fn parse_case(text: &str) -> Result<Case, String> {
    let mut case = Case::default();
    let mut blocks: Vec<(String, bool, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(header) = line.strip_prefix("--- ") {
            let mut words = header.split_whitespace();
            let name = words.next().ok_or("block without a name")?.to_owned();
            let escaped = match words.next() {
                None => false,
                Some("escaped") => true,
                Some(other) => return Err(format!("unknown block modifier {other:?}")),
            };
            blocks.push((name, escaped, String::new()));
        } else if let Some((_, _, body)) = blocks.last_mut() {
            body.push_str(line);
        } else if !line.starts_with('#') {
            return Err(format!("text before the first block: {line:?}"));
        }
    }
    for (name, escaped, body) in blocks {
        let body = if escaped { unescape(body.trim_end_matches('\n')) } else { body };
        match name.as_str() {
            "spec" => case.spec = Some(body),
            "transform" => case.transforms.push(body),
            "name" => case.name = Some(body.trim().to_owned()),
            "semantic" => case.semantic = Some(body),
            "exact" => case.exact = Some(body),
            other => return Err(format!("unknown block {other:?}")),
        }
    }
    if case.semantic.is_none() && case.exact.is_none() {
        return Err("a case needs a `semantic` or an `exact` block".into());
    }
    Ok(case)
}

/// Sections and their entries, in order: what systemd and Quadlet see.
fn semantics(file: &UnitFile) -> Vec<(String, Vec<(String, String)>)> {
    file.sections
        .iter()
        .map(|s| {
            let entries = s.entries().map(|e| (e.key().to_owned(), e.value().to_owned())).collect();
            (s.name().to_owned(), entries)
        })
        .collect()
}

fn run(case: &Case) -> Result<(), String> {
    let spec = UnitFile::parse(case.spec.as_deref().ok_or("no spec block")?);
    let transforms: Vec<UnitFile> = case.transforms.iter().map(|t| UnitFile::parse(t)).collect();
    let merged = apply_transforms(&spec, &transforms).to_string();
    let actual = match &case.name {
        Some(name) => substitute_name(&merged, name),
        None => merged,
    };
    if let Some(exact) = &case.exact
        && &actual != exact
    {
        return Err(format!("exact output differs\n  expected: {exact:?}\n  actual:   {actual:?}"));
    }
    if let Some(semantic) = &case.semantic {
        let expected = semantics(&UnitFile::parse(semantic));
        let got = semantics(&UnitFile::parse(&actual));
        if expected != got {
            return Err(format!(
                "sections or entries differ\n  expected: {expected:?}\n  actual:   {got:?}\n  output:   {actual:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn reference_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 20,
        "expected the reference cases in {}, found {}",
        dir.display(),
        paths.len()
    );

    let mut failures = String::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("readable case");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Err(why) = parse_case(&text).and_then(|case| run(&case)) {
            let _ = writeln!(failures, "{name}: {why}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{failures}",
        failures.lines().filter(|l| l.contains(".case:")).count()
    );
}
