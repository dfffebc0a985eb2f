//! `cargo bench -p ts4nsnet` (root; prints why it skips otherwise): TCP throughput both ways and
//! round-trip latency from a network namespace through ts4nsnet to a tailnet-lab peer; the same
//! between two bare tailscale-rs nodes, the ceiling (ts4nsnet adds the container's kernel stack
//! and the raw-socket bridge to that path); and ts4nsnet's resident memory.
//!
//! Everything runs on loopback on this machine, so the figures compare paths; they do not
//! predict a real network.
//!
//! `cargo bench -p ts4nsnet -- egress` runs only the host egress case (for profiling it alone);
//! the summary line is printed only when every case ran.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{BULK_PORT, ECHO_PORT, ROUND_TRIPS, STALL};
use tailnet_lab::node::{LabPeer, send_all};

#[path = "tailnet/anchor.rs"]
mod anchor;
#[path = "../tests/support/mod.rs"]
mod support;

/// Bytes moved in each direction.
const BULK: u64 = 8 << 20;

/// One path's figures; a transfer that stalled says how far it got.
struct Figures {
    upload: Result<f64, String>,
    download: Result<f64, String>,
    round_trips: Vec<Duration>,
}

impl Figures {
    fn print(&self, label: &str) {
        let rate = |r: &Result<f64, String>| match r {
            Ok(bytes_per_s) => format!("{:.1} MB/s", bytes_per_s / 1e6),
            Err(e) => e.clone(),
        };
        let mut times = self.round_trips.clone();
        times.sort();
        let us = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
        println!(
            "{label}: upload {}, download {}, TCP round trip median {:.0} µs, p99 {:.0} µs ({} round trips)",
            rate(&self.upload),
            rate(&self.download),
            us(times.get(times.len() / 2)),
            us(times.get(times.len() * 99 / 100)),
            times.len()
        );
    }
}

/// `serve_bulk`'s request: upload (`U`) or download (`D`) of BULK bytes.
fn header(direction: u8) -> [u8; 9] {
    let mut header = [direction; 9];
    header[1..].copy_from_slice(&BULK.to_be_bytes());
    header
}

/// From inside the namespace, with the kernel's own TCP.
fn through_ts4nsnet(peer: Ipv4Addr) -> Figures {
    let connect = |port| {
        let stream = TcpStream::connect_timeout(
            &SocketAddr::new(peer.into(), port),
            Duration::from_secs(10),
        )
        .expect("TCP to the peer");
        stream.set_read_timeout(Some(STALL)).unwrap();
        stream.set_write_timeout(Some(STALL)).unwrap();
        stream
    };
    let upload = (|| {
        let mut stream = connect(BULK_PORT);
        let started = Instant::now();
        stream.write_all(&header(b'U')).map_err(|e| e.to_string())?;
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut sent = 0;
        while sent < BULK {
            stream
                .write_all(&chunk)
                .map_err(|e| format!("stalled after {} MiB: {e}", sent >> 20))?;
            sent += chunk.len() as u64;
        }
        let mut count = [0u8; 8];
        stream.read_exact(&mut count).map_err(|e| format!("no count back: {e}"))?;
        assert_eq!(u64::from_be_bytes(count), BULK, "the peer counted every byte");
        Ok(BULK as f64 / started.elapsed().as_secs_f64())
    })();
    let download = (|| {
        let mut stream = connect(BULK_PORT);
        let started = Instant::now();
        stream.write_all(&header(b'D')).map_err(|e| e.to_string())?;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut received = 0;
        while received < BULK {
            match stream.read(&mut buffer) {
                Ok(0) => return Err(format!("closed after {} MiB", received >> 20)),
                Ok(n) => received += n as u64,
                Err(e) => return Err(format!("stalled after {} MiB: {e}", received >> 20)),
            }
        }
        Ok(BULK as f64 / started.elapsed().as_secs_f64())
    })();
    eprintln!("bench: ts4nsnet upload and download done");
    let mut stream = connect(ECHO_PORT);
    stream.set_nodelay(true).unwrap();
    let round_trips = (0..ROUND_TRIPS)
        .map_while(|_| {
            let started = Instant::now();
            let mut byte = [1u8];
            stream.write_all(&byte).ok()?;
            stream.read_exact(&mut byte).ok()?;
            Some(started.elapsed())
        })
        .collect();
    Figures { upload, download, round_trips }
}

