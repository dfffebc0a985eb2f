//! `KEY=value` configuration files, such as `/etc/quadsync/config.env` and
//! `/etc/tailscale/oauth.env`.
//!
//! The syntax is the common subset of shell, systemd's `EnvironmentFile=` and Docker env files,
//! so the same file can be sourced by any of them:
//!
//! * blank lines and lines starting with `#` are ignored;
//! * an `export ` prefix is accepted and ignored;
//! * the key is `[A-Za-z_][A-Za-z0-9_]*`; spaces around `=` are ignored;
//! * a value wholly inside matching `"…"` or `'…'` is unquoted (in double quotes `\"` and `\\`
//!   are escapes); quotes that do not match are kept as written;
//! * in an unquoted value, a `#` after whitespace starts a comment;
//! * a later assignment of the same key wins.
//!
//! There is no variable expansion: `$HOME` is the five characters `$HOME`.
//! Errors name the file and line, and never echo a value (it may be a secret).

use std::fmt;
use std::str::FromStr;

/// A parsed env file.
#[derive(Debug, Clone, Default)]
pub struct EnvFile {
    origin: String,
    vars: Vec<Var>,
}

/// One assignment in an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub key: String,
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A syntax or value error, naming the file, the line (when there is one) and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    pub origin: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for EnvError {}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value inside a matching pair of quotes, if the whole of `raw` is one quoted string
/// (optionally followed by a comment).
fn unquote(raw: &str) -> Option<String> {
    let quote = raw.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut value = String::new();
    let mut chars = raw[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            let rest = raw[1 + i + 1..].trim_start();
            return (rest.is_empty() || rest.starts_with('#')).then_some(value);
        }
        if c == '\\'
            && quote == '"'
            && let Some((_, escaped @ ('"' | '\\'))) = chars.clone().next()
        {
            value.push(escaped);
            chars.next();
            continue;
        }
        value.push(c);
    }
    None
}

fn strip_comment(raw: &str) -> &str {
    let cut = raw
        .char_indices()
        .find(|&(i, c)| c == '#' && raw[..i].ends_with(char::is_whitespace))
        .map_or(raw.len(), |(i, _)| i);
    raw[..cut].trim_end()
}

