//! One repo, many hosts: which repo directories a host deploys (`QUADSYNC_PATHS`), and the
//! facts about the host they and `{{.Host}}` expand with. Pure, so `build-ign` checks a
//! config.env's paths by the rules quadsync reads them with; quadsync learns who its host is.
//!
//! `QUADSYNC_PATHS` is a comma-separated list of repo directories, each read with the repo
//! layout's rules (its files, and one level of transform directories below it; see
//! quadsync's `source` module). systemd's specifiers expand per host: `%H` the hostname, `%l` the
//! hostname up to its first dot, `%m` the machine id, `%a` the architecture (systemd's names:
//! `x86-64`, `arm64`), `%%` a `%`. A path starting with `?` may be missing from the branch;
//! any other missing path is an error, so a renamed host or a typo never reads as "remove
//! everything". `.` is the repo's root, and the default.
//!
//! Two paths may not read the same directory: one listed twice, or one that is a transform
//! directory of another (`.` and `common`), is an error.

use std::fmt;

use crate::names::Hostname;

/// `QUADSYNC_PATHS` when unset: the whole repo, as before fleets.
pub const DEFAULT_PATHS: &str = ".";

/// What a host's paths and `{{.Host}}` expand with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// The full hostname (`%H`).
    pub hostname: String,
    /// `/etc/machine-id` (`%m`); unknown when checking for another host.
    pub machine_id: Option<String>,
    /// systemd's architecture name (`%a`).
    pub arch: String,
}

impl HostIdentity {
    /// Another host, as `check --host NAME` sees it: its machine id is not known here.
    pub fn named(hostname: &str, arch: Option<&str>) -> HostIdentity {
        HostIdentity {
            hostname: hostname.to_owned(),
            machine_id: None,
            arch: arch.unwrap_or(local_arch()).to_owned(),
        }
    }

    /// The hostname up to its first dot (`%l`).
    pub fn short_name(&self) -> &str {
        self.hostname.split('.').next().unwrap_or_default()
    }

    /// What `{{.Host}}` becomes: the short name as one DNS label (lowercase; other characters
    /// than letters, digits and `-` made `-`), since it goes into node names. `None` when it
    /// has no letter or digit.
    pub fn label(&self) -> Option<Hostname> {
        Hostname::derive_from(self.short_name()).ok()
    }
}

/// systemd's name for the architecture quadsync was built for (`%a`).
pub fn local_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64-le",
        "loongarch64" => "loongarch64",
        other => other,
    }
}

/// One entry of `QUADSYNC_PATHS`, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pattern: String,
    optional: bool,
}

/// A directory of the repo this host deploys: `""` is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPath {
    pub dir: String,
    /// Missing from the branch is fine (`?`).
    pub optional: bool,
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.dir.is_empty() { "." } else { &self.dir })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.optional { "?" } else { "" }, self.pattern)
    }
}

/// Parses `QUADSYNC_PATHS`: every entry's specifiers known and its fixed parts a repo path.
pub fn parse(setting: &str) -> Result<Vec<PathPattern>, String> {
    let mut patterns = Vec::new();
    for entry in setting.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err("an empty entry (paths are separated by single commas)".into());
        }
        let (optional, pattern) = match entry.strip_prefix('?') {
            Some(rest) => (true, rest.trim()),
            None => (false, entry),
        };
        patterns.push(PathPattern { pattern: pattern.to_owned(), optional });
    }
    // As a sample host expands them: each entry a repo path, no two reading one directory
    // (named by the patterns). A real host's expansion is checked again when it is made.
    let sample = HostIdentity {
        hostname: "host.example".into(),
        machine_id: Some("0".repeat(32)),
        arch: "x86-64".into(),
    };
    let paths = patterns.iter().map(|p| p.expand(&sample)).collect::<Result<Vec<_>, _>>()?;
    let shown: Vec<String> = patterns.iter().map(ToString::to_string).collect();
    refuse_overlaps(&paths, &shown)?;
    Ok(patterns)
}

impl PathPattern {
    /// Whether the path differs from host to host by name (`%H`, `%l`).
    pub fn per_host(&self) -> bool {
        self.pattern.contains("%H") || self.pattern.contains("%l")
    }

    /// The pattern's host directory: the directory holding one directory per host, when a
    /// whole component is `%H` or `%l` (`hosts/%H` → `hosts`), for `check --all-hosts`.
    pub fn hosts_dir(&self) -> Option<String> {
        let components: Vec<&str> = self.pattern.trim_matches('/').split('/').collect();
        let at = components.iter().position(|c| *c == "%H" || *c == "%l")?;
        let parent = components[..at].join("/");
        Some(if parent == "." { String::new() } else { parent })
    }

    /// The directory this pattern names on `host`.
    pub fn expand(&self, host: &HostIdentity) -> Result<RepoPath, String> {
        let shown = self.to_string();
        let mut expanded = String::new();
        let mut chars = self.pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                expanded.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => expanded.push('%'),
                Some('H') => expanded.push_str(&host.hostname),
                Some('l') => expanded.push_str(host.short_name()),
                Some('a') => expanded.push_str(&host.arch),
                Some('m') => expanded.push_str(host.machine_id.as_deref().ok_or_else(|| {
                    format!("{shown}: %m (the machine id) is known only on the host itself")
                })?),
                Some(other) => {
                    return Err(format!(
                        "{shown}: unknown specifier %{other} (known: %H %l %m %a %%)"
                    ));
                }
                None => return Err(format!("{shown}: a lone % at the end (write %% for a %)")),
            }
        }
        let dir = repo_dir(&expanded).map_err(|why| format!("{shown}: {why}"))?;
        Ok(RepoPath { dir, optional: self.optional })
    }
}

