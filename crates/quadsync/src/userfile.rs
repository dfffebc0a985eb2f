//! File work inside a container user's home, done *as that user*.
//!
//! quadsync runs as root, but never writes into a user's home as root: a compromised container
//! user could plant a symlink and make root write anywhere (the Go original's f438c0d). Instead
//! quadsync runs itself as the user (`setpriv --reuid --regid --init-groups`, no shell) with the
//! hidden `user-file` command, which does the work here with the user's rights, refusing any
//! symlink below the home directory on the way.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tailpod_core::located::at;

/// A file name quadsync may manage: no path, not hidden, plain characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid { Ok(()) } else { Err(format!("refusing the file name {name:?}")) }
}

/// `home/relative`, made if missing (mode 0700), with no symlink from `home` down.
pub fn unit_dir(home: &Path, relative: &str, create: bool) -> Result<PathBuf, String> {
    let mut current = home.to_owned();
    for component in Path::new(relative).components() {
        let Component::Normal(part) = component else {
            return Err(format!("refusing the directory {relative:?}"));
        };
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("{} is a symlink; refusing to follow it", current.display()));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(format!("{} is not a directory", current.display()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&current)
                    .map_err(|e| format!("creating {}: {e}", current.display()))?;
            }
            Err(e) => return Err(at(&current)(e)),
        }
    }
    Ok(current)
}

/// Writes `text` to `dir/name` atomically, mode 0644 (the user's own unit files).
pub fn write(home: &Path, relative: &str, name: &str, text: &[u8]) -> Result<(), String> {
    check_name(name)?;
    let dir = unit_dir(home, relative, true)?;
    let target = dir.join(name);
    let temporary = dir.join(format!(".{name}.quadsync-tmp"));
    let _ = std::fs::remove_file(&temporary);
    let result = (|| -> std::io::Result<()> {
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o644).open(&temporary)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &target)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("writing {}: {e}", target.display())
    })
}

/// Removes `dir/name` (a symlink there is removed, not followed); missing is fine.
pub fn remove(home: &Path, relative: &str, name: &str) -> Result<(), String> {
    check_name(name)?;
    let dir = match unit_dir(home, relative, false) {
        Ok(dir) => dir,
        Err(_) if !home.join(relative).exists() => return Ok(()),
        Err(e) => return Err(e),
    };
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", dir.join(name).display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_replaces_and_removes() {
        let home = tempfile::tempdir().unwrap();
        write(home.path(), ".config/containers/systemd", "web.container", b"[Container]\n")
            .unwrap();
        let path = home.path().join(".config/containers/systemd/web.container");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[Container]\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::metadata(home.path().join(".config")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        write(home.path(), ".config/containers/systemd", "web.container", b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["web.container"]);
        remove(home.path(), ".config/containers/systemd", "web.container").unwrap();
        assert!(!path.exists());
        remove(home.path(), ".config/containers/systemd", "web.container").unwrap();
        remove(home.path(), ".config/nothing/here", "x.timer").unwrap();
    }

    #[test]
    fn refuses_symlinks_and_odd_names() {
        let home = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), home.path().join(".config")).unwrap();
        let err =
            write(home.path(), ".config/containers/systemd", "web.container", b"x").unwrap_err();
        assert!(err.contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        for bad in ["../x", ".hidden", "a/b", "", "a b", "x;rm"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name("webapp-web.container").is_ok());
    }
}
