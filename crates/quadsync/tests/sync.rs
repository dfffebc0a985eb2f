//! quadsync against real git repositories (file:// and a git server on loopback), run as a
//! binary. Nothing here creates users: what needs root and systemd runs in the box.

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
        let p = self.tmp.path();
        write(
            &p.join("config.env"),
            &format!(
                "QUADSYNC_GIT_URL={url}\nQUADSYNC_TRANSFORM_DIR={}\nQUADSYNC_STATE_DIR={}\n",
                p.join("transforms").display(),
                p.join("state").display()
            ),
        );
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
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
    let served = site.tmp.path().join("served");
    std::fs::create_dir(&served).unwrap();
    git(&served, &["clone", "-q", "--bare", site.repo().to_str().unwrap(), "defs.git"]);
    let server = git_http::GitServer::start(&served);
    site.configure(&format!("{}/defs.git", server.url));
    let out = site.quadsync(&["plan", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["users"].as_array().unwrap().len(), 2);
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

    site.configure("file:///nonexistent/repo");
    let out = site.quadsync(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let status = site.quadsync(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["last_sync"]["ok"], false);
    assert!(json["last_sync"]["message"].as_str().unwrap().contains("/nonexistent/repo"));
}

fn check_with(transforms: &Path, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quadsync"))
        .arg("check")
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
    let out = site.quadsync(&["redeploy", "Web"]);
    assert!(text(&out.stderr).contains("invalid name"));
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
    assert_eq!(text(&out.stdout), "All checks passed: 2 container user(s), 4 file(s).\n");
}
