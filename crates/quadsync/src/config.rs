//! `/etc/quadsync/config.env`: the same keys and defaults as the Go quadsync, so existing hosts
//! carry over, plus `QUADSYNC_MAX_REMOVAL`.

use std::path::{Path, PathBuf};

use tailpod_core::envfile::{EnvFile, QUADSYNC_CONFIG, shown_key};

use crate::autoupdate::Schedule;
use crate::fleet::{self, PathPattern};
use crate::notify::{self, Target};

pub const DEFAULT_PATH: &str = "/etc/quadsync/config.env";

/// `QUADSYNC_MAX_CONTAINERS` when unset.
pub const DEFAULT_MAX_CONTAINERS: usize = 1000;
/// Above this, subuid ranges of 65,536 ids each would run past 32-bit ids.
const MAX_CONTAINERS_CEILING: usize = 60_000;

/// The settings quadsync knows (one list, shared with `build-ign`'s check of config.env).
const KEYS: &[&str] = QUADSYNC_CONFIG.known;

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
    /// The age identity file that opens the repo's `[Secrets]`.
    pub age_key: Option<PathBuf>,
    /// The largest share of managed containers one sync may remove without
    /// `--allow-mass-removal` (0.0 to 1.0).
    pub max_removal: f64,
    /// The most container users the repo may define: every one is a Linux user with subuid
    /// ranges and a user manager, so a repo cannot make the host create users without end.
    pub max_containers: usize,
    /// The repo directories this host deploys (`QUADSYNC_PATHS`; see [`crate::fleet`]).
    pub paths: Vec<PathPattern>,
    /// When opted-in containers' images are updated (`QUADSYNC_AUTO_UPDATE`).
    pub auto_update: Schedule,
    /// Where problems and recoveries are sent (`QUADSYNC_NOTIFY_URL`; see [`crate::notify`]).
    pub notify: Vec<Target>,
    /// The node_exporter textfile written after each sync (`QUADSYNC_METRICS_FILE`).
    pub metrics_file: Option<PathBuf>,
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
        let max_containers = env
            .parse_value::<usize>("QUADSYNC_MAX_CONTAINERS")
            .map_err(|e| e.to_string())?
            .unwrap_or(DEFAULT_MAX_CONTAINERS);
        if !(1..=MAX_CONTAINERS_CEILING).contains(&max_containers) {
            let line = env.var("QUADSYNC_MAX_CONTAINERS").map(|v| v.line).unwrap_or_default();
            return Err(format!(
                "{origin}:{line}: QUADSYNC_MAX_CONTAINERS: must be between 1 and {MAX_CONTAINERS_CEILING}"
            ));
        }
        let group = or("QUADSYNC_USER_GROUP", "cusers");
        if let Err(e) = group.parse::<tailpod_core::names::ContainerName>() {
            let line = env.var("QUADSYNC_USER_GROUP").map(|v| v.line).unwrap_or_default();
            return Err(format!("{origin}:{line}: QUADSYNC_USER_GROUP: {e}"));
        }
        let located = |key: &str, message: &str| {
            let line = env.var(key).map(|v| v.line).unwrap_or_default();
            format!("{origin}:{line}: {key}: {message}")
        };
        // Paths are absolute: a relative one would depend on the directory quadsync started in.
        let absolute = |key: &str, default: &str| -> Result<PathBuf, String> {
            let path = PathBuf::from(or(key, default));
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(located(key, "must be an absolute path"))
            }
        };
        let git_url = env
            .require("QUADSYNC_GIT_URL")
            .map_err(|e| match env.misspelling_of("QUADSYNC_GIT_URL", KEYS) {
                // A typo explains itself: it comes first, with what was meant.
                Some(typo) => format!(
                    "{origin}:{}: {} is not a setting quadsync knows: did you mean QUADSYNC_GIT_URL? ({e})",
                    typo.line,
                    shown_key(&typo.key)
                ),
                None => e.to_string(),
            })?
            .to_owned();
        if !is_remote_url(&git_url) && !git_url.starts_with('/') {
            return Err(located(
                "QUADSYNC_GIT_URL",
                "must be an https://, ssh://, git:// or file:// URL, user@host:path, or an absolute path",
            ));
        }
        let ssh_key = match env.get("QUADSYNC_SSH_KEY").filter(|v| !v.is_empty()) {
            Some(_) => Some(absolute("QUADSYNC_SSH_KEY", "")?),
            None => None,
        };
        let age_key = match env.get("QUADSYNC_AGE_KEY").filter(|v| !v.is_empty()) {
            Some(_) => Some(absolute("QUADSYNC_AGE_KEY", "")?),
            None => None,
        };
        let paths = fleet::parse(&or("QUADSYNC_PATHS", fleet::DEFAULT_PATHS))
            .map_err(|e| located("QUADSYNC_PATHS", &e))?;
        let auto_update = Schedule::parse(&or("QUADSYNC_AUTO_UPDATE", ""))
            .map_err(|e| located("QUADSYNC_AUTO_UPDATE", &e))?;
        // Never echoed: a webhook URL often carries its token.
        let notify = notify::targets(&or("QUADSYNC_NOTIFY_URL", ""))
            .map_err(|e| located("QUADSYNC_NOTIFY_URL", &e))?;
        let metrics_file = match env.get("QUADSYNC_METRICS_FILE").filter(|v| !v.is_empty()) {
            Some(_) => Some(absolute("QUADSYNC_METRICS_FILE", "")?),
            None => None,
        };
        Ok(Config {
            paths,
            auto_update,
            notify,
            metrics_file,
            git_url,
            branch: or("QUADSYNC_GIT_BRANCH", "main"),
            transform_dir: absolute("QUADSYNC_TRANSFORM_DIR", "/etc/quadsync/transforms")?,
            state_dir: absolute("QUADSYNC_STATE_DIR", "/var/lib/quadsync")?,
            user_group: group,
            ssh_key,
            age_key,
            max_removal,
            max_containers,
            unknown_keys: env.unknown(KEYS).map(|v| v.key.clone()).collect(),
        })
    }
}

