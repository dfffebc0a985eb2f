//! A lossless model of systemd unit files, as Quadlet reads them.
//!
//! The parser follows systemd.syntax(7): `[Section]` headers, `Key=Value` entries, `#` and `;`
//! comments, and lines ending in a backslash continued onto the next one (a comment inside a
//! continuation is skipped, as systemd does). Names are case-sensitive and every entry is kept, in
//! order, so multi-value keys (`ExecStartPre`, `Environment`, `Volume`, ...) and duplicate sections
//! survive.
//!
//! Parsing never fails: every physical line is kept, and lines systemd would reject are kept as
//! [`Line::Invalid`] and reported by [`UnitFile::problems`], so a caller decides what is fatal.
//!
//! Writing is exact: parsed lines are written back as they were read. The only normalisations are
//! that CRLF line ends become LF (any run of CRs before a line end is dropped) and a missing final newline is added, so a well-formed file
//! (LF line ends, final newline) round-trips to the same bytes. A continuation that runs off the
//! end of the file is ended with an empty line when written, so nothing added after it joins it.
//! Lines created by the program (for example by [`crate::merge`]) are written as `Key=Value`.

use std::fmt;

/// A parsed unit file: lines before the first header, then the sections in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFile {
    /// Lines before the first section header (usually comments).
    pub preamble: Vec<Line>,
    /// Sections in file order; a name may appear more than once.
    pub sections: Vec<Section>,
}

/// One `[Name]` section and the lines up to the next header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    name: String,
    /// The header as written (`[Name]` with any surrounding whitespace), if parsed.
    raw_header: Option<String>,
    /// 1-based line of the header in the source; 0 for a section built in code.
    line: usize,
    /// Entries, comments and blank lines of the section, in order.
    pub lines: Vec<Line>,
}

/// One logical line of a unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A `Key=Value` assignment, possibly continued over several physical lines.
    Entry(Entry),
    /// A `#` or `;` comment, kept verbatim.
    Comment(String),
    /// An empty or whitespace-only line, kept verbatim.
    Blank(String),
    /// A line systemd would reject (no `=`, or an empty key); kept so nothing is lost.
    Invalid { text: String, line: usize },
}

/// A `Key=Value` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    key: String,
    value: String,
    /// The physical lines as read (joined with `\n`, no final newline), if parsed.
    raw: Option<String>,
    line: usize,
    /// The continuation ran off the end of the file: nothing ended it.
    dangling: bool,
}

/// Something in a unit file that systemd would not accept, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl Problem {
    /// `FILE:LINE: message`, the form editors and CI logs link to.
    pub fn located(&self, file: impl fmt::Display) -> String {
        format!("{file}:{}: {}", self.line, self.message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl Entry {
    /// A new entry, written as `key=value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Entry {
        Entry { key: key.into(), value: value.into(), raw: None, line: 0, dangling: false }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The logical value: continuation lines joined as systemd joins them, outer whitespace
    /// trimmed. Quotes and specifiers (`%N`) are left alone; they mean different things to
    /// different keys.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// 1-based line of the entry's first physical line; 0 for an entry built in code.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The same entry under another key, keeping its original layout (continuations, spacing)
    /// where it was parsed. Used to strip the `+` of a transform's prepend lines.
    pub fn renamed(&self, key: &str) -> Entry {
        let raw = self.raw.as_ref().and_then(|raw| {
            let indent = raw.len() - raw.trim_start().len();
            raw[indent..]
                .strip_prefix(self.key.as_str())
                .map(|rest| format!("{}{key}{rest}", &raw[..indent]))
        });
        Entry { key: key.to_owned(), raw, ..self.clone() }
    }
}

impl Section {
    /// A new, empty section.
    pub fn new(name: impl Into<String>) -> Section {
        Section { name: name.into(), raw_header: None, line: 0, lines: Vec::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// 1-based line of the header; 0 for a section built in code.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The entries of this section, in order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry(entry) => Some(entry),
            _ => None,
        })
    }

    /// Whether the section has at least one entry for `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.entries().any(|e| e.key == key)
    }

    /// Appends an entry after the section's last entry, so that comments and blank lines that
    /// close the section (often the heading of the next one) stay where they are.
    pub fn push_entry(&mut self, entry: Entry) {
        let at = self.end_of_entries();
        self.lines.insert(at, Line::Entry(entry));
    }

    /// Index just past the last entry; 0 when there is none.
    pub(crate) fn end_of_entries(&self) -> usize {
        self.lines.iter().rposition(|l| matches!(l, Line::Entry(_))).map_or(0, |i| i + 1)
    }

    fn header_text(&self) -> String {
        self.raw_header.clone().unwrap_or_else(|| format!("[{}]", self.name))
    }
}

