//! The receiving side's jitter buffer: frames held until they are due, in
//! order, with gaps filled.
//!
//! Frames are numbered by the sender and 20 ms apart. Frame `n` is due at
//! `capture(first) + 20 ms × (n − first) + offset`, where the offset is the
//! shortest transit seen (arrival − capture, which also absorbs the
//! difference between the two clocks) plus the **target delay**: the 95th
//! percentile of how much later than that shortest transit frames came,
//! plus 20 ms, kept within 20–200 ms (60 ms at the start). It follows the
//! last [`HISTORY`] frames, estimated from the first ten after the first
//! one plays and then once a second: it goes up at once, and down by one
//! frame at most every five seconds, and only as far as no estimate of
//! the last ten seconds would have it (each change stretches or skips what
//! is heard; a skip waits for a quiet frame). Before the first frame
//! plays, frames whose turn is over are dropped at once (nothing heard is
//! cut), and the frames that came before it count only for the shortest
//! transit: they tell how long frames waited for the stream or a key.
//!
//! At each 20 ms tick of the playout clock, [`JitterBuffer::pop`] gives
//! the next frame if it is due: the frame itself; if it is missing but the
//! one after it is here, that one, to decode its forward error correction
//! ([`Playout::Fec`]); otherwise [`Playout::Conceal`] (the codec's packet
//! loss concealment). A frame that comes after its turn passed is late and
//! dropped. When the target falls (or the playout clock stalled), frames
//! overdue by two ticks or more are skipped at the next quiet frame (or
//! at once, four ticks over), so the delay follows.

use std::collections::{BTreeMap, VecDeque};

use crate::audio::FRAME_TIME;

/// Target delay bounds and start, in milliseconds.
pub const MIN_TARGET_MS: u64 = 20;
/// The longest target delay.
pub const MAX_TARGET_MS: u64 = 200;
/// The target delay before anything is known.
pub const START_TARGET_MS: u64 = 60;
/// Frames whose transit is remembered.
pub const HISTORY: usize = 250;
/// Frames held at most (a sender far ahead is not followed).
pub const MAX_HELD: usize = 64;
const FRAME_MS: u64 = FRAME_TIME.as_millis() as u64;
/// Frames in, once playing, when the target is first set from what came
/// (200 ms): the start target is a guess, and the sooner it gives way to a
/// measured one the earlier in the stream the cut (or wait) that brings it
/// comes.
const FIRST_ESTIMATE: usize = 10;
/// Frames between moves of the target (one second).
const RETARGET_EVERY: u64 = 50;
/// Frames between steps down of the target (five seconds), each one frame.
const LOWER_EVERY: u64 = 250;
/// The target's last estimates (one a second) a step down must be clear
/// of: the delay comes down only when no estimate of the last ten seconds
/// needed it, so a load that comes and goes (a busy machine, a link that
/// stalls now and then) does not move it down and up again (each move
/// is a cut or a wait in what is heard).
const PEAK_SPAN: usize = 10;
/// Frames behind at which one is skipped even in the middle of a word.
const FAR_BEHIND: u64 = 4;
/// A frame at most 5/4 the size of the smallest of the last [`HISTORY`]
/// is taken for silence (at 32 kbit/s with FEC, Opus codes silence in
/// about 35 bytes and speech in 80 or more): the frame a lower target
/// saves is skipped at the next such one, not in the middle of a word.
fn quiet(len: usize, smallest: usize) -> bool {
    len.saturating_mul(4) <= smallest.saturating_mul(5)
}

/// What to play at a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The frame's payload.
    Frame(Vec<u8>),
    /// The frame is missing: decode the next one's forward error
    /// correction (its payload).
    Fec(Vec<u8>),
    /// The frame is missing: conceal it.
    Conceal,
}

/// What happened to a frame handed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Held until it is due.
    Held,
    /// Its turn had passed: dropped.
    Late,
    /// Held already: dropped.
    Duplicate,
    /// Too far ahead of what is playing: dropped.
    TooFarAhead,
}

/// What the buffer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Frames handed in (duplicates included).
    pub received: u64,
    /// Frames played as they came.
    pub played: u64,
    /// Frames that came after their turn.
    pub late: u64,
    /// Frames missing at their turn (recovered or concealed).
    pub lost: u64,
    /// Missing frames rebuilt from the next frame's FEC.
    pub fec_recovered: u64,
    /// Missing frames concealed.
    pub concealed: u64,
    /// Frames skipped to bring the delay down.
    pub skipped: u64,
    /// The 95th percentile of transit variation, in ms.
    pub jitter_ms: u64,
    /// The target delay, in ms.
    pub target_ms: u64,
}

