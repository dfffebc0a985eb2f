//! What tailmint prints of text it did not write, and the secrets it never prints.
//!
//! tailmint runs in a service's `ExecStartPre=`, so what it prints lands in the journal, which
//! more people read than `oauth.env`. Two rules follow:
//!
//! * Text from the server (error messages, bodies, device names, library errors quoting them) is
//!   shown only through [`Redactor::server_text`]: secrets removed, everything but printable
//!   ASCII escaped (no forged log lines, no terminal escapes), at most [`SERVER_TEXT_MAX`]
//!   characters. A proxy that echoes the request would otherwise print the OAuth secret.
//! * Every log line goes through [`Redactor::clean`] on its way out (see `logging`): the OAuth
//!   secret, the access token and the minted key are removed, whatever put them there.
//!
//! A secret is removed as sent and as it may come back: percent-encoded (as in the token
//! request's form body), JSON-escaped and Rust-quoted.

use std::fmt;
use std::sync::Mutex;

use tailpod_core::redact::Secrets;
pub use tailpod_core::redact::percent_encode;

use crate::credentials::Secret;

/// The most characters of server text a message shows, `...` marking a cut included.
pub const SERVER_TEXT_MAX: usize = 200;

/// What marks server text that was cut.
const CUT: &str = "...";

/// What stands where a secret was.
const REDACTED: &str = "[redacted]";

/// The secrets of one run, shared by the API client and the logger.
#[derive(Default)]
pub struct Redactor {
    secrets: Mutex<Secrets>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor").field("secrets", &self.secrets().len()).finish()
    }
}

/// `text` with everything but printable ASCII escaped (`\n`, `\u{1b}`, `\u{e4}`), so it stays on
/// one line and cannot drive a terminal or pass for another log line.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c == ' ' || c.is_ascii_graphic() {
            escaped.push(c);
        } else {
            escaped.extend(c.escape_default());
        }
    }
    escaped
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// From now on, `secret` (and its encodings) is removed from everything cleaned.
    pub fn add(&self, secret: &Secret) {
        let raw = secret.expose();
        if raw.is_empty() {
            return;
        }
        let quoted = |text: String| text[1..text.len() - 1].to_owned();
        let forms = [
            raw.to_owned(),
            percent_encode(raw),
            quoted(serde_json::Value::from(raw).to_string()),
            quoted(format!("{raw:?}")),
        ];
        let mut secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        for form in forms {
            secrets.add(form);
        }
    }

    fn secrets(&self) -> std::sync::MutexGuard<'_, Secrets> {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn without_secrets(&self, text: &str) -> String {
        self.secrets().hide(text, REDACTED)
    }

    /// `text` with every secret removed and non-printable characters escaped: for a log line.
    pub fn clean(&self, text: &str) -> String {
        escape(&self.without_secrets(text))
    }

    /// Text from the server, fit to show: [`Redactor::clean`], then cut to [`SERVER_TEXT_MAX`]
    /// characters (secrets are removed before the cut, so no part of one survives it).
    pub fn server_text(&self, text: &str) -> String {
        let mut clean = self.clean(text.trim());
        // Printable ASCII now, so bytes are characters.
        if clean.len() > SERVER_TEXT_MAX {
            clean.truncate(SERVER_TEXT_MAX - CUT.len());
            clean.push_str(CUT);
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_in_every_form_they_come_back_in() {
        let redactor = Redactor::new();
        redactor.add(&Secret::new("s3cr3t+/=x y\"é"));
        redactor.add(&Secret::new("tok"));
        redactor.add(&Secret::new(""));
        let echoes = [
            "form: client_secret=s3cr3t%2B%2F%3Dx%20y%22%C3%A9&grant_type=client_credentials",
            r#"json: {"client_secret":"s3cr3t+/=x y\"é"}"#,
            "debug: \"s3cr3t+/=x y\\\"é\"",
            "raw: s3cr3t+/=x y\"é",
            "Bearer tok",
        ];
        for echo in echoes {
            let clean = redactor.clean(echo);
            assert!(!clean.contains("s3cr3t") && !clean.contains("tok"), "{echo} -> {clean}");
            assert!(clean.contains(REDACTED), "{clean}");
        }
        assert_eq!(format!("{redactor:?}"), "Redactor { secrets: 4 }");
    }

    #[test]
    fn server_text_is_one_escaped_line_of_bounded_length() {
        let redactor = Redactor::new();
        assert_eq!(
            redactor.server_text("  a\nb\r\u{1b}[2J\tc é \u{202e} "),
            r"a\nb\r\u{1b}[2J\tc \u{e9} \u{202e}"
        );
        let long = redactor.server_text(&"\u{e9}".repeat(1000));
        assert_eq!(long, format!("{}\\u{{e9...", r"\u{e9}".repeat(32)));
        assert_eq!(long.len(), SERVER_TEXT_MAX);
        assert_eq!(redactor.server_text(&"x".repeat(SERVER_TEXT_MAX)), "x".repeat(SERVER_TEXT_MAX));
        // The secret is removed before the cut: no prefix of it is left at the end.
        redactor.add(&Secret::new("SECRETSECRET"));
        let text = format!("{}SECRETSECRET", "y".repeat(SERVER_TEXT_MAX - 7));
        let shown = redactor.server_text(&text);
        assert_eq!(shown, format!("{}[red...", "y".repeat(SERVER_TEXT_MAX - 7)));
    }
}
