//! From the files of a definitions repo to what each container user should have.
//!
//! Layout (the Go original's, with its holes closed):
//!
//! * Which files of the repo count is [`crate::source`]'s rule.
//! * `NAME.container` runs as user `NAME`. `POD.pod` (no `-` in the name) runs as user `POD`, with
//!   every `POD-*.container` of its directory as a member; other containers beside it stand alone
//!   (the Go quadsync refused them, but `tailscale/` must hold both).
//! * The files a container or pod owns by name: the one whose stem is the longest `STEM-`
//!   prefix of the file's name, in the same directory (a pod or any of its members; both are the
//!   pod's user). `OWNER-LABEL.service` / `.timer` are sidecars, deployed verbatim into the
//!   user's systemd directory; timers are enabled. Quadlet companions (`.volume`, `.network`,
//!   `.kube`, `.image`, `.build`, `.artifact`) may also be named exactly like their owner
//!   (`web.volume`), and go to the user's Quadlet directory. A file no container or pod owns is
//!   an error, never silently skipped.
//! * `_base-SUFFIX.EXT` in the transform directory is a companion every container gets as
//!   `NAME-SUFFIX.EXT`, with `{{.Name}}` replaced (and `Pod=` for members, unless it says
//!   `# quadsync:no-pod`).
//! * Every unit a deployed unit names (`Volume=x.volume`, `Network=x.network`, `Image=x.build`,
//!   `Pod=`) must be deployed for the same user, since Quadlet looks only in that user's
//!   directory; a `.kube`'s `Yaml=` or a `.build`'s `File=` beside it is deployed with it (see
//!   [`crate::references`]).
//!
//! Every problem is collected (a name used twice, an invalid name, a file that does not render, a
//! sidecar without an owner, ...), and any problem fails the whole discovery, so a broken commit
//! changes nothing on the host.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use tailpod_core::names::{ContainerName, Hostname, PodName, UserName};
use tailpod_core::quadlet::{self, PodmanVersion, Severity};
use tailpod_core::unit::{Entry, UnitFile};

use crate::references::{Target, generated_service, references, section_of};
use crate::render::{SpecFile, render_with_secrets};
use crate::secrets::{Secret, SecretValue};
pub use crate::source::{COMPANION_TYPES, SourceFile, wanted};
use crate::transforms::{Kind, TransformSet};

/// Where a file goes in the user's home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitDir {
    /// `~/.config/containers/systemd`: Quadlet files.
    Quadlet,
    /// `~/.config/systemd/user`: plain systemd units (sidecars).
    Systemd,
    /// The user's podman secret store (`podman secret create`); the text is the value's keyed
    /// digest (see [`crate::secrets`]).
    Secret,
    /// Drop-ins for podman's own auto-update timer and service (see [`crate::autoupdate`]).
    AutoUpdateTimer,
    AutoUpdateService,
}

impl UnitDir {
    pub fn relative(self) -> &'static str {
        match self {
            UnitDir::Quadlet => ".config/containers/systemd",
            UnitDir::Systemd => ".config/systemd/user",
            UnitDir::Secret => ".local/share/containers/storage/secrets",
            UnitDir::AutoUpdateTimer => ".config/systemd/user/podman-auto-update.timer.d",
            UnitDir::AutoUpdateService => ".config/systemd/user/podman-auto-update.service.d",
        }
    }

    /// Whether a change here needs the container restarted: its Quadlet units and secrets do,
    /// sidecars and the auto-update drop-ins do not.
    pub fn restarts_container(self) -> bool {
        matches!(self, UnitDir::Quadlet | UnitDir::Secret)
    }
}

/// One file to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserFile {
    pub dir: UnitDir,
    pub text: String,
}

