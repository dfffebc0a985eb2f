//! The Tailscale API calls tailmint makes, following the published API:
//!
//! * `POST /api/v2/oauth/token`: client credentials for a one-hour access token;
//! * `POST /api/v2/tailnet/{tailnet}/keys`: an auth key with `capabilities.devices.create`;
//! * `GET /api/v2/tailnet/{tailnet}/devices` and `DELETE /api/v2/device/{id}`: stale nodes.
//!
//! Every call shares one deadline. Rate limits (429, honouring `Retry-After`), server errors and
//! network errors are retried with jittered backoff until the deadline; other failures are final
//! and explained. No error message contains a secret or a key.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use ureq::Agent;
use ureq::http::Response;

use crate::credentials::Secret;
use crate::retry::{Backoff, random_u64, retryable};

/// What the key should allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    pub tags: Vec<String>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub preauthorized: bool,
    pub expiry: Duration,
    pub description: String,
}

/// A device as the devices list shows it (only the fields tailmint reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Absent in some API versions: then the device's state is unknown, and it is left alone.
    #[serde(rename = "connectedToControl")]
    pub connected_to_control: Option<bool>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The API answered, and retrying will not help.
    Refused { status: u16, message: String },
    /// Retryable failures went on until the deadline.
    Deadline { last: String },
    /// The answer was not what the published API says.
    Malformed(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Refused { status, message } => write!(f, "HTTP {status}: {message}"),
            ApiError::Deadline { last } => write!(f, "gave up at the deadline; last error: {last}"),
            ApiError::Malformed(what) => write!(f, "unexpected answer: {what}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// A client for one run, with its deadline.
#[derive(Debug)]
pub struct Client {
    agent: Agent,
    base: String,
    deadline: Instant,
    backoff: Backoff,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct KeyAnswer {
    key: String,
}

#[derive(Deserialize)]
struct DevicesAnswer {
    devices: Vec<Device>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    message: String,
}

/// The `message` of a Tailscale error body, or the start of the body when it has none.
fn error_message(body: &str) -> String {
    match serde_json::from_str::<ErrorAnswer>(body) {
        Ok(answer) => answer.message,
        Err(_) => {
            let body: String = body.chars().take(200).collect();
            if body.trim().is_empty() { "(empty body)".into() } else { body.trim().to_owned() }
        }
    }
}

/// A retry delay asked for by the server, in seconds.
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Client {
    /// `base` is the API's origin (`https://api.tailscale.com`); `timeout` bounds the whole run.
    pub fn new(base: &str, timeout: Duration) -> Client {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("tailmint/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            deadline: Instant::now() + timeout,
            backoff: Backoff::default(),
        }
    }

    /// Sends a request built by `send` until it gets a final answer or the deadline passes.
    /// Returns the status and body of the final answer.
    fn call(
        &self,
        what: &str,
        send: impl Fn(&Agent, Duration) -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), ApiError> {
        let mut attempt = 0;
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::Deadline { last: format!("{what}: no time left") });
            }
            let (last, server_delay) = match send(&self.agent, remaining) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_to_string().unwrap_or_default();
                    if !retryable(status) {
                        return Ok((status, body));
                    }
                    let delay = retry_after(&response);
                    (format!("{what}: HTTP {status}: {}", error_message(&body)), delay)
                }
                Err(e) => (format!("{what}: {e}"), None),
            };
            let delay = server_delay.unwrap_or_else(|| self.backoff.delay(attempt, random_u64()));
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if delay >= remaining {
                return Err(ApiError::Deadline { last });
            }
            log::warn!("{last}; retrying in {} ms", delay.as_millis());
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    fn bearer(token: &Secret) -> String {
        format!("Bearer {}", token.expose())
    }

    /// Exchanges the OAuth client's credentials for an access token.
    pub fn token(&self, client_id: &str, secret: &Secret) -> Result<Secret, ApiError> {
        let url = format!("{}/api/v2/oauth/token", self.base);
        let (status, body) = self.call("requesting an access token", |agent, timeout| {
            agent.post(&url).config().timeout_global(Some(timeout)).build().send_form([
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret.expose()),
            ])
        })?;
        let body = ok_body(status, body)?;
        let answer: TokenAnswer = serde_json::from_str(&body)
            .map_err(|_| ApiError::Malformed("no access_token in the token answer".into()))?;
        if answer.access_token.is_empty() {
            return Err(ApiError::Malformed("empty access_token".into()));
        }
        Ok(Secret::new(answer.access_token))
    }

    /// Creates an auth key.
    pub fn create_key(
        &self,
        token: &Secret,
        tailnet: &str,
        request: &KeyRequest,
    ) -> Result<Secret, ApiError> {
        let url = format!("{}/api/v2/tailnet/{tailnet}/keys", self.base);
        let body = json!({
            "capabilities": { "devices": { "create": {
                "reusable": request.reusable,
                "ephemeral": request.ephemeral,
                "preauthorized": request.preauthorized,
                "tags": request.tags,
            }}},
            "expirySeconds": request.expiry.as_secs(),
            "description": request.description,
        });
        let (status, answer) = self.call("creating an auth key", |agent, timeout| {
            agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Authorization", &Self::bearer(token))
                .send_json(&body)
        })?;
        let answer = ok_body(status, answer)?;
        let answer: KeyAnswer = serde_json::from_str(&answer)
            .map_err(|_| ApiError::Malformed("no key in the create-key answer".into()))?;
        if answer.key.is_empty() {
            return Err(ApiError::Malformed("empty key".into()));
        }
        Ok(Secret::new(answer.key))
    }

    /// A bodyless request with the bearer token; the body of a 200 answer.
    fn authorized(
        &self,
        what: &str,
        method: &str,
        url: &str,
        token: &Secret,
    ) -> Result<String, ApiError> {
        let (status, body) = self.call(what, |agent, timeout| {
            let request = if method == "DELETE" { agent.delete(url) } else { agent.get(url) };
            request
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Authorization", &Self::bearer(token))
                .call()
        })?;
        ok_body(status, body)
    }

    /// Lists the tailnet's devices.
    pub fn devices(&self, token: &Secret, tailnet: &str) -> Result<Vec<Device>, ApiError> {
        let url = format!("{}/api/v2/tailnet/{tailnet}/devices", self.base);
        let body = self.authorized("listing devices", "GET", &url, token)?;
        serde_json::from_str::<DevicesAnswer>(&body)
            .map(|answer| answer.devices)
            .map_err(|e| ApiError::Malformed(format!("devices list: {e}")))
    }

    /// Deletes a device.
    pub fn delete_device(&self, token: &Secret, id: &str) -> Result<(), ApiError> {
        let url = format!("{}/api/v2/device/{id}", self.base);
        self.authorized("deleting a device", "DELETE", &url, token).map(drop)
    }
}

