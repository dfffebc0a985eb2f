//! TCP to the host's network: smoltcp ends the container's connection inside ts4nsnet, and a
//! host socket carries its bytes on, as libslirp does for slirp4netns.
//!
//! A connection is made on the host first, and only then does the container's SYN reach
//! smoltcp, so a refused or unreachable destination is a reset to the container, as it would
//! be on the host. Each direction is bounded: the host socket is read straight into smoltcp's
//! send buffer, only while it has room (no copy, no task between them), and the container's
//! bytes wait in smoltcp's receive buffer (its window closes) while the host side is slow.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, Abortable, abortable};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc};

use super::Limits;
use super::policy::{HOST_ALIAS_V4, HOST_ALIAS_V6, Policy};

/// A connection: the container's address and port, and the destination as it addressed it.
pub type Key = (SocketAddr, SocketAddr);

/// The most bytes of the container's handed to the host socket's writer in one piece.
const CHUNK: usize = 64 * 1024;
/// Pieces of the container's bytes waiting for the host socket, per connection.
const WRITE_QUEUE: usize = 2;
/// How many connections at a time get the large send buffer.
const LARGE_SEND_BUFFERS: usize = 8;
/// How long a host socket may refuse to take bytes before the connection is dropped.
const WRITE_STALL: Duration = Duration::from_secs(300);

/// What the host side reports to the main loop.
#[derive(Debug)]
pub enum Event {
    Connected(Key, TcpStream),
    Failed(Key, std::io::Error),
    HostFailed(u64, std::io::Error),
}

struct Connection {
    handle: SocketHandle,
    key: Key,
    opened: Instant,
    /// The host side, read when it is readable and smoltcp has room.
    from_host: Arc<OwnedReadHalf>,
    /// The host side may have bytes (or its end) to read.
    readable: bool,
    /// A wait for the host side's readiness is pending (see [`Tcp::take_waits`]).
    waiting: Option<AbortHandle>,
    /// The container's bytes, to the writer task; dropped once the container has sent FIN.
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    host_closed: bool,
    closing: bool,
    writer: tokio::task::JoinHandle<()>,
}

/// A wait for a host socket to become readable, yielding its connection's id; aborted when the
/// connection ends.
pub type Wait = Abortable<std::pin::Pin<Box<dyn Future<Output = u64> + Send>>>;

/// smoltcp's side of the device: packets from the container in, packets for it out.
#[derive(Default)]
struct Queue {
    from_container: VecDeque<Vec<u8>>,
    to_container: Vec<Vec<u8>>,
    mtu: usize,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push(packet);
        result
    }
}

impl Device for Queue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.from_container.pop_front()?;
        Some((Rx(packet), Tx(&mut self.to_container)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.to_container))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = self.mtu;
        capabilities
    }
}

/// The TCP connections.
pub struct Tcp {
    iface: Interface,
    device: Queue,
    sockets: SocketSet<'static>,
    connections: HashMap<u64, Connection>,
    by_key: HashMap<Key, u64>,
    /// Connections being made on the host, with the container's SYN held until then.
    connecting: HashMap<Key, Vec<u8>>,
    next_id: u64,
    events: mpsc::UnboundedSender<Event>,
    wake: Arc<Notify>,
    limits: Limits,
    warned_full: Option<Instant>,
    /// Waits for the loop to start (it polls them alongside everything else).
    waits: Vec<Wait>,
}

impl std::fmt::Debug for Tcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp")
            .field("connections", &self.connections.len())
            .field("connecting", &self.connecting.len())
            .finish_non_exhaustive()
    }
}

