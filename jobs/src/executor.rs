//! The executor: queues, locks and the run of each job on one node.
//!
//! Semantics (Directord's, with its bugs fixed):
//! - **Queues.** Jobs of synchronous parents share one serial queue, in arrival order. Each
//!   asynchronous parent has its own serial queue; up to `async_cap` of them run at once.
//!   Bypass jobs (QUEUESENTINEL) run at once.
//! - **Cache.** A cacheable job whose fingerprint succeeded here within the TTL is reported
//!   `skipped` unless it asks to skip the cache.
//! - **Parent failure.** When a job fails, every job of the same parent still queued here, and
//!   every later one that arrives, is reported failed without running, naming the failed job.
//! - **Locks.** Verbs that change shared state hold a named lock (ARG and ENV share one); every
//!   job holds the global lock shared, and `--force-lock` holds it alone (the jobs that wait
//!   for other nodes, QUERY, QUERY_WAIT and JOB_WAIT, hold none while they wait).
//! - **Timeouts** kill the job's whole process group; a component error is a failed result.
//! - **QUEUESENTINEL** drops every queued job here and reports each one failed, naming itself.
//!
//! One actor task owns the queues; each job runs in its own task and reports back. Events
//! (live output and finished jobs) go out on a bounded channel: whoever reads them must not
//! wait on [`Executor::submit`] while doing so.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{
    sync::{Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    cache::{Cache, CachedState, rendered_with},
    components::{self, Coordinator, LineSink, OutputLine, OutputStream, QueueLender},
    processes::{NotStarted, ProcessLog},
    spec::{Component, Fingerprint, JobSpec, Verb},
};

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueKind {
    /// The node's one serial queue shared by all synchronous parents.
    Sync,
    /// Its parent's own serial queue.
    Async,
    /// No queue: runs at once.
    Bypass,
}

/// A job handed to the executor.
#[derive(Debug, Clone)]
pub struct Work {
    pub job_id: String,
    /// The run it belongs to: while a job of the synchronous queue waits for other nodes,
    /// jobs of other runs may go ahead of the rest of its run.
    pub run_id: String,
    pub parent_id: String,
    pub queue: QueueKind,
    pub spec: JobSpec,
    pub fingerprint: Fingerprint,
    /// Send output lines as they come ([`ExecEvent::Output`]).
    pub stream: bool,
}

/// How a job ended on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultState {
    Success,
    Failed,
    Skipped,
}

impl ResultState {
    pub fn is_ok(self) -> bool {
        self != ResultState::Failed
    }
}

/// How the info of a job the executor reports without running it begins (an earlier job
/// of its parent failed on the node, or the job could not be started): such a result has no
/// times of its own.
pub const NOT_RUN: &str = "not run: ";

/// How the info of a job a QUEUESENTINEL emptied from the queue begins: not run either.
pub const OMITTED: &str = "omitted: ";

/// The result of one job on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub job_id: String,
    pub state: ResultState,
    pub stdout: String,
    pub stderr: String,
    pub info: String,
    /// Time spent in the component itself (lock waits excluded).
    pub execution_secs: f64,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
}

/// What the executor tells the node.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    Output { job_id: String, line: OutputLine },
    Finished(Outcome),
}

/// Executor settings.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// How many asynchronous parents may run at once.
    pub async_cap: usize,
    /// How QUERY and JOB_WAIT reach other nodes (`None`: those verbs fail).
    pub coordinator: Option<Arc<dyn Coordinator>>,
    /// Where the process groups of running jobs are written down (`None`: nowhere).
    pub processes: Option<Arc<ProcessLog>>,
    /// Run the queues and the jobs on a thread of their own (with its own runtime) instead of
    /// the caller's runtime.
    pub own_thread: bool,
}

impl std::fmt::Debug for ExecutorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorConfig")
            .field("async_cap", &self.async_cap)
            .field("coordinator", &self.coordinator.is_some())
            .field("processes", &self.processes.is_some())
            .field("own_thread", &self.own_thread)
            .finish()
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        ExecutorConfig {
            async_cap: (2 * cpus).clamp(16, 64),
            coordinator: None,
            processes: None,
            own_thread: false,
        }
    }
}

/// What is queued and running, for status views.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueSnapshot {
    pub queued: usize,
    pub running: usize,
}

enum Msg {
    Submit(Box<Work>),
    Snapshot(oneshot::Sender<QueueSnapshot>),
}

struct Done {
    job_id: String,
    parent_id: String,
    queue: QueueKind,
    failed: bool,
}

/// Depth of the executor's channels. Submitters wait when it is full (backpressure).
const CHANNEL_DEPTH: usize = 1024;

/// The handle to a node's executor.
#[derive(Clone)]
pub struct Executor {
    tx: mpsc::Sender<Msg>,
}

