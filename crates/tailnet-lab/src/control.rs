//! A minimal Tailscale control server: just what tailscale-rs nodes need to join a tailnet and
//! find each other.
//!
//! Serves `GET /key` and the ts2021 upgrade over plain HTTP (nodes built with
//! `ts_control/insecure-keyfetch` accept that), then, over Noise and HTTP/2,
//! `POST /machine/register` (auth keys, re-registration of known node keys) and
//! `POST /machine/map` (endpoint updates, and a streamed netmap: self node, every peer, the DERP
//! map, an allow-all packet filter, pushed again on every change, with keep-alives). Ephemeral
//! nodes are removed once their last map stream has been gone for `ephemeral_grace`, and a
//! hostname already taken gets `-1`, `-2`, … as the real control does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZero;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use ts_control_serde::{HostInfo, Node, StableNodeId};
use ts_keys::{DiscoPublicKey, MachineKeyPair, MachinePublicKey, NodePublicKey};

use crate::noise;

type Body = BoxBody<Bytes, Infallible>;

/// The DERP region every node is told to use.
#[derive(Debug, Clone, Copy)]
pub struct DerpEndpoint {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// MagicDNS suffix, e.g. `lab.ts.net`; node names are `host.<tailnet>`.
    pub tailnet: String,
    pub derp: DerpEndpoint,
    /// How often an idle map stream gets a keep-alive (also how fast a dropped stream is noticed).
    pub keep_alive: Duration,
    /// How long an ephemeral node may be without a map stream before it is deleted.
    pub ephemeral_grace: Duration,
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
    node_key: NodePublicKey,
    machine_key: MachinePublicKey,
    disco_key: Option<DiscoPublicKey>,
    endpoints: Vec<SocketAddr>,
    streams: usize,
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<i64, LabNode>,
    next_id: i64,
    auth_keys: BTreeMap<String, AuthKey>,
    used_keys: Vec<String>,
}

struct Shared {
    config: ControlConfig,
    key: MachineKeyPair,
    state: Mutex<State>,
    /// Bumped on every change a netmap shows.
    generation: watch::Sender<u64>,
}

