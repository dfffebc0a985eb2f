//! ARCHITECTURE.md is a codemap: every file or directory it names must exist, so it cannot go
//! stale silently; every crate keeps the workspace's lints; test builds stay small on disk.

use std::path::Path;
use std::process::Command;

/// Named in ARCHITECTURE.md but never committed: made by `build-ign`/`dist`, or kept local.
const NOT_COMMITTED: &[&str] = &["butane/release.bu", "release.bu", "secrets.bu"];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn tracked_files() -> Vec<String> {
    let out = Command::new("git").arg("ls-files").current_dir(root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// The `code` spans that name a file or directory of this repo.
fn named_paths(text: &str) -> Vec<&str> {
    let file_like = |t: &str| {
        [".rs", ".yml", ".bu", ".example", ".toml"].iter().any(|ext| t.ends_with(ext))
            || t.ends_with('/')
            || t.starts_with("tests/")
    };
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            !t.contains([' ', '*', '<']) && !t.starts_with('/') && !t.starts_with("shared/")
        })
        .filter(|t| file_like(t))
        .collect()
}

/// The names among `named` that no tracked file or directory answers to.
fn missing<'a>(named: Vec<&'a str>, files: &[String]) -> Vec<&'a str> {
    named
        .into_iter()
        .filter(|name| !NOT_COMMITTED.contains(name))
        .filter(|name| {
            let name = name.trim_end_matches('/');
            !files.iter().any(|f| {
                f == name
                    || f.ends_with(&format!("/{name}"))
                    || f.starts_with(&format!("{name}/"))
                    || f.contains(&format!("/{name}/"))
            })
        })
        .collect()
}

#[test]
fn every_path_the_codemap_names_exists() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let named = named_paths(&text);
    assert!(named.len() > 50, "the codemap names only {} paths: {named:?}", named.len());
    let missing = missing(named, &tracked_files());
    assert!(missing.is_empty(), "ARCHITECTURE.md names what is not in the repo: {missing:?}");
}

#[test]
fn a_stale_name_is_caught() {
    let files = ["crates/quadsync/src/repo.rs".to_owned(), "xtask/src/testbox/mod.rs".to_owned()];
    let named = named_paths(
        "- `repo.rs`: fetch. `gone.rs`: removed. `testbox/`, `boxes/`. `Type::method`, `a b`",
    );
    assert_eq!(named, ["repo.rs", "gone.rs", "testbox/", "boxes/"]);
    assert_eq!(missing(named, &files), ["gone.rs", "boxes/"]);
}

#[test]
fn every_crate_inherits_the_workspace_lints() {
    let manifests: Vec<String> = tracked_files()
        .into_iter()
        .filter(|f| f.ends_with("Cargo.toml") && f != "Cargo.toml")
        .collect();
    assert!(manifests.len() >= 6, "{manifests:?}");
    for manifest in manifests {
        let text = std::fs::read_to_string(root().join(&manifest)).unwrap();
        // The fuzz workspaces stand apart (nightly, their own lints).
        if text.contains("[workspace]") {
            continue;
        }
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{manifest} does not inherit the workspace lints"
        );
    }
}

/// A CI run once ran out of disk: with full debug info every test binary weighed about 320 MB.
/// The dev profile keeps line tables only, and dependencies none.
#[test]
fn test_builds_stay_small_on_disk() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for section in [
        "[profile.dev]\ndebug = \"line-tables-only\"",
        "[profile.dev.package.\"*\"]\ndebug = false",
    ] {
        assert!(manifest.contains(section), "Cargo.toml lost `{section}`");
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("export CARGO_INCREMENTAL=0"), ".ci/run builds incrementally again");
}

/// quadsync runs as root: every process it starts goes through `system::run_command` (a
/// timeout, captured output), which its clippy.toml enforces for the rest of the crate.
#[test]
fn quadsync_starts_processes_in_one_place() {
    let rules = std::fs::read_to_string(root().join("crates/quadsync/clippy.toml")).unwrap();
    for method in ["spawn", "output", "status"] {
        let path = format!("\"std::process::Command::{method}\"");
        assert!(rules.contains(&path), "crates/quadsync/clippy.toml no longer refuses {method}");
    }
    let system = std::fs::read_to_string(root().join("crates/quadsync/src/system.rs")).unwrap();
    assert_eq!(system.matches("#[allow(clippy::disallowed_methods)]").count(), 1);
}

/// tailpod-core is pure: its clippy.toml refuses files, processes, sockets and the environment,
/// and only its tests, which read their data files, are let off.
#[test]
fn tailpod_core_does_no_io() {
    let rules = std::fs::read_to_string(root().join("crates/tailpod-core/clippy.toml")).unwrap();
    for path in
        ["std::fs::read_to_string", "std::fs::File", "std::process::Command", "std::env::var"]
    {
        assert!(
            rules.contains(&format!("\"{path}\"")),
            "tailpod-core's clippy.toml no longer refuses {path}"
        );
    }
    let src = root().join("crates/tailpod-core/src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains("clippy::disallowed_"),
                    "{} lets itself off",
                    path.display()
                );
            }
        }
    }
}