/// A path inside the repo, normalised: `""` for the root, else `a/b` with no `.`, `..`, hidden
/// or empty components.
fn repo_dir(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err("must be a directory inside the repo, not an absolute path".into());
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed == "." {
        return Ok(String::new());
    }
    for component in trimmed.split('/') {
        match component {
            "" => return Err("an empty path component".into()),
            "." | ".." => return Err(format!("{component:?} is not allowed in a path")),
            hidden if hidden.starts_with('.') => {
                return Err(format!("{hidden:?}: hidden directories are not read"));
            }
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

fn parent(path: &RepoPath) -> &str {
    path.dir.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Every path for `host`, refusing two that would read the same directory.
pub fn expand_all(patterns: &[PathPattern], host: &HostIdentity) -> Result<Vec<RepoPath>, String> {
    let paths = patterns.iter().map(|p| p.expand(host)).collect::<Result<Vec<_>, _>>()?;
    let shown: Vec<String> = paths.iter().map(ToString::to_string).collect();
    refuse_overlaps(&paths, &shown)?;
    Ok(paths)
}

/// Two paths that read one directory: the same one, or one a transform directory of the other.
/// `shown[i]` names `paths[i]` in the error (a path, or the pattern it came from).
fn refuse_overlaps(paths: &[RepoPath], shown: &[String]) -> Result<(), String> {
    for (i, path) in paths.iter().enumerate() {
        for (j, earlier) in paths[..i].iter().enumerate() {
            if earlier.dir == path.dir {
                return Err(format!("{} is listed twice", shown[i]));
            }
            let (outer, inner) = match () {
                () if !path.dir.is_empty() && parent(path) == earlier.dir => (j, i),
                () if !earlier.dir.is_empty() && parent(earlier) == path.dir => (i, j),
                () => continue,
            };
            return Err(format!(
                "{} is a transform directory of {}, which reads it already",
                shown[inner], shown[outer]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostIdentity {
        HostIdentity {
            hostname: "web1.example.org".into(),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            arch: "arm64".into(),
        }
    }

    fn expand(setting: &str) -> Result<Vec<String>, String> {
        let paths = expand_all(&parse(setting)?, &host())?;
        Ok(paths.iter().map(|p| format!("{}{p}", if p.optional { "?" } else { "" })).collect())
    }

    #[test]
    fn specifiers_expand_per_host_as_systemd_names_them() {
        assert_eq!(expand(".").unwrap(), ["."]);
        assert_eq!(
            expand("common, hosts/%H,?sites/%l/%a ,m/%m,lit/100%%").unwrap(),
            [
                "common",
                "hosts/web1.example.org",
                "?sites/web1/arm64",
                "m/0123456789abcdef0123456789abcdef",
                "lit/100%"
            ]
        );
        assert_eq!(expand("./").unwrap(), ["."]);
        assert_eq!(expand("hosts/%H/").unwrap(), ["hosts/web1.example.org"]);
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_wrong() {
        let cases = [
            ("common,,hosts", "an empty entry"),
            ("hosts/%h", "hosts/%h: unknown specifier %h (known: %H %l %m %a %%)"),
            ("hosts/%", "hosts/%: a lone % at the end"),
            ("/srv/defs", "/srv/defs: must be a directory inside the repo"),
            ("hosts/../etc", "hosts/../etc: \"..\" is not allowed"),
            ("a//b", "a//b: an empty path component"),
            ("?.git", "?.git: \".git\": hidden directories are not read"),
            ("common,common/", "common/ is listed twice"),
            (".,common", "common is a transform directory of ., which reads it already"),
            ("hosts/%l/web,hosts/%l", "hosts/%l/web is a transform directory of hosts/%l"),
        ];
        for (setting, want) in cases {
            let err = expand(setting).unwrap_err();
            assert!(err.starts_with(want), "{setting}: {err:?} should start with {want:?}");
        }
        // Nested deeper than a transform directory is a separate read, not an overlap.
        assert_eq!(expand(".,fleet/common").unwrap(), [".", "fleet/common"]);
    }

    #[test]
    fn another_hosts_machine_id_is_not_known_and_its_name_must_be_a_label() {
        let other = HostIdentity::named("db2", Some("x86-64"));
        let patterns = parse("hosts/%H/%a").unwrap();
        assert_eq!(expand_all(&patterns, &other).unwrap()[0].dir, "hosts/db2/x86-64");
        let err = expand_all(&parse("m/%m").unwrap(), &other).unwrap_err();
        assert_eq!(err, "m/%m: %m (the machine id) is known only on the host itself");
        let label = |name: &str| HostIdentity::named(name, None).label().map(|l| l.to_string());
        assert_eq!(label("Bad_Host.lan").as_deref(), Some("bad-host"));
        assert_eq!(label("___"), None);
        assert_eq!(host().label().unwrap().as_str(), "web1");
    }

    #[test]
    fn the_hosts_directory_is_where_a_whole_component_names_the_host() {
        let dirs: Vec<Option<String>> = parse("common,hosts/%H,%l/apps,site/h-%H")
            .unwrap()
            .iter()
            .map(PathPattern::hosts_dir)
            .collect();
        assert_eq!(dirs, [None, Some("hosts".into()), Some(String::new()), None]);
    }
}
