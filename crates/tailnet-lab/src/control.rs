//! A minimal Tailscale control server: just what tailscale-rs nodes need to join a tailnet and
//! find each other.
//!
//! Serves `GET /key` and the ts2021 upgrade over plain HTTP (nodes built with
//! `ts_control/insecure-keyfetch` accept that), then, over Noise and HTTP/2,
//! `POST /machine/register` (auth keys, re-registration of known node keys, and logout: a request
//! whose `Expiry` is in the past deletes the node at once) and `POST /machine/map` (endpoint
//! updates, and a streamed netmap: self node, every peer, the DERP map with its STUN port, the
//! packet filter, allow-all unless [`Control::set_packet_filter`] says otherwise, pushed again on
//! every change, with keep-alives). Ephemeral nodes are removed once their last map stream has
//! been gone for `ephemeral_grace`, and a hostname already taken gets `-1`, `-2`, … as the real
//! control does.
//!
//! [`Control::suspend`] closes the port and cuts every connection, keeping all state;
//! [`Control::resume`] listens again on the same port. Ephemeral nodes are not removed while the
//! server is down, nor for `reconnect_grace` after, so that the nodes an outage cut off find
//! themselves still registered when they come back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZero;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use ts_control_serde::{HostInfo, Node, StableNodeId};
use ts_keys::{DiscoPublicKey, MachineKeyPair, MachinePublicKey, NodePublicKey};

use crate::listener::{Epoch, Listener, Serve};
use crate::noise;

type Body = BoxBody<Bytes, Infallible>;

/// The DERP region every node is told to use.
#[derive(Debug, Clone, Copy)]
pub struct DerpEndpoint {
    /// Where the relay listens (TLS).
    pub addr: SocketAddr,
    /// The STUN port on the same IP; `None` tells nodes the server has no STUN.
    pub stun_port: Option<u16>,
}

/// What a control server tells nodes, and how soon it gives up on them.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// MagicDNS suffix, e.g. `lab.ts.net`; node names are `host.<tailnet>`.
    pub tailnet: String,
    pub derp: DerpEndpoint,
    /// How often an idle map stream gets a keep-alive (also how fast a dropped stream is noticed).
    pub keep_alive: Duration,
    /// How long an ephemeral node may be without a map stream before it is deleted.
    pub ephemeral_grace: Duration,
    /// How long after an outage ([`Control::resume`]) the nodes it cut off have to reconnect
    /// before ephemeral ones may be deleted.
    pub reconnect_grace: Duration,
}

/// What an auth key grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthKey {
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
}

/// A node as the control server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNode {
    pub id: i64,
    /// The name control assigned (the requested one, or with `-N` on a collision).
    pub hostname: String,
    pub requested_hostname: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    /// Whether a map stream is open right now.
    pub online: bool,
    /// Routes it serves beyond its own addresses, as approved by an admin: `0.0.0.0/0` and
    /// `::/0` make it an exit node.
    pub routes: Vec<ipnet::IpNet>,
    node_key: NodePublicKey,
    machine_key: MachinePublicKey,
    disco_key: Option<DiscoPublicKey>,
    endpoints: Vec<SocketAddr>,
    streams: usize,
}

#[derive(Debug)]
struct State {
    nodes: BTreeMap<i64, LabNode>,
    next_id: i64,
    auth_keys: BTreeMap<String, AuthKey>,
    used_keys: Vec<String>,
    /// The `PacketFilter` of every netmap.
    packet_filter: Value,
}

/// Whether an outage holds back the removal of ephemeral nodes.
#[derive(Debug, Clone, Copy)]
enum Hold {
    None,
    /// The server is down.
    Down,
    /// The server is back; nodes have until then to reconnect.
    Until(Instant),
}

struct Shared {
    config: ControlConfig,
    key: MachineKeyPair,
    state: Mutex<State>,
    /// Bumped on every change a netmap shows.
    generation: watch::Sender<u64>,
    hold: watch::Sender<Hold>,
    /// The API whose minted keys are accepted (`accept_keys_from`).
    api: Mutex<Option<Arc<crate::api::ApiServer>>>,
}

