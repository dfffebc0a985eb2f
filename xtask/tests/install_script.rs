//! `scripts/install.sh` under Debian's `sh` (dash) against a release directory served on
//! loopback: it installs what SHA256SUMS vouches for, and refuses a tampered binary, a
//! truncated download and a binary SHA256SUMS does not list, leaving what was installed alone.
//! (The box runs it against real `cargo xtask dist` output too.)

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use xtask::dist::sha256_hex;
use xtask::testbox::serve::serve;

const VERSION: &str = "9.8.7";

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install.sh")
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    }
}

/// A release directory as `cargo xtask dist` lays it out: `TOOL-VERSION-linux-ARCH` files and
/// SHA256SUMS. `listed` says which tools SHA256SUMS names.
fn release(dir: &Path, files: &[(&str, &[u8])], listed: &[&str]) {
    let mut sums = String::new();
    for (tool, bytes) in files {
        let name = format!("{tool}-{VERSION}-linux-{}", arch());
        std::fs::write(dir.join(&name), bytes).unwrap();
        if listed.contains(tool) {
            sums.push_str(&format!("{}  {name}\n", sha256_hex(bytes)));
        }
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

fn install(url: &str, prefix: &Path, tools: &[&str]) -> Output {
    Command::new("sh")
        .arg(script())
        .args(["--version", VERSION, "--url", url, "--prefix"])
        .arg(prefix)
        .args(tools)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn installs_only_what_sha256sums_vouches_for() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("release");
    std::fs::create_dir(&served).unwrap();
    let quadsync: &[u8] = b"\x7fELF quadsync, the real one";
    let tailmint: &[u8] = b"\x7fELF tailmint, the real one";
    release(&served, &[("quadsync", quadsync), ("tailmint", tailmint)], &["quadsync", "tailmint"]);
    let url = serve(served.clone()).unwrap();
    let prefix = tmp.path().join("prefix");

    let out = install(&url, &prefix, &["quadsync", "tailmint"]);
    assert!(out.status.success(), "{}", text(&out));
    for (tool, bytes) in [("quadsync", quadsync), ("tailmint", tailmint)] {
        let installed = prefix.join("bin").join(tool);
        assert_eq!(std::fs::read(&installed).unwrap(), bytes);
        assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755);
    }

    // Tampered after SHA256SUMS was written, or cut short on the way: refused, and neither
    // tool of the run replaced (every download is checked before anything is installed).
    let name = |tool: &str| served.join(format!("{tool}-{VERSION}-linux-{}", arch()));
    std::fs::write(name("tailmint"), b"\x7fELF tailmint, with a backdoor").unwrap();
    std::fs::write(name("quadsync"), b"\x7fELF quadsync, v2").unwrap();
    let sums = std::fs::read_to_string(served.join("SHA256SUMS")).unwrap();
    let sums = sums.replace(&sha256_hex(quadsync), &sha256_hex(b"\x7fELF quadsync, v2"));
    std::fs::write(served.join("SHA256SUMS"), sums).unwrap();
    let out = install(&url, &prefix, &["quadsync", "tailmint"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not match SHA256SUMS"), "{}", text(&out));
    assert_eq!(std::fs::read(prefix.join("bin/quadsync")).unwrap(), quadsync);
    assert_eq!(std::fs::read(prefix.join("bin/tailmint")).unwrap(), tailmint);

    std::fs::write(name("tailmint"), &tailmint[..tailmint.len() / 2]).unwrap();
    let out = install(&url, &prefix, &["tailmint"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not match SHA256SUMS"), "{}", text(&out));

    // A binary SHA256SUMS does not list is never installed, whatever is on the server.
    release(&served, &[("ts4nsnet", b"\x7fELF ts4nsnet")], &[]);
    let out = install(&url, &prefix, &["ts4nsnet"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("SHA256SUMS has no line for ts4nsnet"), "{}", text(&out));
    assert!(!prefix.join("bin/ts4nsnet").exists());

    // No server, an unknown tool, no tool: a failure, a usage error, a usage error.
    let out = install("http://127.0.0.1:1", &prefix, &["tailmint"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("downloading http://127.0.0.1:1/SHA256SUMS failed"));
    assert_eq!(install(&url, &prefix, &["bash"]).status.code(), Some(2));
    assert_eq!(install(&url, &prefix, &[]).status.code(), Some(2));
    let left: Vec<_> = std::fs::read_dir(prefix.join("bin")).unwrap().collect();
    assert_eq!(left.len(), 2, "no temporary files left: {left:?}");
}

#[test]
fn its_default_version_is_the_workspaces() {
    let script = std::fs::read_to_string(script()).unwrap();
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    assert!(
        script.contains(&format!("\nVERSION={version}\n")),
        "install.sh's VERSION is not {version}"
    );
}
