//! Runs: the job side of a node, both as the originator of the runs it submits and as a target
//! of the runs it receives.
//!
//! One actor task owns the state: the originator's run tracker and the result outbox (both
//! sans-IO machines from `coordination`), the open job records, the runs accepted as a target,
//! and the `--poll`/`--stream` watchers. It never waits on the network, the executor or a
//! client: those calls run in spawned tasks that report back through the actor's inbox, so no
//! cycle of full channels can stall it.
//!
//! This file holds the actor's state and its dispatch of inputs and messages. Beside it:
//! `submitted` (the originator side: the run tracker's actions, results taken into records),
//! `target` (taking runs in, the executor, the outbox), `restore` (taking up after a
//! restart), `housekeeping` (the tick and the sweeps), `coordinate` (QUERY and JOB_WAIT
//! across nodes), `watchers` (clients following jobs, and live output) and `notices` (a
//! finished job told once it is on disk).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use coordination::{
    Gossip, JobMessage, JobReply, NodeId, Run, TargetKey,
    acknowledgement::Acknowledgement,
    originator::{self, Originator, OriginatorConfig},
    outbox::{self, Outbox},
};
use jobs::{
    cache::Cache,
    executor::{ExecEvent, Executor, Work},
    processes::ProcessLog,
};
use mesh::{MeshHandle, PeerId, ReplyToken, wire};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

mod coordinate;
mod housekeeping;
mod notices;
mod refusals;
mod restore;
mod submitted;
mod target;
mod watchers;

pub use coordinate::NodeCoordinator;
use watchers::{EarlyOutput, OutputQueue, Watcher};
pub use watchers::{WatchReceiver, WatchSender, watch_channel};

use crate::{
    control::WatchEvent,
    records::JobRecord,
    store::{RunOutcomes, Store},
};

/// A job a restart of its node cut short. A job still queued is run after the restart,
/// unless the node cannot tell whether it had started (after a reboot of its machine, or a
/// submitter's own job whose acceptance had not reached the disk).
pub const INTERRUPTED: &str = "interrupted: the node stopped before it recorded the job's result \
                               (the job had started or been dropped from its queue, or the node \
                               could not tell, as after a reboot; it is not run again, so that \
                               no job ever runs twice)";

/// How often finished jobs leave the log of starts. Asking the store when their results are
/// on disk makes it sync a group: every few seconds, not at every tick.
const SETTLE_EVERY: Duration = Duration::from_secs(5);

/// The refusal of a message this node took in but could not store (a failing disk): its
/// sender keeps it and sends it again.
pub(crate) const NOT_STORED: &str = "this node could not store it; send it again";

/// How often a running node says so in its log of starts (for the time it was down).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Largest job message sent (a run with many jobs, a batch of results with their output).
const MAX_JOB_MESSAGE: usize = wire::MAX_JOB_DATA;

/// Largest job message read: whatever a control request can hold (an earlier build took
/// messages a little larger than [`MAX_JOB_MESSAGE`] to fit; those are still read).
const MAX_JOB_MESSAGE_READ: usize = wire::MAX_CTL_BYTES;
/// How often the actor advances its timers (resends, retries).
pub const TICK: Duration = Duration::from_millis(100);
/// How often it ticks with nothing in progress (no open run, result, wait, watcher or queued
/// job): only housekeeping is left, and a thousand idle nodes in one simulation add up.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How often accepted runs past [`REMEMBER_RUNS`] are looked for (each look scans the outbox
/// for the older ones).
const ACCEPTED_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Depth of the actor's inbox.
const INBOX_DEPTH: usize = 4096;

