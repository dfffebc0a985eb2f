//! The node's keys, kept in a state directory so a restarted node is the same node (same key,
//! same addresses) instead of a new one.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The file in the state directory that holds the keys.
pub const STATE_FILE: &str = "tailnode.json";

/// The node's keys, and whether they were loaded (a node control may already know).
#[derive(Debug, Clone)]
pub struct Identity {
    pub keys: ts_keys::NodeState,
    pub persisted: bool,
}

impl Identity {
    /// Fresh keys, never written anywhere (an ephemeral node that lives once).
    pub fn fresh() -> Identity {
        Identity { keys: ts_keys::NodeState::generate(), persisted: false }
    }

    /// The keys in `dir`, created (0600, written atomically) on first use.
    pub fn load_or_create(dir: &Path, file: &str) -> Result<Identity, String> {
        let path = dir.join(file);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let persisted: ts_keys::PersistState = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a node state file: {e}", path.display()))?;
                return Ok(Identity { keys: (&persisted).into(), persisted: true });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let keys = ts_keys::NodeState::generate();
        let json = serde_json::to_vec(&ts_keys::PersistState::from(&keys)).expect("keys serialise");
        let temporary = dir.join(format!(".{file}.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(format!("{}: {e}", path.display()));
        }
        Ok(Identity { keys, persisted: false })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keys_are_created_private_and_read_back_the_same() {
        let dir = std::env::temp_dir().join(format!("tailnode-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = Identity::load_or_create(&dir, STATE_FILE).unwrap();
        assert!(!first.persisted);
        let mode = std::fs::metadata(dir.join(STATE_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(&dir, STATE_FILE).unwrap();
        assert!(again.persisted);
        assert_eq!(again.keys.node_keys.public, first.keys.node_keys.public);
        assert_eq!(again.keys.machine_keys.public, first.keys.machine_keys.public);
        std::fs::write(dir.join(STATE_FILE), b"{").unwrap();
        let e = Identity::load_or_create(&dir, STATE_FILE).unwrap_err();
        assert!(e.contains("not a node state file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
