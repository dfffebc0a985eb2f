//! Carrying out a plan, user by user, keeping the state record true after every step.
//!
//! A user whose deploy fails (useradd, a write, the user manager, daemon-reload, userdel) is
//! skipped and reported, and the others still deploy; their files are marked so the next sync
//! redoes them. A container that fails to start is only a warning: the deploy itself worked.
//! Restarts are queued without waiting (`systemctl restart --no-block`), so containers start
//! side by side while the next users deploy; at the end the sync waits for every queued job
//! (up to 10 minutes together) to record what each container came to.
//!
//! Ownership is written ahead: a user is recorded (and the record saved) *before* `useradd`
//! runs, so a sync killed at any moment never leaves a user quadsync made but refuses to manage.
//! A stop request (SIGTERM from `systemctl stop` or a reboot) is honoured between steps: the
//! step under way finishes, the state is saved, and the next sync goes on from there.

use tailpod_core::names::UserName;

use crate::discover::{Desired, UnitDir};
use crate::plan::{Action, Plan, Step};
use crate::state::{ManagedUser, State, deployed_files};
use crate::system::{ActiveState, System, UnitJob, UserInfo};

/// What went wrong, for the log, `status` and the exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Failures: the sync exits 1.
    pub errors: Vec<String>,
    /// Worth knowing, not failures.
    pub warnings: Vec<String>,
}

/// The user, which the steps before (or the host) must have made by now.
fn created<'a>(info: &'a Option<UserInfo>, name: &UserName) -> Result<&'a UserInfo, String> {
    info.as_ref().ok_or_else(|| format!("user {name} does not exist"))
}

fn user_info(system: &dyn System, name: &UserName) -> Result<UserInfo, String> {
    created(&system.user(name)?, name).cloned()
}

/// Why a deploy stopped early.
const STOPPED: &str = "stopped on request; the next sync goes on from here";

/// Applies `plan`; `save` is called whenever ownership changes and after each user, so a crash
/// loses nothing; `stop` is asked between steps.
pub fn apply(
    plan: &Plan,
    desired: &Desired,
    state: &mut State,
    system: &dyn System,
    group: &str,
    save: &mut dyn FnMut(&State),
    stop: &dyn Fn() -> bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    if plan.users.iter().any(|u| u.steps.contains(&Step::CreateUser))
        && let Err(e) = system.ensure_group(group)
    {
        outcome.errors.push(format!("creating the group {group}: {e}"));
        return outcome;
    }
    let mut restarting: Vec<Restarting<'_>> = Vec::new();
    for user in &plan.users {
        let name = &user.user;
        if user.action != Action::Unchanged && stop() {
            log::warn!("{name}: {STOPPED}");
            outcome.errors.push(format!("{name}: {STOPPED}"));
            break;
        }
        match user.action {
            Action::Unchanged => continue,
            Action::Refused => {
                let reason = user.reason.clone().unwrap_or_default();
                log::error!("{name}: {reason}");
                outcome.errors.push(format!("{name}: {reason}"));
                continue;
            }
            Action::Remove => {
                match remove(system, name, &user.steps) {
                    Ok(()) => {
                        log::info!("{name}: removed (no longer in the repo)");
                        state.users.remove(name);
                    }
                    Err(e) => {
                        log::error!("{name}: removing: {e}");
                        outcome.errors.push(format!("{name}: removing: {e}"));
                    }
                }
                save(state);
                continue;
            }
            Action::Create | Action::Update => {}
        }
        let Some(deployment) = desired.get(name) else { continue };
        let mut context = Context { system, state: &mut *state, save: &mut *save, stop };
        let deployed = deploy(&mut context, deployment, &user.steps, group, &mut outcome);
        if let Ok(Deployed { restart: Some(unit), rest, .. }) = &deployed {
            restarting.push(Restarting { deployment, unit: unit.clone(), rest });
        }
        record(state, deployment, deployed.map(|d| d.result), &mut outcome);
        save(state);
    }
    // The restarts were queued without waiting, so containers start side by side; what each
    // came to is known once its job is done.
    for (restarting, started) in settle(system, &restarting, stop) {
        let Restarting { deployment, unit, rest } = restarting;
        let name = &deployment.user;
        let result = match started {
            Ok(()) => {
                log::info!("{name}: (re)started {unit}");
                format!("started {unit}")
            }
            Err(e) => {
                log::warn!("{name}: {unit} failed to start: {e}");
                outcome.warnings.push(format!("{name}: {unit} failed to start: {e}"));
                format!("deployed, but {unit} failed to start: {e}")
            }
        };
        // What comes after the restart (secrets the old container used) runs now.
        let mut context = Context { system, state: &mut *state, save: &mut *save, stop };
        let after = deploy(&mut context, deployment, rest, group, &mut outcome);
        record(state, deployment, after.map(|_| result), &mut outcome);
        save(state);
    }
    outcome
}

