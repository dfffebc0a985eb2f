//! quadsync: deploy rootless Podman Quadlet containers from a git repository, one Linux user per
//! container.
//!
//! * [`transforms`]: the transform directory and which transforms apply to which spec.
//! * [`render`]: from a spec file to the exact text deployed (shared by `augment` and `sync`).

pub mod config;
pub mod discover;
pub mod plan;
pub mod render;
pub mod repo;
pub mod state;
pub mod transforms;
