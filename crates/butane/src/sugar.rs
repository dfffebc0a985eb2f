//! Butane's `fcos` sugar: fields that expand into plain Ignition.

use serde_json::{Map, Value, json};

use crate::Report;
use crate::translate::{Translator, embed, error};
use crate::yaml::{self, Node};

/// `storage.trees`: every regular file under `local` becomes a file (mode 0755 if any execute bit
/// is set, else 0644, unless the config already gives one), every symlink a link. A path that
/// already has contents is an error.
pub(crate) fn trees(
    t: &mut Translator<'_>,
    trees: &Node,
    storage: &mut Map<String, Value>,
    path: &str,
) -> Result<(), Report> {
    let Node::Seq(items, _) = trees else {
        return Err(error(path, Some(trees.mark()), "expected a list"));
    };
    for (i, tree) in items.iter().enumerate() {
        let at = format!("{path}.{i}");
        let local_node = tree.get("local");
        let local = local_node
            .and_then(Node::text)
            .ok_or_else(|| error(&at, Some(tree.mark()), "local is required"))?;
        let dest = tree.get("path").and_then(Node::text).unwrap_or("/");
        let root = t.local_path(local, &at, local_node.map_or(tree.mark(), Node::mark))?;
        let mut found = Vec::new();
        walk(&root, &root, &mut found).map_err(|e| {
            error(&at, Some(tree.mark()), format!("reading tree {}: {e}", root.display()))
        })?;
        for (relative, entry) in found {
            let target = format!("{}/{relative}", dest.trim_end_matches('/'));
            match entry {
                TreeEntry::File(data, executable) => {
                    add_tree_file(storage, &target, &data, executable, &at, tree)?
                }
                TreeEntry::Link(to) => {
                    let links = list(storage, "links");
                    if links.iter().any(|l| l["path"] == target) {
                        return Err(error(
                            &at,
                            Some(tree.mark()),
                            format!("{target} is already a link in the config"),
                        ));
                    }
                    links.push(json!({ "path": target, "target": to }));
                }
            }
        }
    }
    Ok(())
}

enum TreeEntry {
    File(Vec<u8>, bool),
    Link(String),
}

fn walk(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<(String, TreeEntry)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
        if meta.file_type().is_symlink() {
            out.push((
                relative,
                TreeEntry::Link(std::fs::read_link(&path)?.to_string_lossy().into_owned()),
            ));
        } else if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            out.push((
                relative,
                TreeEntry::File(std::fs::read(&path)?, meta.permissions().mode() & 0o111 != 0),
            ));
        }
    }
    Ok(())
}

fn list<'a>(object: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let value = object.entry(key).or_insert_with(|| json!([]));
    if !value.is_array() {
        *value = json!([]);
    }
    value.as_array_mut().expect("just made an array")
}

fn add_tree_file(
    storage: &mut Map<String, Value>,
    target: &str,
    data: &[u8],
    executable: bool,
    at: &str,
    tree: &Node,
) -> Result<(), Report> {
    let files = list(storage, "files");
    let index = match files.iter().position(|f| f["path"] == target) {
        Some(index) => index,
        None => {
            files.push(json!({ "path": target }));
            files.len() - 1
        }
    };
    let file = files[index].as_object_mut().expect("files are objects");
    if file.get("contents").and_then(|c| c.get("source")).is_some() {
        return Err(error(
            at,
            Some(tree.mark()),
            format!("{target} already has contents in the config"),
        ));
    }
    let mut contents = Map::new();
    embed(&mut contents, data);
    file.insert("contents".into(), Value::Object(contents));
    file.entry("mode").or_insert(json!(if executable { 0o755 } else { 0o644 }));
    Ok(())
}

/// `systemd-escape --path`.
pub(crate) fn escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, part) in trimmed.split('/').filter(|p| !p.is_empty()).enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, byte) in part.bytes().enumerate() {
            let plain = byte.is_ascii_alphanumeric()
                || matches!(byte, b':' | b'_')
                || (byte == b'.' && !(i == 0 && j == 0));
            if plain {
                out.push(byte as char);
            } else {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
    }
    out
}