impl Executor {
    /// Starts the executor; returns its handle and its events.
    pub fn start(
        cache: Arc<Cache>,
        config: ExecutorConfig,
    ) -> (Executor, mpsc::Receiver<ExecEvent>) {
        let own_thread = config.own_thread;
        let (actor, tx, events_rx) = Actor::new(cache, config);
        if own_thread {
            spawn_on_own_thread(actor);
        } else {
            tokio::spawn(actor.run());
        }
        (Executor { tx }, events_rx)
    }

    /// Queues a job. Waits only if the executor's inbox is full.
    pub async fn submit(&self, work: Work) -> Result<(), ExecutorStopped> {
        self.tx
            .send(Msg::Submit(Box::new(work)))
            .await
            .map_err(|_| ExecutorStopped)
    }

    /// Queues a job without waiting; gives it back if the inbox is full (or the executor stopped).
    pub fn try_submit(&self, work: Box<Work>) -> Result<(), Box<Work>> {
        match self.tx.try_send(Msg::Submit(work)) {
            Ok(()) => Ok(()),
            Err(e) => match e.into_inner() {
                Msg::Submit(work) => Err(work),
                // Only submissions are sent above.
                Msg::Snapshot(_) => Ok(()),
            },
        }
    }

    /// How many jobs are queued and running.
    pub async fn snapshot(&self) -> Result<QueueSnapshot, ExecutorStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Snapshot(tx))
            .await
            .map_err(|_| ExecutorStopped)?;
        rx.await.map_err(|_| ExecutorStopped)
    }
}

/// Runs the actor, and the jobs it starts, on a `jobs` thread with a runtime of its own; the
/// thread ends with the actor (once every [`Executor`] handle is gone). Falls back to the
/// caller's runtime if the thread cannot be made.
fn spawn_on_own_thread(actor: Actor) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("jobs run on the main thread: no runtime for a jobs thread: {e}");
            tokio::spawn(actor.run());
            return;
        }
    };
    // The actor is handed over once the thread exists, so a failed spawn still has it.
    let (hand_over, take) = std::sync::mpsc::sync_channel::<Actor>(1);
    let spawned = std::thread::Builder::new()
        .name("jobs".into())
        .spawn(move || {
            if let Ok(actor) = take.recv() {
                runtime.block_on(actor.run());
            }
        });
    match spawned {
        // The thread is waiting on the channel: the send cannot fail.
        Ok(_) => {
            let _ = hand_over.send(actor);
        }
        Err(e) => {
            tracing::warn!("jobs run on the main thread: no jobs thread: {e}");
            tokio::spawn(actor.run());
        }
    }
}

/// The executor task is gone (the node is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the executor has stopped")]
pub struct ExecutorStopped;

/// Named locks, created on demand and dropped when no job holds or waits for them, plus the
/// global lock every job holds shared.
#[derive(Default)]
struct Locks {
    global: Arc<RwLock<()>>,
    named: Mutex<HashMap<&'static str, Weak<tokio::sync::Mutex<()>>>>,
}

