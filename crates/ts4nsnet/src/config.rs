//! The node's settings, from the environment podman passes through from the service.

use std::path::PathBuf;

use tailpod_core::names::{Hostname, NameError, Tag};

/// The control server used when `TS_CONTROL_URL` is not set.
pub const DEFAULT_CONTROL_URL: &str = "https://controlplane.tailscale.com";

/// Where, under `TS_STATE_DIR`, the node's keys are kept.
pub const STATE_FILE: &str = "ts4nsnet-state.json";

/// Settings for one node.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `None` when the state directory already holds a registered identity.
    pub auth_key: Option<String>,
    pub hostname: Hostname,
    pub tags: Vec<Tag>,
    pub control_url: String,
    /// Keeps the node's identity across restarts; without it every start is a new,
    /// ephemeral node.
    pub state_dir: Option<PathBuf>,
    /// Whether what is not on the tailnet is reached through the host's network
    /// (`TS_EGRESS`, on unless `off`).
    pub egress: bool,
    /// The peer (name or tailnet address) the internet is reached through instead
    /// (`TS_EXIT_NODE`).
    pub exit_node: Option<String>,
    /// With an exit node, the LAN's private ranges through the host all the same
    /// (`TS_EXIT_NODE_ALLOW_LAN`, off unless `on`).
    pub exit_node_allow_lan: bool,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("hostname", &self.hostname)
            .field("tags", &self.tags)
            .field("control_url", &self.control_url)
            .field("state_dir", &self.state_dir)
            .field("egress", &self.egress)
            .field("exit_node", &self.exit_node)
            .field("exit_node_allow_lan", &self.exit_node_allow_lan)
            .finish()
    }
}

impl NodeConfig {
    /// Reads the settings through `get` (the environment, in `main`). Errors name the variable
    /// and never echo the auth key.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<NodeConfig, String> {
        let set = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        if set("TS_TLS_CERTS_DIR").is_some() {
            return Err("TS_TLS_CERTS_DIR: TLS certificates are not supported: tailscale-rs 0.6 \
                        has no certificate API yet; unset it"
                .into());
        }
        let hostname =
            read(&set, "TS_HOSTNAME", parse_hostname)?.ok_or("TS_HOSTNAME is not set")?;
        let tags = read(&set, "TS_TAGS", parse_tags)?.unwrap_or_default();
        let control_url = read(&set, "TS_CONTROL_URL", parse_control_url)?
            .unwrap_or_else(|| DEFAULT_CONTROL_URL.to_owned());
        let state_dir = read(&set, "TS_STATE_DIR", parse_state_dir)?;
        let egress = read(&set, "TS_EGRESS", parse_switch)?.unwrap_or(true);
        let exit_node = read(&set, "TS_EXIT_NODE", parse_exit_node)?;
        let exit_node_allow_lan =
            read(&set, "TS_EXIT_NODE_ALLOW_LAN", parse_switch)?.unwrap_or(false);
        if exit_node_allow_lan && exit_node.is_none() {
            return Err("TS_EXIT_NODE_ALLOW_LAN is set without TS_EXIT_NODE".into());
        }
        let auth_key = set("TS_AUTHKEY").map(|k| k.trim().to_owned());
        let has_identity = state_dir.as_ref().is_some_and(|d| d.join(STATE_FILE).is_file());
        if auth_key.is_none() && !has_identity {
            return Err("TS_AUTHKEY is not set (and TS_STATE_DIR holds no registered node)".into());
        }
        Ok(NodeConfig {
            auth_key,
            hostname,
            tags,
            control_url,
            state_dir,
            egress,
            exit_node,
            exit_node_allow_lan,
        })
    }

    /// Ephemeral unless the identity is kept: a node that forgets its keys on exit should not
    /// linger in the tailnet.
    pub fn ephemeral(&self) -> bool {
        self.state_dir.is_none()
    }
}

/// Checks one setting's value as [`NodeConfig::from_env`] reads it, for settings that arrive
/// under another name (the netavark plugin's options): one rule for both ways in. A blank value
/// is unset, as in the environment. The error says what is wrong with the value; the caller
/// names where it came from.
pub fn check_value(var: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Ok(());
    }
    match var {
        "TS_HOSTNAME" => parse_hostname(value).map(drop),
        "TS_TAGS" => parse_tags(value).map(drop),
        "TS_CONTROL_URL" => parse_control_url(value).map(drop),
        "TS_STATE_DIR" => parse_state_dir(value).map(drop),
        "TS_EGRESS" | "TS_EXIT_NODE_ALLOW_LAN" => parse_switch(value).map(drop),
        "TS_EXIT_NODE" => parse_exit_node(value).map(drop),
        _ => Err(format!("{var} is not a node setting")),
    }
}

/// A set variable's parsed value, the variable named in the error.
fn read<T>(
    set: &impl Fn(&str) -> Option<String>,
    var: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    set(var).map(|value| parse(&value).map_err(|e| format!("{var}: {e}"))).transpose()
}

fn parse_hostname(value: &str) -> Result<Hostname, String> {
    value.trim().parse().map_err(|e: NameError| e.to_string())
}

fn parse_tags(value: &str) -> Result<Vec<Tag>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<Tag>().map_err(|e| e.to_string()))
        .collect()
}

