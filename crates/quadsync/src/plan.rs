//! The plan: what a sync will do, computed as data from the desired state, quadsync's record and
//! what the host has, before anything is done. `quadsync plan` prints it; `sync` applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use tailpod_core::names::UserName;

use crate::discover::{Desired, UnitDir};
use crate::state::{State, deployed_files};

/// What the host has, read before planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Users that exist (by name), among those the plan is about. Sets: a host has up to
    /// thousands, and each is asked about once per user.
    pub existing_users: BTreeSet<UserName>,
    /// Users with linger enabled.
    pub lingering: BTreeSet<UserName>,
}

/// One step for one user, in the order it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    CreateUser,
    EnableLinger,
    StartUserManager,
    WriteFile { dir: UnitDir, name: String },
    DisableTimer { name: String },
    RemoveFile { dir: UnitDir, name: String },
    DaemonReload,
    EnableTimer { name: String },
    Restart { unit: String },
    StopUnit { unit: String },
    DisableLinger,
    RemoveUser,
}

/// What happens to a user as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Remove,
    /// Nothing is done; `reason` says why.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPlan {
    #[serde(serialize_with = "crate::state::user_name::serialize")]
    pub user: UserName,
    pub action: Action,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub commit: String,
    pub users: Vec<UserPlan>,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &UserPlan> {
        self.users.iter().filter(|u| !matches!(u.action, Action::Unchanged))
    }
}

/// Whether a person confirmed removing more than the policy's share (`--allow-mass-removal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MassRemoval {
    Refuse,
    Allow,
}

/// How much one sync may remove: at most `max_share` (0.0 to 1.0, `QUADSYNC_MAX_REMOVAL`) of the
/// managed containers, unless a mass removal was confirmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemovalPolicy {
    pub max_share: f64,
    pub mass_removal: MassRemoval,
}

impl RemovalPolicy {
    /// The Go quadsync's default: half, nothing confirmed.
    pub const DEFAULT: RemovalPolicy =
        RemovalPolicy { max_share: 0.5, mass_removal: MassRemoval::Refuse };
}

