//! quadsync: deploy rootless Podman Quadlet containers from a git repository, one Linux user per
//! container.
//!
//! The flow of a sync, one module a step:
//!
//! * [`config`] reads `/etc/quadsync/config.env`; [`fleet`]: which of the repo's directories
//!   this host deploys (`QUADSYNC_PATHS`), and who the host is.
//! * [`repo`] fetches the definitions repo (gix; smart HTTP through `http.rs`); [`source`] is
//!   the one rule for reading its files, from a commit or a directory.
//! * [`transforms`] and [`render`]: from a spec file to the exact text deployed (shared by
//!   `augment` and `sync`); [`discover`]: from all the files to each user's deployment;
//!   [`validate`]: what changed, checked by podman's own generator.
//! * [`state`]: what quadsync deployed and owns; [`plan`]: what to do, as data.
//! * [`apply`]: doing it through [`system`], the narrow interface to the host; [`userfile`]: the
//!   file work done as the container's user.
//! * [`watch`], after each run: what happened to the containers ([`journal`]), the problems
//!   and recoveries ([`health`]) sent to webhooks ([`notify`]), the [`metrics`]; image updates
//!   are podman's own ([`autoupdate`]).
//! * [`sync`]: the whole run, locked, with its safety rules. [`check`]: the repo as one host
//!   or every host of a fleet would deploy it, without a host.

pub mod apply;
pub mod autoupdate;
pub mod check;
pub mod config;
pub mod discover;
pub mod fleet;
pub mod health;
mod http;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod references;
pub mod render;
pub mod repo;
pub mod secrets;
pub mod source;
pub mod state;
pub mod sync;
pub mod system;
pub mod transforms;
pub mod userfile;
pub mod validate;
pub mod watch;
