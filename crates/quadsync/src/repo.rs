//! The definitions repo, fetched with gix.
//!
//! quadsync keeps a bare repository (`STATE/repo.git`) and reads the definitions straight from
//! the fetched commit's tree: there is no work tree, so nothing left in one (an untracked file,
//! a half-finished reset) can ever be deployed, and a changed URL or branch in the config takes
//! effect at the next fetch. Fetches are shallow (depth 1). file, https and ssh URLs work; for
//! ssh, `QUADSYNC_SSH_KEY` is the deploy key.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gix::remote::Direction;
use gix::remote::fetch::Shallow;

use crate::discover::{SourceFile, wanted};

/// A fetched commit and the files quadsync reads from it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: String,
    pub files: Vec<SourceFile>,
}

/// The ssh command gix runs for ssh URLs: the deploy key only, never a prompt.
fn ssh_command(key: &Path) -> Result<String, String> {
    let key = key
        .to_str()
        .filter(|k| !k.contains('\''))
        .ok_or_else(|| format!("unusable QUADSYNC_SSH_KEY path {}", key.display()))?;
    Ok(format!(
        "ssh -i '{key}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
    ))
}

/// Fetches `branch` of `url` into the bare repo at `dest` (made if missing) and reads the
/// definitions from its tip. Gives up after `timeout`.
pub fn fetch(
    url: &str,
    branch: &str,
    dest: &Path,
    ssh_key: Option<&Path>,
    timeout: Duration,
) -> Result<Fetched, String> {
    let describe = |e: &dyn std::fmt::Display| format!("fetching {branch} of {url}: {e}");
    let mut repo = if dest.join("HEAD").exists() {
        gix::open(dest).map_err(|e| describe(&e))?
    } else {
        std::fs::create_dir_all(dest).map_err(|e| describe(&e))?;
        gix::init_bare(dest).map_err(|e| describe(&e))?
    };
    if let Some(key) = ssh_key {
        let command = ssh_command(key)?;
        let mut config = repo.config_snapshot_mut();
        config
            .set_raw_value(gix::config::tree::Core::SSH_COMMAND, command.as_str())
            .map_err(|e| describe(&e))?;
        config.commit().map_err(|e| describe(&e))?;
    }

    // The deadline: gix checks the flag while it transfers.
    let interrupt = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (interrupt, done) = (interrupt.clone(), done.clone());
        std::thread::spawn(move || {
            let step = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            while waited < timeout && !done.load(Ordering::SeqCst) {
                std::thread::sleep(step);
                waited += step;
            }
            interrupt.store(true, Ordering::SeqCst);
        });
    }
    let tracking = format!("refs/remotes/origin/{branch}");
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    let result = (|| -> Result<(), String> {
        let remote = repo
            .remote_at(url)
            .map_err(|e| describe(&e))?
            .with_refspecs([refspec.as_str()], Direction::Fetch)
            .map_err(|e| describe(&e))?;
        let depth = 1.try_into().map_err(|_| describe(&"depth"))?;
        remote
            .connect(Direction::Fetch)
            .map_err(|e| describe(&e))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| describe(&e))?
            .with_shallow(Shallow::DepthAtRemote(depth))
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| describe(&e))?;
        Ok(())
    })();
    done.store(true, Ordering::SeqCst);
    if interrupt.load(Ordering::SeqCst) && result.is_err() {
        return Err(format!("fetching {branch} of {url}: timed out after {}s", timeout.as_secs()));
    }
    result?;
    read_commit(&repo, &tracking).map_err(|e| format!("reading {branch} of {url}: {e}"))
}

/// The files quadsync reads from the commit `reference` points to: the root and one level.
pub fn read_commit(repo: &gix::Repository, reference: &str) -> Result<Fetched, String> {
    let id = repo
        .find_reference(reference)
        .map_err(|e| e.to_string())?
        .into_fully_peeled_id()
        .map_err(|e| e.to_string())?;
    let commit = repo.find_commit(id).map_err(|e| e.to_string())?;
    let tree = commit.tree().map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let blob_text = |oid: gix::Id<'_>, path: &str| -> Result<String, String> {
        let blob = oid.object().map_err(|e| e.to_string())?;
        String::from_utf8(blob.data.clone()).map_err(|_| format!("{path}: not UTF-8"))
    };
    for entry in tree.iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.filename().to_string();
        if name.starts_with('.') {
            continue;
        }
        if entry.mode().is_tree() {
            let subtree = entry.object().map_err(|e| e.to_string())?.into_tree();
            for inner in subtree.iter() {
                let inner = inner.map_err(|e| e.to_string())?;
                let inner_name = inner.filename().to_string();
                if inner.mode().is_blob() && !inner_name.starts_with('.') && wanted(&inner_name) {
                    let path = format!("{name}/{inner_name}");
                    files.push(SourceFile { text: blob_text(inner.id(), &path)?, path });
                }
            }
        } else if entry.mode().is_blob() && wanted(&name) {
            files.push(SourceFile { text: blob_text(entry.id(), &name)?, path: name });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Fetched { commit: commit.id.to_string(), files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_key_is_quoted_and_checked() {
        assert_eq!(
            ssh_command(Path::new("/etc/quadsync/deploy-key")).unwrap(),
            "ssh -i '/etc/quadsync/deploy-key' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
        );
        assert!(ssh_command(Path::new("/tmp/it's")).is_err());
    }
}
