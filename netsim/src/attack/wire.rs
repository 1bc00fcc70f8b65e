//! What the attackers put on the wire: junk and forged-looking frames for
//! direct delivery, hand-encoded gossipsub RPC frames (subscription floods,
//! GRAFT spam, junk messages on room topics), and mailbox requests that a
//! stranger can make (deposits to random mailboxes or with forged tags,
//! nonce floods, fetches signed with the wrong key, junk bytes).
//!
//! Gossipsub's own behaviour sends GRAFTs only for its mesh; to send them at
//! will, [`RawCodec`] writes hand-encoded RPC frames (protobuf, as in
//! libp2p-gossipsub 0.50's `rpc.proto`, each prefixed with its varint
//! length) on a gossipsub protocol id, as any peer could.

use std::io;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use rand::Rng;
use rand::rngs::StdRng;
use safemeet_proto::envelope::{OlmMessageKind, SealedRoomEnvelope, ToDeviceEnvelope};
use safemeet_proto::mailbox::{
    Authorized, Deposit, FetchParams, MAX_DEPOSIT_ITEMS, MailboxRequest, OpenParams, VERSION,
};
use safemeet_proto::{Envelope, MailboxId, codec};

/// The gossipsub protocol the raw frames go out on (the version the
/// daemon's gossipsub speaks among others).
pub const GOSSIP_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshsub/1.1.0");

/// Size of most junk frames and envelopes: a padded 2 KiB frame, what
/// most real frames are.
const TYPICAL: usize = 2048;
/// One junk delivery in this many carries the largest frame the protocol
/// allows (64 KiB), the costliest for the receiver to read.
const LARGE_EVERY: u32 = 10;

/// Writes a request's bytes as they are and reads no answer: gossipsub
/// answers nothing on the stream it reads, so a written frame is all there
/// is. A stream the peer refuses to negotiate fails before anything is
/// written (`UnsupportedProtocols`): the gate's doing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("an attacker serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        bytes: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&bytes).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field.
fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint protobuf field.
fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

/// What one raw gossipsub frame carries.
#[derive(Debug, Default)]
pub struct GossipFrame<'a> {
    /// Topics announced (SUBSCRIBE).
    pub subscribe: Vec<String>,
    /// Topics GRAFTed (each as many times as listed).
    pub graft: Vec<&'a str>,
    /// Messages published: (topic, data).
    pub publish: Vec<(&'a str, Vec<u8>)>,
}

impl GossipFrame<'_> {
    /// The frame as gossipsub reads it: a varint length, then the RPC.
    pub fn encode(&self) -> Vec<u8> {
        let mut rpc = Vec::new();
        for topic in &self.subscribe {
            let mut sub = Vec::new();
            field_varint(&mut sub, 1, 1);
            field_bytes(&mut sub, 2, topic.as_bytes());
            field_bytes(&mut rpc, 1, &sub);
        }
        for (topic, data) in &self.publish {
            let mut message = Vec::new();
            field_bytes(&mut message, 2, data);
            field_bytes(&mut message, 4, topic.as_bytes());
            field_bytes(&mut rpc, 2, &message);
        }
        if !self.graft.is_empty() {
            let mut control = Vec::new();
            for topic in &self.graft {
                let mut graft = Vec::new();
                field_bytes(&mut graft, 1, topic.as_bytes());
                field_bytes(&mut control, 3, &graft);
            }
            field_bytes(&mut rpc, 3, &control);
        }
        let mut out = Vec::with_capacity(rpc.len() + 5);
        varint(&mut out, rpc.len() as u64);
        out.extend_from_slice(&rpc);
        out
    }
}

/// A topic name for the subscription flood: one in four malformed (not
/// the 64 lowercase hex digits of a room topic), the rest well formed.
pub fn flood_topic(rng: &mut StdRng) -> String {
    if rng.gen_ratio(1, 4) {
        format!("not-a-room-{}", rng.r#gen::<u32>())
    } else {
        data_encoding_hex(&rng.r#gen::<[u8; 32]>())
    }
}

/// Lowercase hex, as room topics are named on the gossip wire.
pub fn data_encoding_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(v.as_mut_slice());
    v
}

/// A junk frame for direct delivery, drawn from: garbage, a room envelope
/// sealed under no key anyone has (it decodes, and names no room), and a
/// to-device envelope of an Olm session nobody has. One in
/// [`LARGE_EVERY`] is of the largest size the protocol takes.
pub fn junk_frame(rng: &mut StdRng) -> Vec<u8> {
    let max = safemeet_proto::limits::MAX_ENVELOPE_BYTES;
    let size = if rng.gen_ratio(1, LARGE_EVERY) {
        max - 256
    } else {
        TYPICAL
    };
    let envelope = match rng.gen_range(0..3) {
        0 => return random_bytes(rng, size.min(max)),
        1 => Envelope::Room(SealedRoomEnvelope {
            nonce: rng.r#gen(),
            hint: rng.r#gen(),
            sealed: random_bytes(rng, size),
        }),
        _ => Envelope::ToDevice(ToDeviceEnvelope {
            kind: if rng.r#gen() {
                OlmMessageKind::PreKey
            } else {
                OlmMessageKind::Normal
            },
            session_id: rng.r#gen(),
            ciphertext: random_bytes(rng, size),
        }),
    };
    envelope
        .to_frame()
        .unwrap_or_else(|_| random_bytes(rng, TYPICAL))
}

