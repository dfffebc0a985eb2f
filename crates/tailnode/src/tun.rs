//! The packet device: a TUN fd (or anything that reads and writes one IP packet per call), read
//! in batches under tokio.

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};

use tokio::io::unix::AsyncFd;
use ts_packet::PacketMut;

/// The most packets taken from the device per batch.
pub const BATCH: usize = 64;

/// A non-blocking packet device.
#[derive(Debug)]
pub struct Tun(AsyncFd<OwnedFd>);

impl Tun {
    /// Takes the fd and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Tun> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: an OwnedFd is open, is closed only when dropped (by the AsyncFd that owns
        // it), and always reports the same raw fd: what `register` asks of its caller.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register(fd) };
        registered.map(Tun).map_err(|e| io::Error::other(e.to_string()))
    }

    /// Waits for packets, then reads up to [`BATCH`] of them into `out` (cleared first); at
    /// least one unless it returns `Ok(false)`: the device is gone (end of file).
    pub async fn read_batch(
        &self,
        scratch: &mut [u8],
        out: &mut Vec<PacketMut>,
    ) -> io::Result<bool> {
        out.clear();
        while out.is_empty() {
            let mut ready = self.0.readable().await?;
            while out.len() < BATCH {
                let read = ready
                    .try_io(|fd| nix::unistd::read(fd.get_ref(), scratch).map_err(io::Error::from));
                match read {
                    Ok(Ok(0)) => return Ok(!out.is_empty()),
                    Ok(Ok(len)) => out.push(PacketMut::from(&scratch[..len])),
                    Ok(Err(e)) if out.is_empty() => return Err(e),
                    // An error after some packets comes back on the next read; WouldBlock
                    // (the readiness was stale) means wait again.
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
        Ok(true)
    }

    /// Writes one packet, waiting while the device is full.
    pub async fn write(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.0.writable().await?;
            let written = ready.try_io(|fd| {
                nix::unistd::write(fd.get_ref().as_fd(), packet).map_err(io::Error::from)
            });
            match written {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}
