//! The `/safemeet/deliver/1` protocol: one padded frame in, a short answer
//! out, each length-prefixed and size-checked before it is read.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;

/// The direct-delivery protocol name.
pub const DELIVER_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/deliver/1");

/// Largest answer to a delivery (an acknowledgement, not content).
pub const MAX_REPLY_BYTES: usize = 1024;

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_limited<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    max: usize,
) -> io::Result<()> {
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a message of {} bytes exceeds the limit of {max}",
                bytes.len()
            ),
        ));
    }
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

/// The relay mailbox protocol name (see `safemeet_proto::mailbox`).
pub const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/mailbox/1");

/// Length-prefixed frames: a 4-byte big-endian length, then the bytes;
/// requests up to `REQUEST` bytes and answers up to `RESPONSE`, each
/// checked before it is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitedCodec<const REQUEST: usize, const RESPONSE: usize>;

/// The direct-delivery codec: requests up to [`MAX_ENVELOPE_BYTES`] (a
/// padded envelope), answers up to [`MAX_REPLY_BYTES`].
pub type FrameCodec = LimitedCodec<MAX_ENVELOPE_BYTES, MAX_REPLY_BYTES>;

/// The mailbox codec: requests up to
/// [`safemeet_proto::mailbox::MAX_REQUEST_BYTES`] (a deposit), answers up
/// to [`safemeet_proto::mailbox::MAX_RESPONSE_BYTES`] (a page of envelopes).
pub type MailboxCodec = LimitedCodec<
    { safemeet_proto::mailbox::MAX_REQUEST_BYTES },
    { safemeet_proto::mailbox::MAX_RESPONSE_BYTES },
>;

impl<const REQUEST: usize, const RESPONSE: usize> Codec for LimitedCodec<REQUEST, RESPONSE> {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, REQUEST).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, RESPONSE).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_limited(io, &req, REQUEST).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_limited(io, &res, RESPONSE).await
    }
}
