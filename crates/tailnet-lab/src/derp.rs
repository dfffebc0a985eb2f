//! A minimal DERP relay: TLS with a throwaway self-signed certificate (nodes built with
//! `ts_control/insecure-derp` skip verifying it when the DERP map says `InsecureForTests`), the
//! HTTP upgrade, the key exchange, and packet forwarding between connected nodes. Beside it, on
//! the same IP and a UDP port the kernel picks, a STUN server (`stun.rs`) tells nodes
//! their address; the DERP map control sends names that port.
//!
//! Frames are a type byte, a big-endian u32 length and a body, as in Tailscale's `derp` package.
//!
//! [`Derp::suspend`] closes the relay's port and cuts every client (STUN keeps answering);
//! [`Derp::resume`] listens again on the same port, with the same key.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::control::DerpEndpoint;
use crate::listener::{Epoch, Listener, Serve};
use crate::stun::StunServer;

const MAGIC: &[u8; 8] = b"DERP\xF0\x9F\x94\x91";
const SERVER_KEY: u8 = 0x01;
const CLIENT_INFO: u8 = 0x02;
const SERVER_INFO: u8 = 0x03;
const SEND_PACKET: u8 = 0x04;
const RECV_PACKET: u8 = 0x05;
const KEEP_ALIVE: u8 = 0x06;
const PING: u8 = 0x12;
const PONG: u8 = 0x13;
/// Larger than any frame a node sends (packets are at most 64 KiB).
const MAX_FRAME: usize = 1 << 20;

#[derive(Default)]
struct Clients(Mutex<HashMap<[u8; 32], mpsc::Sender<Bytes>>>);

impl Clients {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], mpsc::Sender<Bytes>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What every connection shares.
struct Relay {
    acceptor: TlsAcceptor,
    key: SecretKey,
    clients: Clients,
}

/// A running DERP server and its STUN server; both stop when dropped.
pub struct Derp {
    listener: Listener,
    stun: StunServer,
}

impl std::fmt::Debug for Derp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derp")
            .field("addr", &self.addr())
            .field("stun_addr", &self.stun_addr())
            .finish()
    }
}

impl Derp {
    /// Listens on `listen` (port 0 picks one), and for STUN on the same IP, any port.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Derp> {
        let relay = Arc::new(Relay {
            acceptor: TlsAcceptor::from(Arc::new(tls_config(listen)?)),
            key: SecretKey::generate(&mut OsRng),
            clients: Clients::default(),
        });
        let serve: Serve =
            Arc::new(move |tcp, epoch| Box::pin(serve_tls(tcp, relay.clone(), epoch)));
        let listener = Listener::start(listen, serve).await?;
        let stun = StunServer::start(SocketAddr::new(listener.addr().ip(), 0)).await?;
        Ok(Derp { listener, stun })
    }

    /// Where DERP listens (TLS).
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// Where STUN binding requests are answered (UDP).
    pub fn stun_addr(&self) -> SocketAddr {
        self.stun.addr()
    }

    /// This server as the control server's DERP map shows it.
    pub fn endpoint(&self) -> DerpEndpoint {
        DerpEndpoint { addr: self.addr(), stun_port: Some(self.stun_addr().port()) }
    }

    /// Stops accepting and disconnects every client; returns once the port is closed. STUN
    /// keeps answering.
    pub async fn suspend(&self) {
        self.listener.stop().await;
    }

    /// Listens again on the same address, with the same key; clients must connect again.
    pub async fn resume(&self) -> std::io::Result<()> {
        self.listener.resume().await
    }
}

async fn serve_tls(tcp: TcpStream, relay: Arc<Relay>, epoch: Epoch) {
    let Ok(tls) = relay.acceptor.accept(tcp).await else { return };
    let service = hyper::service::service_fn(move |req| upgrade(req, relay.clone(), epoch.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        log::debug!("derp http connection ended: {e}");
    }
}

fn tls_config(listen: SocketAddr) -> std::io::Result<ServerConfig> {
    let names = vec![listen.ip().to_string(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
        .map_err(std::io::Error::other)
}

async fn upgrade(
    req: Request<Incoming>,
    relay: Arc<Relay>,
    epoch: Epoch,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let mut response = Response::new(Empty::new().boxed());
    if req.uri().path() == "/derp/latency-check" {
        return Ok(response);
    }
    if req.uri().path() != "/derp" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    epoch.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                if let Err(e) = serve_client(TokioIo::new(upgraded), &relay).await {
                    log::debug!("derp client left: {e}");
                }
            }
            Err(e) => log::warn!("derp upgrade failed: {e}"),
        }
    });
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert("upgrade", "DERP".parse().expect("valid"));
    response.headers_mut().insert("connection", "Upgrade".parse().expect("valid"));
    Ok(response)
}

