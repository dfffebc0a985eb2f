//! The definitions repo, fetched with gix.
//!
//! quadsync keeps a bare repository (`STATE/repo.git`) and reads the definitions straight from
//! the fetched commit's tree: there is no work tree, so nothing left in one (an untracked file,
//! a half-finished reset) can ever be deployed, and a changed URL or branch in the config takes
//! effect at the next fetch. Fetches are shallow (depth 1), and when the branch has not moved,
//! the ref listing is all that is asked. file, git, https and ssh URLs work; for ssh,
//! `QUADSYNC_SSH_KEY` is the deploy key.
//!
//! A fetch has one deadline for all of it (connecting, the handshake, the pack), so a server
//! that never answers cannot hold the sync lock. Credentials in the URL never leave this module:
//! every message goes through [`Redactor`].

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gix::protocol::transport::client::Error as TransportError;
use gix::protocol::transport::client::blocking_io::http::connect_http;
use gix::remote::Direction;
use gix::remote::fetch::Shallow;
use gix::url::Scheme;
use tailpod_core::redact::{Secrets, percent_decode};

use crate::fleet::RepoPath;
use crate::http::HttpStatus;
use crate::source::{GitTree, SourceFile, read_paths};

/// A fetched commit and the files quadsync reads from it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: String,
    pub files: Vec<SourceFile>,
}

/// Why a fetch failed, as far as what to do next depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchFailure {
    /// The server could not be reached, did not answer in time or failed on its side: the
    /// network may just not be up yet, so it is worth trying again soon. Anything not known to
    /// be one of the others is taken as this.
    Network,
    /// The server refused quadsync's credentials (HTTP 401 or 403, ssh's "Permission denied"):
    /// retrying in seconds will not help and may lock the account; a person must act.
    Auth,
    /// There is no such repository or branch (HTTP 404 or 410, a git server that exports none
    /// by that path, a branch the remote lacks): the config names something that is not there.
    NotFound,
}

impl FetchFailure {
    pub fn describe(self) -> &'static str {
        match self {
            FetchFailure::Network => "the server could not be reached",
            FetchFailure::Auth => "the server refused the credentials",
            FetchFailure::NotFound => "the repository or branch does not exist",
        }
    }
}

/// A fetch that did not yield definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Nothing was fetched; why, and the message (credentials redacted).
    Failed { failure: FetchFailure, message: String },
    /// The commit was fetched but its files break the layout rules or bounds (a link, too many
    /// or too large files): only a new commit fixes that.
    Unreadable(Vec<String>),
}

/// What is not there: a branch the remote lacks, or a `file://` URL's path.
#[derive(Debug)]
enum Missing {
    Branch(String),
    Repository(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Branch(branch) => write!(f, "the remote has no branch {branch}"),
            Missing::Repository(path) => write!(f, "no repository at {path}"),
        }
    }
}

impl Error for Missing {}

/// What an error (and every cause under it) says about why the fetch failed.
///
/// Typed signals only: our own HTTP status, a missing branch or path, gix refusing to send
/// credentials, and the [`std::io::ErrorKind`] gix gives ssh's "Permission denied". A `git://`
/// server's refusal is only text in the protocol, so its one fixed wording is recognised too.
fn classify(error: &(dyn Error + 'static)) -> FetchFailure {
    let mut next = Some(error);
    while let Some(error) = next {
        let io = error.downcast_ref::<std::io::Error>();
        let status = error
            .downcast_ref::<HttpStatus>()
            .or_else(|| io.and_then(|e| e.get_ref()?.downcast_ref::<HttpStatus>()));
        if let Some(status) = status {
            return match status.status {
                401 | 403 => FetchFailure::Auth,
                404 | 410 => FetchFailure::NotFound,
                _ => FetchFailure::Network,
            };
        }
        if error.is::<Missing>() || error.to_string().contains("repository not exported") {
            return FetchFailure::NotFound;
        }
        let refused = matches!(
            error.downcast_ref::<TransportError>(),
            Some(TransportError::AuthenticationRefused(_))
        );
        if refused || io.is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) {
            return FetchFailure::Auth;
        }
        next = error.source();
    }
    FetchFailure::Network
}

/// More packs than this in the bare clone and it is fetched afresh (depth 1 keeps that small).
const MAX_PACKS: usize = 16;

