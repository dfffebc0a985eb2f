//! The metrics, in Prometheus' text format: written after each run to `QUADSYNC_METRICS_FILE`
//! for node_exporter's textfile collector, and printed by `quadsync status --format
//! prometheus` (which also asks each unit's state; the file, written every two minutes, goes by
//! what the journal said, so a sync never starts a process per container for it).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tailpod_core::names::UserName;

use crate::health::{ContainerRecord, Kind};
use crate::state::State;
use crate::system::ActiveState;

/// The text for `state`; `live` is each container's unit state where it was asked.
pub fn render(state: &State, live: Option<&BTreeMap<UserName, ActiveState>>) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let last = state.last_sync.as_ref();
    family(
        "quadsync_last_sync_timestamp_seconds",
        "gauge",
        "When the last sync ended (0: never).",
        vec![(String::new(), last.map_or(0, |l| l.at))],
    );
    family(
        "quadsync_last_sync_success",
        "gauge",
        "Whether the last sync succeeded.",
        vec![(String::new(), u64::from(last.is_some_and(|l| l.ok)))],
    );
    let commit = state.commit.as_deref().unwrap_or("none");
    family(
        "quadsync_deployed_commit_info",
        "gauge",
        "The commit deployed.",
        vec![(format!("{{commit=\"{}\"}}", label(commit)), 1)],
    );
    family(
        "quadsync_containers",
        "gauge",
        "Containers (users) quadsync manages.",
        vec![(String::new(), state.users.len() as u64)],
    );
    let per_container = |value: &dyn Fn(&str) -> u64| -> Vec<(String, u64)> {
        state
            .users
            .keys()
            .map(|user| (format!("{{container=\"{user}\"}}"), value(user.as_str())))
            .collect()
    };
    let health = &state.health;
    let record = |user: &str| health.containers.get(user).cloned().unwrap_or_default();
    family(
        "quadsync_container_failing",
        "gauge",
        "Whether the container failed or keeps restarting, and has not recovered.",
        per_container(&|user| u64::from(health.is_open(Kind::ContainerFailing, user))),
    );
    if let Some(live) = live {
        family(
            "quadsync_container_state",
            "gauge",
            "The container unit's state, as systemd reports it now.",
            state
                .users
                .keys()
                .map(|user| {
                    let state = live.get(user).map_or("unknown", ActiveState::name);
                    (format!("{{container=\"{user}\",state=\"{}\"}}", label(state)), 1)
                })
                .collect(),
        );
    }
    let counters: [Counter; 5] = [
        ("quadsync_container_failures_total", "Times a unit of the container failed.", |r| {
            r.failures
        }),
        (
            "quadsync_container_restarts_total",
            "Times systemd restarted a unit of the container after a failure.",
            |r| r.restarts,
        ),
        ("quadsync_image_updates_total", "Images podman auto-update replaced.", |r| r.updates),
        (
            "quadsync_image_rollbacks_total",
            "Image updates rolled back (the new image did not start or become healthy).",
            |r| r.rollbacks,
        ),
        (
            "quadsync_image_update_failures_total",
            "Image updates that failed, rollback included.",
            |r| r.update_failures,
        ),
    ];
    for (name, help, count) in counters {
        family(name, "counter", help, per_container(&|user| count(&record(user))));
    }
    family(
        "quadsync_notifications_pending",
        "gauge",
        "Notifications not delivered yet.",
        vec![(String::new(), health.outbox.len() as u64)],
    );
    out
}

/// A per-container counter: its name, its help, and which count of the container's record.
type Counter = (&'static str, &'static str, fn(&ContainerRecord) -> u64);

/// A label value: only what cannot break the format (commits, states and names are plain).
fn label(value: &str) -> String {
    value.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{LastSync, ManagedUser};

    #[test]
    fn every_family_has_help_and_type_and_each_container_its_samples() {
        let mut state = State {
            commit: Some("abc123".into()),
            last_sync: Some(LastSync { at: 1700, ok: true, message: "deployed".into() }),
            ..State::default()
        };
        for user in ["web", "db"] {
            let managed = ManagedUser {
                service: format!("{user}.service"),
                files: BTreeMap::new(),
                result: String::new(),
            };
            state.users.insert(user.parse().unwrap(), managed);
        }
        state.health.record("web").rollbacks = 2;
        state.health.raise("h", Kind::ContainerFailing, "db", "failed", 5);
        let live: BTreeMap<UserName, ActiveState> =
            [("web".parse().unwrap(), ActiveState::Active)].into();
        let text = render(&state, Some(&live));
        for line in [
            "quadsync_last_sync_timestamp_seconds 1700",
            "quadsync_last_sync_success 1",
            "quadsync_deployed_commit_info{commit=\"abc123\"} 1",
            "quadsync_containers 2",
            "quadsync_container_failing{container=\"db\"} 1",
            "quadsync_container_failing{container=\"web\"} 0",
            "quadsync_container_state{container=\"web\",state=\"active\"} 1",
            "quadsync_container_state{container=\"db\",state=\"unknown\"} 1",
            "quadsync_image_rollbacks_total{container=\"web\"} 2",
            "# TYPE quadsync_image_rollbacks_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in:\n{text}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(families, text.lines().filter(|l| l.starts_with("# HELP ")).count());
        assert!(!render(&state, None).contains("quadsync_container_state"));
        assert_eq!(label("a\"b}\nc"), "abc");
    }
}