impl Tcp {
    pub fn new(
        mtu: usize,
        limits: Limits,
        events: mpsc::UnboundedSender<Event>,
        wake: Arc<Notify>,
    ) -> Tcp {
        let mut device = Queue { mtu, ..Queue::default() };
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            smoltcp::time::Instant::now(),
        );
        // Every destination is ours to answer for; smoltcp routes replies by our own address.
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(HOST_ALIAS_V4.into(), 32));
            let _ = addrs.push(IpCidr::new(HOST_ALIAS_V6.into(), 128));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(HOST_ALIAS_V4);
        let _ = iface.routes_mut().add_default_ipv6_route(HOST_ALIAS_V6);
        Tcp {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            connections: HashMap::new(),
            by_key: HashMap::new(),
            connecting: HashMap::new(),
            next_id: 0,
            events,
            wake,
            limits,
            warned_full: None,
            waits: Vec::new(),
        }
    }

    /// A segment from the container. A SYN for a new connection starts one on the host;
    /// everything else goes to smoltcp, which resets what belongs to no connection.
    pub fn from_container(&mut self, packet: &[u8], key: Key, opens: bool, policy: &Policy) {
        if self.by_key.contains_key(&key) || !opens {
            self.device.from_container.push_back(packet.to_vec());
            return;
        }
        if self.connecting.contains_key(&key) {
            return; // the SYN again, while the host connection is still being made
        }
        let target = match policy.target(key.1.ip()) {
            Ok(ip) => SocketAddr::new(ip, key.1.port()),
            Err(why) => {
                log::debug!("egress: TCP {} → {} refused: {why}", key.0, key.1);
                self.device.from_container.push_back(packet.to_vec());
                return;
            }
        };
        if self.connections.len() + self.connecting.len() >= self.limits.tcp_connections {
            let now = Instant::now();
            if self.warned_full.is_none_or(|at| now.duration_since(at) > Duration::from_secs(60)) {
                log::warn!(
                    "egress: {} TCP connections open, the most allowed; refusing new ones",
                    self.limits.tcp_connections
                );
                self.warned_full = Some(now);
            }
            self.device.from_container.push_back(packet.to_vec());
            return;
        }
        self.connecting.insert(key, packet.to_vec());
        let source = policy.source_for(target.ip());
        let (events, timeout) = (self.events.clone(), self.limits.connect_timeout);
        tokio::spawn(async move {
            let event = match tokio::time::timeout(timeout, connect(target, source)).await {
                Ok(Ok(stream)) => Event::Connected(key, stream),
                Ok(Err(e)) => Event::Failed(key, e),
                Err(_) => Event::Failed(key, std::io::ErrorKind::TimedOut.into()),
            };
            let _ = events.send(event);
        });
    }

    /// The host side of `id` became readable.
    pub fn host_readable(&mut self, id: u64) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.readable = true;
            connection.waiting = None;
        }
    }

    /// The readiness waits to start; see [`Wait`].
    pub fn take_waits(&mut self) -> Vec<Wait> {
        std::mem::take(&mut self.waits)
    }

    pub fn event(&mut self, event: Event) {
        match event {
            Event::Connected(key, stream) => self.connected(key, stream),
            Event::Failed(key, e) => {
                log::debug!("egress: TCP {} → {}: {e}", key.0, key.1);
                if let Some(syn) = self.connecting.remove(&key) {
                    self.device.from_container.push_back(syn); // no listener: a reset
                }
            }
            Event::HostFailed(id, e) => {
                if let Some(connection) = self.connections.get_mut(&id) {
                    log::debug!("egress: TCP {} → {}: {e}", connection.key.0, connection.key.1);
                    self.sockets.get_mut::<tcp::Socket>(connection.handle).abort();
                    connection.host_closed = true;
                }
            }
        }
    }

    fn connected(&mut self, key: Key, stream: TcpStream) {
        let Some(syn) = self.connecting.remove(&key) else { return };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.limits.tcp_buffer]),
            tcp::SocketBuffer::new(vec![0; self.send_buffer()]),
        );
        // The host side already coalesces; Nagle here would only add delay.
        socket.set_nagle_enabled(false);
        let listen = IpListenEndpoint { addr: Some(key.1.ip().into()), port: key.1.port() };
        if socket.listen(listen).is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        let id = self.next_id;
        self.next_id += 1;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let (to_host, queue) = mpsc::channel(WRITE_QUEUE);
        let writer =
            tokio::spawn(write(id, write_half, queue, self.events.clone(), self.wake.clone()));
        log::trace!("egress: TCP {} → {}", key.0, key.1);
        self.connections.insert(
            id,
            Connection {
                handle,
                key,
                opened: Instant::now(),
                from_host: Arc::new(read_half),
                readable: false,
                waiting: None,
                to_host: Some(to_host),
                host_closed: false,
                closing: false,
                writer,
            },
        );
        self.by_key.insert(key, id);
        self.device.from_container.push_back(syn);
    }

    /// What the host sends may be in flight to the container unacknowledged only as far as the
    /// send buffer, which bounds a download at its size per round trip. The first few
    /// connections (a download is rarely one of many) get a large one, the rest a smaller one,
    /// so many connections do not multiply the largest size.
    fn send_buffer(&self) -> usize {
        match self.connections.len() < LARGE_SEND_BUFFERS {
            true => self.limits.tcp_buffer * 8,
            false => self.limits.tcp_buffer * 2,
        }
    }

    /// Runs smoltcp, moves bytes both ways, ends finished connections, and returns the
    /// packets for the container.
    pub fn pump(&mut self) -> Vec<Vec<u8>> {
        let now = smoltcp::time::Instant::now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let mut finished = Vec::new();
        for (id, connection) in &mut self.connections {
            let socket = self.sockets.get_mut::<tcp::Socket>(connection.handle);
            if relay(*id, connection, socket, self.limits.connect_timeout, &mut self.waits) {
                finished.push(*id);
            }
        }
        for id in finished {
            let Some(connection) = self.connections.remove(&id) else { continue };
            self.sockets.remove(connection.handle);
            self.by_key.remove(&connection.key);
            if let Some(waiting) = &connection.waiting {
                waiting.abort();
            }
            if connection.to_host.is_some() {
                // Reset or timed out with bytes still owed to the host: stop writing them.
                connection.writer.abort();
            }
        }
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        std::mem::take(&mut self.device.to_container)
    }

    /// When smoltcp next needs to run (a retransmission, a delayed ACK).
    pub fn poll_delay(&mut self) -> Option<Duration> {
        let now = smoltcp::time::Instant::now();
        self.iface.poll_delay(now, &self.sockets).map(|d| Duration::from_micros(d.total_micros()))
    }
}

