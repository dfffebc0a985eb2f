//! `quadsync check`: a definitions directory as one host would deploy it, or as every host of a
//! fleet would, without a host (for the definitions repo's CI).
//!
//! Reading and discovery are `sync`'s own ([`crate::source`], [`crate::discover`]), so what
//! passes here deploys there. What depends on the podman version asked about is a warning;
//! what a sync would refuse is an error. Across hosts, one more rule: no two containers may
//! join the tailnet under one node name (a shared container needs `TS_HOSTNAME=NAME-{{.Host}}`),
//! since the second would be refused by ts4nsnet as a collision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use tailpod_core::quadlet::{PodmanVersion, Severity};

use crate::discover::{NODE_NAME_VARIABLE, discover};
use crate::fleet::{self, HostIdentity, PathPattern};
use crate::secrets::Keyring;
use crate::source::{DirTree, EntryKind, SourceTree, kind_at, overlooked, read_paths, wanted};
use crate::system::Host;
use crate::transforms::TransformSet;
use crate::validate::ValidatedRecord;

/// What to check, and against what.
#[derive(Debug)]
pub struct Check {
    pub dir: PathBuf,
    pub transforms: TransformSet,
    pub paths: Vec<PathPattern>,
    pub podman: PodmanVersion,
    /// Podman's generator, to run over everything once.
    pub generator: Option<PathBuf>,
    /// Opens every `[Secrets]` value when given.
    pub keyring: Option<Keyring>,
}

/// Which hosts to check as.
#[derive(Debug, Clone)]
pub enum Hosts {
    One(HostIdentity),
    /// Every host the repo has a directory for, where `paths` names one per host (`hosts/%H`),
    /// on this architecture.
    All {
        arch: Option<String>,
    },
}

/// What was found.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Hosts checked, container users and files read (summed over the hosts).
    pub hosts: usize,
    pub users: usize,
    pub files: usize,
}

impl Findings {
    /// Adds a finding once, however many hosts make it (a shared file's mistake is one).
    fn add(&mut self, severity: Severity, message: String) {
        let list = match severity {
            Severity::Error => &mut self.errors,
            Severity::Warning => &mut self.warnings,
        };
        if !list.contains(&message) {
            list.push(message);
        }
    }
}

/// The hosts a fleet repo has: one per directory where a path's component is `%H` or `%l`.
pub fn fleet_hosts(tree: &dyn SourceTree, paths: &[PathPattern]) -> Result<Vec<String>, String> {
    let dirs: BTreeSet<String> = paths.iter().filter_map(PathPattern::hosts_dir).collect();
    if dirs.is_empty() {
        return Err(
            "--all-hosts: no path has a component that is %H or %l (such as hosts/%H), so \
                    there is no directory per host to find the hosts in"
                .into(),
        );
    }
    let mut hosts = BTreeSet::new();
    for dir in &dirs {
        if !dir.is_empty() && kind_at(tree, dir)? != Some(EntryKind::Dir) {
            continue;
        }
        let entries = tree.list(dir)?;
        hosts.extend(
            entries
                .into_iter()
                .filter(|e| e.kind == EntryKind::Dir && !e.name.starts_with('.'))
                .map(|e| e.name),
        );
    }
    if hosts.is_empty() {
        let shown: Vec<String> =
            dirs.iter().map(|d| if d.is_empty() { ".".into() } else { format!("{d}/") }).collect();
        return Err(format!("--all-hosts: no host directories in {}", shown.join(", ")));
    }
    Ok(hosts.into_iter().collect())
}

