//! The server side of Tailscale's ts2021 transport: a Noise IK handshake carried in an HTTP
//! upgrade, then an encrypted byte stream that HTTP/2 runs over.
//!
//! The cryptography is tailscale-rs's own (`ts_noise`, `ts_control_noise`); this module only
//! plays the responder's part, which the published crates leave to the control server.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;
use tokio_util::io::{CopyToBytes, SinkWriter, StreamReader};
use ts_control_noise::{BiCodec, Header, MessageType};
use ts_keys::{MachineKeyPair, MachinePublicKey};
use ts_noise::ik::ReceivedHandshake;

/// Length of the capability version that precedes the Noise header in an initiation.
const VERSION_LEN: usize = 2;
const HEADER_LEN: usize = 3;

/// A checked initiation: who is calling, and how to answer.
pub(crate) struct Accepted {
    pub machine_key: MachinePublicKey,
    handshake: ReceivedHandshake,
}

/// Checks the `X-Tailscale-Handshake` header of an upgrade request against the server's key.
pub(crate) fn accept(header: &str, server_key: &MachineKeyPair) -> Result<Accepted, String> {
    let raw =
        STANDARD.decode(header.trim()).map_err(|e| format!("handshake is not base64: {e}"))?;
    if raw.len() != VERSION_LEN + HEADER_LEN + ts_noise::ik::SentHandshake::INIT_SIZE {
        return Err(format!("handshake has {} bytes", raw.len()));
    }
    let version = u16::from_be_bytes([raw[0], raw[1]]);
    if raw[VERSION_LEN] != MessageType::Initiation as u8 {
        return Err("handshake is not an initiation".into());
    }
    let prologue = format!("Tailscale Control Protocol v{version}");
    let mut payload = raw[VERSION_LEN + HEADER_LEN..].to_vec();
    let handshake =
        ReceivedHandshake::new(&mut payload, prologue.as_bytes(), &server_key.to_x25519_dalek())
            .ok_or("handshake did not verify against the control key")?;
    let machine_key = MachinePublicKey::from_bytes(handshake.peer_static_pub.to_bytes());
    Ok(Accepted { machine_key, handshake })
}

impl Accepted {
    /// Sends the handshake response on the upgraded connection and returns the encrypted stream.
    pub(crate) async fn finish<T>(
        self,
        mut io: T,
    ) -> std::io::Result<impl AsyncRead + AsyncWrite + Unpin>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut response = vec![0; ReceivedHandshake::RESP_SIZE];
        let session = self.handshake.finish(&mut response);
        let len = u16::try_from(response.len()).expect("a handshake response fits in a frame");
        let mut message = vec![MessageType::Response as u8];
        message.extend_from_slice(&len.to_be_bytes());
        message.extend_from_slice(&response);
        debug_assert_eq!(size_of::<Header>(), HEADER_LEN);
        io.write_all(&message).await?;
        io.flush().await?;

        let (sink, stream) = Framed::new(io, BiCodec::from(session)).split::<Bytes>();
        let reader = StreamReader::new(stream.map_ok(BytesMut::freeze));
        let writer = SinkWriter::new(CopyToBytes::new(sink));
        Ok(tokio::io::join(reader, writer))
    }
}
