//! What the frames a device sends show to whoever carries them, over real
//! TCP: engines on 127.0.0.1 (Noise, yamux, the gossip gate,
//! request-response), and Carol's device replaced by a wiretap
//! (`safemeet_test_utils::wiretap`): a bare rust-libp2p swarm with her
//! device's libp2p key, which the engines take for her device, and which
//! records every frame delivered or gossiped to it. `wire.rs` and
//! `rooms.rs` check the same properties in the simulator.
//!
//! Carol starts as a real engine (to befriend the others, and to be in
//! the room when she must leave it herself); it is then stopped and the
//! wiretap takes her place, listening on the address her engine had, so
//! the others reach it as they reached her.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use safemeet_engine::{Handle, MessageState};
use safemeet_net::Config as NetConfig;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::envelope::Envelope;
use safemeet_proto::padding::MESSAGE_FLOOR;
use safemeet_proto::{RoomId, UserId};
use safemeet_test_utils::Device;
use safemeet_test_utils::wait_until;
use safemeet_test_utils::wiretap::{Heard, Path, Wiretap, topic_hash};

const WAIT: Duration = Duration::from_secs(60);
/// How long a device that is gone is watched for frames once the others'
/// messages are delivered: well past the gossip grace (500 ms) and a few
/// retries (at most 500 ms apart).
const QUIET: Duration = Duration::from_secs(3);

fn start(device: &Device, gossip: bool) -> Handle {
    let mut config = safemeet_engine::Config {
        net: NetConfig::loopback(),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        gossip_grace: Duration::from_millis(500),
        auto_join_rooms: true,
        ..safemeet_engine::Config::default()
    };
    if gossip {
        // Every room on gossip (a room this small would go by fan-out).
        config.direct_room_max_devices = 0;
    }
    safemeet_engine::start(device.machine(), config).unwrap()
}

/// Where `engine` listens, as it listens (no peer id).
async fn listen_addr(engine: &Handle) -> libp2p::Multiaddr {
    wait_until(
        "the engine listens",
        || async { engine.listen_addrs().await.unwrap() },
        |a| !a.is_empty(),
    )
    .await
    .remove(0)
}

async fn dial_addr(engine: &Handle) -> libp2p::Multiaddr {
    safemeet_net::dialable(&listen_addr(engine).await, engine.peer_id())
}

/// How many members `engine` sees in `room` (`None`: not in it).
async fn members(engine: &Handle, room: RoomId) -> Option<usize> {
    engine
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.room_id == room)
        .map(|r| r.members.len())
}

/// Alice and Bob (engines), and Carol: first an engine, then (after
/// [`Scene::tap`]) a wiretap with her device's key. All three contacts.
struct Scene {
    alice: Handle,
    bob: Handle,
    carol: Option<Handle>,
    carol_id: UserId,
    carol_addr: libp2p::Multiaddr,
    wiretap: Option<Wiretap>,
    devices: [Device; 3],
}

impl Scene {
    async fn new(gossip: bool) -> Self {
        let now = SystemClock.now();
        let devices = ["alice", "bob", "carol"].map(|n| Device::new(n, now));
        let [alice, bob, carol] = [0, 1, 2].map(|i| start(&devices[i], gossip));
        safemeet_test_utils::befriend(&alice, &bob).await;
        safemeet_test_utils::befriend(&alice, &carol).await;
        safemeet_test_utils::befriend(&bob, &carol).await;
        Self {
            carol_id: carol.user_id(),
            carol_addr: listen_addr(&carol).await,
            alice,
            bob,
            carol: Some(carol),
            wiretap: None,
            devices,
        }
    }

    /// Stops Carol's engine and puts the wiretap in its place (same key,
    /// same address), connected to Alice and Bob.
    async fn tap(&mut self) -> &Wiretap {
        let carol = self.carol.take().expect("carol's engine runs");
        carol.shutdown().await.unwrap();
        let key = self.devices[2].libp2p_keypair();
        let wiretap = Wiretap::spawn(key, self.carol_addr.clone()).await;
        assert_eq!(wiretap.peer_id(), carol.peer_id(), "the wiretap is carol");
        let wiretap = self.wiretap.insert(wiretap);
        for engine in [&self.alice, &self.bob] {
            wiretap.dial(dial_addr(engine).await).await;
        }
        let (a, b) = (self.alice.peer_id(), self.bob.peer_id());
        assert!(
            wiretap
                .wait_for(WAIT, |t| t.connected.contains(&a)
                    && t.connected.contains(&b))
                .await,
            "the wiretap is connected to alice and bob"
        );
        wiretap
    }

