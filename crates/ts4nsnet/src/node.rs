//! One tailnet node on the official tailscale-rs runtime: join, identity, peer lookups, leave.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use ts_netstack_smoltcp::netcore::Channel;
use ts_runtime::{ActorRef, Runtime, Spawn as _};

use crate::config::STATE_FILE;

/// What a node needs to join.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    pub control_url: String,
    pub auth_key: Option<String>,
    pub hostname: String,
    pub tags: Vec<String>,
    pub ephemeral: bool,
    pub client_name: String,
}

/// A node that has registered and received its first netmap.
pub struct Node {
    runtime: ActorRef<Runtime>,
    channel: Channel,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The name control gave the node (the first label of its DNS name).
    pub hostname: String,
    /// The MagicDNS suffix, e.g. `example.ts.net`.
    pub tailnet: Option<String>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("ipv4", &self.ipv4).field("hostname", &self.hostname).finish()
    }
}

impl Node {
    /// Starts the runtime, registers and waits for the node's own netmap entry.
    ///
    /// The library does not return until control answers, and stops its control actor on a
    /// refused registration; `timeout` bounds the first case, the second is an error here. It
    /// also only logs a control host that does not resolve and keeps trying, so that is checked
    /// first, the way it dials (`host:port` through the system resolver).
    pub async fn join(
        settings: JoinSettings,
        keys: ts_keys::NodeState,
        timeout: Duration,
    ) -> Result<Node, String> {
        install_crypto_provider();
        let server_url = settings
            .control_url
            .parse()
            .map_err(|e| format!("control URL {}: {e}", settings.control_url))?;
        let control_config = ts_control::Config {
            server_url,
            hostname: Some(settings.hostname),
            client_name: Some(settings.client_name),
            tags: settings.tags,
            ephemeral: settings.ephemeral,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let url = &control_config.server_url;
        match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => resolve(host, port, deadline).await?,
            _ => return Err(format!("control URL {}: no host and port", settings.control_url)),
        }
        let runtime = Runtime::spawn(ts_runtime::Config {
            control_config,
            auth_key: settings.auth_key,
            keys,
        });
        let joined = async {
            runtime.wait_for_startup_result().await.map_err(|e| e.to_string())?;
            let (channel,) =
                runtime.ask(ts_runtime::GetChannel).await.map_err(|e| e.to_string())?;
            let node = runtime
                .ask(ts_runtime::SelfNode)
                .await
                .map_err(|_| "control refused the registration (is the auth key valid?)")?
                .ok_or("control sent no node")?;
            Ok::<_, String>((channel, node))
        };
        let outcome = tokio::time::timeout_at(deadline, joined).await;
        let (channel, node) = match outcome {
            Ok(Ok(joined)) => joined,
            Ok(Err(e)) => {
                runtime.kill();
                return Err(format!("joining the tailnet: {e}"));
            }
            Err(_) => {
                runtime.kill();
                return Err(format!("joining the tailnet: no answer within {timeout:?}"));
            }
        };
        Ok(Node {
            runtime,
            channel,
            ipv4: node.tailnet_address.ipv4.addr(),
            ipv6: node.tailnet_address.ipv6.addr(),
            hostname: node.hostname.clone(),
            tailnet: node.tailnet.clone(),
        })
    }

    /// The library's network stack, for sockets on the node's addresses.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The name control gave us must be the one we asked for: a renamed node (`web-1`) means
    /// another node holds the name, and the container would answer under the wrong one.
    pub fn check_hostname(&self, requested: &str) -> Result<(), String> {
        same_hostname(&self.hostname, requested)
    }

    /// A peer's (or our own) addresses by bare or fully qualified name.
    pub async fn lookup(&self, name: &str) -> Option<(Ipv4Addr, Ipv6Addr)> {
        let bare = name.trim_end_matches('.');
        let own_fqdn = self.tailnet.as_ref().map(|t| format!("{}.{t}", self.hostname));
        if bare == self.hostname || own_fqdn.as_deref() == Some(bare) {
            return Some((self.ipv4, self.ipv6));
        }
        let peer = self
            .runtime
            .ask(ts_runtime::PeerByName { name: bare.to_owned() })
            .await
            .ok()
            .flatten()?;
        Some((peer.tailnet_address.ipv4.addr(), peer.tailnet_address.ipv6.addr()))
    }

