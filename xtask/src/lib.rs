//! Project automation behind `cargo xtask`; `main.rs` is the command line.
//!
//! * [`build_ign`]: the host's Ignition config from `butane/` and its overlays.
//! * [`dist`]: release binaries and `SHA256SUMS`; the overlay that installs them.
//! * [`testbox`]: the end-to-end box.

pub mod build_ign;
pub mod dist;
pub mod testbox;

use std::path::{Path, PathBuf};

/// The workspace root: xtask's manifest sits one level below it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}
