//! The transform merge engine: how a directory transform shapes a container spec.
//!
//! A transform is a unit file whose lines mean:
//!
//! * `Key=Value` is a **default**: added only when the spec's section has no entry for `Key`.
//!   When it is added, *every* default line of that key in the transform is added, so a transform
//!   can default a multi-value key (`Volume=`, `Environment=`) to several values.
//! * `+Key=Value` is a **prepend**: added before the spec's entries of that section, in
//!   transform order, whether or not the spec has the key. A prepend also counts as "the spec has
//!   the key" for the defaults of the same transform.
//! * A section only the transform has is appended after the spec's sections, in transform order,
//!   with its comments and blank lines (and the `+` stripped from its keys).
//!
//! Same-named sections are one logical section on both sides: a transform's repeated `[Service]`
//! is merged as one, and a spec's repeated `[Container]` gets the prepends once (in its first
//! occurrence) and the defaults once (after the last entry of its last occurrence).
//!
//! Layout: prepends go right after the section header; defaults go after the section's last
//! entry, so comments that close a section stay in place; comments of a transform section that is
//! merged into a spec section are dropped (they describe the transform, not the result); the
//! transform's leading comment stays with the transform's first section, and is dropped with that
//! section's other comments when that section is merged into the spec's. An appended section is
//! separated from what precedes it by one blank line.
//!
//! Transforms chain: [`apply_transforms`] merges `_base` first and then the directory transform,
//! so a later transform's prepends land before an earlier one's, and an earlier transform's
//! default wins over a later one's.

use crate::unit::{Entry, Line, Section, UnitFile};

/// The placeholder replaced by the container's name in the rendered text.
pub const NAME_PLACEHOLDER: &str = "{{.Name}}";
/// The placeholder replaced by the host's name (one DNS label), for what differs per host of a
/// fleet (a node name such as `exporter-{{.Host}}`).
pub const HOST_PLACEHOLDER: &str = "{{.Host}}";

/// Merges one transform into a spec; see the module docs for the rules.
pub fn merge(spec: &UnitFile, transform: &UnitFile) -> UnitFile {
    let mut out = spec.clone();
    for logical in logical_sections(transform) {
        let first_in_spec = out.sections.iter().position(|s| s.name() == logical.name);
        match first_in_spec {
            Some(first) => merge_into(&mut out, first, &logical),
            None => append(&mut out, &logical),
        }
    }
    out
}

/// Merges transforms in order (`_base` first, then the directory's).
pub fn apply_transforms<'a>(
    spec: &UnitFile,
    transforms: impl IntoIterator<Item = &'a UnitFile>,
) -> UnitFile {
    transforms.into_iter().fold(spec.clone(), |merged, transform| merge(&merged, transform))
}

/// Replaces every `{{.Name}}` with `name`. A literal replacement: no other template syntax exists.
pub fn substitute_name(text: &str, name: &str) -> String {
    text.replace(NAME_PLACEHOLDER, name)
}

/// [`substitute_name`], and every `{{.Host}}` replaced with `host`.
pub fn substitute(text: &str, name: &str, host: &str) -> String {
    substitute_name(text, name).replace(HOST_PLACEHOLDER, host)
}

/// A transform section with every same-named section folded into it.
struct LogicalSection<'a> {
    name: &'a str,
    /// The transform's preamble, carried by its first section.
    leading: &'a [Line],
    first: &'a Section,
    lines: Vec<&'a Line>,
}

fn logical_sections(transform: &UnitFile) -> Vec<LogicalSection<'_>> {
    let mut logical: Vec<LogicalSection<'_>> = Vec::new();
    for section in &transform.sections {
        match logical.iter_mut().find(|l| l.name == section.name()) {
            Some(existing) => {
                // The blank lines that separated the two headers separate nothing once folded.
                while existing.lines.last().is_some_and(|l| l.is_blank()) {
                    existing.lines.pop();
                }
                existing.lines.extend(&section.lines);
            }
            None => logical.push(LogicalSection {
                name: section.name(),
                leading: if logical.is_empty() { &transform.preamble } else { &[] },
                first: section,
                lines: section.lines.iter().collect(),
            }),
        }
    }
    logical
}

fn transform_entries<'a>(lines: &[&'a Line]) -> impl Iterator<Item = &'a Entry> {
    lines.iter().filter_map(|line| match line {
        Line::Entry(entry) => Some(entry),
        _ => None,
    })
}

