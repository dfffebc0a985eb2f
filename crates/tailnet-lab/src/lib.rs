//! Test-only stand-ins for the parts of Tailscale that tailpod talks to, served on loopback.
//!
//! * [`api`]: Tailscale's public HTTP API (OAuth token, auth keys, devices), as published, for
//!   tailmint's tests and the end-to-end box.
//!
//! Nothing here is secure or meant for a real network; the crate is never part of a release.

pub mod api;
mod http;
