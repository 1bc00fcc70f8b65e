//! Running a plan: set-up, the timed workload with its faults, the drain.
//!
//! The driver is the same for the production nodes ([`crate::engine`]) and
//! the raw-gossipsub baseline ([`crate::baseline`]); each implements
//! [`Nodes`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;

use safemeet_net::MESH_N_LOW;

use crate::plan::{Action, Plan, Target, room_name};
use crate::record::{Recorder, Sent, clock, text_of};
use crate::scenario::Scenario;
use crate::transport::{Hub, NodeIdx};

/// A simulated network of nodes the driver can drive.
pub trait Nodes {
    /// Starts every node; returns once each listens.
    fn start_all(&mut self) -> impl Future<Output = anyhow::Result<()>>;
    /// Contacts, rooms and whatever else must exist before warm-up.
    fn set_up(&mut self) -> impl Future<Output = anyhow::Result<()>>;
    /// Starts sending message `n` (returns without waiting for it).
    fn send(&mut self, n: u64, from: NodeIdx, target: Target, text: String);
    /// Stops a node (crash).
    fn stop(&mut self, idx: NodeIdx) -> impl Future<Output = ()>;
    /// Starts a stopped node again with its state.
    fn restart(&mut self, idx: NodeIdx) -> impl Future<Output = anyhow::Result<()>>;
    /// Something that asks a node how many peers its gossip mesh for a
    /// room holds, usable while the driver sends.
    fn mesh_probe(&self) -> MeshProbe;
    /// Node `idx` leaves room `room`.
    fn leave(&mut self, idx: NodeIdx, room: usize) -> impl Future<Output = anyhow::Result<()>>;
    /// Node `idx` joins room `room` again (its admin invites it back).
    fn join(&mut self, idx: NodeIdx, room: usize) -> impl Future<Output = anyhow::Result<()>>;
    /// Starts the scenario's attackers (idle or not, as the context says).
    fn start_attack(&mut self) -> impl Future<Output = anyhow::Result<()>> {
        async { anyhow::bail!("this kind of run has no attackers") }
    }
    /// Stops everything at the end.
    fn stop_all(&mut self) -> impl Future<Output = ()>;
}

/// Asks node `idx` how many peers its gossip mesh for room `r` holds
/// (`None` when the node is not running).
pub type MeshProbe = Arc<dyn Fn(NodeIdx, usize) -> BoxFuture<'static, Option<usize>> + Send + Sync>;

/// How often meshes are probed until they have all formed.
const MESH_PROBE_EVERY: Duration = Duration::from_millis(250);
/// Probes in flight at once.
const MESH_PROBE_CONCURRENCY: usize = 64;

/// Probes every room member's mesh from the end of set-up until each holds
/// at least `min(mesh_n_low, members - 1)` peers; returns the time since
/// the start of the run when they first all did, or `None` if they did
/// not within `timeout`. A member that stops or leaves the room before its
/// mesh formed is not waited for.
fn watch_meshes(ctx: Arc<Ctx>, probe: MeshProbe, timeout: Duration) -> JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        let deadline = clock() + timeout;
        let wanted: Vec<(NodeIdx, usize, usize)> = ctx
            .plan
            .rooms
            .iter()
            .enumerate()
            .flat_map(|(r, members)| {
                let need = MESH_N_LOW.min(members.len().saturating_sub(1));
                members.iter().map(move |m| (*m, r, need))
            })
            .collect();
        let mut pending = wanted;
        loop {
            let at = ctx.rec.now().as_secs_f64();
            let still: Vec<(NodeIdx, usize, usize)> = futures::stream::iter(pending)
                .map(|(m, r, need)| {
                    let probe = probe.clone();
                    async move {
                        // `None`: the node stopped (crashed) or is no
                        // longer in the room; it is not waited for.
                        let have = probe(m, r).await?;
                        (have < need).then_some((m, r, need))
                    }
                })
                .buffer_unordered(MESH_PROBE_CONCURRENCY)
                .filter_map(|x| async move { x })
                .collect()
                .await;
            if still.is_empty() {
                return Some(round_ms(at));
            }
            if clock() >= deadline {
                return None;
            }
            pending = still;
            tokio::time::sleep(MESH_PROBE_EVERY).await;
        }
    })
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// Shared context of a run.
pub struct Ctx {
    /// The scenario.
    pub scenario: Scenario,
    /// Its plan.
    pub plan: Plan,
    /// The modelled network.
    pub hub: Arc<Hub>,
    /// The record.
    pub rec: Arc<Recorder>,
    /// Time zero.
    pub start: Instant,
    /// The scenario's attackers connect and send nothing (the run the
    /// attack is compared with).
    pub attackers_idle: bool,
}

