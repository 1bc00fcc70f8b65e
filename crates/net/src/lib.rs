//! The SafeMeet libp2p node.
//!
//! One event-loop task owns the [`libp2p::Swarm`]; the rest of the program
//! drives it through a cloneable [`Handle`] (commands over a bounded
//! channel, each answered on a one-shot channel) and reads [`Event`]s from
//! a bounded receiver. The node speaks:
//!
//! - TCP (Noise + yamux) and QUIC;
//! - identify and ping; Kademlia (`/safemeet/kad/1`), fed with the listen
//!   addresses identify reports; mDNS on the local network (on by default);
//! - gossipsub for rooms, **anonymous** (no origin peer, no signature:
//!   Megolm authenticates), content-hash message ids, messages forwarded
//!   only after the application [accepts](Handle::report) them, a
//!   subscription filter that allows room topics only, at most
//!   [`Config::max_topics`] per peer (a peer over it is dropped), v1.1
//!   peer scoring (rejected messages, IP colocation, graylisting), no
//!   flood publishing, and **only with peers the application allows**
//!   ([`Handle::allow_gossip`]): every other connection gets no gossipsub
//!   handler at all, so strangers, relays, DHT and LAN peers never learn a
//!   topic nor get a message;
//! - `/safemeet/deliver/1` request-response for direct delivery, frames of
//!   at most [`MAX_ENVELOPE_BYTES`](safemeet_proto::limits::MAX_ENVELOPE_BYTES)
//!   checked before they are read and read as they arrive, at most
//!   [`Config::max_streams_per_connection`] at once per connection, each
//!   within [`Config::inbound_read_timeout`];
//! - `/safemeet/link/1` streams for linking a new device, accepted only
//!   while the application asks for them ([`Handle::link_streams`]);
//! - connection limits per IP address and prefix, with a share kept for
//!   this node's own dials ([`ConnectionLimits`]), and an idle timeout
//!   suited to chat;
//! - refusals counted by kind and reported once a minute in aggregate,
//!   with no identifiers ([`RefusalLog`]).
//!
//! This crate moves padded frames. It checks their shape (size, padding,
//! envelope encoding) and never sees plaintext; it does not decide what a
//! frame means, whom to send it to, or when to retry (the engine does).
//!
//! Gossip is best effort: a publish that returns `Ok` may still not reach a
//! peer whose send queue is full. Delivery guarantees come from the layer
//! above (acknowledged direct delivery, catch-up).
//!
//! ```no_run
//! # async fn example() -> Result<(), safemeet_net::Error> {
//! use libp2p::identity::Keypair;
//! use safemeet_net::{Config, Event};
//!
//! let (net, mut events) = safemeet_net::spawn(Keypair::generate_ed25519(), Config::loopback())?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Listening(addr) = event {
//!         println!("{} listens on {addr}", net.peer_id());
//!         break;
//!     }
//! }
//! net.shutdown().await
//! # }
//! ```

mod addr;
mod behaviour;
mod codec;
mod commands;
mod config;
mod connect;
mod custom_transport;
mod error;
mod event_loop;
mod gate;
mod handle;
mod ip_limits;
mod join;
pub mod junk;
mod link;
mod net_status;
mod outbound;
mod paths;
mod refusals;
pub(crate) mod relay_listeners;
mod reply;
mod scoring;
mod subscriptions;
mod swarm;
mod topic;

pub use crate::addr::dialable;
pub use crate::behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, MESH_N_LOW, gossip_config};
pub use crate::codec::{
    DELIVER_PROTOCOL, FrameCodec, INBOUND_READ_TIMEOUT, LimitedCodec, MAILBOX_PROTOCOL,
    MAX_REPLY_BYTES, MailboxCodec, StreamRefusals,
};
pub use crate::config::Config;
pub use crate::custom_transport::{CustomTransport, RawStream, RawTransport};
pub use crate::error::{DeliveryFailure, Error, ErrorKind};
pub use crate::event_loop::spawn;
pub use crate::gate::MAX_GOSSIP_PEERS;
pub use crate::handle::{Event, Handle, NetStatus, QUIC_HEAD_START, Verdict};
pub use crate::ip_limits::{ConnectionLimits, PerIpDenied, PerIpLimits, prefix, remote_ip};
pub use crate::link::{BLOB_PROTOCOL, LINK_PROTOCOL, LinkStream, MEDIA_PROTOCOL, dial_link};
pub use crate::paths::{CircuitLimit, LinkPath};
pub use crate::refusals::{REPORT_EVERY, Refusal, RefusalCounts, RefusalLog};
pub use crate::relay_listeners::RelayStatus;
pub use crate::reply::ReplySlot;
pub use crate::scoring::{GOSSIP_THRESHOLD, GRAYLIST_THRESHOLD, PUBLISH_THRESHOLD};
pub use crate::swarm::{BoxError, build_swarm};
pub use crate::topic::RoomTopic;
pub use libp2p_stream::IncomingStreams;
