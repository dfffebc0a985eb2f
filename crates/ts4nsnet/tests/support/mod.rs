//! What the root tests and the benchmark share: a lab tailnet with a peer, test namespaces, and
//! ts4nsnet run in one as podman runs it. Included with `mod support;` (tests) or `#[path]`
//! (benches).
#![allow(dead_code)] // each includer uses a different part

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tailnet_lab::node::LabPeer;
use tailnet_lab::{AuthKey, Tailnet};

/// The peer's echo port (TCP and UDP; it also answers ping).
pub const ECHO_PORT: u16 = 7;
/// The peer's bulk-transfer port (`LabPeer::serve_bulk`).
pub const BULK_PORT: u16 = 9;

/// A lab tailnet on loopback, a reusable ephemeral key for more nodes, and a peer named `peer`
/// serving echo and bulk transfers.
pub struct Lab {
    pub rt: tokio::runtime::Runtime,
    pub net: Tailnet,
    pub key: String,
    pub url: String,
    pub peer: LabPeer,
}

impl Lab {
    pub fn start() -> Lab {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let net = rt.block_on(Tailnet::start(Ipv4Addr::LOCALHOST.into())).unwrap();
        let grants = AuthKey { reusable: true, ephemeral: true, tags: vec![] };
        let key = net.control.new_auth_key(grants);
        let url = net.control.url().to_owned();
        let mut peer = rt.block_on(LabPeer::join(&url, &key, "peer", true)).unwrap();
        rt.block_on(peer.serve_echo(ECHO_PORT)).unwrap();
        rt.block_on(peer.serve_bulk(BULK_PORT)).unwrap();
        Lab { rt, net, key, url, peer }
    }
}

pub fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if !root || !ip {
        tailnet_lab::skip(&format!("needs root and iproute2 (root: {root}, ip: {ip})"));
    }
    root && ip
}

pub struct Netns(pub String);

impl Netns {
    pub fn add(name: &str) -> Netns {
        let netns = Netns(name.to_owned());
        netns.delete();
        assert!(Command::new("ip").args(["netns", "add", name]).status().unwrap().success());
        netns
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.0]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
    /// Quietly: the test may have deleted it already.
    pub fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// ts4nsnet as podman runs it: `-c -r R -e E --netns-type=path PATH tap0`.
pub struct Ts4nsnet {
    pub child: Child,
    ready: OwnedFd,
    pub exit: Option<OwnedFd>,
    /// Its stderr goes to a file, not a pipe nobody drains while the test runs (a full pipe
    /// would stall the process and look like packet loss).
    log: PathBuf,
}

impl Drop for Ts4nsnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- ts4nsnet's log ---\n{log}--- end of ts4nsnet's log ---");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn start(netns: &Netns, control_url: &str, key: &str, hostname: &str) -> Ts4nsnet {
    start_with(netns, control_url, hostname, &[], &[("TS_AUTHKEY", key)])
}

/// [`start`] with more arguments before the namespace's, and `env` instead of the auth key.
pub fn start_with(
    netns: &Netns,
    control_url: &str,
    hostname: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Ts4nsnet {
    // Without close-on-exec, so the child inherits them under the same numbers.
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::empty()).unwrap();
    let (exit_r, exit_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let exit_r = nix::unistd::dup(&exit_r).unwrap(); // a copy without close-on-exec
    let log = std::env::temp_dir().join(format!("ts4nsnet-{}-{hostname}.log", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_ts4nsnet"))
        .args(["--mtu=65520", "--enable-sandbox"])
        .args(args)
        .args(["-c", "-r"])
        .arg(ready_w.as_raw_fd().to_string())
        .arg("-e")
        .arg(exit_r.as_raw_fd().to_string())
        .arg("--netns-type=path")
        .arg(netns.path())
        .arg("tap0")
        .envs(env.iter().copied())
        .env("TS_HOSTNAME", hostname)
        .env("TS_CONTROL_URL", control_url)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    drop((ready_w, exit_r));
    Ts4nsnet { child, ready: ready_r, exit: Some(exit_w), log }
}

impl Ts4nsnet {
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let mut ready = std::fs::File::from(self.ready.try_clone().unwrap());
        let mut byte = [0u8; 1];
        match ready.read(&mut byte) {
            Ok(1) => Ok(()),
            _ => Err(self.finish(Duration::from_secs(5)).1),
        }
    }
    /// Waits for the process to end; its exit status and stderr.
    pub fn finish(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = std::fs::read_to_string(&self.log).unwrap();
                return (status.code(), stderr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        (None, "still running".into())
    }
}
