//! The `quadsync` command line; the work is done in the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use serde_json::json;
use tailpod_core::envfile::shown_key;
use tailpod_core::names::{PodName, UserName};
use tailpod_core::quadlet::PodmanVersion;

use quadsync::check::{Check, Hosts};
use quadsync::config::{self, Config};
use quadsync::fleet::{self, HostIdentity};
use quadsync::plan::{MassRemoval, RemovalPolicy};
use quadsync::render::{SpecFile, render};
use quadsync::repo::FetchFailure;
use quadsync::secrets::{self, Keyring};
use quadsync::source::{MAX_FILE_BYTES, read_regular_file, text as source_text};
use quadsync::state::State;
use quadsync::sync::{self, Paths};
use quadsync::system::{ActiveState, Host};
use quadsync::transforms::{Kind, TransformSet};
use quadsync::{plan, userfile};
use tailpod_core::located::at;

/// Deploy rootless Podman Quadlet containers from a git repository, one Linux user per
/// container.
///
/// `sync` (run by quadsync-sync.timer every two minutes) fetches the repo, merges each
/// definition with its directory's transform, checks everything, and makes the host match: one
/// non-system user per container, its Quadlet files written as that user, linger on, the user's
/// systemd reloaded and only what changed restarted. A definition removed from the repo removes
/// its user. Nothing changes when the fetch fails or any definition is invalid.
///
/// Exit status: 0 success (a container that fails to start is a warning), 1 failure, 2 usage;
/// when sync's fetch fails: 75 the server could not be reached (worth retrying soon), 77 it
/// refused the credentials, 78 the repository or branch does not exist.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// quadsync's configuration file.
    #[arg(long, global = true, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the host match the repo.
    ///
    /// Example: quadsync sync
    Sync {
        /// Remove more than QUADSYNC_MAX_REMOVAL of the managed containers in one sync.
        #[arg(long)]
        allow_mass_removal: bool,
    },
    /// Fetch and show what `sync` would do, changing nothing on the host.
    ///
    /// Example: quadsync plan --json
    Plan {
        #[arg(long)]
        json: bool,
        /// Plan as if --allow-mass-removal were given to sync.
        #[arg(long)]
        allow_mass_removal: bool,
    },
    /// Check a definitions directory without a host (for the definitions repo's CI).
    ///
    /// Without --transforms, directories need no transform and only the definitions themselves
    /// are checked. With --paths, the repo is read as a host with that QUADSYNC_PATHS reads it:
    /// as this host, as --host NAME, or as every host (--all-hosts). Examples: quadsync check .;
    /// quadsync check --paths common,hosts/%H --all-hosts .
    Check(CheckCommand),
    /// Write [Secrets] values, and make the key that opens them.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print the unit that would be deployed for a spec file: transforms merged, `{{.Name}}`
    /// substituted, `Pod=` set for pod members, and checked.
    ///
    /// Example: quadsync augment --transforms /etc/quadsync/transforms tailscale/web.container
    Augment {
        /// The transform directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/quadsync/transforms")]
        transforms: PathBuf,
        /// The root of the definitions repo [default: the nearest directory above FILE that
        /// holds .git].
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        /// The repo directories the host deploys, as in config.env (the file must be in one).
        #[arg(long, value_name = "LIST", env = "QUADSYNC_PATHS", default_value = fleet::DEFAULT_PATHS)]
        paths: String,
        /// Render for the host NAME: %H, %l and {{.Host}} are NAME [default: this host].
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// A .container or .pod file in the repo.
        file: PathBuf,
    },
    /// Rewrite and restart a container at the next sync.
    ///
    /// Example: quadsync redeploy web
    Redeploy { name: UserName },
    /// Run podman's image auto-update now, for every container that opted in (AutoUpdate= in its
    /// [Container]) or only NAME, and print each outcome: updated, unchanged, rolled back (the
    /// new image did not start or become healthy) or failed.
    ///
    /// Example: quadsync update web
    Update { name: Option<UserName> },
    /// Show the deployed commit, the last sync and each container's state, with its open
    /// problems, its last image update, and for a failing one the last lines of its journal.
    ///
    /// Example: quadsync status --format prometheus
    Status {
        /// Same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// File work in a user's home, run by quadsync itself as that user.
    #[command(hide = true)]
    UserFile {
        #[arg(value_parser = ["write", "remove"])]
        action: String,
        #[arg(long)]
        home: PathBuf,
        #[arg(long)]
        dir: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatusFormat {
    Text,
    Json,
    /// Prometheus' text format, as QUADSYNC_METRICS_FILE holds it, with each unit's state.
    Prometheus,
}

#[derive(Debug, clap::Args)]
struct CheckCommand {
    /// Also merge and check with these transforms.
    #[arg(long, value_name = "DIR")]
    transforms: Option<PathBuf>,
    /// Warn about keys newer than this podman (MAJOR.MINOR) accepts.
    #[arg(long, value_name = "VERSION", default_value_t = PodmanVersion::DEFAULT_TARGET)]
    podman_version: PodmanVersion,
    /// Podman's Quadlet generator, run once over everything when it is installed [default:
    /// the one systemd runs]. Its findings are that podman's: a host with another version
    /// may decide otherwise.
    #[arg(long, value_name = "PATH")]
    generator: Option<PathBuf>,
    /// Do not run podman's generator even when it is installed (a laptop's podman older
    /// than the hosts').
    #[arg(long, conflicts_with = "generator")]
    no_generator: bool,
    /// Also open every [Secrets] value with this age identity file.
    #[arg(long, value_name = "FILE")]
    age_key: Option<PathBuf>,
    /// The repo directories a host deploys, as in config.env: comma-separated, %H %l %m %a
    /// expanded per host, ?PATH optional.
    #[arg(long, value_name = "LIST", env = "QUADSYNC_PATHS", default_value = fleet::DEFAULT_PATHS)]
    paths: String,
    /// Check as the host NAME: %H, %l and {{.Host}} are NAME [default: this host].
    #[arg(long, value_name = "NAME", conflicts_with = "all_hosts")]
    host: Option<String>,
    /// The architecture %a stands for (systemd's names: x86-64, arm64) [default: this host's].
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    /// Check as every host that has a directory where --paths names one per host (each
    /// directory in hosts/ for hosts/%H), and that no two hosts' containers join the tailnet
    /// under one node name.
    #[arg(long)]
    all_hosts: bool,
    /// The definitions repo's directory.
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Encrypt a value read from stdin and print its [Secrets] line.
    ///
    /// Example: printf %s "$TOKEN" | quadsync secret encrypt --recipient age.pub TOKEN
    Encrypt {
        /// The recipient: an age1... public key, or a file with one (an identity file works:
        /// its public key is used).
        #[arg(long, value_name = "RECIPIENT|FILE")]
        recipient: String,
        /// Make a file secret mounted at this path in the container (the name is derived
        /// from it) instead of an environment variable.
        #[arg(long, value_name = "PATH", conflicts_with = "name")]
        file: Option<String>,
        /// The environment variable's name.
        #[arg(required_unless_present = "file")]
        name: Option<String>,
    },
    /// Create a new age identity file (0600) for a host's QUADSYNC_AGE_KEY, and print its
    /// public key.
    ///
    /// Example: quadsync secret keygen --output age.key
    Keygen {
        /// Where to write it; an existing file is never replaced.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Crates under quadsync that log: held at warnings whatever `RUST_LOG` says, since at debug and
/// trace the HTTP and TLS stacks print requests, headers and bytes, which may carry the
/// repo's credentials.
const QUIET_CRATES: &[&str] =
    &["reqwest", "hyper", "hyper_util", "h2", "rustls", "tokio", "tower", "want", "mio", "gix"];

/// The logger: one line per event, no timestamp (journald adds its own), at the level
/// `rust_log` (RUST_LOG) sets for quadsync itself.
fn logger(rust_log: Option<&str>) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(rust_log.unwrap_or("info"));
    for noisy in QUIET_CRATES {
        builder.filter_module(noisy, log::LevelFilter::Warn);
    }
    builder.format(|buf, record| {
        use std::io::Write;
        writeln!(buf, "{}: {}", record.level().as_str().to_lowercase(), record.args())
    });
    builder.build()
}

fn main() -> ExitCode {
    let logger = logger(std::env::var("RUST_LOG").ok().as_deref());
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sync { allow_mass_removal } => {
            let mass = mass_removal(allow_mass_removal);
            load(&cli.config).map_err(Failure::from).and_then(|c| run_sync(&c, mass))
        }
        command => other(command, &cli.config).map_err(Failure::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            if !message.is_empty() {
                log::error!("{message}");
            }
            ExitCode::from(code)
        }
    }
}

/// Every command but `sync`, which has an exit status of its own.
fn other(command: Command, config: &Path) -> Result<(), String> {
    match command {
        Command::Sync { .. } => unreachable!("main runs sync"),
        Command::Plan { json, allow_mass_removal } => {
            load(config).and_then(|c| run_plan(&c, json, mass_removal(allow_mass_removal)))
        }
        Command::Secret(command) => secret(command),
        Command::Check(command) => check(command),
        Command::Augment { transforms, repo, paths, host, file } => {
            let host = match host {
                Some(name) => HostIdentity::named(&name, None),
                None => fleet::this_host()?,
            };
            let paths = fleet::parse(&paths).map_err(|e| format!("--paths: {e}"))?;
            let paths = fleet::expand_all(&paths, &host).map_err(|e| format!("--paths: {e}"))?;
            augment(&transforms, repo.as_deref(), &paths, &host, &file)
        }
        Command::Redeploy { name } => load(config).and_then(|c| redeploy(&c, &name)),
        Command::Update { name } => load(config).and_then(|c| update(&c, name.as_ref())),
        Command::Status { json, format } => {
            let format = if json { StatusFormat::Json } else { format };
            load(config).and_then(|c| status(&c, format))
        }
        Command::UserFile { action, home, dir, name } => user_file(&action, &home, &dir, &name),
    }
}

fn load(path: &Path) -> Result<Config, String> {
    let config = Config::load(path).map_err(|e| format!("loading config: {e}"))?;
    for key in &config.unknown_keys {
        // A mangled line's left side may be a secret: shown only if it looks like a setting.
        log::warn!("{}: unknown key {} ignored", path.display(), shown_key(key));
    }
    Ok(config)
}

/// The exit status of a sync whose fetch failed, by why (sysexits.h's names).
/// quadsync-sync.service retries only `EX_TEMPFAIL` within seconds, as the network may just not
/// be up yet; refused credentials and a missing repo, like a broken commit (status 1), wait for
/// the next timer: retrying them in a tight loop would only hammer the server (and may lock the
/// account).
fn fetch_exit_status(failure: FetchFailure) -> u8 {
    match failure {
        FetchFailure::Network => 75,  // EX_TEMPFAIL
        FetchFailure::Auth => 77,     // EX_NOPERM
        FetchFailure::NotFound => 78, // EX_CONFIG
    }
}

/// `--allow-mass-removal` as the policy says it.
fn mass_removal(allowed: bool) -> MassRemoval {
    if allowed { MassRemoval::Allow } else { MassRemoval::Refuse }
}

fn run_sync(config: &Config, mass_removal: MassRemoval) -> Result<(), Failure> {
    // SIGTERM (systemctl stop, a reboot) and SIGINT ask the sync to stop after the step under
    // way, with the state saved, instead of dying in the middle of a user.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("installing the signal handler: {e}"))?;
    }
    let report = sync::sync(config, &Host::default(), mass_removal, &stop)?;
    match (report.outcome.errors.len(), report.fetch_failed) {
        (0, _) => Ok(()),
        (_, Some(failure)) => Err(Failure {
            code: fetch_exit_status(failure),
            message: format!("sync failed: {}; nothing changed", failure.describe()),
        }),
        (n, None) => Err(format!("sync failed: {n} error(s)").into()),
    }
}

/// A failed command: what to log, and the exit status.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { code: 1, message }
    }
}