fn parse_control_url(value: &str) -> Result<String, String> {
    let Some(("http" | "https", rest)) = value.split_once("://") else {
        return Err(format!("{value:?} is not an http(s) URL"));
    };
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Err(format!("{value:?} names no host"));
    }
    Ok(value.to_owned())
}

/// A peer's name (bare or with the tailnet's suffix) or tailnet address.
fn parse_exit_node(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let name = value.trim_end_matches('.');
    let labels_ok = name.split('.').all(|label| label.parse::<Hostname>().is_ok());
    match labels_ok && name.len() <= 253 {
        true => Ok(name.to_ascii_lowercase()),
        false => Err(format!("{value:?} is neither a node's name nor a tailnet address")),
    }
}

fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{value:?} is neither on nor off")),
    }
}

fn parse_state_dir(value: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(value);
    if !dir.is_absolute() {
        return Err(format!("{} is not an absolute path", dir.display()));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<NodeConfig, String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        NodeConfig::from_env(|k| vars.get(k).cloned())
    }

    #[test]
    fn minimal_settings() {
        let c = config(&[("TS_AUTHKEY", "tskey-auth-x"), ("TS_HOSTNAME", "web")]).unwrap();
        assert_eq!(c.hostname.as_str(), "web");
        assert_eq!(c.control_url, DEFAULT_CONTROL_URL);
        assert!(c.tags.is_empty() && c.ephemeral());
        assert!(c.egress, "egress is on unless turned off");
        let off = config(&[("TS_AUTHKEY", "k"), ("TS_HOSTNAME", "web"), ("TS_EGRESS", "off")]);
        assert!(!off.unwrap().egress);
        let exit = config(&[
            ("TS_AUTHKEY", "k"),
            ("TS_HOSTNAME", "web"),
            ("TS_EXIT_NODE", "Exit.lab.ts.net."),
            ("TS_EXIT_NODE_ALLOW_LAN", "on"),
        ])
        .unwrap();
        assert_eq!(
            (exit.exit_node.as_deref(), exit.exit_node_allow_lan),
            (Some("exit.lab.ts.net"), true)
        );
        let by_ip =
            config(&[("TS_AUTHKEY", "k"), ("TS_HOSTNAME", "web"), ("TS_EXIT_NODE", "100.64.0.9")]);
        assert_eq!(by_ip.unwrap().exit_node.as_deref(), Some("100.64.0.9"));
    }

    #[test]
    fn tags_and_control_url() {
        let c = config(&[
            ("TS_AUTHKEY", "k"),
            ("TS_HOSTNAME", "web"),
            ("TS_TAGS", "tag:web, tag:prod"),
            ("TS_CONTROL_URL", "http://127.0.0.1:8080"),
        ])
        .unwrap();
        let tags: Vec<&str> = c.tags.iter().map(Tag::as_str).collect();
        assert_eq!(tags, ["tag:web", "tag:prod"]);
        assert_eq!(c.control_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let base = [("TS_AUTHKEY", "k"), ("TS_HOSTNAME", "web")];
        let with = |extra: (&str, &str)| {
            let mut vars = base.to_vec();
            vars.retain(|(k, _)| *k != extra.0);
            vars.push(extra);
            config(&vars).unwrap_err()
        };
        assert!(with(("TS_HOSTNAME", "Not_A_Host")).starts_with("TS_HOSTNAME"));
        assert!(with(("TS_TAGS", "web")).starts_with("TS_TAGS"));
        assert!(with(("TS_CONTROL_URL", "ftp://x")).starts_with("TS_CONTROL_URL"));
        assert_eq!(
            with(("TS_CONTROL_URL", "https:///key")),
            r#"TS_CONTROL_URL: "https:///key" names no host"#
        );
        assert!(with(("TS_STATE_DIR", "relative")).starts_with("TS_STATE_DIR"));
        assert_eq!(with(("TS_EGRESS", "maybe")), r#"TS_EGRESS: "maybe" is neither on nor off"#);
        assert_eq!(
            with(("TS_EXIT_NODE", "no such/node")),
            r#"TS_EXIT_NODE: "no such/node" is neither a node's name nor a tailnet address"#
        );
        assert_eq!(
            with(("TS_EXIT_NODE_ALLOW_LAN", "on")),
            "TS_EXIT_NODE_ALLOW_LAN is set without TS_EXIT_NODE"
        );
        assert!(with(("TS_TLS_CERTS_DIR", "/certs")).contains("not supported"));
    }

    #[test]
    fn auth_key_is_required_without_a_stored_identity_and_never_echoed() {
        let error = config(&[("TS_HOSTNAME", "web")]).unwrap_err();
        assert!(error.contains("TS_AUTHKEY"));
        let c = config(&[("TS_AUTHKEY", "tskey-auth-secret"), ("TS_HOSTNAME", "web")]).unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn a_stored_identity_needs_no_auth_key() {
        let dir = std::env::temp_dir().join(format!("ts4nsnet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), "{}").unwrap();
        let c = config(&[("TS_HOSTNAME", "web"), ("TS_STATE_DIR", dir.to_str().unwrap())]);
        std::fs::remove_dir_all(&dir).unwrap();
        let c = c.unwrap();
        assert!(c.auth_key.is_none() && !c.ephemeral());
    }
}
