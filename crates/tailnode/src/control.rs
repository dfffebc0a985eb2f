//! The control client: register, stream the netmap, tell control where we can be reached, and
//! log out. One task for the node's whole life; a lost connection is dialed again with backoff,
//! with the same keys, so a restarted control server costs a reconnect, not the node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::{oneshot, watch};
use ts_control::MapRequestBuilder;
use ts_control::client::HttpConn;
use ts_control_serde::{Endpoint, EndpointType};
use ts_derp::RegionId;
use ts_http_util::ClientExt as _;
use url::Url;

use crate::netmap::Netmap;

/// How long connecting (TCP, key fetch, Noise) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A stream silent for this long is dead (control sends keep-alives well within it).
const STREAM_SILENCE: Duration = Duration::from_secs(120);
/// The longest wait between attempts while control is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long logging out may hold up the exit.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(3);

/// Who the node is to control.
#[derive(Debug, Clone)]
pub struct Settings {
    pub control_url: Url,
    pub auth_key: Option<String>,
    pub hostname: String,
    pub tags: Vec<String>,
    /// Ephemeral nodes are removed by control when they go away; this node also logs out on
    /// a clean exit, so it is gone at once rather than after control's grace period.
    pub ephemeral: bool,
    /// Reported to control as the client's name, e.g. `ts4nsnet/0.1.0`.
    pub client_name: String,
}

/// What the data path learns about reaching us, for control to pass on to peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    /// Local interface addresses (with our port), then what STUN reported.
    pub endpoints: Vec<(SocketAddr, EndpointType)>,
    pub home: Option<RegionId>,
}

/// Why the control client stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Control refused to register the node (a bad or used-up auth key, an unknown node).
    Registration(String),
}

/// The control task's inputs and outputs.
pub struct Channels {
    pub netmap: watch::Sender<Arc<Netmap>>,
    pub reachability: watch::Receiver<Reachability>,
    pub stop: watch::Receiver<bool>,
    /// Told once: the first netmap with our own node arrived, or registration was refused.
    pub joined: oneshot::Sender<Result<(), Refusal>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

enum Ended {
    Stopped,
    Refused(Refusal),
    Lost(String),
}

/// Runs until `stop` is set (logging an ephemeral node out first) or registration is refused.
pub async fn run(settings: Settings, keys: ts_keys::NodeState, known: bool, channels: Channels) {
    let Channels { netmap, mut reachability, mut stop, joined } = channels;
    let mut joined = Some(joined);
    let mut known = known;
    let mut backoff = Duration::from_secs(1);
    let mut sessions = 0u32;
    loop {
        let mut netmap_seen = false;
        let ended = session(
            &settings,
            &keys,
            &mut known,
            &netmap,
            &mut reachability,
            &mut stop,
            &mut joined,
            &mut netmap_seen,
        )
        .await;
        sessions += 1;
        match ended {
            Ended::Stopped => return,
            Ended::Refused(refusal) => {
                log::error!("control: {refusal:?}");
                if let Some(joined) = joined.take() {
                    let _ = joined.send(Err(refusal));
                }
                return;
            }
            Ended::Lost(why) => {
                if netmap_seen {
                    backoff = Duration::from_secs(1);
                }
                log::warn!("control: {why}; reconnecting in {backoff:?} (attempt {sessions})");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = crate::datapath::stop_requested(&mut stop) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    settings: &Settings,
    keys: &ts_keys::NodeState,
    known: &mut bool,
    netmap: &watch::Sender<Arc<Netmap>>,
    reachability: &mut watch::Receiver<Reachability>,
    stop: &mut watch::Receiver<bool>,
    joined: &mut Option<oneshot::Sender<Result<(), Refusal>>>,
    netmap_seen: &mut bool,
) -> Ended {
    let url = &settings.control_url;
    let connect = ts_control::client::connect(url, &keys.machine_keys);
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Ended::Lost(format!("connecting to {url}: {e}")),
        Err(_) => {
            return Ended::Lost(format!("connecting to {url}: no answer in {CONNECT_TIMEOUT:?}"));
        }
    };
    if let Err(ended) = register(settings, keys, *known, &conn).await {
        return ended;
    }
    *known = true;
    let map_url = url.join("machine/map").expect("a fixed path joins");
    let current = reachability.borrow_and_update().clone();
    let request = map_request(settings, keys, &current).as_stream().build();
    let reader = match ts_control::client::send_map_request(request, &map_url, &conn).await {
        Ok(reader) => reader,
        Err(e) => return Ended::Lost(format!("starting the map stream: {e}")),
    };
    let mut updates = Box::pin(ts_control::client::map_stream(reader));
    log::debug!("control: map stream open");
    let mut state = Netmap::clone(&netmap.borrow());
    // A new stream starts with a full map; peers from the old one are replaced by it.
    loop {
        tokio::select! {
            update = tokio::time::timeout(STREAM_SILENCE, updates.next()) => {
                let update = match update {
                    Ok(Some(update)) => update,
                    Ok(None) => return Ended::Lost("the map stream ended".into()),
                    Err(_) => return Ended::Lost(format!("no word from control in {STREAM_SILENCE:?}")),
                };
                if update.ping.is_some() {
                    let answer = ts_control::client::handle_ping(&update, url, &conn);
                    if tokio::time::timeout(Duration::from_secs(5), answer).await.is_err() {
                        log::debug!("control: answering a ping timed out");
                    }
                }
                if state.apply(update) {
                    netmap.send_replace(Arc::new(state.clone()));
                }
                if state.node.is_some() {
                    *netmap_seen = true;
                    if let Some(joined) = joined.take() {
                        let _ = joined.send(Ok(()));
                    }
                }
            }
            changed = reachability.changed() => {
                if changed.is_err() {
                    continue;
                }
                let current = reachability.borrow_and_update().clone();
                let request = map_request(settings, keys, &current).as_request().build();
                log::debug!("control: reporting {} endpoints", current.endpoints.len());
                let sent = ts_control::client::send_map_request(request, &map_url, &conn);
                match tokio::time::timeout(CONNECT_TIMEOUT, sent).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(format!("reporting endpoints: {e}")),
                    Err(_) => return Ended::Lost("reporting endpoints: no answer".into()),
                }
            }
            () = crate::datapath::stop_requested(stop) => {
                if settings.ephemeral {
                    logout(settings, keys, &conn).await;
                }
                return Ended::Stopped;
            }
        }
    }
}

fn map_request<'a>(
    settings: &'a Settings,
    keys: &ts_keys::NodeState,
    reachability: &Reachability,
) -> MapRequestBuilder<'a> {
    let endpoints = reachability
        .endpoints
        .iter()
        .map(|(endpoint, ty)| Endpoint { endpoint: *endpoint, ty: *ty })
        .collect();
    let builder = MapRequestBuilder::new(keys).hostname(&settings.hostname).endpoints(endpoints);
    match reachability.home {
        Some(home) => builder.preferred_derp(home),
        None => builder,
    }
}

