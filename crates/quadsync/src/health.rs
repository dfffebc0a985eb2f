//! Hearing about failures: the problems quadsync has seen, each opened once, reminded of at
//! most hourly while it lasts, and closed by a recovery; the events that go to
//! `QUADSYNC_NOTIFY_URL`; and the counts the metrics show. Pure: what was seen comes in
//! ([`crate::journal`], the sync's result), events go out.
//!
//! The problems: a failed sync (closed by the next good one), a container that fails or keeps
//! restarting (closed once a run sees it active and nothing failed since), an image update rolled
//! back or failed (closed by the container's next successful update).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journal::UpdateOutcome;

/// A problem is told again after this long if it lasts (seconds).
pub const REMIND_AFTER: u64 = 3600;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    SyncFailed,
    ContainerFailing,
    UpdateRolledBack,
    UpdateFailed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SyncFailed => "sync_failed",
            Kind::ContainerFailing => "container_failing",
            Kind::UpdateRolledBack => "update_rolled_back",
            Kind::UpdateFailed => "update_failed",
        }
    }
}

/// An open problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: Kind,
    /// `sync`, or the container (its user).
    pub subject: String,
    /// When it was first seen, and last told (seconds since the epoch).
    pub since: u64,
    pub told: u64,
    pub detail: String,
}

/// What happened to one container, for `status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub updates: u64,
    #[serde(default)]
    pub rollbacks: u64,
    #[serde(default)]
    pub update_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<LastUpdate>,
}

/// The last image update that did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpdate {
    pub at: u64,
    pub outcome: UpdateOutcome,
    pub container: String,
    pub image: String,
}

/// Whether an event opens (or reminds of) a problem or closes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Problem,
    Recovered,
}

/// What is sent (`QUADSYNC_NOTIFY_URL`), as documented in the README: a small JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The schema's version: 1.
    pub version: u32,
    /// The host (its full hostname).
    pub host: String,
    pub event: Phase,
    pub kind: Kind,
    pub subject: String,
    /// One line, for people; never a secret or a URL's credentials.
    pub message: String,
    /// When the problem began, and when this was sent (seconds since the epoch).
    pub since: u64,
    pub at: u64,
}

/// Everything of the above that lasts between runs (in `state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub problems: BTreeMap<String, Problem>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Where the last run stopped reading the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_cursor: Option<String>,
    /// Events not delivered yet (see [`crate::notify`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<crate::notify::Pending>,
}

fn key(kind: Kind, subject: &str) -> String {
    format!("{}:{subject}", kind.as_str())
}

impl Health {
    pub fn is_empty(&self) -> bool {
        self == &Health::default()
    }

    pub fn is_open(&self, kind: Kind, subject: &str) -> bool {
        self.problems.contains_key(&key(kind, subject))
    }

    /// The open problems of `subject`.
    pub fn problems_of<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a Problem> {
        self.problems.values().filter(move |p| p.subject == subject)
    }

    /// Opens a problem, or reminds of it when it was told more than an hour ago: the event to
    /// send, if any.
    pub fn raise(
        &mut self,
        host: &str,
        kind: Kind,
        subject: &str,
        detail: &str,
        now: u64,
    ) -> Option<Event> {
        let problem = self.problems.entry(key(kind, subject)).or_insert_with(|| Problem {
            kind,
            subject: subject.to_owned(),
            since: now,
            told: 0,
            detail: String::new(),
        });
        problem.detail = detail.to_owned();
        let first = problem.told == 0;
        if !first && now.saturating_sub(problem.told) < REMIND_AFTER {
            return None;
        }
        problem.told = now;
        let message = match first {
            true => detail.to_owned(),
            false => format!("still: {detail}"),
        };
        Some(event(host, Phase::Problem, problem, message, now))
    }

    /// Closes a problem: the recovery to send, if it was open.
    pub fn resolve(
        &mut self,
        host: &str,
        kind: Kind,
        subject: &str,
        how: &str,
        now: u64,
    ) -> Option<Event> {
        let problem = self.problems.remove(&key(kind, subject))?;
        Some(event(host, Phase::Recovered, &problem, how.to_owned(), now))
    }

    pub fn record(&mut self, container: &str) -> &mut ContainerRecord {
        self.containers.entry(container.to_owned()).or_default()
    }

    /// Forgets a container that left the host.
    pub fn forget(&mut self, container: &str) {
        self.containers.remove(container);
        self.problems.retain(|_, p| p.subject != container);
    }
}

fn event(host: &str, phase: Phase, problem: &Problem, message: String, now: u64) -> Event {
    Event {
        version: 1,
        host: host.to_owned(),
        event: phase,
        kind: problem.kind,
        subject: problem.subject.clone(),
        message: crate::notify::scrub(&message),
        since: problem.since,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_told_once_an_hour_at_most_and_its_recovery_once() {
        let mut health = Health::default();
        let raise =
            |h: &mut Health, now| h.raise("h1", Kind::ContainerFailing, "web", "failed", now);
        let first = raise(&mut health, 1000).expect("the first sighting is told");
        assert_eq!(
            (first.event, first.since, first.message.as_str()),
            (Phase::Problem, 1000, "failed")
        );
        assert_eq!(raise(&mut health, 1120), None, "two minutes later: quiet");
        assert_eq!(raise(&mut health, 1000 + REMIND_AFTER - 1), None);
        let reminder = raise(&mut health, 1000 + REMIND_AFTER).expect("an hour later: reminded");
        assert_eq!((reminder.since, reminder.message.as_str()), (1000, "still: failed"));
        let recovered =
            health.resolve("h1", Kind::ContainerFailing, "web", "active again", 9000).unwrap();
        assert_eq!((recovered.event, recovered.since), (Phase::Recovered, 1000));
        assert_eq!(health.resolve("h1", Kind::ContainerFailing, "web", "again", 9001), None);
        assert!(raise(&mut health, 9002).is_some(), "a new failure is a new problem");
    }

    #[test]
    fn kinds_and_subjects_are_separate_problems_and_events_have_the_schema() {
        let mut health = Health::default();
        assert!(health.raise("h1", Kind::UpdateRolledBack, "web", "rolled back", 5).is_some());
        assert!(health.raise("h1", Kind::ContainerFailing, "web", "failed", 5).is_some());
        assert!(health.raise("h1", Kind::UpdateRolledBack, "db", "rolled back", 5).is_some());
        assert_eq!(health.problems_of("web").count(), 2);
        health.forget("web");
        assert_eq!(health.problems.len(), 1);
        let event =
            health.raise("h1", Kind::SyncFailed, "sync", "fetch of https://u:p@h/r failed", 7);
        let json = serde_json::to_value(event.unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1, "host": "h1", "event": "problem", "kind": "sync_failed",
                "subject": "sync", "message": "fetch of https://***@h/r failed",
                "since": 7, "at": 7
            })
        );
    }
}
