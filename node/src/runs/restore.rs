//! After a restart: what the store says this node was doing, taken up again. Jobs queued
//! here run (unless the node was down too long); jobs a stop cut short are reported
//! interrupted, never run twice; runs this node submitted are resumed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use coordination::{JobResult, NodeId, Run, originator, outbox, restart};
use jobs::{
    cache::CachedState,
    executor::{Outcome, ResultState},
};
use tracing::{info, warn};

use super::{AcceptedRun, Actor, INTERRUPTED, now_ms};
use crate::store::{Accepted, PendingJob, RunOutcomes};

/// A job still queued at a restart after the node was down longer than this is not run: its
/// submitter has long reported it unreachable (and no longer sends it to a node back without
/// it), and its operator may have run it again by hand.
pub(super) const RUN_QUEUED_WHEN_DOWN_UNDER: Duration = Duration::from_secs(10 * 60);

/// Why a job still queued at a restart was not run, after a long stop.
pub(super) const DOWN_TOO_LONG: &str = "interrupted: the node was down for more than 10 min and this job was \
                             still queued there; it is not run after so long (its submitter has \
                             reported it unreachable)";

/// A job the node's log of starts shows started when the node stopped (cleanly or not),
/// without its result on disk: it was running (a shell's processes are stopped at the stop, or
/// right after the restart), or had just ended and its result was not yet written down.
pub(super) const WAS_RUNNING: &str = "interrupted: the job had started when its node stopped, and \
                                      its result was not recorded (it was cut short, or had just \
                                      ended); it is not run again, so that no job ever runs twice";

/// [`WAS_RUNNING`] after a clean stop of the node, which stopped the job's processes.
pub(super) const WAS_STOPPED: &str = "interrupted: the job was running when its node was \
                                      stopped (a stop ends the jobs still running once \
                                      --stop-grace has passed, at once on a second signal or \
                                      when the database cannot be written; or the job had just \
                                      ended, its result not yet recorded); it is not run again, \
                                      so that no job ever runs twice";

/// Why a job still queued at a restart was not run: its parent's earlier job was cut short
/// (the parent failed, as after any failure).
pub(super) const BEHIND_INTERRUPTED: &str = "interrupted: not run, an earlier job of its parent was cut \
                                  short by the node's restart";

/// How old a result owed to another node is, read back after a restart at `wall_now` (unix
/// ms) and `boot_now`: by the boot clock if it was put in the outbox during this boot and
/// pid namespace (a wall clock stepped forward while the node was down would make it look
/// old: its output dropped early, or, of a run its submitter has no trace of, the result
/// given up early), else by the wall clock from when the job finished.
fn restored_age(
    entry: &crate::store::OutboxEntry,
    wall_now: u64,
    boot_now: Option<&jobs::processes::BootInstant>,
) -> Duration {
    jobs::processes::age(
        (
            entry.finished_on_boot.as_ref(),
            entry.result.outcome.finished_unix_ms,
        ),
        (boot_now, wall_now),
    )
}

/// What a run's records say its targets did before a restart (see [`Actor::heard_before`]).
#[derive(Default)]
struct HeardBefore {
    /// Real results, by job and node.
    reported: Vec<(String, NodeId)>,
    /// The nodes that sent one: they have the run.
    acked: HashSet<NodeId>,
    written_off: Vec<originator::WriteOffBefore>,
    /// How long ago the records were made, on the boot clock, if in this boot.
    boot_age: Option<Duration>,
}

impl Actor {
    /// After a restart: QUERY values collected, results still to deliver, jobs interrupted
    /// here, jobs that never started queued again, runs to resume.
    pub(super) fn restore(&mut self) {
        // First, so that a QUERY job interrupted here counts against its collection.
        self.restore_queries();
        let now = Instant::now();
        self.next_submission = self.store.last_submission() + 1;
        self.restore_outbox(now);
        let queued_here = self.restore_accepted_runs();
        self.resume_submitted_runs(queued_here, now);
    }