/// The buffer of one sender's frames.
#[derive(Debug)]
pub struct JitterBuffer {
    held: BTreeMap<u64, Vec<u8>>,
    /// The first frame's number and capture time (sender's clock, ms).
    anchor: Option<(u64, u64)>,
    /// The next frame to play.
    next: Option<u64>,
    /// The newest frame handed in: nothing past it is concealed (the
    /// sender may have stopped, or be late as a whole).
    newest: Option<u64>,
    transits: VecDeque<i64>,
    target_ms: u64,
    since_retarget: u64,
    /// Frames since the target last went down.
    since_lowered: u64,
    /// The last [`PEAK_SPAN`] estimates of the target, in ms.
    recent: VecDeque<u64>,
    /// Frames to skip because the target went down.
    owed_skips: u32,
    /// The payload lengths of the last [`HISTORY`] frames.
    lengths: VecDeque<usize>,
    /// Frames skipped at the last pop, for the decoder to run through
    /// (its state then follows the sender's, and what plays next is
    /// exactly what the sender coded).
    skipped: Vec<Vec<u8>>,
    stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// An empty buffer at the starting target.
    pub fn new() -> Self {
        Self {
            held: BTreeMap::new(),
            anchor: None,
            next: None,
            newest: None,
            transits: VecDeque::with_capacity(HISTORY),
            target_ms: START_TARGET_MS,
            since_retarget: 0,
            since_lowered: LOWER_EVERY,
            recent: VecDeque::with_capacity(PEAK_SPAN),
            owed_skips: 0,
            lengths: VecDeque::with_capacity(HISTORY),
            skipped: Vec::new(),
            stats: JitterStats {
                target_ms: START_TARGET_MS,
                ..JitterStats::default()
            },
        }
    }

    /// What it counted.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Hands in frame `seq`, captured at `capture_ms` on the sender's
    /// clock, arrived at `arrival_ms` on this one.
    pub fn push(&mut self, seq: u64, capture_ms: u64, arrival_ms: u64, payload: Vec<u8>) -> Pushed {
        self.stats.received += 1;
        if self.held.contains_key(&seq) {
            return Pushed::Duplicate;
        }
        let floor = self
            .next
            .or_else(|| self.held.keys().next().copied())
            .unwrap_or(seq);
        if seq > floor.saturating_add(MAX_HELD as u64) {
            return Pushed::TooFarAhead;
        }
        let (anchor_seq, anchor_capture) = *self.anchor.get_or_insert((seq, capture_ms));
        // The capture time this frame's number implies (frames are 20 ms
        // apart), so a sender's clock cannot move its turn.
        let implied = i128::from(anchor_capture)
            + (i128::from(seq) - i128::from(anchor_seq)) * i128::from(FRAME_MS);
        let transit = i128::from(arrival_ms) - implied;
        let transit = i64::try_from(transit).unwrap_or(i64::MAX);
        if self.transits.len() == HISTORY {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        self.since_retarget += 1;
        // Estimated once playing: see `pop`.
        if self.next.is_some()
            && (self.since_retarget >= RETARGET_EVERY || self.transits.len() == FIRST_ESTIMATE)
        {
            self.retarget();
        }
        // A late frame still counts in the delay it shows is needed.
        if self.next.is_some_and(|next| seq < next) {
            self.stats.late += 1;
            return Pushed::Late;
        }
        if self.lengths.len() == HISTORY {
            self.lengths.pop_front();
        }
        self.lengths.push_back(payload.len());
        self.held.insert(seq, payload);
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        Pushed::Held
    }

    fn retarget(&mut self) {
        self.since_retarget = 0;
        let Some(min) = self.transits.iter().min().copied() else {
            return;
        };
        let mut spread: Vec<u64> = self
            .transits
            .iter()
            .map(|t| u64::try_from(t - min).unwrap_or(0))
            .collect();
        spread.sort_unstable();
        let p95 = spread[(spread.len() * 95 / 100).min(spread.len() - 1)];
        self.stats.jitter_ms = p95;
        let wanted = (p95 + 20).clamp(MIN_TARGET_MS, MAX_TARGET_MS);
        // Up at once (frames would come late), down slowly: each change
        // stretches or skips what is heard, so a target that wanders with
        // every second of jitter would cut the speech up.
        self.since_lowered += RETARGET_EVERY;
        if self.recent.len() == PEAK_SPAN {
            self.recent.pop_front();
        }
        self.recent.push_back(wanted);
        let peak = self.recent.iter().max().copied().unwrap_or(wanted);
        if wanted > self.target_ms {
            self.target_ms = wanted;
        } else if peak + FRAME_MS <= self.target_ms
            && self.since_lowered >= LOWER_EVERY
            && (self.transits.len() >= RETARGET_EVERY as usize
                || self.transits.len() == FIRST_ESTIMATE)
        {
            self.target_ms = peak.max(self.target_ms - FRAME_MS);
            self.since_lowered = 0;
            // The frame the delay came down by is skipped when it is due.
            self.owed_skips += 1;
        }
        self.stats.target_ms = self.target_ms;
    }

    /// When frame `seq` is due, on this clock (ms).
    fn due(&self, seq: u64) -> Option<u64> {
        let (anchor_seq, anchor_capture) = self.anchor?;
        let min = self.transits.iter().min().copied().unwrap_or(0);
        let due = i128::from(anchor_capture)
            + (i128::from(seq) - i128::from(anchor_seq)) * i128::from(FRAME_MS)
            + i128::from(min)
            + i128::from(self.target_ms);
        u64::try_from(due.max(0)).ok()
    }

    /// The frames the last [`pop`](Self::pop) skipped, oldest first: to
    /// be decoded (and not played) before what it gave.
    pub fn take_skipped(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.skipped)
    }

