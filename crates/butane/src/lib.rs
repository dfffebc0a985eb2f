//! A Butane translator for the `fcos` variant (Butane 1.4.0 to 1.6.0 to Ignition 3.3.0 to
//! 3.5.0), in Rust with nothing but cargo: the same output as the real butane for every example
//! of its documentation (`tests/docs_examples.rs`), the same warnings in its words, and `--strict`.
//!
//! The entry points: [`butane()`] (translate and validate, as the CLI does), [`translate()`] (the
//! translation alone), [`merge::overlay_merge`] (Butane files layered), [`to_json`] (output as
//! butane writes it), and [`cli`] (the `butane`-compatible command line, shared by the `butane`
//! binary and `cargo xtask butane`).

pub mod cli;

pub mod dataurl;
pub mod merge;
mod order;
pub mod schema;
mod sugar;
pub mod translate;
pub mod validate;
pub mod yaml;

use std::fmt;

pub use translate::{Options, Translation, translate};

/// A warning or error at a place in the Butane config, in butane's words:
/// `$.storage.files.0.mode, line 6 col 13: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub path: String,
    pub mark: Option<yaml::Mark>,
    pub message: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mark {
            Some(mark) => write!(f, "{}, {mark}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// The config with its keys in butane's order.
pub fn order_config(config: serde_json::Value) -> serde_json::Value {
    order::go_order(config)
}

/// The schema a config of Ignition `version` is checked against (3.3.0 uses 3.4's; the rules
/// in [`validate`] refuse what 3.4 added).
pub fn schema_for(version: &str) -> Option<schema::Schema> {
    let text = match version {
        "3.3.0" | "3.4.0" => include_str!("schemas/ignition-v3_4.json"),
        "3.5.0" => include_str!("schemas/ignition-v3_5.json"),
        _ => return None,
    };
    Some(schema::Schema::parse(text))
}

/// What `butane [--strict]` does: translate, then validate the result as Ignition would. Returns
/// the config and butane's warning lines; on failure, the lines butane would print.
pub fn butane(
    source: &str,
    options: &Options,
    strict: bool,
) -> Result<(serde_json::Value, Vec<String>), Vec<String>> {
    let translation =
        translate(source, options).map_err(|e| vec![format!("Error translating config: {e}")])?;
    let mut lines: Vec<String> =
        translation.warnings.iter().map(|w| format!("warning at {w}")).collect();
    if strict && !lines.is_empty() {
        lines.push("Config produced warnings and --strict was specified".into());
        return Err(lines);
    }
    let version = translation.config["ignition"]["version"].as_str().unwrap_or_default().to_owned();
    let schema =
        schema_for(&version).ok_or_else(|| vec![format!("no schema for Ignition {version}")])?;
    let problems = validate::validate(&translation.config, &schema, &version);
    if !problems.is_empty() {
        lines.extend(problems.iter().map(|p| format!("error at {p}")));
        lines.push("Config failed validation".into());
        return Err(lines);
    }
    Ok((translation.config, lines))
}

/// Butane's check for a mode written in decimal by mistake (`644` for `0644`): the number is
/// unusual as a mode, but its digits read as octal would be a usual one.
pub fn looks_decimal(mode: i64, directory: bool) -> bool {
    let Some(as_octal) = digits_as_octal(mode) else { return false };
    !typical_mode(mode, directory) && typical_mode(as_octal, directory)
}

fn digits_as_octal(mode: i64) -> Option<i64> {
    if !(0..=7777).contains(&mode) {
        return None;
    }
    let mut octal = 0;
    for divisor in [1000, 100, 10, 1] {
        let digit = (mode / divisor) % 10;
        if digit > 7 {
            return None;
        }
        octal = (octal << 3) | digit;
    }
    Some(octal)
}

/// Whether a mode is one people use: permissions that widen from other to group to user, readable
/// by someone, executable directories, and special bits only where they make sense.
fn typical_mode(mode: i64, directory: bool) -> bool {
    if mode == 0 {
        return true;
    }
    let (mut had_r, mut had_w, mut had_x) = (false, false, false);
    for shift in [0, 3, 6] {
        let perm = (mode >> shift) & 7;
        let (r, w, x) = (perm & 4 != 0, perm & 2 != 0, perm & 1 != 0);
        if (!r && had_r)
            || (!w && had_w)
            || (!x && had_x)
            || (x && had_r && !had_x)
            || ((w || x) && !r)
        {
            return false;
        }
        (had_r, had_w, had_x) = (had_r || r, had_w || w, had_x || x);
    }
    if !had_r {
        return false;
    }
    if directory {
        had_x && mode & 0o4000 == 0 && (mode & 0o3000 == 0 || had_w)
    } else {
        (mode & 0o6000 == 0 || (had_x && mode & 2 == 0)) && mode & 0o1000 == 0
    }
}

/// JSON as Go's encoder writes it (`<`, `>` and `&` escaped), compact or with 2-space indents,
/// with a final newline.
pub fn to_json(value: &serde_json::Value, pretty: bool) -> String {
    let text =
        if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    // Those three characters only ever occur inside strings, so this is exact.
    let text = text
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    format!("{text}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_modes_are_spotted() {
        assert!(looks_decimal(644, false));
        assert!(looks_decimal(755, true));
        assert!(looks_decimal(600, false));
        assert!(!looks_decimal(0o644, false));
        assert!(!looks_decimal(0o755, true));
        assert!(!looks_decimal(0, false));
        assert!(!looks_decimal(420, false));
        assert!(!looks_decimal(8888, false));
    }
}