fn frame(kind: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(5 + len);
    out.push(kind);
    out.extend_from_slice(&u32::try_from(len).expect("frames are small").to_be_bytes());
    parts.iter().for_each(|p| out.extend_from_slice(p));
    Bytes::from(out)
}

async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(u8, Vec<u8>)> {
    let kind = io.read_u8().await?;
    let len = io.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut body = vec![0; len];
    io.read_exact(&mut body).await?;
    Ok((kind, body))
}

/// Serves one node: key exchange, then forwarding until it disconnects.
async fn serve_client<T>(io: T, relay: &Relay) -> std::io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let key = &relay.key;
    let (mut reader, mut writer) = tokio::io::split(io);
    writer.write_all(&frame(SERVER_KEY, &[MAGIC, key.public_key().as_bytes()])).await?;
    let (kind, body) = read_frame(&mut reader).await?;
    if kind != CLIENT_INFO || body.len() < 32 + 24 {
        return Err(std::io::Error::other("expected client info"));
    }
    let client: [u8; 32] = body[..32].try_into().expect("checked length");
    let sealed = SalsaBox::new(&PublicKey::from(client), key);
    let nonce = crypto_box::Nonce::clone_from_slice(&body[32..56]);
    sealed
        .decrypt(&nonce, &body[56..])
        .map_err(|_| std::io::Error::other("client info does not decrypt"))?;
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let info = sealed
        .encrypt(&nonce, br#"{"version":2}"#.as_slice())
        .map_err(|_| std::io::Error::other("cannot seal server info"))?;
    writer.write_all(&frame(SERVER_INFO, &[nonce.as_slice(), &info])).await?;

    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let _registered = Registration::new(&relay.clients, client, tx.clone());
    // Reading and writing in one task, so that cutting the connection (an outage drops this
    // future) ends both halves and closes the socket.
    let writing = async move {
        let mut keep_alive = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            let frame = tokio::select! {
                next = rx.recv() => match next { Some(frame) => frame, None => return },
                _ = keep_alive.tick() => frame(KEEP_ALIVE, &[]),
            };
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        result = forward(&mut reader, client, &tx, &relay.clients) => result,
        () = writing => Ok(()),
    }
}

/// A client's entry in the forwarding table, removed when its connection ends however it ends,
/// unless a newer connection with the same key has taken its place.
struct Registration<'a> {
    clients: &'a Clients,
    client: [u8; 32],
    tx: mpsc::Sender<Bytes>,
}

impl<'a> Registration<'a> {
    fn new(clients: &'a Clients, client: [u8; 32], tx: mpsc::Sender<Bytes>) -> Registration<'a> {
        clients.lock().insert(client, tx.clone());
        Registration { clients, client, tx }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut clients = self.clients.lock();
        if clients.get(&self.client).is_some_and(|t| t.same_channel(&self.tx)) {
            clients.remove(&self.client);
        }
    }
}

async fn forward(
    reader: &mut (impl AsyncRead + Unpin),
    client: [u8; 32],
    own: &mpsc::Sender<Bytes>,
    clients: &Clients,
) -> std::io::Result<()> {
    loop {
        let (kind, body) = read_frame(reader).await?;
        match kind {
            SEND_PACKET if body.len() >= 32 => {
                let dst: [u8; 32] = body[..32].try_into().expect("checked length");
                let peer = clients.lock().get(&dst).cloned();
                // A full queue drops the packet, as a congested relay does.
                if let Some(peer) = peer {
                    let _ = peer.try_send(frame(RECV_PACKET, &[&client, &body[32..]]));
                }
            }
            PING => {
                let _ = own.try_send(frame(PONG, &[&body]));
            }
            _ => {}
        }
    }
}
