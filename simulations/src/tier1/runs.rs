//! Runs in tier 1: the submitter's run tracker and each target's queue, executor and
//! result outbox, fed by the modelled network.

use std::collections::{HashSet, VecDeque};

use coordination::{
    JobResult, originator, outbox,
    transfer::{self, ChunkResult, Download},
};
use jobs::{
    Component,
    executor::{Outcome, ResultState},
};

use super::{
    Body, Done, Event, Flood, INTERRUPTED, MODEL_RUN, Sim, daemon, next_phase, wait_id_of,
};
use crate::network::micros;

impl Sim {
    pub(super) fn originator_actions(&mut self, actions: Vec<originator::Action>) {
        let s = self.submitter;
        for action in actions {
            match action {
                originator::Action::Announce(run) => {
                    if self.gossip_too_big {
                        // As the daemon: too big to gossip, the first resend delivers directly.
                        continue;
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
                | originator::Action::CheckAlive { .. }
                | originator::Action::Interrupted { .. } => {}
            }
        }
    }

    pub(super) fn acked(&mut self, node: usize) {
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
    pub(super) fn result_in(&mut self, r: JobResult) {
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

    /// The run reaches `node` (by gossip when `gossiped`, else directly or locally).
    pub(super) fn accept(&mut self, node: usize, gossiped: bool) {
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
    pub(super) fn requeue(&mut self, node: usize) {
        let pending: VecDeque<usize> = self.work[node]
            .iter()
            .copied()
            .filter(|j| !self.nodes[node].finished.contains(j))
            .collect();
        self.nodes[node].queue = pending;
        self.start_next(node);
    }

    pub(super) fn start_next(&mut self, node: usize) {
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

    pub(super) fn job_done(&mut self, node: usize, epoch: u32, job: usize, done: Done) {
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

    pub(super) fn outbox_actions(&mut self, node: usize, actions: Vec<outbox::Action>) {
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
                // The simulation never slims results (no `Input::Expire`).
                outbox::Action::Slimmed { .. } => {}
            }
        }
        self.want_runs_tick(node);
    }

    pub(super) fn want_runs_tick(&mut self, node: usize) {
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

    pub(super) fn runs_tick(&mut self, node: usize) {
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

    pub(super) fn job_id(&self, job: usize) -> String {
        let (p, j) = self.jobs[job];
        self.run.parents[p].jobs[j].job_id.clone()
    }

    /// The executor runs `job` on `node` for `--job-time`; it ends as `ok` says. A QUERY job
    /// sends the node's value and waits for the set.
    pub(super) fn run_job(&mut self, node: usize, job: usize, ok: bool) {
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
}
