//! What a Quadlet unit names by file: `Volume=data.volume`, `Network=net.network`,
//! `Image=app.build`, `Pod=webapp.pod`, a `.kube`'s `Yaml=` or a `.build`'s `File=`.
//!
//! Quadlet resolves such names in the user's own Quadlet directory, so each must be a file
//! deployed for the same user; [`crate::discover`] checks that and deploys the data files named.

use tailpod_core::unit::UnitFile;

/// What a reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Another Quadlet unit, by file name.
    Unit,
    /// A file beside the unit (a YAML file, a Containerfile), by relative path.
    Data,
}

/// One reference in a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub key: String,
    pub value: String,
    /// The file named.
    pub name: String,
    pub target: Target,
}

/// The section a Quadlet unit of `extension` keeps its settings in (`volume` -> `Volume`).
pub fn section_of(extension: &str) -> Option<&'static str> {
    Some(match extension {
        "container" => "Container",
        "pod" => "Pod",
        "volume" => "Volume",
        "network" => "Network",
        "kube" => "Kube",
        "image" => "Image",
        "build" => "Build",
        "artifact" => "Artifact",
        _ => return None,
    })
}

/// The service Quadlet generates for a unit file name: `web.container` and `web.kube` become
/// `web.service`, `webapp.pod` becomes `webapp-pod.service`, `data.volume` `data-volume.service`.
pub fn generated_service(file_name: &str) -> Option<String> {
    let (stem, extension) = file_name.rsplit_once('.')?;
    section_of(extension)?;
    Some(match extension {
        "container" | "kube" => format!("{stem}.service"),
        _ => format!("{stem}-{extension}.service"),
    })
}

/// Every reference a unit of `extension` makes by file name.
pub fn references(unit: &UnitFile, extension: &str) -> Vec<Reference> {
    let Some(section) = section_of(extension) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in unit.sections_named(section).flat_map(|s| s.entries()) {
        let value = entry.value();
        let mut add = |name: &str, target: Target| {
            found.push(Reference {
                key: entry.key().to_owned(),
                value: value.to_owned(),
                name: name.to_owned(),
                target,
            });
        };
        match entry.key() {
            "Volume" => unit_named(first_field(value), &["volume"]).map(|n| add(n, Target::Unit)),
            "Network" => unit_named(first_field(value), &["network", "container"])
                .map(|n| add(n, Target::Unit)),
            "Image" if matches!(extension, "container" | "volume") => {
                unit_named(value, &["image", "build"]).map(|n| add(n, Target::Unit))
            }
            "Pod" => unit_named(value, &["pod"]).map(|n| add(n, Target::Unit)),
            "Mount" => {
                for option in value.split(',') {
                    let source = option.strip_prefix("source=").or(option.strip_prefix("src="));
                    if let Some(name) = source.and_then(|s| unit_named(s, &["volume", "image"])) {
                        add(name, Target::Unit);
                    }
                }
                None
            }
            "Yaml" | "ConfigMap" if extension == "kube" => {
                relative_path(value).map(|n| add(n, Target::Data))
            }
            "File" if extension == "build" => relative_path(value).map(|n| add(n, Target::Data)),
            _ => None,
        };
    }
    found
}

/// `source` of `source:target:options`.
fn first_field(value: &str) -> &str {
    value.split(':').next().unwrap_or_default()
}

/// A bare file name ending in one of `extensions`: Quadlet's way of naming another unit.
fn unit_named<'v>(value: &'v str, extensions: &[&str]) -> Option<&'v str> {
    let (stem, extension) = value.rsplit_once('.')?;
    let bare = !stem.is_empty() && !value.contains('/');
    (bare && extensions.contains(&extension)).then_some(value)
}

/// A path relative to the unit's directory; absolute paths, URLs and values with systemd
/// specifiers (`%h/...`) name something on the host instead.
fn relative_path(value: &str) -> Option<&str> {
    let on_host = value.starts_with('/') || value.contains("://") || value.contains('%');
    (!value.is_empty() && !on_host).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str, extension: &str) -> Vec<(String, Target)> {
        references(&UnitFile::parse(text), extension)
            .into_iter()
            .map(|r| (format!("{}={}", r.key, r.name), r.target))
            .collect()
    }

    #[test]
    fn unit_names_are_found_where_quadlet_reads_them() {
        let container = "[Container]\nImage=app.build\nVolume=data.volume:/data:Z\nVolume=/srv:/srv\n\
                         Volume=plain:/p\nNetwork=net.network:ip=10.0.0.2\nNetwork=host\n\
                         Mount=type=volume,source=cache.volume,destination=/c\nPod=webapp.pod\n\
                         Image=docker.io/x/y.image\n[Service]\nVolume=ignored.volume\n";
        use Target::Unit;
        assert_eq!(
            names(container, "container"),
            [
                ("Image=app.build".into(), Unit),
                ("Volume=data.volume".into(), Unit),
                ("Network=net.network".into(), Unit),
                ("Mount=cache.volume".into(), Unit),
                ("Pod=webapp.pod".into(), Unit),
            ]
        );
        assert_eq!(
            names("[Volume]\nImage=base.image\n", "volume"),
            [("Image=base.image".into(), Unit)]
        );
        assert!(names("[Image]\nImage=quay.io/a/b.image\n", "image").is_empty());
    }

    #[test]
    fn data_files_are_relative_paths_of_kube_and_build_units() {
        use Target::Data;
        assert_eq!(
            names("[Kube]\nYaml=web.yaml\nConfigMap=/etc/cm.yaml\nConfigMap=cm.yml\n", "kube"),
            [("Yaml=web.yaml".into(), Data), ("ConfigMap=cm.yml".into(), Data)]
        );
        assert_eq!(
            names("[Build]\nFile=Containerfile\nImageTag=localhost/app\n", "build"),
            [("File=Containerfile".into(), Data)]
        );
        assert!(names("[Build]\nFile=https://example.com/Containerfile\n", "build").is_empty());
        assert!(names("[Kube]\nYaml=%h/web.yaml\n", "kube").is_empty());
    }

    #[test]
    fn generated_services_follow_quadlet() {
        assert_eq!(generated_service("web.container").unwrap(), "web.service");
        assert_eq!(generated_service("web.kube").unwrap(), "web.service");
        assert_eq!(generated_service("webapp.pod").unwrap(), "webapp-pod.service");
        assert_eq!(generated_service("web-data.volume").unwrap(), "web-data-volume.service");
        assert_eq!(generated_service("web-x.timer"), None);
    }
}