impl Line {
    /// Whether the line is empty or whitespace only.
    pub fn is_blank(&self) -> bool {
        matches!(self, Line::Blank(_))
    }

    fn write(&self, out: &mut String) {
        match self {
            Line::Entry(entry) => match &entry.raw {
                Some(raw) => {
                    out.push_str(raw);
                    if entry.dangling {
                        // End the continuation, or whatever is written next would join it.
                        out.push('\n');
                    }
                }
                None => {
                    out.push_str(&entry.key);
                    out.push('=');
                    out.push_str(&entry.value);
                    if continues(&entry.value) {
                        // systemd trims the space; without it the line would continue.
                        out.push(' ');
                    }
                }
            },
            Line::Comment(text) | Line::Blank(text) | Line::Invalid { text, .. } => {
                out.push_str(text)
            }
        }
        out.push('\n');
    }
}

fn is_comment(trimmed: &str) -> bool {
    trimmed.starts_with('#') || trimmed.starts_with(';')
}

/// A line continues when it ends in an unescaped backslash: an odd run of them, as systemd
/// counts (`\\` at the end is an escaped backslash, not a continuation). Comments never continue.
fn continues(text: &str) -> bool {
    text.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
}

impl UnitFile {
    /// Parses unit-file text. Never fails; see [`UnitFile::problems`].
    pub fn parse(text: &str) -> UnitFile {
        let mut file = UnitFile::default();
        if text.is_empty() {
            return file;
        }
        let mut physical = text.split('\n').enumerate().peekable();
        // `split` yields one empty piece after a final newline; it is not a line.
        let ends_with_newline = text.ends_with('\n');
        let total = text.split('\n').count() - usize::from(ends_with_newline);

        while let Some((index, piece)) = physical.next() {
            if index >= total {
                break;
            }
            let line_no = index + 1;
            let line = piece.trim_end_matches('\r');
            let trimmed = line.trim();

            let parsed = if trimmed.is_empty() {
                Line::Blank(line.to_owned())
            } else if is_comment(trimmed) {
                Line::Comment(line.to_owned())
            } else if trimmed.starts_with('[') && trimmed.ends_with(']') && trimmed.len() >= 2 {
                file.sections.push(Section {
                    name: trimmed[1..trimmed.len() - 1].to_owned(),
                    raw_header: Some(line.to_owned()),
                    line: line_no,
                    lines: Vec::new(),
                });
                continue;
            } else {
                // Gather the physical lines of a continued logical line: the backslash becomes a
                // space and comment lines inside the continuation are skipped, as in systemd.
                let mut raw = line.to_owned();
                let mut logical = String::new();
                let mut current = line;
                let mut dangling = false;
                while continues(current) {
                    logical.push_str(&current[..current.len() - 1]);
                    logical.push(' ');
                    current = "";
                    dangling = true;
                    while let Some((_, next)) = physical.next_if(|(i, _)| *i < total) {
                        let next = next.trim_end_matches('\r');
                        raw.push('\n');
                        raw.push_str(next);
                        if !is_comment(next.trim_start()) {
                            current = next;
                            dangling = false;
                            break;
                        }
                    }
                }
                logical.push_str(current);
                match logical.split_once('=') {
                    Some((key, value)) if !key.trim().is_empty() => Line::Entry(Entry {
                        key: key.trim().to_owned(),
                        value: value.trim().to_owned(),
                        raw: Some(raw),
                        line: line_no,
                        dangling,
                    }),
                    _ => Line::Invalid { text: raw, line: line_no },
                }
            };
            match file.sections.last_mut() {
                Some(section) => section.lines.push(parsed),
                None => file.preamble.push(parsed),
            }
        }
        file
    }

