//! `cargo xtask build-ign`: the host's Ignition config.
//!
//! `butane/tailpod.bu` is the base; every other `butane/*.bu` is an overlay (sorted by name), and
//! `butane/secrets.bu` (never committed; made from `secrets.bu.example`) applies last. Each is
//! translated with `--strict` (files relative to `butane/`), they are merged (see
//! [`crate::butane::merge::overlay_merge`]), `/etc/tailpod/build` records the git commit, and the
//! merged result is validated as Ignition would before it is written, mode 0600: it holds secrets.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::butane::{self, Options, merge, validate};

/// Marks a secrets overlay made by `--throwaway-secrets`.
pub const THROWAWAY_MARK: &str = "# THROWAWAY SECRETS";

/// What to build.
#[derive(Debug, Clone)]
pub struct Build {
    /// The directory with `tailpod.bu`, the overlays and the files they embed.
    pub dir: PathBuf,
    pub output: PathBuf,
    /// Make a throwaway `secrets.bu` from the example when there is none.
    pub throwaway_secrets: bool,
    /// Write this Ignition version (only `3.3.0` may differ from the base's, for older Ignition).
    pub ignition_version: Option<String>,
    /// Recorded in `/etc/tailpod/build`; `None` asks git.
    pub build_id: Option<String>,
    /// The `SHA256SUMS` that `release.bu` must agree with [default: dist/SHA256SUMS].
    pub sums: Option<PathBuf>,
}

/// The result: where it went and what to tell the user.
#[derive(Debug)]
pub struct Built {
    pub config: Value,
    pub notes: Vec<String>,
}

/// `<short commit>[-dirty]`, or `unknown` outside a git checkout.
pub fn git_build_id(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git").args(args).current_dir(dir).output().ok().filter(|o| o.status.success())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let id = String::from_utf8_lossy(&head.stdout).trim().to_owned();
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|o| !o.stdout.is_empty());
            if dirty { format!("{id}-dirty") } else { id }
        }
        None => "unknown".into(),
    }
}

fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    format!("{:016x}", hasher.finish())
}

/// A throwaway `secrets.bu`: the example with every `REPLACE-ME` placeholder given a random value.
fn write_throwaway(example: &Path, target: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(example)
        .map_err(|e| format!("reading {}: {e}", example.display()))?;
    let mut out = format!(
        "{THROWAWAY_MARK}: made by `cargo xtask build-ign --throwaway-secrets` from {}.\n\
         # Every value is random and useless. Replace this file before provisioning a real host.\n",
        example.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    );
    let mut rest = text.as_str();
    while let Some(at) = rest.find("REPLACE-ME") {
        out.push_str(&rest[..at]);
        out.push_str(&format!("throwaway-{}", random_hex()));
        rest = &rest[at + "REPLACE-ME".len()..];
    }
    out.push_str(rest);
    write_private(target, &out)
}

/// Writes `text` with mode 0600, whatever the file's mode was.
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let error = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)
}

fn translate_file(path: &Path, dir: &Path) -> Result<Value, String> {
    let source =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let options = Options { files_dir: Some(dir.to_owned()) };
    butane::butane(&source, &options, true)
        .map(|(config, _)| config)
        .map_err(|lines| format!("{}:\n  {}", path.display(), lines.join("\n  ")))
}

/// Builds the config; see the module docs.
pub fn build(build: &Build) -> Result<Built, String> {
    let dir = &build.dir;
    let mut notes = Vec::new();
    let secrets = dir.join("secrets.bu");
    let example = dir.join("secrets.bu.example");
    if !secrets.exists() {
        if !build.throwaway_secrets {
            return Err(format!(
                "{} is missing. Copy {} to it and fill in your values (it is never committed), \
                 or pass --throwaway-secrets to make one with random values, for trying things out.",
                secrets.display(),
                example.display()
            ));
        }
        write_throwaway(&example, &secrets)?;
        notes.push(format!(
            "made a THROWAWAY {} with random values: not for a real host",
            secrets.display()
        ));
    } else if std::fs::read_to_string(&secrets).is_ok_and(|t| t.starts_with(THROWAWAY_MARK)) {
        notes.push(format!("{} holds THROWAWAY secrets: not for a real host", secrets.display()));
    }

    let release = dir.join(crate::dist::RELEASE_BU);
    let sums = build.sums.clone().unwrap_or_else(|| crate::root().join("dist/SHA256SUMS"));
    match (std::fs::read_to_string(&release), sums.exists()) {
        (Ok(text), true) => crate::dist::check_release_butane(&text, &crate::dist::read_sums(&sums)?)?,
        (Ok(_), false) => notes.push(format!("{} is not checked: no {}", release.display(), sums.display())),
        (Err(_), _) => notes.push(format!(
            "no {}: this config installs no tailpod binaries (cargo xtask dist --update-butane makes it)",
            release.display()
        )),
    }

    let base_path = dir.join("tailpod.bu");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bu") && *p != base_path && *p != secrets)
        .collect();
    overlays.sort();
    overlays.push(secrets);

    let mut config = translate_file(&base_path, dir)?;
    let version = config["ignition"]["version"].as_str().unwrap_or_default().to_owned();
    for overlay in &overlays {
        let translated = translate_file(overlay, dir)?;
        config = merge::overlay_merge(&config, &translated)
            .map_err(|e| format!("merging {}: {e}", overlay.display()))?;
    }

    let build_id = build.build_id.clone().unwrap_or_else(|| git_build_id(dir));
    let mut record = serde_json::Map::new();
    butane::translate::embed(&mut record, format!("TAILPOD_BUILD={build_id}\n").as_bytes());
    let stamp = json!({"storage": {"files": [{"path": "/etc/tailpod/build", "mode": 0o644, "overwrite": true, "contents": record}]}});
    config = merge::overlay_merge(&config, &stamp)?;

    let target = build.ignition_version.clone().unwrap_or_else(|| version.clone());
    if target != version && target != "3.3.0" {
        return Err(format!("can write Ignition {version} or 3.3.0, not {target}"));
    }
    config["ignition"]["version"] = json!(target);
    let schema =
        butane::schema_for(&target).ok_or_else(|| format!("no schema for Ignition {target}"))?;
    let problems = validate::validate(&config, &schema, &target);
    if !problems.is_empty() {
        let why =
            if target == "3.3.0" && version != "3.3.0" { " (for Ignition 3.3.0)" } else { "" };
        return Err(format!("the merged config is not valid{why}:\n  {}", problems.join("\n  ")));
    }
    let config = butane::order_config(config);
    write_private(&build.output, &crate::to_json(&config, true))?;
    notes.push(format!("wrote {} (Ignition {target}, build {build_id})", build.output.display()));
    Ok(Built { config, notes })
}
