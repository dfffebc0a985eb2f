//! From a spec file in the definitions repo to the exact Quadlet text that is deployed.
//!
//! The pipeline, shared by `quadsync augment` and `quadsync sync` so that what one prints is what
//! the other writes:
//!
//! 1. the file's place decides its name and transforms (`NAME.container` at the root gets
//!    `_base.container`; `DIR/NAME.container` gets `_base.container` then `DIR.container`);
//! 2. the name is validated, the spec parsed and checked (see [`check_spec`]);
//! 3. the transforms are merged in ([`tailpod_core::merge`]);
//! 4. a pod member gets `Pod=POD.pod` (a container beside a pod that is not its member stands
//!    alone), and an auto-updated container with a health check `Notify=healthy`
//!    ([`crate::autoupdate::health_gate`]);
//! 5. `{{.Name}}` becomes the file's name, `{{.Host}}` the host's (see [`SpecFile::fill`]);
//! 6. the result is checked again, since transforms can break what the spec got right.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use tailpod_core::merge::{HOST_PLACEHOLDER, apply_transforms, substitute};
use tailpod_core::names::{ContainerName, Hostname, PodName};
use tailpod_core::quadlet::{self, PodmanVersion, Severity};
use tailpod_core::unit::{Entry, Section, UnitFile};

use crate::secrets::{self, Secret};
use crate::transforms::{Kind, TransformSet};

/// A spec file and where it sits in the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecFile {
    /// The path used in messages.
    pub path: PathBuf,
    /// The repo directory holding it, `None` at the root.
    pub dir: Option<String>,
    /// The file name without its extension: the unit's (and for a root unit, the user's) name.
    pub stem: String,
    pub kind: Kind,
    /// The host it is rendered for, as `{{.Host}}` names it; `None` when the host's name has
    /// no letter or digit to make one of.
    pub host: Option<Hostname>,
}

/// A spec that cannot be deployed, with the file, and the line when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for SpecError {}

impl SpecFile {
    /// Places `relative` (a path inside the repo) in the repo layout: the root or one directory
    /// level, not hidden. `shown` is the path to name in messages, `host` the one to render for.
    pub fn locate(
        relative: &Path,
        shown: &Path,
        host: Option<&Hostname>,
    ) -> Result<SpecFile, SpecError> {
        let error =
            |message: String| SpecError { file: shown.display().to_string(), line: None, message };
        let parts: Vec<&str> = relative
            .components()
            .map(|c| match c {
                Component::Normal(part) => {
                    part.to_str().ok_or_else(|| error("path is not UTF-8".into()))
                }
                _ => Err(error("path must be relative to the repo and stay inside it".into())),
            })
            .collect::<Result<_, _>>()?;
        let (dir, file_name) = match parts.as_slice() {
            [file] => (None, *file),
            [dir, file] => (Some((*dir).to_owned()), *file),
            _ => {
                return Err(error(
                    "quadsync reads the repo root and one directory level only; this file is deeper"
                        .into(),
                ));
            }
        };
        if parts.iter().any(|p| p.starts_with('.')) {
            return Err(error("hidden files and directories are not deployed".into()));
        }
        let (stem, kind) = file_name
            .rsplit_once('.')
            .and_then(|(stem, ext)| Some((stem.to_owned(), Kind::from_extension(ext)?)))
            .ok_or_else(|| error("not a .container or .pod file".into()))?;
        Ok(SpecFile { path: shown.to_owned(), dir, stem, kind, host: host.cloned() })
    }

    /// `text` with `{{.Name}}` and `{{.Host}}` replaced.
    pub fn fill(&self, text: &str) -> Result<String, SpecError> {
        match &self.host {
            Some(host) => Ok(substitute(text, &self.stem, host.as_str())),
            None if text.contains(HOST_PLACEHOLDER) => Err(self.error(
                None,
                format!("{HOST_PLACEHOLDER}: this host's name has no letter or digit to use"),
            )),
            None => Ok(substitute(text, &self.stem, "")),
        }
    }

    fn error(&self, line: Option<usize>, message: impl Into<String>) -> SpecError {
        SpecError { file: self.path.display().to_string(), line, message: message.into() }
    }
}