fn run_plan(config: &Config, json: bool, mass_removal: MassRemoval) -> Result<(), String> {
    let host = Host::default();
    let _lock = sync::lock(&config.state_dir)?;
    let state = State::load(&Paths::new(&config.state_dir).state)?;
    // What the generator vouched for at the last sync; a plan changes nothing, so not saved.
    let mut validated = state.validated.clone();
    let (commit, desired) = sync::prepare(config, &host, &mut validated).map_err(|unprepared| {
        unprepared.errors().iter().for_each(|e| log::error!("{e}"));
        format!("nothing to plan: {} error(s)", unprepared.errors().len())
    })?;
    let facts = sync::host_facts(&host, &desired, &state)?;
    let plan = plan::plan(
        &commit,
        &desired,
        &state,
        &facts,
        RemovalPolicy { max_share: config.max_removal, mass_removal },
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?);
    } else {
        print!("{plan}");
    }
    // A refused user is a failure of the sync this plan shows, so the plan says so too.
    match plan.users.iter().filter(|u| u.action == plan::Action::Refused).count() {
        0 => Ok(()),
        n => Err(format!("sync would fail: {n} user(s) refused")),
    }
}

fn check(command: CheckCommand) -> Result<(), String> {
    let CheckCommand {
        transforms,
        podman_version,
        generator,
        no_generator,
        age_key,
        paths,
        host,
        arch,
        all_hosts,
        dir,
    } = command;
    // Asked for by path, it must be there; by default, only when it is installed.
    let generator = match (generator, no_generator) {
        (_, true) => None,
        (Some(path), false) if !path.exists() => {
            return Err(format!("--generator: {} does not exist", path.display()));
        }
        (Some(path), false) => Some(path),
        (None, false) => Some(Host::default().generator).filter(|path| path.exists()),
    };
    let transforms = match transforms {
        Some(path) => TransformSet::load(&path).map_err(|e| e.to_string())?,
        None => TransformSet::without_host(),
    };
    let paths = fleet::parse(&paths).map_err(|e| format!("--paths: {e}"))?;
    let hosts = match (all_hosts, host) {
        (true, _) => Hosts::All { arch },
        (false, Some(name)) => Hosts::One(HostIdentity::named(&name, arch.as_deref())),
        (false, None) => {
            let mut local = fleet::this_host()?;
            if let Some(arch) = arch {
                local.arch = arch;
            }
            Hosts::One(local)
        }
    };
    let check = Check {
        dir,
        transforms,
        paths,
        podman: podman_version,
        generator,
        keyring: age_key.as_deref().map(Keyring::load),
    };
    let findings = quadsync::check::check(&check, &hosts);
    for warning in &findings.warnings {
        eprintln!("{warning}");
    }
    for error in &findings.errors {
        eprintln!("{error}");
    }
    if !findings.errors.is_empty() {
        return Err(format!("{} error(s)", findings.errors.len()));
    }
    let warned = match findings.warnings.len() {
        0 => String::new(),
        n => format!(" ({n} warning(s) above)"),
    };
    let hosts = match hosts {
        Hosts::All { .. } => format!("{} host(s), ", findings.hosts),
        Hosts::One(_) => String::new(),
    };
    println!(
        "All checks passed: {hosts}{} container user(s), {} file(s){warned}.",
        findings.users, findings.files
    );
    Ok(())
}

