//! After each sync (and `quadsync update`): what happened to the containers since the last run,
//! read from the journal once for all of them ([`crate::journal`]); the problems that opens and
//! closes ([`crate::health`]), each logged as one journal line and sent to
//! `QUADSYNC_NOTIFY_URL` ([`crate::notify`]); and the metrics file ([`crate::metrics`]).
//!
//! Nothing here fails a sync: what goes wrong is logged. A host with none of it configured and
//! no container opted in to updates pays nothing (no journal read, no process).

use std::collections::{BTreeMap, BTreeSet};

use tailpod_core::names::UserName;

use crate::autoupdate;
use crate::config::Config;
use crate::discover::UnitDir;
use crate::health::{Event, Kind, Phase};
use crate::journal::{self, UpdateOutcome, What};
use crate::references::generated_service;
use crate::state::{ManagedUser, State};
use crate::system::{ActiveState, System, UnitJob};

/// One image update outcome seen, for `quadsync update` to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSeen {
    pub user: UserName,
    pub container: String,
    pub image: String,
    pub outcome: UpdateOutcome,
}

/// Whether a managed user opted in to image updates (quadsync deployed its drop-ins).
pub fn auto_updated(managed: &ManagedUser) -> bool {
    managed.files.values().any(|f| UnitDir::from(f.dir) == UnitDir::AutoUpdateService)
}

/// The units of a managed user whose failures count: its service and Quadlet's other ones.
fn units_of(managed: &ManagedUser) -> BTreeSet<String> {
    let generated = managed.files.iter().filter(|(_, f)| UnitDir::from(f.dir) == UnitDir::Quadlet);
    let mut units: BTreeSet<String> = generated.filter_map(|(n, _)| generated_service(n)).collect();
    units.insert(managed.service.clone());
    units
}

/// The run's follow-up; `sync` is the sync's result, if this run was one.
pub fn after_run(
    config: &Config,
    system: &dyn System,
    state: &mut State,
    sync: Option<(bool, &str)>,
    now: u64,
) -> Vec<UpdateSeen> {
    let wanted = !config.notify.is_empty()
        || config.metrics_file.is_some()
        || state.users.values().any(auto_updated)
        || !state.health.is_empty();
    if !wanted {
        return Vec::new();
    }
    let host = system.identity().map(|h| h.hostname).unwrap_or_else(|_| "unknown".into());
    let mut events = Vec::new();
    let updates = observe(system, state, &host, now, &mut events);
    match sync {
        Some((true, _)) => {
            events.extend(state.health.resolve(
                &host,
                Kind::SyncFailed,
                "sync",
                "syncs again",
                now,
            ));
        }
        Some((false, message)) => {
            events.extend(state.health.raise(&host, Kind::SyncFailed, "sync", message, now));
        }
        None => {}
    }
    for event in &events {
        match event.event {
            Phase::Problem => log::warn!("problem: {}: {}", event.subject, event.message),
            Phase::Recovered => log::info!("recovered: {}: {}", event.subject, event.message),
        }
    }
    crate::notify::deliver(
        &config.notify,
        &mut state.health.outbox,
        events,
        now,
        &crate::notify::send,
    );
    if let Some(path) = &config.metrics_file {
        let text = crate::metrics::render(state, None);
        if let Err(e) = crate::state::write_atomic(path, text.as_bytes(), 0o644) {
            log::warn!("metrics: {e}");
        }
    }
    updates
}

