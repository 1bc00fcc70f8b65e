//! Test fixtures for SafeMeet.
//!
//! - [`Device`]: an account in an encrypted in-memory store (optionally one
//!   whose flushes can be made to fail, [`FaultyStore`]).
//! - [`spawn_nodes`]: N engines over the in-process memory transport,
//!   every one a contact of every other.
//! - [`sim::Sim`]: several engine [`Core`](safemeet_engine::Core)s stepped
//!   through virtual time with no sockets and no real sleeping: a
//!   modelled network (latency, devices going offline, dropped gossip)
//!   and a modelled relay, with a trace of every output.
//! - [`observer::Observer`]: a bare rust-libp2p outsider (identify,
//!   Kademlia, permissive gossipsub) that records what it learns.
//! - [`wiretap::Wiretap`]: a bare rust-libp2p swarm with a real member
//!   device's key, which records every frame delivered or gossiped to it.
//! - [`wait_until`]: polls a condition with a time limit.
//!
//! Only for tests: it panics on failures instead of returning them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures: a panic is a failed test

mod fixtures;
mod nodes;
pub mod observer;
pub mod puppet;
pub mod sim;
pub mod speech;
mod wait;
pub mod wiretap;

pub use fixtures::{Device, FaultyStore};
pub use nodes::{befriend, spawn_nodes, spawn_nodes_with};
pub use wait::{WAIT_LIMIT, wait_until};
