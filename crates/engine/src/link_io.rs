//! The device link over a libp2p stream: framing, the Noise handshake with
//! the link's secret, and the bundle's transfer.
//!
//! Frames are a 4-byte big-endian length and at most
//! [`MAX_LINK_FRAME`](safemeet_crypto::link::MAX_LINK_FRAME) bytes. The new
//! device sends the first and third handshake messages; the third carries
//! its [`Hello`] (how many days of history it wants). The linking device
//! then sends the bundle's length and the bundle in sealed frames, and the
//! new device answers one sealed `ok` once it has it all. A wrong secret
//! fails the third message on the linking device, which closes the stream
//! without having changed anything; the new device sees the stream end
//! and says the link was refused.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::link::{LinkChannel, LinkHandshake, MAX_LINK_FRAME, MAX_LINK_PLAINTEXT};
use safemeet_proto::codec;
use safemeet_proto::link::LinkOffer;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::link::MAX_BUNDLE_BYTES;

/// What the new device says in the handshake's last message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Hello {
    version: u8,
    /// Days of history wanted.
    pub(crate) days: u32,
}

const HELLO_VERSION: u8 = 1;
/// How long a whole link may take.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(120);
/// What the new device says when the stream ends before the channel
/// opened: the linking device refused it.
const REFUSED: &str = "the other device refused the link: the link is wrong, already used or expired (show a new one with `safemeet device link`)";

fn io(e: std::io::Error) -> Error {
    Error::Link(format!("the stream broke: {e}"))
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::Link("a frame is too large".into()))?;
    w.write_all(&len.to_be_bytes()).await.map_err(io)?;
    w.write_all(bytes).await.map_err(io)?;
    w.flush().await.map_err(io)
}

/// Reads one frame; `None` when the stream ended before it.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, Error> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_LINK_FRAME {
        return Err(Error::Link("the other side sent an oversized frame".into()));
    }
    let mut buf = vec![0; len];
    match r.read_exact(&mut buf).await {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// The new device's side: dials the device that showed `offer`, runs the
/// handshake and returns the bundle (secret: it holds the new device's
/// keys). Nothing is stored here.
pub async fn receive_bundle(
    offer: &LinkOffer,
    days: u32,
    now: safemeet_proto::Timestamp,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    receive_bundle_over(offer, days, now, None).await
}

/// [`receive_bundle`] over `transport` (a simulator's) instead of the
/// production transports.
pub async fn receive_bundle_over(
    offer: &LinkOffer,
    days: u32,
    now: safemeet_proto::Timestamp,
    transport: Option<&safemeet_net::CustomTransport>,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if now > offer.expires_at {
        return Err(Error::Link(
            "the link has expired (links last 10 minutes): show a new one".into(),
        ));
    }
    let peer = PeerId::from_bytes(&offer.peer_id)
        .map_err(|_| Error::Link("the link names no valid device".into()))?;
    let addrs: Vec<Multiaddr> = offer.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    if addrs.is_empty() {
        return Err(Error::Link("the link holds no usable address".into()));
    }
    let run = async {
        let mut link = safemeet_net::dial_link(peer, &addrs, LINK_TIMEOUT, transport).await?;
        let s = &mut link.stream;
        let mut hs = LinkHandshake::initiator(&offer.secret, &offer.peer_id)?;
        // Until the channel opens, a stream that ends or breaks is the
        // linking device refusing (it closes what it will not answer).
        let refused = |_| Error::Link(REFUSED.into());
        write_frame(s, &hs.write(&[])?).await.map_err(refused)?;
        let m2 = read_frame(s)
            .await
            .map_err(refused)?
            .ok_or_else(|| Error::Link(REFUSED.into()))?;
        hs.read(&m2)?;
        let hello = codec::encode(&Hello {
            version: HELLO_VERSION,
            days,
        })?;
        write_frame(s, &hs.write(&hello)?).await.map_err(refused)?;
        let mut channel = hs.finish()?;
        let first = read_frame(s)
            .await
            .map_err(refused)?
            .ok_or_else(|| Error::Link(REFUSED.into()))?;
        let len_bytes = channel.open(&first)?;
        let len: [u8; 8] = len_bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Link("the bundle's length is damaged".into()))?;
        let len = usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_BUNDLE_BYTES {
            return Err(Error::Link("the bundle is larger than allowed".into()));
        }
        let mut bundle = Zeroizing::new(Vec::with_capacity(len.min(16 << 20)));
        while bundle.len() < len {
            let frame = read_frame(s)
                .await?
                .ok_or_else(|| Error::Link("the linking device stopped sending".into()))?;
            bundle.extend_from_slice(&channel.open(&frame)?);
            if bundle.len() > len {
                return Err(Error::Link("the bundle is longer than announced".into()));
            }
        }
        write_frame(s, &channel.seal(b"ok")?).await?;
        let _ = s.close().await;
        Ok(bundle)
    };
    tokio::time::timeout(LINK_TIMEOUT, run)
        .await
        .map_err(|_| Error::Link("the link did not finish in time".into()))?
}

/// The linking device's handshake: reads the new device's hello. A wrong
/// secret fails here, before anything is asked of the core.
pub(crate) async fn answer_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &[u8; 32],
    own_peer: &PeerId,
) -> Result<(LinkChannel, Hello), Error> {
    let mut hs = LinkHandshake::responder(secret, &own_peer.to_bytes())?;
    let m1 = read_frame(s)
        .await?
        .ok_or_else(|| Error::Link("the new device left".into()))?;
    hs.read(&m1)?;
    write_frame(s, &hs.write(&[])?).await?;
    let m3 = read_frame(s)
        .await?
        .ok_or_else(|| Error::Link("the new device left".into()))?;
    let hello: Hello = codec::decode(&hs.read(&m3)?, 64)?;
    if hello.version != HELLO_VERSION {
        return Err(Error::Link("the new device runs another version".into()));
    }
    Ok((hs.finish()?, hello))
}

/// Sends the bundle and waits for the new device's `ok`.
pub(crate) async fn send_bundle<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    channel: &mut LinkChannel,
    bundle: &[u8],
) -> Result<(), Error> {
    write_frame(s, &channel.seal(&(bundle.len() as u64).to_be_bytes())?).await?;
    for chunk in bundle.chunks(MAX_LINK_PLAINTEXT) {
        write_frame(s, &channel.seal(chunk)?).await?;
    }
    let ok = read_frame(s)
        .await?
        .ok_or_else(|| Error::Link("the new device did not confirm".into()))?;
    if channel.open(&ok)?.as_slice() != b"ok" {
        return Err(Error::Link("the new device did not confirm".into()));
    }
    let _ = s.close().await;
    Ok(())
}
