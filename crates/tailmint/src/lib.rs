//! tailmint: mint a short-lived, tagged, ephemeral Tailscale auth key through an OAuth client and
//! write it where a service can read it.
//!
//! * [`credentials`]: where the OAuth client's id and secret come from.
//! * [`api`]: the four Tailscale API calls, with retries bounded by one deadline.
//! * [`retry`]: the backoff policy (pure).
//! * [`output`]: checking the output path and writing the key file atomically.
//! * [`privileges`]: running as the sudo caller once the secret is read.
//! * [`redact`]: what is printed of server text, and the secrets never printed.
//! * [`logging`]: the log, through the redactor, with other crates held at warnings.

pub mod api;
pub mod credentials;
pub mod logging;
pub mod output;
pub mod privileges;
pub mod redact;
pub mod retry;
