//! tailmint: mint a short-lived, tagged, ephemeral Tailscale auth key through an OAuth client and
//! write it where a service can read it.
//!
//! * [`credentials`]: where the OAuth client's id and secret come from.
//! * [`api`]: the four Tailscale API calls, with retries bounded by one deadline.
//! * [`retry`]: the backoff policy (pure).
//! * [`output`]: checking the output path and writing the key file atomically.
//! * [`privileges`]: running as the sudo caller once the secret is read.

pub mod api;
pub mod credentials;
pub mod output;
pub mod privileges;
pub mod retry;
