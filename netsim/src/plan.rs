//! The plan of a run, drawn from the scenario's seed before anything
//! starts: who dials whom, who is in which room, which contacts exist,
//! every send (time, sender, target) and every fault with its victims.
//! The engine run and the raw-gossipsub baseline follow the same plan.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::scenario::{Fault, Scenario, Topology, Victims};
use crate::transport::{CutMode, NodeIdx};

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A group room, by index.
    Room(usize),
    /// A DM to a node.
    Dm(NodeIdx),
}

/// One planned send.
#[derive(Debug, Clone)]
pub struct Send {
    /// When, from the start of the workload.
    pub at: Duration,
    /// Who sends.
    pub from: NodeIdx,
    /// Where to.
    pub target: Target,
}

/// A fault with its victims resolved.
#[derive(Debug, Clone)]
pub enum Action {
    /// Split the network: `side[i]` is node i's side.
    Partition(Vec<u32>, CutMode),
    /// End the partition.
    Heal,
    /// Crash these nodes.
    Crash(Vec<NodeIdx>),
    /// Restart the nodes crashed last.
    Restart,
    /// Take these nodes offline.
    Offline(Vec<NodeIdx>),
    /// Bring the nodes taken offline last back.
    Online,
    /// These members leave these rooms: (room, member).
    Leave(Vec<(usize, NodeIdx)>),
    /// The rooms' admins invite back the members that left last.
    Join,
}

/// A room's name in the simulation (the engine's room name, the baseline's
/// topic).
pub fn room_name(r: usize) -> String {
    format!("r{r}")
}

/// The plan of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Node count: the users' first devices, then the second devices.
    pub nodes: usize,
    /// Users (their first devices are nodes `0..users`).
    pub users: usize,
    /// Each user's second device, if it has one.
    pub second_of: Vec<Option<NodeIdx>>,
    /// Each node's cluster (0 for topologies without clusters).
    pub cluster: Vec<u32>,
    /// Each node's dials at start.
    pub dials: Vec<Vec<NodeIdx>>,
    /// Each room's members; the first one creates the room.
    pub rooms: Vec<Vec<NodeIdx>>,
    /// Contact pairs (a < b): members of a common room.
    pub contacts: Vec<(NodeIdx, NodeIdx)>,
    /// Each node's contacts.
    pub contacts_of: Vec<Vec<NodeIdx>>,
    /// The sends, in time order.
    pub sends: Vec<Send>,
    /// The faults, in time order.
    pub faults: Vec<(Duration, Action)>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// `v`'s nodes (any of the `all` nodes, second devices included) and a
/// fraction of the `n` users drawn from `rng`.
fn victims(rng: &mut StdRng, n: usize, all: usize, v: &Victims) -> Vec<NodeIdx> {
    let mut out: BTreeSet<NodeIdx> = v
        .nodes
        .iter()
        .filter(|i| **i < all)
        .map(|i| *i as NodeIdx)
        .collect();
    let want = (v.fraction * n as f64).round() as usize;
    let mut all: Vec<NodeIdx> = (0..n as NodeIdx).collect();
    all.shuffle(rng);
    out.extend(all.into_iter().take(want));
    out.into_iter().collect()
}