/// From a second bare node, with the library's own TCP.
async fn between_bare_nodes(from: &LabPeer, peer: Ipv4Addr) -> Figures {
    let upload = async {
        let stream = from.tcp_connect(SocketAddr::new(peer.into(), BULK_PORT)).await?;
        let started = Instant::now();
        send_all(&stream, &header(b'U')).await?;
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut sent = 0;
        while sent < BULK {
            tokio::time::timeout(STALL, send_all(&stream, &chunk))
                .await
                .map_err(|_| format!("stalled after {} MiB", sent >> 20))??;
            sent += chunk.len() as u64;
        }
        let count = tokio::time::timeout(STALL, stream.recv_bytes()).await;
        let count = count.map_err(|_| "no count back".to_owned())?.map_err(|e| e.to_string())?;
        assert_eq!(count.as_ref(), BULK.to_be_bytes(), "the peer counted every byte");
        Ok::<_, String>(BULK as f64 / started.elapsed().as_secs_f64())
    };
    let upload = upload.await;
    let download = async {
        let stream = from.tcp_connect(SocketAddr::new(peer.into(), BULK_PORT)).await?;
        let started = Instant::now();
        send_all(&stream, &header(b'D')).await?;
        let mut received = 0;
        while received < BULK {
            match tokio::time::timeout(STALL, stream.recv_bytes()).await {
                Ok(Ok(data)) if !data.is_empty() => received += data.len() as u64,
                _ => return Err(format!("stalled after {} MiB", received >> 20)),
            }
        }
        Ok(BULK as f64 / started.elapsed().as_secs_f64())
    };
    let download = download.await;
    eprintln!("bench: bare upload and download done");
    let mut round_trips = Vec::new();
    if let Ok(stream) = from.tcp_connect(SocketAddr::new(peer.into(), ECHO_PORT)).await {
        for _ in 0..ROUND_TRIPS {
            let started = Instant::now();
            if send_all(&stream, &[1]).await.is_err() {
                break;
            }
            match tokio::time::timeout(STALL, stream.recv_bytes()).await {
                Ok(Ok(data)) if !data.is_empty() => round_trips.push(started.elapsed()),
                _ => break,
            }
        }
    }
    Figures { upload, download, round_trips }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    if !support::can_run() {
        return;
    }
    // cargo passes `--bench`; any other argument names the one case to run.
    let only_egress = std::env::args().skip(1).any(|a| a == "egress");
    // `_tailnet` keeps control and DERP running until the end.
    // First the cases with no tailscale-rs runtime in this process: its nodes keep polling
    // after they are shut down and would take CPU from these (a profile of egress run after
    // them showed this process's own workers on 60% of the two cores).
    let (tun2tun, wggo) = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let net = rt.block_on(tailnet_lab::Tailnet::start(Ipv4Addr::LOCALHOST.into())).unwrap();
        let grants = tailnet_lab::AuthKey { reusable: true, ephemeral: true, tags: vec![] };
        let key = net.control.new_auth_key(grants);
        if only_egress {
            egress(net.control.url(), &key);
            return;
        }
        let tun2tun = container_to_container(&net, net.control.url(), &key);
        egress(net.control.url(), &key);
        (tun2tun, anchor::case())
    };

    let support::Lab { rt, net: _tailnet, key, url, peer } = support::Lab::start();

    let netns = support::Netns::add(&format!("ts4nsnet-bench-{}", std::process::id()));
    let mut node = support::start(&netns, &url, &key, "bench");
    node.wait_ready().expect("ts4nsnet is ready");
    std::thread::sleep(Duration::from_secs(1));
    let idle = memory(node.child.id());
    let peer_ip = peer.ipv4;
    let started = Instant::now();
    let ours = netns.run(|| through_ts4nsnet(peer_ip));
    let busy = memory(node.child.id());
    eprintln!("bench: through ts4nsnet took {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let bare = rt.block_on(LabPeer::join(&url, &key, "bare", true)).unwrap();
    let ceiling = rt.block_on(between_bare_nodes(&bare, peer_ip));
    eprintln!("bench: between bare nodes took {:.1} s", started.elapsed().as_secs_f64());

    println!(
        "ts4nsnet benchmark, loopback lab tailnet, {} MiB each way, {ROUND_TRIPS} round trips:",
        BULK >> 20
    );
    ours.print("  namespace -> peer through ts4nsnet");
    ceiling.print("  bare node -> peer (the ceiling)   ");
    println!(
        "  ts4nsnet resident memory: {:.1} MiB idle after joining, {:.1} MiB after the runs (peak {:.1} MiB)",
        idle.0, busy.0, busy.1
    );
    rt.block_on(bare.shutdown());
    drop(node);

    rt.block_on(peer.shutdown());

    let rates = |r: &Result<f64, String>| r.as_ref().ok().copied().map(|b| b / 1e6);
    let summary = anchor::Summary {
        tun2tun: tun2tun.as_ref().map(|t| anchor::Rates::from(&t.bulk)).unwrap_or_default(),
        tun2tun_rtt_us: tun2tun.as_ref().ok().map(|t| t.bulk.rtt_median_us),
        bare: anchor::Rates {
            up_mb_s: rates(&ceiling.upload),
            down_mb_s: rates(&ceiling.download),
        },
        wggo: wggo.as_ref().map(anchor::Rates::from).unwrap_or_default(),
        rss_idle_mib: tun2tun.as_ref().ok().map(|t| t.rss_idle_mib),
        rss_peak_mib: tun2tun.as_ref().ok().map(|t| t.rss_peak_mib),
    };
    println!("{}", anchor::summary_line(&summary));
}

