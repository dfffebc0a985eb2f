//! YAML read the way Butane (Go, yaml.v3) reads it.
//!
//! Rust YAML libraries resolve `0755` as the decimal 755 or refuse it; Butane's yaml.v3 reads it
//! as octal 493, and every file mode in a Butane config depends on that. So this module keeps each
//! scalar's raw text and style (from yaml-rust2's event stream) and resolves it only when the
//! schema says which type the field has, with Go's rules ([`int`], [`bool`]).

use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source, 1-based like Butane's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Mark {
    fn from(m: Marker) -> Mark {
        Mark { line: m.line(), col: m.col() + 1 }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} col {}", self.line, self.col)
    }
}

/// A YAML node with its raw scalars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `plain` is false for quoted and block scalars.
    Scalar {
        text: String,
        plain: bool,
        mark: Mark,
    },
    Seq(Vec<Node>, Mark),
    Map(Vec<(String, Mark, Node)>, Mark),
}

impl Node {
    pub fn mark(&self) -> Mark {
        match self {
            Node::Scalar { mark, .. } | Node::Seq(_, mark) | Node::Map(_, mark) => *mark,
        }
    }

    /// `~`, `null` and an empty plain scalar mean "absent", as in yaml.v3.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true, .. }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries, _) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar (any style).
    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A YAML syntax error, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub mark: Mark,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mark, self.message)
    }
}

/// Parses one YAML document. Aliases are expanded; a duplicate mapping key is an error, as in
/// yaml.v3.
pub fn parse(source: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(source);
    let mut builder = Builder { anchors: Vec::new(), stack: Vec::new(), root: None };
    loop {
        let (event, marker) = parser.next_token().map_err(|e| YamlError {
            mark: Mark::from(*e.marker()),
            message: e.info().to_owned(),
        })?;
        let mark = Mark::from(marker);
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                builder.push(Node::Scalar { text, plain, mark }, anchor)?;
            }
            Event::Alias(id) => {
                let node = builder
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                    .ok_or(YamlError { mark, message: "unknown anchor".into() })?;
                builder.push(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                builder.stack.push(Open::Seq(Vec::new(), mark, anchor))
            }
            Event::MappingStart(anchor, _) => {
                builder.stack.push(Open::Map(Vec::new(), None, mark, anchor));
            }
            Event::SequenceEnd => match builder.stack.pop() {
                Some(Open::Seq(items, mark, anchor)) => {
                    builder.push(Node::Seq(items, mark), anchor)?
                }
                _ => return Err(YamlError { mark, message: "unbalanced sequence".into() }),
            },
            Event::MappingEnd => match builder.stack.pop() {
                Some(Open::Map(entries, _, mark, anchor)) => {
                    builder.push(Node::Map(entries, mark), anchor)?
                }
                _ => return Err(YamlError { mark, message: "unbalanced mapping".into() }),
            },
        }
    }
    Ok(builder.root.unwrap_or(Node::Map(Vec::new(), Mark { line: 1, col: 1 })))
}

enum Open {
    Seq(Vec<Node>, Mark, usize),
    /// Entries so far, and a key waiting for its value.
    Map(Vec<(String, Mark, Node)>, Option<(String, Mark)>, Mark, usize),
}

struct Builder {
    anchors: Vec<(usize, Node)>,
    stack: Vec<Open>,
    root: Option<Node>,
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(items, _, _)) => items.push(node),
            Some(Open::Map(entries, pending, _, _)) => match pending.take() {
                None => {
                    let mark = node.mark();
                    let Node::Scalar { text, .. } = node else {
                        return Err(YamlError {
                            mark,
                            message: "mapping keys must be scalars".into(),
                        });
                    };
                    if entries.iter().any(|(k, _, _)| *k == text) {
                        return Err(YamlError {
                            mark,
                            message: format!("mapping key {text:?} already defined"),
                        });
                    }
                    *pending = Some((text, mark));
                }
                Some((key, mark)) => entries.push((key, mark, node)),
            },
        }
        Ok(())
    }
}

