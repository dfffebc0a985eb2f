//! tailnode: a Tailscale node for one TUN device, composed from the published tailscale-rs
//! crates (`ts_dataplane`, `ts_control`, `ts_derp`, `ts_disco_protocol`, `ts_tunnel`, …).
//!
//! tailscale-rs's own runtime offers sockets on a userspace network stack; a container that
//! has its own kernel stack wants packets. This crate is the packet-level node: control and
//! DERP in background tasks, and one loop that moves batches of packets between the TUN device
//! and the tailnet (see [`datapath`]).
//!
//! * [`control`]: register, netmap stream, endpoint reports, logout; reconnects on its own.
//! * [`netmap`]: control's updates folded into one view; [`peers`]: that view as the data
//!   plane's tables.
//! * [`datapath`]: the packet loop; [`udp`], [`derp`], [`tun`]: its three kinds of I/O.
//! * [`disco`]: direct-path discovery; [`stun`]: our public UDP endpoint.
//! * [`identity`]: the keys, kept in a state directory.
//! * [`node`]: all of it behind [`Node::join`] and [`Node::start`].
//! * [`packet`]: the few IPv4 packets a node answers itself (quad-100 DNS replies, ping).

pub mod control;
pub mod datapath;
pub mod derp;
pub mod disco;
pub mod identity;
pub mod netmap;
pub mod node;
pub mod packet;
pub mod peers;
pub mod stun;
pub mod tun;
pub mod udp;

/// The default `RUST_LOG` filter for a program built on this crate: one line per event of
/// ours; tailscale-rs's spans and actor messages only from warnings up, or they bury the rest.
pub const DEFAULT_LOG_FILTER: &str =
    "info,tracing=off,kameo=warn,ts_=warn,rustls=warn,hyper=warn,h2=warn";

/// Whether this build has the test-only knobs on (`test-insecure`: the control key over plain
/// http, DERP certificates unverified). Programs say so in `--version` and in their log, and
/// `cargo xtask dist` refuses such a binary. A workspace-wide build that includes the test
/// tailnet turns it on through Cargo's feature unification; a plain `cargo build` never does.
pub const INSECURE_FOR_TESTS: bool = cfg!(feature = "test-insecure");

pub use control::Settings;
pub use datapath::{DirectPaths, Options};
pub use identity::Identity;
pub use node::{JoinError, Names, Node, ServiceTraffic};
/// The packet type the node hands out ([`ServiceTraffic`]).
pub use ts_packet::PacketMut;