/// Inputs of the actor.
pub enum Input {
    Submit {
        run: Run,
        records: Vec<JobRecord>,
        /// Told once the submission is on disk, or why it could not be stored.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// A submission's commit is over (`stored`: it is on disk): announce it, or give it up.
    SubmissionStored {
        run: Run,
        stored: bool,
        done: oneshot::Sender<Result<(), String>>,
    },
    Watch {
        job_ids: Vec<String>,
        output: bool,
        events: WatchSender,
        /// The store was flushed after these jobs were last seen in memory.
        flushed: bool,
    },
    Announce {
        source: PeerId,
        data: Vec<u8>,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        token: ReplyToken,
    },
    Exec(ExecEvent),
    Acked {
        run_id: String,
        node: NodeId,
    },
    /// Target side: the originator's start `start` answered this node's acknowledgement.
    AckAnswered {
        run_id: String,
        start: u64,
    },
    OutboxSent {
        to: NodeId,
        ok: bool,
    },
    /// The batch of results in flight to `to` was taken but for those of `runs`, of which it
    /// has no trace ([`JobReply::UnknownRuns`]).
    OutboxUnknown {
        to: NodeId,
        runs: Vec<String>,
    },
    OutputSent {
        to: NodeId,
    },
    /// A member went silent (expired): its jobs are written off.
    MemberGone(PeerId),
    /// A member said goodbye: its jobs are written off if it is not back within
    /// [`RunsParts::left_grace`] (a restart).
    MemberLeft(PeerId),
    /// A member is alive (new, or back after it expired or left).
    MemberBack(PeerId),
    /// The acceptance of `run_id` is on disk (`stored`), or could not be stored.
    AcceptStored {
        run_id: String,
        stored: bool,
    },
    /// The members alive now, as the run tracker asked with its check of number `check`.
    Alive {
        check: u64,
        alive: Vec<PeerId>,
    },
    /// The commit asked for records closed lately (see `Actor::closing`) is over.
    ClosingStored {
        generation: u64,
    },
    /// The commit a batch of notices to watchers waited for is over (`stored`: on disk).
    NoticesStored {
        batch: u64,
        stored: bool,
    },
    Records {
        reply: oneshot::Sender<Vec<JobRecord>>,
    },
    /// Which of `among` (peer ids) still owe results of these jobs, of those not finished.
    Owing {
        job_ids: Arc<HashSet<String>>,
        among: HashSet<String>,
        reply: oneshot::Sender<HashSet<String>>,
    },
    /// The targets (names, each once, in the order the jobs name them) that still owe
    /// results of these jobs: at most `named` of them, and how many in all.
    Awaiting {
        job_ids: Arc<HashSet<String>>,
        named: usize,
        reply: oneshot::Sender<(Vec<String>, usize)>,
    },
    /// The results this node holds for other submitters (`status`).
    Owed {
        reply: oneshot::Sender<Vec<outbox::Owed>>,
    },
    /// Whether results are on their way to originators that take them (see
    /// `Outbox::delivering`): a stopping node waits for them a moment.
    Delivering {
        reply: oneshot::Sender<bool>,
    },
    /// Forget every record (the store is purged by the caller).
    Purge {
        done: oneshot::Sender<()>,
    },
    /// A QUERY job here has read its value (`reply`: wait for the aggregate).
    QueryLocal {
        job_id: String,
        name: String,
        value: serde_json::Value,
        reply: Option<oneshot::Sender<Result<Option<serde_json::Value>, String>>>,
    },
    /// The QUERY job `job_id` here timed out waiting for its set: where the set stands.
    QueryWaiting {
        job_id: String,
        reply: oneshot::Sender<coordinate::QueryStand>,
    },
    /// The JOB_WAIT job `job_id` here starts waiting on `peers`.
    JobWait {
        job_id: String,
        fingerprint: String,
        peers: Vec<(NodeId, String)>,
        updates: mpsc::Sender<(String, String)>,
    },
    /// `node` answered the registration of a JOB_WAIT (`Err`: why it did not take it).
    WaitRegistered {
        wait_id: String,
        node: NodeId,
        answer: Result<(), String>,
    },
    /// An ADD/COPY job here needs its file: where may it be fetched from?
    BlobSources {
        job_id: String,
        reply: oneshot::Sender<coordination::transfer::Sources>,
    },
    /// This node fetched a file for a job: tell the job's originator it holds it now.
    BlobFetched {
        job_id: String,
        hash: jobs::Fingerprint,
    },
    /// What this node holds for `hash` is not that file: drop it.
    BlobDamaged(jobs::Fingerprint),
}

/// The handle to the runs actor.
#[derive(Clone)]
pub struct Runs {
    inbox: mpsc::Sender<Input>,
}

/// The actor's inbox before the actor starts (the executor needs the handle first).
pub struct RunsInbox(mpsc::Receiver<Input>);

/// What the runs actor works with.
pub struct RunsParts {
    pub local_name: String,
    pub mesh: MeshHandle,
    pub store: Store,
    pub executor: Executor,
    /// The executor's events.
    pub exec_events: mpsc::Receiver<ExecEvent>,
    pub cache: Arc<Cache>,
    pub blobs: Arc<crate::blobs::BlobStore>,
    /// Blobs unused for this long are removed (`None`: kept forever).
    pub blob_retention: Option<Duration>,
    /// Job records finished longer ago than this are forgotten (`None`: kept until purged).
    pub record_retention: Option<Duration>,
    /// Submitters whose runs this node takes, besides its own; empty: any member's.
    pub allow_submitters: Vec<PeerId>,
    /// The log of the jobs' starts and process groups: after a restart, jobs of accepted runs
    /// pending and not started before are queued again (`None`: all pending jobs are
    /// reported interrupted).
    pub processes: Option<Arc<ProcessLog>>,
    /// How long a target that said goodbye has to come back before its jobs are written off
    /// (see [`OriginatorConfig::left_grace`]).
    pub left_grace: Duration,
}

impl Runs {
    /// A handle and the inbox to start the actor with.
    pub fn channel() -> (Runs, RunsInbox) {
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        (Runs { inbox: tx }, RunsInbox(rx))
    }

    /// Whether the actor has stopped (the node is shutting down).
    pub fn is_stopped(&self) -> bool {
        self.inbox.is_closed()
    }

    /// What the executor uses for QUERY and JOB_WAIT.
    pub fn coordinator(
        &self,
        mesh: MeshHandle,
        transfers: crate::transfers::Transfers,
    ) -> Arc<dyn jobs::components::Coordinator> {
        Arc::new(NodeCoordinator {
            inbox: self.inbox.clone(),
            mesh,
            transfers,
        })
    }

    /// Starts the actor; the handles stop it (a crash, in tests and simulations).
    pub fn start(&self, inbox: RunsInbox, parts: RunsParts) -> Vec<tokio::task::JoinHandle<()>> {
        let RunsParts {
            local_name,
            mesh,
            store,
            executor,
            exec_events,
            cache,
            blobs,
            blob_retention,
            record_retention,
            allow_submitters,
            processes,
            left_grace,
        } = parts;
        let (tx, rx) = (self.inbox.clone(), inbox.0);
        let local = NodeId(mesh.local_peer_id().to_string());
        let mut actor = Actor {
            originator: Originator::new(
                local.clone(),
                OriginatorConfig {
                    left_grace,
                    ..OriginatorConfig::default()
                },
            ),
            members: MembersByKey::with(local.clone()),
            local,
            local_name,
            mesh,
            store,
            executor,
            cache,
            cross: coordinate::CrossNode::default(),
            // Random, never 0 (0 on the wire: not said).
            start: uuid::Uuid::new_v4().as_u64_pair().0.max(1),
            blobs,
            job_files: HashMap::new(),
            blob_retention,
            allow_submitters: allow_submitters
                .iter()
                .map(|p| NodeId(p.to_string()))
                .collect(),
            refusals: Default::default(),
            next_blob_sweep: Instant::now(),
            next_accepted_sweep: Instant::now(),
            record_retention,
            next_record_sweep: Instant::now(),
            sweeping_records: Arc::default(),
            holders: HashMap::new(),
            corrupt_reported: HashMap::new(),
            corrupt_checking: Arc::default(),
            job_fingerprints: HashMap::new(),
            inbox: tx.clone(),
            outbox: Outbox::new(),
            records: HashMap::new(),
            closing: HashMap::new(),
            closing_next: 0,
            closing_asked: false,
            purge_barrier: None,
            late_said: HashSet::new(),
            unknown_said: HashSet::new(),
            open_runs: HashMap::new(),
            watchers: Vec::new(),
            early_output: HashMap::new(),
            notices: notices::Notices::default(),
            accepted: HashMap::new(),
            job_runs: HashMap::new(),
            accepted_not_stored: VecDeque::new(),
            waiting_for_executor: VecDeque::new(),
            outputs: HashMap::new(),
            output_seq: HashMap::new(),
            processes,
            unsettled: Vec::new(),
            next_accept_seq: 1,
            next_submission: 1,
            run_born: HashMap::new(),
            last_touch: Instant::now(),
            last_settle: Instant::now(),
        };
        actor.restore();
        vec![
            tokio::spawn(forward_exec_events(exec_events, tx.clone())),
            tokio::spawn(actor.run(rx)),
        ]
    }

    pub async fn send(&self, input: Input) {
        // Err: the actor is gone, which only happens while the node shuts down.
        let _ = self.inbox.send(input).await;
    }