enum GlobalGuard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Alone(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl Locks {
    fn named(&self, name: &'static str) -> Arc<tokio::sync::Mutex<()>> {
        // Only this module locks the map, briefly; a poisoned map is still consistent.
        let mut map = self.named.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(lock) = map.get(name).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(name, Arc::downgrade(&lock));
        lock
    }

    async fn global(&self, alone: bool) -> GlobalGuard {
        if alone {
            GlobalGuard::Alone(self.global.clone().write_owned().await)
        } else {
            GlobalGuard::Shared(self.global.clone().read_owned().await)
        }
    }
}

struct Actor {
    rx: mpsc::Receiver<Msg>,
    done_rx: mpsc::Receiver<Done>,
    done_tx: mpsc::Sender<Done>,
    events: mpsc::Sender<ExecEvent>,
    cache: Arc<Cache>,
    locks: Arc<Locks>,
    coordinator: Option<Arc<dyn Coordinator>>,
    processes: Option<Arc<ProcessLog>>,
    /// The queues hold what this node accepted to run (not capped: every job in them is owed
    /// a result; the node's accepted runs are on disk, and the executor's inbox is bounded).
    general: VecDeque<Work>,
    /// Jobs of the synchronous queue running: one, plus those that wait for other nodes
    /// (lent the queue, see [`Lent`]); each with its run.
    general_running: Vec<(String, String)>,
    lent: Arc<Lent>,
    async_queues: HashMap<String, VecDeque<Work>>,
    /// Async parents in the order they first arrived, for fair starts.
    async_order: VecDeque<String>,
    async_busy: HashSet<String>,
    running: usize,
    cap: usize,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn not_run(job_id: &str, info: String) -> Outcome {
    let now = unix_ms();
    Outcome {
        job_id: job_id.to_string(),
        state: ResultState::Failed,
        stdout: String::new(),
        stderr: String::new(),
        info,
        execution_secs: 0.0,
        started_unix_ms: now,
        finished_unix_ms: now,
    }
}

impl Actor {
    /// The actor, its inbox and its events.
    fn new(
        cache: Arc<Cache>,
        config: ExecutorConfig,
    ) -> (Actor, mpsc::Sender<Msg>, mpsc::Receiver<ExecEvent>) {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let (events_tx, events_rx) = mpsc::channel(CHANNEL_DEPTH);
        let (done_tx, done_rx) = mpsc::channel(CHANNEL_DEPTH);
        let actor = Actor {
            rx,
            done_rx,
            done_tx,
            events: events_tx,
            cache,
            locks: Arc::new(Locks::default()),
            general: VecDeque::new(),
            general_running: Vec::new(),
            lent: Arc::new(Lent::default()),
            async_queues: HashMap::new(),
            async_order: VecDeque::new(),
            async_busy: HashSet::new(),
            running: 0,
            cap: config.async_cap.max(1),
            coordinator: config.coordinator,
            processes: config.processes,
        };
        (actor, tx, events_rx)
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(Msg::Submit(work)) => self.submit(*work).await,
                    Some(Msg::Snapshot(reply)) => {
                        let queued = self.general.len() + self.async_queues.values().map(VecDeque::len).sum::<usize>();
                        let running = self.running + self.general_running.len();
                        let _ = reply.send(QueueSnapshot { queued, running });
                    }
                    None => return,
                },
                Some(done) = self.done_rx.recv() => self.done(done).await,
                // A synchronous job began or stopped waiting for other nodes.
                _ = self.lent.changed.notified() => {}
            }
            self.dispatch();
        }
    }

    /// Reports a job settled without running (omitted, its parent failed).
    async fn emit(&self, outcome: Outcome) {
        // Written down like a start: after a restart the job is not taken for one that never
        // started, and run after all.
        if let Some(log) = &self.processes
            && log.job_started(&outcome.job_id) == Err(NotStarted::Stopping)
        {
            return;
        }
        // A closed receiver means the node is stopping; nothing is left to tell.
        let _ = self.events.send(ExecEvent::Finished(outcome)).await;
    }

    async fn submit(&mut self, mut work: Work) {
        if matches!(work.spec.component, Component::Queuesentinel) {
            // It runs at once, beside any queue: its end must not free its parent's queue (an
            // async parent's next job would start beside the one running).
            work.queue = QueueKind::Bypass;
            let purged = self.purge(|_| true);
            let count = purged.len();
            for w in purged {
                self.emit(not_run(
                    &w.job_id,
                    format!("{OMITTED}QUEUESENTINEL {} emptied the queue", work.job_id),
                ))
                .await;
            }
            self.start(work, Some(format!("purged {count} queued jobs")));
            return;
        }
        if self.cache.parent_failed(&work.parent_id) {
            let info = format!("{NOT_RUN}an earlier job of this parent failed on this node");
            self.emit(not_run(&work.job_id, info)).await;
            return;
        }
        match work.queue {
            QueueKind::Bypass => self.start(work, None),
            QueueKind::Sync => self.general.push_back(work),
            QueueKind::Async => {
                let parent = work.parent_id.clone();
                let queue = self.async_queues.entry(parent.clone()).or_default();
                if queue.is_empty() && !self.async_busy.contains(&parent) {
                    self.async_order.push_back(parent);
                }
                queue.push_back(work);
            }
        }
    }

    /// Removes queued (not running) jobs matching `pred`.
    fn purge(&mut self, pred: impl Fn(&Work) -> bool) -> Vec<Work> {
        let mut out = Vec::new();
        let general = std::mem::take(&mut self.general);
        for w in general {
            if pred(&w) {
                out.push(w);
            } else {
                self.general.push_back(w);
            }
        }
        for queue in self.async_queues.values_mut() {
            let taken = std::mem::take(queue);
            for w in taken {
                if pred(&w) {
                    out.push(w);
                } else {
                    queue.push_back(w);
                }
            }
        }
        // An emptied queue goes; its parent's next job makes a new one (and one still
        // running finds none, see `done`).
        self.async_queues.retain(|_, queue| !queue.is_empty());
        out
    }

    async fn done(&mut self, done: Done) {
        match done.queue {
            QueueKind::Sync => self.general_running.retain(|(job, _)| *job != done.job_id),
            QueueKind::Async => {
                self.async_busy.remove(&done.parent_id);
                self.running = self.running.saturating_sub(1);
                if self
                    .async_queues
                    .get(&done.parent_id)
                    .is_some_and(|q| !q.is_empty())
                {
                    self.async_order.push_back(done.parent_id.clone());
                } else {
                    // Nothing of the parent runs or waits: its queue goes (a node runs
                    // countless async parents, each once).
                    self.async_queues.remove(&done.parent_id);
                }
            }
            QueueKind::Bypass => {}
        }
        if done.failed {
            let parent = done.parent_id.clone();
            let stopped = self.purge(|w| w.parent_id == parent);
            for w in stopped {
                let info = format!(
                    "{NOT_RUN}job {} of this parent failed on this node",
                    done.job_id
                );
                self.emit(not_run(&w.job_id, info)).await;
            }
        }
    }

    fn dispatch(&mut self) {
        // One synchronous job at a time; while every running one waits for other nodes, the
        // next job of another run may start (its own run's jobs stay in order behind it).
        if self.lent.all_waiting(&self.general_running) {
            let busy: HashSet<&str> = self
                .general_running
                .iter()
                .map(|(_, run)| run.as_str())
                .collect();
            let next = self
                .general
                .iter()
                .position(|w| !busy.contains(w.run_id.as_str()));
            if let Some(work) = next.and_then(|i| self.general.remove(i)) {
                self.general_running
                    .push((work.job_id.clone(), work.run_id.clone()));
                self.start(work, None);
            }
        }
        let mut deferred = VecDeque::new();
        while let Some(parent) = self.async_order.pop_front() {
            if self.async_busy.contains(&parent) {
                continue;
            }
            if self.running >= self.cap {
                deferred.push_back(parent);
                continue;
            }
            let next = self
                .async_queues
                .get_mut(&parent)
                .and_then(VecDeque::pop_front);
            match next {
                Some(work) => {
                    self.async_busy.insert(parent);
                    self.running += 1;
                    self.start(work, None);
                }
                None => {
                    self.async_queues.remove(&parent);
                }
            }
        }
        self.async_order = deferred;
    }

    /// Runs `work` in its own task; `note` is added to the info of a successful result.
    fn start(&self, work: Work, note: Option<String>) {
        // Written down before the job does anything: after a restart, a job of an accepted
        // run that is not in the log never started and may run; one that is, is interrupted.
        let unrecorded = match self
            .processes
            .as_ref()
            .map(|log| log.job_started(&work.job_id))
        {
            // The node is stopping: the job stays pending, to run after the restart.
            Some(Err(NotStarted::Stopping)) => return,
            Some(Err(e)) => Some(format!("{NOT_RUN}{e}")),
            Some(Ok(())) | None => None,
        };
        let end = JobEnd {
            job_id: work.job_id.clone(),
            parent_id: work.parent_id.clone(),
            queue: work.queue,
            note,
            cache: self.cache.clone(),
            events: self.events.clone(),
            done_tx: self.done_tx.clone(),
        };
        if let Some(why) = unrecorded {
            tokio::spawn(end.report(not_run(&work.job_id, why), true));
            return;
        }
        let cache = self.cache.clone();
        let locks = self.locks.clone();
        let events = self.events.clone();
        let coordinator = self.coordinator.clone();
        let processes = self.processes.clone();
        let lender = (work.queue == QueueKind::Sync).then(|| LentJob {
            lent: Arc::clone(&self.lent),
            job_id: work.job_id.clone(),
        });
        // In a task of its own, so that a job that fails in an unforeseen way (a panic)
        // still ends as a failed result and frees its queue.
        let run = tokio::spawn(async move {
            let lender = lender.as_ref().map(|l| l as &dyn QueueLender);
            execute(
                work,
                &cache,
                &locks,
                &events,
                coordinator,
                processes,
                lender,
            )
            .await
        });
        tokio::spawn(async move {
            match run.await {
                Ok(outcome) => end.report(outcome, false).await,
                Err(e) => {
                    let outcome =
                        not_run(&end.job_id, format!("the job stopped unexpectedly: {e}"));
                    end.report(outcome, true).await;
                }
            }
        });
    }
}

