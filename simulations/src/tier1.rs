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

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use coordination::{
    JobEntry, JobMessage, JobResult, NodeId, Parent, Run, TargetKey,
    acknowledgement::Acknowledgement,
    job_wait::{self, Registrations, Waits},
    originator::{self, Originator, OriginatorConfig},
    outbox::{self, Outbox},
    query::{self, Queries},
    transfer::{self, ChunkResult, Download},
};
use jobs::{
    Component, Fingerprint, JobSpec, ParseOutcome,
    executor::{Outcome, QueueKind, ResultState},
    spec::{CHUNK_SIZE, FileRef},
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    metrics::Report,
    network::{Micros, NetworkModel, Overhead, micros},
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
        sim.run(micros(self.limit) + SUBMIT_AT);
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
    /// Offset of its timers (ticks and heartbeats run at phase + k × period).
    phase: Micros,
    uplink_free: Micros,
    // Gossip.
    /// Per [`Flood`]: the newest version this node has, and when it got it.
    seen: [Option<(u32, Micros)>; 2],
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
    gossip_received: u64,
    gossip_nodes: u64,
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

fn cbor_len<T: serde::Serialize>(value: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail; a type that cannot encode counts as what was written.
    let _ = ciborium::into_writer(value, &mut c);
    c.0
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
            value: serde_json::json!("token-1234567"),
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
            gossip_nodes: 0,
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
                // Kills spread over the time the run takes without disruption.
                let span = micros(w.job_time) * w.jobs as u64 + 500_000;
                for &node in others.iter().take(pick(w.churn)) {
                    let at = SUBMIT_AT + self.rng.gen_range(0..span.max(1));
                    self.schedule(at, Event::Kill { node });
                    self.schedule(at + micros(w.downtime), Event::Restart { node });
                }
            }
            Scenario::LateJoin => {
                for &node in others.iter().take(pick(w.late)) {
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
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    fn run(&mut self, limit: Micros) {
        while let Some(next) = self.queue.pop() {
            if next.at > limit {
                break;
            }
            self.now = next.at;
            self.events += 1;
            self.handle(next.event);
            if self.result_at.len() == self.expected.len() {
                break;
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit => {
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
            Event::Kill { node } => self.kill(node),
            Event::Restart { node } | Event::Join { node } => self.start(node),
            Event::PartitionStart => {
                self.partitioned = true;
                let cut = self.side_b[self.submitter];
                for node in 0..self.ids.len() {
                    if self.side_b[node] != cut && self.down_since[node].is_none() {
                        self.suspect(node);
                    }
                }
            }
            Event::PartitionHeal => {
                self.partitioned = false;
                for node in 0..self.ids.len() {
                    if self.nodes[node].alive {
                        self.down_since[node] = None;
                        self.heard_again(node);
                    }
                }
            }
            Event::Back { node } => {
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
            Event::Suspect { node } => {
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
        }
    }

    // ---- The network ----

    /// Puts a message on `from`'s uplink; returns when its last byte has left.
    fn transmit(&mut self, from: usize, payload: u64, overhead: u64) -> Micros {
        self.messages[from] += 1;
        self.payload[from] += payload;
        self.overhead[from] += overhead;
        let start = self.now.max(self.nodes[from].uplink_free);
        let done = start + self.network.uplink.transmit(payload + overhead);
        self.nodes[from].uplink_free = done;
        done
    }

    fn crosses_partition(&self, a: usize, b: usize) -> bool {
        self.partitioned && self.side_b[a] != self.side_b[b]
    }

    /// Whether a message from `a` to `b` arrives now, and how late: `None` if it is lost (a
    /// partition, or loss under the `drop` model).
    fn fate(&mut self, a: usize, b: usize) -> Option<Micros> {
        if self.crosses_partition(a, b) {
            return None;
        }
        self.network.fate(&mut self.rng)
    }

    fn latency(&mut self) -> Micros {
        self.network.latency.sample(&mut self.rng)
    }

    /// A one-way message that arrives or does not.
    fn datagram(&mut self, from: usize, to: usize, payload: u64, overhead: u64, event: Event) {
        let left = self.transmit(from, payload, overhead);
        let Some(late) = self.fate(from, to) else {
            return;
        };
        let at = left + late + self.latency();
        self.schedule(at, event);
    }

    fn control(&mut self, from: usize, to: usize, make: impl Fn(usize, usize) -> Event) {
        self.datagram(
            from,
            to,
            0,
            Overhead::CONTROL + Overhead::MESSAGE_ID,
            make(to, from),
        );
    }

    fn request(&mut self, from: usize, to: usize, body: Body) {
        let (kind, payload, timeout) = match &body {
            Body::Deliver => (Kind::Deliver, self.deliver_bytes, daemon::CTL_TIMEOUT),
            Body::Ack => (
                Kind::Ack,
                cbor_len(&JobMessage::Ack {
                    run_id: self.run.run_id.clone(),
                    node: self.ids[from].clone(),
                }),
                daemon::CTL_TIMEOUT,
            ),
            Body::Results(results) => (
                Kind::Results,
                cbor_len(&JobMessage::Results(results.clone())),
                daemon::CTL_TIMEOUT,
            ),
            // A BlobRequest: the file's hash, the chunk's index and a token.
            Body::Chunk { index } => (Kind::Chunk { index: *index }, 72, daemon::BLOB_TIMEOUT),
            Body::QueryValue => (
                Kind::QueryValue,
                self.query_value_bytes,
                daemon::CTL_TIMEOUT,
            ),
            Body::QueryResult { bytes } => (
                Kind::QueryResult { bytes: *bytes },
                *bytes,
                daemon::CTL_TIMEOUT,
            ),
            Body::WaitFor => (Kind::WaitFor, self.wait_for_bytes, daemon::CTL_TIMEOUT),
            Body::WaitDone => (Kind::WaitDone, self.wait_done_bytes, daemon::CTL_TIMEOUT),
            Body::QueryTaken { values } => (
                Kind::QueryTaken { values: *values },
                cbor_len(&JobMessage::QueryTaken {
                    job_id: self.job_id(self.query_job.unwrap_or_default()),
                    node: self.ids[from].clone(),
                    values: *values as u64,
                }),
                daemon::CTL_TIMEOUT,
            ),
        };
        let id = self.next_request;
        self.next_request += 1;
        let timeout = micros(timeout);
        self.requests.insert(
            id,
            Pending {
                from,
                from_epoch: self.nodes[from].epoch,
                to,
                kind,
                body: Some(body),
                sent_at: self.now,
                timeout,
            },
        );
        let left = self.transmit(from, payload, Overhead::REQUEST);
        if !self.nodes[to].alive {
            // Nobody listening: the dial is refused after a round trip.
            let at = left + 2 * self.latency();
            self.schedule(at, Event::Failed { id });
        } else {
            match self.fate(from, to) {
                None => self.schedule(self.now + timeout, Event::Failed { id }),
                Some(late) => {
                    // A request opens a new stream and agrees on its protocol first
                    // (multistream-select waits for the answer): a round trip before the
                    // request itself crosses.
                    let negotiation = 2 * self.latency();
                    let at = left + late + negotiation + self.latency();
                    if at > self.now + timeout {
                        self.schedule(self.now + timeout, Event::Failed { id });
                    } else {
                        self.schedule(at, Event::Request { id });
                    }
                }
            }
        }
    }

    /// When what `node` just wrote is on disk: the end of its store's open group, or of one
    /// opened now (`node::store` gathers writes for a window, and syncs a group somebody waits
    /// for when it ends).
    fn committed_at(&mut self, node: usize) -> Micros {
        let n = &mut self.nodes[node];
        if n.store_group_ends <= self.now {
            n.store_group_ends = self.now + micros(daemon::STORE_GROUP_WINDOW);
        }
        n.store_group_ends
    }

    /// Answers `id` with Ok once `node`'s store has committed what the request wrote.
    fn respond_once_committed(&mut self, node: usize, id: u64) {
        let at = self.committed_at(node);
        self.schedule(
            at,
            Event::Respond {
                id,
                answer: Answer::Ok,
                payload: 3,
            },
        );
    }

    fn respond(&mut self, id: u64, answer: Answer, payload: u64) {
        let Some(p) = self.requests.get(&id) else {
            return;
        };
        let (from, to, give_up) = (p.to, p.from, p.sent_at + p.timeout);
        let left = self.transmit(from, payload, Overhead::RESPONSE);
        match self.fate(from, to) {
            None => self.schedule(give_up.max(self.now), Event::Failed { id }),
            Some(late) => {
                let at = left + late + self.latency();
                if at > give_up {
                    self.schedule(give_up.max(self.now), Event::Failed { id });
                } else {
                    self.schedule(at, Event::Reply { id, answer });
                }
            }
        }
    }

    fn request_in(&mut self, id: u64) {
        let Some(p) = self.requests.get_mut(&id) else {
            return;
        };
        let (to, from) = (p.to, p.from);
        let Some(body) = p.body.take() else {
            return;
        };
        if !self.nodes[to].alive {
            let at = self.now + self.latency();
            self.schedule(at, Event::Failed { id });
            return;
        }
        match body {
            Body::Deliver => {
                self.accept(to, false);
                self.respond_once_committed(to, id);
            }
            Body::Ack => {
                self.acked(from);
                self.respond(id, Answer::Ok, 3);
            }
            Body::Results(results) => {
                for r in results {
                    self.result_in(r);
                }
                self.respond_once_committed(to, id);
            }
            Body::Chunk { index } => self.serve(to, id, index),
            Body::QueryValue => {
                // Kept on disk before the answer, as the daemon does.
                self.query_value_in(from);
                self.respond_once_committed(to, id);
            }
            Body::QueryResult { .. } => {
                self.query_result_in(to);
                self.respond(id, Answer::Ok, 3);
            }
            Body::WaitFor => {
                self.register_at(to, from);
                self.respond(id, Answer::Ok, 3);
            }
            Body::WaitDone => {
                self.wait_done_at(to, from);
                self.respond(id, Answer::Ok, 3);
            }
            Body::QueryTaken { values } => {
                if let Some(job) = self.query_job {
                    let job_id = self.job_id(job);
                    self.queries.taken(&job_id, &self.ids[from], values);
                }
                self.respond(id, Answer::Ok, 3);
            }
        }
    }

    fn answer_in(&mut self, id: u64, answer: Option<Answer>) {
        let Some(p) = self.requests.remove(&id) else {
            return;
        };
        let node = p.from;
        if !self.nodes[node].alive || self.nodes[node].epoch != p.from_epoch {
            return;
        }
        match p.kind {
            Kind::Deliver => {
                if answer.is_some() {
                    self.acked(p.to);
                }
            }
            Kind::Ack => {
                if answer.is_some() {
                    self.nodes[node].ack.answered(SUBMITTER_START);
                }
            }
            Kind::Results => {
                let to = self.ids[self.submitter].clone();
                let input = outbox::Input::Sent {
                    to,
                    ok: answer.is_some(),
                };
                let now = self.instant();
                let actions = self.nodes[node].outbox.handle(input, now);
                self.outbox_actions(node, actions);
            }
            Kind::Chunk { index } => {
                let result = match answer {
                    Some(Answer::Chunk(r)) => r,
                    _ => ChunkResult::Unreachable,
                };
                if result == ChunkResult::Ok {
                    self.chunk_arrived(node, index);
                }
                let input = transfer::Input::Got {
                    index,
                    from: self.ids[p.to].clone(),
                    result,
                };
                self.download_step(node, input);
            }
            Kind::WaitFor => {
                // A registration not taken is sent again by the wait's own timer.
                if answer.is_some() {
                    let now = self.instant();
                    let wait_id = wait_id_of(node);
                    self.nodes[node].waits.taken(&wait_id, &self.ids[p.to], now);
                }
            }
            // Sent once, as the daemon does: a word lost costs one direct copy of the set.
            Kind::QueryTaken { .. } => {}
            kind @ (Kind::QueryValue | Kind::QueryResult { .. } | Kind::WaitDone) => {
                if answer.is_none() {
                    let epoch = self.nodes[node].epoch;
                    let event = Event::Retry {
                        from: node,
                        epoch,
                        to: p.to,
                        kind,
                    };
                    self.schedule(self.now + COORDINATION_RETRY, event);
                }
            }
        }
    }

    // ---- Gossip ----

    /// The newest version of `what` that `node` has.
    fn seen(&self, node: usize, what: Flood) -> Option<u32> {
        self.nodes[node].seen[what.index()].map(|(round, _)| round)
    }

    /// The size of `what` (for a set, the newest: a node passing on an older one is charged
    /// a little more than it sends).
    fn flood_bytes(&self, what: Flood) -> u64 {
        match what {
            Flood::Run => self.run_bytes,
            Flood::QuerySet => self.set_bytes,
        }
    }

    /// `from` sends the newest version of `what` it has to `to`.
    fn gossip_out(&mut self, from: usize, to: usize, what: Flood) {
        let Some(round) = self.seen(from, what) else {
            return;
        };
        let bytes = self.flood_bytes(what);
        self.datagram(
            from,
            to,
            bytes,
            Overhead::GOSSIP,
            Event::Gossip {
                to,
                from,
                what,
                round,
            },
        );
    }

    /// `node` publishes version `round` of `what`: flood publishing, to every connected peer.
    fn publish(&mut self, node: usize, what: Flood, round: u32) {
        self.nodes[node].seen[what.index()] = Some((round, self.now));
        for p in self.peers[node].clone() {
            self.gossip_out(node, p, what);
        }
        self.next_heartbeat(node);
    }

    fn gossip_in(&mut self, to: usize, from: usize, what: Flood, round: u32) {
        if !self.nodes[to].alive {
            return;
        }
        self.gossip_received += 1;
        // Gossip drops what it has seen: this version, or (for the model) an older one.
        if self.seen(to, what).is_some_and(|r| r >= round) {
            return;
        }
        if what == Flood::Run && self.seen(to, what).is_none() {
            self.gossip_nodes += 1;
        }
        self.nodes[to].seen[what.index()] = Some((round, self.now));
        let mesh = self.mesh[to].clone();
        if self.flood_bytes(what) > daemon::IDONTWANT_THRESHOLD as u64 {
            for &p in mesh.iter().filter(|&&p| p != from) {
                self.control(to, p, |to, from| Event::IDontWant {
                    to,
                    from,
                    what,
                    round,
                });
            }
        }
        for &p in &mesh {
            if p != from
                && p != self.submitter
                && !self.nodes[to].dont_want.contains(&(p, what, round))
            {
                self.gossip_out(to, p, what);
            }
        }
        self.next_heartbeat(to);
        match what {
            Flood::Run => self.accept(to, true),
            Flood::QuerySet => self.query_set_in(to, round as usize),
        }
    }

    fn next_heartbeat(&mut self, node: usize) {
        if self.nodes[node].heartbeat_at.is_some() {
            return;
        }
        let at = next_phase(
            self.now,
            self.nodes[node].phase,
            micros(daemon::GOSSIP_HEARTBEAT),
        );
        self.nodes[node].heartbeat_at = Some(at);
        let epoch = self.nodes[node].epoch;
        self.schedule(at, Event::Heartbeat { node, epoch });
    }

    /// IHAVE to some peers outside the mesh while the message is in the gossip window.
    fn heartbeat(&mut self, node: usize, epoch: u32) {
        if self.nodes[node].epoch != epoch || !self.nodes[node].alive {
            return;
        }
        self.nodes[node].heartbeat_at = None;
        let period = micros(daemon::GOSSIP_HEARTBEAT);
        let recent: Vec<(Flood, u32)> = Flood::ALL
            .into_iter()
            .filter_map(|what| {
                let (round, seen) = self.nodes[node].seen[what.index()]?;
                (self.now <= seen + daemon::HISTORY_GOSSIP * period).then_some((what, round))
            })
            .collect();
        if recent.is_empty() {
            return;
        }
        let mut others: Vec<usize> = self.peers[node]
            .iter()
            .copied()
            .filter(|p| !self.mesh[node].contains(p))
            .collect();
        let count = daemon::GOSSIP_LAZY
            .max((others.len() as f64 * daemon::GOSSIP_FACTOR).ceil() as usize)
            .min(others.len());
        others.shuffle(&mut self.rng);
        for &p in &others[..count] {
            for &(what, round) in &recent {
                self.control(node, p, |to, from| Event::IHave {
                    to,
                    from,
                    what,
                    round,
                });
            }
        }
        self.next_heartbeat(node);
    }

    // ---- The submitter ----

    fn originator_actions(&mut self, actions: Vec<originator::Action>) {
        let s = self.submitter;
        for action in actions {
            match action {
                originator::Action::Announce(run) => {
                    if self.gossip_too_big {
                        // As the daemon: too big to gossip, the first resend delivers directly.
                        continue;
                    }
                    if self.seen(s, Flood::Run).is_none() {
                        self.gossip_nodes += 1;
                    }
                    self.publish(s, Flood::Run, run.round);
                }
                originator::Action::Deliver { node, .. } => {
                    let to = self.index[&node];
                    self.request(s, to, Body::Deliver);
                }
                originator::Action::DeliverLocal(_) => {
                    self.acked(s);
                    self.accept(s, false);
                }
                originator::Action::Unreachable { node, job_ids, .. } => {
                    let n = self.index[&node];
                    for job in job_ids {
                        let key = (self.job_index[&job], n);
                        if !self.result_at.contains_key(&key) {
                            self.unreachable.insert(key);
                        }
                    }
                }
                // The submitter never restarts here, so never resumes a run.
                originator::Action::Finished { .. }
                | originator::Action::CheckAlive
                | originator::Action::Interrupted { .. } => {}
            }
        }
    }

    fn acked(&mut self, node: usize) {
        if self.acked_at[node].is_none() {
            self.acked_at[node] = Some(self.now);
        }
        if node != self.submitter {
            let input = originator::Input::Acked {
                run_id: self.run.run_id.clone(),
                node: self.ids[node].clone(),
            };
            let actions = self.originator.handle(input, self.instant());
            self.originator_actions(actions);
        }
    }

    /// A result reaches the submitter: recorded, and told to the tracker.
    fn result_in(&mut self, r: JobResult) {
        let (Some(&job), Some(&node)) = (
            self.job_index.get(&r.outcome.job_id),
            self.index.get(&r.node),
        ) else {
            return;
        };
        let key = (job, node);
        if Some(job) == self.query_job && r.outcome.state != ResultState::Success {
            let now = self.instant();
            let actions = self
                .queries
                .ended_without_value(&r.outcome.job_id, &r.node, now);
            self.query_actions(actions);
        }
        if self.expected.contains(&key) {
            match self.result_at.get(&key) {
                Some((_, state, _)) => {
                    self.repeated += 1;
                    if *state != r.outcome.state {
                        self.conflicting += 1;
                    }
                }
                None => {
                    self.result_at
                        .insert(key, (self.now, r.outcome.state, r.outcome.info.clone()));
                    self.unreachable.remove(&key);
                }
            }
        }
        if self.acked_at[node].is_none() {
            self.acked_at[node] = Some(self.now);
        }
        let actions = self.originator.handle(
            originator::Input::Result {
                run_id: r.run_id,
                job_id: r.outcome.job_id,
                node: r.node,
            },
            self.instant(),
        );
        self.originator_actions(actions);
    }

    // ---- Targets ----

    /// The run reaches `node` (by gossip when `gossiped`, else directly or locally).
    fn accept(&mut self, node: usize, gossiped: bool) {
        if self.work[node].is_empty() {
            return;
        }
        // As the daemon: a target whose acknowledgement the submitter answered stays silent
        // on its re-announces.
        let wanted = !self.nodes[node].accepted || self.nodes[node].ack.wanted(&self.received);
        if gossiped && node != self.submitter && wanted {
            let at = self.committed_at(node);
            let epoch = self.nodes[node].epoch;
            self.schedule(at, Event::SendAck { node, epoch });
        }
        if self.nodes[node].accepted {
            return;
        }
        self.nodes[node].accepted = true;
        if self.have_at[node].is_none() {
            self.have_at[node] = Some(self.now);
        }
        self.requeue(node);
    }

    /// Queues the jobs of the run this node has not finished, and starts the first.
    fn requeue(&mut self, node: usize) {
        let pending: VecDeque<usize> = self.work[node]
            .iter()
            .copied()
            .filter(|j| !self.nodes[node].finished.contains(j))
            .collect();
        self.nodes[node].queue = pending;
        self.start_next(node);
    }

    fn start_next(&mut self, node: usize) {
        if self.nodes[node].running.is_some() {
            return;
        }
        let Some(job) = self.nodes[node].queue.pop_front() else {
            return;
        };
        self.nodes[node].running = Some(job);
        let (p, j) = self.jobs[job];
        let entry = &self.run.parents[p].jobs[j];
        let wants_file = matches!(&entry.spec.component, Component::Add(t) | Component::Copy(t) if t.file.is_some());
        let has_file = self.nodes[node].chunks.iter().all(|&c| c);
        if wants_file && !has_file {
            self.nodes[node].waiting_job = Some(job);
            if self.nodes[node].download.is_none() {
                let file = self.file.clone().expect("a file job has a file");
                // Every simulated node knows every other (full membership).
                let sources = transfer::distribution_sources(
                    &self.received,
                    &self.received.parents[p],
                    entry,
                    &self.ids[node],
                    &file.hash,
                    |key| self.by_key.get(&key).cloned(),
                );
                let have = &self.nodes[node].chunks;
                let (mut download, mut actions) =
                    Download::new(file.chunks.len(), sources, self.instant());
                // Chunks already on disk (from before a restart) are not fetched again.
                for (index, _) in have.iter().enumerate().filter(|(_, h)| **h) {
                    actions.retain(
                        |a| !matches!(a, transfer::Action::Fetch { index: i, .. } if *i == index),
                    );
                    let from = self.ids[self.submitter].clone();
                    actions.extend(download.handle(
                        transfer::Input::Got {
                            index,
                            from,
                            result: ChunkResult::Ok,
                        },
                        self.instant(),
                    ));
                }
                self.nodes[node].download = Some(download);
                self.download_actions(node, actions);
            }
        } else {
            self.run_job(node, job, true);
        }
    }

    fn job_done(&mut self, node: usize, epoch: u32, job: usize, done: Done) {
        if self.nodes[node].epoch != epoch || !self.nodes[node].alive {
            return;
        }
        self.nodes[node].running = None;
        self.nodes[node].finished.insert(job);
        if Some(job) == self.awaited_job {
            let now = self.instant();
            let state = if done == Done::Success {
                "success"
            } else {
                "failed"
            };
            let actions = self.nodes[node].registrations.finished(
                &self.awaited_fingerprint,
                MODEL_RUN,
                state,
                now,
            );
            self.wait_actions(node, actions);
        }
        if Some(job) == self.wait_job {
            let wait_id = wait_id_of(node);
            self.nodes[node].waits.close(&wait_id);
            self.nodes[node].wait_running = None;
        }
        let (p, j) = self.jobs[job];
        let ms = (self.now / 1000).saturating_sub(micros(self.workload.job_time) / 1000);
        let result = JobResult {
            run_id: self.run.run_id.clone(),
            node: self.ids[node].clone(),
            outcome: Outcome {
                job_id: self.run.parents[p].jobs[j].job_id.clone(),
                state: match done {
                    Done::Success => ResultState::Success,
                    Done::Failed | Done::Interrupted => ResultState::Failed,
                },
                stdout: String::new(),
                stderr: String::new(),
                info: match done {
                    Done::Interrupted => INTERRUPTED.into(),
                    _ => String::new(),
                },
                execution_secs: self.workload.job_time.as_secs_f64(),
                started_unix_ms: ms,
                finished_unix_ms: self.now / 1000,
            },
        };
        if node == self.submitter {
            self.result_in(result);
        } else {
            self.nodes[node].undelivered.push(result.clone());
            let input = outbox::Input::Add {
                to: self.ids[self.submitter].clone(),
                result,
                more_coming: !self.nodes[node].queue.is_empty(),
            };
            let now = self.instant();
            let actions = self.nodes[node].outbox.handle(input, now);
            self.outbox_actions(node, actions);
        }
        self.start_next(node);
    }

    fn outbox_actions(&mut self, node: usize, actions: Vec<outbox::Action>) {
        for action in actions {
            match action {
                outbox::Action::Send { to, results } => {
                    let to = self.index[&to];
                    self.request(node, to, Body::Results(results));
                }
                outbox::Action::Delivered(results) => {
                    let done: HashSet<&str> =
                        results.iter().map(|r| r.outcome.job_id.as_str()).collect();
                    self.nodes[node]
                        .undelivered
                        .retain(|r| !done.contains(r.outcome.job_id.as_str()));
                }
            }
        }
        self.want_runs_tick(node);
    }

    fn want_runs_tick(&mut self, node: usize) {
        let busy = self.nodes[node].outbox.pending() > 0
            || !self.nodes[node].waits.is_empty()
            || (node == self.submitter && self.originator.open_runs() > 0);
        if busy && self.nodes[node].runs_tick_at.is_none() {
            let at = next_phase(self.now, self.nodes[node].phase, micros(daemon::RUNS_TICK));
            self.nodes[node].runs_tick_at = Some(at);
            let epoch = self.nodes[node].epoch;
            self.schedule(at, Event::RunsTick { node, epoch });
        }
    }

    fn runs_tick(&mut self, node: usize) {
        let now = self.instant();
        if node == self.submitter {
            let actions = self.originator.handle(originator::Input::Tick, now);
            self.originator_actions(actions);
            let actions = self.queries.tick(now);
            self.query_actions(actions);
        }
        let actions = self.nodes[node].outbox.handle(outbox::Input::Tick, now);
        self.outbox_actions(node, actions);
        let actions = self.nodes[node].waits.tick(now);
        self.wait_actions(node, actions);
        if !self.nodes[node].waits.is_empty() {
            self.want_runs_tick(node);
        }
    }

    // ---- QUERY ----

    fn job_id(&self, job: usize) -> String {
        let (p, j) = self.jobs[job];
        self.run.parents[p].jobs[j].job_id.clone()
    }

    /// `node`'s value reaches the submitter's collection.
    fn query_value_in(&mut self, node: usize) {
        let Some(job) = self.query_job else {
            return;
        };
        let job_id = self.job_id(job);
        let value = serde_json::json!(format!("token-{node}"));
        let now = self.instant();
        let actions = self
            .queries
            .value(&job_id, &self.ids[node], QUERY_ARG.into(), value, now)
            .unwrap_or_default();
        self.query_actions(actions);
    }

    /// Gossips or sends the sets the collection says are due (kept values are the store's
    /// business, modelled by the commit before the answer).
    fn query_actions(&mut self, actions: Vec<query::Action>) {
        let s = self.submitter;
        for action in actions {
            match action {
                query::Action::Spread {
                    job_id,
                    to,
                    aggregate,
                } => {
                    let values = query::values_in(&aggregate);
                    if to.contains(&self.ids[s]) {
                        self.query_result_in(s);
                        self.queries.taken(&job_id, &self.ids[s], values);
                    }
                    let gossip = coordination::Gossip::QuerySet {
                        job_id: job_id.clone(),
                        aggregate,
                        originator_start: SUBMITTER_START,
                    };
                    let bytes = cbor_len(&gossip);
                    if bytes as usize > daemon::MAX_GOSSIP_BYTES {
                        // As the daemon: too big to gossip, sent to each target directly.
                        let actions = self.queries.not_gossiped(&job_id);
                        self.query_actions(actions);
                        continue;
                    }
                    self.set_bytes = bytes;
                    self.publish(s, Flood::QuerySet, values as u32);
                }
                query::Action::Send {
                    job_id,
                    to,
                    aggregate,
                } => {
                    let bytes = cbor_len(&JobMessage::QueryResult { job_id, aggregate });
                    for target in to {
                        let target = self.index[&target];
                        if target == s {
                            self.query_result_in(target);
                        } else {
                            self.request(s, target, Body::QueryResult { bytes });
                        }
                    }
                }
                query::Action::Keep { .. } | query::Action::Forget { .. } => {}
            }
        }
        self.want_runs_tick(s);
    }

    /// A gossiped set with `values` values reaches `node`: taken, and the submitter told so,
    /// when the node's QUERY job has sent its value since it started (as the daemon, which
    /// takes a set only from the originator of a QUERY job that ran there, and one that holds
    /// its own value: the scenario kills nobody, so every set does).
    fn query_set_in(&mut self, node: usize, values: usize) {
        if !self.nodes[node].query_ran || node == self.submitter {
            return;
        }
        self.query_result_in(node);
        self.request(node, self.submitter, Body::QueryTaken { values });
    }

    /// The set reaches `node`: its QUERY job ends.
    fn query_result_in(&mut self, node: usize) {
        if let Some(job) = self.nodes[node].query_waiting.take() {
            self.waited_for(node, job);
        }
    }

    // ---- JOB_WAIT ----

    /// What `node`'s wait or registrations say: registrations go to the awaited node (or are
    /// taken here), notices to the waiter, and a wait told the job finished ends its job.
    fn wait_actions(&mut self, node: usize, actions: Vec<job_wait::Action>) {
        for action in actions {
            match action {
                job_wait::Action::Register { to, .. } => {
                    let to = self.index[&to];
                    if to == node {
                        let now = self.instant();
                        let me = self.ids[node].clone();
                        self.nodes[node].waits.taken(&wait_id_of(node), &me, now);
                        self.register_at(node, node);
                    } else {
                        self.request(node, to, Body::WaitFor);
                    }
                }
                job_wait::Action::Notify { waiter, .. } => {
                    let waiter = self.index[&waiter];
                    if waiter == node {
                        self.wait_done_at(node, node);
                    } else {
                        // As the daemon: once this node's writes for the job are on disk
                        // (its next store commit), then sent until answered.
                        let at = self.committed_at(node);
                        let epoch = self.nodes[node].epoch;
                        self.schedule(
                            at,
                            Event::Retry {
                                from: node,
                                epoch,
                                to: waiter,
                                kind: Kind::WaitDone,
                            },
                        );
                    }
                }
                job_wait::Action::Finished { .. } => {
                    if let Some(job) = self.nodes[node].wait_running {
                        self.waited_for(node, job);
                    }
                }
            }
        }
    }

    /// `job` on `node`, which waited for another node (QUERY, JOB_WAIT), succeeds now.
    fn waited_for(&mut self, node: usize, job: usize) {
        let epoch = self.nodes[node].epoch;
        let ok = true;
        self.schedule(
            self.now,
            Event::JobDone {
                node,
                epoch,
                job,
                ok,
            },
        );
    }

    /// `waiter`'s registration reaches the awaited node `at`: answered at once if the job
    /// finished there (its cache), else kept until it does.
    fn register_at(&mut self, at: usize, waiter: usize) {
        let finished = self
            .awaited_job
            .is_some_and(|job| self.nodes[at].finished.contains(&job));
        let now = self.instant();
        let fingerprint = self.awaited_fingerprint.clone();
        let actions = self.nodes[at].registrations.register(
            &wait_id_of(waiter),
            &fingerprint,
            Some(MODEL_RUN),
            &self.ids[waiter],
            finished.then_some("success"),
            now,
        );
        self.wait_actions(at, actions);
    }

    /// The awaited node `from` tells `waiter` the job finished there.
    fn wait_done_at(&mut self, waiter: usize, from: usize) {
        let actions =
            self.nodes[waiter]
                .waits
                .done(&wait_id_of(waiter), &self.ids[from], "success".into());
        self.wait_actions(waiter, actions);
    }

    // ---- Files ----

    fn serve(&mut self, node: usize, id: u64, index: usize) {
        if self.nodes[node].chunks.get(index).copied().unwrap_or(false) {
            let bytes = self.chunk_len(index) + 16;
            self.respond(id, Answer::Chunk(ChunkResult::Ok), bytes);
        } else if self.nodes[node].download.is_some() {
            let deadline = self.now + micros(daemon::PARK_FOR);
            self.nodes[node].parked.push(Parked {
                id,
                index,
                deadline,
            });
            self.want_transfer_tick(node);
        } else {
            self.respond(id, Answer::Chunk(ChunkResult::Unknown), 3);
        }
    }

    fn chunk_len(&self, index: usize) -> u64 {
        let size = self.file.as_ref().map_or(0, |f| f.size);
        let start = index as u64 * CHUNK_SIZE;
        size.saturating_sub(start).min(CHUNK_SIZE)
    }

    fn chunk_arrived(&mut self, node: usize, index: usize) {
        if let Some(c) = self.nodes[node].chunks.get_mut(index) {
            *c = true;
        }
        let parked = std::mem::take(&mut self.nodes[node].parked);
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) =
            parked.into_iter().partition(|p| p.index == index);
        self.nodes[node].parked = waiting;
        let bytes = self.chunk_len(index) + 16;
        for p in ready {
            self.respond(p.id, Answer::Chunk(ChunkResult::Ok), bytes);
        }
    }

    fn download_step(&mut self, node: usize, input: transfer::Input) {
        let now = self.instant();
        let Some(d) = self.nodes[node].download.as_mut() else {
            return;
        };
        let actions = d.handle(input, now);
        self.download_actions(node, actions);
    }

    fn download_actions(&mut self, node: usize, actions: Vec<transfer::Action>) {
        for action in actions {
            match action {
                transfer::Action::Fetch { index, from } => {
                    let to = self.index[&from];
                    self.request(node, to, Body::Chunk { index });
                }
                // The daemon only logs it; the download goes on asking.
                transfer::Action::Stalled(_) => {}
                transfer::Action::Done | transfer::Action::Failed(_) => {
                    let ok = matches!(action, transfer::Action::Done);
                    self.nodes[node].download = None;
                    // Nobody will answer what waits here now: the file is whole or abandoned.
                    for p in std::mem::take(&mut self.nodes[node].parked) {
                        let answer = if ok {
                            ChunkResult::Ok
                        } else {
                            ChunkResult::Unknown
                        };
                        let bytes = if ok { self.chunk_len(p.index) + 16 } else { 3 };
                        self.respond(p.id, Answer::Chunk(answer), bytes);
                    }
                    if let Some(job) = self.nodes[node].waiting_job.take() {
                        self.run_job(node, job, ok);
                    }
                }
            }
        }
        self.want_transfer_tick(node);
    }

    /// The executor runs `job` on `node` for `--job-time`; it ends as `ok` says. A QUERY job
    /// sends the node's value and waits for the set.
    fn run_job(&mut self, node: usize, job: usize, ok: bool) {
        if Some(job) == self.wait_job {
            self.nodes[node].wait_running = Some(job);
            let now = self.instant();
            let awaited = self.ids[self.awaited].clone();
            let fingerprint = self.awaited_fingerprint.clone();
            let actions = self.nodes[node].waits.open(
                &wait_id_of(node),
                &fingerprint,
                vec![(awaited, Some(MODEL_RUN.into()))],
                now,
            );
            self.wait_actions(node, actions);
            self.want_runs_tick(node);
            return;
        }
        if Some(job) == self.query_job {
            self.nodes[node].query_waiting = Some(job);
            self.nodes[node].query_ran = true;
            if node == self.submitter {
                self.query_value_in(node);
            } else {
                self.request(node, self.submitter, Body::QueryValue);
            }
            return;
        }
        let epoch = self.nodes[node].epoch;
        let at = self.now + micros(self.workload.job_time);
        self.schedule(
            at,
            Event::JobDone {
                node,
                epoch,
                job,
                ok,
            },
        );
    }

    fn want_transfer_tick(&mut self, node: usize) {
        let busy = self.nodes[node].download.is_some() || !self.nodes[node].parked.is_empty();
        if busy && self.nodes[node].transfer_tick_at.is_none() {
            let period = micros(daemon::TRANSFER_TICK);
            let at = next_phase(self.now, self.nodes[node].phase % period, period);
            self.nodes[node].transfer_tick_at = Some(at);
            let epoch = self.nodes[node].epoch;
            self.schedule(at, Event::TransferTick { node, epoch });
        }
    }

    fn transfer_tick(&mut self, node: usize) {
        let now = self.now;
        let parked = std::mem::take(&mut self.nodes[node].parked);
        let (expired, waiting): (Vec<Parked>, Vec<Parked>) =
            parked.into_iter().partition(|p| p.deadline <= now);
        self.nodes[node].parked = waiting;
        for p in expired {
            self.respond(p.id, Answer::Chunk(ChunkResult::NotYet), 3);
        }
        self.download_step(node, transfer::Input::Tick);
        self.want_transfer_tick(node);
    }

    // ---- Failures ----

    /// A node the submitter had written off is reachable again: its next presence heartbeat
    /// (one heartbeat interval of this mesh size) tells the submitter.
    fn heard_again(&mut self, node: usize) {
        if self.written_off[node] {
            let at = self.now + self.expiry / u64::from(daemon::EXPIRY_INTERVALS);
            self.schedule(at, Event::Back { node });
        }
    }

    fn suspect(&mut self, node: usize) {
        self.down_since[node] = Some(self.now);
        let at = self.now + self.expiry;
        self.schedule(at, Event::Suspect { node });
    }

    fn kill(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if !n.alive {
            return;
        }
        n.alive = false;
        n.epoch += 1;
        n.queue.clear();
        n.ack = Acknowledgement::default();
        n.running = None;
        n.outbox = Outbox::new();
        n.download = None;
        n.waiting_job = None;
        n.query_waiting = None;
        n.query_ran = false;
        n.waits = Waits::default();
        n.wait_running = None;
        n.registrations = Registrations::default();
        n.parked.clear();
        n.dont_want.clear();
        n.heartbeat_at = None;
        n.runs_tick_at = None;
        n.transfer_tick_at = None;
        n.store_group_ends = 0;
        n.uplink_free = self.now;
        if self.down_since[node].is_none() {
            self.suspect(node);
        }
    }

    /// A node starts (a restart, or a late join): what it kept on disk is picked up again.
    fn start(&mut self, node: usize) {
        if self.nodes[node].alive {
            return;
        }
        self.nodes[node].alive = true;
        // Waits on it register again (it forgot them), as the daemon does on seeing it back.
        if self.wait_job.is_some() {
            let now = self.instant();
            let back = self.ids[node].clone();
            for waiter in 0..self.nodes.len() {
                if waiter != node
                    && self.nodes[waiter].alive
                    && !self.nodes[waiter].waits.is_empty()
                {
                    let actions = self.nodes[waiter].waits.node_back(&back, now);
                    self.wait_actions(waiter, actions);
                }
            }
        }
        self.nodes[node].uplink_free = self.now;
        if !self.crosses_partition(node, self.submitter) {
            self.down_since[node] = None;
            self.heard_again(node);
            if !self.written_off[node] && node != self.submitter {
                let at = self.now + self.latency();
                self.schedule(at, Event::Restarted { node });
            }
        }
        let now = self.instant();
        for result in self.nodes[node].undelivered.clone() {
            let input = outbox::Input::Add {
                to: self.ids[self.submitter].clone(),
                result,
                more_coming: false,
            };
            let actions = self.nodes[node].outbox.handle(input, now);
            self.outbox_actions(node, actions);
        }
        if self.nodes[node].accepted {
            let pending: Vec<usize> = self.work[node]
                .iter()
                .copied()
                .filter(|j| !self.nodes[node].finished.contains(j))
                .collect();
            let epoch = self.nodes[node].epoch;
            for job in pending {
                self.nodes[node].running = Some(job);
                self.job_done(node, epoch, job, Done::Interrupted);
            }
        }
    }

    // ---- The report ----

    fn report(&self) -> Report {
        let since = |t: Micros| t.saturating_sub(SUBMIT_AT) as f64 / 1e6;
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
            payload_bytes: self.payload.clone(),
            overhead_bytes: self.overhead.clone(),
            gossip_received: self.gossip_received,
            gossip_nodes: self.gossip_nodes,
            submitter_upload: self.payload[self.submitter] + self.overhead[self.submitter],
            rss_per_node: None,
            wall: Duration::ZERO,
            events: self.events,
        }
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
