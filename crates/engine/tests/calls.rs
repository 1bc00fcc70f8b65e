//! Calls between engines over the memory transport (real libp2p: Noise,
//! yamux, the `/safemeet/media/1` stream), attacked while they run: a
//! contact who is not in the call lies to both ends and floods one with
//! invites, and a stranger opens media streams, names the call and pours
//! junk down one and stalls the rest. The call goes on untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::{CallAudio, CallOutcome, CallState, CallView, Handle};
use safemeet_media::transport::write_frame;
use safemeet_proto::signal::{CallId, CallKey, CallSignal, HangupReason};
use safemeet_test_utils::spawn_nodes;

const WAIT: Duration = Duration::from_secs(30);

async fn now(engine: &Handle) -> CallView {
    engine
        .calls()
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("a call")
}

async fn wait_for(what: &str, engine: &Handle, check: impl Fn(&CallView) -> bool) -> CallView {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tokio::time::timeout(WAIT, async {
        loop {
            tick.tick().await;
            if let Some(call) = engine.calls().await.unwrap().into_iter().next()
                && check(&call)
            {
                return call;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_while_a_contact_and_a_stranger_attack_it() {
    let nodes = spawn_nodes(3).await;
    let (alice, bob, mallory) = (&nodes[0].1, &nodes[1].1, &nodes[2].1);

    let placed = alice
        .call(bob.user_id(), CallAudio::default())
        .await
        .unwrap();
    assert_eq!(placed.state, CallState::Calling);
    wait_for("bob's device rings", bob, |c| c.state == CallState::Ringing).await;

    // Mallory, a contact too, calls Bob while his device rings: busy.
    mallory
        .call(bob.user_id(), CallAudio::default())
        .await
        .unwrap();
    let refused = wait_for("mallory hears busy", mallory, |c| {
        c.state == CallState::Ended
    })
    .await;
    assert_eq!(refused.outcome, Some(CallOutcome::NoAnswer));
    assert_eq!(refused.reason.as_deref(), Some("busy"));
    assert_eq!(
        now(bob).await.state,
        CallState::Ringing,
        "still ringing for alice"
    );

    bob.call_accept(CallAudio::default()).await.unwrap();
    for (who, engine) in [("alice", alice), ("bob", bob)] {
        wait_for(&format!("{who} hears 50 frames"), engine, |c| {
            c.state == CallState::Active && c.stats.played >= 50
        })
        .await;
    }
    let id = CallId::from_hex(&placed.call_id).unwrap();

    // Mallory lies to both ends of a call she is not in (say she learned
    // its id): a hang-up, a key of her making and a loss report of 100 %.
    let lies = [
        CallSignal::Hangup {
            call_id: id,
            reason: HangupReason::Hangup,
        },
        CallSignal::Key {
            call_id: id,
            index: 0,
            epoch: 1,
            key: CallKey([7; 32]),
        },
        CallSignal::Report {
            call_id: id,
            loss_permille: 1000,
        },
    ];
    for lie in &lies {
        for to in [alice.user_id(), bob.user_id()] {
            let sent = mallory
                .send_call_signal(to, None, lie.clone())
                .await
                .unwrap();
            assert_eq!(sent.len(), 1, "it went");
        }
    }
    // And floods Bob with invites to calls of her own.
    for i in 0..300u16 {
        let mut fake = [0u8; 16];
        fake[..2].copy_from_slice(&i.to_be_bytes());
        let invite = CallSignal::Invite {
            call_id: CallId(fake),
        };
        mallory
            .send_call_signal(bob.user_id(), None, invite)
            .await
            .unwrap();
    }

    // A stranger (a bare node, no contact of anyone's) opens media
    // streams to Bob: one names the call as if it were Alice and pours
    // junk down it; twenty say nothing at all.
    let port = 900_000 + std::process::id() % 50_000;
    let (stranger, _events) = safemeet_net::spawn(
        libp2p::identity::Keypair::generate_ed25519(),
        safemeet_net::Config {
            listen: vec![format!("/memory/{port}").parse().unwrap()],
            ..safemeet_net::Config::loopback()
        },
    )
    .unwrap();
    let bob_addrs = bob.listen_addrs().await.unwrap();
    let mut hello = b"SMC1".to_vec();
    hello.extend_from_slice(&id.0);
    hello.push(0);
    let mut junk_stream = stranger
        .open_media_stream(bob.peer_id(), &bob_addrs)
        .await
        .unwrap();
    let mut junk_written = 0;
    if write_frame(&mut junk_stream, &hello).await.is_ok() {
        for i in 0..2_000u32 {
            let junk = vec![(i % 251) as u8; 166];
            if write_frame(&mut junk_stream, &junk).await.is_err() {
                break;
            }
            junk_written += 1;
        }
    }
    let mut stalled = Vec::new();
    for _ in 0..20 {
        if let Ok(s) = stranger.open_media_stream(bob.peer_id(), &bob_addrs).await {
            stalled.push(s);
        }
    }

    // The call goes on: two more seconds heard at each end, nothing of
    // the stranger's taken in, no key or report of Mallory's used.
    for (who, engine) in [("alice", alice), ("bob", bob)] {
        let before = now(engine).await.stats.played;
        let call = wait_for(&format!("{who} hears on"), engine, |c| {
            c.stats.played >= before + 100
        })
        .await;
        assert_eq!(call.state, CallState::Active, "{who}: {call:?}");
        assert_eq!(
            call.stats.refused, 0,
            "{who}: no foreign frame opened: {call:?}"
        );
        assert_eq!(
            call.stats.expected_loss_percent, 0,
            "{who}: mallory's report is ignored"
        );
        let heard = call.stats.played + call.stats.lost;
        assert!(
            call.stats.lost * 50 <= heard,
            "{who}: at most 2 % lost under attack: {call:?}"
        );
    }
    assert_eq!(now(alice).await.with, bob.user_id());
    tracing::info!(
        junk_written,
        stalled = stalled.len(),
        "the stranger's streams"
    );

    // Bob hangs up; both ends log an answered call.
    let ended = bob.call_hangup().await.unwrap();
    assert_eq!(ended.outcome, Some(CallOutcome::Answered));
    let other = wait_for("alice's end", alice, |c| c.state == CallState::Ended).await;
    assert_eq!(other.outcome, Some(CallOutcome::Answered));
    assert_eq!(other.reason.as_deref(), Some("hung up by the other side"));
}