/// Hides the credentials of a URL (`https://user:token@host/...`) in any text.
#[derive(Debug, Clone)]
pub struct Redactor {
    secrets: Secrets,
}

impl Redactor {
    /// The userinfo before the host is a secret, raw and percent-decoded, when it holds a
    /// password (`user:password@`), which is then hidden on its own too (some messages show only
    /// that), or when it is all there is over http(s) (`https://TOKEN@host`). A user name alone
    /// over ssh (`ssh://git@host`, `git@host:path`) is no secret.
    pub fn new(url: &str) -> Redactor {
        let mut secrets = Secrets::default();
        if let Some((scheme, rest)) = url.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                let mut add = |form: &str| {
                    secrets.add(form);
                    secrets.add(percent_decode(form));
                };
                if let Some((_, password)) = userinfo.split_once(':') {
                    add(userinfo);
                    add(password);
                } else if scheme.starts_with("http") {
                    add(userinfo);
                }
            }
        }
        Redactor { secrets }
    }

    pub fn text(&self, text: &str) -> String {
        self.secrets.hide(text, "***")
    }
}

/// An error with every cause under it, `outer: inner: innermost` ("handshake failed" alone
/// does not tell a refused connection from a bad password).
pub fn causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The ssh command gix runs for ssh URLs: the deploy key only, never a prompt, and a dead
/// server noticed (the fetch's deadline covers the rest).
fn ssh_command(key: Option<&Path>) -> Result<String, String> {
    let mut command = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new \
                       -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
        .to_owned();
    if let Some(key) = key {
        let key = key
            .to_str()
            .filter(|k| !k.contains('\''))
            .ok_or_else(|| format!("unusable QUADSYNC_SSH_KEY path {}", key.display()))?;
        command.push_str(&format!(" -i '{key}' -o IdentitiesOnly=yes"));
    }
    Ok(command)
}

/// Fetches `branch` of `url` into the bare repo at `dest` (made if missing) and reads the
/// definitions from its tip. Gives up after `timeout`, whatever the server does. Messages have
/// their credentials redacted.
pub fn fetch(
    url: &str,
    branch: &str,
    dest: &Path,
    ssh_key: Option<&Path>,
    paths: &[RepoPath],
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let redactor = Redactor::new(url);
    let shown = redactor.text(url);
    let interrupt = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = std::sync::mpsc::channel();
    let job = FetchJob {
        url: url.to_owned(),
        branch: branch.to_owned(),
        dest: dest.to_owned(),
        ssh_key: ssh_key.map(Path::to_owned),
        paths: paths.to_vec(),
        interrupt: interrupt.clone(),
    };
    // The fetch runs on its own thread so the deadline holds even while gix blocks in a connect
    // or a read; a thread left behind ends with the process, which exits after the sync.
    std::thread::spawn(move || sender.send(job.run()));
    let result = match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            interrupt.store(true, Ordering::SeqCst);
            let message = format!(
                "fetching {branch} of {shown}: no complete answer within {}s",
                timeout.as_secs()
            );
            return Err(FetchError::Failed { failure: FetchFailure::Network, message });
        }
    };
    result.map_err(|error| match error {
        FetchError::Failed { failure, message } => {
            FetchError::Failed { failure, message: redactor.text(&message) }
        }
        FetchError::Unreadable(errors) => {
            FetchError::Unreadable(errors.iter().map(|e| redactor.text(e)).collect())
        }
    })
}

struct FetchJob {
    url: String,
    branch: String,
    dest: PathBuf,
    ssh_key: Option<PathBuf>,
    paths: Vec<RepoPath>,
    interrupt: Arc<AtomicBool>,
}

