//! The examples run to completion and say what they should.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::process::Command;

/// Runs an example binary, expects success, returns its standard output.
fn run(bin: &str) -> String {
    let out = Command::new(bin).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn device_certificates_example_refuses_every_forgery() {
    let stdout = run(env!("CARGO_BIN_EXE_device-certificates"));
    assert_eq!(stdout.matches("verified  ").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("refused   ").count(), 3, "{stdout}");
    assert!(
        stdout.contains("user mismatch") || stdout.contains("is for user"),
        "{stdout}"
    );
    assert!(stdout.contains("bad signature"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("all forgeries refused"),
        "{stdout}"
    );
}

#[test]
fn room_encryption_example_locks_out_the_member_who_left() {
    let stdout = run(env!("CARGO_BIN_EXE_room-encryption"));
    assert!(
        stdout.contains("bob   reads \"Hello, both of you\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("carol reads \"Hello, both of you\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("bob   reads \"Carol has left\""),
        "{stdout}"
    );
    assert!(stdout.contains("carol cannot read it"), "{stdout}");
    assert!(stdout.contains("RecipientRemoved"), "{stdout}");
}

#[test]
fn two_nodes_example_exchanges_messages() {
    let stdout = run(env!("CARGO_BIN_EXE_two-nodes"));
    assert!(
        stdout.contains("bob got:   Hi Bob, it's Alice."),
        "{stdout}"
    );
    assert!(stdout.contains("alice got: Hello Alice!"), "{stdout}");
    assert!(stdout.contains("alice's message is delivered"), "{stdout}");
}

mod echo_bot {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use safemeet_crypto::EncryptedStore;
    use safemeet_crypto::account::Account;
    use safemeet_crypto::at_rest::{DataKey, StoreCipher};
    use safemeet_crypto::machine::CryptoMachine;
    use safemeet_engine::MessageState;
    use safemeet_net::Config as NetConfig;
    use safemeet_proto::clock::{Clock, SystemClock};
    use safemeet_proto::{DisplayName, Username};
    use safemeet_store::MemoryStore;

    fn node(name: &str) -> (safemeet_engine::Handle, safemeet_api::Identity) {
        let account = Account::create(
            Username::new(name).unwrap(),
            DisplayName::new(name).unwrap(),
            vec![],
            SystemClock.now(),
        )
        .unwrap();
        let identity = safemeet_api::Identity {
            user_id: account.user_id().to_string(),
            device_id: account.device_id().to_string(),
            peer_id: account.peer_id().to_string(),
            username: name.to_owned(),
            display_name: name.to_owned(),
            emails: vec![],
        };
        let store = EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()));
        CryptoMachine::store_account(&store, &account).unwrap();
        let config = safemeet_engine::Config {
            net: NetConfig::loopback(),
            ..safemeet_engine::Config::default()
        };
        let engine = safemeet_engine::start(CryptoMachine::open(store).unwrap(), config).unwrap();
        (engine, identity)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_bot_answers_through_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("alice.sock");
        let (alice, identity) = node("alice");
        let (bob, _) = node("bob");
        {
            let (socket, alice) = (socket.clone(), alice.clone());
            tokio::spawn(async move { safemeet_api::serve(&socket, alice, identity).await });
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while alice.listen_addrs().await.unwrap().is_empty()
            || bob.listen_addrs().await.unwrap().is_empty()
            || !socket.exists()
        {
            tick.tick().await;
        }
        alice
            .add_contact(&bob.invite().await.unwrap(), None)
            .await
            .unwrap();
        bob.add_contact(&alice.invite().await.unwrap(), None)
            .await
            .unwrap();

        let mut bot = Command::new(env!("CARGO_BIN_EXE_echo-bot"))
            .arg("--socket")
            .arg(&socket)
            .args(["--count", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(bot.stdout.take().unwrap()).lines();
        let first = tokio::task::spawn_blocking(move || {
            let first = lines.next().unwrap().unwrap();
            (first, lines)
        })
        .await
        .unwrap();
        assert!(first.0.starts_with("listening from cursor"), "{}", first.0);

        bob.send_dm(alice.user_id(), "ping").await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                tick.tick().await;
                let got = bob.dm_messages(alice.user_id(), 10).await.unwrap();
                if got
                    .iter()
                    .any(|m| m.text == "echo: ping" && m.state == MessageState::Received)
                {
                    return;
                }
            }
        })
        .await;
        assert!(answered.is_ok(), "the bot never answered");
        let status = tokio::task::spawn_blocking(move || bot.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success());
    }
}
