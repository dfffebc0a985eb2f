//! What Podman's Quadlet and systemd accept in a unit file: the sections each kind of file may
//! have and their keys, from a table generated from Podman's source at every release since 4.4
//! and from systemd's own list of directives (`scripts/quadlet-keys.py` writes
//! `quadlet/keys.txt`), so a definitions repo is checked without podman or systemd installed.
//!
//! Podman's generator refuses an unknown key in its own sections, and then the whole sync stops;
//! systemd only warns in the journal about an unknown key or section and goes on without it (a
//! typo'd `[Install]` means a container that silently does not come back after a reboot). Both
//! are reported here as errors, with the near miss that was probably meant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

pub use crate::spelling::suggest;
use crate::unit::{Line, UnitFile};

const TABLE: &str = include_str!("quadlet/keys.txt");

/// A Podman release, `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodmanVersion {
    pub major: u16,
    pub minor: u16,
}

impl PodmanVersion {
    /// What `check` assumes unless told: the release the project's tests run the real
    /// generator of (Debian trixie's podman 5.4).
    pub const DEFAULT_TARGET: PodmanVersion = PodmanVersion { major: 5, minor: 4 };
}

impl FromStr for PodmanVersion {
    type Err = String;

    /// `5.4`, `5.4.2` or `v5.4.2` (the patch release does not change what Quadlet accepts).
    fn from_str(text: &str) -> Result<PodmanVersion, String> {
        let mut parts = text.trim().trim_start_matches('v').split('.');
        let number = |part: Option<&str>| part.and_then(|p| p.parse::<u16>().ok());
        match (number(parts.next()), number(parts.next())) {
            (Some(major), Some(minor)) => Ok(PodmanVersion { major, minor }),
            _ => Err(format!("{text:?} is not a podman version (like 5.4)")),
        }
    }
}

impl fmt::Display for PodmanVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Where a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    Podman(PodmanVersion),
    Systemd,
}

/// How bad a finding is: an error stops the file from being deployed, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One thing wrong in a file, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    /// `FILE:LINE: message` (warnings say so), the form editors and CI logs link to.
    pub fn located(&self, file: impl fmt::Display) -> String {
        match self.severity {
            Severity::Error => format!("{file}:{}: {}", self.line, self.message),
            Severity::Warning => format!("{file}:{}: warning: {}", self.line, self.message),
        }
    }
}

struct Model {
    keys: BTreeMap<(String, String), Since>,
    /// Every section name by its lowercase form, for suggestions.
    sections: BTreeSet<String>,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut keys = BTreeMap::new();
        for line in TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let (Some(section), Some(key), Some(since)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let since = match since {
                "systemd" => Since::Systemd,
                version => match version.parse() {
                    Ok(version) => Since::Podman(version),
                    Err(_) => continue,
                },
            };
            keys.insert((section.to_owned(), key.to_owned()), since);
        }
        let sections = keys.keys().map(|(section, _)| section.clone()).collect();
        Model { keys, sections }
    })
}

/// The sections a file with this extension may have, its own first; `None` for a kind of file
/// this model does not know.
pub fn sections_for(extension: &str) -> Option<&'static [&'static str]> {
    Some(match extension {
        "container" => &["Container", "Unit", "Service", "Install", "Quadlet"],
        "pod" => &["Pod", "Unit", "Service", "Install", "Quadlet"],
        "volume" => &["Volume", "Unit", "Service", "Install", "Quadlet"],
        "network" => &["Network", "Unit", "Service", "Install", "Quadlet"],
        "kube" => &["Kube", "Unit", "Service", "Install", "Quadlet"],
        "image" => &["Image", "Unit", "Service", "Install", "Quadlet"],
        "build" => &["Build", "Unit", "Service", "Install", "Quadlet"],
        "artifact" => &["Artifact", "Unit", "Service", "Install", "Quadlet"],
        "service" => &["Service", "Unit", "Install"],
        "timer" => &["Timer", "Unit", "Install"],
        _ => return None,
    })
}

/// The extensions a Quadlet file may have.
pub const QUADLET_EXTENSIONS: [&str; 8] =
    ["container", "pod", "volume", "network", "kube", "image", "build", "artifact"];