/// The tun2tun case's figures, with ts4nsnet's memory on the sending side.
struct TunToTun {
    bulk: support::Bulk,
    rss_idle_mib: f64,
    rss_peak_mib: f64,
}

/// Two containers (namespaces with their own kernel TCP) through two ts4nsnet processes, over
/// the direct UDP path between them: the figure the packet-level node is for.
fn container_to_container(
    net: &tailnet_lab::Tailnet,
    url: &str,
    key: &str,
) -> Result<TunToTun, String> {
    let id = std::process::id();
    let a = support::Netns::add(&format!("ts4nsnet-bench-a-{id}"));
    let b = support::Netns::add(&format!("ts4nsnet-bench-b-{id}"));
    let mut alpha = support::start(&a, url, key, "bench-a");
    let mut beta = support::start(&b, url, key, "bench-b");
    alpha.wait_ready()?;
    beta.wait_ready()?;
    std::thread::sleep(Duration::from_secs(1));
    let (idle, _) = memory(alpha.child.id());
    let nodes = net.control.nodes();
    let beta_ip =
        nodes.iter().find(|n| n.hostname == "bench-b").ok_or("beta is not on the tailnet")?.ipv4;
    // A few pings first: the handshake, then the direct path, before anything is timed.
    a.run(|| {
        for _ in 0..20 {
            let _ = TcpStream::connect_timeout(
                &SocketAddr::new(beta_ip.into(), 1),
                Duration::from_millis(100),
            );
        }
    });
    let started = Instant::now();
    let bulk = support::between_namespaces(&a, &b, beta_ip.into(), anchor::ANCHOR_BYTES)?;
    eprintln!("bench: tun2tun took {:.1} s", started.elapsed().as_secs_f64());
    let (_, peak) = memory(alpha.child.id());
    println!(
        "  container -> container through two ts4nsnet (tun2tun): upload {:.1} MB/s, download {:.1} MB/s, round trip median {:.0} µs",
        bulk.upload_mb_s, bulk.download_mb_s, bulk.rtt_median_us
    );
    println!("  ts4nsnet resident memory (tun2tun): {idle:.1} MiB idle, {peak:.1} MiB peak");
    Ok(TunToTun { bulk, rss_idle_mib: idle, rss_peak_mib: peak })
}

