//! The file service's task: fetching the files of messages that arrive,
//! serving this device's files, and removing the files of messages that
//! are gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use safemeet_crypto::attachment::chunk_count;
use safemeet_proto::EventId;
use safemeet_proto::clock::{Clock, SystemClock};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::keep::{Writer, finish, reopen};
use super::pieces::PieceError;
use super::serve::{self, REQUEST_BYTES, STALL, Status};
use super::{
    Direction, FilesShared, MAX_FETCHING, MAX_SERVING, MAX_SERVING_PER_PEER, SEALED_CHUNK_BYTES,
    Transfer, TransferState, blob_name, chunk_offset, sealed_size,
};
use crate::events::{Command, Response};
use crate::file_pieces::piece_count;
use crate::handle::WeakHandle;
use crate::{FileEntry, Handle, LogEntry, MessageState};

/// The first wait before fetching again from a sender that could not be
/// reached; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Chunks appended to the blob store at once (1 MiB).
const CHUNKS_PER_WRITE: usize = 16;

/// How a fetch ended.
pub(super) enum Fetched {
    /// The file is held whole and checked (or was already).
    Done,
    /// Not now: the sender could not be reached, or was not ready.
    Retry(String),
    /// Another file from the same device is arriving: after it (one at a
    /// time per sending device, so a sender that trickles its files
    /// holds one fetch slot, not all of them).
    Busy,
    /// Refused for good.
    Failed(String),
    /// The message is gone, or carries no file.
    Gone,
}

/// Runs the file service until `cancel`.
pub(crate) async fn run(
    handle: WeakHandle,
    net: safemeet_net::Handle,
    files: Arc<FilesShared>,
    cancel: CancellationToken,
) {
    let mut incoming = match net.blob_streams() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "files cannot be served");
            None
        }
    };
    let Some(first) = handle.upgrade() else {
        return;
    };
    let mut log = first.log_watch();
    let mut cursor = log.borrow().saturating_sub(1);
    let mut service = Service {
        net,
        files,
        queue: VecDeque::new(),
        queued: HashSet::new(),
        fetching: JoinSet::new(),
        running: HashMap::new(),
        retry: HashMap::new(),
        serving: JoinSet::new(),
        serving_peers: HashMap::new(),
        couriers: JoinSet::new(),
        courier_queue: VecDeque::new(),
        couriering: HashSet::new(),
        arrived_running: HashSet::new(),
    };
    service.start(&first).await;
    drop(first);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some((peer, stream)) = async {
                match incoming.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(h) = handle.upgrade() else { break };
                service.serve(h, peer, stream);
            }
            changed = log.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(h) = handle.upgrade() else { break };
                cursor = service.follow_log(&h, cursor).await;
            }
            Some(done) = service.fetching.join_next() => {
                if let Ok((event, fetched)) = done {
                    service.fetched(event, fetched);
                }
            }
            Some(done) = service.serving.join_next() => {
                if let Ok(peer) = done {
                    service.served(peer);
                }
            }
            () = service.files.wake.notified() => service.take_inbox(),
            Some(done) = service.couriers.join_next() => {
                if let Ok(job) = done {
                    service.couriering.remove(&job);
                }
            }
            _ = tick.tick() => {}
        }
        if let Some(h) = handle.upgrade() {
            service.start_due(&h);
        } else {
            break;
        }
    }
    service.fetching.abort_all();
    service.serving.abort_all();
    service.couriers.abort_all();
}

struct Service {
    net: safemeet_net::Handle,
    files: Arc<FilesShared>,
    /// Files to fetch, in order.
    queue: VecDeque<EventId>,
    queued: HashSet<EventId>,
    fetching: JoinSet<(EventId, Fetched)>,
    running: HashMap<EventId, tokio::task::AbortHandle>,
    /// Files whose sender could not be reached: when to try again, and
    /// the wait after that.
    retry: HashMap<EventId, (tokio::time::Instant, Duration)>,
    serving: JoinSet<PeerId>,
    serving_peers: HashMap<PeerId, usize>,
    /// Files being left on devices' relays, and ones waiting their turn.
    couriers: JoinSet<(EventId, PeerId)>,
    courier_queue: VecDeque<crate::PieceJob>,
    couriering: HashSet<(EventId, PeerId)>,
    /// Files some of whose pieces arrived while they were being fetched:
    /// fetched again at once if that fetch does not finish them.
    arrived_running: HashSet<EventId>,
}