    /// Results this node still owed to their originators when it stopped: owed again.
    fn restore_outbox(&mut self, now: Instant) {
        let (wall_now, boot_now) = (now_ms(), jobs::processes::BootInstant::now());
        for entry in self.store.outbox() {
            let age = restored_age(&entry, wall_now, boot_now.as_ref());
            let actions = self.outbox.handle(
                outbox::Input::Restored {
                    age,
                    to: entry.to,
                    result: entry.result,
                },
                now,
            );
            self.outbox_actions(actions);
        }
    }

    /// The runs this node had taken in as a target: each job the previous run left pending is
    /// reported interrupted or queued again (`coordination::restart` decides which); returns
    /// the jobs queued again, by run.
    fn restore_accepted_runs(&mut self) -> HashMap<String, HashSet<String>> {
        let mut pending_jobs = self.store.pending_jobs();
        let mut accepted_runs = self.store.accepted();
        // In the order they came: jobs queued again keep their order across runs.
        accepted_runs.sort_by_key(|(_, a)| (a.seq, a.accepted_unix_ms));
        // (Saturating: a damaged row's u64::MAX must not wrap to 0.)
        self.next_accept_seq = accepted_runs
            .last()
            .map_or(0, |(_, a)| a.seq)
            .saturating_add(1);
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
        // Outcomes of runs forgotten meanwhile (by a release that did not keep them), and rows
        // that do not read, go.
        let (mut outcomes, mut gone) = self.store.run_outcomes();
        outcomes.retain(|run_id, kept| {
            let known = known.contains(run_id.as_str());
            if !known {
                gone.extend(
                    kept.iter()
                        .map(|(fp, _)| crate::store::run_outcome_key(run_id, fp)),
                );
            }
            known
        });
        if !gone.is_empty() {
            self.store.delete_run_outcomes(gone);
        }
        // Runs taken in over a day ago by the wall clock are kept too, for a day from now
        // (`forget_accepted_runs`): that clock may have been stepped forward while the node
        // was down, and a run forgotten too early runs again when a copy of it comes.
        let mut queue_again: Vec<(Arc<Run>, HashSet<String>)> = Vec::new();
        for (run_id, accepted) in accepted_runs {
            let pending = pending_jobs.remove(&run_id).unwrap_or_default();
            let outcomes = outcomes.remove(&run_id).unwrap_or_default();
            if let Some(again) = self.settle_accepted_run(
                run_id,
                accepted,
                pending,
                outcomes,
                previous_starts.as_ref(),
                down_too_long,
            ) {
                queue_again.push(again);
            }
        }
        // What the loop above recorded (interrupted jobs of this node's own runs) is read
        // back below: on disk first.
        self.store.flush();
        self.starts_settled(previous_starts.as_ref());
        self.queue_again(queue_again)
    }

    /// Every job the previous run left is recorded now (done, or interrupted), or about to be
    /// queued again: the log of starts may speak for this run only. Not if that did not reach
    /// the disk (the node stops): the next start must know what this one knew.
    fn starts_settled(&self, previous_starts: Option<&HashSet<String>>) {
        if let Some(log) = &self.processes {
            if self.store.has_failed() {
                // The node stops: nothing it queues again below may start meanwhile.
                log.halt();
            } else {
                if let Some(starts) = previous_starts {
                    log.jobs_settled(starts.iter().map(String::as_str));
                }
                log.restored();
            }
        }
    }

    /// Queues again the jobs of accepted runs that had not started before the restart;
    /// returns them, by run.
    fn queue_again(
        &mut self,
        queue_again: Vec<(Arc<Run>, HashSet<String>)>,
    ) -> HashMap<String, HashSet<String>> {
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
        queued_here
    }

