//! The transform directory (`/etc/quadsync/transforms`): which file shapes which spec.
//!
//! | file | applies to |
//! | --- | --- |
//! | `_base.container` | every container, first |
//! | `_base.pod` | every pod, first |
//! | `DIR.container` | containers in the repo directory `DIR/`, after `_base` (not pod members when `DIR.pod` exists) |
//! | `DIR.pod` | pods in `DIR/`, after `_base.pod` |
//! | `_base-SUFFIX.EXT` | a companion file deployed beside every container as `NAME-SUFFIX.EXT` |
//!
//! Any other regular file is an error, so a typo (`tailscale.conatiner`) cannot silently leave a
//! directory untransformed. Hidden files (editor swap files) and subdirectories are ignored. A
//! missing directory is an error, not an empty set: a mistyped path must not deploy containers
//! without the transforms the host relies on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use tailpod_core::quadlet::{self, PodmanVersion, Severity};
use tailpod_core::unit::UnitFile;

/// What kind of spec a transform applies to, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Container,
    Pod,
}

impl Kind {
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Pod => "pod",
        }
    }

    pub fn from_extension(ext: &str) -> Option<Kind> {
        match ext {
            "container" => Some(Kind::Container),
            "pod" => Some(Kind::Pod),
            _ => None,
        }
    }
}

/// One parsed transform file.
#[derive(Debug, Clone)]
pub struct Transform {
    pub path: PathBuf,
    pub unit: UnitFile,
}

/// A `_base-SUFFIX.EXT` companion: raw text, deployed as `NAME-SUFFIX.EXT`.
#[derive(Debug, Clone)]
pub struct Companion {
    pub path: PathBuf,
    /// `-SUFFIX.EXT`, appended to the container name.
    pub suffix: String,
    pub text: String,
}

/// Everything in the transform directory, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct TransformSet {
    base: BTreeMap<Kind, Transform>,
    dirs: BTreeMap<(Kind, String), Transform>,
    pub companions: Vec<Companion>,
    /// Accept directories without a transform (for `quadsync check` without the host's
    /// transforms, in a definitions repo's own CI).
    any_dir: bool,
    /// The directory it was read from, to say where a missing transform was looked for.
    loaded_from: Option<PathBuf>,
}

/// A transform file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError(pub String);

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransformError {}

impl TransformSet {
    /// No transforms, and any directory accepted: checks what a repo can check on its own.
    pub fn without_host() -> TransformSet {
        TransformSet { any_dir: true, ..TransformSet::default() }
    }

