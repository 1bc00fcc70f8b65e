//! Files for a device that was away, in virtual time: a file message left
//! on a device's relay asks for its file to follow (and the ask is kept
//! in the store), and the receiving core keeps only the pieces its
//! sender signed, of the right length, taken from its mailbox; a hostile
//! member's forged pieces, a flood of them, and pieces handed over
//! directly are refused and kept nowhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_crypto::attachment::seal_file;
use safemeet_crypto::mailbox::{epoch_of, epoch_public_key, mailbox_id, seal};
use safemeet_engine::{
    Blobs, Command, Config, Conversation, Core, Input, Output, PieceJob, Response, blob_name,
    piece_count, piece_name,
};
use safemeet_proto::envelope::{FILE_PIECE_BYTES, FilePieceEnvelope};
use safemeet_proto::event::MessageText;
use safemeet_proto::file::FileMessage;
use safemeet_proto::{Envelope, EventId};
use safemeet_store::blob::{BlobStore, MemoryBlobs};
use safemeet_test_utils::sim::Sim;

const ALICE: usize = 0;
const BOB: usize = 1;
const MINUTE: Duration = Duration::from_secs(60);

/// Piece `index` of `sealed`, signed with `key`, as a frame.
fn piece(key: &Keypair, event: EventId, sealed: &[u8], index: u32, cut: usize) -> Vec<u8> {
    let start = index as usize * FILE_PIECE_BYTES;
    let end = (start + FILE_PIECE_BYTES).min(sealed.len()) - cut;
    let bytes = sealed[start..end].to_vec();
    let signature = key
        .sign(&FilePieceEnvelope::signed_bytes(&event, index, &bytes))
        .unwrap();
    Envelope::FilePiece(FilePieceEnvelope {
        event_id: event,
        index,
        bytes,
        signature,
    })
    .to_frame()
    .unwrap()
}

/// Leaves `frame` in the mailbox of `job`'s device, as a depositor does.
fn leave(sim: &mut Sim, job: &PieceJob, frame: &[u8]) {
    let epoch = epoch_of(sim.now().wall);
    let key = epoch_public_key(&job.mailbox_key, epoch).unwrap();
    sim.deposit(mailbox_id(&key), seal(&key, frame).unwrap());
}

