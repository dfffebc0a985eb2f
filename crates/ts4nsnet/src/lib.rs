//! ts4nsnet: the network command podman runs instead of slirp4netns, making the container its own
//! tailnet node.
//!
//! * [`cli`]: the slirp4netns-compatible command line, in every form podman 4.3 and 5.x use.

pub mod cli;
