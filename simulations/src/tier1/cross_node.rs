//! QUERY and JOB_WAIT in tier 1: the real `coordination::query` and `coordination::job_wait`
//! machines, their messages over the modelled network.

use coordination::{JobMessage, job_wait, query};

use super::{
    Body, Event, Flood, Kind, MODEL_RUN, SUBMITTER_START, Sim, cbor_len, daemon, wait_id_of,
};
use crate::scenario::QUERY_ARG;

impl Sim {
    /// `node`'s value reaches the submitter's collection.
    pub(super) fn query_value_in(&mut self, node: usize) {
        let Some(job) = self.query_job else {
            return;
        };
        let job_id = self.job_id(job);
        let value = super::query_value(&self.workload, node);
        let now = self.instant();
        let actions = self
            .queries
            .value(&job_id, &self.ids[node], QUERY_ARG.into(), value, now)
            .unwrap_or_default();
        self.query_actions(actions);
    }

    /// Gossips or sends the sets the collection says are due (kept values are the store's
    /// business, modelled by the commit before the answer).
    pub(super) fn query_actions(&mut self, actions: Vec<query::Action>) {
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
                    let mut bytes = cbor_len(&gossip);
                    if bytes as usize > daemon::MAX_GOSSIP_BYTES {
                        let coordination::Gossip::QuerySet { aggregate, .. } = gossip else {
                            continue;
                        };
                        let room = job_id.len() as u64 + 64;
                        let parts = (cbor_len(&aggregate) + room <= daemon::MAX_JOB_MESSAGE as u64)
                            .then(|| query::set_parts(&aggregate, daemon::MAX_GOSSIP_BYTES))
                            .flatten();
                        let Some(parts) = parts else {
                            // As the daemon: a value too large for a part, sent to each
                            // target directly (a set too large for a direct message, which
                            // the daemon fails on its targets, too: not modelled).
                            let actions = self.queries.not_gossiped(&job_id);
                            self.query_actions(actions);
                            continue;
                        };
                        // As the daemon: gossiped in parts, with a grace per part. The model
                        // floods the parts as one message of their total size: a node has
                        // the set once it has them all, and gossip passes on each part as it
                        // would the whole.
                        let now = self.instant();
                        self.queries.gossiped_in_parts(&job_id, parts.len(), now);
                        let set = query::set_digest(&aggregate);
                        bytes = parts
                            .into_iter()
                            .map(|part| {
                                cbor_len(&coordination::Gossip::QuerySetPart {
                                    job_id: job_id.clone(),
                                    part,
                                    values: values as u64,
                                    set,
                                    originator_start: SUBMITTER_START,
                                })
                            })
                            .sum();
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
    pub(super) fn query_set_in(&mut self, node: usize, values: usize) {
        if !self.nodes[node].query_ran || node == self.submitter {
            return;
        }
        self.query_result_in(node);
        self.request(node, self.submitter, Body::QueryTaken { values });
    }

    /// The set reaches `node`: its QUERY job ends.
    pub(super) fn query_result_in(&mut self, node: usize) {
        if let Some(job) = self.nodes[node].query_waiting.take() {
            self.waited_for(node, job);
        }
    }

    /// What `node`'s wait or registrations say: registrations go to the awaited node (or are
    /// taken here), notices to the waiter, and a wait told the job finished ends its job.
    pub(super) fn wait_actions(&mut self, node: usize, actions: Vec<job_wait::Action>) {
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
    pub(super) fn waited_for(&mut self, node: usize, job: usize) {
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
    pub(super) fn register_at(&mut self, at: usize, waiter: usize) {
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
    pub(super) fn wait_done_at(&mut self, waiter: usize, from: usize) {
        let actions =
            self.nodes[waiter]
                .waits
                .done(&wait_id_of(waiter), &self.ids[from], "success".into());
        self.wait_actions(waiter, actions);
    }
}
