//! What the relay benchmarks' clients share: a swarm that speaks
//! `/safemeet/mailbox/1` as a client only, over SafeMeet's own transport
//! stack, and fresh mailbox keys.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use safemeet_crypto::mailbox::EpochKey;
use safemeet_net::{MAILBOX_PROTOCOL, MailboxCodec};
use vodozemac::Ed25519SecretKey;

/// A mailbox client's swarm.
pub(crate) type MailboxSwarm = libp2p::Swarm<request_response::Behaviour<MailboxCodec>>;

/// A swarm with a fresh peer id that sends mailbox requests, at most
/// `in_flight` at once (more wait in libp2p's queue), each answered within
/// `timeout`.
pub(crate) fn mailbox_swarm(in_flight: usize, timeout: Duration) -> anyhow::Result<MailboxSwarm> {
    Ok(safemeet_net::build_swarm(
        Keypair::generate_ed25519(),
        None,
        timeout,
        |_, _| {
            Ok(request_response::Behaviour::with_codec(
                MailboxCodec::default(),
                [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(timeout)
                    .with_max_concurrent_streams(in_flight),
            ))
        },
    )?)
}

/// A fresh mailbox key (of epoch 0).
pub(crate) fn new_key() -> EpochKey {
    EpochKey::derive(&Ed25519SecretKey::new(), 0)
}