#[test]
fn only_the_senders_own_pieces_from_the_mailbox_are_kept() {
    let relay = Sim::relay_address();
    let stores: Vec<Arc<MemoryBlobs>> = (0..2).map(|_| Arc::new(MemoryBlobs::new())).collect();
    let blob_stores = stores.clone();
    let mut sim = Sim::new(&["alice", "bob"], 7, move |i, c| {
        c.blobs = Some(Blobs(blob_stores[i].clone()));
        if i == BOB {
            c.net.relays = vec![relay.clone()];
        }
    });
    sim.befriend(ALICE, BOB);
    sim.run_for(Duration::from_secs(5));
    sim.set_online(BOB, false);

    // Alice sends Bob a file while he is away: the message goes to his
    // relay, and the file is to follow it there.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let (manifest, chunks) = seal_file(&data, "a.bin", "application/octet-stream").unwrap();
    let sealed = chunks.concat();
    let size = manifest.size;
    let message = FileMessage {
        file: manifest,
        caption: MessageText::new("").unwrap(),
    };
    let bob_user = sim.nodes[BOB].user;
    let event = match sim.ask(
        ALICE,
        Command::SendFile(Conversation::Dm(bob_user), Box::new(message)),
    ) {
        Ok(Response::Sent(event)) => event,
        other => panic!("{other:?}"),
    };
    let asked = sim.run_until(MINUTE, |s| !s.piece_jobs().is_empty());
    assert!(asked, "the file follows its message to the relay");
    let (from, job) = sim.piece_jobs()[0].clone();
    assert_eq!(from, ALICE);
    assert_eq!(
        (job.event_id, job.peer, job.size, job.next),
        (event, sim.nodes[BOB].peer, size, 0)
    );
    // The ask is kept, so a restart goes on with it; done, it goes.
    match sim.ask(ALICE, Command::PieceJobs) {
        Ok(Response::PieceJobs(jobs)) => assert_eq!(jobs.len(), 1),
        other => panic!("{other:?}"),
    }
    // A core started afresh on Alice's store (as after a restart, before
    // anything is routed to Bob) has it too, with where to leave it.
    let mut restarted = Core::new(
        sim.nodes[ALICE].device.machine(),
        Config::default(),
        99,
        sim.now(),
    )
    .unwrap();
    let replies = restarted.handle(Input::Commands(vec![(1, Command::PieceJobs)]), sim.now());
    let kept = replies
        .iter()
        .find_map(|o| match o {
            Output::Reply(1, Ok(Response::PieceJobs(jobs))) => Some(jobs.clone()),
            _ => None,
        })
        .expect("an answer");
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (
            kept[0].event_id,
            kept[0].peer,
            kept[0].mailbox_key,
            kept[0].next
        ),
        (event, job.peer, job.mailbox_key, 0)
    );
    assert_eq!(kept[0].relays, job.relays);

    // Into Bob's mailbox: a hostile member's forgeries first (pieces of
    // its own making, signed with its own key; a flood of them), one of
    // Alice's cut short, one of hers for a message Bob does not have,
    // then her real pieces.
    let alice_key = sim.nodes[ALICE].device.libp2p_keypair();
    let mallory = Keypair::generate_ed25519();
    let forged: Vec<u8> = sealed.iter().map(|b| b ^ 0x55).collect();
    for round in 0..50u32 {
        let frame = piece(&mallory, event, &forged, round % 4, 0);
        leave(&mut sim, &job, &frame);
    }
    let short = piece(&alice_key, event, &sealed, 0, 1);
    leave(&mut sim, &job, &short);
    let unknown = EventId::from_bytes([9; 32]);
    let stray = piece(&alice_key, unknown, &sealed, 0, 0);
    leave(&mut sim, &job, &stray);
    let count = piece_count(size);
    assert_eq!(count, 4);
    for index in 0..count as u32 {
        let frame = piece(&alice_key, event, &sealed, index, 0);
        leave(&mut sim, &job, &frame);
    }
    assert!(sim.relay_envelopes() >= 56);

    // Bob is back: he drains his mailbox.
    sim.set_online(BOB, true);
    let drained = sim.run_until(5 * MINUTE, |s| s.relay_envelopes() == 1);
    assert!(
        drained,
        "everything but the stray piece is taken: {}",
        sim.relay_envelopes()
    );
    // He kept Alice's four pieces and nothing else.
    let mut kept = stores[BOB].list().unwrap();
    kept.sort_unstable();
    let mut want: Vec<_> = (0..count).map(|i| piece_name(&event, i)).collect();
    want.sort_unstable();
    assert_eq!(kept, want);
    for index in 0..count {
        let start = index as usize * FILE_PIECE_BYTES;
        let end = (start + FILE_PIECE_BYTES).min(sealed.len());
        let mut held = vec![0; end - start];
        stores[BOB]
            .read_at(&piece_name(&event, index), 0, &mut held)
            .unwrap();
        assert!(held == sealed[start..end], "piece {index} is Alice's own");
    }
    let arrived = sim
        .trace()
        .iter()
        .filter(|l| l.contains("PieceArrived"))
        .count();
    assert_eq!(arrived, 4, "the file service hears of each piece kept");

    // A piece handed over directly, even by Alice's own device, is
    // refused: pieces come from the mailbox only.
    let before = sim.trace().len();
    let direct = piece(&alice_key, event, &sealed, 0, 0);
    let alice_peer = sim.nodes[ALICE].peer;
    sim.inject(BOB, alice_peer, direct);
    assert!(
        sim.trace()[before..]
            .iter()
            .any(|l| l.contains(" n1 answer Refused")),
        "{:?}",
        &sim.trace()[before..]
    );
    assert_eq!(stores[BOB].list().unwrap().len(), 4);
    assert!(!stores[BOB].is_complete(&blob_name(&event)).unwrap());

    // Alice's service reports the job done: the ask goes.
    let done = Command::PiecesLeft {
        event,
        peer: job.peer,
        next: None,
    };
    sim.ask(ALICE, done).unwrap();
    match sim.ask(ALICE, Command::PieceJobs) {
        Ok(Response::PieceJobs(jobs)) => assert!(jobs.is_empty()),
        other => panic!("{other:?}"),
    }
}
