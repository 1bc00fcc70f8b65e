//! Moving sealed frames from one device to another over a stream: one
//! stream per sender→receiver, each frame a 2-byte big-endian length and
//! the frame (1 to [`MAX_FRAME_BYTES`] bytes).
//!
//! The sending side never waits on the network: [`SendQueue`] holds at
//! most [`MAX_QUEUED`] frames and a new one pushes the oldest out (late
//! audio is worth less than current audio), and [`pump`] writes what it
//! holds as the stream takes it. [`MediaLink`] is the seam a datagram
//! transport (QUIC datagrams, once libp2p carries them) can fill in
//! instead of a stream.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::sframe::MAX_FRAME_BYTES;

/// Frames a sender holds for one receiver at most.
pub const MAX_QUEUED: usize = 3;
/// A write the receiver does not take within this ends the stream.
pub const WRITE_STALL: Duration = Duration::from_secs(5);

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A length of 0 or over [`MAX_FRAME_BYTES`]: not a media frame.
    #[error("a frame of {0} bytes")]
    BadLength(usize),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a link counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Frames handed to the link.
    pub queued: u64,
    /// Frames written to the stream.
    pub sent: u64,
    /// Frames pushed out of the queue by newer ones.
    pub dropped: u64,
}

/// Where a sender's frames for one receiver go.
pub trait MediaLink: Send + Sync {
    /// Hands over a frame; never waits.
    fn send(&self, frame: Vec<u8>);
    /// What it counted.
    fn stats(&self) -> LinkStats;
}

/// A sender's frames for one receiver, waiting for the stream.
#[derive(Debug, Default)]
pub struct SendQueue {
    frames: Mutex<VecDeque<Vec<u8>>>,
    ready: tokio::sync::Notify,
    closed: AtomicBool,
    queued: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

impl SendQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        match self.frames.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queues a frame; the oldest goes when [`MAX_QUEUED`] are waiting.
    pub fn push(&self, frame: Vec<u8>) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        {
            let mut frames = self.lock();
            if frames.len() >= MAX_QUEUED {
                frames.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            frames.push_back(frame);
        }
        self.ready.notify_one();
    }

    /// Ends the queue: [`next`](Self::next) gives `None` once it is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// The oldest frame waiting, once there is one; `None` when closed.
    pub async fn next(&self) -> Option<Vec<u8>> {
        loop {
            if let Some(frame) = self.lock().pop_front() {
                return Some(frame);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.ready.notified().await;
        }
    }

    /// How many frames wait now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MediaLink for SendQueue {
    fn send(&self, frame: Vec<u8>) {
        self.push(frame);
    }

    fn stats(&self) -> LinkStats {
        LinkStats {
            queued: self.queued.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Writes one frame: its length, then its bytes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), TransportError> {
    let len = u16::try_from(frame.len())
        .ok()
        .filter(|l| *l > 0 && usize::from(*l) <= MAX_FRAME_BYTES)
        .ok_or(TransportError::BadLength(frame.len()))?;
    let mut buf = Vec::with_capacity(2 + frame.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(frame);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame; `None` when the stream ends between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, TransportError> {
    let mut len = [0u8; 2];
    match reader.read(&mut len[..1]).await? {
        0 => return Ok(None),
        _ => reader
            .read_exact(&mut len[1..])
            .await
            .map_err(|_| TransportError::Truncated)?,
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_FRAME_BYTES {
        return Err(TransportError::BadLength(len));
    }
    let mut frame = vec![0u8; len];
    reader
        .read_exact(&mut frame)
        .await
        .map_err(|_| TransportError::Truncated)?;
    Ok(Some(frame))
}

/// Writes the queue's frames to `writer` until the queue is closed and
/// empty, or a write fails or stalls for [`WRITE_STALL`].
pub async fn pump<W: AsyncWrite + Unpin>(
    queue: &SendQueue,
    mut writer: W,
) -> Result<(), TransportError> {
    while let Some(frame) = queue.next().await {
        tokio::time::timeout(WRITE_STALL, write_frame(&mut writer, &frame))
            .await
            .map_err(|_| {
                TransportError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the receiver stopped reading",
                ))
            })??;
        queue.sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = writer.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn the_queue_holds_three_and_pushes_the_oldest_out() {
        let queue = SendQueue::new();
        for i in 0..10u8 {
            queue.push(vec![i]);
            assert!(queue.len() <= MAX_QUEUED);
        }
        let stats = queue.stats();
        assert_eq!((stats.queued, stats.dropped), (10, 7));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(queue.next().await, Some(vec![7]));
            assert_eq!(queue.next().await, Some(vec![8]));
            queue.close();
            assert_eq!(queue.next().await, Some(vec![9]));
            assert_eq!(queue.next().await, None);
        });
    }

    #[test]
    fn frames_round_trip_and_bad_lengths_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut wire = Vec::new();
            write_frame(&mut wire, b"one").await.unwrap();
            write_frame(&mut wire, &[7; MAX_FRAME_BYTES]).await.unwrap();
            assert!(matches!(
                write_frame(&mut wire, &[]).await,
                Err(TransportError::BadLength(0))
            ));
            assert!(matches!(
                write_frame(&mut wire, &[1; MAX_FRAME_BYTES + 1]).await,
                Err(TransportError::BadLength(_))
            ));
            let mut r = futures::io::Cursor::new(wire);
            assert_eq!(read_frame(&mut r).await.unwrap(), Some(b"one".to_vec()));
            assert_eq!(
                read_frame(&mut r).await.unwrap().unwrap().len(),
                MAX_FRAME_BYTES
            );
            assert!(read_frame(&mut r).await.unwrap().is_none());
            for hostile in [
                vec![0xff, 0xff, 1, 2],
                vec![0, 0],
                vec![0, 9, 1, 2],
                vec![0],
            ] {
                let mut r = futures::io::Cursor::new(hostile.clone());
                assert!(read_frame(&mut r).await.is_err(), "{hostile:?}");
            }
        });
    }
}
