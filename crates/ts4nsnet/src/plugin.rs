//! The netavark plugin front end: `info`, `create`, `setup NETNS`, `teardown NETNS`.
//!
//! Podman 5 deprecates `--network-cmd-path` and podman 6 drops slirp4netns; netavark plugins are
//! the way on. netavark runs the plugin once per call with JSON on stdin and expects JSON (or
//! `{"error": …}`) on stdout, so `setup` cannot hold the node itself: it starts this same binary
//! in its slirp mode as a detached daemon (`-c -r FD --status-file … NETNS IFNAME`), waits for
//! its ready byte, and reports the addresses from the status file. `teardown` stops it.
//!
//! Settings, most specific last wins: the network's options (`podman network create -o`), the
//! container's options, then the `TS_*` environment. Auth keys are taken only from
//! `TS_AUTHKEY`: options show up in `podman inspect`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tailpod_core::located::at;
use tailpod_core::names::Hostname;

use crate::config::{self, NodeConfig};
use crate::dns::QUAD100;
use crate::run::Status;

/// The commands netavark runs a plugin with.
pub const VERBS: [&str; 4] = ["info", "create", "setup", "teardown"];

/// The plugin API version this front end speaks.
const API_VERSION: &str = "1.0.0";

/// Options a network or container may set, and the variable each stands for.
const OPTIONS: [(&str, &str); 7] = [
    ("hostname", "TS_HOSTNAME"),
    ("tags", "TS_TAGS"),
    ("control_url", "TS_CONTROL_URL"),
    ("state_dir", "TS_STATE_DIR"),
    ("egress", "TS_EGRESS"),
    ("exit_node", "TS_EXIT_NODE"),
    ("exit_node_allow_lan", "TS_EXIT_NODE_ALLOW_LAN"),
];

/// How long `setup` waits for the node to join before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `teardown` lets the daemon leave the tailnet before killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What netavark passes to `setup` and `teardown` (only the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    pub container_id: String,
    pub container_name: String,
    pub network: Network,
    pub network_options: PerContainer,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Network {
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PerContainer {
    pub interface_name: String,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

/// netavark's StatusBlock, as `setup` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<String>,
    pub interfaces: BTreeMap<String, NetInterface>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Vec<NetAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAddress {
    pub ipnet: String,
}

/// Runs one plugin command; what to print on stdout, or the error to report as
/// `{"error": …}`. `env` reads the environment (with the auth key already taken out of it).
pub fn main(
    verb: &str,
    args: &[String],
    stdin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match (verb, args) {
        ("info", []) => Ok(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "api_version": API_VERSION,
        })
        .to_string()),
        ("create", []) => create(stdin),
        ("setup", [netns]) => {
            let status = setup(Path::new(netns), &parse_request(stdin)?, env)?;
            serde_json::to_string(&status).map_err(|e| e.to_string())
        }
        ("teardown", [netns]) => {
            let _ = netns; // the daemon ends with its namespace anyway; the ID names it
            teardown(&parse_request(stdin)?, env).map(|()| String::new())
        }
        (verb, _) => Err(format!(
            "usage: ts4nsnet {verb}{}",
            if matches!(verb, "setup" | "teardown") { " NETNS" } else { "" }
        )),
    }
}

/// `create`: checks the network's options (names and values, as `setup` will) and hands the
/// network back unchanged, so a bad value fails `podman network create`, not every start.
fn create(stdin: &str) -> Result<String, String> {
    let network: serde_json::Value =
        serde_json::from_str(stdin).map_err(|e| format!("the network on stdin: {e}"))?;
    let options: Option<BTreeMap<String, String>> =
        serde_json::from_value(network.get("options").cloned().unwrap_or_default())
            .map_err(|e| format!("the network's options: {e}"))?;
    check_options("network", options.as_ref())?;
    Ok(network.to_string())
}

pub fn parse_request(stdin: &str) -> Result<Request, String> {
    let request: Request =
        serde_json::from_str(stdin).map_err(|e| format!("the request on stdin: {e}"))?;
    let id = &request.container_id;
    // It names a directory: nothing but what podman's IDs are made of.
    if !(12..=64).contains(&id.len()) || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!("container ID {id:?} is not 12 to 64 lowercase hex digits"));
    }
    Ok(request)
}