/// What is left to do once a job is over, however it ended: its result, and its queue's turn.
struct JobEnd {
    job_id: String,
    parent_id: String,
    queue: QueueKind,
    /// Said in the info of a job that succeeded (why it ran as it did).
    note: Option<String>,
    cache: Arc<Cache>,
    events: mpsc::Sender<ExecEvent>,
    done_tx: mpsc::Sender<Done>,
}

impl JobEnd {
    /// Reports `outcome`. `failed_unrun`: the job failed without running (or its run broke
    /// off). A job that ran records its parent's failure itself; this one does so here, so
    /// that the rest of its parent stays stopped after a restart too.
    async fn report(self, mut outcome: Outcome, failed_unrun: bool) {
        if failed_unrun {
            self.cache.fail_parent(&self.parent_id);
        }
        if let Some(note) = self.note
            && outcome.state.is_ok()
        {
            outcome.info = note;
        }
        let failed = outcome.state == ResultState::Failed;
        let _ = self.events.send(ExecEvent::Finished(outcome)).await;
        let _ = self
            .done_tx
            .send(Done {
                job_id: self.job_id,
                parent_id: self.parent_id,
                queue: self.queue,
                failed,
            })
            .await;
    }
}

/// The synchronous jobs that wait for other nodes, and a wake-up for the executor when that
/// changes. A QUERY waiting for the other nodes' values, a QUERY_WAIT or a JOB_WAIT lends the
/// queue meanwhile: two submitters' runs queued in opposite orders on two nodes would
/// otherwise each hold a node's queue waiting for what the other node's queue has not reached.
#[derive(Default)]
struct Lent {
    waiting: Mutex<HashSet<String>>,
    changed: Notify,
}

