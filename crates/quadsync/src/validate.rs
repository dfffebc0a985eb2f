//! Checking deployments with podman's own Quadlet generator: only what changed, in as few runs
//! as give the same answers.
//!
//! A generator run is a process and about 2 ms of CPU; a host with 100 containers syncing every
//! two minutes must not pay that when nothing changed. So a deployment whose Quadlet files this
//! very generator accepted before is not checked again: [`ValidatedRecord`] keeps, per
//! deployment, a [`fingerprint`] of the generator's identity and the files. A podman upgrade
//! changes the identity, so everything is checked again once.
//!
//! What changed is checked in one run, each deployment in a directory of its own. One run
//! answers for many only when staging them together changes nothing the generator sees
//! ([`batches`]). When a run refuses, each of its deployments is run alone, so every message is
//! attributed to the files and user it belongs to.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use tailpod_core::names::UserName;

use crate::discover::{Desired, UnitDir};
use crate::system::QuadletGenerator;

/// One deployment's Quadlet files, as its user's generator would read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuadletSet {
    pub user: UserName,
    /// File name and text.
    pub files: Vec<(String, String)>,
}

/// Per deployment, the fingerprint of what the generator last accepted (`State::validated`).
pub type ValidatedRecord = BTreeMap<UserName, String>;

/// The Quadlet file extensions podman 5 reads; a value naming one of these is a reference.
const QUADLET_EXTENSIONS: &[&str] =
    &[".container", ".pod", ".volume", ".network", ".build", ".image", ".kube"];

/// What the generator's answer for `files` depends on: the generator itself and every byte of
/// every file, each framed by its length so no two sets run together.
pub fn fingerprint<'a>(
    generator: &str,
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut hash = Sha256::new();
    for part in std::iter::once(generator).chain(files.into_iter().flat_map(|(n, t)| [n, t])) {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    crate::state::hex(&hash.finalize())
}

/// The Quadlet file names a set's values mention (`Pod=db.pod`, `Volume=data.volume:/d`).
fn references(set: &QuadletSet) -> BTreeSet<&str> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || "._-@%".contains(c);
    set.files
        .iter()
        .flat_map(|(_, text)| text.split(|c: char| !is_name_char(c)))
        .filter(|token| QUADLET_EXTENSIONS.iter().any(|ext| token.ends_with(ext)))
        .collect()
}

/// Groups of `sets` (indices) whose one run means the same as one run each: no file name twice
/// in a group (the generator reads only the first of a name) and no set mentioning a file of
/// another in its group (a reference that would resolve only because they were staged
/// together, never on the host, where each user has only their own).
pub fn batches(sets: &[QuadletSet]) -> Vec<Vec<usize>> {
    struct Batch<'a> {
        members: Vec<usize>,
        names: BTreeSet<&'a str>,
        references: BTreeSet<&'a str>,
    }
    let mut out: Vec<Batch<'_>> = Vec::new();
    for (index, set) in sets.iter().enumerate() {
        let names: BTreeSet<&str> = set.files.iter().map(|(n, _)| n.as_str()).collect();
        let mentioned = references(set);
        let fits = |b: &Batch<'_>| {
            b.names.is_disjoint(&names)
                && b.names.is_disjoint(&mentioned)
                && b.references.is_disjoint(&names)
        };
        match out.iter_mut().find(|b| fits(b)) {
            Some(batch) => {
                batch.members.push(index);
                batch.names.extend(names);
                batch.references.extend(mentioned);
            }
            None => out.push(Batch { members: vec![index], names, references: mentioned }),
        }
    }
    out.into_iter().map(|b| b.members).collect()
}

