//! Project automation behind `cargo xtask`; `main.rs` is the command line.
//!
//! * [`butane`]: Butane `fcos` to Ignition, natively (no `butane`, no `jq`).
//! * [`build_ign`]: the host's Ignition config from `butane/` and its overlays.
//! * [`dist`]: release binaries and `SHA256SUMS`; the overlay that installs them.
//! * [`testbox`]: the end-to-end box.

pub mod build_ign;
pub mod butane;
pub mod dist;
pub mod testbox;

use std::path::{Path, PathBuf};

/// The workspace root: xtask's manifest sits one level below it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
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
