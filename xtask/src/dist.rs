//! `cargo xtask dist`: the release binaries, named `<tool>-<version>-linux-<arch>`, and
//! `SHA256SUMS` (the `sha256sum -c` format) in `dist/`.
//!
//! Release profile (LTO, one codegen unit, stripped, panic=abort), `--locked`, and the build's
//! paths remapped, so two builds of one commit give the same bytes wherever they run. Binaries
//! link glibc dynamically: static glibc breaks NSS user lookups (quadsync's), and a musl target is
//! not installed here.
//!
//! `--update-butane` writes `butane/release.bu`, the overlay that makes a host download these
//! binaries at first boot with their hashes, so a hash is never copied by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tailpod_core::located::at;

/// The binaries a host runs.
pub const TOOLS: [&str; 3] = ["quadsync", "tailmint", "ts4nsnet"];

/// The Cargo profile each tool ships with: ts4nsnet carries packets (`release`, speed);
/// quadsync and tailmint spend their time waiting on git, the network and processes, and ship
/// on every host (`release-small`, size: 4.6 + 2.2 MB instead of 6.0 + 2.8).
fn profile(tool: &str) -> &'static str {
    if tool == "ts4nsnet" { "release" } else { "release-small" }
}

/// What ts4nsnet's `--version` carries when built with its `test-insecure` feature.
const INSECURE_MARKER: &[u8] = b"test-insecure: ";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// What a build is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// A release: no test-only features, and dist refuses a binary that has them.
    Release,
    /// The end-to-end box only: ts4nsnet with `test-insecure`, so the box's containers can
    /// join the loopback test tailnet (plain-http control key, self-signed DERP). Never
    /// published; `cargo xtask dist` cannot make it.
    BoxTest,
}

/// The generated overlay.
pub const RELEASE_BU: &str = "release.bu";

/// The default base URL of a release's files.
pub fn default_release_url(version: &str) -> String {
    format!("https://github.com/tailpod/tailpod/releases/download/v{version}")
}

/// The workspace version, from its manifest.
pub fn version() -> Result<String, String> {
    let manifest =
        std::fs::read_to_string(crate::root().join("Cargo.toml")).map_err(|e| e.to_string())?;
    let in_package =
        manifest.split("[workspace.package]").nth(1).ok_or("no [workspace.package]")?;
    in_package
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .ok_or_else(|| "no workspace version".into())
}

/// `x86_64` for `x86_64-unknown-linux-gnu`.
fn arch(target: &str) -> &str {
    target.split('-').next().unwrap_or(target)
}

fn host_target() -> Result<String, String> {
    let out = Command::new("rustc").arg("-vV").output().map_err(|e| format!("rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV has no host".into())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One built file.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub tool: String,
    pub arch: String,
    pub sha256: String,
    pub size: u64,
}

/// Builds the binaries for `targets` (the host's if empty) into `out`, writes `SHA256SUMS`.
/// `target_dir` is cargo's (a separate one keeps dev builds apart).
pub fn dist(
    targets: &[String],
    out: &Path,
    target_dir: &Path,
    flavor: Flavor,
) -> Result<Vec<Artifact>, String> {
    let version = version()?;
    let targets = if targets.is_empty() { vec![host_target()?] } else { targets.to_vec() };
    let root = crate::root();
    let home = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
    });
    let rustflags = format!(
        "--remap-path-prefix={}=/cargo --remap-path-prefix={}=/tailpod --remap-path-prefix={}=/target",
        home.display(),
        root.display(),
        target_dir.display()
    );
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).map_err(at(out))?;
    let mut artifacts = Vec::new();
    for target in &targets {
        for build_profile in ["release", "release-small"] {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = Command::new(cargo);
            command.args(["build", "--profile", build_profile, "--locked", "--target", target]);
            for tool in TOOLS.iter().filter(|t| profile(t) == build_profile) {
                command.args(["-p", tool]);
            }
            if flavor == Flavor::BoxTest && build_profile == profile("ts4nsnet") {
                command.args(["--features", "ts4nsnet/test-insecure"]);
            }
            let status = command
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", target_dir)
                .env("RUSTFLAGS", &rustflags)
                .env("SOURCE_DATE_EPOCH", "0")
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("the {build_profile} build for {target} failed"));
            }
        }
        for tool in TOOLS {
            let built = target_dir.join(target).join(profile(tool)).join(tool);
            let bytes = std::fs::read(&built).map_err(at(&built))?;
            if flavor == Flavor::Release && contains(&bytes, INSECURE_MARKER) {
                return Err(format!("{}: built with test-only features", built.display()));
            }
            let name = format!("{tool}-{version}-linux-{}", arch(target));
            std::fs::write(out.join(&name), &bytes).map_err(|e| e.to_string())?;
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(out.join(&name), mode).map_err(|e| e.to_string())?;
            artifacts.push(Artifact {
                name,
                tool: tool.into(),
                arch: arch(target).into(),
                sha256: sha256_hex(&bytes),
                size: bytes.len() as u64,
            });
        }
    }
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    let sums: String = artifacts.iter().map(|a| format!("{}  {}\n", a.sha256, a.name)).collect();
    std::fs::write(out.join("SHA256SUMS"), sums).map_err(|e| e.to_string())?;
    Ok(artifacts)
}