fn secret(command: SecretCommand) -> Result<(), String> {
    match command {
        SecretCommand::Encrypt { recipient, file, name } => {
            let recipients = secrets::recipients_from(&recipient)?;
            let [recipient] = recipients.as_slice() else {
                return Err(format!(
                    "{} recipients found; a [Secrets] value is encrypted for exactly one",
                    recipients.len()
                ));
            };
            let mut value = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut value)
                .map_err(|e| format!("reading the value from stdin: {e}"))?;
            if value.is_empty() {
                return Err("no value on stdin".into());
            }
            let sealed = secrets::encrypt(recipient, &value)?;
            zeroize::Zeroize::zeroize(&mut value);
            match (file, name) {
                (Some(path), _) => println!("File={path}:{sealed}"),
                (None, Some(name)) => println!("Environment={name}={sealed}"),
                (None, None) => unreachable!("clap requires one"),
            }
            Ok(())
        }
        SecretCommand::Keygen { output } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let (text, recipient) = secrets::generate_identity();
            let mut file = std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&output)
                .map_err(at(&output))?;
            file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(at(&output))?;
            println!("{recipient}");
            Ok(())
        }
    }
}

fn redeploy(config: &Config, name: &UserName) -> Result<(), String> {
    let _lock = sync::lock(&config.state_dir)?;
    let path = Paths::new(&config.state_dir).state;
    let mut state = State::load(&path)?;
    let managed =
        state.users.get_mut(name).ok_or_else(|| format!("no tracked deployment for {name:?}"))?;
    managed.files.values_mut().for_each(|f| f.sha256.clear());
    state.save(&path)?;
    log::info!("{name}: marked for redeployment (run 'quadsync sync' to apply)");
    Ok(())
}

