//! `cargo bench -p quadsync`: a sync with nothing to do and a sync with one container changed,
//! for 100 and 1,000 deployed containers, over real git repositories (file:// and a loopback
//! `git daemon`), with podman's real Quadlet generator doing the validation.
//!
//! The generator is podman 5.4's, from the end-to-end box's Debian rootfs when it is on this
//! machine (`cargo xtask box test` leaves it in /var/tmp/tailpod-box), else
//! `QUADSYNC_BENCH_GENERATOR`, else a stand-in script that costs about what it costs. Everything
//! else the host does (useradd, systemctl) answers at once: those costs are the host's,
//! measured in the box; these figures are quadsync's own work, the fetch and the generator
//! included. Each scenario runs in a child process, so its peak RSS (VmHWM) is its own, and once
//! more under `strace -f` (when installed) to count the processes a sync starts.

// The benchmark drives git directly, outside what quadsync itself runs.
#![allow(clippy::disallowed_methods)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use quadsync::config::Config;
use quadsync::discover::UnitDir;
use quadsync::plan::MassRemoval;
use quadsync::state::State;
use quadsync::sync::{Paths, sync};
use quadsync::system::{ActiveState, Host, QuadletGenerator, System, UnitJob, UserInfo};
use quadsync::validate::QuadletSet;
use tailpod_core::names::UserName;

#[path = "../tests/support/git_daemon.rs"]
mod git_daemon;

const RUNS: usize = 10;
const BOX_GENERATOR: &str = "/var/tmp/tailpod-box/work/rootfs/usr/libexec/podman/quadlet";

/// Effects answer at once (users exist once created); validation is the real generator's.
struct BenchHost {
    users: RefCell<BTreeSet<UserName>>,
    generator: Host,
    generator_runs: Cell<usize>,
}

impl BenchHost {
    fn new(config: &Config, generator: &Path) -> BenchHost {
        let state = State::load(&Paths::new(&config.state_dir).state).expect("state");
        BenchHost {
            users: RefCell::new(state.users.keys().cloned().collect()),
            generator: Host { generator: generator.to_owned(), ..Host::default() },
            generator_runs: Cell::new(0),
        }
    }
}

impl QuadletGenerator for BenchHost {
    fn generator(&self) -> Option<String> {
        self.generator.generator()
    }
    fn run_generator(&self, sets: &[QuadletSet]) -> Result<(), String> {
        self.generator_runs.set(self.generator_runs.get() + 1);
        self.generator.run_generator(sets)
    }
}

