//! The comparison anchor and the shared measuring harness.
//!
//! - [`between_namespaces`]: kernel TCP between two network namespaces (bulk both ways and
//!   one-byte round trips), whatever joins them.
//! - [`wireguard_go`]: plain userspace WireGuard (Debian's `wireguard-go`), TUN to TUN, in the
//!   same topology as two ts4nsnet containers: each process in the bench's own namespace with
//!   its UDP socket on loopback, its TUN moved into a fresh namespace of its own (wireguard-go
//!   keeps the fd), MTU 1280.
//! - [`summary_line`]: the one-line summary the issue fixes the form of.

use std::io::{ErrorKind, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{Bulk, Netns, STALL, between_namespaces};

/// Bytes the anchor moves in each direction.
pub(crate) const ANCHOR_BYTES: u64 = 256 << 20;

/// What [`wireguard_go`] says when it cannot run.
pub(crate) const NOT_INSTALLED: &str =
    "wireguard-go not installed (apt-get install wireguard-go wireguard-tools)";

/// Tunnel addresses of the two sides.
const WG_ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 201, 0, 1), Ipv4Addr::new(10, 201, 0, 2)];
/// The tunnel MTU, as ts4nsnet's.
const WG_MTU: &str = "1280";

/// wireguard-go TUN to TUN between two fresh namespaces (see the module docs): `bytes` each
/// way from the first side's namespace to a server in the second's.
pub(crate) fn wireguard_go(bytes: u64) -> Result<Bulk, String> {
    let installed = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !installed("wireguard-go") || !installed("wg") {
        return Err(NOT_INSTALLED.to_owned());
    }
    let pair = WgPair::start()?;
    between_namespaces(&pair.sides[0].netns, &pair.sides[1].netns, WG_ADDRS[1].into(), bytes)
}

/// One side: a wireguard-go process and the namespace its TUN lives in.
struct WgSide {
    iface: String,
    child: Child,
    log: PathBuf,
    netns: Netns,
}

/// Both sides and their private directory (keys, logs). Dropping it stops and reaps the
/// processes, then deletes the namespaces and the directory, on every exit path.
struct WgPair {
    dir: PathBuf,
    sides: Vec<WgSide>,
    /// The host's `net.core.rmem_default` while raised (see [`WgPair::raise_rmem_default`]).
    rmem_default: Option<String>,
}

/// The host's default socket receive buffer.
const RMEM_DEFAULT: &str = "/proc/sys/net/core/rmem_default";

impl Drop for WgPair {
    fn drop(&mut self) {
        self.restore_rmem_default();
        for side in &mut self.sides {
            // SIGTERM lets wireguard-go remove its UAPI socket; SIGKILL if it does not go.
            let pid = nix::unistd::Pid::from_raw(side.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(side.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = side.child.kill();
            let _ = side.child.wait();
            let _ = std::fs::remove_file(uapi_socket(&side.iface));
        }
        // The sides' `Netns` delete their namespaces as the fields drop, after this.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn uapi_socket(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let shown = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", shown()))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).map_err(|e| format!("{}: {e}", shown()))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{}: {e}", shown()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{} failed ({}): {}", shown(), out.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl WgPair {
    fn start() -> Result<WgPair, String> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("ts4nsnet-wggo-{pid}"));
        let _ = std::fs::remove_dir_all(&dir); // a leftover of an earlier run with this pid
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut pair = WgPair { dir, sides: Vec::new(), rmem_default: None };
        pair.raise_rmem_default();

        let mut keys = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let iface = format!("wggo{pid}{name}");
            let netns = Netns::add(&format!("ts4nsnet-wggo-{pid}-{name}"));
            let log = pair.dir.join(format!("{name}.log"));
            let _ = std::fs::remove_file(uapi_socket(&iface));
            let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let child = Command::new("wireguard-go")
                .arg(&iface)
                .env("WG_PROCESS_FOREGROUND", "1")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
                .stderr(log_file)
                .spawn()
                .map_err(|e| format!("wireguard-go: {e}"))?;
            pair.sides.push(WgSide { iface, child, log, netns });
            pair.wait_for_uapi(i)?;

            let private = run("wg", &["genkey"], None)?;
            let public = run("wg", &["pubkey"], Some(&private))?;
            let key_file = pair.dir.join(format!("{name}.key"));
            write_private(&key_file, &private)?;
            let key_path = key_file.to_str().unwrap();
            let iface = pair.sides[i].iface.as_str();
            run("wg", &["set", iface, "private-key", key_path, "listen-port", "0"], None)?;
            let port = run("wg", &["show", iface, "listen-port"], None)?;
            keys.push((public, port));
        }
        for (i, side) in pair.sides.iter().enumerate() {
            let other = 1 - i;
            let (public, port) = &keys[other];
            let allowed = format!("{}/32", WG_ADDRS[other]);
            let endpoint = format!("127.0.0.1:{port}");
            let iface = side.iface.as_str();
            run(
                "wg",
                &["set", iface, "peer", public, "allowed-ips", &allowed, "endpoint", &endpoint],
                None,
            )?;
            let ns = side.netns.0.as_str();
            let addr = format!("{}/24", WG_ADDRS[i]);
            run("ip", &["link", "set", iface, "netns", ns], None)?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"], None)?;
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", iface], None)?;
            run("ip", &["-n", ns, "link", "set", iface, "mtu", WG_MTU, "up"], None)?;
        }
        pair.wait_for_tunnel()?;
        pair.restore_rmem_default();
        Ok(pair)
    }

