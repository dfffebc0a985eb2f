//! `cargo xtask box`: an FCOS-like host in a container (systemd-nspawn, the real Ignition,
//! rootless podman), provisioned from our own `tailpod.ign`, running tailpod for real.
//!
//! * [`rootfs`]: the Debian trixie root filesystem (cached), the box's tweaks, Ignition.
//! * [`machine`]: boot, exec inside, stop.
//! * [`scenario`]: the end-to-end test; [`fleet`]: then a second host, one repo for both;
//!   [`operations`]: image updates with rollback, notifications and metrics.
//! * [`tailnet`]: the lab tailnet on the host, and the box's link to it.

pub mod fleet;
pub mod machine;
pub mod operations;
pub mod rootfs;
pub mod scenario;
pub mod serve;
pub mod tailnet;

use std::path::PathBuf;
use std::process::Command;

/// Where a box keeps its files, and which host of the lab network it is.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The debootstrap tarball and downloaded packages, kept between runs.
    pub cache: PathBuf,
    /// This run's files (rootfs, repo, logs), made anew by `up`; shared by the hosts.
    pub work: PathBuf,
    pub rootfs: PathBuf,
    /// The machine's name, which is also its hostname (so `%H` in `QUADSYNC_PATHS`).
    pub name: &'static str,
    /// Its address on the lab network (`host0`).
    pub ip: &'static str,
}

impl Default for Layout {
    /// The first host, which runs the whole scenario.
    fn default() -> Layout {
        let base = PathBuf::from("/var/tmp/tailpod-box");
        Layout {
            cache: base.join("cache"),
            work: base.join("work"),
            rootfs: base.join("work/rootfs"),
            name: "tailpod-box",
            ip: "10.77.0.2",
        }
    }
}

impl Layout {
    /// The second host of the fleet test: same lab, same repo, a rootfs of its own.
    pub fn second_host(&self) -> Layout {
        Layout {
            rootfs: self.work.join("rootfs-b"),
            name: "tailpod-b",
            ip: "10.77.0.3",
            ..self.clone()
        }
    }

    /// A file of this host's in the shared work directory.
    pub fn own(&self, file: &str) -> PathBuf {
        self.work.join(format!("{}-{file}", self.name))
    }
}

/// Runs a command (no shell), returning its standard output; a failure carries its output.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args);
    output(&mut command)
}

/// Runs `command`, returning its standard output; a failure carries its command line and output.
pub fn output(command: &mut Command) -> Result<String, String> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = command.output().map_err(|e| format!("{line}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{line}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the box cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix_is_root() {
        return Some("needs root".into());
    }
    if !std::path::Path::new("/sys/fs/cgroup/unified").is_dir()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        return Some("needs a cgroup v2 hierarchy".into());
    }
    None
}

fn nix_is_root() -> bool {
    run("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0")
}
