//! The chat bench's baselines: two bare libp2p swarms with the engine's
//! transport (TCP, Noise, yamux) and no engine, no encryption, no store: a
//! request-response round trip of one frame, and raw gossipsub.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, gossipsub, noise, tcp, yamux};
use safemeet_net::FrameCodec;

use crate::chat::{DEADLINE, FRAME_BYTES, instant, ms};

const RAW_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet-bench/raw/1");

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Bare {
    rr: request_response::Behaviour<FrameCodec>,
    gossip: gossipsub::Behaviour,
}

type BareSwarm = libp2p::Swarm<Bare>;

fn bare_swarm() -> anyhow::Result<BareSwarm> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .heartbeat_interval(Duration::from_millis(100))
                .mesh_n(4)
                .mesh_n_low(1)
                .mesh_n_high(8)
                .mesh_outbound_min(0)
                .flood_publish(true)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes()[..20].to_vec())
                })
                .build()
                .map_err(io::Error::other)?;
            Ok(Bare {
                rr: request_response::Behaviour::with_codec(
                    FrameCodec::default(),
                    [(RAW_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default(),
                ),
                gossip: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    config,
                )
                .map_err(io::Error::other)?,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    Ok(swarm)
}

async fn listen_addr(swarm: &mut BareSwarm) -> anyhow::Result<Multiaddr> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("a bare swarm did not listen"))
}

/// Two bare swarms, connected; the server answers every request with a
/// short reply and counts gossip it receives.
pub(crate) struct BarePair {
    client: BareSwarm,
    server: tokio::task::JoinHandle<()>,
    server_peer: libp2p::PeerId,
    gossip_received: Arc<Mutex<(usize, Option<Instant>)>>,
    /// Frames published so far.
    published: u64,
}

const TOPIC: &str = "bench";

impl BarePair {
    pub(crate) async fn new() -> anyhow::Result<Self> {
        let mut server = bare_swarm()?;
        let mut client = bare_swarm()?;
        let topic = gossipsub::IdentTopic::new(TOPIC);
        server.behaviour_mut().gossip.subscribe(&topic)?;
        client.behaviour_mut().gossip.subscribe(&topic)?;
        let addr = listen_addr(&mut server).await?;
        let server_peer = *server.local_peer_id();
        client.dial(addr.with(libp2p::multiaddr::Protocol::P2p(server_peer)))?;
        let gossip_received = Arc::new(Mutex::new((0, None)));
        let counter = gossip_received.clone();
        let server = tokio::spawn(async move {
            loop {
                match server.select_next_some().await {
                    SwarmEvent::Behaviour(BareEvent::Rr(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    })) => {
                        let _ = server
                            .behaviour_mut()
                            .rr
                            .send_response(channel, b"ok".to_vec());
                    }
                    SwarmEvent::Behaviour(BareEvent::Gossip(gossipsub::Event::Message {
                        ..
                    })) => {
                        if let Ok(mut c) = counter.lock() {
                            c.0 += 1;
                            c.1 = Some(instant());
                        }
                    }
                    _ => {}
                }
            }
        });
        // Wait until the client sees the server subscribed (gossip can flow).
        let mut client_pair = Self {
            client,
            server,
            server_peer,
            gossip_received,
            published: 0,
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::Behaviour(BareEvent::Gossip(gossipsub::Event::Subscribed {
                    ..
                })) = client_pair.client.select_next_some().await
                {
                    return;
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("the bare swarms did not connect"))?;
        Ok(client_pair)
    }

    /// Paced request-response round trips, in ms.
    pub(crate) async fn rr_latency(&mut self, count: usize, rate: u32) -> anyhow::Result<Vec<f64>> {
        let frame = vec![0x5a; FRAME_BYTES];
        let mut pace = tokio::time::interval(Duration::from_secs(1) / rate);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut started = HashMap::new();
        let mut out = Vec::with_capacity(count);
        let mut issued = 0;
        let deadline = tokio::time::sleep(DEADLINE);
        tokio::pin!(deadline);
        while out.len() < count {
            tokio::select! {
                _ = pace.tick(), if issued < count => {
                    let id = self.client.behaviour_mut().rr.send_request(&self.server_peer, frame.clone());
                    started.insert(id, instant());
                    issued += 1;
                }
                event = self.client.select_next_some() => match event {
                    SwarmEvent::Behaviour(BareEvent::Rr(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, .. }, ..
                    })) => {
                        if let Some(t0) = started.remove(&request_id) {
                            out.push(ms(instant().saturating_duration_since(t0)));
                        }
                    }
                    SwarmEvent::Behaviour(BareEvent::Rr(request_response::Event::OutboundFailure { error, .. })) => {
                        anyhow::bail!("a raw request failed: {error}");
                    }
                    _ => {}
                },
                _ = &mut deadline => anyhow::bail!("raw requests did not finish"),
            }
        }
        Ok(out)
    }

    /// Publishes `count` frames as fast as the swarm takes them; returns
    /// (messages received per second, fraction of those published received).
    pub(crate) async fn gossip_throughput(&mut self, count: usize) -> anyhow::Result<(f64, f64)> {
        let topic = gossipsub::IdentTopic::new(TOPIC);
        let base = self.gossip_received.lock().map(|c| c.0).unwrap_or(0);
        let t0 = instant();
        let mut published = 0usize;
        for _ in 0..count {
            // Gossip ids hash the content: every frame is new.
            self.published += 1;
            let mut frame = vec![0x5a; FRAME_BYTES];
            frame[..8].copy_from_slice(&self.published.to_be_bytes());
            if self
                .client
                .behaviour_mut()
                .gossip
                .publish(topic.clone(), frame)
                .is_ok()
            {
                published += 1;
            }
            // Let the swarm write between publishes, as a real sender would.
            while let Some(Some(_)) = futures::FutureExt::now_or_never(self.client.next()) {}
        }
        // Drive the client until nothing new arrives for a second.
        let mut last_count = 0;
        let mut quiet = instant();
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(50), self.client.next()).await;
            let (n, _) = self.gossip_received.lock().map(|c| *c).unwrap_or((0, None));
            let n = n - base;
            if n != last_count {
                last_count = n;
                quiet = instant();
            }
            if n >= count || instant().saturating_duration_since(quiet) > Duration::from_secs(1) {
                break;
            }
        }
        let (n, last) = self.gossip_received.lock().map(|c| *c).unwrap_or((0, None));
        let n = n - base;
        let elapsed = last.map_or(Duration::ZERO, |l| l.saturating_duration_since(t0));
        let rate = n as f64 / elapsed.as_secs_f64();
        Ok((rate, n as f64 / published.max(1) as f64))
    }
}

impl Drop for BarePair {
    fn drop(&mut self) {
        self.server.abort();
    }
}