    /// Whether results are on their way to originators that take them (false once the
    /// actor is gone).
    pub async fn delivering(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Delivering { reply }).await;
        answer.await.unwrap_or(false)
    }
}

async fn forward_exec_events(mut events: mpsc::Receiver<ExecEvent>, inbox: mpsc::Sender<Input>) {
    while let Some(e) = events.recv().await {
        if inbox.send(Input::Exec(e)).await.is_err() {
            return;
        }
    }
}

/// A run this node accepted as a target. Kept after its jobs finish (to recognise resends)
/// for [`REMEMBER_RUNS`].
struct AcceptedRun {
    originator: NodeId,
    pending: HashSet<String>,
    accepted_unix_ms: u64,
    /// When this node took the run in, or restored it after a restart, on the monotonic
    /// clock: a run is forgotten only once both clocks say [`REMEMBER_RUNS`] have passed (a
    /// wall clock stepped forward a day must not make it forget a run a resend would then
    /// run again).
    since: Instant,
    /// Whether a copy of the run calls for an acknowledgement. In memory only: after a
    /// restart here, the next copy is acknowledged once more.
    ack: Acknowledgement,
    /// How the run's jobs ended here, by fingerprint (the first to end, if several share one;
    /// `true`: not failed), for JOB_WAITs of the run itself. Kept on disk as they come
    /// (`run-outcomes`), and restored with the run: a wait asking after a restart, or after
    /// CACHEEVICT, is answered by them.
    outcomes: RunOutcomes,
    /// A run refused here: its jobs were answered refused, none ran. The number is the jobs
    /// of it counted against its submitter's [`refusals::RefusalBudget`] (given back when the
    /// run is forgotten). In memory only: after a restart, a refused run counts as taken (a
    /// resend is answered as for any run remembered, its jobs done).
    refused: Option<usize>,
}

impl AcceptedRun {
    /// A run taken in (or restored) now, with `pending` jobs, accepted at `accepted_unix_ms`.
    fn new(originator: NodeId, pending: HashSet<String>, accepted_unix_ms: u64) -> AcceptedRun {
        AcceptedRun {
            originator,
            pending,
            accepted_unix_ms,
            since: Instant::now(),
            ack: Acknowledgement::default(),
            outcomes: Vec::new(),
            refused: None,
        }
    }

    /// Whether the run may be forgotten at `now` (wall clock `now_unix_ms`) as far as its age
    /// goes: taken in [`REMEMBER_RUNS`] ago by the wall clock and by the monotonic clock
    /// (for a run it restored: by the boot clock from its acceptance if in this boot, else
    /// since the node's start), with no job of it pending.
    fn old_enough_to_forget(&self, now_unix_ms: u64, now: Instant) -> bool {
        self.pending.is_empty()
            && now_unix_ms.saturating_sub(self.accepted_unix_ms) >= REMEMBER_RUNS.as_millis() as u64
            && now.saturating_duration_since(self.since) >= REMEMBER_RUNS
    }
}

/// How long a target remembers a finished run, so that a late resend does not run it again.
const REMEMBER_RUNS: Duration = Duration::from_secs(24 * 3600);
/// A run submitted this long ago (`Run::age_ms`, its originator's measure) that a target
/// does not remember is not run there: it may have run and been forgotten ([`REMEMBER_RUNS`]
/// counts from when the target took it, never earlier than its submission; the hour spare
/// covers the copy's time in transit and clocks that run at slightly different rates).
const TOO_OLD_TO_RUN: Duration = Duration::from_secs(23 * 3600);

/// Why a target does not take a run.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Its submitter is not one this node takes jobs from (`--allow-submitter`).
    Submitter,
    /// Submitted longer ago than [`TOO_OLD_TO_RUN`].
    TooOld,
}