/// A restart queued for a deployment, with the steps that follow it.
#[derive(Debug)]
struct Restarting<'a> {
    deployment: &'a crate::discover::Deployment,
    unit: String,
    rest: &'a [Step],
}

/// How long queued restarts are waited for, all together (an image pull may be among them).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits until every queued restart's job is done, and says whether its unit is active. A
/// stop request ends the wait; the jobs go on in systemd.
fn settle<'r, 'a>(
    system: &dyn System,
    queued: &'r [Restarting<'a>],
    stop: &dyn Fn() -> bool,
) -> Vec<(&'r Restarting<'a>, Result<(), String>)> {
    let started = std::time::Instant::now();
    let mut answers: Vec<Option<Result<(), String>>> = vec![None; queued.len()];
    loop {
        for (restart, answer) in queued.iter().zip(&mut answers).filter(|(_, a)| a.is_none()) {
            match system.unit_job(&restart.deployment.user, &restart.unit) {
                Ok(UnitJob { pending: true, .. }) => {}
                Ok(UnitJob { state: ActiveState::Active, .. }) => *answer = Some(Ok(())),
                Ok(UnitJob { state, .. }) => {
                    *answer = Some(Err(format!(
                        "it is {state} (journalctl --user -M {}@ -u {})",
                        restart.deployment.user, restart.unit
                    )))
                }
                Err(e) => *answer = Some(Err(e)),
            }
        }
        let waiting = answers.iter().filter(|a| a.is_none()).count();
        if waiting == 0 {
            break;
        }
        let why = match (stop(), started.elapsed() > SETTLE) {
            (true, _) => "stopped on request while it was starting",
            (_, true) => "still starting after 10 minutes",
            _ => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        answers.iter_mut().filter(|a| a.is_none()).for_each(|a| *a = Some(Err(why.to_owned())));
        break;
    }
    queued.iter().zip(answers.into_iter().flatten()).collect()
}

/// Keeps the state true after a deploy: its files on success, a forced redo on failure.
fn record(
    state: &mut State,
    deployment: &crate::discover::Deployment,
    deployed: Result<String, String>,
    outcome: &mut Outcome,
) {
    let name = &deployment.user;
    match deployed {
        Ok(result) => {
            let managed = state.users.entry(name.clone()).or_insert_with(|| ManagedUser {
                service: deployment.service.clone(),
                files: Default::default(),
                result: String::new(),
            });
            managed.service = deployment.service.clone();
            managed.files = deployed_files(deployment);
            managed.result = result;
        }
        Err(e) => {
            log::error!("{name}: {e}");
            outcome.errors.push(format!("{name}: {e}"));
            if let Some(managed) = state.users.get_mut(name) {
                // Make the next sync redo every file, the reload and the restart.
                managed.files.values_mut().for_each(|f| f.sha256.clear());
                managed.result = format!("error: {e}");
            }
        }
    }
}

/// What a deploy works with.
struct Context<'a> {
    system: &'a dyn System,
    state: &'a mut State,
    save: &'a mut dyn FnMut(&State),
    stop: &'a dyn Fn() -> bool,
}