/// A running control server; stops when dropped.
pub struct Control {
    url: String,
    shared: Arc<Shared>,
    listener: Listener,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("url", &self.url).finish()
    }
}

impl Control {
    /// Listens on `listen` (port 0 picks one) and serves until dropped.
    pub async fn start(listen: SocketAddr, config: ControlConfig) -> std::io::Result<Control> {
        let state = State {
            nodes: BTreeMap::new(),
            next_id: 1,
            auth_keys: BTreeMap::new(),
            used_keys: Vec::new(),
            packet_filter: allow_all(),
        };
        let shared = Arc::new(Shared {
            config,
            key: MachineKeyPair::random(),
            state: Mutex::new(state),
            generation: watch::channel(0).0,
            hold: watch::channel(Hold::None).0,
            api: Mutex::new(None),
        });
        let serving = shared.clone();
        let serve: Serve =
            Arc::new(move |tcp, epoch| Box::pin(serve_http(tcp, serving.clone(), epoch)));
        let listener = Listener::start(listen, serve).await?;
        let url = format!("http://{}", listener.addr());
        Ok(Control { url, shared, listener })
    }

    /// Stops accepting and cuts every connection (and so every map stream); returns once the
    /// port is closed. Nodes, keys and settings stay; ephemeral nodes are kept until
    /// `reconnect_grace` after [`Control::resume`].
    pub async fn suspend(&self) {
        self.shared.hold.send_replace(Hold::Down);
        self.listener.stop().await;
    }

    /// Listens again on the same address, after [`Control::suspend`].
    pub async fn resume(&self) -> std::io::Result<()> {
        self.listener.resume().await?;
        let until = Instant::now() + self.shared.config.reconnect_grace;
        self.shared.hold.send_replace(Hold::Until(until));
        Ok(())
    }

    /// The URL nodes use, `http://ip:port`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The MagicDNS suffix.
    pub fn tailnet(&self) -> &str {
        &self.shared.config.tailnet
    }

    /// Makes `key` an accepted auth key.
    pub fn add_auth_key(&self, key: &str, grants: AuthKey) {
        self.shared.lock().auth_keys.insert(key.to_owned(), grants);
    }

    /// Accepts every key `api` mints from now on, with the capabilities it was minted with
    /// (reusable, ephemeral, tags), as Tailscale's API and control server agree. Looked up when
    /// a node registers, so a key is good the moment the API has answered with it.
    pub fn accept_keys_from(&self, api: Arc<crate::api::ApiServer>) {
        *self.shared.api.lock().unwrap_or_else(|e| e.into_inner()) = Some(api);
    }

    /// Creates a new random auth key.
    pub fn new_auth_key(&self, grants: AuthKey) -> String {
        let key = format!("tskey-auth-lab{}", crate::random_hex(12));
        self.add_auth_key(&key, grants);
        key
    }

    /// Every registered node, by id.
    pub fn nodes(&self) -> Vec<LabNode> {
        self.shared.lock().nodes.values().cloned().collect()
    }

    /// Approves `routes` for the node named `hostname` (replacing earlier ones), as an admin
    /// does in the console; `0.0.0.0/0` and `::/0` make it an exit node. Every netmap shows
    /// them from then on. False when there is no such node.
    pub fn approve_routes(&self, hostname: &str, routes: Vec<ipnet::IpNet>) -> bool {
        {
            let mut state = self.shared.lock();
            let Some(node) = state.nodes.values_mut().find(|n| n.hostname == hostname) else {
                return false;
            };
            node.routes = routes;
        }
        self.shared.changed();
        true
    }