/// Checks every deployment of `desired` whose fingerprint `record` does not hold, and records
/// the ones the generator accepts (also when others fail). Forgets deployments that are gone.
/// Without a generator, nothing runs and the record is left as it is. Errors name the repo
/// files of the refused deployment and carry the generator's own words.
pub fn validate(
    desired: &Desired,
    system: &dyn QuadletGenerator,
    record: &mut ValidatedRecord,
) -> Result<(), Vec<String>> {
    let Some(generator) = system.generator() else {
        if !desired.is_empty() {
            log::info!(
                "podman's Quadlet generator is not installed: validated with quadsync's own checks only"
            );
        }
        return Ok(());
    };
    record.retain(|user, _| desired.contains_key(user));
    let mut changed = Vec::new();
    let mut fingerprints = Vec::new();
    for deployment in desired.values() {
        let quadlets = || {
            let files = deployment.files.iter().filter(|(_, f)| f.dir == UnitDir::Quadlet);
            files.map(|(name, f)| (name.as_str(), f.text.as_str()))
        };
        let print = fingerprint(&generator, quadlets());
        // Copied only to be staged: most syncs change nothing.
        if record.get(&deployment.user) != Some(&print) {
            let files = quadlets().map(|(n, t)| (n.to_owned(), t.to_owned())).collect();
            changed.push(QuadletSet { user: deployment.user.clone(), files });
            fingerprints.push(print);
        }
    }
    if changed.is_empty() {
        log::debug!("all {} deployment(s) validated before", desired.len());
        return Ok(());
    }
    let mut refused = Vec::new();
    for batch in batches(&changed) {
        let sets: Vec<QuadletSet> = batch.iter().map(|&i| changed[i].clone()).collect();
        let outcomes: Vec<(usize, Result<(), String>)> = match system.run_generator(&sets) {
            Ok(()) => batch.iter().map(|&i| (i, Ok(()))).collect(),
            Err(_) if batch.len() > 1 => batch
                .iter()
                .map(|&i| (i, system.run_generator(std::slice::from_ref(&changed[i]))))
                .collect(),
            Err(message) => vec![(batch[0], Err(message))],
        };
        for (i, outcome) in outcomes {
            let user = &changed[i].user;
            match outcome {
                Ok(()) => {
                    record.insert(user.clone(), fingerprints[i].clone());
                }
                Err(message) => {
                    record.remove(user);
                    let sources = desired[user].sources.join(", ");
                    refused.push(format!("{sources}: podman's generator refused it: {message}"));
                }
            }
        }
    }
    log::info!(
        "validated {} changed deployment(s) of {} with podman's Quadlet generator",
        changed.len(),
        desired.len()
    );
    if refused.is_empty() { Ok(()) } else { Err(refused) }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::discover::{Deployment, UserFile};

    /// A generator that refuses any file containing "Bogus" and logs the users of each run.
    struct Counting {
        identity: RefCell<String>,
        runs: RefCell<Vec<Vec<String>>>,
    }

    impl Counting {
        fn new() -> Counting {
            Counting { identity: RefCell::new("podman 5.4".into()), runs: RefCell::default() }
        }
        fn take_runs(&self) -> Vec<Vec<String>> {
            self.runs.take()
        }
    }

    impl QuadletGenerator for Counting {
        fn generator(&self) -> Option<String> {
            Some(self.identity.borrow().clone())
        }
        fn run_generator(&self, sets: &[QuadletSet]) -> Result<(), String> {
            self.runs.borrow_mut().push(sets.iter().map(|s| s.user.to_string()).collect());
            let bad: Vec<&str> = sets
                .iter()
                .flat_map(|s| &s.files)
                .filter(|(_, text)| text.contains("Bogus"))
                .map(|(name, _)| name.as_str())
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!("unsupported key in {}", bad.join(" ")))
            }
        }
    }

    fn desired(specs: &[(&str, &str)]) -> Desired {
        specs
            .iter()
            .map(|(user, text)| {
                let file = UserFile { dir: UnitDir::Quadlet, text: (*text).into() };
                let name: UserName = user.parse().unwrap();
                let deployment = Deployment {
                    files: BTreeMap::from([(format!("{user}.container"), file)]),
                    sources: vec![format!("{user}.container")],
                    ..Deployment::new(name.clone(), format!("{user}.service"))
                };
                (name, deployment)
            })
            .collect()
    }

    #[test]
    fn only_what_changed_is_checked_and_in_one_run() {
        let generator = Counting::new();
        let mut record = ValidatedRecord::new();
        let v1 = desired(&[
            ("a", "[Container]\nImage=a\n"),
            ("b", "[Container]\nImage=b\n"),
            ("c", "[Container]\nImage=c\n"),
        ]);
        validate(&v1, &generator, &mut record).unwrap();
        assert_eq!(generator.take_runs(), [["a", "b", "c"]]);
        // Nothing changed: no run at all.
        validate(&v1, &generator, &mut record).unwrap();
        assert!(generator.take_runs().is_empty());
        // One changed, one gone: that one only, and the gone one forgotten.
        let v2 = desired(&[("a", "[Container]\nImage=a\n"), ("b", "[Container]\nImage=b2\n")]);
        validate(&v2, &generator, &mut record).unwrap();
        assert_eq!(generator.take_runs(), [["b"]]);
        assert_eq!(record.keys().collect::<Vec<_>>(), ["a", "b"]);
        // podman upgraded: everything again, once.
        *generator.identity.borrow_mut() = "podman 5.5".into();
        validate(&v2, &generator, &mut record).unwrap();
        assert_eq!(generator.take_runs(), [["a", "b"]]);
    }

    #[test]
    fn a_refusal_is_attributed_and_the_others_are_still_recorded() {
        let generator = Counting::new();
        let mut record = ValidatedRecord::new();
        let specs = desired(&[
            ("a", "[Container]\nImage=a\n"),
            ("b", "[Container]\nBogus=1\n"),
            ("c", "[Container]\nImage=c\n"),
        ]);
        let errors = validate(&specs, &generator, &mut record).unwrap_err();
        assert_eq!(
            errors,
            ["b.container: podman's generator refused it: unsupported key in b.container"]
        );
        // One run for all, then one each to say whose it is.
        assert_eq!(generator.take_runs(), [vec!["a", "b", "c"], vec!["a"], vec!["b"], vec!["c"]]);
        assert_eq!(record.keys().collect::<Vec<_>>(), ["a", "c"]);
        // The next sync checks only the refused one again, alone.
        assert!(validate(&specs, &generator, &mut record).is_err());
        assert_eq!(generator.take_runs(), [["b"]]);
    }

    #[test]
    fn without_a_generator_nothing_runs_and_nothing_is_recorded() {
        struct Missing;
        impl QuadletGenerator for Missing {
            fn generator(&self) -> Option<String> {
                None
            }
            fn run_generator(&self, _: &[QuadletSet]) -> Result<(), String> {
                panic!("no generator to run")
            }
        }
        let mut record = ValidatedRecord::from([("gone".parse().unwrap(), "x".into())]);
        validate(&desired(&[("a", "[Container]\n")]), &Missing, &mut record).unwrap();
        assert_eq!(record.len(), 1, "kept for when the generator is back");
    }

    fn set(user: &str, files: &[(&str, &str)]) -> QuadletSet {
        QuadletSet {
            user: user.parse().unwrap(),
            files: files.iter().map(|(n, t)| ((*n).into(), (*t).into())).collect(),
        }
    }

    #[test]
    fn fingerprints_change_with_the_generator_and_every_byte() {
        let files = [("a.container", "[Container]\nImage=x\n")];
        let base = fingerprint("gen:1", files);
        assert_eq!(base, fingerprint("gen:1", files));
        assert_ne!(base, fingerprint("gen:2", files));
        assert_ne!(base, fingerprint("gen:1", [("a.container", "[Container]\nImage=y\n")]));
        // Framing: moving text between a name and its contents is a different set.
        assert_ne!(fingerprint("g", [("ab", "c")]), fingerprint("g", [("a", "bc")]));
    }

    #[test]
    fn unrelated_sets_share_one_run() {
        let sets = [
            set("web", &[("web.container", "[Container]\nImage=nginx\n")]),
            set("db", &[("db.container", "[Container]\nImage=postgres\n")]),
            set("app", &[("app.container", "[Container]\nPod=app.pod\n"), ("app.pod", "[Pod]\n")]),
        ];
        assert_eq!(batches(&sets), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn a_shared_name_or_a_reference_across_sets_splits_the_run() {
        let sets = [
            set(
                "a",
                &[("a.container", "[Container]\nVolume=data.volume:/d\n"), ("data.volume", "")],
            ),
            // Same file name as a's: the generator would read only one of them.
            set("b", &[("b.container", ""), ("data.volume", "")]),
            // Names a file of a's: it resolves only when staged beside a.
            set("c", &[("c.container", "[Container]\nVolume=data.volume:/d\n")]),
            // a file another set of the first run names.
            set("d", &[("d.container", "[Container]\nNetwork=e.network\n")]),
            set("e", &[("e.network", "[Network]\n")]),
        ];
        let groups = batches(&sets);
        let together = |x: usize, y: usize| groups.iter().any(|g| g.contains(&x) && g.contains(&y));
        assert!(!together(0, 1) && !together(0, 2) && !together(3, 4), "{groups:?}");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 5);
        assert!(groups.len() < 5, "unrelated sets still share runs: {groups:?}");
    }
}
