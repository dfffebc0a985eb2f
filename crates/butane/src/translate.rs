//! Butane `fcos` 1.4.0 to 1.6.0 into Ignition 3.3.0 to 3.5.0.
//!
//! The generic part walks the YAML beside Ignition's schema (see [`crate::schema`]); Butane's own
//! fields are hooks on the schema definitions they extend:
//!
//! | definition | Butane adds |
//! | --- | --- |
//! | resource | `inline`, `local` (become a data URL) |
//! | user | `ssh_authorized_keys_local` |
//! | unit, dropin | `contents_local` |
//! | filesystem | `with_mount_unit` |
//! | storage | `trees` |
//! | the root | `variant`, `version`, `boot_device`, `grub` |

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::schema::{Kind, Node as SchemaNode, Schema, butane_name};
use crate::yaml::{self, Mark, Node};
use crate::{Report, dataurl, sugar};

/// How to translate.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where `local:` paths, `trees` and `*_local` fields are read from.
    pub files_dir: Option<PathBuf>,
}

/// A translated config and the warnings Butane would give for it.
#[derive(Debug, Clone)]
pub struct Translation {
    pub config: Value,
    pub warnings: Vec<Report>,
}

/// The Ignition version and schema for a Butane version.
pub fn ignition_version(version: &str) -> Option<(&'static str, &'static str)> {
    const V3_4: &str = include_str!("schemas/ignition-v3_4.json");
    const V3_5: &str = include_str!("schemas/ignition-v3_5.json");
    match version {
        // No 3.3 schema is shipped: 3.4's is used, and `crate::validate` refuses what 3.4 added.
        "1.4.0" => Some(("3.3.0", V3_4)),
        "1.5.0" => Some(("3.4.0", V3_4)),
        "1.6.0" => Some(("3.5.0", V3_5)),
        _ => None,
    }
}

fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) struct Translator<'a> {
    pub schema: &'a Schema,
    pub options: &'a Options,
    pub warnings: Vec<Report>,
    /// Filesystems that asked for a mount unit, as translated.
    pub mount_units: Vec<Value>,
}

pub(crate) const NO_FILES_DIR: &str =
    "local file paths are relative to a files directory that must be specified with -d/--files-dir";

pub(crate) fn error(path: &str, mark: Option<Mark>, message: impl Into<String>) -> Report {
    Report { path: path.to_owned(), mark, message: message.into() }
}

