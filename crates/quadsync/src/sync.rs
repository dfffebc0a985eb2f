//! One sync: lock, fetch, discover, validate, plan, apply, record.
//!
//! Never destroy on doubt: a failed fetch, an unreadable transform, a definition that does not
//! render or that podman's generator refuses stops the sync before anything on the host changes,
//! and the error is recorded for `quadsync status`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use tailpod_core::located::at;
use tailpod_core::names::Hostname;

use crate::apply::{Outcome, apply};
use crate::config::Config;
use crate::discover::{Desired, discover};
use crate::plan::{HostFacts, MassRemoval, Plan, RemovalPolicy, plan};
use crate::repo::{FetchError, FetchFailure};
use crate::secrets::Keyring;
use crate::state::{LastSync, State};
use crate::system::System;
use crate::transforms::TransformSet;
use crate::validate::ValidatedRecord;

/// How long a whole fetch may take, from connecting to the last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state: PathBuf,
    pub repo: PathBuf,
    pub lock: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Paths {
        Paths {
            state: state_dir.join("state.json"),
            repo: state_dir.join("repo.git"),
            lock: state_dir.join("sync.lock"),
        }
    }
}

/// Held while a sync runs; a second sync fails at once instead of waiting.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Why the lock was not taken: another run holds it (wait, or fail at once), or the state
/// directory itself is wrong (no use waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    Held,
    Io(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held => f.write_str("another sync is already running"),
            LockError::Io(message) => f.write_str(message),
        }
    }
}

impl From<LockError> for String {
    fn from(e: LockError) -> String {
        e.to_string()
    }
}

pub fn lock(state_dir: &Path) -> Result<Lock, LockError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| LockError::Io(format!("creating {}: {e}", state_dir.display())))?;
    let path = Paths::new(state_dir).lock;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LockError::Io(at(&path)(e)))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map(Lock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => LockError::Held,
        other => LockError::Io(format!("locking {}: {other}", path.display())),
    })
}

/// [`lock`], waiting up to `limit` for a sync under way to end (for commands a person runs).
pub fn lock_waiting(state_dir: &Path, limit: Duration) -> Result<Lock, LockError> {
    let started = std::time::Instant::now();
    loop {
        match lock(state_dir) {
            Err(LockError::Held) if started.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(250));
            }
            result => return result,
        }
    }
}

/// The desired state of a commit, validated: every problem, or the deployments. More than
/// `max_containers` is refused before anything is validated. `validated` is what the generator
/// accepted before (only the rest is checked again), updated with what it accepts now.
pub fn desired_state(
    files: &[crate::discover::SourceFile],
    transforms: &TransformSet,
    host: Option<&Hostname>,
    system: &dyn System,
    max_containers: usize,
    validated: &mut ValidatedRecord,
) -> Result<Desired, Vec<String>> {
    let desired = discover(files, transforms, host)?;
    if desired.len() > max_containers {
        return Err(vec![format!(
            "the repo defines {} container users; this host takes at most {max_containers} \
             (QUADSYNC_MAX_CONTAINERS)",
            desired.len()
        )]);
    }
    crate::validate::validate(&desired, system, validated)?;
    Ok(desired)
}

/// What the host has, for the users a plan concerns.
pub fn host_facts(
    system: &dyn System,
    desired: &Desired,
    state: &State,
) -> Result<HostFacts, String> {
    let mut facts = HostFacts::default();
    for name in desired.keys().chain(state.users.keys()) {
        if facts.existing_users.contains(name) {
            continue;
        }
        if system.user(name)?.is_some() {
            facts.existing_users.insert(name.clone());
            if system.lingering(name) {
                facts.lingering.insert(name.clone());
            }
        }
    }
    Ok(facts)
}

/// The steps before anything changes: fetch, read transforms, discover, validate (what
/// `validated` does not vouch for, which it then records), open the secrets (a deployment
/// whose secrets cannot be opened is held, not an error of the whole sync). Errors are the
/// lines to report.
pub fn prepare(
    config: &Config,
    system: &dyn System,
    validated: &mut ValidatedRecord,
) -> Result<(String, Desired), Unprepared> {
    let paths = Paths::new(&config.state_dir);
    let invalid = |e: String| Unprepared::Invalid(vec![e]);
    let host = system.identity().map_err(invalid)?;
    let repo_paths = crate::fleet::expand_all(&config.paths, &host)
        .map_err(|e| invalid(format!("QUADSYNC_PATHS: {e}")))?;
    let fetched = crate::repo::fetch(
        &config.git_url,
        &config.branch,
        &paths.repo,
        config.ssh_key.as_deref(),
        &repo_paths,
        FETCH_TIMEOUT,
    )
    .map_err(|e| match e {
        FetchError::Failed { failure, message } => Unprepared::Fetch(failure, vec![message]),
        FetchError::Unreadable(errors) => Unprepared::Invalid(errors),
    })?;
    log::debug!("fetched {} ({} definition file(s))", fetched.commit, fetched.files.len());
    let transforms = TransformSet::load(&config.transform_dir)
        .map_err(|e| Unprepared::Invalid(vec![e.to_string()]))?;
    let label = host.label();
    let mut desired = desired_state(
        &fetched.files,
        &transforms,
        label.as_ref(),
        system,
        config.max_containers,
        validated,
    )
    .map_err(Unprepared::Invalid)?;
    let keyring = config.age_key.as_deref().map_or_else(Keyring::none, Keyring::load);
    crate::secrets::unlock(&mut desired, &keyring);
    crate::autoupdate::add_drop_ins(&mut desired, &config.auto_update);
    Ok((fetched.commit, desired))
}

