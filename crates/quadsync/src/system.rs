//! The narrow interface between quadsync's decisions and the host, and the real host behind it.
//!
//! Everything quadsync does to a host goes through [`System`], so plans and their application are
//! tested with a recording fake, and [`Host`] is tested for real on a booted host (the box).
//! [`Host`] runs commands with argument vectors (never a shell) and a timeout each.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tailpod_core::names::UserName;

use crate::discover::UnitDir;
use crate::fleet::HostIdentity;
use crate::validate::QuadletSet;

/// What quadsync needs to know of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: UserName,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Every effect quadsync has on a host.
pub trait System: QuadletGenerator {
    /// Who this host is, for `QUADSYNC_PATHS` and `{{.Host}}`.
    fn identity(&self) -> Result<HostIdentity, String> {
        crate::fleet::this_host()
    }
    fn user(&self, name: &UserName) -> Result<Option<UserInfo>, String>;
    fn lingering(&self, name: &UserName) -> bool;
    fn ensure_group(&self, group: &str) -> Result<(), String>;
    /// A non-system user (so subuid/subgid ranges are allocated), with a home, in `group`.
    fn create_user(&self, name: &UserName, group: &str) -> Result<(), String>;
    fn set_linger(&self, name: &UserName, on: bool) -> Result<(), String>;
    /// Starts the user's systemd and waits for its bus.
    fn start_user_manager(&self, user: &UserInfo) -> Result<(), String>;
    /// Writes a file into the user's home, as the user.
    fn write_file(
        &self,
        user: &UserInfo,
        dir: UnitDir,
        name: &str,
        text: &str,
    ) -> Result<(), String>;
    /// Removes a file from the user's home, as the user.
    fn remove_file(&self, user: &UserInfo, dir: UnitDir, name: &str) -> Result<(), String>;
    /// `systemctl --user -M NAME@ ARGS`.
    fn user_systemctl(&self, name: &UserName, args: &[&str]) -> Result<String, String>;
    /// Whether a job is pending for the user's `unit`, and its state (`active`, `failed`, ...).
    fn unit_job(&self, name: &UserName, unit: &str) -> Result<UnitJob, String> {
        let shown = self.user_systemctl(name, &["show", "-p", "Job", "-p", "ActiveState", unit])?;
        Ok(UnitJob::parse(&shown))
    }
    /// `journalctl ARGS` (read only). A host without a journal answers nothing.
    fn journal(&self, args: &[String]) -> Result<String, String> {
        let _ = args;
        Ok(String::new())
    }
    /// Creates or replaces a podman secret in the user's own store, as the user; the value goes
    /// through stdin, never argv.
    fn put_secret(&self, user: &UserInfo, name: &str, value: &[u8]) -> Result<(), String>;
    /// Removes a podman secret from the user's store; one already gone is no error.
    fn remove_secret(&self, user: &UserInfo, name: &str) -> Result<(), String>;
    /// Ends the user's processes and removes the user with its home.
    fn remove_user(&self, name: &UserName) -> Result<(), String>;
}

/// A unit's job and state, from `systemctl show -p Job -p ActiveState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitJob {
    /// A job (a start, a restart) is queued or running.
    pub pending: bool,
    pub state: ActiveState,
}

impl UnitJob {
    pub fn parse(shown: &str) -> UnitJob {
        let value = |key: &str| {
            shown.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).unwrap_or("").trim()
        };
        let job = value("Job");
        UnitJob {
            pending: !job.is_empty() && job != "0",
            state: ActiveState::parse(value("ActiveState")),
        }
    }
}

/// A unit's `ActiveState`, as systemd names them; what quadsync decides on is matched, never
/// compared as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Maintenance,
    Refreshing,
    /// No state could be had, and why (empty when systemd said nothing).
    Unknown(String),
}

impl ActiveState {
    const NAMES: [(&str, ActiveState); 8] = [
        ("active", ActiveState::Active),
        ("reloading", ActiveState::Reloading),
        ("inactive", ActiveState::Inactive),
        ("failed", ActiveState::Failed),
        ("activating", ActiveState::Activating),
        ("deactivating", ActiveState::Deactivating),
        ("maintenance", ActiveState::Maintenance),
        ("refreshing", ActiveState::Refreshing),
    ];