impl Translator<'_> {
    fn warn(&mut self, path: &str, mark: Mark, message: impl Into<String>) {
        self.warnings.push(error(path, Some(mark), message));
    }

    /// Translates `node` as the schema node says; `None` when absent (null).
    fn value(
        &mut self,
        node: &Node,
        schema: SchemaNode<'_>,
        path: &str,
    ) -> Result<Option<Value>, Report> {
        if node.is_null() {
            return Ok(None);
        }
        let at = |message: String| error(path, Some(node.mark()), message);
        Ok(Some(match self.schema.kind(schema) {
            Kind::Object => return self.object(node, schema, path).map(|m| m.map(Value::Object)),
            Kind::Array => {
                let Node::Seq(items, _) = node else { return Err(at("expected a list".into())) };
                let item_schema =
                    self.schema.items(schema).ok_or_else(|| at("schema has no items".into()))?;
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(value) = self.value(item, item_schema, &format!("{path}.{i}"))? {
                        out.push(value);
                    }
                }
                Value::Array(out)
            }
            Kind::Integer => json!(yaml::int(node).map_err(at)?),
            Kind::Boolean => json!(yaml::bool(node).map_err(at)?),
            Kind::String => match node {
                Node::Scalar { text, .. } => json!(text),
                _ => return Err(at("expected a string".into())),
            },
        }))
    }

    fn object(
        &mut self,
        node: &Node,
        schema: SchemaNode<'_>,
        path: &str,
    ) -> Result<Option<Map<String, Value>>, Report> {
        let Node::Map(entries, mark) = node else {
            return Err(error(path, Some(node.mark()), "expected a mapping"));
        };
        let def = schema.def.unwrap_or_default();
        let extra: &[&str] = match def.rsplit('/').next().unwrap_or_default() {
            "resource" => &["inline", "local"],
            "user" => &["ssh_authorized_keys_local"],
            "unit" | "dropin" => &["contents_local"],
            "filesystem" => &["with_mount_unit"],
            "storage" => &["trees"],
            _ if path == "$" => &["variant", "version", "boot_device", "grub"],
            _ => &[],
        };
        let properties = self.schema.properties(schema);
        let mut out = Map::new();
        for (key, key_mark, child) in entries {
            let child_path = format!("{path}.{key}");
            if extra.contains(&key.as_str()) {
                continue;
            }
            match properties.iter().find(|(name, _)| butane_name(name) == *key) {
                Some((name, child_schema)) if !(path == "$.ignition" && *name == "version") => {
                    if let Some(value) = self.value(child, *child_schema, &child_path)? {
                        out.insert((*name).to_owned(), value);
                    }
                }
                _ => self.warn(&child_path, *key_mark, format!("Unused key {key}")),
            }
        }
        let kind = def.rsplit('/').next().unwrap_or_default();
        if let ("file" | "directory", Some(mode), Some(mode_node)) =
            (kind, out.get("mode").and_then(Value::as_i64), node.get("mode"))
            && crate::looks_decimal(mode, kind == "directory")
        {
            let message = "unreasonable mode would be reasonable if specified in octal; remember to add a leading zero";
            self.warn(&format!("{path}.mode"), mode_node.mark(), message);
        }
        if kind == "disk" {
            self.partitions_reused_by_label(node, &out, path);
        }
        match kind {
            "resource" => self.resource(node, &mut out, path)?,
            "user" => self.ssh_keys_local(node, &mut out, path)?,
            "unit" | "dropin" => {
                self.contents_local(node, &mut out, path)?;
                let enabled = out.get("enabled") == Some(&Value::Bool(true));
                if let (true, Some(contents)) =
                    (kind == "unit" && enabled, out.get("contents").and_then(Value::as_str))
                    && !tailpod_core::unit::UnitFile::parse(contents).has_section("Install")
                {
                    let name = out.get("name").and_then(Value::as_str).unwrap_or_default();
                    let message = format!(
                        "unit {name:?} is enabled, but has no install section so enable does nothing"
                    );
                    self.warn(&format!("{path}.contents"), *mark, message);
                }
            }
            "filesystem" => {
                if let Some(flag) = node.get("with_mount_unit").filter(|n| !n.is_null()) {
                    let at = format!("{path}.with_mount_unit");
                    if yaml::bool(flag).map_err(|e| error(&at, Some(flag.mark()), e))? {
                        self.mount_units.push(Value::Object(out.clone()));
                    }
                }
            }
            "storage" => {
                if let Some(trees) = node.get("trees").filter(|n| !n.is_null()) {
                    sugar::trees(self, trees, &mut out, &format!("{path}.trees"))?;
                }
            }
            _ => {}
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Butane's warning: a partition without a number can only be found again by its label on
    /// the boot disk or on a disk that is wiped anyway.
    fn partitions_reused_by_label(&mut self, node: &Node, disk: &Map<String, Value>, path: &str) {
        let boot_disk =
            disk.get("device").and_then(Value::as_str) == Some("/dev/disk/by-id/coreos-boot-disk");
        let wiped = disk.get("wipeTable") == Some(&Value::Bool(true));
        let Some(Node::Seq(partitions, _)) = node.get("partitions") else { return };
        for (i, partition) in partitions.iter().enumerate() {
            let number = partition.get("number").and_then(|n| yaml::int(n).ok()).unwrap_or(0);
            if number == 0 && partition.get("label").is_some() && !boot_disk && !wiped {
                let message = "partitions cannot be reused by label; number must be specified except on boot disk \
                               (/dev/disk/by-id/coreos-boot-disk) or when wipe_table is true";
                self.warn(&format!("{path}.partitions.{i}.number"), partition.mark(), message);
            }
        }
    }

    /// `local` inside the files dir, refusing a missing files dir and paths that leave it: by
    /// `..` or an absolute path (as butane does), and also through a symlink anywhere on the way,
    /// which butane's purely textual check lets through. The files dir is the only part of the
    /// machine a config may embed; a symlink out of it (planted, or a tree root pointing at
    /// `/etc`) would put the build machine's secrets into the Ignition config.
    ///
    /// Returns the resolved path, so that what is read is what was checked. A path that does not
    /// resolve (missing) is returned as written, for the read to report.
    pub(crate) fn local_path(
        &self,
        local: &str,
        path: &str,
        mark: Mark,
    ) -> Result<PathBuf, Report> {
        let Some(dir) = &self.options.files_dir else {
            return Err(error(path, Some(mark), NO_FILES_DIR));
        };
        let relative = Path::new(local);
        if relative.is_absolute()
            || relative.components().any(|c| matches!(c, Component::ParentDir))
        {
            return Err(error(
                path,
                Some(mark),
                format!("local path {local:?} is outside the files directory"),
            ));
        }
        let joined = dir.join(relative);
        let (Ok(real_dir), Ok(real)) = (dir.canonicalize(), joined.canonicalize()) else {
            return Ok(joined);
        };
        if !real.starts_with(&real_dir) {
            return Err(error(
                path,
                Some(mark),
                format!(
                    "local path {local:?} resolves to {}, outside the files directory",
                    real.display()
                ),
            ));
        }
        Ok(real)
    }

    /// Reads `local` relative to the files dir.
    pub(crate) fn read_local(
        &self,
        local: &str,
        path: &str,
        mark: Mark,
    ) -> Result<Vec<u8>, Report> {
        let file = self.local_path(local, path, mark)?;
        std::fs::read(&file)
            .map_err(|e| error(path, Some(mark), format!("reading {}: {e}", file.display())))
    }

    fn resource(
        &mut self,
        node: &Node,
        out: &mut Map<String, Value>,
        path: &str,
    ) -> Result<(), Report> {
        let inline = node.get("inline").filter(|n| !n.is_null());
        let local = node.get("local").filter(|n| !n.is_null());
        let given = [inline.is_some(), local.is_some(), out.contains_key("source")];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(error(
                path,
                Some(node.mark()),
                "only one of the following can be set: inline, local, source",
            ));
        }
        let data = match (inline, local) {
            (Some(inline), _) => {
                let text = inline
                    .text()
                    .ok_or_else(|| error(path, Some(inline.mark()), "inline must be a string"))?;
                text.as_bytes().to_vec()
            }
            (_, Some(local)) => {
                let name = local
                    .text()
                    .ok_or_else(|| error(path, Some(local.mark()), "local must be a string"))?;
                self.read_local(name, &format!("{path}.local"), local.mark())?
            }
            _ => return Ok(()),
        };
        embed(out, &data);
        Ok(())
    }

    fn ssh_keys_local(
        &mut self,
        node: &Node,
        out: &mut Map<String, Value>,
        path: &str,
    ) -> Result<(), Report> {
        let Some(Node::Seq(files, _)) = node.get("ssh_authorized_keys_local") else {
            return Ok(());
        };
        let mut keys: Vec<Value> =
            out.get("sshAuthorizedKeys").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, file) in files.iter().enumerate() {
            let at = format!("{path}.ssh_authorized_keys_local.{i}");
            let name =
                file.text().ok_or_else(|| error(&at, Some(file.mark()), "expected a file name"))?;
            let data = self.read_local(name, &at, file.mark())?;
            let text = String::from_utf8_lossy(&data);
            keys.extend(
                text.split('\n')
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| !l.is_empty())
                    .map(|l| json!(l)),
            );
        }
        if !keys.is_empty() {
            out.insert("sshAuthorizedKeys".into(), Value::Array(keys));
        }
        Ok(())
    }

    fn contents_local(
        &mut self,
        node: &Node,
        out: &mut Map<String, Value>,
        path: &str,
    ) -> Result<(), Report> {
        let Some(local) = node.get("contents_local").filter(|n| !n.is_null()) else {
            return Ok(());
        };
        let at = format!("{path}.contents_local");
        if out.contains_key("contents") {
            return Err(error(
                &at,
                Some(local.mark()),
                "only one of the following can be set: contents, contents_local",
            ));
        }
        let name =
            local.text().ok_or_else(|| error(&at, Some(local.mark()), "expected a file name"))?;
        let data = self.read_local(name, &at, local.mark())?;
        let text = String::from_utf8(data)
            .map_err(|_| error(&at, Some(local.mark()), "unit contents must be UTF-8"))?;
        out.insert("contents".into(), json!(text));
        Ok(())
    }
}

