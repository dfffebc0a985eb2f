//! What quadsync remembers between runs (`STATE/state.json`): the deployed commit, the last
//! sync's result, and every user it created, with the files it wrote for them.
//!
//! This record, not group membership, is what makes a user "managed": a user someone added to
//! the group by hand is never touched, and a user quadsync did not create is never taken over.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tailpod_core::located::at;
use tailpod_core::names::UserName;

use crate::discover::{Deployment, UnitDir};

/// [`UserName`] in JSON: a string, checked again when read back, so a state file edited by hand
/// (or by anyone) can never hand `userdel` or a path a name that was not validated.
pub mod user_name {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};
    use tailpod_core::names::UserName;

    pub fn serialize<S: Serializer>(name: &UserName, serializer: S) -> Result<S::Ok, S::Error> {
        name.as_str().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UserName, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(D::Error::custom)
    }

    /// A map keyed by user.
    pub mod keys {
        use super::*;

        pub fn serialize<S: Serializer, V: Serialize>(
            map: &BTreeMap<UserName, V>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            serializer.collect_map(map.iter().map(|(name, value)| (name.as_str(), value)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
            deserializer: D,
        ) -> Result<BTreeMap<UserName, V>, D::Error> {
            BTreeMap::<String, V>::deserialize(deserializer)?
                .into_iter()
                .map(|(name, value)| Ok((name.parse().map_err(D::Error::custom)?, value)))
                .collect()
        }
    }
}

/// One managed user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedUser {
    /// The unit quadsync (re)starts.
    pub service: String,
    /// Every file quadsync wrote for this user, with the SHA-256 of what it wrote. Empty after
    /// `redeploy`, which forces a full rewrite and restart.
    pub files: BTreeMap<String, DeployedFile>,
    /// What happened at the last deploy of this user.
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedFile {
    pub dir: UnitDirName,
    pub sha256: String,
}

/// [`UnitDir`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitDirName {
    Quadlet,
    Systemd,
    /// A podman secret; its `sha256` is the value's keyed digest.
    Secret,
    AutoUpdateTimer,
    AutoUpdateService,
}

impl From<UnitDir> for UnitDirName {
    fn from(dir: UnitDir) -> Self {
        match dir {
            UnitDir::Quadlet => UnitDirName::Quadlet,
            UnitDir::Systemd => UnitDirName::Systemd,
            UnitDir::Secret => UnitDirName::Secret,
            UnitDir::AutoUpdateTimer => UnitDirName::AutoUpdateTimer,
            UnitDir::AutoUpdateService => UnitDirName::AutoUpdateService,
        }
    }
}

impl From<UnitDirName> for UnitDir {
    fn from(dir: UnitDirName) -> Self {
        match dir {
            UnitDirName::Quadlet => UnitDir::Quadlet,
            UnitDirName::Systemd => UnitDir::Systemd,
            UnitDirName::Secret => UnitDir::Secret,
            UnitDirName::AutoUpdateTimer => UnitDir::AutoUpdateTimer,
            UnitDirName::AutoUpdateService => UnitDir::AutoUpdateService,
        }
    }
}

/// The outcome of the last sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    /// Seconds since the epoch.
    pub at: u64,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The commit whose definitions are deployed.
    pub commit: Option<String>,
    pub last_sync: Option<LastSync>,
    #[serde(with = "user_name::keys")]
    pub users: BTreeMap<UserName, ManagedUser>,
    /// What podman's generator accepted, per deployment (see [`crate::validate`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "user_name::keys")]
    pub validated: crate::validate::ValidatedRecord,
    /// Problems, update outcomes and undelivered notifications (see [`crate::health`]).
    #[serde(default, skip_serializing_if = "crate::health::Health::is_empty")]
    pub health: crate::health::Health,
}

pub fn sha256(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Lower-case hex, as hashes are stored (a `format!` per byte costs more than the hashing).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The file records a deployment leaves behind (a secret's is its keyed digest as it is).
pub fn deployed_files(deployment: &Deployment) -> BTreeMap<String, DeployedFile> {
    deployment
        .files
        .iter()
        .map(|(name, file)| {
            let sha256 = match file.dir {
                UnitDir::Secret => file.text.clone(),
                _ => sha256(&file.text),
            };
            (name.clone(), DeployedFile { dir: file.dir.into(), sha256 })
        })
        .collect()
}

impl State {
    /// Reads the state; a missing file is an empty state, an unreadable one an error (quadsync
    /// must not forget which users it owns).
    pub fn load(path: &Path) -> Result<State, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(at(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the state atomically, mode 0600 (see [`write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())? + "\n";
        write_atomic(path, text.as_bytes(), 0o600)
    }
}

/// Writes `path` atomically with `mode`: a new file of a random name beside it (never an
/// existing one, never through a link), fsync, rename over. Readers see the old file or the new
/// one, never half of one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".quadsync-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| failed(&e))?;
    temporary.write_all(data).map_err(|e| failed(&e))?;
    temporary.as_file().sync_all().map_err(|e| failed(&e))?;
    temporary.persist(path).map_err(|e| failed(&e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lower_case_hex() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(
            sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn saving_never_writes_through_a_planted_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // The temporary name the state was once written to, planted as a link.
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        let path = dir.path().join("state.json");
        let state = State { commit: Some("abc".into()), ..State::default() };
        state.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(State::load(&path).unwrap(), state);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "no temporary file left: {left:?}");
    }

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut state = State { commit: Some("abc".into()), ..State::default() };
        let files = BTreeMap::from([(
            "web.container".to_owned(),
            DeployedFile { dir: UnitDirName::Quadlet, sha256: sha256("x") },
        )]);
        state.users.insert(
            "web".parse().unwrap(),
            ManagedUser { service: "web.service".into(), files, result: "started".into() },
        );
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        std::fs::write(&path, "{broken").unwrap();
        assert!(State::load(&path).unwrap_err().contains("state.json"));
    }

    #[test]
    fn a_user_name_in_the_state_is_validated_again_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let managed = r#"{"service": "x.service", "files": {}, "result": ""}"#;
        for user in ["../../etc", "-r", "Root"] {
            std::fs::write(&path, format!(r#"{{"users": {{"{user}": {managed}}}}}"#)).unwrap();
            let err = State::load(&path).unwrap_err();
            assert!(err.contains(&format!("user \"{user}\"")), "{err}");
        }
        std::fs::write(&path, r#"{"users": {}, "validated": {"a/b": "x"}}"#).unwrap();
        assert!(State::load(&path).unwrap_err().contains(r#"user "a/b""#));
    }
}
