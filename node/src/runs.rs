//! Runs: the job side of a node, both as the originator of the runs it submits and as a target
//! of the runs it receives.
//!
//! One actor task owns the state: the originator's run tracker and the result outbox (both
//! sans-IO machines from `coordination`), the open job records, the runs accepted as a target,
//! and the `--poll`/`--stream` watchers. It never waits on the network, the executor or a
//! client: those calls run in spawned tasks that report back through the actor's inbox, so no
//! cycle of full channels can stall it.
//!
//! Beside this file: `coordinate` (QUERY and JOB_WAIT across nodes), `watchers` (clients
//! following jobs, and live output) and `notices` (a finished job told once it is on disk).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use coordination::{
    Gossip, JobMessage, JobReply, JobResult, NodeId, Run, TargetKey,
    acknowledgement::Acknowledgement,
    originator::{self, Originator, OriginatorConfig},
    outbox::{self, Outbox},
    restart,
};
use jobs::{
    cache::{Cache, CachedState},
    executor::{ExecEvent, Executor, Outcome, ResultState, Work},
    processes::ProcessLog,
};
use mesh::{MeshHandle, PeerId, ReplyToken, wire};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

mod coordinate;
mod notices;
mod watchers;

pub use coordinate::NodeCoordinator;
use watchers::{EarlyOutput, OutputQueue, Watcher};
pub use watchers::{WatchReceiver, WatchSender, watch_channel};

use crate::{
    control::WatchEvent,
    records::{JobRecord, NodeResult},
    store::{Accepted, OutboxEntry, PendingJob, Store, StoredRun},
};

/// A job a restart of its node cut short. A job still queued is run after the restart,
/// unless the node cannot tell whether it had started (after a reboot of its machine, or a
/// submitter's own job whose acceptance had not reached the disk).
pub const INTERRUPTED: &str = "interrupted: the node stopped before it recorded the job's result \
                               (the job had started or been dropped from its queue, or the node \
                               could not tell, as after a reboot; it is not run again, so that \
                               no job ever runs twice)";

/// A job still queued at a restart after the node was down longer than this is not run: its
/// submitter has long reported it unreachable (and no longer sends it to a node back without
/// it), and its operator may have run it again by hand.
const RUN_QUEUED_WHEN_DOWN_UNDER: Duration = Duration::from_secs(10 * 60);

/// Why a job still queued at a restart was not run, after a long stop.
const DOWN_TOO_LONG: &str = "interrupted: the node was down for more than 10 min and this job was \
                             still queued there; it is not run after so long (its submitter has \
                             reported it unreachable)";

/// Why a job still queued at a restart was not run: its parent's earlier job was cut short
/// (the parent failed, as after any failure).
const BEHIND_INTERRUPTED: &str = "interrupted: not run, an earlier job of its parent was cut \
                                  short by the node's restart";

/// How often finished jobs leave the log of starts. Asking the store when their results are
/// on disk makes it sync a group: every few seconds, not at every tick.
const SETTLE_EVERY: Duration = Duration::from_secs(5);

