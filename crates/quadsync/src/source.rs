//! The one rule for reading a definitions repo, whether from a fetched commit (`sync`, `plan`) or
//! from a directory on disk (`check`, `augment`).
//!
//! Both go through [`read_sources`] over a [`SourceTree`], so what `check` passes is exactly what
//! `sync` deploys:
//!
//! * The root and one level of non-hidden directories are read. Quadlet units (`*.container`,
//!   `*.pod`, and the companion types in [`COMPANION_TYPES`]) and sidecars (`*.service`,
//!   `*.timer`) count. YAML files and Containerfiles are read when they are regular files, for
//!   the units that name them; everything else is ignored.
//! * A wanted name must be a regular file committed in the repo. A symlink, a submodule or a
//!   directory there is an error that stops the sync: quadsync never follows a link (it could
//!   point out of the repo, at `/etc/shadow`), and it never treats such a name as "removed",
//!   which would delete the container's user and its data.
//! * A submodule at the root is an error too: definitions in it would silently not count.
//! * Work is bounded: a file may have [`MAX_FILE_BYTES`], all of them [`MAX_TOTAL_BYTES`], and at
//!   most [`MAX_ENTRIES`] entries are looked at. Text must be UTF-8 without NUL bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tailpod_core::quadlet::{Severity, suggest};

use crate::fleet::RepoPath;

/// A definition read from the repo: its path from the root, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    /// The directory of `QUADSYNC_PATHS` it was read under (`""`: the root).
    pub base: String,
}

impl SourceFile {
    /// A file read under the repo's root.
    pub fn at_root(path: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile { path: path.into(), text: text.into(), base: String::new() }
    }

    /// Its path below its base: what the layout rules (root or transform directory) apply to.
    pub fn local(&self) -> &str {
        match self.base.is_empty() {
            true => &self.path,
            false => {
                self.path.strip_prefix(&self.base).map_or(&self.path, |p| p.trim_start_matches('/'))
            }
        }
    }
}

/// The largest definition file quadsync reads (a unit file is a few kilobytes).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most all definition files together may hold.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;
/// The most directory entries one read looks at.
pub const MAX_ENTRIES: usize = 100_000;

/// What a name in the repo is, without following anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    Symlink,
    Submodule,
    /// A FIFO, socket or device (only on disk).
    Special,
}

/// One name in a directory of the repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

/// A repo to read: a commit's tree or a directory.
pub trait SourceTree {
    /// The entries of `dir` (`""` is the root), never following a link.
    fn list(&self, dir: &str) -> Result<Vec<Entry>, String>;
    /// The contents of the regular file at `path`; at most `limit` bytes are read.
    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, String>;
}

/// The Quadlet types deployed beside a container or pod that owns them by name.
pub const COMPANION_TYPES: [&str; 6] = ["volume", "network", "kube", "image", "build", "artifact"];
/// Every extension [`wanted`] accepts.
const DEPLOYED: [&str; 10] = [
    "container",
    "pod",
    "service",
    "timer",
    "volume",
    "network",
    "kube",
    "image",
    "build",
    "artifact",
];

/// Whether a file name is a definition quadsync deploys: a Quadlet unit or a sidecar.
pub fn wanted(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| DEPLOYED.contains(&ext))
}

/// Whether a file name is one a unit may name by path (`Yaml=` of a `.kube`, `File=` of a
/// `.build`): read when it is a regular file, deployed only when a unit names it.
pub fn is_data(name: &str) -> bool {
    let extension = name.rsplit_once('.').map(|(_, ext)| ext);
    matches!(extension, Some("yaml" | "yml" | "Containerfile" | "Dockerfile"))
        || matches!(name, "Containerfile" | "Dockerfile")
}

