//! `/etc/quadsync/config.env`: the same keys and defaults as the Go quadsync, so existing hosts
//! carry over, plus `QUADSYNC_MAX_REMOVAL`.

use std::path::{Path, PathBuf};

use tailpod_core::envfile::EnvFile;

pub const DEFAULT_PATH: &str = "/etc/quadsync/config.env";

const KEYS: &[&str] = &[
    "QUADSYNC_GIT_URL",
    "QUADSYNC_GIT_BRANCH",
    "QUADSYNC_TRANSFORM_DIR",
    "QUADSYNC_STATE_DIR",
    "QUADSYNC_USER_GROUP",
    "QUADSYNC_SSH_KEY",
    "QUADSYNC_MAX_REMOVAL",
];

/// quadsync's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub git_url: String,
    pub branch: String,
    pub transform_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The group every container user joins.
    pub user_group: String,
    /// A deploy key for ssh URLs.
    pub ssh_key: Option<PathBuf>,
    /// The largest share of managed containers one sync may remove without
    /// `--allow-mass-removal` (0.0 to 1.0).
    pub max_removal: f64,
    /// Keys in the file quadsync does not know: probably typos.
    pub unknown_keys: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Config::parse(&path.display().to_string(), &text)
    }

    pub fn parse(origin: &str, text: &str) -> Result<Config, String> {
        let env = EnvFile::parse(origin, text).map_err(|e| e.to_string())?;
        let or = |key: &str, default: &str| {
            env.get(key).filter(|v| !v.is_empty()).unwrap_or(default).to_owned()
        };
        let max_removal = env
            .parse_value::<f64>("QUADSYNC_MAX_REMOVAL")
            .map_err(|e| e.to_string())?
            .unwrap_or(0.5);
        if !(0.0..=1.0).contains(&max_removal) {
            let line = env.var("QUADSYNC_MAX_REMOVAL").map(|v| v.line).unwrap_or_default();
            return Err(format!("{origin}:{line}: QUADSYNC_MAX_REMOVAL: must be between 0 and 1"));
        }
        let group = or("QUADSYNC_USER_GROUP", "cusers");
        if let Err(e) = group.parse::<tailpod_core::names::ContainerName>() {
            let line = env.var("QUADSYNC_USER_GROUP").map(|v| v.line).unwrap_or_default();
            return Err(format!("{origin}:{line}: QUADSYNC_USER_GROUP: {e}"));
        }
        Ok(Config {
            git_url: env.require("QUADSYNC_GIT_URL").map_err(|e| e.to_string())?.to_owned(),
            branch: or("QUADSYNC_GIT_BRANCH", "main"),
            transform_dir: PathBuf::from(or("QUADSYNC_TRANSFORM_DIR", "/etc/quadsync/transforms")),
            state_dir: PathBuf::from(or("QUADSYNC_STATE_DIR", "/var/lib/quadsync")),
            user_group: group,
            ssh_key: env.get("QUADSYNC_SSH_KEY").filter(|v| !v.is_empty()).map(PathBuf::from),
            max_removal,
            unknown_keys: env.unknown(KEYS).map(|v| v.key.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_the_go_defaults() {
        let config = Config::parse("c.env", "QUADSYNC_GIT_URL=https://x/y.git\n").unwrap();
        assert_eq!(config.git_url, "https://x/y.git");
        assert_eq!(config.branch, "main");
        assert_eq!(config.transform_dir, Path::new("/etc/quadsync/transforms"));
        assert_eq!(config.state_dir, Path::new("/var/lib/quadsync"));
        assert_eq!(config.user_group, "cusers");
        assert_eq!(config.ssh_key, None);
        assert_eq!(config.max_removal, 0.5);
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        assert_eq!(
            Config::parse("c.env", "QUADSYNC_GIT_BRANCH=x\n").unwrap_err(),
            "c.env: QUADSYNC_GIT_URL: not set"
        );
        assert_eq!(
            Config::parse("c.env", "QUADSYNC_GIT_URL=\n").unwrap_err(),
            "c.env:1: QUADSYNC_GIT_URL: is empty"
        );
        // The Go original's legacy names are not read.
        assert!(Config::parse("c.env", "QDEPLOY_GIT_URL=https://x\n").is_err());
        let err =
            Config::parse("c.env", "QUADSYNC_GIT_URL=u\nQUADSYNC_MAX_REMOVAL=2\n").unwrap_err();
        assert_eq!(err, "c.env:2: QUADSYNC_MAX_REMOVAL: must be between 0 and 1");
        let err = Config::parse("c.env", "QUADSYNC_GIT_URL=u\nQUADSYNC_USER_GROUP=Bad Group\n")
            .unwrap_err();
        assert!(err.starts_with("c.env:2: QUADSYNC_USER_GROUP: name"), "{err}");
    }

    #[test]
    fn export_prefix_and_typos() {
        let config = Config::parse(
            "c.env",
            "export QUADSYNC_GIT_URL=u\nexport QUADSYNC_USER_GROUP=x\nQUADSYNC_BRANCH=dev\n",
        )
        .unwrap();
        assert_eq!(config.user_group, "x");
        assert_eq!(config.unknown_keys, ["QUADSYNC_BRANCH"]);
    }
}
