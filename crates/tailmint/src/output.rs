//! The key file: where it may go, and writing it so no reader ever sees half of it.
//!
//! The path must be absolute, with no `.` or `..` component and no symlink anywhere in it. When
//! tailmint runs for a sudo caller, the path must also lie inside that caller's runtime directory
//! (`/run/user/UID/`), so a container user can only write into their own tmpfs, and the file is
//! written after privileges were dropped to that user, so the kernel checks every step too.
//!
//! The file holds `TS_AUTHKEY=…` and, when a hostname was given, `TS_HOSTNAME=…`: the form
//! systemd's `EnvironmentFile=` reads. It is written to a temporary file (mode 0600, created
//! exclusively) in the same directory, synced, then renamed over the target.
//!
//! The temporary file is created before the key is minted ([`KeyFile::create`]), so an output
//! that cannot be written (a symlink on the way, a file where a directory should be, no right to
//! write) is found before a key exists, and no key is minted only to be lost.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tailpod_core::located::at;

use crate::credentials::Secret;

/// Checks `path` before anything is written: absolute, plain components only, and (when
/// `confine_to` is given) inside that directory.
pub fn check_path(path: &Path, confine_to: Option<&Path>) -> Result<(), String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("output path {shown} must be absolute"));
    }
    // Raw bytes: `Path::components` silently drops a `.` in the middle.
    let raw = path.as_os_str().as_encoded_bytes();
    if raw.split(|b| *b == b'/').any(|part| part == b"." || part == b"..") {
        return Err(format!("output path {shown} must not contain '.' or '..'"));
    }
    if path.file_name().is_none() || raw.ends_with(b"/") {
        return Err(format!("output path {shown} must name a file"));
    }
    if let Some(dir) = confine_to
        && (!path.starts_with(dir) || path.parent() == Some(Path::new("/")))
    {
        return Err(format!("output path {shown} must be inside {}", dir.display()));
    }
    Ok(())
}

/// The runtime directory of `uid`, where a sudo caller's output must go.
pub fn runtime_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/run/user/{uid}"))
}

/// Refuses a symlink anywhere in `path`'s existing ancestors, and creates missing directories
/// (mode 0700) below the deepest existing one.
fn prepare_parent(path: &Path) -> Result<(), String> {
    let parent = path.parent().ok_or_else(|| format!("{} has no parent", path.display()))?;
    let mut current = PathBuf::from("/");
    for component in parent.components().skip(1) {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink; refusing to write through it",
                    current.display()
                ));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(format!("{} is not a directory", current.display()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&current)
                    .map_err(|e| format!("creating {}: {e}", current.display()))?;
            }
            Err(e) => return Err(at(&current)(e)),
        }
    }
    Ok(())
}

/// The file's text.
pub fn contents(key: &Secret, hostname: Option<&str>) -> String {
    let mut text = format!("TS_AUTHKEY={}\n", key.expose());
    if let Some(hostname) = hostname {
        text.push_str(&format!("TS_HOSTNAME={hostname}\n"));
    }
    text
}

/// A key file on its way: the directory is ready and the temporary file exists, empty, until
/// [`KeyFile::commit`] fills it and renames it into place. Dropped uncommitted (the mint
/// failed), it removes the temporary file.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    temporary: PathBuf,
    file: Option<File>,
}

impl KeyFile {
    /// Prepares to write `path` as the current user: checks and creates its directory, and
    /// creates the temporary file (mode 0600) next to it.
    pub fn create(path: &Path) -> Result<KeyFile, String> {
        prepare_parent(path)?;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{} is a directory", path.display()));
        }
        let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let temporary = path.with_file_name(format!(".{file_name}.tmp.{}", std::process::id()));
        // create_new is O_CREAT|O_EXCL: it never follows or reuses whatever is at that name.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(KeyFile { path: path.to_owned(), temporary, file: Some(file) })
    }

    /// Writes `text`, syncs it and renames the file into place.
    pub fn commit(mut self, text: &str) -> Result<(), String> {
        let mut file = self.file.take().expect("a KeyFile is committed once");
        let written = (|| {
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&self.temporary, &self.path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&self.temporary);
            format!("writing {}: {e}", self.path.display())
        })
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Writes `text` to `path` atomically, mode 0600, as the current user.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    KeyFile::create(path)?.commit(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn paths_are_checked() {
        let run = Path::new("/run/user/1001");
        assert!(check_path(Path::new("/run/user/1001/tailmint/web.env"), Some(run)).is_ok());
        assert!(check_path(Path::new("/tmp/key.env"), None).is_ok());
        let refused = [
            ("relative/key.env", None, "must be absolute"),
            ("/run/user/1001/../1002/key.env", Some(run), "must not contain"),
            ("/run/user/1001/./key.env", Some(run), "must not contain"),
            ("/run/user/1002/key.env", Some(run), "must be inside /run/user/1001"),
            ("/run/user/10011/key.env", Some(run), "must be inside /run/user/1001"),
            ("/run/user/1001/", Some(run), "must name a file"),
        ];
        for (path, confine, message) in refused {
            let err = check_path(Path::new(path), confine).unwrap_err();
            assert!(err.contains(message), "{path}: {err}");
        }
    }

    #[test]
    fn writes_atomically_with_mode_0600_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tailmint/web.env");
        let text = contents(&Secret::new("tskey-auth-x"), Some("web"));
        write_atomically(&path, &text).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "TS_AUTHKEY=tskey-auth-x\nTS_HOSTNAME=web\n"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let made = std::fs::metadata(dir.path().join("tailmint")).unwrap();
        assert_eq!(made.permissions().mode() & 0o777, 0o700);
        // Replacing leaves no temporary file behind.
        write_atomically(&path, "TS_AUTHKEY=other\n").unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["web.env"]);
    }

    #[test]
    fn an_uncommitted_key_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.env");
        let pending = KeyFile::create(&path).unwrap();
        let names = || -> Vec<_> {
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect()
        };
        let temporary = format!(".web.env.tmp.{}", std::process::id());
        assert_eq!(names(), [temporary.as_str()]);
        let meta = std::fs::metadata(dir.path().join(&temporary)).unwrap();
        assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (0, 0o600));
        drop(pending);
        assert!(names().is_empty());
        let err = KeyFile::create(dir.path()).unwrap_err();
        assert!(err.ends_with("is a directory"), "{err}");
    }

    #[test]
    fn refuses_symlinks_in_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("link")).unwrap();
        let err = write_atomically(&dir.path().join("link/key.env"), "x").unwrap_err();
        assert!(err.contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

        // A symlink at the file's own name is replaced, never followed.
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("key.env");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_atomically(&path, "TS_AUTHKEY=k\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    }
}