    /// Settles one run this node had accepted, with its jobs still pending at the restart
    /// and the `outcomes` kept of those that had ended: each pending job is reported
    /// interrupted, or (returned, with the run) to be queued again.
    fn settle_accepted_run(
        &mut self,
        run_id: String,
        accepted: Accepted,
        pending: Vec<PendingJob>,
        outcomes: RunOutcomes,
        previous_starts: Option<&HashSet<String>>,
        down_too_long: bool,
    ) -> Option<(Arc<Run>, HashSet<String>)> {
        // Jobs still pending were queued or running when this node stopped: see
        // `coordination::restart` for which run again.
        let run = match previous_starts {
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
            previous_starts,
            run.is_some(),
            down_too_long,
        );
        // Runs without pending jobs are remembered so a resend does not run them again.
        // Its age on the monotonic clock: by the boot clock when it was taken in during this
        // boot, else counted from now (the wall clock alone may have been stepped meanwhile).
        let mut remembered = AcceptedRun::new(
            accepted.originator.clone(),
            pending.iter().map(|p| p.job_id.clone()).collect(),
            accepted.accepted_unix_ms,
        );
        if let (Some(then), Some(now)) = (
            &accepted.accepted_on_boot,
            jobs::processes::BootInstant::now(),
        ) && let Some(age) = then.before(&now)
        {
            remembered.since = remembered
                .since
                .checked_sub(age)
                .unwrap_or(remembered.since);
        }
        remembered.outcomes = outcomes;
        self.accepted.insert(run_id.clone(), remembered);
        // A file job cut short may have left a partial copy beside its DEST.
        let cut_short = fates.contains(&restart::Fate::Interrupted);
        let kept_run = match &run {
            Some(run) => Some(Arc::clone(run)),
            None if cut_short => self.store.accepted_run(&run_id).map(Arc::new),
            None => None,
        };
        let mut never_started = HashSet::new();
        let mut reported = Vec::new();
        for (job, fate) in pending.into_iter().zip(fates) {
            let info = match fate {
                restart::Fate::RunAgain => {
                    never_started.insert(job.job_id);
                    continue;
                }
                restart::Fate::Interrupted => {
                    let was_running = previous_starts
                        .as_ref()
                        .is_some_and(|started| started.contains(&job.job_id));
                    if let Some(spec) = kept_run.as_ref().and_then(|r| r.job_spec(&job.job_id)) {
                        for path in jobs::components::remove_interrupted_landing(
                            &spec.component,
                            &self.cache,
                        ) {
                            info!(job = %job.job_id, path = %path.display(), "removed the partial copy of a file job the restart cut short");
                        }
                    }
                    let stopped_cleanly = self
                        .processes
                        .as_ref()
                        .is_some_and(|p| p.previous_stopped_cleanly());
                    // Said as surely as the node knows it.
                    if was_running && stopped_cleanly {
                        WAS_STOPPED
                    } else if was_running {
                        WAS_RUNNING
                    } else {
                        INTERRUPTED
                    }
                }
                restart::Fate::BehindInterrupted => BEHIND_INTERRUPTED,
                restart::Fate::DownTooLong => DOWN_TOO_LONG,
            };
            let outcome = self.interrupted(&job.job_id, job.fingerprint, &job.parent_id, info);
            reported.push(job.job_id.clone());
            self.job_runs.insert(job.job_id, run_id.clone());
            self.finished(outcome);
        }
        if !reported.is_empty() {
            info!(run = %run_id, jobs = ?reported, "reported the jobs the restart cut short (interrupted, or not run behind one)");
        }
        run.filter(|_| !never_started.is_empty())
            .map(|run| (run, never_started))
    }

