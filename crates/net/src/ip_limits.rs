//! Connection limits per remote IP address and per network prefix.
//!
//! libp2p's own limits are global and per peer id, and a peer id costs
//! nothing to make, so one host could take every connection slot. This
//! behaviour counts the inbound connections (in their handshake or
//! established) of each remote IP address and of each prefix (/24 for
//! IPv4, /48 for IPv6: what one host or one small site usually holds) and
//! refuses a new one over either cap, before its handshake starts.
//! Outbound connections are not counted here: this node chose to make
//! them. The share of all connections kept for them is a cap on inbound
//! ones, set in libp2p's connection limits next to this (see
//! [`ConnectionLimits`]).
//!
//! Connections with no IP address of their own (relayed circuits, whose
//! address is the relay's; the memory transport; a custom transport) are
//! not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, ListenFailure};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// How many connections may come from one place, and how many are kept
/// for this node's own dials. Part of the daemon's [`Config`](crate::Config)
/// and of the relay's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most established connections in all. Daemon default 512.
    pub max_connections: u32,
    /// Of those, how many only this node's own dials may take: inbound
    /// connections are refused once `max_connections - reserved_outbound`
    /// are open, so a node flooded with connections can still reach its
    /// peers. Daemon default 128 (a quarter).
    pub reserved_outbound: u32,
    /// Most inbound connections (in their handshake or established) from
    /// one IP address. Daemon default 16: eight peers on one host, with
    /// two connections each (TCP and QUIC).
    pub max_per_ip: u32,
    /// Most inbound connections from one /24 (IPv4) or /48 (IPv6) prefix.
    /// Daemon default 64: a household or an office behind a few addresses.
    pub max_per_prefix: u32,
}

impl ConnectionLimits {
    /// A daemon's limits (see each field).
    pub const DAEMON: Self = Self {
        max_connections: 512,
        reserved_outbound: 128,
        max_per_ip: 16,
        max_per_prefix: 64,
    };

    /// A relay's limits: 10 000 connections (file descriptors are finite),
    /// 256 of them kept for its own dials (the DHT), and room for a large
    /// NAT (a campus, a carrier-grade NAT) behind one address: 64 per
    /// address, 256 per prefix.
    pub const RELAY: Self = Self {
        max_connections: 10_000,
        reserved_outbound: 256,
        max_per_ip: 64,
        max_per_prefix: 256,
    };

    /// Most inbound connections in all.
    pub fn max_inbound(&self) -> u32 {
        self.max_connections.saturating_sub(self.reserved_outbound)
    }

    /// Checks that a node can run with these limits.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1");
        }
        if self.max_inbound() == 0 {
            return Err("reserved_outbound must leave room for inbound connections");
        }
        if self.max_per_ip == 0 || self.max_per_prefix == 0 {
            return Err("per-address connection limits must be at least 1");
        }
        Ok(())
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DAEMON
    }
}

/// Why an inbound connection was refused (the `cause` of a
/// [`ConnectionDenied`]; find it with `downcast_ref`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PerIpDenied {
    /// Its IP address has as many connections as allowed.
    #[error("too many connections from one address")]
    Address,
    /// Its prefix has as many connections as allowed.
    #[error("too many connections from one network prefix")]
    Prefix,
}

/// The prefix an address counts against: its /24 or /48.
pub fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return prefix(IpAddr::V4(v4));
            }
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// The remote IP address of a connection, if it has one of its own (not a
/// relayed circuit).
pub fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)),
        _ => None,
    }
}

/// The per-address limits (see the module docs).
pub struct PerIpLimits {
    limits: ConnectionLimits,
    /// The address of each counted inbound connection.
    connections: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
    per_prefix: HashMap<IpAddr, u32>,
}

impl PerIpLimits {
    /// Limits as `limits` says.
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            connections: HashMap::new(),
            per_ip: HashMap::new(),
            per_prefix: HashMap::new(),
        }
    }

    /// Inbound connections counted now.
    pub fn counted(&self) -> usize {
        self.connections.len()
    }

    fn admit(&mut self, id: ConnectionId, addr: &Multiaddr) -> Result<(), ConnectionDenied> {
        let Some(ip) = remote_ip(addr) else {
            return Ok(());
        };
        if self.connections.contains_key(&id) {
            return Ok(());
        }
        let net = prefix(ip);
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_ip {
            return Err(ConnectionDenied::new(PerIpDenied::Address));
        }
        if self.per_prefix.get(&net).copied().unwrap_or(0) >= self.limits.max_per_prefix {
            return Err(ConnectionDenied::new(PerIpDenied::Prefix));
        }
        self.connections.insert(id, ip);
        *self.per_ip.entry(ip).or_default() += 1;
        *self.per_prefix.entry(net).or_default() += 1;
        Ok(())
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.connections.remove(&id) else {
            return;
        };
        for (map, key) in [(&mut self.per_ip, ip), (&mut self.per_prefix, prefix(ip))] {
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

impl NetworkBehaviour for PerIpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit(connection_id, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Counted since its handshake began (a no-op then); a connection
        // that skipped that step is counted now.
        self.admit(connection_id, remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    fn tcp(ip: &str) -> Multiaddr {
        let ip: IpAddr = ip.parse().unwrap();
        Multiaddr::empty().with(ip.into()).with(Protocol::Tcp(4001))
    }

    #[test]
    fn each_address_and_prefix_is_capped_and_freed_on_close() {
        let mut limits = PerIpLimits::new(ConnectionLimits {
            max_per_ip: 2,
            max_per_prefix: 3,
            ..ConnectionLimits::DAEMON
        });
        let mut next = 0;
        let mut id = || {
            next += 1;
            ConnectionId::new_unchecked(next)
        };
        let first = id();
        limits.admit(first, &tcp("10.0.0.1")).unwrap();
        limits.admit(id(), &tcp("10.0.0.1")).unwrap();
        let denied = limits.admit(id(), &tcp("10.0.0.1")).unwrap_err();
        assert_eq!(
            denied.downcast_ref::<PerIpDenied>(),
            Some(&PerIpDenied::Address)
        );
        limits.admit(id(), &tcp("10.0.0.2")).unwrap();
        let denied = limits.admit(id(), &tcp("10.0.0.3")).unwrap_err();
        assert_eq!(
            denied.downcast_ref::<PerIpDenied>(),
            Some(&PerIpDenied::Prefix)
        );
        // Another prefix is not affected; a closed connection frees its slot.
        limits.admit(id(), &tcp("10.0.1.1")).unwrap();
        limits.release(first);
        limits.admit(id(), &tcp("10.0.0.3")).unwrap();
        // IPv6: per /48; mapped IPv4 counts as IPv4.
        limits.admit(id(), &tcp("2001:db8:1:2::1")).unwrap();
        limits.admit(id(), &tcp("2001:db8:1:3::1")).unwrap();
        limits.admit(id(), &tcp("2001:db8:1:4::1")).unwrap();
        assert!(limits.admit(id(), &tcp("2001:db8:1:5::1")).is_err());
        assert!(limits.admit(id(), &tcp("::ffff:10.0.0.9")).is_err());
        // No IP of its own: not counted.
        let circuit: Multiaddr = "/ip4/10.0.0.1/tcp/1/p2p-circuit".parse().unwrap();
        for _ in 0..10 {
            limits.admit(id(), &circuit).unwrap();
            limits.admit(id(), &"/memory/5".parse().unwrap()).unwrap();
        }
        assert_eq!(limits.counted(), 7);
    }
}