/// Everything one container user should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    #[serde(with = "crate::state::user_name")]
    pub user: UserName,
    /// The unit to (re)start: `NAME.service`, or `POD-pod.service` for a pod.
    pub service: String,
    /// File name to contents.
    pub files: BTreeMap<String, UserFile>,
    /// Repo paths this deployment comes from, for messages.
    pub sources: Vec<String>,
    /// The `[Secrets]` of its containers, still sealed.
    #[serde(skip)]
    pub secrets: Vec<Secret>,
    /// The opened values, by podman secret name (see [`crate::secrets::unlock`]).
    #[serde(skip)]
    pub secret_values: BTreeMap<String, SecretValue>,
    /// Why nothing of this deployment may change this time (its secrets cannot be opened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The variable that names a container's node on the tailnet: tailmint reads it (through its
/// sudo rule's `env_keep`) and writes it beside the key for ts4nsnet.
pub const NODE_NAME_VARIABLE: &str = "TS_HOSTNAME";

impl Deployment {
    /// A deployment of nothing yet, for `user`, which (re)starts `service`.
    pub fn new(user: UserName, service: String) -> Deployment {
        Deployment {
            user,
            service,
            files: BTreeMap::new(),
            sources: Vec::new(),
            secrets: Vec::new(),
            secret_values: BTreeMap::new(),
            held: None,
        }
    }

    /// Timers to enable: its sidecars', and podman's auto-update timer when it opted in.
    pub fn timers(&self) -> impl Iterator<Item = &str> {
        let sidecars = self.files.keys().filter(|n| n.ends_with(".timer")).map(String::as_str);
        let auto_update = self.files.values().any(|f| f.dir == UnitDir::AutoUpdateTimer);
        sidecars.chain(auto_update.then_some(crate::autoupdate::TIMER))
    }

    /// The name of the tailnet node this deployment makes, if it joins the tailnet: its unit's
    /// `[Service] Environment=TS_HOSTNAME=` (`exporter-{{.Host}}`), else its user's name, as
    /// `tailmint --caller` names it.
    pub fn node_name(&self) -> Option<String> {
        let unit = self.files.iter().find(|(name, file)| {
            file.dir == UnitDir::Quadlet
                && matches!(extension(name), "container" | "pod")
                && joins_tailnet(&file.text)
        })?;
        let named = UnitFile::parse(&unit.1.text).environment("Service", NODE_NAME_VARIABLE);
        Some(named.unwrap_or_else(|| self.user.to_string()))
    }
}

/// The desired state: deployments by user name.
pub type Desired = BTreeMap<UserName, Deployment>;

fn split(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, path),
    }
}

fn extension(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default()
}

fn stem(name: &str) -> &str {
    name.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(name)
}

