//! The container's side: a TUN interface created inside its network namespace, configured over
//! netlink.
//!
//! Namespace membership is per thread, so the TUN and a netlink socket are opened on a short
//! thread that joins the namespace and then ends; both descriptors stay bound to the container's
//! namespace and are used from ordinary threads afterwards (no thread is left behind).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;

use crate::cli::Netns;
use crate::netlink::Netlink;
use crate::sys;

/// The tailnet's MTU: what Tailscale's WireGuard carries everywhere.
pub const TAILNET_MTU: u32 = 1280;
const LOOPBACK_INDEX: u32 = 1;

/// Where the namespace lives in the filesystem.
pub fn netns_path(netns: &Netns) -> PathBuf {
    match netns {
        Netns::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        Netns::Path(path) => path.clone(),
    }
}

/// A TUN interface in a container's namespace.
#[derive(Debug)]
pub struct Interface {
    pub tun: OwnedFd,
    pub name: String,
    pub index: u32,
    netlink: Netlink,
}

impl Interface {
    /// Creates TUN `name` in `netns`.
    pub fn create(netns: &Netns, name: &str) -> Result<Interface, String> {
        let path = netns_path(netns);
        let namespace = std::fs::File::open(&path)
            .map_err(|e| format!("opening the network namespace {}: {e}", path.display()))?;
        let name = name.to_owned();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("joining {}: {e}", path.display()))?;
                    let tun =
                        sys::create_tun(&name).map_err(|e| format!("creating TUN {name}: {e}"))?;
                    let index = nix::net::if_::if_nametoindex(name.as_str())
                        .map_err(|e| format!("finding {name}: {e}"))?;
                    let netlink = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
                    Ok(Interface { tun, name: name.clone(), index, netlink })
                })
                .join()
                .map_err(|_| "the namespace thread panicked".to_owned())?
        })
    }

    /// Brings `lo` and the TUN up, and gives the TUN the node's addresses and the default
    /// routes, as slirp4netns's `--configure` does for its tap.
    pub fn configure(&mut self, ipv4: Ipv4Addr, ipv6: Option<Ipv6Addr>) -> Result<(), String> {
        let name = self.name.clone();
        let fail = |e: std::io::Error| format!("{name}: {e}");
        self.netlink.link_up(LOOPBACK_INDEX, None).map_err(|e| format!("lo: {e}"))?;
        self.netlink.link_up(self.index, Some(TAILNET_MTU)).map_err(fail)?;
        self.netlink.add_address(self.index, IpAddr::V4(ipv4), 32).map_err(fail)?;
        self.netlink.add_default_route(self.index, IpAddr::V4(ipv4)).map_err(fail)?;
        if let Some(ipv6) = ipv6 {
            let ip = IpAddr::V6(ipv6);
            self.netlink.add_address(self.index, ip, 128).map_err(fail)?;
            self.netlink.add_default_route(self.index, ip).map_err(fail)?;
        }
        Ok(())
    }
}
