//! The API's credentials (Tailscale's OAuth client, or Headscale's API key with
//! `TS_API_FLAVOR=headscale`) and the settings that travel with them.
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
//!
//! Nor through the file: it is refused when anyone but its owner may write it (group or others
//! have `w`), or when its owner is neither root nor the user tailmint runs as. Whoever can write
//! it can set `TS_API_URL` and collect the secret from the next run. A file others may read is
//! only warned about: the secret may already be out (rotate it), but refusing would not take it
//! back. The checks are made on the open file, so the file read is the file checked.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tailpod_core::envfile::{EnvFile, shown_key};

pub const CLIENT_ID: &str = "TS_API_CLIENT_ID";
pub const CLIENT_SECRET: &str = "TS_API_CLIENT_SECRET";
pub const TAILNET: &str = "TS_TAILNET";
pub const API_URL: &str = "TS_API_URL";
pub const FLAVOR: &str = "TS_API_FLAVOR";
pub const API_KEY: &str = "TS_API_KEY";
pub const HEADSCALE_USER: &str = "TS_HEADSCALE_USER";

/// Keys the env file may hold.
pub const KNOWN_KEYS: &[&str] = tailpod_core::envfile::TAILMINT_OAUTH.known;

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

/// Which API mints the keys, with its credentials.
#[derive(Debug, Clone)]
pub enum Flavor {
    /// Tailscale's API, through an OAuth client (`TS_API_CLIENT_ID`, `TS_API_CLIENT_SECRET`).
    Tailscale { client_id: String, client_secret: Secret },
    /// Headscale's API (`TS_API_FLAVOR=headscale`): an API key, and the user whose pre-auth
    /// keys are minted (needed before Headscale 0.28, which mints tags-only keys without one).
    Headscale { api_key: Secret, user: Option<String> },
}

impl Flavor {
    /// The secret the run must never show.
    pub fn secret(&self) -> &Secret {
        match self {
            Flavor::Tailscale { client_secret, .. } => client_secret,
            Flavor::Headscale { api_key, .. } => api_key,
        }
    }
}

/// Everything read from the credential sources.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub flavor: Flavor,
    pub tailnet: Option<String>,
    pub api_url: Option<String>,
    /// Keys in the env file tailmint does not know (probably typos), for a warning; as
    /// [`shown_key`] renders them, since a mangled line's key may be a secret.
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

/// Refuses a credentials file anyone but its owner may change, or owned by someone other than
/// root or `euid`; `Ok(Some(warning))` when others may read it.
fn check_file(path: &Path, mode: u32, owner: u32, euid: u32) -> Result<Option<String>, String> {
    let shown = path.display();
    let mode = mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{shown} is writable by group or others (mode {mode:04o}): refusing it, since whoever \
             can write it can send the secret anywhere; chmod 0600 it"
        ));
    }
    if owner != 0 && owner != euid {
        return Err(format!(
            "{shown} is owned by uid {owner}, not root or the running user (uid {euid}): refusing it"
        ));
    }
    Ok((mode & 0o004 != 0).then(|| {
        format!(
            "{shown} is readable by others (mode {mode:04o}): chmod 0600 it and rotate the secret"
        )
    }))
}

/// Reads the env file, checked by [`check_file`]; `None` if it is absent and may be.
fn read_file(sources: &Sources<'_>) -> Result<Option<EnvFile>, String> {
    let path = sources.config;
    let reading = |e: std::io::Error| format!("reading {}: {e}", path.display());
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sources.config_required => {
            return Ok(None);
        }
        Err(e) => return Err(reading(e)),
    };
    let meta = file.metadata().map_err(reading)?;
    let euid = nix::unistd::geteuid().as_raw();
    if let Some(warning) = check_file(path, meta.mode(), meta.uid(), euid)? {
        log::warn!("{warning}");
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(reading)?;
    EnvFile::parse(path.display().to_string(), &text).map(Some).map_err(|e| e.to_string())
}