    fn wiretap(&self) -> &Wiretap {
        self.wiretap.as_ref().expect("the wiretap runs")
    }

    /// Alice creates a room with Bob and Carol; waits until Bob is in it
    /// with all three.
    async fn room(&self) -> RoomId {
        let room = self
            .alice
            .create_room("tapped", vec![self.bob.user_id(), self.carol_id])
            .await
            .unwrap();
        wait_until(
            "bob is in the room with all three",
            || members(&self.bob, room),
            |m| *m == Some(3),
        )
        .await;
        room
    }

    /// Waits until Alice's gossip mesh for `room` holds Bob and the
    /// wiretap (so her room frames reach the wiretap by gossip).
    async fn mesh_of_two(&self, room: RoomId) {
        let topic = topic_hash(&self.alice.room_topic(room).await.unwrap());
        assert!(
            self.wiretap()
                .wait_for(WAIT, |t| t.topics.contains(&topic))
                .await,
            "the wiretap hears of the room's topic"
        );
        wait_until(
            "alice gossips the room with bob and carol",
            || async { self.alice.room_mesh_peers(room).await.unwrap() },
            |n| *n == 2,
        )
        .await;
    }
}

/// The kind of a frame (undecodable ones are named so).
fn kind(frame: &[u8]) -> &'static str {
    match Envelope::from_frame(frame) {
        Ok(Envelope::Room(_)) => "room message",
        Ok(Envelope::ToDevice(_)) => "to-device",
        Ok(Envelope::Acks(_)) => "acks",
        Ok(_) => "other",
        Err(_) => "undecodable",
    }
}

fn path_name(path: &Path) -> &'static str {
    match path {
        Path::Direct => "direct",
        Path::Gossip(_) => "gossip",
    }
}

/// Waits until every text of `texts` is in `room` at `engine`, and every
/// one `from` sent is delivered there.
async fn delivered(from: &Handle, to: &Handle, room: RoomId, texts: &[String]) {
    wait_until(
        "every message arrives",
        || async { to.room_messages(room, 1_000).await.unwrap() },
        |m| texts.iter().all(|t| m.iter().any(|e| e.text == *t)),
    )
    .await;
    wait_until(
        "every message is acknowledged",
        || async { from.room_messages(room, 1_000).await.unwrap() },
        |m| {
            texts.iter().all(|t| {
                m.iter()
                    .any(|e| e.text == *t && e.state == MessageState::Delivered)
            })
        },
    )
    .await;
}

