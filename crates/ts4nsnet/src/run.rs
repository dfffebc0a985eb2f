//! The slirp4netns-compatible mode, start to finish: interface, node, bridge, ready byte, and
//! waiting for the reason to stop.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::SlirpArgs;
use crate::config::NodeConfig;
use crate::egress::{self, Policy, policy};
use crate::netns::{self, Interface, TAILNET_MTU};
use crate::{node, service, sys};

/// How long to wait for a DERP connection before saying ready anyway.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to check that the container's namespace still exists.
const NETNS_POLL: Duration = Duration::from_secs(2);

pub async fn run(args: SlirpArgs, config: NodeConfig) -> Result<(), String> {
    // `main` checked already; a library caller may not have, and adopting one fd twice aborts.
    args.check()?;
    let ready =
        args.ready_fd.map(sys::take_fd).transpose().map_err(|e| format!("--ready-fd: {e}"))?;
    let exit = args.exit_fd.map(sys::take_fd).transpose().map_err(|e| format!("--exit-fd: {e}"))?;
    let netns = args.netns()?;
    let policy = egress_policy(&args)?;
    let mtu = link_mtu(config.egress, args.mtu);
    let mut interface = Interface::create(&netns, &args.tap_name)?;
    let mut node = node::join(&config).await?;
    let ipv6 = args.enable_ipv6.then_some(node.ipv6);
    if args.configure
        && let Err(e) = interface.configure(node.ipv4, ipv6, mtu)
    {
        node.shutdown().await;
        return Err(e);
    }
    let mut traffic = match node.start(interface.tun) {
        Ok(traffic) => traffic,
        Err(e) => {
            node.shutdown().await;
            return Err(format!("starting the data path: {e}"));
        }
    };
    let egress = traffic.egress.take().map(|packets| {
        let tun = traffic.tun.clone();
        tokio::spawn(egress::run(packets, tun, policy, egress::Limits::default(), mtu as usize))
    });
    let dns = tokio::spawn(service::serve(traffic, node.names(), node.tailnet.clone()));
    // "Ready" should mean peers can reach us: until a DERP region carries us, their first
    // handshake is lost and WireGuard waits five seconds to try again.
    if !node.reachable(REACHABLE_TIMEOUT).await {
        log::warn!("no DERP region reachable yet; peers reach this node once one is");
    }
    log::info!(
        "{} is on the tailnet as {} ({}{}), interface {} in {}",
        node.hostname,
        node.ipv4,
        node.ipv6,
        node.tailnet.as_deref().map(|t| format!(", {t}")).unwrap_or_default(),
        interface.name,
        netns::netns_path(&netns).display()
    );
    if let Some(file) = &args.status_file {
        let status = Status {
            hostname: node.hostname.clone(),
            tailnet: node.tailnet.clone(),
            ipv4: node.ipv4,
            ipv6: ipv6.is_some().then_some(node.ipv6),
            interface: args.tap_name.clone(),
        };
        status.write(file).map_err(|e| format!("--status-file {}: {e}", file.display()))?;
    }
    if let Some(ready) = ready {
        std::fs::File::from(ready).write_all(b"1").map_err(|e| format!("--ready-fd: {e}"))?;
    }

    let netns_path = netns::netns_path(&netns);
    let reason = tokio::select! {
        reason = exit_fd_closed(exit) => reason,
        reason = terminated() => reason,
        reason = netns_gone(&netns_path) => reason,
        reason = node.stopped() => format!("the container's interface went away ({reason})"),
    };
    log::info!("stopping: {reason}");
    dns.abort();
    if let Some(egress) = egress {
        egress.abort();
    }
    node.shutdown().await;
    Ok(())
}

/// slirp4netns's default MTU, when podman passes none.
const SLIRP_DEFAULT_MTU: u32 = 1500;
/// The largest MTU slirp4netns takes (podman's default for it).
const MAX_MTU: u32 = 65520;