/// How often a running node says so in its log of starts (for the time it was down).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Largest job message (a run with many jobs, a batch of results with their output).
const MAX_JOB_MESSAGE: usize = wire::MAX_CTL_BYTES;
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
    OutputSent {
        to: NodeId,
    },
    MemberGone(PeerId),
    /// A member is alive (new, or back after it expired or left).
    MemberBack(PeerId),
    /// The acceptance of `run_id` is on disk (`stored`), or could not be stored.
    AcceptStored {
        run_id: String,
        stored: bool,
    },
    /// The members alive now, as the run tracker asked.
    Alive(Vec<PeerId>),
    /// The commit a batch of notices to watchers waited for is over (`stored`: on disk).
    NoticesStored {
        batch: u64,
        stored: bool,
    },
    Records {
        reply: oneshot::Sender<Vec<JobRecord>>,
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
    /// The JOB_WAIT job `job_id` here starts waiting on `peers`.
    JobWait {
        job_id: String,
        fingerprint: String,
        peers: Vec<(NodeId, String)>,
        updates: mpsc::Sender<(String, String)>,
    },
    /// `node` took the registration of a JOB_WAIT.
    WaitRegistered {
        wait_id: String,
        node: NodeId,
    },
    /// An ADD/COPY job here needs its file: where may it be fetched from?
    BlobSources {
        job_id: String,
        reply: oneshot::Sender<Vec<NodeId>>,
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
}

impl Runs {
    /// A handle and the inbox to start the actor with.
    pub fn channel() -> (Runs, RunsInbox) {
        let (tx, rx) = mpsc::channel(INBOX_DEPTH);
        (Runs { inbox: tx }, RunsInbox(rx))
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
        } = parts;
        let (tx, rx) = (self.inbox.clone(), inbox.0);
        let local = NodeId(mesh.local_peer_id().to_string());
        let mut actor = Actor {
            originator: Originator::new(local.clone(), OriginatorConfig::default()),
            members: HashMap::from([(TargetKey::of(&local), local.clone())]),
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
            next_blob_sweep: Instant::now(),
            next_accepted_sweep: Instant::now(),
            record_retention,
            next_record_sweep: Instant::now(),
            sweeping_records: Arc::default(),
            holders: HashMap::new(),
            job_fingerprints: HashMap::new(),
            inbox: tx.clone(),
            outbox: Outbox::new(),
            records: HashMap::new(),
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
    /// Whether a copy of the run calls for an acknowledgement. In memory only: after a
    /// restart here, the next copy is acknowledged once more.
    ack: Acknowledgement,
    /// How the run's jobs ended here, by fingerprint (the first to end, if several share one;
    /// `true`: not failed), for JOB_WAITs of the run itself. In memory only: after a restart
    /// such a wait is answered from the cache.
    outcomes: Vec<(jobs::Fingerprint, bool)>,
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
    /// Every node seen alive, by target key: runs name their targets by key. As large as the
    /// membership table (members are kept after they leave, like their rows there).
    members: HashMap<TargetKey, NodeId>,
    /// Target side: ADD/COPY jobs not finished here, by job id.
    job_files: HashMap<String, JobFile>,
    blob_retention: Option<Duration>,
    /// Submitters whose runs this node takes, besides its own; empty: any member's.
    allow_submitters: HashSet<NodeId>,
    next_blob_sweep: Instant,
    /// When [`Actor::forget_accepted_runs`] runs next.
    next_accepted_sweep: Instant,
    record_retention: Option<Duration>,
    next_record_sweep: Instant,
    sweeping_records: Arc<std::sync::atomic::AtomicBool>,
    /// Originator side: nodes known to hold each file.
    holders: HashMap<jobs::Fingerprint, std::collections::BTreeSet<NodeId>>,
    originator: Originator,
    outbox: Outbox,
    /// Records of jobs this node submitted that are still processing or finished lately.
    records: HashMap<String, JobRecord>,
    /// Runs this node submitted that are not finished.
    open_runs: HashMap<String, Run>,
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
    /// Where to fetch the file from, best first, naming targets through `members`.
    fn sources(&self, local: &NodeId, members: &HashMap<TargetKey, NodeId>) -> Vec<NodeId> {
        let parent = &self.run.parents[self.parent];
        coordination::transfer::distribution_sources(
            &self.run,
            parent,
            &parent.jobs[self.job],
            local,
            &self.hash,
            |key| members.get(&key).cloned(),
        )
    }
}

/// How often the blob store is swept: a quarter of the retention, between 1 s and 10 min.
fn blob_sweep_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

fn record_sweep_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How old `run` is now, by this node's clock (its originator's); 0 if it does not say.
fn age_ms(run: &Run) -> u64 {
    match run.created_unix_ms {
        0 => 0,
        created => now_ms().saturating_sub(created).max(1),
    }
}

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

    /// After a restart: QUERY values collected, results still to deliver, jobs interrupted
    /// here, jobs that never started queued again, runs to resume.
    fn restore(&mut self) {
        // First, so that a QUERY job interrupted here counts against its collection.
        self.restore_queries();
        let now = Instant::now();
        for entry in self.store.outbox() {
            let actions = self.outbox.handle(
                outbox::Input::Add {
                    to: entry.to,
                    result: entry.result,
                    more_coming: false,
                },
                now,
            );
            self.outbox_actions(actions);
        }
        let forget_before = now_ms().saturating_sub(REMEMBER_RUNS.as_millis() as u64);
        let mut pending_jobs = self.store.pending_jobs();
        let mut accepted_runs = self.store.accepted();
        // In the order they came: jobs queued again keep their order across runs.
        accepted_runs.sort_by_key(|(_, a)| (a.seq, a.accepted_unix_ms));
        self.next_accept_seq = accepted_runs.last().map_or(0, |(_, a)| a.seq) + 1;
        // Which jobs the previous run started, if it can tell, and whether it stopped so long
        // ago that what it had queued is better not run at all.
        let down_for = self.processes.as_ref().and_then(|p| p.previous_down_for());
        let previous_starts = self.processes.as_ref().and_then(|p| p.previous_starts());
        let down_too_long = down_for.is_some_and(|d| d >= RUN_QUEUED_WHEN_DOWN_UNDER);
        if down_too_long && !pending_jobs.is_empty() {
            warn!(
                down_for_min = down_for.unwrap_or_default().as_secs() / 60,
                "this node was down for more than {} min: the jobs still queued then are reported interrupted, not run",
                RUN_QUEUED_WHEN_DOWN_UNDER.as_secs() / 60
            );
        }
        // A run kept whose acceptance never reached the disk (a crash between the two
        // writes): nothing will ever ask for it.
        let known: HashSet<&str> = accepted_runs.iter().map(|(id, _)| id.as_str()).collect();
        for run_id in self.store.accepted_run_ids() {
            if !known.contains(run_id.as_str()) {
                self.store.forget_accepted_run(&run_id);
            }
        }
        let mut queue_again: Vec<(Arc<Run>, HashSet<String>)> = Vec::new();
        for (run_id, accepted) in accepted_runs {
            let pending = pending_jobs.remove(&run_id).unwrap_or_default();
            if pending.is_empty()
                && accepted.accepted_unix_ms < forget_before
                && !self.outbox.holds_run(&run_id)
            {
                self.store.delete_accepted(&run_id);
                continue;
            }
            // Jobs still pending were queued or running when this node stopped: see
            // `coordination::restart` for which run again.
            let run = match &previous_starts {
                Some(_) if !pending.is_empty() && !down_too_long => {
                    self.store.accepted_run(&run_id).map(Arc::new)
                }
                _ => None,
            };
            let fates = restart::fates(
                &pending
                    .iter()
                    .map(|p| restart::Pending {
                        job_id: &p.job_id,
                        parent_id: &p.parent_id,
                    })
                    .collect::<Vec<_>>(),
                previous_starts.as_ref(),
                run.is_some(),
                down_too_long,
            );
            // Runs without pending jobs are remembered so a resend does not run them again.
            self.accepted.insert(
                run_id.clone(),
                AcceptedRun {
                    originator: accepted.originator.clone(),
                    pending: pending.iter().map(|p| p.job_id.clone()).collect(),
                    accepted_unix_ms: accepted.accepted_unix_ms,
                    ack: Acknowledgement::default(),
                    outcomes: Vec::new(),
                },
            );
            // A file job cut short may have left a partial copy beside its DEST.
            let cut_short = fates.contains(&restart::Fate::Interrupted);
            let kept_run = match &run {
                Some(run) => Some(Arc::clone(run)),
                None if cut_short => self.store.accepted_run(&run_id).map(Arc::new),
                None => None,
            };
            let mut never_started = HashSet::new();
            for (job, fate) in pending.into_iter().zip(fates) {
                let info = match fate {
                    restart::Fate::RunAgain => {
                        never_started.insert(job.job_id);
                        continue;
                    }
                    restart::Fate::Interrupted => {
                        if let Some(spec) = kept_run.as_ref().and_then(|r| r.job_spec(&job.job_id))
                        {
                            for path in jobs::components::remove_interrupted_landing(
                                &spec.component,
                                &self.cache,
                            ) {
                                info!(job = %job.job_id, path = %path.display(), "removed the partial copy of a file job the restart cut short");
                            }
                        }
                        INTERRUPTED
                    }
                    restart::Fate::BehindInterrupted => BEHIND_INTERRUPTED,
                    restart::Fate::DownTooLong => DOWN_TOO_LONG,
                };
                let outcome = self.interrupted(&job.job_id, job.fingerprint, &job.parent_id, info);
                self.job_runs.insert(job.job_id, run_id.clone());
                self.finished(outcome);
            }
            if let Some(run) = run
                && !never_started.is_empty()
            {
                queue_again.push((run, never_started));
            }
        }
        // What the loop above recorded (interrupted jobs of this node's own runs) is read
        // back below: on disk first.
        self.store.flush();
        // Every job the previous run left is recorded now (done, or interrupted above), or
        // queued again below: the log of starts may speak for this run only. Not if that did
        // not reach the disk (the node stops): the next start must know what this one knew.
        if let Some(log) = &self.processes
            && !self.store.has_failed()
        {
            if let Some(starts) = &previous_starts {
                log.jobs_settled(starts.iter().map(String::as_str));
            }
            log.restored();
        }
        let mut queued_here: HashMap<String, HashSet<String>> = HashMap::new();
        let mut leftovers = false;
        for (run, jobs) in queue_again {
            info!(run = %run.run_id, jobs = jobs.len(), "queued again the jobs of an accepted run that had not started before the restart");
            let (taken, _, work) = self.take_jobs(&run, Some(&jobs));
            // A pending job its kept run does not give (never expected): not left pending.
            for job_id in jobs.difference(&taken) {
                let outcome = self.interrupted(job_id, None, "", INTERRUPTED);
                self.job_runs.insert(job_id.clone(), run.run_id.clone());
                self.finished(outcome);
                leftovers = true;
            }
            queued_here.insert(run.run_id.clone(), taken);
            self.waiting_for_executor
                .extend(work.into_iter().map(Box::new));
        }
        if leftovers {
            self.store.flush();
        }
        self.feed_executor();
        for run in self.store.unfinished_runs() {
            let mut reported = Vec::new();
            let mut acked = HashSet::new();
            for parent in &run.parents {
                for job in &parent.jobs {
                    if let Some(record) = self.store.record(&job.job_id) {
                        for node in &record.nodes {
                            if record.results.contains_key(&node.name) {
                                reported.push((job.job_id.clone(), NodeId(node.peer_id.clone())));
                                acked.insert(NodeId(node.peer_id.clone()));
                            }
                        }
                        if record.results.len() < record.nodes.len() {
                            self.records.insert(record.job_id.clone(), record);
                        }
                    }
                }
            }
            info!(run = %run.run_id, "resuming a run submitted before the restart");
            self.open_runs.insert(run.run_id.clone(), run.clone());
            let actions = self.originator.handle(
                originator::Input::Resume {
                    queued_here: queued_here.remove(&run.run_id).unwrap_or_default(),
                    run,
                    acked: acked.into_iter().collect(),
                    reported,
                },
                now,
            );
            self.originator_actions(actions);
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Submit {
                mut run,
                records,
                done,
            } => {
                self.add_file_holders(&mut run);
                // Imported just before: used now, whatever a blob sweep under way decided.
                for hash in run_files(&run) {
                    self.blobs.has(&hash);
                }
                for r in records {
                    if run.stream {
                        self.early_output
                            .insert(r.job_id.clone(), EarlyOutput::default());
                    }
                    self.store.put_record(&r);
                    self.records.insert(r.job_id.clone(), r);
                }
                self.store.put_run(&StoredRun {
                    run: run.clone(),
                    finished: false,
                });
                self.open_runs.insert(run.run_id.clone(), run.clone());
                // Nothing is announced, and the client hears of nothing, before the submission
                // would survive a crash: a restarted originator knows every run it sent out.
                let committed = self.store.commit_now();
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    let stored = committed.await.is_ok();
                    let _ = inbox
                        .send(Input::SubmissionStored { run, stored, done })
                        .await;
                });
            }
            Input::SubmissionStored { run, stored, done } => {
                if !stored {
                    self.open_runs.remove(&run.run_id);
                    let _ = done.send(Err(
                        "the submission could not be stored: this node's database cannot be \
                         written (see the daemon's log); nothing was sent out"
                            .into(),
                    ));
                    return;
                }
                let _ = done.send(Ok(()));
                let actions = self
                    .originator
                    .handle(originator::Input::Submit(run), Instant::now());
                self.originator_actions(actions);
            }
            Input::Watch {
                job_ids,
                output,
                events,
                flushed,
            } => self.watch(job_ids, output, events, flushed),
            Input::Announce { source, data } => {
                match wire::decode::<Gossip>(&data, MAX_JOB_MESSAGE) {
                    Ok(Gossip::Run(run)) if run.originator.0 == source.to_string() => {
                        match run.invalid_id() {
                            Some(id) => warn!(%source, "dropped a run with an invalid id: {id:?}"),
                            None => self.accept(Arc::new(*run), true),
                        }
                    }
                    Ok(Gossip::Run(run)) => {
                        warn!(claimed = %run.originator, %source, "dropped a run announced for another originator")
                    }
                    Ok(Gossip::QuerySet {
                        job_id, aggregate, ..
                    }) => self.query_set_gossiped(NodeId(source.to_string()), job_id, aggregate),
                    Err(e) => warn!(%source, "dropped an unreadable announce: {e}"),
                }
            }
            Input::Request { peer, data, token } => {
                let (reply, stored) = match wire::decode::<JobMessage>(&data, MAX_JOB_MESSAGE) {
                    Ok(msg) => {
                        // A run taken in, results recorded or a QUERY value collected are
                        // acknowledged once on disk: the sender forgets them on this answer.
                        let stores = matches!(
                            msg,
                            JobMessage::Deliver(_)
                                | JobMessage::Results(_)
                                | JobMessage::QueryValue { .. }
                        );
                        let reply = self.request(peer, msg);
                        let stored =
                            (stores && reply == JobReply::Ok).then(|| self.store.committed());
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
                        JobReply::Refused("this node could not store it; send it again".into())
                    };
                    if let Ok(bytes) = wire::encode(&reply, MAX_JOB_MESSAGE) {
                        let _ = mesh.reply(token, bytes).await;
                    }
                });
            }
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
            Input::NoticesStored { batch, stored } => {
                if !stored || self.store.has_failed() {
                    // A commit failed (this one or one before it, whose writes are lost even
                    // if later commits succeed): nothing more is shown as done.
                    self.notices.failed();
                    return;
                }
                for (events, event) in self.notices.stored(batch) {
                    // A client whose channel is full of output lines still gets every result:
                    // it is sent from a task of its own, which ends when the client goes.
                    if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
                        tokio::spawn(async move {
                            let _ = events.send(event).await;
                        });
                    }
                }
                self.send_notices();
            }
            Input::OutputSent { to } => {
                if let Some(q) = self.outputs.get_mut(&to) {
                    q.in_flight = false;
                }
                self.flush_output(&to);
            }
            Input::MemberBack(peer) => {
                let node = NodeId(peer.to_string());
                self.members.insert(TargetKey::of(&node), node.clone());
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
            Input::AcceptStored { run_id, stored } => {
                if !stored {
                    // The node stops (its database cannot be written); the originator resends
                    // the run to it later.
                    warn!(run = %run_id, "a run could not be stored here: its jobs do not start");
                    self.accepted_not_stored.retain(|(id, _, _)| *id != run_id);
                    return;
                }
                if let Some(held) = self.accepted_not_stored.iter_mut().find(|h| h.0 == run_id) {
                    held.2 = true;
                }
                while self.accepted_not_stored.front().is_some_and(|h| h.2) {
                    if let Some((_, work, _)) = self.accepted_not_stored.pop_front() {
                        self.waiting_for_executor
                            .extend(work.into_iter().map(Box::new));
                    }
                }
                self.feed_executor();
            }
            Input::Alive(alive) => {
                let alive = alive.iter().map(|p| NodeId(p.to_string())).collect();
                let actions = self
                    .originator
                    .handle(originator::Input::Alive(alive), Instant::now());
                self.originator_actions(actions);
            }
            Input::MemberGone(peer) => {
                let node = NodeId(peer.to_string());
                self.queries_node_gone(&node);
                let actions = self
                    .originator
                    .handle(originator::Input::NodeGone(node), Instant::now());
                self.originator_actions(actions);
            }
            Input::Records { reply } => {
                let _ = reply.send(self.records.values().cloned().collect());
            }
            Input::Purge { done } => {
                // Jobs still waiting for results are kept: clients follow them and their
                // results are on their way. What is over is forgotten, here and on disk (in
                // order with every other write).
                self.records.retain(|_, r| r.results.len() < r.nodes.len());
                let open: HashSet<String> = self.records.keys().cloned().collect();
                self.early_output.retain(|job, _| open.contains(job));
                self.cross.purge_queries(&open);
                let kept: Vec<JobRecord> = self.records.values().cloned().collect();
                self.store.purge_jobs_but(&kept);
                let _ = done.send(());
            }
            Input::QueryLocal {
                job_id,
                name,
                value,
                reply,
            } => self.query_local(job_id, name, value, reply),
            Input::JobWait {
                job_id,
                fingerprint,
                peers,
                updates,
            } => self.job_wait(&job_id, fingerprint, peers, updates),
            Input::WaitRegistered { wait_id, node } => self.wait_registered(&wait_id, &node),
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

    fn tick(&mut self) {
        let now = Instant::now();
        self.settle_starts(now);
        let actions = self.originator.handle(originator::Input::Tick, now);
        self.originator_actions(actions);
        let actions = self.outbox.handle(outbox::Input::Tick, now);
        self.outbox_actions(actions);
        self.wait_tick(now);
        self.query_tick(now);
        self.feed_executor();
        self.watchers.retain(|w| !w.events.is_closed());
        if now >= self.next_accepted_sweep {
            self.next_accepted_sweep = now + ACCEPTED_SWEEP_EVERY;
            self.forget_accepted_runs();
        }
        if let Some(retention) = self.record_retention
            && now >= self.next_record_sweep
        {
            self.next_record_sweep = now + record_sweep_every(retention);
            self.forget_old_records(retention);
        }
        if let Some(retention) = self.blob_retention
            && now >= self.next_blob_sweep
        {
            self.next_blob_sweep = now + blob_sweep_every(retention);
            self.sweep_blobs(retention);
            // Who else holds a file is worth telling only while this node has the file.
            let blobs = &self.blobs;
            self.holders.retain(|hash, _| blobs.holds(hash));
        }
    }

    /// Forgets the runs this node accepted more than [`REMEMBER_RUNS`] ago that it owes nothing
    /// more (no job pending, no result undelivered).
    fn forget_accepted_runs(&mut self) {
        let forget_before = now_ms().saturating_sub(REMEMBER_RUNS.as_millis() as u64);
        let store = &self.store;
        let outbox = &self.outbox;
        self.accepted.retain(|run_id, a| {
            // A run whose results have not reached its originator is remembered however old:
            // that originator resends it when it comes back, and it must not run again.
            let keep = !a.pending.is_empty()
                || a.accepted_unix_ms >= forget_before
                || outbox.holds_run(run_id);
            if !keep {
                store.delete_accepted(run_id);
            }
            keep
        });
    }

    /// Forgets the records of jobs submitted more than `retention` ago whose every target
    /// has reported (jobs still waiting for results are in memory, and kept).
    fn forget_old_records(&self, retention: Duration) {
        // One sweep at a time (a long history takes a while to read).
        if self
            .sweeping_records
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let before_ms = now_ms().saturating_sub(retention.as_millis() as u64);
        let open: HashSet<String> = self.records.keys().cloned().collect();
        let store = self.store.clone();
        let sweeping = Arc::clone(&self.sweeping_records);
        tokio::task::spawn_blocking(move || {
            let forgotten = store.forget_records(before_ms, &open);
            sweeping.store(false, std::sync::atomic::Ordering::SeqCst);
            if forgotten > 0 {
                info!(
                    records = forgotten,
                    retention_secs = retention.as_secs(),
                    "forgot the records of jobs submitted longer ago than --record-retention"
                );
            }
        });
    }

    /// Removes blobs unused for `retention`, except the files of runs still open here: those
    /// this node submitted and those of jobs it has yet to run.
    fn sweep_blobs(&self, retention: Duration) {
        let Some(unused_since) = SystemTime::now().checked_sub(retention) else {
            return;
        };
        let mut keep: HashSet<jobs::Fingerprint> =
            self.job_files.values().map(|f| f.hash).collect();
        keep.extend(self.open_runs.values().flat_map(run_files));
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let (count, bytes) = blobs.evict(unused_since, &keep);
            if count > 0 {
                info!(
                    count,
                    bytes,
                    retention_secs = retention.as_secs(),
                    "removed files from the blob store that went unused for the blob retention"
                );
            }
        });
    }

    fn originator_actions(&mut self, actions: Vec<originator::Action>) {
        // A resend round delivers the same run to many targets: encoded once.
        let mut deliveries: HashMap<(String, u32), Vec<u8>> = HashMap::new();
        for action in actions {
            match action {
                originator::Action::Announce(run) => {
                    if run.round > 0 {
                        debug!(
                            run = %run.run_id,
                            round = run.round,
                            "announcing the run again: targets that have not acknowledged it are no longer reached"
                        );
                    }
                    let mut copy = run.compact();
                    copy.originator_start = self.start;
                    copy.age_ms = age_ms(&run);
                    let gossip = Gossip::Run(Box::new(copy));
                    let Ok(bytes) = wire::encode(&gossip, wire::MAX_GOSSIP_BYTES) else {
                        // Too big for gossip: the first resend delivers it directly to each target.
                        debug!(run = %run.run_id, "run too large to gossip; delivering directly");
                        continue;
                    };
                    let mesh = self.mesh.clone();
                    tokio::spawn(async move {
                        if let Err(e) = mesh.publish_jobs(bytes).await {
                            debug!("announce not gossiped ({e}); direct resends will deliver it");
                        }
                    });
                }
                originator::Action::Deliver { node, run } => {
                    let Ok(peer) = node.0.parse::<PeerId>() else {
                        continue;
                    };
                    let run_id = run.run_id.clone();
                    let bytes = match deliveries.entry((run_id.clone(), run.round)) {
                        std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            let mut copy = run.compact();
                            copy.originator_start = self.start;
                            copy.age_ms = age_ms(&run);
                            let Some(bytes) = encode(&JobMessage::Deliver(Box::new(copy))) else {
                                continue;
                            };
                            e.insert(bytes).clone()
                        }
                    };
                    let mesh = self.mesh.clone();
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        match mesh.request_job(peer, bytes).await {
                            Ok(reply) => match wire::decode::<JobReply>(&reply, MAX_JOB_MESSAGE) {
                                Ok(JobReply::Ok) => {
                                    let _ = inbox.send(Input::Acked { run_id, node }).await;
                                }
                                Ok(JobReply::Refused(why)) => warn!(%node, "run refused: {why}"),
                                Err(e) => debug!(%node, "unreadable reply: {e}"),
                            },
                            Err(e) => debug!(%node, "delivery failed, will retry: {e}"),
                        }
                    });
                }
                originator::Action::DeliverLocal(run) => self.accept(run, false),
                originator::Action::CheckAlive => {
                    let mesh = self.mesh.clone();
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        if let Ok(alive) = mesh.alive_members().await {
                            let alive = alive.into_iter().map(|(peer, _)| peer).collect();
                            let _ = inbox.send(Input::Alive(alive)).await;
                        }
                    });
                }
                originator::Action::Unreachable {
                    run_id,
                    node,
                    job_ids,
                } => {
                    for job_id in job_ids {
                        let name = self.name_in_record(&job_id, &node);
                        warn!(job = %job_id, node = %name, "unreachable: the node is gone (silent, left or restarted) before reporting");
                        let outcome = Outcome {
                            job_id,
                            state: ResultState::Failed,
                            stdout: String::new(),
                            stderr: String::new(),
                            info: crate::records::write_off_info(
                                &name,
                                OriginatorConfig::default().written_off_for.as_secs() / 60,
                            ),
                            execution_secs: 0.0,
                            started_unix_ms: now_ms(),
                            finished_unix_ms: now_ms(),
                        };
                        let write_off = JobResult {
                            run_id: run_id.clone(),
                            node: node.clone(),
                            outcome,
                        };
                        self.take_result(write_off, false);
                    }
                }
                // The acceptance of this node's own part had not reached the disk when it
                // stopped: interrupted, like the jobs of the runs it had accepted.
                originator::Action::Interrupted { run_id, job_ids } => {
                    for job_id in job_ids {
                        self.interrupted_before_accepted(&run_id, &job_id);
                    }
                }
                originator::Action::Finished { run_id } => {
                    if let Some(run) = self.open_runs.remove(&run_id) {
                        self.store.put_run(&StoredRun {
                            run,
                            finished: true,
                        });
                    }
                }
            }
        }
    }

    /// Originator side: tells the run's targets who holds its files already.
    fn add_file_holders(&self, run: &mut Run) {
        let mut hints: Vec<(jobs::Fingerprint, Vec<NodeId>)> = Vec::new();
        for parent in &run.parents {
            for job in &parent.jobs {
                if let Some(file) = transfer_file(&job.spec.component)
                    && let Some(nodes) = self.holders.get(&file.hash)
                    && !hints.iter().any(|(h, _)| *h == file.hash)
                {
                    hints.push((file.hash, nodes.iter().cloned().collect()));
                }
            }
        }
        run.holders = hints;
    }

    fn name_in_record(&self, job_id: &str, node: &NodeId) -> String {
        let in_memory = self
            .records
            .get(job_id)
            .and_then(|r| r.name_of(&node.0).map(str::to_string));
        // A finished record lives on disk only.
        in_memory
            .or_else(|| {
                self.store
                    .record(job_id)
                    .and_then(|r| r.name_of(&node.0).map(str::to_string))
            })
            .unwrap_or_else(|| node.0.clone())
    }

    /// The outcome of a job a restart of this node cut short. It failed here, as far as anyone
    /// asks: the cache says so (JOB_WAITs on it look there), unless an earlier run of the same
    /// job is cached finished; its parent failed either way, so the parent's later jobs do not
    /// run.
    fn interrupted(
        &mut self,
        job_id: &str,
        fingerprint: Option<jobs::Fingerprint>,
        parent_id: &str,
        info: &str,
    ) -> Outcome {
        match fingerprint {
            Some(fp) if !self.cache.has_outcome(&fp) => {
                self.cache.record(&fp, parent_id, CachedState::Failed);
                self.job_fingerprints.insert(job_id.to_string(), fp);
            }
            _ if !parent_id.is_empty() => self.cache.fail_parent(parent_id),
            _ => {}
        }
        Outcome {
            job_id: job_id.to_string(),
            state: ResultState::Failed,
            stdout: String::new(),
            stderr: String::new(),
            info: info.into(),
            execution_secs: 0.0,
            started_unix_ms: now_ms(),
            finished_unix_ms: now_ms(),
        }
    }

    /// Records `job_id` of this node's own run `run_id` as interrupted by a restart, as
    /// `restore` does for the jobs of accepted runs.
    fn interrupted_before_accepted(&mut self, run_id: &str, job_id: &str) {
        let job = self.open_runs.get(run_id).and_then(|run| {
            run.parents.iter().find_map(|p| {
                p.jobs
                    .iter()
                    .find(|j| j.job_id == job_id)
                    .map(|j| (j.fingerprint, p.parent_id.clone()))
            })
        });
        let (fingerprint, parent_id) = job.unzip();
        let outcome = self.interrupted(
            job_id,
            fingerprint,
            &parent_id.unwrap_or_default(),
            INTERRUPTED,
        );
        self.record_result(JobResult {
            run_id: run_id.to_string(),
            node: self.local.clone(),
            outcome,
        });
        // Not queued here any more: a JOB_WAIT on it is answered, after the writes above are
        // queued (as in `finished`).
        if let Some(fp) = self.job_fingerprints.remove(job_id) {
            self.notify_waiters(&fp.to_hex(), run_id, "failed");
        }
    }

    fn outbox_actions(&mut self, actions: Vec<outbox::Action>) {
        for action in actions {
            match action {
                outbox::Action::Send { to, results } => {
                    let inbox = self.inbox.clone();
                    let Ok(peer) = to.0.parse::<PeerId>() else {
                        continue;
                    };
                    let bytes = results_message(results);
                    let mesh = self.mesh.clone();
                    tokio::spawn(async move {
                        let Some(bytes) = bytes else {
                            let _ = inbox.send(Input::OutboxSent { to, ok: false }).await;
                            return;
                        };
                        let ok = match mesh.request_job(peer, bytes).await {
                            Ok(reply) => matches!(
                                wire::decode::<JobReply>(&reply, MAX_JOB_MESSAGE),
                                Ok(JobReply::Ok)
                            ),
                            Err(e) => {
                                debug!(%to, "results not delivered yet: {e}");
                                false
                            }
                        };
                        let _ = inbox.send(Input::OutboxSent { to, ok }).await;
                    });
                }
                outbox::Action::Delivered(results) => {
                    for r in &results {
                        self.store.delete_outbox(r);
                    }
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
                if let Some(id) = run.invalid_id() {
                    return JobReply::Refused(format!("a run with an invalid id: {id:?}"));
                }
                self.accept(Arc::new(*run), false);
                JobReply::Ok
            }
            JobMessage::Ack { run_id, node } => {
                if node != from {
                    return JobReply::Refused("an acknowledgement comes from its node".into());
                }
                debug!(run = %run_id, %node, "acknowledged");
                let actions = self
                    .originator
                    .handle(originator::Input::Acked { run_id, node }, Instant::now());
                self.originator_actions(actions);
                JobReply::Ok
            }
            JobMessage::Results(results) => {
                if results.iter().any(|r| r.node != from) {
                    return JobReply::Refused("results come from the node that ran the job".into());
                }
                for r in results {
                    self.record_result(r);
                }
                JobReply::Ok
            }
            JobMessage::Output(batches) => {
                for b in batches {
                    if b.node != from {
                        continue;
                    }
                    let node = self.name_in_record(&b.job_id, &b.node);
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
            } => {
                // As JOB_WAIT takes it from its submitter: an empty prefix would match every job.
                if !(8..=64).contains(&fingerprint.len())
                    || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return JobReply::Refused(
                        "a JOB_WAIT names a job by 8 to 64 hexadecimal digits".into(),
                    );
                }
                self.wait_for(wait_id, fingerprint, run, from);
                JobReply::Ok
            }
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
        }
    }

    /// Target side: takes the run's jobs for this node, once.
    fn accept(&mut self, run: Arc<Run>, acknowledge: bool) {
        let work = run.work_for(&self.local);
        if work.is_empty() {
            return;
        }
        // (Sent again: answered like any resend below.)
        let new = !self.accepted.contains_key(&run.run_id);
        let refusal = if new
            && !self.allow_submitters.is_empty()
            && run.originator != self.local
            && !self.allow_submitters.contains(&run.originator)
        {
            Some(Refusal::Submitter)
        } else if new && run.age_ms >= TOO_OLD_TO_RUN.as_millis() as u64 {
            Some(Refusal::TooOld)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refuse(
                &run,
                work.iter()
                    .flat_map(|(_, jobs)| jobs.iter().map(|j| j.job_id.clone()))
                    .collect(),
                acknowledge,
                refusal,
            );
            return;
        }
        for blob in &run.inline {
            if let Err(e) = self.blobs.put(&blob.hash, &blob.data) {
                warn!(run = %run.run_id, "inline file refused: {e}");
            }
        }
        // Files already here count as used from now: a blob sweep does not take them away
        // from under the jobs about to need them.
        for (_, jobs) in &work {
            for file in jobs.iter().filter_map(|j| transfer_file(&j.spec.component)) {
                self.blobs.has(&file.hash);
            }
        }
        if self.accepted.contains_key(&run.run_id) {
            // A resend: already queued here. Say so again if asked over gossip and this
            // start of the originator has not heard it (see `coordination::acknowledgement`).
            let wanted = self
                .accepted
                .get(&run.run_id)
                .is_some_and(|a| a.ack.wanted(&run));
            if acknowledge && wanted {
                self.send_ack(&run);
            } else if acknowledge {
                debug!(run = %run.run_id, round = run.round, "announced again; acknowledged already");
            }
            return;
        }
        let (pending, pending_rows, work_here) = self.take_jobs(&run, None);
        // The run is kept while jobs of it are pending, to queue again after a restart those
        // that had not started.
        self.store.put_accepted_run(&run);
        let accepted_unix_ms = now_ms();
        let seq = self.take_accept_seq();
        self.store.put_accepted(
            &run.run_id,
            &Accepted {
                originator: run.originator.clone(),
                stream: run.stream,
                accepted_unix_ms,
                seq,
            },
            &pending_rows,
        );
        self.accepted.insert(
            run.run_id.clone(),
            AcceptedRun {
                originator: run.originator.clone(),
                pending,
                accepted_unix_ms,
                ack: Acknowledgement::default(),
                outcomes: Vec::new(),
            },
        );
        if run.originator == self.local {
            // The submitter's own part: after a crash here its jobs are written off, never
            // handed out again, so they may start at once.
            self.waiting_for_executor
                .extend(work_here.into_iter().map(Box::new));
            self.feed_executor();
        } else {
            // Another node's jobs start once their acceptance is on disk: restarted before
            // that, this node would take a resend of the run as new and run them twice.
            self.accepted_not_stored
                .push_back((run.run_id.clone(), work_here, false));
            let stored = self.store.commit_now();
            let inbox = self.inbox.clone();
            let run_id = run.run_id.clone();
            tokio::spawn(async move {
                let stored = stored.await.is_ok();
                let _ = inbox.send(Input::AcceptStored { run_id, stored }).await;
            });
        }
        if acknowledge {
            self.send_ack(&run);
        }
    }

    /// The order number of a run accepted now.
    fn take_accept_seq(&mut self) -> u64 {
        self.next_accept_seq += 1;
        self.next_accept_seq - 1
    }

    /// This node's jobs of `run` (`only` these, if given), ready for the executor: their
    /// pending rows, and the bookkeeping of a job this node runs (its run, fingerprint, file).
    fn take_jobs(
        &mut self,
        run: &Arc<Run>,
        only: Option<&HashSet<String>>,
    ) -> (HashSet<String>, Vec<PendingJob>, Vec<Work>) {
        let mut pending = HashSet::new();
        let mut pending_rows = Vec::new();
        let mut work_here = Vec::new();
        for (parent, jobs) in &run.work_for(&self.local) {
            for job in jobs {
                if only.is_some_and(|only| !only.contains(&job.job_id)) {
                    continue;
                }
                pending.insert(job.job_id.clone());
                pending_rows.push(PendingJob {
                    job_id: job.job_id.clone(),
                    fingerprint: Some(job.fingerprint),
                    parent_id: parent.parent_id.clone(),
                });
                self.job_runs.insert(job.job_id.clone(), run.run_id.clone());
                self.job_fingerprints
                    .insert(job.job_id.clone(), job.fingerprint);
                if let Some(file) = transfer_file(&job.spec.component)
                    && let Some(parent_index) =
                        run.parents.iter().position(|p| std::ptr::eq(p, *parent))
                    && let Some(job_index) = parent.jobs.iter().position(|j| std::ptr::eq(j, *job))
                {
                    self.job_files.insert(
                        job.job_id.clone(),
                        JobFile {
                            run: run.clone(),
                            parent: parent_index,
                            job: job_index,
                            hash: file.hash,
                        },
                    );
                }
                work_here.push(Work {
                    job_id: job.job_id.clone(),
                    run_id: run.run_id.clone(),
                    parent_id: parent.parent_id.clone(),
                    queue: parent.queue,
                    spec: job.spec.clone(),
                    fingerprint: job.fingerprint,
                    stream: run.stream,
                });
            }
        }
        (pending, pending_rows, work_here)
    }

    /// A run this node does not take (see [`Refusal`]): its jobs here are answered failed,
    /// through the outbox like any result, and nothing runs. The run is remembered as taken,
    /// so a resend is answered the same way.
    fn refuse(
        &mut self,
        run: &Arc<Run>,
        job_ids: Vec<String>,
        acknowledge: bool,
        refusal: Refusal,
    ) {
        {
            let info = match refusal {
                Refusal::Submitter => {
                    warn!(run = %run.run_id, originator = %run.originator, "refused a run: its submitter is not one this node takes jobs from (--allow-submitter)");
                    format!(
                        "refused: {} takes jobs only from the submitters it lists (--allow-submitter)",
                        self.local_name
                    )
                }
                Refusal::TooOld => {
                    let hours = run.age_ms / 3_600_000;
                    warn!(run = %run.run_id, originator = %run.originator, hours, "refused a run submitted too long ago: this node may have run it and forgotten it");
                    format!(
                        "refused: submitted {hours} h ago, and {} forgets the runs it took after {} h: \
                         not run, in case it ran here already (submit it again to run it)",
                        self.local_name,
                        REMEMBER_RUNS.as_secs() / 3600
                    )
                }
            };
            let seq = self.take_accept_seq();
            self.store.put_accepted(
                &run.run_id,
                &Accepted {
                    originator: run.originator.clone(),
                    stream: false,
                    accepted_unix_ms: now_ms(),
                    seq,
                },
                &job_ids
                    .iter()
                    .map(|job_id| PendingJob {
                        job_id: job_id.clone(),
                        fingerprint: None,
                        parent_id: String::new(),
                    })
                    .collect::<Vec<_>>(),
            );
            self.accepted.insert(
                run.run_id.clone(),
                AcceptedRun {
                    originator: run.originator.clone(),
                    pending: job_ids.iter().cloned().collect(),
                    accepted_unix_ms: now_ms(),
                    ack: Acknowledgement::default(),
                    outcomes: Vec::new(),
                },
            );
            let fingerprints: HashMap<&str, jobs::Fingerprint> = run
                .work_for(&self.local)
                .iter()
                .flat_map(|(_, jobs)| jobs.iter().map(|j| (j.job_id.as_str(), j.fingerprint)))
                .collect();
            for job_id in job_ids {
                self.job_runs.insert(job_id.clone(), run.run_id.clone());
                // JOB_WAITs on it hear that it failed (see `finished`).
                if let Some(fp) = fingerprints.get(job_id.as_str()) {
                    self.job_fingerprints.insert(job_id.clone(), *fp);
                }
                self.finished(Outcome {
                    job_id,
                    state: ResultState::Failed,
                    stdout: String::new(),
                    stderr: String::new(),
                    info: info.clone(),
                    execution_secs: 0.0,
                    started_unix_ms: now_ms(),
                    finished_unix_ms: now_ms(),
                });
            }
        }
        if acknowledge {
            self.send_ack(run);
        }
    }

    fn send_ack(&self, run: &Run) {
        let Ok(peer) = run.originator.0.parse::<PeerId>() else {
            return;
        };
        let Some(bytes) = encode(&JobMessage::Ack {
            run_id: run.run_id.clone(),
            node: self.local.clone(),
        }) else {
            return;
        };
        let mesh = self.mesh.clone();
        let inbox = self.inbox.clone();
        let (run_id, start) = (run.run_id.clone(), run.originator_start);
        // Acknowledged once the run is on disk: after the acknowledgement the originator no
        // longer resends it.
        let committed = self.store.committed();
        tokio::spawn(async move {
            if committed.await.is_err() {
                return;
            }
            // Best effort: a lost acknowledgement costs a direct resend, or is sent again on
            // the next re-announce.
            let answered = mesh.request_job(peer, bytes).await.is_ok_and(|reply| {
                matches!(wire::decode(&reply, MAX_JOB_MESSAGE), Ok(JobReply::Ok))
            });
            if answered {
                let _ = inbox.send(Input::AckAnswered { run_id, start }).await;
            }
        });
    }

    fn feed_executor(&mut self) {
        while let Some(work) = self.waiting_for_executor.pop_front() {
            if let Err(work) = self.executor.try_submit(work) {
                self.waiting_for_executor.push_front(work);
                return;
            }
        }
    }

    /// Target side: a job finished here.
    fn finished(&mut self, outcome: Outcome) {
        self.job_files.remove(&outcome.job_id);
        self.output_seq.remove(&outcome.job_id);
        if let Some(fp) = self.job_fingerprints.remove(&outcome.job_id) {
            let run_id = self
                .job_runs
                .get(&outcome.job_id)
                .cloned()
                .unwrap_or_default();
            let state = if outcome.state == ResultState::Failed {
                "failed"
            } else {
                "success"
            };
            if let Some(accepted) = self.accepted.get_mut(&run_id)
                && !accepted.outcomes.iter().any(|(f, _)| *f == fp)
            {
                accepted
                    .outcomes
                    .push((fp, outcome.state != ResultState::Failed));
            }
            // A job that failed without running left nothing in the cache: a JOB_WAIT asking
            // after now hears "failed" too, as those waiting now do, instead of waiting for
            // its timeout.
            if outcome.state == ResultState::Failed && !self.cache.has_outcome(&fp) {
                self.cache.record_unrun(&fp, CachedState::Failed);
            }
            // After the job's own writes below are queued: JOB_WAIT waiters hear of it once
            // those are on disk.
            self.record_finished(outcome);
            self.notify_waiters(&fp.to_hex(), &run_id, state);
            return;
        }
        self.record_finished(outcome);
    }

    /// Jobs whose results are on disk leave the log of starts (they are done, not pending,
    /// after a restart); the log is touched now and then, to tell a restart how long this node
    /// was down.
    fn settle_starts(&mut self, now: Instant) {
        let Some(log) = &self.processes else {
            return;
        };
        if now.saturating_duration_since(self.last_touch) >= TOUCH_EVERY {
            self.last_touch = now;
            log.touch();
        }
        if self.unsettled.is_empty()
            || now.saturating_duration_since(self.last_settle) < SETTLE_EVERY
        {
            return;
        }
        self.last_settle = now;
        let jobs = std::mem::take(&mut self.unsettled);
        let on_disk = self.store.committed();
        let store = self.store.clone();
        let log = Arc::clone(log);
        tokio::spawn(async move {
            // An error: the store failed and the node stops; the starts stay. So they do
            // when an earlier group failed (its results are not on disk, though this one is).
            if on_disk.await.is_ok() && !store.has_failed() {
                log.jobs_settled(jobs.iter().map(String::as_str));
            }
        });
    }

    /// Target side: a finished job leaves `pending` and its result goes to its originator.
    fn record_finished(&mut self, outcome: Outcome) {
        let Some(run_id) = self.job_runs.remove(&outcome.job_id) else {
            warn!(job = %outcome.job_id, "finished a job of no known run");
            return;
        };
        let Some(accepted) = self.accepted.get_mut(&run_id) else {
            return;
        };
        accepted.pending.remove(&outcome.job_id);
        let more_coming = !accepted.pending.is_empty();
        if !more_coming {
            // What the run's QUERYs collected for its later jobs here is no longer needed.
            self.cache.forget_run(&run_id);
        }
        if self.processes.is_some() {
            self.unsettled.push(outcome.job_id.clone());
        }
        let originator = accepted.originator.clone();
        // Send what output is still waiting before the result.
        self.flush_output(&originator);
        let result = JobResult {
            run_id: run_id.clone(),
            node: self.local.clone(),
            outcome,
        };
        if originator == self.local {
            self.store
                .job_finished(&run_id, &result.outcome.job_id, None);
            if !more_coming {
                self.store.forget_accepted_run(&run_id);
            }
            self.record_result(result);
        } else {
            let entry = OutboxEntry {
                to: originator.clone(),
                result,
            };
            self.store
                .job_finished(&run_id, &entry.result.outcome.job_id, Some(&entry));
            if !more_coming {
                self.store.forget_accepted_run(&run_id);
            }
            let result = entry.result;
            let actions = self.outbox.handle(
                outbox::Input::Add {
                    to: originator,
                    result,
                    more_coming,
                },
                Instant::now(),
            );
            self.outbox_actions(actions);
        }
    }

    /// Originator side: a result (from a target, from this node, or written off as unreachable).
    fn record_result(&mut self, result: JobResult) {
        self.take_result(result, true);
    }

    /// Takes a result (`real`: one the target sent or this node's own) or, with `real` false,
    /// this node's write-off of a target gone before reporting.
    fn take_result(&mut self, result: JobResult, real: bool) {
        let JobResult {
            run_id,
            node,
            outcome,
        } = result;
        let job_id = outcome.job_id.clone();
        let record = match self.records.get_mut(&job_id) {
            Some(r) => r,
            None => match self.store.record(&job_id) {
                // A result from a node that is no target of the job is dropped below; its
                // record stays on disk, not pinned in memory.
                Some(r) if r.name_of(&node.0).is_none() => {
                    warn!(job = %job_id, %node, "dropped a result from a node that is not a target of the job");
                    return;
                }
                // A late result (after the job was written off, or after a restart).
                Some(r) => self.records.entry(job_id.clone()).or_insert(r),
                None => {
                    // Its record was purged (or never stored): still owed to the run's tracker,
                    // or the run would never finish.
                    debug!(job = %job_id, "result for a job this node has no record of");
                    let result = originator::Input::Result {
                        run_id,
                        job_id,
                        node,
                    };
                    let actions = self.originator.handle(result, Instant::now());
                    self.originator_actions(actions);
                    return;
                }
            },
        };
        // Only the job's own targets report on it (any member could claim to).
        let Some(name) = record.name_of(&node.0).map(str::to_string) else {
            warn!(job = %job_id, %node, "dropped a result from a node that is not a target of the job");
            return;
        };
        let query_without_value = record.verb == "QUERY" && outcome.state != ResultState::Success;
        let replace = match record.results.get(&name) {
            None => true,
            // A real result replaces a write-off; nothing replaces a real result.
            Some(existing) => real && existing.is_write_off(),
        };
        if replace {
            let created = record.created_unix_ms;
            let node_result = NodeResult::from_outcome(outcome, created, now_ms());
            self.store.put_result(&job_id, &name, &node_result);
            record.results.insert(name, node_result);
        }
        let complete = record.results.len() >= record.nodes.len();
        if query_without_value {
            self.query_ended_without_value(&job_id, &node);
        }
        // Done: the record lives on disk from now on. A result that changed nothing (a batch
        // sent again when its ack was lost) is no news to watchers: a finished record read
        // back for it goes back to disk untold.
        let done = if replace {
            complete.then(|| self.records.remove(&job_id)).flatten()
        } else {
            if complete {
                self.records.remove(&job_id);
            }
            None
        };
        if let Some(record) = &done
            && record.reported_by_all()
        {
            // Every target has reported for real: no QUERY value is still to come.
            self.query_over(&job_id);
        }
        // A write-off is the tracker's own doing: only real results are news to it.
        if real {
            let actions = self.originator.handle(
                originator::Input::Result {
                    run_id,
                    job_id,
                    node,
                },
                Instant::now(),
            );
            self.originator_actions(actions);
        }
        if let Some(record) = done {
            self.job_done(record);
        }
    }
}