/// Refuses unknown options and bad values, each value by the rule its `TS_*` variable follows.
fn check_options(whose: &str, options: Option<&BTreeMap<String, String>>) -> Result<(), String> {
    for (key, value) in options.into_iter().flatten() {
        if matches!(key.as_str(), "authkey" | "auth_key" | "ts_authkey") {
            return Err(format!(
                "{whose} option {key}: auth keys belong in TS_AUTHKEY, not in options (podman \
                 inspect shows options to anyone who can list containers)"
            ));
        }
        let Some((_, var)) = OPTIONS.iter().find(|(name, _)| name == key) else {
            let known: Vec<_> = OPTIONS.iter().map(|(name, _)| *name).collect();
            return Err(format!("{whose} option {key} is not known (known: {})", known.join(", ")));
        };
        config::check_value(var, value).map_err(|e| format!("{whose} option {key}: {e}"))?;
    }
    Ok(())
}

/// The node's settings as `TS_*` variables: network options, then container options, then the
/// environment; the hostname falls back to one derived from the container's name (podman's
/// generated names, `happy_turing`, are not hostnames as they stand).
pub fn settings(
    request: &Request,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<&'static str, String>, String> {
    check_options("network", request.network.options.as_ref())?;
    check_options("container", request.network_options.options.as_ref())?;
    let mut vars = HashMap::new();
    for layer in [&request.network.options, &request.network_options.options] {
        for (key, value) in layer.iter().flatten() {
            let var = OPTIONS.iter().find(|(name, _)| name == key).map(|(_, var)| *var);
            vars.extend(var.map(|var| (var, value.clone())));
        }
    }
    for var in OPTIONS.iter().map(|(_, var)| *var).chain(["TS_AUTHKEY"]) {
        if let Some(value) = env(var).filter(|v| !v.trim().is_empty()) {
            vars.insert(var, value);
        }
    }
    if vars.get("TS_HOSTNAME").is_none_or(|h| h.trim().is_empty()) {
        let hostname = Hostname::derive_from(&request.container_name)
            .map_err(|e| format!("container {e}; set the hostname option"))?;
        vars.insert("TS_HOSTNAME", hostname.to_string());
    }
    // Not an option, but refused (with the reason) if set in the environment.
    let refused = "TS_TLS_CERTS_DIR";
    vars.extend(env(refused).map(|value| (refused, value)));
    NodeConfig::from_env(|var| vars.get(var).cloned())?;
    Ok(vars)
}

/// Where this container's daemon keeps its bookkeeping: under `$XDG_RUNTIME_DIR` for rootless
/// podman, else `/run`.
fn state_dir(container_id: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let base = env("XDG_RUNTIME_DIR")
        .filter(|dir| Path::new(dir).is_absolute())
        .map_or_else(|| PathBuf::from("/run"), PathBuf::from);
    base.join("ts4nsnet").join(container_id)
}

/// The daemon a `setup` left running, recorded so `teardown` never signals a reused PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Daemon {
    pid: i32,
    /// Field 22 of `/proc/PID/stat`: with the PID, it names one process for good.
    start_time: u64,
}

impl Daemon {
    const FILE: &str = "daemon.json";

    fn of(pid: i32) -> Option<Daemon> {
        Some(Daemon { pid, start_time: start_time(pid)? })
    }

