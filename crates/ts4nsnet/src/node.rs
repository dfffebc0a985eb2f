//! The container's tailnet node, on tailnode: settings from the environment, the identity kept
//! in `TS_STATE_DIR`, and the check that control gave the node the name it asked for.

use std::time::Duration;

use tailnode::{Identity, Node, Options, Settings};

use crate::config::{NodeConfig, STATE_FILE};

/// How long registration may take; podman waits for the ready byte as long as we live.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Joins the tailnet as `config` says, refusing a renamed node.
pub async fn join(config: &NodeConfig) -> Result<Node, String> {
    let control_url = config
        .control_url
        .parse()
        .map_err(|e| format!("control URL {}: {e}", config.control_url))?;
    let settings = Settings {
        control_url,
        auth_key: config.auth_key.clone(),
        hostname: config.hostname.as_str().to_owned(),
        tags: config.tags.iter().map(|t| t.as_str().to_owned()).collect(),
        ephemeral: config.ephemeral(),
        client_name: format!("ts4nsnet/{}", env!("CARGO_PKG_VERSION")),
    };
    let identity = match &config.state_dir {
        Some(dir) => Identity::load_or_create(dir, STATE_FILE)?,
        None => Identity::fresh(),
    };
    let options = Options {
        egress: config.egress,
        exit_node: config.exit_node.clone(),
        exit_node_allow_lan: config.exit_node_allow_lan,
        ..Options::default()
    };
    let node = Node::join(settings, identity, options, JOIN_TIMEOUT)
        .await
        .map_err(|e| format!("joining the tailnet: {e}"))?;
    if let Err(e) = same_hostname(&node.hostname, config.hostname.as_str()) {
        node.shutdown().await;
        return Err(e);
    }
    Ok(node)
}

/// Whether control gave the node the name it asked for. A renamed node (`web-1`) means another
/// node holds the name, and the container would answer under the wrong one. DNS names are
/// case-insensitive and control lowercases them, so `Web` asked and `web` given is the same.
fn same_hostname(given: &str, requested: &str) -> Result<(), String> {
    if given.eq_ignore_ascii_case(requested) {
        return Ok(());
    }
    Err(format!(
        "hostname collision: the tailnet already has a node named {requested:?}, so control \
         named this one {given:?}; remove the old node or choose another TS_HOSTNAME"
    ))
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
        let config = NodeConfig::from_env(|key| match key {
            // RFC 6761: names under .invalid never resolve, with or without a network.
            "TS_CONTROL_URL" => Some("https://control.invalid".into()),
            "TS_AUTHKEY" => Some("tskey-auth-x".into()),
            "TS_HOSTNAME" => Some("web".into()),
            _ => None,
        })
        .unwrap();
        let started = std::time::Instant::now();
        let e = join(&config).await.unwrap_err();
        assert!(
            e.starts_with(
                "joining the tailnet: cannot resolve control server host control.invalid: "
            ),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
}