/// The container interface's MTU: `--mtu` (as slirp4netns takes it) when the internet is
/// reached through the host, else the tailnet's, which is all the tailnet carries.
fn link_mtu(egress: bool, asked: Option<u32>) -> u32 {
    match egress {
        true => asked.unwrap_or(SLIRP_DEFAULT_MTU).clamp(TAILNET_MTU, MAX_MTU),
        false => TAILNET_MTU,
    }
}

/// Where the container may go on the host's network, from podman's slirp4netns flags.
fn egress_policy(args: &SlirpArgs) -> Result<Policy, String> {
    let outbound = |flag: &str, value: &Option<String>, v6: bool| {
        value.as_deref().map(|value| policy::outbound_address(flag, value, v6)).transpose()
    };
    // Each of its family: outbound_address refuses the other.
    Ok(Policy {
        host_loopback: !args.disable_host_loopback,
        ipv6: args.enable_ipv6,
        outbound_v4: outbound("--outbound-addr", &args.outbound_addr, false)?,
        outbound_v6: outbound("--outbound-addr6", &args.outbound_addr6, true)?,
    })
}

/// What `--status-file` holds once the node is ready.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub hostname: String,
    /// The MagicDNS suffix, when control sent one.
    pub tailnet: Option<String>,
    pub ipv4: std::net::Ipv4Addr,
    /// Set when the interface got the IPv6 address too.
    pub ipv6: Option<std::net::Ipv6Addr>,
    pub interface: String,
}

impl Status {
    /// Writes beside `path` and renames over it. A leftover (or planted) partial file is
    /// unlinked, never written through, and the new one is created exclusively.
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let partial = path.with_extension("partial");
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&partial)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&partial, path)
    }
}

async fn exit_fd_closed(exit: Option<OwnedFd>) -> String {
    let Some(fd) = exit else { return std::future::pending().await };
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)
        .map(nix::fcntl::OFlag::from_bits_truncate)
        .unwrap_or(nix::fcntl::OFlag::empty());
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    );
    let Ok(fd) = sys::async_fd(fd) else { return "the exit fd cannot be watched".into() };
    let mut buffer = [0u8; 64];
    loop {
        let Ok(mut ready) = fd.readable().await else { return "the exit fd failed".into() };
        match ready
            .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buffer).map_err(std::io::Error::from))
        {
            Ok(Ok(0)) | Ok(Err(_)) => return "podman closed the exit fd".into(),
            Ok(Ok(_)) | Err(_) => continue,
        }
    }
}

async fn terminated() -> String {
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".into(),
        _ = int.recv() => "SIGINT".into(),
    }
}

async fn netns_gone(path: &Path) -> String {
    loop {
        tokio::time::sleep(NETNS_POLL).await;
        if std::fs::metadata(path).is_err() {
            return format!("the network namespace {} is gone", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtu_is_podmans_for_egress_and_the_tailnets_without() {
        assert_eq!(link_mtu(true, Some(65520)), 65520);
        assert_eq!(link_mtu(true, None), 1500);
        assert_eq!(link_mtu(true, Some(576)), TAILNET_MTU);
        assert_eq!(link_mtu(true, Some(100_000)), 65520);
        assert_eq!(link_mtu(false, Some(65520)), TAILNET_MTU);
    }

    #[test]
    fn the_status_file_is_never_written_through_a_planted_link() {
        let dir = std::env::temp_dir().join(format!("ts4nsnet-status-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.join("status.json");
        std::os::unix::fs::symlink(&victim, path.with_extension("partial")).unwrap();
        let status = Status {
            hostname: "web".into(),
            tailnet: None,
            ipv4: std::net::Ipv4Addr::new(100, 64, 0, 1),
            ipv6: None,
            interface: "tailscale0".into(),
        };
        status.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"web\""));
        assert!(!path.with_extension("partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
