//! Ignition's JSON schema, used to know every field, its type and its Butane name.
//!
//! Butane's fields are Ignition's in snake_case (`wipeFilesystem` is `wipe_filesystem`,
//! `sizeMiB` is `size_mib`), so the schema drives the generic part of the translation, and the
//! same walk validates a finished config (unknown fields, wrong types).

use serde_json::Value;

/// What a schema node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Integer,
    Boolean,
}

/// An Ignition schema (one spec version).
#[derive(Debug)]
pub struct Schema {
    root: Value,
}

/// A schema node, resolved, with the definition it came from (`#/definitions/resource`).
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub def: Option<&'a str>,
    value: &'a Value,
}

impl Schema {
    pub fn parse(text: &str) -> Schema {
        Schema { root: serde_json::from_str(text).unwrap_or(Value::Null) }
    }

    pub fn root(&self) -> Node<'_> {
        Node { def: None, value: &self.root }
    }

    fn resolve<'a>(&'a self, value: &'a Value, def: Option<&'a str>) -> Node<'a> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.trim_start_matches('#');
                let target = self.root.pointer(pointer).unwrap_or(&Value::Null);
                self.resolve(target, Some(reference))
            }
            None => Node { def, value },
        }
    }

    /// The properties of an object node, including those it gets through `allOf`.
    pub fn properties<'a>(&'a self, node: Node<'a>) -> Vec<(&'a str, Node<'a>)> {
        let mut out = Vec::new();
        if let Some(all) = node.value.get("allOf").and_then(Value::as_array) {
            for part in all {
                out.extend(self.properties(self.resolve(part, None)));
            }
        }
        if let Some(props) = node.value.get("properties").and_then(Value::as_object) {
            for (name, value) in props {
                out.push((name.as_str(), self.resolve(value, None)));
            }
        }
        out
    }

    pub fn property<'a>(&'a self, node: Node<'a>, name: &str) -> Option<Node<'a>> {
        self.properties(node).into_iter().find(|(n, _)| *n == name).map(|(_, node)| node)
    }

    pub fn items<'a>(&'a self, node: Node<'a>) -> Option<Node<'a>> {
        node.value.get("items").map(|items| self.resolve(items, None))
    }

    pub fn kind(&self, node: Node<'_>) -> Kind {
        let types: Vec<&str> = match node.value.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let has = |t: &str| types.contains(&t);
        if has("array") {
            Kind::Array
        } else if has("integer") {
            Kind::Integer
        } else if has("boolean") {
            Kind::Boolean
        } else if has("string") {
            Kind::String
        } else {
            Kind::Object
        }
    }

    /// Checks a finished config against the schema: every field known, every value of its type.
    pub fn check(&self, value: &Value, node: Node<'_>, path: &str, problems: &mut Vec<String>) {
        let kind = self.kind(node);
        match (kind, value) {
            (_, Value::Null) => {}
            (Kind::Object, Value::Object(map)) => {
                for (key, child) in map {
                    match self.property(node, key) {
                        Some(child_node) => {
                            self.check(child, child_node, &format!("{path}.{key}"), problems)
                        }
                        None => problems.push(format!("{path}.{key}: unknown field")),
                    }
                }
            }
            (Kind::Array, Value::Array(items)) => {
                if let Some(item_node) = self.items(node) {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_node, &format!("{path}.{i}"), problems);
                    }
                }
            }
            (Kind::String, Value::String(_)) | (Kind::Boolean, Value::Bool(_)) => {}
            (Kind::Integer, Value::Number(n)) if n.is_i64() => {}
            (kind, _) => problems.push(format!("{path}: expected {kind:?}")),
        }
    }
}

/// The Butane (snake_case) name of an Ignition field.
pub fn butane_name(field: &str) -> String {
    let field = field.replace("MiB", "Mib");
    let mut out = String::new();
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(butane_name("wipeFilesystem"), "wipe_filesystem");
        assert_eq!(butane_name("sizeMiB"), "size_mib");
        assert_eq!(butane_name("sshAuthorizedKeys"), "ssh_authorized_keys");
        assert_eq!(butane_name("httpHeaders"), "http_headers");
        assert_eq!(butane_name("path"), "path");
    }

    #[test]
    fn walks_refs_and_all_of() {
        let schema = Schema::parse(include_str!("schemas/ignition-v3_5.json"));
        let storage = schema.property(schema.root(), "storage").unwrap();
        let files = schema.property(storage, "files").unwrap();
        let file = schema.items(files).unwrap();
        assert_eq!(file.def, Some("#/definitions/storage/definitions/file"));
        let names: Vec<_> = schema.properties(file).into_iter().map(|(n, _)| n).collect();
        for field in ["path", "overwrite", "user", "contents", "append", "mode"] {
            assert!(names.contains(&field), "{field} in {names:?}");
        }
        let contents = schema.property(file, "contents").unwrap();
        assert_eq!(contents.def, Some("#/definitions/resource"));
        assert_eq!(schema.kind(schema.property(file, "mode").unwrap()), Kind::Integer);
    }
}