/// Parses `SHA256SUMS`: (file name, hex hash).
pub fn read_sums(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(at(path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (hash, name) =
                l.split_once("  ").ok_or_else(|| format!("{}: bad line {l:?}", path.display()))?;
            Ok((name.trim_start_matches('*').to_owned(), hash.to_owned()))
        })
        .collect()
}

/// The Butane overlay that installs `arch`'s binaries from `base_url`, checked by hash.
pub fn release_butane(
    sums: &[(String, String)],
    arch: &str,
    base_url: &str,
) -> Result<String, String> {
    let mut text = String::from(
        "# Generated by `cargo xtask dist --update-butane` from dist/SHA256SUMS: do not edit.\n\
         # Installs the release binaries at first boot; Ignition refuses any whose hash differs.\n\
         variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n",
    );
    for tool in TOOLS {
        let (name, hash) = sums
            .iter()
            .find(|(name, _)| {
                name.starts_with(&format!("{tool}-")) && name.ends_with(&format!("-linux-{arch}"))
            })
            .ok_or_else(|| format!("SHA256SUMS has no {tool} for {arch}"))?;
        text.push_str(&format!(
            "    - path: /usr/local/bin/{tool}\n      mode: 0755\n      overwrite: true\n      contents:\n        source: {}/{name}\n        verification:\n          hash: sha256-{hash}\n",
            base_url.trim_end_matches('/')
        ));
    }
    Ok(text)
}

/// build-ign's check: every binary `release.bu` installs has the hash `SHA256SUMS` gives it.
pub fn check_release_butane(release_bu: &str, sums: &[(String, String)]) -> Result<(), String> {
    let mut source = None;
    for line in release_bu.lines().map(str::trim) {
        if let Some(url) = line.strip_prefix("source: ") {
            source = url.rsplit('/').next().map(str::to_owned);
        } else if let Some(hash) = line.strip_prefix("hash: sha256-") {
            let name = source.take().ok_or("release.bu: a hash without a source")?;
            match sums.iter().find(|(n, _)| *n == name) {
                Some((_, expected)) if expected == hash => {}
                Some((_, expected)) => {
                    return Err(format!(
                        "butane/{RELEASE_BU} gives {name} the hash {hash}, but dist/SHA256SUMS says {expected}: \
                         run cargo xtask dist --update-butane"
                    ));
                }
                None => {
                    return Err(format!(
                        "butane/{RELEASE_BU} installs {name}, which dist/SHA256SUMS does not list"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums() -> Vec<(String, String)> {
        TOOLS
            .iter()
            .map(|t| (format!("{t}-0.1.0-linux-x86_64"), format!("{:064x}", t.len())))
            .collect()
    }

    #[test]
    fn release_butane_installs_every_tool_by_hash_and_build_ign_checks_it() {
        let text = release_butane(&sums(), "x86_64", "http://127.0.0.1:8000/").unwrap();
        assert!(
            text.contains("source: http://127.0.0.1:8000/quadsync-0.1.0-linux-x86_64\n"),
            "{text}"
        );
        assert!(text.contains(&format!("hash: sha256-{:064x}", 8)), "{text}");
        check_release_butane(&text, &sums()).unwrap();
        let mut changed = sums();
        changed[1].1 = "f".repeat(64);
        let err = check_release_butane(&text, &changed).unwrap_err();
        assert!(
            err.contains("tailmint-0.1.0-linux-x86_64") && err.contains("--update-butane"),
            "{err}"
        );
        assert!(
            release_butane(&sums(), "aarch64", "u")
                .unwrap_err()
                .contains("no quadsync for aarch64")
        );
    }

    #[test]
    fn the_version_comes_from_the_workspace() {
        let version = version().unwrap();
        assert!(version.split('.').count() == 3, "{version}");
    }
}