/// Moves what can move for one connection; says whether it is over.
fn relay(
    id: u64,
    connection: &mut Connection,
    socket: &mut tcp::Socket<'_>,
    stale: Duration,
    waits: &mut Vec<Wait>,
) -> bool {
    // Host to container: read the host socket straight into smoltcp's send buffer.
    while connection.readable && !connection.host_closed && socket.can_send() {
        let from_host = &connection.from_host;
        let read = socket.send(|room| match from_host.try_read(room) {
            Ok(0) => (0, Ok(false)),
            Ok(len) => (len, Ok(true)),
            Err(e) => (0, Err(e)),
        });
        match read {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => connection.host_closed = true,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                connection.readable = false;
            }
            Ok(Err(e)) => {
                log::debug!("egress: TCP {} → {}: {e}", connection.key.0, connection.key.1);
                socket.abort();
                connection.host_closed = true;
            }
            Err(_) => break,
        }
    }
    // Wait for more only when there is room for it: a full buffer is the host's back-pressure.
    if !connection.readable
        && !connection.host_closed
        && connection.waiting.is_none()
        && socket.can_send()
    {
        let half = connection.from_host.clone();
        let wait: std::pin::Pin<Box<dyn Future<Output = u64> + Send>> = Box::pin(async move {
            let _ = half.readable().await;
            id
        });
        let (wait, handle) = abortable(wait);
        connection.waiting = Some(handle);
        waits.push(wait);
    }
    if connection.host_closed && !connection.closing && socket.may_send() {
        socket.close();
        connection.closing = true;
    }
    // Container to host, as far as the writer's queue takes it.
    if let Some(to_host) = &connection.to_host {
        while socket.can_recv() {
            match to_host.try_reserve() {
                Ok(slot) => {
                    let chunk = socket.recv(|buffer| {
                        let len = buffer.len().min(CHUNK);
                        (len, buffer[..len].to_vec())
                    });
                    if let Ok(chunk) = chunk {
                        slot.send(chunk);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    socket.abort(); // the host side is gone
                    break;
                }
            }
        }
        let fin_received = matches!(
            socket.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        );
        if fin_received && socket.recv_queue() == 0 {
            connection.to_host = None; // the writer sends what is queued, then shuts down
        }
    }
    match socket.state() {
        tcp::State::Closed | tcp::State::TimeWait => true,
        tcp::State::Listen | tcp::State::SynReceived => connection.opened.elapsed() > stale,
        _ => false,
    }
}

async fn connect(
    target: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(target).await
}

/// Container to host: writes what the main loop queues, then shuts the host's side down.
async fn write(
    id: u64,
    mut stream: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    wake: Arc<Notify>,
) {
    while let Some(chunk) = queue.recv().await {
        match tokio::time::timeout(WRITE_STALL, stream.write_all(&chunk)).await {
            Ok(Ok(())) => wake.notify_one(),
            Ok(Err(e)) => {
                let _ = events.send(Event::HostFailed(id, e));
                return;
            }
            Err(_) => {
                let stalled = std::io::Error::new(std::io::ErrorKind::TimedOut, "the host stalled");
                let _ = events.send(Event::HostFailed(id, stalled));
                return;
            }
        }
    }
    let _ = stream.shutdown().await;
}