/// Why nothing could be planned. A fetch that failed on the network is worth retrying soon
/// (it may not be up yet at boot); anything else waits for a new commit, fixed credentials or a
/// fixed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unprepared {
    Fetch(FetchFailure, Vec<String>),
    Invalid(Vec<String>),
}

impl Unprepared {
    pub fn errors(&self) -> &[String] {
        match self {
            Unprepared::Fetch(_, errors) | Unprepared::Invalid(errors) => errors,
        }
    }
}

/// The result of a sync.
#[derive(Debug)]
pub struct Report {
    pub plan: Option<Plan>,
    pub outcome: Outcome,
    /// The fetch failed, and why: nothing was planned.
    pub fetch_failed: Option<FetchFailure>,
}

/// Seconds since the epoch, as the state records times.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// A whole sync. `Err` only when the state itself cannot be read or written; every other failure
/// is in the report (and recorded in the state). `stop`, once set (by SIGTERM), ends the sync
/// cleanly after the step under way.
pub fn sync(
    config: &Config,
    system: &dyn System,
    mass_removal: MassRemoval,
    stop: &AtomicBool,
) -> Result<Report, String> {
    let _lock = lock(&config.state_dir)?;
    let paths = Paths::new(&config.state_dir);
    let mut state = State::load(&paths.state)?;
    let record = |state: &mut State, ok: bool, message: String| -> Result<(), String> {
        state.last_sync = Some(LastSync { at: now(), ok, message });
        state.save(&paths.state)
    };
    let (commit, desired) = match prepare(config, system, &mut state.validated) {
        Ok(prepared) => prepared,
        Err(unprepared) => {
            let errors = unprepared.errors().to_vec();
            for error in &errors {
                log::error!("{error}");
            }
            let message = format!("nothing changed: {}", errors.join("; "));
            crate::watch::after_run(config, system, &mut state, Some((false, &message)), now());
            record(&mut state, false, message)?;
            let outcome = Outcome { errors, warnings: Vec::new() };
            let fetch_failed = match unprepared {
                Unprepared::Fetch(failure, _) => Some(failure),
                Unprepared::Invalid(_) => None,
            };
            return Ok(Report { plan: None, outcome, fetch_failed });
        }
    };
    let facts = host_facts(system, &desired, &state)?;
    let policy = RemovalPolicy { max_share: config.max_removal, mass_removal };
    let plan = plan(&commit, &desired, &state, &facts, policy);
    let changes = plan.changes().count();
    if changes == 0 {
        log::info!("{}: {} container(s), nothing to do", short(&commit), desired.len());
    }
    let mut save_error = None;
    let mut save = |s: &State| {
        if let Err(e) = s.save(&paths.state) {
            save_error.get_or_insert(e);
        }
    };
    let stop = || stop.load(Ordering::SeqCst);
    let outcome = apply(&plan, &desired, &mut state, system, &config.user_group, &mut save, &stop);
    if let Some(e) = save_error {
        return Err(e);
    }
    let ok = outcome.errors.is_empty();
    if ok {
        state.commit = Some(commit.clone());
    }
    let message = if ok {
        format!(
            "deployed {} ({} change(s), {} warning(s))",
            short(&commit),
            changes,
            outcome.warnings.len()
        )
    } else {
        format!("{}: {}", short(&commit), outcome.errors.join("; "))
    };
    crate::watch::after_run(config, system, &mut state, Some((ok, &message)), now());
    record(&mut state, ok, message)?;
    Ok(Report { plan: Some(plan), outcome, fetch_failed: None })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_told_apart_from_a_broken_state_directory_and_can_be_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = lock(&state).unwrap();
        assert_eq!(lock(&state).unwrap_err(), LockError::Held);
        let waited = lock_waiting(&state, Duration::from_millis(300)).unwrap_err();
        assert_eq!(waited, LockError::Held, "still held after the wait");
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        assert!(lock_waiting(&state, Duration::from_secs(10)).is_ok(), "taken once released");
        releaser.join().unwrap();

        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        match lock(&file) {
            Err(LockError::Io(message)) => assert!(message.starts_with("creating "), "{message}"),
            other => panic!("a state directory that is a file: {other:?}"),
        }
    }
}