    /// Reads and checks every transform in `dir`.
    pub fn load(dir: &Path) -> Result<TransformSet, TransformError> {
        let read_error = |e: std::io::Error| {
            TransformError(format!("reading transform directory {}: {e}", dir.display()))
        };
        let entries = std::fs::read_dir(dir).map_err(read_error)?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(read_error)?;
            let path = entry.path();
            // Follows symlinks: a transform may be a link into a config-management tree.
            if !std::fs::metadata(&path).map_err(read_error)?.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| TransformError(format!("reading {}: {e}", path.display())))?;
            files.push((path, text));
        }
        files.sort();
        let set = TransformSet::from_files(files)?;
        Ok(TransformSet { loaded_from: Some(dir.to_owned()), ..set })
    }

    /// Builds the set from `(path, text)` pairs; only the file name of each path matters.
    pub fn from_files(
        files: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<TransformSet, TransformError> {
        let mut set = TransformSet::default();
        for (path, text) in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
            else {
                return Err(TransformError(format!(
                    "unexpected file in transform directory: {}",
                    path.display()
                )));
            };
            if file_name.starts_with('.') {
                continue;
            }
            if let Some(suffix) = file_name.strip_prefix("_base-") {
                let extension = file_name.rsplit_once('.').map_or("", |(_, ext)| ext);
                let unit = UnitFile::parse(&text);
                let findings = quadlet::check(&unit, extension, PodmanVersion::DEFAULT_TARGET);
                if let Some(error) = findings.iter().find(|f| f.severity == Severity::Error) {
                    return Err(TransformError(error.located(path.display())));
                }
                set.companions.push(Companion { path, suffix: format!("-{suffix}"), text });
                continue;
            }
            let parsed = file_name
                .rsplit_once('.')
                .and_then(|(stem, ext)| Some((stem.to_owned(), Kind::from_extension(ext)?)));
            let Some((stem, kind)) = parsed else {
                return Err(TransformError(format!(
                    "unexpected file in transform directory: {file_name}"
                )));
            };
            let unit = UnitFile::parse(&text);
            if let Some(problem) = unit.problems().first() {
                return Err(TransformError(problem.located(path.display())));
            }
            let target = PodmanVersion::DEFAULT_TARGET;
            let extension = file_name.rsplit_once('.').map_or("", |(_, ext)| ext);
            let findings = quadlet::check_transform(&unit, extension, target);
            if let Some(error) = findings.iter().find(|f| f.severity == Severity::Error) {
                return Err(TransformError(error.located(path.display())));
            }
            let transform = Transform { path, unit };
            if stem == "_base" {
                set.base.insert(kind, transform);
            } else {
                set.dirs.insert((kind, stem), transform);
            }
        }
        Ok(set)
    }

    /// The transforms for a spec of `kind` in `dir` (`None` for the repo root), in the order they
    /// apply. A container directory without a transform of its own is an error, except for pod
    /// members (they need only `_base`): deploying a container from `tailscale/` without its
    /// network transform would be worse than not deploying it.
    ///
    /// When the directory has a pod transform (`tailscale.pod`), the pod carries what the
    /// directory means (its network, its key) and its members share it: they get `_base` only.
    pub fn chain(
        &self,
        kind: Kind,
        dir: Option<&str>,
        pod_member: bool,
    ) -> Result<Vec<&Transform>, TransformError> {
        let mut chain: Vec<&Transform> = self.base.get(&kind).into_iter().collect();
        let pod_carries = |dir: &str| self.dirs.contains_key(&(Kind::Pod, dir.to_owned()));
        if let Some(dir) = dir.filter(|d| !(pod_member && pod_carries(d))) {
            match self.dirs.get(&(kind, dir.to_owned())) {
                Some(transform) => chain.push(transform),
                None if kind == Kind::Container && !pod_member && !self.any_dir => {
                    let wanted = format!("{dir}.{}", kind.extension());
                    let looked = match &self.loaded_from {
                        Some(from) => format!(" ({} does not exist)", from.join(wanted).display()),
                        None => format!(" (no {wanted} among the transforms)"),
                    };
                    return Err(TransformError(format!(
                        "no transform for directory {dir}{looked}"
                    )));
                }
                None => {}
            }
        }
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> Result<TransformSet, TransformError> {
        TransformSet::from_files(files.iter().map(|(n, t)| (PathBuf::from(n), t.to_string())))
    }

    #[test]
    fn files_are_classified_by_name() {
        let set = set(&[
            ("_base.container", "[Container]\n"),
            ("_base.pod", "[Pod]\n"),
            ("tailscale.container", "[Container]\nNetwork=x\n"),
            ("_base-data.volume", "[Volume]\n"),
            (".tailscale.container.swp", "junk"),
        ])
        .unwrap();
        let chain = set.chain(Kind::Container, Some("tailscale"), false).unwrap();
        let names: Vec<_> = chain.iter().map(|t| t.path.to_str().unwrap()).collect();
        assert_eq!(names, ["_base.container", "tailscale.container"]);
        assert_eq!(set.chain(Kind::Container, None, false).unwrap().len(), 1);
        assert_eq!(set.chain(Kind::Pod, Some("tailscale"), false).unwrap().len(), 1);
        // Members of a pod in tailscale/ get the directory's container transform until the
        // directory has a pod transform; then the pod carries it and members get _base only.
        assert_eq!(set.chain(Kind::Container, Some("tailscale"), true).unwrap().len(), 2);
        let with_pod = TransformSet::from_files(
            [
                ("_base.container", "[Container]\n"),
                ("tailscale.container", "[Container]\n"),
                ("tailscale.pod", "[Pod]\n"),
            ]
            .map(|(n, t)| (PathBuf::from(n), t.to_owned())),
        )
        .unwrap();
        let members = with_pod.chain(Kind::Container, Some("tailscale"), true).unwrap();
        assert_eq!(
            members.iter().map(|t| t.path.to_str().unwrap()).collect::<Vec<_>>(),
            ["_base.container"]
        );
        assert_eq!(with_pod.chain(Kind::Container, Some("tailscale"), false).unwrap().len(), 2);
        assert_eq!(with_pod.chain(Kind::Pod, Some("tailscale"), false).unwrap().len(), 1);
        assert_eq!(set.companions[0].suffix, "-data.volume");
    }

    #[test]
    fn unknown_files_and_directories_are_errors() {
        let err = set(&[("random.txt", "")]).unwrap_err();
        assert_eq!(err.to_string(), "unexpected file in transform directory: random.txt");
        let set = set(&[]).unwrap();
        let err = set.chain(Kind::Container, Some("webapps"), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no transform for directory webapps (no webapps.container among the transforms)"
        );
        assert!(set.chain(Kind::Container, Some("pods"), true).is_ok());
    }

    #[test]
    fn a_missing_transform_names_the_file_looked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("_base.container"), "[Service]\nRestart=always\n").unwrap();
        let loaded = TransformSet::load(dir);
        let err = loaded.unwrap().chain(Kind::Container, Some("tailscale"), false).unwrap_err();
        let expected = format!(
            "no transform for directory tailscale ({} does not exist)",
            dir.join("tailscale.container").display()
        );
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn a_broken_transform_names_file_and_line() {
        let err = set(&[("/t/web.container", "[Container]\nNetwork slirp\n")]).unwrap_err();
        assert_eq!(err.to_string(), "/t/web.container:2: not a Key=Value line: \"Network slirp\"");
    }
}