impl Lent {
    fn all_waiting(&self, running: &[(String, String)]) -> bool {
        // Only this module locks it, briefly; a poisoned set is still consistent.
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        running.iter().all(|(job, _)| waiting.contains(job))
    }

    fn set(&self, job_id: &str, waits: bool) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waits {
            waiting.insert(job_id.to_string());
        } else {
            waiting.remove(job_id);
        }
        drop(waiting);
        self.changed.notify_one();
    }
}

/// One synchronous job's way to lend its queue.
struct LentJob {
    lent: Arc<Lent>,
    job_id: String,
}

/// The queue is lent until this is dropped.
struct Lending<'a>(&'a LentJob);

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        self.0.lent.set(&self.0.job_id, false);
    }
}

impl QueueLender for LentJob {
    fn lend(&self) -> Box<dyn Send + Sync + '_> {
        self.lent.set(&self.job_id, true);
        Box::new(Lending(self))
    }
}

/// Extra time the executor gives a component past its own deadline to clean up (kill its
/// process group) before it is abandoned.
const CLEANUP_GRACE: Duration = Duration::from_secs(2);

/// Whether `spec` is a RUN with `--stdout-arg` whose arg is no longer cached (a CACHEEVICT
/// of args since its success): it runs again, or jobs after it would miss that value.
fn arg_it_sets_is_gone(spec: &JobSpec, cache: &Cache) -> bool {
    match &spec.component {
        Component::Run {
            stdout_arg: Some(name),
            ..
        } => !cache.has_arg(name),
        _ => false,
    }
}

/// Runs one job here: the cache check, its locks, its component, then the record of its result.
async fn execute(
    work: Work,
    cache: &Cache,
    locks: &Locks,
    events: &mpsc::Sender<ExecEvent>,
    coordinator: Option<Arc<dyn Coordinator>>,
    processes: Option<Arc<ProcessLog>>,
    queue: Option<&dyn QueueLender>,
) -> Outcome {
    let started_unix_ms = unix_ms();
    let verb = work.spec.verb();
    // A templated job's args as it is about to render with them (see `rendered_with`).
    let rendered = rendered_with(&work.spec, || cache.args_for_run(&work.run_id));
    if succeeded_within_ttl(verb, &work, cache, rendered) {
        return skipped(work.job_id, started_unix_ms);
    }
    // See `Verb::waits_for_other_nodes`: a wait that held the global lock shared would keep a
    // `--force-lock` job queued after it waiting, and every job after that one, possibly the
    // very job it waits for on this node (until its timeout).
    let _global = match verb.waits_for_other_nodes() && !work.spec.force_lock {
        true => None,
        false => Some(locks.global(work.spec.force_lock).await),
    };
    let named = verb.lock().map(|name| locks.named(name));
    // ADD/COPY take theirs only to land the file (see `Context::landing_lock`).
    let lock_to_land = matches!(work.spec.component, Component::Add(_) | Component::Copy(_));
    let _named = match &named {
        Some(lock) if !lock_to_land => Some(lock.lock().await),
        _ => None,
    };
    // The args as they are now: a job that waited for its locks renders with those, and its
    // success is cached as rendered with them (an ARG meanwhile would otherwise leave the
    // digest of before: a later run with these args would run it again, and one with the
    // args of before would skip it).
    let rendered = match rendered {
        Some(_) => rendered_with(&work.spec, || cache.args_for_run(&work.run_id)),
        None => None,
    };

    // Live output: lines go to the node as they come, when asked.
    let (sink, forward) = work
        .stream
        .then(|| forward_output(&work.job_id, events))
        .unzip();
    let clock = Instant::now();
    let deadline = clock + crate::spec::bounded_secs(work.spec.timeout_secs);
    let finished = run_component(
        &work.spec,
        &components::Context {
            job_id: &work.job_id,
            run_id: &work.run_id,
            cache,
            sink: sink.as_ref(),
            deadline,
            coordinator: coordinator.as_deref(),
            processes: processes.as_deref(),
            queue,
            landing_lock: named.as_ref().filter(|_| lock_to_land),
        },
    )
    .await;
    let execution_secs = clock.elapsed().as_secs_f64();
    drop(sink);
    if let Some(forward) = forward {
        // Output lines reach the node before the result does.
        finish_output(forward, &work.job_id, &finished, events).await;
    }
    // The node stopping asked the job to end (SIGTERM): however it ended, it did not run
    // through.
    let stopping = processes.as_deref().is_some_and(ProcessLog::terminating);
    record_result(
        work,
        finished,
        cache,
        rendered,
        execution_secs,
        started_unix_ms,
        stopping,
    )
}