/// Host egress: a container's TCP to "the internet" (a namespace behind a veth pair) through
/// ts4nsnet, then through podman's own slirp4netns on the same machine in the same run, at
/// podman's MTU (65520, which ts4nsnet's interface takes too) and at the tailnet's (1280).
fn egress(url: &str, key: &str) {
    let internet = support::Internet::start();
    let server: std::net::IpAddr = support::SERVER_V4.parse().unwrap();
    let id = std::process::id();
    let print = |label: &str, bulk: Result<support::Bulk, String>| match bulk {
        Ok(b) => println!(
            "  {label}: upload {:.1} MB/s, download {:.1} MB/s, round trip median {:.0} µs",
            b.upload_mb_s, b.download_mb_s, b.rtt_median_us
        ),
        Err(e) => println!("  {label}: {e}"),
    };
    println!("egress benchmark, {} MiB each way:", anchor::ANCHOR_BYTES >> 20);

    let ours = support::Netns::add(&format!("ts4nsnet-bench-egress-{id}"));
    let args = ["--disable-host-loopback"];
    let mut node = support::start_with(&ours, url, "egress", &args, &[("TS_AUTHKEY", key)]);
    node.wait_ready().expect("ts4nsnet is ready");
    let started = Instant::now();
    let bulk = support::between_namespaces(&ours, &internet.netns, server, anchor::ANCHOR_BYTES);
    eprintln!("bench: egress through ts4nsnet took {:.1} s", started.elapsed().as_secs_f64());
    print("container -> internet through ts4nsnet   (MTU 65520)", bulk);
    let (_, peak) = memory(node.child.id());
    println!("  ts4nsnet resident memory (egress): {peak:.1} MiB peak");
    drop(node);

    for mtu in [65520, 1280] {
        let theirs = support::Netns::add(&format!("ts4nsnet-bench-slirp-{id}"));
        let label = format!("container -> internet through slirp4netns (MTU {mtu:>5})");
        match slirp4netns(&theirs, mtu) {
            Ok(_slirp) => {
                let bulk = support::between_namespaces(
                    &theirs,
                    &internet.netns,
                    server,
                    anchor::ANCHOR_BYTES,
                );
                print(&label, bulk);
            }
            Err(e) => println!("  {label}: not measured: {e}"),
        }
    }
}

/// slirp4netns as podman starts it, until dropped.
struct Slirp(std::process::Child);

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn slirp4netns(netns: &support::Netns, mtu: u32) -> Result<Slirp, String> {
    use std::os::fd::AsRawFd as _;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::empty()).map_err(|e| e.to_string())?;
    let child = std::process::Command::new("slirp4netns")
        .args(["--configure", "--disable-host-loopback", "--netns-type=path"])
        .arg(format!("--mtu={mtu}"))
        .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
        .arg(netns.path())
        .arg("tap0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("slirp4netns: {e} (apt-get install slirp4netns)"))?;
    drop(ready_w);
    let slirp = Slirp(child);
    let mut byte = [0u8; 1];
    match std::fs::File::from(ready_r).read(&mut byte) {
        Ok(1) => Ok(slirp),
        _ => Err("slirp4netns did not become ready".into()),
    }
}
