//! The node's settings, from the environment podman passes through from the service.

use std::path::PathBuf;

use tailpod_core::names::{Hostname, Tag};

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
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("hostname", &self.hostname)
            .field("tags", &self.tags)
            .field("control_url", &self.control_url)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl NodeConfig {
    /// Reads the settings through `get` (the environment, in `main`). Errors name the variable
    /// and never echo the auth key.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<NodeConfig, String> {
        let set = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        if set("TS_EXIT_NODE").is_some() {
            return Err("TS_EXIT_NODE: exit nodes are not supported: tailscale-rs 0.6 cannot \
                        route through one yet; unset it"
                .into());
        }
        if set("TS_TLS_CERTS_DIR").is_some() {
            return Err("TS_TLS_CERTS_DIR: TLS certificates are not supported: tailscale-rs 0.6 \
                        has no certificate API yet; unset it"
                .into());
        }
        let hostname = set("TS_HOSTNAME").ok_or("TS_HOSTNAME is not set")?;
        let hostname: Hostname =
            hostname.trim().parse().map_err(|e| format!("TS_HOSTNAME: {e}"))?;
        let tags = set("TS_TAGS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<Tag>().map_err(|e| format!("TS_TAGS: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let control_url = set("TS_CONTROL_URL").unwrap_or_else(|| DEFAULT_CONTROL_URL.to_owned());
        let scheme = control_url.split("://").next().unwrap_or_default();
        if !control_url.contains("://") || !matches!(scheme, "http" | "https") {
            return Err(format!("TS_CONTROL_URL: {control_url:?} is not an http(s) URL"));
        }
        let state_dir = set("TS_STATE_DIR").map(PathBuf::from);
        if let Some(dir) = &state_dir
            && !dir.is_absolute()
        {
            return Err(format!("TS_STATE_DIR: {} is not an absolute path", dir.display()));
        }
        let auth_key = set("TS_AUTHKEY").map(|k| k.trim().to_owned());
        let has_identity = state_dir.as_ref().is_some_and(|d| d.join(STATE_FILE).is_file());
        if auth_key.is_none() && !has_identity {
            return Err("TS_AUTHKEY is not set (and TS_STATE_DIR holds no registered node)".into());
        }
        Ok(NodeConfig { auth_key, hostname, tags, control_url, state_dir })
    }

    /// Ephemeral unless the identity is kept: a node that forgets its keys on exit should not
    /// linger in the tailnet.
    pub fn ephemeral(&self) -> bool {
        self.state_dir.is_none()
    }
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
        assert!(with(("TS_STATE_DIR", "relative")).starts_with("TS_STATE_DIR"));
        assert!(with(("TS_EXIT_NODE", "100.64.0.9")).contains("not supported"));
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
