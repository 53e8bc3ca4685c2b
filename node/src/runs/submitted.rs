//! The originator side of runs: what the run tracker asks for (announces, resends,
//! write-offs), and each target's result taken into the job's record.

use std::{collections::HashMap, time::Instant};

use coordination::{
    Gossip, JobMessage, JobReply, JobResult, NodeId, Run,
    originator::{self, OriginatorConfig},
    transfer,
};
use jobs::executor::{Outcome, ResultState};
use mesh::{PeerId, wire};
use tracing::{debug, info, warn};

use tokio::sync::oneshot;

use super::{Actor, Input, MAX_JOB_MESSAGE_READ, encode, now_ms, run_files, watchers::EarlyOutput};
use crate::{
    records::{JobRecord, NodeResult},
    store::StoredRun,
};

/// Targets and runs whose late results were said, remembered at most (then forgotten all at
/// once: a target may be said twice, never without end).
const LATE_SAID_MAX: usize = 4096;

/// What a client hears of a submission stored as the node stopped.
const STORED_WHILE_STOPPING: &str = "the node is shutting down; the jobs are stored and go out \
     when it starts again (do not submit them again: `manage --list-jobs` shows them then)";

impl Actor {
    /// Originator side: a client's submission, recorded; announced once it is on disk.
    pub(super) fn submit(
        &mut self,
        mut run: Run,
        records: Vec<JobRecord>,
        done: oneshot::Sender<Result<(), String>>,
    ) {
        self.add_file_holders(&mut run);
        // Imported just before: used now, whatever a blob sweep under way decided.
        for hash in run_files(&run) {
            self.blobs.has(&hash);
        }
        // Numbered in the order submitted, whatever the wall clock says (`last`).
        let submission = self.next_submission;
        self.next_submission += 1;
        self.store.put_last_submission(submission);
        for mut r in records {
            r.submission = submission;
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
            write_offs_until_ms: 0,
        });
        self.open_runs.insert(run.run_id.clone(), run.clone());
        self.run_born
            .insert(run.run_id.clone(), jobs::processes::boot_clock());
        // Nothing is announced, and the client hears of nothing, before the submission
        // would survive a crash: a restarted originator knows every run it sent out.
        let committed = self.store.commit_now();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let stored = committed.await.is_ok();
            let sent = inbox.send(Input::SubmissionStored { run, stored, done });
            // The actor stopped meanwhile (the node is shutting down): the client must not
            // take a stored run for a failed one and submit it again.
            if let Err(returned) = sent.await
                && let Input::SubmissionStored {
                    stored: true, done, ..
                } = returned.0
            {
                let _ = done.send(Err(STORED_WHILE_STOPPING.into()));
            }
        });
    }

    /// Originator side: a submission's commit is over: announce the run, or give it up.
    pub(super) fn submission_stored(
        &mut self,
        run: Run,
        stored: bool,
        done: oneshot::Sender<Result<(), String>>,
    ) {
        if !stored {
            self.open_runs.remove(&run.run_id);
            self.run_born.remove(&run.run_id);
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

    pub(super) fn originator_actions(&mut self, actions: Vec<originator::Action>) {
        // A resend round delivers the same run to many targets: encoded once.
        let mut deliveries: HashMap<(String, u32), Vec<u8>> = HashMap::new();
        for action in actions {
            match action {
                originator::Action::Announce(run) => {
                    if run.round > 0 {
                        debug!(
                            run = %run.run_id,
                            round = run.round,
                            "announcing the run (again): targets that have not acknowledged it are not reached otherwise"
                        );
                    }
                    let mut copy = run.compact();
                    copy.originator_start = self.start;
                    copy.age_ms = self.run_age_ms(&run);
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
                            copy.age_ms = self.run_age_ms(&run);
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
                            Ok(reply) => {
                                match wire::decode::<JobReply>(&reply, MAX_JOB_MESSAGE_READ) {
                                    Ok(JobReply::Ok) => {
                                        let _ = inbox.send(Input::Acked { run_id, node }).await;
                                    }
                                    Ok(JobReply::Refused(why)) => {
                                        warn!(%node, "run refused: {why}")
                                    }
                                    Ok(JobReply::UnknownRuns(_)) => {
                                        debug!(%node, "an answer to results, not to a run")
                                    }
                                    Err(e) => debug!(%node, "unreadable reply: {e}"),
                                }
                            }
                            Err(e) => debug!(%node, "delivery failed, will retry: {e}"),
                        }
                    });
                }
                originator::Action::DeliverLocal(run) => {
                    // This node's own run: its ids are its own, never dropped.
                    let _ = self.accept(run, false);
                }
                originator::Action::CheckAlive { check } => {
                    let mesh = self.mesh.clone();
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        // An error means the mesh task is gone: the node is stopping.
                        if let Ok(alive) = mesh.alive_members().await {
                            let alive = alive.into_iter().map(|(peer, _)| peer).collect();
                            let _ = inbox.send(Input::Alive { check, alive }).await;
                        }
                    });
                }
                originator::Action::Unreachable {
                    run_id,
                    node,
                    job_ids,
                } => {
                    // One line per node and run, however many jobs (a split of a busy mesh
                    // writes off thousands at once).
                    let name = job_ids
                        .first()
                        .map(|job_id| self.name_in_record(job_id, &node))
                        .unwrap_or_else(|| node.0.clone());
                    let back_within_min =
                        OriginatorConfig::default().written_off_for.as_secs() / 60;
                    warn!(
                        run = %run_id,
                        node = %name,
                        "unreachable: the node stopped answering, left the mesh or restarted before \
                         reporting {} job(s) of the run: recorded failed; results it reports later \
                         replace those (back within {back_within_min} min without the jobs, it is \
                         sent them)",
                        job_ids.len()
                    );
                    // Its QUERY values will not come now either: collections go on without.
                    self.queries_node_gone(&node);
                    for job_id in job_ids {
                        debug!(job = %job_id, node = %name, "written off as unreachable");
                        let outcome = Outcome {
                            job_id,
                            state: ResultState::Failed,
                            stdout: String::new(),
                            stderr: String::new(),
                            info: crate::records::write_off_info(&name, back_within_min),
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
                    self.interrupted_before_accepted(&run_id, job_ids);
                }
                originator::Action::Finished { run_id } => {
                    self.run_born.remove(&run_id);
                    // A restart within this still sends targets written off their jobs.
                    let write_offs_until_ms = self
                        .originator
                        .write_offs_open_for(&run_id, Instant::now())
                        .map_or(0, |left| now_ms() + left.as_millis() as u64);
                    if let Some(run) = self.open_runs.remove(&run_id) {
                        self.store.put_run(&StoredRun {
                            run,
                            finished: true,
                            write_offs_until_ms,
                        });
                    } else {
                        // Over again after a target back was written off once more: its new
                        // window is kept too (a run over once is on disk already).
                        self.extend_write_offs(&run_id, write_offs_until_ms);
                    }
                }
            }
        }
    }

    /// A finished run's window for targets written off, made later if `until_ms` is (a
    /// target back was written off again); a run not stored, or with a later window, is
    /// left as it is.
    fn extend_write_offs(&self, run_id: &str, until_ms: u64) {
        if let Some(mut stored) = self.store.run(run_id)
            && until_ms > stored.write_offs_until_ms
        {
            stored.write_offs_until_ms = until_ms;
            self.store.put_run(&stored);
        }
    }

    /// Originator side: tells the run's targets who holds its files already (see
    /// [`transfer::holder_hints`]).
    pub(super) fn add_file_holders(&self, run: &mut Run) {
        run.holders = transfer::holder_hints(run, &self.holders);
    }

    /// A target whose ADD/COPY job succeeded holds the job's file (fetched into its blob
    /// store, or found at DEST already: then it answers that it does not know the file and is
    /// passed over): later runs of the file name it. Its `HaveBlob`, sent as its copy came
    /// in, may reach this node after the result, the run closed by then (another stream of
    /// the same connection): the result is the word that comes before the submitter hears
    /// the run is over, so the next run of the file knows of the copy.
    fn holds_job_file(&mut self, run_id: &str, job_id: &str, node: &NodeId) {
        let Some(run) = self.open_runs.get(run_id) else {
            return;
        };
        let file = run
            .parents
            .iter()
            .flat_map(|p| &p.jobs)
            .find(|job| job.job_id == job_id)
            .and_then(|job| super::transfer_file(&job.spec.component));
        // A small file travels inside the run: no one fetches it from a holder.
        if let Some(file) = file
            && !run.inline.iter().any(|blob| blob.hash == file.hash)
        {
            self.holders
                .entry(file.hash)
                .or_default()
                .insert(node.clone());
        }
    }

    pub(super) fn name_in_record(&self, job_id: &str, node: &NodeId) -> String {
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

    /// Originator side: a result (from a target, from this node, or written off as unreachable).
    ///
    /// Whether this node knows the result's run (`false`: it has no trace of it, the result is
    /// not taken, and its sender is answered [`JobReply::UnknownRuns`]).
    /// Whether this node knows `run_id` as its submitter: open, tracked for targets written
    /// off, or on disk. A run it has no trace of was submitted by another daemon with this
    /// node's identity (a copy of its state directory elsewhere), or forgotten here.
    pub(super) fn has_trace_of(&self, run_id: &str) -> bool {
        self.open_runs.contains_key(run_id)
            || self.originator.knows(run_id)
            || self.store.run(run_id).is_some()
    }

    pub(super) fn record_result(&mut self, result: JobResult) -> bool {
        self.take_result(result, true)
    }

    /// A finished record, as it is now: from those closed lately (whose last writes may not
    /// be on disk yet), else from the store.
    pub(super) fn finished_record(&self, job_id: &str) -> Option<JobRecord> {
        let (mut record, filled) = self.finished_record_head(job_id)?;
        if !filled {
            self.store.fill_results(std::slice::from_mut(&mut record));
        }
        Some(record)
    }

    /// [`Actor::finished_record`], read from disk without its results (the bool: whether they
    /// are in it): enough to tell whether a result belongs to it.
    fn finished_record_head(&self, job_id: &str) -> Option<(JobRecord, bool)> {
        match self.closing.get(job_id) {
            Some((record, _)) => Some((record.clone(), true)),
            // Purged, if the store still shows it: the purge is not on disk yet.
            None if self.purge_barrier.is_some() => None,
            None => self
                .store
                .record_without_results(job_id)
                .map(|r| (r, false)),
        }
    }

    /// `record` is finished: kept at hand until its writes are on disk.
    fn close_record(&mut self, record: JobRecord) {
        self.closing
            .insert(record.job_id.clone(), (record, self.closing_next));
        if !self.closing_asked {
            self.ask_closing_commit();
        }
    }

    /// Asks the store to say when every write so far is on disk ([`Input::ClosingStored`]).
    pub(super) fn ask_closing_commit(&mut self) {
        let generation = self.closing_next;
        self.closing_next += 1;
        self.closing_asked = true;
        let committed = self.store.committed();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            // Err: the writer is gone (the node is stopping); nothing is read back any more.
            let _ = committed.await;
            let _ = inbox.send(Input::ClosingStored { generation }).await;
        });
    }

    /// A target written off in `run` reports after all: said once per target and run (a split
    /// of a busy mesh heals with thousands of such results).
    fn say_late(&mut self, (run, node): (String, String)) {
        if self.late_said.len() >= LATE_SAID_MAX {
            self.late_said.clear();
        }
        if self.late_said.insert((run.clone(), node.clone())) {
            info!(
                %run,
                %node,
                "{node}, written off as unreachable, reports after all: its results replace the \
                 write-offs"
            );
        }
    }

    /// `node` sent results of `run`, of which this node has no trace: said once per target
    /// and run (sent again until they reach their submitter, or for a day).
    pub(super) fn say_unknown(&mut self, run: &str, node: &NodeId) {
        if self.unknown_said.len() >= LATE_SAID_MAX {
            self.unknown_said.clear();
        }
        if self.unknown_said.insert((run.to_string(), node.0.clone())) {
            info!(
                %run,
                %node,
                "{node} sent results of a run this node has no trace of: the run was purged \
                 here (or is past --record-retention), or another daemon with this node's \
                 identity (a copy of its state directory) submitted it; the results stay with \
                 {node}, which offers them again"
            );
        }
    }

    /// Takes a result (`real`: one the target sent or this node's own) or, with `real` false,
    /// this node's write-off of a target gone before reporting. False when this node has no
    /// trace of the result's run (see [`Held::UnknownRun`]).
    pub(super) fn take_result(&mut self, result: JobResult, real: bool) -> bool {
        let JobResult {
            run_id,
            node,
            outcome,
        } = result;
        let job_id = outcome.job_id.clone();
        match self.hold_record_for_result(&job_id, &node, &run_id, real) {
            Held::Yes => {}
            Held::No => return true,
            Held::UnknownRun => return false,
        }
        let Some(record) = self.records.get_mut(&job_id) else {
            return true;
        };
        // Only the job's own targets report on it (any member could claim to), and of the
        // job's own run: the run id goes to the tracker, which would otherwise keep the real
        // run waiting for a result it took for another's.
        let Some(name) = record.name_of(&node.0).map(str::to_string) else {
            warn!(job = %job_id, %node, "dropped a result from a node that is not a target of the job");
            return true;
        };
        if record.run_id != run_id {
            warn!(
                job = %job_id,
                %node,
                run = %run_id,
                "dropped a result that names another run than its job's"
            );
            return true;
        }
        let query_without_value = record.verb == "QUERY" && outcome.state != ResultState::Success;
        // A QUERY's success says the value it sent (`{NAME: value}` on stdout). A `--no-wait`
        // value travels apart from its result and is kept in memory only on its target: a
        // restart there loses it while the result, on disk, still comes. Taken from here, the
        // set does not wait for it for ever.
        let value_in_result =
            (real && record.verb == "QUERY" && outcome.state == ResultState::Success)
                .then(|| jobs::components::query_value_sent(&outcome.stdout))
                .flatten();
        let replace = match record.results.get(&name) {
            None => true,
            // A real result replaces a write-off; nothing replaces a real result.
            Some(existing) => real && existing.is_write_off(),
        };
        // Looked for among the run's jobs only for a file job's success.
        let holds_file = real
            && outcome.state == ResultState::Success
            && matches!(record.verb.as_str(), "ADD" | "COPY");
        // A written-off target reporting after all: said once per target and run.
        let late = (replace && record.results.contains_key(&name))
            .then(|| (record.run_id.clone(), name.clone()));
        if replace {
            // By the boot clock while this start knows the run (the wall clock may have
            // been stepped since the submission).
            let roundtrip_ms = super::age_of(
                record.created_unix_ms,
                self.run_born.get(&record.run_id).copied(),
                now_ms(),
                jobs::processes::boot_clock(),
            );
            let node_result = NodeResult::from_outcome(outcome, roundtrip_ms);
            self.store.put_result(&job_id, &name, &node_result);
            // The output is on its way to disk: memory keeps the rest. A job of a thousand
            // targets would otherwise hold up to 3 MiB of each one's output until its last
            // target reports. Whoever needs the outputs reads the store once this write is on
            // it (`JobRecord::filled_from`).
            record.results.insert(name, node_result.without_output());
        }
        let complete = record.results.len() >= record.nodes.len();
        if holds_file {
            self.holds_job_file(&run_id, &job_id, &node);
        }
        if let Some(late) = late {
            self.say_late(late);
        }
        if query_without_value {
            self.query_ended_without_value(&job_id, &node, !real);
        }
        if let Some((name, value)) = value_in_result
            && self.cross.collecting(&job_id)
            && let Err(why) = self.query_value(job_id.clone(), node.clone(), name, value)
        {
            debug!(job = %job_id, %node, "the value in a QUERY's result is not taken: {why}");
        }
        // Done: the record lives on disk from now on. A result that changed nothing (a batch
        // sent again when its ack was lost) is no news to watchers: a finished record read
        // back for it goes back to disk untold.
        let done = match complete.then(|| self.records.remove(&job_id)).flatten() {
            Some(record) if replace => {
                self.close_record(record.clone());
                Some(record)
            }
            Some(record) => {
                self.close_record(record);
                None
            }
            None => None,
        };
        if let Some(record) = &done
            && record.reported_by_all()
        {
            // Every target has reported for real: no QUERY value but those of its successes
            // is still to come.
            self.query_over(record);
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
        true
    }

    /// Makes sure the record of `job_id` is held in memory for a result of `node` in
    /// `run_id`: read back from disk for a late result (after a write-off, or a restart);
    /// [`Held::No`] when there is nothing to take the result into (it is dropped, or only the
    /// run's tracker hears of it), [`Held::UnknownRun`] when this node has no trace of the run.
    fn hold_record_for_result(
        &mut self,
        job_id: &str,
        node: &NodeId,
        run_id: &str,
        real: bool,
    ) -> Held {
        if self.records.contains_key(job_id) {
            return Held::Yes;
        }
        match self.finished_record_head(job_id) {
            // A result from a node that is no target of the job, or naming another run, is
            // dropped; its record stays on disk, not pinned in memory (nor its results read).
            Some((r, _)) if r.name_of(&node.0).is_none() || r.run_id != run_id => {
                warn!(job = %job_id, %node, run = %run_id, "dropped a result from a node that is not a target of the job or that names another run");
                Held::No
            }
            // A late result (after the job was written off, or after a restart).
            Some((mut r, filled)) => {
                if !filled {
                    self.store.fill_results(std::slice::from_mut(&mut r));
                }
                self.records.insert(job_id.to_string(), r.held_in_memory());
                Held::Yes
            }
            // A write-off is the tracker's own doing (as below): only real results are news
            // to it, or a target written off would not get the job when it is back.
            None if !real => Held::No,
            // Neither the job nor its run is known here: another daemon with this node's
            // identity submitted the run (a copy of its state directory on another machine,
            // which took the sender's connection), or this node forgot it. Not taken: the
            // sender keeps the result for whichever it is (`outbox::Input::Unknown`).
            None if !self.has_trace_of(run_id) => {
                debug!(job = %job_id, run = %run_id, %node, "result for a run this node has no trace of");
                Held::UnknownRun
            }
            None => {
                // Its record was purged (or never stored): still owed to the run's tracker,
                // or the run would never finish.
                debug!(job = %job_id, "result for a job this node has no record of");
                let result = originator::Input::Result {
                    run_id: run_id.to_string(),
                    job_id: job_id.to_string(),
                    node: node.clone(),
                };
                let actions = self.originator.handle(result, Instant::now());
                self.originator_actions(actions);
                Held::No
            }
        }
    }
}

/// Whether a result has a record to go into ([`Actor::hold_record_for_result`]).
enum Held {
    /// Its record is held in memory.
    Yes,
    /// Nothing to take it into: dropped, or only the run's tracker hears of it.
    No,
    /// This node has no trace of its run: neither open, nor stored, nor a record of the job.
    UnknownRun,
}