impl Ctx {
    /// A context for `scenario`: the plan and a fresh network.
    pub fn new(scenario: Scenario) -> Arc<Self> {
        Self::with_attackers(scenario, false)
    }

    /// The same, with the scenario's attackers idle (connected, sending
    /// nothing) or not.
    pub fn with_attackers(scenario: Scenario, attackers_idle: bool) -> Arc<Self> {
        let plan = Plan::new(&scenario);
        let start = clock();
        let cluster = plan.cluster.clone();
        let s = scenario.clone();
        // Relays take the indices after the nodes', attackers those after
        // the relays'.
        let nodes = plan.nodes;
        let relays = nodes + scenario.nodes.relays;
        let hub = Hub::new(
            relays + scenario.attack.count,
            scenario.seed,
            start,
            move |a, b| {
                let is_relay = |x: NodeIdx| (nodes..relays).contains(&(x as usize));
                if is_relay(a) || is_relay(b) {
                    s.relay_profile()
                } else if a as usize >= relays || b as usize >= relays {
                    s.attack_profile()
                } else {
                    s.profile(cluster.get(a as usize) == cluster.get(b as usize))
                }
            },
        );
        Arc::new(Self {
            scenario,
            plan,
            hub,
            rec: Recorder::new(start),
            start,
            attackers_idle,
        })
    }

    /// Who gets a message to `target` from `from`, with room membership
    /// as it is now (`members`): a member that left is not expected to get
    /// what is sent after it left; one invited back is expected once the
    /// sender knows it is back (its event log, or for the baseline its
    /// gossipsub subscriptions, shows it).
    pub fn recipients(&self, from: NodeIdx, target: Target, members: &Members) -> Vec<NodeIdx> {
        let mut to = self.user_recipients(from, target, members);
        // Every device of each recipient, and the sender's other device.
        let seconds: Vec<NodeIdx> = to
            .iter()
            .chain(std::iter::once(&from))
            .filter_map(|u| self.plan.second_of.get(*u as usize).copied().flatten())
            .filter(|d| *d != from)
            .collect();
        to.extend(seconds);
        to
    }

    fn user_recipients(&self, from: NodeIdx, target: Target, members: &Members) -> Vec<NodeIdx> {
        match target {
            Target::Dm(to) => vec![to],
            Target::Room(r) => {
                let o = self.rec.lock();
                let name = room_name(r);
                self.plan.rooms[r]
                    .iter()
                    .copied()
                    .filter(|m| *m != from && !members.out.contains(&(r, *m)))
                    .filter(|m| {
                        !members.rejoined.contains(&(r, *m))
                            || Recorder::knows_member(&o, from, &name, *m)
                    })
                    .collect()
            }
        }
    }
}

/// Room membership during the workload (join/leave churn).
#[derive(Debug, Default)]
pub struct Members {
    /// (room, member) pairs that left and are not back.
    out: BTreeSet<(usize, NodeIdx)>,
    /// Pairs invited back after leaving.
    rejoined: BTreeSet<(usize, NodeIdx)>,
    /// The pairs that left last (a join brings them back).
    last: Vec<(usize, NodeIdx)>,
}