/// The key a `+Key=` line prepends to. Without a `+` or a key starting with a letter or digit
/// (`+=`, `+#x=`) it is not a prepend: stripping the `+` would turn it into a comment or garbage.
fn prepend_key(entry: &Entry) -> Option<&str> {
    entry
        .key()
        .strip_prefix('+')
        .map(str::trim_start)
        .filter(|key| key.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

fn merge_into(out: &mut UnitFile, first: usize, logical: &LogicalSection<'_>) {
    let (prepends, defaults): (Vec<&Entry>, Vec<&Entry>) =
        transform_entries(&logical.lines).partition(|e| prepend_key(e).is_some());
    let prepends: Vec<Entry> =
        prepends.into_iter().filter_map(|e| prepend_key(e).map(|key| e.renamed(key))).collect();

    // Decide the defaults against the spec as it stands plus this transform's prepends.
    let spec_has = |key: &str| {
        prepends.iter().any(|p| p.key() == key)
            || out.sections_named(logical.name).any(|s| s.has_key(key))
    };
    let added: Vec<Entry> = defaults.into_iter().filter(|d| !spec_has(d.key())).cloned().collect();

    let first_section = &mut out.sections[first];
    first_section.lines.splice(0..0, prepends.into_iter().map(Line::Entry));

    if !added.is_empty() {
        let last = out.sections.iter().rposition(|s| s.name() == logical.name).unwrap_or(first);
        let section = &mut out.sections[last];
        let at = section.end_of_entries();
        section.lines.splice(at..at, added.into_iter().map(Line::Entry));
    }
}

fn append(out: &mut UnitFile, logical: &LogicalSection<'_>) {
    let has_sections = !out.sections.is_empty();
    let tail = match out.sections.last_mut() {
        Some(section) => &mut section.lines,
        None => &mut out.preamble,
    };
    if (has_sections || !tail.is_empty()) && !tail.last().is_some_and(Line::is_blank) {
        tail.push(Line::Blank(String::new()));
    }
    tail.extend(logical.leading.iter().cloned());

    let mut section = logical.first.clone();
    section.lines = logical
        .lines
        .iter()
        .map(|line| match line {
            Line::Entry(entry) => match prepend_key(entry) {
                Some(key) => Line::Entry(entry.renamed(key)),
                None => Line::Entry(entry.clone()),
            },
            other => (*other).clone(),
        })
        .collect();
    out.sections.push(section);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(spec: &str, transforms: &[&str]) -> String {
        let transforms: Vec<UnitFile> = transforms.iter().map(|t| UnitFile::parse(t)).collect();
        apply_transforms(&UnitFile::parse(spec), &transforms).to_string()
    }

    #[test]
    fn every_repeated_default_is_added() {
        assert_eq!(
            merged("[Container]\nImage=x\n", &["[Container]\nVolume=/a:/a\nVolume=/b:/b\n"]),
            "[Container]\nImage=x\nVolume=/a:/a\nVolume=/b:/b\n"
        );
    }

    #[test]
    fn repeated_transform_sections_merge_as_one() {
        let base = "[Service]\n+ExecStartPre=/bin/a\n\n[Service]\n+ExecStartPre=/bin/b\nEnvironment=X=1\nEnvironment=Y=2\n";
        assert_eq!(
            merged("[Container]\nImage=x\n\n[Service]\nRestart=always\n", &[base]),
            "[Container]\nImage=x\n\n[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nRestart=always\nEnvironment=X=1\nEnvironment=Y=2\n"
        );
        assert_eq!(
            merged("[Container]\nImage=x\n", &[base]),
            "[Container]\nImage=x\n\n[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nEnvironment=X=1\nEnvironment=Y=2\n"
        );
    }

    #[test]
    fn repeated_spec_sections_get_prepends_and_defaults_once() {
        assert_eq!(
            merged(
                "[Container]\nImage=x\n[Container]\nLabel=a=b\n",
                &["[Container]\n+Volume=/p:/p\nNetwork=n\nLabel=default\n"]
            ),
            "[Container]\nVolume=/p:/p\nImage=x\n[Container]\nLabel=a=b\nNetwork=n\n"
        );
    }

    #[test]
    fn transform_preamble_stays_with_its_first_section() {
        assert_eq!(
            merged(
                "[Container]\nImage=x\n",
                &["# managed by tailpod\n\n[Service]\nRestart=always\n"]
            ),
            "[Container]\nImage=x\n\n# managed by tailpod\n\n[Service]\nRestart=always\n"
        );
        // Merged into a spec section, it goes with that section's other comments.
        assert_eq!(
            merged("[Container]\nImage=x\n", &["# managed\n[Container]\n# why\nNetwork=n\n"]),
            "[Container]\nImage=x\nNetwork=n\n"
        );
    }

    #[test]
    fn defaults_go_after_the_last_entry_not_after_closing_comments() {
        assert_eq!(
            merged(
                "[Container]\nImage=x\n\n# the service\n[Service]\nRestart=always\n",
                &["[Container]\nNetwork=n\n"]
            ),
            "[Container]\nImage=x\nNetwork=n\n\n# the service\n[Service]\nRestart=always\n"
        );
    }

    #[test]
    fn continuation_lines_survive_a_merge() {
        assert_eq!(
            merged(
                "[Container]\nImage=x\nExec=/bin/app \\\n    --flag=1 \\\n    positional\n",
                &["[Container]\n+PodmanArgs=--a \\\n  --b\nNetwork=slirp4netns\n"]
            ),
            "[Container]\nPodmanArgs=--a \\\n  --b\nImage=x\nExec=/bin/app \\\n    --flag=1 \\\n    positional\nNetwork=slirp4netns\n"
        );
    }

    #[test]
    fn plus_lines_without_a_proper_key_are_not_prepends() {
        // Found by proptest: stripping these `+` would leave an empty key or a comment.
        assert_eq!(
            merged("[S]\nK=v\n", &["[S]\n+=a\n+#x=b\n+ Key=c\n"]),
            "[S]\nKey=c\nK=v\n+=a\n+#x=b\n"
        );
    }

    #[test]
    fn name_substitution_is_literal() {
        assert_eq!(substitute_name("A={{.Name}}-x {{ .Name }}", "web"), "A=web-x {{ .Name }}");
    }
}
