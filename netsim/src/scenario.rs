//! Scenarios: what a run simulates, read from TOML.
//!
//! A scenario names the network (node count, topology, link profiles),
//! the rooms and who is in them, the workload, a timeline of faults and
//! the assertions that make the run fail. Everything random (topology,
//! members, senders, fault victims, link jitter and loss) is drawn from
//! `seed`. See `netsim/README.md` for a worked example.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::link::LinkProfile;
use crate::transport::CutMode;

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (reports carry it).
    pub name: String,
    /// Seed of every random draw of the run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Nodes.
    pub nodes: Nodes,
    /// How nodes are connected at start.
    pub topology: Topology,
    /// Link profiles by name; `default` applies to every link, `inter` (if
    /// given) to links between clusters.
    pub links: BTreeMap<String, LinkProfile>,
    /// Rooms.
    #[serde(default)]
    pub rooms: Rooms,
    /// What is sent.
    pub workload: Workload,
    /// The timeline of faults, in seconds from the start of the workload.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Knobs of the node under test.
    #[serde(default)]
    pub node: NodeKnobs,
    /// Sybil attackers (none by default): see [`crate::attack`].
    #[serde(default)]
    pub attack: Attack,
    /// What makes the run fail.
    #[serde(default)]
    pub assert: Assertions,
}

fn default_seed() -> u64 {
    1
}

/// The nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// How many.
    pub count: usize,
    /// Relay nodes (`safemeet-relay`, mailboxes in memory) on top of
    /// `count`, each on the modelled network with its own links (profile
    /// `relay` if given, else `default`). Every node lists every relay in
    /// `safemeet_net::Config::relays` (so its invites carry them): deliveries that
    /// cannot reach a node are left there, and it drains them.
    #[serde(default)]
    pub relays: usize,
    /// Only nodes 0..relay_users list the relays (default: every node).
    /// A node that lists relays holds a circuit on each, which makes it a
    /// Kademlia server; in a network of a hundred nodes their queries then
    /// connect nearly every node to every other (see netsim/README.md,
    /// sybil-flood).
    #[serde(default)]
    pub relay_users: Option<usize>,
    /// Users 0..second_devices get a second device, linked to the first
    /// in set-up through the product's link protocol (`device link`). The
    /// second devices are nodes `count..count + second_devices` (in that
    /// order), dial their first device and its neighbours, send nothing,
    /// and must receive everything their user receives and everything
    /// their user sends. Not for `--compare-baseline` (gossipsub has no
    /// devices).
    #[serde(default)]
    pub second_devices: usize,
}

/// How the nodes are connected at start (each node dials its neighbours).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Topology {
    /// Every node dials every other.
    Full,
    /// Each node dials `k` random others (so the average degree is about 2k).
    RandomK {
        /// Dials per node.
        k: usize,
    },
    /// Nodes split into `clusters` groups: `k` random dials inside the
    /// group and `bridges` to other groups. Links between groups use the
    /// `inter` profile.
    Clusters {
        /// How many groups.
        clusters: usize,
        /// Dials per node inside its group.
        k: usize,
        /// Dials per node to other groups.
        bridges: usize,
    },
}

/// Rooms and their members.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rooms {
    /// How many group rooms.
    pub count: usize,
    /// Members per room (capped at the node count); 0 means every node.
    pub members: usize,
}

impl Default for Rooms {
    fn default() -> Self {
        Self {
            count: 1,
            members: 0,
        }
    }
}

/// What is sent during the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Messages per second, network-wide.
    pub rate: f64,
    /// Text bytes per message.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Share of messages that are DMs (to a contact); the rest go to a room.
    #[serde(default)]
    pub dm_share: f64,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Seconds to wait after the last send for deliveries to finish.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
}

fn default_size() -> usize {
    200
}

fn default_drain() -> f64 {
    15.0
}

/// Which nodes a fault hits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Victims {
    /// These nodes by index.
    #[serde(default)]
    pub nodes: Vec<usize>,
    /// Or this share of the nodes, drawn from the seed.
    #[serde(default)]
    pub fraction: f64,
}