/// An integer as yaml.v3 reads one into an `int` field: a plain scalar in Go's
/// `strconv.ParseInt(s, 0, 64)` syntax after dropping `_` (so `0755` and `0o755` are octal,
/// `0x1ed` hex, `0b…` binary).
pub fn int(node: &Node) -> Result<i64, String> {
    let Node::Scalar { text, plain, .. } = node else {
        return Err("expected an integer".into());
    };
    if !plain {
        return Err(format!("cannot unmarshal !!str `{text}` into int"));
    }
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, digits) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.strip_prefix('+').unwrap_or(&cleaned)),
    };
    let lower = digits.to_ascii_lowercase();
    let parsed = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16)
    } else if let Some(octal) = lower.strip_prefix("0o") {
        i64::from_str_radix(octal, 8)
    } else if let Some(binary) = lower.strip_prefix("0b") {
        i64::from_str_radix(binary, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8)
    } else {
        lower.parse::<i64>()
    };
    match parsed {
        Ok(value) if !digits.is_empty() && !digits.starts_with(['+', '-']) => {
            Ok(if negative { -value } else { value })
        }
        _ => Err(format!("cannot unmarshal !!str `{text}` into int")),
    }
}

/// A boolean as yaml.v3 reads one into a `bool` field (YAML 1.1 words included).
pub fn bool(node: &Node) -> Result<bool, String> {
    let Node::Scalar { text, plain, .. } = node else {
        return Err("expected a boolean".into());
    };
    if *plain {
        match text.as_str() {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
                return Ok(true);
            }
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n"
            | "N" => return Ok(false),
            _ => {}
        }
    }
    Err(format!("cannot unmarshal `{text}` into bool"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, plain: bool) -> Node {
        Node::Scalar { text: text.into(), plain, mark: Mark::default() }
    }

    #[test]
    fn integers_follow_go() {
        let cases = [
            ("0755", 493),
            ("0o755", 493),
            ("0x1ed", 493),
            ("0_755", 493),
            ("755", 755),
            ("0", 0),
            ("-1", -1),
            ("+8", 8),
            ("0b101", 5),
        ];
        for (text, value) in cases {
            assert_eq!(int(&scalar(text, true)), Ok(value), "{text}");
        }
        for bad in ["0758", "abc", "", "1.5", "--1", "0x"] {
            assert!(int(&scalar(bad, true)).is_err(), "{bad}");
        }
        assert_eq!(
            int(&scalar("0755", false)),
            Err("cannot unmarshal !!str `0755` into int".into())
        );
    }

    #[test]
    fn booleans_follow_go() {
        for yes in ["true", "yes", "on", "y", "True", "TRUE"] {
            assert_eq!(bool(&scalar(yes, true)), Ok(true), "{yes}");
        }
        for no in ["false", "no", "off", "n"] {
            assert_eq!(bool(&scalar(no, true)), Ok(false), "{no}");
        }
        assert!(bool(&scalar("1", true)).is_err());
        assert!(bool(&scalar("true", false)).is_err());
    }

    #[test]
    fn raw_scalars_marks_and_duplicates() {
        let doc = parse("a:\n  mode: 0755\n  text: '0755'\n  none: ~\nb: [x, y]\n").unwrap();
        let a = doc.get("a").unwrap();
        assert_eq!(
            a.get("mode"),
            Some(&Node::Scalar {
                text: "0755".into(),
                plain: true,
                mark: Mark { line: 2, col: 9 }
            })
        );
        assert_eq!(a.get("text").unwrap().text(), Some("0755"));
        assert!(a.get("none").unwrap().is_null());
        assert!(matches!(doc.get("b"), Some(Node::Seq(items, _)) if items.len() == 2));
        let err = parse("path: /a\npath: /b\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2 col 1: mapping key \"path\" already defined");
        let aliased = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(aliased.get("other").unwrap().get("x").unwrap().text(), Some("1"));
    }
}
