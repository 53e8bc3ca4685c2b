//! Tier 1: the real `coordination` state machines on a seeded, discrete-event network.
//!
//! Every node here runs the same [`Originator`] (on the submitter), [`Outbox`] (on each target),
//! [`Download`] (for files) and [`Queries`] (the submitter's QUERY collection) as the daemon, fed with the same inputs at virtual times; the
//! run is built the way the daemon builds it (real job specs, real peer-id-sized node names,
//! the daemon's file distribution tree) and measured in its real CBOR size. What is modelled
//! rather than run:
//! - gossipsub: each node keeps `TARGET_PEERS`-ish connections, a mesh of degree
//!   `MESH_N` (at most `MESH_N_HIGH`); the submitter floods its peers, every node forwards a
//!   new message to its mesh peers (minus those that said IDONTWANT), and heartbeats send
//!   IHAVE to `GOSSIP_LAZY` other peers for `HISTORY_GOSSIP` heartbeats, answered by IWANT;
//! - request-response: a request and its answer are two messages, the request after a round
//!   trip that opens its stream and negotiates the protocol; when either is lost, or
//!   crosses a partition, the requester learns it at the request timeout; a dead peer refuses
//!   at once;
//! - the target's executor: jobs run one after another for `job_time` each; a QUERY job sends
//!   the node's value to the submitter and ends when the set of all values arrives (each
//!   message sent again 1 s after it failed, as the daemon first retries);
//! - failure detection: the submitter sees a node as gone once it has been unreachable for
//!   the membership expiry of a mesh of this size;
//! - a node killed keeps what the daemon keeps on disk (accepted runs, finished jobs, results
//!   not yet delivered, file chunks) and loses the rest; on restart it reports the jobs it
//!   had accepted but not finished as failed ("interrupted", as the daemon does: a job is
//!   never run twice) and re-adds its undelivered results. (The daemon reports the running
//!   job and the rest of its parent so, and runs the queued jobs of other parents; every
//!   workload here has one parent, and a node with queued jobs always has one running.)
//!
//! Same seed, same workload, same network: the same [`Report`] (apart from wall time).
//!
//! This file holds the simulation's state, its events and their dispatch. Beside it:
//! `transport` (the modelled network, gossip and heartbeats), `runs` (run tracker, queues,
//! executor, outbox), `cross_node` (QUERY and JOB_WAIT), `files` (chunked downloads) and
//! `faults` (kills and restarts).

mod cross_node;
mod faults;
mod files;
mod runs;
mod transport;

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use coordination::{
    JobEntry, JobMessage, JobResult, NodeId, Parent, Run, TargetKey,
    acknowledgement::Acknowledgement,
    job_wait::{Registrations, Waits},
    originator::{self, Originator, OriginatorConfig},
    outbox::{self, Outbox},
    query::{self, Queries},
    transfer::{ChunkResult, Download},
};
use jobs::{
    Component, Fingerprint, JobSpec, ParseOutcome,
    executor::{QueueKind, ResultState},
    spec::{CHUNK_SIZE, FileRef},
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    metrics::Report,
    network::{Latency, Micros, NetworkModel, micros},
    scenario::{QUERY_ARG, Scenario, Workload, awaited_job, awaited_node},
};

/// A coordination message that failed is sent again after this long (the daemon's first
/// retry; it doubles later ones, which a run here never needs).
const COORDINATION_RETRY: Micros = 1_000_000;

/// What the daemon does, as numbers (from `mesh` and `node`).
mod daemon {
    pub use mesh::tuning::{
        BLOB_TIMEOUT, CTL_TIMEOUT, DEFAULT_TARGET_PEERS as TARGET_PEERS, EXPIRY_INTERVALS,
        GOSSIP_HEARTBEAT, IDONTWANT_THRESHOLD, MAX_GOSSIP_BYTES, MESH_N, MESH_N_HIGH,
        heartbeat_interval,
    };
    pub use mesh::wire::MAX_JOB_DATA as MAX_JOB_MESSAGE;
    pub use node::config::DEFAULT_HEARTBEAT;
    pub use node::runs::TICK as RUNS_TICK;
    pub use node::store::GROUP_WINDOW as STORE_GROUP_WINDOW;
    pub use node::transfers::{PARK_FOR, TICK as TRANSFER_TICK};
    /// gossipsub defaults the daemon keeps (`gossip_lazy`, `gossip_factor`, `history_gossip`).
    pub const GOSSIP_LAZY: usize = 6;
    pub const GOSSIP_FACTOR: f64 = 0.25;
    pub const HISTORY_GOSSIP: u64 = 3;
}

/// The submit happens this long into the simulation (the mesh is formed by then).
const SUBMIT_AT: Micros = 1_000_000;

/// The submitter's start, as its copies of the run name it (it never restarts here).
const SUBMITTER_START: u64 = 0x9e37_79b9_7f4a_7c15;

/// A tier-1 run: the workload, the network and the seed.
/// How a simulated job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Success,
    Failed,
    /// Accepted, then the node was killed before it finished: reported failed on restart.
    Interrupted,
}

/// The info of an interrupted job's result, as the daemon words it.
const INTERRUPTED: &str = node::runs::INTERRUPTED;

#[derive(Debug, Clone)]
pub struct Tier1 {
    pub workload: Workload,
    pub network: NetworkModel,
    pub seed: u64,
    /// Virtual time after which the run stops, finished or not.
    pub limit: Duration,
}

impl Tier1 {
    pub fn run(&self) -> Result<Report, String> {
        if self.workload.nodes < 2 {
            return Err("a simulation needs at least 2 nodes".into());
        }
        if !(0.0..1.0).contains(&self.network.loss) {
            return Err(format!(
                "loss {} must be at least 0 and below 1",
                self.network.loss
            ));
        }
        let started = Instant::now();
        let mut sim = Sim::new(self)?;
        if !sim.run(micros(self.limit) + SUBMIT_AT) {
            return Err("interrupted".into());
        }
        let mut report = sim.report();
        report.wall = started.elapsed();
        Ok(report)
    }
}