/// Times the driver reports.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Phases {
    /// Seconds from start until the planned links were all open.
    pub time_to_connect_s: Option<f64>,
    /// Seconds from start until every room member's gossip mesh for the
    /// room held `min(mesh_n_low, members - 1)` peers (probed every 250 ms
    /// from the end of set-up, when the rooms exist).
    pub time_to_mesh_s: Option<f64>,
    /// Seconds of set-up (start, contacts, rooms, warm-up).
    pub setup_s: f64,
    /// Warm-up finished in time.
    pub warmup_complete: bool,
    /// Warm-up (message, recipient) pairs still missing when the set-up
    /// timeout ended it (0 when it completed).
    pub warmup_missing: usize,
    /// When the workload started, seconds since the start of the run.
    pub workload_start_s: f64,
    /// When it ended (last send).
    pub workload_end_s: f64,
    /// When the drain ended.
    pub end_s: f64,
    /// Heals: seconds since the start of the run.
    pub heals_s: Vec<f64>,
    /// Restarts and returns online: seconds since the start of the run.
    pub returns_s: Vec<f64>,
    /// Each time a node was away (crashed or offline) and came back:
    /// (node, seconds since the start of the run when it went, when it
    /// came back).
    pub away: Vec<(NodeIdx, f64, f64)>,
    /// Nodes down at the end (crashed and not restarted).
    pub down_at_end: Vec<NodeIdx>,
    /// Members that left a room: (room, node, seconds since the start of
    /// the run).
    pub leaves: Vec<(usize, NodeIdx, f64)>,
    /// Members invited back: (room, node, seconds since the start of the
    /// run).
    pub joins: Vec<(usize, NodeIdx, f64)>,
    /// Planned sends not made: their sender was down, or out of the room
    /// (a member whose admin was down at the join stays out), or invited
    /// back and not aware of it yet.
    pub sends_skipped: usize,
}

/// Called with (seconds into the workload, total seconds, delivered so far)
/// as the run progresses.
pub type Progress<'a> = &'a (dyn Fn(&str, f64, f64) + Sync);