/// Reads the credentials; errors name the file, line and key, never a value.
pub fn load(sources: &Sources<'_>) -> Result<OAuthConfig, String> {
    let file = read_file(sources)?;
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
            let missing = format!(
                "{key} is not set: put it in {} (or the environment, or a systemd credential)",
                sources.config.display()
            );
            // A typo explains itself: it comes first, with what was meant.
            match file.as_ref().and_then(|f| f.misspelling_of(key, KNOWN_KEYS)) {
                Some(typo) => format!(
                    "{}:{}: {} is not a setting tailmint knows: did you mean {key}? ({missing})",
                    sources.config.display(),
                    typo.line,
                    shown_key(&typo.key)
                ),
                None => missing,
            }
        })
    };
    let flavor = match lookup(FLAVOR)?.as_deref() {
        None | Some("tailscale") => Flavor::Tailscale {
            client_id: required(CLIENT_ID)?,
            client_secret: Secret::new(required(CLIENT_SECRET)?),
        },
        Some("headscale") => {
            // Headscale has no public default: its URL is the server's own.
            required(API_URL)?;
            Flavor::Headscale {
                api_key: Secret::new(required(API_KEY)?),
                user: lookup(HEADSCALE_USER)?,
            }
        }
        Some(other) => {
            return Err(format!("{FLAVOR}={other:?}: it is tailscale (the default) or headscale"));
        }
    };
    Ok(OAuthConfig {
        flavor,
        tailnet: lookup(TAILNET)?,
        api_url: lookup(API_URL)?,
        unknown_keys: file
            .iter()
            .flat_map(|f| f.unknown(KNOWN_KEYS).map(|v| shown_key(&v.key)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// Writes an env file as it should be: mode 0600, whatever the umask.
    fn write_private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn the_headscale_flavour_needs_its_key_and_url_and_nothing_of_oauth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        let sources =
            Sources { config: &path, config_required: true, credentials_dir: None, env: &no_env };
        write_private(
            &path,
            "TS_API_FLAVOR=headscale\nTS_API_KEY=hskey-api-x-y\nTS_API_URL=https://hs.example\nTS_HEADSCALE_USER=ops\n",
        );
        let config = load(&sources).unwrap();
        let Flavor::Headscale { api_key, user } = &config.flavor else { panic!("{config:?}") };
        assert_eq!((api_key.expose(), user.as_deref()), ("hskey-api-x-y", Some("ops")));
        assert!(!format!("{config:?}").contains("hskey-api-x-y"), "Debug shows no key");
        write_private(&path, "TS_API_FLAVOR=headscale\nTS_API_KEY=k\n");
        assert!(load(&sources).unwrap_err().starts_with("TS_API_URL is not set"));
        write_private(&path, "TS_API_FLAVOR=Headscale\n");
        let err = load(&sources).unwrap_err();
        assert_eq!(err, "TS_API_FLAVOR=\"Headscale\": it is tailscale (the default) or headscale");
    }

    #[test]
    fn reads_the_env_file_and_warns_of_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        write_private(
            &path,
            "TS_API_CLIENT_ID=id1\nTS_API_CLIENT_SECRET=\"s3cret\"\nTS_TAILNT=x\n",
        );
        let sources =
            Sources { config: &path, config_required: true, credentials_dir: None, env: &no_env };
        let config = load(&sources).unwrap();
        let Flavor::Tailscale { client_id, client_secret } = &config.flavor else { panic!() };
        assert_eq!(client_id, "id1");
        assert_eq!(client_secret.expose(), "s3cret");
        assert_eq!(config.tailnet, None);
        assert_eq!(config.unknown_keys, ["TS_TAILNT"]);
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_misspelled_required_key_is_named_before_it_is_missed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        write_private(&path, "TS_API_CLIENT_DI=id1\nTS_API_CLIENT_SECRET=s3cret\n");
        let sources =
            Sources { config: &path, config_required: true, credentials_dir: None, env: &no_env };
        let err = load(&sources).unwrap_err();
        let expected = format!(
            "{}:1: TS_API_CLIENT_DI is not a setting tailmint knows: did you mean TS_API_CLIENT_ID? (TS_API_CLIENT_ID is not set",
            path.display()
        );
        assert!(err.starts_with(&expected), "{err}");
    }

    #[test]
    fn environment_beats_credentials_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        write_private(
            &path,
            "TS_API_CLIENT_ID=file-id\nTS_API_CLIENT_SECRET=file-secret\nTS_TAILNET=file.net\n",
        );
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
        let Flavor::Tailscale { client_id, client_secret } = &config.flavor else { panic!() };
        assert_eq!(client_id, "env-id");
        assert_eq!(client_secret.expose(), "cred-secret");
        assert_eq!(config.tailnet.as_deref(), Some("file.net"));
    }

    #[test]
    fn a_file_others_may_change_is_refused() {
        let path = Path::new("/etc/tailscale/oauth.env");
        assert_eq!(check_file(path, 0o100600, 0, 0), Ok(None));
        assert_eq!(check_file(path, 0o100640, 1001, 1001), Ok(None));
        assert_eq!(check_file(path, 0o100400, 0, 1001), Ok(None));
        for mode in [0o620, 0o602, 0o660, 0o666, 0o777, 0o1622] {
            let err = check_file(path, 0o100000 | mode, 0, 0).unwrap_err();
            let expected =
                format!("{} is writable by group or others (mode {mode:04o})", path.display());
            assert!(err.starts_with(&expected), "{err}");
        }
        let err = check_file(path, 0o100600, 1002, 0).unwrap_err();
        assert!(err.starts_with("/etc/tailscale/oauth.env is owned by uid 1002, not root or the running user (uid 0)"), "{err}");
        assert!(check_file(path, 0o100600, 1002, 1001).is_err());
        let warning = check_file(path, 0o100644, 0, 0).unwrap().unwrap();
        assert!(warning.starts_with("/etc/tailscale/oauth.env is readable by others (mode 0644)"));

        // load() checks the file it reads.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth.env");
        std::fs::write(&path, "TS_API_CLIENT_ID=a\nTS_API_CLIENT_SECRET=b\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let sources =
            Sources { config: &path, config_required: true, credentials_dir: None, env: &no_env };
        assert!(load(&sources).unwrap_err().contains("is writable by group or others (mode 0666)"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let Flavor::Tailscale { client_id, .. } = load(&sources).unwrap().flavor else { panic!() };
        assert_eq!(client_id, "a");
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

        write_private(&path, "TS_API_CLIENT_ID=a\nbroken line\n");
        let err = load(&sources).unwrap_err();
        assert!(err.ends_with("absent.env:2: expected KEY=value"), "{err}");
    }
}
