//! `call TARGET`, `call accept`, `call decline`, `call hangup` and
//! `call status`: audio calls with a contact, carried out by the daemon
//! (it reads and writes the WAV files, so their paths are made absolute
//! here).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use safemeet_api::Request;
use safemeet_engine::{CallOutcome, CallState, CallView};

use crate::failure::Failure;
use crate::messenger::{Api, Names, print_json};

/// `call`: either a contact to call, or what to do with a call.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct CallCommand {
    #[command(subcommand)]
    action: Option<CallSub>,
    /// The contact to call: name, username or user id. Every device of
    /// theirs that can be reached now rings (a call is never left on a
    /// relay).
    target: Option<String>,
    #[command(flatten)]
    audio: AudioArgs,
}

#[derive(Debug, Args)]
struct AudioArgs {
    /// Send this WAV file (48 kHz, mono, 16-bit) instead of silence
    /// (this build has no sound card support).
    #[arg(long, value_name = "FILE")]
    wav_in: Option<PathBuf>,
    /// Write what you hear into this WAV file.
    #[arg(long, value_name = "FILE")]
    wav_out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CallSub {
    /// Answer the call ringing here.
    Accept {
        #[command(flatten)]
        audio: AudioArgs,
    },
    /// Decline the call ringing here.
    Decline,
    /// End the call on now, or stop calling.
    Hangup,
    /// The call on now, with live counts (frames sent, received, late,
    /// lost, concealed, FEC-recovered; jitter; buffer delay; mouth-to-ear
    /// latency), then the last ended calls.
    Status,
}

/// `meet ROOM`: join the meeting of a room.
#[derive(Debug, Args)]
pub(crate) struct MeetCommand {
    /// The room: its name or room id. Its members' devices that can be
    /// reached hear of the meeting; up to 8 devices take part. `call
    /// hangup` leaves it.
    room: String,
    #[command(flatten)]
    audio: AudioArgs,
}

impl MeetCommand {
    /// The action, with the files' paths made absolute.
    pub(crate) fn action(self) -> Result<CallAction, Failure> {
        Ok(CallAction::Meet {
            room: self.room,
            wav_in: absolute(self.audio.wav_in)?,
            wav_out: absolute(self.audio.wav_out)?,
        })
    }
}

/// What `call` does.
#[derive(Debug)]
pub(crate) enum CallAction {
    Meet {
        room: String,
        wav_in: Option<String>,
        wav_out: Option<String>,
    },
    Place {
        target: String,
        wav_in: Option<String>,
        wav_out: Option<String>,
    },
    Accept {
        wav_in: Option<String>,
        wav_out: Option<String>,
    },
    Decline,
    Hangup,
    Status,
}

fn absolute(path: Option<PathBuf>) -> Result<Option<String>, Failure> {
    path.map(|p| {
        std::path::absolute(&p)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
    })
    .transpose()
}

impl CallCommand {
    /// The action, with the files' paths made absolute.
    pub(crate) fn action(self) -> Result<CallAction, Failure> {
        Ok(match (self.action, self.target) {
            (Some(CallSub::Accept { audio }), _) => CallAction::Accept {
                wav_in: absolute(audio.wav_in)?,
                wav_out: absolute(audio.wav_out)?,
            },
            (Some(CallSub::Decline), _) => CallAction::Decline,
            (Some(CallSub::Hangup), _) => CallAction::Hangup,
            (Some(CallSub::Status), _) => CallAction::Status,
            (None, Some(target)) => CallAction::Place {
                target,
                wav_in: absolute(self.audio.wav_in)?,
                wav_out: absolute(self.audio.wav_out)?,
            },
            (None, None) => {
                return Err(Failure::Usage(
                    "say who to call (call TARGET), or accept, decline, hangup or status".into(),
                ));
            }
        })
    }
}

pub(crate) async fn perform(api: &mut Api, json: bool, action: CallAction) -> Result<(), Failure> {
    let request = match action {
        CallAction::Place {
            target,
            wav_in,
            wav_out,
        } => Request::Call {
            target,
            wav_in,
            wav_out,
        },
        CallAction::Accept { wav_in, wav_out } => Request::CallAccept { wav_in, wav_out },
        CallAction::Meet {
            room,
            wav_in,
            wav_out,
        } => Request::Meet {
            room,
            wav_in,
            wav_out,
        },
        CallAction::Decline => Request::CallDecline {},
        CallAction::Hangup => Request::CallHangup {},
        CallAction::Status => {
            let calls: Vec<CallView> = api.call(Request::CallStatus {}).await?;
            if json {
                return print_json(&calls);
            }
            if calls.is_empty() {
                println!("no calls since the daemon started");
            }
            let names = api.names().await?;
            for call in &calls {
                print_call(&names, call);
            }
            return Ok(());
        }
    };
    let call: CallView = api.call(request).await?;
    if json {
        return print_json(&call);
    }
    let names = api.names().await?;
    print_call(&names, &call);
    Ok(())
}

fn print_call(names: &Names, call: &CallView) {
    let who = names.of(&call.with);
    let line = match (call.state, call.outgoing) {
        (CallState::Active, _) if call.room_id.is_some() => format!(
            "in a meeting with {} others, {} s",
            call.participants.len(),
            call.duration_ms / 1000
        ),
        (CallState::Ended, _) if call.room_id.is_some() => format!(
            "meeting left ({}), {} s",
            call.reason.as_deref().unwrap_or("left"),
            call.duration_ms / 1000
        ),
        (CallState::Calling, _) => format!("calling {who}"),
        (CallState::Ringing, _) => format!("{who} is calling (call accept / call decline)"),
        (CallState::Active, _) => format!("in a call with {who}, {} s", call.duration_ms / 1000),
        (CallState::Ended, outgoing) => {
            let how = match call.outcome {
                Some(CallOutcome::Missed) => "missed",
                Some(CallOutcome::Declined) => "declined",
                Some(CallOutcome::NoAnswer) => "not answered",
                _ => "ended",
            };
            let dir = if outgoing { "to" } else { "from" };
            format!(
                "call {dir} {who}: {how} ({}), {} s",
                call.reason.as_deref().unwrap_or(how),
                call.duration_ms / 1000
            )
        }
    };
    println!("{line}\t[{}]", &call.call_id);
    if call.state == CallState::Active || call.stats.sent > 0 || call.stats.received > 0 {
        let s = &call.stats;
        let ms = |v: Option<u32>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
        println!(
            "  frames sent {}, received {}, played {}, late {}, lost {} (concealed {}, FEC {}), refused {}",
            s.sent, s.received, s.played, s.late, s.lost, s.concealed, s.fec_recovered, s.refused
        );
        println!(
            "  jitter {} ms, buffer {} ms, mouth-to-ear p50 {} p95 {}, peer's loss {} %",
            s.jitter_ms,
            s.delay_ms,
            ms(s.mouth_to_ear_p50_ms),
            ms(s.mouth_to_ear_p95_ms),
            s.expected_loss_percent
        );
    }
}
