//! A TCP listener that can be taken down and brought back on the same address, cutting every
//! connection it accepted: what an outage of the lab's servers is made of.
//!
//! Each period of listening is an [`Epoch`]: a cancellation token and a task tracker. The accept
//! loop and all work done for its connections (including what runs after an HTTP upgrade) are
//! spawned through it, so ending the epoch drops them all, and with them their sockets.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves one accepted connection, spawning any further work through the epoch.
pub(crate) type Serve = Arc<dyn Fn(TcpStream, Epoch) -> BoxFuture<'static, ()> + Send + Sync>;

/// One period of listening; everything spawned through it ends with it.
#[derive(Debug, Clone)]
pub(crate) struct Epoch {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Epoch {
    fn new() -> Epoch {
        Epoch { token: CancellationToken::new(), tracker: TaskTracker::new() }
    }

    /// Runs `work` until this epoch ends, when it is dropped mid-way (its connection cut).
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            token.run_until_cancelled_owned(work).await;
        });
    }

    /// Cancels everything spawned through this epoch.
    fn end(&self) {
        self.tracker.close();
        self.token.cancel();
    }
}

/// A listener that [`Listener::stop`] takes down and [`Listener::resume`] brings back on the
/// same address; it stops for good when dropped.
pub(crate) struct Listener {
    addr: SocketAddr,
    serve: Serve,
    /// The running epoch; `None` while stopped.
    epoch: Mutex<Option<Epoch>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("addr", &self.addr).finish()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(epoch) = self.lock().take() {
            epoch.end();
        }
    }
}

impl Listener {
    /// Listens on `addr`; with port 0 the kernel picks one, and every later epoch reuses it.
    pub(crate) async fn start(addr: SocketAddr, serve: Serve) -> std::io::Result<Listener> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let this = Listener { addr, serve, epoch: Mutex::new(None) };
        *this.lock() = Some(this.accept(listener));
        Ok(this)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and cuts every connection; when it returns, the port is closed and no
    /// work of the old epoch runs any more.
    pub(crate) async fn stop(&self) {
        let epoch = self.lock().take();
        if let Some(epoch) = epoch {
            epoch.end();
            epoch.tracker.wait().await;
        }
    }

    /// Listens again on the same address; does nothing if already listening.
    pub(crate) async fn resume(&self) -> std::io::Result<()> {
        let mut epoch = self.lock();
        if epoch.is_none() {
            *epoch = Some(self.accept(bind(self.addr)?));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Epoch>> {
        self.epoch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new epoch accepting on `listener`.
    fn accept(&self, listener: TcpListener) -> Epoch {
        let epoch = Epoch::new();
        let (serve, spawner) = (self.serve.clone(), epoch.clone());
        epoch.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => spawner.spawn(serve(stream, spawner.clone())),
                    Err(e) => {
                        // Out of file descriptors, say: wait for some to close rather than spin.
                        log::debug!("accept on {:?} failed: {e}", listener.local_addr());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        epoch
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // The connections an outage cuts linger in TIME_WAIT; they must not keep the port from us.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