    /// wireguard-go 0.0.20220316 (Debian 12) leaves its UDP sockets at the host's default
    /// receive buffer (208 KiB), which overflows on loopback and loses about one datagram in
    /// eight, so TCP inside the tunnel backs off; newer wireguard-go asks for 7 MiB itself.
    /// So while the processes open their sockets (until the tunnel carries traffic), the default
    /// is raised to the host's `rmem_max`, then put back (also by `Drop`, on every exit path).
    fn raise_rmem_default(&mut self) {
        let read = |path: &str| std::fs::read_to_string(path).map(|v| v.trim().to_owned());
        let (Ok(default), Ok(max)) = (read(RMEM_DEFAULT), read("/proc/sys/net/core/rmem_max"))
        else {
            return;
        };
        let bigger = max.parse::<u64>().unwrap_or(0) > default.parse::<u64>().unwrap_or(u64::MAX);
        if bigger && std::fs::write(RMEM_DEFAULT, &max).is_ok() {
            self.rmem_default = Some(default);
        }
    }

    fn restore_rmem_default(&mut self) {
        if let Some(default) = self.rmem_default.take() {
            let _ = std::fs::write(RMEM_DEFAULT, default);
        }
    }

    /// Until a TCP SYN from the first side gets its refusal back from the second (wireguard-go
    /// notices an interface is up by polling it once a second).
    fn wait_for_tunnel(&self) -> Result<(), String> {
        let to = SocketAddr::new(WG_ADDRS[1].into(), 1);
        self.sides[0].netns.run(|| {
            let deadline = Instant::now() + STALL;
            loop {
                match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(()),
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("the wireguard-go tunnel carries nothing: {e}"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })
    }

    /// Until side `i`'s UAPI socket exists (it is created after the TUN).
    fn wait_for_uapi(&mut self, i: usize) -> Result<(), String> {
        let side = &mut self.sides[i];
        let deadline = Instant::now() + Duration::from_secs(5);
        while !uapi_socket(&side.iface).exists() {
            let exited = side.child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&side.log).unwrap_or_default();
                return Err(format!(
                    "wireguard-go {} did not start ({}): {}",
                    side.iface,
                    exited.map_or("no UAPI socket after 5 s".to_owned(), |s| s.to_string()),
                    log.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// A new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Upload and download, MB/s; `None` where a figure is missing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rates {
    pub up_mb_s: Option<f64>,
    pub down_mb_s: Option<f64>,
}

impl From<&Bulk> for Rates {
    fn from(bulk: &Bulk) -> Rates {
        Rates { up_mb_s: Some(bulk.upload_mb_s), down_mb_s: Some(bulk.download_mb_s) }
    }
}

/// Everything [`summary_line`] prints; `None` (or a non-finite value) prints as `nan`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    pub tun2tun: Rates,
    pub tun2tun_rtt_us: Option<f64>,
    pub bare: Rates,
    pub wggo: Rates,
    pub rss_idle_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
}

/// `ts4nsnet-bench: tun2tun up=… down=… rtt_us=… | bare up=… down=… | wggo up=… down=… |
/// rss_mib=<idle> <peak>`: MB/s and MiB with one decimal, µs whole.
pub(crate) fn summary_line(s: &Summary) -> String {
    let figure = |value: Option<f64>, decimals: usize| match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "nan".to_owned(),
    };
    let rates = |r: &Rates| format!("up={} down={}", figure(r.up_mb_s, 1), figure(r.down_mb_s, 1));
    format!(
        "ts4nsnet-bench: tun2tun {} rtt_us={} | bare {} | wggo {} | rss_mib={} {}",
        rates(&s.tun2tun),
        figure(s.tun2tun_rtt_us, 0),
        rates(&s.bare),
        rates(&s.wggo),
        figure(s.rss_idle_mib, 1),
        figure(s.rss_peak_mib, 1),
    )
}

/// The bench has no test harness, so [`summary_line`]'s form is checked here, at each run.
fn check_summary_line() {
    let wggo = Bulk { upload_mb_s: 118.46, download_mb_s: 121.04, rtt_median_us: 90.0 };
    let summary = Summary {
        tun2tun: Rates { up_mb_s: Some(95.44), down_mb_s: None },
        tun2tun_rtt_us: Some(412.6),
        bare: Rates { up_mb_s: Some(f64::NAN), down_mb_s: Some(7.0) },
        wggo: Rates::from(&wggo),
        rss_idle_mib: Some(30.04),
        rss_peak_mib: Some(41.96),
    };
    assert_eq!(
        summary_line(&summary),
        "ts4nsnet-bench: tun2tun up=95.4 down=nan rtt_us=413 | bare up=nan down=7.0 \
         | wggo up=118.5 down=121.0 | rss_mib=30.0 42.0"
    );
    assert_eq!(
        summary_line(&Summary::default()),
        "ts4nsnet-bench: tun2tun up=nan down=nan rtt_us=nan | bare up=nan down=nan \
         | wggo up=nan down=nan | rss_mib=nan nan"
    );
}

/// The anchor case of `main`: [`wireguard_go`] with [`ANCHOR_BYTES`] each way, printed on one
/// line; its figures for the summary line.
pub(crate) fn case() -> Result<Bulk, String> {
    check_summary_line();
    let started = Instant::now();
    let result = wireguard_go(ANCHOR_BYTES);
    eprintln!("bench: wireguard-go took {:.1} s", started.elapsed().as_secs_f64());
    let label = "  wireguard-go TUN to TUN (anchor)";
    match &result {
        Ok(b) => println!(
            "{label}: upload {:.1} MB/s, download {:.1} MB/s, round trip median {:.0} µs",
            b.upload_mb_s, b.download_mb_s, b.rtt_median_us
        ),
        Err(e) => println!("{label}: {e}"),
    }
    result
}