impl FetchJob {
    fn run(&self) -> Result<Fetched, FetchError> {
        let failed = |e: &(dyn Error + 'static)| FetchError::Failed {
            failure: classify(e),
            message: format!("fetching {} of {}: {}", self.branch, self.url, causes(e)),
        };
        // What fails in the local clone is not the server's doing, so not worth a quick retry.
        let local = |e: &dyn Error| {
            let message = format!("reading {} of {}: {}", self.branch, self.url, causes(e));
            FetchError::Unreadable(vec![message])
        };
        if pack_count(&self.dest) > MAX_PACKS {
            log::info!("{}: more than {MAX_PACKS} packs; fetching afresh", self.dest.display());
            std::fs::remove_dir_all(&self.dest).map_err(|e| local(&e))?;
        }
        let repo = self.open().map_err(|e| local(&*e))?;
        let tracking = format!("refs/remotes/origin/{}", self.branch);
        self.transfer(&repo, &tracking).map_err(|e| failed(&*e))?;
        let commit = (|| -> Result<_, Box<dyn Error + Send + Sync>> {
            let id = repo.find_reference(tracking.as_str())?.into_fully_peeled_id()?;
            Ok(repo.find_commit(id)?)
        })()
        .map_err(|e| local(&*e))?;
        let root = commit.tree().map_err(|e| local(&e))?;
        let files = read_paths(&GitTree::new(root), &self.paths).map_err(FetchError::Unreadable)?;
        Ok(Fetched { commit: commit.id.to_string(), files })
    }

    fn open(&self) -> Result<gix::Repository, Box<dyn Error + Send + Sync>> {
        if !self.dest.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dest)?;
            gix::init_bare(&self.dest)?;
        }
        // The clone's own config only. Root's ~/.gitconfig, the system's and GIT_* variables
        // could rewrite the URL (`url.*.insteadOf`), name a proxy or credential helpers; none
        // of that belongs in what config.env says to deploy.
        let mut repo = gix::open_opts(&self.dest, gix::open::Options::isolated())?;
        let command = ssh_command(self.ssh_key.as_deref())?;
        let mut config = repo.config_snapshot_mut();
        config.set_raw_value(gix::config::tree::Core::SSH_COMMAND, command.as_str())?;
        config.commit()?;
        Ok(repo)
    }

    /// Brings the branch's tip into the clone; nothing is transferred when it is already here.
    fn transfer(
        &self,
        repo: &gix::Repository,
        tracking: &str,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        // gix's error for a missing local path is only text; the path is ours to look at.
        let url = gix::url::parse(self.url.as_bytes())?;
        if url.scheme == Scheme::File && !Path::new(&url.path.to_string()).exists() {
            return Err(Missing::Repository(url.path.to_string()).into());
        }
        let refspec = format!("+refs/heads/{}:{tracking}", self.branch);
        let remote = repo
            .remote_at(self.url.as_str())?
            .with_refspecs([refspec.as_str()], Direction::Fetch)?;
        let (url, version) = remote.sanitized_url_and_version(Direction::Fetch)?;
        match url.scheme {
            Scheme::Git => self.receive(repo, tracking, {
                remote.to_connection_with_transport(git_daemon(&url, version)?)
            }),
            Scheme::Http | Scheme::Https => self.receive(repo, tracking, {
                let http = crate::http::UreqHttp::default();
                remote.to_connection_with_transport(connect_http(http, url, version, false))
            }),
            _ => self.receive(repo, tracking, remote.connect(Direction::Fetch)?),
        }
    }

    /// Lists the remote's refs and fetches only when the branch moved.
    fn receive<T: gix::protocol::transport::client::blocking_io::Transport>(
        &self,
        repo: &gix::Repository,
        tracking: &str,
        connection: gix::remote::Connection<'_, '_, '_, T>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let prepared = connection.prepare_fetch(gix::progress::Discard, Default::default())?;
        let advertised = prepared.ref_map().mappings.first().and_then(|m| m.remote.as_id());
        let Some(advertised) = advertised.map(ToOwned::to_owned) else {
            return Err(Missing::Branch(self.branch.clone()).into());
        };
        let local = repo.try_find_reference(tracking)?.and_then(|r| r.into_fully_peeled_id().ok());
        if local.is_some_and(|id| id == advertised) && repo.has_object(advertised) {
            log::debug!("{tracking} is already at {advertised}");
            return Ok(());
        }
        let depth = 1.try_into().map_err(|_| "depth")?;
        prepared
            .with_shallow(Shallow::DepthAtRemote(depth))
            .receive(gix::progress::Discard, &self.interrupt)?;
        Ok(())
    }
}

/// How long connecting to a `git://` server may take, per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Transport = Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>;

