//! One repo, many hosts: the rules for `QUADSYNC_PATHS` and `{{.Host}}` are tailpod-core's
//! ([`tailpod_core::fleet`]: build-ign checks a config.env by them too); who this host is, read
//! from the machine, is here.

pub use tailpod_core::fleet::*;

/// This machine: its hostname, machine id and architecture.
pub fn this_host() -> Result<HostIdentity, String> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("reading the hostname: {e}"))?
        .trim()
        .to_owned();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    Ok(HostIdentity { hostname, machine_id, arch: local_arch().to_owned() })
}