/// What a deploy did: the result to record, and the restart it queued with the steps after it.
#[derive(Debug)]
struct Deployed<'s> {
    result: String,
    restart: Option<String>,
    rest: &'s [Step],
}

/// Runs a create or update up to its restart, which it queues (see [`settle`]).
fn deploy<'s>(
    context: &mut Context<'_>,
    deployment: &crate::discover::Deployment,
    steps: &'s [Step],
    group: &str,
    outcome: &mut Outcome,
) -> Result<Deployed<'s>, String> {
    let system = context.system;
    let name = &deployment.user;
    let mut info: Option<UserInfo> = system.user(name)?;
    let mut result = "deployed".to_owned();
    for (index, step) in steps.iter().enumerate() {
        if index > 0 && (context.stop)() {
            return Err(STOPPED.to_owned());
        }
        match step {
            Step::CreateUser => {
                create_user(context, deployment, group)?;
                info = Some(user_info(system, name)?);
                log::info!("{name}: created the user");
            }
            Step::EnableLinger => system.set_linger(name, true)?,
            Step::StartUserManager => {
                let user = created(&info, name)?;
                system.start_user_manager(user)?;
            }
            Step::WriteFile { dir: UnitDir::Secret, name: secret } => {
                let user = created(&info, name)?;
                let value = deployment
                    .secret_values
                    .get(secret)
                    .ok_or_else(|| format!("secret {secret} was not opened"))?;
                system.put_secret(user, secret, value.bytes())?;
            }
            Step::WriteFile { dir, name: file } => {
                let user = created(&info, name)?;
                system.write_file(user, *dir, file, &deployment.files[file].text)?;
            }
            Step::RemoveFile { dir: UnitDir::Secret, name: secret } => {
                let user = created(&info, name)?;
                system.remove_secret(user, secret)?;
            }
            Step::RemoveFile { dir, name: file } => {
                let user = created(&info, name)?;
                system.remove_file(user, *dir, file)?;
            }
            Step::DisableTimer { name: timer } => {
                if let Err(e) = system.user_systemctl(name, &["disable", "--now", timer]) {
                    outcome.warnings.push(format!("{name}: disabling {timer}: {e}"));
                }
            }
            Step::DaemonReload => {
                system.user_systemctl(name, &["daemon-reload"])?;
            }
            Step::EnableTimer { name: timer } => {
                if let Err(e) = system.user_systemctl(name, &["enable", "--now", timer]) {
                    log::warn!("{name}: enabling {timer}: {e}");
                    outcome.warnings.push(format!("{name}: enabling {timer}: {e}"));
                }
            }
            Step::Restart { unit } => {
                match system.user_systemctl(name, &["restart", "--no-block", unit]) {
                    Ok(_) => {
                        let rest = &steps[index + 1..];
                        return Ok(Deployed { result, restart: Some(unit.clone()), rest });
                    }
                    Err(e) => {
                        log::warn!("{name}: {unit} failed to start: {e}");
                        outcome.warnings.push(format!("{name}: {unit} failed to start: {e}"));
                        result = format!("deployed, but {unit} failed to start: {e}");
                    }
                }
            }
            Step::StopUnit { .. } | Step::DisableLinger | Step::RemoveUser => {}
        }
    }
    Ok(Deployed { result, restart: None, rest: &[] })
}

/// `useradd`, with the user recorded as quadsync's before it runs (and forgotten again only if
/// it certainly failed), so no kill in between can orphan the user.
fn create_user(
    context: &mut Context<'_>,
    deployment: &crate::discover::Deployment,
    group: &str,
) -> Result<(), String> {
    let name = &deployment.user;
    let known = context.state.users.contains_key(name);
    if !known {
        let record = ManagedUser {
            service: deployment.service.clone(),
            files: Default::default(),
            result: "creating".into(),
        };
        context.state.users.insert(name.clone(), record);
        (context.save)(context.state);
    }
    match context.system.create_user(name, group) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Still absent: it was never ours. Present (a race with an admin): keep no claim.
            if !known {
                context.state.users.remove(name);
                (context.save)(context.state);
            }
            Err(e)
        }
    }
}