/// One fault of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Splits the network in two: `fraction` of the nodes (drawn from the
    /// seed) on one side.
    Partition {
        /// Seconds into the workload.
        at_s: f64,
        /// Share of nodes on the smaller side.
        fraction: f64,
        /// How cut links behave.
        mode: CutMode,
    },
    /// Ends the partition.
    Heal {
        /// Seconds into the workload.
        at_s: f64,
    },
    /// Nodes crash silently (engine stopped, links blackholed).
    Crash {
        /// Seconds into the workload.
        at_s: f64,
        /// Who.
        #[serde(flatten)]
        victims: Victims,
    },
    /// The nodes crashed last come back with their stores and keys.
    Restart {
        /// Seconds into the workload.
        at_s: f64,
    },
    /// Nodes go offline (links blackholed; they keep running).
    Offline {
        /// Seconds into the workload.
        at_s: f64,
        /// Who.
        #[serde(flatten)]
        victims: Victims,
    },
    /// The nodes taken offline last come back.
    Online {
        /// Seconds into the workload.
        at_s: f64,
    },
    /// Members leave their rooms (membership churn): each victim leaves
    /// every room it is in but did not create (a room's creator is its
    /// admin, who invites members back).
    Leave {
        /// Seconds into the workload.
        at_s: f64,
        /// Who.
        #[serde(flatten)]
        victims: Victims,
    },
    /// Each room's admin invites back the members that left last.
    Join {
        /// Seconds into the workload.
        at_s: f64,
    },
}

impl Fault {
    /// When it happens, in seconds into the workload.
    pub fn at_s(&self) -> f64 {
        match self {
            Fault::Partition { at_s, .. }
            | Fault::Heal { at_s }
            | Fault::Crash { at_s, .. }
            | Fault::Restart { at_s }
            | Fault::Offline { at_s, .. }
            | Fault::Online { at_s }
            | Fault::Leave { at_s, .. }
            | Fault::Join { at_s } => *at_s,
        }
    }
}

/// Sybil attackers: strangers to every honest node, each a libp2p swarm of
/// its own on the modelled network (links: profile `attack` if given, else
/// `default`), attacking from the start of the workload to the end of the
/// drain. Rates are per attacker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Attack {
    /// How many (0: no attack).
    pub count: usize,
    /// Honest nodes each one dials (drawn from the seed); every attacker
    /// also dials every relay.
    pub targets: usize,
    /// Topics each announces through its gossipsub at start, a quarter of
    /// them malformed (the room topics it knows come on top).
    pub topics: usize,
    /// Raw gossipsub frames per second, each to one of its targets.
    pub gossip_frames_per_s: f64,
    /// Flood topics announced in each raw frame.
    pub subscriptions_per_frame: usize,
    /// GRAFTs in each raw frame (the known room topics over and over).
    pub grafts_per_frame: usize,
    /// Junk direct deliveries per second, each to one of its targets.
    pub deliveries_per_s: f64,
    /// Mailbox requests per second, each to one of the relays.
    pub deposits_per_s: f64,
    /// Every this many seconds it drops the room topics it knows and takes
    /// them again (PRUNE, GRAFT) and publishes junk on them; 0: never.
    pub resubscribe_s: f64,
    /// The room topics it knows (as an ex-member would): the first this
    /// many rooms' (capped at the room count).
    pub known_rooms: usize,
    /// Its gossipsub heartbeat, ms.
    pub heartbeat_ms: u64,
}

impl Default for Attack {
    fn default() -> Self {
        Self {
            count: 0,
            targets: 4,
            topics: 200,
            gossip_frames_per_s: 1.0,
            subscriptions_per_frame: 256,
            grafts_per_frame: 64,
            deliveries_per_s: 2.0,
            deposits_per_s: 4.0,
            resubscribe_s: 1.0,
            known_rooms: usize::MAX,
            heartbeat_ms: 1000,
        }
    }
}