struct Actor {
    local: NodeId,
    /// This start of the daemon, as its runs' copies name it ([`Run::originator_start`]).
    start: u64,
    local_name: String,
    mesh: MeshHandle,
    store: Store,
    executor: Executor,
    cache: Arc<Cache>,
    inbox: mpsc::Sender<Input>,
    /// QUERY and JOB_WAIT state.
    cross: coordinate::CrossNode,
    /// Target side: job id → fingerprint, for JOB_WAIT notifications.
    job_fingerprints: HashMap<String, jobs::Fingerprint>,
    blobs: Arc<crate::blobs::BlobStore>,
    /// Every node seen alive, by target key: runs name their targets by key.
    members: MembersByKey,
    /// Target side: ADD/COPY jobs not finished here, by job id.
    job_files: HashMap<String, JobFile>,
    blob_retention: Option<Duration>,
    /// Submitters whose runs this node takes, besides its own; empty: any member's.
    allow_submitters: HashSet<NodeId>,
    /// How many runs each submitter got refused lately: past a budget, no more are stored.
    refusals: refusals::RefusalBudget,
    next_blob_sweep: Instant,
    /// When [`Actor::forget_accepted_runs`] runs next.
    next_accepted_sweep: Instant,
    record_retention: Option<Duration>,
    next_record_sweep: Instant,
    sweeping_records: Arc<std::sync::atomic::AtomicBool>,
    /// Originator side: nodes known to hold each file.
    holders: HashMap<jobs::Fingerprint, std::collections::BTreeSet<NodeId>>,
    /// When this node last checked its copy of each file because a fetcher said it served a
    /// corrupt chunk of it ([`JobMessage::ServedCorrupt`]): one check per file per
    /// [`CORRUPT_REPORT_CHECK_EVERY`] at most, however many such words come (a member may
    /// send any number). Files this node holds only.
    corrupt_reported: HashMap<jobs::Fingerprint, Instant>,
    /// Whether such a check runs now: one at a time (a member could name every file held).
    corrupt_checking: Arc<std::sync::atomic::AtomicBool>,
    originator: Originator,
    outbox: Outbox,
    /// Records of jobs this node submitted that are still processing.
    records: HashMap<String, JobRecord>,
    /// Records finished lately, with the generation of the commit that puts their last
    /// writes on disk: read back from the store before that, a record could lack a result
    /// (a late result of a written-off target coming right after the last other one would
    /// reopen it without that one, and it would wait for it for ever). Bounded by the jobs
    /// finished within one commit window.
    closing: HashMap<String, (JobRecord, u64)>,
    /// The generation of the next commit asked for `closing`, and whether one is in flight.
    closing_next: u64,
    closing_asked: bool,
    /// After a purge, until the commit of this generation: the store may still show records
    /// the purge forgot (its writes are not on disk yet), so a finished record is not read
    /// back from it (a late result then finds no record, as after the commit).
    purge_barrier: Option<u64>,
    /// (run, target) pairs whose late results after a write-off were logged.
    late_said: HashSet<(String, String)>,
    /// (run, target) pairs whose results for a run this node has no trace of were logged.
    unknown_said: HashSet<(String, String)>,
    /// Runs this node submitted that are not finished.
    open_runs: HashMap<String, Run>,
    /// When each open run was made, on the boot clock (`jobs::processes::boot_clock`): its
    /// age goes by that, so a step of the wall clock (a bad NTP sync) does not make a fresh run
    /// look a day old to its targets, and a machine suspended meanwhile does not make an old
    /// one look fresh. A run resumed after a restart counts from its wall-clock age then.
    run_born: HashMap<String, Duration>,
    watchers: Vec<Watcher>,
    /// Live output of jobs submitted here with `--stream` that no watcher follows yet: the
    /// CLI asks to watch once its submission is answered, and a job may print before that.
    /// Kept (up to [`EARLY_OUTPUT_CAP`] bytes a job) until a watcher comes or the job is done.
    early_output: HashMap<String, EarlyOutput>,
    notices: notices::Notices,
    accepted: HashMap<String, AcceptedRun>,
    /// Target side: job id → run id.
    job_runs: HashMap<String, String>,
    /// Work of runs accepted from other nodes, in the order they came, until the acceptance
    /// is on disk (`true` once it is; work leaves from the front only, so runs keep order).
    accepted_not_stored: VecDeque<(String, Vec<Work>, bool)>,
    /// Work the executor could not take yet (its inbox was full). Not capped: it holds the
    /// jobs of runs this node accepted (each on disk already), which it owes a result for.
    waiting_for_executor: VecDeque<Box<Work>>,
    outputs: HashMap<NodeId, OutputQueue>,
    output_seq: HashMap<String, u64>,
    /// The log of the jobs' starts (see [`RunsParts::processes`]).
    processes: Option<Arc<ProcessLog>>,
    /// Jobs finished here whose results are not known to be on disk yet: their starts stay in
    /// the log until they are. Not capped: drained every [`SETTLE_EVERY`], so it holds at
    /// most those seconds' worth of this node's jobs.
    unsettled: Vec<String>,
    /// The order number of the next run accepted here ([`Accepted::seq`]).
    next_accept_seq: u64,
    /// The number of the next run submitted here ([`JobRecord::submission`]).
    next_submission: u64,
    /// When the log of starts was last touched ([`TOUCH_EVERY`]).
    last_touch: Instant,
    /// When finished jobs last left the log of starts ([`SETTLE_EVERY`]).
    last_settle: Instant,
}

/// A file job a target has yet to finish: its run (shared by the run's jobs), where in the run
/// the job is, and the file's hash.
struct JobFile {
    run: Arc<Run>,
    parent: usize,
    job: usize,
    hash: jobs::Fingerprint,
}

impl JobFile {
    /// Where to fetch the file from, best first, naming targets through `members`, and the
    /// run's originator among them when they take in every node a copy may come from (see
    /// [`coordination::transfer::run_file_sources`]).
    fn sources(&self, local: &NodeId, members: &MembersByKey) -> coordination::transfer::Sources {
        let parent = &self.run.parents[self.parent];
        coordination::transfer::run_file_sources(
            &self.run,
            parent,
            &parent.jobs[self.job],
            local,
            &self.hash,
            |key| members.get(key),
        )
    }
}

/// Members by target key (a run names its targets by key), for the sources of a file job. A
/// member that went silent or left is kept as long as the membership table keeps its row
/// ([`mesh::FORGET_AFTER`]; it may come back), then forgotten, so that nodes rebuilt under
/// new identities over months do not add up.
struct MembersByKey(HashMap<TargetKey, (NodeId, Option<Instant>)>);

impl MembersByKey {
    /// Knows this node alone.
    fn with(local: NodeId) -> Self {
        Self(HashMap::from([(TargetKey::of(&local), (local, None))]))
    }

    fn get(&self, key: TargetKey) -> Option<NodeId> {
        self.0.get(&key).map(|(node, _)| node.clone())
    }

    /// Whether `node` went silent or left at least `for_at_least` before `now` and is not
    /// back (a member not heard since this node started is not known to be gone).
    fn gone_for(&self, node: &NodeId, now: Instant, for_at_least: Duration) -> bool {
        self.0
            .get(&TargetKey::of(node))
            .is_some_and(|(known, since)| {
                known == node
                    && since.is_some_and(|at| now.saturating_duration_since(at) >= for_at_least)
            })
    }

    /// `node` is alive (new, or back).
    fn back(&mut self, node: NodeId) {
        self.0.insert(TargetKey::of(&node), (node, None));
    }

    /// `node` went silent or left at `now`.
    fn gone(&mut self, node: &NodeId, now: Instant) {
        if let Some((_, since)) = self.0.get_mut(&TargetKey::of(node)) {
            since.get_or_insert(now);
        }
    }

    /// Forgets members gone for [`mesh::FORGET_AFTER`] by `now`.
    fn forget_gone(&mut self, now: Instant) {
        self.0.retain(|_, (_, since)| {
            since.is_none_or(|at| now.saturating_duration_since(at) < mesh::FORGET_AFTER)
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How old `run` is now by this node's wall clock (its originator's); 0 if it does not say.
fn wall_age_ms(run: &Run) -> u64 {
    age_of(run.created_unix_ms, None, now_ms(), Duration::ZERO)
}

/// The age of a run made at `created_unix_ms` (0: it does not say, age 0): since `born` on
/// the boot clock (`now` there) when known, else by the wall clock; at least 1 ms when it
/// says.
fn age_of(created_unix_ms: u64, born: Option<Duration>, now_unix_ms: u64, now: Duration) -> u64 {
    match (created_unix_ms, born) {
        (0, _) => 0,
        (_, Some(born)) => (now.saturating_sub(born).as_millis() as u64).max(1),
        (created, None) => now_unix_ms.saturating_sub(created).max(1),
    }
}

/// How often a word that this node served a corrupt chunk of a file has the file checked, at
/// most (a check reads the whole file).
const CORRUPT_REPORT_CHECK_EVERY: Duration = Duration::from_secs(60);

fn encode(msg: &JobMessage) -> Option<Vec<u8>> {
    match wire::encode(msg, MAX_JOB_MESSAGE) {
        Ok(b) => Some(b),
        Err(e) => {
            warn!("job message not sent: {e}");
            None
        }
    }
}

impl Actor {
    /// How old `run`, one this node submitted, is now (see [`Actor::run_born`]); 0 if it
    /// does not say when it was made.
    fn run_age_ms(&self, run: &Run) -> u64 {
        age_of(
            run.created_unix_ms,
            self.run_born.get(&run.run_id).copied(),
            now_ms(),
            jobs::processes::boot_clock(),
        )
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => {
                        self.handle(input);
                        // Work came in while ticking slowly: back to the short tick.
                        let soon = tokio::time::Instant::now() + TICK;
                        if tick.deadline() > soon && !self.is_idle() {
                            tick.as_mut().reset(soon);
                        }
                    }
                    None => return,
                },
                _ = &mut tick => {
                    self.tick();
                    let every = if self.is_idle() { IDLE_TICK } else { TICK };
                    tick.as_mut().reset(tokio::time::Instant::now() + every);
                }
            }
        }
    }