    /// Every entry with its section's name, in file order: what systemd reads.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.sections.iter().flat_map(|s| s.entries().map(move |e| (s.name(), e)))
    }

    /// Sections named `name`, in order (a name may appear more than once).
    pub fn sections_named<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s Section> {
        self.sections.iter().filter(move |s| s.name == name)
    }

    /// Whether there is at least one section called `name`.
    pub fn has_section(&self, name: &str) -> bool {
        self.sections_named(name).next().is_some()
    }

    /// All values of `key` in every section called `section`, in file order.
    pub fn values<'s>(&'s self, section: &str, key: &str) -> impl Iterator<Item = &'s str> {
        self.sections_named(section)
            .flat_map(|s| s.entries())
            .filter(move |e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// The value systemd and Quadlet use for a single-valued key: the last one.
    pub fn last_value(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last()
    }

    /// The value systemd gives `variable` through `Environment=` in `section`: the last
    /// assignment wins (see [`environment_assignments`]).
    pub fn environment(&self, section: &str, variable: &str) -> Option<String> {
        self.values(section, "Environment")
            .flat_map(environment_assignments)
            .filter(|(name, _)| name == variable)
            .map(|(_, value)| value)
            .last()
    }

    /// Lines systemd would reject: entries outside any section, lines without `=`, empty
    /// section names and a continuation that runs off the end of the file.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for line in &self.preamble {
            if let Line::Entry(entry) = line {
                problems.push(Problem {
                    line: entry.line,
                    message: format!("{}= is outside any [Section]", entry.key),
                });
            }
        }
        for section in &self.sections {
            if section.name.trim().is_empty() {
                problems.push(Problem { line: section.line, message: "empty section name".into() });
            }
        }
        let all_lines = self.preamble.iter().chain(self.sections.iter().flat_map(|s| &s.lines));
        for line in all_lines {
            match line {
                Line::Invalid { text, line } => problems.push(Problem {
                    line: *line,
                    message: format!("not a Key=Value line: {:?}", first_line(text)),
                }),
                Line::Entry(entry) if entry.dangling => problems.push(Problem {
                    line: entry.line,
                    message: format!("{}= continues past the end of the file", entry.key),
                }),
                _ => {}
            }
        }
        problems.sort_by_key(|p| p.line);
        problems
    }
}

fn first_line(text: &str) -> &str {
    text.split('\n').next().unwrap_or(text)
}

