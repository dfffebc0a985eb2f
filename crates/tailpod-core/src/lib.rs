//! The pure core of tailpod: no I/O, no processes, no clocks.
//!
//! * [`unit`](mod@unit): a lossless model of systemd unit files and Quadlet files.
//! * [`merge`]: the transform merge engine quadsync applies to container specs.
//! * [`envfile`]: `KEY=value` configuration files (`config.env`, `oauth.env`); [`settings`] and
//!   [`fleet`]: the config.env values that need rules (the update schedule, webhooks, the repo
//!   paths a host deploys), shared by quadsync and build-ign's checks.
//! * [`names`]: validated names, so that nothing unchecked reaches a path, an argv or `useradd`.
//! * [`quadlet`]: the sections and keys Podman's Quadlet and systemd accept, to check a file
//!   before a host sees it.
//! * [`redact`]: secrets hidden from text before it is shown, and percent-encoding.
//! * [`spelling`]: the known word a mistyped one was meant to be, for errors that say so.
//!
//! Everything that touches the host lives in the tool crates; keeping this crate pure is what lets
//! the merge rules be tested exhaustively from data files and fuzzed.

#[doc(hidden)]
pub mod checks;
pub mod envfile;
pub mod fleet;
pub mod located;
pub mod merge;
pub mod names;
pub mod quadlet;
pub mod redact;
pub mod settings;
pub mod spelling;
pub mod unit;