    /// Nothing in progress that the tick advances.
    fn is_idle(&self) -> bool {
        self.originator.open_runs() == 0
            // Results owed to an originator that has been down a while are retried every 30 s.
            && self.outbox.quiet_until(Instant::now() + IDLE_TICK)
            && self.waiting_for_executor.is_empty()
            && self.accepted_not_stored.is_empty()
            && self.watchers.is_empty()
            && self.cross.is_idle()
    }

    /// A member went silent or said goodbye (`how`): the originator writes it off, at once
    /// or after the grace a goodbye gets. QUERY collections stop waiting for it once it is
    /// written off (`Action::Unreachable`), not before: a target restarting within the grace
    /// still gives its value, and the jobs after the QUERY see every node's.
    fn member_gone(&mut self, peer: &PeerId, how: fn(NodeId) -> originator::Input) {
        let node = NodeId(peer.to_string());
        let now = Instant::now();
        self.members.gone(&node, now);
        let actions = self.originator.handle(how(node), now);
        self.originator_actions(actions);
    }

    /// What a member gossiped on the jobs topic: a run, or a QUERY's set.
    pub(super) fn announced(&mut self, source: PeerId, data: Vec<u8>) {
        match wire::decode::<Gossip>(&data, MAX_JOB_MESSAGE_READ) {
            Ok(Gossip::Run(run)) if run.originator.0 == source.to_string() => {
                match run.problem() {
                    Some(why) => warn!(%source, "dropped a run with {why}"),
                    // Dropped: said in the log; gossip has no answer.
                    None => {
                        let _ = self.accept(Arc::new(*run), true);
                    }
                }
            }
            Ok(Gossip::Run(run)) => {
                warn!(claimed = %run.originator, %source, "dropped a run announced for another originator")
            }
            Ok(Gossip::QuerySet {
                job_id, aggregate, ..
            }) => self.query_set_gossiped(NodeId(source.to_string()), job_id, aggregate),
            Ok(Gossip::QuerySetPart {
                job_id,
                part,
                values,
                set,
                originator_start,
            }) => {
                let part = coordinate::SetPart {
                    part,
                    values,
                    set,
                    originator_start,
                };
                self.query_part_gossiped(NodeId(source.to_string()), job_id, part);
            }
            Err(e) => warn!(%source, "dropped an unreadable announce: {e}"),
        }
    }

    /// A job message `peer` sent directly: handled, and answered once what it changed is on
    /// disk where the sender forgets it on the answer.
    pub(super) fn answer_request(&mut self, peer: PeerId, data: Vec<u8>, token: ReplyToken) {
        let (reply, stored) = match wire::decode::<JobMessage>(&data, MAX_JOB_MESSAGE_READ) {
            Ok(msg) => {
                // A run taken in, results recorded or a QUERY value collected are
                // acknowledged once on disk: the sender forgets them on this answer.
                let stores = matches!(
                    msg,
                    JobMessage::Deliver(_) | JobMessage::Results(_) | JobMessage::QueryValue { .. }
                );
                let reply = self.request(peer, msg);
                // Results of other runs than those named were taken with that answer too.
                let taken = matches!(reply, JobReply::Ok | JobReply::UnknownRuns(_));
                let stored = (stores && taken).then(|| self.store.committed());
                (reply, stored)
            }
            Err(e) => (
                JobReply::Refused(format!("unreadable job message: {e}")),
                None,
            ),
        };
        let mesh = self.mesh.clone();
        tokio::spawn(async move {
            let on_disk = match stored {
                Some(committed) => committed.await.is_ok(),
                None => true,
            };
            let reply = if on_disk {
                reply
            } else {
                JobReply::Refused(NOT_STORED.into())
            };
            if let Ok(bytes) = wire::encode(&reply, MAX_JOB_MESSAGE) {
                let _ = mesh.reply(token, bytes).await;
            }
        });
    }

