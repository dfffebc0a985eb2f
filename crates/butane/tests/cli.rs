//! The `butane` binary behaves like the real one: config on stdout or `-o`, warnings on stderr
//! and fatal under `--strict`, errors with line and column.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn butane(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_butane"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const DECIMAL_MODE: &str =
    "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n      mode: 644\n";

#[test]
fn warnings_are_fatal_only_under_strict_and_errors_are_located() {
    let out = butane(&[], DECIMAL_MODE);
    assert!(out.status.success());
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["storage"]["files"][0]["mode"], 644);
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(warning.contains("$.storage.files.0.mode, line 6 col 13"), "{warning}");

    let strict = butane(&["--strict"], DECIMAL_MODE);
    assert_eq!(strict.status.code(), Some(1));
    assert!(strict.stdout.is_empty());

    let broken = butane(&[], "variant: fcos\nversion: 1.5.0\nstorage: [\n");
    assert_eq!(broken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("line"), "{broken:?}");

    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.ign");
    let out = butane(&["--pretty", "-o", output.to_str().unwrap()], DECIMAL_MODE);
    assert!(out.status.success() && out.stdout.is_empty());
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(written.starts_with("{\n  \"ignition\""), "{written}");
}