    /// Stops the runtime; control then drops an ephemeral node (there is no logout call in
    /// tailscale-rs 0.6, so this relies on control noticing the closed map stream).
    pub async fn shutdown(self) {
        let graceful = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.runtime.stop_gracefully().await;
            self.runtime.wait_for_shutdown().await;
        })
        .await;
        if graceful.is_err() {
            self.runtime.kill();
        }
    }
}

/// Whether control gave the node the name it asked for. DNS names are case-insensitive and
/// control lowercases them, so `Web` asked and `web` given is the same name; `web-1` is not.
fn same_hostname(given: &str, requested: &str) -> Result<(), String> {
    if given.eq_ignore_ascii_case(requested) {
        return Ok(());
    }
    Err(format!(
        "hostname collision: the tailnet already has a node named {requested:?}, so control \
         named this one {given:?}; remove the old node or choose another TS_HOSTNAME"
    ))
}

/// Resolves the control server's `host:port` as the library's first dial does (the same
/// string, so an IPv6 literal keeps its brackets), before `deadline`.
async fn resolve(host: &str, port: u16, deadline: tokio::time::Instant) -> Result<(), String> {
    let lookup = tokio::net::lookup_host(format!("{host}:{port}"));
    let why = match tokio::time::timeout_at(deadline, lookup).await {
        Ok(Ok(mut addresses)) => match addresses.next() {
            Some(_) => return Ok(()),
            None => "no addresses".to_owned(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in time".to_owned(),
    };
    Err(format!("cannot resolve control server host {host}: {why}"))
}

/// The node's keys: kept in `state_dir` when given (created 0600 on first use), fresh otherwise.
pub fn load_or_create_keys(state_dir: Option<&Path>) -> Result<ts_keys::NodeState, String> {
    let Some(dir) = state_dir else { return Ok(ts_keys::NodeState::generate()) };
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let persisted: ts_keys::PersistState = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a ts4nsnet state file: {e}", path.display()))?;
            return Ok((&persisted).into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let keys = ts_keys::NodeState::generate();
    let json = serde_json::to_vec(&ts_keys::PersistState::from(&keys)).expect("keys serialise");
    let temporary = dir.join(format!(".{STATE_FILE}.tmp"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, &path));
    written.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(keys)
}

/// Picks rustls' process-wide crypto provider before the library's TLS clients need one.
///
/// rustls refuses to guess when a build enables more than one provider, which happens as soon as
/// this crate shares a build with another user of rustls (cargo unifies features across a
/// workspace). aws-lc-rs is the one the tailscale crates already bring; a second call is a no-op.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_node_is_a_collision_but_a_lowercased_one_is_not() {
        assert_eq!(same_hostname("web", "web"), Ok(()));
        assert_eq!(same_hostname("web", "Web"), Ok(()));
        let e = same_hostname("web-1", "web").unwrap_err();
        assert!(
            e.starts_with("hostname collision: the tailnet already has a node named \"web\""),
            "{e}"
        );
        assert!(e.contains("named this one \"web-1\""), "{e}");
    }

    #[tokio::test]
    async fn an_unresolvable_control_host_fails_at_once_and_says_so() {
        let settings = JoinSettings {
            // RFC 6761: names under .invalid never resolve, with or without a network.
            control_url: "https://control.invalid".into(),
            auth_key: Some("tskey-auth-x".into()),
            hostname: "web".into(),
            tags: vec![],
            ephemeral: true,
            client_name: "test".into(),
        };
        let started = std::time::Instant::now();
        let keys = ts_keys::NodeState::generate();
        let e = Node::join(settings, keys, Duration::from_secs(20)).await.unwrap_err();
        assert!(e.starts_with("cannot resolve control server host control.invalid: "), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
}