/// Settings of the nodes under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeKnobs {
    /// Gossipsub heartbeat in milliseconds (production: 1000).
    pub heartbeat_ms: u64,
    /// How long a room message waits for acknowledgements over gossip
    /// before direct delivery, in milliseconds (production: 1000).
    pub gossip_grace_ms: u64,
    /// First retry delay of an undelivered item, ms (production: 1000).
    pub retry_initial_ms: u64,
    /// Longest retry delay, ms (production: 300 000).
    pub retry_max_ms: u64,
    /// Seconds given to set-up (contacts, rooms, warm-up) before it fails.
    pub setup_timeout_s: f64,
    /// How often a node with relays drains its mailboxes, ms (production:
    /// 60 000; it also drains on start and when a relay connects after a
    /// drain failed).
    pub mailbox_poll_ms: u64,
    /// Rooms of at most this many member devices go by direct fan-out
    /// instead of gossip (production: 32; 0 puts every room on gossip).
    pub direct_room_max_devices: usize,
}

impl Default for NodeKnobs {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            gossip_grace_ms: 1000,
            retry_initial_ms: 1000,
            retry_max_ms: 300_000,
            setup_timeout_s: 120.0,
            mailbox_poll_ms: 60_000,
            direct_room_max_devices: safemeet_engine::DIRECT_ROOM_MAX_DEVICES,
        }
    }
}

