//! quadsync against real git repositories (file:// and a git server on loopback), run as a
//! binary. Nothing here creates users: what needs root and systemd runs in the box.

// Tests drive the binaries and git directly; the harness bounds them, not run_command.
#![allow(clippy::disallowed_methods)]

#[path = "support/git_daemon.rs"]
mod git_daemon;
#[path = "support/git_http.rs"]
mod git_http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

struct Site {
    tmp: tempfile::TempDir,
}

impl Site {
    /// A definitions repo with a root container and a tailscale one, transforms, and a config.
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        write(&repo.join("hello.container"), "[Container]\nImage=docker.io/library/nginx:alpine\n");
        write(&repo.join("hello-refresh.timer"), "[Timer]\nOnCalendar=daily\n");
        write(&repo.join("hello-refresh.service"), "[Service]\nExecStart=/bin/true\n");
        write(
            &repo.join("tailscale/web.container"),
            "[Container]\nImage=docker.io/library/nginx:alpine\nContainerName={{.Name}}\n",
        );
        write(&repo.join("README.md"), "not deployed\n");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "first"]);
        write(&tmp.path().join("transforms/tailscale.container"), "[Container]\nNetwork=none\n");
        let site = Site { tmp };
        site.configure(&format!("file://{}", repo.display()));
        site
    }

    fn configure(&self, url: &str) {
        self.configure_with(url, "");
    }

    /// The config, with `extra` lines at its end.
    fn configure_with(&self, url: &str, extra: &str) {
        let p = self.tmp.path();
        write(
            &p.join("config.env"),
            &format!(
                "QUADSYNC_GIT_URL={url}\nQUADSYNC_TRANSFORM_DIR={}\nQUADSYNC_STATE_DIR={}\n{extra}",
                p.join("transforms").display(),
                p.join("state").display()
            ),
        );
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    /// A directory holding a bare clone of the repo as `defs.git`, for a server to serve.
    fn served(&self) -> PathBuf {
        let served = self.tmp.path().join("served");
        std::fs::create_dir(&served).unwrap();
        git(&served, &["clone", "-q", "--bare", self.repo().to_str().unwrap(), "defs.git"]);
        served
    }

    /// `quadsync plan --json` succeeds; how many users it plans for.
    fn planned_users(&self) -> usize {
        let out = self.quadsync(&["plan", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["users"].as_array().unwrap().len()
    }

    fn quadsync(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_quadsync"))
            .args(args)
            .arg("--config")
            .arg(self.tmp.path().join("config.env"))
            .output()
            .unwrap()
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn plan_shows_what_sync_would_do_from_a_file_url() {
    let site = Site::new();
    let out = site.quadsync(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("hello: create") && plan.contains("web: create"), "{plan}");
    assert!(plan.contains("write ~/.config/systemd/user/hello-refresh.timer"), "{plan}");
    assert!(plan.contains("enable --now hello-refresh.timer"), "{plan}");

    let out = site.quadsync(&["plan", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<_> = json["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["action"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("hello", "create"), ("web", "create")]);
    let head =
        Command::new("git").args(["rev-parse", "HEAD"]).current_dir(site.repo()).output().unwrap();
    assert_eq!(json["commit"].as_str().unwrap(), text(&head.stdout).trim());

    // A new commit is seen by the next plan (the bare clone fetches it).
    write(&site.repo().join("extra.container"), "[Container]\nImage=x\n");
    git(&site.repo(), &["add", "-A"]);
    git(&site.repo(), &["commit", "-qm", "second"]);
    let plan = text(&site.quadsync(&["plan"]).stdout);
    assert!(plan.contains("extra: create"), "{plan}");
}

#[test]
fn plan_works_over_http_from_a_git_server() {
    let site = Site::new();
    let served = site.served();
    let server = git_http::GitServer::start(&served);
    site.configure(&format!("{}/defs.git", server.url));
    assert_eq!(site.planned_users(), 2);
}

#[test]
fn http_follows_a_moved_repo_and_never_sends_credentials_in_clear_text() {
    let site = Site::new();
    let served = site.served();
    let server = git_http::GitServer::start(&served);
    site.configure(&format!("{}/moved/defs.git", server.url));
    assert_eq!(site.planned_users(), 2);

    // A server that wants a password: its 401 is the error.
    let guarded = git_http::GitServer::start_with(&served, Some("deploy:s3cr3t"));
    site.configure(&format!("{}/defs.git", guarded.url));
    let out = site.quadsync(&["plan"]);
    let log = text(&out.stderr);
    assert!(!out.status.success() && log.contains("401"), "{log}");
    // And a password in an http:// URL is never sent (nor shown).
    let authority = guarded.url.trim_start_matches("http://");
    site.configure(&format!("http://deploy:s3cr3t@{authority}/defs.git"));
    let out = site.quadsync(&["plan"]);
    let log = text(&out.stderr);
    assert!(!out.status.success() && log.contains("clear text"), "{log}");
    assert!(!log.contains("s3cr3t"), "{log}");
}

#[test]
fn https_is_verified_against_the_systems_trust_store() {
    let site = Site::new();
    let served = site.served();
    // A private CA, as a company's git server would have, and a certificate from it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = git_http::GitServer::start_tls(&served, vec![leaf.der().clone()], key);
    site.configure(&format!("{}/defs.git", server.url));
    let trusting = |store: &Path| {
        Command::new(env!("CARGO_BIN_EXE_quadsync"))
            .args(["plan", "--config"])
            .arg(site.tmp.path().join("config.env"))
            .env("SSL_CERT_FILE", store)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap()
    };
    // The CA is not in the trust store: refused.
    let store = site.tmp.path().join("trusted.pem");
    write(&store, "");
    let out = trusting(&store);
    let log = text(&out.stderr).to_lowercase();
    assert!(!out.status.success() && log.contains("certificate"), "{log}");
    // Installed on the host: trusted.
    write(&store, &ca.pem());
    let out = trusting(&store);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hello: create"), "{}", text(&out.stdout));
}

#[test]
fn the_users_git_config_cannot_steer_the_fetch() {
    let site = Site::new();
    // What a ~/.gitconfig could hold: every file:// URL rewritten to somewhere else.
    let home = site.tmp.path().join("home");
    write(&home.join(".gitconfig"), "[url \"file:///nonexistent/\"]\n\tinsteadOf = file:///\n");
    let out = Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .args(["plan", "--config"])
        .arg(site.tmp.path().join("config.env"))
        .env("HOME", &home)
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hello: create"), "{}", text(&out.stdout));
}

type Reads = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A loopback proxy to `port` that records every read of what clients send.
fn recording_proxy(port: u16) -> (u16, Reads) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let reads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = reads.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
            let (mut from_client, mut to_server) = (client, server);
            let mut buffer = [0u8; 65536];
            while let Ok(n @ 1..) = from_client.read(&mut buffer) {
                recorded.lock().unwrap().push(buffer[..n].to_vec());
                if to_server.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    });
    (proxy_port, reads)
}

#[test]
fn plan_works_over_git_daemon_and_sends_each_request_whole() {
    let site = Site::new();
    let served = site.served();
    let daemon = git_daemon::GitDaemon::start(&served);
    let (port, reads) = recording_proxy(daemon.port);
    site.configure(&format!("git://127.0.0.1:{port}/defs.git"));
    assert_eq!(site.planned_users(), 2);
    // The connect line, the ref listing and the fetch: each arrives whole (complete packet
    // lines), so none waits on Nagle's algorithm for the ACK of its first bytes; gix alone
    // writes a line's length and its data apart. After them, only flush packets end the session.
    let requests = |reads: &Reads| -> Vec<String> {
        let reads = reads.lock().unwrap();
        if !reads.iter().all(|read| whole_packet_lines(read)) {
            let shown: Vec<String> = reads.iter().map(|r| text(r)).collect();
            panic!("a request arrived in pieces: {shown:?}");
        }
        reads.iter().filter(|r| r.as_slice() != b"0000").map(|r| text(r)).collect()
    };
    let fetch = requests(&reads);
    assert_eq!(fetch.len(), 3, "{fetch:?}");
    assert!(fetch[1].contains("command=ls-refs") && fetch[2].contains("command=fetch"));
    reads.lock().unwrap().clear();
    // Nothing new: the ref listing and no more.
    assert_eq!(site.planned_users(), 2);
    let noop = requests(&reads);
    assert_eq!(noop.len(), 2, "a no-op asks for the refs and no more: {noop:?}");
    assert!(noop[1].contains("command=ls-refs"));
}

/// Whether `bytes` is a sequence of complete pkt-lines (4 hex digits of length, then the data).
fn whole_packet_lines(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(length) = bytes.get(..4).and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Ok(length) = usize::from_str_radix(length, 16) else { return false };
        let length = if length < 4 { 4 } else { length };
        let Some(rest) = bytes.get(length..) else { return false };
        bytes = rest;
    }
    true
}

#[test]
fn a_broken_commit_or_a_failed_fetch_changes_nothing_and_is_reported() {
    let site = Site::new();
    write(&site.repo().join("Bad.container"), "[Container]\nImage=x\n");
    write(&site.repo().join("tailscale/db.container"), "[Container]\n");
    git(&site.repo(), &["add", "-A"]);
    git(&site.repo(), &["commit", "-qm", "broken"]);
    let out = site.quadsync(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let log = text(&out.stderr);
    assert!(log.contains("Bad.container: name \"Bad\" is not valid"), "{log}");
    assert!(log.contains("tailscale/db.container:1: missing Image="), "{log}");
    assert!(!log.contains("created the user"), "{log}");
    let status = text(&site.quadsync(&["status"]).stdout);
    assert!(status.contains("last sync: FAILED") && status.contains("nothing changed"), "{status}");
    assert!(status.contains("deployed commit: (none yet)"), "{status}");

    // A fetch that fails on the network is temporary (75, EX_TEMPFAIL): the service retries it
    // within seconds, while a broken commit (1) or a repo that is not there (78, EX_CONFIG)
    // waits for the next timer.
    site.configure(&format!("git://127.0.0.1:{}/defs.git", closed_port()));
    let out = site.quadsync(&["sync"]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the server could not be reached"));
    site.configure("file:///nonexistent/repo");
    let out = site.quadsync(&["sync"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    let status = site.quadsync(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["last_sync"]["ok"], false);
    assert!(json["last_sync"]["message"].as_str().unwrap().contains("/nonexistent/repo"));
}

fn check_with(transforms: &Path, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .args(["check", "--no-generator"])
        .arg("--transforms")
        .arg(transforms)
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn check_redeploy_and_usage() {
    let site = Site::new();
    let out = Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .args(["check"])
        .arg(site.repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("All checks passed: 2 container user(s)"));
    let transforms = site.tmp.path().join("transforms");
    let out = check_with(&transforms, &site.repo());
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(transforms.join("tailscale.container")).unwrap();
    let out = check_with(&transforms, &site.repo());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no transform for directory tailscale"));

    let out = site.quadsync(&["redeploy", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no tracked deployment for \"web\""));
    // A name that could never be a container's is a usage error, caught by the parser.
    let out = site.quadsync(&["redeploy", "Web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(r#"user "Web" is not valid"#), "{}", text(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .args(["sync", "--config", "/nonexistent/config.env"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("loading config: reading /nonexistent/config.env"));
    for usage in [&[][..], &["bogus"], &["redeploy"], &["check"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_quadsync")).args(usage).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{usage:?}");
    }
}

#[test]
fn a_second_sync_fails_at_once_while_one_runs() {
    let site = Site::new();
    let held = quadsync::sync::lock(&site.tmp.path().join("state")).unwrap();
    for command in [&["sync"][..], &["plan"], &["redeploy", "web"]] {
        let out = site.quadsync(command);
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        assert!(
            text(&out.stderr).contains("another sync is already running"),
            "{command:?}: {}",
            text(&out.stderr)
        );
    }
    drop(held);
    assert!(site.quadsync(&["plan"]).status.success());
}

#[test]
fn the_shipped_example_passes_check_with_the_shipped_transforms() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = check_with(&root.join("butane/transforms"), &root.join("deploy/containers"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "All checks passed: 3 container user(s), 8 file(s).\n");
}

/// The users `quadsync plan --json` would create, or its error output.
fn planned(site: &Site) -> Result<Vec<String>, String> {
    let out = site.quadsync(&["plan", "--json"]);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let users = json["users"].as_array().unwrap().iter();
    Ok(users.map(|u| u["user"].as_str().unwrap().to_owned()).collect())
}

#[test]
fn a_fleet_host_deploys_its_paths_only_and_a_missing_path_changes_nothing() {
    let site = Site::new();
    let repo = site.repo();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let image = "[Container]\nImage=docker.io/library/nginx:alpine\n";
    write(&repo.join("common/shared.container"), image);
    write(&repo.join("common/tailscale/edge.container"), image);
    write(&repo.join(format!("hosts/{hostname}/mine.container")), image);
    write(&repo.join("hosts/elsewhere/theirs.container"), image);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "fleet"]);
    let url = format!("file://{}", repo.display());
    site.configure_with(&url, "QUADSYNC_PATHS=common,hosts/%H,?sites/%l\n");
    assert_eq!(planned(&site).unwrap(), ["edge", "mine", "shared"]);

    // A required path this host's branch lacks (a renamed host, a typo) is an error, not an
    // empty share that would remove everything.
    site.configure_with(&url, "QUADSYNC_PATHS=common,sites/%H\n");
    let err = planned(&site).unwrap_err();
    assert!(
        err.contains(&format!("QUADSYNC_PATHS: sites/{hostname} is not a directory of the repo (write ?sites/{hostname}")),
        "{err}"
    );
    // One name from two paths names both files.
    write(&repo.join(format!("hosts/{hostname}/shared.container")), image);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "twice"]);
    site.configure_with(&url, "QUADSYNC_PATHS=common,hosts/%H\n");
    let err = planned(&site).unwrap_err();
    assert!(
        err.contains(&format!("duplicate name \"shared\": common/shared.container and hosts/{hostname}/shared.container")),
        "{err}"
    );
    site.configure_with(&url, "QUADSYNC_PATHS=.,common\n");
    let err = planned(&site).unwrap_err();
    assert!(
        err.contains(
            "QUADSYNC_PATHS: common is a transform directory of ., which reads it already"
        ),
        "{err}"
    );
}

#[test]
fn the_example_fleet_passes_for_every_host_and_a_shared_node_name_does_not() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let check = |dir: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quadsync"))
            .args(["check", "--no-generator", "--paths", "common,hosts/%H"])
            .arg("--transforms")
            .arg(root.join("butane/transforms"))
            .args(extra)
            .arg(dir)
            .output()
            .unwrap()
    };
    let fleet = root.join("deploy/fleet");
    let out = check(&fleet, &["--all-hosts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "All checks passed: 2 host(s), 4 container user(s), 5 file(s).\n"
    );
    let out = check(&fleet, &["--host", "web1"]);
    assert_eq!(text(&out.stdout), "All checks passed: 2 container user(s), 2 file(s).\n");

    // Without a name per host, the shared exporter would be node-exporter on both hosts.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("fleet");
    let copied = Command::new("cp").arg("-r").arg(&fleet).arg(&copy).status().unwrap();
    assert!(copied.success());
    let exporter = copy.join("common/tailscale/node-exporter.container");
    let spec = std::fs::read_to_string(&exporter).unwrap();
    std::fs::write(&exporter, spec.replace("Environment=TS_HOSTNAME={{.Name}}-{{.Host}}\n", ""))
        .unwrap();
    let out = check(&copy, &["--all-hosts"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "tailnet node name node-exporter is taken by host db1 (common/tailscale/node-exporter.container) and host web1 (common/tailscale/node-exporter.container)"
        ),
        "{}",
        text(&out.stderr)
    );
    // One host alone is fine: the collision is between hosts.
    assert!(check(&copy, &["--host", "db1"]).status.success());
    let out = check(&copy, &["--all-hosts", "--host", "db1"]);
    assert_eq!(out.status.code(), Some(2), "--host and --all-hosts conflict");
}

#[test]
fn check_reports_each_mistake_with_file_line_and_what_was_meant() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    std::fs::create_dir_all(repo.join("tailscale/deeper")).unwrap();
    let files = [
        ("web.container", "[Container]\nImage=x\n"),
        (
            "typo.container",
            "[Container]\nImage=x\nPublishPorts=8080:80\n[Sevrice]\nRestart=always\n",
        ),
        ("instal.container", "[Container]\nImage=x\n[Instal]\nWantedBy=default.target\n"),
        ("web-nightly.timer", "[Timer]\nOnCalender=daily\n"),
        ("web.contianer", "[Container]\nImage=x\n"),
        ("tailscale/deeper/db.container", "[Container]\nImage=x\n"),
        ("proxy.container", "[Container]\nImage=x\nHttpProxy=false\n"),
    ];
    for (name, text) in files {
        std::fs::write(repo.join(name), text).unwrap();
    }
    let check = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quadsync"))
            .arg("check")
            .args(extra)
            .arg(repo)
            .output()
            .unwrap()
    };
    // The generator that may be installed here is not this test's business (it has its own).
    let out = check(&["--no-generator"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    for expected in [
        "typo.container:3: unknown key PublishPorts= in [Container] (podman's generator refuses the file); did you mean PublishPort=?",
        // Every mistake of a file in one run, not the first alone.
        "typo.container:4: unknown section [Sevrice]; did you mean [Service]?",
        "instal.container:3: unknown section [Instal]; did you mean [Install]?",
        "web-nightly.timer:2: unknown key OnCalender= in [Timer] (systemd ignores it); did you mean OnCalendar=?",
        "web.contianer: not read: did you mean .container?",
        "tailscale/deeper/db.container: not read: too deep",
        "proxy.container:3: warning: HttpProxy= in [Container] needs podman 5.7 (checked for podman 5.4)",
        "6 error(s)",
    ] {
        assert!(said.contains(expected), "{expected:?} is not in:\n{said}");
    }

    assert_eq!(said.matches("PublishPorts=").count(), 1, "each mistake once:\n{said}");
    // Mended, it passes; the warning goes with a newer podman.
    std::fs::write(repo.join("typo.container"), "[Container]\nImage=x\nPublishPort=8080:80\n")
        .unwrap();
    std::fs::write(
        repo.join("instal.container"),
        "[Container]\nImage=x\n[Install]\nWantedBy=default.target\n",
    )
    .unwrap();
    std::fs::write(repo.join("web-nightly.timer"), "[Timer]\nOnCalendar=daily\n").unwrap();
    std::fs::remove_file(repo.join("web.contianer")).unwrap();
    std::fs::remove_dir_all(repo.join("tailscale/deeper")).unwrap();
    let out = check(&["--no-generator"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("(1 warning(s) above).\n"), "{}", text(&out.stdout));
    let out = check(&["--no-generator", "--podman-version", "5.7"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", text(&out.stderr));
    let out = check(&["--no-generator", "--generator", "/x"]);
    assert_eq!(out.status.code(), Some(2), "the two exclude each other");

    // With a generator: run once over everything, a refusal named by its file.
    let generator = tmp.path().join("quadlet");
    std::fs::write(
        &generator,
        "#!/bin/sh\nIFS=:\nfor d in $QUADLET_UNIT_DIRS; do\n  echo run >> \"$0.runs\"\n  if grep -q Bogus \"$d\"/*; then echo \"unsupported key 'Bogus'\" >&2; exit 1; fi\ndone\nexit 0\n",
    )
    .unwrap();
    // Run as nobody when the test is root: it must reach the script and its tally.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&generator, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tmp.path().join("quadlet.runs"), "").unwrap();
    std::fs::set_permissions(
        tmp.path().join("quadlet.runs"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let with_generator = |extra: &[&str]| {
        let mut args = vec!["--generator", generator.to_str().unwrap()];
        args.extend(extra);
        check(&args)
    };
    let out = with_generator(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = std::fs::read_to_string(tmp.path().join("quadlet.runs")).unwrap();
    assert_eq!(runs.lines().count(), 4, "one run, one directory for each of the 4 users: {runs}");
    std::fs::write(repo.join("proxy.container"), "[Container]\nImage=x\n# Bogus\n").unwrap();
    let out = with_generator(&[]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(
        said.contains("proxy.container: podman's generator refused it: unsupported key 'Bogus'"),
        "{said}"
    );
}

/// Commits everything in the site's repo.
fn commit(site: &Site, message: &str) {
    git(&site.repo(), &["add", "-A"]);
    git(&site.repo(), &["commit", "-qm", message]);
}

/// A state that says quadsync deployed `hello` (its user exists on the host it ran on).
fn managed_hello(site: &Site) {
    let state = site.tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    write(
        &state.join("state.json"),
        r#"{"commit":null,"last_sync":null,"users":{"hello":{"service":"hello.service","files":{},"result":"started"}}}"#,
    );
}

#[test]
fn a_spec_committed_as_a_symlink_stops_the_sync_instead_of_removing_the_container() {
    let site = Site::new();
    managed_hello(&site);
    let secret = site.tmp.path().join("secret.txt");
    write(&secret, "root:$6$very-secret-hash:19000::::::\n");
    std::fs::remove_file(site.repo().join("hello.container")).unwrap();
    write(&site.repo().join("shared/hello.tmpl"), "[Container]\nImage=x\n");
    std::os::unix::fs::symlink("shared/hello.tmpl", site.repo().join("hello.container")).unwrap();
    commit(&site, "hello as a link");

    // sync (through plan, which needs no root) refuses the commit: no removal is planned.
    let out = site.quadsync(&["plan", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let log = text(&out.stderr);
    assert!(log.contains("hello.container: a symlink (never followed)"), "{log}");
    assert!(!text(&out.stdout).contains("remove"), "{}", text(&out.stdout));

    // check reads by the same rule, and never follows a link out of the repo.
    std::fs::remove_file(site.repo().join("hello.container")).unwrap();
    std::os::unix::fs::symlink(&secret, site.repo().join("hello.container")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .arg("check")
        .arg(site.repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("hello.container: a symlink (never followed)"), "{all}");
    assert!(!all.contains("very-secret-hash"), "{all}");
}

#[test]
fn credentials_in_the_url_never_reach_logs_state_or_status() {
    let site = Site::new();
    // A closed port: the fetch fails, and every message about it names the URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    site.configure(&format!("https://deploy:Sup3r%2Fsecret@127.0.0.1:{port}/defs.git"));
    let out = Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .args(["sync", "--config"])
        .arg(site.tmp.path().join("config.env"))
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "a failed fetch");
    let status = site.quadsync(&["status", "--json"]);
    let stored = std::fs::read_to_string(site.tmp.path().join("state/state.json")).unwrap();
    for (what, shown) in
        [("log", text(&out.stderr)), ("status", text(&status.stdout)), ("state", stored)]
    {
        assert!(!shown.contains("Sup3r") && !shown.contains("secret"), "{what}: {shown}");
        assert!(shown.contains("https://***@127.0.0.1"), "{what}: {shown}");
    }
    // The cause is there, not only "handshake failed".
    assert!(text(&out.stderr).to_lowercase().contains("connect"), "{}", text(&out.stderr));
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn fetch(url: &str, branch: &str, dest: &Path) -> Result<String, quadsync::repo::FetchError> {
    let root = [quadsync::fleet::RepoPath { dir: String::new(), optional: false }];
    let timeout = std::time::Duration::from_secs(20);
    quadsync::repo::fetch(url, branch, &dest.join("repo.git"), None, &root, timeout)
        .map(|fetched| fetched.commit)
}

#[test]
fn a_failed_fetch_says_why_against_real_servers() {
    use quadsync::repo::{FetchError, FetchFailure::*};
    let site = Site::new();
    let served = site.served();
    let http = git_http::GitServer::start(&served);
    let guarded = git_http::GitServer::start_with(&served, Some("deploy:s3cr3t"));
    let daemon = git_daemon::GitDaemon::start(&served);
    let git = format!("git://127.0.0.1:{}", daemon.port);
    let authority = guarded.url.trim_start_matches("http://");
    let cases = [
        (format!("{}/defs.git", http.url), "main", None),
        (format!("{}/defs.git", http.url), "nope", Some(NotFound)),
        (format!("{}/missing.git", http.url), "main", Some(NotFound)),
        (format!("{}/forbidden/defs.git", http.url), "main", Some(Auth)),
        (format!("{}/failing/defs.git", http.url), "main", Some(Network)),
        (format!("{}/defs.git", guarded.url), "main", Some(Auth)),
        // gix will not send a password in clear text: the credentials cannot work as written.
        (format!("http://deploy:s3cr3t@{authority}/defs.git"), "main", Some(Auth)),
        (format!("http://127.0.0.1:{}/defs.git", closed_port()), "main", Some(Network)),
        (format!("{git}/defs.git"), "main", None),
        (format!("{git}/missing.git"), "main", Some(NotFound)),
        (format!("git://127.0.0.1:{}/defs.git", closed_port()), "main", Some(Network)),
        (format!("ssh://git@127.0.0.1:{}/defs.git", closed_port()), "main", Some(Network)),
        (format!("file://{}", served.join("defs.git").display()), "nope", Some(NotFound)),
        ("file:///nonexistent/repo".to_owned(), "main", Some(NotFound)),
    ];
    let mut wrong = Vec::new();
    for (i, (url, branch, expected)) in cases.iter().enumerate() {
        let dest = site.tmp.path().join(format!("fetch-{i}"));
        let got = fetch(url, branch, &dest);
        let right = match (&got, expected) {
            (Ok(_), None) => true,
            (Err(FetchError::Failed { failure, message }), Some(expected)) => {
                failure == expected && !message.contains("s3cr3t")
            }
            _ => false,
        };
        if !right {
            wrong.push(format!("{url} {branch}: {got:?}, expected {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_server_that_never_answers_cannot_hold_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, then says nothing, for as long as the test runs.
    let held = std::thread::spawn(move || {
        let connections: Vec<_> = listener.incoming().take(2).collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(connections);
    });
    for url in [
        format!("http://127.0.0.1:{port}/defs.git"),
        format!("ssh://git@127.0.0.1:{port}/defs.git"),
    ] {
        let started = std::time::Instant::now();
        let error = quadsync::repo::fetch(
            &url,
            "main",
            &dir.path().join("repo.git"),
            None,
            &[quadsync::fleet::RepoPath { dir: String::new(), optional: false }],
            std::time::Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{url}");
        let message = format!("fetching main of {url}: no complete answer within 2s");
        let failure = quadsync::repo::FetchFailure::Network;
        assert_eq!(error, quadsync::repo::FetchError::Failed { failure, message });
    }
    drop(held);
}

#[test]
fn plan_fails_when_sync_would_refuse_a_user() {
    let site = Site::new();
    // `root` exists on every host and quadsync did not create it.
    write(&site.repo().join("root.container"), "[Container]\nImage=x\n");
    commit(&site, "root");
    let out = site.quadsync(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("root: REFUSED"), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("sync would fail: 1 user(s) refused"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_bare_clone_stays_small() {
    let site = Site::new();
    let packs = || {
        std::fs::read_dir(site.tmp.path().join("state/repo.git/objects/pack"))
            .map(|d| {
                d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "pack"))
                    .count()
            })
            .unwrap_or_default()
    };
    assert!(site.quadsync(&["plan"]).status.success());
    let after_first = packs();
    for _ in 0..3 {
        assert!(site.quadsync(&["plan"]).status.success());
    }
    assert_eq!(packs(), after_first, "a fetch with nothing new transfers nothing");
    for n in 0..20 {
        write(&site.repo().join("extra.container"), &format!("[Container]\nImage=x{n}\n"));
        commit(&site, "change");
        let out = site.quadsync(&["plan"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(packs() <= 17, "{} packs after {n} changes", packs());
    }
    let plan = text(&site.quadsync(&["plan", "--json"]).stdout);
    assert!(plan.contains("extra"), "{plan}");
}

#[test]
fn a_missing_transform_directory_is_an_error() {
    let site = Site::new();
    let out = check_with(&site.tmp.path().join("no-such-dir"), &site.repo());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("reading transform directory"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(site.tmp.path().join("transforms")).unwrap();
    let out = site.quadsync(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("reading transform directory"), "{}", text(&out.stderr));
}

#[test]
fn a_repo_cannot_make_the_host_create_users_without_end() {
    let site = Site::new();
    let config = site.tmp.path().join("config.env");
    let settings = std::fs::read_to_string(&config).unwrap();
    write(&config, &format!("{settings}QUADSYNC_MAX_CONTAINERS=2\n"));
    write(&site.repo().join("third.container"), "[Container]\nImage=x\n");
    commit(&site, "a third container");
    let out = site.quadsync(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let log = text(&out.stderr);
    assert!(
        log.contains("the repo defines 3 container users; this host takes at most 2 (QUADSYNC_MAX_CONTAINERS)"),
        "{log}"
    );
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
}

/// `quadsync ARGS`, with `stdin` fed to it.
fn quadsync_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    run_with_stdin(Command::new(env!("CARGO_BIN_EXE_quadsync")).args(args), stdin)
}

fn run_with_stdin(command: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn secrets_from_the_go_age_tool_and_ours_open_either_way_and_never_show() {
    // age (Go, filippo.io/age) is what the Go quadsync encrypts with: the format must agree.
    if Command::new("age").arg("--version").output().is_err() {
        let why = "age is not installed (Debian's age package)";
        assert!(std::env::var_os("TAILPOD_REQUIRE_ALL_TESTS").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    let site = Site::new();
    let key = site.tmp.path().join("age.key");
    let out = quadsync_with_stdin(&["secret", "keygen", "--output", key.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let recipient = text(&out.stdout).trim().to_owned();

    // Go's age encrypts; quadsync's [Secrets] format is the Go quadsync's: age:RECIPIENT:BASE64.
    let sealed_by_go = run_with_stdin(Command::new("age").args(["-r", &recipient]), b"from-go");
    assert!(sealed_by_go.status.success(), "{}", text(&sealed_by_go.stderr));
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&sealed_by_go.stdout);
    let ours = quadsync_with_stdin(
        &["secret", "encrypt", "--recipient", key.to_str().unwrap(), "--file", "/run/secrets/x"],
        b"from-rust",
    );
    assert!(ours.status.success(), "{}", text(&ours.stderr));
    let file_line = text(&ours.stdout).trim().to_owned();
    let payload = file_line.strip_prefix(&format!("File=/run/secrets/x:age:{recipient}:")).unwrap();

    // And Go's age opens what quadsync wrote.
    let binary = base64::engine::general_purpose::STANDARD.decode(payload).unwrap();
    let opened =
        run_with_stdin(Command::new("age").args(["-d", "-i", key.to_str().unwrap()]), &binary);
    assert_eq!(text(&opened.stdout), "from-rust", "{}", text(&opened.stderr));

    let spec = format!(
        "[Container]\nImage=docker.io/library/nginx:alpine\n\n[Secrets]\nEnvironment=TOKEN=age:{recipient}:{encoded}\n{file_line}\n"
    );
    write(&site.repo().join("app.container"), &spec);
    git(&site.repo(), &["add", "-A"]);
    git(&site.repo(), &["commit", "-qm", "secrets"]);
    let check = Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .args(["check", "--no-generator", "--age-key", key.to_str().unwrap()])
        .arg(site.repo())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    // Without the key on the host, the container is held and the plan says why.
    let plan = site.quadsync(&["plan"]);
    assert_eq!(plan.status.code(), Some(1));
    let shown = text(&plan.stdout);
    assert!(shown.contains("app: REFUSED"), "{shown}");
    assert!(shown.contains("app.container:5: secret app-token: the value is encrypted, but no QUADSYNC_AGE_KEY is set"), "{shown}");

    let config = site.tmp.path().join("config.env");
    let settings = std::fs::read_to_string(&config).unwrap();
    write(&config, &format!("{settings}QUADSYNC_AGE_KEY={}\n", key.display()));
    let plan = site.quadsync(&["plan"]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let shown = text(&plan.stdout) + &text(&plan.stderr);
    assert!(shown.contains("create podman secret app-token"), "{shown}");
    assert!(shown.contains("create podman secret app-run-secrets-x"), "{shown}");
    let json = text(&site.quadsync(&["plan", "--json"]).stdout);
    for value in ["from-go", "from-rust"] {
        assert!(!shown.contains(value) && !json.contains(value), "{value} shown: {shown}{json}");
    }
}