    pub fn parse(text: &str) -> ActiveState {
        let text = text.trim();
        let known = ActiveState::NAMES.iter().find(|(name, _)| *name == text);
        known.map_or_else(|| ActiveState::Unknown(text.to_owned()), |(_, state)| state.clone())
    }

    /// systemd's name for it; `unknown` without the why (a metric's label, one of a few).
    pub fn name(&self) -> &'static str {
        let known = ActiveState::NAMES.iter().find(|(_, state)| state == self);
        known.map_or("unknown", |(name, _)| name)
    }
}

impl std::fmt::Display for ActiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActiveState::Unknown(why) if why.is_empty() => f.write_str("unknown"),
            ActiveState::Unknown(why) => write!(f, "unknown ({why})"),
            known => f.write_str(known.name()),
        }
    }
}

/// podman's Quadlet generator, the part of the host that validates (see [`crate::validate`]).
pub trait QuadletGenerator {
    /// The installed generator's identity, which changes when podman is upgraded; `None` when
    /// it is not installed.
    fn generator(&self) -> Option<String>;
    /// Runs the generator once over `sets`, each as its own user's directory. `Err` carries the
    /// generator's own words.
    fn run_generator(&self, sets: &[QuadletSet]) -> Result<(), String>;
}

/// Reads a pipe to its end on its own thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs `program ARGS` without a shell, feeding `stdin`, killing it after `timeout`. Returns its
/// standard output; a failure carries its standard error.
pub fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, stdin, timeout).map_err(|e| e.to_string())
}

/// A command that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFailed {
    /// The command line, for messages.
    pub command: String,
    /// What happened: an exit status, a timeout, or why it could not start.
    pub how: String,
    /// Its standard error, on one line.
    pub stderr: String,
    /// Its standard output: some commands answer there and say the same with their status
    /// (`systemctl is-active` prints `failed` and exits 3).
    pub stdout: String,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.command, self.how)?;
        if !self.stderr.is_empty() {
            write!(f, ": {}", self.stderr)?;
        }
        Ok(())
    }
}

/// [`run`] for a command that needs more set up (its environment). The one place quadsync starts
/// a process (clippy.toml refuses `spawn`, `output` and `status` anywhere else).
#[allow(clippy::disallowed_methods)]
pub fn run_command(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, CommandFailed> {
    let program = command.get_program().to_string_lossy().into_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let shown = format!("{program} {}", args.join(" "));
    let failed = |how: String, stderr: String| CommandFailed {
        command: shown.clone(),
        how,
        stderr,
        stdout: String::new(),
    };
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string(), String::new()))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || pipe.write_all(&data));
    }
    let mut stdout = child.stdout.take().map(drain);
    let mut stderr = child.stderr.take().map(drain);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| failed(e.to_string(), String::new()))? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("timed out after {}s", timeout.as_secs()), String::new()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = stdout.take().and_then(|h| h.join().ok()).unwrap_or_default();
    let err = stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
    // One line: these messages end up in the journal, one event per line.
    let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
    if status.success() {
        Ok(out)
    } else {
        Err(CommandFailed { stdout: out, ..failed(status.to_string(), err) })
    }
}

/// A unit's state as `systemctl is-active` answers it: its standard output whatever the exit
/// status (`inactive` and `failed` come with status 3), or why there is no answer.
pub fn unit_state(answer: Result<String, CommandFailed>) -> ActiveState {
    match answer {
        Ok(out) => ActiveState::parse(&out),
        Err(e) if !e.stdout.trim().is_empty() => ActiveState::parse(&e.stdout),
        Err(e) => ActiveState::Unknown(e.to_string()),
    }
}

/// Timeouts, as the Go original chose them.
const QUICK: Duration = Duration::from_secs(30);
const USERS: Duration = Duration::from_secs(60);
const SYSTEMCTL: Duration = Duration::from_secs(90);

