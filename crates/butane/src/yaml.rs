//! YAML read the way Butane (Go, yaml.v3) reads it.
//!
//! Rust YAML libraries resolve `0755` as the decimal 755 or refuse it; Butane's yaml.v3 reads it
//! as octal 493, and every file mode in a Butane config depends on that. So this module keeps each
//! scalar's raw text and style (from yaml-rust2's event stream) and resolves it only when the
//! schema says which type the field has, with Go's rules ([`int()`], [`bool()`]).

use std::collections::{HashMap, HashSet};
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

/// Parses the one YAML document of a Butane config, as yaml.v3 would decode it: aliases expanded
/// within yaml.v3's budget (`AliasBudget`), merge keys (`<<`) applied, and a duplicate mapping
/// key an error.
///
/// A second document is refused: butane decodes only the first, so anything after a stray `---`
/// (SSH keys, say) would be dropped without a word.
pub fn parse(source: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(source);
    let mut builder = Builder::default();
    let mut documents = 0;
    loop {
        let (event, marker) = parser.next_token().map_err(|e| YamlError {
            mark: Mark::from(*e.marker()),
            message: e.info().to_owned(),
        })?;
        let mark = Mark::from(marker);
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    let message = format!(
                        "a Butane config is one YAML document; a second starts at line {}",
                        mark.line
                    );
                    return Err(YamlError { mark, message });
                }
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::Scalar(text, style, anchor, _tag) => {
                builder.budget.spend(1, 0, mark)?;
                let plain = style == TScalarStyle::Plain;
                builder.push(Node::Scalar { text, plain, mark }, 1, anchor)?;
            }
            Event::Alias(id) => {
                let weight = builder
                    .anchors
                    .get(&id)
                    .map(|anchored| anchored.weight)
                    .ok_or(YamlError { mark, message: "unknown anchor".into() })?;
                // Counted before the copy is made, so a refused expansion never takes memory.
                builder.budget.spend(1 + weight, weight, mark)?;
                let node = builder.anchors[&id].node.clone();
                builder.push(node, 1 + weight, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                builder.budget.spend(1, 0, mark)?;
                builder.stack.push(Open { mark, anchor, weight: 1, kind: Kind::Seq(Vec::new()) });
            }
            Event::MappingStart(anchor, _) => {
                builder.budget.spend(1, 0, mark)?;
                let map = Kind::Map(OpenMap::default());
                builder.stack.push(Open { mark, anchor, weight: 1, kind: map });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(Open { mark, anchor, weight, kind }) = builder.stack.pop() else {
                    return Err(YamlError { mark, message: "unbalanced collection".into() });
                };
                let node = match kind {
                    Kind::Seq(items) => Node::Seq(items, mark),
                    Kind::Map(map) => {
                        // A block mapping starts at its first key, as in butane's yaml.v3 (the
                        // parser marks it at the first value); a flow mapping at its `{`.
                        let entries = map.finish()?;
                        let first_key = entries.first().map(|(_, key, _)| *key);
                        let start = first_key
                            .filter(|k| (k.line, k.col) < (mark.line, mark.col))
                            .unwrap_or(mark);
                        Node::Map(entries, start)
                    }
                };
                builder.push(node, weight, anchor)?;
            }
        }
    }
    Ok(builder.root.unwrap_or(Node::Map(Vec::new(), Mark { line: 1, col: 1 })))
}

/// yaml.v3's defence against alias bombs ("billion laughs": a few hundred bytes of nested aliases
/// that expand to billions of nodes). A decoder counts every node it visits and, separately, those
/// it visits only because an alias repeats them. Once past 1,000 nodes, more than 100 of them
/// through aliases, the aliased share may not exceed [`allowed_alias_ratio`]. Honest reuse (a few
/// anchors for repeated settings) stays far below; a bomb is refused within a few thousand nodes,
/// and the ratio bounds what a document of any size may expand to.
#[derive(Default)]
struct AliasBudget {
    visited: u64,
    through_aliases: u64,
}

impl AliasBudget {
    /// Counts `nodes` more visited, `aliased` of them through an alias. Counting an alias's whole
    /// expansion at once refuses exactly what counting node by node would: while one expansion
    /// goes on, the aliased share only grows and the allowed ratio only falls.
    fn spend(&mut self, nodes: u64, aliased: u64, mark: Mark) -> Result<(), YamlError> {
        self.visited += nodes;
        self.through_aliases += aliased;
        let share = self.through_aliases as f64 / self.visited as f64;
        if self.through_aliases > 100
            && self.visited > 1_000
            && share > allowed_alias_ratio(self.visited)
        {
            return Err(YamlError { mark, message: "document contains excessive aliasing".into() });
        }
        Ok(())
    }
}

