//! Telling people: each [`Event`] is POSTed to every `QUADSYNC_NOTIFY_URL` as JSON (the schema
//! is [`Event`]'s), or, for an ntfy topic (`ntfy.sh`, or any URL written `ntfy+https://…`), as
//! ntfy's plain-text message with a `Title:` header.
//!
//! Delivery never fails a sync: an event that cannot be delivered waits in the state's outbox
//! and is tried again at later runs, after 2, 4, 8 … minutes (at most an hour apart), and dropped
//! after a day. The URLs themselves are secrets (webhook tokens live in them): logs show only the
//! scheme and host, and no message carries a URL's credentials ([`scrub`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use tailpod_core::settings::Webhook;

use crate::health::{Event, Phase};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An undelivered event is dropped after this long (seconds).
const GIVE_UP_AFTER: u64 = 86_400;
/// The most events that wait; the oldest go first.
const MAX_PENDING: usize = 200;

/// One place events go (see [`tailpod_core::settings::Webhook`]).
pub type Target = Webhook;

/// A digest of a target's URL: names it in the outbox without the URL.
fn id(target: &Target) -> String {
    use sha2::Digest;
    crate::state::hex(&sha2::Sha256::digest(target.url.as_bytes())[..8])
}

/// `QUADSYNC_NOTIFY_URL`: URLs separated by commas or spaces. Errors never show the URL.
pub fn targets(setting: &str) -> Result<Vec<Target>, String> {
    tailpod_core::settings::webhooks(setting)
}