/// The pod a container belongs to: the part of its name before the first `-`, when a pod of
/// that name sits in the same directory. (Pod names have no `-`, so there is never a choice.)
pub fn pod_of<'a>(container: &str, pods_in_dir: &'a [PodName]) -> Option<&'a PodName> {
    let (prefix, _) = container.split_once('-')?;
    pods_in_dir.iter().find(|p| p.as_str() == prefix)
}

/// Renders one spec; see the module docs for the steps.
pub fn render(
    spec: &SpecFile,
    text: &str,
    transforms: &TransformSet,
    pods_in_dir: &[PodName],
) -> Result<String, SpecError> {
    render_with_secrets(spec, text, transforms, pods_in_dir).map(|(text, _)| text)
}

/// [`render`], with the spec's `[Secrets]` (taken out of the text, a `Secret=` line each in its
/// place).
pub fn render_with_secrets(
    spec: &SpecFile,
    text: &str,
    transforms: &TransformSet,
    pods_in_dir: &[PodName],
) -> Result<(String, Vec<Secret>), SpecError> {
    let name_error = |e: tailpod_core::names::NameError| spec.error(None, e.to_string());
    match spec.kind {
        Kind::Container => drop(spec.stem.parse::<ContainerName>().map_err(name_error)?),
        Kind::Pod => drop(spec.stem.parse::<PodName>().map_err(name_error)?),
    }
    // Substituting first lets a spec say `ContainerName={{.Name}}`; lines stay where they were.
    let mut unit = UnitFile::parse(&spec.fill(text)?);
    if let Some(problem) = unit.problems().first() {
        return Err(spec.error(Some(problem.line), problem.message.clone()));
    }
    let secrets = match spec.kind {
        Kind::Container => secrets::take(&mut unit, &spec.stem, &spec.path.display().to_string())
            .map_err(|errors| {
            let (line, message) = errors.into_iter().next().unwrap_or_default();
            spec.error(Some(line), message)
        })?,
        Kind::Pod => match unit.sections_named(secrets::SECTION).next() {
            Some(section) => {
                return Err(spec.error(
                    Some(section.line()),
                    "[Secrets] belongs in the member container that uses it (a pod has no Secret=)",
                ));
            }
            None => Vec::new(),
        },
    };
    check_spec(spec, &unit)?;
    for secret in &secrets {
        push_to_container(&mut unit, secret.entry());
    }

    let pod = match spec.kind {
        Kind::Container => pod_of(&spec.stem, pods_in_dir),
        Kind::Pod => None,
    };
    let chain = transforms
        .chain(spec.kind, spec.dir.as_deref(), pod.is_some())
        .map_err(|e| spec.error(None, e.to_string()))?;
    let mut merged = apply_transforms(&unit, chain.iter().map(|t| &t.unit));
    crate::autoupdate::health_gate(&mut merged);
    if let Some(pod) = pod {
        set_pod(&mut merged, pod);
    }

    let rendered = spec.fill(&merged.to_string())?;
    check_merged(spec, &UnitFile::parse(&rendered))
        // Lines of the rendered text would mislead: they are not the spec's.
        .map_err(|e| SpecError {
            line: None,
            message: format!("after the transforms: {}", e.message),
            ..e
        })?;
    Ok((rendered, secrets))
}

fn set_pod(unit: &mut UnitFile, pod: &PodName) {
    push_to_container(unit, Entry::new("Pod", format!("{pod}.pod")));
}

/// Appends `entry` to the first `[Container]` section, adding one if there is none.
fn push_to_container(unit: &mut UnitFile, entry: Entry) {
    match unit.sections.iter_mut().find(|s| s.name() == "Container") {
        Some(section) => section.push_entry(entry),
        None => {
            let mut section = Section::new("Container");
            section.push_entry(entry);
            unit.sections.push(section);
        }
    }
}

/// Checks a spec as written: the section its kind needs, an image, a `ContainerName=` (if any)
/// equal to the file name, and no `Pod=` (quadsync sets it).
pub fn check_spec(spec: &SpecFile, unit: &UnitFile) -> Result<(), SpecError> {
    check_merged(spec, unit)?;
    if let Some(entry) = find_entry(unit, "Container", "Pod") {
        return Err(spec.error(
            Some(entry.line()),
            "Pod= must not be set in a container spec (quadsync sets it for pod members)",
        ));
    }
    Ok(())
}

