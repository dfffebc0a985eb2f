//! What the root tests and the benchmark share: a lab tailnet with a peer, test namespaces, and
//! ts4nsnet run in one as podman runs it. Included with `mod support;` (tests) or `#[path]`
//! (benches).
#![allow(dead_code)] // each includer uses a different part

use std::io::{ErrorKind, Read, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
};
use tailnet_lab::node::LabPeer;
use tailnet_lab::{AuthKey, Tailnet};

/// The peer's echo port (TCP and UDP; it also answers ping).
pub(crate) const ECHO_PORT: u16 = 7;
/// One-byte TCP round trips timed by [`between_namespaces`] and the benchmark.
pub(crate) const ROUND_TRIPS: usize = 300;
/// A transfer that makes no progress for this long is reported as stalled.
pub(crate) const STALL: Duration = Duration::from_secs(10);
/// Reads and writes of the bulk transfers.
const BUFFER: usize = 256 * 1024;

/// The peer's bulk-transfer port (`LabPeer::serve_bulk`).
pub(crate) const BULK_PORT: u16 = 9;

/// A lab tailnet on loopback, a reusable ephemeral key for more nodes, and a peer named `peer`
/// serving echo and bulk transfers.
pub(crate) struct Lab {
    pub rt: tokio::runtime::Runtime,
    pub net: Tailnet,
    pub key: String,
    pub url: String,
    pub peer: LabPeer,
}

impl Lab {
    pub(crate) fn start() -> Lab {
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

pub(crate) fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if !root || !ip {
        tailnet_lab::skip(&format!("needs root and iproute2 (root: {root}, ip: {ip})"));
    }
    root && ip
}

pub(crate) struct Netns(pub String);

impl Netns {
    pub(crate) fn add(name: &str) -> Netns {
        let netns = Netns(name.to_owned());
        netns.delete();
        assert!(Command::new("ip").args(["netns", "add", name]).status().unwrap().success());
        netns
    }
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["-n", &self.0]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// Runs `f` on a thread inside the namespace.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
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
    pub(crate) fn delete(&self) {
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

/// Where [`Internet`]'s servers listen.
pub(crate) const SERVER_V4: &str = "198.51.100.2";
pub(crate) const SERVER_V6: &str = "2001:db8:51::2";
/// The host's side of the veth pair: what the internet sees a container's connections come from.
pub(crate) const HOST_V4: &str = "198.51.100.1";

/// "The internet": a namespace joined to the host by a veth pair, at [`SERVER_V4`] and
/// [`SERVER_V6`]; the host is [`HOST_V4`] on its side. Servers are the caller's.
pub(crate) struct Internet {
    host_if: String,
    pub netns: Netns,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// The internet's addresses are fixed, so tests that use it take turns.
static ONE_INTERNET: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Internet {
    pub(crate) fn start() -> Internet {
        let turn = ONE_INTERNET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = std::process::id() % 100_000;
        let netns = Netns::add(&format!("ts4nsnet-inet-{id}"));
        let (host_if, inet_if) = (format!("tpe{id}h"), format!("tpe{id}i"));
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &inet_if]);
        ip(&["link", "set", &inet_if, "netns", &netns.0]);
        ip(&["addr", "add", &format!("{HOST_V4}/24"), "dev", &host_if]);
        ip(&["-6", "addr", "add", "2001:db8:51::1/64", "dev", &host_if, "nodad"]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let status = Command::new("ip").args(["-n", &netns.0]).args(args).status().unwrap();
            assert!(status.success(), "ip -n {} {args:?}", netns.0);
        };
        inside(&["addr", "add", &format!("{SERVER_V4}/24"), "dev", &inet_if]);
        inside(&["-6", "addr", "add", &format!("{SERVER_V6}/64"), "dev", &inet_if, "nodad"]);
        inside(&["link", "set", &inet_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        Internet { host_if, netns, _one_at_a_time: turn }
    }
}

impl Drop for Internet {
    /// The pair goes at once (a namespace's own links are cleaned up later, in the background).
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
    }
}

/// Sends up to three echo requests, as `ping -c 3` would: ICMP is unreliable, one lost datagram
/// is not a failure, but three in a row are.
pub(crate) fn ping(to: Ipv4Addr) -> bool {
    let fd =
        socket::socket(AddressFamily::Inet, SockType::Raw, SockFlag::empty(), SockProtocol::Icmp)
            .unwrap();
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(1, 0))
        .unwrap();
    let dst = SockaddrIn::from(std::net::SocketAddrV4::new(to, 0));
    (1..=3u8).any(|sequence| {
        let mut echo = vec![8, 0, 0, 0, 0x12, 0x34, 0, sequence];
        echo.extend_from_slice(b"tailpod");
        let sum = tailnode::packet::checksum(&echo);
        echo[2..4].copy_from_slice(&sum.to_be_bytes());
        socket::sendto(fd.as_raw_fd(), &echo, &dst, MsgFlags::empty()).unwrap();
        let mut buffer = [0u8; 1500];
        while let Ok(len) = socket::recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            let header = usize::from(buffer[0] & 0x0f) * 4;
            if len >= header + 8 && buffer[12..16] == to.octets() && buffer[header] == 0 {
                if sequence > 1 {
                    eprintln!("ping: echo request {sequence} was the first answered");
                }
                return true;
            }
        }
        false
    })
}

/// [`ping`] for IPv6 (the kernel fills in the ICMPv6 checksum on raw sockets).
pub(crate) fn ping6(to: Ipv6Addr) -> bool {
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::IcmpV6,
    )
    .unwrap();
    socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(1, 0))
        .unwrap();
    let dst = SockaddrIn6::from(std::net::SocketAddrV6::new(to, 0, 0, 0));
    (1..=3u8).any(|sequence| {
        let mut echo = vec![128, 0, 0, 0, 0x12, 0x34, 0, sequence];
        echo.extend_from_slice(b"tailpod");
        socket::sendto(fd.as_raw_fd(), &echo, &dst, MsgFlags::empty()).unwrap();
        let mut buffer = [0u8; 1500];
        while let Ok((len, Some(from))) =
            socket::recvfrom::<SockaddrIn6>(fd.as_raw_fd(), &mut buffer)
        {
            if len >= 8 && from.ip() == to && buffer[0] == 129 && buffer[7] == sequence {
                return true;
            }
        }
        false
    })
}

