//! Merging Ignition configs.
//!
//! [`ignition_merge`] is Ignition's own rule (used for Butane's sugar): objects merge field by
//! field with the child winning, lists of objects merge by their key (`path`, `name`, `device`,
//! ...), lists of strings are sets.
//!
//! [`overlay_merge`] is how `build-ign` combines `tailpod.bu` with its overlays: the same, except
//! that nothing may be silently lost: users, groups and units merge by name; two files at one path
//! are combined by decoding both contents and concatenating them (base first), their `append`
//! lists joined; a mode or owner that differs is an error; directories and links at one path must
//! agree.

use serde_json::{Map, Value};

use crate::dataurl;

/// The key of an element in the list at `path` (a dotted path of field names, no indices).
fn list_key(path: &str) -> Option<&'static str> {
    Some(match path {
        "storage.files" | "storage.directories" | "storage.links" => "path",
        "storage.disks" | "storage.filesystems" => "device",
        "storage.raid"
        | "storage.luks"
        | "passwd.users"
        | "passwd.groups"
        | "systemd.units"
        | "systemd.units.dropins" => "name",
        "storage.luks.clevis.tang" => "url",
        "ignition.config.merge" | "ignition.security.tls.certificateAuthorities" => "source",
        p if p.ends_with("httpHeaders") => "name",
        "storage.disks.partitions" => "label",
        _ => return None,
    })
}

fn key_of<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    if path == "storage.disks.partitions" {
        // A partition is known by its number when it has one, else by its label.
        return item.get("number").filter(|n| n.as_i64() != Some(0)).or_else(|| item.get("label"));
    }
    match item {
        Value::Object(_) => item.get(list_key(path)?),
        other => Some(other),
    }
}