    fn is_running(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    fn gone_within(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.is_running()
    }

    /// SIGTERM, a grace period to leave the tailnet, then SIGKILL.
    fn stop(&self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.pid);
        if !self.is_running() {
            return;
        }
        let _ = kill(pid, Signal::SIGTERM);
        if !self.gone_within(STOP_GRACE) {
            log::warn!("ts4nsnet daemon {} ignored SIGTERM; killing it", self.pid);
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// A process's start time, `None` once it is gone (or only a zombie).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields after the command name start at 3 (the state); the start time is field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

fn setup(
    netns: &Path,
    request: &Request,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StatusBlock, String> {
    let vars = settings(request, env)?;
    let interface = &request.network_options.interface_name;
    let dir = state_dir(&request.container_id, env);
    if let Ok(old) = read_daemon(&dir) {
        old.stop();
    }
    std::fs::create_dir_all(&dir).map_err(at(&dir))?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(&dir, mode).map_err(at(&dir))?;
    let status_file = dir.join("status.json");
    let _ = std::fs::remove_file(&status_file);
    let log_path = dir.join("ts4nsnet.log");
    let log = std::fs::File::create(&log_path).map_err(at(&log_path))?;

    // The write end stays open across exec (the daemon's -r); the read end does not.
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::empty()).map_err(|e| format!("pipe: {e}"))?;
    nix::fcntl::fcntl(&ready_r, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("pipe: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding ts4nsnet itself: {e}"))?;
    let mut daemon = Command::new(exe);
    daemon
        // The host's loopback stays closed to the container, as podman's default for
        // slirp4netns: a plugin network has no allow_host_loopback to open it.
        .args(["-c", "--enable-ipv6", "--disable-host-loopback", "--netns-type=path", "-r"])
        .arg(ready_w.as_raw_fd().to_string())
        .arg("--status-file")
        .arg(&status_file)
        .arg(netns)
        .arg(interface)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Out of netavark's process group, so signals meant for it do not reach the daemon.
        .process_group(0);
    for var in OPTIONS.iter().map(|(_, var)| *var).chain(["TS_AUTHKEY"]) {
        match vars.get(var) {
            Some(value) => daemon.env(var, value),
            None => daemon.env_remove(var),
        };
    }
    let child = daemon.spawn().map_err(|e| format!("starting the ts4nsnet daemon: {e}"))?;
    drop(ready_w);
    let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
    if let Some(record) = Daemon::of(pid) {
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(Daemon::FILE), json).map_err(at(&dir))?;
    }

    let started = wait_for_byte(&ready_r, READY_TIMEOUT);
    let status = started.and_then(|()| {
        let text = std::fs::read_to_string(&status_file).map_err(at(&status_file))?;
        serde_json::from_str::<Status>(&text).map_err(at(&status_file))
    });
    match status {
        Ok(status) => {
            log::info!("{} is on the tailnet as {} (daemon {pid})", status.hostname, status.ipv4);
            Ok(status_block(&status))
        }
        Err(e) => {
            // A daemon that failed is on its way out, writing why: let it finish first.
            if let Some(record) = Daemon::of(pid)
                && !record.gone_within(Duration::from_secs(5))
            {
                record.stop();
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            // Its own last word (`ts4nsnet: …`) says why; library warnings around it do not.
            let why = log.lines().rev().find_map(|l| l.strip_prefix("ts4nsnet: "));
            let why = why.or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()));
            Err(format!(
                "the ts4nsnet daemon did not come up ({e}): {} (log: {})",
                why.unwrap_or("it logged nothing"),
                log_path.display()
            ))
        }
    }
}

fn wait_for_byte(fd: &std::os::fd::OwnedFd, timeout: Duration) -> Result<(), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let millis = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, millis) {
        Ok(0) => return Err(format!("not ready within {} s", timeout.as_secs())),
        Ok(_) => {}
        Err(e) => return Err(format!("waiting for the daemon: {e}")),
    }
    let mut byte = [0u8; 1];
    match std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?).read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err("it exited".into()),
    }
}

pub fn status_block(status: &Status) -> StatusBlock {
    let mut subnets = vec![NetAddress { ipnet: format!("{}/32", status.ipv4) }];
    subnets.extend(status.ipv6.map(|ipv6| NetAddress { ipnet: format!("{ipv6}/128") }));
    let [a, b, c, d] = status.ipv4.octets();
    // A TUN has no hardware address; podman wants one, so a locally administered one made
    // from the node's address (unique within the tailnet).
    let mac_address = format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
    StatusBlock {
        dns_search_domains: status.tailnet.iter().cloned().collect(),
        dns_server_ips: vec![QUAD100.to_string()],
        interfaces: BTreeMap::from([(
            status.interface.clone(),
            NetInterface { mac_address, subnets },
        )]),
    }
}

fn read_daemon(dir: &Path) -> Result<Daemon, String> {
    let path = dir.join(Daemon::FILE);
    let text = std::fs::read_to_string(&path).map_err(at(&path))?;
    serde_json::from_str(&text).map_err(at(&path))
}

/// Stops the container's daemon and forgets it; a second teardown finds nothing and succeeds.
fn teardown(request: &Request, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    let dir = state_dir(&request.container_id, env);
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(daemon) = read_daemon(&dir) {
        daemon.stop();
    }
    std::fs::remove_dir_all(&dir).map_err(at(&dir))
}

