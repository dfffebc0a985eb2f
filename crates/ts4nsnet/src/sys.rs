//! The few system calls the safe wrappers we use do not cover. This is the only module of the
//! workspace allowed `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Takes ownership of an fd number podman passed on the command line (`-r`, `-e`).
pub fn take_fd(number: i32) -> io::Result<OwnedFd> {
    if number < 3 {
        return Err(io::Error::other(format!("fd {number} is stdin, stdout or stderr")));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if it is not open.
    if unsafe { libc::fcntl(number, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(format!("fd {number} is not open")));
    }
    // SAFETY: the fd is open (checked above), was handed to this process by its parent for this
    // purpose, and is taken exactly once (the caller consumes the flag's value).
    Ok(unsafe { OwnedFd::from_raw_fd(number) })
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens `/dev/net/tun` and creates (or attaches to) TUN interface `name` in the calling
/// thread's network namespace. Non-blocking, no packet-information header.
pub fn create_tun(name: &str) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::other(format!("{name:?} is not a valid interface name")));
    }
    // SAFETY: ifreq is plain old data, so all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: TUNSETIFF reads one ifreq, which lives until the call returns; fd is open.
    if unsafe { libc::ioctl(fd, TUNSETIFF, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// Removes a variable from this process's environment so nothing it starts inherits it.
///
/// Must be called before any other thread exists (the first thing `main` does).
pub fn remove_env_before_threads(key: &str) {
    // SAFETY: the caller guarantees no other thread runs, so nothing reads the environment
    // concurrently (the only hazard of remove_var).
    unsafe { std::env::remove_var(key) }
}

/// Watches `fd` with tokio's reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open, is only closed when dropped (which the AsyncFd owning it
    // controls), and always reports the same raw fd.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}
