//! `cargo bench -p quadsync`: wall time and peak memory of a no-op sync with 100 deployed
//! containers, and of planning 100 changed ones, over a real git repository (file://).
//!
//! The host is a stand-in that answers at once (the real costs of useradd and systemctl are
//! the host's, measured in the box): these figures are quadsync's own work, fetch included.
//! Each scenario runs in a child process, so its peak RSS (VmHWM) is its own.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use quadsync::config::Config;
use quadsync::discover::UnitDir;
use quadsync::plan::plan;
use quadsync::state::State;
use quadsync::sync::{Paths, host_facts, prepare, sync};
use quadsync::system::{System, UserInfo, Validation};

const CONTAINERS: usize = 100;
const RUNS: usize = 10;

/// Every command succeeds at once; users exist once created.
#[derive(Default)]
struct InstantHost {
    users: RefCell<BTreeSet<String>>,
}

impl InstantHost {
    /// A host that already has the users a state records.
    fn with_users_of(config: &Config) -> InstantHost {
        let state = State::load(&Paths::new(&config.state_dir).state).expect("state");
        InstantHost { users: RefCell::new(state.users.keys().cloned().collect()) }
    }
}

impl System for InstantHost {
    fn user(&self, name: &str) -> Result<Option<UserInfo>, String> {
        let exists = self.users.borrow().contains(name);
        Ok(exists.then(|| UserInfo {
            name: name.into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/nonexistent"),
        }))
    }
    fn lingering(&self, _: &str) -> bool {
        true
    }
    fn ensure_group(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn create_user(&self, name: &str, _: &str) -> Result<(), String> {
        self.users.borrow_mut().insert(name.to_owned());
        Ok(())
    }
    fn set_linger(&self, _: &str, _: bool) -> Result<(), String> {
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
    fn user_systemctl(&self, _: &str, _: &[&str]) -> Result<String, String> {
        Ok(String::new())
    }
    fn remove_user(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn validate(&self, _: &[(String, String)]) -> Validation {
        Validation::Unavailable
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

fn commit_definitions(repo: &Path, version: &str) {
    for i in 0..CONTAINERS {
        let text = format!(
            "[Unit]\nDescription=container {i} ({version})\n\n[Container]\nImage=docker.io/library/nginx:alpine\nContainerName={{{{.Name}}}}\nPublishPort={}:80\n\n[Install]\nWantedBy=default.target\n",
            10000 + i
        );
        std::fs::write(repo.join(format!("c{i:03}.container")), text).expect("write definition");
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", version]);
}

fn config(dir: &Path) -> Config {
    let text = format!(
        "QUADSYNC_GIT_URL=file://{}\nQUADSYNC_TRANSFORM_DIR={}\nQUADSYNC_STATE_DIR={}\n",
        dir.join("repo").display(),
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

fn median(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(times[0]), ms(times[times.len() / 2]), ms(times[times.len() - 1]))
}

/// Child: one scenario, printing its figures.
fn scenario(name: &str, dir: &Path) {
    let config = config(dir);
    let host = InstantHost::with_users_of(&config);
    let times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            match name {
                "noop" => {
                    let report =
                        sync(&config, &host, false, &AtomicBool::new(false)).expect("sync");
                    assert!(report.plan.expect("plan").changes().next().is_none(), "not a no-op");
                }
                _ => {
                    let state = State::load(&Paths::new(&config.state_dir).state).expect("state");
                    let (commit, desired) = prepare(&config, &host).expect("prepare");
                    let facts = host_facts(&host, &desired, &state).expect("facts");
                    let plan = plan(&commit, &desired, &state, &facts, 0.5, false);
                    assert_eq!(plan.changes().count(), CONTAINERS);
                }
            }
            started.elapsed()
        })
        .collect();
    let (min, med, max) = median(times);
    let what = if name == "noop" {
        "no-op sync"
    } else {
        "planning 100 changed containers (fetch, render, plan)"
    };
    println!(
        "quadsync {what}, {CONTAINERS} deployed ({RUNS} runs): min {min:.1} ms, median {med:.1} ms, max {max:.1} ms; peak RSS {} KiB",
        peak_rss_kib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        scenario(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    std::fs::create_dir_all(dir.path().join("transforms")).expect("transforms dir");
    git(&repo, &["init", "-q"]);
    commit_definitions(&repo, "v1");
    let first = sync(&config(dir.path()), &InstantHost::default(), false, &AtomicBool::new(false))
        .expect("first sync");
    assert!(first.outcome.errors.is_empty(), "{:?}", first.outcome.errors);

    let me = std::env::current_exe().expect("bench binary");
    let child = |name: &str| {
        let status = Command::new(&me)
            .args(["--scenario", name])
            .arg(dir.path())
            .status()
            .expect("scenario runs");
        assert!(status.success(), "scenario {name} failed");
    };
    child("noop");
    commit_definitions(&repo, "v2");
    child("plan-changed");
}