/// The assignments of one `Environment=` value, as systemd splits it: separated by spaces, each
/// may be quoted whole (`"A=b c"`), `\\` escapes inside quotes. Words without `=` are dropped,
/// as systemd drops them with a warning.
pub fn environment_assignments(value: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => word.extend(chars.next()),
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl fmt::Display for UnitFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for line in &self.preamble {
            line.write(&mut out);
        }
        for section in &self.sections {
            out.push_str(&section.header_text());
            out.push('\n');
            for line in &section.lines {
                line.write(&mut out);
            }
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_split_as_systemd_splits_them() {
        let pairs = |v: &str| environment_assignments(v);
        assert_eq!(pairs("A=1 B=2"), [("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert_eq!(
            pairs(r#""A=x y" 'B=it\'s' junk C="#),
            [("A".into(), "x y".into()), ("B".into(), "it's".into()), ("C".into(), String::new())]
        );
        let unit = UnitFile::parse(
            "[Service]\nEnvironment=TS_HOSTNAME=a X=1\nEnvironment=\"TS_HOSTNAME=b\"\n",
        );
        assert_eq!(unit.environment("Service", "TS_HOSTNAME").as_deref(), Some("b"));
        assert_eq!(unit.environment("Service", "Y"), None);
    }

    #[test]
    fn well_formed_input_round_trips_exactly() {
        let text = "# head\n\n[Unit]\nDescription=x\n\n[Service]\nExecStartPre=a\nExecStartPre=b\n  ; note\nEnvironment=A=1 \\\n  B=2\n";
        assert_eq!(UnitFile::parse(text).to_string(), text);
    }

    #[test]
    fn continuation_joins_like_systemd() {
        let file = UnitFile::parse(
            "[S]\nExec=/bin/app \\\n# skipped\n    --flag=1 \\\n    positional\nNext=1\n",
        );
        let values: Vec<_> = file.sections[0].entries().map(|e| (e.key(), e.value())).collect();
        assert_eq!(values, [("Exec", "/bin/app      --flag=1      positional"), ("Next", "1")]);
    }

    #[test]
    fn continuation_follows_backslash_parity() {
        let file = UnitFile::parse("[S]\nA=x\\\\\nB=y \\\\\\\nz\n");
        let values: Vec<_> = file.sections[0].entries().map(|e| (e.key(), e.value())).collect();
        assert_eq!(values, [("A", "x\\\\"), ("B", "y \\\\ z")]);
        // Found by cargo fuzz: a value ending in a lone backslash (the line had trailing
        // whitespace) must not continue when written from the model.
        let mut built = UnitFile::parse("[S]\n");
        built.sections[0].push_entry(Entry::new("K", "a\\"));
        built.sections[0].push_entry(Entry::new("L", "b"));
        let reread = UnitFile::parse(&built.to_string());
        let keys: Vec<_> = reread.sections[0].entries().map(|e| (e.key(), e.value())).collect();
        assert_eq!(keys, [("K", "a\\"), ("L", "b")]);
    }

    #[test]
    fn crlf_and_missing_final_newline_are_normalised() {
        let file = UnitFile::parse("[A]\r\nK = v \r\n[B]\r\nX=1");
        assert_eq!(file.to_string(), "[A]\nK = v \n[B]\nX=1\n");
        assert_eq!(file.last_value("A", "K"), Some("v"));
        // Found by proptest: a run of CRs must not survive as a blank line's text.
        assert_eq!(UnitFile::parse("\r\r\n").to_string(), "\n");
        // Found by cargo fuzz: a continuation running off the end would swallow what a merge
        // appends after it, so writing ends it.
        let mut file = UnitFile::parse("[A]\nK=a \\\n# c");
        file.sections[0].lines.push(Line::Entry(Entry::new("X", "1")));
        let reread = UnitFile::parse(&file.to_string());
        let keys: Vec<_> = reread.sections[0].entries().map(|e| e.key()).collect();
        assert_eq!(keys, ["K", "X"]);
    }

    #[test]
    fn problems_name_the_line() {
        let file = UnitFile::parse("Stray=1\n[A]\nno equals\n=empty key\nK=v \\");
        let lines: Vec<_> = file.problems().iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 3, 4, 5]);
    }

    #[test]
    fn renamed_keeps_layout() {
        let file = UnitFile::parse("[S]\n  +ExecStartPre = a \\\n  b\n");
        let entry = file.sections[0].entries().next().unwrap().renamed("ExecStartPre");
        let mut out = String::new();
        Line::Entry(entry).write(&mut out);
        assert_eq!(out, "  ExecStartPre = a \\\n  b\n");
    }

    #[test]
    fn push_entry_goes_after_the_last_entry() {
        let mut file = UnitFile::parse("[A]\nK=1\n\n# about B\n[B]\n");
        file.sections[0].push_entry(Entry::new("L", "2"));
        assert_eq!(file.to_string(), "[A]\nK=1\nL=2\n\n# about B\n[B]\n");
    }
}
