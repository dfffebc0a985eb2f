//! The box's network services, on the host: `tailnet-lab serve` (control, DERP, and Tailscale's
//! API whose keys the control server accepts), a `tailnet-lab node` peer, and `git daemon`
//! serving the definitions repo, all reached from the box over a veth pair. They run detached,
//! so `cargo xtask box up` can leave them with the box; `stop` ends them.
//!
//! Addresses: the lab listens on [`LAB_IP`], added to the host's `lo` (so it exists before the
//! box's veth does, and no dummy-interface module is needed); each box has its `Layout::ip` on
//! its `host0`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tailpod_core::located::at;

use super::{Layout, run};

pub const LAB_IP: &str = "10.77.0.1";
/// The container in the box's repo that joins the tailnet, and the tag tailmint mints for it.
pub const TAILNET_CONTAINER: &str = "shop";
/// The pod in the box's repo that joins the tailnet as one node.
pub const TAILNET_POD: &str = "cafe";
/// The fleet's tailnet containers: one on every host, one that moves between hosts.
pub const FLEET_CONTAINERS: [&str; 2] = ["beacon", "mover"];

/// What the box's configuration and the test need to know about the running lab.
#[derive(Debug, Clone)]
pub struct Lab {
    pub control_url: String,
    pub api_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The lab API's Headscale side: its API key and user.
    pub headscale_key: String,
    pub headscale_user: String,
    /// A reusable key for the host's own nodes (the peer, probes).
    auth_key: String,
    binary: PathBuf,
}

fn pid_files(layout: &Layout) -> [PathBuf; 3] {
    ["lab-serve.pid", "lab-peer.pid", "git-daemon.pid"].map(|name| layout.work.join(name))
}

/// The definitions repo's URL, as the box fetches it.
pub fn repo_url() -> String {
    format!("git://{LAB_IP}/defs.git")
}

/// Starts the lab tailnet and the peer.
pub fn start(layout: &Layout) -> Result<Lab, String> {
    stop(layout);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--locked", "-q", "-p", "tailnet-lab"])
        .current_dir(crate::root())
        .status()
        .map_err(|e| format!("building tailnet-lab: {e}"))?;
    if !built.success() {
        return Err("building tailnet-lab failed".into());
    }
    let binary = crate::root().join("target/debug/tailnet-lab");
    run("ip", &["addr", "add", &format!("{LAB_IP}/32"), "dev", "lo"])?;

    let info = layout.work.join("lab-serve.out");
    let listen = format!("{LAB_IP}:0");
    let tags = [TAILNET_CONTAINER, TAILNET_POD].into_iter().chain(FLEET_CONTAINERS);
    let tag = tags.map(|name| format!("tag:{name}")).collect::<Vec<_>>().join(",");
    spawn(
        layout,
        &binary,
        &["serve", "--listen", &listen, "--api-listen", &listen, "--api-tags", &tag],
        &[],
        &info,
        &pid_files(layout)[0],
    )?;
    let text = wait_for_line(&info, "API client: ", Duration::from_secs(20))?;
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .ok_or(format!("tailnet-lab serve printed no {prefix:?}"))
    };
    let client = field("API client: ")?;
    let (client_id, client_secret) = client.split_once(' ').ok_or("no client secret")?;
    let headscale = field("Headscale API key: ")?;
    let (headscale_key, headscale_user) = headscale
        .strip_suffix(')')
        .and_then(|h| h.split_once(" (user "))
        .ok_or("no Headscale user")?;
    let lab = Lab {
        control_url: field("control URL: ")?,
        api_url: field("API URL: ")?,
        client_id: client_id.to_owned(),
        client_secret: client_secret.to_owned(),
        headscale_key: headscale_key.to_owned(),
        headscale_user: headscale_user.to_owned(),
        auth_key: field("auth key: ")?,
        binary,
    };
    let peer_out = layout.work.join("lab-peer.out");
    spawn(
        layout,
        &lab.binary,
        &["node", "--control-url", &lab.control_url, "--hostname", "peer", "--port", "7"],
        &[("TS_AUTHKEY", &lab.auth_key)],
        &peer_out,
        &pid_files(layout)[1],
    )?;
    wait_for_line(&peer_out, "echo on port", Duration::from_secs(30))?;

    start_git_daemon(layout)?;
    Ok(lab)
}

