//! Butane's key order (the order of the fields of Ignition's Go structs), so that our output
//! diffs cleanly against the real butane's. It has no meaning to Ignition.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Go field names spell acronyms in capitals, which changes the order (`SSHAuthorizedKeys`
/// sorts before `Shell`).
fn go_name(key: &str) -> String {
    const ACRONYMS: [(&str, &str); 8] = [
        ("https", "HTTPS"),
        ("http", "HTTP"),
        ("ssh", "SSH"),
        ("uuid", "UUID"),
        ("url", "URL"),
        ("uid", "UID"),
        ("id", "ID"),
        ("typeGuid", "TypeGUID"),
    ];
    for (prefix, upper) in ACRONYMS {
        if let Some(rest) = key.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase()))
        {
            return format!("{upper}{rest}");
        }
    }
    let mut chars = key.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// In files, directories and links the common node fields come first.
fn node_field(key: &str) -> bool {
    matches!(key, "group" | "overwrite" | "path" | "user")
}

fn order_object(map: Map<String, Value>, is_node: bool) -> Map<String, Value> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|(a, _), (b, _)| {
        let by_node = if is_node { node_field(b).cmp(&node_field(a)) } else { Ordering::Equal };
        by_node.then_with(|| go_name(a).cmp(&go_name(b)))
    });
    entries
        .into_iter()
        .map(|(key, value)| {
            let in_nodes = matches!(key.as_str(), "files" | "directories" | "links");
            let value = match value {
                Value::Array(items) => Value::Array(
                    items.into_iter().map(|item| order_value(item, in_nodes)).collect(),
                ),
                other => order_value(other, false),
            };
            (key, value)
        })
        .collect()
}

fn order_value(value: Value, is_node: bool) -> Value {
    match value {
        Value::Object(map) => Value::Object(order_object(map, is_node)),
        other => other,
    }
}

/// The config with every object's keys in Butane's order.
pub(crate) fn go_order(config: Value) -> Value {
    order_value(config, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orders_like_go_structs() {
        let config = json!({"storage": {"files": [{"mode": 420, "contents": {}, "path": "/a", "user": {"name": "x"}}]}, "ignition": {"version": "3.5.0"}, "passwd": {"users": [{"shell": "/bin/sh", "sshAuthorizedKeys": [], "name": "core"}]}});
        let text = go_order(config).to_string();
        assert_eq!(
            text,
            r#"{"ignition":{"version":"3.5.0"},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":[],"shell":"/bin/sh"}]},"storage":{"files":[{"path":"/a","user":{"name":"x"},"contents":{},"mode":420}]}}"#
        );
    }
}