fn merge_at(parent: &Value, child: &Value, path: &str) -> Value {
    match (parent, child) {
        (Value::Object(p), Value::Object(c)) => {
            let mut out = p.clone();
            for (key, value) in c {
                let sub = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let merged = match p.get(key) {
                    Some(existing) => merge_at(existing, value, &sub),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(p), Value::Array(c)) => {
            let keyed = p.iter().chain(c).all(|item| key_of(item, path).is_some());
            if !keyed {
                return Value::Array(p.iter().chain(c).cloned().collect());
            }
            let mut out: Vec<Value> = p.clone();
            for item in c {
                let key = key_of(item, path);
                match out.iter().position(|existing| key_of(existing, path) == key) {
                    Some(i) => out[i] = merge_at(&out[i], item, path),
                    None => out.push(item.clone()),
                }
            }
            Value::Array(out)
        }
        (_, child) => child.clone(),
    }
}

/// Ignition's merge of `child` over `parent`.
pub fn ignition_merge(parent: &Value, child: &Value) -> Value {
    merge_at(parent, child, "")
}

/// The bytes a file's `contents` carries, when it is embedded.
fn embedded(resource: &Value) -> Result<Option<Vec<u8>>, String> {
    match resource.get("source").and_then(Value::as_str) {
        None => Ok(None),
        Some(url) if url.starts_with("data:") => {
            dataurl::decode(url, resource.get("compression").and_then(Value::as_str)).map(Some)
        }
        Some(url) => Err(format!(
            "cannot combine contents from {url}: only embedded contents can be combined"
        )),
    }
}

fn combine_files(
    base: &Map<String, Value>,
    overlay: &Map<String, Value>,
    path: &str,
) -> Result<Value, String> {
    let mut out = base.clone();
    for key in ["mode", "user", "group", "overwrite"] {
        if let (Some(a), Some(b)) = (base.get(key), overlay.get(key))
            && a != b
        {
            // Modes as people write them: 0600, not 384.
            let show = |v: &Value| match (key, v.as_u64()) {
                ("mode", Some(mode)) => format!("{mode:04o}"),
                _ => v.to_string(),
            };
            return Err(format!(
                "{path}: the overlays disagree on {key} ({} and {})",
                show(a),
                show(b)
            ));
        }
        if let Some(value) = overlay.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    match (base.get("contents"), overlay.get("contents")) {
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => {
            let (Some(mut first), Some(second)) = (
                embedded(a).map_err(|e| format!("{path}: {e}"))?,
                embedded(b).map_err(|e| format!("{path}: {e}"))?,
            ) else {
                return Err(format!(
                    "{path}: contents from a remote source cannot be combined with other contents"
                ));
            };
            if a.get("verification").is_some() || b.get("verification").is_some() {
                return Err(format!(
                    "{path}: contents with a verification hash cannot be combined"
                ));
            }
            first.extend(second);
            let mut resource = Map::new();
            crate::translate::embed(&mut resource, &first);
            out.insert("contents".into(), Value::Object(resource));
        }
        (None, Some(b)) => {
            out.insert("contents".into(), b.clone());
        }
        _ => {}
    }
    let mut append: Vec<Value> =
        base.get("append").and_then(Value::as_array).cloned().unwrap_or_default();
    append.extend(overlay.get("append").and_then(Value::as_array).cloned().unwrap_or_default());
    if !append.is_empty() {
        out.insert("append".into(), Value::Array(append));
    }
    Ok(Value::Object(out))
}

/// `build-ign`'s merge of an overlay over the base config; see the module docs.
pub fn overlay_merge(base: &Value, overlay: &Value) -> Result<Value, String> {
    let mut merged = base.clone();
    let storage_keys = ["files", "directories", "links"];
    let take = |config: &Value, key: &str| -> Vec<Value> {
        config
            .get("storage")
            .and_then(|s| s.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    // Nodes first, by hand; everything else by Ignition's rule.
    let mut nodes: Vec<(&str, Vec<Value>)> =
        storage_keys.iter().map(|k| (*k, take(base, k))).collect();
    for (kind, list) in nodes.iter_mut() {
        for item in take(overlay, kind) {
            let path = item["path"].as_str().unwrap_or_default().to_owned();
            match list.iter().position(|existing| existing["path"] == item["path"]) {
                None => list.push(item),
                Some(i) if *kind == "files" => {
                    let (Some(a), Some(b)) = (list[i].as_object(), item.as_object()) else {
                        continue;
                    };
                    list[i] = combine_files(a, b, &path)?;
                }
                Some(i) if list[i] == item => {}
                Some(_) => {
                    return Err(format!(
                        "{path}: the overlays define different {kind} at this path"
                    ));
                }
            }
        }
    }
    let mut overlay_rest = overlay.clone();
    for config in [&mut merged, &mut overlay_rest] {
        if let Some(storage) = config.get_mut("storage").and_then(Value::as_object_mut) {
            for key in storage_keys {
                storage.remove(key);
            }
        }
    }
    let mut merged = ignition_merge(&merged, &overlay_rest);
    let root = merged.as_object_mut().ok_or("config is not an object")?;
    let storage = root.entry("storage").or_insert_with(|| Value::Object(Map::new()));
    if let Some(storage) = storage.as_object_mut() {
        for (kind, list) in nodes {
            if !list.is_empty() {
                storage.insert(kind.into(), Value::Array(list));
            }
        }
        if storage.is_empty() {
            root.remove("storage");
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ignition_merge_by_key_child_wins() {
        let parent = json!({"storage": {"filesystems": [{"device": "/dev/mapper/root", "format": "xfs", "label": "root"}, {"device": "/a"}]}});
        let child = json!({"storage": {"filesystems": [{"device": "/dev/mapper/root", "format": "ext4"}, {"device": "/b"}]}});
        assert_eq!(
            ignition_merge(&parent, &child),
            json!({"storage": {"filesystems": [{"device": "/dev/mapper/root", "format": "ext4", "label": "root"}, {"device": "/a"}, {"device": "/b"}]}})
        );
        let strings = ignition_merge(
            &json!({"passwd": {"users": [{"name": "core", "groups": ["a", "b"]}]}}),
            &json!({"passwd": {"users": [{"name": "core", "groups": ["b", "c"]}]}}),
        );
        assert_eq!(
            strings,
            json!({"passwd": {"users": [{"name": "core", "groups": ["a", "b", "c"]}]}})
        );
    }

    fn file(path: &str, text: &str) -> Value {
        let mut resource = Map::new();
        crate::translate::embed(&mut resource, text.as_bytes());
        json!({"path": path, "mode": 0o600, "contents": resource})
    }

    #[test]
    fn overlay_combines_same_path_files_by_content() {
        let base = json!({"storage": {"files": [file("/etc/a.env", "A=1\n"), file("/etc/b", "b")], "directories": [{"path": "/etc/x"}]}});
        let overlay = json!({"storage": {"files": [file("/etc/a.env", "B=2\n")], "directories": [{"path": "/etc/x"}]}, "passwd": {"users": [{"name": "core"}]}});
        let merged = overlay_merge(&base, &overlay).unwrap();
        let a = &merged["storage"]["files"][0];
        let text = dataurl::decode(
            a["contents"]["source"].as_str().unwrap(),
            a["contents"]["compression"].as_str(),
        )
        .unwrap();
        assert_eq!(text, b"A=1\nB=2\n");
        assert_eq!(merged["storage"]["files"].as_array().unwrap().len(), 2);
        assert_eq!(merged["storage"]["directories"], json!([{"path": "/etc/x"}]));
        assert_eq!(merged["passwd"]["users"], json!([{"name": "core"}]));

        let mut other_mode = file("/etc/a.env", "C=3\n");
        other_mode["mode"] = json!(0o644);
        let err = overlay_merge(&base, &json!({"storage": {"files": [other_mode]}})).unwrap_err();
        assert!(err.contains("disagree on mode"), "{err}");
        let err = overlay_merge(
            &base,
            &json!({"storage": {"directories": [{"path": "/etc/x", "mode": 0o700}]}}),
        )
        .unwrap_err();
        assert!(err.contains("different directories"), "{err}");
    }
}
