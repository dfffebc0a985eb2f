//! `cargo xtask build-ign`: the host's Ignition config.
//!
//! `butane/tailpod.bu` is the base; every other `butane/*.bu` is an overlay (sorted by name), then
//! for `--host NAME` the host's own `butane/hosts/NAME.bu` (its hostname, site values: one
//! checkout provisions a fleet), and `butane/secrets.bu` (never committed; made from
//! `secrets.bu.example`) applies last. Each is
//! translated with `--strict` (files relative to `butane/`), they are merged (see
//! [`butane::merge::overlay_merge`]), `/etc/tailpod/build` records the git commit, and the
//! merged result is validated as Ignition would before it is written, mode 0600: it holds secrets.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use butane::{self, Options, merge, validate};

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
    /// Build for this host of a fleet: `hosts/NAME.bu` is one more overlay.
    pub host: Option<String>,
}

/// The directory of per-host overlays, in the Butane directory.
pub const HOSTS_DIR: &str = "hosts";

/// `DIR/hosts/NAME.bu` for `--host NAME`: NAME must be a host name (DNS labels), and the file
/// must be there (the error lists the hosts that are).
pub fn host_overlay(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let labels_ok =
        name.split('.').all(|label| label.parse::<tailpod_core::names::Hostname>().is_ok());
    if name.is_empty() || !labels_ok {
        return Err(format!("--host {name:?}: not a host name (letters, digits, '-' and dots)"));
    }
    let hosts = dir.join(HOSTS_DIR);
    let path = hosts.join(format!("{name}.bu"));
    if path.is_file() {
        return Ok(path);
    }
    let mut known: Vec<String> = std::fs::read_dir(&hosts)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    e.ok()?.file_name().into_string().ok()?.strip_suffix(".bu").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    let known = match known.is_empty() {
        true => "none".to_owned(),
        false => known.join(", "),
    };
    Err(format!("--host {name}: no {} (hosts with one: {known})", path.display()))
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

/// Translates one Butane file's `source` (read once, for the placeholder check too).
fn translate(path: &Path, source: &str, dir: &Path) -> Result<Value, String> {
    let options = Options { files_dir: Some(dir.to_owned()) };
    butane::butane(source, &options, true)
        .map(|(config, _)| config)
        .map_err(|lines| format!("{}:\n  {}", path.display(), lines.join("\n  ")))
}

/// The example's placeholder: left in, a host would boot with it.
const PLACEHOLDER: &str = "REPLACE-ME";

/// Every placeholder left in a Butane file's text (comments aside), as `FILE:LINE: …`.
fn placeholders(path: &Path, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with('#') && line.contains(PLACEHOLDER))
        .map(|(i, _)| {
            format!(
                "{}:{}: {PLACEHOLDER} is still here: put your value in (or build with \
                 --throwaway-secrets from the example, for trying things out)",
                path.display(),
                i + 1
            )
        })
        .collect()
}

