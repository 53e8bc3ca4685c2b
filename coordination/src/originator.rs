//! The originator's run tracker: the node that submitted a run is its temporary server.
//!
//! Sans-IO: [`Originator::handle`] takes an [`Input`] and the current time and returns the
//! [`Action`]s to carry out. Gossip is the fast path and direct delivery the reliable one: the
//! run is announced once (or, for a few targets, delivered directly), every target acknowledges,
//! and targets that have not acknowledged are sent the run directly again, with backoff, until
//! they do or leave the mesh. A target that leaves with results outstanding has those jobs
//! reported unreachable. A run is finished once every expected (job, node) result is in.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::message::{NodeId, Run};

mod alive;
mod owed;

use alive::AliveChecks;
use owed::Owed;

/// Tuning of the tracker.
#[derive(Debug, Clone)]
pub struct OriginatorConfig {
    /// First direct resend to a target that has not acknowledged, after the announce.
    pub first_resend: Duration,
    /// Resends back off up to this interval.
    pub max_resend: Duration,
    /// With at most this many remote targets, deliver directly instead of gossiping.
    pub direct_up_to: usize,
    /// A run delivered only directly that a target has not acknowledged this long after it
    /// was sent is announced by gossip too: a target alive through other nodes but out of
    /// this node's reach (a partial partition) gets it through them and runs it at once; its
    /// acknowledgement and results come back when this node can reach it again.
    pub announce_direct_after: Duration,
    /// How long a target written off as unreachable still gets its jobs if it comes back: its
    /// results then replace the `unreachable` ones. Beyond this, unreachable is final.
    pub written_off_for: Duration,
    /// Direct resends per run and round, at most (taken in turn from the targets that have
    /// not acknowledged). With more targets than this unacknowledged, a gossiped run is also
    /// announced again when the announce stalls (since the previous round it reached fewer
    /// targets than still wait for it): after a partition heals, one flood reaches the far
    /// side faster, and costs the originator far less upload, than a resend to each of
    /// thousands of targets. While the announce still spreads (a large or busy mesh), a new
    /// one would only make every target check and acknowledge it again.
    pub resend_batch: usize,
    /// After a restart with runs to resume, how long before the targets that still owe
    /// results and are not alive are written off: they may have expired while this node was
    /// down, which no membership change reports to it.
    pub resumed_alive_check: Duration,
    /// After a submission, how soon the targets that owe results and are not alive are
    /// written off: one may have expired between the membership read that named it and the
    /// run reaching this tracker, which no later membership change reports. Submissions that
    /// come meanwhile share the check.
    pub submitted_alive_check: Duration,
    /// How long a target that said goodbye (stopped, or restarting) has to come back before it
    /// is written off: a restarted node takes its queued jobs up again and reports them, so a
    /// routine restart does not fail a run. The daemon gives it as long as a target that went
    /// silent (three heartbeats), and at least this default's 15 s.
    pub left_grace: Duration,
}

