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

pub mod control;
pub mod datapath;
pub mod derp;
pub mod disco;
pub mod identity;
pub mod netmap;
pub mod node;
pub mod peers;
pub mod stun;
pub mod tun;
pub mod udp;

pub use control::Settings;
pub use datapath::{DirectPaths, Options};
pub use identity::Identity;
pub use node::{JoinError, Names, Node, ServiceTraffic};