/// Sends `sent` to the lab peer's TCP echo at `peer` and checks it all comes back; the
/// panic says what failed.
pub(crate) fn peer_echoes(peer: IpAddr, sent: &[u8]) {
    let to = SocketAddr::new(peer, ECHO_PORT);
    let mut tcp = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("TCP to the peer at {to}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(sent).unwrap();
    let mut back = vec![0u8; sent.len()];
    tcp.read_exact(&mut back).unwrap_or_else(|e| panic!("TCP echo from {to}: {e}"));
    assert!(back == sent, "the echo from {to} differs");
}

/// ts4nsnet as podman runs it: `-c -r R -e E --netns-type=path PATH tap0`.
pub(crate) struct Ts4nsnet {
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

pub(crate) fn start(netns: &Netns, control_url: &str, key: &str, hostname: &str) -> Ts4nsnet {
    start_with(netns, control_url, hostname, &[], &[("TS_AUTHKEY", key)])
}

/// [`start`] with more arguments before the namespace's, and `env` instead of the auth key.
pub(crate) fn start_with(
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
    pub(crate) fn wait_ready(&mut self) -> Result<(), String> {
        let mut ready = std::fs::File::from(self.ready.try_clone().unwrap());
        let mut byte = [0u8; 1];
        match ready.read(&mut byte) {
            Ok(1) => Ok(()),
            _ => Err(self.finish(Duration::from_secs(5)).1),
        }
    }
    /// What it has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end; its exit status and stderr.
    pub(crate) fn finish(&mut self, within: Duration) -> (Option<i32>, String) {
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

/// Kernel TCP figures between two namespaces: MB/s (1 MB = 1e6 bytes) each way, and the median
/// one-byte round trip.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bulk {
    /// Client to server.
    pub upload_mb_s: f64,
    /// Server to client.
    pub download_mb_s: f64,
    pub rtt_median_us: f64,
}

/// Measures, from `client_ns`, upload and download of `bytes` each way to a TCP server started
/// in `server_ns` on `server_addr`, then the median of [`ROUND_TRIPS`] one-byte round trips. A
/// transfer that makes no progress for [`STALL`] is an error saying how far it got.
pub(crate) fn between_namespaces(
    client_ns: &Netns,
    server_ns: &Netns,
    server_addr: IpAddr,
    bytes: u64,
) -> Result<Bulk, String> {
    let stop = AtomicBool::new(false);
    let (ready, bound) = mpsc::channel();
    std::thread::scope(|s| {
        let stop = StopOnDrop(&stop);
        let flag = stop.0;
        let server = s.spawn(move || server_ns.run(move || serve(server_addr, &ready, flag)));
        let result = match bound.recv() {
            Ok(Ok(addr)) => client_ns.run(|| measure(addr, bytes)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the server thread ended before listening".to_owned()),
        };
        drop(stop);
        server.join().map_err(|_| "the server thread panicked".to_owned())?;
        result
    })
}

/// Stops the server however the client side ends (a panic too: the scope joins the server).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A request: `U` (the client sends `len` bytes, the server answers their count), `D` (the
/// server sends `len` bytes) or `E` (echo until the client closes).
fn request(kind: u8, len: u64) -> [u8; 9] {
    let mut header = [kind; 9];
    header[1..].copy_from_slice(&len.to_be_bytes());
    header
}

/// The server, one connection at a time, until `stop`.
fn serve(addr: IpAddr, ready: &mpsc::Sender<Result<SocketAddr, String>>, stop: &AtomicBool) {
    let listener = match TcpListener::bind((addr, 0)).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!("server cannot listen on {addr}: {e}")));
            return;
        }
    };
    let _ = ready.send(listener.local_addr().map_err(|e| e.to_string()));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            // The client sees and reports whatever goes wrong.
            Ok((stream, _)) => drop(answer(stream)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STALL))?;
    stream.set_write_timeout(Some(STALL))?;
    stream.set_nodelay(true)?;
    let mut header = [0u8; 9];
    stream.read_exact(&mut header)?;
    let len = u64::from_be_bytes(header[1..].try_into().unwrap());
    let mut buffer = vec![0u8; BUFFER];
    match header[0] {
        b'U' => {
            let mut received = 0u64;
            while received < len {
                match stream.read(&mut buffer)? {
                    0 => break,
                    n => received += n as u64,
                }
            }
            stream.write_all(&received.to_be_bytes())
        }
        b'D' => {
            buffer.fill(0x5a);
            let mut sent = 0u64;
            while sent < len {
                let n = (len - sent).min(BUFFER as u64) as usize;
                stream.write_all(&buffer[..n])?;
                sent += n as u64;
            }
            Ok(())
        }
        b'E' => loop {
            match stream.read(&mut buffer)? {
                0 => return Ok(()),
                n => stream.write_all(&buffer[..n])?,
            }
        },
        _ => Ok(()),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The client side of [`between_namespaces`], on a thread inside the client's namespace.
fn measure(server: SocketAddr, bytes: u64) -> Result<Bulk, String> {
    let connect = |what: &str| {
        let stream = TcpStream::connect_timeout(&server, STALL)
            .map_err(|e| format!("{what}: cannot connect to {server}: {e}"))?;
        stream.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(STALL)).map_err(|e| e.to_string())?;
        Ok::<_, String>(stream)
    };
    let total = mib(bytes);
    let mut buffer = vec![0u8; BUFFER];

    let mut stream = connect("upload")?;
    let started = Instant::now();
    stream.write_all(&request(b'U', bytes)).map_err(|e| format!("upload: {e}"))?;
    buffer.fill(0xa5);
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(BUFFER as u64) as usize;
        stream
            .write_all(&buffer[..n])
            .map_err(|e| format!("upload stalled after {} of {total}: {e}", mib(sent)))?;
        sent += n as u64;
    }
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .map_err(|e| format!("upload sent all {total} but no count came back: {e}"))?;
    let upload = started.elapsed();
    let counted = u64::from_be_bytes(count);
    if counted != bytes {
        return Err(format!("upload: the server counted {} of {total}", mib(counted)));
    }
    drop(stream);

    let mut stream = connect("download")?;
    let started = Instant::now();
    stream.write_all(&request(b'D', bytes)).map_err(|e| format!("download: {e}"))?;
    let mut received = 0u64;
    while received < bytes {
        match stream.read(&mut buffer) {
            Ok(0) => return Err(format!("download closed after {} of {total}", mib(received))),
            Ok(n) => received += n as u64,
            Err(e) => {
                return Err(format!("download stalled after {} of {total}: {e}", mib(received)));
            }
        }
    }
    let download = started.elapsed();
    drop(stream);

    let mut stream = connect("round trips")?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.write_all(&request(b'E', 0)).map_err(|e| format!("round trips: {e}"))?;
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let started = Instant::now();
        let mut byte = [1u8];
        stream
            .write_all(&byte)
            .and_then(|()| stream.read_exact(&mut byte))
            .map_err(|e| format!("round trip {} of {ROUND_TRIPS} failed: {e}", i + 1))?;
        times.push(started.elapsed());
    }
    times.sort();

    let rate = |elapsed: Duration| bytes as f64 / elapsed.as_secs_f64() / 1e6;
    Ok(Bulk {
        upload_mb_s: rate(upload),
        download_mb_s: rate(download),
        rtt_median_us: times[times.len() / 2].as_secs_f64() * 1e6,
    })
}