/// What is gossiped: the run, or a QUERY's set of values. Each has its own versions (the
/// run's announce round; the set's count of values), newest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flood {
    Run,
    QuerySet,
}

impl Flood {
    const ALL: [Flood; 2] = [Flood::Run, Flood::QuerySet];

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
enum Event {
    Submit,
    Gossip {
        to: usize,
        from: usize,
        what: Flood,
        round: u32,
    },
    IHave {
        to: usize,
        from: usize,
        what: Flood,
        round: u32,
    },
    IWant {
        to: usize,
        from: usize,
        what: Flood,
        round: u32,
    },
    IDontWant {
        to: usize,
        from: usize,
        what: Flood,
        round: u32,
    },
    Heartbeat {
        node: usize,
        epoch: u32,
    },
    Request {
        id: u64,
    },
    Reply {
        id: u64,
        answer: Answer,
    },
    Failed {
        id: u64,
    },
    JobDone {
        node: usize,
        epoch: u32,
        job: usize,
        ok: bool,
    },
    RunsTick {
        node: usize,
        epoch: u32,
    },
    TransferTick {
        node: usize,
        epoch: u32,
    },
    Kill {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Join {
        node: usize,
    },
    PartitionStart,
    PartitionHeal,
    /// The submitter hears from a node it had written off (its next presence heartbeat).
    Back {
        node: usize,
    },
    Suspect {
        node: usize,
    },
    /// An answer that waited for the answering node's store to commit.
    Respond {
        id: u64,
        answer: Answer,
        payload: u64,
    },
    /// A gossiped run's acknowledgement, sent once the acceptance is committed.
    SendAck {
        node: usize,
        epoch: u32,
    },
    /// The submitter hears a node's new start (its presence, a gossip hop away) while it had
    /// not written it off: a target that owes results gets the run again.
    Restarted {
        node: usize,
    },
    /// A QUERY message that failed, sent again.
    Retry {
        from: usize,
        epoch: u32,
        to: usize,
        kind: Kind,
    },
}

#[derive(Debug)]
enum Body {
    Deliver,
    Ack,
    Results(Vec<JobResult>),
    Chunk {
        index: usize,
    },
    /// A target's value of the QUERY.
    QueryValue,
    /// The set of values, `bytes` long.
    QueryResult {
        bytes: u64,
    },
    /// A target has the gossiped set with `values` values.
    QueryTaken {
        values: usize,
    },
    /// A JOB_WAIT registers with the awaited node (the wait is the sender's).
    WaitFor,
    /// The awaited node says the job finished (to the waiter's wait).
    WaitDone,
}

#[derive(Debug)]
enum Answer {
    Ok,
    Chunk(ChunkResult),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Deliver,
    Ack,
    Results,
    Chunk { index: usize },
    QueryValue,
    QueryResult { bytes: u64 },
    QueryTaken { values: usize },
    WaitFor,
    WaitDone,
}

struct Pending {
    from: usize,
    from_epoch: u32,
    to: usize,
    kind: Kind,
    body: Option<Body>,
    sent_at: Micros,
    timeout: Micros,
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
    /// The message this event brings, if it was still on its sender's uplink when scheduled:
    /// a crash of the sender before it left drops it ([`Sim::never_left`]).
    sent: Option<Sent>,
}

/// A message put on a node's uplink behind others: who sent it, in which life, and when its
/// last byte leaves.
#[derive(Debug, Clone, Copy)]
struct Sent {
    from: usize,
    epoch: u32,
    left: Micros,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Earliest first out of the (max-)heap; ties in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A chunk request waiting at a node that is still receiving that chunk.
struct Parked {
    id: u64,
    index: usize,
    deadline: Micros,
}

#[derive(Default)]
struct SimNode {
    alive: bool,
    /// Bumped when the node is killed: timers and answers of its old life are ignored.
    epoch: u32,
    /// When each of its earlier lives ended (killed), by epoch.
    killed_at: Vec<Micros>,
    /// Offset of its timers (ticks and heartbeats run at phase + k × period).
    phase: Micros,
    uplink_free: Micros,
    // Gossip.
    /// Per [`Flood`]: the newest version this node has, and when it got it.
    seen: [Option<(u32, Micros)>; 2],
    /// Every version it received by gossip at least once, older ones included (kept across
    /// a restart, as `seen` is: for the duplicate count only).
    received: Vec<(Flood, u32)>,
    /// Peers that said they have a version (IDONTWANT): (peer, what, version).
    dont_want: Vec<(usize, Flood, u32)>,
    heartbeat_at: Option<Micros>,
    /// When the store's open group commits (what is acknowledged waits for it).
    store_group_ends: Micros,
    // Target (durable: accepted, finished, undelivered; the rest is lost on a kill).
    accepted: bool,
    /// Whether a copy of the run calls for an acknowledgement (memory only, as in the
    /// daemon; the submitter never restarts here, so its start never changes).
    ack: Acknowledgement,
    finished: HashSet<usize>,
    undelivered: Vec<JobResult>,
    queue: VecDeque<usize>,
    running: Option<usize>,
    outbox: Outbox,
    runs_tick_at: Option<Micros>,
    // Files (chunks are durable).
    chunks: Vec<bool>,
    download: Option<Download>,
    waiting_job: Option<usize>,
    parked: Vec<Parked>,
    transfer_tick_at: Option<Micros>,
    /// The QUERY job that waits for the set of values.
    query_waiting: Option<usize>,
    /// Its QUERY job ran here (sent its value) since the node started: it takes the set
    /// (the daemon keeps who may send it in memory only).
    query_ran: bool,
    /// JOB_WAIT (`job-wait`): this node's wait (memory only, as in the daemon) and the job
    /// that waits; on the awaited node, the waits registered there.
    waits: Waits,
    wait_running: Option<usize>,
    registrations: Registrations,
}

struct Sim {
    rng: ChaCha8Rng,
    network: NetworkModel,
    workload: Workload,
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    /// Instant standing for virtual time 0 (the machines take `Instant`s).
    t0: Instant,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    peers: Vec<Vec<usize>>,
    mesh: Vec<Vec<usize>>,
    nodes: Vec<SimNode>,
    submitter: usize,
    originator: Originator,
    run: Arc<Run>,
    /// The run as targets receive it (targets by key), and every node by key.
    received: Arc<Run>,
    by_key: HashMap<TargetKey, NodeId>,
    /// Every job of the run in order, as (parent, job) positions.
    jobs: Vec<(usize, usize)>,
    /// Per node: the jobs (indices into `jobs`) it must run, in order.
    work: Vec<Vec<usize>>,
    file: Option<FileRef>,
    run_bytes: u64,
    /// The size of the last gossiped QUERY set.
    set_bytes: u64,
    deliver_bytes: u64,
    gossip_too_big: bool,
    requests: HashMap<u64, Pending>,
    next_request: u64,
    /// Which half a node is in during a partition.
    side_b: Vec<bool>,
    partitioned: bool,
    /// Since when the submitter cannot reach the node (dead, not joined yet, partitioned).
    down_since: Vec<Option<Micros>>,
    expiry: Micros,
    /// Nodes the submitter wrote off (expired while they owed results), until it hears from
    /// them again.
    written_off: Vec<bool>,
    // Measurements.
    expected: HashSet<(usize, usize)>,
    have_at: Vec<Option<Micros>>,
    acked_at: Vec<Option<Micros>>,
    /// First arrival of each expected result: when, its state and its info.
    result_at: HashMap<(usize, usize), (Micros, ResultState, String)>,
    unreachable: HashSet<(usize, usize)>,
    repeated: usize,
    conflicting: usize,
    messages: Vec<u64>,
    payload: Vec<u64>,
    overhead: Vec<u64>,
    /// Copies of gossip received, and (node, version) pairs received at least once.
    gossip_received: u64,
    gossip_first_receipts: u64,
    events: u64,
    job_index: HashMap<String, usize>,
    /// The submitter's QUERY collection, and which job is the QUERY (`query` scenario).
    queries: Queries,
    query_job: Option<usize>,
    query_value_bytes: u64,
    /// `job-wait`: the JOB_WAIT job, the awaited job and node, what the wait names, and the
    /// sizes of its two messages.
    wait_job: Option<usize>,
    awaited_job: Option<usize>,
    awaited: usize,
    awaited_fingerprint: String,
    wait_for_bytes: u64,
    wait_done_bytes: u64,
    /// What became of the scenario's disruptions: kills, joins and splits that took place,
    /// the late joiners, which nodes a copy of the run's gossip found down, and when the
    /// last late node joined.
    disruptions: usize,
    planned_kills: usize,
    partition_started: bool,
    late_nodes: Vec<usize>,
    missed_gossip: Vec<bool>,
    last_join: Option<Micros>,
}

/// The id of the one run a scenario models (its JOB_WAIT waits for a job of the same run,
/// which the registration names, as a real node's does).
const MODEL_RUN: &str = "00000000-0000-0000-0000-000000000001";

/// The id of `node`'s JOB_WAIT (one per node in `job-wait`).
fn wait_id_of(node: usize) -> String {
    format!("wait-{node}")
}

/// A node name shaped like a real one (an Ed25519 peer id: `12D3KooW` and 44 base58 digits).
fn peer_id_like(rng: &mut impl Rng) -> NodeId {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut s = String::from("12D3KooW");
    for _ in 0..44 {
        s.push(BASE58[rng.gen_range(0..BASE58.len())] as char);
    }
    NodeId(s)
}

/// An id shaped like the daemon's (a UUID in text).
fn uuid_like(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.r#gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn spec(verb: &str, inline: &str) -> Result<JobSpec, String> {
    match JobSpec::parse(verb, inline, &Default::default())? {
        ParseOutcome::Spec(s) => Ok(s),
        ParseOutcome::Help(_) => Err(format!("{verb} {inline}: not a job")),
    }
}

/// Node `node`'s value in the `query` scenario, as the RUN of `Workload::jobs_yaml` prints it:
/// `token-<pid>`, padded to the workload's value size.
fn query_value(w: &Workload, node: usize) -> serde_json::Value {
    match w.value_bytes {
        0 => serde_json::json!(format!("token-{node}")),
        n => serde_json::json!(format!("token-{node}-{}", "x".repeat(n))),
    }
}

fn cbor_len<T: serde::Serialize>(value: &T) -> u64 {
    coordination::message::encoded_len(value) as u64
}

/// The run of the workload, as the daemon would build it for `targets` from `originator`.
fn build_run(
    w: &Workload,
    originator: &NodeId,
    targets: &[NodeId],
    rng: &mut impl Rng,
) -> Result<(Run, Option<FileRef>), String> {
    let mut file = None;
    if w.scenario == Scenario::JobWait {
        return build_job_wait_run(w, originator, targets, rng).map(|run| (run, None));
    }
    let specs: Vec<JobSpec> = match w.scenario {
        Scenario::Files => {
            let chunks = w.file_bytes.div_ceil(CHUNK_SIZE) as usize;
            let f = FileRef {
                name: "payload.bin".into(),
                size: w.file_bytes,
                hash: Fingerprint(rng.r#gen()),
                chunks: (0..chunks).map(|_| Fingerprint(rng.r#gen())).collect(),
            };
            let mut s = spec("ADD", "payload.bin /var/tmp/payload.bin")?;
            if let Component::Add(t) = &mut s.component {
                t.file = Some(f.clone());
            }
            file = Some(f);
            vec![s]
        }
        Scenario::Query => vec![
            spec("RUN", &format!("--stdout-arg {QUERY_ARG} echo token-$$"))?,
            spec("QUERY", QUERY_ARG)?,
        ],
        _ => (0..w.jobs.max(1))
            .map(|i| {
                spec(
                    "RUN",
                    &format!("echo job {i} of the simulated orchestration"),
                )
            })
            .collect::<Result<_, _>>()?,
    };
    let jobs = specs
        .into_iter()
        .map(|spec| JobEntry {
            job_id: uuid_like(rng),
            fingerprint: spec.fingerprint(),
            only_on: None,
            spec,
        })
        .collect();
    // Drawn in this order: a seed gives the same run as before.
    let run_id = uuid_like(rng);
    let parent = Parent {
        parent_id: uuid_like(rng),
        fingerprint: Fingerprint(rng.r#gen()),
        queue: QueueKind::Sync,
        targets: targets.to_vec(),
        target_keys: Default::default(),
        jobs,
    };
    let run = Run::new(&run_id, originator.clone(), vec![parent]);
    Ok((run, file))
}

/// `job-wait`: the awaited job on one node, then a JOB_WAIT for it on every node.
fn build_job_wait_run(
    w: &Workload,
    originator: &NodeId,
    targets: &[NodeId],
    rng: &mut impl Rng,
) -> Result<Run, String> {
    let (verb, inline) = awaited_job(w.job_time);
    let awaited = spec(verb, &inline)?;
    let fingerprint = w.awaited_fingerprint()?;
    let wait = spec(
        "JOB_WAIT",
        &format!(
            "{fingerprint} --identity node-{}",
            awaited_node(targets.len())
        ),
    )?;
    let mut parent = |targets: Vec<NodeId>, spec: JobSpec| Parent {
        parent_id: uuid_like(rng),
        fingerprint: Fingerprint(rng.r#gen()),
        queue: QueueKind::Sync,
        targets,
        target_keys: Default::default(),
        jobs: vec![JobEntry {
            job_id: uuid_like(rng),
            fingerprint: spec.fingerprint(),
            only_on: None,
            spec,
        }],
    };
    let parents = vec![
        parent(vec![targets[awaited_node(targets.len())].clone()], awaited),
        parent(targets.to_vec(), wait),
    ];
    Ok(Run::new(&uuid_like(rng), originator.clone(), parents))
}

impl Sim {
    fn new(t: &Tier1) -> Result<Sim, String> {
        let w = t.workload.clone();
        let n = w.nodes;
        let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
        let ids: Vec<NodeId> = (0..n).map(|_| peer_id_like(&mut rng)).collect();
        let index: HashMap<NodeId, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        if index.len() != n {
            return Err("two simulated nodes drew the same name; try another seed".into());
        }
        let (peers, mesh) = topology(n, &mut rng);
        let submitter = 0;
        let (run, file) = build_run(&w, &ids[submitter], &ids, &mut rng)?;
        // What travels is the run as the daemon sends it: targets by key.
        let mut received = run.compact();
        // As the daemon stamps each copy with its start (random, so a full 8 bytes).
        received.originator_start = SUBMITTER_START;
        let run_bytes = cbor_len(&received);
        let deliver_bytes = cbor_len(&JobMessage::Deliver(Box::new(received.clone())));
        let received = Arc::new(received);
        let by_key = ids
            .iter()
            .map(|id| (TargetKey::of(id), id.clone()))
            .collect();
        let run = Arc::new(run);
        let mut jobs = Vec::new();
        for (p, parent) in run.parents.iter().enumerate() {
            for j in 0..parent.jobs.len() {
                jobs.push((p, j));
            }
        }
        let job_index: HashMap<String, usize> = jobs
            .iter()
            .enumerate()
            .map(|(k, &(p, j))| (run.parents[p].jobs[j].job_id.clone(), k))
            .collect();
        // Which jobs each node runs, from the run as it receives it.
        let work: Vec<Vec<usize>> = ids
            .iter()
            .map(|id| {
                received
                    .work_for(id)
                    .into_iter()
                    .flat_map(|(_, entries)| entries.into_iter().map(|e| job_index[&e.job_id]))
                    .collect()
            })
            .collect();
        let expected: HashSet<(usize, usize)> = run
            .expected_results()
            .into_iter()
            .map(|(job, node)| (job_index[&job], index[&node]))
            .collect();
        let chunk_count = file.as_ref().map_or(0, |f| f.chunks.len());
        let query_job = jobs.iter().position(|&(p, j)| {
            matches!(
                run.parents[p].jobs[j].spec.component,
                Component::Query { .. }
            )
        });
        // (A job id of the real length, not drawn: the other scenarios' draws stay as they were.)
        let query_value_bytes = cbor_len(&JobMessage::QueryValue {
            job_id: "00000000-0000-0000-0000-000000000000".into(),
            node: ids[submitter].clone(),
            name: QUERY_ARG.into(),
            value: query_value(&w, 1234567),
        });
        let position_of = |verb: &str| {
            jobs.iter()
                .position(|&(p, j)| run.parents[p].jobs[j].spec.verb().name() == verb)
        };
        let wait_job = position_of("JOB_WAIT");
        let awaited_job = wait_job.and(position_of("WAIT"));
        let awaited_fingerprint = match wait_job {
            Some(_) => w.awaited_fingerprint()?,
            None => String::new(),
        };
        let wait_for_bytes = cbor_len(&JobMessage::WaitFor {
            wait_id: "00000000-0000-0000-0000-000000000000".into(),
            fingerprint: awaited_fingerprint.clone(),
            run: Some(MODEL_RUN.into()),
        });
        let wait_done_bytes = cbor_len(&JobMessage::WaitDone {
            wait_id: "00000000-0000-0000-0000-000000000000".into(),
            node: ids[submitter].clone(),
            state: "success".into(),
        });
        let heartbeat = micros(daemon::GOSSIP_HEARTBEAT);
        let runs_tick = micros(daemon::RUNS_TICK);
        let nodes = (0..n)
            .map(|i| SimNode {
                alive: true,
                phase: rng.gen_range(0..heartbeat.max(runs_tick)),
                // The submitter holds the file it sends.
                chunks: vec![i == submitter; chunk_count],
                ..Default::default()
            })
            .collect();
        let expiry = micros(
            daemon::heartbeat_interval(daemon::DEFAULT_HEARTBEAT, n) * daemon::EXPIRY_INTERVALS,
        );
        let mut side_b = vec![false; n];
        let mut order: Vec<usize> = (1..n).collect();
        order.shuffle(&mut rng);
        for &i in order.iter().take(n / 2) {
            side_b[i] = true;
        }
        let mut sim = Sim {
            rng,
            network: t.network.clone(),
            workload: w,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            t0: Instant::now(),
            originator: Originator::new(ids[submitter].clone(), OriginatorConfig::default()),
            ids,
            index,
            peers,
            mesh,
            nodes,
            submitter,
            gossip_too_big: run_bytes as usize > daemon::MAX_GOSSIP_BYTES,
            run,
            received,
            by_key,
            jobs,
            work,
            file,
            run_bytes,
            set_bytes: 0,
            deliver_bytes,
            requests: HashMap::new(),
            next_request: 0,
            side_b,
            partitioned: false,
            down_since: vec![None; n],
            expiry,
            written_off: vec![false; n],
            expected,
            have_at: vec![None; n],
            acked_at: vec![None; n],
            result_at: HashMap::new(),
            unreachable: HashSet::new(),
            repeated: 0,
            conflicting: 0,
            messages: vec![0; n],
            payload: vec![0; n],
            overhead: vec![0; n],
            gossip_received: 0,
            gossip_first_receipts: 0,
            events: 0,
            job_index,
            queries: Queries::default(),
            query_job,
            wait_job,
            awaited_job,
            awaited: awaited_node(n),
            awaited_fingerprint,
            wait_for_bytes,
            wait_done_bytes,
            query_value_bytes,
            disruptions: 0,
            planned_kills: 0,
            partition_started: false,
            late_nodes: Vec::new(),
            missed_gossip: vec![false; n],
            last_join: None,
        };
        sim.plan_disruptions(&order);
        sim.schedule(SUBMIT_AT, Event::Submit);
        Ok(sim)
    }

    /// Kills, late joins and the partition of the scenario, from a shuffled list of the nodes
    /// other than the submitter.
    fn plan_disruptions(&mut self, others: &[usize]) {
        let w = self.workload.clone();
        let pick = |fraction: f64| crate::scenario::affected(others.len(), fraction);
        match w.scenario {
            Scenario::Churn => {
                // Kills spread over the time the run takes without disruption (saturating:
                // a run too long for the clock has its kills somewhere in it all the same).
                let span = micros(w.job_time)
                    .saturating_mul(w.jobs as u64)
                    .saturating_add(500_000)
                    .min(u64::MAX / 4);
                for &node in others.iter().take(pick(w.churn)) {
                    let at = SUBMIT_AT + self.rng.gen_range(0..span.max(1));
                    self.planned_kills += 1;
                    self.schedule(at, Event::Kill { node });
                    let back = at.saturating_add(micros(w.downtime));
                    self.schedule(back, Event::Restart { node });
                }
            }
            Scenario::LateJoin => {
                for &node in others.iter().take(pick(w.late)) {
                    self.late_nodes.push(node);
                    self.nodes[node].alive = false;
                    self.down_since[node] = Some(0);
                    let at = SUBMIT_AT + self.rng.gen_range(0..micros(w.late_within).max(1));
                    self.schedule(at, Event::Join { node });
                }
            }
            Scenario::Partition => {
                let start = SUBMIT_AT + micros(w.partition_at);
                self.schedule(start, Event::PartitionStart);
                self.schedule(start + micros(w.partition_for), Event::PartitionHeal);
            }
            _ => {}
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_micros(self.now)
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.schedule_sent(at, event, None);
    }

    /// Schedules the arrival of a message `from` sent that leaves its uplink at `left`.
    fn schedule_from(&mut self, at: Micros, event: Event, from: usize, left: Micros) {
        let sent = (left > self.now).then(|| Sent {
            from,
            epoch: self.nodes[from].epoch,
            left,
        });
        self.schedule_sent(at, event, sent);
    }

    fn schedule_sent(&mut self, at: Micros, event: Event, sent: Option<Sent>) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
            sent,
        });
    }

    /// Handles `next`, now due, unless it brings a message that never left its sender: that
    /// never arrives (a request or an answer fails, its stream closing with the connection;
    /// anything else is lost).
    fn arrive(&mut self, next: Scheduled) {
        if !self.never_left(next.sent) {
            self.handle(next.event);
            return;
        }
        if let Event::Request { id } | Event::Reply { id, .. } = next.event {
            self.answer_in(id, None);
        }
    }

    /// Whether the message `sent` never left its sender: the sender was killed before its last
    /// byte left the uplink (its queue is dropped, as its traffic counts it, see
    /// [`Sim::backlog`]).
    fn never_left(&self, sent: Option<Sent>) -> bool {
        sent.is_some_and(|s| {
            self.nodes[s.from]
                .killed_at
                .get(s.epoch as usize)
                .is_some_and(|killed| *killed < s.left)
        })
    }

    /// Runs the events up to `limit`, or until the last result and the [`Sim::drain`] after
    /// it: the times are those of the run, which is over at its last result, but the mesh
    /// still sends what the run set off (gossip heartbeats, late acknowledgements), which
    /// the traffic counts include. Disruptions planned after the run are not the run's:
    /// none starts in the drain. False if a signal asked it to stop (`crate::signals`),
    /// looked at every 65 536 events.
    fn run(&mut self, limit: Micros) -> bool {
        let mut drain_until = None;
        while let Some(next) = self.queue.pop() {
            if self.events.is_multiple_of(65_536) && crate::signals::interrupted() {
                return false;
            }
            if next.at > limit || drain_until.is_some_and(|end| next.at > end) {
                break;
            }
            self.now = next.at;
            if drain_until.is_some()
                && matches!(
                    next.event,
                    Event::Kill { .. } | Event::Join { .. } | Event::PartitionStart
                )
            {
                continue;
            }
            self.events += 1;
            self.arrive(next);
            if drain_until.is_none() && self.result_at.len() == self.expected.len() {
                drain_until = Some(self.now + self.drain());
            }
        }
        true
    }

    /// How long the mesh runs on after the last result for the traffic counts: the gossip
    /// of the last message ends `HISTORY_GOSSIP` heartbeats after it, and what is on its way
    /// arrives within a round trip.
    fn drain(&self) -> Micros {
        let heartbeats = (daemon::HISTORY_GOSSIP + 1) * micros(daemon::GOSSIP_HEARTBEAT);
        let one_way = match self.network.latency {
            Latency::Fixed(d) | Latency::Uniform(_, d) => micros(d),
        };
        heartbeats + 2 * one_way
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit => self.submit(),
            Event::Gossip {
                to,
                from,
                what,
                round,
            } => self.gossip_in(to, from, what, round),
            Event::IHave {
                to,
                from,
                what,
                round,
            } => {
                if self.nodes[to].alive && self.seen(to, what).is_none_or(|r| r < round) {
                    self.control(to, from, |to, from| Event::IWant {
                        to,
                        from,
                        what,
                        round,
                    });
                }
            }
            Event::IWant {
                to,
                from,
                what,
                round,
            } => {
                if self.nodes[to].alive && self.seen(to, what).is_some_and(|r| r >= round) {
                    self.gossip_out(to, from, what);
                }
            }
            Event::IDontWant {
                to,
                from,
                what,
                round,
            } => {
                if self.nodes[to].alive {
                    self.nodes[to].dont_want.push((from, what, round));
                }
            }
            Event::Heartbeat { node, epoch } => self.heartbeat(node, epoch),
            Event::Respond {
                id,
                answer,
                payload,
            } => {
                // A node that died before its commit never answers.
                if self
                    .requests
                    .get(&id)
                    .is_some_and(|p| self.nodes[p.to].alive)
                {
                    self.respond(id, answer, payload);
                } else {
                    self.answer_in(id, None);
                }
            }
            Event::SendAck { node, epoch } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].alive {
                    self.request(node, self.submitter, Body::Ack);
                }
            }
            Event::Restarted { node } => {
                if self.nodes[node].alive && !self.written_off[node] {
                    let back = originator::Input::NodeBack(self.ids[node].clone());
                    let actions = self.originator.handle(back, self.instant());
                    self.originator_actions(actions);
                }
            }
            Event::Retry {
                from,
                epoch,
                to,
                kind,
            } => {
                if self.nodes[from].epoch == epoch && self.nodes[from].alive {
                    let body = match kind {
                        Kind::QueryResult { bytes } => Body::QueryResult { bytes },
                        Kind::QueryTaken { values } => Body::QueryTaken { values },
                        Kind::WaitDone => Body::WaitDone,
                        _ => Body::QueryValue,
                    };
                    self.request(from, to, body);
                }
            }
            Event::Request { id } => self.request_in(id),
            Event::Reply { id, answer } => self.answer_in(id, Some(answer)),
            Event::Failed { id } => self.answer_in(id, None),
            Event::JobDone {
                node,
                epoch,
                job,
                ok,
            } => self.job_done(
                node,
                epoch,
                job,
                if ok { Done::Success } else { Done::Failed },
            ),
            Event::RunsTick { node, epoch } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].alive {
                    self.nodes[node].runs_tick_at = None;
                    self.runs_tick(node);
                }
            }
            Event::TransferTick { node, epoch } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].alive {
                    self.nodes[node].transfer_tick_at = None;
                    self.transfer_tick(node);
                }
            }
            Event::Kill { node } => {
                if self.nodes[node].alive {
                    self.disruptions += 1;
                }
                self.kill(node)
            }
            Event::Restart { node } => self.start(node),
            Event::Join { node } => {
                if !self.nodes[node].alive {
                    self.disruptions += 1;
                    self.last_join = Some(self.now);
                }
                self.start(node)
            }
            Event::PartitionStart => self.partition_start(),
            Event::PartitionHeal => self.partition_heal(),
            Event::Back { node } => self.back(node),
            Event::Suspect { node } => self.write_off_if_expired(node),
        }
    }

    /// The run goes to the originator (and the QUERY it waits for is opened).
    fn submit(&mut self) {
        if let Some(job) = self.query_job {
            let targets = self
                .ids
                .iter()
                .enumerate()
                .filter(|(i, _)| self.work[*i].contains(&job))
                .map(|(i, id)| query::Target {
                    node: id.clone(),
                    name: format!("node-{i}"),
                    reported: false,
                    written_off: false,
                })
                .collect();
            let job_id = self.job_id(job);
            let arg = Some(QUERY_ARG.to_string());
            self.queries.open(&job_id, arg, targets, self.instant());
        }
        let run = Run::clone(&self.run);
        let actions = self
            .originator
            .handle(originator::Input::Submit(run), self.instant());
        self.originator_actions(actions);
        self.runs_tick(self.submitter);
    }

    /// The mesh splits: every node on the other side of the submitter comes under suspicion.
    fn partition_start(&mut self) {
        self.disruptions += 1;
        self.partition_started = true;
        self.partitioned = true;
        let cut = self.side_b[self.submitter];
        for node in 0..self.ids.len() {
            if self.side_b[node] != cut && self.down_since[node].is_none() {
                self.suspect(node);
            }
        }
    }

    /// The split heals: every live node is heard again.
    fn partition_heal(&mut self) {
        self.partitioned = false;
        for node in 0..self.ids.len() {
            if self.nodes[node].alive {
                self.down_since[node] = None;
                self.heard_again(node);
            }
        }
    }

    /// A written-off node is heard again: its jobs and QUERY reopen and its held results go.
    fn back(&mut self, node: usize) {
        if self.written_off[node] && self.down_since[node].is_none() {
            self.written_off[node] = false;
            let back = originator::Input::NodeBack(self.ids[node].clone());
            let actions = self.originator.handle(back, self.instant());
            self.originator_actions(actions);
            let actions = self.queries.node_back(&self.ids[node]);
            self.query_actions(actions);
            // The node hears the submitter again at about the same time (the same
            // expiry on both sides of a split): its held results go at once.
            let to = self.ids[self.submitter].clone();
            let now = self.instant();
            let actions = self.nodes[node]
                .outbox
                .handle(outbox::Input::Back { to }, now);
            self.outbox_actions(node, actions);
        }
    }

    /// A suspected node unheard for the expiry is written off by the originator and QUERY.
    fn write_off_if_expired(&mut self, node: usize) {
        if let Some(since) = self.down_since[node]
            && self.now >= since + self.expiry
            && !self.written_off[node]
        {
            self.written_off[node] = true;
            let gone = originator::Input::NodeGone(self.ids[node].clone());
            let actions = self.originator.handle(gone, self.instant());
            self.originator_actions(actions);
            let now = self.instant();
            let actions = self.queries.node_gone(&self.ids[node], now);
            self.query_actions(actions);
        }
    }

    // ---- The network ----

    // ---- Gossip ----

    // ---- The submitter ----

    // ---- Targets ----

    // ---- QUERY ----

    // ---- JOB_WAIT ----

    // ---- Files ----

    // ---- Failures ----

    // ---- The report ----

    fn report(&self) -> Report {
        let since = |t: Micros| t.saturating_sub(SUBMIT_AT) as f64 / 1e6;
        // Traffic is what left the uplinks by now, not what still waits in them.
        let (mut payload, mut overhead) = (self.payload.clone(), self.overhead.clone());
        for node in 0..self.nodes.len() {
            if self.nodes[node].alive {
                let unsent = self.backlog(node);
                Sim::unsend((&mut payload[node], &mut overhead[node]), unsent);
            }
        }
        let targets: Vec<usize> = (0..self.ids.len())
            .filter(|&i| !self.work[i].is_empty())
            .collect();
        Report {
            tier: 1,
            scenario: self.workload.scenario.name().into(),
            nodes: self.ids.len(),
            seed: None,
            network: String::new(),
            targets: targets.len(),
            expected_results: self.expected.len(),
            have_job: targets
                .iter()
                .filter_map(|&i| self.have_at[i].map(since))
                .collect(),
            acked: targets
                .iter()
                .filter_map(|&i| self.acked_at[i].map(since))
                .collect(),
            results: self.result_at.values().map(|(t, _, _)| since(*t)).collect(),
            unreachable: self.unreachable.len(),
            failed: self
                .result_at
                .values()
                .filter(|(_, state, info)| *state == ResultState::Failed && info.is_empty())
                .count(),
            interrupted: self
                .result_at
                .values()
                .filter(|(_, _, info)| info.starts_with("interrupted:"))
                .count(),
            repeated_results: self.repeated,
            conflicting_results: self.conflicting,
            traffic_measured: true,
            messages: self.messages.clone(),
            payload_bytes: payload.clone(),
            overhead_bytes: overhead.clone(),
            gossip_received: self.gossip_received,
            gossip_first_receipts: self.gossip_first_receipts,
            submitter_upload: Some(payload[self.submitter] + overhead[self.submitter]),
            rss_per_node: None,
            wall: Duration::ZERO,
            events: self.events,
            disruptions: self.disruptions,
            last_join: self.last_join.map(since),
            notes: self.notes(),
        }
    }

    /// Disruptions of the scenario that did not happen as it meant them.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let w = &self.workload;
        if w.scenario == Scenario::Partition && !self.partition_started {
            notes.push(format!(
                "the partition never started: the run was over before --partition-at ({:?} \
                 after the submit); this row is a run without disruption",
                w.partition_at
            ));
        }
        // Split at the end with something missing (a far half that had reported everything
        // before the split is no matter).
        let missing = self.result_at.len() < self.expected.len() || !self.unreachable.is_empty();
        if w.scenario == Scenario::Partition && self.partitioned && missing {
            notes.push(format!(
                "the halves were still apart when the run ended (--partition-for {:?} from \
                 --partition-at {:?}): what the other half had not reported by then is missing \
                 for that, not lost",
                w.partition_for, w.partition_at
            ));
        }
        if w.scenario == Scenario::Churn && self.disruptions < self.planned_kills {
            notes.push(format!(
                "{} of the {} kills were planned after the run was over and did not happen",
                self.planned_kills - self.disruptions,
                self.planned_kills
            ));
        }
        let caught = self
            .late_nodes
            .iter()
            .filter(|&&node| !self.missed_gossip[node])
            .count();
        if caught > 0 && caught == self.late_nodes.len() {
            notes.push(format!(
                "none of the {caught} late nodes missed the run's gossip: they joined before \
                 it reached them (--late-within {:?} is shorter than a hop of the network); \
                 this row is a run without disruption",
                w.late_within
            ));
        }
        notes
    }
}