impl EnvFile {
    /// Parses `text`; `origin` (usually the path) names the file in errors.
    pub fn parse(origin: impl Into<String>, text: &str) -> Result<EnvFile, EnvError> {
        let origin = origin.into();
        let mut vars = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let error = |key: Option<&str>, message: String| EnvError {
                origin: origin.clone(),
                line: Some(line_no),
                key: key.map(str::to_owned),
                message,
            };
            let assignment = trimmed.strip_prefix("export ").map_or(trimmed, str::trim_start);
            let Some((key, raw)) = assignment.split_once('=') else {
                return Err(error(None, "expected KEY=value".into()));
            };
            let key = key.trim();
            if !valid_key(key) {
                return Err(error(
                    None,
                    format!("invalid key {key:?} (expected [A-Za-z_][A-Za-z0-9_]*)"),
                ));
            }
            let raw = raw.trim();
            let value = unquote(raw).unwrap_or_else(|| strip_comment(raw).to_owned());
            vars.push(Var { key: key.to_owned(), value, line: line_no });
        }
        Ok(EnvFile { origin, vars })
    }

    /// The file's name, as given to [`EnvFile::parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The assignment of `key` that counts (the last one).
    pub fn var(&self, key: &str) -> Option<&Var> {
        self.vars.iter().rev().find(|v| v.key == key)
    }

    /// The value of `key`, if assigned.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.var(key).map(|v| v.value.as_str())
    }

    /// The value of `key`, which must be present and not empty.
    pub fn require(&self, key: &str) -> Result<&str, EnvError> {
        match self.var(key) {
            Some(var) if !var.value.is_empty() => Ok(&var.value),
            Some(var) => Err(self.error(Some(var.line), key, "is empty".into())),
            None => Err(self.error(None, key, "not set".into())),
        }
    }

    /// The value of `key` parsed as `T`, if present and not empty. A parse error names the file,
    /// line and key, and the parser's message (which must not echo secrets).
    pub fn parse_value<T>(&self, key: &str) -> Result<Option<T>, EnvError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.var(key) {
            Some(var) if !var.value.is_empty() => var
                .value
                .parse()
                .map(Some)
                .map_err(|e: T::Err| self.error(Some(var.line), key, e.to_string())),
            _ => Ok(None),
        }
    }

    /// Assignments whose key is not in `known`: most likely typos, worth a warning.
    pub fn unknown<'a>(&'a self, known: &'a [&str]) -> impl Iterator<Item = &'a Var> {
        self.vars.iter().filter(move |v| !known.contains(&v.key.as_str()))
    }

    /// Every assignment, in file order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    fn error(&self, line: Option<usize>, key: &str, message: String) -> EnvError {
        EnvError { origin: self.origin.clone(), line, key: Some(key.to_owned()), message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(line: &str) -> String {
        EnvFile::parse("t.env", line).unwrap().get("KEY").unwrap().to_owned()
    }

    #[test]
    fn values_as_the_go_original_reads_them() {
        assert_eq!(value(r#"KEY="hello world""#), "hello world");
        assert_eq!(value("KEY='hello world'"), "hello world");
        assert_eq!(value(r#"KEY = "hello world" "#), "hello world");
        assert_eq!(value(r#"KEY="hello'"#), r#""hello'"#);
        assert_eq!(value("KEY="), "");
        assert_eq!(value(r#"KEY="""#), "");
        assert_eq!(value("KEY=a=b=c"), "a=b=c");
    }

    #[test]
    fn export_prefix_comments_and_escapes() {
        assert_eq!(value("export KEY=x"), "x");
        assert_eq!(value("KEY=x # note"), "x");
        assert_eq!(value("KEY=a#b"), "a#b");
        assert_eq!(value(r#"KEY="a # b" # note"#), "a # b");
        assert_eq!(value(r#"KEY="say \"hi\" \\ \n""#), r#"say "hi" \ \n"#);
        assert_eq!(value("KEY='a \\\" b'"), "a \\\" b");
        assert_eq!(value("KEY=$HOME"), "$HOME");
    }

    #[test]
    fn later_assignment_wins_and_comments_are_skipped() {
        let env = EnvFile::parse("t.env", "# c\n\n  # indented\nKEY=1\nKEY=2\n").unwrap();
        assert_eq!(env.get("KEY"), Some("2"));
        assert_eq!(env.var("KEY").unwrap().line, 5);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = EnvFile::parse("/etc/x.env", "A=1\nnot an assignment\n").unwrap_err();
        assert_eq!(err.to_string(), "/etc/x.env:2: expected KEY=value");
        let err = EnvFile::parse("/etc/x.env", "1BAD=x\n").unwrap_err();
        assert!(err.to_string().starts_with("/etc/x.env:1: invalid key \"1BAD\""), "{err}");

        let env = EnvFile::parse("/etc/x.env", "EMPTY=\nN=abc\n").unwrap();
        assert_eq!(env.require("MISSING").unwrap_err().to_string(), "/etc/x.env: MISSING: not set");
        assert_eq!(env.require("EMPTY").unwrap_err().to_string(), "/etc/x.env:1: EMPTY: is empty");
        let err = env.parse_value::<u32>("N").unwrap_err();
        assert_eq!(err.to_string(), "/etc/x.env:2: N: invalid digit found in string");
        assert_eq!(env.parse_value::<u32>("EMPTY").unwrap(), None);
    }

    #[test]
    fn unknown_keys_are_listed() {
        let env = EnvFile::parse("t", "GOOD=1\nTYPO=2\n").unwrap();
        let unknown: Vec<_> = env.unknown(&["GOOD"]).map(|v| v.key.as_str()).collect();
        assert_eq!(unknown, ["TYPO"]);
    }
}
