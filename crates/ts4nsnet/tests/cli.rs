//! The binary's own failures, without root: what reaches stderr and the exit code, for a command
//! line or a plugin request that cannot work. (The root tests cover the working paths.)

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::process::{Command, Output, Stdio};

/// Runs ts4nsnet with `args`, `stdin`, and only `env` in its environment (no `RUST_LOG` or
/// `TS_*` from the test's own).
fn ts4nsnet(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ts4nsnet"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A node's settings that pass validation and need no DNS.
const SETTINGS: [(&str, &str); 3] = [
    ("TS_AUTHKEY", "tskey-auth-x"),
    ("TS_HOSTNAME", "web"),
    ("TS_CONTROL_URL", "http://127.0.0.1:9"),
];

#[test]
fn one_fd_for_ready_and_exit_is_a_usage_error_before_it_is_adopted() {
    // An open fd the child inherits (pipe(2) without O_CLOEXEC), so adopting it would succeed
    // twice and its second close would abort.
    let (_read, write) = nix::unistd::pipe().unwrap();
    let fd = write.as_raw_fd().to_string();
    let args = ["-c", "-r", &fd, "-e", &fd, "--netns-type=path", "/nonexistent/netns", "tap0"];
    let out = ts4nsnet(&args, "", &SETTINGS);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains(&format!("--ready-fd and --exit-fd are both fd {fd}: each needs its own fd")),
        "{stderr}"
    );
    assert!(stderr.contains("Usage:"), "{stderr}");
}

#[test]
fn a_fatal_error_is_printed_once() {
    let netns = "/nonexistent/ts4nsnet-netns";
    let out = ts4nsnet(&["-c", "--netns-type=path", netns, "tap0"], "", &SETTINGS);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches(netns).count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("ts4nsnet: opening the network namespace {netns}: ")),
        "{stderr}"
    );
}

#[test]
fn a_plugin_error_is_answered_once() {
    let network = r#"{"name":"tailnet","driver":"ts4nsnet","options":{"hostname":"Bad_Name"}}"#;
    let out = ts4nsnet(&["create"], network, &[]);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        answer["error"],
        r#"network option hostname: hostname "Bad_Name" may hold only letters, digits and '-'"#
    );
    // netavark shows the plugin's stderr too: the error must not be there a second time.
    assert!(!stderr.contains("Bad_Name"), "{stderr}");
}