fn update(config: &Config, name: Option<&UserName>) -> Result<(), String> {
    let host = Host::default();
    // A sync under way ends within minutes: waited for, not failed on.
    let _lock = sync::lock_waiting(&config.state_dir, std::time::Duration::from_secs(600))?;
    let path = Paths::new(&config.state_dir).state;
    let mut state = State::load(&path)?;
    let opted: Vec<UserName> = state
        .users
        .iter()
        .filter(|(_, managed)| quadsync::watch::auto_updated(managed))
        .map(|(user, _)| user.clone())
        .collect();
    let users = match name {
        Some(name) if opted.contains(name) => vec![name.clone()],
        Some(name) if state.users.contains_key(name) => {
            return Err(format!(
                "{name} has not opted in to image updates (AutoUpdate=registry or local in its \
                 [Container]), or QUADSYNC_AUTO_UPDATE is off"
            ));
        }
        Some(name) => return Err(format!("no tracked deployment for {name:?}")),
        None => opted,
    };
    if users.is_empty() {
        println!("No container has opted in to image updates.");
        return Ok(());
    }
    let errors = quadsync::watch::update_now(&host, &users);
    // journald may still be writing the last lines the runs printed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let now = sync::now();
    let seen = quadsync::watch::after_run(config, &host, &mut state, None, now);
    state.save(&path)?;
    for update in &seen {
        println!(
            "{}: {} {}: {}",
            update.user,
            update.container,
            update.image,
            update.outcome.as_str()
        );
    }
    for user in users.iter().filter(|u| !seen.iter().any(|s| &s.user == *u)) {
        println!(
            "{user}: no outcome reported (see journalctl --user -M {user}@ -u podman-auto-update.service)"
        );
    }
    match errors.len() {
        0 => Ok(()),
        _ => Err(errors.join("; ")),
    }
}

