//! A plain `cargo build --release` at the workspace root must never build an insecure binary.
//!
//! Cargo unifies features across everything one command builds, so a test-only crate that turns
//! on `test-insecure` (plain-http control keys, unverified DERP) would switch it on for the
//! released ts4nsnet too. The dependency graph of that exact build is checked here.

use std::path::Path;
use std::process::Command;

#[test]
fn a_plain_release_build_at_the_root_has_no_insecure_feature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // What `cargo build --release` builds: the default members, normal and build dependencies.
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--edges", "normal,build,features", "--prefix", "none"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let graph = String::from_utf8(out.stdout).unwrap();
    for tool in ["quadsync v", "tailmint v", "ts4nsnet v", "ts_control v"] {
        assert!(graph.lines().any(|l| l.starts_with(tool)), "{tool} is not in the graph:\n{graph}");
    }
    let insecure: Vec<&str> = graph.lines().filter(|l| l.contains("insecure")).collect();
    assert!(insecure.is_empty(), "a plain release build would turn on: {insecure:#?}");
    assert!(!graph.contains("tailnet-lab"), "the test tailnet is built by default");
}
