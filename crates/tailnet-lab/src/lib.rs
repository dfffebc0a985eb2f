//! Test-only stand-ins for the parts of Tailscale that tailpod talks to, served on loopback.
//!
//! * [`api`]: Tailscale's public HTTP API (OAuth token, auth keys, devices), as published, for
//!   tailmint's tests and the end-to-end box.
//! * [`control`] and [`derp`]: a minimal control server and DERP relay (with STUN), so that real
//!   tailscale-rs nodes (ts4nsnet, [`node`]) can form a tailnet with no internet. Both can be
//!   taken down and brought back on the same ports ([`Tailnet::outage`]), keeping their state.
//! * [`node`]: a plain tailscale-rs node that answers TCP echo, UDP echo and ping.
//!
//! Nothing here is secure or meant for a real network; the crate is never part of a release.

pub mod api;
pub mod control;
pub mod derp;
mod http;
mod listener;
pub mod node;
mod noise;
mod stun;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use control::{AuthKey, Control, ControlConfig, DerpEndpoint, LabNode};
pub use derp::Derp;

/// Set (CI sets it) to make a test that cannot run here fail instead of skipping.
pub const REQUIRE_ALL_TESTS: &str = "TAILPOD_REQUIRE_ALL_TESTS";

/// Says why a test that needs the machine's real parts (root, podman, iproute2) does not run;
/// with [`REQUIRE_ALL_TESTS`] set it fails instead, so a green CI proves every test ran.
pub fn skip(why: &str) {
    if std::env::var_os(REQUIRE_ALL_TESTS).is_some() {
        panic!("{why}; {REQUIRE_ALL_TESTS} is set, so this test must run");
    }
    eprintln!("skipped: {why}");
}

/// A control server and a DERP relay on one address: a whole tailnet.
#[derive(Debug)]
pub struct Tailnet {
    pub control: Control,
    pub derp: Derp,
}

impl Tailnet {
    /// The MagicDNS suffix of every lab tailnet.
    pub const SUFFIX: &str = "lab.ts.net";

    /// Starts both servers on `ip` with ports picked by the kernel.
    pub async fn start(ip: IpAddr) -> std::io::Result<Tailnet> {
        Tailnet::start_on(SocketAddr::new(ip, 0), SocketAddr::new(ip, 0)).await
    }

    /// Starts control on `control` and DERP on `derp` (port 0: the kernel picks one).
    pub async fn start_on(control: SocketAddr, derp: SocketAddr) -> std::io::Result<Tailnet> {
        let derp = Derp::start(derp).await?;
        let control = Control::start(control, Tailnet::config(&derp)).await?;
        Ok(Tailnet { control, derp })
    }

    /// The control settings of a lab tailnet whose relay is `derp`: short keep-alives and
    /// ephemeral grace, so that tests run fast.
    pub fn config(derp: &Derp) -> ControlConfig {
        ControlConfig {
            tailnet: Tailnet::SUFFIX.to_owned(),
            derp: derp.endpoint(),
            keep_alive: Duration::from_secs(2),
            ephemeral_grace: Duration::from_secs(1),
            // Clients back off while control is away; give them time to notice it is back.
            reconnect_grace: Duration::from_secs(10),
        }
    }

    /// Takes control and DERP down: their ports close and every connection is cut (map streams,
    /// Noise connections, DERP clients; STUN keeps answering). State stays.
    pub async fn suspend(&self) {
        tokio::join!(self.control.suspend(), self.derp.suspend());
    }

    /// Brings both back on the same addresses, after [`Tailnet::suspend`].
    pub async fn resume(&self) -> std::io::Result<()> {
        self.derp.resume().await?;
        self.control.resume().await
    }

    /// A control and DERP outage of `down`: [`Tailnet::suspend`], wait, [`Tailnet::resume`].
    /// Nodes find everything as before when they reconnect, ephemeral ones included (see
    /// [`ControlConfig::reconnect_grace`]). Fails only if a port was taken meanwhile.
    pub async fn outage(&self, down: Duration) -> std::io::Result<()> {
        self.suspend().await;
        tokio::time::sleep(down).await;
        self.resume().await
    }
}

/// `bytes` random bytes as hex, from the standard library's per-process random keys: unique
/// enough for test ids and keys, with no extra dependency.
pub(crate) fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(bytes * 2);
    out
}