/// The last lines a failing container's units logged.
fn journal_tail(host: &Host, user: &UserName, unit: &str) -> Vec<String> {
    let Ok(Some(info)) = quadsync::system::System::user(host, user) else { return Vec::new() };
    let uid = format!("_UID={}", info.uid);
    let args: Vec<String> = ["--no-pager", "--quiet", "-o", "cat", "--lines=5", &uid]
        .into_iter()
        .map(str::to_owned)
        .chain([
            format!("_SYSTEMD_USER_UNIT={unit}"),
            "+".into(),
            uid.clone(),
            format!("USER_UNIT={unit}"),
        ])
        .collect();
    quadsync::system::System::journal(host, &args)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn status(config: &Config, format: StatusFormat) -> Result<(), String> {
    let state = State::load(&Paths::new(&config.state_dir).state)?;
    let host = Host::default();
    let states: std::collections::BTreeMap<UserName, ActiveState> = state
        .users
        .iter()
        .map(|(name, m)| (name.clone(), host.unit_state(name, &m.service)))
        .collect();
    let health = &state.health;
    let failing = |name: &str, unit_state: &ActiveState| {
        matches!(unit_state, ActiveState::Failed | ActiveState::Activating)
            || health.is_open(quadsync::health::Kind::ContainerFailing, name)
    };
    match format {
        StatusFormat::Prometheus => {
            print!("{}", quadsync::metrics::render(&state, Some(&states)));
            return Ok(());
        }
        StatusFormat::Json => {
            let users: serde_json::Map<String, serde_json::Value> = state
                .users
                .iter()
                .map(|(name, m)| {
                    let unit_state = &states[name];
                    let journal = match failing(name.as_str(), unit_state) {
                        true => journal_tail(&host, name, &m.service),
                        false => Vec::new(),
                    };
                    let value = json!({
                        "service": m.service,
                        "state": unit_state.to_string(),
                        "result": m.result,
                        "files": m.files.keys().collect::<Vec<_>>(),
                        "problems": health.problems_of(name.as_str()).collect::<Vec<_>>(),
                        "record": health.containers.get(name.as_str()),
                        "journal": journal,
                    });
                    (name.to_string(), value)
                })
                .collect();
            let sync_problem = health.problems_of("sync").next();
            let value = json!({
                "commit": state.commit,
                "last_sync": state.last_sync,
                "sync_problem": sync_problem,
                "notifications_pending": health.outbox.len(),
                "users": users,
            });
            println!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
            return Ok(());
        }
        StatusFormat::Text => {}
    }
    println!("deployed commit: {}", state.commit.as_deref().unwrap_or("(none yet)"));
    match &state.last_sync {
        Some(last) => println!(
            "last sync: {} at {} (unix time): {}",
            if last.ok { "ok" } else { "FAILED" },
            last.at,
            last.message
        ),
        None => println!("last sync: never"),
    }
    for (name, managed) in &state.users {
        let unit_state = &states[name];
        println!("{name}: {} {unit_state} — {}", managed.service, managed.result);
        if let Some(update) =
            health.containers.get(name.as_str()).and_then(|r| r.last_update.as_ref())
        {
            println!(
                "  last image update: {} {} at {} (unix time)",
                update.image,
                update.outcome.as_str(),
                update.at
            );
        }
        for problem in health.problems_of(name.as_str()) {
            println!("  problem since {} (unix time): {}", problem.since, problem.detail);
        }
        if failing(name.as_str(), unit_state) {
            for line in journal_tail(&host, name, &managed.service) {
                println!("  | {line}");
            }
        }
    }
    if !health.outbox.is_empty() {
        println!("notifications waiting to be delivered: {}", health.outbox.len());
    }
    Ok(())
}

fn user_file(action: &str, home: &Path, dir: &str, name: &str) -> Result<(), String> {
    match action {
        "write" => {
            let mut text = Vec::new();
            std::io::stdin()
                .read_to_end(&mut text)
                .map_err(|e| format!("reading standard input: {e}"))?;
            userfile::write(home, dir, name, &text)
        }
        _ => userfile::remove(home, dir, name),
    }
}

fn augment(
    transforms: &Path,
    repo: Option<&Path>,
    paths: &[fleet::RepoPath],
    host: &HostIdentity,
    file: &Path,
) -> Result<(), String> {
    let absolute = std::path::absolute(file).map_err(at(file))?;
    let root = match repo {
        Some(repo) => std::path::absolute(repo).map_err(at(repo))?,
        None => absolute
            .ancestors()
            .skip(1)
            .find(|dir| dir.join(".git").exists())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                format!(
                    "{}: no .git above it, so the repo root is unknown; pass --repo DIR",
                    file.display()
                )
            })?,
    };
    let relative = absolute
        .strip_prefix(&root)
        .map_err(|_| format!("{} is not inside the repo {}", file.display(), root.display()))?;
    // Below the deepest of the host's paths that holds it: the layout rules start there.
    let base = paths
        .iter()
        .filter(|p| p.dir.is_empty() || relative.starts_with(&p.dir))
        .max_by_key(|p| p.dir.len())
        .ok_or_else(|| {
            let listed: Vec<String> = paths.iter().map(ToString::to_string).collect();
            format!("{} is in none of the paths {}", file.display(), listed.join(","))
        })?;
    let relative = relative.strip_prefix(&base.dir).unwrap_or(relative);
    let spec = SpecFile::locate(relative, file, host.label().as_ref()).map_err(|e| {
        match (repo, relative.ancestors().nth(2)) {
            // Found by .git, the root may be above the definitions (a monorepo, this project's
            // own deploy/containers): say how to name it.
            (None, Some(deeper)) if !deeper.as_os_str().is_empty() => format!(
                "{e}; if the definitions repo is the directory {}, pass --repo {}",
                root.join(deeper).display(),
                root.join(deeper).display()
            ),
            _ => e.to_string(),
        }
    })?;
    let text = read_regular_file(&absolute, MAX_FILE_BYTES)
        .and_then(|data| source_text(&file.display().to_string(), data))?;
    if !transforms.is_dir() {
        return Err(format!(
            "the transform directory {} does not exist (on a laptop: --transforms \
             butane/transforms in a tailpod checkout, or your own)",
            transforms.display()
        ));
    }
    let transforms = TransformSet::load(transforms).map_err(|e| e.to_string())?;
    let dir = absolute.parent().unwrap_or(&root);
    let pods = pods_in(dir).map_err(at(dir))?;
    let rendered = render(&spec, &text, &transforms, &pods).map_err(|e| e.to_string())?;
    print!("{rendered}");
    Ok(())
}