/// A junk gossip message: a room envelope of the typical size sealed under
/// no key (a frame must fit a gossip message, so never the largest).
pub fn junk_gossip(rng: &mut StdRng) -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: rng.r#gen(),
        hint: rng.r#gen(),
        sealed: random_bytes(rng, TYPICAL),
    })
    .to_frame()
    .unwrap_or_else(|_| random_bytes(rng, TYPICAL))
}

/// A mailbox request a stranger can make, encoded (or, one in eight, junk
/// bytes): deposits into random mailboxes with random tags, a batch of
/// them, challenges (each spends a nonce on the relay), and opens and
/// fetches signed by a key that does not own the mailbox.
pub fn mailbox_junk(rng: &mut StdRng) -> Vec<u8> {
    let deposit = |rng: &mut StdRng| Deposit {
        mailbox: MailboxId::from_bytes(rng.r#gen()),
        envelope: random_bytes(rng, TYPICAL + safemeet_proto::mailbox::SEAL_OVERHEAD),
        tag: rng.r#gen(),
    };
    let request = match rng.gen_range(0..8) {
        0 => return random_bytes(rng, 512),
        1..=3 => {
            let d = deposit(rng);
            MailboxRequest::Deposit {
                version: VERSION,
                mailbox: d.mailbox,
                envelope: d.envelope,
                tag: d.tag,
            }
        }
        4 => MailboxRequest::DepositMany {
            version: VERSION,
            items: (0..MAX_DEPOSIT_ITEMS / 4).map(|_| deposit(rng)).collect(),
        },
        5 => MailboxRequest::Challenge { version: VERSION },
        6 => MailboxRequest::Open(Authorized {
            version: VERSION,
            key: rng.r#gen(),
            nonce: rng.r#gen(),
            params: OpenParams {
                mailbox: MailboxId::from_bytes(rng.r#gen()),
                check: rng.r#gen(),
            },
            signature: [7; 64],
        }),
        _ => MailboxRequest::Fetch(Authorized {
            version: VERSION,
            key: rng.r#gen(),
            nonce: rng.r#gen(),
            params: FetchParams {
                mailbox: MailboxId::from_bytes(rng.r#gen()),
                after: 0,
                limit: 64,
            },
            signature: [9; 64],
        }),
    };
    codec::encode(&request).unwrap_or_else(|_| random_bytes(rng, 512))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_gossip_frame_is_length_prefixed_protobuf() {
        let frame = GossipFrame {
            subscribe: vec!["ab".into()],
            graft: vec!["ab", "ab"],
            publish: vec![("ab", vec![1, 2])],
        }
        .encode();
        // RPC: sub {subscribe=1, topic "ab"}, publish {data [1,2], topic
        // "ab"}, control {graft {"ab"}, graft {"ab"}}.
        let rpc: Vec<u8> = [
            vec![0x0a, 6, 0x08, 1, 0x12, 2, b'a', b'b'],
            vec![0x12, 8, 0x12, 2, 1, 2, 0x22, 2, b'a', b'b'],
            vec![
                0x1a, 12, 0x1a, 4, 0x0a, 2, b'a', b'b', 0x1a, 4, 0x0a, 2, b'a', b'b',
            ],
        ]
        .concat();
        assert_eq!(frame[0] as usize, rpc.len());
        assert_eq!(&frame[1..], &rpc[..]);
    }

    #[test]
    fn junk_fits_the_protocols_limits() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(junk_frame(&mut rng).len() <= safemeet_proto::limits::MAX_ENVELOPE_BYTES);
            assert!(mailbox_junk(&mut rng).len() <= safemeet_proto::mailbox::MAX_REQUEST_BYTES);
        }
        let topic = data_encoding_hex(&[0xa5; 32]);
        assert_eq!(topic, "a5".repeat(32));
    }
}