/// Computes the plan. Removals are refused (not planned) when they would remove more of the
/// managed users than `removal` allows.
pub fn plan(
    commit: &str,
    desired: &Desired,
    state: &State,
    host: &HostFacts,
    removal: RemovalPolicy,
) -> Plan {
    let max_removal = removal.max_share;
    let mut users: BTreeMap<&UserName, UserPlan> = BTreeMap::new();
    let exists = |name: &UserName| host.existing_users.contains(name);
    let lingers = |name: &UserName| host.lingering.contains(name);

    for (name, deployment) in desired {
        let wanted = deployed_files(deployment);
        if let Some(reason) = &deployment.held {
            let reason = Some(reason.clone());
            let held =
                UserPlan { user: name.clone(), action: Action::Refused, steps: Vec::new(), reason };
            users.insert(name, held);
            continue;
        }
        let plan = match state.users.get(name) {
            None if exists(name) => UserPlan {
                user: name.clone(),
                action: Action::Refused,
                steps: Vec::new(),
                reason: Some(format!(
                    "user {name} exists but quadsync did not create it; refusing to take it over"
                )),
            },
            None => {
                let mut steps = vec![Step::CreateUser, Step::EnableLinger, Step::StartUserManager];
                steps.extend(
                    deployment
                        .files
                        .iter()
                        .map(|(n, f)| Step::WriteFile { dir: f.dir, name: n.clone() }),
                );
                steps.push(Step::DaemonReload);
                steps.extend(deployment.timers().map(|t| Step::EnableTimer { name: t.to_owned() }));
                steps.push(Step::Restart { unit: deployment.service.clone() });
                UserPlan { user: name.clone(), action: Action::Create, steps, reason: None }
            }
            Some(managed) => {
                let mut steps = Vec::new();
                let recreate = !exists(name);
                if recreate {
                    steps.push(Step::CreateUser);
                }
                if recreate || !lingers(name) {
                    steps.push(Step::EnableLinger);
                }
                let changed: Vec<&String> = wanted
                    .iter()
                    .filter(|(n, f)| recreate || managed.files.get(*n) != Some(f))
                    .map(|(n, _)| n)
                    .collect();
                let stale: Vec<(&String, UnitDir)> = managed
                    .files
                    .iter()
                    .filter(|(n, _)| !wanted.contains_key(*n))
                    .map(|(n, f)| (n, UnitDir::from(f.dir)))
                    .collect();
                if changed.is_empty() && stale.is_empty() {
                    let action = if steps.is_empty() { Action::Unchanged } else { Action::Update };
                    users
                        .insert(name, UserPlan { user: name.clone(), action, steps, reason: None });
                    continue;
                }
                steps.push(Step::StartUserManager);
                for name in &changed {
                    steps.push(Step::WriteFile {
                        dir: deployment.files[*name].dir,
                        name: (*name).clone(),
                    });
                }
                // Files go before the reload; secrets the container used go after its restart.
                let (stale_secrets, stale_files): (Vec<_>, Vec<_>) =
                    stale.iter().partition(|(_, dir)| *dir == UnitDir::Secret);
                for (name, dir) in &stale_files {
                    if name.ends_with(".timer") {
                        steps.push(Step::DisableTimer { name: (*name).clone() });
                    }
                    if *dir == UnitDir::AutoUpdateTimer {
                        let name = crate::autoupdate::TIMER.to_owned();
                        steps.push(Step::DisableTimer { name });
                    }
                    steps.push(Step::RemoveFile { dir: *dir, name: (*name).clone() });
                }
                steps.push(Step::DaemonReload);
                steps.extend(deployment.timers().map(|t| Step::EnableTimer { name: t.to_owned() }));
                // A sidecar's change does not need the container restarted.
                let container_changed =
                    changed.iter().any(|n| deployment.files[*n].dir.restarts_container())
                        || stale.iter().any(|(_, dir)| dir.restarts_container());
                if container_changed {
                    steps.push(Step::Restart { unit: deployment.service.clone() });
                }
                for (name, dir) in stale_secrets {
                    steps.push(Step::RemoveFile { dir, name: (*name).clone() });
                }
                UserPlan { user: name.clone(), action: Action::Update, steps, reason: None }
            }
        };
        users.insert(name, plan);
    }

    let leaving: Vec<&UserName> =
        state.users.keys().filter(|u| !desired.contains_key(*u)).collect();
    let share =
        if state.users.is_empty() { 0.0 } else { leaving.len() as f64 / state.users.len() as f64 };
    let blocked =
        removal.mass_removal == MassRemoval::Refuse && !leaving.is_empty() && share > max_removal;
    for name in leaving {
        let managed = &state.users[name];
        let plan = if blocked {
            UserPlan {
                user: name.clone(),
                action: Action::Refused,
                steps: Vec::new(),
                reason: Some(format!(
                    "removing {:.0}% of the managed containers at once is above QUADSYNC_MAX_REMOVAL ({:.0}%); \
                     pass --allow-mass-removal if that is meant",
                    share * 100.0,
                    max_removal * 100.0
                )),
            }
        } else {
            let mut steps: Vec<Step> = managed
                .files
                .keys()
                .filter(|n| n.ends_with(".timer"))
                .map(|n| Step::DisableTimer { name: n.clone() })
                .collect();
            if exists(name) {
                steps.push(Step::StopUnit { unit: managed.service.clone() });
                steps.push(Step::DisableLinger);
                steps.push(Step::RemoveUser);
            }
            UserPlan { user: name.clone(), action: Action::Remove, steps, reason: None }
        };
        users.insert(name, plan);
    }
    Plan { commit: commit.to_owned(), users: users.into_values().collect() }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateUser => write!(f, "create the user (useradd, with subuid/subgid ranges)"),
            Step::EnableLinger => write!(f, "enable linger"),
            Step::StartUserManager => write!(f, "start the user's systemd"),
            Step::WriteFile { dir: UnitDir::Secret, name } => {
                write!(f, "create podman secret {name} (podman secret create --replace)")
            }
            Step::RemoveFile { dir: UnitDir::Secret, name } => {
                write!(f, "remove podman secret {name}")
            }
            Step::WriteFile { dir, name } => write!(f, "write ~/{}/{name}", dir.relative()),
            Step::DisableTimer { name } => write!(f, "disable {name}"),
            Step::RemoveFile { dir, name } => write!(f, "remove ~/{}/{name}", dir.relative()),
            Step::DaemonReload => write!(f, "reload the user's systemd"),
            Step::EnableTimer { name } => write!(f, "enable --now {name}"),
            Step::Restart { unit } => write!(f, "restart {unit}"),
            Step::StopUnit { unit } => write!(f, "stop {unit}"),
            Step::DisableLinger => write!(f, "disable linger"),
            Step::RemoveUser => write!(f, "remove the user and its home (userdel -r)"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "commit {}", self.commit)?;
        if self.changes().next().is_none() {
            return writeln!(f, "nothing to do: {} container(s) up to date", self.users.len());
        }
        for user in &self.users {
            let action = match user.action {
                Action::Create => "create",
                Action::Update => "update",
                Action::Unchanged => "unchanged",
                Action::Remove => "remove",
                Action::Refused => "REFUSED",
            };
            writeln!(f, "{}: {action}", user.user)?;
            if let Some(reason) = &user.reason {
                writeln!(f, "    {reason}")?;
            }
            for step in &user.steps {
                writeln!(f, "    {step}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{Deployment, UserFile};
    use crate::state::ManagedUser;

    fn deployment(user: &str, files: &[(&str, &str)]) -> Deployment {
        Deployment {
            files: files
                .iter()
                .map(|(n, t)| {
                    let dir = match n.rsplit_once('.') {
                        Some((_, "container")) => UnitDir::Quadlet,
                        Some(_) => UnitDir::Systemd,
                        None => UnitDir::Secret,
                    };
                    (n.to_string(), UserFile { dir, text: t.to_string() })
                })
                .collect(),
            ..Deployment::new(user.parse().unwrap(), format!("{user}.service"))
        }
    }

    fn desired(deployments: Vec<Deployment>) -> Desired {
        deployments.into_iter().map(|d| (d.user.clone(), d)).collect()
    }

    fn deployed(state: &mut State, d: &Deployment) {
        let files = deployed_files(d);
        state.users.insert(
            d.user.clone(),
            ManagedUser { service: d.service.clone(), files, result: "started".into() },
        );
    }

    fn host(users: &[&str]) -> HostFacts {
        let users: BTreeSet<UserName> = users.iter().map(|u| u.parse().unwrap()).collect();
        HostFacts { existing_users: users.clone(), lingering: users }
    }

    #[test]
    fn a_new_container_gets_the_full_sequence() {
        let d = desired(vec![deployment("web", &[("web.container", "a"), ("web-x.timer", "t")])]);
        let plan = plan("c1", &d, &State::default(), &HostFacts::default(), RemovalPolicy::DEFAULT);
        assert_eq!(plan.users[0].action, Action::Create);
        let steps: Vec<String> = plan.users[0].steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            steps,
            [
                "create the user (useradd, with subuid/subgid ranges)",
                "enable linger",
                "start the user's systemd",
                "write ~/.config/systemd/user/web-x.timer",
                "write ~/.config/containers/systemd/web.container",
                "reload the user's systemd",
                "enable --now web-x.timer",
                "restart web.service",
            ]
        );
    }

    #[test]
    fn a_changed_secret_restarts_its_container_and_a_dropped_one_goes_after_the_restart() {
        let mut state = State::default();
        let before = deployment("a", &[("a.container", "1"), ("a-token", "d1"), ("a-old", "d2")]);
        deployed(&mut state, &before);
        let after = desired(vec![deployment("a", &[("a.container", "1"), ("a-token", "d3")])]);
        let rotated = plan("c2", &after, &state, &host(&["a"]), RemovalPolicy::DEFAULT);
        let steps: Vec<String> = rotated.users[0].steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            steps,
            [
                "start the user's systemd",
                "create podman secret a-token (podman secret create --replace)",
                "reload the user's systemd",
                "restart a.service",
                "remove podman secret a-old",
            ]
        );
        // The same digest again: nothing to do.
        let unchanged = desired(vec![before.clone()]);
        let plan = plan("c3", &unchanged, &state, &host(&["a"]), RemovalPolicy::DEFAULT);
        assert_eq!(plan.users[0].action, Action::Unchanged);
    }

    #[test]
    fn a_held_deployment_is_refused_and_never_removed() {
        let mut state = State::default();
        let running = deployment("a", &[("a.container", "1")]);
        deployed(&mut state, &running);
        let held = Deployment {
            held: Some("a.container:5: secret a-token: cannot decrypt".into()),
            ..deployment("a", &[("a.container", "2")])
        };
        let plan = plan("c2", &desired(vec![held]), &state, &host(&["a"]), RemovalPolicy::DEFAULT);
        assert_eq!(plan.users.len(), 1);
        assert_eq!(plan.users[0].action, Action::Refused);
        assert!(plan.users[0].steps.is_empty());
        assert_eq!(
            plan.users[0].reason.as_deref(),
            Some("a.container:5: secret a-token: cannot decrypt")
        );
    }

    #[test]
    fn only_what_changed_is_written_and_restarted() {
        let before = vec![
            deployment("a", &[("a.container", "1")]),
            deployment("b", &[("b.container", "1"), ("b-x.timer", "t1")]),
        ];
        let mut state = State::default();
        before.iter().for_each(|d| deployed(&mut state, d));
        let after = desired(vec![
            deployment("a", &[("a.container", "2")]),
            deployment("b", &[("b.container", "1"), ("b-x.timer", "t2")]),
        ]);
        let plan = plan("c2", &after, &state, &host(&["a", "b"]), RemovalPolicy::DEFAULT);
        let a = &plan.users[0];
        assert_eq!(a.action, Action::Update);
        assert!(a.steps.contains(&Step::Restart { unit: "a.service".into() }));
        let b = &plan.users[1];
        assert_eq!(b.action, Action::Update);
        assert!(
            b.steps.contains(&Step::WriteFile { dir: UnitDir::Systemd, name: "b-x.timer".into() })
        );
        assert!(
            !b.steps.iter().any(|s| matches!(s, Step::Restart { .. })),
            "a timer edit does not restart the container"
        );

        let same = desired(before.clone());
        let nothing = super::plan("c1", &same, &state, &host(&["a", "b"]), RemovalPolicy::DEFAULT);
        assert!(nothing.changes().next().is_none());
        assert!(nothing.to_string().contains("nothing to do"));
    }

    #[test]
    fn stale_files_are_pruned_and_missing_linger_restored() {
        let mut state = State::default();
        deployed(
            &mut state,
            &deployment(
                "p",
                &[("p.container", "1"), ("p-old.timer", "t"), ("p-side.container", "s")],
            ),
        );
        let now = desired(vec![deployment("p", &[("p.container", "1")])]);
        let facts =
            HostFacts { existing_users: ["p".parse().unwrap()].into(), lingering: BTreeSet::new() };
        let steps = plan("c", &now, &state, &facts, RemovalPolicy::DEFAULT).users.remove(0).steps;
        assert_eq!(steps[0], Step::EnableLinger);
        assert!(steps.contains(&Step::DisableTimer { name: "p-old.timer".into() }));
        assert!(steps.contains(&Step::RemoveFile {
            dir: UnitDir::Quadlet,
            name: "p-side.container".into()
        }));
        assert!(steps.contains(&Step::Restart { unit: "p.service".into() }));
    }

    #[test]
    fn users_quadsync_did_not_create_are_never_touched() {
        let d = desired(vec![deployment("core", &[("core.container", "x")])]);
        let plan = plan("c", &d, &State::default(), &host(&["core"]), RemovalPolicy::DEFAULT);
        assert_eq!(plan.users[0].action, Action::Refused);
        assert!(plan.users[0].steps.is_empty());
    }

    #[test]
    fn mass_removal_is_refused_unless_allowed() {
        let mut state = State::default();
        for name in ["a", "b", "c"] {
            deployed(&mut state, &deployment(name, &[(&format!("{name}.container"), "1")]));
        }
        let empty = Desired::new();
        let refused = plan("c", &empty, &state, &host(&["a", "b", "c"]), RemovalPolicy::DEFAULT);
        assert!(refused.users.iter().all(|u| u.action == Action::Refused && u.steps.is_empty()));
        assert!(refused.to_string().contains("--allow-mass-removal"));

        let allowed = plan(
            "c",
            &empty,
            &state,
            &host(&["a", "b", "c"]),
            RemovalPolicy { mass_removal: MassRemoval::Allow, ..RemovalPolicy::DEFAULT },
        );
        assert!(allowed.users.iter().all(|u| u.action == Action::Remove));
        assert_eq!(
            allowed.users[0].steps,
            [Step::StopUnit { unit: "a.service".into() }, Step::DisableLinger, Step::RemoveUser]
        );

        // One of three (33%) is under the default 50%.
        let two = desired(vec![
            deployment("a", &[("a.container", "1")]),
            deployment("b", &[("b.container", "1")]),
        ]);
        let one_leaves = plan("c", &two, &state, &host(&["a", "b", "c"]), RemovalPolicy::DEFAULT);
        assert_eq!(one_leaves.users[2].action, Action::Remove);
    }
}