/// The checks that must also hold after the transforms.
pub fn check_merged(spec: &SpecFile, unit: &UnitFile) -> Result<(), SpecError> {
    let (section, extension) = match spec.kind {
        Kind::Container => ("Container", "container"),
        Kind::Pod => ("Pod", "pod"),
    };
    // Sections and keys podman or systemd would refuse or ignore. Keys newer than the podman
    // `check` aims at are only warnings there; on a host, its own generator decides.
    let findings = quadlet::check(unit, extension, PodmanVersion::DEFAULT_TARGET);
    if let Some(error) = findings.into_iter().find(|f| f.severity == Severity::Error) {
        return Err(spec.error(Some(error.line), error.message));
    }
    let Some(first) = unit.sections_named(section).next() else {
        return Err(spec.error(None, format!("missing [{section}] section")));
    };
    if spec.kind == Kind::Container {
        let has_image = ["Image", "Rootfs"].iter().any(|k| unit.last_value(section, k).is_some());
        if !has_image {
            return Err(
                spec.error(Some(first.line()), "missing Image= (or Rootfs=) in [Container]")
            );
        }
        if let Some(entry) = find_last_entry(unit, section, "ContainerName")
            && entry.value() != spec.stem
        {
            return Err(spec.error(
                Some(entry.line()),
                format!(
                    "ContainerName={} does not match the file name {}",
                    entry.value(),
                    spec.stem
                ),
            ));
        }
    }
    Ok(())
}

fn find_entry<'a>(unit: &'a UnitFile, section: &str, key: &str) -> Option<&'a Entry> {
    unit.sections_named(section).flat_map(|s| s.entries()).find(|e| e.key() == key)
}

