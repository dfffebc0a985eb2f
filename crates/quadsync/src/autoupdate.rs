//! Image updates, Podman's way: a container opts in with `AutoUpdate=registry` (or `local`) in
//! its `[Container]`, and quadsync enables podman's own `podman-auto-update.timer` in that
//! user's systemd, with two drop-ins it owns like any other file it deploys:
//!
//! * the timer's schedule, from `QUADSYNC_AUTO_UPDATE` (`daily`, `weekly`, `off`, or any
//!   systemd `OnCalendar=` expression), with a randomized delay so a fleet does not pull at once;
//! * the service's command, `podman auto-update` with a one-line report per container, which
//!   quadsync reads back from the journal ([`crate::journal`]) to record the outcome.
//!
//! Health-gated rollback: a container with a `HealthCmd=` that opted in gets `Notify=healthy`
//! (unless it sets `Notify=` itself), so its start, and so an update's restart, succeeds only
//! once it is healthy; when it does not get there, `podman auto-update` rolls the image back.

use tailpod_core::unit::{Entry, UnitFile};

use crate::discover::{Desired, UnitDir, UserFile};

/// Podman's timer and service in the user's systemd.
pub const TIMER: &str = "podman-auto-update.timer";
pub const SERVICE: &str = "podman-auto-update.service";
/// The drop-ins quadsync deploys for them.
pub const TIMER_DROP_IN: &str = "quadsync-schedule.conf";
pub const SERVICE_DROP_IN: &str = "quadsync-report.conf";
/// Starts each line of the report (`MARK CONTAINER IMAGE OUTCOME`).
pub const REPORT_MARK: &str = "quadsync-auto-update";

pub use tailpod_core::settings::Schedule;

/// Whether a unit opted in (`AutoUpdate=` in its `[Container]`).
pub fn opted_in(unit: &UnitFile) -> bool {
    unit.last_value("Container", "AutoUpdate").is_some_and(|v| !v.trim().is_empty())
}

/// `Notify=healthy` for a container that opted in and has a health check, unless it says
/// otherwise: an update then counts only once the new image is healthy.
pub fn health_gate(unit: &mut UnitFile) {
    let gated = opted_in(unit)
        && unit.last_value("Container", "HealthCmd").is_some()
        && unit.last_value("Container", "Notify").is_none();
    if let (true, Some(section)) =
        (gated, unit.sections.iter_mut().rev().find(|s| s.name() == "Container"))
    {
        section.push_entry(Entry::new("Notify", "healthy"));
    }
}

/// Adds the drop-ins to every deployment with a container that opted in (none when the
/// schedule is `off`: podman's timer is then left disabled).
pub fn add_drop_ins(desired: &mut Desired, schedule: &Schedule) {
    let Schedule::Calendar(calendar) = schedule else { return };
    let timer = format!(
        "# quadsync: QUADSYNC_AUTO_UPDATE={calendar}\n[Timer]\nOnCalendar=\nOnCalendar={calendar}\n\
         RandomizedDelaySec={}\nPersistent=true\n",
        Schedule::delay(calendar)
    );
    let service = format!(
        "# quadsync: one line per container, which quadsync reads back from the journal.\n\
         [Service]\nExecStart=\nExecStart=/usr/bin/podman auto-update --format \
         \"{REPORT_MARK} {{{{.ContainerName}}}} {{{{.Image}}}} {{{{.Updated}}}}\"\n"
    );
    for deployment in desired.values_mut() {
        let opted = deployment.files.iter().any(|(name, file)| {
            // Parsed only where the key is named at all: this runs for every unit every sync.
            file.dir == UnitDir::Quadlet
                && name.ends_with(".container")
                && file.text.contains("AutoUpdate")
                && opted_in(&UnitFile::parse(&file.text))
        });
        if opted {
            let files = [
                (TIMER_DROP_IN, UnitDir::AutoUpdateTimer, &timer),
                (SERVICE_DROP_IN, UnitDir::AutoUpdateService, &service),
            ];
            for (name, dir, text) in files {
                deployment.files.insert(name.into(), UserFile { dir, text: text.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Deployment;

    #[test]
    fn a_health_check_gates_the_start_of_an_opted_in_container() {
        let gate = |text: &str| {
            let mut unit = UnitFile::parse(text);
            health_gate(&mut unit);
            unit.last_value("Container", "Notify").map(str::to_owned)
        };
        let opted = "[Container]\nImage=x\nAutoUpdate=registry\nHealthCmd=/bin/true\n";
        assert_eq!(gate(opted).as_deref(), Some("healthy"));
        assert_eq!(gate(&format!("{opted}Notify=true\n")).as_deref(), Some("true"));
        assert_eq!(gate("[Container]\nImage=x\nHealthCmd=/bin/true\n"), None);
        assert_eq!(gate("[Container]\nImage=x\nAutoUpdate=local\n"), None);
    }

    #[test]
    fn only_opted_in_deployments_get_the_timer_and_its_report() {
        let deployment = |text: &str| {
            let mut d = Deployment::new("web".parse().unwrap(), "web.service".into());
            d.files.insert(
                "web.container".into(),
                UserFile { dir: UnitDir::Quadlet, text: text.into() },
            );
            d
        };
        let mut desired: Desired = [
            ("web".parse().unwrap(), deployment("[Container]\nImage=x\nAutoUpdate=registry\n")),
            ("db".parse().unwrap(), deployment("[Container]\nImage=x\n")),
        ]
        .into();
        add_drop_ins(&mut desired, &Schedule::Calendar("weekly".into()));
        let web = &desired["web"];
        assert_eq!(web.timers().collect::<Vec<_>>(), [TIMER]);
        let timer = &web.files[TIMER_DROP_IN];
        assert_eq!(timer.dir, UnitDir::AutoUpdateTimer);
        assert!(timer.text.contains("OnCalendar=\nOnCalendar=weekly\nRandomizedDelaySec=1h"));
        let service = &web.files[SERVICE_DROP_IN].text;
        assert!(service.contains(
            "ExecStart=/usr/bin/podman auto-update --format \"quadsync-auto-update {{.ContainerName}} {{.Image}} {{.Updated}}\""
        ));
        assert_eq!(desired["db"].files.len(), 1);
        assert_eq!(desired["db"].timers().count(), 0);

        let mut off = desired.clone();
        off.get_mut("web").unwrap().files.retain(|n, _| n == "web.container");
        add_drop_ins(&mut off, &Schedule::Off);
        assert_eq!(off["web"].files.len(), 1);
    }
}