/// The share of `visited` nodes that may come from aliases, as yaml.v3 allows it: 99% up to
/// 400,000 nodes (a small document may lean on aliases heavily), 10% from 4,000,000 (a large one
/// must be mostly its own text), falling linearly between.
fn allowed_alias_ratio(visited: u64) -> f64 {
    const LOW: u64 = 400_000;
    const HIGH: u64 = 4_000_000;
    match visited {
        ..=LOW => 0.99,
        HIGH.. => 0.10,
        _ => 0.99 - 0.89 * ((visited - LOW) as f64 / (HIGH - LOW) as f64),
    }
}

/// A collection being read: where it starts, its anchor, and how many nodes a decoder visits in
/// it (itself, its keys and values, and every alias's expansion), which is what an alias to it
/// costs.
struct Open {
    mark: Mark,
    anchor: usize,
    weight: u64,
    kind: Kind,
}

enum Kind {
    Seq(Vec<Node>),
    Map(OpenMap),
}

#[derive(Default)]
struct OpenMap {
    entries: Vec<(String, Mark, Node)>,
    /// Every key so far, so that a duplicate is found in constant time however long the mapping.
    keys: HashSet<String>,
    /// A key waiting for its value.
    pending: Option<Key>,
    /// The value of `<<`, merged in when the mapping ends (so that keys after it still win).
    merge: Option<Node>,
}

enum Key {
    Plain(String, Mark),
    /// A plain `<<`: yaml.v3's merge key. A quoted `"<<"` is an ordinary key.
    Merge,
}

impl OpenMap {
    fn add(&mut self, node: Node) -> Result<(), YamlError> {
        match self.pending.take() {
            Some(Key::Plain(key, mark)) => self.entries.push((key, mark, node)),
            Some(Key::Merge) => self.merge = Some(node),
            None => {
                let mark = node.mark();
                let Node::Scalar { text, plain, .. } = node else {
                    return Err(YamlError { mark, message: "mapping keys must be scalars".into() });
                };
                // `<<` counts too: yaml.v3 refuses two merge keys in one mapping as duplicates.
                if !self.keys.insert(text.clone()) {
                    let message = format!("mapping key {text:?} already defined");
                    return Err(YamlError { mark, message });
                }
                let merge = plain && text == "<<";
                self.pending = Some(if merge { Key::Merge } else { Key::Plain(text, mark) });
            }
        }
        Ok(())
    }

    /// The entries, with yaml.v3's merge applied: `<<` takes a mapping or a list of mappings
    /// (already merged themselves), and adds each of their keys the mapping does not have yet, so
    /// keys written in the mapping win and, in a list, earlier mappings win over later ones.
    fn finish(mut self) -> Result<Vec<(String, Mark, Node)>, YamlError> {
        let Some(merge) = self.merge else { return Ok(self.entries) };
        let want_map = |mark| YamlError {
            mark,
            message: "map merge requires map or sequence of maps as the value".into(),
        };
        let sources = match merge {
            Node::Seq(items, _) => items,
            map @ Node::Map(..) => vec![map],
            Node::Scalar { mark, .. } => return Err(want_map(mark)),
        };
        for source in sources {
            let Node::Map(entries, _) = source else { return Err(want_map(source.mark())) };
            for (key, mark, value) in entries {
                if self.keys.insert(key.clone()) {
                    self.entries.push((key, mark, value));
                }
            }
        }
        Ok(self.entries)
    }
}

/// A node as stored under its anchor, with what an alias to it costs ([`Open::weight`]).
struct Anchored {
    node: Node,
    weight: u64,
}

#[derive(Default)]
struct Builder {
    anchors: HashMap<usize, Anchored>,
    stack: Vec<Open>,
    root: Option<Node>,
    budget: AliasBudget,
}

impl Builder {
    /// Adds a finished node of `weight` visited nodes to the collection being read.
    fn push(&mut self, node: Node, weight: u64, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            // yaml-rust2 gives a redefined anchor a new id, so ids never clash.
            self.anchors.insert(anchor, Anchored { node: node.clone(), weight });
        }
        let Some(open) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        open.weight += weight;
        match &mut open.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(map) => map.add(node)?,
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

    /// The classic "billion laughs", `levels` deep: each line repeats the one before nine times.
    fn laughs(levels: usize) -> String {
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for pair in names[..levels].windows(2) {
            let aliases = vec![format!("*{}", pair[0]); 9].join(",");
            doc.push_str(&format!("{n}: &{n} [{aliases}]\n", n = pair[1]));
        }
        doc
    }