/// A batch of results as one message. Outputs are capped so that a batch fits; should one
/// still not (an info text has no cap), it goes without its output rather than block every
/// later result to that originator.
fn results_message(results: Vec<JobResult>) -> Option<Vec<u8>> {
    let message = JobMessage::Results(results);
    if let Some(bytes) = encode(&message) {
        return Some(bytes);
    }
    let JobMessage::Results(mut results) = message else {
        return None;
    };
    warn!("results too large for one message: sent without their output");
    for r in &mut results {
        let o = &mut r.outcome;
        o.stdout = "[output left out: too large to send]".into();
        o.stderr.clear();
        o.info = o.info.chars().take(4096).collect();
    }
    encode(&JobMessage::Results(results))
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
    use jobs::executor::{Outcome, ResultState};

    use super::*;

    fn result(job: &str, stdout: String, info: String) -> JobResult {
        JobResult {
            run_id: "r".into(),
            node: NodeId("n".into()),
            outcome: Outcome {
                job_id: job.into(),
                state: ResultState::Success,
                stdout,
                stderr: String::new(),
                info,
                execution_secs: 0.0,
                started_unix_ms: 0,
                finished_unix_ms: 0,
            },
        }
    }

    #[test]
    fn results_too_large_for_a_message_still_travel_without_their_output() {
        let fits = vec![result("a", "out".into(), "echo out".into())];
        let bytes = results_message(fits.clone()).unwrap();
        let back: JobMessage = wire::decode(&bytes, MAX_JOB_MESSAGE).unwrap();
        assert_eq!(back, JobMessage::Results(fits));

        let huge = "i".repeat(MAX_JOB_MESSAGE);
        let too_large = vec![result("b", "x".repeat(1024), huge)];
        let bytes = results_message(too_large).unwrap();
        let JobMessage::Results(back) = wire::decode(&bytes, MAX_JOB_MESSAGE).unwrap() else {
            panic!("not results");
        };
        assert_eq!(back[0].outcome.job_id, "b");
        assert_eq!(back[0].outcome.state, ResultState::Success);
        assert!(back[0].outcome.stdout.contains("left out"));
        assert_eq!(back[0].outcome.info.len(), 4096);
    }
}