/// Names in the repo that [`read_paths`] passes over but that look meant to count: a near miss
/// of a definition's extension (`web.contianer`) or a definition one directory too deep. Hidden
/// names and other files (a README) are not reported, nor what another of `paths` reads. For
/// `check`: `sync` reads by the same rule and simply does not see them.
pub fn overlooked(
    tree: &dyn SourceTree,
    paths: &[RepoPath],
) -> Result<Vec<(Severity, String)>, String> {
    let mut found = Vec::new();
    let mut entries = 0;
    let mut list = |dir: &str| -> Result<Vec<Entry>, String> {
        let listed = tree.list(dir)?;
        entries += listed.len();
        match entries > MAX_ENTRIES {
            true => Err(format!("the repo has more than {MAX_ENTRIES} entries near its top")),
            false => Ok(listed.into_iter().filter(|e| !e.name.starts_with('.')).collect()),
        }
    };
    let files_at = |dir: &str, entries: &[Entry], found: &mut Vec<(Severity, String)>| {
        for entry in entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. })) {
            let path = join(dir, &entry.name);
            let Some((_, extension)) = entry.name.rsplit_once('.') else { continue };
            if DEPLOYED.contains(&extension) {
                continue;
            }
            if let Some(meant) = suggest(extension, DEPLOYED.into_iter()) {
                found.push((Severity::Error, format!("{path}: not read: did you mean .{meant}?")));
            }
        }
    };
    let read_by_a_path = |dir: &str| paths.iter().any(|p| p.dir == dir);
    for base in paths {
        if !base.dir.is_empty() && kind_at(tree, &base.dir)? != Some(EntryKind::Dir) {
            continue; // read_paths says why.
        }
        let root = list(&base.dir)?;
        files_at(&base.dir, &root, &mut found);
        for dir in root.iter().filter(|e| e.kind == EntryKind::Dir) {
            let dir = join(&base.dir, &dir.name);
            let entries = list(&dir)?;
            files_at(&dir, &entries, &mut found);
            for deeper in entries.iter().filter(|e| e.kind == EntryKind::Dir) {
                let path = join(&dir, &deeper.name);
                if read_by_a_path(&path) {
                    continue;
                }
                for entry in list(&path)? {
                    if wanted(&entry.name) {
                        found.push((
                            Severity::Error,
                            format!(
                                "{}: not read: too deep (quadsync reads {} and one level of directories below it)",
                                join(&path, &entry.name),
                                if base.dir.is_empty() { "the repo's root".to_owned() } else { base.dir.clone() }
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(found)
}

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (false, true) => dir.to_owned(),
        (false, false) => format!("{dir}/{name}"),
    }
}

/// Reads every definition by the rule in the module docs, from the repo's root. Errors are every
/// problem found.
pub fn read_sources(tree: &dyn SourceTree) -> Result<Vec<SourceFile>, Vec<String>> {
    read_paths(tree, &[RepoPath { dir: String::new(), optional: false }])
}

/// What a name in the repo is, looked up one directory at a time (so never through a link).
pub fn kind_at(tree: &dyn SourceTree, path: &str) -> Result<Option<EntryKind>, String> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    if !parent.is_empty() && kind_at(tree, parent)? != Some(EntryKind::Dir) {
        return Ok(None);
    }
    Ok(tree.list(parent)?.into_iter().find(|e| e.name == name).map(|e| e.kind))
}

/// Reads every definition under each of `paths` (a host's `QUADSYNC_PATHS`), each by the rule
/// in the module docs and within the same bounds. A path missing from the tree is an error
/// unless it is optional; a path that is a link or a file is always one.
pub fn read_paths(
    tree: &dyn SourceTree,
    paths: &[RepoPath],
) -> Result<Vec<SourceFile>, Vec<String>> {
    let mut reader = Reader { tree, files: Vec::new(), errors: Vec::new(), entries: 0, bytes: 0 };
    for path in paths {
        if !path.dir.is_empty() {
            match kind_at(tree, &path.dir).map_err(|e| vec![e])? {
                Some(EntryKind::Dir) => {}
                None if path.optional => continue,
                None => {
                    reader.errors.push(format!(
                        "QUADSYNC_PATHS: {path} is not a directory of the repo (write ?{path} if \
                         this host may have none)"
                    ));
                    continue;
                }
                Some(_) => {
                    reader.errors.push(format!(
                        "QUADSYNC_PATHS: {path} is not a directory in the repo (a link or a \
                         file; quadsync never follows a link)"
                    ));
                    continue;
                }
            }
        }
        reader.dir(&path.dir, "").map_err(|e| vec![e])?;
    }
    let Reader { mut files, errors, .. } = reader;
    if !errors.is_empty() {
        return Err(errors);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

struct Reader<'a> {
    tree: &'a dyn SourceTree,
    files: Vec<SourceFile>,
    errors: Vec<String>,
    entries: usize,
    bytes: u64,
}

impl Reader<'_> {
    /// Reads `dir` below `base` (`""`: `base` itself, whose directories are read too).
    fn dir(&mut self, base: &str, dir: &str) -> Result<(), String> {
        let listed = join(base, dir);
        let entries = self.tree.list(&listed)?;
        self.entries += entries.len();
        if self.entries > MAX_ENTRIES {
            return Err(format!(
                "the repo has more than {MAX_ENTRIES} entries at its top two levels"
            ));
        }
        for entry in entries {
            if entry.name.starts_with('.') {
                continue;
            }
            let path = join(&listed, &entry.name);
            match entry.kind {
                EntryKind::Dir if dir.is_empty() => self.dir(base, &entry.name)?,
                _ if wanted(&entry.name) => self.file(base, &path, entry.kind),
                // Data a unit may name: only a regular file counts; a unit naming anything else
                // finds it missing.
                EntryKind::File { .. } if is_data(&entry.name) => {
                    self.file(base, &path, entry.kind)
                }
                EntryKind::Submodule if dir.is_empty() => self.errors.push(format!(
                    "{path}: a submodule; quadsync reads only the repo itself, so definitions in it would not count"
                )),
                _ => {}
            }
        }
        Ok(())
    }

    fn file(&mut self, base: &str, path: &str, kind: EntryKind) {
        let refuse = |what: &str| {
            format!("{path}: {what}; a definition must be a regular file committed in the repo")
        };
        let size = match kind {
            EntryKind::File { size } => size,
            EntryKind::Symlink => return self.errors.push(refuse("a symlink (never followed)")),
            EntryKind::Submodule => return self.errors.push(refuse("a submodule")),
            EntryKind::Dir => return self.errors.push(refuse("a directory")),
            EntryKind::Special => return self.errors.push(refuse("not a regular file")),
        };
        if size > MAX_FILE_BYTES {
            return self.errors.push(format!(
                "{path}: {size} bytes; a definition may have at most {MAX_FILE_BYTES}"
            ));
        }
        self.bytes += size;
        if self.bytes > MAX_TOTAL_BYTES {
            return self.errors.push(format!(
                "{path}: the definitions hold more than {MAX_TOTAL_BYTES} bytes together"
            ));
        }
        match self.tree.read(path, MAX_FILE_BYTES).and_then(|data| text(path, data)) {
            Ok(text) => {
                self.files.push(SourceFile { path: path.to_owned(), text, base: base.to_owned() })
            }
            Err(e) => self.errors.push(e),
        }
    }
}

/// Definition bytes as text: UTF-8, no NUL (systemd would cut the file there).
pub fn text(path: &str, data: Vec<u8>) -> Result<String, String> {
    if let Some(at) = data.iter().position(|&b| b == 0) {
        let line = data[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(format!("{path}:{line}: a NUL byte; definitions are text"));
    }
    String::from_utf8(data).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n');
        format!("{path}:{}: not UTF-8", line.count() + 1)
    })
}

/// A definitions directory on disk.
#[derive(Debug, Clone)]
pub struct DirTree {
    pub root: PathBuf,
}

impl SourceTree for DirTree {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, String> {
        let path = self.root.join(dir);
        let shown = |e: std::io::Error| format!("reading directory {}: {e}", path.display());
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(shown)? {
            let entry = entry.map_err(shown)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // Not UTF-8, so not a name quadsync deploys.
            };
            let meta = std::fs::symlink_metadata(entry.path()).map_err(shown)?;
            let file_type = meta.file_type();
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_file() {
                EntryKind::File { size: meta.len() }
            } else {
                EntryKind::Special
            };
            entries.push(Entry { name, kind });
            if entries.len() > MAX_ENTRIES {
                break;
            }
        }
        Ok(entries)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, String> {
        read_regular_file(&self.root.join(path), limit)
    }
}

/// Reads a regular file of at most `limit` bytes, never following a symlink at its name and
/// never blocking on a FIFO or reading a device without end.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => shown(&"a symlink; refusing to follow it"),
            _ => shown(&e),
        })?;
    let meta = file.metadata().map_err(|e| shown(&e))?;
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let what = if file_type.is_fifo() { "a FIFO" } else { "not a regular file" };
        return Err(shown(&what));
    }
    if meta.len() > limit {
        return Err(shown(&format!("{} bytes; at most {limit} are read", meta.len())));
    }
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data).map_err(|e| shown(&e))?;
    if data.len() as u64 > limit {
        return Err(shown(&format!("more than {limit} bytes")));
    }
    Ok(data)
}