/// A URL with a scheme git knows, or scp-like `user@host:path`.
fn is_remote_url(url: &str) -> bool {
    let scheme = ["https://", "http://", "ssh://", "git://", "file://", "git+ssh://", "ssh+git://"];
    if scheme.iter().any(|s| url.starts_with(s)) {
        return true;
    }
    // scp-like: a host before the first ':', and no '/' before it.
    url.split_once(':').is_some_and(|(host, path)| {
        !host.is_empty() && !host.contains('/') && !path.is_empty() && !path.starts_with("//")
    })
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
        assert_eq!(config.max_containers, 1000);
        assert_eq!(config.paths, fleet::parse(".").unwrap());
    }

    #[test]
    fn paths_are_checked_when_the_config_is_read() {
        let config =
            Config::parse("c.env", "QUADSYNC_GIT_URL=u:x\nQUADSYNC_PATHS=common,?hosts/%H\n")
                .unwrap();
        assert_eq!(config.paths, fleet::parse("common,?hosts/%H").unwrap());
        let err =
            Config::parse("c.env", "QUADSYNC_GIT_URL=u:x\nQUADSYNC_PATHS=hosts/%n\n").unwrap_err();
        assert_eq!(
            err,
            "c.env:2: QUADSYNC_PATHS: hosts/%n: unknown specifier %n (known: %H %l %m %a %%)"
        );
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
        let err =
            Config::parse("c.env", "QUADSYNC_GIT_URL=u\nQUADSYNC_MAX_CONTAINERS=0\n").unwrap_err();
        assert_eq!(err, "c.env:2: QUADSYNC_MAX_CONTAINERS: must be between 1 and 60000");
        let err = Config::parse("c.env", "QUADSYNC_GIT_URL=u\nQUADSYNC_USER_GROUP=Bad Group\n")
            .unwrap_err();
        assert!(err.starts_with("c.env:2: QUADSYNC_USER_GROUP: name"), "{err}");
    }

    #[test]
    fn export_prefix_and_typos() {
        let config = Config::parse(
            "c.env",
            "export QUADSYNC_GIT_URL=https://h/r.git\nexport QUADSYNC_USER_GROUP=x\nQUADSYNC_BRANCH=dev\n",
        )
        .unwrap();
        assert_eq!(config.user_group, "x");
        assert_eq!(config.unknown_keys, ["QUADSYNC_BRANCH"]);
    }

    #[test]
    fn a_misspelled_required_key_is_named_before_it_is_missed() {
        let err =
            Config::parse("c.env", "# the repo\nQUADSYNC_GIT_ULR=https://h/r.git\n").unwrap_err();
        assert!(
            err.starts_with(
                "c.env:2: QUADSYNC_GIT_ULR is not a setting quadsync knows: did you mean QUADSYNC_GIT_URL? ("
            ),
            "{err}"
        );
        let err = Config::parse("c.env", "QUADSYNC_GIT_BRANCH=dev\n").unwrap_err();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn relative_paths_and_urls_are_refused() {
        for (line, key) in [
            ("QUADSYNC_STATE_DIR=state", "QUADSYNC_STATE_DIR"),
            ("QUADSYNC_TRANSFORM_DIR=./t", "QUADSYNC_TRANSFORM_DIR"),
            ("QUADSYNC_SSH_KEY=key", "QUADSYNC_SSH_KEY"),
        ] {
            let err =
                Config::parse("c.env", &format!("QUADSYNC_GIT_URL=https://h/r.git\n{line}\n"))
                    .unwrap_err();
            assert_eq!(err, format!("c.env:2: {key}: must be an absolute path"));
        }
        for url in ["defs", "./defs", "../defs.git", "defs/x.git"] {
            let err = Config::parse("c.env", &format!("QUADSYNC_GIT_URL={url}\n")).unwrap_err();
            assert!(
                err.starts_with("c.env:1: QUADSYNC_GIT_URL: must be an https://"),
                "{url}: {err}"
            );
        }
        for url in [
            "https://h/r.git",
            "ssh://git@h/r",
            "git@github.com:o/r.git",
            "file:///srv/r",
            "/srv/r.git",
        ] {
            assert!(Config::parse("c.env", &format!("QUADSYNC_GIT_URL={url}\n")).is_ok(), "{url}");
        }
    }
}