/// Registers the node. A node control already knows (keys from the state directory, or an
/// earlier session) first tries without the auth key, which may have been used up since.
async fn register(
    settings: &Settings,
    keys: &ts_keys::NodeState,
    known: bool,
    conn: &HttpConn,
) -> Result<(), Ended> {
    let config = ts_control::Config {
        server_url: settings.control_url.clone(),
        hostname: Some(settings.hostname.clone()),
        client_name: Some(settings.client_name.clone()),
        tags: settings.tags.clone(),
        ephemeral: settings.ephemeral,
    };
    let url = &settings.control_url;
    let mut attempts = Vec::new();
    if known {
        attempts.push(None);
    }
    if settings.auth_key.is_some() || attempts.is_empty() {
        attempts.push(settings.auth_key.as_deref());
    }
    let mut refusal = String::new();
    for auth_key in attempts {
        let registered = ts_control::register(&config, url, auth_key, None, keys, conn);
        match tokio::time::timeout(CONNECT_TIMEOUT, registered).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(ts_control::RegistrationError::NetworkError)) | Err(_) => {
                return Err(Ended::Lost("registering: network error".into()));
            }
            Ok(Err(ts_control::RegistrationError::MachineNotAuthorized(Some(auth_url)))) => {
                refusal = format!("control wants interactive login at {auth_url}; use an auth key");
            }
            Ok(Err(e)) => refusal = format!("control refused the registration: {e}"),
        }
    }
    if known && settings.auth_key.is_none() {
        // A node we were told control knows, refused without a key: control lost it or is
        // restarting with empty state; keep trying rather than exit.
        return Err(Ended::Lost(refusal));
    }
    Err(Ended::Refused(Refusal::Registration(format!("{refusal} (is the auth key valid?)"))))
}

/// Tells control this node is gone (a registration that expires it now), so an ephemeral
/// node disappears from the tailnet at once. Best effort, within [`LOGOUT_TIMEOUT`].
async fn logout(settings: &Settings, keys: &ts_keys::NodeState, conn: &HttpConn) {
    let app = format!("tailscale-rs ({})", settings.client_name);
    let request = ts_control_serde::RegisterRequest {
        version: ts_capabilityversion::CapabilityVersion::CURRENT,
        node_key: keys.node_keys.public,
        nl_key: Some(keys.network_lock_keys.public),
        expiry: chrono::DateTime::from_timestamp(123, 0),
        hostinfo: ts_control_serde::HostInfo {
            hostname: Some(&settings.hostname),
            app: &app,
            ..Default::default()
        },
        ephemeral: settings.ephemeral,
        ..Default::default()
    };
    let Ok(body) = serde_json::to_vec(&request) else { return };
    let url = settings.control_url.join("machine/register").expect("a fixed path joins");
    let sent = conn.post(&url, None, Bytes::from(body).into());
    match tokio::time::timeout(LOGOUT_TIMEOUT, sent).await {
        Ok(Ok(response)) if response.status().is_success() => {
            log::info!("logged out of the tailnet")
        }
        Ok(Ok(response)) => log::warn!("logging out: control answered {}", response.status()),
        Ok(Err(e)) => log::warn!("logging out: {e}"),
        Err(_) => log::warn!("logging out: no answer in {LOGOUT_TIMEOUT:?}"),
    }
}