/// The first time after `now` at `phase + k × period`.
fn next_phase(now: Micros, phase: Micros, period: Micros) -> Micros {
    let period = period.max(1);
    let phase = phase % period;
    if now < phase {
        return phase;
    }
    let k = (now - phase) / period + 1;
    phase + k * period
}

/// Who is connected to whom, and the gossip mesh on top: every node dials random others until
/// it has `TARGET_PEERS` connections (counting those dialled to it), then grafts random
/// connected peers until its mesh has `MESH_N` (a peer already at `MESH_N_HIGH` refuses).
fn topology(n: usize, rng: &mut impl Rng) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let want = daemon::TARGET_PEERS.min(n - 1);
    let mut peers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    for &i in &order {
        let mut tries = 0;
        while peers[i].len() < want && tries < 50 * want {
            tries += 1;
            let j = rng.gen_range(0..n);
            if j != i && !peers[i].contains(&j) {
                peers[i].push(j);
                peers[j].push(i);
            }
        }
    }
    let mut mesh: Vec<Vec<usize>> = vec![Vec::new(); n];
    order.shuffle(rng);
    for &i in &order {
        let mut candidates = peers[i].clone();
        candidates.shuffle(rng);
        for j in candidates {
            if mesh[i].len() >= daemon::MESH_N {
                break;
            }
            if !mesh[i].contains(&j) && mesh[j].len() < daemon::MESH_N_HIGH {
                mesh[i].push(j);
                mesh[j].push(i);
            }
        }
    }
    (peers, mesh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_phase_is_strictly_after_now_on_the_grid() {
        assert_eq!(next_phase(0, 30, 100), 30);
        assert_eq!(next_phase(30, 30, 100), 130);
        assert_eq!(next_phase(131, 30, 100), 230);
    }

    #[test]
    fn the_duplicate_factor_is_copies_per_node_and_message() {
        let tier1 = Tier1 {
            workload: Workload::new(Scenario::Query, 4),
            network: NetworkModel::default(),
            seed: 1,
            limit: Duration::from_secs(10),
        };
        let mut sim = Sim::new(&tier1).unwrap();
        let s = sim.submitter;
        let others: Vec<usize> = (0..4).filter(|&i| i != s).collect();
        let (a, b, down) = (others[0], others[1], others[2]);
        // a: the run from two peers, then its announce again (round 1, a message of its own).
        sim.gossip_in(a, s, Flood::Run, 0);
        sim.gossip_in(a, b, Flood::Run, 0);
        sim.gossip_in(a, s, Flood::Run, 1);
        // b: the announce again first, then a late copy of the first round; the QUERY set twice.
        sim.gossip_in(b, s, Flood::Run, 1);
        sim.gossip_in(b, a, Flood::Run, 0);
        sim.gossip_in(b, s, Flood::QuerySet, 3);
        sim.gossip_in(b, a, Flood::QuerySet, 3);
        // A copy that reaches a node that is down is lost, not received.
        sim.kill(down);
        sim.gossip_in(down, a, Flood::Run, 0);
        let report = sim.report();
        assert_eq!(
            (report.gossip_received, report.gossip_first_receipts),
            (7, 5)
        );
        // 7 copies of 5 (node, message) pairs: a got rounds 0 and 1, b rounds 1 and 0 and
        // the set. Per node that got the run (2), it would be 3.5.
        let traffic = report.summary().traffic.unwrap();
        assert_eq!(traffic.duplicate_factor, 7.0 / 5.0);
    }

    /// A message still on its sender's uplink when the sender is killed never arrives; one
    /// that had left does.
    #[test]
    fn what_a_killed_node_never_sent_never_arrives() {
        let arrived = |killed_after: Duration| {
            let tier1 = Tier1 {
                workload: Workload::new(Scenario::Fanout, 4),
                network: NetworkModel {
                    uplink: crate::network::Bandwidth(Some(1_000_000)),
                    ..NetworkModel::default()
                },
                seed: 1,
                limit: Duration::from_secs(10),
            };
            let mut sim = Sim::new(&tier1).unwrap();
            let s = sim.submitter;
            let (a, b) = (s, (s + 1) % 4);
            // 125 000 bytes through 1 mbit/s: a second on the uplink.
            let gossip = Event::Gossip {
                to: b,
                from: a,
                what: Flood::Run,
                round: 0,
            };
            sim.datagram(a, b, 125_000, 0, gossip);
            sim.now = micros(killed_after);
            sim.kill(a);
            // Only the message is handled (not the run's own events).
            while let Some(next) = sim.queue.pop() {
                if matches!(next.event, Event::Gossip { to, from, .. } if to == b && from == a) {
                    sim.now = next.at;
                    sim.arrive(next);
                    break;
                }
            }
            sim.seen(b, Flood::Run).is_some()
        };
        assert!(!arrived(Duration::from_millis(500)));
        assert!(arrived(Duration::from_millis(1500)));
    }

    #[test]
    fn every_node_is_connected_and_meshed() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (peers, mesh) = topology(500, &mut rng);
        assert!(peers.iter().all(|p| p.len() >= daemon::TARGET_PEERS));
        assert!(
            mesh.iter()
                .all(|m| !m.is_empty() && m.len() <= daemon::MESH_N_HIGH)
        );
        for (i, m) in mesh.iter().enumerate() {
            for &j in m {
                assert!(mesh[j].contains(&i), "mesh links are symmetric");
                assert!(peers[i].contains(&j), "mesh links are connections");
            }
        }
    }
}
