//! What happened to the containers between two runs, from the journal: one `journalctl` for
//! every user, after the cursor the last run stopped at.
//!
//! Only fields journald sets itself (`_UID`, `_SYSTEMD_USER_UNIT`) are trusted to say who: the
//! user whose manager or service logged it. The rest a process can set when it logs: systemd's
//! `MESSAGE_ID`s for a unit that started, stopped, failed or is being restarted, and the
//! auto-update report lines of the user's own `podman-auto-update.service`. So a container user
//! could forge them, but only about its own containers, since each is taken as the logging
//! user's (and a report's names only in plain characters).

use serde::Deserialize;

use crate::autoupdate::{REPORT_MARK, SERVICE};

/// systemd's message ids (`sd-messages.h`).
const UNIT_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";
const UNIT_STOPPED: &str = "9d1aaa27d60140bd96365438aad20286";
const UNIT_FAILURE_RESULT: &str = "d9b373ed55a64feb8242e02dbe79a49c";
const UNIT_RESTART_SCHEDULED: &str = "5eb03494b6584870a536b337290809b3";

/// The most entries one run reads: the latest, should a host have logged more. With journald's
/// own cap on a line (`LineMax`, 48 KiB) this bounds what a run holds, whatever a container's
/// user logs; two minutes of a busy host's unit messages are far fewer.
pub const MAX_ENTRIES: usize = 2000;

/// The arguments of the one `journalctl` a run makes.
pub fn arguments(after_cursor: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-pager",
        "--quiet",
        "-o",
        "json",
        "--output-fields=MESSAGE,MESSAGE_ID,USER_UNIT,_UID,_SYSTEMD_USER_UNIT",
    ]
    .map(str::to_owned)
    .into();
    args.push(format!("--lines={MAX_ENTRIES}"));
    args.push(match after_cursor {
        Some(cursor) => format!("--after-cursor={cursor}"),
        // The first run looks back no further than one sync.
        None => "--since=-2min".into(),
    });
    for id in [UNIT_STARTED, UNIT_STOPPED, UNIT_FAILURE_RESULT, UNIT_RESTART_SCHEDULED] {
        args.push(format!("MESSAGE_ID={id}"));
    }
    args.push("+".into());
    args.push(format!("_SYSTEMD_USER_UNIT={SERVICE}"));
    args
}

/// One thing seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The user it happened to (`_UID`).
    pub uid: u32,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// `unit` (a user unit) started, stopped on request, failed, or is restarted after failing.
    /// A container stopped on request often "fails" too (podman's exit status 143, or killed
    /// while starting at a shutdown): systemd then logs "Stopped" right after the failure, which
    /// a crash never has.
    Started {
        unit: String,
    },
    Stopped {
        unit: String,
    },
    Failed {
        unit: String,
    },
    RestartScheduled {
        unit: String,
    },
    /// `podman auto-update`'s line for one container.
    Update {
        container: String,
        image: String,
        outcome: UpdateOutcome,
    },
}

/// What `podman auto-update` did to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOutcome {
    /// The image had not changed.
    Unchanged,
    Updated,
    /// The new image did not start (or become healthy): the previous one runs again.
    RolledBack,
    /// The update failed, and so did the rollback, or the image could not be pulled.
    Failed,
}

impl UpdateOutcome {
    /// podman's `{{.Updated}}`: `true`, `false`, `rolled back`, `failed`.
    fn from_podman(text: &str) -> Option<UpdateOutcome> {
        match text {
            "false" => Some(UpdateOutcome::Unchanged),
            "true" => Some(UpdateOutcome::Updated),
            "rolled back" => Some(UpdateOutcome::RolledBack),
            "failed" => Some(UpdateOutcome::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Unchanged => "unchanged",
            UpdateOutcome::Updated => "updated",
            UpdateOutcome::RolledBack => "rolled back",
            UpdateOutcome::Failed => "failed",
        }
    }
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "__CURSOR")]
    cursor: Option<String>,
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
    #[serde(rename = "MESSAGE_ID")]
    message_id: Option<String>,
    #[serde(rename = "USER_UNIT")]
    user_unit: Option<String>,
    #[serde(rename = "_UID")]
    uid: Option<String>,
    #[serde(rename = "_SYSTEMD_USER_UNIT")]
    systemd_user_unit: Option<String>,
}

/// Reads `journalctl -o json` output: what was seen, and the last cursor (where the next run
/// starts). Lines that do not parse are skipped: a journal is not ours to refuse.
pub fn parse(output: &str) -> (Vec<Seen>, Option<String>) {
    let mut seen = Vec::new();
    let mut cursor = None;
    for line in output.lines() {
        let Ok(entry) = serde_json::from_str::<Entry>(line) else { continue };
        if entry.cursor.is_some() {
            cursor = entry.cursor.clone();
        }
        let Some(uid) = entry.uid.as_deref().and_then(|u| u.parse::<u32>().ok()) else {
            continue;
        };
        // journald stores a message that is not valid UTF-8 as an array of bytes.
        let message = match &entry.message {
            Some(serde_json::Value::String(text)) => text.as_str(),
            _ => "",
        };
        let what = match (entry.message_id.as_deref(), entry.user_unit) {
            (Some(UNIT_STARTED), Some(unit)) => What::Started { unit },
            (Some(UNIT_STOPPED), Some(unit)) => What::Stopped { unit },
            (Some(UNIT_FAILURE_RESULT), Some(unit)) => What::Failed { unit },
            (Some(UNIT_RESTART_SCHEDULED), Some(unit)) => What::RestartScheduled { unit },
            _ if entry.systemd_user_unit.as_deref() == Some(SERVICE) => {
                match update_line(message) {
                    Some(what) => what,
                    None => continue,
                }
            }
            _ => continue,
        };
        seen.push(Seen { uid, what });
    }
    (seen, cursor)
}