    #[test]
    fn alias_bombs_are_refused_like_yaml_v3() {
        // Six levels expand to half a million scalars: small enough to build without the budget,
        // far past yaml.v3's. The fourth line's fourth alias tips the ratio: 4,630 of 4,670 nodes.
        let refused = |doc: &str| match parse(doc) {
            Err(err) => err,
            Ok(_) => panic!("a bomb of {} bytes was expanded", doc.len()),
        };
        let err = refused(&laughs(6));
        assert_eq!(err.to_string(), "line 4 col 17: document contains excessive aliasing");
        // The nine-level original (342 bytes, 387 million scalars) is refused at the same place,
        // and `cargo xtask butane` says where.
        let bomb = laughs(9);
        assert!(bomb.len() < 400, "{}", bomb.len());
        let options = crate::Options::default();
        let Err(report) = crate::translate(&bomb, &options) else { panic!("expanded") };
        assert_eq!(report.to_string(), "$, line 4 col 17: document contains excessive aliasing");
        // Three levels stay under the ratio (990 of 1,024 nodes), as in yaml.v3.
        let fine = parse(&laughs(3)).unwrap();
        assert!(matches!(fine.get("c"), Some(Node::Seq(items, _)) if items.len() == 9));
    }

    #[test]
    fn allowed_alias_ratio_falls_like_yaml_v3() {
        assert_eq!(allowed_alias_ratio(1_000), 0.99);
        assert_eq!(allowed_alias_ratio(400_000), 0.99);
        assert!((allowed_alias_ratio(2_200_000) - 0.545).abs() < 1e-9);
        assert_eq!(allowed_alias_ratio(4_000_000), 0.10);
        assert_eq!(allowed_alias_ratio(u64::MAX), 0.10);
    }

    #[test]
    fn duplicate_keys_are_found_in_linear_time() {
        let keys = 100_000;
        let mut doc: String = (0..keys).map(|i| format!("k{i}: {i}\n")).collect();
        doc.push_str("k0: again\n");
        let started = std::time::Instant::now();
        let err = parse(&doc).unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            err.to_string(),
            format!("line {} col 1: mapping key \"k0\" already defined", keys + 1)
        );
        // Comparing every key with every other took 45 s; a hash set takes well under one.
        assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    }

    #[test]
    fn merge_keys_apply_like_yaml_v3() {
        let doc = parse(
            "base: &base {a: 1, b: 2}\n\
             other: &other {b: 3, c: 4}\n\
             before:\n  a: 0\n  <<: *base\n\
             many:\n  <<: [*base, *other]\n  c: 5\n\
             inline:\n  <<: {x: 1}\n\
             nested:\n  <<: {<<: *other, c: 6}\n\
             quoted:\n  \"<<\": *base\n",
        )
        .unwrap();
        let text =
            |map: &str, key: &str| doc.get(map).and_then(|m| m.get(key)).and_then(Node::text);
        // Explicit keys win, wherever they are written.
        assert_eq!((text("before", "a"), text("before", "b")), (Some("0"), Some("2")));
        // In a list of maps, earlier maps win.
        assert_eq!(
            (text("many", "a"), text("many", "b"), text("many", "c")),
            (Some("1"), Some("2"), Some("5"))
        );
        assert_eq!(text("inline", "x"), Some("1"));
        assert_eq!((text("nested", "b"), text("nested", "c")), (Some("3"), Some("6")));
        assert!(doc.get("before").unwrap().get("<<").is_none());
        // A quoted `<<` is an ordinary key.
        assert_eq!(
            doc.get("quoted").unwrap().get("<<").unwrap().get("a").unwrap().text(),
            Some("1")
        );

        for (bad, mark) in [("a:\n  <<: [1]\n", (2, 8)), ("a:\n  <<: x\n", (2, 7))] {
            let err = parse(bad).unwrap_err();
            assert_eq!(
                err.message, "map merge requires map or sequence of maps as the value",
                "{bad}"
            );
            assert_eq!((err.mark.line, err.mark.col), mark, "{bad}");
        }
        let err = parse("base: &b {a: 1}\nx:\n  <<: *b\n  <<: *b\n").unwrap_err();
        assert_eq!(err.to_string(), "line 4 col 3: mapping key \"<<\" already defined");
    }

    #[test]
    fn a_second_document_is_refused() {
        let err = parse("variant: fcos\npasswd:\n  users: []\n---\nversion: 1.6.0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4 col 1: a Butane config is one YAML document; a second starts at line 4"
        );
        let err = parse("a: 1\n...\nb: 2\n").unwrap_err();
        assert_eq!(err.message, "a Butane config is one YAML document; a second starts at line 3");
        // One document, marked or ended explicitly, is fine.
        assert!(parse("---\na: 1\n...\n").unwrap().get("a").is_some());
    }
}
