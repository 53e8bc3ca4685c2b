//! The target side of runs: taking a run in (or refusing it), acknowledging it, feeding its
//! jobs to the executor, and sending each result to the run's originator through the outbox.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use coordination::{JobMessage, JobReply, JobResult, NodeId, Run, outbox};
use jobs::{
    cache::CachedState,
    executor::{Outcome, ResultState, Work},
};
use mesh::{PeerId, wire};
use tracing::{debug, warn};

use super::refusals::{REFUSED_JOBS_HELD, Verdict};
use super::{
    AcceptedRun, Actor, Input, JobFile, MAX_JOB_MESSAGE_READ, REMEMBER_RUNS, Refusal, SETTLE_EVERY,
    TOO_OLD_TO_RUN, TOUCH_EVERY, encode, now_ms, transfer_file,
};
use crate::store::{Accepted, OutboxEntry, PendingJob};

/// A batch of results as one message. Outputs are capped so that a batch fits; should one
/// still not (an info text has no cap), it goes without its output rather than block every
/// later result to that originator.
pub(super) fn results_message(results: Vec<JobResult>) -> Option<Vec<u8>> {
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

/// A run dropped, and why: a member breaking the protocol sent it, or one whose refused runs
/// this node stores no more of for now ([`super::refusals`]).
#[derive(Debug)]
pub(super) struct Dropped(pub(super) &'static str);

impl Actor {
    /// Target side: the acceptance of `run_id` is on disk (`stored`): its jobs may start, in
    /// the order the runs were taken in.
    pub(super) fn accept_stored(&mut self, run_id: String, stored: bool) {
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

    /// Target side: takes the run's jobs for this node, once.
    pub(super) fn accept(&mut self, run: Arc<Run>, acknowledge: bool) -> Result<(), Dropped> {
        let work = run.work_for(&self.local);
        if work.is_empty() {
            return Ok(());
        }
        // (Sent again: answered like any resend below.)
        let new = !self.accepted.contains_key(&run.run_id);
        // Ids are random: a run that reuses another submitter's run id, or a job id still
        // open here under another run, is a member breaking the protocol (any member reads
        // the ids of gossiped runs). Taken, it would turn the other run's copies into resends
        // of its own, or take the other job's result: it is dropped (refused, if it came
        // directly, so that its sender does not take it for acknowledged).
        if let Some(taken) = self.accepted.get(&run.run_id)
            && taken.originator != run.originator
        {
            warn!(run = %run.run_id, originator = %run.originator, taken_by = %taken.originator, "dropped a run whose id another submitter's run has here");
            return Err(Dropped("its run id is another submitter's run's here"));
        }
        if new
            && let Some(job) = work.iter().flat_map(|(_, jobs)| jobs.iter()).find(|j| {
                self.job_runs
                    .get(&j.job_id)
                    .is_some_and(|r| *r != run.run_id)
            })
        {
            warn!(run = %run.run_id, originator = %run.originator, job = %job.job_id, "dropped a run with a job id another run's job has here");
            return Err(Dropped("a job id of it is another run's job's here"));
        }
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
            // Only runs from submitters refused outright count: a run too old comes from one
            // this node takes jobs from, who may run anything here anyway.
            let counted = match refusal {
                Refusal::Submitter => work.iter().map(|(_, jobs)| jobs.len()).sum(),
                Refusal::TooOld => 0,
            };
            const TOO_MANY: &str = "too many jobs of its submitter refused here";
            match self.refusals.take(&run.originator, counted) {
                Verdict::Store => {}
                Verdict::FirstDropped => {
                    warn!(originator = %run.originator, "this node holds {REFUSED_JOBS_HELD} jobs of this submitter's refused runs (their answers not taken yet, or the runs remembered for a day): its further runs are dropped, not stored, until those are forgotten");
                    return Err(Dropped(TOO_MANY));
                }
                Verdict::Dropped => {
                    debug!(run = %run.run_id, originator = %run.originator, "dropped a run: {TOO_MANY}");
                    return Err(Dropped(TOO_MANY));
                }
            }
            self.refuse(
                &run,
                work.iter()
                    .flat_map(|(_, jobs)| jobs.iter().map(|j| j.job_id.clone()))
                    .collect(),
                acknowledge,
                refusal,
                counted,
            );
            return Ok(());
        }
        // A refused run sent again: answered as before, and nothing of it (its inline files)
        // kept.
        if let Some(taken) = self.accepted.get(&run.run_id)
            && taken.refused.is_some()
        {
            if acknowledge && taken.ack.wanted(&run) {
                self.send_ack(&run);
            }
            return Ok(());
        }
        // Written here, on the actor's thread: no more than a submitter of this release sends
        // inside a run (16 KiB a file, 256 KiB in all, no fsync: a copy lost in a crash is
        // fetched again). What a member sends beyond that is left out: its jobs fetch those
        // files in chunks, as any other.
        let mut inline_total = 0;
        for blob in &run.inline {
            inline_total += blob.data.len();
            if blob.data.len() as u64 > crate::daemon::INLINE_MAX
                || inline_total > crate::daemon::INLINE_TOTAL_MAX
            {
                debug!(run = %run.run_id, bytes = blob.data.len(), "inline file over the limits: fetched in chunks instead");
                continue;
            }
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
            return Ok(());
        }
        let (_, pending_rows, work_here) = self.take_jobs(&run, None);
        // The run is kept while jobs of it are pending, to queue again after a restart those
        // that had not started.
        self.store.put_accepted_run(&run);
        self.remember_accepted(&run.run_id, &run.originator, run.stream, &pending_rows);
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
        Ok(())
    }

    /// The order number of a run accepted now.
    pub(super) fn take_accept_seq(&mut self) -> u64 {
        self.next_accept_seq += 1;
        self.next_accept_seq - 1
    }

    /// Remembers `run_id` as taken in here, on disk (its `accepted` row with the `pending_rows`
    /// of the jobs still to run, in the store's next commit) and in memory (those jobs pending);
    /// returns the run's memory, for a caller to mark it refused.
    pub(super) fn remember_accepted(
        &mut self,
        run_id: &str,
        originator: &NodeId,
        stream: bool,
        pending_rows: &[PendingJob],
    ) -> &mut AcceptedRun {
        let pending = pending_rows.iter().map(|row| row.job_id.clone()).collect();
        let accepted_unix_ms = now_ms();
        let seq = self.take_accept_seq();
        self.store.put_accepted(
            run_id,
            &Accepted {
                originator: originator.clone(),
                stream,
                accepted_unix_ms,
                seq,
                accepted_on_boot: jobs::processes::BootInstant::now(),
            },
            pending_rows,
        );
        let remembered = AcceptedRun::new(originator.clone(), pending, accepted_unix_ms);
        self.accepted
            .entry(run_id.to_string())
            .insert_entry(remembered)
            .into_mut()
    }

    /// This node's jobs of `run` (`only` these, if given), ready for the executor: their
    /// pending rows, and the bookkeeping of a job this node runs (its run, fingerprint, file).
    pub(super) fn take_jobs(
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
    pub(super) fn refuse(
        &mut self,
        run: &Arc<Run>,
        job_ids: Vec<String>,
        acknowledge: bool,
        refusal: Refusal,
        counted: usize,
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
            let pending_rows: Vec<PendingJob> = job_ids
                .iter()
                .map(|job_id| PendingJob {
                    job_id: job_id.clone(),
                    fingerprint: None,
                    parent_id: String::new(),
                })
                .collect();
            self.remember_accepted(&run.run_id, &run.originator, false, &pending_rows)
                .refused = Some(counted);
            let fingerprints: HashMap<&str, jobs::Fingerprint> = run
                .work_for(&self.local)
                .iter()
                .flat_map(|(_, jobs)| jobs.iter().map(|j| (j.job_id.as_str(), j.fingerprint)))
                .collect();
            for job_id in job_ids {
                self.job_runs.insert(job_id.clone(), run.run_id.clone());
                let fingerprint = fingerprints.get(job_id.as_str()).copied();
                // The run's outcome of the job goes to disk with the job's result.
                let noted = fingerprint.and_then(|fp| self.note_outcome(&run.run_id, fp, false));
                self.finished_noting(
                    Outcome {
                        job_id,
                        state: ResultState::Failed,
                        stdout: String::new(),
                        stderr: String::new(),
                        info: info.clone(),
                        execution_secs: 0.0,
                        started_unix_ms: now_ms(),
                        finished_unix_ms: now_ms(),
                    },
                    noted,
                );
                // The JOB_WAITs of this run hear that it failed here, and only those: the job
                // never ran, so the cache (which JOB_WAITs of other runs ask) keeps nothing
                // of it, and waits for the job of any run go on (a member this node refuses
                // would otherwise end the waits of the runs it takes).
                if let Some(fp) = fingerprint {
                    self.refused_waiters(&fp.to_hex(), &run.run_id);
                }
            }
        }
        if acknowledge {
            self.send_ack(run);
        }
    }

    pub(super) fn send_ack(&self, run: &Run) {
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
                matches!(wire::decode(&reply, MAX_JOB_MESSAGE_READ), Ok(JobReply::Ok))
            });
            if answered {
                let _ = inbox.send(Input::AckAnswered { run_id, start }).await;
            }
        });
    }

    pub(super) fn feed_executor(&mut self) {
        while let Some(work) = self.waiting_for_executor.pop_front() {
            if let Err(work) = self.executor.try_submit(work) {
                self.waiting_for_executor.push_front(work);
                return;
            }
        }
    }

    /// Target side: a job finished here.
    pub(super) fn finished(&mut self, outcome: Outcome) {
        self.finished_noting(outcome, None);
    }

    /// [`Self::finished`], with the outcome the run keeps of a job this node knows no
    /// fingerprint of as pending (`noted`, by [`Self::note_outcome`]: a refused run's), which
    /// is written with the job's result.
    fn finished_noting(&mut self, outcome: Outcome, noted: Option<(jobs::Fingerprint, bool)>) {
        if let Some(log) = &self.processes {
            log.job_taken(&outcome.job_id);
        }
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
            let noted = self.note_outcome(&run_id, fp, outcome.state != ResultState::Failed);
            // A job that failed without running left nothing in the cache: a JOB_WAIT asking
            // after now hears "failed" too, as those waiting now do, instead of waiting for
            // its timeout.
            if outcome.state == ResultState::Failed && !self.cache.has_outcome(&fp) {
                self.cache.record_unrun(&fp, CachedState::Failed);
            }
            // After the job's own writes below are queued: JOB_WAIT waiters hear of it once
            // those are on disk.
            self.record_finished(outcome, noted);
            self.notify_waiters(&fp.to_hex(), &run_id, state);
            return;
        }
        self.record_finished(outcome, noted);
    }

    /// The first outcome of the job with `fingerprint` in the accepted run `run_id`: what the
    /// run's own JOB_WAITs are answered from. Noted in memory; returned if it is the first,
    /// for the caller to write to disk with the job's result (so that the two never part in
    /// a crash).
    pub(super) fn note_outcome(
        &mut self,
        run_id: &str,
        fingerprint: jobs::Fingerprint,
        ok: bool,
    ) -> Option<(jobs::Fingerprint, bool)> {
        let accepted = self.accepted.get_mut(run_id)?;
        if accepted.outcomes.iter().any(|(f, _)| *f == fingerprint) {
            return None;
        }
        accepted.outcomes.push((fingerprint, ok));
        Some((fingerprint, ok))
    }

    /// Jobs whose results are on disk leave the log of starts (they are done, not pending,
    /// after a restart); the log is touched now and then, to tell a restart how long this node
    /// was down.
    pub(super) fn settle_starts(&mut self, now: Instant) {
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

    /// Target side: a finished job leaves `pending` and its result goes to its originator;
    /// `noted`, the run's first outcome of its fingerprint, is written in the same commit.
    fn record_finished(&mut self, outcome: Outcome, noted: Option<(jobs::Fingerprint, bool)>) {
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
                .job_finished(&run_id, &result.outcome.job_id, None, noted);
            if !more_coming {
                self.store.forget_accepted_run(&run_id);
            }
            self.record_result(result);
        } else {
            let entry = OutboxEntry {
                to: originator.clone(),
                result,
                finished_on_boot: jobs::processes::BootInstant::now(),
            };
            self.store
                .job_finished(&run_id, &entry.result.outcome.job_id, Some(&entry), noted);
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

    /// The originator `to` took the batch of results sent to it but for those of `runs`, of
    /// which it has no trace: they stay, unless they have waited long enough for it
    /// ([`outbox::Input::Unknown`]), which the log says.
    pub(super) fn results_of_unknown_runs(&mut self, to: NodeId, runs: Vec<String>) {
        let actions = self.outbox.handle(
            outbox::Input::Unknown {
                to: to.clone(),
                runs: runs.clone(),
            },
            Instant::now(),
        );
        let given_up: Vec<&JobResult> = actions
            .iter()
            .filter_map(|a| match a {
                outbox::Action::Delivered(results) => Some(results),
                _ => None,
            })
            .flatten()
            .filter(|r| runs.contains(&r.run_id))
            .collect();
        if !given_up.is_empty() {
            let mut gone: Vec<&str> = given_up.iter().map(|r| r.run_id.as_str()).collect();
            gone.sort_unstable();
            gone.dedup();
            warn!(
                originator = %to,
                results = given_up.len(),
                runs = %gone.join(" "),
                "dropped results that their submitter has said for an hour it has no trace of, \
                 a day or more after they were made: it purged or forgot their runs, or another \
                 daemon with its identity (a copy of its state directory) answers for it and \
                 it has not been reachable"
            );
        }
        self.outbox_actions(actions);
    }

    pub(super) fn outbox_actions(&mut self, actions: Vec<outbox::Action>) {
        for action in actions {
            match action {
                outbox::Action::Send { to, results } => {
                    let inbox = self.inbox.clone();
                    let Ok(peer) = to.0.parse::<PeerId>() else {
                        // Not a peer id (runs come from peers, so never): a failed try, like
                        // any other, rather than a batch in flight for ever.
                        warn!(originator = %to, "results for an originator that is not a peer id");
                        tokio::spawn(async move {
                            let _ = inbox.send(Input::OutboxSent { to, ok: false }).await;
                        });
                        continue;
                    };
                    let bytes = results_message(results);
                    let mesh = self.mesh.clone();
                    // What the jobs left here (their end, what they cached, the results
                    // themselves) is on disk before their results leave: after a crash the
                    // node would otherwise report as interrupted a job its originator has as
                    // succeeded, without the args it cached, which later jobs render with.
                    let committed = self.store.commit_now();
                    tokio::spawn(async move {
                        let Some(bytes) = bytes else {
                            let _ = inbox.send(Input::OutboxSent { to, ok: false }).await;
                            return;
                        };
                        if committed.await.is_err() {
                            // Not stored (the node stops): tried again, or after its restart.
                            let _ = inbox.send(Input::OutboxSent { to, ok: false }).await;
                            return;
                        }
                        let answer = match mesh.request_job(peer, bytes).await {
                            Ok(reply) => {
                                match wire::decode::<JobReply>(&reply, MAX_JOB_MESSAGE_READ) {
                                    Ok(JobReply::Ok) => Input::OutboxSent { to, ok: true },
                                    Ok(JobReply::UnknownRuns(runs)) => {
                                        Input::OutboxUnknown { to, runs }
                                    }
                                    Ok(JobReply::Refused(why)) => {
                                        debug!(%to, "results not taken yet: {why}");
                                        Input::OutboxSent { to, ok: false }
                                    }
                                    Err(e) => {
                                        debug!(%to, "results not taken yet: unreadable answer: {e}");
                                        Input::OutboxSent { to, ok: false }
                                    }
                                }
                            }
                            Err(e) => {
                                debug!(%to, "results not delivered yet: {e}");
                                Input::OutboxSent { to, ok: false }
                            }
                        };
                        let _ = inbox.send(answer).await;
                    });
                }
                outbox::Action::Delivered(results) => {
                    for r in &results {
                        self.store.delete_outbox(r);
                    }
                }
                outbox::Action::Slimmed { to, results } => {
                    let mut runs: Vec<&str> = results.iter().map(|r| r.run_id.as_str()).collect();
                    runs.sort_unstable();
                    runs.dedup();
                    warn!(
                        originator = %to,
                        results = results.len(),
                        runs = %runs.join(" "),
                        "dropped the output of results older than --record-retention whose \
                         submitter has taken nothing for an hour or more: they keep their state \
                         and times, and still go to it if it comes back"
                    );
                    for result in results {
                        // Its age still counts (a result of a run its submitter says it has
                        // no trace of is kept a day at least): kept from the row it replaces.
                        let finished_on_boot = self
                            .store
                            .outbox_entry(&result)
                            .and_then(|e| e.finished_on_boot);
                        self.store.put_outbox(&OutboxEntry {
                            to: to.clone(),
                            result,
                            finished_on_boot,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    /// Results that would fit alone in a control request but not in its envelope go without
    /// their output: sent whole, they would fail each time and hold up every later result.
    #[test]
    fn results_that_fit_only_without_the_envelope_go_without_their_output() {
        let sized = |n: usize| vec![result("c", "o".repeat(n), "echo".into())];
        let len = |n: usize| {
            wire::encode(&JobMessage::Results(sized(n)), usize::MAX)
                .unwrap()
                .len()
        };
        // Output that brings the message a few bytes past what is sent whole.
        let n = super::super::MAX_JOB_MESSAGE + 8 - (len(1000) - 1000);
        assert!(len(n) > super::super::MAX_JOB_MESSAGE && len(n) < wire::MAX_CTL_BYTES);
        let bytes = results_message(sized(n)).unwrap();
        let JobMessage::Results(back) = wire::decode(&bytes, MAX_JOB_MESSAGE_READ).unwrap() else {
            panic!("not results");
        };
        assert!(back[0].outcome.stdout.contains("left out"));
        assert!(wire::encode(&mesh::wire::CtlRequest::Job(bytes), wire::MAX_CTL_BYTES).is_ok());
    }

    #[test]
    fn results_too_large_for_a_message_still_travel_without_their_output() {
        let fits = vec![result("a", "out".into(), "echo out".into())];
        let bytes = results_message(fits.clone()).unwrap();
        let back: JobMessage = wire::decode(&bytes, MAX_JOB_MESSAGE_READ).unwrap();
        assert_eq!(back, JobMessage::Results(fits));

        let huge = "i".repeat(super::super::MAX_JOB_MESSAGE);
        let too_large = vec![result("b", "x".repeat(1024), huge)];
        let bytes = results_message(too_large).unwrap();
        let JobMessage::Results(back) = wire::decode(&bytes, MAX_JOB_MESSAGE_READ).unwrap() else {
            panic!("not results");
        };
        assert_eq!(back[0].outcome.job_id, "b");
        assert_eq!(back[0].outcome.state, ResultState::Success);
        assert!(back[0].outcome.stdout.contains("left out"));
        assert_eq!(back[0].outcome.info.len(), 4096);
    }
}
