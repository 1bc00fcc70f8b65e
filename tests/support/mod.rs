//! What the end-to-end tests share: a bare libp2p peer that only sends
//! requests.

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