    /// The runs this node submitted that were not over: their open records back in memory,
    /// and their tracking resumed (what was reported and acknowledged counts).
    fn resume_submitted_runs(
        &mut self,
        mut queued_here: HashMap<String, HashSet<String>>,
        now: Instant,
    ) {
        let boot_now = jobs::processes::BootInstant::now();
        let wall_now = now_ms();
        for stored in self.store.runs_to_resume(wall_now) {
            let run = stored.run;
            let heard = self.heard_before(&run, wall_now, boot_now.as_ref());
            if stored.finished {
                if !heard.written_off.is_empty() {
                    info!(
                        run = %run.run_id,
                        "a run over before the restart: its targets written off lately are still \
                         sent their jobs if they come back"
                    );
                    let written_off = originator::Input::WrittenOffBefore {
                        run,
                        written_off: heard.written_off,
                    };
                    let actions = self.originator.handle(written_off, now);
                    self.originator_actions(actions);
                }
                continue;
            }
            info!(run = %run.run_id, "resuming a run submitted before the restart");
            self.open_runs.insert(run.run_id.clone(), run.clone());
            // From here its age goes by the boot clock; until here too, if the node restarted
            // within one boot (else by the wall clock, all that survives a reboot).
            let age = heard
                .boot_age
                .unwrap_or(Duration::from_millis(super::wall_age_ms(&run)));
            if let Some(born) = jobs::processes::boot_clock().checked_sub(age) {
                self.run_born.insert(run.run_id.clone(), born);
            }
            let actions = self.originator.handle(
                originator::Input::Resume {
                    queued_here: queued_here.remove(&run.run_id).unwrap_or_default(),
                    run,
                    acked: heard.acked.into_iter().collect(),
                    reported: heard.reported,
                    written_off: heard.written_off,
                },
                now,
            );
            self.originator_actions(actions);
        }
    }

    /// What the records of `run`, a run this node submitted, say its targets did before the
    /// restart; the records still open are held in memory again (without their outputs).
    fn heard_before(
        &mut self,
        run: &Run,
        wall_now: u64,
        boot_now: Option<&jobs::processes::BootInstant>,
    ) -> HeardBefore {
        let mut heard = HeardBefore::default();
        for parent in &run.parents {
            for job in &parent.jobs {
                let Some(record) = self.store.record(&job.job_id) else {
                    continue;
                };
                if heard.boot_age.is_none() {
                    heard.boot_age = record
                        .created_on_boot
                        .as_ref()
                        .zip(boot_now)
                        .and_then(|(then, now)| then.before(now));
                }
                for node in &record.nodes {
                    let peer = NodeId(node.peer_id.clone());
                    match record.results.get(&node.name) {
                        // Not heard from: back within the window, it is sent the job.
                        Some(result) if result.is_write_off() => {
                            heard.written_off.push(originator::WriteOffBefore {
                                job_id: job.job_id.clone(),
                                node: peer,
                                ago: Duration::from_millis(
                                    wall_now.saturating_sub(result.finished_unix_ms),
                                ),
                            });
                        }
                        Some(_) => {
                            heard.reported.push((job.job_id.clone(), peer.clone()));
                            heard.acked.insert(peer);
                        }
                        None => {}
                    }
                }
                if record.results.len() < record.nodes.len() {
                    // Outputs stay on disk.
                    self.records
                        .insert(record.job_id.clone(), record.held_in_memory());
                }
            }
        }
        heard
    }