impl Default for OriginatorConfig {
    fn default() -> Self {
        OriginatorConfig {
            first_resend: Duration::from_millis(500),
            max_resend: Duration::from_secs(10),
            direct_up_to: 2,
            announce_direct_after: Duration::from_secs(2),
            written_off_for: Duration::from_secs(600),
            resend_batch: 32,
            resumed_alive_check: Duration::from_secs(30),
            submitted_alive_check: Duration::from_secs(2),
            left_grace: Duration::from_secs(15),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A new run from this node.
    Submit(Run),
    /// A run this node submitted before a restart, with what is already known of it.
    /// `queued_here`: this node's own jobs of it that had not started before the restart and
    /// are queued again (their results are awaited like any other).
    /// `written_off`: its targets' jobs written off before the restart; those that come back
    /// within [`OriginatorConfig::written_off_for`] of it are sent them, as without a restart.
    Resume {
        run: Run,
        acked: Vec<NodeId>,
        reported: Vec<(String, NodeId)>,
        written_off: Vec<WriteOffBefore>,
        queued_here: HashSet<String>,
    },
    /// A run this node submitted that was over before a restart, but for targets written off
    /// within [`OriginatorConfig::written_off_for`]: those that come back are sent their jobs.
    WrittenOffBefore {
        run: Run,
        written_off: Vec<WriteOffBefore>,
    },
    /// A target has queued the run.
    Acked { run_id: String, node: NodeId },
    /// A target reported a job's result (what it says is the node's business).
    Result {
        run_id: String,
        job_id: String,
        node: NodeId,
    },
    /// A target expired (went silent): it is written off.
    NodeGone(NodeId),
    /// A target said goodbye: it is written off if not back within
    /// [`OriginatorConfig::left_grace`].
    NodeLeft(NodeId),
    /// A node is alive again (a partition healed, a restart), or new. A target written off
    /// that had not acknowledged the run is resent it; one that had has it on disk.
    NodeBack(NodeId),
    /// The nodes alive now: the answer to the [`Action::CheckAlive`] of number `check`.
    Alive { check: u64, alive: Vec<NodeId> },
    /// Time passed.
    Tick,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Gossip the run to the whole mesh.
    Announce(Arc<Run>),
    /// Send the run to one target directly. (Shared: a resend round to thousands of targets
    /// must not copy a run with thousands of targets for each of them.)
    Deliver { node: NodeId, run: Arc<Run> },
    /// This node is a target: hand the run to the local executor.
    DeliverLocal(Arc<Run>),
    /// These jobs will never report from `node`: record them failed as unreachable.
    Unreachable {
        run_id: String,
        node: NodeId,
        job_ids: Vec<String>,
    },
    /// This node's own jobs of a run it resumed after a restart, not reported before it
    /// stopped: the restart cut them short (they were queued or running here), so record them
    /// failed as interrupted.
    Interrupted {
        run_id: String,
        job_ids: Vec<String>,
    },
    /// Every expected result of the run is in (or unreachable).
    Finished { run_id: String },
    /// Say which nodes are alive now ([`Input::Alive`], with this `check` number).
    CheckAlive { check: u64 },
}

struct Tracked {
    run: Arc<Run>,
    /// How many of the run's targets are other nodes: a run of a few is announced after
    /// all when a direct delivery is not acknowledged in time.
    remote: usize,
    unacked: BTreeSet<NodeId>,
    /// The results still expected.
    owed: Owed,
    resend_at: Instant,
    resend_every: Duration,
    /// Whether the run goes by gossip (else only direct deliveries).
    gossiped: bool,
    /// For a run not gossiped: when it is announced after all if a target has still not
    /// acknowledged it ([`OriginatorConfig::announce_direct_after`]).
    announce_at: Option<Instant>,
    /// Where the next resend round starts in `unacked`.
    cursor: usize,
    /// Unacknowledged targets that were sent the run directly (by the resend rounds): their
    /// acknowledgements say nothing about the announce.
    sent_directly: HashSet<NodeId>,
    /// Targets that acknowledged since the previous round without being sent the run
    /// directly: the announce reached them. A round that finds fewer than still wait for it
    /// announces again.
    reached_by_gossip: usize,
    /// When the run's targets are checked for being alive (once, after it is submitted or
    /// resumed: see [`OriginatorConfig::submitted_alive_check`]).
    alive_check: AliveCheck,
}

/// Where a run stands with its one check of which of its targets are alive.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AliveCheck {
    Due(Instant),
    /// Asked with the check of this number ([`Action::CheckAlive`]); its answer is for
    /// this run.
    Asked(u64),
    Done,
}

impl Tracked {
    /// A run to track from `now` on, first resent at once.
    fn new(
        run: Arc<Run>,
        remote: usize,
        unacked: BTreeSet<NodeId>,
        owed: Owed,
        now: Instant,
        config: &OriginatorConfig,
        gossiped: bool,
    ) -> Self {
        Tracked {
            run,
            remote,
            unacked,
            owed,
            resend_at: now,
            resend_every: config.first_resend,
            gossiped,
            announce_at: None,
            cursor: 0,
            sent_directly: HashSet::new(),
            reached_by_gossip: 0,
            alive_check: AliveCheck::Done,
        }
    }