/// A running control server; stops when dropped.
pub struct Control {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("url", &self.url).finish()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Control {
    /// Listens on `listen` (port 0 picks one) and serves until dropped.
    pub async fn start(listen: SocketAddr, config: ControlConfig) -> std::io::Result<Control> {
        let listener = TcpListener::bind(listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            config,
            key: MachineKeyPair::random(),
            state: Mutex::new(State { next_id: 1, ..State::default() }),
            generation: watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Control { url, shared, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn tailnet(&self) -> &str {
        &self.shared.config.tailnet
    }

    /// Makes `key` an accepted auth key.
    pub fn add_auth_key(&self, key: &str, grants: AuthKey) {
        self.shared.lock().auth_keys.insert(key.to_owned(), grants);
    }

    /// Accepts every key `api` mints from now on, with the capabilities it was minted with
    /// (reusable, ephemeral, tags), as Tailscale's API and control server agree; until the
    /// control server stops.
    pub fn accept_keys_from(&self, api: Arc<crate::api::ApiServer>) {
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(shared) = shared.upgrade() {
                let minted = api.minted();
                for key in &minted[seen.min(minted.len())..] {
                    let create = &key.request["capabilities"]["devices"]["create"];
                    let grants = AuthKey {
                        reusable: create["reusable"].as_bool().unwrap_or(false),
                        ephemeral: create["ephemeral"].as_bool().unwrap_or(false),
                        tags: create["tags"]
                            .as_array()
                            .map(|t| {
                                t.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()
                            })
                            .unwrap_or_default(),
                    };
                    log::info!(
                        "control: accepting a key minted through the API (tags {:?})",
                        grants.tags
                    );
                    shared.lock().auth_keys.insert(key.key.clone(), grants);
                }
                seen = minted.len();
                drop(shared);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// Creates a new random auth key.
    pub fn new_auth_key(&self, grants: AuthKey) -> String {
        let key = format!("tskey-auth-lab{}", crate::random_hex(12));
        self.add_auth_key(&key, grants);
        key
    }

    pub fn nodes(&self) -> Vec<LabNode> {
        self.shared.lock().nodes.values().cloned().collect()
    }

    /// Waits until `check` holds for the node list, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        check: impl Fn(&[LabNode]) -> bool,
    ) -> Result<Vec<LabNode>, Vec<LabNode>> {
        let mut changes = self.shared.generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
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
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| outer(req, shared.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                log::debug!("control connection ended: {e}");
            }
        });
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}

/// The plain-HTTP side: the control key and the ts2021 upgrade.
async fn outer(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
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
            tokio::spawn(async move {
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

fn register_response(authorized: bool, error: &str) -> Response<Body> {
    let body = json!({
        "User": { "ID": 1, "DisplayName": "lab" },
        "Login": { "ID": 1, "Provider": "lab", "LoginName": "lab@example.com" },
        "NodeKeyExpired": false,
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
    let mut state = shared.lock();
    if state.nodes.values().any(|n| n.node_key == request.node_key) {
        log::info!("control: known node key {} registered again", request.node_key);
        return register_response(true, "");
    }
    let key = request.auth.map(|a| a.auth_key).unwrap_or_default();
    let Some(grants) = state.auth_keys.get(&key).cloned() else {
        log::info!("control: refused a registration with an unknown auth key");
        return register_response(false, "invalid auth key");
    };
    if !grants.reusable {
        if state.used_keys.contains(&key) {
            return register_response(false, "auth key already used");
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
        streams: 0,
    };
    log::info!("control: registered {hostname} as {} (ephemeral: {})", node.ipv4, node.ephemeral);
    state.nodes.insert(id, node);
    drop(state);
    shared.changed();
    register_response(true, "")
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
    let mut state = shared.lock();
    if state.nodes.get(&id).is_some_and(|n| n.streams == 0) {
        let node = state.nodes.remove(&id).expect("checked above");
        log::info!("control: removed ephemeral node {}", node.hostname);
        drop(state);
        shared.changed();
    }
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
    let derp = shared.config.derp.addr;
    // As JSON: the published crate does not export every type a DERP map is made of.
    let derp_map = json!({ "Regions": { "1": {
        "RegionID": 1, "RegionCode": "lab", "RegionName": "Lab",
        "Nodes": [{
            "Name": "1a", "RegionID": 1, "HostName": derp.ip().to_string(),
            "IPv4": derp.ip().to_string(), "IPv6": "none",
            "STUNPort": -1, "DERPPort": derp.port(), "InsecureForTests": true,
        }],
    }}});
    Some(json!({
        "Node": self_node,
        "Peers": peers,
        "DERPMap": derp_map,
        "Domain": tailnet,
        "PacketFilter": [{
            "SrcIPs": ["*"],
            "DstPorts": [{ "IP": "*", "Ports": { "First": 0, "Last": 65535 } }],
        }],
        "DNSConfig": { "Domains": [tailnet], "Proxied": true },
        "UserProfiles": [{ "ID": 1, "LoginName": "lab@example.com", "DisplayName": "lab" }],
    }))
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
        allowed_ips: Some(vec![
            ipnet::Ipv4Net::new(node.ipv4, 32).expect("valid prefix").into(),
            ipnet::Ipv6Net::new(node.ipv6, 128).expect("valid prefix").into(),
        ]),
        endpoints: node.endpoints.clone(),
        home_derp: Some(region()),
        host_info: HostInfo { hostname: Some(&node.requested_hostname), ..HostInfo::default() },
        tags: (!node.tags.is_empty()).then(|| node.tags.iter().map(String::as_str).collect()),
        online: Some(node.online),
        machine_authorized: true,
        ..Node::default()
    }
}