/// The body of a 200 answer; any other status is a refusal with the API's message.
fn ok_body(status: u16, body: String) -> Result<String, ApiError> {
    if status == 200 {
        Ok(body)
    } else {
        Err(ApiError::Refused { status, message: error_message(&body) })
    }
}

/// The devices a new node named `hostname` with `tags` replaces: same hostname, exactly the same
/// tags, and known to be offline. A device whose state is unknown is kept.
pub fn stale_devices<'a>(
    devices: &'a [Device],
    hostname: &str,
    tags: &[String],
) -> Vec<&'a Device> {
    let mut wanted: Vec<&str> = tags.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    devices
        .iter()
        .filter(|d| d.hostname == hostname && d.connected_to_control == Some(false))
        .filter(|d| {
            let mut have: Vec<&str> = d.tags.iter().map(String::as_str).collect();
            have.sort_unstable();
            have == wanted
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, hostname: &str, tags: &[&str], online: Option<bool>) -> Device {
        Device {
            id: id.into(),
            hostname: hostname.into(),
            name: format!("{hostname}.example.ts.net"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            connected_to_control: online,
        }
    }

    #[test]
    fn only_offline_devices_with_the_same_name_and_tags_are_stale() {
        let devices = [
            device("1", "web", &["tag:a", "tag:b"], Some(false)),
            device("2", "web", &["tag:b", "tag:a"], Some(false)),
            device("3", "web", &["tag:a", "tag:b"], Some(true)),
            device("4", "web", &["tag:a", "tag:b"], None),
            device("5", "web", &["tag:a"], Some(false)),
            device("6", "db", &["tag:a", "tag:b"], Some(false)),
        ];
        let tags = ["tag:a".to_owned(), "tag:b".to_owned()];
        let stale: Vec<_> =
            stale_devices(&devices, "web", &tags).iter().map(|d| d.id.as_str()).collect();
        assert_eq!(stale, ["1", "2"]);
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(error_message(r#"{"message":"tag not allowed"}"#), "tag not allowed");
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(error_message(&"x".repeat(500)).len(), 200);
    }
}