/// The pods defined in a repo directory (valid names only; an invalid one is reported when its
/// own file is rendered).
fn pods_in(dir: &Path) -> std::io::Result<Vec<PodName>> {
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_pod = path.extension().and_then(|e| e.to_str()).and_then(Kind::from_extension)
            == Some(Kind::Pod);
        if let (true, Some(stem)) = (is_pod, path.file_stem().and_then(|s| s.to_str())) {
            pods.extend(stem.parse::<PodName>().ok());
        }
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use log::{Level, Log, Metadata};

    fn shows(logger: &env_logger::Logger, target: &str, level: Level) -> bool {
        logger.enabled(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn rust_log_raises_quadsyncs_level_but_never_the_http_stacks() {
        for rust_log in ["trace", "debug", "reqwest=trace,hyper=trace,rustls=trace"] {
            let logger = super::logger(Some(rust_log));
            for noisy in super::QUIET_CRATES {
                assert!(!shows(&logger, noisy, Level::Debug), "{rust_log}: {noisy}");
                assert!(shows(&logger, noisy, Level::Warn), "{rust_log}: {noisy}");
            }
            let inner = "hyper::proto::h1::role";
            assert!(!shows(&logger, inner, Level::Trace), "{rust_log}: {inner}");
        }
        let logger = super::logger(Some("trace"));
        assert!(shows(&logger, "quadsync::repo", Level::Trace));
        let default = super::logger(None);
        assert!(shows(&default, "quadsync", Level::Info));
        assert!(!shows(&default, "quadsync", Level::Debug));
    }
}
