//! What the end-to-end tests share: a bare libp2p peer that only sends
//! requests, and a running `safemeet relay`. Each test file uses part of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use libp2p::{Multiaddr, PeerId};
use serde_json::Value;

use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::{StreamProtocol, noise, tcp, yamux};

/// A swarm that speaks `protocol` with `codec`, as a client only, over
/// TCP (Noise + yamux), with a fresh identity.
pub(crate) fn client_swarm<C>(
    codec: C,
    protocol: StreamProtocol,
) -> libp2p::Swarm<request_response::Behaviour<C>>
where
    C: Codec<Protocol = StreamProtocol> + Clone + Send + 'static,
{
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("a TCP transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                codec,
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(std::time::Duration::from_secs(10)),
            )
        })
        .expect("a behaviour")
        .build()
}

/// Sends each of `requests` to `peer` and waits (30 s at most) for what
/// comes back for each: `Ok(answer)` or `Err(failure)`, in order.
pub(crate) async fn request_all<C>(
    swarm: &mut libp2p::Swarm<request_response::Behaviour<C>>,
    peer: &libp2p::PeerId,
    requests: Vec<C::Request>,
) -> Vec<Result<C::Response, String>>
where
    C: Codec<Protocol = StreamProtocol> + Clone + Send + 'static,
{
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;

    let ids: Vec<_> = requests
        .into_iter()
        .map(|r| swarm.behaviour_mut().send_request(peer, r))
        .collect();
    let mut results = std::collections::HashMap::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while results.len() < ids.len() {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) => {
                    results.insert(request_id, Ok(response));
                }
                SwarmEvent::Behaviour(Event::OutboundFailure {
                    request_id, error, ..
                }) => {
                    results.insert(request_id, Err(error.to_string()));
                }
                _ => {}
            }
        }
    })
    .await
    .expect("every request got an answer or failed");
    ids.iter()
        .map(|id| results.remove(id).expect("an answer per request"))
        .collect()
}

/// A running `safemeet relay`, its stderr (logs) collected.
pub(crate) struct Relay {
    child: Child,
    pub(crate) addr: Multiaddr,
    pub(crate) peer: PeerId,
    /// Where `/metrics` and `/status` are served, if they are.
    pub(crate) metrics: Option<String>,
    logs: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Relay {
    /// A test that fails leaves no relay running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    pub(crate) fn start(home: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_safemeet"))
            .args(["--home", home.to_str().unwrap(), "--json", "relay"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .env_remove("SAFEMEET_HOME")
            // Everything the relay logs, to check it names no one.
            .env("SAFEMEET_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: Value = serde_json::from_str(&line).expect("the relay prints its addresses");
        let addr: Multiaddr = started["listen_addrs"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let peer: PeerId = started["peer_id"].as_str().unwrap().parse().unwrap();
        let metrics = started["metrics"].as_str().map(str::to_owned);
        assert!(addr.to_string().ends_with(&format!("/p2p/{peer}")));
        Self {
            child,
            addr,
            peer,
            metrics,
            logs: Some(logs),
        }
    }

    /// SIGTERM, then the logs it wrote.
    pub(crate) fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the relay stops cleanly on SIGTERM: {exit}");
        self.logs
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

/// Every byte of every file under `dir`.
pub(crate) fn dump(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(dump(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
