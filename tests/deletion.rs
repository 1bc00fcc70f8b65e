//! `safemeet account delete`, end to end with real processes: two
//! contacts, two relays, a room, a thousand planted messages, and a kill
//! -9 half way through.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde::Serialize;
use serde_json::Value;

mod support;

use support::contains;
use support::node::{
    Daemon, PASS, befriend, bin, cli, cli_fails, eventually, files_under, forms, init, secrets_of,
    user_id,
};

const MARKER: &str = "planted-marker-7f3a";

/// A timeline entry as the engine reads it (the layout before revisions,
/// which it still reads).
#[derive(Serialize)]
struct Planted {
    event_id: [u8; 32],
    sender: [u8; 32],
    sender_device: [u8; 16],
    lamport: u64,
    ts: u64,
    text: String,
    state: u8,
}

/// Writes `n` messages holding [`MARKER`] into the DM of a stopped
/// node's store, through the store API.
fn plant(home: &Path, room: safemeet_proto::RoomId, n: u32) {
    use safemeet_crypto::at_rest::{KeyFile, Passphrase, StoreCipher};
    let text = std::fs::read_to_string(home.join("keyfile")).unwrap();
    let key = KeyFile::from_json(&text)
        .unwrap()
        .unwrap_key(&Passphrase::new(PASS))
        .unwrap();
    let sled = safemeet_store_sled::SledStore::open(home.join("db"), &Default::default()).unwrap();
    let store = safemeet_crypto::EncryptedStore::new(sled, StoreCipher::new(&key));
    let mut name = b"timeline/".to_vec();
    name.extend_from_slice(room.as_bytes());
    let mut batch = store.batch();
    for i in 0..n {
        let mut id = [9u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let entry = Planted {
            event_id: id,
            sender: [1; 32],
            sender_device: [2; 16],
            lamport: u64::from(i),
            ts: 1_800_000_000_000,
            text: format!("{MARKER} {i}"),
            state: 0,
        };
        store
            .batch_put_ordered_value(
                &mut batch,
                safemeet_store::Keyspace::Timeline,
                &name,
                1_000_000 + u64::from(i),
                &entry,
                4096,
            )
            .unwrap();
    }
    store.apply(batch).unwrap();
    store.flush().unwrap();
}

fn contact<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn members(home: &Path, room: &str) -> Option<usize> {
    cli(home, &["room", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == room)
        .map(|r| r["members"].as_array().unwrap().len())
}

#[test]
fn a_deleted_account_leaves_nothing_here_nor_on_relays_and_contacts_know() {
    let dir = tempfile::tempdir().unwrap();
    let relays = [
        support::Relay::start(&dir.path().join("relay1"), &["--metrics", "127.0.0.1:0"]),
        support::Relay::start(&dir.path().join("relay2"), &["--metrics", "127.0.0.1:0"]),
    ];
    let relay_args: Vec<String> = relays
        .iter()
        .flat_map(|r| ["--relay".to_owned(), r.addr.to_string()])
        .collect();
    let relay_args: Vec<&str> = relay_args.iter().map(String::as_str).collect();
    let (alice, bob, carol) = (
        init(dir.path(), "alice"),
        init(dir.path(), "bob"),
        init(dir.path(), "carol"),
    );
    let da = Daemon::start_with(&alice, "/ip4/127.0.0.1/tcp/0", &relay_args);
    let db = Daemon::start(&bob);
    let dc = Daemon::start(&carol);
    befriend(&alice, "alice", &bob, "bob");
    befriend(&alice, "alice", &carol, "carol");
    for home in [&bob, &carol] {
        cli(home, &["contact", "set", "alice", "--auto-accept-invites"]);
    }
    cli(
        &alice,
        &[
            "room", "create", "club", "--member", "bob", "--member", "carol",
        ],
    );
    for home in [&bob, &carol] {
        eventually("the room to reach every member", || {
            (members(home, "club") == Some(3)).then_some(())
        });
    }
    cli(&alice, &["send", "bob", "said before"]);
    eventually("bob to get it", || {
        support::node::texts(&bob, "alice")
            .contains(&"said before".to_owned())
            .then_some(())
    });
    // And a file from Bob, which Alice's device keeps, sealed.
    let picture = dir.path().join("picture.png");
    std::fs::write(&picture, vec![0x5a; 200_000]).unwrap();
    let sent = cli(
        &bob,
        &["send", "alice", "--file", picture.to_str().unwrap()],
    );
    let event = sent["event_id"].as_str().unwrap().to_owned();
    eventually("alice to hold bob's file", || {
        cli(&alice, &["files"])
            .as_array()?
            .iter()
            .any(|t| t["event_id"] == event.as_str() && t["state"] == "complete")
            .then_some(())
    });
    assert_eq!(std::fs::read_dir(alice.join("blobs")).unwrap().count(), 1);
    // Alice goes offline: Bob's messages wait on her relays.
    da.stop();
    cli(&bob, &["send", "alice", "left on the relays"]);
    eventually("the relays to hold mail for alice", || {
        relays
            .iter()
            .all(|r| r.holds().is_some_and(|n| n > 0))
            .then_some(())
    });
    let room: safemeet_proto::RoomId = safemeet_engine::dm_room_id(
        &user_id(&alice).parse().unwrap(),
        &user_id(&bob).parse().unwrap(),
    );
    plant(&alice, room, 1_000);
    let secrets = secrets_of(&alice);

    // Not confirmed: nothing happens.
    let (code, said) = cli_fails(&alice, &["account", "delete"]);
    assert_eq!(code, Some(2), "{said}");
    assert!(alice.join("keyfile").exists());

    // Killed half way (as it purges the relays), then run again.
    let mut first = bin()
        .arg("--home")
        .arg(&alice)
        .args(["account", "delete", "--yes", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = first.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut said = Vec::new();
    loop {
        let line = lines.next().expect("progress before the end").unwrap();
        let purging = line.contains("purging");
        said.push(line);
        if purging {
            break;
        }
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        said.iter().any(|l| l.contains("telling 2 devices")),
        "{said:?}"
    );
    assert!(
        alice.join("deleting").exists(),
        "the marker of the deletion"
    );
    let done = cli(&alice, &["account", "delete", "--yes"]);
    assert_eq!(done["deleted"], true, "{done}");
    assert_eq!(done["rooms_left"], 0, "left in the first run: {done}");
    assert!(said.iter().any(|l| l.contains("left 1 rooms")), "{said:?}");

    // Every receipt is signed by its relay's own key, for the mailbox it names.
    let receipts = done["receipts"].as_array().unwrap();
    for relay in &relays {
        let peer = relay.peer.to_string();
        let mine: Vec<&Value> = receipts.iter().filter(|r| r["relay"] == peer).collect();
        assert!(!mine.is_empty(), "no receipt from {peer}: {done}");
        let hash: &libp2p::multihash::Multihash<64> = relay.peer.as_ref();
        let key = libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).unwrap();
        for r in mine {
            let mailbox: safemeet_proto::MailboxId =
                r["mailbox"].as_str().unwrap().parse().unwrap();
            let at =
                safemeet_proto::Timestamp::from_millis(r["purged_at"].as_u64().unwrap()).unwrap();
            let removed = u32::try_from(r["removed"].as_u64().unwrap()).unwrap();
            let signed = safemeet_proto::mailbox::PurgeReceipt::signed_bytes(&mailbox, removed, at);
            let signature = data_encoding::HEXLOWER
                .decode(r["signature"].as_str().unwrap().as_bytes())
                .unwrap();
            assert!(key.verify(&signed, &signature), "{r}");
            let forged =
                safemeet_proto::mailbox::PurgeReceipt::signed_bytes(&mailbox, removed + 1, at);
            assert!(!key.verify(&forged, &signature));
        }
    }
    assert!(
        done["relays_not_reached"].as_array().unwrap().is_empty(),
        "{done}"
    );
    // Both relays hold nothing for the account any more.
    for relay in &relays {
        assert_eq!(relay.holds(), Some(0));
    }

    // Contacts show the account as deleted, and refuse to send to it.
    for home in [&bob, &carol] {
        eventually("the contact to show the account deleted", || {
            let list = cli(home, &["contact", "list"]);
            (contact(&list, "alice")["deleted"] == true).then_some(())
        });
        let list = cli(home, &["contact", "list"]);
        assert!(
            contact(&list, "alice")["devices"]
                .as_array()
                .unwrap()
                .is_empty(),
            "its devices are forgotten: {list}"
        );
        let (code, said) = cli_fails(home, &["send", "alice", "anyone there?"]);
        assert_eq!(code, Some(2), "{said}");
        assert!(said.contains("deleted"), "{said}");
        eventually("alice to have left the room", || {
            (members(home, "club") == Some(2)).then_some(())
        });
    }

    // Nothing of the account is left in its home: no marker, no key, no
    // file.
    let files = files_under(&alice);
    let all: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(!contains(&all, MARKER.as_bytes()));
    assert!(!contains(&all, b"said before"));
    for secret in &secrets {
        for form in forms(secret) {
            assert!(!contains(&all, &form), "key material is left");
        }
    }
    assert!(
        files.is_empty(),
        "files left: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let (code, _) = cli_fails(&alice, &["whoami"]);
    assert_eq!(code, Some(4), "no account any more");
    // Once more: there is nothing to delete.
    let (code, _) = cli_fails(&alice, &["account", "delete", "--yes"]);
    assert_eq!(code, Some(4));
    db.stop();
    dc.stop();
}