    /// A member is alive (new, or back after it expired or left).
    pub(super) fn member_back(&mut self, peer: PeerId) {
        let node = NodeId(peer.to_string());
        self.members.back(node.clone());
        // QUERY values, sets and wait ends told to it go again now.
        self.cross.node_back(&node);
        self.queries_node_back(&node);
        self.waits_node_back(&node);
        // Results held for it go now, not at the end of their backoff.
        let actions = self
            .outbox
            .handle(outbox::Input::Back { to: node.clone() }, Instant::now());
        self.outbox_actions(actions);
        let actions = self
            .originator
            .handle(originator::Input::NodeBack(node), Instant::now());
        self.originator_actions(actions);
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Submit { run, records, done } => self.submit(run, records, done),
            Input::SubmissionStored { run, stored, done } => {
                self.submission_stored(run, stored, done)
            }
            Input::Watch {
                job_ids,
                output,
                events,
                flushed,
            } => self.watch(job_ids, output, events, flushed),
            Input::Announce { source, data } => self.announced(source, data),
            Input::Request { peer, data, token } => self.answer_request(peer, data, token),
            Input::Exec(ExecEvent::Output { job_id, line }) => self.output(job_id, line),
            Input::Exec(ExecEvent::Finished(outcome)) => {
                self.finished(outcome);
                self.feed_executor();
            }
            Input::Acked { run_id, node } => {
                let actions = self
                    .originator
                    .handle(originator::Input::Acked { run_id, node }, Instant::now());
                self.originator_actions(actions);
            }
            Input::AckAnswered { run_id, start } => {
                if let Some(accepted) = self.accepted.get_mut(&run_id) {
                    accepted.ack.answered(start);
                }
            }
            Input::OutboxSent { to, ok } => {
                let actions = self
                    .outbox
                    .handle(outbox::Input::Sent { to, ok }, Instant::now());
                self.outbox_actions(actions);
            }
            Input::OutboxUnknown { to, runs } => self.results_of_unknown_runs(to, runs),
            Input::ClosingStored { generation } => {
                self.closing.retain(|_, (_, g)| *g > generation);
                self.closing_asked = false;
                if self.purge_barrier.is_some_and(|b| generation >= b) {
                    self.purge_barrier = None;
                }
                if !self.closing.is_empty() {
                    self.ask_closing_commit();
                }
            }
            Input::NoticesStored { batch, stored } => self.notices_stored(batch, stored),
            Input::OutputSent { to } => self.output_sent(&to),
            Input::MemberBack(peer) => self.member_back(peer),
            Input::AcceptStored { run_id, stored } => self.accept_stored(run_id, stored),
            Input::Alive { check, alive } => {
                let alive = alive.iter().map(|p| NodeId(p.to_string())).collect();
                let actions = self
                    .originator
                    .handle(originator::Input::Alive { check, alive }, Instant::now());
                self.originator_actions(actions);
            }
            Input::MemberGone(peer) => self.member_gone(&peer, originator::Input::NodeGone),
            Input::MemberLeft(peer) => self.member_gone(&peer, originator::Input::NodeLeft),
            Input::Records { reply } => {
                let _ = reply.send(self.records.values().cloned().collect());
            }
            Input::Owing {
                job_ids,
                among,
                reply,
            } => {
                let _ = reply.send(self.owing(&job_ids, among));
            }
            Input::Awaiting {
                job_ids,
                named,
                reply,
            } => {
                let _ = reply.send(self.awaiting(&job_ids, named));
            }
            Input::Owed { reply } => {
                let _ = reply.send(self.outbox.owed(Instant::now()));
            }
            Input::Delivering { reply } => {
                let _ = reply.send(self.outbox.delivering());
            }
            Input::Purge { done } => self.purge(done),
            Input::QueryLocal {
                job_id,
                name,
                value,
                reply,
            } => self.query_local(job_id, name, value, reply),
            Input::QueryWaiting { job_id, reply } => {
                let _ = reply.send(self.query_stand(&job_id));
            }
            Input::JobWait {
                job_id,
                fingerprint,
                peers,
                updates,
            } => self.job_wait(&job_id, fingerprint, peers, updates),
            Input::WaitRegistered {
                wait_id,
                node,
                answer,
            } => self.wait_registered(&wait_id, &node, answer),
            Input::BlobSources { job_id, reply } => {
                // Worked out when the job asks, with the members known by then (a run taken
                // in while the mesh was forming may name targets this node had not yet met).
                let sources = self
                    .job_files
                    .get(&job_id)
                    .map(|f| f.sources(&self.local, &self.members))
                    .unwrap_or_default();
                let _ = reply.send(sources);
            }
            Input::BlobDamaged(hash) => {
                warn!(%hash, "a job found a file here that does not match its hash: checking the copy (a bad one is removed and fetched again)");
                let blobs = self.blobs.clone();
                tokio::task::spawn_blocking(move || blobs.discard(&hash));
            }
            Input::BlobFetched { job_id, hash } => {
                if let Some(originator) = self
                    .job_files
                    .get(&job_id)
                    .map(|f| f.run.originator.clone())
                {
                    let msg = JobMessage::HaveBlob {
                        hash,
                        node: self.local.clone(),
                    };
                    self.hint(&originator, msg);
                }
            }
        }
    }

    /// A job message from `peer`.
    fn request(&mut self, peer: PeerId, msg: JobMessage) -> JobReply {
        let from = NodeId(peer.to_string());
        match msg {
            JobMessage::Deliver(run) => {
                if run.originator != from {
                    return JobReply::Refused("a run is delivered by its originator".into());
                }
                if let Some(why) = run.problem() {
                    return JobReply::Refused(format!("a run with {why}"));
                }
                match self.accept(Arc::new(*run), false) {
                    Ok(()) => JobReply::Ok,
                    Err(target::Dropped(why)) => JobReply::Refused(format!("run dropped: {why}")),
                }
            }
            JobMessage::Ack { run_id, node } => {
                if node != from {
                    return JobReply::Refused("an acknowledgement comes from its node".into());
                }
                // An acknowledgement of a run this node has no trace of is for the daemon
                // that submitted it (see `Results` below): answered so, the target does not
                // count it as heard and answers that daemon's re-announces.
                if !self.has_trace_of(&run_id) {
                    debug!(run = %run_id, %node, "acknowledgement of a run this node has no trace of");
                    return JobReply::UnknownRuns(vec![run_id]);
                }
                debug!(run = %run_id, %node, "acknowledged");
                let actions = self
                    .originator
                    .handle(originator::Input::Acked { run_id, node }, Instant::now());
                self.originator_actions(actions);
                JobReply::Ok
            }
            JobMessage::Results(results) => self.results_from(&from, results),
            JobMessage::Output(batches) => {
                self.output_from(&from, batches);
                JobReply::Ok
            }
            JobMessage::QueryValue {
                job_id,
                node,
                name,
                value,
            } => {
                if node != from {
                    return JobReply::Refused("a query value comes from its node".into());
                }
                match self.query_value(job_id, node, name, value) {
                    Ok(()) => JobReply::Ok,
                    Err(why) => JobReply::Refused(why),
                }
            }
            JobMessage::QueryResult { job_id, aggregate } => {
                // An aggregate comes from the originator of the QUERY job's run (the job itself
                // may be over here: `--no-wait`, or a later aggregate with more values).
                if !self.is_query_origin(&job_id, &from) {
                    return JobReply::Refused(
                        "a query result comes from the originator of a QUERY job that ran here"
                            .into(),
                    );
                }
                self.query_result(job_id, aggregate);
                JobReply::Ok
            }
            JobMessage::QueryFailed { job_id, reason } => {
                if !self.is_query_origin(&job_id, &from) {
                    return JobReply::Refused(
                        "a query result comes from the originator of a QUERY job that ran here"
                            .into(),
                    );
                }
                self.query_failed(&job_id, reason);
                JobReply::Ok
            }
            JobMessage::QueryTaken {
                job_id,
                node,
                values,
            } => {
                if node != from {
                    return JobReply::Refused("a query set is taken by its node".into());
                }
                self.query_taken(&job_id, &node, values);
                JobReply::Ok
            }
            JobMessage::WaitFor {
                wait_id,
                fingerprint,
                run,
            } => match wait_problem(&wait_id, &fingerprint, run.as_deref()) {
                Some(why) => JobReply::Refused(why.into()),
                // Fingerprints are matched in lower case here (a registration in upper case
                // would otherwise never hear of the job it names).
                None => match self.wait_for(wait_id, fingerprint.to_ascii_lowercase(), run, from) {
                    Ok(()) => JobReply::Ok,
                    Err(why) => JobReply::Refused(why),
                },
            },
            JobMessage::WaitDone {
                wait_id,
                node,
                state,
            } => {
                if node != from {
                    return JobReply::Refused("a wait is answered by the node waited on".into());
                }
                self.wait_done(&wait_id, &node, state);
                JobReply::Ok
            }
            JobMessage::HaveBlob { hash, node } => {
                // Only for files of runs this node has open: nobody grows the hints with
                // hashes this node never sent.
                if node == from
                    && self
                        .open_runs
                        .values()
                        .flat_map(run_files)
                        .any(|h| h == hash)
                {
                    self.holders.entry(hash).or_default().insert(node);
                }
                JobReply::Ok
            }
            JobMessage::ServedCorrupt { hash } => {
                self.served_corrupt(hash, &from);
                JobReply::Ok
            }
        }
    }

    /// `from` says a chunk this node served of `hash` did not match its digest: this node's
    /// copy is checked, unless it was checked on such a word lately or another such check
    /// runs (the word is then left: a fetcher says it again at its next download).
    fn served_corrupt(&mut self, hash: jobs::Fingerprint, from: &NodeId) {
        use std::sync::atomic::Ordering;
        let now = Instant::now();
        self.corrupt_reported
            .retain(|_, at| now.saturating_duration_since(*at) < CORRUPT_REPORT_CHECK_EVERY);
        if !self.blobs.holds(&hash)
            || self.corrupt_reported.contains_key(&hash)
            || self.corrupt_checking.swap(true, Ordering::SeqCst)
        {
            return;
        }
        self.corrupt_reported.insert(hash, now);
        warn!(%hash, node = %from, "a node says a chunk this node served of a file did not match its digest: checking the copy (a damaged one is removed; a job that needs it fetches it again)");
        let (blobs, checking) = (self.blobs.clone(), self.corrupt_checking.clone());
        tokio::task::spawn_blocking(move || {
            blobs.discard(&hash);
            checking.store(false, Ordering::SeqCst);
        });
    }

    /// Of the targets in `among`, those that owe a result of one of `job_ids`. Asked of a
    /// few members now and then: stops as soon as each is found owing.
    fn owing(&self, job_ids: &HashSet<String>, mut among: HashSet<String>) -> HashSet<String> {
        let mut owing = HashSet::new();
        for record in job_ids.iter().filter_map(|id| self.records.get(id)) {
            if among.is_empty() {
                break;
            }
            for n in &record.nodes {
                if !record.results.contains_key(&n.name) && among.remove(&n.peer_id) {
                    owing.insert(n.peer_id.clone());
                }
            }
        }
        owing
    }

    /// The targets that owe a result of one of `job_ids`: the names of the first `named`,
    /// and how many there are.
    fn awaiting(&self, job_ids: &HashSet<String>, named: usize) -> (Vec<String>, usize) {
        let mut seen = HashSet::new();
        let mut names = Vec::new();
        for record in job_ids.iter().filter_map(|id| self.records.get(id)) {
            for n in &record.nodes {
                if !record.results.contains_key(&n.name)
                    && seen.insert(&n.name)
                    && names.len() < named
                {
                    names.push(n.name.clone());
                }
            }
        }
        (names, seen.len())
    }

    /// A batch of output lines reached the submitter `to`: the next goes.
    fn output_sent(&mut self, to: &NodeId) {
        if let Some(q) = self.outputs.get_mut(to) {
            q.in_flight = false;
        }
        self.flush_output(to);
        // Nothing more on its way to that submitter: its queue goes (there would be one for
        // every submitter that ever streamed a job here).
        if self
            .outputs
            .get(to)
            .is_some_and(|q| !q.in_flight && q.waiting.is_empty())
        {
            self.outputs.remove(to);
        }
    }

    /// Results sent by `from`, each of a job it ran.
    fn results_from(
        &mut self,
        from: &NodeId,
        results: Vec<coordination::message::JobResult>,
    ) -> JobReply {
        if results.iter().any(|r| r.node != *from) {
            return JobReply::Refused("results come from the node that ran the job".into());
        }
        // Results of runs this node has no trace of are not taken: the sender keeps them for
        // the daemon that submitted the run (a copy of this node's state directory elsewhere
        // answers to its peer id too), or gives them up in time.
        let mut unknown: Vec<String> = Vec::new();
        for r in results {
            let run_id = r.run_id.clone();
            if !unknown.contains(&run_id) && !self.record_result(r) {
                unknown.push(run_id);
            }
        }
        if unknown.is_empty() {
            JobReply::Ok
        } else {
            for run in &unknown {
                self.say_unknown(run, from);
            }
            JobReply::UnknownRuns(unknown)
        }
    }

    /// Output lines sent by `from` of jobs it runs, for their watchers.
    fn output_from(&mut self, from: &NodeId, batches: Vec<coordination::message::OutputBatch>) {
        for b in batches {
            // Only a target of the job, in its own name, speaks for it, while it is open (a
            // finished job's watchers have its result).
            let target = self.records.get(&b.job_id).and_then(|r| r.name_of(&from.0));
            let Some(node) = target.filter(|_| b.node == *from).map(str::to_string) else {
                continue;
            };
            for line in b.lines {
                self.tell_watchers(
                    &b.job_id,
                    WatchEvent::Output {
                        job_id: b.job_id.clone(),
                        node: node.clone(),
                        line,
                    },
                );
            }
        }
    }
}