/// A real git server: git daemon, read-only, for the bare repos in the work dir.
pub fn start_git_daemon(layout: &Layout) -> Result<(), String> {
    let base = format!("--base-path={}", layout.work.display());
    let git_out = layout.work.join("git-daemon.out");
    let listen = format!("--listen={LAB_IP}");
    let args = ["daemon", "--export-all", "--reuseaddr", &listen, &base, "--informative-errors"];
    spawn(layout, Path::new("git"), &args, &[], &git_out, &pid_files(layout)[2])
}

/// Makes the lab's Tailscale API fail for a while (500 and 429 for the next token and key
/// requests; `tailnet-lab serve` does it on SIGUSR1).
pub fn api_outage(layout: &Layout) -> Result<(), String> {
    let pid = std::fs::read_to_string(&pid_files(layout)[0]).map_err(|e| format!("lab: {e}"))?;
    run("kill", &["-USR1", pid.trim()])?;
    wait_for_line(&layout.work.join("lab-serve.out"), "API outage:", Duration::from_secs(10))
        .map(drop)
}

/// Restarts the lab's control server and DERP relay under the running nodes (SIGHUP to
/// `tailnet-lab serve`: every connection cut, the same ports again after a few seconds, the
/// same state); returns once they are back.
pub fn control_and_derp_outage(layout: &Layout) -> Result<(), String> {
    let pid = std::fs::read_to_string(&pid_files(layout)[0]).map_err(|e| format!("lab: {e}"))?;
    run("kill", &["-HUP", pid.trim()])?;
    let out = layout.work.join("lab-serve.out");
    wait_for_line(&out, "control and DERP outage: back up", Duration::from_secs(60)).map(drop)
}

/// Stops the git server (a fault the box must ride out).
pub fn stop_git_daemon(layout: &Layout) {
    kill(&pid_files(layout)[2]);
}

/// Ends the process a pid file names, and forgets it.
fn kill(pid_file: &Path) {
    if let Ok(pid) = std::fs::read_to_string(pid_file) {
        let _ = run("kill", &[pid.trim()]);
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Runs `binary ARGS` detached, stdout to `out`, stderr beside it, its PID in `pid_file`.
fn spawn(
    layout: &Layout,
    binary: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    out: &Path,
    pid_file: &Path,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let file = |path: &Path| std::fs::File::create(path).map_err(at(path));
    let child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file(out)?)
        .stderr(file(&out.with_extension("log"))?)
        .current_dir(&layout.work)
        .process_group(0)
        .spawn()
        .map_err(at(binary))?;
    std::fs::write(pid_file, child.id().to_string()).map_err(|e| e.to_string())
}

fn wait_for_line(path: &Path, marker: &str, limit: Duration) -> Result<String, String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(marker) {
            return Ok(text);
        }
        if started.elapsed() > limit {
            let log = std::fs::read_to_string(path.with_extension("log")).unwrap_or_default();
            return Err(format!("{} did not say {marker:?}:\n{text}{log}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Joins the box to the lab's network as soon as nspawn makes its veth, while it boots, as a
/// VM's network would be there at boot: the host's end goes up and routes to the box (the box's
/// `box-network.service` gives `host0` its address). Join the thread once the box is up.
pub fn connect_while_booting(layout: &Layout) -> std::thread::JoinHandle<Result<(), String>> {
    // nspawn's host end of the box's veth: `ve-` and the machine's name.
    let veth = format!("ve-{}", layout.name);
    let route = format!("{}/32", layout.ip);
    std::thread::spawn(move || {
        let started = Instant::now();
        while run("ip", &["link", "show", &veth]).is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("{veth} did not appear within 60s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        run("ip", &["link", "set", &veth, "up"])?;
        run("ip", &["route", "replace", &route, "dev", &veth]).map(drop)
    })
}

impl Lab {
    /// A reusable key of the lab's, for test nodes that do not mint their own.
    pub fn auth_key(&self) -> &str {
        &self.auth_key
    }

    /// From a fresh node on the host: sends `request` to `to` (NAME:PORT or IP:PORT) over the
    /// tailnet and returns the answer.
    pub fn probe(&self, to: &str, request: &str) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .args(["probe", "--control-url", &self.control_url, "--hostname", "probe"])
            .args(["--to", to, "--send", request])
            .env("TS_AUTHKEY", &self.auth_key)
            .output()
            .map_err(|e| format!("tailnet-lab probe: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("probe of {to}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

/// Ends the lab's processes and takes the lab's address off `lo`; quiet when nothing runs.
pub fn stop(layout: &Layout) {
    for pid_file in pid_files(layout) {
        kill(&pid_file);
    }
    let lab = format!("{LAB_IP}/32");
    let _ =
        Command::new("ip").args(["addr", "del", &lab, "dev", "lo"]).stderr(Stdio::null()).status();
}