/// Runs the whole plan on `nodes`.
pub async fn drive<N: Nodes>(
    ctx: &Arc<Ctx>,
    nodes: &mut N,
    progress: Progress<'_>,
) -> anyhow::Result<Phases> {
    let s = &ctx.scenario;
    let plan = &ctx.plan;
    let rec = &ctx.rec;
    let mut phases = Phases::default();
    let setup_timeout = Duration::from_secs_f64(s.node.setup_timeout_s);

    progress("starting nodes", 0.0, 0.0);
    nodes.start_all().await?;
    progress("contacts and rooms", 0.0, 0.0);
    nodes.set_up().await?;
    let meshes = watch_meshes(
        ctx.clone(),
        nodes.mesh_probe(),
        setup_timeout + Duration::from_secs_f64(s.workload.duration_s),
    );

    // Warm-up: every room member says hello once, so room keys and
    // connections exist before measuring.
    progress("warm-up", 0.0, 0.0);
    let mut n: u64 = 0;
    for (r, members) in plan.rooms.iter().enumerate() {
        for m in members {
            n += 1;
            let to = ctx.recipients(*m, Target::Room(r), &Members::default());
            rec.sent(
                n,
                Sent {
                    at: rec.now(),
                    from: *m,
                    to,
                    warmup: true,
                    dm: false,
                    failed: false,
                    bytes: s.workload.size,
                },
            );
            nodes.send(n, *m, Target::Room(r), text_of(n, true, s.workload.size));
        }
    }
    let all_alive = vec![true; plan.nodes];
    phases.warmup_complete = rec
        .wait_for(setup_timeout, |o| {
            Recorder::all_delivered(o, true, &all_alive)
        })
        .await;
    if !phases.warmup_complete {
        let o = rec.lock();
        phases.warmup_missing = o
            .sent
            .iter()
            .filter(|(_, s)| s.warmup)
            .flat_map(|(n, s)| s.to.iter().map(move |to| (*n, *to)))
            .filter(|pair| !o.receipts.contains_key(pair))
            .count();
        drop(o);
        tracing::warn!(
            missing = phases.warmup_missing,
            "warm-up did not complete within the set-up timeout; measuring anyway"
        );
        eprintln!(
            "netsim: warm-up did not complete within the set-up timeout ({} pairs missing); measuring anyway",
            phases.warmup_missing
        );
    }
    phases.setup_s = rec.now().as_secs_f64();
    let planned = plan.planned_links();
    phases.time_to_connect_s = rec
        .lock()
        .samples
        .iter()
        .find(|x| x.connections >= planned)
        .map(|x| x.t_s);

    // The attackers (if any) from the start of the workload on.
    if ctx.scenario.attack.count > 0 {
        progress("attackers", 0.0, 0.0);
        nodes.start_attack().await?;
    }

    // The workload and its faults, on one timeline.
    let t0 = clock();
    phases.workload_start_s = rec.now().as_secs_f64();
    let total = s.workload.duration_s + s.workload.drain_s;
    let mut away = Away {
        down: vec![false; plan.nodes],
        went: vec![0.0; plan.nodes],
        crashed: Vec::new(),
        offline: Vec::new(),
        members: Members::default(),
    };
    let mut sends = plan.sends.iter().peekable();
    let mut faults = plan.faults.iter().peekable();
    loop {
        let next_send = sends.peek().map(|x| x.at);
        let next_fault = faults.peek().map(|(at, _)| *at);
        let fault_first = match (next_send, next_fault) {
            (None, None) => break,
            (Some(a), Some(b)) => b <= a,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let at = if fault_first { next_fault } else { next_send }.unwrap_or_default();
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + at)).await;
        if fault_first {
            let Some((_, action)) = faults.next() else {
                break;
            };
            apply(ctx, nodes, action, &mut away, &mut phases).await?;
        } else {
            let Some(send) = sends.next() else {
                break;
            };
            if away.down[send.from as usize] {
                phases.sends_skipped += 1;
                continue; // a crashed node sends nothing
            }
            if let Target::Room(r) = send.target
                && (away.members.out.contains(&(r, send.from))
                    || (away.members.rejoined.contains(&(r, send.from))
                        && !Recorder::knows_member(
                            &rec.lock(),
                            send.from,
                            &room_name(r),
                            send.from,
                        )))
            {
                // Not in the room, or invited back and not aware of it
                // yet: it cannot send there.
                phases.sends_skipped += 1;
                continue;
            }
            n += 1;
            rec.sent(
                n,
                Sent {
                    at: rec.now(),
                    from: send.from,
                    to: ctx.recipients(send.from, send.target, &away.members),
                    warmup: false,
                    dm: matches!(send.target, Target::Dm(_)),
                    failed: false,
                    bytes: s.workload.size,
                },
            );
            nodes.send(
                n,
                send.from,
                send.target,
                text_of(n, false, s.workload.size),
            );
            let delivered = rec.lock().samples.last().map_or(0, |x| x.delivered);
            progress("workload", at.as_secs_f64(), delivered as f64);
        }
    }
    phases.workload_end_s = rec.now().as_secs_f64();
    let workload_end = clock();
    let until = Duration::from_secs_f64(s.workload.duration_s + s.workload.drain_s);
    let remaining = (t0 + until).saturating_duration_since(clock());
    let alive: Vec<bool> = away.down.iter().map(|d| !d).collect();
    progress("drain", s.workload.duration_s, 0.0);
    // Until everything sent is delivered and every member back in a room
    // is known to the others (the report measures both), or the drain is
    // over.
    let is_alive = |n: &NodeIdx| alive.get(*n as usize).copied().unwrap_or(false);
    let _ = rec
        .wait_for(remaining, |o| {
            Recorder::all_delivered(o, false, &alive)
                && crate::joins::join_waits(o, ctx, &phases, &is_alive)
                    .iter()
                    .all(Option::is_some)
        })
        .await;
    progress(
        "done",
        total.min(
            s.workload.duration_s
                + clock()
                    .saturating_duration_since(workload_end)
                    .as_secs_f64(),
        ),
        0.0,
    );
    phases.end_s = rec.now().as_secs_f64();
    phases.time_to_mesh_s = if meshes.is_finished() {
        meshes.await.ok().flatten()
    } else {
        meshes.abort();
        None
    };
    phases.down_at_end = away
        .down
        .iter()
        .enumerate()
        .filter(|(_, d)| **d)
        .map(|(i, _)| i as NodeIdx)
        .collect();
    nodes.stop_all().await;
    Ok(phases)
}

