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
pub const TAILNET_MTU: u32 = tailnode::datapath::TAILNET_MTU as u32;
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
    /// routes, as slirp4netns's `--configure` does for its tap. With an `mtu` above the
    /// tailnet's (host egress, which may use podman's larger MTU), the tailnet's own ranges get
    /// routes of their own at [`TAILNET_MTU`], so only the internet sees the bigger packets.
    pub fn configure(
        &mut self,
        ipv4: Ipv4Addr,
        ipv6: Option<Ipv6Addr>,
        mtu: u32,
    ) -> Result<(), String> {
        let name = self.name.clone();
        let fail = |e: std::io::Error| format!("{name}: {e}");
        let mtu = mtu.max(TAILNET_MTU);
        let tailnet_route = (mtu > TAILNET_MTU).then_some(TAILNET_MTU);
        self.netlink.link_up(LOOPBACK_INDEX, None).map_err(|e| format!("lo: {e}"))?;
        self.netlink.link_up(self.index, Some(mtu)).map_err(fail)?;
        // The tailnet's ranges, tailnode's, routed at the tailnet's MTU.
        let v4 = tailnode::datapath::TAILNET_V4;
        let v6 = tailnode::datapath::TAILNET_V6;
        let mut families =
            vec![(IpAddr::V4(ipv4), 32, (IpAddr::V4(v4.network()), v4.prefix_len()))];
        families.extend(
            ipv6.map(|ipv6| (IpAddr::V6(ipv6), 128, (IpAddr::V6(v6.network()), v6.prefix_len()))),
        );
        for (ip, host_prefix, (range, prefix)) in families {
            self.netlink.add_address(self.index, ip, host_prefix).map_err(fail)?;
            self.netlink.add_route(self.index, ip, None, None).map_err(fail)?;
            if let Some(route_mtu) = tailnet_route {
                let to = Some((range, prefix));
                self.netlink.add_route(self.index, ip, to, Some(route_mtu)).map_err(fail)?;
            }
        }
        Ok(())
    }
}