/// The host quadsync runs on.
#[derive(Debug, Clone)]
pub struct Host {
    /// quadsync's own binary, run as the user for file work.
    pub exe: PathBuf,
    /// podman's Quadlet generator.
    pub generator: PathBuf,
    /// Where to stage files to validate (a fresh directory is made in it each time).
    pub scratch: PathBuf,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            exe: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/quadsync")),
            generator: PathBuf::from("/usr/lib/systemd/system-generators/podman-system-generator"),
            scratch: std::env::temp_dir(),
        }
    }
}

impl Host {
    /// `systemctl --user -M NAME@ is-active UNIT`, for `status`.
    pub fn unit_state(&self, name: &UserName, unit: &str) -> ActiveState {
        let mut command = Command::new("systemctl");
        command.args(["--user", "-M", &format!("{name}@"), "is-active", unit]);
        unit_state(run_command(command, None, QUICK))
    }

    fn as_user(
        &self,
        user: &UserInfo,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, String> {
        let uid = format!("--reuid={}", user.uid);
        let gid = format!("--regid={}", user.gid);
        let home = user.home.to_string_lossy().into_owned();
        let exe = self.exe.to_string_lossy().into_owned();
        let mut argv = vec![
            uid.as_str(),
            gid.as_str(),
            "--init-groups",
            "--reset-env",
            "--",
            exe.as_str(),
            "user-file",
        ];
        argv.extend(args);
        argv.extend(["--home", home.as_str()]);
        run("setpriv", &argv, stdin, USERS)
    }

    /// `podman ARGS` as the user, in its own rootless store. It runs as a transient unit of
    /// the system's manager in the user's slice, not under this process: rootless podman makes
    /// user namespaces, which quadsync-sync.service may not (`RestrictNamespaces=yes`).
    fn podman_as(
        &self,
        user: &UserInfo,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, String> {
        let mut command = Command::new("systemd-run");
        command
            .args(["--quiet", "--wait", "--pipe", "--collect", "--working-directory=/"])
            .arg(format!("--uid={}", user.uid))
            .arg(format!("--gid={}", user.gid))
            .arg(format!("--slice=user-{}.slice", user.uid))
            .arg(format!("--setenv=XDG_RUNTIME_DIR=/run/user/{}", user.uid))
            .arg(format!("--setenv=HOME={}", user.home.display()))
            .args(["--", "podman"])
            .args(args);
        run_command(command, stdin, USERS).map_err(|e| e.to_string())
    }
}

impl System for Host {
    fn user(&self, name: &UserName) -> Result<Option<UserInfo>, String> {
        let user = nix::unistd::User::from_name(name.as_str())
            .map_err(|e| format!("looking up user {name}: {e}"))?;
        Ok(user.map(|u| UserInfo {
            name: name.clone(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
        }))
    }

    fn lingering(&self, name: &UserName) -> bool {
        Path::new("/var/lib/systemd/linger").join(name.as_str()).exists()
    }

    fn ensure_group(&self, group: &str) -> Result<(), String> {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(_)) => Ok(()),
            _ => run("groupadd", &[group], None, USERS).map(drop),
        }
    }

    fn create_user(&self, name: &UserName, group: &str) -> Result<(), String> {
        let comment = format!("quadsync container {name}");
        let args = [
            "--create-home",
            "--shell",
            "/sbin/nologin",
            "--groups",
            group,
            "--comment",
            &comment,
            name.as_str(),
        ];
        run("useradd", &args, None, USERS).map(drop)
    }

    fn set_linger(&self, name: &UserName, on: bool) -> Result<(), String> {
        let verb = if on { "enable-linger" } else { "disable-linger" };
        run("loginctl", &[verb, name.as_str()], None, USERS).map(drop)
    }

    fn start_user_manager(&self, user: &UserInfo) -> Result<(), String> {
        run("systemctl", &["start", &format!("user@{}.service", user.uid)], None, SYSTEMCTL)?;
        let bus = PathBuf::from(format!("/run/user/{}/bus", user.uid));
        let started = Instant::now();
        while !bus.exists() {
            if started.elapsed() > QUICK {
                return Err(format!(
                    "{}'s systemd did not open {} within 30s",
                    user.name,
                    bus.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn write_file(
        &self,
        user: &UserInfo,
        dir: UnitDir,
        name: &str,
        text: &str,
    ) -> Result<(), String> {
        self.as_user(
            user,
            &["write", "--dir", dir.relative(), "--name", name],
            Some(text.as_bytes()),
        )
        .map(drop)
    }

    fn remove_file(&self, user: &UserInfo, dir: UnitDir, name: &str) -> Result<(), String> {
        self.as_user(user, &["remove", "--dir", dir.relative(), "--name", name], None).map(drop)
    }

    fn user_systemctl(&self, name: &UserName, args: &[&str]) -> Result<String, String> {
        let machine = format!("{name}@");
        let mut argv = vec!["--user", "-M", machine.as_str()];
        argv.extend(args);
        run("systemctl", &argv, None, SYSTEMCTL)
    }

    fn journal(&self, args: &[String]) -> Result<String, String> {
        let mut command = Command::new("journalctl");
        command.args(args);
        run_command(command, None, QUICK).map_err(|e| e.to_string())
    }

    fn put_secret(&self, user: &UserInfo, name: &str, value: &[u8]) -> Result<(), String> {
        self.podman_as(user, &["secret", "create", "--replace", name, "-"], Some(value)).map(drop)
    }

    fn remove_secret(&self, user: &UserInfo, name: &str) -> Result<(), String> {
        match self.podman_as(user, &["secret", "rm", name], None) {
            Err(e) if e.contains("no such secret") => Ok(()),
            other => other.map(drop),
        }
    }

    fn remove_user(&self, name: &UserName) -> Result<(), String> {
        let _ = run("loginctl", &["terminate-user", name.as_str()], None, SYSTEMCTL);
        let mut attempt = 0;
        loop {
            match run("userdel", &["--remove", name.as_str()], None, USERS) {
                Ok(_) => return Ok(()),
                // Processes that are still going away: give them a moment (up to 4 tries).
                Err(e)
                    if attempt < 3
                        && (e.contains("busy") || e.contains("currently used by process")) =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl QuadletGenerator for Host {
    fn generator(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        // Which file, and that it is the same file: an upgrade (an rpm-ostree deployment
        // included, where mtimes are all 1) gives a new inode or a new ctime.
        let meta = std::fs::metadata(&self.generator).ok()?;
        Some(format!(
            "{}:{}:{}:{}:{}:{}.{}",
            self.generator.display(),
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.ctime(),
            meta.ctime_nsec()
        ))
    }

    /// Stages each set in a directory of its own inside a fresh one and runs the generator over
    /// them all (`QUADLET_UNIT_DIRS`), as `nobody` when quadsync is root.
    ///
    /// The directory is made by `mkdtemp` (a random name, never an existing one) and each file is
    /// created new without following links, so a local user who plants a directory or a
    /// symlink in /tmp cannot make root write anywhere. Not removing it is an error. The
    /// generator parses what the repo wrote; it gets no more rights than it needs to read it.
    fn run_generator(&self, sets: &[QuadletSet]) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        let unprivileged = nix::unistd::geteuid().is_root();
        // Readable by the generator's user, writable by root alone.
        let (dir_mode, file_mode) = if unprivileged { (0o755, 0o644) } else { (0o700, 0o600) };
        let staging = tempfile::Builder::new()
            .prefix("quadsync-check-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(dir_mode))
            .tempdir_in(&self.scratch)
            .map_err(|e| {
                format!("making a staging directory in {}: {e}", self.scratch.display())
            })?;
        let outcome = (|| -> Result<(), String> {
            let mut dirs = Vec::with_capacity(sets.len());
            for (index, set) in sets.iter().enumerate() {
                let dir = staging.path().join(index.to_string());
                std::fs::DirBuilder::new()
                    .mode(dir_mode)
                    .create(&dir)
                    .map_err(|e| format!("staging {}: {e}", dir.display()))?;
                for (name, text) in &set.files {
                    crate::userfile::check_name(name)?;
                    let path = dir.join(name);
                    let mut file = std::fs::File::options()
                        .write(true)
                        .create_new(true)
                        .mode(file_mode)
                        .custom_flags(nix::libc::O_NOFOLLOW)
                        .open(&path)
                        .map_err(|e| format!("staging {}: {e}", path.display()))?;
                    file.write_all(text.as_bytes())
                        .map_err(|e| format!("staging {}: {e}", path.display()))?;
                }
                dirs.push(dir);
            }
            let unit_dirs = std::env::join_paths(&dirs).map_err(|e| e.to_string())?;
            let mut command = if unprivileged {
                let mut setpriv = Command::new("setpriv");
                setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
                setpriv.arg(&self.generator);
                setpriv
            } else {
                Command::new(&self.generator)
            };
            command
                .args(["--user", "--dryrun", "--no-kmsg-log"])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("QUADLET_UNIT_DIRS", unit_dirs);
            // The generator's own words when it refuses (with the staging paths taken out, so
            // they name the files as the repo does); the whole story when it did not run.
            run_command(command, None, QUICK).map(drop).map_err(|e| {
                let words = if e.stderr.is_empty() { e.to_string() } else { e.stderr };
                dirs.iter()
                    .fold(words, |words, dir| words.replace(&format!("{}/", dir.display()), ""))
            })
        })();
        let shown = staging.path().display().to_string();
        staging.close().map_err(|e| format!("removing the staging directory {shown}: {e}"))?;
        outcome
    }
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, text: &str) -> Vec<QuadletSet> {
        vec![QuadletSet { user: "u".parse().unwrap(), files: vec![(name.into(), text.into())] }]
    }

    /// A host whose generator is `script`, in a fresh scratch directory that the generator's
    /// user (nobody, when the tests run as root) can enter.
    fn host_with_generator(script: &str) -> (tempfile::TempDir, Host) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let generator = dir.path().join("generator");
        std::fs::write(&generator, script).unwrap();
        std::fs::set_permissions(&generator, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = Host { exe: PathBuf::from("/bin/false"), generator, scratch: dir.path().into() };
        (dir, host)
    }

    #[test]
    fn run_captures_output_feeds_stdin_and_times_out() {
        assert_eq!(run("cat", &[], Some(b"hello"), QUICK).unwrap(), "hello");
        let err = run("sh", &["-c", "echo oops >&2; echo see this >&2; exit 3"], None, QUICK)
            .unwrap_err();
        assert!(err.ends_with("exit status: 3: oops see this"), "{err}");
        let started = Instant::now();
        let err = run("sleep", &["10"], None, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err, "sleep 10: timed out after 0s");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(run("/nonexistent/program", &[], None, QUICK).is_err());
    }

    #[test]
    fn as_root_the_generator_runs_as_nobody() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to drop privileges");
            return;
        }
        let (_dir, host) = host_with_generator(
            "#!/bin/sh\necho \"$(id -u):$(id -g):$(id -G)\" >&2; cat \"$QUADLET_UNIT_DIRS\"/* >&2; exit 1\n",
        );
        let answer = host.run_generator(&one("web.container", "[Container]\nImage=x\n"));
        // It could read what it checks, and nothing else of root's.
        assert_eq!(answer, Err("65534:65534:65534 [Container] Image=x".into()));
    }

    #[test]
    fn unit_states_read_and_print_as_systemd_names_them() {
        for (name, state) in ActiveState::NAMES {
            assert_eq!(ActiveState::parse(name), state);
            assert_eq!(state.to_string(), name);
        }
        let job = UnitJob::parse("Job=0\nActiveState=activating\n");
        assert_eq!(job, UnitJob { pending: false, state: ActiveState::Activating });
        assert_eq!(UnitJob::parse("Job=12\n").state, ActiveState::Unknown(String::new()));
        assert_eq!(ActiveState::parse("exploded").to_string(), "unknown (exploded)");
        assert_eq!(ActiveState::parse("exploded").name(), "unknown");
    }

    #[test]
    fn a_failed_or_inactive_unit_shows_its_state_not_a_blank() {
        let is_active = |script: &str| {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            unit_state(run_command(command, None, QUICK))
        };
        assert_eq!(is_active("echo active"), ActiveState::Active);
        // What systemctl does for a failed or stopped unit: the state on stdout, status 3.
        assert_eq!(is_active("echo failed; exit 3"), ActiveState::Failed);
        assert_eq!(is_active("echo inactive; exit 3"), ActiveState::Inactive);
        assert_eq!(is_active("echo inactive; exit 3").to_string(), "inactive");
        let unknown = is_active("echo 'Failed to connect to bus' >&2; exit 1").to_string();
        assert!(unknown.starts_with("unknown (sh -c "), "{unknown}");
        assert!(unknown.ends_with("Failed to connect to bus)"), "{unknown}");
    }

    #[test]
    fn without_the_generator_validation_says_so() {
        let host = Host {
            exe: PathBuf::from("/bin/false"),
            generator: PathBuf::from("/nonexistent/generator"),
            scratch: std::env::temp_dir(),
        };
        assert_eq!(host.generator(), None);
    }

    #[test]
    fn a_refusing_generator_is_reported_with_its_message() {
        // A stand-in with the generator's contract: exit 1 and a message when a file is bad.
        let (_dir, host) = host_with_generator(
            "#!/bin/sh\ngrep -l Bogus \"$QUADLET_UNIT_DIRS\"/* >/dev/null && { echo \"unsupported key 'Bogus'\" >&2; exit 1; }\nexit 0\n",
        );
        assert!(host.generator().is_some_and(|g| g.contains("generator")));
        assert_eq!(host.run_generator(&one("a.container", "[Container]\nImage=x\n")), Ok(()));
        assert_eq!(
            host.run_generator(&one("a.container", "[Container]\nBogus=1\n")),
            Err("unsupported key 'Bogus'".into())
        );
    }

    #[test]
    fn many_sets_run_once_each_in_a_directory_of_its_own() {
        // Says what it read, from where, and refuses.
        let (_dir, host) = host_with_generator(
            "#!/bin/sh\necho run >&2\nIFS=:\nfor d in $QUADLET_UNIT_DIRS; do ls \"$d\" | sed \"s|^|$d/|\" >&2; done\nexit 1\n",
        );
        let sets = vec![
            QuadletSet {
                user: "a".parse().unwrap(),
                files: vec![("same.volume".into(), String::new())],
            },
            QuadletSet {
                user: "b".parse().unwrap(),
                files: vec![("same.volume".into(), String::new())],
            },
        ];
        let words = host.run_generator(&sets).unwrap_err();
        // One run; both files were there (one directory each), named as the repo names them.
        let lines: Vec<&str> = words.split_whitespace().collect();
        assert_eq!(lines, ["run", "same.volume", "same.volume"], "{words}");
    }

    #[test]
    fn staging_never_writes_through_a_planted_directory_or_link() {
        // What a local user could prepare in a shared /tmp: the old predictable name as a link
        // to a directory root would then write into, and as a directory of links.
        let victim = tempfile::tempdir().unwrap();
        let (scratch, host) =
            host_with_generator("#!/bin/sh\nls -ld \"$QUADLET_UNIT_DIRS\" >&2; exit 1\n");
        let planted = scratch.path().join(format!("quadsync-check-{}", std::process::id()));
        std::os::unix::fs::symlink(victim.path(), &planted).unwrap();
        let Err(listing) = host.run_generator(&one("web.container", "[Container]\nImage=x\n"))
        else {
            panic!("the stand-in generator always refuses");
        };
        // It staged in a directory of its own (root's, read-only to the generator's user), not
        // the planted one.
        let mode = if nix::unistd::geteuid().is_root() { "drwxr-xr-x" } else { "drwx------" };
        assert!(listing.starts_with(mode), "{listing}");
        assert!(!listing.contains(&planted.display().to_string()), "{listing}");
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0);
        let left: Vec<_> =
            std::fs::read_dir(scratch.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "the staging directory is removed: {left:?}");

        let err = host.run_generator(&one("../escape.container", "x"));
        assert_eq!(err, Err("refusing the file name \"../escape.container\"".into()));
    }
}
