//! Ignition's own rules, checked on a finished (and merged) config before it is written, so a
//! config Ignition would refuse at first boot is refused here instead.

use std::collections::HashSet;

use serde_json::Value;
use tailpod_core::unit::UnitFile;

use crate::dataurl;
use crate::schema::Schema;

const UNIT_EXTENSIONS: [&str; 12] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".snapshot",
    ".slice",
    ".scope",
];
const SCHEMES: [&str; 7] = ["http", "https", "tftp", "s3", "arn", "gs", "data"];

fn items<'a>(config: &'a Value, pointer: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    config.pointer(pointer).and_then(Value::as_array).into_iter().flatten().enumerate()
}

fn check_resource(resource: &Value, at: &str, problems: &mut Vec<String>) {
    let source = resource.get("source").and_then(Value::as_str);
    let compression = resource.get("compression").and_then(Value::as_str);
    if !matches!(compression, None | Some("") | Some("gzip")) {
        problems.push(format!("{at}.compression: must be \"\" or \"gzip\""));
    }
    if let Some(hash) =
        resource.get("verification").and_then(|v| v.get("hash")).and_then(Value::as_str)
    {
        let valid = match hash.split_once('-') {
            Some(("sha512", hex)) => hex.len() == 128,
            Some(("sha256", hex)) => hex.len() == 64,
            _ => false,
        };
        if !valid
            || !hash
                .split_once('-')
                .is_some_and(|(_, hex)| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            problems.push(format!(
                "{at}.verification.hash: {hash:?} is not sha256-<64 hex> or sha512-<128 hex>"
            ));
        }
        if source.is_none() {
            problems.push(format!("{at}.verification: a hash needs a source"));
        }
    }
    let Some(source) = source else { return };
    let scheme = source.split_once(':').map(|(s, _)| s).unwrap_or_default();
    if !SCHEMES.contains(&scheme) {
        problems.push(format!("{at}.source: unsupported URL scheme {scheme:?}"));
    }
    if scheme == "data"
        && let Err(e) = dataurl::decode(source, compression)
    {
        problems.push(format!("{at}.source: {e}"));
    }
    if resource.get("httpHeaders").is_some_and(|h| h.as_array().is_some_and(|a| !a.is_empty()))
        && !scheme.starts_with("http")
    {
        problems.push(format!("{at}.httpHeaders: only for http(s) sources"));
    }
}

fn check_owner(node: &Value, at: &str, problems: &mut Vec<String>) {
    for who in ["user", "group"] {
        if let Some(owner) = node.get(who)
            && owner.get("id").is_some()
            && owner.get("name").is_some()
        {
            problems.push(format!("{at}.{who}: set id or name, not both"));
        }
    }
}

fn clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && (path == "/" || !path.ends_with('/'))
        && !path[1..].split('/').any(|p| p.is_empty() || p == "." || p == "..")
}

/// Every rule broken, as `$.path: problem`; empty when Ignition would accept the config.
/// `ignition_version` is the version the config will be written as (3.3.0 refuses 3.4 fields).
pub fn validate(config: &Value, schema: &Schema, ignition_version: &str) -> Vec<String> {
    let mut problems = Vec::new();
    schema.check(config, schema.root(), "$", &mut problems);

    let mut paths = HashSet::new();
    let mut links = Vec::new();
    for kind in ["files", "directories", "links"] {
        for (i, node) in items(config, &format!("/storage/{kind}")) {
            let at = format!("$.storage.{kind}.{i}");
            let path = node["path"].as_str().unwrap_or_default();
            if !clean_absolute(path) {
                problems.push(format!("{at}.path: {path:?} is not an absolute, clean path"));
            }
            if !paths.insert(path.to_owned()) {
                problems.push(format!("{at}.path: duplicate entry defined for {path}"));
            }
            check_owner(node, &at, &mut problems);
            if let Some(mode) = node.get("mode").and_then(Value::as_i64) {
                if !(0..=0o7777).contains(&mode) {
                    problems.push(format!("{at}.mode: {mode:o} is not a valid mode"));
                } else if ignition_version == "3.3.0" && mode & 0o7000 != 0 {
                    problems
                        .push(format!("{at}.mode: special mode bits need Ignition 3.4.0 or newer"));
                }
            }
            match kind {
                "files" => {
                    let contents = node.get("contents");
                    if let Some(contents) = contents {
                        check_resource(contents, &format!("{at}.contents"), &mut problems);
                    }
                    for (j, append) in node
                        .get("append")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        check_resource(append, &format!("{at}.append.{j}"), &mut problems);
                    }
                    let has_source = contents.and_then(|c| c.get("source")).is_some();
                    if node.get("overwrite") == Some(&Value::Bool(true)) && !has_source {
                        problems.push(format!("{at}.overwrite: overwrite needs contents.source"));
                    }
                }
                "links" => {
                    if node.get("target").and_then(Value::as_str).is_none_or(str::is_empty) {
                        problems.push(format!("{at}.target: a link needs a target"));
                    }
                    links.push(path.to_owned());
                }
                _ => {}
            }
        }
    }
    for path in &paths {
        if let Some(link) = links.iter().find(|l| path.starts_with(&format!("{l}/"))) {
            problems.push(format!("{path}: is below the link {link}"));
        }
    }

    let mut names = HashSet::new();
    for (i, unit) in items(config, "/systemd/units") {
        let at = format!("$.systemd.units.{i}");
        let name = unit["name"].as_str().unwrap_or_default();
        if !names.insert(name) {
            problems.push(format!("{at}.name: duplicate entry defined for {name}"));
        }
        if !UNIT_EXTENSIONS.iter().any(|ext| name.ends_with(ext)) {
            problems.push(format!("{at}.name: invalid systemd unit extension in {name:?}"));
        }
        if let Some(contents) = unit.get("contents").and_then(Value::as_str)
            && let Some(problem) = UnitFile::parse(contents).problems().first()
        {
            problems.push(format!("{at}.contents: invalid unit content: {problem}"));
        }
        let mut dropins = HashSet::new();
        for (j, dropin) in
            unit.get("dropins").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let dropin_name = dropin["name"].as_str().unwrap_or_default();
            if !dropin_name.ends_with(".conf") {
                problems.push(format!("{at}.dropins.{j}.name: {dropin_name:?} must end in .conf"));
            }
            if !dropins.insert(dropin_name) {
                problems.push(format!(
                    "{at}.dropins.{j}.name: duplicate entry defined for {dropin_name}"
                ));
            }
        }
    }
    for kind in ["users", "groups"] {
        let mut seen = HashSet::new();
        for (i, entry) in items(config, &format!("/passwd/{kind}")) {
            let name = entry["name"].as_str().unwrap_or_default();
            if !seen.insert(name) {
                problems
                    .push(format!("$.passwd.{kind}.{i}.name: duplicate entry defined for {name}"));
            }
        }
    }
    if ignition_version == "3.3.0" {
        for (i, luks) in items(config, "/storage/luks") {
            for field in ["discard", "openOptions", "cex"] {
                if luks.get(field).is_some() {
                    problems
                        .push(format!("$.storage.luks.{i}.{field}: needs Ignition 3.4.0 or newer"));
                }
            }
            for (j, tang) in luks
                .pointer("/clevis/tang")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if tang.get("advertisement").is_some() {
                    problems.push(format!("$.storage.luks.{i}.clevis.tang.{j}.advertisement: needs Ignition 3.4.0 or newer"));
                }
            }
        }
    }
    problems
}