/// Keys podman's generator refuses in `[Service]` of a Quadlet file (it runs the service as the
/// unit's own user, and these would change that).
const REFUSED_IN_SERVICE: [&str; 3] = ["User", "Group", "DynamicUser"];

/// Checks every section and key of `unit`, a file with this `extension`, against what podman
/// `target` and systemd accept. Keys and sections starting `X-` are the user's own and pass.
pub fn check(unit: &UnitFile, extension: &str, target: PodmanVersion) -> Vec<Finding> {
    check_keys(unit, extension, target, false)
}

/// [`check`] for a transform, whose `+Key=` lines prepend to `Key=` (see [`crate::merge`]).
pub fn check_transform(unit: &UnitFile, extension: &str, target: PodmanVersion) -> Vec<Finding> {
    check_keys(unit, extension, target, true)
}

fn check_keys(
    unit: &UnitFile,
    extension: &str,
    target: PodmanVersion,
    transform: bool,
) -> Vec<Finding> {
    let Some(allowed) = sections_for(extension) else { return Vec::new() };
    let model = model();
    let quadlet_file = QUADLET_EXTENSIONS.contains(&extension);
    let mut findings = Vec::new();
    for section in &unit.sections {
        let name = section.name();
        if name.starts_with("X-") {
            continue;
        }
        if !allowed.contains(&name) {
            let message = if model.sections.contains(name) {
                let home = QUADLET_EXTENSIONS
                    .iter()
                    .find(|e| sections_for(e).is_some_and(|s| s[0] == name))
                    .map_or(String::new(), |e| format!(" (it belongs in a .{e} file)"));
                format!("[{name}] is not read in a .{extension} file{home}")
            } else {
                let hint = suggest(name, allowed.iter().copied())
                    .map_or(String::new(), |s| format!("; did you mean [{s}]?"));
                format!("unknown section [{name}]{hint}")
            };
            findings.push(Finding { line: section.line(), severity: Severity::Error, message });
            continue;
        }
        for line in &section.lines {
            let Line::Entry(entry) = line else { continue };
            let key = entry.key();
            let key = if transform { key.strip_prefix('+').unwrap_or(key) } else { key };
            if key.starts_with("X-") {
                continue;
            }
            let error = |message: String| Finding {
                line: entry.line(),
                severity: Severity::Error,
                message,
            };
            if quadlet_file && name == "Service" && REFUSED_IN_SERVICE.contains(&key) {
                findings.push(error(format!(
                    "{key}= in [Service]: podman's Quadlet refuses it (the container runs as the \
                     unit's user; use User= in [Container] for the user inside the container)"
                )));
                continue;
            }
            match model.keys.get(&(name.to_owned(), key.to_owned())) {
                Some(Since::Podman(since)) if *since > target => findings.push(Finding {
                    line: entry.line(),
                    severity: Severity::Warning,
                    message: format!(
                        "{key}= in [{name}] needs podman {since} (checked for podman {target}); \
                         older podman refuses the file"
                    ),
                }),
                Some(_) => {}
                None => {
                    let known = model
                        .keys
                        .keys()
                        .filter(|(section, _)| section == name)
                        .map(|(_, key)| key.as_str());
                    let hint = suggest(key, known)
                        .map_or(String::new(), |s| format!("; did you mean {s}=?"));
                    let consequence = if model_owns(name) {
                        "podman's generator refuses the file"
                    } else {
                        "systemd ignores it"
                    };
                    findings.push(error(format!(
                        "unknown key {key}= in [{name}] ({consequence}){hint}"
                    )));
                }
            }
        }
    }
    findings
}