/// Conditions a run must meet; each is checked only when given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertions {
    /// Least share of (message, recipient) pairs delivered, 0..=1.
    pub delivery_min: Option<f64>,
    /// Highest latency median, ms.
    pub p50_ms_max: Option<f64>,
    /// Highest 95th percentile, ms.
    pub p95_ms_max: Option<f64>,
    /// Highest 99th percentile, ms.
    pub p99_ms_max: Option<f64>,
    /// Highest p99 as a multiple of the raw-gossipsub baseline's p99 in the
    /// same scenario (needs `--compare-baseline`).
    pub p99_vs_baseline_max: Option<f64>,
    /// Highest peak resident memory of the process, MiB.
    pub peak_rss_mib_max: Option<f64>,
    /// With attackers: highest p99 as a multiple of the p99 of the same
    /// scenario with the attackers idle (needs `--compare-idle`).
    pub p99_vs_idle_max: Option<f64>,
    /// With attackers: the most the attack may add to the process's peak
    /// resident memory over the run with the attackers idle, MiB (needs
    /// `--compare-idle`). It bounds what the attack adds to the relays'
    /// memory (see netsim/README.md, sybil-flood).
    pub attack_rss_growth_mib_max: Option<f64>,
    /// With attackers: the most bytes the relays may hold at once (their
    /// stores' totals, as on disk), MiB.
    pub relay_stored_mib_max: Option<f64>,
    /// The run must be valid (host CPU not saturated). Default true.
    pub valid: Option<bool>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes.count >= 2, "a scenario needs at least 2 nodes");
        anyhow::ensure!(self.nodes.count <= u32::MAX as usize, "too many nodes");
        anyhow::ensure!(self.nodes.relays <= 16, "at most 16 relays");
        anyhow::ensure!(
            self.nodes.second_devices <= self.nodes.count,
            "at most one second device per node"
        );
        let a = &self.attack;
        anyhow::ensure!(a.count <= 10_000, "at most 10 000 attackers");
        for (name, rate) in [
            ("gossip_frames_per_s", a.gossip_frames_per_s),
            ("deliveries_per_s", a.deliveries_per_s),
            ("deposits_per_s", a.deposits_per_s),
            ("resubscribe_s", a.resubscribe_s),
        ] {
            anyhow::ensure!(
                rate.is_finite() && (0.0..=1000.0).contains(&rate),
                "attack.{name} must be within 0..=1000"
            );
        }
        anyhow::ensure!(
            a.subscriptions_per_frame <= 512 && a.grafts_per_frame <= 512,
            "attack.subscriptions_per_frame and attack.grafts_per_frame must be at most 512"
        );
        anyhow::ensure!(
            self.node.mailbox_poll_ms >= 100,
            "node.mailbox_poll_ms must be at least 100"
        );
        anyhow::ensure!(
            self.links.contains_key("default"),
            "[links.default] is required"
        );
        for (name, p) in &self.links {
            p.validate()
                .map_err(|e| anyhow::anyhow!("links.{name}: {e}"))?;
        }
        let w = &self.workload;
        anyhow::ensure!(
            w.rate.is_finite() && w.rate > 0.0,
            "workload.rate must be positive"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&w.dm_share),
            "workload.dm_share must be within 0..=1"
        );
        anyhow::ensure!(
            w.duration_s.is_finite() && w.duration_s > 0.0,
            "workload.duration_s must be positive"
        );
        anyhow::ensure!(
            (1..=4000).contains(&w.size),
            "workload.size must be within 1..=4000 bytes"
        );
        anyhow::ensure!(
            w.dm_share >= 1.0 || self.rooms.count > 0,
            "room messages need at least one room"
        );
        for f in &self.faults {
            anyhow::ensure!(
                f.at_s().is_finite() && f.at_s() >= 0.0,
                "fault times must be positive"
            );
            if let Fault::Crash { victims, .. }
            | Fault::Offline { victims, .. }
            | Fault::Leave { victims, .. } = f
            {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&victims.fraction),
                    "a fault's fraction must be within 0..=1"
                );
            }
            if let Fault::Partition { fraction, .. } = f {
                anyhow::ensure!(
                    (0.0..=0.5).contains(fraction),
                    "a partition's fraction must be within 0..=0.5"
                );
            }
        }
        Ok(())
    }

    /// The profile of a link between two nodes' clusters.
    pub fn profile(&self, same_cluster: bool) -> LinkProfile {
        let default = self.links.get("default").cloned().unwrap_or_default();
        if same_cluster {
            default
        } else {
            self.links.get("inter").cloned().unwrap_or(default)
        }
    }

    /// The profile of a link to or from an attacker.
    pub fn attack_profile(&self) -> LinkProfile {
        self.links
            .get("attack")
            .or_else(|| self.links.get("default"))
            .cloned()
            .unwrap_or_default()
    }

    /// The profile of a link to or from a relay.
    pub fn relay_profile(&self) -> LinkProfile {
        self.links
            .get("relay")
            .or_else(|| self.links.get("default"))
            .cloned()
            .unwrap_or_default()
    }

    /// Members per room.
    pub fn room_size(&self) -> usize {
        match self.rooms.members {
            0 => self.nodes.count,
            m => m.min(self.nodes.count),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EXAMPLE: &str = r#"
name = "t"
seed = 3
[nodes]
count = 10
[topology]
kind = "random-k"
k = 3
[links.default]
latency_ms = 20
jitter_ms = 2
loss = 0.01
[rooms]
count = 2
members = 5
[workload]
rate = 2
duration_s = 5
dm_share = 0.25
[[faults]]
kind = "partition"
at_s = 1
fraction = 0.3
mode = "blackhole"
[[faults]]
kind = "heal"
at_s = 3
[[faults]]
kind = "crash"
at_s = 2
fraction = 0.1
[assert]
delivery_min = 1.0
p99_ms_max = 800
"#;

    #[test]
    fn the_example_parses() {
        let s = Scenario::parse(EXAMPLE).unwrap();
        assert_eq!(s.nodes.count, 10);
        assert!(matches!(s.topology, Topology::RandomK { k: 3 }));
        assert_eq!(s.faults.len(), 3);
        assert_eq!(s.room_size(), 5);
        assert_eq!(s.assert.p99_ms_max, Some(800.0));
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(Scenario::parse(&EXAMPLE.replace("loss = 0.01", "loss = 1.5")).is_err());
        assert!(Scenario::parse(&EXAMPLE.replace("count = 10", "count = 1")).is_err());
        assert!(Scenario::parse(&EXAMPLE.replace("k = 3", "k = 3\nq = 1")).is_err());
        assert!(Scenario::parse(&EXAMPLE.replace("[links.default]", "[links.other]")).is_err());
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n > 0);
    }
}