    /// A run over, tracked again for a target written off in it that is back. A run of many
    /// targets goes by gossip again: after a split heals, the rounds announce it to the
    /// targets back that have not acknowledged it.
    fn again(run: Arc<Run>, local: &NodeId, now: Instant, config: &OriginatorConfig) -> Self {
        let remote = remote_targets(&run, local);
        let gossiped = remote > config.direct_up_to;
        Tracked::new(
            run,
            remote,
            BTreeSet::new(),
            Owed::default(),
            now,
            config,
            gossiped,
        )
    }

    /// `node`, back, is owed the run: resent in the next round, at once if no other target
    /// waits for it (a new backoff, and what the announce reached is counted anew), else
    /// within [`OriginatorConfig::first_resend`] (the rounds under way take it in turn, and
    /// announce again if many are waiting).
    fn resend_to(&mut self, node: NodeId, now: Instant, config: &OriginatorConfig) {
        let first = self.unacked.is_empty();
        if !self.unacked.insert(node) {
            return;
        }
        if first {
            self.resend_every = config.first_resend;
            self.resend_at = now;
            self.reached_by_gossip = 0;
        } else {
            self.resend_at = self.resend_at.min(now + config.first_resend);
        }
        self.announce_unless_acknowledged(now, config);
    }

    /// `node` has the run (it acknowledged it or reported a result).
    fn acknowledged(&mut self, node: &NodeId) {
        if self.unacked.remove(node) && !self.sent_directly.remove(node) {
            self.reached_by_gossip += 1;
        }
        if self.unacked.is_empty() {
            // Every target has it: a target back later gets it directly, and its own
            // deadline to be announced after all.
            self.announce_at = None;
        }
    }

    /// `node` is gone: nothing is owed to it any more (its deadline to be announced after
    /// all goes with it, if nobody else is owed the run).
    fn gone(&mut self, node: &NodeId) {
        self.unacked.remove(node);
        self.sent_directly.remove(node);
        if self.unacked.is_empty() {
            self.announce_at = None;
        }
    }

    /// Announces the run by gossip after all if `node`, just sent it directly, has not
    /// acknowledged within [`OriginatorConfig::announce_direct_after`]: only for a run of a
    /// few targets (of a large one, everyone would check and acknowledge the announce again).
    fn announce_unless_acknowledged(&mut self, now: Instant, config: &OriginatorConfig) {
        if self.remote <= config.direct_up_to && self.announce_at.is_none() {
            self.announce_at = Some(now + config.announce_direct_after);
        }
    }
}

/// The tracker of every run this node submitted and that is not finished.
pub struct Originator {
    local: NodeId,
    config: OriginatorConfig,
    runs: HashMap<String, Tracked>,
    /// Per target gone with jobs still owed: the runs and jobs written off, and when.
    written_off: HashMap<NodeId, Vec<WrittenOff>>,
    /// Targets that said goodbye and are not back, and when: written off once
    /// [`OriginatorConfig::left_grace`] has passed.
    left: HashMap<NodeId, Instant>,
    /// The checks of which nodes are alive, asked and answered.
    checks: AliveChecks,
}

struct WrittenOff {
    run: Arc<Run>,
    job_ids: Vec<String>,
    at: Instant,
    /// Whether the target had acknowledged the run (it has it on disk: a target
    /// acknowledges only then), so that, back, it is not sent it again.
    acknowledged: bool,
}

/// How many of `run`'s targets are other nodes than `local`.
fn remote_targets(run: &Run, local: &NodeId) -> usize {
    let targets = run.targets();
    targets.len() - usize::from(targets.contains(local))
}

/// A target's job written off before a restart of this node, `ago` before it resumed.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOffBefore {
    pub job_id: String,
    pub node: NodeId,
    pub ago: Duration,
}