impl Service {
    /// At start: the files of the messages held are fetched where they
    /// are not whole, and blobs no message names are removed.
    async fn start(&mut self, handle: &Handle) {
        let entries = match handle.core(Command::FileEntries).await {
            Ok(Response::Files(entries)) => entries,
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "the files held could not be listed");
                return;
            }
        };
        let mut live: HashSet<[u8; 16]> = entries.iter().map(|e| blob_name(&e.event_id)).collect();
        let blobs = self.files.blobs.clone();
        let files = self.files.clone();
        let incoming: Vec<(EventId, u64)> = entries
            .iter()
            .filter(|e| !e.sent_here)
            .map(|e| (e.event_id, e.file.size))
            .collect();
        let removed = super::blocking(move || {
            // Pieces that came through relays, of files not whole yet.
            for (event, size) in incoming {
                if !blobs.is_complete(&blob_name(&event))? {
                    live.extend(
                        (0..piece_count(size)).map(|i| crate::file_pieces::piece_name(&event, i)),
                    );
                }
            }
            let mut removed = 0usize;
            for name in blobs.list()? {
                if !live.contains(&name) && !files.is_sealing(&name) {
                    blobs.remove(&name)?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await;
        match removed {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed files no message names"),
            Err(e) => tracing::warn!(error = %e, "the blob store could not be swept"),
        }
        for entry in entries {
            self.consider(&entry);
        }
        match handle.core(Command::PieceJobs).await {
            Ok(Response::PieceJobs(jobs)) => {
                for job in jobs {
                    self.files.leave_pieces(job);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the files to leave on relays could not be listed")
            }
        }
    }

    /// Takes what the actor handed over: files to leave on relays are
    /// queued, and files some of whose pieces arrived are fetched now.
    fn take_inbox(&mut self) {
        let inbox = self.files.take_inbox();
        for job in inbox.jobs {
            if self.couriering.insert((job.event_id, job.peer)) {
                self.courier_queue.push_back(job);
            }
        }
        for event in inbox.arrived {
            if self.running.contains_key(&event) {
                self.arrived_running.insert(event);
                continue;
            }
            // A file message not seen in the log yet is queued when it is.
            if self.files.get(&event).is_none() {
                continue;
            }
            self.retry.remove(&event);
            if self.queued.insert(event) {
                self.queue.push_back(event);
            }
        }
    }

    /// Queues the file of a message held, unless this device sent it.
    fn consider(&mut self, entry: &FileEntry) {
        if entry.sent_here || self.queued.contains(&entry.event_id) {
            return;
        }
        let chunks = chunk_count(entry.file.size);
        if self.files.get(&entry.event_id).is_none() {
            self.files.set(Transfer {
                event_id: entry.event_id,
                direction: Direction::Receive,
                size: entry.file.size,
                chunks,
                done: 0,
                served: 0,
                relayed: 0,
                state: TransferState::Waiting,
            });
        }
        self.queued.insert(entry.event_id);
        self.queue.push_back(entry.event_id);
    }

    /// Reads the event log from `cursor` on: new file messages are
    /// queued, the files of removed ones are deleted.
    async fn follow_log(&mut self, handle: &Handle, mut cursor: u64) -> u64 {
        loop {
            let page = match handle.events(cursor, 256).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(error = %e, "the event log could not be read");
                    return cursor;
                }
            };
            let Some((last, _)) = page.last() else {
                return cursor;
            };
            cursor = *last;
            for (_, entry) in page {
                match entry {
                    LogEntry::Message { room_id, entry } => {
                        if let Some(file) = entry.file {
                            // Messages from other devices arrive
                            // "received"; this device's own are sent.
                            let sent_here = entry.state != MessageState::Received;
                            self.consider(&FileEntry {
                                event_id: entry.event_id,
                                room_id,
                                file,
                                sent_here,
                            });
                        }
                    }
                    LogEntry::Removed { event_id, .. } => self.remove(event_id).await,
                    _ => {}
                }
            }
        }
    }

    /// The message is gone: so is its file.
    async fn remove(&mut self, event: EventId) {
        if let Some(task) = self.running.remove(&event) {
            task.abort();
        }
        if let Some(transfer) = self.files.get(&event) {
            let blobs = self.files.blobs.clone();
            let count = piece_count(transfer.size);
            let _ = super::blocking(move || {
                super::pieces::remove_pieces(&*blobs, &event, 0, count);
                Ok(())
            })
            .await;
        }
        self.queued.remove(&event);
        self.queue.retain(|e| *e != event);
        self.retry.remove(&event);
        self.files.forget(&event);
        let blobs = self.files.blobs.clone();
        let name = blob_name(&event);
        if let Err(e) = super::blocking(move || blobs.remove(&name)).await {
            tracing::warn!(error = %e, "a removed message's file could not be deleted");
        }
    }

    /// Starts queued fetches while there is room, and fetches whose retry
    /// is due.
    fn start_due(&mut self, handle: &Handle) {
        while self.couriers.len() < super::courier::MAX_COURIERS {
            let Some(job) = self.courier_queue.pop_front() else {
                break;
            };
            self.couriers.spawn(super::courier::leave(
                handle.downgrade(),
                self.net.clone(),
                self.files.clone(),
                job,
            ));
        }
        let now = tokio::time::Instant::from_std(SystemClock.instant());
        let due: Vec<EventId> = self
            .retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(e, _)| *e)
            .collect();
        for event in due {
            if self.queued.insert(event) {
                self.queue.push_back(event);
            }
        }
        while self.running.len() < MAX_FETCHING {
            let Some(event) = self.queue.pop_front() else {
                break;
            };
            if self.running.contains_key(&event) {
                continue;
            }
            if let Some((at, _)) = self.retry.get(&event)
                && *at > now
            {
                self.queued.remove(&event);
                continue;
            }
            let task = self.fetching.spawn(fetch(
                handle.clone(),
                self.net.clone(),
                self.files.clone(),
                event,
            ));
            self.running.insert(event, task);
        }
    }

    fn fetched(&mut self, event: EventId, fetched: Fetched) {
        self.running.remove(&event);
        if !matches!(fetched, Fetched::Retry(_)) {
            self.arrived_running.remove(&event);
        }
        self.queued.remove(&event);
        match fetched {
            Fetched::Done | Fetched::Gone => {
                self.retry.remove(&event);
            }
            Fetched::Failed(reason) => {
                self.retry.remove(&event);
                tracing::warn!(reason = %reason, "a file was refused");
                self.files.update(&event, |t| {
                    t.state = TransferState::Failed { reason };
                });
            }
            Fetched::Busy => {
                let at = tokio::time::Instant::from_std(SystemClock.instant()) + RETRY_FIRST;
                let wait = self.retry.get(&event).map_or(RETRY_FIRST, |(_, w)| *w);
                self.retry.insert(event, (at, wait));
                self.files
                    .update(&event, |t| t.state = TransferState::Waiting);
            }
            Fetched::Retry(why) => {
                tracing::debug!(why = %why, "a file will be fetched again");
                let wait = self.retry.get(&event).map_or(RETRY_FIRST, |(_, w)| *w);
                let mut at = tokio::time::Instant::from_std(SystemClock.instant());
                // Pieces that came meanwhile are taken in at once.
                if !self.arrived_running.remove(&event) {
                    at += wait;
                }
                self.retry.insert(event, (at, (wait * 2).min(RETRY_MAX)));
                self.files
                    .update(&event, |t| t.state = TransferState::Waiting);
            }
        }
    }

    fn serve(&mut self, handle: Handle, peer: PeerId, stream: Stream) {
        let now = self.serving_peers.get(&peer).copied().unwrap_or(0);
        if self.serving.len() >= MAX_SERVING || now >= MAX_SERVING_PER_PEER {
            // Dropped unanswered: the peer asks again later.
            return;
        }
        self.serving_peers.insert(peer, now + 1);
        let files = self.files.clone();
        self.serving.spawn(async move {
            serve::serve(handle, files, peer, stream).await;
            peer
        });
    }

    fn served(&mut self, peer: PeerId) {
        if let Some(n) = self.serving_peers.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.serving_peers.remove(&peer);
            }
        }
    }
}

