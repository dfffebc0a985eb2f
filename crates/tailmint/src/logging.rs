//! The log: `level: message` on stderr, one line per event, through the run's [`Redactor`].
//!
//! `RUST_LOG` picks the level of tailmint's own messages. Other crates are held at warnings
//! whatever it says: at debug and trace, ureq, ureq-proto and rustls print requests and hex dumps
//! of what goes over the wire, which hold the OAuth secret, the access token and the key.

use std::io::Write;
use std::sync::Arc;

use log::{Level, Log, Metadata, Record};

use crate::redact::Redactor;

/// The most verbose level any other crate's messages are shown at.
pub const OTHERS_MAX: Level = Level::Warn;

/// Whether a message from `target` at `level` may be shown at all.
fn allowed(target: &str, level: Level) -> bool {
    let ours = target == "tailmint" || target.starts_with("tailmint::");
    ours || level <= OTHERS_MAX
}

/// env_logger behind the cap on other crates.
struct Capped {
    inner: env_logger::Logger,
}

impl Log for Capped {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata.target(), metadata.level()) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger (level from `RUST_LOG`, default `info`); every line is cleaned by
/// `redactor`, which the caller fills with the run's secrets as they appear.
pub fn init(redactor: Arc<Redactor>) {
    let inner = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            let level = record.level().as_str().to_lowercase();
            writeln!(buf, "{level}: {}", redactor.clean(&record.args().to_string()))
        })
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Capped { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_are_held_at_warnings() {
        for target in ["tailmint", "tailmint::api"] {
            assert!(allowed(target, Level::Trace), "{target}");
        }
        for target in ["ureq", "ureq_proto::client", "rustls::conn", "tailmintx", "other"] {
            assert!(allowed(target, Level::Warn) && allowed(target, Level::Error), "{target}");
            assert!(!allowed(target, Level::Info) && !allowed(target, Level::Trace), "{target}");
        }
    }
}