    /// The current delay frames are held for, in ms.
    pub fn delay_ms(&self) -> u64 {
        self.target_ms
    }

    /// At a tick of the playout clock (`now_ms`): what to play, if the
    /// next frame is due.
    pub fn pop(&mut self, now_ms: u64) -> Option<Playout> {
        // Until the first frame plays, the earliest held is first (one
        // that overtook an earlier frame does not make it late).
        let next = self.next.or_else(|| self.held.keys().next().copied())?;
        let newest = self.newest?;
        if next > newest || self.due(next)? > now_ms {
            return None;
        }
        let mut next = next;
        self.skipped.clear();
        // A quiet frame one behind because the target came down, or two
        // or more behind (the clock stalled, the shortest transit fell):
        // skip to within a frame of now, so the delay follows the target.
        // Only a quiet frame is skipped, not part of a word, unless the
        // delay is [`FAR_BEHIND`] frames over (a tick that comes a little
        // late skips nothing).
        let smallest = self.lengths.iter().min().copied().unwrap_or(0);
        // Before the first frame plays, nothing heard is cut: every frame
        // whose turn is over goes at once (frames held until their
        // sender's key came, say), and playing starts on time.
        let starting = self.next.is_none();
        while next < newest && {
            let behind = |k: u64| self.due(next + k).is_some_and(|d| d <= now_ms);
            let quiet_here = self
                .held
                .get(&next)
                .is_some_and(|p| quiet(p.len(), smallest));
            starting && behind(1)
                || quiet_here && (self.owed_skips > 0 && behind(1) || behind(2))
                || behind(FAR_BEHIND)
        } {
            self.owed_skips = self.owed_skips.saturating_sub(1);
            if let Some(payload) = self.held.remove(&next) {
                self.stats.skipped += 1;
                self.skipped.push(payload);
            } else {
                self.stats.lost += 1;
                self.stats.concealed += 1;
            }
            next += 1;
        }
        if starting {
            // What came before the first frame played tells how long
            // frames waited (for the stream to open, for their sender's
            // key: a sender's first frames come at once, up to 60 ms old),
            // not how the path varies: of it only the shortest transit is
            // kept (it places every frame's turn), and the target is first
            // estimated from the ten frames that follow.
            let min = self.transits.iter().min().copied();
            self.transits.clear();
            self.transits.extend(min);
            self.since_retarget = 0;
        }
        self.next = Some(next + 1);
        if let Some(payload) = self.held.remove(&next) {
            self.stats.played += 1;
            return Some(Playout::Frame(payload));
        }
        self.stats.lost += 1;
        match self.held.get(&(next + 1)) {
            Some(following) => {
                self.stats.fec_recovered += 1;
                Some(Playout::Fec(following.clone()))
            }
            None => {
                self.stats.concealed += 1;
                Some(Playout::Conceal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    /// Runs `frames` (seq, arrival ms) through a buffer ticking every
    /// 20 ms from `start` for `ticks`; what it played, by kind.
    fn run(frames: &[(u64, u64)], start: u64, ticks: u64) -> (Vec<Playout>, JitterStats) {
        let mut buffer = JitterBuffer::new();
        let mut out = Vec::new();
        let mut pending: Vec<(u64, u64)> = frames.to_vec();
        pending.sort_by_key(|(_, at)| *at);
        let mut pending = pending.into_iter().peekable();
        for tick in 0..ticks {
            let now = start + tick * FRAME_MS;
            while let Some((seq, _)) = pending.next_if(|(_, at)| *at <= now) {
                buffer.push(seq, 1_000 + seq * FRAME_MS, now, vec![seq as u8]);
            }
            if let Some(p) = buffer.pop(now) {
                out.push(p);
            }
        }
        (out, buffer.stats())
    }

    #[test]
    fn frames_on_time_play_in_order_after_the_start_delay() {
        let frames: Vec<(u64, u64)> = (0..100).map(|s| (s, 5_000 + s * 20)).collect();
        let (out, stats) = run(&frames, 5_000, 120);
        let played: Vec<u8> = out
            .iter()
            .filter_map(|p| match p {
                Playout::Frame(b) => Some(b[0]),
                _ => None,
            })
            .collect();
        // In order; when the target falls from its start to its floor, the
        // two frames that puts behind are skipped, once.
        assert!(played.windows(2).all(|w| w[0] < w[1]), "{played:?}");
        assert_eq!(played.len() as u64 + stats.skipped, 100);
        assert!(stats.skipped <= 2, "{stats:?}");
        assert_eq!((stats.lost, stats.late), (0, 0));
        // No jitter: the target comes down, a frame at a time (once in
        // these two seconds: the next step is five seconds later).
        assert_eq!(stats.target_ms, START_TARGET_MS - FRAME_MS);
        let frames: Vec<(u64, u64)> = (0..800).map(|s| (s, 5_000 + s * 20)).collect();
        let (_, stats) = run(&frames, 5_000, 820);
        assert_eq!(stats.target_ms, MIN_TARGET_MS);
    }

    #[test]
    fn a_lost_frame_is_rebuilt_from_the_next_and_two_are_concealed_then_rebuilt() {
        let frames: Vec<(u64, u64)> = (0..80)
            .filter(|s| ![30, 50, 51].contains(s))
            .map(|s| (s, 5_000 + s * 20))
            .collect();
        let (out, stats) = run(&frames, 5_000, 120);
        // Every frame's turn comes once (a skip near the start aside, as
        // the target falls from its start).
        assert_eq!(out.len() as u64 + stats.skipped, 80);
        let at = |p: &Playout| out.iter().position(|o| o == p).unwrap();
        // Frame 30 from 31's FEC, then 31 itself.
        assert_eq!(
            out[at(&Playout::Fec(vec![31])) + 1],
            Playout::Frame(vec![31])
        );
        // 50 concealed (51 is missing too), 51 from 52's FEC, then 52.
        let fec = at(&Playout::Fec(vec![52]));
        assert_eq!(out[fec - 2], Playout::Frame(vec![49]));
        assert_eq!(out[fec - 1], Playout::Conceal);
        assert_eq!(out[fec + 1], Playout::Frame(vec![52]));
        assert_eq!(
            (stats.lost, stats.fec_recovered, stats.concealed),
            (3, 2, 1)
        );
    }

    #[test]
    fn jitter_raises_the_target_to_its_p95_plus_20_ms_within_bounds() {
        // Every fifth frame is 40 ms late, the others on time.
        let frames: Vec<(u64, u64)> = (0..300)
            .map(|s| (s, 5_000 + s * 20 + if s % 5 == 0 { 40 } else { 0 }))
            .collect();
        let (_, stats) = run(&frames, 5_000, 320);
        assert_eq!(stats.jitter_ms, 40);
        assert_eq!(stats.target_ms, 60);
        assert_eq!(stats.late, 0, "{stats:?}");
        // Far more jitter than the ceiling: held at 200 ms.
        let frames: Vec<(u64, u64)> = (0..300)
            .map(|s| (s, 5_000 + s * 20 + if s % 3 == 0 { 500 } else { 0 }))
            .collect();
        let (_, stats) = run(&frames, 5_000, 340);
        assert_eq!(stats.target_ms, MAX_TARGET_MS);
    }

    #[test]
    fn a_load_that_comes_back_every_8_s_keeps_the_delay_up_between_times() {
        // 40 s; every 8 s from 3.7 s on, 15 frames in a row come 50 ms
        // late (60 ms as these ticks hand them in).
        let burst = |s: u64| (185..200).contains(&(s % 400));
        let frames: Vec<(u64, u64)> = (0..2_000)
            .map(|s| (s, 5_000 + s * 20 + if burst(s) { 50 } else { 0 }))
            .collect();
        let (_, stats) = run(&frames, 5_000, 2_020);
        // Up to the bursts' p95 + 20 ms once, and not down in the quiet
        // stretches between them (each step down would be a cut, and each
        // burst after it a wait): the only cut is the start's step down.
        assert_eq!(stats.target_ms, 80, "{stats:?}");
        assert!(stats.skipped <= 1, "{stats:?}");
        // Once the bursts stop, the delay comes down again, a frame at a
        // time.
        let frames: Vec<(u64, u64)> = (0..2_000)
            .map(|s| {
                (
                    s,
                    5_000 + s * 20 + if s % 400 >= 385 && s < 400 { 50 } else { 0 },
                )
            })
            .collect();
        let (_, stats) = run(&frames, 5_000, 2_020);
        assert!(stats.target_ms < 80, "{stats:?}");
    }

    #[test]
    fn late_duplicate_and_far_ahead_frames_are_dropped() {
        let mut buffer = JitterBuffer::new();
        assert_eq!(buffer.push(0, 1_000, 5_000, vec![0]), Pushed::Held);
        assert_eq!(buffer.push(0, 1_000, 5_001, vec![0]), Pushed::Duplicate);
        assert_eq!(
            buffer.push(MAX_HELD as u64 + 1, 1_000, 5_001, vec![0]),
            Pushed::TooFarAhead
        );
        assert_eq!(
            buffer.pop(5_000 + START_TARGET_MS),
            Some(Playout::Frame(vec![0]))
        );
        // Nothing past the newest frame is played.
        assert_eq!(buffer.pop(5_000 + START_TARGET_MS + 20), None);
        assert_eq!(buffer.push(2, 1_040, 5_081, vec![2]), Pushed::Held);
        assert_eq!(
            buffer.pop(5_000 + START_TARGET_MS + 20),
            Some(Playout::Fec(vec![2]))
        );
        // Frame 1's turn has passed.
        assert_eq!(buffer.push(1, 1_020, 5_100, vec![1]), Pushed::Late);
        assert_eq!(buffer.stats().late, 1);
    }

    #[test]
    fn a_stream_s_first_frames_coming_at_once_do_not_raise_the_target() {
        // The first four frames waited for the stream and come together
        // (60, 40, 20 and 0 ms old), then one every 20 ms.
        let frames: Vec<(u64, u64)> = (0..100).map(|s| (s, 5_000 + s.max(3) * 20)).collect();
        let (out, stats) = run(&frames, 5_000, 120);
        // All four played, and the ten frames after the first played set
        // the target: one step down from the start (a frame skipped at a
        // quiet one), not up to the 80 ms the wait would make it.
        for s in 0..4 {
            assert!(out.contains(&Playout::Frame(vec![s])), "{s}: {out:?}");
        }
        assert_eq!(stats.target_ms, START_TARGET_MS - FRAME_MS, "{stats:?}");
        assert_eq!((stats.skipped, stats.late, stats.lost), (1, 0, 0));
    }

    #[test]
    fn frames_whose_turn_passed_before_anything_played_go_at_once() {
        // Frames held back (their sender's key came late) are handed in
        // with the times they arrived: all but the last few are overdue.
        let mut buffer = JitterBuffer::new();
        for s in 0..50 {
            buffer.push(s, 1_000 + s * 20, 5_000 + s * 20, vec![s as u8]);
        }
        // Frame s is due at 5 060 + 20 s (no estimate before playing).
        assert_eq!(buffer.delay_ms(), START_TARGET_MS);
        let now = 5_000 + START_TARGET_MS + 20 * 26 + 5;
        // Speech or not, everything before the frame due now goes, and
        // the decoder is handed it in order.
        assert_eq!(buffer.pop(now), Some(Playout::Frame(vec![26])));
        let skipped: Vec<u8> = buffer.take_skipped().iter().map(|p| p[0]).collect();
        assert_eq!(skipped, (0..26).collect::<Vec<u8>>());
        // Once playing, a frame one tick overdue is played, not skipped (a
        // skip waits for two behind, or for a step down of the target).
        assert_eq!(buffer.pop(now + 40), Some(Playout::Frame(vec![27])));
        assert_eq!(buffer.stats().skipped, 26);
    }

    #[test]
    fn a_stalled_clock_skips_ahead_instead_of_piling_up_delay() {
        let mut buffer = JitterBuffer::new();
        for s in 0..50 {
            buffer.push(s, 1_000 + s * 20, 5_000 + s * 20, vec![s as u8]);
        }
        // The playout clock comes back 500 ms late: it resumes near now.
        let now = 5_000 + START_TARGET_MS + 500;
        let played = buffer.pop(now).unwrap();
        let stats = buffer.stats();
        assert!(stats.skipped >= 20, "{stats:?}");
        assert!(matches!(played, Playout::Frame(b) if b[0] as u64 >= 22));
    }
}