    /// Waits until `check` holds for the node list, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&[LabNode]) -> bool,
    ) -> Result<Vec<LabNode>, Vec<LabNode>> {
        let mut changes = self.shared.generation.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self.nodes();
            if check(&nodes) {
                return Ok(nodes);
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                return Err(nodes);
            }
        }
    }

    /// Waits until no node is named `hostname` (it left, logged out or was removed), or
    /// `timeout` passes; as [`Control::wait_for`].
    pub async fn wait_for_gone(
        &self,
        timeout: Duration,
        hostname: &str,
    ) -> Result<Vec<LabNode>, Vec<LabNode>> {
        self.wait_for(timeout, |nodes| nodes.iter().all(|n| n.hostname != hostname)).await
    }

    /// Replaces the packet filter every node gets and sends each a new netmap. `rules` is the
    /// `PacketFilter` of Tailscale's `MapResponse`, e.g.
    /// `[{"SrcIPs": ["100.64.0.1"], "DstPorts": [{"IP": "*", "Ports": {"First": 22, "Last": 22}}]}]`;
    /// `[]` blocks everything. The default lets everything through.
    ///
    /// # Panics
    ///
    /// If `rules` is not a packet filter tailscale-rs can read: better here than a node's map
    /// stream failing without a word.
    pub fn set_packet_filter(&self, rules: Value) {
        let parsed = json!({ "PacketFilter": &rules }).to_string();
        let parsed = serde_json::from_str::<ts_control_serde::MapResponse>(&parsed);
        match parsed {
            Ok(response) if response.packet_filter.is_some() => {}
            Ok(_) => panic!("a packet filter is a JSON array, not {rules}"),
            Err(e) => panic!("not a packet filter ({e}): {rules}"),
        }
        self.shared.lock().packet_filter = rules;
        self.shared.changed();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Removes the first node `matches` accepts, if any, and tells everyone.
    fn remove_node(&self, why: &str, matches: impl Fn(&LabNode) -> bool) -> bool {
        let removed = {
            let mut state = self.lock();
            let id = state.nodes.values().find(|n| matches(n)).map(|n| n.id);
            id.and_then(|id| state.nodes.remove(&id))
        };
        let Some(node) = removed else { return false };
        log::info!("control: removed {} ({why})", node.hostname);
        self.changed();
        true
    }

    /// Returns once no outage holds back removals: the server is up and has been for
    /// `reconnect_grace`.
    async fn outage_over(&self) {
        let mut hold = self.hold.subscribe();
        loop {
            let current = *hold.borrow_and_update();
            match current {
                Hold::None => return,
                Hold::Until(until) if until <= Instant::now() => return,
                // Looked at again after: another outage may have begun meanwhile.
                Hold::Until(until) => tokio::time::sleep_until(until).await,
                Hold::Down => {
                    if hold.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn serve_http(tcp: TcpStream, shared: Arc<Shared>, epoch: Epoch) {
    let service = hyper::service::service_fn(move |req| outer(req, shared.clone(), epoch.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        log::debug!("control connection ended: {e}");
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}

/// The plain-HTTP side: the control key and the ts2021 upgrade.
async fn outer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    epoch: Epoch,
) -> Result<Response<Body>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/key") => {
            let key = shared.key.public.to_string();
            let body = json!({ "publicKey": key, "legacyPublicKey": key }).to_string();
            Ok(full(StatusCode::OK, body))
        }
        (&Method::POST, "/ts2021") => {
            let header = req
                .headers()
                .get("x-tailscale-handshake")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let accepted = match noise::accept(header, &shared.key) {
                Ok(accepted) => accepted,
                Err(e) => return Ok(full(StatusCode::BAD_REQUEST, e)),
            };
            epoch.spawn(async move {
                let upgraded = match hyper::upgrade::on(req).await {
                    Ok(upgraded) => upgraded,
                    Err(e) => return log::warn!("ts2021 upgrade failed: {e}"),
                };
                let machine_key = accepted.machine_key;
                let io = match accepted.finish(TokioIo::new(upgraded)).await {
                    Ok(io) => io,
                    Err(e) => return log::warn!("ts2021 handshake failed: {e}"),
                };
                let service =
                    hyper::service::service_fn(move |req| inner(req, shared.clone(), machine_key));
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), service);
                if let Err(e) = conn.await {
                    log::debug!("noise connection ended: {e}");
                }
            });
            let mut response = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            let headers = response.headers_mut();
            headers.insert("upgrade", "tailscale-control-protocol".parse().expect("valid"));
            headers.insert("connection", "upgrade".parse().expect("valid"));
            Ok(response)
        }
        _ => Ok(full(StatusCode::NOT_FOUND, "not found")),
    }
}

/// The Noise side: registration and netmaps.
async fn inner(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    machine_key: MachinePublicKey,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(full(StatusCode::BAD_REQUEST, e.to_string())),
    };
    Ok(match path.as_str() {
        "/machine/register" => register(&shared, machine_key, &body),
        "/machine/map" => map(shared, &body),
        _ => full(StatusCode::NOT_FOUND, "not found"),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterRequest {
    node_key: NodePublicKey,
    #[serde(default)]
    auth: Option<RegisterAuth>,
    #[serde(default)]
    hostinfo: Option<RegisterHostinfo>,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    expiry: Option<DateTime<Utc>>,
}

impl RegisterRequest {
    /// A logout asks for an expiry in the past. Go clients send the zero time
    /// (`0001-01-01T00:00:00Z`) for "no expiry requested", so that one is not a logout, as on
    /// the real control server.
    fn is_logout(&self) -> bool {
        let go_zero = NaiveDate::from_ymd_opt(1, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        self.expiry.is_some_and(|t| Some(t.naive_utc()) != go_zero && t < Utc::now())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterAuth {
    #[serde(default)]
    auth_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterHostinfo {
    #[serde(default)]
    hostname: Option<String>,
}

/// How a register request ended.
enum Registered<'a> {
    Authorized,
    LoggedOut,
    Refused(&'a str),
}

fn register_response(outcome: Registered) -> Response<Body> {
    let (authorized, expired, error) = match outcome {
        Registered::Authorized => (true, false, ""),
        Registered::LoggedOut => (false, true, ""),
        Registered::Refused(error) => (false, false, error),
    };
    let body = json!({
        "User": { "ID": 1, "DisplayName": "lab" },
        "Login": { "ID": 1, "Provider": "lab", "LoginName": "lab@example.com" },
        "NodeKeyExpired": expired,
        "MachineAuthorized": authorized,
        "AuthURL": "",
        "Error": error,
    });
    full(StatusCode::OK, body.to_string())
}

fn register(shared: &Shared, machine_key: MachinePublicKey, body: &[u8]) -> Response<Body> {
    let request: RegisterRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            log::warn!("control: bad register request: {e}");
            return full(StatusCode::BAD_REQUEST, format!("bad register request: {e}"));
        }
    };
    if request.is_logout() {
        // Only the machine that registered a node key may log it out; anything else changes
        // nothing, and the answer is the same.
        let key = request.node_key;
        if !shared.remove_node("logged out", |n| n.node_key == key && n.machine_key == machine_key)
        {
            log::info!("control: logout of unknown node key {key}");
        }
        return register_response(Registered::LoggedOut);
    }
    let mut state = shared.lock();
    if state.nodes.values().any(|n| n.node_key == request.node_key) {
        log::info!("control: known node key {} registered again", request.node_key);
        return register_response(Registered::Authorized);
    }
    let key = request.auth.map(|a| a.auth_key).unwrap_or_default();
    if !state.auth_keys.contains_key(&key) {
        let api = shared.api.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(minted) = api.and_then(|api| api.minted().into_iter().find(|m| m.key == key)) {
            let create = &minted.request["capabilities"]["devices"]["create"];
            let grants = AuthKey {
                reusable: create["reusable"].as_bool().unwrap_or(false),
                ephemeral: create["ephemeral"].as_bool().unwrap_or(false),
                tags: create["tags"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default(),
            };
            log::info!("control: accepting a key minted through the API (tags {:?})", grants.tags);
            state.auth_keys.insert(minted.key.clone(), grants);
        }
    }
    let Some(grants) = state.auth_keys.get(&key).cloned() else {
        log::info!("control: refused a registration with an unknown auth key");
        return register_response(Registered::Refused("invalid auth key"));
    };
    if !grants.reusable {
        if state.used_keys.contains(&key) {
            return register_response(Registered::Refused("auth key already used"));
        }
        state.used_keys.push(key);
    }
    let requested = request
        .hostinfo
        .and_then(|h| h.hostname)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let hostname = free_hostname(&state, &requested);
    let id = state.next_id;
    state.next_id += 1;
    let n = u8::try_from(id).expect("a lab tailnet has fewer than 255 nodes");
    let node = LabNode {
        id,
        hostname: hostname.clone(),
        requested_hostname: requested,
        ipv4: Ipv4Addr::new(100, 64, 0, n),
        ipv6: Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, u16::from(n)),
        ephemeral: grants.ephemeral || request.ephemeral,
        tags: grants.tags,
        online: false,
        node_key: request.node_key,
        machine_key,
        disco_key: None,
        endpoints: Vec::new(),
        routes: Vec::new(),
        streams: 0,
    };
    log::info!("control: registered {hostname} as {} (ephemeral: {})", node.ipv4, node.ephemeral);
    state.nodes.insert(id, node);
    drop(state);
    shared.changed();
    register_response(Registered::Authorized)
}

/// The requested name if free, else the first free `name-N`.
fn free_hostname(state: &State, requested: &str) -> String {
    let taken = |name: &str| state.nodes.values().any(|n| n.hostname == name);
    if !taken(requested) {
        return requested.to_owned();
    }
    (1..).map(|i| format!("{requested}-{i}")).find(|name| !taken(name)).expect("a free name")
}

/// The part of a map request we use. (The published `MapRequest` cannot read what its own
/// serializer writes when there are no endpoints.)
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MapRequest {
    node_key: NodePublicKey,
    #[serde(default)]
    disco_key: Option<DiscoPublicKey>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    endpoints: Vec<SocketAddr>,
}

fn map(shared: Arc<Shared>, body: &[u8]) -> Response<Body> {
    let request: MapRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            log::warn!("control: bad map request: {e}");
            return full(StatusCode::BAD_REQUEST, format!("bad map request: {e}"));
        }
    };
    let (id, changed) = {
        let mut state = shared.lock();
        let Some(node) = state.nodes.values_mut().find(|n| n.node_key == request.node_key) else {
            return full(StatusCode::FORBIDDEN, "unknown node key");
        };
        let disco_key = request.disco_key.or(node.disco_key);
        let changed =
            request.stream || disco_key != node.disco_key || request.endpoints != node.endpoints;
        node.disco_key = disco_key;
        node.endpoints = request.endpoints;
        if request.stream {
            node.streams += 1;
            node.online = true;
        }
        (node.id, changed)
    };
    // Only real changes go out, or every endpoint report would echo back as a netmap.
    if changed {
        shared.changed();
    }
    if !request.stream {
        return full(StatusCode::OK, Bytes::new());
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(stream_netmaps(shared, id, tx));
    let frames = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    *response.status_mut() = StatusCode::OK;
    response
}

/// Sends netmaps to one node until its stream goes away, then marks it offline.
async fn stream_netmaps(shared: Arc<Shared>, id: i64, tx: mpsc::Sender<Bytes>) {
    let mut changes = shared.generation.subscribe();
    let mut keep_alive = tokio::time::interval(shared.config.keep_alive);
    keep_alive.tick().await;
    let mut message = netmap(&shared, id);
    while let Some(body) = message.take() {
        if tx.send(frame(&body)).await.is_err() {
            break;
        }
        message = tokio::select! {
            changed = changes.changed() => match changed {
                Ok(()) => netmap(&shared, id),
                Err(_) => None,
            },
            _ = keep_alive.tick() => Some(json!({ "KeepAlive": true })),
            () = tx.closed() => None,
        };
    }
    stream_closed(&shared, id).await;
}

fn frame(body: &Value) -> Bytes {
    let json = serde_json::to_vec(body).expect("a netmap serialises");
    let len = u32::try_from(json.len()).expect("a netmap fits in a frame");
    let mut frame = len.to_le_bytes().to_vec();
    frame.extend_from_slice(&json);
    Bytes::from(frame)
}

async fn stream_closed(shared: &Arc<Shared>, id: i64) {
    let ephemeral = {
        let mut state = shared.lock();
        let Some(node) = state.nodes.get_mut(&id) else { return };
        node.streams = node.streams.saturating_sub(1);
        node.online = node.streams > 0;
        node.ephemeral && !node.online
    };
    shared.changed();
    if !ephemeral {
        return;
    }
    tokio::time::sleep(shared.config.ephemeral_grace).await;
    // A stream an outage cut is not a node leaving: it gets the chance to come back first.
    shared.outage_over().await;
    shared.remove_node("ephemeral, offline", |n| n.id == id && n.streams == 0);
}

/// The full netmap for node `id`, or `None` once it is gone.
fn netmap(shared: &Shared, id: i64) -> Option<Value> {
    let state = shared.lock();
    let me = state.nodes.get(&id)?;
    let tailnet = &shared.config.tailnet;
    let labels: Vec<(String, String)> = state
        .nodes
        .values()
        .map(|n| (format!("{}.{tailnet}.", n.hostname), format!("lab{}", n.id)))
        .collect();
    let mut self_node = None;
    let mut peers = Vec::new();
    for (n, (name, stable_id)) in state.nodes.values().zip(&labels) {
        let wire = wire_node(n, name, stable_id);
        if n.id == me.id { self_node = Some(wire) } else { peers.push(wire) }
    }
    Some(json!({
        "Node": self_node,
        "Peers": peers,
        "DERPMap": derp_map(&shared.config.derp),
        "Domain": tailnet,
        "PacketFilter": state.packet_filter,
        "DNSConfig": { "Domains": [tailnet], "Proxied": true },
        "UserProfiles": [{ "ID": 1, "LoginName": "lab@example.com", "DisplayName": "lab" }],
    }))
}

/// As JSON: the published crate does not export every type a DERP map is made of.
fn derp_map(derp: &DerpEndpoint) -> Value {
    let ip = derp.addr.ip().to_string();
    // The address goes in its own family's field; "none" turns the other family off.
    let (ipv4, ipv6) =
        if derp.addr.is_ipv4() { (ip.as_str(), "none") } else { ("none", ip.as_str()) };
    json!({ "Regions": { "1": {
        "RegionID": 1, "RegionCode": "lab", "RegionName": "Lab",
        "Nodes": [{
            "Name": "1a", "RegionID": 1, "HostName": ip,
            "IPv4": ipv4, "IPv6": ipv6,
            // -1 is "no STUN"; 0 would mean the default port, 3478.
            "STUNPort": derp.stun_port.map_or(-1, i32::from),
            "DERPPort": derp.addr.port(), "InsecureForTests": true,
        }],
    }}})
}

/// The packet filter that lets everything through: the default.
fn allow_all() -> Value {
    json!([{
        "SrcIPs": ["*"],
        "DstPorts": [{ "IP": "*", "Ports": { "First": 0, "Last": 65535 } }],
    }])
}

fn region() -> ts_control_serde::DerpRegionId {
    NonZero::new(1).expect("1 is not zero").into()
}

fn wire_node<'a>(node: &'a LabNode, name: &'a str, stable_id: &'a str) -> Node<'a> {
    Node {
        id: node.id,
        stable_id: StableNodeId(stable_id),
        name,
        user: 1,
        key: node.node_key,
        machine: Some(node.machine_key),
        disco_key: node.disco_key,
        addresses: (
            ipnet::Ipv4Net::new(node.ipv4, 32).expect("valid prefix"),
            ipnet::Ipv6Net::new(node.ipv6, 128).expect("valid prefix"),
        ),
        allowed_ips: Some(
            [
                ipnet::Ipv4Net::new(node.ipv4, 32).expect("valid prefix").into(),
                ipnet::Ipv6Net::new(node.ipv6, 128).expect("valid prefix").into(),
            ]
            .into_iter()
            .chain(node.routes.iter().copied())
            .collect(),
        ),
        primary_routes: node.routes.clone(),
        endpoints: node.endpoints.clone(),
        home_derp: Some(region()),
        host_info: HostInfo { hostname: Some(&node.requested_hostname), ..HostInfo::default() },
        tags: (!node.tags.is_empty()).then(|| node.tags.iter().map(String::as_str).collect()),
        online: Some(node.online),
        machine_authorized: true,
        ..Node::default()
    }
}