/// Whether the job already succeeded on this node within the cache TTL, and is skipped.
fn succeeded_within_ttl(
    verb: Verb,
    work: &Work,
    cache: &Cache,
    rendered: Option<Fingerprint>,
) -> bool {
    verb.cacheable()
        && !work.spec.skip_cache
        && cache.succeeded(&work.fingerprint, rendered)
        && !arg_it_sets_is_gone(&work.spec, cache)
}

/// The outcome of a job skipped as already succeeded.
fn skipped(job_id: String, started_unix_ms: u64) -> Outcome {
    Outcome {
        job_id,
        state: ResultState::Skipped,
        stdout: String::new(),
        stderr: String::new(),
        info: "skipped: it already succeeded on this node within the cache TTL".into(),
        execution_secs: 0.0,
        started_unix_ms,
        finished_unix_ms: unix_ms(),
    }
}

/// Sends the job's output lines to the node as they come; the task returns the streams used.
fn forward_output(
    job_id: &str,
    events: &mpsc::Sender<ExecEvent>,
) -> (LineSink, JoinHandle<Vec<OutputStream>>) {
    let (tx, mut rx) = mpsc::channel::<OutputLine>(256);
    let events = events.clone();
    let job_id = job_id.to_owned();
    let forward = tokio::spawn(async move {
        let mut streamed = Vec::new();
        while let Some(line) = rx.recv().await {
            if !streamed.contains(&line.stream) {
                streamed.push(line.stream);
            }
            let _ = events
                .send(ExecEvent::Output {
                    job_id: job_id.clone(),
                    line,
                })
                .await;
        }
        streamed
    });
    (tx, forward)
}

/// Runs the job's component until its deadline, plus the grace it has to clean up.
async fn run_component(spec: &JobSpec, context: &components::Context<'_>) -> components::Finished {
    match tokio::time::timeout_at(
        context.deadline + CLEANUP_GRACE,
        components::run(&spec.component, context),
    )
    .await
    {
        Ok(f) => f,
        Err(_) => {
            components::Finished::fail("", format!("timed out after {} s", spec.timeout_secs))
        }
    }
}

/// Waits for the live output to reach the node, then streams what the job did not stream live.
async fn finish_output(
    forward: JoinHandle<Vec<OutputStream>>,
    job_id: &str,
    finished: &components::Finished,
    events: &mpsc::Sender<ExecEvent>,
) {
    let streamed = forward.await.unwrap_or_default();
    // A component that prints only when it ends (ECHO, WAIT, ARG...) streams what it
    // printed now, so a reader sees every job's output in the order the jobs ran.
    for (stream, text) in [
        (OutputStream::Stdout, &finished.stdout),
        (OutputStream::Stderr, &finished.stderr),
    ] {
        if streamed.contains(&stream) {
            continue;
        }
        let mut offset = 0;
        for piece in text.split_inclusive('\n') {
            let line = OutputLine {
                stream,
                offset,
                text: piece.to_string(),
            };
            offset += piece.len() as u64;
            let _ = events
                .send(ExecEvent::Output {
                    job_id: job_id.to_owned(),
                    line,
                })
                .await;
        }
    }
}