/// `quadsync-auto-update CONTAINER IMAGE OUTCOME`, as the service drop-in has podman print it.
/// The user's own service prints it, so a user could print anything: only names and image
/// references of plain characters and sane length are taken (they go into notifications).
fn update_line(message: &str) -> Option<What> {
    let rest = message.strip_prefix(REPORT_MARK)?.strip_prefix(' ')?;
    let (container, rest) = rest.split_once(' ')?;
    let (image, outcome) = rest.split_once(' ')?;
    let outcome = UpdateOutcome::from_podman(outcome.trim())?;
    let plain = |text: &str, extra: &[char], most: usize| {
        !text.is_empty()
            && text.len() <= most
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c))
    };
    if !plain(container, &[], 128) || !plain(image, &[':', '/', '@'], 255) {
        return None;
    }
    Some(What::Update { container: container.to_owned(), image: image.to_owned(), outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_update_reports_are_read_with_their_user_and_the_cursor_kept() {
        let output = [
            r#"{"__CURSOR":"c1","_UID":"1001","MESSAGE_ID":"39f53479d3a045ac8e11786248231fbf","USER_UNIT":"web.service","MESSAGE":"Started web.service."}"#,
            r#"{"__CURSOR":"c2","_UID":"1001","MESSAGE_ID":"d9b373ed55a64feb8242e02dbe79a49c","USER_UNIT":"web.service","MESSAGE":"web.service: Failed with result 'exit-code'."}"#,
            r#"{"__CURSOR":"c3","_UID":"1002","MESSAGE_ID":"5eb03494b6584870a536b337290809b3","USER_UNIT":"db.service"}"#,
            r#"{"__CURSOR":"c3b","_UID":"1002","MESSAGE_ID":"9d1aaa27d60140bd96365438aad20286","USER_UNIT":"db.service"}"#,
            r#"{"__CURSOR":"c4","_UID":"1001","_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"quadsync-auto-update systemd-web localhost/web:latest rolled back"}"#,
            r#"{"__CURSOR":"c5","_UID":"1001","_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"Trying to pull docker.io/library/nginx..."}"#,
            r#"{"__CURSOR":"c6","_UID":"1003","_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"quadsync-auto-update app docker.io/x:1 true"}"#,
            r#"{"__CURSOR":"c7","_UID":"1003","_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":[113,117]}"#,
            r#"{"__CURSOR":"c7b","_UID":"1003","_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"quadsync-auto-update app Click<a>http://evil true"}"#,
            r#"{"__CURSOR":"c7c","_UID":"1003","_SYSTEMD_USER_UNIT":"podman-auto-update.service","MESSAGE":"quadsync-auto-update app\u001b[31m x:1 true"}"#,
            "not json",
            r#"{"__CURSOR":"c8","MESSAGE_ID":"39f53479d3a045ac8e11786248231fbf","USER_UNIT":"x.service"}"#,
        ]
        .join("\n");
        let (seen, cursor) = parse(&output);
        assert_eq!(cursor.as_deref(), Some("c8"));
        let unit = |u: &str| u.to_owned();
        assert_eq!(
            seen,
            [
                Seen { uid: 1001, what: What::Started { unit: unit("web.service") } },
                Seen { uid: 1001, what: What::Failed { unit: unit("web.service") } },
                Seen { uid: 1002, what: What::RestartScheduled { unit: unit("db.service") } },
                Seen { uid: 1002, what: What::Stopped { unit: unit("db.service") } },
                Seen {
                    uid: 1001,
                    what: What::Update {
                        container: "systemd-web".into(),
                        image: "localhost/web:latest".into(),
                        outcome: UpdateOutcome::RolledBack
                    }
                },
                Seen {
                    uid: 1003,
                    what: What::Update {
                        container: "app".into(),
                        image: "docker.io/x:1".into(),
                        outcome: UpdateOutcome::Updated
                    }
                },
            ]
        );
    }

    #[test]
    fn the_query_starts_after_the_cursor_and_is_bounded() {
        let args = arguments(Some("s=abc"));
        assert!(args.contains(&"--after-cursor=s=abc".to_owned()));
        assert!(args.contains(&format!("--lines={MAX_ENTRIES}")));
        let plus = args.iter().position(|a| a == "+").unwrap();
        assert_eq!(args[plus + 1], "_SYSTEMD_USER_UNIT=podman-auto-update.service");
        assert!(arguments(None).contains(&"--since=-2min".to_owned()));
    }
}