fn find_last_entry<'a>(unit: &'a UnitFile, section: &str, key: &str) -> Option<&'a Entry> {
    unit.sections_named(section).flat_map(|s| s.entries()).filter(|e| e.key() == key).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transforms(files: &[(&str, &str)]) -> TransformSet {
        TransformSet::from_files(files.iter().map(|(n, t)| (PathBuf::from(n), t.to_string())))
            .unwrap()
    }

    fn spec(rel: &str) -> SpecFile {
        SpecFile::locate(Path::new(rel), Path::new(rel), Some(&"box1".parse().unwrap())).unwrap()
    }

    const C: &str = "[Container]\nImage=docker.io/library/nginx:latest\n";

    #[test]
    fn layout_decides_name_and_directory() {
        assert_eq!(spec("web.container").dir, None);
        let s = spec("tailscale/web.container");
        assert_eq!(
            (s.dir.as_deref(), s.stem.as_str(), s.kind),
            (Some("tailscale"), "web", Kind::Container)
        );
        for bad in ["a/b/deep.container", ".git/x.container", "README.md", "../x.container"] {
            assert!(SpecFile::locate(Path::new(bad), Path::new(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdirectory_spec_gets_base_then_dir_transform() {
        // CASES 31: the tailscale transform applied to tailscale/web.container.
        let t = transforms(&[(
            "tailscale.container",
            "[Container]\nNetwork=slirp4netns\n\n[Service]\n+ExecStartPre=/usr/local/bin/mint %N\nRestart=on-failure\n",
        )]);
        assert_eq!(
            render(&spec("tailscale/web.container"), C, &t, &[]).unwrap(),
            "[Container]\nImage=docker.io/library/nginx:latest\nNetwork=slirp4netns\n\n[Service]\nExecStartPre=/usr/local/bin/mint %N\nRestart=on-failure\n"
        );
    }

    #[test]
    fn pod_members_get_pod_and_their_own_name() {
        // CASES 45, but the member does not get tailscale.container: with tailscale.pod there,
        // the pod carries the directory's network and the members share it.
        let t = transforms(&[
            ("tailscale.container", "[Container]\nLabel=net=ts\n"),
            ("tailscale.pod", "[Pod]\nNetwork=slirp4netns\n"),
            ("_base.pod", "[Pod]\n+PodmanArgs=--dns=100.100.100.100\n"),
        ]);
        let pods = ["webapp".parse().unwrap()];
        let web = format!("{C}Volume={{{{.Name}}}}-data:/data\n");
        assert_eq!(
            render(&spec("tailscale/webapp-web.container"), &web, &t, &pods).unwrap(),
            "[Container]\nImage=docker.io/library/nginx:latest\nVolume=webapp-web-data:/data\nPod=webapp.pod\n"
        );
        assert_eq!(
            render(
                &spec("tailscale/webapp.pod"),
                "[Pod]\nPodmanArgs=--name={{.Name}}\n",
                &t,
                &pods
            )
            .unwrap(),
            "[Pod]\nPodmanArgs=--dns=100.100.100.100\nPodmanArgs=--name=webapp\nNetwork=slirp4netns\n"
        );
        // A container beside the pod that is not a member stands alone, with the directory's
        // transform (tailscale/ holds both).
        let alone = render(&spec("tailscale/shop.container"), C, &t, &pods).unwrap();
        assert_eq!(alone, format!("{C}Label=net=ts\n"));
    }

    #[test]
    fn secrets_become_secret_lines_before_the_transforms() {
        // CASES 60 (the Go quadsync's injection), without its blank line before Secret=.
        let t = transforms(&[("_base.container", "[Container]\nNetwork=slirp4netns\n")]);
        let spec_text = format!(
            "{C}\n[Secrets]\nEnvironment=DATABASE_URL=postgres://u:p@h/db\nFile=/run/secrets/tls.cert:aGVsbG8=\n"
        );
        let (text, secrets) =
            render_with_secrets(&spec("app.container"), &spec_text, &t, &[]).unwrap();
        assert_eq!(
            text,
            "[Container]\nImage=docker.io/library/nginx:latest\nSecret=app-database-url,type=env,target=DATABASE_URL\nSecret=app-run-secrets-tls-cert,type=mount,target=/run/secrets/tls.cert\nNetwork=slirp4netns\n\n"
        );
        let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["app-database-url", "app-run-secrets-tls-cert"]);
        // A pod has no Secret=: its [Secrets] is refused, not deployed as it is.
        let err = render(&spec("web.pod"), "[Pod]\n[Secrets]\nEnvironment=A=b\n", &t, &[]);
        assert_eq!(
            err.unwrap_err().to_string(),
            "web.pod:2: [Secrets] belongs in the member container that uses it (a pod has no Secret=)"
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let t = TransformSet::default();
        let cases = [
            ("Bad.container", C, "Bad.container: name \"Bad\" is not valid ([a-z][a-z0-9-]*)"),
            (
                "c.container",
                "[Container]\nLabel=x=1\n",
                "c.container:1: missing Image= (or Rootfs=) in [Container]",
            ),
            ("c.container", "[Service]\n", "c.container: missing [Container] section"),
            (
                "c.container",
                "[Container]\nImage=x\nContainerName=other\n",
                "c.container:3: ContainerName=other does not match the file name c",
            ),
            (
                "c.container",
                "[Container]\nImage=x\nPod=x.pod\n",
                "c.container:3: Pod= must not be set in a container spec (quadsync sets it for pod members)",
            ),
            (
                "c.container",
                "[Container]\nImage x\n",
                "c.container:2: not a Key=Value line: \"Image x\"",
            ),
            (
                "web-app.pod",
                "[Pod]\n",
                "web-app.pod: pod name \"web-app\" is not valid ([a-z][a-z0-9]*)",
            ),
            ("p.pod", "[Service]\nRestart=always\n", "p.pod: missing [Pod] section"),
            (
                "webapps/web.container",
                C,
                "webapps/web.container: no transform for directory webapps \
                 (no webapps.container among the transforms)",
            ),
        ];
        for (path, text, expected) in cases {
            let err = render(&spec(path), text, &t, &[]).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn transforms_are_checked_too() {
        // CASES 37: a transform that fixes ContainerName breaks every other container.
        let t = transforms(&[("t.container", "[Container]\nContainerName=fixed\n")]);
        let err = render(&spec("t/web.container"), C, &t, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t/web.container: after the transforms: ContainerName=fixed does not match the file name web"
        );
        let t = transforms(&[("t.container", "[Container]\nContainerName={{.Name}}\n")]);
        assert!(
            render(&spec("t/web.container"), C, &t, &[]).unwrap().contains("ContainerName=web\n")
        );
    }
}