/// Fetches the file of message `event` from the device that sent it,
/// from the last whole chunk kept.
async fn fetch(
    handle: Handle,
    net: safemeet_net::Handle,
    files: Arc<FilesShared>,
    event: EventId,
) -> (EventId, Fetched) {
    (event, fetch_inner(handle, net, files, event).await)
}

async fn fetch_inner(
    handle: Handle,
    net: safemeet_net::Handle,
    files: Arc<FilesShared>,
    event: EventId,
) -> Fetched {
    let source = match handle.core(Command::FileSource(event)).await {
        Ok(Response::FileSource(Some(source))) => source,
        Ok(_) => return Fetched::Gone,
        Err(e) => return Fetched::Retry(e.to_string()),
    };
    if source.entry.sent_here {
        return Fetched::Done;
    }
    let file = source.entry.file;
    if file.size > files.max_file_bytes {
        return Fetched::Failed(format!(
            "a file of {} bytes is past this node's limit of {} bytes",
            file.size, files.max_file_bytes
        ));
    }
    let name = blob_name(&event);
    let kept = {
        let blobs = files.blobs.clone();
        let file = file.clone();
        super::blocking(move || reopen(&*blobs, &name, file)).await
    };
    let (assembler, complete) = match kept {
        Ok(kept) => kept,
        Err(e) => return Fetched::Retry(e.to_string()),
    };
    let chunks = assembler.count();
    if complete {
        files.update(&event, |t| {
            t.done = chunks;
            t.state = TransferState::Complete;
        });
        return Fetched::Done;
    }
    // What came through this device's relays first.
    let mut assembler = match super::pieces::take_in(&files, event, file.size, assembler).await {
        Ok(assembler) => assembler,
        Err(PieceError::Damaged(e)) => return Fetched::Failed(e),
        Err(PieceError::Store(e)) => return Fetched::Retry(e),
    };
    files.update(&event, |t| t.done = assembler.next_chunk());
    if assembler.next_chunk() == chunks {
        return finish(&files, event, assembler).await;
    }
    let Some((peer, addrs)) = source.from else {
        return Fetched::Retry("the sending device is not known".into());
    };
    let Some(_one_at_a_time) = FilesShared::claim_source(&files, peer) else {
        return Fetched::Busy;
    };
    let mut stream = match net.open_blob_stream(peer, &addrs).await {
        Ok(s) => s,
        Err(e) => return Fetched::Retry(e.to_string()),
    };
    let first = assembler.next_chunk();
    let req = serve::request(&event, first);
    debug_assert_eq!(req.len(), REQUEST_BYTES);
    if !matches!(
        tokio::time::timeout(STALL, stream.write_all(&req)).await,
        Ok(Ok(()))
    ) {
        return Fetched::Retry("the request could not be sent".into());
    }
    let mut status = [0u8; 1];
    if !matches!(
        tokio::time::timeout(STALL, stream.read_exact(&mut status)).await,
        Ok(Ok(()))
    ) {
        return Fetched::Retry("the sender did not answer".into());
    }
    match Status::from_byte(status[0]) {
        Some(Status::Ok) => {}
        Some(Status::NotReady) => return Fetched::Retry("the sender is not ready".into()),
        Some(Status::Refused) => return Fetched::Retry("the sender refused".into()),
        None => return Fetched::Retry("the sender answered nonsense".into()),
    }
    files.update(&event, |t| t.state = TransferState::Receiving);
    let total = sealed_size(file.size);
    let mut pending = Vec::with_capacity(CHUNKS_PER_WRITE * SEALED_CHUNK_BYTES);
    let mut chunk = vec![0u8; SEALED_CHUNK_BYTES];
    let mut index = first;
    let mut writer = Writer {
        files: files.clone(),
        name,
        event,
        writing: None,
    };
    while index < chunks {
        let len = (chunk_offset(index + 1).min(total) - chunk_offset(index)) as usize;
        let read = tokio::time::timeout(STALL, stream.read_exact(&mut chunk[..len])).await;
        if !matches!(read, Ok(Ok(()))) {
            let _ = writer.push(std::mem::take(&mut pending), index).await;
            let _ = writer.flush().await;
            return Fetched::Retry("the stream ended early".into());
        }
        if let Err(e) = assembler.take(&chunk[..len]) {
            // Nothing of the damaged chunk is kept; what came before it is.
            let _ = writer.push(std::mem::take(&mut pending), index).await;
            let _ = writer.flush().await;
            return Fetched::Failed(e.to_string());
        }
        pending.extend_from_slice(&chunk[..len]);
        index += 1;
        if pending.len() >= CHUNKS_PER_WRITE * SEALED_CHUNK_BYTES || index == chunks {
            let batch = std::mem::replace(
                &mut pending,
                Vec::with_capacity(CHUNKS_PER_WRITE * SEALED_CHUNK_BYTES),
            );
            if let Err(e) = writer.push(batch, index).await {
                return Fetched::Retry(e.to_string());
            }
        }
    }
    if let Err(e) = writer.flush().await {
        return Fetched::Retry(e.to_string());
    }
    finish(&files, event, assembler).await
}