/// Runs the check; see the module docs.
pub fn check(check: &Check, hosts: &Hosts) -> Findings {
    let tree = DirTree { root: check.dir.clone() };
    let mut findings = Findings::default();
    let identities = match hosts {
        Hosts::One(identity) => vec![identity.clone()],
        Hosts::All { arch } => match fleet_hosts(&tree, &check.paths) {
            Ok(names) => names.iter().map(|n| HostIdentity::named(n, arch.as_deref())).collect(),
            Err(e) => {
                findings.errors.push(e);
                return findings;
            }
        },
    };
    let several = identities.len() > 1 || matches!(hosts, Hosts::All { .. });
    // node name -> (host, the repo file that makes it)
    let mut nodes: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    // One record for all hosts: what the generator accepted for one host is not run again.
    let mut record = ValidatedRecord::default();
    for identity in &identities {
        let located = |message: String| match several {
            true => format!("host {}: {message}", identity.hostname),
            false => message,
        };
        let paths = match fleet::expand_all(&check.paths, identity) {
            Ok(paths) => paths,
            Err(e) => {
                findings.add(Severity::Error, located(format!("QUADSYNC_PATHS: {e}")));
                continue;
            }
        };
        findings.hosts += 1;
        match overlooked(&tree, &paths) {
            Ok(found) => found.into_iter().for_each(|(s, m)| findings.add(s, m)),
            Err(e) => findings.add(Severity::Error, e),
        }
        let files = match read_paths(&tree, &paths) {
            Ok(files) => files,
            Err(errors) => {
                errors.into_iter().for_each(|e| findings.add(Severity::Error, located(e)));
                continue;
            }
        };
        // Every section and key of every file, so one run shows all of a file's mistakes (a
        // sync stops at a file's first; the same message from discovery below is not repeated).
        for file in files.iter().filter(|f| wanted(&f.path)) {
            let extension = file.path.rsplit_once('.').map_or("", |(_, ext)| ext);
            let mut unit = tailpod_core::unit::UnitFile::parse(&file.text);
            // quadsync's own section, which a sync takes out before podman sees the unit.
            unit.sections.retain(|s| s.name() != crate::secrets::SECTION);
            for finding in tailpod_core::quadlet::check(&unit, extension, check.podman) {
                findings.add(finding.severity, finding.located(&file.path));
            }
        }
        let label = identity.label();
        let desired = match discover(&files, &check.transforms, label.as_ref()) {
            Ok(desired) => desired,
            Err(errors) => {
                errors.into_iter().for_each(|e| findings.add(Severity::Error, e));
                continue;
            }
        };
        findings.users += desired.len();
        findings.files += files.len();
        for secret in desired.values().flat_map(|d| &d.secrets) {
            match &check.keyring {
                Some(keyring) => {
                    if let Err(e) = keyring.open(secret) {
                        let message = format!("{}: secret {}: {e}", secret.at, secret.name);
                        findings.add(Severity::Error, message);
                    }
                }
                None if !secret.encrypted() => findings.add(
                    Severity::Warning,
                    format!(
                        "{}: secret {} is plaintext in the repo; encrypt it with quadsync secret encrypt",
                        secret.at, secret.name
                    ),
                ),
                None => {}
            }
        }
        if let Some(generator) = &check.generator {
            let host = Host { generator: generator.clone(), ..Host::default() };
            if let Err(refused) = crate::validate::validate(&desired, &host, &mut record) {
                refused.into_iter().for_each(|e| findings.add(Severity::Error, e));
            }
        }
        for deployment in desired.values() {
            if let Some(node) = deployment.node_name() {
                let source = deployment.sources.first().cloned().unwrap_or_default();
                nodes.entry(node).or_default().push((identity.hostname.clone(), source));
            }
        }
    }
    for (node, makers) in nodes.iter().filter(|(_, makers)| makers.len() > 1) {
        let shown: Vec<String> = makers
            .iter()
            .map(|(host, source)| match several {
                true => format!("host {host} ({source})"),
                false => source.clone(),
            })
            .collect();
        findings.errors.push(format!(
            "tailnet node name {node} is taken by {}: the second would be refused as a collision; \
             name each node apart, e.g. [Service] Environment={NODE_NAME_VARIABLE}={node}-{{{{.Host}}}}",
            shown.join(" and ")
        ));
    }
    findings
}