/// What is wrong with a JOB_WAIT registration from another node, if anything.
fn wait_problem(wait_id: &str, fingerprint: &str, run: Option<&str>) -> Option<&'static str> {
    // As JOB_WAIT takes it from its submitter: an empty prefix would match every job.
    if !(8..=64).contains(&fingerprint.len()) || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Some("a JOB_WAIT names a job by 8 to 64 hexadecimal digits");
    }
    // Kept here up to a day: ids as every run's and job's are, not megabytes.
    if !coordination::message::is_valid_id(wait_id)
        || run.is_some_and(|r| !coordination::message::is_valid_id(r))
    {
        return Some("a wait's ids are those of a job's");
    }
    None
}

fn transfer_file(component: &jobs::Component) -> Option<&jobs::spec::FileRef> {
    match component {
        jobs::Component::Add(t) | jobs::Component::Copy(t) => t.file.as_ref(),
        _ => None,
    }
}

/// The hashes of every file a run's ADD/COPY jobs send.
fn run_files(run: &Run) -> impl Iterator<Item = jobs::Fingerprint> + '_ {
    run.parents
        .iter()
        .flat_map(|p| &p.jobs)
        .filter_map(|j| transfer_file(&j.spec.component).map(|f| f.hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::add_run;

    /// A run is forgotten only once a day has passed by the wall clock and by the monotonic
    /// clock too: a wall clock stepped forward a day does not make a target forget a run it
    /// took in a minute ago (a copy of the run would then run again).
    #[test]
    fn a_run_is_forgotten_only_after_a_day_by_both_clocks() {
        let day = REMEMBER_RUNS.as_millis() as u64;
        let taken = AcceptedRun::new(NodeId("o".into()), HashSet::new(), 1_000);
        let since = taken.since;
        // A minute on, with the wall clock stepped forward two days: kept.
        assert!(!taken.old_enough_to_forget(1_000 + 2 * day, since + Duration::from_secs(60)));
        // A day on by both: forgotten.
        assert!(taken.old_enough_to_forget(1_000 + day, since + REMEMBER_RUNS));
        // A day on by the monotonic clock, the wall clock set back: kept.
        assert!(!taken.old_enough_to_forget(1_000 + day / 2, since + REMEMBER_RUNS));
        // A job still pending: kept, however old.
        let pending = AcceptedRun::new(NodeId("o".into()), HashSet::from(["j".into()]), 1_000);
        let since = pending.since;
        assert!(!pending.old_enough_to_forget(1_000 + 2 * day, since + 2 * REMEMBER_RUNS));
    }

    /// Every outcome a restart gives a job says so the way the records know it by (a job
    /// interrupted has no time of its own).
    #[test]
    fn every_interrupted_outcome_begins_alike() {
        for info in [
            INTERRUPTED,
            restore::DOWN_TOO_LONG,
            restore::WAS_RUNNING,
            restore::WAS_STOPPED,
            restore::BEHIND_INTERRUPTED,
        ] {
            assert!(
                info.starts_with(crate::records::INTERRUPTED_PREFIX),
                "{info}"
            );
        }
    }

    /// One holder for each of the most files a run names holders of (the costliest way to
    /// name [`coordination::transfer::MAX_HOLDER_HINTS`]) fits the room a submission keeps for them.
    #[test]
    fn the_most_holders_a_run_names_fit_the_room_kept_for_them() {
        let mut run = Run::new("r", NodeId(PeerId::random().to_string()), Vec::new());
        let size = |run: &Run| {
            wire::encode(&JobMessage::Deliver(Box::new(run.clone())), usize::MAX)
                .unwrap()
                .len()
        };
        let bare = size(&run);
        run.holders = (0..coordination::transfer::MAX_HOLDER_HINTS)
            .map(|i| {
                let mut hash = [0xffu8; 32];
                hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (
                    jobs::Fingerprint(hash),
                    vec![NodeId(PeerId::random().to_string())],
                )
            })
            .collect();
        let named = size(&run) - bare;
        assert!(
            named <= coordination::transfer::HOLDER_HINTS_ROOM,
            "{named} bytes"
        );
    }

    /// A file many nodes hold is named with a few of them, and a run with many such files
    /// names no more holders than the room kept for them allows.
    #[test]
    fn a_run_names_a_few_holders_of_each_file() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..70 {
            std::fs::write(dir.path().join(format!("f{i:02}")), format!("file {i}")).unwrap();
        }
        let run = add_run(dir.path(), "f* /dest/");
        let files = run.parents[0]
            .jobs
            .iter()
            .filter_map(|job| transfer_file(&job.spec.component));
        let holders: HashMap<jobs::Fingerprint, std::collections::BTreeSet<NodeId>> = files
            .map(|f| {
                let nodes = (0..40).map(|_| NodeId(PeerId::random().to_string()));
                (f.hash, nodes.collect())
            })
            .collect();
        let hints = coordination::transfer::holder_hints(&run, &holders);
        assert!(hints.iter().all(|(hash, nodes)| {
            nodes.len() <= 16 && nodes.iter().all(|n| holders[hash].contains(n))
        }));
        let named: usize = hints.iter().map(|(_, nodes)| nodes.len()).sum();
        assert_eq!(named, coordination::transfer::MAX_HOLDER_HINTS);
        assert_eq!(hints.len(), 64);
    }

    #[test]
    fn a_member_gone_is_forgotten_when_its_row_would_be_and_not_while_back() {
        let node = || NodeId(PeerId::random().to_string());
        let (local, a, b) = (node(), node(), node());
        let start = Instant::now();
        let mut members = MembersByKey::with(local.clone());
        members.back(a.clone());
        members.back(b.clone());
        members.gone(&a, start);
        members.gone(&b, start);
        // Heard of again after going: kept whatever the time.
        members.back(b.clone());
        // A second goodbye does not move the time it went.
        members.gone(&a, start + Duration::from_secs(3600));
        members.forget_gone(start + mesh::FORGET_AFTER - Duration::from_secs(1));
        assert_eq!(members.get(TargetKey::of(&a)), Some(a.clone()));
        members.forget_gone(start + mesh::FORGET_AFTER);
        assert_eq!(members.get(TargetKey::of(&a)), None);
        assert_eq!(members.get(TargetKey::of(&b)), Some(b.clone()));
        assert_eq!(members.get(TargetKey::of(&local)), Some(local));
    }

    /// A run's age goes by the monotonic clock from when its originator made (or resumed) it:
    /// a wall clock stepped a day ahead meanwhile does not make it a day old.
    #[test]
    fn a_wall_clock_step_does_not_age_a_run() {
        let made = Duration::from_secs(5);
        let later = made + Duration::from_secs(10);
        let created = 1_000_000;
        let a_day_on = created + 24 * 3_600_000 + 10_000;
        assert_eq!(age_of(created, Some(made), a_day_on, later), 10_000);
        // Not known to this start (resumed without a monotonic base): the wall clock.
        assert_eq!(age_of(created, None, a_day_on, later), a_day_on - created);
        assert_eq!(age_of(0, Some(made), a_day_on, later), 0);
    }
}