/// Reads the journal since the last run into the health record; returns the update outcomes.
fn observe(
    system: &dyn System,
    state: &mut State,
    host: &str,
    now: u64,
    events: &mut Vec<Event>,
) -> Vec<UpdateSeen> {
    let output = match system.journal(&journal::arguments(state.health.journal_cursor.as_deref())) {
        Ok(output) => output,
        Err(e) => {
            log::warn!("reading the journal: {e}");
            return Vec::new();
        }
    };
    let (seen, cursor) = journal::parse(&output);
    if cursor.is_some() {
        state.health.journal_cursor = cursor;
    }
    // Whose each uid is, with the units whose failures count: looked up once a run, and only
    // when something was seen (each lookup reads the user database).
    let mut users: BTreeMap<u32, (UserName, BTreeSet<String>)> = BTreeMap::new();
    if !seen.is_empty() {
        for (name, managed) in &state.users {
            if let Ok(Some(info)) = system.user(name) {
                users.insert(info.uid, (name.clone(), units_of(managed)));
            }
        }
    }
    let mut failing: BTreeMap<String, (String, u64)> = BTreeMap::new();
    // Failures not known yet to be a crash: one that "Stopped" follows was a requested stop.
    let mut failed: Vec<(u32, String)> = Vec::new();
    let mut updates = Vec::new();
    for item in seen {
        let Some((user, units)) = users.get(&item.uid) else { continue };
        match item.what {
            What::Failed { unit } if units.contains(&unit) => failed.push((item.uid, unit)),
            What::Stopped { unit } => failed.retain(|f| *f != (item.uid, unit.clone())),
            What::RestartScheduled { unit } if units.contains(&unit) => {
                state.health.record(user.as_str()).restarts += 1;
                failing.entry(user.to_string()).or_insert((unit, 0)).1 += 1;
            }
            What::Update { container, image, outcome } => {
                record_update(state, host, user.as_str(), &container, &image, outcome, now, events);
                updates.push(UpdateSeen { user: user.clone(), container, image, outcome });
            }
            _ => {}
        }
    }
    for (uid, unit) in failed {
        let Some((user, _)) = users.get(&uid) else { continue };
        state.health.record(user.as_str()).failures += 1;
        failing.entry(user.to_string()).or_insert((unit, 0));
    }
    for (user, (unit, restarts)) in &failing {
        let detail = match restarts {
            0 => format!("{unit} failed"),
            n => format!("{unit} failed and was restarted {n} time(s) since the last check"),
        };
        events.extend(state.health.raise(host, Kind::ContainerFailing, user, &detail, now));
    }
    // A failing container has recovered once nothing failed since the last run and it is up.
    let open: Vec<String> = state
        .health
        .problems
        .values()
        .filter(|p| p.kind == Kind::ContainerFailing && !failing.contains_key(&p.subject))
        .map(|p| p.subject.clone())
        .collect();
    for subject in open {
        let Ok(user) = subject.parse::<UserName>() else { continue };
        let Some(managed) = state.users.get(&user) else { continue };
        let up = system.unit_job(&user, &managed.service);
        if let Ok(UnitJob { pending: false, state: ActiveState::Active }) = up {
            let recovered = "active again";
            events.extend(state.health.resolve(
                host,
                Kind::ContainerFailing,
                &subject,
                recovered,
                now,
            ));
        }
    }
    let gone: Vec<String> = state
        .health
        .containers
        .keys()
        .chain(state.health.problems.values().map(|p| &p.subject))
        .filter(|name| *name != "sync" && !state.users.contains_key(name.as_str()))
        .cloned()
        .collect();
    for name in gone {
        state.health.forget(&name);
    }
    updates
}

#[allow(clippy::too_many_arguments)]
fn record_update(
    state: &mut State,
    host: &str,
    user: &str,
    container: &str,
    image: &str,
    outcome: UpdateOutcome,
    now: u64,
    events: &mut Vec<Event>,
) {
    let record = state.health.record(user);
    match outcome {
        UpdateOutcome::Unchanged => return,
        UpdateOutcome::Updated => record.updates += 1,
        UpdateOutcome::RolledBack => record.rollbacks += 1,
        UpdateOutcome::Failed => record.update_failures += 1,
    }
    record.last_update = Some(crate::health::LastUpdate {
        at: now,
        outcome,
        container: container.to_owned(),
        image: image.to_owned(),
    });
    let health = &mut state.health;
    match outcome {
        UpdateOutcome::RolledBack => events.extend(health.raise(
            host,
            Kind::UpdateRolledBack,
            user,
            &format!(
                "{container}: the new {image} did not start or become healthy; rolled back to the previous image"
            ),
            now,
        )),
        UpdateOutcome::Failed => events.extend(health.raise(
            host,
            Kind::UpdateFailed,
            user,
            &format!("{container}: updating {image} failed, and so did the rollback"),
            now,
        )),
        _ => {
            let how = format!("{container}: updated to the new {image}");
            for kind in [Kind::UpdateRolledBack, Kind::UpdateFailed] {
                events.extend(health.resolve(host, kind, user, &how, now));
            }
        }
    }
}

/// Runs podman's auto-update now for `users` (each in its own systemd, as its timer would),
/// waiting for each; a user whose run cannot start is reported and the others go on.
pub fn update_now(system: &dyn System, users: &[UserName]) -> Vec<String> {
    let mut errors = Vec::new();
    for user in users {
        log::info!("{user}: running podman auto-update");
        if let Err(e) = system.user_systemctl(user, &["start", "--no-block", autoupdate::SERVICE]) {
            errors.push(format!("{user}: {e}"));
            continue;
        }
        let started = std::time::Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            match system.unit_job(user, autoupdate::SERVICE) {
                Ok(job) if !job.pending && job.state != ActiveState::Activating => break,
                Ok(_) if started.elapsed() < UPDATE_LIMIT => {}
                Ok(job) => {
                    errors.push(format!(
                        "{user}: podman auto-update still {} after 15 minutes",
                        job.state
                    ));
                    break;
                }
                Err(e) => {
                    errors.push(format!("{user}: {e}"));
                    break;
                }
            }
        }
    }
    errors
}