/// A `git://` connection as gix makes it, but with each request sent in one piece and answers
/// acknowledged at once.
///
/// gix-transport writes every packet line as several small writes straight to the socket. With
/// Nagle's algorithm and delayed ACKs, a request of many lines then stalls about 40 ms at a time
/// (three times in a fetch that has nothing to do: 0.14 s for 5 ms of work). Here the writes go
/// through a buffer that gix flushes at the end of each request, on a socket without Nagle.
/// git's upload-pack answers some requests in pieces with Nagle on its side, so reads ask for
/// quick ACKs ([`QuickAck`]) and are buffered (gix reads each line's length, then the line).
/// Every resolved address is tried, not just the first.
fn git_daemon(
    url: &gix::Url,
    version: gix::protocol::transport::Protocol,
) -> Result<Transport, Box<dyn Error + Send + Sync>> {
    use gix::protocol::transport::client::git::{ConnectMode, blocking_io::Connection};
    use std::net::{TcpStream, ToSocketAddrs};
    if url.user().is_some() {
        return Err("a git:// URL carries no user name or password".into());
    }
    let host = url.host().ok_or("a git:// URL needs a host")?;
    let mut last_error = None;
    for address in (host, url.port.unwrap_or(9418)).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let read = std::io::BufReader::new(QuickAck(stream.try_clone()?));
                let write = std::io::BufWriter::new(stream);
                let path = url.path.clone();
                let virtual_host = Some((host.to_owned(), url.port));
                let mode = ConnectMode::Daemon;
                let connection =
                    Connection::new(read, write, version, path, virtual_host, mode, false);
                return Ok(Box::new(connection));
            }
            Err(e) => last_error = Some(format!("connecting to {address}: {e}")),
        }
    }
    Err(last_error.unwrap_or_else(|| format!("{host} has no address")).into())
}

/// Reads that are acknowledged at once. Without this, each piece of an answer the server writes
/// after its first waits for our delayed ACK (about 40 ms: a fetch of one changed file took
/// 68 ms instead of 27). Linux leaves quick-ACK mode on its own, so it is asked for before every
/// read.
struct QuickAck(std::net::TcpStream);

impl std::io::Read for QuickAck {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        self.0.read(buffer)
    }
}

/// How many packs the clone holds (each fetch that transfers adds one).
fn pack_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("objects/pack"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_command_is_quoted_and_bounded() {
        assert_eq!(
            ssh_command(Some(Path::new("/etc/quadsync/deploy-key"))).unwrap(),
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30 \
             -o ServerAliveInterval=15 -o ServerAliveCountMax=4 \
             -i '/etc/quadsync/deploy-key' -o IdentitiesOnly=yes"
        );
        assert!(ssh_command(Some(Path::new("/tmp/it's"))).is_err());
        assert!(ssh_command(None).unwrap().contains("ConnectTimeout=30"));
    }

    #[test]
    fn credentials_are_redacted_raw_and_decoded() {
        let redactor = Redactor::new("https://deploy:s3cr%21t@git.example.com/defs.git");
        let message = "fetching main of https://deploy:s3cr%21t@git.example.com/defs.git: \
                       password s3cr!t rejected for deploy:s3cr!t";
        assert_eq!(
            redactor.text(message),
            "fetching main of https://***@git.example.com/defs.git: password *** rejected for ***"
        );
        let token = Redactor::new("https://ghp_abcdef@github.com/o/r.git");
        assert_eq!(
            token.text("https://ghp_abcdef@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        // No credentials, nothing hidden (an @ in the path is not userinfo).
        let plain = Redactor::new("git@github.com:o/r.git");
        assert_eq!(plain.text("git@github.com:o/r.git"), "git@github.com:o/r.git");
        let ssh = Redactor::new("ssh://git@host/defs.git");
        assert_eq!(ssh.text("ssh://git@host/defs.git"), "ssh://git@host/defs.git");
        let ssh = Redactor::new("ssh://git:pw@host/defs.git");
        assert_eq!(ssh.text("ssh://git:pw@host/defs.git"), "ssh://***@host/defs.git");
        let path = Redactor::new("https://host/a@b/r.git");
        assert_eq!(path.text("https://host/a@b/r.git"), "https://host/a@b/r.git");
    }

    #[test]
    fn causes_are_chained_once() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Transport handshake failed")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(causes(&Outer(inner)), "Transport handshake failed: connection refused");
    }
}