/// Writes a plugin answer the way netavark reads it: the result, or `{"error": …}` and exit 1.
pub fn respond(result: Result<String, String>) -> std::process::ExitCode {
    let mut stdout = std::io::stdout().lock();
    match result {
        Ok(out) => {
            let _ = stdout.write_all(out.as_bytes());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // Only here: netavark passes this on, and shows our stderr as well.
            let _ = stdout.write_all(serde_json::json!({ "error": e }).to_string().as_bytes());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUP: &str = r#"{
        "container_id": "4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
        "container_name": "web",
        "port_mappings": [],
        "network": {"name": "tailnet", "driver": "ts4nsnet", "network_interface": "",
                    "subnets": [], "ipv6_enabled": false, "internal": false, "dns_enabled": false,
                    "options": {"control_url": "https://hs.example.com", "tags": "tag:web"}},
        "network_options": {"static_ips": [], "interface_name": "eth0",
                            "options": {"hostname": "shop"}}
    }"#;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |key| vars.get(key).cloned()
    }

    #[test]
    fn info_names_the_api_version() {
        let out = main("info", &[], "", &env(&[])).unwrap();
        let info: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(info["api_version"], "1.0.0");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn create_hands_the_network_back_and_checks_its_options() {
        let network = r#"{"name":"tailnet","driver":"ts4nsnet","options":{"tags":"tag:web"}}"#;
        let out = main("create", &[], network, &env(&[])).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            serde_json::from_str::<serde_json::Value>(network).unwrap()
        );
        let typo = r#"{"name":"tailnet","options":{"hostnme":"x"}}"#;
        let e = main("create", &[], typo, &env(&[])).unwrap_err();
        assert!(e.contains("network option hostnme is not known"), "{e}");
        let secret = r#"{"name":"tailnet","options":{"authkey":"tskey-auth-x"}}"#;
        let e = main("create", &[], secret, &env(&[])).unwrap_err();
        assert!(e.contains("TS_AUTHKEY") && !e.contains("tskey-auth-x"), "{e}");
    }

    #[test]
    fn create_checks_option_values_as_the_environment_is_checked() {
        let create = |options: &str| {
            let network = format!(r#"{{"name":"tailnet","options":{options}}}"#);
            main("create", &[], &network, &env(&[])).unwrap_err()
        };
        assert_eq!(
            create(r#"{"hostname":"Bad_Name"}"#),
            r#"network option hostname: hostname "Bad_Name" may hold only letters, digits and '-'"#
        );
        assert_eq!(
            create(r#"{"hostname":"web-"}"#),
            r#"network option hostname: hostname "web-" ends with '-'"#
        );
        assert_eq!(
            create(r#"{"tags":"tag:web,web"}"#),
            r#"network option tags: tag "web" is not valid (tag:[a-z0-9-]+)"#
        );
        assert_eq!(
            create(r#"{"control_url":"ftp://hs.example.com"}"#),
            r#"network option control_url: "ftp://hs.example.com" is not an http(s) URL"#
        );
        assert_eq!(
            create(r#"{"state_dir":"relative/dir"}"#),
            "network option state_dir: relative/dir is not an absolute path"
        );
        // The same values are refused per container, under the option's name.
        let mut request = parse_request(SETUP).unwrap();
        request.network_options.options =
            Some(BTreeMap::from([("tags".to_owned(), "tag:Web".to_owned())]));
        let e = settings(&request, &env(&[("TS_AUTHKEY", "k")])).unwrap_err();
        assert_eq!(e, r#"container option tags: tag "tag:Web" is not valid (tag:[a-z0-9-]+)"#);
    }

    #[test]
    fn podman_generated_names_give_valid_hostnames() {
        let mut request = parse_request(SETUP).unwrap();
        request.network_options.options = None;
        for (name, hostname) in [
            ("happy_turing", "happy-turing"),
            ("My.App", "my-app"),
            (&format!("{}_x", "n".repeat(63)), &"n".repeat(63)),
        ] {
            request.container_name = name.to_owned();
            let vars = settings(&request, &env(&[("TS_AUTHKEY", "k")])).unwrap();
            assert_eq!(vars["TS_HOSTNAME"], hostname);
        }
        request.container_name = "__".into();
        let e = settings(&request, &env(&[("TS_AUTHKEY", "k")])).unwrap_err();
        assert_eq!(
            e,
            r#"container name "__" has no letter or digit to make a hostname of; set the hostname option"#
        );
    }

    #[test]
    fn container_options_beat_network_options_and_the_environment_beats_both() {
        let request = parse_request(SETUP).unwrap();
        let vars = settings(&request, &env(&[("TS_AUTHKEY", "tskey-auth-k")])).unwrap();
        assert_eq!(vars["TS_HOSTNAME"], "shop");
        assert_eq!(vars["TS_CONTROL_URL"], "https://hs.example.com");
        assert_eq!(vars["TS_TAGS"], "tag:web");
        assert_eq!(vars["TS_AUTHKEY"], "tskey-auth-k");
        let vars = settings(
            &request,
            &env(&[("TS_AUTHKEY", "k"), ("TS_HOSTNAME", "api"), ("TS_TAGS", "tag:api")]),
        )
        .unwrap();
        assert_eq!((vars["TS_HOSTNAME"].as_str(), vars["TS_TAGS"].as_str()), ("api", "tag:api"));
    }

    #[test]
    fn the_hostname_falls_back_to_the_container_name() {
        let mut request = parse_request(SETUP).unwrap();
        request.network_options.options = None;
        let vars = settings(&request, &env(&[("TS_AUTHKEY", "k")])).unwrap();
        assert_eq!(vars["TS_HOSTNAME"], "web");
    }

    #[test]
    fn bad_settings_are_refused_before_anything_starts() {
        let request = parse_request(SETUP).unwrap();
        let e = settings(&request, &env(&[])).unwrap_err();
        assert!(e.contains("TS_AUTHKEY is not set"), "{e}");
        let e = settings(&request, &env(&[("TS_AUTHKEY", "k"), ("TS_TLS_CERTS_DIR", "/c")]))
            .unwrap_err();
        assert!(e.contains("TLS certificates are not supported"), "{e}");
        let e = settings(&request, &env(&[("TS_AUTHKEY", "k"), ("TS_HOSTNAME", "Bad_Name")]))
            .unwrap_err();
        assert!(e.starts_with("TS_HOSTNAME"), "{e}");
    }

    #[test]
    fn container_ids_cannot_name_other_directories() {
        for id in ["../../etc", "ABCDEF012345", "abc", &"a".repeat(65)] {
            let request = SETUP
                .replace("4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a", id);
            assert!(parse_request(&request).is_err(), "{id}");
        }
        assert!(parse_request(SETUP).is_ok());
    }

    #[test]
    fn state_lives_under_the_runtime_dir_when_rootless() {
        let id = "0123456789ab";
        let rootless = state_dir(id, &env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]));
        assert_eq!(rootless, Path::new("/run/user/1000/ts4nsnet/0123456789ab"));
        assert_eq!(state_dir(id, &env(&[])), Path::new("/run/ts4nsnet/0123456789ab"));
    }

    #[test]
    fn the_status_block_carries_both_addresses_and_quad_100() {
        let status = Status {
            hostname: "web".into(),
            tailnet: Some("example.ts.net".into()),
            ipv4: "100.64.0.7".parse().unwrap(),
            ipv6: Some("fd7a:115c:a1e0::7".parse().unwrap()),
            interface: "eth0".into(),
        };
        let json = serde_json::to_value(status_block(&status)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "dns_search_domains": ["example.ts.net"],
                "dns_server_ips": ["100.100.100.100"],
                "interfaces": {"eth0": {
                    "mac_address": "02:00:64:40:00:07",
                    "subnets": [{"ipnet": "100.64.0.7/32"}, {"ipnet": "fd7a:115c:a1e0::7/128"}]
                }}
            })
        );
    }

    #[test]
    fn a_process_start_time_identifies_it() {
        let me = std::process::id() as i32;
        let daemon = Daemon::of(me).unwrap();
        assert!(daemon.is_running());
        assert!(!Daemon { pid: me, start_time: daemon.start_time + 1 }.is_running());
    }

    #[test]
    fn unknown_forms_print_usage() {
        let e = main("setup", &[], "", &env(&[])).unwrap_err();
        assert_eq!(e, "usage: ts4nsnet setup NETNS");
    }
}