/// A commit's tree in the bare clone.
#[derive(Debug)]
pub struct GitTree<'repo> {
    root: gix::Tree<'repo>,
    /// The blobs `list` saw, by path, so `read` finds each by id: looking every file up by path
    /// from the root re-reads the root tree each time (quadratic in the number of files, and
    /// 40 MiB held at once for 1,000).
    blobs: RefCell<HashMap<String, gix::ObjectId>>,
}

impl<'repo> GitTree<'repo> {
    pub fn new(root: gix::Tree<'repo>) -> GitTree<'repo> {
        GitTree { root, blobs: RefCell::default() }
    }
}

impl GitTree<'_> {
    /// The object at `path` from the root.
    fn object_at(&self, path: &str) -> Result<gix::Object<'_>, String> {
        let entry = self
            .root
            .lookup_entry_by_path(path)
            .map_err(|e| format!("{path}: {e}"))?
            .ok_or_else(|| format!("{path}: not in the commit"))?;
        entry.object().map_err(|e| format!("{path}: {e}"))
    }

    fn subtree(&self, dir: &str) -> Result<gix::Tree<'_>, String> {
        if dir.is_empty() {
            return Ok(self.root.clone());
        }
        self.object_at(dir)?.try_into_tree().map_err(|e| format!("{dir}: {e}"))
    }
}

