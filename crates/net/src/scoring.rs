//! Gossipsub v1.1 peer scoring, tuned for chat rooms.
//!
//! What costs a peer: each gossip message the application rejects (it
//! failed to decode or to authenticate: no honest node forwards one, since
//! every node validates before forwarding), many peers on one IP address
//! (a crowd of made-up peer ids on one host), and protocol misbehaviour
//! (broken gossip promises, grafts during a backoff). What earns a little:
//! time in a room's mesh and first deliveries, capped low so that good
//! behaviour never buys room for junk. Quiet rooms are normal in chat, so
//! a mesh peer that delivers few messages is not penalised.
//!
//! A peer whose score falls below [`GRAYLIST_THRESHOLD`] is graylisted:
//! everything it sends is ignored. Below the publish and gossip thresholds
//! it first stops getting this node's messages and gossip. Three rejected
//! messages in a short while graylist a peer; a single one only costs it
//! gossip for a while (the penalty decays, about halving each minute).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{PeerScoreParams, PeerScoreThresholds, TopicScoreParams};

/// Below this a peer gets no gossip (IHAVE/IWANT) from this node, nor is
/// its gossip heard: one rejected message (-10) is not yet below it, two
/// are.
pub const GOSSIP_THRESHOLD: f64 = -10.0;
/// Below this this node's own messages are not sent to the peer.
pub const PUBLISH_THRESHOLD: f64 = -20.0;
/// Below this everything the peer sends is ignored: three rejected
/// messages (-90) put it there.
pub const GRAYLIST_THRESHOLD: f64 = -40.0;

/// The weight of a rejected message; the penalty is this times the square
/// of the (decaying) count, so it grows fast for a flood.
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
/// The count of rejected messages is multiplied by this every decay
/// interval (1 s): it halves in about 70 s, so a peer that once forwarded
/// something odd recovers within minutes.
const INVALID_MESSAGE_DECAY: f64 = 0.99;

/// Peers on one IP address before each further one costs them all. 10
/// (gossipsub's default): a household's devices behind one NAT stay below
/// it.
const IP_COLOCATION_THRESHOLD: f64 = 10.0;
/// The penalty per peer past that, squared: 13 peers on one address are
/// graylisted.
const IP_COLOCATION_WEIGHT: f64 = -5.0;

/// The score thresholds (see the module docs).
pub(crate) fn thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: GOSSIP_THRESHOLD,
        publish_threshold: PUBLISH_THRESHOLD,
        graylist_threshold: GRAYLIST_THRESHOLD,
        ..PeerScoreThresholds::default()
    }
}

/// The score parameters, with no topic yet: each room topic gets
/// [`room_params`] when this node subscribes to it.
pub(crate) fn params() -> PeerScoreParams {
    // Peers on this machine (tests, several profiles on one computer) are
    // not a crowd on one host.
    let whitelist: HashSet<IpAddr> = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .collect();
    PeerScoreParams {
        // Topic scores add at most a little (see `room_params`).
        topic_score_cap: 10.0,
        // Not used: the application only accepts, ignores or rejects.
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: IP_COLOCATION_WEIGHT,
        ip_colocation_factor_threshold: IP_COLOCATION_THRESHOLD,
        ip_colocation_factor_whitelist: whitelist,
        // One broken promise or early graft is forgiven; more cost 5, 20,
        // 45... and decay by a tenth each second.
        behaviour_penalty_weight: -5.0,
        behaviour_penalty_threshold: 1.0,
        behaviour_penalty_decay: 0.9,
        ..PeerScoreParams::default()
    }
}

/// The score parameters of a room topic.
pub(crate) fn room_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        // At most +1 for 100 s in the mesh.
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        // At most +1 for first deliveries.
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 10.0,
        // Quiet rooms are normal: no minimum of deliveries from the mesh.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: INVALID_MESSAGE_DECAY,
        ..TopicScoreParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parameters_are_valid() {
        assert_eq!(params().validate(), Ok(()));
        assert_eq!(thresholds().validate(), Ok(()));
        assert_eq!(room_params().validate(), Ok(()));
    }

    #[test]
    fn three_rejections_graylist_and_one_does_not_silence() {
        let penalty = |n: f64| n * n * INVALID_MESSAGE_WEIGHT;
        // The most good behaviour can earn: both capped terms.
        let best = 1.0 + 1.0;
        assert!(best + penalty(1.0) >= GOSSIP_THRESHOLD);
        assert!(penalty(1.0) >= GOSSIP_THRESHOLD);
        assert!(best + penalty(3.0) < GRAYLIST_THRESHOLD);
    }
}