impl Plan {
    /// Draws the plan of `s`.
    pub fn new(s: &Scenario) -> Self {
        let n = s.nodes.count;
        let mut rng = StdRng::seed_from_u64(s.seed);
        let (mut cluster, mut dials) = topology(&mut rng, n, &s.topology);
        // Second devices: each dials its first device and that one's
        // neighbours, in its cluster.
        let seconds = s.nodes.second_devices.min(n);
        let all = n + seconds;
        let mut second_of = vec![None; n];
        for u in 0..seconds {
            let device = (n + u) as NodeIdx;
            second_of[u] = Some(device);
            let mut d = vec![u as NodeIdx];
            d.extend(dials[u].iter().copied());
            dials.push(d);
            cluster.push(cluster[u]);
        }

        let size = s.room_size();
        // Room r takes a stretch of a seeded permutation of the nodes, so
        // that every node is in some room when count × size ≥ n.
        let mut perm: Vec<NodeIdx> = (0..n as NodeIdx).collect();
        perm.shuffle(&mut rng);
        let rooms: Vec<Vec<NodeIdx>> = (0..s.rooms.count)
            .map(|r| (0..size).map(|i| perm[(r * size + i) % n]).collect())
            .collect();
        let mut pairs = BTreeSet::new();
        for members in &rooms {
            for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    pairs.insert(((*a).min(*b), (*a).max(*b)));
                }
            }
        }
        let contacts: Vec<_> = pairs.into_iter().collect();
        let mut contacts_of = vec![Vec::new(); n];
        for (a, b) in &contacts {
            contacts_of[*a as usize].push(*b);
            contacts_of[*b as usize].push(*a);
        }

        let w = &s.workload;
        let count = (w.rate * w.duration_s).round() as usize;
        let step = Duration::from_secs_f64(1.0 / w.rate);
        let mut sends = Vec::with_capacity(count);
        for i in 0..count {
            let at = step * i as u32;
            let dm = w.dm_share > 0.0 && rng.gen_bool(w.dm_share.min(1.0));
            let send = if dm {
                let from = rng.gen_range(0..n) as NodeIdx;
                match contacts_of[from as usize].choose(&mut rng) {
                    Some(to) => Send {
                        at,
                        from,
                        target: Target::Dm(*to),
                    },
                    None => continue,
                }
            } else {
                if rooms.is_empty() {
                    continue;
                }
                let r = rng.gen_range(0..rooms.len());
                let Some(from) = rooms[r].choose(&mut rng) else {
                    continue;
                };
                Send {
                    at,
                    from: *from,
                    target: Target::Room(r),
                }
            };
            sends.push(send);
        }

        let mut faults: Vec<(Duration, Action)> = s
            .faults
            .iter()
            .map(|f| {
                let action = match f {
                    Fault::Partition { fraction, mode, .. } => {
                        let cut: BTreeSet<NodeIdx> = victims(
                            &mut rng,
                            n,
                            all,
                            &Victims {
                                nodes: Vec::new(),
                                fraction: *fraction,
                            },
                        )
                        .into_iter()
                        .collect();
                        let side = (0..all as NodeIdx)
                            .map(|i| u32::from(cut.contains(&i)))
                            .collect();
                        Action::Partition(side, *mode)
                    }
                    Fault::Heal { .. } => Action::Heal,
                    Fault::Crash { victims: v, .. } => Action::Crash(victims(&mut rng, n, all, v)),
                    Fault::Restart { .. } => Action::Restart,
                    Fault::Offline { victims: v, .. } => {
                        Action::Offline(victims(&mut rng, n, all, v))
                    }
                    Fault::Online { .. } => Action::Online,
                    Fault::Leave { victims: v, .. } => {
                        let who = victims(&mut rng, n, all, v);
                        let left = rooms
                            .iter()
                            .enumerate()
                            .flat_map(|(r, members)| {
                                // The creator (first member) stays: it is the
                                // room's admin, who invites members back.
                                members
                                    .iter()
                                    .skip(1)
                                    .filter(|m| who.contains(m))
                                    .map(move |m| (r, *m))
                            })
                            .collect();
                        Action::Leave(left)
                    }
                    Fault::Join { .. } => Action::Join,
                };
                (secs(f.at_s()), action)
            })
            .collect();
        faults.sort_by_key(|(at, _)| *at);
        let sends = senders_in_their_rooms(sends, &faults, &rooms, s.seed);

        Self {
            nodes: all,
            users: n,
            second_of,
            cluster,
            dials,
            rooms,
            contacts,
            contacts_of,
            sends,
            faults,
        }
    }

    /// Distinct links the topology asks for.
    pub fn planned_links(&self) -> usize {
        let mut set = BTreeSet::new();
        for (a, ds) in self.dials.iter().enumerate() {
            for b in ds {
                let a = a as NodeIdx;
                set.insert((a.min(*b), a.max(*b)));
            }
        }
        set.len()
    }
}

/// Moves each room send whose planned sender has left that room (by the
/// time of the send) to a member still in it, drawn from the seed; drops it
/// if nobody is. Faults happen before sends planned for the same moment, as
/// the driver applies them.
fn senders_in_their_rooms(
    sends: Vec<Send>,
    faults: &[(Duration, Action)],
    rooms: &[Vec<NodeIdx>],
    seed: u64,
) -> Vec<Send> {
    if !faults.iter().any(|(_, a)| matches!(a, Action::Leave(_))) {
        return sends;
    }
    // Its own generator: plans without membership churn stay as they were.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6a6f_696e_6c65_6176);
    let mut out: BTreeSet<(usize, NodeIdx)> = BTreeSet::new();
    let mut last: Vec<(usize, NodeIdx)> = Vec::new();
    let mut faults = faults.iter().peekable();
    let mut kept = Vec::with_capacity(sends.len());
    for mut send in sends {
        while let Some((_, action)) = faults.next_if(|(at, _)| *at <= send.at) {
            match action {
                Action::Leave(left) => {
                    out.extend(left.iter().copied());
                    last.clone_from(left);
                }
                Action::Join => {
                    for x in last.drain(..) {
                        out.remove(&x);
                    }
                }
                _ => {}
            }
        }
        if let Target::Room(r) = send.target
            && out.contains(&(r, send.from))
        {
            let present: Vec<NodeIdx> = rooms[r]
                .iter()
                .copied()
                .filter(|m| !out.contains(&(r, *m)))
                .collect();
            match present.choose(&mut rng) {
                Some(m) => send.from = *m,
                None => continue,
            }
        }
        kept.push(send);
    }
    kept
}