/// Whether podman (not systemd) reads `section`.
fn model_owns(section: &str) -> bool {
    section == "Quadlet"
        || QUADLET_EXTENSIONS.iter().any(|e| sections_for(e).is_some_and(|s| s[0] == section))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(text: &str, extension: &str) -> Vec<(usize, Severity, String)> {
        check(&UnitFile::parse(text), extension, PodmanVersion::DEFAULT_TARGET)
            .into_iter()
            .map(|f| (f.line, f.severity, f.message))
            .collect()
    }

    #[test]
    fn the_table_knows_podman_and_systemd() {
        let keys = &model().keys;
        assert!(keys.len() > 500, "{} keys", keys.len());
        let since = |s: &str, k: &str| keys.get(&(s.to_owned(), k.to_owned())).copied();
        assert_eq!(
            since("Container", "Image"),
            Some(Since::Podman(PodmanVersion { major: 4, minor: 4 }))
        );
        assert_eq!(since("Service", "ExecStartPre"), Some(Since::Systemd));
        assert_eq!(since("Install", "WantedBy"), Some(Since::Systemd));
        assert_eq!(since("Container", "PublishPorts"), None);
    }

    #[test]
    fn typos_are_errors_with_what_was_meant() {
        let text = "[Container]\nImage=x\nPublishPorts=8080:80\n[Instal]\nWantedBy=default.target\n[unit]\nDescription=x\n[Sevrice]\nRestart=always\n";
        let found = findings(text, "container");
        let messages: Vec<&str> = found.iter().map(|(_, _, m)| m.as_str()).collect();
        assert_eq!(found.iter().map(|(l, _, _)| *l).collect::<Vec<_>>(), [3, 4, 6, 8]);
        assert!(
            messages[0].contains("unknown key PublishPorts= in [Container]"),
            "{}",
            messages[0]
        );
        assert!(messages[0].ends_with("did you mean PublishPort=?"), "{}", messages[0]);
        assert!(messages[1].ends_with("did you mean [Install]?"), "{}", messages[1]);
        assert!(messages[2].ends_with("did you mean [Unit]?"), "{}", messages[2]);
        assert!(messages[3].ends_with("did you mean [Service]?"), "{}", messages[3]);
        assert!(found.iter().all(|(_, s, _)| *s == Severity::Error));
    }

    #[test]
    fn valid_files_pass_and_x_keys_are_the_users() {
        let text = "[Unit]\nDescription=web\nAfter=network-online.target\n[Container]\nImage=nginx\nPublishPort=8080:80\nX-Mine=1\n[X-Notes]\nAnything=goes\n[Service]\nRestart=always\n[Install]\nWantedBy=default.target\n";
        assert_eq!(findings(text, "container"), []);
        assert_eq!(
            findings("[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n", "timer"),
            []
        );
    }

    #[test]
    fn sections_of_another_kind_and_refused_service_keys_are_named() {
        let found = findings("[Pod]\nPodName=x\n[Service]\nUser=web\n", "container");
        assert_eq!(
            found[0].2,
            "[Pod] is not read in a .container file (it belongs in a .pod file)"
        );
        assert!(
            found[1].2.starts_with("User= in [Service]: podman's Quadlet refuses it"),
            "{}",
            found[1].2
        );
    }

    #[test]
    fn keys_newer_than_the_target_are_warnings_naming_the_version() {
        // HttpProxy= came with podman 5.7.
        let unit = UnitFile::parse("[Container]\nImage=x\nHttpProxy=false\n");
        let found = check(&unit, "container", PodmanVersion::DEFAULT_TARGET);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Warning);
        let expected = "HttpProxy= in [Container] needs podman 5.7 (checked for podman 5.4)";
        assert!(found[0].message.starts_with(expected), "{}", found[0].message);
        assert_eq!(check(&unit, "container", PodmanVersion { major: 5, minor: 7 }), []);
    }

    #[test]
    fn a_transforms_prepending_keys_are_the_keys_they_prepend_to() {
        let unit = UnitFile::parse("[Service]\n+ExecStartPre=/bin/true\n");
        assert_eq!(check_transform(&unit, "container", PodmanVersion::DEFAULT_TARGET), []);
        assert_eq!(check(&unit, "container", PodmanVersion::DEFAULT_TARGET).len(), 1);
    }

    #[test]
    fn versions_read_as_podman_writes_them() {
        assert_eq!("5.4.2".parse(), Ok(PodmanVersion { major: 5, minor: 4 }));
        assert_eq!("v4.9".parse(), Ok(PodmanVersion { major: 4, minor: 9 }));
        assert!("five".parse::<PodmanVersion>().is_err());
    }
}
