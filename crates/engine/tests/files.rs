//! Files between engines over the memory transport (real libp2p: Noise,
//! yamux, the `/safemeet/blob/1` stream): a file arrives whole and
//! checked, a sender that serves a damaged chunk is refused, a redacted
//! file leaves every member's blob store, and the size limit holds on
//! both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use safemeet_engine::{
    Blobs, Conversation, FileError, FileUpload, Handle, SEALED_CHUNK_BYTES, TransferState,
    blob_name,
};
use safemeet_proto::EventId;
use safemeet_store::blob::{BlobName, BlobStore, MemoryBlobs};

const WAIT: Duration = Duration::from_secs(30);

/// A sender's blob store that flips one byte of chunk 3 whenever it is
/// read: a hostile (or broken) sender.
struct Tampering(MemoryBlobs);

impl BlobStore for Tampering {
    fn len(&self, n: &BlobName) -> safemeet_store::Result<Option<u64>> {
        self.0.len(n)
    }
    fn is_complete(&self, n: &BlobName) -> safemeet_store::Result<bool> {
        self.0.is_complete(n)
    }
    fn append(&self, n: &BlobName, b: &[u8]) -> safemeet_store::Result<()> {
        self.0.append(n, b)
    }
    fn truncate(&self, n: &BlobName, l: u64) -> safemeet_store::Result<()> {
        self.0.truncate(n, l)
    }
    fn sync(&self, n: &BlobName) -> safemeet_store::Result<()> {
        self.0.sync(n)
    }
    fn complete(&self, n: &BlobName) -> safemeet_store::Result<()> {
        self.0.complete(n)
    }
    fn read_at(&self, n: &BlobName, off: u64, buf: &mut [u8]) -> safemeet_store::Result<usize> {
        let got = self.0.read_at(n, off, buf)?;
        let target = 3 * SEALED_CHUNK_BYTES as u64 + 100;
        if (off..off + got as u64).contains(&target) {
            buf[(target - off) as usize] ^= 0x40;
        }
        Ok(got)
    }
    fn rename(&self, a: &BlobName, b: &BlobName) -> safemeet_store::Result<()> {
        self.0.rename(a, b)
    }
    fn remove(&self, n: &BlobName) -> safemeet_store::Result<()> {
        self.0.remove(n)
    }
    fn list(&self) -> safemeet_store::Result<Vec<BlobName>> {
        self.0.list()
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn upload(data: &[u8], name: &str) -> FileUpload {
    FileUpload {
        reader: Box::new(Cursor::new(data.to_vec())),
        size: data.len() as u64,
        name: name.into(),
        media_type: "application/octet-stream".into(),
    }
}

/// Two engines, contacts; each blob store as given.
async fn pair(
    a: Arc<dyn BlobStore>,
    b: Arc<dyn BlobStore>,
    max_file_bytes: [u64; 2],
) -> (Handle, Handle) {
    let stores = Mutex::new(vec![(b, max_file_bytes[1]), (a, max_file_bytes[0])]);
    let mut nodes = safemeet_test_utils::spawn_nodes_with(2, |c| {
        let (blobs, max) = stores.lock().unwrap().pop().unwrap();
        c.blobs = Some(Blobs(blobs));
        c.max_file_bytes = max;
    })
    .await;
    let b = nodes.pop().unwrap().1;
    let a = nodes.pop().unwrap().1;
    (a, b)
}

/// Waits until `engine` holds a message `event` (it arrived).
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !check() {
            tick.tick().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: timed out"));
}

/// `a` sends `b` a file; once `b` holds it whole.
async fn sent_and_held(a: &Handle, b: &Handle, file: FileUpload, caption: &str) -> EventId {
    let event = a
        .send_file(Conversation::Dm(b.user_id()), file, caption)
        .await
        .unwrap();
    wait_until("bob holds the file", || {
        b.transfer(&event)
            .is_some_and(|t| t.state == TransferState::Complete)
    })
    .await;
    event
}

async fn save(engine: &Handle, event: EventId) -> Result<Vec<u8>, safemeet_engine::Error> {
    let out = Arc::new(Mutex::new(Vec::new()));
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    engine.save_file(event, Box::new(Sink(out.clone()))).await?;
    let data = out.lock().unwrap().clone();
    Ok(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_arrives_whole_and_a_redacted_one_leaves_both_stores() {
    let (sa, sb) = (MemoryBlobs::new(), MemoryBlobs::new());
    let (a, b) = pair(
        Arc::new(sa.clone()),
        Arc::new(sb.clone()),
        [1 << 30, 1 << 30],
    )
    .await;
    let data = bytes(3 * 1024 * 1024 + 17, 7);
    let event = sent_and_held(&a, &b, upload(&data, "x.bin"), "look").await;
    assert_eq!(save(&b, event).await.unwrap(), data);
    assert_eq!(save(&a, event).await.unwrap(), data);
    let sent = a.transfer(&event).unwrap();
    assert_eq!(sent.chunks, 49);
    assert_eq!(sent.served, 49, "each chunk served once");
    let messages = b.dm_messages(a.user_id(), 10).await.unwrap();
    let m = messages.iter().find(|m| m.event_id == event).unwrap();
    assert_eq!(m.text, "look");
    assert_eq!(m.file.as_ref().unwrap().name, "x.bin");

    // Redacted: gone from both blob stores, and no longer saved.
    let name = blob_name(&event);
    assert!(sa.len(&name).unwrap().is_some() && sb.len(&name).unwrap().is_some());
    a.redact(event).await.unwrap();
    wait_until("the file leaves both stores", || {
        sa.len(&name).unwrap().is_none() && sb.len(&name).unwrap().is_none()
    })
    .await;
    assert!(matches!(
        save(&b, event).await,
        Err(safemeet_engine::Error::File(FileError::NotAFile))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_chunk_is_refused_and_nothing_past_it_is_kept() {
    let sb = MemoryBlobs::new();
    let (a, b) = pair(
        Arc::new(Tampering(MemoryBlobs::new())),
        Arc::new(sb.clone()),
        [1 << 30, 1 << 30],
    )
    .await;
    let data = bytes(10 * 65536, 9);
    let event = a
        .send_file(Conversation::Dm(b.user_id()), upload(&data, "x.bin"), "")
        .await
        .unwrap();
    wait_until("bob refuses the file", || {
        b.transfer(&event)
            .is_some_and(|t| matches!(t.state, TransferState::Failed { .. }))
    })
    .await;
    let t = b.transfer(&event).unwrap();
    let TransferState::Failed { reason } = &t.state else {
        unreachable!()
    };
    assert!(reason.contains("chunk 3 is damaged"), "{reason}");
    // The three good chunks before it are kept, nothing after.
    assert_eq!(
        sb.len(&blob_name(&event)).unwrap(),
        Some(3 * SEALED_CHUNK_BYTES as u64)
    );
    let e = save(&b, event).await.unwrap_err();
    assert!(
        matches!(e, safemeet_engine::Error::File(FileError::Refused(_))),
        "{e}"
    );
    assert!(e.to_string().contains("damaged"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_past_the_limit_are_neither_sent_nor_fetched() {
    let sb = MemoryBlobs::new();
    let (a, b) = pair(
        Arc::new(MemoryBlobs::new()),
        Arc::new(sb.clone()),
        [1 << 20, 256 * 1024],
    )
    .await;
    let e = a
        .send_file(
            Conversation::Dm(b.user_id()),
            upload(&bytes((1 << 20) + 1, 1), "big.bin"),
            "",
        )
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        safemeet_engine::Error::File(FileError::TooLarge { .. })
    ));
    // Within the sender's limit but past the receiver's: refused there.
    let event = a
        .send_file(
            Conversation::Dm(b.user_id()),
            upload(&bytes(512 * 1024, 2), "mid.bin"),
            "",
        )
        .await
        .unwrap();
    wait_until("bob refuses the large file", || {
        b.transfer(&event)
            .is_some_and(|t| matches!(t.state, TransferState::Failed { .. }))
    })
    .await;
    assert_eq!(sb.len(&blob_name(&event)).unwrap(), None);
    // A file whose reader gives fewer bytes than its size said is not sent.
    let short = FileUpload {
        reader: Box::new(Cursor::new(vec![1u8; 10])),
        size: 20,
        name: "short.bin".into(),
        media_type: "text/plain".into(),
    };
    let e = a
        .send_file(Conversation::Dm(b.user_id()), short, "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("could not be read whole"), "{e}");
    // Names that leave a directory are refused before anything is sealed.
    let e = a
        .send_file(
            Conversation::Dm(b.user_id()),
            upload(b"x", "../etc/passwd"),
            "",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("file name"), "{e}");
}

/// A bare node with `key` on the memory transport: what a hostile peer
/// uses to ask for files directly.
fn bare_node(key: libp2p::identity::Keypair) -> safemeet_net::Handle {
    let port = 5_000_000 + (std::process::id() % 100_000) * 4 + rand_bit();
    let (net, events) = safemeet_net::spawn(
        key,
        safemeet_net::Config {
            listen: vec![format!("/memory/{port}").parse().unwrap()],
            ..safemeet_net::Config::loopback()
        },
    )
    .unwrap();
    // Its events are not needed; drained so the node never stalls.
    tokio::spawn(async move {
        let mut events = events;
        while events.recv().await.is_some() {}
    });
    net
}

fn rand_bit() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Asks `to` for `event`'s chunks over `/safemeet/blob/1`; the status
/// byte it answers (`None`: the stream was closed or refused unanswered).
async fn ask(net: &safemeet_net::Handle, to: &Handle, event: EventId) -> Option<u8> {
    tokio::time::timeout(WAIT, ask_now(net, to, event))
        .await
        .ok()
        .flatten()
}

async fn ask_now(net: &safemeet_net::Handle, to: &Handle, event: EventId) -> Option<u8> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let addrs = to.listen_addrs().await.unwrap();
    let mut stream = net.open_blob_stream(to.peer_id(), &addrs).await.ok()?;
    let mut req = vec![1u8];
    req.extend_from_slice(event.as_bytes());
    req.extend_from_slice(&0u64.to_be_bytes());
    stream.write_all(&req).await.ok()?;
    let mut status = [0u8; 1];
    tokio::time::timeout(WAIT, stream.read_exact(&mut status))
        .await
        .ok()?
        .ok()?;
    Some(status[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_served_to_no_stranger_and_no_contact_outside_the_conversation() {
    let mut nodes = safemeet_test_utils::spawn_nodes_with(3, |c| {
        c.blobs = Some(Blobs(Arc::new(MemoryBlobs::new())));
    })
    .await;
    let (carol_device, carol) = nodes.pop().unwrap();
    let (a, b) = (&nodes[0].1, &nodes[1].1);
    let event = sent_and_held(a, b, upload(&bytes(200_000, 4), "secret.bin"), "").await;
    let served = a.transfer(&event).unwrap().served;

    // A stranger, with a key of its own: refused.
    let stranger = bare_node(libp2p::identity::Keypair::generate_ed25519());
    assert_eq!(
        ask(&stranger, a, event).await,
        Some(1),
        "a stranger is refused"
    );
    // Carol, Alice's contact but not in the DM, with her own device key
    // (her engine stopped first): refused too.
    carol.shutdown().await.unwrap();
    let carol_net = bare_node(carol_device.libp2p_keypair());
    assert_eq!(
        ask(&carol_net, a, event).await,
        Some(1),
        "a non-member is refused"
    );
    // A request that never comes holds a slot for 5 s at most: a flood of
    // silent streams, then a real one is still answered.
    let mut silent = Vec::new();
    for _ in 0..8 {
        if let Ok(s) = stranger
            .open_blob_stream(a.peer_id(), &a.listen_addrs().await.unwrap())
            .await
        {
            silent.push(s);
        }
    }
    let started = safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock);
    loop {
        if ask(&stranger, a, event).await == Some(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never answered"
        );
    }
    // Nothing was served to them, and Bob can still ask again (he is
    // allowed: the file is complete there, so his daemon does not).
    assert_eq!(a.transfer(&event).unwrap().served, served);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_file_leaves_both_stores() {
    let (sa, sb) = (MemoryBlobs::new(), MemoryBlobs::new());
    let (a, b) = pair(
        Arc::new(sa.clone()),
        Arc::new(sb.clone()),
        [1 << 30, 1 << 30],
    )
    .await;
    // Messages in the DM expire two seconds after they are sent.
    a.set_expiry(Conversation::Dm(b.user_id()), Some(Duration::from_secs(2)))
        .await
        .unwrap();
    let event = sent_and_held(&a, &b, upload(&bytes(300_000, 6), "brief.bin"), "").await;
    let name = blob_name(&event);
    wait_until("the expired file leaves both stores", || {
        sa.len(&name).unwrap().is_none() && sb.len(&name).unwrap().is_none()
    })
    .await;
    assert!(matches!(
        save(&b, event).await,
        Err(safemeet_engine::Error::File(FileError::NotAFile))
    ));
}