/// Records how the job ended in the cache (its own state and its parent's) and makes its
/// outcome. A job its node asked to end as it stopped (`stopping`) ran through whatever it
/// says: nothing is cached (a success would skip it next time), and its outcome is
/// interrupted, should it still be taken in (after the restart it is reported so anyway).
fn record_result(
    work: Work,
    mut finished: components::Finished,
    cache: &Cache,
    rendered: Option<Fingerprint>,
    execution_secs: f64,
    started_unix_ms: u64,
    stopping: bool,
) -> Outcome {
    if stopping {
        finished.success = false;
        finished.info = format!(
            "interrupted: its node was stopping and asked it to end (SIGTERM); {}",
            finished.info
        );
    }
    let state = if finished.success {
        ResultState::Success
    } else {
        ResultState::Failed
    };
    if !stopping {
        cache.record_rendered(
            &work.fingerprint,
            &work.parent_id,
            if finished.success {
                CachedState::Success
            } else {
                CachedState::Failed
            },
            rendered,
        );
    }
    Outcome {
        job_id: work.job_id,
        state,
        stdout: finished.stdout,
        stderr: finished.stderr,
        info: finished.info,
        execution_secs,
        started_unix_ms,
        finished_unix_ms: unix_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(inline: &str) -> JobSpec {
        match JobSpec::parse("RUN", inline, &Default::default()) {
            Ok(crate::ParseOutcome::Spec(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    /// The locks jobs take (`run_job` holds them while the job runs): verbs that share a lock
    /// (ARG and ENV, ADD and COPY) share one mutex, other locks are apart, and the global
    /// lock a `--force-lock` job takes alone excludes every other job, both ways.
    #[tokio::test]
    async fn verbs_share_their_named_locks_and_force_lock_excludes_every_job() {
        use crate::spec::Verb;
        let held = |lock: &Arc<tokio::sync::Mutex<()>>| lock.try_lock().is_err();
        assert_eq!(Verb::Arg.lock(), Verb::Env.lock());
        assert_eq!(Verb::Add.lock(), Verb::Copy.lock());
        assert_eq!(Verb::Run.lock(), None);
        let locks = Locks::default();
        let arg = locks.named(Verb::Arg.lock().unwrap());
        let guard = arg.lock().await;
        // ENV's lock is the one ARG holds; the copy lock is free.
        assert!(held(&locks.named(Verb::Env.lock().unwrap())));
        assert!(!held(&locks.named(Verb::Copy.lock().unwrap())));
        drop(guard);
        assert!(!held(&locks.named(Verb::Env.lock().unwrap())));
        // Every job holds the global lock shared; a force-locked one waits for them all.
        let shared = locks.global(false).await;
        let another = locks.global(false).await;
        let alone = tokio::time::timeout(Duration::from_millis(50), locks.global(true)).await;
        assert!(alone.is_err(), "a force-locked job ran beside others");
        drop((shared, another));
        let alone = locks.global(true).await;
        let beside = tokio::time::timeout(Duration::from_millis(50), locks.global(false)).await;
        assert!(beside.is_err(), "a job ran beside a force-locked one");
        drop(alone);
        drop(locks.global(false).await);
    }

    /// Once an async parent has nothing running or queued, its queue is gone: a node runs
    /// countless parents, each once. Whether its jobs all succeeded, one failed (the rest of
    /// the parent is dropped), or a QUEUESENTINEL emptied its queue while a job of it ran.
    #[tokio::test]
    async fn an_async_parent_leaves_no_queue_behind() {
        let cache = Arc::new(Cache::in_memory(crate::cache::DEFAULT_TTL));
        let (mut actor, _inbox, mut events) = Actor::new(cache, ExecutorConfig::default());
        let work = |job_id: &str, parent: &str, inline: &str| {
            let spec = spec(&format!("--skip-cache {inline}"));
            Work {
                job_id: job_id.into(),
                run_id: "r".into(),
                parent_id: parent.into(),
                queue: QueueKind::Async,
                fingerprint: spec.fingerprint(),
                spec,
                stream: false,
            }
        };
        // Lets every job started so far end.
        async fn settle(actor: &mut Actor) {
            actor.dispatch();
            while actor.running > 0 {
                let done = tokio::time::timeout(Duration::from_secs(30), actor.done_rx.recv())
                    .await
                    .expect("a job never ended")
                    .expect("the executor's own channel is open");
                actor.done(done).await;
                actor.dispatch();
            }
        }
        for (job_id, parent, inline) in [
            ("a1", "a", "true"),
            ("a2", "a", "true"),
            ("b1", "b", "true"),
            ("c1", "c", "false"),
            ("c2", "c", "true"),
        ] {
            actor.submit(work(job_id, parent, inline)).await;
        }
        settle(&mut actor).await;
        assert!(
            actor.async_queues.is_empty(),
            "queues left: {:?}",
            actor.async_queues.keys().collect::<Vec<_>>()
        );
        // A QUEUESENTINEL empties a queue whose parent still runs a job.
        actor.submit(work("d1", "d", "sleep 0.3")).await;
        actor.submit(work("d2", "d", "true")).await;
        actor.dispatch();
        assert_eq!(actor.running, 1);
        let sentinel = match JobSpec::parse("QUEUESENTINEL", "", &Default::default()) {
            Ok(crate::ParseOutcome::Spec(s)) => s,
            other => panic!("{other:?}"),
        };
        actor
            .submit(Work {
                job_id: "sentinel".into(),
                run_id: "r".into(),
                parent_id: "s".into(),
                queue: QueueKind::Bypass,
                fingerprint: sentinel.fingerprint(),
                spec: sentinel,
                stream: false,
            })
            .await;
        settle(&mut actor).await;
        assert!(
            actor.async_queues.is_empty() && actor.async_busy.is_empty(),
            "queues left: {:?}",
            actor.async_queues.keys().collect::<Vec<_>>()
        );
        let mut finished = HashSet::new();
        while let Ok(event) = events.try_recv() {
            if let ExecEvent::Finished(o) = event {
                finished.insert(o.job_id);
            }
        }
        // The sentinel itself (Bypass) may still be on its way; every other job settled.
        for job in ["a1", "a2", "b1", "c1", "c2", "d1", "d2"] {
            assert!(finished.contains(job), "{job} did not settle: {finished:?}");
        }
    }

    /// A templated job that waits for its locks while the args change renders with the args
    /// of when it runs, and its success is cached as rendered with those.
    #[tokio::test]
    async fn a_job_that_waited_for_its_locks_is_cached_with_the_args_it_ran_with() {
        let cache = Cache::in_memory(crate::cache::DEFAULT_TTL);
        let args = |a: i64| serde_json::Map::from_iter([("a".to_string(), serde_json::json!(a))]);
        cache.merge_args(args(1), false);
        let locks = Locks::default();
        let (events, _rx) = mpsc::channel(16);
        let job = spec("echo {{ a }}");
        let work = Work {
            job_id: "j".into(),
            run_id: "r".into(),
            parent_id: "p".into(),
            queue: QueueKind::Sync,
            fingerprint: job.fingerprint(),
            spec: job.clone(),
            stream: false,
        };
        // Another job runs alone meanwhile (`--force-lock`): this one waits.
        let alone = locks.global(true).await;
        let running = execute(work, &cache, &locks, &events, None, None, None);
        tokio::pin!(running);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut running)
                .await
                .is_err(),
            "the job ran while another held the node alone"
        );
        cache.merge_args(args(2), false);
        drop(alone);
        let outcome = running.await;
        assert_eq!(outcome.stdout, "2", "{outcome:?}");
        let now = rendered_with(&job, || cache.args_for_run("r"));
        assert!(cache.succeeded(&job.fingerprint(), now));
        cache.merge_args(args(1), false);
        let before = rendered_with(&job, || cache.args_for_run("r"));
        assert!(!cache.succeeded(&job.fingerprint(), before));
    }

    /// A job whose start cannot be written down is not run, fails, and marks its parent
    /// failed in the cache: after a restart the rest of the parent stays stopped too.
    #[tokio::test]
    async fn a_job_whose_start_cannot_be_written_down_fails_its_parent_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        let log = Arc::new(log);
        log.restored();
        let blocker = dir.path().join("blocker");
        std::fs::create_dir_all(blocker.join("inside")).unwrap();
        log.refuse_writes(&blocker);
        let cache = Arc::new(Cache::in_memory(crate::cache::DEFAULT_TTL));
        let (exec, mut events) = Executor::start(
            Arc::clone(&cache),
            ExecutorConfig {
                processes: Some(Arc::clone(&log)),
                ..ExecutorConfig::default()
            },
        );
        let marker = dir.path().join("ran");
        let spec = |inline: &str| match JobSpec::parse("RUN", inline, &Default::default()) {
            Ok(crate::ParseOutcome::Spec(s)) => s,
            other => panic!("{other:?}"),
        };
        for (job_id, inline) in [
            ("first", format!("--skip-cache touch {}", marker.display())),
            ("second", "--skip-cache true".to_string()),
        ] {
            let spec = spec(&inline);
            exec.submit(Work {
                job_id: job_id.into(),
                run_id: "r".into(),
                parent_id: "p".into(),
                queue: QueueKind::Sync,
                fingerprint: spec.fingerprint(),
                spec,
                stream: false,
            })
            .await
            .unwrap();
        }
        let mut done = HashMap::new();
        while done.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .expect("the executor went quiet")
                .expect("the executor stopped");
            if let ExecEvent::Finished(o) = event {
                done.insert(o.job_id.clone(), o);
            }
        }
        let first = &done["first"];
        assert_eq!(first.state, ResultState::Failed);
        assert!(first.info.starts_with("not run: "), "{}", first.info);
        assert!(!marker.exists(), "the unrecorded job ran");
        assert_eq!(done["second"].state, ResultState::Failed);
        assert!(
            cache.parent_failed("p"),
            "the parent is not failed in the cache"
        );
    }
}