    /// The outcome of a job a restart of this node cut short. It failed here, as far as anyone
    /// asks: the cache says so (JOB_WAITs on it look there), unless an earlier run of the same
    /// job is cached finished; its parent failed either way, so the parent's later jobs do not
    /// run.
    pub(super) fn interrupted(
        &mut self,
        job_id: &str,
        fingerprint: Option<jobs::Fingerprint>,
        parent_id: &str,
        info: &str,
    ) -> Outcome {
        match fingerprint {
            Some(fp) if !self.cache.has_outcome(&fp) => {
                self.cache.record(&fp, parent_id, CachedState::Failed);
            }
            _ if !parent_id.is_empty() => self.cache.fail_parent(parent_id),
            _ => {}
        }
        // Its run's outcome of the job, whatever an earlier run's was: a JOB_WAIT on this
        // run's job hears that it failed.
        if let Some(fp) = fingerprint {
            self.job_fingerprints.insert(job_id.to_string(), fp);
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

    /// Records `job_ids` of this node's own run `run_id` as interrupted by a restart, as
    /// `restore` does for the jobs of accepted runs: the acceptance of its own part had not
    /// reached the disk. The run is remembered as taken in now, with how its jobs ended here,
    /// so that a JOB_WAIT of the run on another node hears they failed rather than wait for a
    /// run this node will never take in (and a copy of the run that still comes runs nothing).
    pub(super) fn interrupted_before_accepted(&mut self, run_id: &str, job_ids: Vec<String>) {
        info!(run = %run_id, jobs = job_ids.len(), "this node's own part of a run it submitted was not taken in on disk when it stopped: its jobs are recorded interrupted");
        if !self.accepted.contains_key(run_id) {
            let local = self.local.clone();
            self.remember_accepted(run_id, &local, false, &[]);
        }
        for job_id in job_ids {
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
                &job_id,
                fingerprint,
                &parent_id.unwrap_or_default(),
                INTERRUPTED,
            );
            // Before the result: on disk whenever the result is.
            if let Some((fp, ok)) = fingerprint.and_then(|fp| self.note_outcome(run_id, fp, false))
            {
                self.store.put_run_outcome(run_id, &fp, ok);
            }
            self.record_result(JobResult {
                run_id: run_id.to_string(),
                node: self.local.clone(),
                outcome,
            });
            // Not queued here any more: a JOB_WAIT on it is answered, after the writes above
            // are queued (as in `finished`).
            if let Some(fp) = self.job_fingerprints.remove(&job_id) {
                self.notify_waiters(&fp.to_hex(), run_id, "failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use coordination::{JobResult, NodeId};
    use jobs::{
        executor::{Outcome, ResultState},
        processes::BootInstant,
    };

    use super::*;
    use crate::store::OutboxEntry;

    const DAY_MS: u64 = 24 * 3_600_000;

    /// A result owed to `o`, finished at `finished_unix_ms` by the wall clock.
    fn owed(finished_unix_ms: u64, finished_on_boot: Option<BootInstant>) -> OutboxEntry {
        OutboxEntry {
            to: NodeId("o".into()),
            result: JobResult {
                run_id: "r".into(),
                node: NodeId("n".into()),
                outcome: Outcome {
                    job_id: "j".into(),
                    state: ResultState::Success,
                    stdout: "out".into(),
                    stderr: String::new(),
                    info: String::new(),
                    execution_secs: 0.0,
                    started_unix_ms: finished_unix_ms,
                    finished_unix_ms,
                },
            },
            finished_on_boot,
        }
    }

    /// A moment of a boot other than this one, as a row written before a reboot reads.
    fn another_boot() -> BootInstant {
        serde_json::from_value(serde_json::json!({"boot": "another boot", "ticks": 5}))
            .expect("a boot instant")
    }

    #[test]
    fn a_result_owed_since_earlier_in_this_boot_ages_by_the_boot_clock() {
        let (Some(then), Some(now)) = (BootInstant::now(), BootInstant::now()) else {
            return; // No boot id here: nothing but the wall clock to go by (next test).
        };
        // The wall clock was stepped 40 days forward while the node was down.
        let finished = 1_700_000_000_000;
        let age = restored_age(
            &owed(finished, Some(then)),
            finished + 40 * DAY_MS,
            Some(&now),
        );
        assert!(age < Duration::from_secs(60), "aged {age:?}");
    }

    #[test]
    fn a_result_from_another_boot_or_an_older_release_ages_by_the_wall_clock() {
        let finished = 1_700_000_000_000;
        let wall_now = finished + 2 * DAY_MS;
        let two_days = Duration::from_millis(2 * DAY_MS);
        let now = BootInstant::now();
        for entry in [owed(finished, Some(another_boot())), owed(finished, None)] {
            assert_eq!(restored_age(&entry, wall_now, now.as_ref()), two_days);
            assert_eq!(restored_age(&entry, wall_now, None), two_days);
        }
        // A finish time after now (the wall clock stepped back): no age, not a panic.
        assert_eq!(
            restored_age(&owed(wall_now + 1, None), wall_now, None),
            Duration::ZERO
        );
    }
}