async fn sizes_over_tcp(gossip: bool) {
    let mut s = Scene::new(gossip).await;
    s.tap().await;
    // The room is made once the wiretap stands in for Carol: its state
    // and Alice's room key reach the wiretap too.
    let room = s.room().await;
    if gossip {
        s.mesh_of_two(room).await;
    }
    let texts: Vec<String> = [2, 300, 1_500].map(|n| "x".repeat(n)).into();
    for text in &texts {
        s.alice.send_dm(s.bob.user_id(), text).await.unwrap();
        s.alice.send_dm(s.carol_id, text).await.unwrap();
        s.alice.send_room(room, text).await.unwrap();
    }
    delivered(&s.alice, &s.bob, room, &texts).await;
    wait_until(
        "carol's messages are acknowledged by the wiretap",
        || async { s.alice.dm_messages(s.carol_id, 100).await.unwrap() },
        |m| m.len() == texts.len() && m.iter().all(|e| e.state == MessageState::Delivered),
    )
    .await;

    // Every frame the wiretap got, by path and kind, with the sizes seen.
    let mut sizes: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for heard in s.wiretap().tapped().frames {
        sizes
            .entry((path_name(&heard.path), kind(&heard.frame)))
            .or_default()
            .push(heard.frame.len());
    }
    // The room's messages on its path, the DM's (a DM is a room of two,
    // always direct), and the room keys Alice shared (to-device).
    let room_path = if gossip { "gossip" } else { "direct" };
    for (key, least) in [
        ((room_path, "room message"), texts.len()),
        (("direct", "room message"), texts.len()),
        (("direct", "to-device"), 1),
    ] {
        let n = sizes.get(&key).map_or(0, Vec::len);
        assert!(n >= least, "{n} frames {key:?}: {sizes:?}");
    }
    let wrong: Vec<_> = sizes
        .iter()
        .filter(|((_, kind), lens)| *kind != "acks" && lens.iter().any(|l| *l != MESSAGE_FLOOR))
        .collect();
    assert!(
        wrong.is_empty(),
        "frames not of {MESSAGE_FLOOR} bytes, by path and kind: {wrong:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_long_messages_make_frames_of_one_size_by_fan_out_over_tcp() {
    sizes_over_tcp(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_long_messages_make_frames_of_one_size_on_gossip_over_tcp() {
    sizes_over_tcp(true).await;
}

/// The distinct room frames among `frames` (a frame that came twice, or
/// by two paths, is one message), trailing zero padding cut, each with
/// the paths it came by.
fn distinct_room_frames(frames: &[Heard]) -> Vec<(Vec<u8>, Vec<&'static str>)> {
    let mut out: Vec<(Vec<u8>, Vec<&'static str>)> = Vec::new();
    for heard in frames.iter().filter(|h| kind(&h.frame) == "room message") {
        let mut body = heard.frame.clone();
        while body.last() == Some(&0) {
            body.pop();
        }
        let path = path_name(&heard.path);
        match out.iter_mut().find(|(b, _)| *b == body) {
            Some((_, paths)) => paths.push(path),
            None => out.push((body, vec![path])),
        }
    }
    out
}

async fn no_field_repeats_over_tcp(gossip: bool) {
    const MESSAGES: usize = 12;
    let mut s = Scene::new(gossip).await;
    s.tap().await;
    let room = s.room().await;
    if gossip {
        s.mesh_of_two(room).await;
    }
    let texts: Vec<String> = (0..MESSAGES).map(|i| format!("message {i}")).collect();
    for text in &texts {
        s.alice.send_room(room, text).await.unwrap();
    }
    delivered(&s.alice, &s.bob, room, &texts).await;

    let frames = distinct_room_frames(&s.wiretap().tapped().frames);
    let room_path = if gossip { "gossip" } else { "direct" };
    let on_path = frames
        .iter()
        .filter(|(_, paths)| paths.contains(&room_path))
        .count();
    assert!(
        on_path >= MESSAGES,
        "{on_path} distinct room frames came {room_path}"
    );
    // Past the frame's version and kind, every field is fresh: no run of
    // 16 bytes (a nonce, a hint, a session id, a key, an index with its
    // neighbours) appears in two messages.
    const RUN: usize = 16;
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for (n, (frame, _)) in frames.iter().enumerate() {
        for run in frame[2..].windows(RUN) {
            if let Some(m) = seen.insert(run, n)
                && m != n
            {
                panic!("messages {m} and {n} share the bytes {run:02x?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_field_of_a_devices_room_frames_repeats_across_messages_by_fan_out_over_tcp() {
    no_field_repeats_over_tcp(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_field_of_a_devices_room_frames_repeats_across_messages_on_gossip_over_tcp() {
    no_field_repeats_over_tcp(true).await;
}

/// Carol leaves (or Alice, the room's admin, removes her) while her device
/// keeps listening: after the new room state, no frame of the room reaches
/// it by any path, while Alice and Bob go on talking on a new topic.
///
/// Removed: the wiretap stands in for Carol before the removal, in
/// Alice's gossip mesh, still subscribed to the room's topic. Left:
/// Carol's own engine leaves; once Alice and Bob have taken the new state,
/// it stops and the wiretap takes its place, subscribed to the old topic
/// as a device that ignored its own leaving would be.
async fn no_frame_reaches_a_member_after_they_go(remove: bool) {
    let mut s = Scene::new(true).await;
    let room = s.room().await;
    let carol = s.carol.clone().expect("carol's engine runs");
    wait_until(
        "carol is in the room with all three",
        || members(&carol, room),
        |m| *m == Some(3),
    )
    .await;
    let before = vec!["before".to_owned()];
    s.alice.send_room(room, &before[0]).await.unwrap();
    delivered(&s.alice, &carol, room, &before).await;
    let old_topic = s.alice.room_topic(room).await.unwrap();

    if remove {
        s.tap().await.subscribe(&old_topic).await;
        s.mesh_of_two(room).await;
        let heard_before = s.wiretap().tapped().frames.len();
        s.alice.room_remove(room, s.carol_id).await.unwrap();
        // Every member is told of the removal, Carol too.
        assert!(
            s.wiretap()
                .wait_for(WAIT, |t| t.frames[heard_before..]
                    .iter()
                    .any(|h| kind(&h.frame) == "room message"))
                .await,
            "the wiretap is told of the removal"
        );
    } else {
        carol.room_leave(room).await.unwrap();
    }
    // The remaining members take the new state, on a new topic.
    let mut new_topic = None;
    for engine in [&s.alice, &s.bob] {
        wait_until(
            "the remaining two are on a new topic",
            || async {
                (
                    members(engine, room).await,
                    engine.room_topic(room).await.unwrap(),
                )
            },
            |(m, t)| *m == Some(2) && *t != old_topic && new_topic.as_ref().is_none_or(|n| n == t),
        )
        .await;
        new_topic = Some(engine.room_topic(room).await.unwrap());
    }
    let new_topic = new_topic.expect("a new topic");
    if !remove {
        s.tap().await.subscribe(&old_topic).await;
    }
    // Whatever reached the wiretap so far (the removal notice, a copy of
    // it by another path) is the past; the gate may have closed its
    // gossip connections, so it connects again.
    let past: Vec<Vec<u8>> = s
        .wiretap()
        .tapped()
        .frames
        .into_iter()
        .map(|h| h.frame)
        .collect();
    for engine in [&s.alice, &s.bob] {
        s.wiretap().dial(dial_addr(engine).await).await;
    }
    let (a, b) = (s.alice.peer_id(), s.bob.peer_id());
    assert!(
        s.wiretap()
            .wait_for(WAIT, |t| t.connected.contains(&a)
                && t.connected.contains(&b))
            .await,
        "the wiretap is connected to alice and bob"
    );

    let (mut from_alice, mut from_bob) = (Vec::new(), Vec::new());
    for i in 0..5 {
        from_alice.push(format!("from alice {i}"));
        from_bob.push(format!("from bob {i}"));
        s.alice.send_room(room, &from_alice[i]).await.unwrap();
        s.bob.send_room(room, &from_bob[i]).await.unwrap();
    }
    delivered(&s.alice, &s.bob, room, &from_alice).await;
    delivered(&s.bob, &s.alice, room, &from_bob).await;

    // Delivered to Bob is not the end of it: a gossip message goes on
    // directly to every member that did not acknowledge it a gossip grace
    // after it was published, and retries follow. Watch a window that
    // covers those.
    // Acknowledgements are not the room's: they name frames Carol sent
    // (her leaving, say) and go to her alone.
    let is_new = |h: &Heard| !past.contains(&h.frame) && kind(&h.frame) != "acks";
    let heard = s
        .wiretap()
        .wait_for(QUIET, |t| t.frames.iter().any(is_new))
        .await;
    let tapped = s.wiretap().tapped();
    let new: Vec<_> = tapped
        .frames
        .iter()
        .filter(|h| is_new(h))
        .map(|h| (path_name(&h.path), kind(&h.frame)))
        .collect();
    assert!(
        !heard && new.is_empty(),
        "frames reached carol after she went: {new:?}"
    );
    assert!(
        !tapped.topics.contains(&topic_hash(&new_topic)),
        "carol's device heard of the new topic"
    );
    // The old topic is gone from the members: one topic each, the new one,
    // and each other in its mesh (a heartbeat may still be re-grafting:
    // waited for).
    for engine in [&s.alice, &s.bob] {
        assert_eq!(engine.gossip_topic_count().await.unwrap(), 1);
        wait_until(
            "the remaining members mesh on the new topic",
            || async { engine.room_mesh_peers(room).await.unwrap() },
            |n| *n == 1,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_hears_nothing_of_the_room_over_tcp() {
    no_frame_reaches_a_member_after_they_go(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_left_hears_nothing_of_the_room_over_tcp() {
    no_frame_reaches_a_member_after_they_go(false).await;
}