fn remove(system: &dyn System, name: &UserName, steps: &[Step]) -> Result<(), String> {
    for step in steps {
        match step {
            // The user goes anyway: these only make it go cleanly.
            Step::DisableTimer { name: timer } => {
                drop(system.user_systemctl(name, &["disable", "--now", timer]))
            }
            Step::StopUnit { unit } => drop(system.user_systemctl(name, &["stop", unit])),
            Step::DisableLinger => drop(system.set_linger(name, false)),
            Step::RemoveUser => system.remove_user(name)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{Deployment, UnitDir, UserFile};
    use crate::plan::{HostFacts, MassRemoval, RemovalPolicy, plan};
    use crate::system::fake::Recorder;
    use std::collections::BTreeMap;

    fn deployment(user: &str, text: &str) -> Deployment {
        Deployment {
            files: BTreeMap::from([(
                format!("{user}.container"),
                UserFile { dir: UnitDir::Quadlet, text: text.into() },
            )]),
            ..Deployment::new(user.parse().unwrap(), format!("{user}.service"))
        }
    }

    fn desired(deployments: Vec<Deployment>) -> Desired {
        deployments.into_iter().map(|d| (d.user.clone(), d)).collect()
    }

    fn run(system: &Recorder, desired: &Desired, state: &mut State, mass: MassRemoval) -> Outcome {
        let names: std::collections::BTreeSet<UserName> =
            system.users.borrow().keys().cloned().collect();
        let facts = HostFacts { existing_users: names.clone(), lingering: names };
        let policy = RemovalPolicy { mass_removal: mass, ..RemovalPolicy::DEFAULT };
        let plan = plan("c", desired, state, &facts, policy);
        apply(&plan, desired, state, system, "cusers", &mut |_| {}, &|| false)
    }

    #[test]
    fn deploy_then_nothing_then_edit_then_remove() {
        let system = Recorder::default();
        let mut state = State::default();
        let desired = desired(vec![deployment("a", "1"), deployment("b", "1")]);
        let outcome = run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert_eq!(outcome, Outcome::default());
        assert_eq!(
            system.calls.take(),
            [
                "groupadd cusers",
                "useradd a -G cusers",
                "linger a true",
                "start user@1000",
                "write a ~/.config/containers/systemd/a.container",
                "systemctl a@ daemon-reload",
                "systemctl a@ restart --no-block a.service",
                "useradd b -G cusers",
                "linger b true",
                "start user@1001",
                "write b ~/.config/containers/systemd/b.container",
                "systemctl b@ daemon-reload",
                "systemctl b@ restart --no-block b.service",
            ]
        );
        assert_eq!(state.users["a"].result, "started a.service");

        run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert!(system.calls.take().is_empty(), "an unchanged repo does nothing");

        let mut edited = desired.clone();
        edited.insert("a".parse().unwrap(), deployment("a", "2"));
        run(&system, &edited, &mut state, MassRemoval::Refuse);
        assert_eq!(
            system.calls.take(),
            [
                "start user@1000",
                "write a ~/.config/containers/systemd/a.container",
                "systemctl a@ daemon-reload",
                "systemctl a@ restart --no-block a.service"
            ]
        );

        edited.remove("b");
        run(&system, &edited, &mut state, MassRemoval::Refuse);
        assert_eq!(
            system.calls.take(),
            ["systemctl b@ stop b.service", "linger b false", "userdel b"]
        );
        assert!(!state.users.contains_key("b"));
    }

    #[test]
    fn secrets_reach_the_users_store_rotate_and_a_sealed_one_holds_its_container() {
        use crate::discover::{SourceFile, discover};
        use crate::secrets::{Keyring, encrypt, generate_identity, unlock};
        use crate::transforms::TransformSet;
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let (identity, recipient) = generate_identity();
        let key = dir.path().join("age.key");
        std::fs::write(&key, identity).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keyring = Keyring::load(&key);
        let repo_with = |token: &str, keyring: &Keyring| {
            let sealed = encrypt(&recipient, token.as_bytes()).unwrap();
            let text = format!("[Container]\nImage=x\n[Secrets]\nEnvironment=TOKEN={sealed}\n");
            let files = [SourceFile::at_root("app.container", text)];
            let mut desired = discover(&files, &TransformSet::without_host(), None).unwrap();
            unlock(&mut desired, keyring);
            desired
        };
        let repo = |token: &str| repo_with(token, &keyring);
        let system = Recorder::default();
        let mut state = State::default();
        assert_eq!(run(&system, &repo("one"), &mut state, MassRemoval::Refuse), Outcome::default());
        let calls = system.calls.take();
        assert!(
            calls.contains(&"podman secret create app app-token <<< one".to_owned()),
            "{calls:#?}"
        );
        let recorded = serde_json::to_string(&state).unwrap();
        assert!(!recorded.contains("one\""), "no value in the record: {recorded}");

        // Encrypted again, same value: nothing. Another value: created again and restarted.
        run(&system, &repo("one"), &mut state, MassRemoval::Refuse);
        assert!(system.calls.take().is_empty());
        run(&system, &repo("two"), &mut state, MassRemoval::Refuse);
        let calls = system.calls.take();
        assert!(
            calls.contains(&"podman secret create app app-token <<< two".to_owned()),
            "{calls:#?}"
        );
        assert!(
            calls.contains(&"systemctl app@ restart --no-block app.service".to_owned()),
            "{calls:#?}"
        );

        // Without the key the container is held: an error, and nothing on the host changes.
        let sealed = repo_with("three", &Keyring::none());
        let outcome = run(&system, &sealed, &mut state, MassRemoval::Refuse);
        assert!(system.calls.take().is_empty());
        assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
        assert!(outcome.errors[0].contains("running version is left as it is"), "{outcome:?}");
        assert!(state.users.contains_key("app"));
    }

    #[test]
    fn restarts_are_queued_side_by_side_and_each_outcome_recorded() {
        let system = Recorder {
            slow_units: vec!["a@a.service".into()],
            failed_units: vec!["b@b.service".into()],
            ..Recorder::default()
        };
        let mut state = State::default();
        let desired = desired(vec![deployment("a", "1"), deployment("b", "1")]);
        let outcome = run(&system, &desired, &mut state, MassRemoval::Refuse);
        let calls = system.calls.take();
        let at = |call: &str| calls.iter().position(|c| c == call).unwrap();
        // b's restart is queued while a's is still starting: one container's start does not
        // hold up the next deploy.
        assert!(
            at("systemctl b@ restart --no-block b.service") < at("a@ a.service still starting"),
            "{calls:#?}"
        );
        assert_eq!(state.users["a"].result, "started a.service");
        assert_eq!(
            outcome.warnings,
            ["b: b.service failed to start: it is failed (journalctl --user -M b@ -u b.service)"]
        );
        assert!(state.users["b"].result.starts_with("deployed, but b.service failed to start"));
        // The deploy itself worked: nothing to redo.
        run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert!(system.calls.take().is_empty());
    }

    #[test]
    fn one_failing_user_does_not_stop_the_others_and_is_redone() {
        let system =
            Recorder { fail: vec!["systemctl a@ daemon-reload".into()], ..Recorder::default() };
        let mut state = State::default();
        let desired = desired(vec![deployment("a", "1"), deployment("b", "1")]);
        let outcome = run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
        assert!(outcome.errors[0].starts_with("a: systemctl a@ daemon-reload failed"));
        assert!(state.users["a"].result.starts_with("error:"));
        assert_eq!(state.users["b"].result, "started b.service");

        // Fixed: the next run redoes a (write, reload, restart), and leaves b alone.
        let system = Recorder { users: system.users.clone(), ..Recorder::default() };
        run(&system, &desired, &mut state, MassRemoval::Refuse);
        let calls = system.calls.take();
        assert!(
            calls.contains(&"systemctl a@ daemon-reload".to_owned())
                && calls.iter().all(|c| !c.contains(" b")),
            "{calls:?}"
        );
    }

    #[test]
    fn a_container_that_fails_to_start_is_a_warning() {
        let system = Recorder { fail: vec!["systemctl a@ restart".into()], ..Recorder::default() };
        let mut state = State::default();
        let desired = desired(vec![deployment("a", "1")]);
        let outcome = run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert!(outcome.errors.is_empty() && outcome.warnings.len() == 1, "{outcome:?}");
        assert!(state.users["a"].result.contains("failed to start"));
        // The deploy worked, so the next sync does not retry it (no restart loop from quadsync).
        system.calls.take();
        run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert!(system.calls.take().is_empty());
    }

    #[test]
    fn ownership_is_saved_before_useradd_so_a_kill_never_orphans_a_user() {
        let system = Recorder::default();
        let mut state = State::default();
        let desired = desired(vec![deployment("a", "1")]);
        let facts = HostFacts::default();
        let plan = plan("c", &desired, &state, &facts, RemovalPolicy::DEFAULT);
        // Each save as a kill right after it would leave it: the state on disk, and whether
        // useradd had run.
        let mut saves: Vec<(State, bool)> = Vec::new();
        let mut save = |s: &State| {
            let ran = system.calls.borrow().iter().any(|c| c.starts_with("useradd a"));
            saves.push((s.clone(), ran));
        };
        apply(&plan, &desired, &mut state, &system, "cusers", &mut save, &|| false);
        let (first, useradd_ran) = &saves[0];
        assert!(!useradd_ran, "the first save comes before useradd");
        assert_eq!(first.users["a"].result, "creating");

        // Killed just after useradd: the saved record owns the user, so the next sync takes it
        // over and finishes the deploy instead of refusing it forever.
        let mut state = first.clone();
        system.calls.take();
        let outcome = run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert_eq!(outcome, Outcome::default());
        assert_eq!(state.users["a"].result, "started a.service");
        assert!(
            system
                .calls
                .take()
                .contains(&"write a ~/.config/containers/systemd/a.container".to_owned())
        );
    }

    #[test]
    fn a_failed_useradd_leaves_no_claim() {
        let system = Recorder { fail: vec!["useradd a".into()], ..Recorder::default() };
        let mut state = State::default();
        let outcome =
            run(&system, &desired(vec![deployment("a", "1")]), &mut state, MassRemoval::Refuse);
        assert_eq!(outcome.errors, ["a: useradd a -G cusers failed"]);
        assert!(!state.users.contains_key("a"), "{state:?}");
    }

    #[test]
    fn a_stop_request_ends_the_sync_between_steps_with_the_rest_redone_later() {
        let system = Recorder::default();
        let mut state = State::default();
        let desired = desired(vec![deployment("a", "1"), deployment("b", "1")]);
        let facts = HostFacts::default();
        let plan = plan("c", &desired, &state, &facts, RemovalPolicy::DEFAULT);
        // SIGTERM arrives while a's user is being created.
        let stop = || system.calls.borrow().iter().any(|c| c.starts_with("useradd a"));
        let outcome = apply(&plan, &desired, &mut state, &system, "cusers", &mut |_| {}, &stop);
        assert_eq!(outcome.errors, [format!("a: {STOPPED}"), format!("b: {STOPPED}")]);
        assert_eq!(system.calls.take(), ["groupadd cusers", "useradd a -G cusers"]);
        assert!(state.users["a"].files.is_empty(), "a is marked for a full deploy");
        assert!(!state.users.contains_key("b"));
        run(&system, &desired, &mut state, MassRemoval::Refuse);
        assert_eq!(state.users["a"].result, "started a.service");
        assert_eq!(state.users["b"].result, "started b.service");
    }
}
