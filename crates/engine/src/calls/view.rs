//! What clients see of calls and ask of the call service.

use super::*;

/// Where a call's audio comes from and goes to. Without a file: silence
/// is sent and nothing is kept (this build has no sound card support).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallAudio {
    /// A 48 kHz mono 16-bit WAV file to send.
    pub wav_in: Option<PathBuf>,
    /// A WAV file to write what is heard into.
    pub wav_out: Option<PathBuf>,
    /// A folder to write each participant's frames into as well, one WAV
    /// file each, named by its peer id (a meeting's separate tracks).
    #[serde(default)]
    pub wav_each: Option<PathBuf>,
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// This user calls; the other side has not answered.
    Calling,
    /// A contact calls; this device rings.
    Ringing,
    /// Answered: audio flows.
    Active,
    /// Over.
    Ended,
}

/// What a call's media counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Frames captured, coded, sealed and sent.
    pub sent: u64,
    /// Frames pushed out of a send queue by newer ones.
    pub dropped_in_queue: u64,
    /// Frames received that opened.
    pub received: u64,
    /// Frames that did not open or were malformed.
    pub refused: u64,
    /// Frames played as they came.
    pub played: u64,
    /// Frames that came after their turn (dropped).
    pub late: u64,
    /// Frames missing at their turn.
    pub lost: u64,
    /// Missing frames concealed.
    pub concealed: u64,
    /// Missing frames rebuilt from forward error correction.
    pub fec_recovered: u64,
    /// Frames skipped to bring the delay down.
    pub skipped: u64,
    /// Transit variation (p95), ms.
    pub jitter_ms: u64,
    /// The jitter buffer's delay, ms.
    pub delay_ms: u64,
    /// Capture to play-out, median, ms (the senders' and this device's
    /// clocks taken as one).
    pub mouth_to_ear_p50_ms: Option<u32>,
    /// Capture to play-out, 95th percentile, ms.
    pub mouth_to_ear_p95_ms: Option<u32>,
    /// The loss the other side reports, percent (the encoder adds FEC).
    pub expected_loss_percent: u8,
    /// The longest run of frames of one participant not played as they
    /// came (lost: concealed or rebuilt), ms.
    #[serde(default)]
    pub longest_gap_ms: u64,
    /// Media streams this device opened: one per participant, and one
    /// more each time a path broke and was opened again (say, a relay's
    /// circuit that reached its limit).
    #[serde(default)]
    pub streams_opened: u64,
    /// When the first sample this device sent was taken, µs since the Unix
    /// epoch: with `playout_started_us`, where a moment of the audio files
    /// sits in time (`--wav-in` from its start, `--wav-out` one frame per
    /// 20 ms from the first heard, silence where nothing came).
    #[serde(default)]
    pub capture_started_us: Option<u64>,
    /// When the first sample heard was played, µs since the Unix epoch.
    #[serde(default)]
    pub playout_started_us: Option<u64>,
}

/// How a call's audio reaches the other end now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallPath {
    /// Through a relay's circuit (else direct).
    pub relayed: bool,
    /// Over QUIC (else TCP, or whatever the circuit runs over).
    pub quic: bool,
    /// The relay's limit on a circuit's time, seconds (when it said): the
    /// circuit closes then, and the call opens another if the relay lets it.
    pub limit_secs: Option<u64>,
    /// The relay's limit on a circuit's bytes (when it said).
    pub limit_bytes: Option<u64>,
}

impl From<&safemeet_net::LinkPath> for CallPath {
    fn from(path: &safemeet_net::LinkPath) -> Self {
        Self {
            relayed: path.relay.is_some(),
            quic: path.quic,
            limit_secs: path.limit.and_then(|l| l.duration).map(|d| d.as_secs()),
            limit_bytes: path.limit.and_then(|l| l.bytes),
        }
    }
}

/// A call as `call status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    /// The call's id (32 hex digits).
    pub call_id: String,
    /// The contact on the other end.
    pub with: UserId,
    /// This user called.
    pub outgoing: bool,
    /// Where it stands.
    pub state: CallState,
    /// How it ended.
    pub outcome: Option<CallOutcome>,
    /// Why it ended, in words.
    pub reason: Option<String>,
    /// When it started ringing.
    pub at: Timestamp,
    /// How long it has been answered, ms.
    pub duration_ms: u64,
    /// Its media's counts.
    pub stats: CallStats,
    /// A meeting's room (`None`: a call with one contact, `with`).
    #[serde(default)]
    pub room_id: Option<safemeet_proto::RoomId>,
    /// A meeting's other participants, as users (one per device in it).
    #[serde(default)]
    pub participants: Vec<UserId>,
    /// The epoch of the key this device seals with now (it moves on when
    /// someone joins, and to a fresh key 1 s after someone leaves).
    #[serde(default)]
    pub key_epoch: Option<u32>,
    /// How a call's audio reaches the other end now (a call with one
    /// contact, once answered).
    #[serde(default)]
    pub path: Option<CallPath>,
}

/// What a client asks of the call service.
#[derive(Debug)]
pub(crate) enum Ask {
    Place(UserId, CallAudio, oneshot::Sender<Result<CallView, Error>>),
    Accept(CallAudio, oneshot::Sender<Result<CallView, Error>>),
    Decline(oneshot::Sender<Result<CallView, Error>>),
    Hangup(oneshot::Sender<Result<CallView, Error>>),
    Status(oneshot::Sender<Vec<CallView>>),
    Meet(
        safemeet_proto::RoomId,
        CallAudio,
        oneshot::Sender<Result<CallView, Error>>,
    ),
}

/// Refuses audio files that cannot be used, before anyone rings.
pub(super) fn check_audio(audio: &CallAudio) -> Result<(), Error> {
    if let Some(path) = &audio.wav_in {
        safemeet_media::audio::WavSource::open(path)
            .map_err(|e| CallError::Audio(e.to_string()))?;
    }
    if let Some(path) = &audio.wav_out {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(CallError::Audio(format!("no folder for {}", path.display())).into());
        }
    }
    Ok(())
}

impl Handle {
    async fn call_ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Ask) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(make(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Calls a contact: every device of theirs this device can reach rings.
    pub async fn call(&self, user: UserId, audio: CallAudio) -> Result<CallView, Error> {
        self.call_ask(|tx| Ask::Place(user, audio, tx)).await?
    }

    /// Answers the call ringing here.
    pub async fn call_accept(&self, audio: CallAudio) -> Result<CallView, Error> {
        self.call_ask(|tx| Ask::Accept(audio, tx)).await?
    }

    /// Declines the call ringing here.
    pub async fn call_decline(&self) -> Result<CallView, Error> {
        self.call_ask(Ask::Decline).await?
    }

    /// Ends the call on now (or stops calling).
    pub async fn call_hangup(&self) -> Result<CallView, Error> {
        self.call_ask(Ask::Hangup).await?
    }

    /// The call on now, if any, then the last ended ones, newest first.
    pub async fn calls(&self) -> Result<Vec<CallView>, Error> {
        self.call_ask(Ask::Status).await
    }

    /// Joins the meeting of a room (starts one if none runs): every
    /// member device that can be reached hears of it.
    pub async fn meet(
        &self,
        room: safemeet_proto::RoomId,
        audio: CallAudio,
    ) -> Result<CallView, Error> {
        self.call_ask(|tx| Ask::Meet(room, audio, tx)).await?
    }
}