/// Sets `source` (and `compression` when Butane would) for embedded data.
pub fn embed(resource: &mut Map<String, Value>, data: &[u8]) {
    let chosen = resource.get("compression").and_then(Value::as_str).map(str::to_owned);
    let (url, gzipped) = dataurl::make(data, chosen.is_none());
    resource.insert("source".into(), json!(url));
    if chosen.is_none() {
        // Butane always says so, so a merged child cannot inherit a parent's compression.
        resource.insert("compression".into(), json!(if gzipped { "gzip" } else { "" }));
    }
}

/// Translates Butane text. Errors are fatal; warnings are returned (fatal under `--strict`,
/// which is the caller's call).
pub fn translate(source: &str, options: &Options) -> Result<Translation, Report> {
    let root = yaml::parse(source).map_err(|e| error("$", Some(e.mark), e.message))?;
    let text = |key: &str| root.get(key).and_then(Node::text).unwrap_or_default().to_owned();
    let (variant, version) = (text("variant"), text("version"));
    if !is_semver(&version) {
        return Err(error(
            "$.version",
            root.get("version").map(Node::mark),
            "error parsing version; must be a valid semver",
        ));
    }
    let Some((ignition, schema_text)) = ignition_version(&version).filter(|_| variant == "fcos")
    else {
        return Err(error(
            "$",
            None,
            format!("No translator exists for variant {variant} with version {version}"),
        ));
    };
    let schema = Schema::parse(schema_text);
    let mut translator =
        Translator { schema: &schema, options, warnings: Vec::new(), mount_units: Vec::new() };
    let mut config = translator.object(&root, schema.root(), "$")?.unwrap_or_default();

    sugar::mount_units(&mut translator, &mut config);
    let mut config = Value::Object(config);
    if let Some(boot) = root.get("boot_device").filter(|n| !n.is_null()) {
        let fragment = sugar::boot_device(boot, "$.boot_device")?;
        config = crate::merge::ignition_merge(&fragment, &config);
    }
    let mut ignition = ignition;
    if let Some(grub) = root.get("grub").filter(|n| !n.is_null()) {
        let fragment = sugar::grub(grub, "$.grub")?;
        config = crate::merge::ignition_merge(&fragment, &config);
        // The real butane writes 3.5.0 for an fcos 1.5.0 config that uses grub (measured: both
        // such fixtures); we match its output.
        if version == "1.5.0" {
            ignition = "3.5.0";
        }
    }
    let object =
        config.as_object_mut().ok_or_else(|| error("$", None, "config is not an object"))?;
    let mut ignition_section =
        object.remove("ignition").and_then(|v| v.as_object().cloned()).unwrap_or_default();
    ignition_section.insert("version".into(), json!(ignition));
    object.insert("ignition".into(), Value::Object(ignition_section));
    let mut warnings = translator.warnings;
    warnings.sort_by_key(|w| w.mark.map(|m| (m.line, m.col)));
    Ok(Translation { config: crate::order::go_order(config), warnings })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const HEAD: &str = "variant: fcos\nversion: 1.6.0\n";

    #[test]
    fn symlinks_never_lead_out_of_the_files_dir() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("shadow"), "root:$6$secret").unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/passwd"), "root:x:0:0").unwrap();
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        symlink(outside.path().join("etc"), dir.join("tree")).unwrap();
        symlink(outside.path().join("shadow"), dir.join("key")).unwrap();
        std::fs::create_dir(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/motd"), "hello").unwrap();
        symlink(outside.path().join("etc"), dir.join("real/escape")).unwrap();
        symlink("real/motd", dir.join("motd-link")).unwrap();
        let options = Options { files_dir: Some(dir.to_owned()) };
        let outside_real = outside.path().canonicalize().unwrap();

        // A tree whose root is a symlink out of the files dir.
        let source = format!("{HEAD}storage:\n  trees:\n    - local: tree\n");
        let err = translate(&source, &options).unwrap_err();
        let to = outside_real.join("etc");
        assert_eq!(
            err.to_string(),
            format!(
                "$.storage.trees.0, line 5 col 14: local path \"tree\" resolves to {}, outside the files directory",
                to.display()
            )
        );
        // A file, or SSH keys, read through a symlink out of it.
        let source = format!(
            "{HEAD}storage:\n  files:\n    - path: /etc/x\n      contents:\n        local: key\n"
        );
        let err = translate(&source, &options).unwrap_err();
        assert_eq!(err.path, "$.storage.files.0.contents.local");
        assert_eq!(err.mark, Some(Mark { line: 7, col: 16 }));
        assert!(err.message.starts_with("local path \"key\" resolves to "), "{err}");
        let source = format!(
            "{HEAD}passwd:\n  users:\n    - name: core\n      ssh_authorized_keys_local: [key]\n"
        );
        let err = translate(&source, &options).unwrap_err();
        assert!(err.message.ends_with("shadow, outside the files directory"), "{err}");

        // Inside a tree, a symlink stays a link, whatever it points to; nothing behind it is read.
        let source = format!("{HEAD}storage:\n  trees:\n    - local: real\n      path: /etc/x\n");
        let config = translate(&source, &options).unwrap().config;
        assert_eq!(
            config["storage"]["links"],
            json!([{ "path": "/etc/x/escape", "target": to.to_string_lossy() }])
        );
        let files = config["storage"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0]["path"], "/etc/x/motd");
        // A symlink that stays inside the files dir is followed.
        let source = format!(
            "{HEAD}storage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: motd-link\n"
        );
        let config = translate(&source, &options).unwrap().config;
        let url = config["storage"]["files"][0]["contents"]["source"].as_str().unwrap();
        assert_eq!(dataurl::decode(url, None).unwrap(), b"hello");
    }

    #[test]
    fn merge_keys_reach_the_config() {
        let source = format!(
            "{HEAD}passwd:\n  users:\n    - &admin\n      name: core\n      groups: [wheel]\n    - <<: *admin\n      name: ops\n"
        );
        let translation = translate(&source, &Options::default()).unwrap();
        assert_eq!(
            translation.config["passwd"]["users"],
            json!([{ "name": "core", "groups": ["wheel"] }, { "name": "ops", "groups": ["wheel"] }])
        );
        assert_eq!(translation.warnings, []);
    }

    #[test]
    fn a_stray_document_marker_is_an_error() {
        let source = format!(
            "{HEAD}passwd:\n  users:\n    - name: core\n      ssh_authorized_keys: [ssh-ed25519 AAAA]\n---\nstorage: {{}}\n"
        );
        let err = translate(&source, &Options::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "$, line 7 col 1: a Butane config is one YAML document; a second starts at line 7"
        );
    }
}
