//! Hiding secrets in text that is about to be shown (a log line, a stored message).
//!
//! A secret comes back in more than one form (raw, percent-encoded, JSON-escaped); the caller
//! adds each form it knows of, and [`Secrets::hide`] replaces all of them. Forms are tried
//! longest first, so a secret that contains another (a URL's `user:password` and its
//! `password`) is hidden whole, and no piece of it is left beside the mark.

use std::fmt;

/// The forms of the secrets to hide.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Longest first, no duplicates, none empty.
    forms: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("forms", &self.forms.len()).finish()
    }
}

impl Secrets {
    /// Hides `form` from now on; an empty or known form changes nothing.
    pub fn add(&mut self, form: impl Into<String>) {
        let form = form.into();
        if form.is_empty() || self.forms.contains(&form) {
            return;
        }
        self.forms.push(form);
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    /// How many forms are hidden.
    pub fn len(&self) -> usize {
        self.forms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form replaced by `mark`.
    pub fn hide(&self, text: &str, mark: &str) -> String {
        self.forms.iter().fold(text.to_owned(), |text, form| text.replace(form, mark))
    }
}

/// `text` percent-encoded, keeping only RFC 3986's unreserved characters: safe as a URL path
/// segment and as a form value (`application/x-www-form-urlencoded` decodes `%20` as a space).
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `%XX` sequences decoded (anything else kept as it is; invalid UTF-8 replaced).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_forms_are_hidden_first_and_nothing_is_left_beside_the_mark() {
        let mut secrets = Secrets::default();
        secrets.add("pw");
        secrets.add("user:pw");
        secrets.add("");
        secrets.add("pw");
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets.hide("https://user:pw@host and pw", "***"), "https://***@host and ***");
        assert_eq!(format!("{secrets:?}"), "Secrets { forms: 2 }");
    }

    #[test]
    fn percent_encoding_round_trips() {
        assert_eq!(percent_encode("example.com"), "example.com");
        assert_eq!(percent_encode("-"), "-");
        assert_eq!(percent_encode("a b/../c?d#e%f@g"), "a%20b%2F..%2Fc%3Fd%23e%25f%40g");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
        for text in ["s3cr!t", "a b/../c?d#e%f@g", "é\n", ""] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