/// The paths of the files a translated config writes.
fn file_paths(config: &Value) -> Vec<String> {
    config["storage"]["files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["path"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The files the host's tools read, checked as the tools would read them, before any host
/// does: the env files by their schemas (config.env, oauth.env, ts4nsnet.env), the transforms by quadsync's Quadlet model. Each
/// problem names the Butane file and line that defines the file.
fn embedded_problems(config: &Value, texts: &[(PathBuf, String)]) -> Vec<String> {
    use tailpod_core::envfile::{EnvFile, QUADSYNC_CONFIG, TAILMINT_OAUTH, TS4NSNET_ENV};
    use tailpod_core::quadlet::{self, PodmanVersion, Severity};
    let defined_at = |path: &str| {
        let wanted = format!("path: {path}");
        texts
            .iter()
            .rev()
            .find_map(|(file, text)| {
                let line =
                    text.lines().position(|l| l.trim().trim_start_matches("- ") == wanted)?;
                Some(format!("{}:{}", file.display(), line + 1))
            })
            .unwrap_or_else(|| path.to_owned())
    };
    let mut problems = Vec::new();
    let mut texts_by_path = std::collections::BTreeMap::new();
    let mut modes_by_path = std::collections::BTreeMap::new();
    for file in config["storage"]["files"].as_array().into_iter().flatten() {
        let Some(path) = file["path"].as_str() else { continue };
        if let Some(mode) = file["mode"].as_u64() {
            modes_by_path.insert(path.to_owned(), mode);
        }
        let Some(source) = file["contents"]["source"].as_str() else { continue };
        let compression = file["contents"]["compression"].as_str();
        let Ok(text) = butane::dataurl::decode(source, compression).map(String::from_utf8) else {
            continue;
        };
        let Ok(text) = text else { continue };
        texts_by_path.insert(path.to_owned(), text.clone());
        let schema = match path {
            "/etc/quadsync/config.env" => Some(QUADSYNC_CONFIG),
            "/etc/tailscale/oauth.env" => Some(TAILMINT_OAUTH),
            "/etc/ts4nsnet.env" => Some(TS4NSNET_ENV),
            _ => None,
        };
        if let Some(schema) = schema {
            match EnvFile::parse(path, &text) {
                Ok(env) => problems.extend(schema.problems(&env).into_iter().map(|(line, why)| {
                    let at = if line > 0 { format!(" (its line {line})") } else { String::new() };
                    format!("{}: {path}{at}: {why}", defined_at(path))
                })),
                Err(e) => problems.push(format!("{}: {e}", defined_at(path))),
            }
        }
        if let Some(name) = path.strip_prefix("/etc/quadsync/transforms/") {
            let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
            let unit = tailpod_core::unit::UnitFile::parse(&text);
            let findings =
                quadlet::check_transform(&unit, extension, PodmanVersion::DEFAULT_TARGET);
            for finding in findings.into_iter().filter(|f| f.severity == Severity::Error) {
                problems.push(format!("{}: {}", defined_at(path), finding.located(path)));
            }
        }
    }
    // quadsync refuses keys others may read; say so now, not on the first secret.
    let config_env = texts_by_path
        .get("/etc/quadsync/config.env")
        .and_then(|text| EnvFile::parse("config.env", text).ok());
    for key in ["QUADSYNC_AGE_KEY", "QUADSYNC_SSH_KEY"] {
        let Some(path) = config_env.as_ref().and_then(|env| env.get(key)) else { continue };
        if let Some(mode) = modes_by_path.get(path).filter(|mode| *mode & 0o077 != 0) {
            problems.push(format!(
                "{}: {path} has mode {mode:04o}, but it is {key}: others must not read it (0600)",
                defined_at(path)
            ));
        }
    }
    problems.extend(
        sudo_rule_problems(&texts_by_path)
            .into_iter()
            .map(|why| format!("{}: {why}", defined_at(SUDOERS))),
    );
    problems
}

/// The sudo rule that lets container users run tailmint.
const SUDOERS: &str = "/etc/sudoers.d/tailmint";

/// Whether the sudo rule still fits what uses it: its group must be the one quadsync puts
/// container users in, and its command exactly what the tailscale transform runs through sudo.
/// Otherwise sudo asks for a password on the host, and every tailnet container fails to start.
fn sudo_rule_problems(files: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let Some(rule) = files.get(SUDOERS) else { return Vec::new() };
    let mut problems = Vec::new();
    // sudo refuses every rule, everywhere, over one syntax error in a sudoers file; so each
    // line must at least have a rule's shape: WHO HOSTS=(RUNAS) [TAG:] COMMAND, or Defaults.
    for (number, line) in rule.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("Defaults") {
            continue;
        }
        let shaped = line.split_once('=').is_some_and(|(who_hosts, command)| {
            who_hosts.split_whitespace().count() == 2 && !command.trim().is_empty()
        });
        if !shaped || line.ends_with('\\') {
            problems.push(format!(
                "{SUDOERS} line {}: not a sudo rule (WHO HOSTS=(RUNAS) COMMAND); one bad line \
                 stops sudo for everything (check it with visudo -cf)",
                number + 1
            ));
        }
    }
    let rules: Vec<(&str, &str)> = rule
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (who, rest) = line.split_once(char::is_whitespace)?;
            let (_, command) = rest.split_once("NOPASSWD:")?;
            Some((who.strip_prefix('%')?, command.trim()))
        })
        .collect();
    let group = files
        .get("/etc/quadsync/config.env")
        .and_then(|text| tailpod_core::envfile::EnvFile::parse("config.env", text).ok())
        .and_then(|env| env.get("QUADSYNC_USER_GROUP").map(str::to_owned))
        .unwrap_or_else(|| "cusers".to_owned());
    if !rules.iter().any(|(who, _)| *who == group) {
        problems.push(format!(
            "{SUDOERS} has no NOPASSWD rule for %{group}, the group quadsync puts container users \
             in (QUADSYNC_USER_GROUP): their tailmint would ask for a password"
        ));
    }
    let transforms = files.iter().filter(|(path, _)| path.starts_with("/etc/quadsync/transforms/"));
    for (path, text) in transforms {
        let run_by_sudo = text.lines().filter_map(|line| {
            let value = line.trim().trim_start_matches('+').strip_prefix("ExecStartPre=")?;
            value.strip_prefix("/usr/bin/sudo ").map(str::trim)
        });
        for command in run_by_sudo {
            if !rules.iter().any(|(_, allowed)| *allowed == command) {
                problems.push(format!(
                    "{SUDOERS} does not allow exactly what {path} runs through sudo \
                     ({command}): sudo would ask for a password"
                ));
            }
        }
    }
    problems
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
    if let Some(host) = &build.host {
        overlays.push(host_overlay(dir, host)?);
    }
    overlays.push(secrets);

    let texts: Vec<(PathBuf, String)> = std::iter::once(base_path.clone())
        .chain(overlays)
        .map(|p| match std::fs::read_to_string(&p) {
            Ok(text) => Ok((p, text)),
            Err(e) => Err(format!("reading {}: {e}", p.display())),
        })
        .collect::<Result<_, _>>()?;
    let placeholders: Vec<String> = texts.iter().flat_map(|(p, t)| placeholders(p, t)).collect();
    if !placeholders.is_empty() {
        return Err(placeholders.join("\n"));
    }

    let mut config = translate(&texts[0].0, &texts[0].1, dir)?;
    let version = config["ignition"]["version"].as_str().unwrap_or_default().to_owned();
    // Which Butane file last defined each file path, to name both sides of a conflict.
    let mut defined_in: std::collections::BTreeMap<String, PathBuf> =
        file_paths(&config).into_iter().map(|path| (path, base_path.clone())).collect();
    for (overlay, text) in &texts[1..] {
        let translated = translate(overlay, text, dir)?;
        config = merge::overlay_merge(&config, &translated).map_err(|e| {
            let earlier = e
                .split_once(": ")
                .and_then(|(path, _)| defined_in.get(path))
                .map_or(String::new(), |file| format!(" over {}", file.display()));
            format!("merging {}{earlier}: {e}", overlay.display())
        })?;
        for path in file_paths(&translated) {
            defined_in.insert(path, overlay.clone());
        }
    }
    let problems = embedded_problems(&config, &texts);
    if !problems.is_empty() {
        return Err(problems.join("\n"));
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
    write_private(&build.output, &butane::to_json(&config, true))?;
    notes.push(format!("wrote {} (Ignition {target}, build {build_id})", build.output.display()));
    Ok(Built { config, notes })
}
