//! The OAuth client's credentials and the settings that travel with them.
//!
//! Each value is taken from the first place that has it:
//!
//! 1. the environment variable of the same name (`TS_API_CLIENT_ID`, `TS_API_CLIENT_SECRET`, ...);
//! 2. a systemd credential of that name (`$CREDENTIALS_DIRECTORY/TS_API_CLIENT_SECRET`, from
//!    `LoadCredential=`);
//! 3. the env file (`--config`, default `/etc/tailscale/oauth.env`).
//!
//! The env file may be missing when the default path is used and everything needed came from
//! elsewhere; a file named with `--config` must exist. `sudo` clears the environment by default, so
//! a container user cannot slip their own values in through it.

use std::fmt;
use std::path::{Path, PathBuf};

use tailpod_core::envfile::EnvFile;

pub const CLIENT_ID: &str = "TS_API_CLIENT_ID";
pub const CLIENT_SECRET: &str = "TS_API_CLIENT_SECRET";
pub const TAILNET: &str = "TS_TAILNET";
pub const API_URL: &str = "TS_API_URL";

/// Keys the env file may hold.
pub const KNOWN_KEYS: &[&str] = &[CLIENT_ID, CLIENT_SECRET, TAILNET, API_URL];

/// A secret string: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything read from the credential sources.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub tailnet: Option<String>,
    pub api_url: Option<String>,
    /// Keys in the env file tailmint does not know (probably typos), for a warning.
    pub unknown_keys: Vec<String>,
}

/// Where to look, so tests can point the lookups anywhere.
#[derive(Clone)]
pub struct Sources<'a> {
    pub config: &'a Path,
    /// Whether the path was given on the command line (then it must exist).
    pub config_required: bool,
    pub credentials_dir: Option<PathBuf>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("config", &self.config)
            .field("config_required", &self.config_required)
            .field("credentials_dir", &self.credentials_dir)
            .finish_non_exhaustive()
    }
}

/// Reads the credentials; errors name the file, line and key, never a value.
pub fn load(sources: &Sources<'_>) -> Result<OAuthConfig, String> {
    let file = match std::fs::read_to_string(sources.config) {
        Ok(text) => Some(
            EnvFile::parse(sources.config.display().to_string(), &text)
                .map_err(|e| e.to_string())?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sources.config_required => None,
        Err(e) => return Err(format!("reading {}: {e}", sources.config.display())),
    };
    let lookup = |key: &str| -> Result<Option<String>, String> {
        if let Some(value) = (sources.env)(key).filter(|v| !v.is_empty()) {
            return Ok(Some(value));
        }
        if let Some(dir) = &sources.credentials_dir {
            let path = dir.join(key);
            match std::fs::read_to_string(&path) {
                Ok(value) => return Ok(Some(value.trim_end_matches(['\n', '\r']).to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("reading credential {}: {e}", path.display())),
            }
        }
        Ok(file.as_ref().and_then(|f| f.get(key)).filter(|v| !v.is_empty()).map(str::to_owned))
    };
    let required = |key: &str| -> Result<String, String> {
        lookup(key)?.ok_or_else(|| {
            format!(
                "{key} is not set: put it in {} (or the environment, or a systemd credential)",
                sources.config.display()
            )
        })
    };
    Ok(OAuthConfig {
        client_id: required(CLIENT_ID)?,
        client_secret: Secret::new(required(CLIENT_SECRET)?),
        tailnet: lookup(TAILNET)?,
        api_url: lookup(API_URL)?,
        unknown_keys: file
            .iter()
            .flat_map(|f| f.unknown(KNOWN_KEYS).map(|v| v.key.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn reads_the_env_file_and_warns_of_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        std::fs::write(
            &path,
            "TS_API_CLIENT_ID=id1\nTS_API_CLIENT_SECRET=\"s3cret\"\nTS_TAILNT=x\n",
        )
        .unwrap();
        let sources =
            Sources { config: &path, config_required: true, credentials_dir: None, env: &no_env };
        let config = load(&sources).unwrap();
        assert_eq!(config.client_id, "id1");
        assert_eq!(config.client_secret.expose(), "s3cret");
        assert_eq!(config.tailnet, None);
        assert_eq!(config.unknown_keys, ["TS_TAILNT"]);
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn environment_beats_credentials_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        std::fs::write(
            &path,
            "TS_API_CLIENT_ID=file-id\nTS_API_CLIENT_SECRET=file-secret\nTS_TAILNET=file.net\n",
        )
        .unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("TS_API_CLIENT_SECRET"), "cred-secret\n").unwrap();
        let env = |key: &str| (key == "TS_API_CLIENT_ID").then(|| "env-id".to_owned());
        let sources = Sources {
            config: &path,
            config_required: true,
            credentials_dir: Some(creds),
            env: &env,
        };
        let config = load(&sources).unwrap();
        assert_eq!(config.client_id, "env-id");
        assert_eq!(config.client_secret.expose(), "cred-secret");
        assert_eq!(config.tailnet.as_deref(), Some("file.net"));
    }

    #[test]
    fn missing_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.env");
        let sources =
            Sources { config: &path, config_required: false, credentials_dir: None, env: &no_env };
        let err = load(&sources).unwrap_err();
        assert!(err.starts_with("TS_API_CLIENT_ID is not set: put it in"), "{err}");
        let sources = Sources { config_required: true, ..sources };
        assert!(load(&sources).unwrap_err().starts_with("reading "));

        std::fs::write(&path, "TS_API_CLIENT_ID=a\nbroken line\n").unwrap();
        let err = load(&sources).unwrap_err();
        assert!(err.ends_with("absent.env:2: expected KEY=value"), "{err}");
    }
}