fn topology(rng: &mut StdRng, n: usize, t: &Topology) -> (Vec<u32>, Vec<Vec<NodeIdx>>) {
    let pick = |rng: &mut StdRng, me: usize, pool: &[NodeIdx], k: usize| -> Vec<NodeIdx> {
        let others: Vec<NodeIdx> = pool.iter().copied().filter(|p| *p as usize != me).collect();
        others
            .choose_multiple(rng, k.min(others.len()))
            .copied()
            .collect()
    };
    match t {
        Topology::Full => {
            let dials = (0..n)
                .map(|a| ((a + 1)..n).map(|b| b as NodeIdx).collect())
                .collect();
            (vec![0; n], dials)
        }
        Topology::RandomK { k } => {
            let all: Vec<NodeIdx> = (0..n as NodeIdx).collect();
            let dials = (0..n).map(|a| pick(rng, a, &all, *k)).collect();
            (vec![0; n], dials)
        }
        Topology::Clusters {
            clusters,
            k,
            bridges,
        } => {
            let c = (*clusters).clamp(1, n);
            let cluster: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
            let dials = (0..n)
                .map(|a| {
                    let (inside, outside): (Vec<NodeIdx>, Vec<NodeIdx>) =
                        (0..n as NodeIdx).partition(|b| cluster[*b as usize] == cluster[a]);
                    let mut d = pick(rng, a, &inside, *k);
                    d.extend(pick(rng, a, &outside, *bridges));
                    d
                })
                .collect();
            (cluster, dials)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn scenario(extra: &str) -> Scenario {
        Scenario::parse(&format!(
            r#"
name = "t"
seed = 9
[nodes]
count = 30
[topology]
kind = "random-k"
k = 3
[links.default]
latency_ms = 10
[rooms]
count = 3
members = 10
[workload]
rate = 10
duration_s = 10
dm_share = 0.3
{extra}
"#
        ))
        .unwrap()
    }

    #[test]
    fn the_plan_is_fixed_by_the_seed() {
        let (a, b) = (Plan::new(&scenario("")), Plan::new(&scenario("")));
        assert_eq!(a.dials, b.dials);
        assert_eq!(a.rooms, b.rooms);
        assert_eq!(a.sends.len(), b.sends.len());
        assert!(
            a.sends
                .iter()
                .zip(&b.sends)
                .all(|(x, y)| x.from == y.from && x.target == y.target)
        );
    }

    #[test]
    fn rooms_cover_every_node_and_sends_follow_membership() {
        let p = Plan::new(&scenario(""));
        let mut covered = BTreeSet::new();
        for r in &p.rooms {
            assert_eq!(r.len(), 10);
            covered.extend(r.iter().copied());
        }
        assert_eq!(covered.len(), 30);
        assert_eq!(p.sends.len(), 100);
        for s in &p.sends {
            match s.target {
                Target::Room(r) => assert!(p.rooms[r].contains(&s.from)),
                Target::Dm(to) => assert!(p.contacts_of[s.from as usize].contains(&to)),
            }
        }
        assert!(p.dials.iter().all(|d| d.len() == 3));
    }

    #[test]
    fn faults_resolve_their_victims() {
        let p = Plan::new(&scenario(
            r#"
[[faults]]
kind = "crash"
at_s = 2
fraction = 0.3
[[faults]]
kind = "partition"
at_s = 1
fraction = 0.5
mode = "reset"
"#,
        ));
        assert!(
            matches!(&p.faults[0].1, Action::Partition(side, CutMode::Reset)
            if side.iter().filter(|s| **s == 1).count() == 15)
        );
        assert!(matches!(&p.faults[1].1, Action::Crash(v) if v.len() == 9));
    }

    #[test]
    fn members_that_left_do_not_send_to_their_rooms_until_invited_back() {
        let p = Plan::new(&scenario(
            r#"
[[faults]]
kind = "leave"
at_s = 2
fraction = 0.5
[[faults]]
kind = "join"
at_s = 6
"#,
        ));
        let Action::Leave(left) = &p.faults[0].1 else {
            panic!("{:?}", p.faults[0]);
        };
        assert!(!left.is_empty());
        // Creators stay; every pair is a real membership.
        for (r, m) in left {
            assert!(p.rooms[*r].contains(m));
            assert_ne!(p.rooms[*r][0], *m);
        }
        let away = Duration::from_secs(2)..Duration::from_secs(6);
        let mut moved = 0;
        for send in &p.sends {
            if let Target::Room(r) = send.target {
                assert!(p.rooms[r].contains(&send.from));
                if away.contains(&send.at) {
                    assert!(!left.contains(&(r, send.from)), "{send:?}");
                    moved += 1;
                }
            }
        }
        assert!(moved > 0);
        // Without churn, the same seed gives the same plan as before.
        let plain = Plan::new(&scenario(""));
        assert_eq!(plain.sends.len(), 100);
    }
}