impl System for BenchHost {
    fn user(&self, name: &UserName) -> Result<Option<UserInfo>, String> {
        let exists = self.users.borrow().contains(name);
        Ok(exists.then(|| UserInfo {
            name: name.clone(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/nonexistent"),
        }))
    }
    fn lingering(&self, _: &UserName) -> bool {
        true
    }
    fn ensure_group(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn create_user(&self, name: &UserName, _: &str) -> Result<(), String> {
        self.users.borrow_mut().insert(name.clone());
        Ok(())
    }
    fn set_linger(&self, _: &UserName, _: bool) -> Result<(), String> {
        Ok(())
    }
    fn start_user_manager(&self, _: &UserInfo) -> Result<(), String> {
        Ok(())
    }
    fn write_file(&self, _: &UserInfo, _: UnitDir, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn remove_file(&self, _: &UserInfo, _: UnitDir, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn user_systemctl(&self, _: &UserName, _: &[&str]) -> Result<String, String> {
        Ok(String::new())
    }
    fn unit_job(&self, _: &UserName, _: &str) -> Result<UnitJob, String> {
        Ok(UnitJob { pending: false, state: ActiveState::Active })
    }
    fn put_secret(&self, _: &UserInfo, _: &str, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn remove_secret(&self, _: &UserInfo, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn remove_user(&self, _: &UserName) -> Result<(), String> {
        Ok(())
    }
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(["-c", "user.name=b", "-c", "user.email=b@b", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "git {args:?}");
}

fn definition(i: usize, version: &str) -> String {
    format!(
        "[Unit]\nDescription=container {i} ({version})\n\n[Container]\nImage=docker.io/library/nginx:alpine\nContainerName={{{{.Name}}}}\nPublishPort={}:80\n\n[Install]\nWantedBy=default.target\n",
        10000 + i
    )
}

fn commit_definitions(repo: &Path, containers: usize) {
    for i in 0..containers {
        std::fs::write(repo.join(format!("c{i:04}.container")), definition(i, "v1"))
            .expect("write definition");
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "v1"]);
}

/// Changes one container's definition and commits it.
fn change_one(repo: &Path, version: &str) {
    std::fs::write(repo.join("c0000.container"), definition(0, version)).expect("write");
    git(repo, &["commit", "-qam", version]);
}

fn config(dir: &Path, url: &str) -> Config {
    let text = format!(
        "QUADSYNC_GIT_URL={url}\nQUADSYNC_TRANSFORM_DIR={}\nQUADSYNC_STATE_DIR={}\nQUADSYNC_MAX_CONTAINERS=2000\n",
        dir.join("transforms").display(),
        dir.join("state").display()
    );
    Config::parse("bench", &text).expect("config")
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child: `runs` syncs of one kind, then one line of figures (or nothing, when only counting).
fn scenario(kind: &str, dir: &Path, url: &str, generator: &Path, runs: usize) {
    let config = config(dir, url);
    let host = BenchHost::new(&config, generator);
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        if kind == "one-changed" && runs > 1 {
            change_one(&dir.join("repo"), &format!("run {run} of pid {}", std::process::id()));
        }
        let started = Instant::now();
        let report =
            sync(&config, &host, MassRemoval::Refuse, &AtomicBool::new(false)).expect("sync");
        times.push(started.elapsed());
        assert!(report.outcome.errors.is_empty(), "{:?}", report.outcome.errors);
        let changes = report.plan.expect("plan").changes().count();
        assert_eq!(changes, usize::from(kind == "one-changed"), "{kind}: {changes} change(s)");
    }
    if runs > 1 {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:.1} {:.1} {:.1} {} {}",
            ms(times[0]),
            ms(times[runs / 2]),
            ms(times[runs - 1]),
            host.generator_runs.get() / runs,
            peak_rss_kib()
        );
    }
}

/// podman's generator, or a stand-in, and what it is.
fn find_generator(scratch: &Path) -> (PathBuf, String) {
    if let Some(path) = std::env::var_os("QUADSYNC_BENCH_GENERATOR") {
        return (PathBuf::from(path), "QUADSYNC_BENCH_GENERATOR".into());
    }
    let version = |path: &Path| {
        let out = Command::new(path).arg("--version").output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    if let Some(v) = version(Path::new(BOX_GENERATOR)) {
        return (BOX_GENERATOR.into(), format!("podman {v}'s quadlet, from the box's rootfs"));
    }
    // About what the real one costs: a process that reads every file it is given.
    let stand_in = scratch.join("stand-in-generator");
    std::fs::write(
        &stand_in,
        "#!/bin/sh\nIFS=:\nfor d in $QUADLET_UNIT_DIRS; do cat \"$d\"/* >/dev/null; done\n",
    )
    .expect("stand-in generator");
    std::fs::set_permissions(&stand_in, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    (stand_in, "a stand-in script (run `cargo xtask box test` once for podman's own)".into())
}

/// The processes one sync starts (`strace -f`), by program name; `None` without strace.
fn processes(me: &Path, args: &[String]) -> Option<Vec<String>> {
    let log = tempfile::NamedTempFile::new().ok()?;
    let status = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o"])
        .arg(log.path())
        .arg(me)
        .args(args)
        .status()
        .ok()?;
    assert!(status.success(), "counting run failed");
    let text = std::fs::read_to_string(log.path()).ok()?;
    let programs = text
        .lines()
        .filter(|l| l.contains("execve(\"") && !l.contains("ENOENT"))
        .skip(1)
        .filter_map(|l| l.split('"').nth(1))
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
        .collect();
    Some(programs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let a = &args[i + 1..];
        let runs = a[4].parse().expect("runs");
        scenario(&a[0], Path::new(&a[1]), &a[2], Path::new(&a[3]), runs);
        return;
    }
    let me = std::env::current_exe().expect("bench binary");
    let scratch = tempfile::tempdir().expect("temporary directory");
    let (generator, generator_name) = find_generator(scratch.path());
    println!("quadsync bench: validation by {generator_name}; {RUNS} runs each, median (min–max)");
    // QUADSYNC_BENCH_SIZES=1000 (comma-separated) runs only those.
    let sizes: Vec<usize> = std::env::var("QUADSYNC_BENCH_SIZES")
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![100, 1000]);
    for containers in sizes {
        let dir = tempfile::tempdir().expect("temporary directory");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).expect("repo dir");
        std::fs::create_dir_all(dir.path().join("transforms")).expect("transforms dir");
        git(&repo, &["init", "-q"]);
        commit_definitions(&repo, containers);
        let daemon = git_daemon::GitDaemon::start(dir.path());
        let file_url = format!("file://{}", repo.display());
        let git_url = format!("git://127.0.0.1:{}/repo", daemon.port);
        for (transport, url) in [("file://", &file_url), ("git://", &git_url)] {
            // A fresh state each time: the first sync deploys all (and validates all, once).
            let _ = std::fs::remove_dir_all(dir.path().join("state"));
            let first_config = config(dir.path(), url);
            let first = BenchHost::new(&first_config, &generator);
            let report = sync(&first_config, &first, MassRemoval::Refuse, &AtomicBool::new(false));
            let report = report.expect("first sync");
            assert!(report.outcome.errors.is_empty(), "{:?}", report.outcome.errors);
            for kind in ["noop", "one-changed"] {
                let child_args = |runs: usize| -> Vec<String> {
                    let dir = dir.path().display().to_string();
                    let generator = generator.display().to_string();
                    let runs = runs.to_string();
                    ["--scenario", kind, &dir, url, &generator, &runs].map(String::from).to_vec()
                };
                let out = Command::new(&me).args(child_args(RUNS)).output().expect("scenario");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let figures = String::from_utf8_lossy(&out.stdout);
                let f: Vec<&str> = figures.split_whitespace().collect();
                if kind == "one-changed" {
                    change_one(&repo, &format!("counted {transport}"));
                }
                let counted = processes(&me, &child_args(1)).map_or_else(
                    || "not counted (no strace)".to_owned(),
                    |p| format!("{} [{}]", p.len(), p.join(" ")),
                );
                let what = if kind == "noop" { "no-op sync" } else { "one of them changed" };
                println!(
                    "quadsync {what}, {containers} deployed, {transport}: median {} ms ({}–{}); generator runs {}; processes started {counted}; peak RSS {} KiB",
                    f[1], f[0], f[2], f[3], f[4]
                );
            }
        }
    }
}