/// Mount (or swap) units for filesystems with `with_mount_unit: true`. A filesystem on a LUKS
/// volume unlocked through Tang needs the network, so it mounts with `_netdev` after
/// `remote-fs.target`.
pub(crate) fn mount_units(t: &mut Translator<'_>, config: &mut Map<String, Value>) {
    let luks: Vec<Value> = config
        .get("storage")
        .and_then(|s| s.get("luks"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let needs_network = |device: &str| {
        luks.iter().any(|l| {
            let name = l["name"].as_str().unwrap_or_default();
            let matches = device == format!("/dev/mapper/{name}")
                || device == format!("/dev/disk/by-id/dm-name-{name}");
            let tang = l["clevis"]["tang"].as_array().is_some_and(|t| !t.is_empty());
            let custom = l["clevis"]["custom"]["needsNetwork"].as_bool() == Some(true);
            matches && (tang || custom)
        })
    };
    let mut units = Vec::new();
    for fs in std::mem::take(&mut t.mount_units) {
        let device = fs["device"].as_str().unwrap_or_default();
        let format = fs["format"].as_str().unwrap_or_default();
        let mut options: Vec<String> = fs["mountOptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let remote = needs_network(device);
        if remote && !options.iter().any(|o| o == "_netdev") {
            options.push("_netdev".into());
        }
        let options_line = if options.is_empty() {
            String::new()
        } else {
            format!("Options={}\n", options.join(","))
        };
        let (name, contents) = if format == "swap" {
            let contents = format!(
                "# Generated by Butane\n[Swap]\nWhat={device}\n{options_line}\n[Install]\nRequiredBy=swap.target"
            );
            (format!("{}.swap", escape_path(device)), contents)
        } else {
            let where_ = fs["path"].as_str().unwrap_or_default();
            let fsck = format!("systemd-fsck@{}.service", escape_path(device));
            let target = if remote { "remote-fs.target" } else { "local-fs.target" };
            let contents = format!(
                "# Generated by Butane\n[Unit]\nRequires={fsck}\nAfter={fsck}\n\n[Mount]\nWhere={where_}\nWhat={device}\nType={format}\n{options_line}\n[Install]\nRequiredBy={target}"
            );
            (format!("{}.mount", escape_path(where_)), contents)
        };
        units.push(json!({ "contents": contents, "enabled": true, "name": name }));
    }
    if !units.is_empty() {
        let systemd = config.entry("systemd").or_insert_with(|| json!({}));
        if let Some(systemd) = systemd.as_object_mut() {
            list(systemd, "units").extend(units);
        }
    }
}

const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const PREP: &str = "9E1A2D38-C612-4316-AA26-8B49521E5A8B";
const PPC_RESERVED: &str = "8DA63339-0007-60C0-C436-083AC8230908";

fn part(label: String, size: Option<u32>, guid: Option<&str>) -> Value {
    let mut p = json!({ "label": label });
    if let Some(size) = size {
        p["sizeMiB"] = json!(size);
    }
    if let Some(guid) = guid {
        p["typeGuid"] = json!(guid);
    }
    p
}

/// `boot_device`: a mirrored and/or LUKS-encrypted boot disk, expanded into disks, RAID arrays,
/// LUKS volumes and filesystems (the user's own entries override these, by key).
pub(crate) fn boot_device(node: &Node, path: &str) -> Result<Value, Report> {
    let layout = node.get("layout").and_then(Node::text).unwrap_or("x86_64");
    let known = ["x86_64", "aarch64", "ppc64le", "s390x-eckd", "s390x-virt", "s390x-zfcp"];
    if !known.contains(&layout) {
        return Err(error(
            &format!("{path}.layout"),
            node.get("layout").map(Node::mark),
            format!("layout must be one of {}", known.join(", ")),
        ));
    }
    let mirror: Vec<String> = match node.get("mirror").and_then(|m| m.get("devices")) {
        Some(Node::Seq(devices, _)) => {
            devices.iter().filter_map(Node::text).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    };
    let mut disks = Vec::new();
    let mut raid = Vec::new();
    let mut filesystems = Vec::new();
    if !mirror.is_empty() {
        if mirror.len() < 2 {
            return Err(error(
                &format!("{path}.mirror.devices"),
                Some(node.mark()),
                "a mirror needs at least two devices",
            ));
        }
        if layout.starts_with("s390x") {
            return Err(error(
                &format!("{path}.mirror"),
                Some(node.mark()),
                format!("mirroring is not supported on {layout}"),
            ));
        }
        for (i, device) in mirror.iter().enumerate() {
            let n = i + 1;
            let mut partitions = match layout {
                "x86_64" => vec![
                    part(format!("bios-{n}"), Some(1), Some(BIOS_BOOT)),
                    part(format!("esp-{n}"), Some(127), Some(ESP)),
                ],
                "aarch64" => vec![part(format!("esp-{n}"), Some(127), Some(ESP))],
                _ => vec![
                    part(format!("prep-{n}"), Some(4), Some(PREP)),
                    part(format!("reserved-{n}"), Some(1), Some(PPC_RESERVED)),
                ],
            };
            partitions.push(part(format!("boot-{n}"), Some(384), None));
            partitions.push(part(format!("root-{n}"), None, None));
            disks.push(json!({ "device": device, "partitions": partitions, "wipeTable": true }));
            if layout != "ppc64le" {
                filesystems.push(json!({ "device": format!("/dev/disk/by-partlabel/esp-{n}"), "format": "vfat", "label": format!("esp-{n}"), "wipeFilesystem": true }));
            }
        }
        let members = |kind: &str| {
            (1..=mirror.len())
                .map(|n| format!("/dev/disk/by-partlabel/{kind}-{n}"))
                .collect::<Vec<_>>()
        };
        raid.push(json!({ "devices": members("boot"), "level": "raid1", "name": "md-boot", "options": ["--metadata=1.0"] }));
        raid.push(json!({ "devices": members("root"), "level": "raid1", "name": "md-root" }));
        filesystems.push(json!({ "device": "/dev/md/md-boot", "format": "ext4", "label": "boot", "wipeFilesystem": true }));
    }
    let mut luks = Vec::new();
    let root_device = match node.get("luks").filter(|n| !n.is_null()) {
        Some(spec) => {
            let at = format!("{path}.luks");
            let device = if !mirror.is_empty() {
                "/dev/md/md-root".to_owned()
            } else {
                match layout {
                    "s390x-eckd" | "s390x-zfcp" => {
                        let given = spec.get("device").and_then(Node::text).ok_or_else(|| {
                            error(
                                &at,
                                Some(spec.mark()),
                                format!("device is required for layout {layout}"),
                            )
                        })?;
                        format!("{given}{}", if layout == "s390x-eckd" { 2 } else { 4 })
                    }
                    _ => "/dev/disk/by-partlabel/root".to_owned(),
                }
            };
            let mut volume = json!({ "device": device, "label": "luks-root", "name": "root", "wipeVolume": true });
            let mut clevis = Map::new();
            if let Some(tang) = spec.get("tang").filter(|n| !n.is_null()) {
                clevis.insert("tang".into(), tang_json(tang, &format!("{at}.tang"))?);
            }
            for key in ["tpm2"] {
                if let Some(flag) = spec.get(key).filter(|n| !n.is_null()) {
                    clevis.insert(
                        key.into(),
                        json!(yaml::bool(flag).map_err(|e| error(&at, Some(flag.mark()), e))?),
                    );
                }
            }
            if let Some(threshold) = spec.get("threshold").filter(|n| !n.is_null()) {
                clevis.insert(
                    "threshold".into(),
                    json!(yaml::int(threshold).map_err(|e| error(
                        &at,
                        Some(threshold.mark()),
                        e
                    ))?),
                );
            }
            if !clevis.is_empty() {
                volume["clevis"] = Value::Object(clevis);
            }
            if let Some(flag) = spec.get("discard").filter(|n| !n.is_null()) {
                volume["discard"] =
                    json!(yaml::bool(flag).map_err(|e| error(&at, Some(flag.mark()), e))?);
            }
            if let Some(flag) =
                spec.get("cex").and_then(|c| c.get("enabled")).filter(|n| !n.is_null())
            {
                volume["cex"] = json!({ "enabled": yaml::bool(flag).map_err(|e| error(&at, Some(flag.mark()), e))? });
            }
            luks.push(volume);
            Some("/dev/mapper/root")
        }
        None if !mirror.is_empty() => Some("/dev/md/md-root"),
        None => None,
    };
    if let Some(device) = root_device {
        filesystems.push(
            json!({ "device": device, "format": "xfs", "label": "root", "wipeFilesystem": true }),
        );
    }
    let mut storage = Map::new();
    for (key, items) in
        [("disks", disks), ("raid", raid), ("luks", luks), ("filesystems", filesystems)]
    {
        if !items.is_empty() {
            storage.insert(key.into(), Value::Array(items));
        }
    }
    Ok(json!({ "storage": storage }))
}

fn tang_json(node: &Node, path: &str) -> Result<Value, Report> {
    let Node::Seq(servers, _) = node else {
        return Err(error(path, Some(node.mark()), "expected a list"));
    };
    let mut out = Vec::new();
    for server in servers {
        let mut entry = Map::new();
        for key in ["url", "thumbprint", "advertisement"] {
            if let Some(value) = server.get(key).and_then(Node::text) {
                entry.insert(key.into(), json!(value));
            }
        }
        out.push(Value::Object(entry));
    }
    Ok(Value::Array(out))
}

/// `grub.users`: superusers and their password hashes, appended to `/boot/grub2/user.cfg` on the
/// boot filesystem.
pub(crate) fn grub(node: &Node, path: &str) -> Result<Value, Report> {
    let Some(Node::Seq(users, _)) = node.get("users") else { return Ok(json!({})) };
    let mut names = Vec::new();
    let mut lines = String::new();
    for (i, user) in users.iter().enumerate() {
        let at = format!("{path}.users.{i}");
        let name = user
            .get("name")
            .and_then(Node::text)
            .ok_or_else(|| error(&at, Some(user.mark()), "name is required"))?;
        let hash = user
            .get("password_hash")
            .and_then(Node::text)
            .ok_or_else(|| error(&at, Some(user.mark()), "password_hash is required"))?;
        names.push(name);
        lines.push_str(&format!("password_pbkdf2 {name} {hash}\n"));
    }
    let text = format!("# Generated by Butane\n\nset superusers=\"{}\"\n{lines}", names.join(" "));
    let mut resource = Map::new();
    embed(&mut resource, text.as_bytes());
    Ok(json!({ "storage": {
        "files": [{ "path": "/boot/grub2/user.cfg", "append": [resource] }],
        "filesystems": [{ "device": "/dev/disk/by-label/boot", "format": "ext4", "path": "/boot" }],
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_read_only_inside_the_files_dir() {
        let dir = std::env::temp_dir();
        let options = crate::Options { files_dir: Some(dir) };
        let source = "variant: fcos\nversion: 1.6.0\nstorage:\n  trees:\n    - local: ../etc\n";
        let err = crate::translate(source, &options).unwrap_err();
        assert!(err.message.contains("outside the files directory"), "{err}");
        let err = crate::translate(source, &crate::Options::default()).unwrap_err();
        assert!(err.message.contains("files directory that must be specified"), "{err}");
    }

    #[test]
    fn systemd_path_escaping() {
        assert_eq!(escape_path("/var"), "var");
        assert_eq!(escape_path("/var/lib/static_key_example"), "var-lib-static_key_example");
        assert_eq!(escape_path("/dev/disk/by-partlabel/var"), "dev-disk-by\\x2dpartlabel-var");
        assert_eq!(escape_path("/"), "-");
        assert_eq!(escape_path("/.hidden/a b"), "\\x2ehidden-a\\x20b");
    }
}