/// How long `quadsync update` waits for one user's update (pulls can be slow).
const UPDATE_LIMIT: std::time::Duration = std::time::Duration::from_secs(900);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DeployedFile, UnitDirName};
    use crate::system::fake::Recorder;

    fn managed(service: &str, files: &[(&str, UnitDirName)]) -> ManagedUser {
        ManagedUser {
            service: service.into(),
            files: files
                .iter()
                .map(|(n, dir)| ((*n).to_owned(), DeployedFile { dir: *dir, sha256: "x".into() }))
                .collect(),
            result: String::new(),
        }
    }

    fn line(uid: u32, fields: &str) -> String {
        format!(r#"{{"__CURSOR":"c{uid}","_UID":"{uid}",{fields}}}"#)
    }

    #[test]
    fn failures_rollbacks_and_recoveries_are_recorded_told_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("quadsync.prom");
        let config = Config::parse(
            "c.env",
            &format!("QUADSYNC_GIT_URL=u:x\nQUADSYNC_METRICS_FILE={}\n", metrics.display()),
        )
        .unwrap();
        let system = Recorder::default();
        system
            .users
            .borrow_mut()
            .extend([("web".parse().unwrap(), 1001), ("db".parse().unwrap(), 1002)]);
        let mut state = State::default();
        state.users.insert(
            "web".parse().unwrap(),
            managed(
                "web.service",
                &[
                    ("web.container", UnitDirName::Quadlet),
                    ("r.conf", UnitDirName::AutoUpdateService),
                ],
            ),
        );
        state.users.insert(
            "db".parse().unwrap(),
            managed("db.service", &[("db.container", UnitDirName::Quadlet)]),
        );
        let failed = r#""MESSAGE_ID":"d9b373ed55a64feb8242e02dbe79a49c","USER_UNIT":"db.service""#;
        let restarted =
            r#""MESSAGE_ID":"5eb03494b6584870a536b337290809b3","USER_UNIT":"db.service""#;
        let elsewhere =
            r#""MESSAGE_ID":"d9b373ed55a64feb8242e02dbe79a49c","USER_UNIT":"podman.service""#;
        let stop_failed =
            r#""MESSAGE_ID":"d9b373ed55a64feb8242e02dbe79a49c","USER_UNIT":"web.service""#;
        let stopped =
            r#""MESSAGE_ID":"9d1aaa27d60140bd96365438aad20286","USER_UNIT":"web.service""#;
        let rolled_back = r#""_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"quadsync-auto-update web localhost/web:latest rolled back""#;
        *system.journal.borrow_mut() = [
            line(1002, failed),
            line(1002, restarted),
            line(1002, restarted),
            line(1001, elsewhere),
            line(1001, stop_failed),
            line(1001, stopped),
            line(1001, rolled_back),
            line(4242, failed),
        ]
        .join("\n");
        let seen = after_run(&config, &system, &mut state, Some((true, "deployed")), 100);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].outcome, UpdateOutcome::RolledBack);
        let health = &state.health;
        assert!(health.is_open(Kind::ContainerFailing, "db"));
        assert!(
            !health.is_open(Kind::ContainerFailing, "web"),
            "podman.service is not web's unit, and web.service failed only as it was stopped"
        );
        assert_eq!(health.containers.get("web").map_or(0, |r| r.failures), 0);
        assert!(health.is_open(Kind::UpdateRolledBack, "web"));
        assert_eq!((health.containers["db"].failures, health.containers["db"].restarts), (1, 2));
        assert_eq!(health.containers["web"].rollbacks, 1);
        assert_eq!(health.journal_cursor.as_deref(), Some("c4242"));
        let text = std::fs::read_to_string(&metrics).unwrap();
        assert!(text.contains("quadsync_container_failing{container=\"db\"} 1\n"), "{text}");
        assert!(text.contains("quadsync_image_rollbacks_total{container=\"web\"} 1\n"), "{text}");
        let calls = system.calls.borrow().clone();
        assert!(
            calls[0].starts_with("journalctl ") && calls[0].contains("--since=-2min"),
            "{calls:?}"
        );

        // Next run: nothing new failed and db is active (the fake says so): db has recovered;
        // web's rollback stays open until an update succeeds, which then closes it.
        let updated = r#""_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"quadsync-auto-update web localhost/web:latest true""#;
        *system.journal.borrow_mut() = line(1001, updated);
        after_run(&config, &system, &mut state, Some((false, "fetch failed")), 300);
        let health = &state.health;
        assert!(!health.is_open(Kind::ContainerFailing, "db"));
        assert!(!health.is_open(Kind::UpdateRolledBack, "web"));
        assert!(health.is_open(Kind::SyncFailed, "sync"));
        assert_eq!(health.containers["web"].updates, 1);
        let calls = system.calls.borrow().clone();
        assert!(calls.iter().any(|c| c.contains("--after-cursor=c4242")), "{calls:?}");

        // A container that left the host is forgotten.
        state.users.remove("db");
        *system.journal.borrow_mut() = String::new();
        after_run(&config, &system, &mut state, Some((true, "deployed")), 400);
        assert!(!state.health.containers.contains_key("db"));
        assert!(!state.health.is_open(Kind::SyncFailed, "sync"));
    }

    #[test]
    fn nothing_configured_and_nobody_opted_in_costs_nothing() {
        let config = Config::parse("c.env", "QUADSYNC_GIT_URL=u:x\n").unwrap();
        let system = Recorder::default();
        let mut state = State::default();
        state.users.insert(
            "db".parse().unwrap(),
            managed("db.service", &[("db.container", UnitDirName::Quadlet)]),
        );
        after_run(&config, &system, &mut state, Some((false, "broken")), 1);
        assert!(system.calls.borrow().is_empty());
        assert!(state.health.is_empty());
    }
}
