//! The `/safemeet/deliver/1` protocol: one padded frame in, a short answer
//! out, each length-prefixed and size-checked before it is read.
//!
//! A body is read as it arrives, never allocated at its announced length
//! up front: a peer that announces the largest frame and sends nothing
//! costs a small buffer, not the frame. An inbound request must arrive
//! whole within the codec's read timeout (see [`LimitedCodec::read_timeout`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;

/// The direct-delivery protocol name.
pub const DELIVER_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/deliver/1");

/// Largest answer to a delivery (an acknowledgement, not content).
pub const MAX_REPLY_BYTES: usize = 1024;

/// The buffer a body starts in; it grows as bytes arrive, up to the length
/// announced. 8 KiB: a typical chat frame (padded to a few KiB) fits, and a
/// stalled stream holds no more than this.
const FIRST_READ: usize = 8 * 1024;

/// How long an inbound request may take to arrive whole, by default. 5 s:
/// the largest request (64 KiB) needs only 13 KiB/s, and a stalled stream
/// is given up on long before the request timeout (10 s on a daemon, 30 s
/// on a relay) would end it.
pub const INBOUND_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a length-prefixed message of at most `max` bytes, growing its
/// buffer only as bytes arrive.
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
    let mut buf = Vec::with_capacity(len.min(FIRST_READ));
    // `len` fits in u64: it is at most `max`, a usize.
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended after {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

/// [`read_limited`] within `timeout`; a stalled read fails with
/// [`io::ErrorKind::TimedOut`].
async fn read_within<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    match tokio::time::timeout(timeout, read_limited(io, max)).await {
        Ok(read) => read,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "an inbound request did not arrive in time",
        )),
    }
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

/// Inbound requests a codec refused before they were read whole, shared
/// by every stream's copy of the codec. libp2p reports no event for them
/// (the request never existed for it), so the node reads these counts.
#[derive(Debug, Default)]
pub struct StreamRefusals {
    stalled: AtomicU64,
    bad: AtomicU64,
}

impl StreamRefusals {
    /// Takes the counts since the last call: streams that stalled past
    /// the read timeout, and streams that announced too much or broke off.
    pub fn take(&self) -> (u64, u64) {
        (
            self.stalled.swap(0, Ordering::Relaxed),
            self.bad.swap(0, Ordering::Relaxed),
        )
    }

    fn count(&self, error: &io::Error) {
        let counter = match error.kind() {
            io::ErrorKind::TimedOut => &self.stalled,
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => &self.bad,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Length-prefixed frames: a 4-byte big-endian length, then the bytes;
/// requests up to `REQUEST` bytes and answers up to `RESPONSE`, each
/// checked before it is read, and read as they arrive. An inbound request
/// must arrive whole within [`read_timeout`](Self::read_timeout) (answers
/// are bounded by the request timeout of `request_response`); the ones
/// that do not, or announce too much, are counted in [`StreamRefusals`].
#[derive(Debug, Clone)]
pub struct LimitedCodec<const REQUEST: usize, const RESPONSE: usize> {
    read_timeout: Duration,
    refusals: Arc<StreamRefusals>,
}

impl<const REQUEST: usize, const RESPONSE: usize> Default for LimitedCodec<REQUEST, RESPONSE> {
    fn default() -> Self {
        Self::new(INBOUND_READ_TIMEOUT, Arc::default())
    }
}

impl<const REQUEST: usize, const RESPONSE: usize> LimitedCodec<REQUEST, RESPONSE> {
    /// A codec whose inbound requests must arrive whole within `timeout`,
    /// counting those refused in `refusals`.
    pub fn new(read_timeout: Duration, refusals: Arc<StreamRefusals>) -> Self {
        Self {
            read_timeout,
            refusals,
        }
    }

    /// How long an inbound request may take to arrive whole.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }
}

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
        let read = read_within(io, REQUEST, self.read_timeout).await;
        if let Err(e) = &read {
            self.refusals.count(e);
        }
        read
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
