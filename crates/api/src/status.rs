//! `status`: how the node stands with the network, for a person checking
//! it (`safemeet doctor`) or a monitor.

use serde::{Deserialize, Serialize};

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Where the node listens (with `/p2p/<peer id>`).
    pub listen_addrs: Vec<String>,
    /// Addresses others were seen to reach it at.
    pub external_addrs: Vec<String>,
    /// Peers it has a connection with now.
    pub connected_peers: usize,
    /// Its relays: each circuit, and whether the relay holds a reservation.
    pub relays: Vec<RelayState>,
    /// What AutoNAT found: `public` (a server reached it directly),
    /// `private` (none could: behind NAT or a firewall, reachable through
    /// its relays only), `unknown` (no test yet; AutoNAT runs when the node
    /// uses relays).
    pub nat: Nat,
}

/// One relay circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayState {
    /// The relay's address, with `/p2p-circuit`.
    pub addr: String,
    /// The relay holds a reservation for this node now.
    pub reserved: bool,
    /// Failures since the last reservation.
    pub failures: u32,
}

/// Reachability as AutoNAT found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nat {
    /// A server reached one of its addresses directly.
    Public,
    /// Servers tried, and none reached it.
    Private,
    /// Not tested yet.
    Unknown,
}

impl Status {
    /// From the network's own view; `listen_addrs` as others dial them.
    pub fn of(net: &safemeet_net::NetStatus, listen_addrs: Vec<String>) -> Self {
        let nat = if net.autonat.iter().any(|(_, ok)| *ok) {
            Nat::Public
        } else if net.autonat.is_empty() {
            Nat::Unknown
        } else {
            Nat::Private
        };
        Status {
            listen_addrs,
            external_addrs: net.external.iter().map(ToString::to_string).collect(),
            connected_peers: net.connected_peers,
            relays: net
                .relays
                .iter()
                .map(|r| RelayState {
                    addr: r.addr.to_string(),
                    reserved: r.reserved,
                    failures: r.failures,
                })
                .collect(),
            nat,
        }
    }
}