/// Who is away during the workload, and since when.
struct Away {
    /// Crashed and not restarted.
    down: Vec<bool>,
    /// When each node last crashed or went offline, seconds since the
    /// start of the run.
    went: Vec<f64>,
    /// The nodes crashed last (a restart brings them back).
    crashed: Vec<NodeIdx>,
    /// The nodes taken offline last.
    offline: Vec<NodeIdx>,
    /// Room membership.
    members: Members,
}

async fn apply<N: Nodes>(
    ctx: &Ctx,
    nodes: &mut N,
    action: &Action,
    away: &mut Away,
    phases: &mut Phases,
) -> anyhow::Result<()> {
    let now_s = || ctx.rec.now().as_secs_f64();
    let Away {
        down,
        went,
        crashed,
        offline,
        members,
    } = away;
    match action {
        Action::Partition(side, mode) => ctx.hub.partition(side.clone(), *mode),
        Action::Heal => {
            ctx.hub.heal();
            phases.heals_s.push(now_s());
        }
        Action::Crash(victims) => {
            for v in victims {
                ctx.hub.crash(*v);
                down[*v as usize] = true;
                went[*v as usize] = now_s();
            }
            for v in victims {
                nodes.stop(*v).await;
            }
            crashed.clone_from(victims);
        }
        Action::Restart => {
            let back = now_s();
            for v in crashed.drain(..) {
                ctx.hub.restart(v);
                nodes.restart(v).await?;
                down[v as usize] = false;
                phases.away.push((v, went[v as usize], back));
            }
            phases.returns_s.push(back);
        }
        Action::Offline(victims) => {
            for v in victims {
                ctx.hub.set_offline(*v, true);
                went[*v as usize] = now_s();
            }
            offline.clone_from(victims);
        }
        Action::Online => {
            let back = now_s();
            for v in offline.drain(..) {
                ctx.hub.set_offline(v, false);
                phases.away.push((v, went[v as usize], back));
            }
            phases.returns_s.push(back);
        }
        Action::Leave(left) => {
            members.last.clear();
            for (r, m) in left {
                // A crashed node cannot leave; it stays a member.
                if down[*m as usize] || members.out.contains(&(*r, *m)) {
                    continue;
                }
                let at = now_s();
                match nodes.leave(*m, *r).await {
                    Ok(()) => {
                        members.out.insert((*r, *m));
                        members.last.push((*r, *m));
                        phases.leaves.push((*r, *m, at));
                    }
                    Err(e) => tracing::warn!(error = %e, "a member could not leave its room"),
                }
            }
        }
        Action::Join => {
            for (r, m) in std::mem::take(&mut members.last) {
                let admin = ctx.plan.rooms[r].first().copied().unwrap_or(m);
                // The admin invites; while it is down, the member stays out.
                if down[admin as usize] {
                    continue;
                }
                let at = now_s();
                match nodes.join(m, r).await {
                    Ok(()) => {
                        members.out.remove(&(r, m));
                        members.rejoined.insert((r, m));
                        phases.joins.push((r, m, at));
                    }
                    Err(e) => tracing::warn!(error = %e, "a member could not be invited back"),
                }
            }
        }
    }
    Ok(())
}