/// Works out the desired state for the host `{{.Host}}` names (see the module docs). Errors are
/// every problem found.
pub fn discover(
    files: &[SourceFile],
    transforms: &TransformSet,
    host: Option<&Hostname>,
) -> Result<Desired, Vec<String>> {
    let mut errors = Vec::new();
    let mut desired: Desired = BTreeMap::new();
    let mut claimed: BTreeMap<UserName, String> = BTreeMap::new();
    // (user, file name) -> the source that put it there: one file name, one source.
    let mut placed: BTreeMap<(UserName, String), String> = BTreeMap::new();
    let mut add = |deployment: &mut Deployment, name: String, file: UserFile, source: String| {
        let key = (deployment.user.clone(), name.clone());
        if let Some(previous) = placed.get(&key) {
            return Err(format!(
                "{source}: would deploy {name} for user {}, which {previous} already deploys",
                deployment.user
            ));
        }
        placed.insert(key, source);
        deployment.files.insert(name, file);
        Ok(())
    };

    let mut scopes: BTreeMap<Option<&str>, Vec<&SourceFile>> = BTreeMap::new();
    for file in files {
        scopes.entry(split(&file.path).0).or_default().push(file);
    }
    // (user, file name) -> the repo file it came from, for the references' lines.
    let mut origins: BTreeMap<(UserName, String), &SourceFile> = BTreeMap::new();

    for (dir, scope) in &scopes {
        let pods: Vec<PodName> = scope
            .iter()
            .filter(|f| extension(&f.path) == "pod")
            .filter_map(|f| stem(split(&f.path).1).parse().ok())
            .collect();
        let mut owners: Vec<(String, UserName)> = Vec::new(); // container or pod stem -> user
        for file in scope.iter().filter(|f| matches!(extension(&f.path), "container" | "pod")) {
            let name = split(&file.path).1;
            let spec = match SpecFile::locate(Path::new(file.local()), Path::new(&file.path), host)
            {
                Ok(spec) => spec,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let (text, secrets) = match render_with_secrets(&spec, &file.text, transforms, &pods) {
                Ok(rendered) => rendered,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            // The pod a container belongs to, if any (a pod file belongs to none).
            let pod = match spec.kind {
                Kind::Container => crate::render::pod_of(&spec.stem, &pods),
                Kind::Pod => None,
            };
            let (user, service) = match (spec.kind, pod) {
                (Kind::Pod, _) => (spec.stem.clone(), format!("{}-pod.service", spec.stem)),
                (Kind::Container, Some(pod)) => (pod.to_string(), format!("{pod}-pod.service")),
                (Kind::Container, None) => (spec.stem.clone(), format!("{}.service", spec.stem)),
            };
            // The stem passed the container or pod rule in render; this is the proof in a type.
            let user: UserName = match user.parse() {
                Ok(user) => user,
                Err(e) => {
                    errors.push(format!("{}: {e}", file.path));
                    continue;
                }
            };
            // A pod or a standalone container claims its user name; members join their pod's.
            if pod.is_none() {
                if let Some(previous) = claimed.get(&user) {
                    errors.push(format!("duplicate name {user:?}: {previous} and {}", file.path));
                    continue;
                }
                claimed.insert(user.clone(), file.path.clone());
            }
            let deployment = desired
                .entry(user.clone())
                .or_insert_with(|| Deployment::new(user.clone(), service.clone()));
            if let Some(pod) = pod.filter(|_| joins_tailnet(&text)) {
                let dir = spec.dir.as_deref().unwrap_or_default();
                errors.push(format!(
                    "{}: a member of pod {pod} would join the tailnet on its own; the pod joins \
                     as one node when the host has a {dir}.pod transform (tailpod ships \
                     tailscale.pod), and its members share it",
                    file.path
                ));
                continue;
            }
            // Parsed again only where it is named at all: this runs for every unit every sync.
            let node_name = text
                .contains(NODE_NAME_VARIABLE)
                .then(|| UnitFile::parse(&text).environment("Service", NODE_NAME_VARIABLE))
                .flatten();
            if let Some(Err(e)) = node_name.map(|name| name.parse::<Hostname>()) {
                errors.push(format!(
                    "{}: [Service] Environment={NODE_NAME_VARIABLE}=: {e} (it names the node on the tailnet)",
                    file.path
                ));
                continue;
            }
            deployment.sources.push(file.path.clone());
            let quadlet = UserFile { dir: UnitDir::Quadlet, text };
            if let Err(e) = add(deployment, name.to_owned(), quadlet, file.path.clone()) {
                errors.push(e);
                continue;
            }
            origins.insert((user.clone(), name.to_owned()), file);
            owners.push((spec.stem.clone(), user.clone()));
            deployment.secrets.extend(secrets);
            if spec.kind == Kind::Container {
                for companion in &transforms.companions {
                    let name = format!("{}{}", spec.stem, companion.suffix);
                    let mut text = match spec.fill(&companion.text) {
                        Ok(text) => text,
                        Err(e) => {
                            errors.push(format!("companion {}: {e}", companion.path.display()));
                            continue;
                        }
                    };
                    if name.ends_with(".container") {
                        if let (Some(pod), false) = (pod, text.contains("# quadsync:no-pod")) {
                            let mut unit = UnitFile::parse(&text);
                            if let Some(section) =
                                unit.sections.iter_mut().find(|s| s.name() == "Container")
                            {
                                section.push_entry(Entry::new("Pod", format!("{pod}.pod")));
                            }
                            text = unit.to_string();
                        }
                        let companion_spec = SpecFile {
                            path: companion.path.clone(),
                            dir: None,
                            stem: stem(&name).to_owned(),
                            kind: Kind::Container,
                            host: host.cloned(),
                        };
                        if let Err(e) =
                            crate::render::check_merged(&companion_spec, &UnitFile::parse(&text))
                        {
                            errors.push(format!(
                                "companion {} for {}: {}",
                                companion.path.display(),
                                spec.stem,
                                e.message
                            ));
                        }
                    }
                    let source =
                        format!("companion {} for {}", companion.path.display(), file.path);
                    let companion_file = UserFile { dir: UnitDir::Quadlet, text };
                    if let Err(e) = add(deployment, name, companion_file, source) {
                        errors.push(e);
                    }
                }
            }
        }
        // Sidecars and companions: owned by the container or pod of the longest `STEM-` prefix.
        for file in scope.iter().filter(|f| !matches!(extension(&f.path), "container" | "pod")) {
            let name = split(&file.path).1;
            let extension = extension(name);
            let companion = COMPANION_TYPES.contains(&extension);
            if !companion && !matches!(extension, "service" | "timer") {
                continue; // Data, deployed only where a unit names it.
            }
            if let Err(e) = stem(name).parse::<ContainerName>() {
                errors.push(format!("{}: {e}", file.path));
                continue;
            }
            let Some(user) = owner(stem(name), &owners, companion) else {
                let place = dir.map_or("the repo root".to_owned(), |d| format!("{d}/"));
                let shape =
                    if companion { "OWNER.EXT or OWNER-LABEL.EXT" } else { "OWNER-LABEL.EXT" };
                errors.push(format!(
                    "{}: no container or pod in {place} owns it (it is named {shape}, OWNER a container or pod beside it)",
                    file.path
                ));
                continue;
            };
            let unit = UnitFile::parse(&file.text);
            if let Some(problem) = unit.problems().first() {
                errors.push(problem.located(&file.path));
                continue;
            }
            let section = match extension {
                "timer" => "Timer",
                "service" => "Service",
                _ => section_of(extension).unwrap_or_default(),
            };
            if !unit.has_section(section) {
                errors.push(format!("{}: missing [{section}] section", file.path));
                continue;
            }
            let findings = quadlet::check(&unit, extension, PodmanVersion::DEFAULT_TARGET);
            if let Some(error) = findings.iter().find(|f| f.severity == Severity::Error) {
                errors.push(error.located(&file.path));
                continue;
            }
            if let Some(deployment) = desired.get_mut(user) {
                deployment.sources.push(file.path.clone());
                let dir = if companion { UnitDir::Quadlet } else { UnitDir::Systemd };
                let owned = UserFile { dir, text: file.text.clone() };
                match add(deployment, name.to_owned(), owned, file.path.clone()) {
                    Ok(()) => drop(origins.insert((user.clone(), name.to_owned()), file)),
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    for deployment in desired.values_mut() {
        errors.extend(resolve_references(deployment, &origins, files));
    }
    if errors.is_empty() { Ok(desired) } else { Err(errors) }
}

/// The user owning `name` (a file's stem) among `owners` (container and pod stems with their
/// users): the longest `STEM-` prefix, or with `exact`, the stem itself.
fn owner<'o>(name: &str, owners: &'o [(String, UserName)], exact: bool) -> Option<&'o UserName> {
    owners
        .iter()
        .filter(|(stem, _)| {
            (exact && name == stem)
                || name.strip_prefix(stem.as_str()).is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|(stem, _)| stem.len())
        .map(|(_, user)| user)
}

/// Checks every reference the deployment's units make, and adds the data files they name from
/// beside them in the repo. Quadlet's generated services must not clash either (`web.kube` and
/// `web.container` would both be `web.service`).
fn resolve_references(
    deployment: &mut Deployment,
    origins: &BTreeMap<(UserName, String), &SourceFile>,
    files: &[SourceFile],
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut services: BTreeMap<String, &str> = BTreeMap::new();
    let mut data: Vec<(String, String, String)> = Vec::new(); // (name, text, from)
    for (name, file) in deployment.files.iter().filter(|(_, f)| f.dir == UnitDir::Quadlet) {
        let origin = origins.get(&(deployment.user.clone(), name.clone()));
        let shown =
            origin.map_or_else(|| format!("{name} (from the transforms)"), |o| o.path.clone());
        if let Some(service) = generated_service(name)
            && let Some(other) = services.insert(service.clone(), name)
        {
            errors.push(format!("{shown}: Quadlet would make {service} of it and of {other}"));
        }
        let unit = UnitFile::parse(&file.text);
        // The spec as written, once per file, for the line of each reference written there.
        let written = origin.map(|o| UnitFile::parse(&o.text));
        for reference in references(&unit, extension(name)) {
            let line = written.as_ref().and_then(|written| {
                written
                    .entries()
                    .map(|(_, e)| e)
                    .find(|e| e.key() == reference.key && e.value() == reference.value)
                    .map(Entry::line)
            });
            let at = line.map_or(shown.clone(), |line| format!("{shown}:{line}"));
            let named = format!("{}={}", reference.key, reference.value);
            match reference.target {
                Target::Unit if deployment.files.contains_key(&reference.name) => {}
                Target::Unit => errors.push(format!(
                    "{at}: {named}: no {} is deployed for user {} (Quadlet looks only in that \
                     user's directory; name the file {}-LABEL.{} beside its owner)",
                    reference.name,
                    deployment.user,
                    deployment.user,
                    extension(&reference.name)
                )),
                Target::Data if reference.name.contains('/') => errors.push(format!(
                    "{at}: {named}: quadsync deploys files beside the unit only, not below it"
                )),
                Target::Data => {
                    let dir = origin.and_then(|o| split(&o.path).0);
                    let path =
                        dir.map_or(reference.name.clone(), |d| format!("{d}/{}", reference.name));
                    match files.iter().find(|f| f.path == path && wanted_data(&f.path)) {
                        Some(found) => {
                            data.push((reference.name, found.text.clone(), found.path.clone()))
                        }
                        None => errors.push(format!(
                            "{at}: {named}: {path} is not a regular YAML file or Containerfile in the repo"
                        )),
                    }
                }
            }
        }
    }
    for (name, text, from) in data {
        match deployment.files.get(&name) {
            Some(existing) if existing.text == text => {}
            Some(_) => errors
                .push(format!("{from}: {name} is already deployed for user {}", deployment.user)),
            None => {
                deployment.sources.push(from);
                deployment.files.insert(name, UserFile { dir: UnitDir::Quadlet, text });
            }
        }
    }
    errors
}

fn wanted_data(path: &str) -> bool {
    crate::source::is_data(split(path).1)
}

/// Whether a rendered container joins the tailnet (ts4nsnet as its network command, or a key
/// from tailmint), which a pod member may not do on its own: its pod joins.
fn joins_tailnet(text: &str) -> bool {
    let unit = UnitFile::parse(text);
    let mentions = |section: &str, key: &str, tool: &str| {
        unit.values(section, key).any(|value| value.contains(tool))
    };
    mentions("Container", "GlobalArgs", "ts4nsnet")
        || mentions("Container", "Network", "ts4nsnet")
        || mentions("Service", "ExecStartPre", "tailmint")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const C: &str = "[Container]\nImage=docker.io/library/nginx:latest\n";

    fn source(files: &[(&str, &str)]) -> Vec<SourceFile> {
        files.iter().map(|(p, t)| SourceFile::at_root(*p, *t)).collect()
    }

    fn transforms(files: &[(&str, &str)]) -> TransformSet {
        TransformSet::from_files(files.iter().map(|(n, t)| (PathBuf::from(n), t.to_string())))
            .unwrap()
    }

    fn names(desired: &Desired) -> Vec<(&str, &str, Vec<&str>)> {
        desired
            .values()
            .map(|d| {
                (d.user.as_str(), d.service.as_str(), d.files.keys().map(String::as_str).collect())
            })
            .collect()
    }

    #[test]
    fn root_and_directory_containers_with_sidecars() {
        let t = transforms(&[("tailscale.container", "[Container]\nNetwork=none\n")]);
        let files = source(&[
            ("library.container", C),
            ("library-refresh.service", "[Service]\nExecStart=/bin/true\n"),
            ("library-refresh.timer", "[Timer]\nOnCalendar=daily\n"),
            ("tailscale/web.container", C),
            ("README.md", "ignored"),
            ("docs/notes.txt", "ignored"),
        ]);
        let desired = discover(&files, &t, None).unwrap();
        assert_eq!(
            names(&desired),
            [
                (
                    "library",
                    "library.service",
                    vec!["library-refresh.service", "library-refresh.timer", "library.container"]
                ),
                ("web", "web.service", vec!["web.container"]),
            ]
        );
        let library = &desired["library"];
        assert_eq!(library.files["library-refresh.timer"].dir, UnitDir::Systemd);
        assert_eq!(library.timers().collect::<Vec<_>>(), ["library-refresh.timer"]);
        assert!(desired["web"].files["web.container"].text.contains("Network=none"));
    }

    #[test]
    fn pods_group_their_members_and_companions_follow_every_container() {
        // CASES 45 and 51.
        let t = transforms(&[
            ("_base-side.container", "[Container]\nImage=side\nContainerName={{.Name}}-side\n"),
            ("_base-data.volume", "[Volume]\nLabel=app={{.Name}}\n"),
        ]);
        let files = source(&[
            ("webapp.pod", "[Pod]\n"),
            ("webapp-web.container", C),
            ("webapp-web-refresh.timer", "[Timer]\nOnCalendar=daily\n"),
            ("solo.container", C),
        ]);
        let desired = discover(&files, &t, None).unwrap();
        let webapp = &desired["webapp"];
        assert_eq!(webapp.service, "webapp-pod.service");
        let names: Vec<_> = webapp.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "webapp-web-data.volume",
                "webapp-web-refresh.timer",
                "webapp-web-side.container",
                "webapp-web.container",
                "webapp.pod"
            ]
        );
        assert!(webapp.files["webapp-web-side.container"].text.ends_with("Pod=webapp.pod\n"));
        assert!(webapp.files["webapp-web.container"].text.ends_with("Pod=webapp.pod\n"));
        assert_eq!(desired["solo"].files["solo-data.volume"].text, "[Volume]\nLabel=app=solo\n");
    }

    #[test]
    fn every_problem_is_reported_and_nothing_is_desired() {
        let t = transforms(&[("myhost.container", "")]);
        let files = source(&[
            ("foo.container", C),
            ("myhost/foo.container", C),
            ("Bad.container", C),
            ("webapps/web.container", C),
            ("other.container", C),
            ("library-refresh.timer", "[Timer]\n"),
            ("other-x.timer", "[Unit]\n"),
            ("secret.container", "[Container]\nImage=x\n[Secrets]\nEnvironment=A\n"),
        ]);
        let errors = discover(&files, &t, None).unwrap_err();
        let expected = [
            "duplicate name \"foo\": foo.container and myhost/foo.container",
            "Bad.container: name \"Bad\" is not valid",
            "webapps/web.container: no transform for directory webapps",
            "library-refresh.timer: no container or pod in the repo root owns it",
            "other-x.timer: missing [Timer] section",
            "secret.container:4: Environment= in [Secrets] is NAME=value",
        ];
        for want in expected {
            assert!(errors.iter().any(|e| e.contains(want)), "missing {want:?} in {errors:#?}");
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn fleet_paths_keep_the_layout_rules_and_host_names_fill_in() {
        let tailscale = (
            "tailscale.container",
            "[Container]\nGlobalArgs=--network-cmd-path=/usr/local/bin/ts4nsnet\n[Service]\n+ExecStartPre=/usr/bin/sudo /usr/local/bin/tailmint --caller\n",
        );
        let t = transforms(&[
            tailscale,
            ("_base-log.container", "[Container]\nImage=log\nLabel=on={{.Host}}\n"),
        ]);
        let file = |path: &str, base: &str, text: &str| SourceFile {
            path: path.into(),
            text: text.into(),
            base: base.into(),
        };
        let exporter =
            format!("{C}[Service]\nEnvironment=TS_HOSTNAME={{{{.Name}}}}-{{{{.Host}}}}\n");
        let files = [
            file("common/tailscale/exporter.container", "common", &exporter),
            file("hosts/web1/tailscale/web.container", "hosts/web1", C),
            file("hosts/web1/app.container", "hosts/web1", C),
        ];
        let host: Hostname = "web1".parse().unwrap();
        let desired = discover(&files, &t, Some(&host)).unwrap();
        let names: Vec<&str> = desired.keys().map(UserName::as_str).collect();
        assert_eq!(names, ["app", "exporter", "web"]);
        // The transform of a path's own directory applies, and {{.Host}} is this host.
        let exporter = &desired["exporter"];
        assert!(exporter.files["exporter.container"].text.contains("ts4nsnet"));
        assert!(exporter.files["exporter-log.container"].text.contains("Label=on=web1"));
        assert_eq!(exporter.node_name().as_deref(), Some("exporter-web1"));
        assert_eq!(desired["web"].node_name().as_deref(), Some("web"));
        assert_eq!(desired["app"].node_name(), None);
        // Without a usable host name, {{.Host}} is an error, not an empty string.
        let errors = discover(&files, &t, None).unwrap_err();
        assert!(
            errors.iter().any(|e| e
                .starts_with("common/tailscale/exporter.container: {{.Host}}: this host's name")),
            "{errors:#?}"
        );
        // A node name that is no hostname is refused before the host sees it.
        let bad = format!("{C}[Service]\nEnvironment=TS_HOSTNAME=web_1\n");
        let errors = discover(
            &[file("hosts/web1/tailscale/web.container", "hosts/web1", &bad)],
            &t,
            Some(&host),
        )
        .unwrap_err();
        assert!(
            errors[0].starts_with("hosts/web1/tailscale/web.container: [Service] Environment=TS_HOSTNAME=: hostname \"web_1\""),
            "{errors:#?}"
        );
        // One name from two paths is one error naming both.
        let errors = discover(
            &[
                file("common/app.container", "common", C),
                file("hosts/web1/app.container", "hosts/web1", C),
            ],
            &t,
            Some(&host),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["duplicate name \"app\": common/app.container and hosts/web1/app.container"]
        );
    }

    #[test]
    fn a_pod_on_the_tailnet_is_one_node_its_members_share() {
        let tailscale_container = (
            "tailscale.container",
            "[Container]\nGlobalArgs=--network-cmd-path=/usr/local/bin/ts4nsnet\n[Service]\n+ExecStartPre=/usr/bin/sudo /usr/local/bin/tailmint --caller\n",
        );
        let files = source(&[
            ("tailscale/webapp.pod", "[Pod]\n"),
            ("tailscale/webapp-web.container", C),
            ("tailscale/webapp-db.container", C),
        ]);
        // Without a pod transform, each member would get the container's network: refused.
        let errors = discover(&files, &transforms(&[tailscale_container]), None).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[1].starts_with("tailscale/webapp-db.container: a member of pod webapp would join the tailnet on its own; the pod joins as one node when the host has a tailscale.pod transform"),
            "{errors:#?}"
        );
        // With one, the pod gets the network and the key; the members share it.
        let t = transforms(&[
            tailscale_container,
            (
                "tailscale.pod",
                "[Pod]\nNetwork=slirp4netns\nGlobalArgs=--network-cmd-path=/usr/local/bin/ts4nsnet\n[Service]\n+ExecStartPre=/usr/bin/sudo /usr/local/bin/tailmint --caller\n",
            ),
        ]);
        let desired = discover(&files, &t, None).unwrap();
        let webapp = &desired["webapp"];
        assert_eq!(webapp.service, "webapp-pod.service");
        assert!(webapp.files["webapp.pod"].text.contains("GlobalArgs=--network-cmd-path"));
        for member in ["webapp-web.container", "webapp-db.container"] {
            let text = &webapp.files[member].text;
            assert!(!joins_tailnet(text) && text.ends_with("Pod=webapp.pod\n"), "{text}");
        }
        // A container beside the pod stands alone, and joins the tailnet on its own.
        let mut beside = files.clone();
        beside.extend(source(&[("tailscale/web.container", C)]));
        let desired = discover(&beside, &t, None).unwrap();
        assert_eq!(desired.keys().collect::<Vec<_>>(), ["web", "webapp"]);
        assert!(joins_tailnet(&desired["web"].files["web.container"].text));
    }

    #[test]
    fn companions_in_the_repo_go_to_their_owner_and_references_must_resolve() {
        let t = TransformSet::without_host();
        let blog = "[Container]\nImage=x\nVolume=blog-data.volume:/data\nNetwork=blog.network\n";
        let files = source(&[
            ("blog.container", blog),
            ("blog-data.volume", "[Volume]\nLabel=app=blog\n"),
            ("blog.network", "[Network]\n"),
            ("blog-feed.kube", "[Kube]\nYaml=feed.yaml\n"),
            ("feed.yaml", "kind: Pod\n"),
            ("unrelated.yaml", "x: 1\n"),
        ]);
        let desired = discover(&files, &t, None).unwrap();
        let blog = &desired["blog"];
        let names: Vec<_> = blog.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["blog-data.volume", "blog-feed.kube", "blog.container", "blog.network", "feed.yaml"]
        );
        assert!(blog.files.values().all(|f| f.dir == UnitDir::Quadlet));
        assert_eq!(blog.files["feed.yaml"].text, "kind: Pod\n");

        let files = source(&[
            ("web.container", "[Container]\nImage=x\n# shared?\nVolume=db-data.volume:/d\n"),
            ("db.container", C),
            ("db-data.volume", "[Volume]\n"),
            ("stray.volume", "[Volume]\n"),
            ("db.kube", "[Kube]\nYaml=missing.yaml\n"),
            ("db-net.network", "[Volume]\n"),
        ]);
        let errors = discover(&files, &t, None).unwrap_err();
        let expected = [
            "web.container:4: Volume=db-data.volume:/d: no db-data.volume is deployed for user web",
            "stray.volume: no container or pod in the repo root owns it",
            "db.kube: Quadlet would make db.service of it and of db.container",
            "db.kube:2: Yaml=missing.yaml: missing.yaml is not a regular YAML file or Containerfile",
            "db-net.network: missing [Network] section",
        ];
        for want in expected {
            assert!(errors.iter().any(|e| e.starts_with(want)), "missing {want:?} in {errors:#?}");
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn two_sources_of_one_file_name_are_an_error_not_a_silent_replacement() {
        // A companion `-side.container` for webapp-web collides with the member of that name.
        let t = transforms(&[("_base-side.container", "[Container]\nImage=side\n")]);
        let files = source(&[
            ("webapp.pod", "[Pod]\n"),
            ("webapp-web.container", C),
            ("webapp-web-side.container", C),
        ]);
        let errors = discover(&files, &t, None).unwrap_err();
        assert!(
            errors.iter().any(
                |e| e.contains("would deploy webapp-web-side.container for user webapp, which")
            ),
            "{errors:#?}"
        );
    }
}