impl Originator {
    /// How long a target that said goodbye has to come back (a restart) before it is taken
    /// for gone ([`OriginatorConfig::left_grace`]).
    pub fn left_grace(&self) -> Duration {
        self.config.left_grace
    }

    pub fn new(local: NodeId, config: OriginatorConfig) -> Self {
        Originator {
            local,
            config,
            runs: HashMap::new(),
            written_off: HashMap::new(),
            left: HashMap::new(),
            checks: AliveChecks::default(),
        }
    }

    /// Runs not finished yet.
    pub fn open_runs(&self) -> usize {
        self.runs.len()
    }

    /// Whether `run_id` is tracked here: open, or with targets written off that may still
    /// come back and report (its records are kept meanwhile: see
    /// [`Originator::runs_awaiting_results`]).
    pub fn knows(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
            || self
                .written_off
                .values()
                .flatten()
                .any(|w| w.run.run_id == run_id)
    }

    /// (job, node) results still expected for `run_id`.
    pub fn missing(&self, run_id: &str) -> usize {
        self.runs.get(run_id).map_or(0, |t| t.owed.len())
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::Submit(run) => self.submit(run, now),
            Input::Resume {
                run,
                acked,
                reported,
                written_off,
                queued_here,
            } => self.resume(
                Arc::new(run),
                acked,
                reported,
                written_off,
                queued_here,
                now,
            ),
            Input::WrittenOffBefore { run, written_off } => {
                self.written_off_before(&Arc::new(run), written_off, now);
                vec![]
            }
            Input::Acked { run_id, node } => {
                if let Some(t) = self.runs.get_mut(&run_id) {
                    t.acknowledged(&node);
                }
                vec![]
            }
            Input::Result {
                run_id,
                job_id,
                node,
            } => self.result(run_id, job_id, node),
            Input::NodeGone(node) => {
                self.left.remove(&node);
                self.gone(node, now)
            }
            Input::NodeLeft(node) => {
                if node != self.local {
                    self.left.entry(node).or_insert(now);
                }
                vec![]
            }
            Input::NodeBack(node) => {
                self.left.remove(&node);
                self.back(node, now);
                vec![]
            }
            Input::Alive { check, alive } => self.alive(check, alive, now),
            Input::Tick => self.tick(now),
        }
    }

    fn submit(&mut self, run: Run, now: Instant) -> Vec<Action> {
        let run = Arc::new(run);
        let targets = run.targets();
        let mut actions = Vec::new();
        let remote: BTreeSet<NodeId> = targets
            .iter()
            .filter(|t| **t != self.local)
            .cloned()
            .collect();
        if targets.contains(&self.local) {
            actions.push(Action::DeliverLocal(run.clone()));
        }
        let gossiped = remote.len() > self.config.direct_up_to;
        if gossiped {
            actions.push(Action::Announce(run.clone()));
        } else {
            actions.extend(remote.iter().map(|node| Action::Deliver {
                node: node.clone(),
                run: run.clone(),
            }));
        }
        let owed: Owed = run.expected_results().into_iter().collect();
        if owed.is_empty() {
            actions.push(Action::Finished {
                run_id: run.run_id.clone(),
            });
            return actions;
        }
        let mut tracked = Tracked::new(
            Arc::clone(&run),
            remote.len(),
            remote,
            owed,
            now,
            &self.config,
            gossiped,
        );
        tracked.resend_at = now + self.config.first_resend;
        if !gossiped {
            tracked.announce_unless_acknowledged(now, &self.config);
        }
        tracked.alive_check = AliveCheck::Due(now + self.config.submitted_alive_check);
        self.runs.insert(run.run_id.clone(), tracked);
        actions
    }

    fn resume(
        &mut self,
        run: Arc<Run>,
        acked: Vec<NodeId>,
        reported: Vec<(String, NodeId)>,
        written_off: Vec<WriteOffBefore>,
        queued_here: HashSet<String>,
        now: Instant,
    ) -> Vec<Action> {
        let mut reported: HashSet<(String, NodeId)> = reported.into_iter().collect();
        reported.extend(
            written_off
                .iter()
                .map(|w| (w.job_id.clone(), w.node.clone())),
        );
        self.written_off_before(&run, written_off, now);
        let mut owed: Owed = run
            .expected_results()
            .into_iter()
            .filter(|r| !reported.contains(r))
            .collect();
        if owed.is_empty() {
            return vec![Action::Finished {
                run_id: run.run_id.clone(),
            }];
        }
        let mut actions = Vec::new();
        let lost_here = self.lost_here(&mut owed, &queued_here);
        if !lost_here.is_empty() {
            actions.push(Action::Interrupted {
                run_id: run.run_id.clone(),
                job_ids: lost_here,
            });
        }
        if owed.is_empty() {
            actions.push(Action::Finished {
                run_id: run.run_id.clone(),
            });
            return actions;
        }
        let acked: HashSet<NodeId> = acked.into_iter().collect();
        let unacked: BTreeSet<NodeId> = owed
            .nodes()
            .filter(|n| **n != self.local && !acked.contains(*n))
            .cloned()
            .collect();
        let gossiped = unacked.len() > self.config.direct_up_to;
        let remote = remote_targets(&run, &self.local);
        // Resend (and announce) at once: the restart may have lost deliveries in flight.
        let mut tracked = Tracked::new(run, remote, unacked, owed, now, &self.config, gossiped);
        if gossiped {
            // Several targets never acknowledged (the announce before the restart, if it went
            // out, did not reach them): those the direct resends do not reach within a moment
            // (cut off from this node, alive through others) are announced the run again.
            // (A resend round announces only for more than a batch; one or two stragglers of
            // a large run are not worth every target checking the whole run again.)
            tracked.announce_at = Some(now + self.config.announce_direct_after);
        } else {
            tracked.announce_unless_acknowledged(now, &self.config);
        }
        tracked.alive_check = AliveCheck::Due(now + self.config.resumed_alive_check);
        self.runs.insert(tracked.run.run_id.clone(), tracked);
        actions
    }

    /// Takes out of `owed` this node's own jobs that its restart lost: what it had not
    /// reported never will be, but for the jobs it queued again (`queued_here`).
    fn lost_here(&self, owed: &mut Owed, queued_here: &HashSet<String>) -> Vec<String> {
        let (queued, lost): (Vec<String>, Vec<String>) = owed
            .take(&self.local)
            .into_iter()
            .partition(|j| queued_here.contains(j));
        for job_id in queued {
            owed.insert(job_id, self.local.clone());
        }
        lost
    }

    /// Writes off again, as of when they were, the jobs of `run` written off before a restart,
    /// so that their targets back within the window are sent them (see [`Originator::back`]).
    fn written_off_before(
        &mut self,
        run: &Arc<Run>,
        written_off: Vec<WriteOffBefore>,
        now: Instant,
    ) {
        let mut by_node: BTreeMap<NodeId, (Vec<String>, Duration)> = BTreeMap::new();
        for w in written_off {
            if w.ago >= self.config.written_off_for {
                continue;
            }
            let (job_ids, latest) = by_node.entry(w.node).or_insert((Vec::new(), w.ago));
            job_ids.push(w.job_id);
            *latest = (*latest).min(w.ago);
        }
        for (node, (mut job_ids, ago)) in by_node {
            job_ids.sort();
            self.written_off.entry(node).or_default().push(WrittenOff {
                run: Arc::clone(run),
                job_ids,
                at: now.checked_sub(ago).unwrap_or(now),
                // Not known after a restart: sent again (a target that has it refuses the
                // duplicate and only answers).
                acknowledged: false,
            });
        }
    }

    /// How long targets written off in `run_id` may still come back and be sent their jobs
    /// (`None`: no target of it is written off, or the window has passed).
    pub fn write_offs_open_for(&self, run_id: &str, now: Instant) -> Option<Duration> {
        self.written_off
            .values()
            .flatten()
            .filter(|w| w.run.run_id == run_id)
            .map(|w| (w.at + self.config.written_off_for).saturating_duration_since(now))
            .filter(|left| !left.is_zero())
            .max()
    }

    /// The runs whose results may still come in here ([`Originator::knows`] each): open
    /// ones (a target written off and back again among them), and those with targets written
    /// off that may still come back. Their records stay whatever their age.
    pub fn runs_awaiting_results(&self) -> HashSet<String> {
        self.runs
            .keys()
            .cloned()
            .chain(
                self.written_off
                    .values()
                    .flatten()
                    .map(|w| w.run.run_id.clone()),
            )
            .collect()
    }

    /// A real result (not a write-off) of `job_id` from `node`.
    fn result(&mut self, run_id: String, job_id: String, node: NodeId) -> Vec<Action> {
        // A written-off job that reported after all (its target back before this node saw it
        // alive again) is not owed any more: it is not sent again when the target comes back.
        if let Some(list) = self.written_off.get_mut(&node) {
            for w in list.iter_mut().filter(|w| w.run.run_id == run_id) {
                w.job_ids.retain(|j| *j != job_id);
            }
            list.retain(|w| !w.job_ids.is_empty());
            if list.is_empty() {
                self.written_off.remove(&node);
            }
        }
        let Some(t) = self.runs.get_mut(&run_id) else {
            return vec![];
        };
        // A result is also proof that the target has the run.
        t.acknowledged(&node);
        t.owed.remove(&job_id, &node);
        if t.owed.is_empty() {
            self.runs.remove(&run_id);
            return vec![Action::Finished { run_id }];
        }
        vec![]
    }

    fn gone(&mut self, node: NodeId, now: Instant) -> Vec<Action> {
        self.checks.gone(&node);
        self.gone_from(node, now, |_| true)
    }

    /// Writes `node` off in the runs `which` picks.
    fn gone_from(
        &mut self,
        node: NodeId,
        now: Instant,
        which: impl Fn(&Tracked) -> bool,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut finished = Vec::new();
        let window = self.config.written_off_for;
        if let Some(list) = self.written_off.get_mut(&node) {
            list.retain(|w| now.duration_since(w.at) < window);
        }
        for (run_id, t) in self.runs.iter_mut().filter(|(_, t)| which(t)) {
            let acknowledged = !t.unacked.contains(&node);
            t.gone(&node);
            let job_ids = t.owed.take(&node);
            if job_ids.is_empty() {
                continue;
            }
            self.written_off
                .entry(node.clone())
                .or_default()
                .push(WrittenOff {
                    run: Arc::clone(&t.run),
                    job_ids: job_ids.clone(),
                    at: now,
                    acknowledged,
                });
            actions.push(Action::Unreachable {
                run_id: run_id.clone(),
                node: node.clone(),
                job_ids,
            });
            if t.owed.is_empty() {
                finished.push(run_id.clone());
            }
        }
        for run_id in finished {
            self.runs.remove(&run_id);
            actions.push(Action::Finished { run_id });
        }
        actions
    }

    /// A target is alive again. Written off within the window, it owes its jobs again (its
    /// real results replace `unreachable`) and, if it had not acknowledged the run, is resent
    /// it like any target that has not: in the batched rounds and re-announces, not all at
    /// once (a healed split brings thousands back together). A target that acknowledged has
    /// the run on its disk, restarted or not, and is sent nothing.
    fn back(&mut self, node: NodeId, now: Instant) {
        self.checks.back(&node);
        for w in self.written_off.remove(&node).unwrap_or_default() {
            if now.duration_since(w.at) >= self.config.written_off_for {
                continue;
            }
            let (local, config) = (&self.local, &self.config);
            let t = self
                .runs
                .entry(w.run.run_id.clone())
                .or_insert_with(|| Tracked::again(Arc::clone(&w.run), local, now, config));
            for job_id in w.job_ids {
                t.owed.insert(job_id, node.clone());
            }
            if !w.acknowledged {
                t.resend_to(node.clone(), now, config);
            }
        }
    }

    /// An answer to [`Action::CheckAlive`]: in the runs asked with its check, targets that
    /// owe results and are not among `alive` are gone (unless seen back while it was out).
    fn alive(&mut self, check: u64, alive: Vec<NodeId>, now: Instant) -> Vec<Action> {
        let Some(spared) = self.checks.answer(check) else {
            return vec![];
        };
        let alive: HashSet<NodeId> = alive.into_iter().collect();
        let asked = |t: &Tracked| t.alive_check == AliveCheck::Asked(check);
        let gone: BTreeSet<NodeId> = self
            .runs
            .values()
            .filter(|t| asked(t))
            .flat_map(|t| t.owed.nodes())
            .filter(|n| {
                **n != self.local
                    && !alive.contains(*n)
                    && !spared.contains(*n)
                    // Given its grace; the tick decides.
                    && !self.left.contains_key(*n)
            })
            .cloned()
            .collect();
        let actions = gone
            .into_iter()
            .flat_map(|node| self.gone_from(node, now, asked))
            .collect();
        for t in self.runs.values_mut().filter(|t| asked(t)) {
            t.alive_check = AliveCheck::Done;
        }
        actions
    }

    /// Asks which nodes are alive for the runs whose check is due: one check for them all.
    fn ask_due_checks(&mut self, now: Instant) -> Option<Action> {
        let mut check = None;
        for t in self.runs.values_mut() {
            if let AliveCheck::Due(at) = t.alive_check
                && at <= now
            {
                let number = *check.get_or_insert_with(|| self.checks.ask());
                t.alive_check = AliveCheck::Asked(number);
            }
        }
        check.map(|check| Action::CheckAlive { check })
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let grace = self.config.left_grace;
        let not_back: Vec<NodeId> = self
            .left
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(node, _)| node.clone())
            .collect();
        for node in not_back {
            self.left.remove(&node);
            actions.extend(self.gone(node, now));
        }
        actions.extend(self.ask_due_checks(now));
        let window = self.config.written_off_for;
        self.written_off.retain(|_, list| {
            list.retain(|w| now.duration_since(w.at) < window);
            !list.is_empty()
        });
        for t in self.runs.values_mut() {
            if !t.unacked.is_empty() && t.announce_at.is_some_and(|at| at <= now) {
                // Direct deliveries have not reached every target: gossip may, through
                // other nodes. A new round, so that gossip takes it as a new message even if
                // the run was announced before (a target written off and back).
                t.announce_at = None;
                t.gossiped = true;
                let mut again = (*t.run).clone();
                again.round = t.run.round + 1;
                t.run = Arc::new(again);
                actions.push(Action::Announce(Arc::clone(&t.run)));
            }
            if t.unacked.is_empty() || now < t.resend_at {
                continue;
            }
            let batch = self.config.resend_batch.max(1);
            // Stalled: since the previous round the announce reached fewer targets (that were
            // not sent the run directly) than still wait for it; at that pace it would take
            // more than another round, or it no longer reaches them at all (they joined late,
            // or are across a partition).
            let stalled = t.reached_by_gossip < t.unacked.len();
            t.reached_by_gossip = 0;
            if t.gossiped && t.unacked.len() > batch && stalled {
                let mut again = (*t.run).clone();
                again.round = t.run.round + 1;
                t.run = Arc::new(again);
                actions.push(Action::Announce(Arc::clone(&t.run)));
            }
            let start = t.cursor % t.unacked.len();
            for node in t
                .unacked
                .iter()
                .cycle()
                .skip(start)
                .take(batch.min(t.unacked.len()))
            {
                t.sent_directly.insert(node.clone());
                actions.push(Action::Deliver {
                    node: node.clone(),
                    run: Arc::clone(&t.run),
                });
            }
            t.cursor = start + batch;
            t.resend_every = (t.resend_every * 2).min(self.config.max_resend);
            t.resend_at = now + t.resend_every;
        }
        actions
    }
}

#[cfg(test)]
mod tests;
