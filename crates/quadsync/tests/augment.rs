//! `quadsync augment` run as a binary against a real git checkout and transform directory.

// Tests drive the binaries and git directly; the harness bounds them, not run_command.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Command, Output};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn quadsync(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quadsync")).args(args).current_dir(cwd).output().unwrap()
}

/// A definitions repo made by `git init`, and a transform directory beside it.
fn layout() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let init = Command::new("git").args(["init", "-q"]).current_dir(&repo).status().unwrap();
    assert!(init.success());
    write(&repo.join("web.container"), "[Container]\nImage=nginx\n");
    write(
        &repo.join("tailscale/app.container"),
        "# the app\n[Container]\nImage=docker.io/library/nginx:latest\nContainerName={{.Name}}\n",
    );
    write(&repo.join("broken/x.container"), "[Container]\nImage=nginx\n");
    write(&tmp.path().join("t/_base.container"), "[Service]\nRestart=on-failure\n");
    write(
        &tmp.path().join("t/tailscale.container"),
        "[Container]\nNetwork=none\n\n[Service]\n+ExecStartPre=/usr/local/bin/tailmint --hostname %N\n",
    );
    tmp
}

#[test]
fn prints_the_merged_unit_chosen_by_directory() {
    let tmp = layout();
    let out = quadsync(
        &["augment", "--transforms", "../t", "tailscale/app.container"],
        &tmp.path().join("repo"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "# the app\n[Container]\nImage=docker.io/library/nginx:latest\nContainerName=app\nNetwork=none\n\n[Service]\nExecStartPre=/usr/local/bin/tailmint --hostname %N\nRestart=on-failure\n"
    );

    let out = quadsync(&["augment", "--transforms", "t", "repo/web.container"], tmp.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "[Container]\nImage=nginx\n\n[Service]\nRestart=on-failure\n"
    );
}

#[test]
fn failures_exit_1_with_the_reason_and_usage_errors_exit_2() {
    let tmp = layout();
    let out = quadsync(&["augment", "--transforms", "t", "repo/broken/x.container"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("repo/broken/x.container: no transform for directory broken"),
        "{stderr}"
    );

    // Outside any git checkout, the root must be given.
    write(&tmp.path().join("loose/web.container"), "[Container]\nImage=nginx\n");
    let out = quadsync(&["augment", "--transforms", "t", "loose/web.container"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --repo DIR"));
    let out = quadsync(
        &["augment", "--transforms", "t", "--repo", "loose", "loose/web.container"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(quadsync(&["augment"], tmp.path()).status.code(), Some(2));
    assert_eq!(quadsync(&["bogus"], tmp.path()).status.code(), Some(2));
    assert_eq!(quadsync(&[], tmp.path()).status.code(), Some(2));
}

#[test]
fn a_fifo_or_a_link_to_a_device_is_refused_at_once() {
    let tmp = layout();
    let repo = tmp.path().join("repo");
    mkfifo(&repo.join("fifo.container"));
    std::os::unix::fs::symlink("/dev/zero", repo.join("zero.container")).unwrap();
    for (file, why) in
        [("fifo.container", "a FIFO"), ("zero.container", "a symlink; refusing to follow it")]
    {
        // Without the checks, the first blocks forever and the second reads without end.
        let out = quadsync(&["augment", "--transforms", "../t", file], &repo);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{file}: {why}")), "{file}: {err}");
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn errors_say_what_to_pass_instead() {
    let tmp = layout();
    // Definitions one level below the checkout's root, as in this project's deploy/containers.
    write(&tmp.path().join("repo/deploy/tailscale/web.container"), "[Container]\nImage=nginx\n");
    let out = quadsync(
        &["augment", "--transforms", "../t", "deploy/tailscale/web.container"],
        &tmp.path().join("repo"),
    );
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    let deploy = tmp.path().join("repo/deploy");
    let hint =
        format!("if the definitions repo is the directory {0}, pass --repo {0}", deploy.display());
    assert!(said.contains(&hint), "{said}");
    let out = quadsync(
        &["augment", "--transforms", "../t", "--repo", "deploy", "deploy/tailscale/web.container"],
        &tmp.path().join("repo"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = quadsync(
        &["augment", "--transforms", "../nowhere", "web.container"],
        &tmp.path().join("repo"),
    );
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the transform directory ../nowhere does not exist"), "{said}");
}
