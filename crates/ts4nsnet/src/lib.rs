//! ts4nsnet: the network command podman runs instead of slirp4netns, making the container its own
//! tailnet node.
//!
//! * [`cli`]: the slirp4netns-compatible command line, in every form podman 4.3 and 5.x use.
//! * [`config`]: the node's settings from the environment.
//! * [`netns`] and [`netlink`]: the TUN inside the container's namespace, configured over
//!   netlink.
//! * [`node`]: the container's tailnet node, on the `tailnode` crate (which carries packets
//!   between the TUN and the tailnet itself).
//! * [`service`], [`dns`]: quad-100 DNS inside the container.
//! * [`egress`]: the host's network for what is not on the tailnet (TCP ended by smoltcp,
//!   UDP relayed per flow), within podman's loopback and IPv6 settings.
//! * [`run`]: the whole lifecycle podman sees.
//! * [`plugin`]: the same as a netavark plugin (podman 5 and later).

pub mod cli;
pub mod config;
pub mod dns;
pub mod egress;
pub mod netlink;
pub mod netns;
pub mod node;
pub mod plugin;
pub mod run;
pub mod service;
pub mod sys;