impl SourceTree for GitTree<'_> {
    fn list(&self, dir: &str) -> Result<Vec<Entry>, String> {
        use gix::object::tree::EntryKind as Git;
        let tree = self.subtree(dir)?;
        let repo = self.root.repo;
        let mut entries = Vec::new();
        for entry in tree.iter() {
            let entry = entry.map_err(|e| format!("{dir}: {e}"))?;
            let Ok(name) = std::str::from_utf8(entry.filename()) else {
                continue; // Not UTF-8, so not a name quadsync deploys.
            };
            let kind = match entry.mode().kind() {
                Git::Tree => EntryKind::Dir,
                Git::Link => EntryKind::Symlink,
                Git::Commit => EntryKind::Submodule,
                Git::Blob | Git::BlobExecutable if wanted(name) || is_data(name) => {
                    // The size from the object's header: a huge blob is refused unread.
                    let header =
                        repo.find_header(entry.id()).map_err(|e| format!("{name}: {e}"))?;
                    self.blobs.borrow_mut().insert(join(dir, name), entry.id().detach());
                    EntryKind::File { size: header.size() }
                }
                Git::Blob | Git::BlobExecutable => EntryKind::File { size: 0 },
            };
            entries.push(Entry { name: name.to_owned(), kind });
            if entries.len() > MAX_ENTRIES {
                break;
            }
        }
        Ok(entries)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, String> {
        let listed = self.blobs.borrow().get(path).copied();
        let blob = match listed {
            Some(id) => self.root.repo.find_object(id).map_err(|e| format!("{path}: {e}"))?,
            None => self.object_at(path)?,
        };
        if blob.data.len() as u64 > limit {
            return Err(format!("{path}: more than {limit} bytes"));
        }
        Ok(blob.detach().data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repo as data: (path, kind, contents).
    struct Fake(Vec<(&'static str, EntryKind, &'static [u8])>);

    impl SourceTree for Fake {
        fn list(&self, dir: &str) -> Result<Vec<Entry>, String> {
            Ok(self
                .0
                .iter()
                .filter_map(|(path, kind, _)| {
                    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
                    (parent == dir).then(|| Entry { name: name.to_owned(), kind: *kind })
                })
                .collect())
        }
        fn read(&self, path: &str, _: u64) -> Result<Vec<u8>, String> {
            Ok(self.0.iter().find(|(p, ..)| *p == path).unwrap().2.to_vec())
        }
    }

    const FILE: EntryKind = EntryKind::File { size: 12 };

    #[test]
    fn reads_the_root_and_one_level_of_wanted_regular_files() {
        let tree = Fake(vec![
            ("web.container", FILE, b"[Container]\n"),
            ("README.md", FILE, b"x"),
            ("tailscale", EntryKind::Dir, b""),
            ("tailscale/db.container", FILE, b"[Container]\n"),
            ("tailscale/deeper", EntryKind::Dir, b""),
            ("tailscale/deeper/x.container", FILE, b"[Container]\n"),
            (".hidden", EntryKind::Dir, b""),
            (".hidden/y.container", FILE, b"[Container]\n"),
            ("docs-link", EntryKind::Symlink, b""),
            ("web-data.volume", FILE, b"[Volume]\n"),
            ("web.yaml", FILE, b"kind: Pod\n"),
            ("linked.yaml", EntryKind::Symlink, b""),
            ("Containerfile", FILE, b"FROM x\n"),
        ]);
        let files = read_sources(&tree).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Containerfile",
                "tailscale/db.container",
                "web-data.volume",
                "web.container",
                "web.yaml"
            ]
        );
    }

    fn paths(list: &[(&str, bool)]) -> Vec<RepoPath> {
        list.iter()
            .map(|(dir, optional)| RepoPath { dir: (*dir).into(), optional: *optional })
            .collect()
    }

    #[test]
    fn each_path_is_read_by_the_layout_rules_with_its_base() {
        let tree = Fake(vec![
            ("root.container", FILE, b"[Container]\n"),
            ("common", EntryKind::Dir, b""),
            ("common/db.container", FILE, b"[Container]\n"),
            ("common/tailscale", EntryKind::Dir, b""),
            ("common/tailscale/web.container", FILE, b"[Container]\n"),
            ("common/tailscale/deeper", EntryKind::Dir, b""),
            ("common/tailscale/deeper/x.container", FILE, b"[Container]\n"),
            ("hosts", EntryKind::Dir, b""),
            ("hosts/a", EntryKind::Dir, b""),
            ("hosts/a/app.container", FILE, b"[Container]\n"),
            ("hosts/b", EntryKind::Symlink, b""),
            ("hosts/c.container", FILE, b"[Container]\n"),
        ]);
        let files =
            read_paths(&tree, &paths(&[("common", false), ("hosts/a", false), ("hosts/z", true)]))
                .unwrap();
        let read: Vec<(&str, &str, &str)> =
            files.iter().map(|f| (f.path.as_str(), f.base.as_str(), f.local())).collect();
        assert_eq!(
            read,
            [
                ("common/db.container", "common", "db.container"),
                ("common/tailscale/web.container", "common", "tailscale/web.container"),
                ("hosts/a/app.container", "hosts/a", "app.container"),
            ]
        );
        let mut errors = read_paths(
            &tree,
            &paths(&[("hosts/z", false), ("hosts/b", true), ("hosts/c.container", false)]),
        )
        .unwrap_err();
        errors.sort();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].starts_with("QUADSYNC_PATHS: hosts/b is not a directory in the repo (a link"),
            "{errors:?}"
        );
        assert!(
            errors[1]
                .starts_with("QUADSYNC_PATHS: hosts/c.container is not a directory in the repo"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with(
                "QUADSYNC_PATHS: hosts/z is not a directory of the repo (write ?hosts/z"
            ),
            "{errors:?}"
        );
        // What another path reads is not "too deep" for check.
        let found = overlooked(
            &tree,
            &paths(&[("", false), ("common/tailscale", false), ("hosts/a", false)]),
        )
        .unwrap();
        assert!(found.is_empty(), "{found:?}");
        let found = overlooked(&tree, &paths(&[("common", false)])).unwrap();
        let messages: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "common/tailscale/deeper/x.container: not read: too deep (quadsync reads common and one level of directories below it)"
            ]
        );
    }

    #[test]
    fn what_is_passed_over_but_looks_meant_is_reported() {
        let tree = Fake(vec![
            ("web.contianer", FILE, b"[Container]\n"),
            ("README.md", FILE, b"x"),
            ("data.volume", FILE, b"[Volume]\n"),
            ("tailscale", EntryKind::Dir, b""),
            ("tailscale/db.container", FILE, b"[Container]\n"),
            ("tailscale/db-backup.tiemr", FILE, b"[Timer]\n"),
            ("tailscale/deeper", EntryKind::Dir, b""),
            ("tailscale/deeper/x.container", FILE, b"[Container]\n"),
            ("tailscale/deeper/notes.txt", FILE, b"x"),
            (".hidden", EntryKind::Dir, b""),
            (".hidden/y.contianer", FILE, b"[Container]\n"),
        ]);
        let found = overlooked(&tree, &[RepoPath { dir: String::new(), optional: false }]).unwrap();
        let expected = [
            (Severity::Error, "web.contianer: not read: did you mean .container?"),
            (Severity::Error, "tailscale/db-backup.tiemr: not read: did you mean .timer?"),
            (
                Severity::Error,
                "tailscale/deeper/x.container: not read: too deep (quadsync reads the repo's root and one level of directories below it)",
            ),
        ];
        let found: Vec<(Severity, &str)> = found.iter().map(|(s, m)| (*s, m.as_str())).collect();
        assert_eq!(found.len(), expected.len(), "{found:?}");
        for item in expected {
            assert!(found.contains(&item), "{item:?} in {found:?}");
        }
    }

    #[test]
    fn a_link_submodule_or_directory_at_a_wanted_name_is_an_error_not_a_removal() {
        let tree = Fake(vec![
            ("web.container", EntryKind::Symlink, b""),
            ("lib", EntryKind::Submodule, b""),
            ("tailscale", EntryKind::Dir, b""),
            ("tailscale/db.container", EntryKind::Submodule, b""),
            ("tailscale/x.timer", EntryKind::Dir, b""),
            ("fifo.pod", EntryKind::Special, b""),
        ]);
        let errors = read_sources(&tree).unwrap_err();
        let expected = [
            "fifo.pod: not a regular file;",
            "lib: a submodule; quadsync reads only the repo itself",
            "tailscale/db.container: a submodule;",
            "tailscale/x.timer: a directory;",
            "web.container: a symlink (never followed); a definition must be a regular file",
        ];
        let mut errors = errors;
        errors.sort();
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, want) in errors.iter().zip(expected) {
            assert!(error.starts_with(want), "{error:?} should start with {want:?}");
        }
    }

    #[test]
    fn sizes_nul_bytes_and_encodings_are_bounded_and_named() {
        let big = EntryKind::File { size: MAX_FILE_BYTES + 1 };
        let tree = Fake(vec![
            ("big.container", big, b""),
            ("nul.container", FILE, b"[Container]\nImage=x\0\n"),
            ("latin.container", FILE, b"[Container]\n\xe9\n"),
        ]);
        let mut errors = read_sources(&tree).unwrap_err();
        errors.sort();
        assert_eq!(
            errors,
            [
                format!(
                    "big.container: {} bytes; a definition may have at most {MAX_FILE_BYTES}",
                    MAX_FILE_BYTES + 1
                ),
                "latin.container:2: not UTF-8".to_owned(),
                "nul.container:2: a NUL byte; definitions are text".to_owned(),
            ]
        );
    }

    #[test]
    fn on_disk_links_fifos_and_devices_are_refused_unfollowed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("outside-secret");
        std::fs::write(&secret, "root:$6$hash\n").unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("tailscale")).unwrap();
        std::fs::write(repo.join("ok.container"), "[Container]\nImage=x\n").unwrap();
        std::os::unix::fs::symlink(&secret, repo.join("web.container")).unwrap();
        std::os::unix::fs::symlink(dir.path(), repo.join("linked")).unwrap();
        nix::unistd::mkfifo(&repo.join("tailscale/db.container"), nix::sys::stat::Mode::S_IRWXU)
            .unwrap();
        let mut errors = read_sources(&DirTree { root: repo.clone() }).unwrap_err();
        errors.sort();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("tailscale/db.container: not a regular file"), "{errors:?}");
        assert!(errors[1].starts_with("web.container: a symlink (never followed)"), "{errors:?}");
        assert!(!errors.iter().any(|e| e.contains("root:$6$")), "{errors:?}");

        // The single-file reader: no link, no FIFO, no endless device.
        let err = read_regular_file(&repo.join("web.container"), 100).unwrap_err();
        assert!(err.ends_with("a symlink; refusing to follow it"), "{err}");
        let err = read_regular_file(&repo.join("tailscale/db.container"), 100).unwrap_err();
        assert!(err.ends_with("a FIFO"), "{err}");
        let err = read_regular_file(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(err.ends_with("not a regular file"), "{err}");
        let err = read_regular_file(&repo.join("ok.container"), 5).unwrap_err();
        assert!(err.ends_with("20 bytes; at most 5 are read"), "{err}");
    }
}
