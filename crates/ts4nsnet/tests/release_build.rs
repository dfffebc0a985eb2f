//! A plain `cargo build --release` at the workspace root must never build the test-only knobs
//! into a shipped tool: the test tailnet turns them on, and Cargo unifies features across what
//! one command builds. This asks Cargo's own resolver, as that command would run it.

use std::path::Path;
use std::process::Command;

/// Every package and feature `cargo build --release` at the root would build, one per line.
fn release_features(extra: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .args(["tree", "--offline", "--locked", "--edges", "features,normal,build"])
        .args(["--prefix", "none", "--format", "{p} {f}"])
        .args(extra)
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "cargo tree: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

fn assert_secure(tree: &str, tools: &[&str]) {
    for tool in tools {
        assert!(
            tree.lines().any(|l| l.starts_with(&format!("{tool} v"))),
            "{tool} is not built:\n{tree}"
        );
    }
    let insecure: Vec<&str> = tree.lines().filter(|l| l.contains("insecure")).collect();
    assert!(
        insecure.is_empty(),
        "a release build would turn on test-only knobs:\n{}",
        insecure.join("\n")
    );
    assert!(!tree.contains("tailnet-lab"), "a release build would build the test tailnet:\n{tree}");
}

#[test]
fn a_plain_release_build_has_no_test_only_knobs() {
    let tree = release_features(&[]);
    assert_secure(&tree, &["ts4nsnet", "tailnode", "quadsync", "tailmint"]);
}

#[test]
fn each_shipped_tool_alone_has_no_test_only_knobs() {
    for tool in ["ts4nsnet", "quadsync", "tailmint"] {
        assert_secure(&release_features(&["--package", tool]), &[tool]);
    }
}