/// `text` with the credentials of any URL in it removed (`https://user:token@host` becomes
/// `https://***@host`).
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', ' ', '\'', '"']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(credentials) => {
                out.push_str("***");
                rest = &tail[credentials..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// An event still to deliver to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub target: String,
    pub event: Event,
    pub attempts: u32,
    /// Not before this time (seconds since the epoch).
    pub next: u64,
}

/// The wait before attempt `attempts + 1`: 2 minutes, doubling, at most an hour.
fn backoff(attempts: u32) -> u64 {
    (120u64 << attempts.min(5)).min(3600)
}

/// Queues `events` for every target, then tries what is due; what fails waits for a later run.
/// `send` does one delivery (the real one is [`send`]).
pub fn deliver(
    targets: &[Target],
    outbox: &mut Vec<Pending>,
    events: Vec<Event>,
    now: u64,
    send: &dyn Fn(&Target, &Event) -> Result<(), String>,
) {
    for event in events {
        for target in targets {
            outbox.push(Pending {
                target: id(target),
                event: event.clone(),
                attempts: 0,
                next: now,
            });
        }
    }
    outbox.retain(|p| {
        let keep = now.saturating_sub(p.event.at) < GIVE_UP_AFTER;
        if !keep {
            log::warn!("notification dropped after a day undelivered: {}", p.event.message);
        }
        keep
    });
    if outbox.len() > MAX_PENDING {
        let dropped = outbox.len() - MAX_PENDING;
        log::warn!(
            "{dropped} undelivered notification(s) dropped: more than {MAX_PENDING} waiting"
        );
        outbox.drain(..dropped);
    }
    let ids: Vec<String> = targets.iter().map(id).collect();
    // A target that failed once this run is not tried again until a later one: a server that
    // hangs costs one timeout a run, not one per waiting event.
    let mut failed: Vec<&str> = Vec::new();
    outbox.retain_mut(|pending| {
        // A target no longer configured takes its events with it.
        let Some(at) = ids.iter().position(|i| *i == pending.target) else { return false };
        if pending.next > now || failed.contains(&ids[at].as_str()) {
            return true;
        }
        match send(&targets[at], &pending.event) {
            Ok(()) => false,
            Err(e) => {
                failed.push(&ids[at]);
                pending.attempts += 1;
                pending.next = now + backoff(pending.attempts);
                log::warn!(
                    "notifying {}: {e}; trying again in {} s",
                    targets[at].shown(),
                    pending.next - now
                );
                true
            }
        }
    });
}

/// Delivers one event over HTTP.
pub fn send(target: &Target, event: &Event) -> Result<(), String> {
    // One client a process: its trust store is loaded once, not for every event.
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("quadsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    });
    let request = agent.post(&target.url);
    let response = if target.ntfy {
        let (title, priority, tags) = match event.event {
            Phase::Problem => (format!("{}: {}", event.host, event.kind.as_str()), "4", "warning"),
            Phase::Recovered => (format!("{}: recovered", event.host), "3", "white_check_mark"),
        };
        request
            .header("Title", &title)
            .header("Priority", priority)
            .header("Tags", tags)
            .content_type("text/plain; charset=utf-8")
            .send(format!("{}: {}", event.subject, event.message))
    } else {
        let body = serde_json::to_string(event).map_err(|e| e.to_string())?;
        request.content_type("application/json").send(body)
    };
    // ureq's errors name the URL, which may carry a token: only its kind is shown.
    let response = response.map_err(|e| match e {
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        ureq::Error::Io(e) => e.kind().to_string(),
        _ => "the request failed".to_owned(),
    })?;
    match response.status().as_u16() {
        200..=299 => Ok(()),
        status => Err(format!("answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::health::Kind;

    fn event(at: u64) -> Event {
        Event {
            version: 1,
            host: "h1".into(),
            event: Phase::Problem,
            kind: Kind::SyncFailed,
            subject: "sync".into(),
            message: "x".into(),
            since: at,
            at,
        }
    }

    #[test]
    fn credentials_in_urls_are_scrubbed_from_messages() {
        assert_eq!(
            scrub("fetching https://user:tok@git.example/r.git and ssh://git@h:22/r failed"),
            "fetching https://***@git.example/r.git and ssh://***@h:22/r failed"
        );
        assert_eq!(scrub("no url: a@b"), "no url: a@b");
        assert_eq!(scrub("https://h/p?x=a@b"), "https://h/p?x=a@b");
    }

    /// A webhook receiver on loopback: answers `status` to one request and hands it back.
    fn receiver(status: u16) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(answer.as_bytes()).unwrap();
            tx.send(String::from_utf8_lossy(&request).into_owned()).unwrap();
        });
        (format!("127.0.0.1:{port}"), rx)
    }

    #[test]
    fn events_are_posted_as_json_or_as_ntfy_text() {
        let (address, request) = receiver(200);
        let target = &targets(&format!("http://{address}/hook/secret-token")).unwrap()[0];
        send(target, &event(7)).unwrap();
        let request = request.recv().unwrap();
        assert!(request.starts_with("POST /hook/secret-token HTTP/1.1\r\n"), "{request}");
        assert!(
            request.to_ascii_lowercase().contains("content-type: application/json"),
            "{request}"
        );
        let body: serde_json::Value =
            serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body, serde_json::to_value(event(7)).unwrap());

        let (address, request) = receiver(200);
        let target = &targets(&format!("ntfy+http://{address}/alerts")).unwrap()[0];
        send(target, &event(7)).unwrap();
        let request = request.recv().unwrap();
        assert!(request.contains("\r\ntitle: h1: sync_failed\r\n"), "{request}");
        assert!(request.ends_with("\r\n\r\nsync: x"), "{request}");

        let (address, _request) = receiver(500);
        let target = &targets(&format!("http://{address}/hook/secret-token")).unwrap()[0];
        let err = send(target, &event(7)).unwrap_err();
        assert_eq!(err, "answered 500");
        // Nothing listening: the error never names the URL (its token).
        let closed = &targets("http://127.0.0.1:1/hook/secret-token").unwrap()[0];
        let err = send(closed, &event(7)).unwrap_err();
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[test]
    fn undelivered_events_wait_with_backoff_and_are_dropped_after_a_day() {
        let targets = targets("https://a.example/1,https://b.example/2").unwrap();
        let sent = RefCell::new(Vec::new());
        let a_down = |t: &Target, e: &Event| {
            sent.borrow_mut().push((t.shown(), e.at));
            if t.shown() == "https://a.example" { Err("answered 503".into()) } else { Ok(()) }
        };
        let mut outbox = Vec::new();
        deliver(&targets, &mut outbox, vec![event(100)], 100, &a_down);
        assert_eq!(sent.borrow().len(), 2);
        assert_eq!(outbox.len(), 1, "b got it; a waits");
        assert_eq!((outbox[0].attempts, outbox[0].next), (1, 100 + 240));
        deliver(&targets, &mut outbox, Vec::new(), 200, &a_down);
        assert_eq!(sent.borrow().len(), 2, "not due yet");
        deliver(&targets, &mut outbox, Vec::new(), 340, &a_down);
        assert_eq!((outbox[0].attempts, outbox[0].next), (2, 340 + 480));
        deliver(&targets, &mut outbox, Vec::new(), 100 + GIVE_UP_AFTER, &a_down);
        assert!(outbox.is_empty(), "a day later it is dropped");
        // A target taken out of the config takes its waiting events with it.
        deliver(&targets, &mut outbox, vec![event(5000)], 5000, &a_down);
        assert_eq!(outbox.len(), 1);
        deliver(&targets[1..], &mut outbox, Vec::new(), 9000, &a_down);
        assert!(outbox.is_empty());
        assert_eq!(backoff(20), 3600);
    }

    #[test]
    fn a_failing_target_costs_one_try_a_run_however_many_events_wait() {
        let targets = targets("https://a.example/1,https://b.example/2").unwrap();
        let sent = RefCell::new(Vec::new());
        let a_down = |t: &Target, _: &Event| {
            sent.borrow_mut().push(t.shown());
            if t.shown() == "https://a.example" { Err("timed out".into()) } else { Ok(()) }
        };
        let tries = |host: &str| sent.borrow().iter().filter(|t| *t == host).count();
        let mut outbox = Vec::new();
        deliver(&targets, &mut outbox, vec![event(100), event(101), event(102)], 100, &a_down);
        assert_eq!((tries("https://a.example"), tries("https://b.example")), (1, 3));
        assert_eq!(outbox.len(), 3, "a's three wait");
        let attempts: Vec<u32> = outbox.iter().map(|p| p.attempts).collect();
        assert_eq!(attempts, [1, 0, 0], "only the first was tried");
        deliver(&targets, &mut outbox, Vec::new(), 101, &a_down);
        assert_eq!(tries("https://a.example"), 2, "the next run tries one more, once");
    }
}
