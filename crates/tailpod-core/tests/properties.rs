//! Properties of the parser and the merge over generated input. The same properties are
//! fuzzed by `fuzz/` (cargo fuzz); this runs a bounded number of cases in every test run. Also
//! the names' one rule: whatever becomes a hostname is a valid one.

use proptest::prelude::*;
use tailpod_core::merge::merge;
use tailpod_core::names::{ContainerName, Hostname, PodName};
use tailpod_core::unit::UnitFile;

/// Text made of the characters that matter to the grammar, so generated files hit headers,
/// comments, continuations, prepends, CR and missing newlines often.
fn unit_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"[\[\]=\\#;+ \r\nKVab{}.\t]{0,300}").expect("valid regex")
}

/// A well-formed file: LF line ends, a final newline, a line per element.
fn well_formed() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "\\[[A-Za-z]{1,8}\\]",
        "[A-Za-z+]{1,8}=[a-z =%/.-]{0,12}",
        "[#;][a-z ]{0,10}",
        Just(String::new()),
        "[A-Za-z]{1,6}=[a-z]{0,5} \\\\",
    ];
    prop::collection::vec(line, 0..30).prop_map(|lines| {
        // The last line ends any continuation: in a well-formed file none runs off the end.
        lines.iter().map(|l| format!("{l}\n")).chain(["end=1\n".to_owned()]).collect()
    })
}

fn entries(file: &UnitFile) -> Vec<(String, String, String)> {
    file.entries().map(|(s, e)| (s.to_owned(), e.key().to_owned(), e.value().to_owned())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_write_parse_is_stable(text in unit_text()) {
        let once = UnitFile::parse(&text);
        let written = once.to_string();
        let twice = UnitFile::parse(&written);
        prop_assert_eq!(entries(&once), entries(&twice));
        prop_assert_eq!(twice.to_string(), written);
    }

    #[test]
    fn well_formed_files_round_trip_exactly(text in well_formed()) {
        prop_assert_eq!(UnitFile::parse(&text).to_string(), text);
    }

    #[test]
    fn merge_keeps_every_spec_entry_in_order(spec in unit_text(), transform in unit_text()) {
        let spec = UnitFile::parse(&spec);
        let merged = merge(&spec, &UnitFile::parse(&transform));
        // Every spec entry is still there, in the same order (the merge only adds).
        let wanted = entries(&spec);
        let have = entries(&merged);
        let mut rest = have.iter();
        for entry in &wanted {
            prop_assert!(rest.any(|e| e == entry), "lost {:?}", entry);
        }
        // And the merged text means the same when read back.
        prop_assert_eq!(entries(&UnitFile::parse(&merged.to_string())), have);
    }

    #[test]
    fn container_and_pod_names_are_hostnames(name in "[a-z0-9_.-]{0,40}") {
        if name.parse::<ContainerName>().is_ok() || name.parse::<PodName>().is_ok() {
            prop_assert!(name.parse::<Hostname>().is_ok(), "{name}");
        }
    }

    #[test]
    fn derived_hostnames_are_valid_lowercase_and_stable(name in "[A-Za-z0-9_. é-]{0,80}") {
        match Hostname::derive_from(&name) {
            Ok(hostname) => {
                let text = hostname.as_str();
                prop_assert_eq!(text, text.to_ascii_lowercase());
                prop_assert_eq!(Hostname::derive_from(text), Ok(hostname.clone()));
            }
            Err(_) => prop_assert!(!name.chars().any(|c| c.is_ascii_alphanumeric()), "{name}"),
        }
    }
}
